//! Fleet throughput and lag, end to end: taps (real ledgers, the real `fleet` NATS sink) →
//! NATS JetStream (a private `nats-server`, file store) → `mcptrail collector` (the library's
//! `run`, 1, 2 and 4 of them on one durable consumer) → PostgreSQL (127.0.0.1:5432, database
//! `test`, a schema per run, dropped after). Baselines measured in the same run:
//!
//! - `NATS only`: the same messages pulled and acknowledged by a plain async-nats consumer;
//! - `PG only`: the same rows inserted into the same tables and indexes with the collector's
//!   two `INSERT … UNNEST` statements, one transaction per batch, no checks.
//!
//! Then a sustained phase: writers append to `MCPTRAIL_BENCH_TAPS` live ledgers at
//! `MCPTRAIL_BENCH_RATE` events/s in all (fdatasync group commit, as a tap does) for
//! `MCPTRAIL_BENCH_SECS`, background shippers follow them, `MCPTRAIL_BENCH_LIVE_COLLECTORS`
//! collectors store them, and the end-to-end lag of every event (PostgreSQL's
//! `clock_timestamp()` at insert minus the event's `time`, written by the tap) is summarised.
//!
//! CPU is read from `/proc` for this process (shippers or collectors, depending on the phase),
//! the nats-server, and every `postgres` process. Nothing here is asserted but correctness
//! (every event stored exactly once).
//!
//! ```sh
//! scripts/bench-fleet.sh             # cargo bench -p mcptrail-collector --bench fleet
//! MCPTRAIL_BENCH_EVENTS=25000 MCPTRAIL_BENCH_TAPS=4 MCPTRAIL_BENCH_RATE=20000 ...
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mcptrail_collector::CollectorConfig;
use mcptrail_ledger::{Ledger, LedgerConfig};
use mcptrail_sinks::{ShipOptions, Shipper, SinkConfig};
use mcptrail_test_support::fleet::{psql, FleetNames, NatsServer, PG_URL};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

use mcptrail_test_support::cpu_secs;

/// CPU seconds so far of every `postgres` process (live ones; a backend that exited since
/// the last reading is missed, which only understates PostgreSQL).
fn postgres_cpu() -> f64 {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "postgres").then(|| cpu_secs(&pid))
        })
        .sum()
}

/// Busy CPU seconds of the whole machine (user, nice, system, irq, softirq, steal).
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| f.get(i))
        .sum::<f64>()
        / 100.0
}

#[derive(Clone, Copy)]
struct Cpu {
    me: f64,
    nats: f64,
    pg: f64,
    /// Everything else the machine did meanwhile (another build, say): the run's noise.
    other: f64,
}

fn cpu_now(nats: &NatsServer) -> Cpu {
    let (me, nats, pg) = (
        cpu_secs("self"),
        nats.pid().map_or(0.0, |p| cpu_secs(&p.to_string())),
        postgres_cpu(),
    );
    Cpu {
        me,
        nats,
        pg,
        other: machine_busy() - me - nats - pg,
    }
}

fn cpu_diff(a: Cpu, b: Cpu) -> Cpu {
    Cpu {
        me: b.me - a.me,
        nats: b.nats - a.nats,
        pg: b.pg - a.pg,
        other: (b.other - a.other).max(0.0),
    }
}

struct Row {
    label: String,
    events: u64,
    wall: Duration,
    cpu: Cpu,
}

fn measure(label: &str, events: u64, nats: &NatsServer, f: impl FnOnce()) -> Row {
    let c0 = cpu_now(nats);
    let t = Instant::now();
    f();
    let wall = t.elapsed();
    let c1 = cpu_now(nats);
    let row = Row {
        label: label.into(),
        events,
        wall,
        cpu: cpu_diff(c0, c1),
    };
    print_row(&row, None);
    row
}

fn print_header() {
    println!(
        "{:<44} {:>8} {:>7} {:>9} {:>6} {:>29}",
        "phase", "events", "wall s", "events/s", "ratio", "CPU µs/event me/nats/pg/other"
    );
}

fn print_row(r: &Row, base: Option<f64>) {
    let rate = r.events as f64 / r.wall.as_secs_f64();
    let per = |s: f64| s * 1e6 / r.events as f64;
    println!(
        "{:<44} {:>8} {:>7.2} {:>9.0} {:>6} {:>8.1}/{:>5.1}/{:>6.1}/{:>6.1}",
        r.label,
        r.events,
        r.wall.as_secs_f64(),
        rate,
        base.map_or("-".into(), |b| format!("{:.2}", rate / b)),
        per(r.cpu.me),
        per(r.cpu.nats),
        per(r.cpu.pg),
        per(r.cpu.other)
    );
}

fn fleet_sink(url: &str, prefix: &str, tenant: &str, source: &str) -> SinkConfig {
    let text = format!(
        "name = \"fleet\"\ntype = \"nats\"\nurl = \"{url}\"\nbatch_max_events = 1000\nfleet = {{ tenant = \"{tenant}\", source = \"{source}\", prefix = \"{prefix}\" }}\n"
    );
    SinkConfig::from_table(toml::from_str(&text).unwrap()).unwrap()
}

fn collector_config(
    nats: &NatsServer,
    names: &FleetNames,
    schema: &str,
    consumer: &str,
    keys: &[String],
) -> CollectorConfig {
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    toml::from_str(&format!(
        "nats_url = \"{}\"\nprefix = \"{}\"\nstream = \"{}\"\nconsumer = \"{consumer}\"\npostgres_url = \"{PG_URL}\"\nschema = \"{schema}\"\ntrusted_keys = [{}]\nbatch_size = {}\n",
        nats.url(),
        names.prefix,
        names.stream,
        keys.join(", "),
        env_num("MCPTRAIL_BENCH_BATCH", 1000),
    ))
    .unwrap()
}

/// Run `n` collectors until `stop`; returns their threads.
fn start_collectors(
    cfg: &CollectorConfig,
    n: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (cfg, stop) = (cfg.clone(), stop.clone());
            std::thread::spawn(move || {
                // MCPTRAIL_BENCH_DETECT=1: detection across sources too (the built-in pack).
                let rules = std::env::var("MCPTRAIL_BENCH_DETECT")
                    .is_ok_and(|v| v == "1")
                    .then(mcptrail_detect::RuleSet::builtin);
                mcptrail_collector::run(&cfg, rules, stop).expect("collector run");
            })
        })
        .collect()
}

/// A PostgreSQL connection kept open for polling (a `psql` per poll would fork a client and
/// a backend twenty times a second and show up as noise).
struct Poller {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Poller {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(PG_URL, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
        });
        Poller { rt, client }
    }

    fn exists(&self, schema: &str) -> bool {
        self.rt
            .block_on(self.client.query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("{schema}.sources")],
            ))
            .unwrap()
            .get(0)
    }

    /// Records stored (every source starts at seq 1 here).
    fn stored(&self, schema: &str) -> u64 {
        let n: i64 = self
            .rt
            .block_on(self.client.query_one(
                &format!("SELECT coalesce(sum(last_seq), 0)::int8 FROM {schema}.sources"),
                &[],
            ))
            .unwrap()
            .get(0);
        n as u64
    }

    fn wait_stored(&self, schema: &str, total: u64, limit: Duration) {
        let start = Instant::now();
        while !self.exists(schema) {
            assert!(
                start.elapsed() < limit,
                "the collector never created {schema}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        while self.stored(schema) < total {
            assert!(
                start.elapsed() < limit,
                "{schema}: only {} of {total} stored after {limit:?}",
                self.stored(schema)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn check_exactly_once(schema: &str, total: u64) {
    let got = psql(&format!(
        "SELECT count(*) || ',' || count(DISTINCT event_id) FROM {schema}.events"
    ));
    assert_eq!(got, format!("{total},{total}"), "{schema}: exactly once");
    assert_eq!(
        psql(&format!("SELECT count(*) FROM {schema}.quarantine")),
        "0"
    );
}

struct Tap {
    data: PathBuf,
    vkey: String,
}

/// A tap with `n` events and a checkpoint over them (`n` ≥ 1: signing makes the key).
fn make_tap(dir: &Path, name: &str, n: usize) -> Tap {
    let data = dir.join(name);
    mcptrail_test_support::sinks::write_ledger(&data, n);
    Ledger::open(&data, LedgerConfig::default())
        .unwrap()
        .checkpoint_now()
        .unwrap();
    let vkey = mcptrail_ledger::local_verifier(&data)
        .unwrap()
        .unwrap()
        .to_vkey();
    Tap { data, vkey }
}

fn main() {
    let taps = env_num("MCPTRAIL_BENCH_TAPS", 4);
    let per_tap = env_num("MCPTRAIL_BENCH_EVENTS", 50_000);
    let rate = env_num("MCPTRAIL_BENCH_RATE", 20_000);
    let secs = env_num("MCPTRAIL_BENCH_SECS", 30);
    let live_collectors = env_num("MCPTRAIL_BENCH_LIVE_COLLECTORS", 2);
    let counts: Vec<usize> = std::env::var("MCPTRAIL_BENCH_COLLECTORS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let total = (taps * per_tap) as u64;
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let names = FleetNames::new("bench");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let poller = Poller::new();

    // Taps with their ledgers.
    let t0 = Instant::now();
    let tap_list: Vec<Tap> = (0..taps)
        .map(|t| make_tap(dir.path(), &format!("tap{t}"), per_tap))
        .collect();
    let bytes: u64 = tap_list
        .iter()
        .flat_map(|t| {
            mcptrail_ledger::list_segments(&t.data.join(mcptrail_ledger::LEDGER_DIR)).unwrap()
        })
        .map(|s| s.len)
        .sum();
    let keys: Vec<String> = tap_list.iter().map(|t| t.vkey.clone()).collect();
    println!(
        "fleet bench: {taps} taps × {per_tap} events = {total} ({} B/event), written in {:.1} s; nats-server {} (private, file store), PostgreSQL {PG_URL}",
        bytes / total,
        t0.elapsed().as_secs_f64(),
        nats.url()
    );
    let base_cfg = collector_config(&nats, &names, &names.schema, "setup", &keys);
    {
        let client = rt.block_on(async_nats::connect(nats.url())).unwrap();
        let js = {
            let _in = rt.enter();
            async_nats::jetstream::new(client)
        };
        rt.block_on(mcptrail_collector::ensure_stream(&js, &base_cfg))
            .unwrap();
    }
    print_header();

    // 1. The taps publish (the real shipper and fleet sink), in parallel.
    let publish = measure(
        &format!("taps publish ({taps} shippers, fleet sink)"),
        total,
        &nats,
        || {
            let threads: Vec<_> = tap_list
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let cfg = fleet_sink(&nats.url(), &names.prefix, "bench", &format!("tap{i}"));
                    let data = t.data.clone();
                    std::thread::spawn(move || {
                        let sink = mcptrail_sinks::build(&cfg).unwrap();
                        let st = Shipper::new(&data, cfg, sink, None)
                            .run(&ShipOptions::default())
                            .unwrap();
                        assert_eq!(st.shipped, per_tap as u64);
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        },
    );
    let _ = publish;

    // 2. Baseline: NATS only (pull + ack, no PostgreSQL).
    let nats_only = measure(
        "baseline: NATS pull+ack only",
        total + taps as u64,
        &nats,
        || {
            rt.block_on(async {
                let client = async_nats::connect(nats.url()).await.unwrap();
                let js = async_nats::jetstream::new(client);
                let stream = js.get_stream(&names.stream).await.unwrap();
                let consumer = stream
                    .create_consumer(async_nats::jetstream::consumer::pull::Config {
                        durable_name: Some("bench-nats-only".into()),
                        ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                let mut got = 0u64;
                while got < total + taps as u64 {
                    let mut b = consumer
                        .batch()
                        .max_messages(1000)
                        .expires(Duration::from_millis(500))
                        .messages()
                        .await
                        .unwrap();
                    while let Some(m) = b.next().await {
                        m.unwrap().ack().await.unwrap();
                        got += 1;
                    }
                }
            })
        },
    );

    // 3. Baseline: PostgreSQL only (the same rows, the same tables and indexes, no checks).
    let base_schema = format!("{}_pgonly", names.schema);
    let lines: Vec<Vec<u8>> = tap_list
        .iter()
        .flat_map(|t| {
            mcptrail_ledger::LedgerReader::open(&t.data, 1)
                .unwrap()
                .map(|r| r.unwrap().line)
        })
        .collect();
    let pg_only = {
        let schema = base_schema.clone();
        rt.block_on(async {
            let (mut client, conn) = tokio_postgres::connect(PG_URL, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            mcptrail_collector::schema::migrate(&mut client, &schema)
                .await
                .unwrap();
            let day = time::OffsetDateTime::now_utc().date();
            for d in [day.previous_day().unwrap(), day, day.next_day().unwrap()] {
                mcptrail_collector::schema::ensure_partition(&mut client, &schema, d)
                    .await
                    .unwrap();
            }
            client
                .execute(
                    "INSERT INTO sources (tenant, source) VALUES ('bench', 'pg-only')",
                    &[],
                )
                .await
                .unwrap();
        });
        let mut seq = 0i64;
        measure(
            "baseline: PG inserts only (same rows)",
            total,
            &nats,
            || {
                rt.block_on(async {
                    let (mut client, conn) =
                        tokio_postgres::connect(PG_URL, tokio_postgres::NoTls)
                            .await
                            .unwrap();
                    tokio::spawn(conn);
                    client
                        .batch_execute(&format!("SET search_path TO {schema}"))
                        .await
                        .unwrap();
                    for chunk in lines.chunks(1000) {
                        let recs: Vec<_> = chunk
                            .iter()
                            .map(|l| mcptrail_collector::parse::record(l).unwrap())
                            .collect();
                        let ids: Vec<i64> = vec![1; recs.len()];
                        let seqs: Vec<i64> = recs
                            .iter()
                            .map(|_| {
                                seq += 1;
                                seq
                            })
                            .collect();
                        let eids: Vec<uuid::Uuid> = recs.iter().map(|r| r.event_id).collect();
                        let hashes: Vec<Vec<u8>> = recs.iter().map(|r| r.hash.to_vec()).collect();
                        let times: Vec<time::OffsetDateTime> =
                            recs.iter().map(|r| r.time).collect();
                        let kinds: Vec<&str> = recs.iter().map(|r| r.kind.as_str()).collect();
                        let sess: Vec<Option<&str>> =
                            recs.iter().map(|r| r.session_id.as_deref()).collect();
                        let users: Vec<Option<&str>> =
                            recs.iter().map(|r| r.user.as_deref()).collect();
                        let tools: Vec<Option<&str>> =
                            recs.iter().map(|r| r.tool.as_deref()).collect();
                        let ls: Vec<&str> = recs.iter().map(|r| r.line.as_str()).collect();
                        let tx = client.transaction().await.unwrap();
                        tx.execute(
                            "INSERT INTO records (source_id, seq, event_id, record_hash, time)
                             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::uuid[], $4::bytea[], $5::timestamptz[])",
                            &[&ids, &seqs, &eids, &hashes, &times],
                        )
                        .await
                        .unwrap();
                        tx.execute(
                            "INSERT INTO events (time, event_id, source_id, seq, kind, session_id, user_principal, tool, line)
                             SELECT * FROM UNNEST($1::timestamptz[], $2::uuid[], $3::int8[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])",
                            &[&times, &eids, &ids, &seqs, &kinds, &sess, &users, &tools, &ls],
                        )
                        .await
                        .unwrap();
                        tx.commit().await.unwrap();
                    }
                })
            },
        )
    };
    psql(&format!("DROP SCHEMA {base_schema} CASCADE"));
    let ceiling = (total as f64 / nats_only.wall.as_secs_f64())
        .min(total as f64 / pg_only.wall.as_secs_f64());

    // 4. Collectors draining the stream: 1, 2, 4 on one durable consumer.
    let mut drains = Vec::new();
    for &c in &counts {
        let schema = format!("{}_c{c}", names.schema);
        let cfg = collector_config(&nats, &names, &schema, &format!("drain{c}"), &keys);
        let stop = Arc::new(AtomicBool::new(false));
        let row = {
            let c0 = cpu_now(&nats);
            let t = Instant::now();
            let threads = start_collectors(&cfg, c, &stop);
            poller.wait_stored(&schema, total, Duration::from_secs(600));
            let wall = t.elapsed();
            let c1 = cpu_now(&nats);
            stop.store(true, Ordering::Relaxed);
            for t in threads {
                t.join().unwrap();
            }
            Row {
                label: format!("collector ×{c} (drain, vs min of baselines)"),
                events: total,
                wall,
                cpu: cpu_diff(c0, c1),
            }
        };
        print_row(&row, Some(ceiling));
        check_exactly_once(&schema, total);
        let verified = psql(&format!(
            "SELECT count(*) FROM {schema}.checkpoints WHERE verified"
        ));
        assert_eq!(
            verified,
            taps.to_string(),
            "every tap's checkpoint verified"
        );
        psql(&format!("DROP SCHEMA {schema} CASCADE"));
        drains.push(row);
    }

    // 5. Sustained: live taps at a fixed rate, shippers following, collectors storing.
    println!();
    let live = FleetNames::new("live");
    let live_dir = dir.path().join("live");
    let live_taps: Vec<Tap> = (0..taps)
        .map(|t| make_tap(&live_dir, &format!("live{t}"), 1))
        .collect();
    let live_keys: Vec<String> = live_taps.iter().map(|t| t.vkey.clone()).collect();
    let cfg = collector_config(&nats, &live, &live.schema, "live", &live_keys);
    let stop = Arc::new(AtomicBool::new(false));
    let collectors = start_collectors(&cfg, live_collectors, &stop);
    while !poller.exists(&live.schema) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let handles: Vec<_> = live_taps
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let cfg = fleet_sink(&nats.url(), &live.prefix, "live", &format!("live{i}"));
            let (h, errs) = mcptrail_sinks::spawn(&t.data, &[cfg], None);
            assert!(errs.is_empty(), "{errs:?}");
            h
        })
        .collect();
    let written = Arc::new(AtomicU64::new(0));
    let writing = Arc::new(AtomicBool::new(true));
    let per_writer = rate as f64 / taps as f64;
    let c0 = cpu_now(&nats);
    let t_start = Instant::now();
    let writers: Vec<_> = live_taps
        .iter()
        .map(|t| {
            let (data, written, writing) = (t.data.clone(), written.clone(), writing.clone());
            std::thread::spawn(move || {
                let mut ledger = Ledger::open(&data, LedgerConfig::default()).unwrap();
                let start = Instant::now();
                let mut done = 0usize;
                while writing.load(Ordering::Relaxed) {
                    let due = (start.elapsed().as_secs_f64() * per_writer) as usize;
                    if due > done {
                        let mut events: Vec<_> = (done..due)
                            .map(mcptrail_test_support::sinks::fixture_event)
                            .collect();
                        ledger.append(&mut events).unwrap();
                        written.fetch_add((due - done) as u64, Ordering::Relaxed);
                        done = due;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs as u64));
    writing.store(false, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let offered_wall = t_start.elapsed();
    let n_live = written.load(Ordering::Relaxed) + taps as u64; // + each tap's first event
    poller.wait_stored(&live.schema, n_live, Duration::from_secs(300));
    let drained_wall = t_start.elapsed();
    let c1 = cpu_now(&nats);
    for h in handles {
        h.stop(Duration::from_secs(10));
    }
    stop.store(true, Ordering::Relaxed);
    for c in collectors {
        c.join().unwrap();
    }
    check_exactly_once(&live.schema, n_live);
    let lag = psql(&format!(
        "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY l)::numeric, 3) || ' ' ||
                round(percentile_cont(0.99) WITHIN GROUP (ORDER BY l)::numeric, 3) || ' ' ||
                round(max(l)::numeric, 3)
         FROM (SELECT extract(epoch FROM received_at - time) AS l FROM {}.events WHERE seq > 1) x",
        live.schema
    ));
    let lag: Vec<&str> = lag.split(' ').collect();
    let per = |s: f64| s * 1e6 / n_live as f64;
    println!(
        "sustained: {rate}/s offered by {taps} taps for {:.1} s → {n_live} events ({:.0}/s written), all stored {:.2} s after the writers stopped; {live_collectors} collector(s)",
        offered_wall.as_secs_f64(),
        n_live as f64 / offered_wall.as_secs_f64(),
        (drained_wall - offered_wall).as_secs_f64()
    );
    println!(
        "  end-to-end lag (tap write → PostgreSQL row), seconds: p50 {} p99 {} max {}",
        lag[0], lag[1], lag[2]
    );
    let d = cpu_diff(c0, c1);
    println!(
        "  CPU µs/event: this process (writers + shippers + collectors) {:.1}, nats-server {:.1}, postgres {:.1}, other processes {:.1}; {:.0} % of 2 cores busy",
        per(d.me),
        per(d.nats),
        per(d.pg),
        per(d.other),
        100.0 * (d.me + d.nats + d.pg + d.other) / drained_wall.as_secs_f64() / 2.0
    );
    psql(&format!("DROP SCHEMA {} CASCADE", live.schema));
    let _ = drains;
}
