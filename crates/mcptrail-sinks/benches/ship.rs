//! Events/s shipped per sink with batching, against baselines measured in the same run:
//!
//! - `read raw`: the ledger's own reader returning every line (the ceiling for any consumer);
//! - `read+parse`: the sinks' tail reader (complete lines, seq check, head fields parsed).
//!
//! ```sh
//! taskset -c 0 cargo bench -p mcptrail-sinks --bench ship      # the shipper on one core
//! MCPTRAIL_BENCH_EVENTS=500000 cargo bench -p mcptrail-sinks --bench ship
//! ```
//!
//! The OTLP rows (`MCPTRAIL_BENCH_ONLY=otlp`) ship to a private rotel (`.ci/install-peers.sh`)
//! and print their own table, with the file sink on the same ledger as the baseline;
//! `MCPTRAIL_BENCH_ONLY=otlp-encode` runs only the baseline and the encoding row (no I/O);
//! `MCPTRAIL_BENCH_RECEIVER_CPU=1` moves rotel to CPU 1 (with the bench under `taskset -c 0`).
//!
//! NATS JetStream must run at 127.0.0.1:4222 (a stream is created for the run and deleted), or
//! `MCPTRAIL_BENCH_NATS_PRIVATE=1` starts a private nats-server (pinned to
//! `MCPTRAIL_BENCH_NATS_CPU` when set) so its CPU per message is its own.
//! Every figure is the median of 5 runs; nothing here is asserted.

use std::time::{Duration, Instant};

use mcptrail_sinks::{Cursor, ShipOptions, Shipper, SinkConfig};

fn sink(text: &str) -> SinkConfig {
    SinkConfig::from_table(toml::from_str(text).unwrap()).unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

use mcptrail_test_support::cpu_secs;

/// The pid of the local nats-server, if one runs.
fn nats_server_pid() -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().into_string().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "nats-server").then_some(pid)
    })
}

/// One measured row: median wall time, and CPU seconds per run of this process (the
/// shipper) and of the receiver process when it is local.
struct Row {
    label: String,
    wall: Duration,
    cpu: f64,
    receiver_cpu: Option<f64>,
}

/// Run `f` `runs` times (`setup` before each, untimed).
fn time_runs(
    label: &str,
    runs: usize,
    receiver: Option<&str>,
    mut setup: impl FnMut(),
    mut f: impl FnMut(),
) -> Row {
    let (mut walls, mut cpu, mut rcpu) = (Vec::new(), 0.0, 0.0);
    for _ in 0..runs {
        setup();
        let (c0, r0) = (cpu_secs("self"), receiver.map_or(0.0, cpu_secs));
        let t = Instant::now();
        f();
        walls.push(t.elapsed());
        cpu += cpu_secs("self") - c0;
        rcpu += receiver.map_or(0.0, cpu_secs) - r0;
    }
    Row {
        label: label.to_string(),
        wall: median(walls),
        cpu: cpu / runs as f64,
        receiver_cpu: receiver.map(|_| rcpu / runs as f64),
    }
}

fn ship_all(data: &std::path::Path, cfg: &SinkConfig, n: u64) {
    let s = mcptrail_sinks::build(cfg).unwrap();
    let st = Shipper::new(data, cfg.clone(), s, None)
        .run(&ShipOptions::default())
        .unwrap();
    assert_eq!(st.shipped, n, "every event shipped: {st:?}");
}

fn main() {
    let n: usize = std::env::var("MCPTRAIL_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    mcptrail_test_support::sinks::write_ledger(&data, n);
    let bytes: u64 = mcptrail_ledger::list_segments(&data.join(mcptrail_ledger::LEDGER_DIR))
        .unwrap()
        .iter()
        .map(|s| s.len)
        .sum();
    println!(
        "ship bench: {n} events, {:.0} MiB ledger ({} B/event)",
        bytes as f64 / (1 << 20) as f64,
        bytes / n as u64
    );
    let runs = 5;
    // MCPTRAIL_BENCH_ONLY=nats (or file): only those rows, besides the read baselines.
    let only = std::env::var("MCPTRAIL_BENCH_ONLY").unwrap_or_default();
    let want = |label: &str| label.starts_with(only.as_str());
    let mut rows: Vec<Row> = Vec::new();

    rows.push(time_runs(
        "read raw (LedgerReader)",
        runs,
        None,
        || {},
        || {
            let c = mcptrail_ledger::LedgerReader::open(&data, 1)
                .unwrap()
                .count();
            assert_eq!(c, n);
        },
    ));
    rows.push(time_runs(
        "read+parse (LedgerTail)",
        runs,
        None,
        || {},
        || {
            let mut t = mcptrail_sinks::LedgerTail::open(&data, 1);
            let mut c = 0;
            while t.next_record().unwrap().is_some() {
                c += 1;
            }
            assert_eq!(c, n);
        },
    ));
    // What committing a cursor costs (once per batch): printed per store, not per event.
    {
        let c = Cursor::new(&data, "bench-cursor");
        let stores = 100;
        let t = Instant::now();
        let c0 = cpu_secs("self");
        for i in 1..=stores {
            c.store(i, "019a0000-0000-7000-8000-000000000000").unwrap();
        }
        println!(
            "cursor store (0600 temp, fdatasync, rename, fsync dir): {:.0} µs wall, {:.0} µs CPU each",
            t.elapsed().as_secs_f64() * 1e6 / stores as f64,
            (cpu_secs("self") - c0) * 1e6 / stores as f64
        );
    }
    let out = dir.path().join("out/events.jsonl");
    for (label, extra) in [
        ("file json, batch 1000, fdatasync/batch", ""),
        (
            "file cef, batch 1000, fdatasync/batch",
            "format = \"cef\"\n",
        ),
    ] {
        // The file json row is every other row's baseline ("vs file"): always measured.
        if !want(label) && !label.starts_with("file json") {
            continue;
        }
        let cfg = sink(&format!(
            "name = \"file\"\ntype = \"file\"\npath = \"{}\"\nbatch_max_events = 1000\nmax_bytes = 100000000000\n{extra}",
            out.display()
        ));
        let setup = || {
            let _ = std::fs::remove_file(&out);
            Cursor::new(&data, &cfg.name).store(0, "").unwrap();
        };
        rows.push(time_runs(label, runs, None, setup, || {
            ship_all(&data, &cfg, n as u64)
        }));
    }
    if want("nats") {
        rows.extend(bench_nats(&data, n, runs));
    }
    rows.extend(bench_siem(&data, n, runs, &want));
    if want("otlp") || only == "otlp-encode" {
        bench_otlp(dir.path(), n, runs, only == "otlp-encode");
    }

    let base = rows[0].wall;
    let file = rows
        .iter()
        .find(|r| r.label.starts_with("file json"))
        .map(|r| r.wall);
    println!(
        "{:<46} {:>10} {:>12} {:>10} {:>14} {:>15}",
        "", "events/s", "vs raw read", "vs file", "shipper µs/ev", "receiver µs/ev"
    );
    for r in &rows {
        let per_event = |secs: f64| secs * 1e6 / n as f64;
        println!(
            "{:<46} {:>10.0} {:>11.1}% {:>10} {:>14.2} {:>15}",
            r.label,
            n as f64 / r.wall.as_secs_f64(),
            100.0 * base.as_secs_f64() / r.wall.as_secs_f64(),
            file.map_or("-".to_string(), |f| format!(
                "{:.2}x",
                f.as_secs_f64() / r.wall.as_secs_f64()
            )),
            per_event(r.cpu),
            r.receiver_cpu
                .map_or("-".to_string(), |c| format!("{:.2}", per_event(c))),
        );
    }
    println!("µs/ev: CPU time (user + system) per event; one core ships at most 1e6 / that");
    println!("vs file: events/s relative to the file json row of this run (above 1: faster)");
    println!(
        "HEC and Elasticsearch receivers run in this process: their CPU is in the shipper column"
    );
}

/// OTLP into a real collector (rotel, blackhole exporter) on a ledger of MCP request/response
/// pairs (every response becomes two spans, two histogram observations and a log record; the
/// requests a log record), against the file sink on the same ledger, in the same run.
fn bench_otlp(dir: &std::path::Path, n: usize, runs: usize, encode_only: bool) {
    use mcptrail_test_support::otlp::{write_mcp_session, Rotel};
    let data = dir.join("mcp-data");
    // Each call is a request and a response; the session adds 16 events around them.
    let fx = write_mcp_session(&data, n / 2);
    let events = fx.event_ids.len();
    let rotel = Rotel::start_blackhole();
    let pid = rotel.pid().map(|p| p.to_string());
    if let (Ok(cpu), Some(pid)) = (std::env::var("MCPTRAIL_BENCH_RECEIVER_CPU"), &pid) {
        // The collector on a CPU of its own (it inherited the bench's affinity).
        let ok = std::process::Command::new("taskset")
            .args(["-a", "-c", "-p", &cpu, pid])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "taskset -a -c -p {cpu} {pid} failed");
    }
    let out = dir.join("out/mcp.jsonl");
    let mut rows = Vec::new();
    let configs = [
        (
            "file json, batch 1000, fdatasync/batch (baseline)".to_string(),
            format!(
                "name = \"file\"\ntype = \"file\"\npath = \"{}\"\nbatch_max_events = 1000\nmax_bytes = 100000000000\n",
                out.display()
            ),
            false,
        ),
        (
            "otlp grpc → rotel, batch 1000".to_string(),
            format!(
                "name = \"otlp\"\ntype = \"otlp\"\nendpoint = \"{}\"\nprotocol = \"grpc\"\nbatch_max_events = 1000\nbatch_max_bytes = 4000000\n",
                rotel.grpc_endpoint()
            ),
            true,
        ),
        (
            "otlp http/protobuf → rotel, batch 1000".to_string(),
            format!(
                "name = \"otlp\"\ntype = \"otlp\"\nendpoint = \"{}\"\nprotocol = \"http/protobuf\"\nbatch_max_events = 1000\nbatch_max_bytes = 4000000\n",
                rotel.http_endpoint()
            ),
            true,
        ),
        (
            "otlp grpc gzip → rotel, batch 1000".to_string(),
            format!(
                "name = \"otlp\"\ntype = \"otlp\"\nendpoint = \"{}\"\nprotocol = \"grpc\"\ncompression = \"gzip\"\nbatch_max_events = 1000\nbatch_max_bytes = 4000000\n",
                rotel.grpc_endpoint()
            ),
            true,
        ),
    ];
    for (label, text, remote) in configs {
        let cfg = sink(&text);
        if label.starts_with("otlp grpc →") {
            rows.push(bench_otlp_encode(&data, &cfg, events, runs));
            if encode_only {
                break;
            }
        }
        let setup = || {
            let _ = std::fs::remove_file(&out);
            Cursor::new(&data, &cfg.name).store(0, "").unwrap();
        };
        let receiver = if remote { pid.as_deref() } else { None };
        rows.push(time_runs(&label, runs, receiver, setup, || {
            ship_all(&data, &cfg, events as u64)
        }));
    }
    println!(
        "otlp bench: {events} events of MCP sessions ({} request/response pairs)",
        n / 2
    );
    println!(
        "{:<46} {:>10} {:>12} {:>14} {:>15}",
        "", "events/s", "vs file", "shipper µs/ev", "receiver µs/ev"
    );
    let base = rows[0].wall;
    for r in &rows {
        let per_event = |secs: f64| secs * 1e6 / events as f64;
        println!(
            "{:<46} {:>10.0} {:>11.2}x {:>14.2} {:>15}",
            r.label,
            events as f64 / r.wall.as_secs_f64(),
            base.as_secs_f64() / r.wall.as_secs_f64(),
            per_event(r.cpu),
            r.receiver_cpu
                .map_or("-".to_string(), |c| format!("{:.2}", per_event(c))),
        );
    }
}

/// The OTLP sink's own work without I/O: read the ledger, batch by 1000, encode the three
/// export requests (what `send` does before the transport).
fn bench_otlp_encode(data: &std::path::Path, cfg: &SinkConfig, events: usize, runs: usize) -> Row {
    let mcptrail_sinks::SinkTarget::Otlp(otlp) = &cfg.target else {
        unreachable!("an otlp config")
    };
    time_runs(
        "otlp encoding only (no I/O), batch 1000",
        runs,
        None,
        || {},
        || {
            let mut sink = mcptrail_sinks::sink::otlp::OtlpSink::new(otlp.clone()).unwrap();
            let mut t = mcptrail_sinks::LedgerTail::open(data, 1);
            let (mut batch, mut seen, mut bytes) = (Vec::with_capacity(1000), 0, 0);
            loop {
                let next = t.next_record().unwrap();
                let done = next.is_none();
                if let Some(r) = next {
                    batch.push(r);
                }
                if batch.len() == 1000 || (done && !batch.is_empty()) {
                    seen += batch.len();
                    bytes += sink
                        .encode(&batch)
                        .iter()
                        .map(|(_, b)| b.len())
                        .sum::<usize>();
                    batch.clear();
                }
                if done {
                    break;
                }
            }
            assert_eq!(seen, events);
            assert!(bytes > 0);
        },
    )
}

/// A private nats-server (`MCPTRAIL_BENCH_NATS_PRIVATE=1`): JetStream in a temp dir on a free
/// loopback port, pinned to `MCPTRAIL_BENCH_NATS_CPU` when set (e.g. the shipper with
/// `taskset -c 0`, the server on CPU 1), so its CPU per message is measured alone.
struct PrivateNats {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl PrivateNats {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = mcptrail_test_support::free_port();
        let mut cmd = match std::env::var("MCPTRAIL_BENCH_NATS_CPU") {
            Ok(cpu) => {
                let mut c = std::process::Command::new("taskset");
                c.args(["-c", &cpu, "nats-server"]);
                c
            }
            Err(_) => std::process::Command::new("nats-server"),
        };
        let child = cmd
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (Debian nats-server) must be installed");
        let url = format!("nats://127.0.0.1:{port}");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateNats {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// NATS JetStream: a stream of its own for this run, in memory, deleted afterwards. Besides
/// the sink's row, two reference rows publish the same payloads from a plain async-nats loop
/// (not the sink): JetStream without `Nats-Msg-Id` (what duplicate tracking costs the
/// server) and core NATS without JetStream (the server's cost of just routing a message).
fn bench_nats(data: &std::path::Path, n: usize, runs: usize) -> Vec<Row> {
    let private = std::env::var("MCPTRAIL_BENCH_NATS_PRIVATE").is_ok_and(|v| v == "1");
    let server_proc = private.then(PrivateNats::start);
    let url = server_proc
        .as_ref()
        .map_or("nats://127.0.0.1:4222".to_string(), |s| s.url.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let unique = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let stream = format!("MCPTRAIL_BENCH_{unique}");
    let subject = format!("mcptrail.bench.{unique}");
    let client = rt
        .block_on(async_nats::connect(url.as_str()))
        .unwrap_or_else(|e| panic!("NATS JetStream must run at {url}: {e}"));
    let js = {
        let _in_runtime = rt.enter();
        async_nats::jetstream::new(client.clone())
    };
    rt.block_on(js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        // Every run sends the same ids again: a short duplicate window (waited out between
        // runs) keeps them from being dropped as duplicates; old messages are discarded.
        duplicate_window: Duration::from_secs(1),
        max_messages: 10_000,
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    }))
    .unwrap();
    let cfg = sink(&format!(
        "name = \"nats\"\ntype = \"nats\"\nurl = \"{url}\"\nsubject = \"{subject}\"\nbatch_max_events = 1000\n"
    ));
    let server = server_proc
        .as_ref()
        .map(|p| p.child.id().to_string())
        .or_else(nats_server_pid);
    let setup = || {
        std::thread::sleep(Duration::from_millis(1100));
        Cursor::new(data, &cfg.name).store(0, "").unwrap();
    };
    let where_ = if private { "private server" } else { ":4222" };
    let mut rows = vec![time_runs(
        &format!("nats jetstream json, batch 1000, PubAck each ({where_})"),
        runs,
        server.as_deref(),
        setup,
        || ship_all(data, &cfg, n as u64),
    )];
    // The same stored lines as payloads, for the reference rows.
    let mut lines = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut t = mcptrail_sinks::LedgerTail::open(data, 1);
    while let Some(r) = t.next_record().unwrap() {
        ids.push(r.event_id);
        lines.push(bytes::Bytes::from(r.line));
    }
    rows.push(time_runs(
        "  ref: jetstream, same payloads and Nats-Msg-Id",
        runs,
        server.as_deref(),
        || std::thread::sleep(Duration::from_millis(1100)),
        || {
            rt.block_on(async {
                for (chunk, ids) in lines.chunks(1000).zip(ids.chunks(1000)) {
                    let mut acks = Vec::with_capacity(chunk.len());
                    for (p, id) in chunk.iter().zip(ids) {
                        let msg = async_nats::jetstream::message::PublishMessage::build()
                            .payload(p.clone())
                            .message_id(id.as_str());
                        acks.push(js.send_publish(subject.clone(), msg).await.unwrap());
                    }
                    for a in acks {
                        a.await.unwrap();
                    }
                }
            })
        },
    ));
    rows.push(time_runs(
        "  ref: jetstream, same payloads, no Nats-Msg-Id",
        runs,
        server.as_deref(),
        || {},
        || {
            rt.block_on(async {
                for chunk in lines.chunks(1000) {
                    let mut acks = Vec::with_capacity(chunk.len());
                    for p in chunk {
                        acks.push(js.publish(subject.clone(), p.clone()).await.unwrap());
                    }
                    for a in acks {
                        a.await.unwrap();
                    }
                }
            })
        },
    ));
    let core_subject = format!("mcptrail.bench.core.{unique}");
    rows.push(time_runs(
        "  ref: core nats publish, no JetStream, flush/1000",
        runs,
        server.as_deref(),
        || {},
        || {
            rt.block_on(async {
                for chunk in lines.chunks(1000) {
                    for p in chunk {
                        client
                            .publish(core_subject.clone(), p.clone())
                            .await
                            .unwrap();
                    }
                    client.flush().await.unwrap();
                }
            })
        },
    ));
    let _ = rt.block_on(js.delete_stream(&stream));
    rows
}

/// Splunk HEC (acks on), Elasticsearch `_bulk` (ECS) — the protocol-faithful receivers of
/// test-support, in this process — and S3 Object Lock against a real moto server (a Python
/// process: its CPU is the receiver column).
fn bench_siem(
    data: &std::path::Path,
    n: usize,
    runs: usize,
    want: &dyn Fn(&str) -> bool,
) -> Vec<Row> {
    use mcptrail_test_support::siem::{ElasticReceiver, HecReceiver, MotoS3};
    let mut rows = Vec::new();
    std::env::set_var(
        "MCPTRAIL_BENCH_HEC_TOKEN",
        "8c1f0e7a-0d4b-4c55-9a41-6b2f3e1d9c77",
    );
    std::env::set_var("MCPTRAIL_BENCH_ES_KEY", "YmVuY2g6a2V5");
    let label = "splunk hec json, batch 1000, indexer ack";
    if want(label) {
        let rx = HecReceiver::start("8c1f0e7a-0d4b-4c55-9a41-6b2f3e1d9c77", &[]);
        let cfg = sink(&format!(
            "name = \"hec\"\ntype = \"splunk_hec\"\nurl = \"{}\"\ntoken = {{ env = \"MCPTRAIL_BENCH_HEC_TOKEN\" }}\nbatch_max_events = 1000\nack_poll_ms = 1\ncheckpoints = false\n",
            rx.url()
        ));
        let setup = || {
            rx.log.lock().unwrap().event_ids.clear();
            Cursor::new(data, &cfg.name).store(0, "").unwrap();
        };
        rows.push(time_runs(label, runs, None, setup, || {
            ship_all(data, &cfg, n as u64)
        }));
    }
    let label = "elasticsearch ecs encoding only (no I/O)";
    if want(label) {
        let mut body = Vec::with_capacity(4 << 20);
        rows.push(time_runs(
            label,
            runs,
            None,
            || {},
            || {
                let mut t = mcptrail_sinks::LedgerTail::open(data, 1);
                while let Some(r) = t.next_record().unwrap() {
                    if body.len() > 2 << 20 {
                        body.clear();
                    }
                    let v: serde_json::Value = serde_json::from_slice(&r.line).unwrap();
                    mcptrail_sinks::format::ecs::write_ecs_document(&v, &r.line, &mut body)
                        .unwrap();
                }
            },
        ));
    }
    let label = "elasticsearch ecs, batch 1000, _bulk create";
    if want(label) {
        let rx = ElasticReceiver::start("YmVuY2g6a2V5");
        let cfg = sink(&format!(
            "name = \"es\"\ntype = \"elasticsearch\"\nurl = \"{}\"\napi_key = {{ env = \"MCPTRAIL_BENCH_ES_KEY\" }}\nbatch_max_events = 1000\ncheckpoints = false\n",
            rx.url()
        ));
        let setup = || {
            let mut log = rx.log.lock().unwrap();
            log.docs.clear();
            log.created.clear();
            drop(log);
            Cursor::new(data, &cfg.name).store(0, "").unwrap();
        };
        rows.push(time_runs(label, runs, None, setup, || {
            ship_all(data, &cfg, n as u64)
        }));
    }
    let label = "s3 object lock json, batch 1000 (moto)";
    if want(label) {
        let moto = MotoS3::start("mcptrail-bench");
        std::env::set_var("MCPTRAIL_BENCH_S3_ID", &moto.access_key_id);
        std::env::set_var("MCPTRAIL_BENCH_S3_SECRET", &moto.secret_access_key);
        let cfg = sink(&format!(
            "name = \"s3\"\ntype = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"bench\"\naccess_key_id = {{ env = \"MCPTRAIL_BENCH_S3_ID\" }}\nsecret_access_key = {{ env = \"MCPTRAIL_BENCH_S3_SECRET\" }}\nretention_days = 1\nsegments = false\ncheckpoints = false\nbatch_max_events = 1000\n",
            moto.endpoint, moto.bucket
        ));
        let pid = moto.pid().to_string();
        let setup = || Cursor::new(data, &cfg.name).store(0, "").unwrap();
        rows.push(time_runs(label, runs, Some(&pid), setup, || {
            ship_all(data, &cfg, n as u64)
        }));
    }
    rows
}
