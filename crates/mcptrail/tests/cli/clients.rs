//! `scan`, `install` and `uninstall` through the real CLI: a client configuration whose
//! server is the reference `server-everything`, installed, then started exactly as the client
//! would start it — and its traffic is in the ledger; uninstalled, the file is byte for byte
//! what it was.

use std::process::Command;
use std::time::Duration;

use mcptrail_clients::{given, ConfigFile};
use mcptrail_event::EventKind;
use mcptrail_test_support::server_everything_cmd;
use serde_json::json;

use crate::support::*;

/// A Claude Code project file with the reference server (stdio, with an env block and a
/// comment-free layout a user would write) and an HTTP server.
fn project_config(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let cmd = server_everything_cmd();
    let text = format!(
        "{{\n  \"mcpServers\": {{\n    \"everything\": {{\n      \"command\": {},\n      \"args\": [\n        {},\n        {}\n      ],\n      \"env\": {{ \"EVERYTHING_MARK\": \"from-config\" }}\n    }},\n    \"remote\": {{ \"type\": \"http\", \"url\": \"http://127.0.0.1:9/mcp\" }}\n  }}\n}}\n",
        json!(cmd[0]),
        json!(cmd[1]),
        json!(cmd[2])
    );
    let path = dir.join(".mcp.json");
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

#[test]
fn an_installed_server_is_recorded_when_the_client_starts_it_and_uninstall_restores_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (path, original) = project_config(dir.path());
    let p = path.to_str().unwrap();

    // Before: scan says the stdio server is not recorded; --require-all fails.
    let (code, out, _) = run(&["--data-dir", d, "scan", p, "--require-all"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NOT recorded everything"), "{out}");
    assert!(
        out.contains("2 server(s): 0 recorded, 2 not recorded"),
        "{out}"
    );

    // A dry run shows the diff and writes nothing.
    let (code, out, err) = run(&["--data-dir", d, "install", p, "--all", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("+      \"command\": "), "{out}");
    assert!(out.contains("dry run: nothing was written"), "{out}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);

    let (code, out, err) = run(&["--data-dir", d, "install", p, "--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("everything           wrapped in mcptrail wrap"),
        "{out}"
    );
    assert!(
        out.contains("remote               unchanged: HTTP server"),
        "{out}"
    );
    let installed = std::fs::read_to_string(&path).unwrap();
    assert_ne!(installed, original);

    // Start the entry exactly as a client would: its command, args and env.
    let file = ConfigFile::read(given(path.clone())).unwrap();
    let s = file
        .servers
        .iter()
        .find(|s| s.name == "everything")
        .unwrap();
    let w = s.wrapped.as_ref().expect("wrapped");
    assert_eq!(w.inner, server_everything_cmd());
    let entry: serde_json::Value = serde_json::from_str(&installed).unwrap();
    let entry = &entry["mcpServers"]["everything"];
    assert_eq!(entry["env"], json!({"EVERYTHING_MARK": "from-config"}));
    let mut cmd = Command::new(entry["command"].as_str().unwrap());
    for a in entry["args"].as_array().unwrap() {
        cmd.arg(a.as_str().unwrap());
    }
    cmd.env("EVERYTHING_MARK", "from-config");
    let mut tap = Wrapped::spawn(cmd);
    tap.initialize("install-test-client");
    let r = tap.request(
        2,
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "through the installed entry"}}),
    );
    assert!(r.to_string().contains("through the installed entry"), "{r}");
    // server-everything does not exit on end of input; the tap stops it after its grace
    // period, as it would for the client.
    tap.finish(Duration::from_secs(20));

    let evs = events(&data);
    let call = evs
        .iter()
        .find(|e| e.tool_invoked.as_deref() == Some("echo"))
        .expect("the tool call is recorded");
    assert_eq!(
        call.server.as_ref().unwrap().command,
        server_everything_cmd(),
        "the ledger names the real server command"
    );
    let config_events: Vec<_> = evs
        .iter()
        .filter(|e| e.kind == EventKind::SystemConfig)
        .collect();
    assert_eq!(config_events.len(), 1);
    let detail = config_events[0].detail.as_ref().unwrap();
    assert_eq!(detail["action"], "install");
    assert_eq!(
        detail["servers"],
        json!([{"name": "everything", "container": "mcpServers"}])
    );

    // After: recorded; installing again changes nothing.
    let (code, out, _) = run(&["--data-dir", d, "scan", p]);
    assert_eq!(code, 0);
    assert!(out.contains("recorded     everything"), "{out}");
    let (code, out, _) = run(&["--data-dir", d, "install", p, "--all"]);
    assert_eq!(code, 0);
    assert!(out.contains("already recorded"), "{out}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), installed);

    // Uninstall: byte for byte, recorded too.
    let (code, out, err) = run(&["--data-dir", d, "uninstall", p, "--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("restored exactly as before install"), "{out}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    let actions: Vec<String> = events(&data)
        .iter()
        .filter(|e| e.kind == EventKind::SystemConfig)
        .map(|e| {
            e.detail.as_ref().unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(actions, ["install", "uninstall"]);
    // Each write left a backup of what it replaced, private to the user.
    let backups: Vec<_> = std::fs::read_dir(data.join("install/backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 2);
    assert!(backups
        .iter()
        .any(|b| std::fs::read_to_string(b).unwrap() == original));
}

#[test]
fn a_broken_file_is_reported_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("claude_desktop_config.json");
    let broken = "{\n  \"mcpServers\": {\n    \"a\": {\"command\": \"npx\" \"args\": []}\n  }\n}\n";
    std::fs::write(&path, broken).unwrap();
    let p = path.to_str().unwrap();
    let d = dir.path().join("data");
    let d = d.to_str().unwrap();

    let (code, out, _) = run(&["--data-dir", d, "scan", p, "--json"]);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let err = report["files"][0]["error"].as_str().unwrap();
    assert!(
        err.contains(":3:27: not valid JSON: Expected comma"),
        "{err}"
    );
    assert_eq!(report["summary"]["unreadable_files"], 1);
    let (code, _, _) = run(&["--data-dir", d, "scan", p, "--require-all"]);
    assert_eq!(code, 1, "an unreadable file fails --require-all");

    let (code, _, err) = run(&["--data-dir", d, "install", p, "--all"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("not valid JSON") && err.contains("left as it is"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), broken);
    assert!(!dir.path().join("data/install/backups").exists());

    let (code, _, err) = run(&["--data-dir", d, "install", p]);
    assert_eq!(code, 2, "neither --all nor --server");
    assert!(err.contains("--all") || err.contains("--server"), "{err}");
}

#[test]
fn scan_finds_the_files_of_the_user_and_the_project() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let project = dir.path().join("project");
    std::fs::create_dir_all(home.join(".cursor")).unwrap();
    std::fs::create_dir_all(project.join(".vscode")).unwrap();
    std::fs::write(
        home.join(".cursor/mcp.json"),
        r#"{"mcpServers": {"c": {"command": "uvx", "args": ["x"]}}}"#,
    )
    .unwrap();
    std::fs::write(
        project.join(".vscode/mcp.json"),
        "{\n  // comment\n  \"servers\": {\"v\": {\"type\": \"stdio\", \"command\": \"npx\"},},\n}\n",
    )
    .unwrap();
    let out = mcptrail()
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("APPDATA")
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .args(["scan", "--json", "--project", project.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found: Vec<(String, String)> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["client"].as_str().unwrap().to_string(),
                f["servers"][0]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("cursor".to_string(), "c".to_string()),
            ("vs-code".to_string(), "v".to_string())
        ]
    );
}

#[test]
fn install_server_by_name_across_found_files_reports_a_name_no_file_has() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let project = dir.path().join("project");
    std::fs::create_dir_all(home.join(".cursor")).unwrap();
    std::fs::create_dir_all(&project).unwrap();
    let cursor = r#"{"mcpServers": {"c": {"command": "uvx", "args": ["x"]}}}"#;
    let claude = r#"{"mcpServers": {"p": {"command": "npx", "args": ["y"]}}}"#;
    std::fs::write(home.join(".cursor/mcp.json"), cursor).unwrap();
    std::fs::write(project.join(".mcp.json"), claude).unwrap();
    let data = dir.path().join("data");
    let install = |names: &[&str]| {
        let mut c = mcptrail();
        c.env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("APPDATA")
            .args(["--data-dir", data.to_str().unwrap()])
            .args(["install", "--project", project.to_str().unwrap()])
            .args(["--mcptrail-path", "/opt/mcptrail"]);
        for n in names {
            c.args(["--server", n]);
        }
        c.output().unwrap()
    };

    // "c" is in one file, "nope" in none: "c" is wrapped, "nope" is reported, exit 1.
    let out = install(&["c", "nope"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("server named \"nope\""), "{err}");
    assert!(std::fs::read_to_string(home.join(".cursor/mcp.json"))
        .unwrap()
        .contains("/opt/mcptrail"));
    assert_eq!(
        std::fs::read_to_string(project.join(".mcp.json")).unwrap(),
        claude,
        "a file without the named server is not touched"
    );

    // Every name found: exit 0.
    let out = install(&["p"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read_to_string(project.join(".mcp.json"))
        .unwrap()
        .contains("/opt/mcptrail"));
}
