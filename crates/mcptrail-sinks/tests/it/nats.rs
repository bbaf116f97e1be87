use std::time::Duration;

use async_nats::jetstream;
use mcptrail_sinks::{Cursor, SendErrorKind};
use mcptrail_test_support::sinks::write_ledger;

use crate::common::*;

const NATS_URL: &str = "nats://127.0.0.1:4222";

/// A JetStream stream of its own for one test, deleted on drop.
struct TestStream {
    rt: tokio::runtime::Runtime,
    js: jetstream::Context,
    name: String,
    subject: String,
}

impl TestStream {
    fn new(tag: &str) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let unique = format!(
            "{tag}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let client = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), async_nats::connect(NATS_URL)).await })
            .unwrap_or_else(|_| panic!("NATS did not answer at {NATS_URL} within 5 s: the JetStream server must run there (tests never skip)"))
            .unwrap_or_else(|e| panic!("NATS JetStream must run at {NATS_URL} (tests never skip): {e}"));
        let js = {
            let _in_runtime = rt.enter();
            jetstream::new(client)
        };
        let name = format!("MCPTRAIL_TEST_{unique}");
        let subject = format!("mcptrail.test.{unique}");
        rt.block_on(js.create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        }))
        .expect("create the test stream (is JetStream enabled? nats-server -js)");
        TestStream {
            rt,
            js,
            name,
            subject,
        }
    }

    fn messages(&self) -> u64 {
        self.rt.block_on(async {
            let mut s = self.js.get_stream(&self.name).await.unwrap();
            s.info().await.unwrap().state.messages
        })
    }

    fn message(&self, seq: u64) -> jetstream::message::StreamMessage {
        self.rt.block_on(async {
            let s = self.js.get_stream(&self.name).await.unwrap();
            s.get_raw_message(seq).await.unwrap()
        })
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let _ = self.rt.block_on(self.js.delete_stream(&self.name));
    }
}

#[test]
fn jetstream_gets_every_event_with_its_msg_id_and_drops_redelivered_duplicates() {
    let stream = TestStream::new("ship");
    let dir = tempfile::tempdir().unwrap();
    let ids = write_ledger(dir.path(), 1000);
    let cfg = sink_config(&format!(
        "name = \"bus\"\ntype = \"nats\"\nurl = \"{NATS_URL}\"\nsubject = \"{}\"\nstream = \"{}\"\nbatch_max_events = 128\n",
        stream.subject, stream.name
    ));
    let probe = mcptrail_sinks::build(&cfg).unwrap().probe().unwrap();
    assert!(
        probe.contains(&format!("goes to stream `{}`", stream.name)),
        "{probe}"
    );
    // A configured stream that is not the one capturing the subject is a configuration error.
    let mut wrong = cfg.clone();
    if let mcptrail_sinks::SinkTarget::Nats(n) = &mut wrong.target {
        n.stream = Some("SOME_OTHER_STREAM".into());
    }
    let e = mcptrail_sinks::build(&wrong).unwrap().probe().unwrap_err();
    assert!(
        e.message.contains("not the configured `SOME_OTHER_STREAM`"),
        "{e}"
    );
    let st = ship(dir.path(), &cfg);
    assert_eq!((st.shipped, st.cursor), (1000, 1000));
    assert_eq!(stream.messages(), 1000);
    let ledger = ledger_lines(dir.path());
    for seq in [1u64, 2, 499, 1000] {
        let m = stream.message(seq);
        let i = (seq - 1) as usize;
        assert_eq!(&m.payload[..], &ledger[i][..], "payload is the ledger line");
        assert_eq!(m.headers.get("Nats-Msg-Id").unwrap().as_str(), ids[i]);
    }
    // Re-ship everything, as after a lost cursor: JetStream drops every duplicate by id.
    Cursor::new(dir.path(), "bus").store(0, "").unwrap();
    let again = ship(dir.path(), &cfg);
    assert_eq!(again.shipped, 1000, "all sent again");
    assert_eq!(stream.messages(), 1000, "none stored twice");
}

#[test]
fn a_subject_no_stream_captures_is_rejected_with_a_hint() {
    let _stream = TestStream::new("nostream");
    let dir = tempfile::tempdir().unwrap();
    write_ledger(dir.path(), 3);
    let cfg = sink_config(&format!(
        "name = \"bus\"\ntype = \"nats\"\nsubject = \"mcptrail.nobody.listens.{}\"\ntimeout_secs = 2\n",
        std::process::id()
    ));
    let mut sink = mcptrail_sinks::build(&cfg).unwrap();
    // doctor's probe says so before anything is sent...
    let e = sink.probe().unwrap_err();
    assert_eq!(e.kind, SendErrorKind::Rejected, "{e}");
    assert!(
        e.message.contains("no JetStream stream captures subject"),
        "{e}"
    );
    // ...and so does a delivery.
    let mut tail = mcptrail_sinks::LedgerTail::open(dir.path(), 1);
    let rec = tail.next_record().unwrap().unwrap();
    let e = sink.send(&[rec]).unwrap_err();
    assert_eq!(e.kind, SendErrorKind::Rejected, "{e}");
    assert!(
        e.message.contains("no JetStream stream captures subject"),
        "{e}"
    );
}

#[test]
fn an_unreachable_server_is_a_connect_error() {
    let port = mcptrail_test_support::sinks::free_loopback_port();
    let cfg = sink_config(&format!(
        "name = \"bus\"\ntype = \"nats\"\nurl = \"nats://127.0.0.1:{port}\"\nsubject = \"x\"\ntimeout_secs = 2\n"
    ));
    let e = mcptrail_sinks::build(&cfg).unwrap().probe().unwrap_err();
    assert_eq!(e.kind, SendErrorKind::Connect, "{e}");
}
