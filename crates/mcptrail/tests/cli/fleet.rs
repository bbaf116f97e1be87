//! Fleet end to end against the real NATS JetStream (127.0.0.1:4222) and PostgreSQL
//! (127.0.0.1:5432, database `test`): taps ship their ledgers through `fleet` NATS sinks,
//! two `mcptrail collector` processes (the binary) on one durable consumer check every
//! source's chain and signed checkpoints and store the events; one collector killed with
//! SIGKILL mid-stream and restarted leaves every event stored exactly once; records modified
//! or forged in transit are quarantined with an alert, never stored as events. Each test uses
//! its own subjects prefix, stream and PostgreSQL schema, and removes them afterwards.
//! Neither service is optional: a test that cannot reach one fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use mcptrail_test_support::fleet::{
    pg_count as count, psql as pg, wait_until, FleetNames, LogsOnPanic, NATS_URL, PG_URL,
};
use mcptrail_test_support::sinks::write_ledger;

use crate::support::*;

/// A child process killed when the test ends, passing or not (a failed assertion must not
/// leave collectors or shippers running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

fn collector(config: &Path, log: &Path) -> Running {
    Running(
        mcptrail()
            .arg("--config")
            .arg(config)
            .arg("collector")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("spawn mcptrail collector"),
    )
}

fn stop(c: &mut Running) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = wait_timeout(c, Duration::from_secs(20));
    let _ = c.kill();
}

/// `n` fixture events in `<dir>/<name>`, a signed checkpoint, and a tap config with a fleet
/// sink; returns (data dir, config, the checkpoint key).
fn tap(dir: &Path, name: &str, n: usize, prefix: &str) -> (PathBuf, PathBuf, String) {
    let data = dir.join(name);
    write_ledger(&data, n);
    let (code, out, err) = run(&["--data-dir", data.to_str().unwrap(), "checkpoint"]);
    assert_eq!(code, 0, "{out}{err}");
    let vkey = std::fs::read_to_string(data.join("keys/checkpoint.vkey"))
        .unwrap()
        .trim()
        .to_string();
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[[sinks]]\nname = \"fleet\"\ntype = \"nats\"\nurl = \"{NATS_URL}\"\nbatch_max_events = 500\nfleet = {{ tenant = \"acme\", source = \"{name}\", prefix = \"{prefix}\" }}\n"
        ),
    )
    .unwrap();
    (data, cfg, vkey)
}

#[test]
fn taps_to_jetstream_to_postgres_exactly_once_through_a_collector_kill_and_tampering() {
    use async_nats::jetstream;
    const TAPS: usize = 10;
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let names = FleetNames::new("cli");
    let (prefix, stream, schema) = (&names.prefix, &names.stream, &names.schema);
    let taps: Vec<_> = (0..TAPS)
        .map(|t| tap(dir.path(), &format!("tap{t}"), N, prefix))
        .collect();
    let keys: Vec<String> = taps.iter().map(|(_, _, k)| format!("{k:?}")).collect();
    let ccfg = dir.path().join("collector.toml");
    std::fs::write(
        &ccfg,
        format!(
            "[collector]\nnats_url = \"{NATS_URL}\"\nprefix = \"{prefix}\"\nstream = \"{stream}\"\nconsumer = \"collectors\"\npostgres_url = \"{PG_URL}\"\nschema = \"{schema}\"\ntrusted_keys = [{}]\nbatch_size = 500\n",
            keys.join(", ")
        ),
    )
    .unwrap();
    let logs: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("collector{i}.log")))
        .collect();
    let _show = LogsOnPanic(logs.clone());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let js = {
        let client = rt
            .block_on(async_nats::connect(NATS_URL))
            .expect("NATS JetStream must run at 127.0.0.1:4222 (tests never skip)");
        let _in_runtime = rt.enter();
        jetstream::new(client)
    };
    // Two collectors on one durable consumer; the collector creates the stream.
    let mut c1 = collector(&ccfg, &logs[0]);
    let mut c2 = collector(&ccfg, &logs[1]);
    wait_until("the collector to create the stream", 60, || {
        rt.block_on(js.get_stream(stream)).is_ok()
    });
    let mut shippers: Vec<Running> = taps
        .iter()
        .map(|(data, cfg, _)| {
            Running(
                mcptrail()
                    .arg("--data-dir")
                    .arg(data)
                    .arg("--config")
                    .arg(cfg)
                    .arg("ship")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    // kill -9 one collector mid-stream, start it again.
    wait_until("the first events in PostgreSQL", 120, || {
        count(schema, "records") > 1000
    });
    c1.kill().unwrap();
    c1.wait().unwrap();
    let at_kill = count(schema, "records");
    let mut c1 = collector(&ccfg, &logs[2]);
    for s in &mut shippers {
        assert!(s.wait().unwrap().success(), "a tap's ship failed");
    }
    let total = (TAPS * N) as u64;
    wait_until("every event stored", 240, || {
        count(schema, "events") >= total
    });
    // Redeliveries of the killed collector's batch come after the ack wait (10 s).
    wait_until("nothing pending", 60, || count(schema, "pending") == 0);
    std::thread::sleep(Duration::from_secs(11));
    let events = count(schema, "events");
    let distinct = pg(&format!(
        "SELECT count(DISTINCT event_id) FROM {schema}.events"
    ));
    let per_source = pg(&format!(
        "SELECT string_agg(source || ':' || last_seq, ',' ORDER BY source) FROM {schema}.sources"
    ));
    println!("fleet: {TAPS}×{N} events, {at_kill} stored at the kill, {events} stored, sources {per_source}");
    assert_eq!(events, total, "every event exactly once");
    assert_eq!(distinct, total.to_string());
    assert_eq!(count(schema, "pending"), 0);
    assert_eq!(
        count(schema, "quarantine"),
        0,
        "nothing genuine quarantined"
    );
    assert_eq!(
        count(schema, "alerts WHERE alert_id IS NULL"),
        0,
        "no integrity alert on a clean run"
    );
    // The built-in detection pack ran across the taps (the fixture events carry `pii`
    // labels in bulk).
    wait_until("a detection alert", 60, || {
        count(schema, "alerts WHERE kind = 'builtin.sensitive_data_bulk'") > 0
    });
    assert_eq!(
        pg(&format!(
            "SELECT count(*) FROM {schema}.sources WHERE last_seq = {N} AND anchored"
        )),
        TAPS.to_string(),
        "every chain complete from seq 1"
    );
    wait_until("the signed checkpoints verified", 60, || {
        count(schema, "checkpoints WHERE verified") >= TAPS as u64
    });

    // Tampering in transit: a stored record with one value changed (same seq and id), and a
    // forged next record whose prev_hash names nothing.
    let seg = std::fs::read_dir(taps[0].0.join(mcptrail_ledger::LEDGER_DIR))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .min()
        .expect("a ledger segment");
    let text = std::fs::read_to_string(&seg).unwrap();
    let line5 = text.lines().find(|l| l.contains("\"seq\":5,")).unwrap();
    let modified = line5.replacen("Zürich", "Zurich", 1);
    assert_ne!(modified, line5);
    let last = text.lines().last().unwrap();
    let mut forged: serde_json::Value = serde_json::from_str(last).unwrap();
    forged["seq"] = (N as u64 + 1).into();
    forged["event_id"] = "01a2125b-0000-7000-8000-00000000f0f0".into();
    forged["prev_hash"] = "ab".repeat(32).into();
    let subject = format!("{prefix}.acme.tap0.events");
    rt.block_on(async {
        for (id, body) in [
            ("tampered-5", modified.clone()),
            ("forged-next", forged.to_string()),
        ] {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Msg-Id", id);
            js.publish_with_headers(subject.clone(), h, body.into_bytes().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
    wait_until("both tampered records quarantined", 120, || {
        count(schema, "quarantine") >= 2
    });
    let kinds = pg(&format!(
        "SELECT string_agg(kind, ',' ORDER BY kind) FROM {schema}.alerts WHERE source = 'tap0' AND alert_id IS NULL"
    ));
    assert_eq!(kinds, "chain_break,chain_conflict");
    assert_eq!(count(schema, "events"), total, "no tampered record stored");
    assert_eq!(
        count(
            schema,
            "events WHERE event_id::text = '01a2125b-0000-7000-8000-00000000f0f0'"
        ),
        0
    );

    for c in [&mut c1, &mut c2] {
        stop(c);
    }
    let _ = rt.block_on(js.delete_stream(stream));
    names.drop_schema();
}

/// A tap whose NATS is down ships nothing and loses nothing: `ship --follow` retries, the tap
/// keeps recording, and when NATS is back everything arrives in order. NATS is then killed
/// (SIGKILL) mid-stream and started again on its store; the collector reconnects by itself.
#[test]
fn an_offline_tap_catches_up_in_order_and_a_nats_restart_loses_nothing() {
    use mcptrail_test_support::fleet::NatsServer;
    let dir = tempfile::tempdir().unwrap();
    let names = FleetNames::new("nrs");
    let mut nats = NatsServer::start(dir.path());
    let (data, _, vkey) = tap(dir.path(), "tap", 3000, &names.prefix);
    let cfg = dir.path().join("tap-private.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[sinks]]\nname = \"fleet\"\ntype = \"nats\"\nurl = \"{}\"\nbatch_max_events = 500\nfleet = {{ tenant = \"acme\", source = \"tap\", prefix = \"{}\" }}\n",
            nats.url(),
            names.prefix
        ),
    )
    .unwrap();
    let ccfg = dir.path().join("collector.toml");
    std::fs::write(
        &ccfg,
        format!(
            "[collector]\nnats_url = \"{}\"\nprefix = \"{}\"\nstream = \"{}\"\npostgres_url = \"{PG_URL}\"\nschema = \"{}\"\ntrusted_keys = [{vkey:?}]\nbatch_size = 500\n",
            nats.url(),
            names.prefix,
            names.stream,
            names.schema
        ),
    )
    .unwrap();
    let (clog, slog) = (
        dir.path().join("collector.log"),
        dir.path().join("ship.log"),
    );
    let _show = LogsOnPanic(vec![clog.clone(), slog.clone()]);
    let mut c = collector(&ccfg, &clog);
    let schema = &names.schema;
    wait_until("the collector's schema", 60, || {
        pg(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}' AND table_name = 'pending'"
        )) == "1"
    });
    // The tap goes offline before it ships anything.
    nats.kill();
    let mut ship = Running(
        mcptrail()
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&cfg)
            .args(["ship", "--follow", "--report-every", "1"])
            .stdout(std::fs::File::create(&slog).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    write_ledger(&data, 2000); // it keeps recording while offline
    wait_until("the shipper to report that it cannot deliver", 30, || {
        std::fs::read_to_string(&slog)
            .unwrap()
            .lines()
            .any(|l| l.contains("failing:") && l.contains("127.0.0.1"))
    });
    assert_eq!(
        count(schema, "records"),
        0,
        "nothing can arrive while offline"
    );
    // Back online: it catches up; NATS dies mid-stream and comes back on its store.
    nats.restart();
    wait_until("the first records after the outage", 120, || {
        count(schema, "records") >= 500
    });
    nats.kill();
    write_ledger(&data, 1000);
    std::thread::sleep(Duration::from_secs(2));
    nats.restart();
    let total = 6000u64;
    wait_until("every record stored", 180, || {
        count(schema, "records") >= total
    });
    wait_until("nothing pending", 60, || count(schema, "pending") == 0);
    std::thread::sleep(Duration::from_secs(2));
    stop(&mut ship);
    stop(&mut c);
    assert_eq!(count(schema, "events"), total, "every event exactly once");
    assert_eq!(
        pg(&format!(
            "SELECT count(DISTINCT event_id) FROM {schema}.events"
        )),
        total.to_string()
    );
    assert_eq!(
        pg(&format!(
            "SELECT first_seq || '..' || last_seq || ' ' || anchored FROM {schema}.sources"
        )),
        "1..6000 true",
        "the chain is complete, in order, from seq 1"
    );
    assert_eq!(count(schema, "quarantine"), 0);
    assert_eq!(count(schema, "alerts WHERE alert_id IS NULL"), 0);
    nats.kill();
    names.drop_schema();
}
