//! Helpers of the CLI tests: run `mcptrail`, talk raw JSON-RPC through `wrap`, read the
//! ledger back, and validate every event against the published JSON Schema.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mcptrail_event::{Event, EventKind};
use mcptrail_ledger::{verify, LedgerReader, VerifyOptions};

pub(crate) fn mcptrail() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mcptrail"));
    c.env_remove("MCPTRAIL_DATA_DIR")
        .env_remove("MCPTRAIL_CONFIG")
        .env_remove("MCPTRAIL_USER")
        .env_remove("MCPTRAIL_AGENT_ID");
    // The OTLP sink reads these when its table leaves a setting out.
    for (var, _) in mcptrail_sinks::sink::otlp::OTEL_ENV_VARS {
        c.env_remove(var);
    }
    c
}

/// `mcptrail <args>` → (exit code, stdout, stderr).
pub(crate) fn run(args: &[&str]) -> (i32, String, String) {
    let out = mcptrail().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Every event of the ledger in `data_dir`, after checking the chain and the schema.
pub(crate) fn events(data_dir: &Path) -> Vec<Event> {
    let report = verify(data_dir, &VerifyOptions::default()).unwrap();
    assert!(report.ok(), "ledger does not verify: {:?}", report.problems);
    let mut out = Vec::new();
    for rec in LedgerReader::open(data_dir, 1).unwrap() {
        let rec = rec.unwrap();
        assert_schema_valid(&rec.line);
        out.push(serde_json::from_slice(&rec.line).unwrap());
    }
    out
}

/// Validate one stored line against `mcptrail schema`.
pub(crate) fn assert_schema_valid(line: &[u8]) {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    let v = SCHEMA.get_or_init(|| {
        let (code, out, err) = run(&["schema"]);
        assert_eq!(code, 0, "{err}");
        let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
        jsonschema::validator_for(&schema).expect("the published schema compiles")
    });
    let instance: serde_json::Value = serde_json::from_slice(line).unwrap();
    let errors: Vec<String> = v
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "event violates the schema: {errors:?}\n{}",
        String::from_utf8_lossy(line)
    );
}

pub(crate) fn of_kind(events: &[Event], kind: EventKind) -> Vec<&Event> {
    events.iter().filter(|e| e.kind == kind).collect()
}

/// A `mcptrail wrap` process we talk to with raw bytes.
pub(crate) struct Wrapped {
    pub(crate) child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Everything sent to the tap.
    pub(crate) sent: Vec<u8>,
    /// Everything received from the tap.
    pub(crate) received: Vec<u8>,
}

impl Wrapped {
    pub(crate) fn start(data_dir: &Path, extra: &[&str], server: &[&str]) -> Self {
        let mut cmd = mcptrail();
        cmd.arg("wrap")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .arg("--")
            .args(server);
        Self::spawn(cmd)
    }

    /// Start `cmd` (a tap, however its command line was written) with piped stdio.
    pub(crate) fn spawn(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Wrapped {
            child,
            stdin,
            stdout,
            sent: Vec::new(),
            received: Vec::new(),
        }
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.sent.extend_from_slice(bytes);
        self.stdin
            .as_mut()
            .expect("stdin open")
            .write_all(bytes)
            .unwrap();
    }

    pub(crate) fn send_line(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes());
    }

    /// Read lines until one is a response with this id; return that line.
    pub(crate) fn read_response(&mut self, id: &serde_json::Value) -> serde_json::Value {
        loop {
            let line = self
                .read_line()
                .unwrap_or_else(|| panic!("stream ended before the response to {id}"));
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
                if v.get("id") == Some(id)
                    && (v.get("result").is_some() || v.get("error").is_some())
                {
                    return v;
                }
            }
        }
    }

    pub(crate) fn read_line(&mut self) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        let n = self.stdout.read_until(b'\n', &mut line).unwrap();
        if n == 0 {
            return None;
        }
        self.received.extend_from_slice(&line);
        Some(line)
    }

    /// A JSON-RPC request round trip.
    pub(crate) fn request(
        &mut self,
        id: i64,
        method: &str,
        params: serde_json::Value,
    ) -> serde_json::Value {
        let msg =
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_line(&msg.to_string());
        self.read_response(&serde_json::json!(id))
    }

    pub(crate) fn initialize(&mut self, client: &str) -> serde_json::Value {
        let r = self.request(
            0,
            "initialize",
            serde_json::json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {"roots": {"listChanged": true}, "sampling": {}, "elicitation": {}},
                "clientInfo": {"name": client, "version": "1.2.3"}
            }),
        );
        self.send_line(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        r
    }

    pub(crate) fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Close stdin, read the rest of stdout, wait (bounded).
    pub(crate) fn finish(mut self, timeout: Duration) -> (ExitStatus, Vec<u8>, Vec<u8>) {
        self.close_stdin();
        let mut rest = Vec::new();
        let _ = self.stdout.read_to_end(&mut rest);
        self.received.extend_from_slice(&rest);
        let status = wait_timeout(&mut self.child, timeout).expect("wrap did not exit in time");
        (status, self.sent, self.received)
    }
}

pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A shell command that runs `server` with its stdin and stdout copied to files, so a test
/// can compare what the server really received and sent with what the client saw.
pub(crate) fn teed(dir: &Path, server: &[String]) -> Vec<String> {
    let quoted: Vec<String> = server
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let script = format!(
        "tee '{}' | {} | tee '{}'",
        dir.join("server_in.bin").display(),
        quoted.join(" "),
        dir.join("server_out.bin").display()
    );
    vec!["sh".into(), "-c".into(), script]
}

/// [`teed`] around the rmcp echo server.
pub(crate) fn teed_echo_server(dir: &Path) -> Vec<String> {
    teed(
        dir,
        &[mcptrail_test_support::target_bin("rmcp-echo-server")
            .display()
            .to_string()],
    )
}

pub(crate) fn read_file(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(p).unwrap().read_to_end(&mut v).unwrap();
    v
}

pub(crate) fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Path of a small Python MCP-ish script in tests/cli/scripts.
pub(crate) fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cli/scripts")
        .join(name)
        .display()
        .to_string()
}
