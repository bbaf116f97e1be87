//! `mcptrail doctor` through the real CLI: a healthy setup passes every check it can, and each
//! fault — a widened permission, a tampered record, a clock set back, an unwrapped server, a
//! broken wrap, an unusable index, a wrong config key, a full disk — fails its own check with
//! a fix hint, and the exit code says so.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use mcptrail_event::{Event, EventKind};
use mcptrail_ledger::{Ledger, LedgerConfig};
use serde_json::Value;

use crate::support::*;

/// A data directory with records and a checkpoint, an anchor, the seed moved off, a config
/// naming both, and a project whose one server is installed.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let s = Setup {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(s.home()).unwrap();
        std::fs::create_dir_all(s.project()).unwrap();
        std::fs::write(
            s.config(),
            format!(
                "[ledger]\nanchor_dir = \"{}\"\n",
                s.path("anchor").display()
            ),
        )
        .unwrap();
        append(&s.data(), &[Event::new(EventKind::SessionStart)]);
        // Sign and anchor a checkpoint over the records, as a user would.
        let (code, _, err) = s.run(&["checkpoint"]);
        assert_eq!(code, 0, "{err}");
        // The seed goes to the auditors.
        std::fs::rename(s.data().join("keys/mac.seed"), s.path("auditor-mac.seed")).unwrap();
        s.write_project(&format!(
            r#"{{"mcpServers": {{"files": {{"command": {}, "args": ["wrap", "--data-dir", {}, "--", "npx", "-y", "@modelcontextprotocol/server-filesystem", "/tmp"]}}}}}}"#,
            Value::from(env!("CARGO_BIN_EXE_mcptrail")),
            Value::from(s.data().to_str().unwrap())
        ));
        s
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn data(&self) -> PathBuf {
        self.path("data")
    }
    fn home(&self) -> PathBuf {
        self.path("home")
    }
    fn project(&self) -> PathBuf {
        self.path("project")
    }
    fn config(&self) -> PathBuf {
        self.path("mcptrail.toml")
    }
    fn write_project(&self, text: &str) {
        std::fs::write(self.project().join(".mcp.json"), text).unwrap();
    }
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = mcptrail()
            .env("HOME", self.home())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("APPDATA")
            .args(["--data-dir", self.data().to_str().unwrap()])
            .args(["--config", self.config().to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }
    /// `doctor --json` → (exit code, check name → the check).
    fn doctor(&self, extra: &[&str]) -> (i32, BTreeMap<String, Value>) {
        let project = self.project();
        let mut args = vec!["doctor", "--json", "--project", project.to_str().unwrap()];
        if !extra.contains(&"--min-free-mib") {
            // Deterministic on any CI disk; the low-disk case is tested on its own.
            args.extend(["--min-free-mib", "1"]);
        }
        args.extend(extra);
        let (code, out, err) = self.run(&args);
        let report: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
        let checks = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["check"].as_str().unwrap().to_string(), c.clone()))
            .collect();
        (code, checks)
    }
}

fn append(data: &Path, events: &[Event]) {
    let mut ledger = Ledger::open(data, LedgerConfig::default()).unwrap();
    let mut prepared = events.to_vec();
    ledger.append(&mut prepared).unwrap();
}

fn status(checks: &BTreeMap<String, Value>, name: &str) -> String {
    checks[name]["status"].as_str().unwrap().to_string()
}

/// Every check's status, for one assertion that shows them all when it fails.
fn statuses(checks: &BTreeMap<String, Value>) -> BTreeMap<&str, &str> {
    checks
        .iter()
        .map(|(k, v)| (k.as_str(), v["status"].as_str().unwrap()))
        .collect()
}

#[test]
fn a_healthy_setup_passes_and_says_what_it_checked() {
    let s = Setup::new();
    let (code, checks) = s.doctor(&[]);
    let expected: BTreeMap<&str, &str> = [
        ("config", "pass"),
        ("data dir", "pass"),
        ("disk", "pass"),
        ("settings", "pass"),
        ("ledger", "pass"),
        ("keys", "pass"),
        // The test's anchor is a temp dir on the data directory's disk: rightly a warning.
        ("anchor", "warn"),
        ("clock", "pass"),
        ("index", "pass"),
        ("sinks", "skip"),
        ("servers", "pass"),
        ("gateway", "skip"),
    ]
    .into_iter()
    .collect();
    assert_eq!(statuses(&checks), expected, "{checks:#?}");
    assert_eq!(code, 0);
    let ledger = checks["ledger"]["message"].as_str().unwrap();
    assert!(
        ledger.contains("1 record(s)")
            && ledger.contains("2 signed checkpoint(s) verified (anchored copies included)"),
        "{ledger}"
    );
    assert!(checks["anchor"]["message"]
        .as_str()
        .unwrap()
        .contains("same file system"));
    assert!(checks["servers"]["message"]
        .as_str()
        .unwrap()
        .contains("1 server(s) in 1 client file(s): 1 recorded"));

    // The text form: one line per check, the fix under the warning, the tally last.
    let (code, out, _) = s.run(&[
        "doctor",
        "--project",
        s.project().to_str().unwrap(),
        "--min-free-mib",
        "1",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("\nPASS  ledger    chain intact"), "{out}");
    assert!(out.contains("\nWARN  anchor"), "{out}");
    assert!(
        out.contains("\n      fix:       an anchor only helps off this disk"),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with("9 passed, 1 warning(s), 0 failed"),
        "{out}"
    );
}

#[test]
fn nothing_recorded_yet_is_a_warning_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = mcptrail()
        .env("HOME", dir.path())
        .env_remove("XDG_CONFIG_HOME")
        .args(["--data-dir", dir.path().join("none").to_str().unwrap()])
        .args(["doctor", "--json", "--min-free-mib", "1"])
        .args(["--project", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_name = |n: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("data dir")["status"], "warn");
    assert!(by_name("data dir")["fix"]
        .as_str()
        .unwrap()
        .contains("mcptrail install --all"));
    assert_eq!(by_name("ledger")["status"], "skip");
    assert_eq!(by_name("servers")["status"], "skip");
    assert!(
        !dir.path().join("none").exists(),
        "doctor does not create the data directory"
    );
}

#[test]
fn widened_permissions_fail_the_data_dir_and_keys_checks() {
    let s = Setup::new();
    let skey = s.data().join("keys/checkpoint.skey");
    std::fs::set_permissions(&skey, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(s.data(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, checks) = s.doctor(&[]);
    assert_eq!(code, 1);
    assert_eq!(status(&checks, "data dir"), "fail");
    let details = checks["data dir"]["details"].to_string();
    assert!(
        details.contains("checkpoint.skey (mode 0644)") && details.contains("data (mode 0755)"),
        "{details}"
    );
    assert!(checks["data dir"]["fix"]
        .as_str()
        .unwrap()
        .starts_with("chmod -R go-rwx"));
    assert_eq!(status(&checks, "keys"), "fail");
    assert!(checks["keys"]["details"]
        .to_string()
        .contains("the checkpoint signing key must be readable by its owner only"));
    // The public key may be world-readable: it is meant to be handed out.
    std::fs::set_permissions(&skey, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(s.data(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let vkey = s.data().join("keys/checkpoint.vkey");
    std::fs::set_permissions(&vkey, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, checks) = s.doctor(&[]);
    assert_eq!((code, status(&checks, "data dir")), (0, "pass".into()));
}

#[test]
fn a_seed_left_on_the_machine_is_a_warning() {
    let s = Setup::new();
    std::fs::rename(s.path("auditor-mac.seed"), s.data().join("keys/mac.seed")).unwrap();
    let (code, checks) = s.doctor(&[]);
    assert_eq!(code, 0);
    assert_eq!(status(&checks, "keys"), "warn");
    assert!(checks["keys"]["fix"]
        .as_str()
        .unwrap()
        .contains("verify --seed"));
}

#[test]
fn a_tampered_record_fails_the_ledger_check_and_names_it() {
    let s = Setup::new();
    let seg = mcptrail_ledger::list_segments(&s.data().join("ledger"))
        .unwrap()
        .remove(0)
        .path;
    let mode = std::fs::metadata(&seg).unwrap().permissions().mode();
    std::fs::set_permissions(&seg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = std::fs::read_to_string(&seg).unwrap();
    let tampered = text.replacen("session.start", "session.end__", 1);
    assert_ne!(text, tampered);
    std::fs::write(&seg, tampered).unwrap();
    std::fs::set_permissions(&seg, std::fs::Permissions::from_mode(mode)).unwrap();
    let (code, checks) = s.doctor(&[]);
    assert_eq!(code, 1);
    assert_eq!(status(&checks, "ledger"), "fail", "{checks:#?}");
    let details = checks["ledger"]["details"].to_string();
    assert!(
        details.contains("seq 1") || details.contains("line 1"),
        "{details}"
    );
    assert!(checks["ledger"]["fix"]
        .as_str()
        .unwrap()
        .contains("as evidence"));
}

#[test]
fn a_record_from_the_future_fails_the_clock_check() {
    let s = Setup::new();
    let mut e = Event::new(EventKind::SessionStart);
    e.time = mcptrail_event::format_rfc3339_nanos(
        time::OffsetDateTime::now_utc() + time::Duration::hours(2),
    );
    append(&s.data(), &[e]);
    let (code, checks) = s.doctor(&[]);
    assert_eq!(code, 1);
    assert_eq!(status(&checks, "clock"), "fail");
    let msg = checks["clock"]["message"].as_str().unwrap();
    assert!(
        msg.contains("ahead of the clock") && msg.contains("seq 2"),
        "{msg}"
    );
    // Within the tolerance it passes.
    let (_, checks) = s.doctor(&["--max-skew-secs", "10000"]);
    assert_ne!(status(&checks, "clock"), "fail");
}

#[test]
fn unwrapped_and_broken_servers_fail_http_ones_warn() {
    let s = Setup::new();
    s.write_project(
        r#"{"mcpServers": {
            "plain": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"]},
            "gone": {"command": "/nowhere/mcptrail", "args": ["wrap", "--", "npx", "x"]},
            "web": {"type": "http", "url": "http://127.0.0.1:9/mcp"}
        }}"#,
    );
    let (code, checks) = s.doctor(&[]);
    assert_eq!(code, 1);
    assert_eq!(status(&checks, "servers"), "fail");
    let details: Vec<String> = checks["servers"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    assert_eq!(details.len(), 3, "{details:#?}");
    assert!(details[0].contains(": plain — not wrapped"), "{details:#?}");
    assert!(
        details[1].contains(": gone — runs through /nowhere/mcptrail, which does not exist"),
        "{details:#?}"
    );
    assert!(details[2].contains(": web — HTTP server"), "{details:#?}");
    assert!(checks["servers"]["fix"]
        .as_str()
        .unwrap()
        .contains("mcptrail install --all"));

    // HTTP only: a warning (recording it needs the gateway), not a failure.
    s.write_project(
        r#"{"mcpServers": {"web": {"type": "http", "url": "http://127.0.0.1:9/mcp"}}}"#,
    );
    let (code, checks) = s.doctor(&[]);
    assert_eq!((code, status(&checks, "servers")), (0, "warn".into()));

    // A server wrapped into another data directory is pointed out.
    s.write_project(&format!(
        r#"{{"mcpServers": {{"x": {{"command": {}, "args": ["wrap", "--data-dir=/srv/elsewhere", "--", "npx"]}}}}}}"#,
        Value::from(env!("CARGO_BIN_EXE_mcptrail"))
    ));
    let (_, checks) = s.doctor(&[]);
    assert_eq!(status(&checks, "servers"), "warn");
    assert!(checks["servers"]["details"]
        .to_string()
        .contains("recorded to /srv/elsewhere"));

    // An unreadable client file is a failure too.
    s.write_project("{\"mcpServers\": {");
    let (code, checks) = s.doctor(&[]);
    assert_eq!((code, status(&checks, "servers")), (1, "fail".into()));
    assert!(checks["servers"]["details"]
        .to_string()
        .contains("not valid JSON"));
}

#[test]
fn an_unusable_index_fails_and_reindex_repairs_it() {
    let s = Setup::new();
    std::fs::write(s.data().join("index.sqlite"), "not a database").unwrap();
    std::fs::set_permissions(
        s.data().join("index.sqlite"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let (code, checks) = s.doctor(&[]);
    assert_eq!((code, status(&checks, "index")), (1, "fail".into()));
    assert!(checks["index"]["fix"]
        .as_str()
        .unwrap()
        .contains("mcptrail reindex"));
    let (code, out, err) = s.run(&["reindex"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reindexed 1 events"), "{out}");
    let (code, checks) = s.doctor(&[]);
    assert_eq!((code, status(&checks, "index")), (0, "pass".into()));
}

#[test]
fn a_wrong_config_key_is_a_failed_check_and_the_rest_still_run() {
    let s = Setup::new();
    std::fs::write(s.config(), "[ledger]\nanchor_directory = \"/x\"\n").unwrap();
    let (code, checks) = s.doctor(&[]);
    assert_eq!(code, 1);
    assert_eq!(status(&checks, "config"), "fail");
    let msg = checks["config"]["message"].as_str().unwrap();
    assert!(msg.contains("anchor_directory"), "{msg}");
    assert_eq!(status(&checks, "ledger"), "pass");
    // Other commands still refuse the file.
    let (code, _, err) = s.run(&["log"]);
    assert_eq!(code, 2);
    assert!(err.contains("anchor_directory"), "{err}");
}

#[test]
fn too_little_free_space_fails_the_disk_check() {
    let s = Setup::new();
    // More than any disk has: the check must fail and say how much is free.
    let (code, checks) = s.doctor(&["--min-free-mib", "1000000000000"]);
    assert_eq!((code, status(&checks, "disk")), (1, "fail".into()));
    let msg = checks["disk"]["message"].as_str().unwrap();
    assert!(
        msg.contains(" free of ") && msg.contains("below the"),
        "{msg}"
    );
}

#[test]
fn durability_switched_off_and_an_unreachable_anchor_are_reported() {
    let s = Setup::new();
    std::fs::write(
        s.config(),
        "[ledger]\nfsync = false\nmac = false\nanchor_dir = \"/proc/mcptrail-anchor\"\n[redact]\nenabled = false\n",
    )
    .unwrap();
    let (code, checks) = s.doctor(&[]);
    assert_eq!(code, 1);
    assert_eq!(status(&checks, "settings"), "warn");
    assert_eq!(checks["settings"]["details"].as_array().unwrap().len(), 3);
    assert_eq!(status(&checks, "anchor"), "fail");
    assert!(checks["anchor"]["fix"]
        .as_str()
        .unwrap()
        .contains("mkdir -p"));
}

#[test]
fn an_anchor_that_lags_is_reported_and_checkpoint_catches_it_up() {
    let s = Setup::new();
    // A writer without the anchor configured signs a newer checkpoint.
    let mut ledger = Ledger::open(&s.data(), LedgerConfig::default()).unwrap();
    ledger
        .append(&mut [Event::new(EventKind::SessionEnd)])
        .unwrap();
    ledger.checkpoint_now().unwrap();
    drop(ledger);
    let (code, checks) = s.doctor(&[]);
    assert_eq!((code, status(&checks, "anchor")), (0, "warn".into()));
    let msg = checks["anchor"]["message"].as_str().unwrap();
    assert!(
        msg.contains("lags") && msg.contains("covers 2 records, the newest anchored one 1"),
        "{msg}"
    );
    let (code, _, err) = s.run(&["checkpoint"]);
    assert_eq!(code, 0, "{err}");
    assert!(s.path("anchor/cp-00000000000000000002.note").exists());
    let (_, checks) = s.doctor(&[]);
    assert!(checks["anchor"]["message"]
        .as_str()
        .unwrap()
        .contains("same file system"));
}

#[test]
fn the_gateway_check_validates_routes_and_warns_about_exposure() {
    let s = Setup::new();
    let base = std::fs::read_to_string(s.config()).unwrap();
    let with = |gateway: &str| std::fs::write(s.config(), format!("{base}{gateway}")).unwrap();
    with("[gateway]\nlisten = \"127.0.0.1:8931\"\n[[gateway.routes]]\npath = \"/a\"\nupstream = \"http://127.0.0.1:3001\"\n");
    let (_, checks) = s.doctor(&[]);
    assert_eq!(
        status(&checks, "gateway"),
        "pass",
        "{:#?}",
        checks["gateway"]
    );
    with("[gateway]\nlisten = \"0.0.0.0:8931\"\n[[gateway.routes]]\npath = \"/a\"\nupstream = \"http://127.0.0.1:3001\"\n");
    let (_, checks) = s.doctor(&[]);
    assert_eq!(status(&checks, "gateway"), "warn");
    assert!(checks["gateway"]["message"]
        .as_str()
        .unwrap()
        .contains("plain HTTP"));
    with("[gateway]\n[[gateway.routes]]\nname = \"gh\"\npath = \"/a\"\nupstream = \"http://127.0.0.1:3001\"\n[gateway.routes.auth]\nmode = \"jwt\"\njwks_file = \"/nonexistent/jwks.json\"\nissuer = \"i\"\naudience = [\"a\"]\n");
    let (code, checks) = s.doctor(&[]);
    assert_eq!(status(&checks, "gateway"), "fail");
    assert!(checks["gateway"]["message"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/jwks.json"));
    assert_eq!(code, 1);
}
