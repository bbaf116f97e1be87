//! The dashboard of `mcptrail serve` in a real browser: headless Chromium (Debian's
//! `/usr/bin/chromium`) driven by `playwright-core` from `.ci/peers`, running the script
//! `crates/mcptrail-server/tests/browser/dashboard.mjs` with the machine's `node`.
//!
//! The trail is real: a session recorded by `mcptrail wrap` around the reference filesystem
//! server (a secret read through a tool, a tool the server never listed), alerts raised by
//! `mcptrail detect --append`, tokens made by `mcptrail serve token add`, and the real
//! `mcptrail serve` on a free loopback port. While the investigator's browser watches the
//! live tail, a second session is recorded. Afterwards the ledger must hold every step the
//! browsers took (requests, decision, execution, reads, the refused sign-in, the
//! verification) and no token anywhere, in the ledger or in the server's output.
//!
//! Missing Chromium or playwright-core fails the test with what to install; it never skips.
//! Screenshots of every step: `target/browser-artifacts/serve_browser/`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcptrail_event::EventKind;
use mcptrail_test_support::{peers_dir, server_filesystem_cmd, workspace_root};
use serde_json::json;

use crate::support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const SECRET: &str = "hunter2-Very-Secret-99";

/// Where the screenshots go: `<target>/browser-artifacts/<name>` (git-ignored).
pub(crate) fn artifacts_dir(name: &str) -> PathBuf {
    // The test executable is <target>/<profile>/deps/cli-<hash>.
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace_root().join("target"));
    let dir = target.join("browser-artifacts").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Chromium, playwright-core and node, or a panic that says how to get them.
pub(crate) fn require_browser() {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: the dashboard's browser tests need Debian's chromium \
         (`.ci/install-peers.sh` installs it with apt-get)"
    );
    let peers = peers_dir();
    assert!(
        peers
            .join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is missing under {}/node_modules: run `.ci/install-peers.sh` \
         (it is pinned in .ci/peers/package.json)",
        peers.display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is not on PATH: {node:?}"
    );
}

/// A running `mcptrail serve`; killed (by its pid) when dropped.
pub(crate) struct Serve {
    child: Child,
    /// `http://127.0.0.1:PORT` (or https).
    pub(crate) base: String,
    /// Everything it wrote to stderr so far.
    pub(crate) stderr: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    /// `mcptrail --data-dir DATA [--config CFG] serve --listen 127.0.0.1:0`, up and listening.
    pub(crate) fn start(data: &Path, config: Option<&Path>) -> Serve {
        let mut cmd = mcptrail();
        cmd.arg("--data-dir").arg(data);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let mut child = cmd
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let err = BufReader::new(child.stderr.take().unwrap());
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(url);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mcptrail serve did not start: {:?}", stderr.lock().unwrap());
            }
        };
        Serve {
            child,
            base,
            stderr,
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mcptrail [--config CFG] --data-dir DATA serve token add --name NAME --role ROLE` → the
/// token.
pub(crate) fn add_token(data: &Path, config: Option<&Path>, name: &str, role: &str) -> String {
    let mut cmd = mcptrail();
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "token", "add", "--name", name, "--role", role])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("mct_"), "{token}");
    token
}

/// Files for the filesystem server, one with credentials in it.
fn files(dir: &Path) -> PathBuf {
    let root = dir.join("files");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join(".env"),
        format!("DB_HOST=db.internal\nDB_PASSWORD={SECRET}\n"),
    )
    .unwrap();
    std::fs::write(root.join("notes.txt"), "nothing to see\n").unwrap();
    root.canonicalize().unwrap()
}

/// One agent session through `mcptrail wrap`: `calls` are (tool, arguments).
fn record_session(
    data: &Path,
    config: &Path,
    root: &Path,
    client: &str,
    calls: &[(&str, serde_json::Value)],
) {
    let server = server_filesystem_cmd(root);
    let mut cmd = mcptrail();
    cmd.arg("--config")
        .arg(config)
        .arg("wrap")
        .arg("--data-dir")
        .arg(data)
        .arg("--")
        .args(&server);
    let mut w = Wrapped::spawn(cmd);
    w.initialize(client);
    w.request(1, "tools/list", json!({}));
    for (i, (tool, args)) in calls.iter().enumerate() {
        w.request(
            i as i64 + 2,
            "tools/call",
            json!({"name": tool, "arguments": args}),
        );
    }
    let _ = w.finish(Duration::from_secs(30));
}

/// Run the browser script; `on_line` sees each line it prints and may answer on its stdin.
pub(crate) fn run_browser_script(
    script: &str,
    env: &[(&str, String)],
    timeout: Duration,
    mut on_line: impl FnMut(&str, &mut ChildStdin),
) -> Vec<String> {
    let path = workspace_root()
        .join("crates/mcptrail-server/tests/browser")
        .join(script);
    let mut cmd = Command::new("node");
    cmd.arg(&path)
        .env("MCPTRAIL_PEERS_DIR", peers_dir())
        .env("MCPTRAIL_CHROMIUM", CHROMIUM)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let out = BufReader::new(child.stdout.take().unwrap());
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            let _ = tx2.send(l);
        }
    });
    let err = BufReader::new(child.stderr.take().unwrap());
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let stderr2 = stderr.clone();
    let err_thread = std::thread::spawn(move || {
        for l in err.lines().map_while(Result::ok) {
            stderr2.lock().unwrap().push(l);
        }
    });
    drop(tx);
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                on_line(&l, &mut stdin);
                lines.push(l);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{script} did not finish within {timeout:?}; stdout: {lines:#?}; stderr: {:#?}",
                    stderr.lock().unwrap()
                );
            }
        }
    }
    drop(stdin);
    let status = child.wait().unwrap();
    let _ = err_thread.join();
    let stderr = stderr.lock().unwrap().clone();
    assert!(
        status.success(),
        "{script} failed ({status}); stdout: {lines:#?}; stderr: {stderr:#?}"
    );
    lines
}

#[test]
fn serve_dashboard_in_chromium() {
    require_browser();
    let dir = tempfile::tempdir().unwrap();
    let root = files(dir.path());
    let data = dir.path().join("data");
    // Tool paths are encrypted in the trail (a custom rule), with a master key the server has.
    let master = dir.path().join("master.key");
    std::fs::write(&master, "5a".repeat(32)).unwrap();
    let config = dir.path().join("mcptrail.toml");
    std::fs::write(
        &config,
        format!(
            "[redact]\nmaster_key_file = \"{}\"\n[[redact.rules]]\nname = \"file_path\"\nkey = \"path\"\naction = \"encrypt\"\n",
            master.display()
        ),
    )
    .unwrap();
    let secret_file = root.join(".env");
    let revealed = secret_file.display().to_string();
    record_session(
        &data,
        &config,
        &root,
        "browser-test-agent",
        &[
            ("read_text_file", json!({"path": secret_file})),
            ("exec_shell", json!({"cmd": "id"})),
        ],
    );
    let (code, _, err) = run(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "detect",
        "--append",
    ]);
    assert_eq!(code, 0, "{err}");
    // A baseline for the agents view to draw the activity against.
    let (code, _, err) = run(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "baseline",
        "learn",
        "--since",
        "1d",
    ]);
    assert_eq!(code, 0, "{err}");
    let ivy = add_token(&data, Some(&config), "ivy", "investigator");
    let audrey = add_token(&data, Some(&config), "audrey", "auditor");
    let serve = Serve::start(&data, Some(&config));
    let artifacts = artifacts_dir("serve_browser");

    let mut tail_sent = false;
    let lines = run_browser_script(
        "dashboard.mjs",
        &[
            ("MCPTRAIL_BASE_URL", serve.base.clone()),
            ("MCPTRAIL_TOKEN_IVY", ivy.clone()),
            ("MCPTRAIL_TOKEN_AUDREY", audrey.clone()),
            ("MCPTRAIL_ARTIFACTS", artifacts.display().to_string()),
            ("MCPTRAIL_TAIL_TOOL", "list_directory".into()),
            ("MCPTRAIL_SECRET", SECRET.into()),
            ("MCPTRAIL_REVEAL_EXPECT", revealed.clone()),
        ],
        Duration::from_secs(240),
        |line, stdin| {
            if line == "TAIL_OPEN" {
                // A second agent session while ivy watches the live tail.
                record_session(
                    &data,
                    &config,
                    &root,
                    "tail-agent",
                    &[("list_directory", json!({"path": root}))],
                );
                stdin.write_all(b"TAIL_SENT\n").unwrap();
                stdin.flush().unwrap();
                tail_sent = true;
            }
        },
    );
    assert!(tail_sent, "the script never opened the tail: {lines:#?}");
    let ok = lines
        .iter()
        .find_map(|l| l.strip_prefix("BROWSER_OK "))
        .unwrap_or_else(|| panic!("no BROWSER_OK: {lines:#?}"));
    let ok: serde_json::Value = serde_json::from_str(ok).unwrap();
    let shots = std::fs::read_dir(&artifacts)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "png"))
        })
        .count();
    assert_eq!(
        shots as u64,
        ok["screenshots"].as_u64().unwrap(),
        "a screenshot per step"
    );
    assert!(shots >= 10, "{shots} screenshots");

    // What the browsers did is in the ledger, in order, and nothing secret is.
    let evs = wait_for_audit(&data);
    let req_id = ok["request"].as_str().unwrap();
    let steps: Vec<(String, String)> = evs
        .iter()
        .filter(|e| e.detail.as_ref().is_some_and(|d| d["request_id"] == req_id))
        .map(|e| {
            let d = e.detail.as_ref().unwrap();
            let who = d["requested_by"]
                .as_str()
                .or(d["by"].as_str())
                .or(d["approved_by"].as_str())
                .unwrap_or("");
            (e.kind.as_str().to_string(), who.to_string())
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("governance.request".to_string(), "ivy".to_string()),
            ("governance.decision".into(), "audrey".into()),
            ("governance.forget".into(), "ivy".into()),
            ("governance.execution".into(), "audrey".into()),
        ],
        "the request's trail"
    );
    let reads = |who: &str, endpoint: &str| {
        evs.iter()
            .filter(|e| e.kind == EventKind::GovernanceRead)
            .filter(|e| {
                let d = e.detail.as_ref().unwrap();
                d["principal"] == who && d["endpoint"] == endpoint
            })
            .count()
    };
    assert!(reads("ivy", "GET /api/v1/sessions/{id}/timeline") >= 2);
    assert!(reads("ivy", "GET /api/v1/alerts") >= 1);
    assert!(reads("ivy", "GET /api/v1/tail") >= 1);
    assert!(reads("audrey", "GET /api/v1/integrity") >= 2);
    assert!(evs.iter().any(|e| e.kind == EventKind::GovernanceAccess
        && e.detail.as_ref().unwrap()["reason"] == "unknown_token"));
    assert!(
        !evs.iter().any(|e| e.kind == EventKind::GovernanceAccess
            && e.detail.as_ref().unwrap()["reason"] == "wrong_role"),
        "the dashboard calls no endpoint the role may not use"
    );
    assert!(evs.iter().any(|e| e.kind == EventKind::SystemVerify
        && e.detail.as_ref().unwrap()["by"] == "audrey"
        && e.detail.as_ref().unwrap()["verdict"] == "intact"));
    let tail_session = evs
        .iter()
        .any(|e| e.tool_invoked.as_deref() == Some("list_directory"));
    assert!(tail_session, "the second session is in the ledger");
    let ledger_text: String = mcptrail_ledger::LedgerReader::open(&data, 1)
        .unwrap()
        .map(|r| String::from_utf8_lossy(&r.unwrap().line).into_owned())
        .collect();
    for t in [&ivy, &audrey] {
        assert!(
            !ledger_text.contains(t.as_str()),
            "a token is in the ledger"
        );
    }
    assert!(!ledger_text.contains(SECRET), "the secret is in the ledger");
    let log = serve.stderr.lock().unwrap().join("\n");
    for t in [&ivy, &audrey] {
        assert!(
            !log.contains(t.as_str()),
            "a token is in the server's output"
        );
    }
    // The reveal: recorded with who, approver and why, never with the value; the value is
    // in no line the server wrote and nowhere in the ledger.
    let reveal_id = ok["reveal"].as_str().unwrap();
    let reveal = evs
        .iter()
        .find(|e| {
            e.kind == EventKind::GovernanceReveal
                && e.detail.as_ref().unwrap()["request_id"] == reveal_id
        })
        .expect("a governance.reveal event");
    let d = reveal.detail.as_ref().unwrap();
    assert_eq!(
        (d["by"].as_str(), d["approved_by"].as_str()),
        (Some("ivy"), Some("audrey"))
    );
    assert_eq!(d["field"], "/parameters_used/path");
    assert_eq!(d["values"][0]["result"], "revealed");
    assert!(
        !log.contains(&revealed),
        "the revealed value is in the server's output"
    );
    assert!(
        !ledger_text.contains(&revealed),
        "the revealed value is in the ledger"
    );
}

/// Every event (chain and schema checked) once the verification is recorded: the meta-audit
/// is group-committed within milliseconds of each read.
fn wait_for_audit(data: &Path) -> Vec<mcptrail_event::Event> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let evs = events(data);
        if evs.iter().any(|e| e.kind == EventKind::SystemVerify) || Instant::now() > deadline {
            return evs;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
