//! `mcptrail detect`, `mcptrail alerts` and the streaming detector of `wrap`, over sessions
//! recorded through `wrap` around the reference filesystem server: a secret read through a
//! tool and a call to a tool the server never listed must each raise one alert, once,
//! whichever way detection runs; alerts reach a webhook through an ordinary sink.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcptrail_event::{Event, EventKind};
use mcptrail_test_support::server_filesystem_cmd;
use mcptrail_test_support::sinks::WebhookReceiver;
use serde_json::{json, Value};

use crate::support::*;

const HOOK_KEY: &str = "detect-webhook-key-0123456789";

/// Files for the server: one with credentials in it.
fn files(dir: &Path) -> PathBuf {
    let root = dir.join("files");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join(".env"),
        "DB_HOST=db.internal\nDB_PASSWORD=hunter2-Very-Secret-99\nAWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
    )
    .unwrap();
    std::fs::write(root.join("notes.txt"), "nothing to see\n").unwrap();
    root.canonicalize().unwrap()
}

/// One agent session: list the tools, read the credentials file, call a tool the server
/// does not have, read a harmless file.
fn record_session(data: &Path, root: &Path, extra: &[&str]) {
    let server = server_filesystem_cmd(root);
    let mut cmd = mcptrail();
    cmd.arg("wrap")
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .arg("--")
        .args(&server)
        .env("MCPTRAIL_TEST_HOOK_KEY", HOOK_KEY);
    let mut w = Wrapped::spawn(cmd);
    w.initialize("detect-test");
    let list = w.request(1, "tools/list", json!({}));
    assert!(
        list["result"]["tools"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "{list}"
    );
    let read = w.request(
        2,
        "tools/call",
        json!({"name": "read_text_file", "arguments": {"path": root.join(".env")}}),
    );
    assert!(
        read.to_string().contains("hunter2"),
        "the client gets the file as it is"
    );
    w.request(
        3,
        "tools/call",
        json!({"name": "exec_shell", "arguments": {"cmd": "id"}}),
    );
    w.request(
        4,
        "tools/call",
        json!({"name": "read_text_file", "arguments": {"path": root.join("notes.txt")}}),
    );
    // wrap exits with the server's code; this server's on end of input is not ours to judge.
    let _ = w.finish(Duration::from_secs(30));
}

fn run_in(data: &Path, config: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    let mut c = mcptrail();
    c.arg("--data-dir").arg(data);
    if let Some(cfg) = config {
        c.arg("--config").arg(cfg);
    }
    let out = c
        .args(args)
        .env("MCPTRAIL_TEST_HOOK_KEY", HOOK_KEY)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn alert_rules(events: &[Event]) -> Vec<String> {
    let mut r: Vec<String> = of_kind(events, EventKind::Alert)
        .iter()
        .map(|e| {
            e.detail.as_ref().unwrap()["rule"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    r.sort();
    r
}

const EXPECTED: [&str; 2] = ["builtin.secret_in_tool_call", "builtin.unknown_tool"];

#[test]
fn detect_and_alerts_over_a_recorded_session() {
    let dir = tempfile::tempdir().unwrap();
    let root = files(dir.path());
    let data = dir.path().join("data");
    record_session(&data, &root, &[]);
    let recorded = events(&data);
    assert!(
        of_kind(&recorded, EventKind::Alert).is_empty(),
        "streaming is off by default"
    );

    let (code, out, err) = run_in(&data, None, &["detect", "--json"]);
    assert_eq!(code, 0, "{err}");
    let alerts = json_lines(&out);
    let mut rules: Vec<&str> = alerts
        .iter()
        .map(|a| a["detail"]["rule"].as_str().unwrap())
        .collect();
    rules.sort();
    assert_eq!(rules, EXPECTED, "{out}");
    for a in &alerts {
        assert_eq!(a["kind"], "alert");
        assert_schema_valid(a.to_string().as_bytes());
        for id in a["detail"]["evidence"].as_array().unwrap() {
            let e = recorded.iter().find(|e| e.event_id == id.as_str().unwrap());
            let e = e.unwrap_or_else(|| panic!("evidence {id} is not in the ledger"));
            assert!(e.tool_invoked.is_some());
        }
    }
    let secret = alerts
        .iter()
        .find(|a| a["detail"]["rule"] == EXPECTED[0])
        .unwrap();
    let evidence = secret["detail"]["evidence"][0].as_str().unwrap();
    let read = recorded.iter().find(|e| e.event_id == evidence).unwrap();
    assert!(read.labels.contains(&"secret".to_string()));
    assert!(err.contains("2 alerts, 2 new (run with --append"), "{err}");

    let (code, table, _) = run_in(&data, None, &["detect"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("high     builtin.secret_in_tool_call"),
        "{table}"
    );
    assert!(
        table.contains("called tool exec_shell, which the server did not list"),
        "{table}"
    );

    let (code, _, err) = run_in(&data, None, &["detect", "--append"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 appended to the ledger"), "{err}");
    let (_, table, err) = run_in(&data, None, &["detect", "--append"]);
    assert!(
        err.contains("2 alerts, 0 new, 0 appended"),
        "running again adds nothing: {err}"
    );
    assert!(table.contains("(in ledger)"), "{table}");
    let ledger = events(&data); // verifies the chain and the schema of the appended alerts
    assert_eq!(alert_rules(&ledger), EXPECTED);
    let ids: Vec<&str> = alerts
        .iter()
        .map(|a| a["event_id"].as_str().unwrap())
        .collect();
    for a in of_kind(&ledger, EventKind::Alert) {
        assert!(
            ids.contains(&a.event_id.as_str()),
            "deterministic ids: {}",
            a.event_id
        );
    }

    let (code, out, err) = run_in(&data, None, &["alerts", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_lines(&out).len(), 2);
    let (_, out, _) = run_in(&data, None, &["alerts", "--severity", "high"]);
    assert!(
        out.contains("builtin.secret_in_tool_call") && !out.contains("unknown_tool"),
        "{out}"
    );
    let (_, out, _) = run_in(
        &data,
        None,
        &["alerts", "--rule", "builtin.unknown_tool", "--json"],
    );
    assert_eq!(json_lines(&out).len(), 1);
    let (code, _, err) = run_in(&data, None, &["alerts", "--severity", "urgent"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown severity `urgent`"), "{err}");

    // A rule file: a custom rule runs beside the pack; a broken one is named.
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rules]]\nid = \"env-files\"\ntype = \"match\"\nseverity = \"low\"\nsummary = \"{tool_invoked} read {parameters_used.path}\"\nwhere = [{ field = \"parameters_used.path\", glob = \"*/.env\" }, { field = \"kind\", equals = \"mcp.request\" }]\n",
    )
    .unwrap();
    let (code, out, err) = run_in(
        &data,
        None,
        &[
            "detect",
            "--json",
            "--no-builtin",
            "--rules",
            rules.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let custom = json_lines(&out);
    assert_eq!(custom.len(), 1, "{out}");
    assert!(custom[0]["detail"]["summary"]
        .as_str()
        .unwrap()
        .starts_with("read_text_file read /"));
    std::fs::write(&rules, "[[rules]]\nid = \"bad\"\ntype = \"match\"\nseverity = \"low\"\nsummary = \"s\"\nwhere = [{ field = \"tool\", regex = \"[\" }]\n").unwrap();
    let (code, _, err) = run_in(&data, None, &["detect", "--rules", rules.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("rule `bad` in `") && err.contains("`where[0].regex`: does not compile"),
        "{err}"
    );
    // So is a broken [detect] table in the config, for every command.
    let cfg = dir.path().join("mcptrail.toml");
    std::fs::write(&cfg, "[detect]\ndisable = [\"builtin.unknwn_tool\"]\n").unwrap();
    let (code, _, err) = run_in(&data, Some(&cfg), &["alerts"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`disable`: no rule has the id `builtin.unknwn_tool`"),
        "{err}"
    );
}

#[test]
fn streaming_detector_in_wrap_alerts_once_and_alerts_reach_a_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let root = files(dir.path());
    let data = dir.path().join("data");
    let rx = WebhookReceiver::start(HOOK_KEY.as_bytes());
    let cfg = dir.path().join("mcptrail.toml");
    std::fs::write(
        &cfg,
        format!(
            "[detect]\nstreaming = true\npoll_interval_ms = 50\n\n[[sinks]]\nname = \"soc\"\ntype = \"webhook\"\nurl = \"{}\"\nsecret = {{ env = \"MCPTRAIL_TEST_HOOK_KEY\" }}\nkinds = [\"alert\"]\nbatch_max_wait_ms = 50\n",
            rx.url()
        ),
    )
    .unwrap();
    let cfg_arg = cfg.to_str().unwrap().to_string();
    let extra = ["--config", cfg_arg.as_str()];
    record_session(&data, &root, &extra);
    let ledger = events(&data);
    assert_eq!(
        alert_rules(&ledger),
        EXPECTED,
        "the tap's detector raised each alert once"
    );
    let alert_ids: Vec<String> = of_kind(&ledger, EventKind::Alert)
        .iter()
        .map(|e| e.event_id.clone())
        .collect();
    // Each alert comes after its evidence.
    for a in of_kind(&ledger, EventKind::Alert) {
        for id in a.detail.as_ref().unwrap()["evidence"].as_array().unwrap() {
            let ev = ledger
                .iter()
                .find(|e| e.event_id == id.as_str().unwrap())
                .unwrap();
            assert!(ev.seq < a.seq);
        }
    }
    let mut shipped = rx.log.lock().unwrap().event_ids.clone();
    shipped.sort();
    shipped.dedup();
    let mut want = alert_ids.clone();
    want.sort();
    assert_eq!(
        shipped, want,
        "the webhook sink with kinds = [\"alert\"] delivered the alerts"
    );
    assert_eq!(rx.log.lock().unwrap().bad_signatures, 0);

    // The same rules over the ledger find the same alerts, already there.
    let (code, _, err) = run_in(&data, Some(&cfg), &["detect", "--append"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 alerts, 0 new"), "{err}");
    assert!(data.join("detect/cursor.json").exists());

    // A second session in the same data directory: the detector resumes from its cursor and
    // raises the new session's alerts only.
    record_session(&data, &root, &extra);
    let ledger = events(&data);
    assert_eq!(
        of_kind(&ledger, EventKind::Alert).len(),
        4,
        "{:?}",
        alert_rules(&ledger)
    );
    let (_, _, err) = run_in(&data, Some(&cfg), &["detect"]);
    assert!(err.contains("4 alerts, 0 new"), "{err}");
}
