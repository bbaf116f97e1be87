//! The OWASP scenarios S1 and S2 end to end, through `wrap` around the reference filesystem
//! server (`@modelcontextprotocol/server-filesystem`) driven by scripted clients, with a
//! benign workload of another agent running beside them:
//!
//! - S1 silent exfiltration: an agent whose sessions normally read a handful of patient
//!   records reads them one by one; the streaming detector alerts at the first result past
//!   the limit `baseline show` states for that agent (learnt p99 × factor), not before, and
//!   `detect` over the ledger finds the same alert.
//! - S2 insider disables telemetry: during an active session the client configuration is
//!   unwrapped with `mcptrail uninstall`, the tap is killed with SIGKILL, use goes on directly,
//!   and a second server is added to the file by hand; the benign tap's streaming detector
//!   alerts on the silent session and on both unrecorded servers, and the trail says who
//!   changed what last.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mcptrail_event::{Event, EventKind};
use mcptrail_test_support::server_filesystem_cmd;
use serde_json::{json, Value};

use crate::support::*;

fn run_in(data: &Path, config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = mcptrail()
        .arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Patient-like records (no real person; ~450 bytes each) and some harmless notes.
fn records(dir: &Path, n: usize) -> PathBuf {
    let root = dir.join("files");
    std::fs::create_dir_all(root.join("records")).unwrap();
    let wards = ["cardiology", "oncology", "paediatrics"];
    let codes = ["I10", "E11.9", "J45.909", "C50.911"];
    let meds = ["metformin 500 mg", "salbutamol", "lisinopril 10 mg"];
    for i in 0..n {
        let (ward, code, med) = (wards[i % 3], codes[i % 4], meds[i % 3]);
        let rec = json!({
            "record_id": format!("PT-{i:06}"),
            "name": format!("Test Patient {i}"),
            "born": format!("19{:02}-0{}-1{}", 40 + i % 60, 1 + i % 9, i % 10),
            "ward": ward,
            "diagnosis": code,
            "medication": med,
            "notes": "follow-up in six weeks; blood panel ordered; no known allergies; discussed lifestyle changes",
        });
        std::fs::write(
            root.join(format!("records/pt-{i:06}.json")),
            serde_json::to_string_pretty(&rec).unwrap(),
        )
        .unwrap();
    }
    std::fs::write(root.join("notes.txt"), "shift handover at 19:00\n").unwrap();
    root.canonicalize().unwrap()
}

fn wrap(data: &Path, config: &Path, root: &Path) -> Wrapped {
    let mut cmd = mcptrail();
    cmd.arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(config)
        .arg("wrap")
        .arg("--")
        .args(server_filesystem_cmd(root));
    Wrapped::spawn(cmd)
}

fn read(w: &mut Wrapped, id: i64, path: &Path) -> Value {
    let r = w.request(
        id,
        "tools/call",
        json!({"name": "read_text_file", "arguments": {"path": path}}),
    );
    assert!(r["result"].is_object(), "{r}");
    r
}

/// One ordinary session of `agent`: list the records, read `n` of them and the notes.
fn ordinary_session(data: &Path, config: &Path, root: &Path, agent: &str, n: usize) {
    let mut w = wrap(data, config, root);
    w.initialize(agent);
    w.request(1, "tools/list", json!({}));
    w.request(
        2,
        "tools/call",
        json!({"name": "list_directory", "arguments": {"path": root.join("records")}}),
    );
    for i in 0..n {
        read(
            &mut w,
            10 + i as i64,
            &root.join(format!("records/pt-{i:06}.json")),
        );
    }
    read(&mut w, 9, &root.join("notes.txt"));
    let _ = w.finish(Duration::from_secs(30));
}

fn alerts_of<'a>(events: &'a [Event], rule: &str) -> Vec<&'a Event> {
    of_kind(events, EventKind::Alert)
        .into_iter()
        .filter(|a| a.detail.as_ref().unwrap()["rule"] == rule)
        .collect()
}

fn evidence(a: &Event) -> Vec<String> {
    a.detail.as_ref().unwrap()["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn s1_many_small_reads_alert_against_the_agents_learnt_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let root = records(dir.path(), 60);
    let data = dir.path().join("data");
    // Floors low enough that the learnt baseline, not the floor, sets the limit.
    let settings = "[detect.baseline]\nmin_sessions = 3\n\n[detect.baseline.thresholds]\nmin_records = 10\nmin_bytes = 4096\n";
    let history_cfg = dir.path().join("history.toml");
    std::fs::write(&history_cfg, settings).unwrap();
    let cfg = dir.path().join("mcptrail.toml");
    std::fs::write(
        &cfg,
        format!("[detect]\nstreaming = true\npoll_interval_ms = 50\n\n{settings}"),
    )
    .unwrap();
    // History, recorded side by side: three sessions of the records agent (six records
    // each), one of a notes agent.
    std::thread::scope(|s| {
        for agent in [
            "records-agent",
            "records-agent",
            "records-agent",
            "notes-agent",
        ] {
            let (data, cfg, root) = (&data, &history_cfg, &root);
            s.spawn(move || {
                let n = if agent == "notes-agent" { 1 } else { 6 };
                ordinary_session(data, cfg, root, agent, n);
            });
        }
    });
    let (code, out, err) = run_in(&data, &cfg, &["baseline", "learn", "--since", "1h"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("baseline v1 learnt from"), "{out}");
    assert!(out.contains("records-agent: 3 sessions"), "{out}");
    let (code, table, err) = run_in(
        &data,
        &cfg,
        &["baseline", "show", "--agent", "records-agent"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(table.contains("results / session"), "{table}");
    assert!(table.contains("tool read_text_file"), "{table}");
    assert!(!table.contains("agent notes-agent"), "{table}");
    let (_, js, _) = run_in(&data, &cfg, &["baseline", "show", "--json"]);
    let shown: Value = serde_json::from_str(&js).unwrap();
    let review = &shown["review"]["agents"]["records-agent"];
    assert_eq!(review["judged"], true, "{review}");
    assert_eq!(
        shown["review"]["agents"]["notes-agent"]["judged"], false,
        "one session is below min_sessions 3"
    );
    let limit = review["limits"]["session_records"].as_f64().unwrap();
    let p99 = shown["agents"]["records-agent"]["session_records"]["p99"]
        .as_f64()
        .unwrap();
    assert_eq!(
        limit,
        (3.0 * p99).max(10.0),
        "volume_factor 3 × p99: {review}"
    );
    assert!(limit > 10.0, "the baseline sets the limit, not the floor");
    let over = limit.floor() as usize + 1;

    // The exfiltrating session, with the notes agent working beside it.
    let mut exfil = wrap(&data, &cfg, &root);
    exfil.initialize("records-agent");
    let mut benign = wrap(&data, &cfg, &root);
    benign.initialize("notes-agent");
    exfil.request(1, "tools/list", json!({}));
    for i in 0..50 {
        read(
            &mut exfil,
            100 + i,
            &root.join(format!("records/pt-{i:06}.json")),
        );
        if i % 5 == 0 {
            read(&mut benign, 100 + i, &root.join("notes.txt"));
        }
    }
    let _ = benign.finish(Duration::from_secs(30));
    let _ = exfil.finish(Duration::from_secs(30));

    let ledger = events(&data);
    // The exfiltrating session: the records agent's last one.
    let session = ledger
        .iter()
        .rev()
        .find(|e| {
            e.agent_id.as_deref() == Some("records-agent") && e.kind == EventKind::McpResponse
        })
        .and_then(|e| e.session_id.clone())
        .unwrap();
    let results: Vec<&Event> = ledger
        .iter()
        .filter(|e| {
            e.session_id.as_deref() == Some(session.as_str())
                && e.kind == EventKind::McpResponse
                && e.method.as_deref() == Some("tools/call")
        })
        .collect();
    assert_eq!(results.len(), 50);
    let rec = alerts_of(&ledger, "builtin.baseline.session_records");
    assert_eq!(rec.len(), 1, "the streaming detector raised it once");
    let d = rec[0].detail.as_ref().unwrap();
    assert_eq!(d["evidence_total"], over, "{d}");
    assert_eq!(
        evidence(rec[0]).last().unwrap(),
        &results[over - 1].event_id,
        "at the first result past the limit, not before"
    );
    assert_eq!(d["threshold"].as_f64().unwrap(), limit);
    assert_eq!(d["baseline_version"], 1);
    assert_eq!(rec[0].agent_id.as_deref(), Some("records-agent"));
    assert_eq!(rec[0].session_id.as_deref(), Some(session.as_str()));
    assert_eq!(
        alerts_of(&ledger, "builtin.baseline.session_volume").len(),
        1,
        "the bytes too"
    );
    // Nothing about the notes agent or the history.
    for a in of_kind(&ledger, EventKind::Alert) {
        assert_eq!(
            a.agent_id.as_deref(),
            Some("records-agent"),
            "{:?}",
            a.detail
        );
    }
    // The same over the ledger.
    let (code, out, err) = run_in(&data, &cfg, &["detect", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 baseline version(s)"), "{err}");
    assert!(err.contains(", 0 new"), "already in the ledger: {err}");
    let again: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(again
        .iter()
        .any(|a| a["event_id"] == rec[0].event_id.as_str()));
    // Without the baseline, nothing is judged.
    let (_, out, _) = run_in(&data, &cfg, &["detect", "--json", "--no-baseline"]);
    assert!(!out.contains("builtin.baseline."), "{out}");
}

/// Processes whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may hold spaces: split after the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            if let Some(p) = head.split_whitespace().next().and_then(|p| p.parse().ok()) {
                out.push(p);
            }
        }
    }
    out
}

/// The client's view of `file`'s server `name`: command line as written.
fn command_of(file: &Path, name: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let s = &v["mcpServers"][name];
    std::iter::once(s["command"].as_str().unwrap().to_string())
        .chain(
            s["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string()),
        )
        .collect()
}

#[test]
fn s2_telemetry_disabled_mid_session_is_an_alert_naming_who_changed_what() {
    let dir = tempfile::tempdir().unwrap();
    let root = records(dir.path(), 5);
    let data = dir.path().join("data");
    let cfg = dir.path().join("mcptrail.toml");
    let client = dir.path().join("client.json");
    std::fs::write(
        &cfg,
        format!(
            "[tap]\nheartbeat_interval_secs = 1\n\n[detect]\nstreaming = true\npoll_interval_ms = 50\n\n[detect.baseline]\nrelearn_every = \"2s\"\n\n[detect.clients]\nscan_every = \"1s\"\nfiles = [{:?}]\n",
            client.to_str().unwrap()
        ),
    )
    .unwrap();
    let server = server_filesystem_cmd(&root);
    std::fs::write(
        &client,
        serde_json::to_string_pretty(
            &json!({"mcpServers": {"records": {"command": server[0], "args": server[1..]}}}),
        )
        .unwrap(),
    )
    .unwrap();
    let (c, d) = (cfg.to_str().unwrap(), data.to_str().unwrap());
    let (code, _, err) = run(&[
        "--data-dir",
        d,
        "--config",
        c,
        "install",
        client.to_str().unwrap(),
        "--all",
    ]);
    assert_eq!(code, 0, "{err}");

    // The benign background: another agent's tap with the streaming detector, busy throughout.
    let mut benign = wrap(&data, &cfg, &root);
    benign.initialize("notes-agent");
    // The client starts the server as its configuration says: through mcptrail wrap.
    let wrapped = command_of(&client, "records");
    assert!(wrapped.contains(&"wrap".to_string()), "{wrapped:?}");
    let mut cmd = std::process::Command::new(&wrapped[0]);
    cmd.args(&wrapped[1..]);
    let mut tapped = Wrapped::spawn(cmd);
    tapped.initialize("records-agent");
    for i in 0..3 {
        read(
            &mut tapped,
            10 + i,
            &root.join(format!("records/pt-{i:06}.json")),
        );
    }
    // Let it write a heartbeat, then the insider: unwrap the entry, kill the tap.
    std::thread::sleep(Duration::from_millis(1300));
    let (code, out, err) = run(&[
        "--data-dir",
        d,
        "--config",
        c,
        "uninstall",
        client.to_str().unwrap(),
        "--all",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("records"), "{out}");
    let server_pids = children_of(tapped.child.id());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tapped.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = tapped.child.wait();
    // The server the killed tap ran is ours to stop (it does not exit on end of input).
    for pid in server_pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // Direct use goes on: the client restarts the server from the edited file.
    let direct = command_of(&client, "records");
    assert_eq!(direct, server, "uninstall restored the entry");
    let mut cmd = std::process::Command::new(&direct[0]);
    cmd.args(&direct[1..]);
    let mut untapped = Wrapped::spawn(cmd);
    untapped.initialize("records-agent");
    for i in 0..5 {
        read(
            &mut untapped,
            20 + i,
            &root.join(format!("records/pt-{i:06}.json")),
        );
    }
    // And a second server added to the file by hand, never wrapped.
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&client).unwrap()).unwrap();
    v["mcpServers"]["shadow"] = json!({"command": "node", "args": ["/opt/shadow/index.js"]});
    std::fs::write(&client, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    // The benign tap keeps working while its detector watches (3 heartbeat intervals + scan).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    loop {
        read(&mut benign, 100 + i, &root.join("notes.txt"));
        i += 1;
        std::thread::sleep(Duration::from_millis(250));
        let ledger = mcptrail_ledger::LedgerReader::open(&data, 1)
            .unwrap()
            .filter_map(|r| serde_json::from_slice::<Event>(&r.unwrap().line).ok())
            .collect::<Vec<_>>();
        let done = alerts_of(&ledger, "builtin.silence.tap_silent").len() == 1
            && alerts_of(&ledger, "builtin.unwrapped_server").len() == 2;
        if done || Instant::now() > deadline {
            break;
        }
    }
    // The server used directly does not exit on end of input either.
    let _ = untapped.child.kill();
    let _ = untapped.child.wait();
    let _ = benign.finish(Duration::from_secs(30));

    let ledger = events(&data);
    let killed = ledger
        .iter()
        .find(|e| e.agent_id.as_deref() == Some("records-agent"))
        .and_then(|e| e.session_id.clone())
        .unwrap();
    let of_killed: Vec<&Event> = ledger
        .iter()
        .filter(|e| e.session_id.as_deref() == Some(killed.as_str()) && e.kind != EventKind::Alert)
        .collect();
    assert!(
        of_killed.iter().all(|e| e.kind != EventKind::SessionEnd),
        "killed: no session.end"
    );
    assert!(
        of_killed
            .iter()
            .any(|e| e.kind == EventKind::SystemHeartbeat),
        "it wrote heartbeats while alive"
    );
    assert_eq!(
        ledger
            .iter()
            .filter(|e| e.agent_id.as_deref() == Some("records-agent")
                && e.kind == EventKind::McpRequest
                && e.method.as_deref() == Some("tools/call"))
            .count(),
        3,
        "the direct use left no trail"
    );
    let silent = alerts_of(&ledger, "builtin.silence.tap_silent");
    assert_eq!(silent.len(), 1, "{:?}", of_kind(&ledger, EventKind::Alert));
    assert_eq!(silent[0].session_id.as_deref(), Some(killed.as_str()));
    assert_eq!(
        evidence(silent[0]),
        [of_killed.last().unwrap().event_id.clone()],
        "the evidence is the session's last event"
    );
    let unwrapped = alerts_of(&ledger, "builtin.unwrapped_server");
    assert_eq!(unwrapped.len(), 2);
    let mut rules: Vec<&str> = of_kind(&ledger, EventKind::Alert)
        .iter()
        .map(|a| a.detail.as_ref().unwrap()["rule"].as_str().unwrap())
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        [
            "builtin.silence.tap_silent",
            "builtin.unwrapped_server",
            "builtin.unwrapped_server"
        ],
        "nothing else (no events missing from the live taps' counts, no gap)"
    );
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap()
        .name;
    let summaries: Vec<&str> = unwrapped
        .iter()
        .map(|a| a.detail.as_ref().unwrap()["summary"].as_str().unwrap())
        .collect();
    assert!(
        summaries[0].contains("[\"records\"]")
            && summaries[0].contains(&format!("{user} (uid "))
            && summaries[0].contains("with mcptrail uninstall"),
        "{summaries:?}"
    );
    assert!(
        summaries[1].contains("[\"shadow\"]")
            && summaries[1].contains("shadow added")
            && summaries[1].contains("edited outside mcptrail")
            && summaries[1].contains(&format!("file owner {user}")),
        "{summaries:?}"
    );
    // The trail shows who changed what last.
    let (code, out, err) = run(&["--data-dir", d, "log", "--kind", "system.config", "--json"]);
    assert_eq!(code, 0, "{err}");
    let changes: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["detail"]["file"] == client.to_str().unwrap())
        .collect();
    let last = &changes[changes.len() - 2..];
    assert_eq!(last[0]["detail"]["action"], "uninstall");
    assert_eq!(last[0]["detail"]["by"]["user"], user.as_str());
    assert_eq!(last[0]["detail"]["by"]["how"], "mcptrail uninstall");
    assert_eq!(last[1]["detail"]["action"], "client_config_changed");
    assert_eq!(last[1]["detail"]["changes"][0]["server"], "shadow");
    // The benign tap's detector relearnt the baseline on its schedule, and said so.
    let learnt: Vec<&Event> = of_kind(&ledger, EventKind::SystemConfig)
        .into_iter()
        .filter(|e| e.detail.as_ref().unwrap()["action"] == "baseline_learnt")
        .collect();
    assert!(learnt.len() >= 2, "{learnt:?}");
    assert!(learnt[0].detail.as_ref().unwrap()["by"]
        .as_str()
        .unwrap()
        .contains("relearn_every"));
    let (code, out, err) = run_in(&data, &cfg, &["baseline", "show"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("baseline v{}", learnt.len())),
        "{out}"
    );
    assert!(
        out.contains("NOT judged: 1 sessions < min_sessions 5"),
        "{out}"
    );
    // The same alerts over the ledger, also as of now; a scan finds nothing new.
    let (code, _, err) = run_in(&data, &cfg, &["detect", "--scan-clients"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(", 0 new"), "{err}");
    assert!(!err.contains("client configuration change"), "{err}");
}

#[test]
fn baseline_problems_are_named_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = records(dir.path(), 3);
    let data = dir.path().join("data");
    let cfg = dir.path().join("mcptrail.toml");
    std::fs::write(&cfg, "").unwrap();
    let (code, _, err) = run_in(&data, &cfg, &["baseline", "learn"]);
    assert_eq!(code, 2);
    assert!(err.contains("no ledger in"), "{err}");
    ordinary_session(&data, &cfg, &root, "records-agent", 2);
    let before = events(&data).len();
    let (code, _, err) = run_in(&data, &cfg, &["baseline", "show"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no baseline learnt yet") && err.contains("mcptrail baseline learn"),
        "{err}"
    );
    let (code, _, err) = run_in(
        &data,
        &cfg,
        &["baseline", "learn", "--since", "1h", "--until", "2h"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("is not before --until"), "{err}");
    let (code, out, err) = run_in(&data, &cfg, &["baseline", "learn", "--since", "1h"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("baseline v1"), "{out}");
    let stored = data.join("detect/baselines/v000001.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(stored.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let (code, _, err) = run_in(&data, &cfg, &["baseline", "show", "--agent", "nobody"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("agent `nobody` is not in baseline v1 (agents: records-agent)"),
        "{err}"
    );
    // A damaged version stops detection with its name; the ledger is untouched.
    std::fs::write(
        data.join("detect/baselines/v000002.json"),
        "{\"format\": \"mcptrail-baseline v1\", \"version\": 2",
    )
    .unwrap();
    let (code, _, err) = run_in(&data, &cfg, &["detect"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("v000002.json") && err.contains("move it aside"),
        "{err}"
    );
    let (code, _, err) = run_in(&data, &cfg, &["detect", "--no-baseline"]);
    assert_eq!(code, 0, "{err}");
    // Thresholds that cannot work are named.
    std::fs::write(
        &cfg,
        "[detect.baseline.agents.records-agent]\nvolume_factor = -1\n",
    )
    .unwrap();
    let (code, _, err) = run_in(&data, &cfg, &["detect", "--no-baseline"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`baseline.agents.records-agent.volume_factor`"),
        "{err}"
    );
    std::fs::write(
        &cfg,
        "[detect.allowed_hours]\nstart = \"08:00\"\nend = \"18:00\"\ntz = \"Mars/Olympus\"\n",
    )
    .unwrap();
    let (code, _, err) = run_in(&data, &cfg, &["detect", "--no-baseline"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`allowed_hours.tz`") && err.contains("Mars/Olympus"),
        "{err}"
    );
    // Nothing was lost: the session and the baseline_learnt record, nothing else.
    let after = events(&data);
    assert_eq!(after.len(), before + 1);
}
