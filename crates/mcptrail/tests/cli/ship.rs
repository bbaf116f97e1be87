//! `mcptrail ship`, the sinks inside `wrap`, and `doctor`'s sinks check, through the real
//! binary against real receivers (the HMAC-verifying webhook receiver, a private rsyslogd,
//! files). The "nothing lost" test kills the receiver and `kill -9`s the shipper.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use mcptrail_test_support::sinks::{
    event_id_of, free_loopback_port, write_ledger, Rsyslog, SyslogInput, WebhookReceiver,
};
use mcptrail_test_support::target_bin;
use serde_json::json;

use crate::support::*;

const HOOK_KEY: &str = "cli-webhook-key-0123456789";

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("mcptrail.toml");
    std::fs::write(&p, body).unwrap();
    p
}

fn ship_cmd(data: &Path, config: &Path, args: &[&str]) -> std::process::Command {
    let mut c = mcptrail();
    c.arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(config)
        .arg("ship")
        .args(args)
        .env("MCPTRAIL_TEST_HOOK_KEY", HOOK_KEY);
    c
}

fn output(mut c: std::process::Command) -> (i32, String, String) {
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn ship_delivers_to_files_and_syslog_reports_lag_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ids = write_ledger(&data, 2000);
    let rs = Rsyslog::start(SyslogInput::Tcp);
    let out = dir.path().join("files/events.jsonl");
    let config = write_config(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"{}\"\n\n[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\nformat = \"cef\"\nkinds = [\"mcp.response\"]\n",
            out.display(),
            rs.port
        ),
    );
    let (code, stdout, stderr) = output(ship_cmd(&data, &config, &["--status"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("sink files (file): cursor 0 of 2000 (lag 2000"),
        "{stdout}"
    );
    let (code, stdout, stderr) = output(ship_cmd(&data, &config, &[]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("sink files (file): shipped 2000 events"),
        "{stdout}"
    );
    let responses = (0..2000).filter(|i| i % 3 == 2).count();
    assert!(
        stdout.contains(&format!("sink siem (syslog): shipped {responses} events")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("filtered {}", 2000 - responses)),
        "{stdout}"
    );
    assert!(stdout.contains("cursor 2000 of 2000 (lag 0)"), "{stdout}");
    let lines = std::fs::read_to_string(&out).unwrap();
    let shipped: Vec<String> = lines.lines().map(|l| event_id_of(l.as_bytes())).collect();
    assert_eq!(shipped, ids);
    assert_eq!(
        rs.wait_for_lines(responses, Duration::from_secs(20)).len(),
        responses
    );
    // Nothing new: nothing shipped; new events: only they.
    let (_, stdout, _) = output(ship_cmd(&data, &config, &["--sink", "files"]));
    assert!(stdout.contains("shipped 0 events"), "{stdout}");
    write_ledger(&data, 5);
    let (_, stdout, _) = output(ship_cmd(&data, &config, &["--sink", "files"]));
    assert!(
        stdout.contains("shipped 5 events") && stdout.contains("cursor 2005 of 2005"),
        "{stdout}"
    );
}

#[test]
fn config_errors_name_the_sink_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:1\"\ntls_ca = \"/x\"\n",
    );
    let (code, _, stderr) = output(ship_cmd(&dir.path().join("data"), &config, &[]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("sink \"siem\"") && stderr.contains("tls_ca"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tls_ca_file"),
        "valid keys listed: {stderr}"
    );
    assert!(
        stderr.contains("mcptrail.toml"),
        "the file is named: {stderr}"
    );
}

#[test]
fn a_corrupt_cursor_stops_shipping_until_it_is_reset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_ledger(&data, 50);
    let out = dir.path().join("out.jsonl");
    let config = write_config(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"{}\"\n",
            out.display()
        ),
    );
    std::fs::create_dir_all(data.join("sinks")).unwrap();
    std::fs::write(
        data.join("sinks/f.cursor"),
        "{\"format\":\"mcptrail-sink-cursor v1\",\"sink\":\"f\",\"seq\":",
    )
    .unwrap();
    let (code, _, stderr) = output(ship_cmd(&data, &config, &[]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("f.cursor") && stderr.contains("--reset-cursor"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing shipped from an untrusted cursor");
    let (code, stdout, stderr) = output(ship_cmd(
        &data,
        &config,
        &["--sink", "f", "--reset-cursor", "40"],
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("delivers from seq 41"), "{stdout}");
    let (code, stdout, _) = output(ship_cmd(&data, &config, &[]));
    assert_eq!(code, 0);
    assert!(stdout.contains("shipped 10 events"), "{stdout}");
}

#[test]
fn a_dead_sink_gives_up_with_exit_1_records_an_alert_and_doctor_fails_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_ledger(&data, 20);
    let port = free_loopback_port();
    let config = write_config(
        dir.path(),
        &format!("[[sinks]]\nname = \"dead\"\ntype = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nbackoff_initial_ms = 50\nbackoff_max_ms = 200\nalert_failing_secs = 1\n"),
    );
    let (code, stdout, stderr) = output(ship_cmd(&data, &config, &["--give-up-after", "2"]));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("gave up") && stdout.contains("refused"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cursor 0 of 21"),
        "the alert is the 21st record: {stdout}"
    );
    assert!(stdout.contains("1 alert(s) recorded"), "{stdout}");
    let alerts: Vec<_> = events(&data)
        .into_iter()
        .filter(|e| e.kind == mcptrail_event::EventKind::Alert)
        .collect();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].detail.as_ref().unwrap()["rule"], "sink_failing");
    let (code, stdout, _) = run(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "doctor",
        "--min-free-mib",
        "1",
    ]);
    assert_eq!(code, 1, "{stdout}");
    let line = stdout.lines().find(|l| l.contains(" sinks ")).unwrap();
    assert!(line.starts_with("FAIL"), "{stdout}");
    assert!(
        stdout.contains("Connection refused") && stdout.contains("lag 21"),
        "{stdout}"
    );
}

#[test]
fn doctor_passes_a_reachable_caught_up_sink() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_ledger(&data, 10);
    let rx = WebhookReceiver::start(HOOK_KEY.as_bytes());
    let config = write_config(
        dir.path(),
        &format!("[[sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\nsecret = {{ env = \"MCPTRAIL_TEST_HOOK_KEY\" }}\n", rx.url()),
    );
    assert_eq!(output(ship_cmd(&data, &config, &[])).0, 0);
    let out = mcptrail()
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "doctor",
            "--json",
        ])
        .env("MCPTRAIL_TEST_HOOK_KEY", HOOK_KEY)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sinks = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "sinks")
        .unwrap();
    assert_eq!(sinks["status"], "pass", "{sinks}");
    assert!(
        sinks["details"][0]
            .as_str()
            .unwrap()
            .contains("accepted a signed empty batch"),
        "{sinks}"
    );
    assert!(
        !out.stdout
            .windows(HOOK_KEY.len())
            .any(|w| w == HOOK_KEY.as_bytes()),
        "the key is never printed"
    );
    assert_eq!(rx.log.lock().unwrap().bad_signatures, 0);
}

#[test]
fn wrap_ships_its_session_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out.jsonl");
    let config = write_config(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"{}\"\nbatch_max_wait_ms = 50\n",
            out.display()
        ),
    );
    let server = target_bin("rmcp-echo-server").display().to_string();
    let mut w = Wrapped::start(&data, &["--config", config.to_str().unwrap()], &[&server]);
    w.initialize("ship-test");
    for i in 1..=5 {
        let r = w.request(
            i,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": format!("call {i}")}}),
        );
        assert_eq!(r["result"]["content"][0]["text"], format!("call {i}"));
    }
    let (st, _, _) = w.finish(Duration::from_secs(30));
    assert!(st.success());
    let recorded: Vec<String> = events(&data).into_iter().map(|e| e.event_id).collect();
    let shipped: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| event_id_of(l.as_bytes()))
        .collect();
    assert_eq!(
        shipped, recorded,
        "every event of the session, session.end included, shipped once"
    );
}

/// 100k events; the receiver goes away for a while and comes back; the shipper is killed
/// with SIGKILL mid-stream and started again. Every event must arrive at least once.
#[test]
fn nothing_lost_receiver_outage_and_kill_9_of_the_shipper() {
    const N: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ids = write_ledger(&data, N);
    let mut rx = WebhookReceiver::start(HOOK_KEY.as_bytes());
    let config = write_config(
        dir.path(),
        &format!("[[sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\nsecret = {{ env = \"MCPTRAIL_TEST_HOOK_KEY\" }}\nbatch_max_events = 500\nbackoff_initial_ms = 50\nbackoff_max_ms = 400\ntimeout_secs = 2\n", rx.url()),
    );
    let received = |rx: &WebhookReceiver| rx.log.lock().unwrap().event_ids.len();
    let wait_for = |rx: &WebhookReceiver, n: usize, what: &str| {
        let start = Instant::now();
        while received(rx) < n {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{what}: only {} received",
                received(rx)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let mut first = ship_cmd(&data, &config, &["--give-up-after", "120"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&rx, 10_000, "before the outage");
    rx.stop();
    let during = received(&rx);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        received(&rx),
        during,
        "nothing arrives while the receiver is down"
    );
    rx.resume();
    wait_for(&rx, during + 20_000, "after the receiver came back");
    // SIGKILL in the middle of the stream: a batch is being sent or acknowledged right now.
    first.kill().unwrap();
    first.wait().unwrap();
    let at_kill = received(&rx);
    let cursor: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("sinks/hook.cursor")).unwrap()).unwrap();
    let cursor_seq = cursor["seq"].as_u64().unwrap();
    assert!(
        cursor_seq < N as u64,
        "killed before the end (cursor {cursor_seq})"
    );
    assert!(
        cursor_seq as usize <= at_kill,
        "the cursor never runs ahead of acknowledged deliveries"
    );
    let (code, stdout, stderr) = output(ship_cmd(&data, &config, &[]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("cursor {N} of {N} (lag 0)")),
        "{stdout}"
    );

    let log = rx.log.lock().unwrap();
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for id in &log.event_ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let missing = ids
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .count();
    let duplicates = log.event_ids.len() - counts.len();
    println!(
        "nothing lost: {N} events, {} deliveries received, {} distinct, {missing} missing, {duplicates} duplicates (removable by event_id)",
        log.event_ids.len(),
        counts.len(),
    );
    assert_eq!(missing, 0, "every event arrived");
    assert_eq!(counts.len(), N, "and nothing else");
    assert_eq!(log.bad_signatures, 0);
}

#[test]
fn ship_follow_tails_new_events_and_stops_cleanly_on_sigterm() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_ledger(&data, 100);
    let out = dir.path().join("out.jsonl");
    let config = write_config(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"{}\"\nbatch_max_wait_ms = 20\n",
            out.display()
        ),
    );
    let child = ship_cmd(&data, &config, &["--follow", "--report-every", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = || {
        std::fs::read_to_string(&out)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let wait_lines = |n: usize| {
        let start = Instant::now();
        while lines() < n {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "only {} of {n} shipped",
                lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_lines(100);
    write_ledger(&data, 50);
    wait_lines(150);
    std::thread::sleep(Duration::from_millis(1300)); // one progress line (--report-every 1) after the last event
                                                     // A second shipper, or a cursor reset, is refused while this one runs.
    let (code, _, stderr) = output(ship_cmd(&data, &config, &[]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("another mcptrail process is shipping it"),
        "{stderr}"
    );
    let (code, _, stderr) = output(ship_cmd(
        &data,
        &config,
        &["--sink", "f", "--reset-cursor", "0"],
    ));
    assert_eq!(code, 2);
    assert!(stderr.contains("f.lock"), "{stderr}");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("shipped 150 events") && stdout.contains("cursor 150 of 150"),
        "{stdout}"
    );
    assert!(
        stdout.contains("sink f (file): shipped 150 so far; cursor 150 of 150 (lag 0)"),
        "a progress line: {stdout}"
    );
}

/// The same through NATS JetStream: `kill -9` of the shipper mid-stream, restart; the stream
/// ends with every event exactly once, because the batch sent again carries the same
/// `Nats-Msg-Id`s and JetStream drops them.
#[test]
fn nothing_lost_nats_kill_9_and_jetstream_dedupe() {
    use async_nats::jetstream;
    use futures_util::StreamExt;
    const N: usize = 30_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ids = write_ledger(&data, N);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let unique = format!(
        "{}_{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let (stream_name, subject) = (
        format!("MCPTRAIL_CLI_{unique}"),
        format!("mcptrail.cli.{unique}"),
    );
    let js = {
        let client = rt
            .block_on(async_nats::connect("nats://127.0.0.1:4222"))
            .expect("NATS JetStream must run at 127.0.0.1:4222 (tests never skip)");
        let _in_runtime = rt.enter();
        jetstream::new(client)
    };
    let mut stream = rt
        .block_on(js.create_stream(jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        }))
        .unwrap();
    let messages =
        |s: &mut jetstream::stream::Stream| rt.block_on(s.info()).unwrap().state.messages;
    let config = write_config(
        dir.path(),
        &format!("[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nsubject = \"{subject}\"\nbatch_max_events = 500\n"),
    );
    let mut first = ship_cmd(&data, &config, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while messages(&mut stream) < 5_000 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "slow: {}",
            messages(&mut stream)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let cursor: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("sinks/bus.cursor")).unwrap()).unwrap();
    let at_kill = cursor["seq"].as_u64().unwrap();
    assert!(
        at_kill < N as u64,
        "killed before the end (cursor {at_kill})"
    );
    let (code, stdout, stderr) = output(ship_cmd(&data, &config, &[]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let stored = messages(&mut stream);
    // Read every message back and compare ids with the ledger.
    let got: Vec<String> = rt.block_on(async {
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut msgs = consumer.messages().await.unwrap();
        let mut got = Vec::with_capacity(N);
        while got.len() < stored as usize {
            let m = msgs.next().await.unwrap().unwrap();
            let id = m
                .headers
                .as_ref()
                .unwrap()
                .get("Nats-Msg-Id")
                .unwrap()
                .as_str()
                .to_string();
            assert_eq!(
                id,
                event_id_of(&m.payload),
                "header and payload name the same event"
            );
            got.push(id);
        }
        got
    });
    let _ = rt.block_on(js.delete_stream(&stream_name));
    println!("nothing lost (NATS): {N} events, cursor at kill {at_kill}, {stored} messages stored");
    assert_eq!(stored, N as u64, "every event exactly once in the stream");
    assert_eq!(got, ids, "in ledger order");
}

#[test]
fn doctor_warns_about_a_reachable_sink_that_is_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_ledger(&data, 20);
    let out = dir.path().join("out.jsonl");
    let config = write_config(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"slow\"\ntype = \"file\"\npath = \"{}\"\nalert_lag_records = 5\n",
            out.display()
        ),
    );
    let (code, stdout, _) = run(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "doctor",
        "--min-free-mib",
        "1",
    ]);
    let line = stdout.lines().find(|l| l.contains(" sinks ")).unwrap();
    assert!(line.starts_with("WARN"), "{stdout}");
    assert!(stdout.contains("cursor 0 of 20 (lag 20"), "{stdout}");
    assert!(
        stdout.contains("mcptrail ship --sink slow"),
        "the fix names the command: {stdout}"
    );
    assert_ne!(code, 1, "a warning does not fail doctor: {stdout}");
}

#[test]
fn a_dead_sink_never_holds_up_wraps_relay_or_its_exit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_loopback_port();
    let config = write_config(
        dir.path(),
        &format!("[[sinks]]\nname = \"dead\"\ntype = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nbatch_max_wait_ms = 10\nbackoff_initial_ms = 5000\n"),
    );
    let server = target_bin("rmcp-echo-server").display().to_string();
    let mut w = Wrapped::start(&data, &["--config", config.to_str().unwrap()], &[&server]);
    w.initialize("dead-sink");
    for i in 1..=20 {
        let r = w.request(
            i,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": format!("call {i}")}}),
        );
        assert_eq!(r["result"]["content"][0]["text"], format!("call {i}"));
    }
    // The shipper is asleep in a 5 s backoff; ending the session must not wait for it.
    let started = Instant::now();
    let (st, _, _) = w.finish(Duration::from_secs(30));
    assert!(st.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "wrap waited {:?} for a dead sink",
        started.elapsed()
    );
    let evs = events(&data);
    assert_eq!(
        evs.last().unwrap().kind,
        mcptrail_event::EventKind::SessionEnd,
        "the session is recorded in full"
    );
    assert!(
        !data.join("sinks/dead.cursor").exists(),
        "nothing was acknowledged, nothing committed"
    );
}
