//! Fixtures for the fleet tests (crates/mcptrail-collector/tests, crates/mcptrail/tests/cli/
//! fleet.rs): PostgreSQL through its own client (`psql`), unique names so concurrent tests
//! never share a stream, subject prefix or schema, and a private `nats-server` with JetStream
//! that a test may kill and restart. PostgreSQL (127.0.0.1:5432, database `test`) and the
//! `nats-server` binary are required: a test that cannot reach them fails, never skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The PostgreSQL the tests use (trust auth on this machine and in CI).
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The NATS JetStream server running on this machine and in CI.
pub const NATS_URL: &str = "nats://127.0.0.1:4222";

/// One value (or rows joined by newlines) from PostgreSQL through `psql`; panics with the
/// server's message when the statement fails or PostgreSQL is down.
pub fn psql(sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            PG_URL,
            "-c",
            sql,
        ])
        .output()
        .expect("psql must be installed (PostgreSQL's client)");
    assert!(
        out.status.success(),
        "PostgreSQL must run at 127.0.0.1:5432 (tests never skip): {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `SELECT count(*) FROM <schema>.<rest>` (0 while the table does not exist yet).
pub fn pg_count(schema: &str, rest: &str) -> u64 {
    let exists = psql(&format!(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = '{schema}'"
    ));
    if exists != "1" {
        return 0;
    }
    let table = rest.split_whitespace().next().unwrap_or(rest);
    if psql(&format!(
        "SELECT to_regclass('{schema}.{table}') IS NOT NULL"
    )) != "t"
    {
        return 0;
    }
    psql(&format!("SELECT count(*) FROM {schema}.{rest}"))
        .parse()
        .unwrap_or(0)
}

/// Names no other test (or earlier run) uses: a subject prefix, a stream and a PostgreSQL
/// schema, all derived from one token.
#[derive(Debug, Clone)]
pub struct FleetNames {
    /// Subject prefix (`<prefix>.<tenant>.<source>.events`).
    pub prefix: String,
    /// JetStream stream.
    pub stream: String,
    /// PostgreSQL schema.
    pub schema: String,
}

impl FleetNames {
    /// Fresh names tagged with `tag` (letters and digits).
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let unique = format!("{tag}{}x{}", std::process::id(), nanos % 1_000_000_000_000);
        FleetNames {
            prefix: format!("mt{unique}"),
            stream: format!("MT_{unique}"),
            schema: format!("mt_{}", unique.to_lowercase()),
        }
    }

    /// Drop the schema (the caller deletes the stream: it has the NATS client).
    pub fn drop_schema(&self) {
        psql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
    }
}

/// Poll `f` every 100 ms until it is true; panic naming `what` after `secs`.
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A private `nats-server -js` on a free loopback port with its store in a directory of the
/// test's, so a test can kill it (`SIGKILL`) and start it again on the same port and store.
pub struct NatsServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    store: PathBuf,
}

impl NatsServer {
    /// Start one; its JetStream store is `<dir>/nats`.
    pub fn start(dir: &Path) -> Self {
        let mut s = NatsServer {
            child: None,
            port: crate::sinks::free_loopback_port(),
            store: dir.join("nats"),
        };
        s.restart();
        s
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Start it (again) on the same port and store; returns once it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the private nats-server runs already");
        std::fs::create_dir_all(&self.store).unwrap();
        // MCPTRAIL_NATS_CPU=N pins it to CPU N (benchmarks); taskset execs, the pid stays.
        let mut cmd = match std::env::var("MCPTRAIL_NATS_CPU") {
            Ok(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu, "nats-server"]);
                c
            }
            Err(_) => Command::new("nats-server"),
        };
        let child = cmd
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (Debian package nats-server) must be installed");
        self.child = Some(child);
        let port = self.port;
        wait_until("the private nats-server to listen", 20, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// `SIGKILL` it (no clean shutdown) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Prints the tail of each log file if the test is panicking (so a failing fleet test shows
/// what its collectors and shippers said).
pub struct LogsOnPanic(pub Vec<PathBuf>);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for p in &self.0 {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(40);
            eprintln!("--- {} (last {} lines)", p.display(), lines.len() - from);
            for l in &lines[from..] {
                eprintln!("{l}");
            }
        }
    }
}

/// A tap's ledger as the fleet sink publishes it: each record line verbatim, the signed
/// checkpoint notes, and the public key to trust.
pub struct FixtureSource {
    /// Record lines, `lines[i]` is seq `i + 1`.
    pub lines: Vec<String>,
    /// (size, signed note) of each checkpoint, in order.
    pub checkpoints: Vec<(u64, String)>,
    /// The checkpoint key (`name+id+key`) to list in `trusted_keys`.
    pub vkey: String,
}

impl FixtureSource {
    /// A ledger in `dir` with a `session.start` (session `session`) and then `n` fixture
    /// events ([`crate::sinks::write_ledger`]), and a `session.end` after them when
    /// `close_session`; a checkpoint is signed after the first `k` records for each `k` in
    /// `checkpoint_after`, and one at the end.
    pub fn build(
        dir: &Path,
        n: usize,
        session: &str,
        close_session: bool,
        checkpoint_after: &[usize],
    ) -> Self {
        use mcptrail_event::{Event, EventKind};
        use mcptrail_ledger::{Ledger, LedgerConfig};
        let cfg = LedgerConfig {
            fsync: false,
            ..LedgerConfig::default()
        };
        {
            let mut ledger = Ledger::open(dir, cfg.clone()).expect("open the fixture ledger");
            let mut start = Event::new(EventKind::SessionStart);
            start.session_id = Some(session.into());
            start.agent_id = Some("fixture-agent".into());
            ledger.append(&mut [start]).expect("append session.start");
        }
        let mut written = 1;
        let mut cuts: Vec<usize> = checkpoint_after.to_vec();
        cuts.push(n + 1);
        for cut in cuts {
            if cut > written {
                crate::sinks::write_ledger(dir, cut - written);
                written = cut;
            }
            let mut ledger = Ledger::open(dir, cfg.clone()).expect("open the fixture ledger");
            if close_session && cut == n + 1 {
                let mut end = Event::new(EventKind::SessionEnd);
                end.session_id = Some(session.into());
                ledger.append(&mut [end]).expect("append session.end");
            }
            ledger.checkpoint_now().expect("sign a checkpoint");
        }
        let lines = mcptrail_ledger::LedgerReader::open(dir, 1)
            .expect("read the fixture ledger")
            .map(|r| String::from_utf8(r.expect("a record").line).expect("UTF-8"))
            .collect();
        let checkpoints =
            mcptrail_ledger::list_checkpoints(&dir.join(mcptrail_ledger::CHECKPOINT_DIR))
                .expect("list checkpoints")
                .into_iter()
                .map(|(size, path)| {
                    (
                        size,
                        std::fs::read_to_string(path).expect("a checkpoint note"),
                    )
                })
                .collect();
        let vkey = mcptrail_ledger::local_verifier(dir)
            .expect("the checkpoint key")
            .expect("a checkpoint key")
            .to_vkey();
        FixtureSource {
            lines,
            checkpoints,
            vkey,
        }
    }
}
