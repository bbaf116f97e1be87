//! Fixtures for the sink tests (crates/mcptrail-sinks/tests, crates/mcptrail/tests/cli/ship.rs):
//! a ledger of many events made quickly, a private `rsyslogd` per test, and a webhook
//! receiver that checks signatures the way a real one must.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use mcptrail_event::{Event, EventKind};
use mcptrail_ledger::{Ledger, LedgerConfig};
use sha2::Sha256;

/// A loopback port nothing listens on right now.
pub fn free_loopback_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

/// Append `n` events to the ledger of `data_dir` (no fsync: a fixture, not a recording).
/// Every 10th event carries the label `pii`, every 3rd is an `mcp.response`; tool names
/// include characters CEF and syslog must escape. Returns the event ids in `seq` order.
pub fn write_ledger(data_dir: &Path, n: usize) -> Vec<String> {
    let cfg = LedgerConfig {
        fsync: false,
        ..LedgerConfig::default()
    };
    let mut ledger = Ledger::open(data_dir, cfg).expect("open the fixture ledger");
    let mut ids = Vec::with_capacity(n);
    let mut done = 0;
    while done < n {
        let chunk = (n - done).min(2000);
        let mut events: Vec<Event> = (done..done + chunk).map(fixture_event).collect();
        ledger.append(&mut events).expect("append fixture events");
        ids.extend(events.into_iter().map(|e| e.event_id));
        done += chunk;
    }
    ids
}

/// Fixture event `i` of [`write_ledger`] (time: now).
pub fn fixture_event(i: usize) -> Event {
    let kind = if i % 3 == 2 {
        EventKind::McpResponse
    } else {
        EventKind::McpRequest
    };
    let mut e = Event::new(kind);
    e.method = Some("tools/call".into());
    e.tool_invoked = Some(format!("get|weather=now\\{}", i % 7));
    e.agent_id = Some("fixture-agent".into());
    e.host = Some("fixture-host".into());
    e.session_id = Some("01a2125b-85b5-74a5-94ab-08c55a216fca".into());
    e.request_id = Some(serde_json::json!(i));
    e.parameters_used =
        Some(serde_json::json!({"city": "Zürich", "n": i, "note": "a \"quoted\" ]value["}));
    if i.is_multiple_of(10) {
        e.labels = vec!["pii".into()];
    }
    e
}

/// Event ids of JSON lines (ledger lines or anything with `event_id`).
pub fn event_id_of(line: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(line).expect("a JSON event");
    v["event_id"].as_str().expect("event_id").to_string()
}

/// How a private rsyslogd listens.
#[derive(Debug, Clone)]
pub enum SyslogInput {
    /// imtcp (octet counting is auto-detected).
    Tcp,
    /// imudp.
    Udp,
    /// imtcp with the gtls netstream driver (RFC 5425), anonymous client auth.
    Tls {
        /// Server certificate chain (PEM).
        cert: PathBuf,
        /// Server key (PEM).
        key: PathBuf,
        /// CA (PEM).
        ca: PathBuf,
    },
    /// As `Tls`, and clients must present a certificate signed by `ca` (x509/certvalid).
    MutualTls {
        /// Server certificate chain (PEM).
        cert: PathBuf,
        /// Server key (PEM).
        key: PathBuf,
        /// CA (PEM) that signs the client certificates.
        ca: PathBuf,
    },
}

/// A private `rsyslogd -n` on a loopback port, writing every raw message (`%rawmsg%`) as one
/// line of a file. Killed on drop.
pub struct Rsyslog {
    child: Option<Child>,
    dir: tempfile::TempDir,
    input: SyslogInput,
    /// The port messages go to.
    pub port: u16,
    /// A plain TCP port used to know the daemon is up (for UDP and TLS).
    ready_port: u16,
    /// The file receiving the messages.
    pub output: PathBuf,
}

/// The rsyslogd binary, or a panic saying how to install it.
pub fn rsyslogd() -> PathBuf {
    for p in ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("rsyslogd not found: install the Debian packages rsyslog and rsyslog-gnutls (.ci/install-peers.sh does)");
}

impl Rsyslog {
    /// Start one on a fresh port.
    pub fn start(input: SyslogInput) -> Self {
        Self::start_on(input, free_loopback_port())
    }

    /// Start one on `port` (e.g. to restart a killed receiver where the sender expects it).
    pub fn start_on(input: SyslogInput, port: u16) -> Self {
        let dir = tempfile::tempdir().expect("rsyslog temp dir");
        let output = dir.path().join("received.log");
        let ready_port = free_loopback_port();
        let mut conf = format!(
            "global(workDirectory=\"{work}\" maxMessageSize=\"256k\"{tls})\n",
            work = dir.path().display(),
            tls = match &input {
                SyslogInput::Tls { cert, key, ca } | SyslogInput::MutualTls { cert, key, ca } => format!(
                    " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
                    ca.display(), cert.display(), key.display()
                ),
                _ => String::new(),
            }
        );
        conf.push_str("template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n");
        match &input {
            SyslogInput::Tcp => {
                conf.push_str("module(load=\"imtcp\")\n");
                conf.push_str(&format!(
                    "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n"
                ));
            }
            SyslogInput::Udp => {
                conf.push_str("module(load=\"imtcp\")\nmodule(load=\"imudp\")\n");
                conf.push_str(&format!(
                    "input(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\")\n"
                ));
                conf.push_str(&format!(
                    "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{ready_port}\")\n"
                ));
            }
            SyslogInput::Tls { .. } | SyslogInput::MutualTls { .. } => {
                let auth = match input {
                    SyslogInput::MutualTls { .. } => "x509/certvalid",
                    _ => "anon",
                };
                conf.push_str(&format!("module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"{auth}\")\n"));
                conf.push_str(&format!(
                    "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n"
                ));
            }
        }
        conf.push_str(&format!(
            "action(type=\"omfile\" file=\"{}\" template=\"raw\" asyncWriting=\"off\" flushOnTXEnd=\"on\")\n",
            output.display()
        ));
        let conf_path = dir.path().join("rsyslog.conf");
        std::fs::write(&conf_path, conf).expect("write rsyslog.conf");
        let child = Command::new(rsyslogd())
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("rsyslogd.stderr")).expect("stderr file"))
            .spawn()
            .expect("start rsyslogd");
        let mut r = Rsyslog {
            child: Some(child),
            dir,
            input,
            port,
            ready_port,
            output,
        };
        r.wait_ready();
        r
    }

    fn wait_ready(&mut self) {
        let probe = match self.input {
            SyslogInput::Udp => self.ready_port,
            _ => self.port,
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", probe)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("rsyslogd exited ({status}): {}", self.stderr());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "rsyslogd did not listen on 127.0.0.1:{probe} within 20 s: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// What rsyslogd printed on stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyslogd.stderr")).unwrap_or_default()
    }

    /// The messages received so far, one per line.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.output)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Wait until `n` messages arrived (panics after `timeout` with what did).
    pub fn wait_for_lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let lines = self.lines();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                start.elapsed() < timeout,
                "rsyslogd received {} of {n} messages within {timeout:?}; stderr: {}",
                lines.len(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kill the daemon (SIGKILL) and wait for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a [`WebhookReceiver`] has seen.
#[derive(Debug, Default)]
pub struct WebhookLog {
    /// Every `event_id` of every accepted batch, in arrival order (duplicates included).
    pub event_ids: Vec<String>,
    /// Accepted batches.
    pub batches: u64,
    /// Requests whose signature did not verify (answered 401, nothing stored).
    pub bad_signatures: u64,
    /// Requests answered with an injected failure.
    pub injected_failures: u64,
    /// Statuses to answer the next requests with, front first (e.g. 500, 429).
    pub fail_next: Vec<u16>,
}

/// An HTTP receiver of mcptrail webhook batches on 127.0.0.1 that verifies
/// `X-Mcptrail-Signature: sha256=<hex>` over the exact body with HMAC-SHA256 (constant-time),
/// and records the event ids. It can be stopped and started again on the same port.
pub struct WebhookReceiver {
    key: Vec<u8>,
    /// The port it listens on.
    pub port: u16,
    /// What it has seen (shared across restarts).
    pub log: Arc<Mutex<WebhookLog>>,
    server: Option<(Arc<tiny_http::Server>, std::thread::JoinHandle<()>)>,
}

impl WebhookReceiver {
    /// Start on a fresh port with `key`.
    pub fn start(key: &[u8]) -> Self {
        let mut r = WebhookReceiver {
            key: key.to_vec(),
            port: free_loopback_port(),
            log: Arc::default(),
            server: None,
        };
        r.resume();
        r
    }

    /// `http://127.0.0.1:<port>/hook`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Stop listening (clients then get connection refused).
    pub fn stop(&mut self) {
        if let Some((server, thread)) = self.server.take() {
            server.unblock();
            let _ = thread.join();
        }
    }

    /// Listen again on the same port.
    pub fn resume(&mut self) {
        assert!(self.server.is_none(), "already running");
        let start = Instant::now();
        let server = loop {
            match tiny_http::Server::http(("127.0.0.1", self.port)) {
                Ok(s) => break Arc::new(s),
                Err(e) if start.elapsed() < Duration::from_secs(10) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("webhook receiver cannot listen on {}: {e}", self.port),
            }
        };
        let (s, key, log) = (server.clone(), self.key.clone(), self.log.clone());
        let thread = std::thread::spawn(move || {
            while let Ok(mut req) = s.recv() {
                let status = handle(&mut req, &key, &log);
                let _ = req.respond(tiny_http::Response::empty(status));
            }
        });
        self.server = Some((server, thread));
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn handle(req: &mut tiny_http::Request, key: &[u8], log: &Mutex<WebhookLog>) -> u16 {
    let mut body = Vec::new();
    if req.as_reader().read_to_end(&mut body).is_err() {
        return 400;
    }
    let sig = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("X-Mcptrail-Signature"))
        .map(|h| h.value.as_str().to_string());
    let mut log = log.lock().unwrap();
    if !log.fail_next.is_empty() {
        log.injected_failures += 1;
        return log.fail_next.remove(0);
    }
    let verified = sig
        .as_deref()
        .and_then(|s| s.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
        .is_some_and(|tag| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
            mac.update(&body);
            mac.verify_slice(&tag).is_ok()
        });
    if !verified {
        log.bad_signatures += 1;
        return 401;
    }
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return 400;
    };
    let Some(events) = doc["events"].as_array() else {
        return 400;
    };
    for e in events {
        let id = e["event_id"]
            .as_str()
            .or_else(|| e.pointer("/metadata/uid").and_then(|v| v.as_str()));
        match id {
            Some(id) => log.event_ids.push(id.to_string()),
            None => return 422,
        }
    }
    log.batches += 1;
    200
}
