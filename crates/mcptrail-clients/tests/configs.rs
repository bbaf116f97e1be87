//! Real-shaped configuration files of every client (comments, trailing commas, env blocks,
//! Windows paths, odd and broken files): scan finds every server, install wraps every stdio
//! server and nothing else, uninstall gives the file back byte for byte.

use std::path::{Path, PathBuf};

use mcptrail_clients::{
    given, plan_install, plan_uninstall, write_plan, ClientsError, ConfigFile, Selection, Status,
    Transport, WrapSpec,
};
use serde_json::{json, Value};

const MCPTRAIL: &str = "/opt/mcptrail/bin/mcptrail";

/// The fixture files that are valid client configurations.
const CONFIGS: &[&str] = &[
    "claude-desktop/claude_desktop_config.json",
    "claude-code-user/.claude.json",
    "claude-code-project/.mcp.json",
    "cursor/.cursor/mcp.json",
    "vscode/.vscode/mcp.json",
    "vscode-user/User/settings.json",
    "windsurf/windsurf/mcp_config.json",
    "edge/odd-shapes.json",
];

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn read(rel: &str) -> ConfigFile {
    ConfigFile::read(given(fixture(rel))).unwrap()
}

fn spec() -> WrapSpec {
    WrapSpec {
        mcptrail: MCPTRAIL.into(),
        wrap_args: Vec::new(),
    }
}

fn jsonc(text: &str) -> Value {
    jsonc_parser::parse_to_serde_value(text, &Default::default()).unwrap()
}

#[test]
fn scan_finds_every_server_of_every_client() {
    let mut report = serde_json::Map::new();
    for rel in CONFIGS {
        let file = read(rel);
        let servers: Vec<Value> = file
            .servers
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).unwrap();
                v["status"] = serde_json::to_value(s.status(|p| p == MCPTRAIL)).unwrap();
                v
            })
            .collect();
        report.insert(
            rel.to_string(),
            json!({"client": file.location.client, "servers": servers}),
        );
    }
    insta::assert_json_snapshot!("scan", report);
}

#[test]
fn env_values_never_appear_in_a_scan() {
    let file = read("claude-desktop/claude_desktop_config.json");
    let text = serde_json::to_string(&file.servers).unwrap();
    assert!(text.contains("NOTES_TOKEN"));
    assert!(!text.contains("secret-value-never-shown"));
}

#[test]
fn install_wraps_every_stdio_server_and_changes_nothing_else() {
    for rel in CONFIGS {
        let file = read(rel);
        let plan = plan_install(&file, &spec(), &Selection::All).unwrap();
        let diff = plan
            .diff()
            .replace(fixture("").to_str().unwrap(), "fixtures/");
        insta::assert_snapshot!(format!("install-{}", rel.replace('/', "_")), diff);
        let after = ConfigFile::parse(file.location.clone(), plan.text.clone()).unwrap();
        assert_eq!(after.servers.len(), file.servers.len(), "{rel}");
        let (old_doc, new_doc) = (jsonc(&file.text), jsonc(&plan.text));
        for (old, new) in file.servers.iter().zip(&after.servers) {
            assert_eq!((&old.name, &old.container), (&new.name, &new.container));
            let wrappable =
                old.transport == Transport::Stdio && old.wrapped.is_none() && old.command.is_some();
            let old_entry = jsonc(&file.text[old_range(&file, old)]);
            let new_entry = jsonc(&plan.text[old_range(&after, new)]);
            if !wrappable || old.name == "args-not-array" {
                assert_eq!(old_entry, new_entry, "{rel} {}: untouched", old.name);
                continue;
            }
            let w = new
                .wrapped
                .as_ref()
                .unwrap_or_else(|| panic!("{rel} {} wrapped", old.name));
            assert_eq!(w.mcptrail, MCPTRAIL);
            let mut want = vec![old.command.clone().unwrap()];
            want.extend(old.args.iter().cloned());
            assert_eq!(w.inner, want, "{rel} {}: same command line", old.name);
            assert_eq!(new.status(|p| p == MCPTRAIL), Status::Recorded);
            // Every other member (env, cwd, type, envFile, disabled…) is exactly as before.
            let strip = |mut v: Value| {
                let o = v.as_object_mut().unwrap();
                o.remove("command");
                o.remove("args");
                v
            };
            assert_eq!(strip(old_entry), strip(new_entry), "{rel} {}", old.name);
        }
        // Outside the server entries the document is the same.
        let blank = |mut doc: Value, f: &ConfigFile| {
            for s in &f.servers {
                blank_entry(&mut doc, &s.container, &s.name);
            }
            doc
        };
        assert_eq!(blank(old_doc, &file), blank(new_doc, &after), "{rel}");
        for s in &plan.skipped {
            assert!(!s.reason.is_empty());
        }
    }
}

fn old_range(file: &ConfigFile, s: &mcptrail_clients::Server) -> std::ops::Range<usize> {
    // The entry's text is found again through the parsed file (ranges are internal).
    let text = &file.text;
    let key = serde_json::to_string(&s.name).unwrap();
    let at = find_entry(text, &key, &s.container);
    at..matching_brace(text, at)
}

fn find_entry(text: &str, key: &str, container: &str) -> usize {
    // Start the search after the container's last segment, so a project entry is not
    // confused with a user-level server of the same name.
    let seg = container.rsplit('.').next().unwrap();
    let project = container
        .split_once('[')
        .map(|(_, rest)| rest.split_once(']').unwrap().0.to_string());
    let mut from = 0;
    if let Some(p) = project {
        from = text.find(&p).unwrap();
    }
    from += text[from..].find(&format!("\"{seg}\"")).unwrap_or(0);
    let k = from + text[from..].find(key).unwrap();
    k + text[k..].find('{').unwrap()
}

fn matching_brace(text: &str, open: usize) -> usize {
    let (mut depth, mut in_str, mut esc) = (0, false, false);
    for (i, c) in text[open..].char_indices() {
        match c {
            _ if esc => esc = false,
            '\\' if in_str => esc = true,
            '"' => in_str = !in_str,
            '{' if !in_str => depth += 1,
            '}' if !in_str => {
                depth -= 1;
                if depth == 0 {
                    return open + i + 1;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced")
}

fn blank_entry(doc: &mut Value, container: &str, name: &str) {
    let mut v = doc;
    let (head, project) = match container.split_once('[') {
        Some((h, rest)) => (h, Some(rest.split_once(']').unwrap())),
        None => (container, None),
    };
    for seg in head.split('.') {
        v = &mut v[seg];
    }
    if let Some((p, rest)) = project {
        let p: String = serde_json::from_str(p).unwrap();
        v = &mut v[p];
        for seg in rest.trim_start_matches('.').split('.') {
            v = &mut v[seg];
        }
    }
    v[name] = Value::Null;
}

#[test]
fn uninstall_restores_the_file_byte_for_byte() {
    for rel in CONFIGS {
        let file = read(rel);
        let plan = plan_install(&file, &spec(), &Selection::All).unwrap();
        let records = plan.records("2026-11-25T00:00:00Z");
        let wrapped = ConfigFile::parse(file.location.clone(), plan.text.clone()).unwrap();

        // With the install records: exact.
        let undo = plan_uninstall(&wrapped, &records, &Selection::All, false).unwrap();
        assert_eq!(undo.text, file.text, "{rel}");
        assert!(undo.changes.iter().all(|c| c.exact));

        // Entries wrapped before install (no record) stay wrapped.
        for s in &file.servers {
            if s.wrapped.is_some() {
                assert!(undo
                    .skipped
                    .iter()
                    .any(|k| k.server == s.name && k.reason.contains("--force")));
            }
        }

        // Without them (another data dir, records lost) nothing is undone unless forced;
        // forced, from the wrapped command line: exact too wherever the entry had an `args`
        // array; where install added one, it stays behind, empty.
        assert!(plan_uninstall(&wrapped, &[], &Selection::All, false)
            .unwrap()
            .changes
            .is_empty());
        let pre_wrapped: Vec<String> = file
            .servers
            .iter()
            .filter(|s| s.wrapped.is_none())
            .map(|s| s.name.clone())
            .collect();
        let undo = plan_uninstall(&wrapped, &[], &Selection::Named(pre_wrapped), true).unwrap();
        assert!(undo.changes.iter().all(|c| !c.exact));
        let added_args: Vec<&str> = file
            .servers
            .iter()
            .filter(|s| s.command.is_some() && s.wrapped.is_none() && s.args.is_empty())
            .filter(|s| !file.text[old_range(&file, s)].contains("\"args\""))
            .map(|s| s.name.as_str())
            .collect();
        if added_args.is_empty() {
            assert_eq!(undo.text, file.text, "{rel}");
        } else {
            let back = ConfigFile::parse(file.location.clone(), undo.text.clone()).unwrap();
            for (a, b) in file.servers.iter().zip(&back.servers) {
                assert_eq!((&a.command, &a.args), (&b.command, &b.args), "{rel}");
            }
        }
    }
}

#[test]
fn installing_twice_changes_nothing_the_second_time() {
    for rel in CONFIGS {
        let file = read(rel);
        let once = plan_install(&file, &spec(), &Selection::All).unwrap();
        let again = ConfigFile::parse(file.location.clone(), once.text.clone()).unwrap();
        let twice = plan_install(&again, &spec(), &Selection::All).unwrap();
        assert!(twice.is_noop(), "{rel}: {}", twice.diff());
        assert!(twice.changes.is_empty());
    }
}

#[test]
fn one_server_by_name_and_unknown_names_are_refused() {
    let file = read("claude-desktop/claude_desktop_config.json");
    let plan = plan_install(&file, &spec(), &Selection::Named(vec!["everything".into()])).unwrap();
    assert_eq!(plan.changes.len(), 1);
    let after = ConfigFile::parse(file.location.clone(), plan.text).unwrap();
    let wrapped: Vec<&str> = after
        .servers
        .iter()
        .filter(|s| s.wrapped.is_some())
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(wrapped, ["everything"]);
    let err = plan_install(&file, &spec(), &Selection::Named(vec!["nope".into()])).unwrap_err();
    assert!(
        err.to_string().contains("no server named \"nope\""),
        "{err}"
    );
}

#[test]
fn wrap_options_go_between_wrap_and_the_command() {
    let file = read("cursor/.cursor/mcp.json");
    let spec = WrapSpec {
        mcptrail: MCPTRAIL.into(),
        wrap_args: vec!["--data-dir".into(), "/srv/audit trail".into()],
    };
    let plan = plan_install(&file, &spec, &Selection::Named(vec!["browser".into()])).unwrap();
    let after = ConfigFile::parse(file.location.clone(), plan.text).unwrap();
    let s = after.servers.iter().find(|s| s.name == "browser").unwrap();
    assert_eq!(
        s.args,
        [
            "wrap",
            "--data-dir",
            "/srv/audit trail",
            "--",
            "npx",
            "@browsermcp/mcp@latest"
        ]
    );
    assert_eq!(
        s.wrapped.as_ref().unwrap().inner,
        ["npx", "@browsermcp/mcp@latest"]
    );
    assert_eq!(
        s.wrapped.as_ref().unwrap().data_dir.as_deref(),
        Some("/srv/audit trail")
    );
}

#[test]
fn the_data_dir_of_a_hand_written_wrap_entry_is_read_in_both_spellings() {
    for (args, dir) in [
        (r#"["wrap", "--data-dir=/a", "npx", "x"]"#, Some("/a")),
        (r#"["wrap", "--data-dir", "/b", "--", "npx"]"#, Some("/b")),
        (r#"["wrap", "npx", "--data-dir", "/c"]"#, None),
        (r#"["wrap", "--data-dir"]"#, None),
    ] {
        let text =
            format!(r#"{{"mcpServers": {{"s": {{"command": "mcptrail", "args": {args}}}}}}}"#);
        let file = ConfigFile::parse(mcptrail_clients::given("x.json".into()), text).unwrap();
        let w = file.servers[0].wrapped.as_ref().unwrap();
        assert_eq!(w.data_dir.as_deref(), dir, "{args}");
    }
}

#[test]
fn empty_and_comment_only_files_have_no_servers() {
    for rel in [
        "edge/empty.json",
        "edge/whitespace.json",
        "edge/comments-only.jsonc",
    ] {
        let file = read(rel);
        assert!(file.servers.is_empty(), "{rel}");
        let plan = plan_install(&file, &spec(), &Selection::All).unwrap();
        assert!(plan.is_noop());
    }
}

#[test]
fn broken_files_are_named_with_line_and_column() {
    let err = ConfigFile::read(given(fixture("edge/invalid.json"))).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            ClientsError::Syntax {
                line: 4,
                column: 23,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("edge/invalid.json:4:23: not valid JSON: Expected comma"),
        "{msg}"
    );
    assert!(msg.contains("left as it is"), "{msg}");

    let err = ConfigFile::read(given(fixture("edge/not-object.json"))).unwrap_err();
    assert!(err.to_string().contains("not an object"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bad.json");
    std::fs::write(&bin, b"{\"mcpServers\": {\"a\": {\"command\": \"\xff\"}}}").unwrap();
    let err = ConfigFile::read(given(bin)).unwrap_err();
    assert!(err.to_string().contains("not UTF-8"), "{err}");
}

#[test]
fn writing_keeps_a_backup_and_the_mode_and_refuses_a_file_changed_meanwhile() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".mcp.json");
    let original = std::fs::read_to_string(fixture("claude-code-project/.mcp.json")).unwrap();
    std::fs::write(&path, &original).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let backups = dir.path().join("backups");

    let plan = plan_install(
        &ConfigFile::read(given(path.clone())).unwrap(),
        &spec(),
        &Selection::All,
    )
    .unwrap();
    let written = write_plan(&plan, &backups, "20261125T000000Z").unwrap();
    assert_eq!(std::fs::read_to_string(&written.backup).unwrap(), original);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&written.backup), 0o600);
    assert_eq!(mode(&path), 0o640, "the file keeps its mode");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), plan.text);

    // A plan made from an older read is refused; the file stays as the other writer left it.
    let stale = plan;
    std::fs::write(&path, "{\"mcpServers\": {}}").unwrap();
    let err = write_plan(&stale, &backups, "20261125T000001Z").unwrap_err();
    assert!(matches!(err, ClientsError::Changed { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"mcpServers\": {}}"
    );
}
