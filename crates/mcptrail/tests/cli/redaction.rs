//! Redaction end to end: the official Python SDK client drives the reference filesystem and
//! everything servers through `mcptrail wrap`; files and arguments full of secrets and
//! personal data pass to the client unchanged, and none of it reaches the ledger or the
//! index — while the events say which rule redacted what, where, and carry the labels.

use std::path::Path;
use std::process::Command;

use mcptrail_event::{Event, EventKind};
use mcptrail_test_support::{
    python_peer, server_everything_cmd, server_filesystem_cmd, workspace_root,
};
use serde_json::{json, Value};

use crate::support::*;

const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";
const DB_PASSWORD: &str = "Tr0ub4dor-and-3";
const CARD: &str = "4111 1111 1111 1111";
const EMAIL: &str = "jane.doe@example.org";
const GITHUB: &str = "ghp_R2d2C3poBb8LukeLeiaHanSolo0123456789";
const STRIPE: &str = "sk_live_51HaBcDeFgHiJkLmNoPqRsTuVw";

fn client(
    dir: &Path,
    data: &Path,
    config: Option<&Path>,
    calls: &[(&str, Value)],
    server: Vec<String>,
) -> (Value, std::process::Output) {
    let script = workspace_root().join("crates/mcptrail-test-support/peers/py_client.py");
    let mut cmd = Command::new(python_peer());
    cmd.arg(script).arg("--out").arg(dir.join("summary.json"));
    for (name, args) in calls {
        cmd.arg("--call").arg(format!("{name}={args}"));
    }
    cmd.arg("--").arg(env!("CARGO_BIN_EXE_mcptrail"));
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(["wrap", "--data-dir", data.to_str().unwrap(), "--"])
        .args(&server)
        .env_remove("MCPTRAIL_DATA_DIR")
        .env_remove("MCPTRAIL_CONFIG")
        .env("MCPTRAIL_USER", EMAIL);
    let out = cmd.output().unwrap();
    let summary = std::fs::read(dir.join("summary.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (summary, out)
}

/// Every byte mcptrail stored: ledger segments, checkpoints, the SQLite index (and its WAL).
fn stored_bytes(data: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    let mut dirs = vec![data.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if !p.ends_with("keys/redact.key") {
                all.extend(std::fs::read(&p).unwrap());
            }
        }
    }
    all
}

fn assert_absent(haystack: &[u8], secrets: &[&str]) {
    let text = String::from_utf8_lossy(haystack);
    for s in secrets {
        assert!(!text.contains(s), "{s:?} was stored");
        // Nor in JSON-escaped form (a `/` may be written `\/`).
        assert!(
            !text.contains(&s.replace('/', "\\/")),
            "{s:?} was stored escaped"
        );
    }
}

#[test]
fn secrets_in_files_arguments_and_identity_never_reach_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("files");
    std::fs::create_dir_all(&root).unwrap();
    let env_file = format!(
        "# app settings\nDB_HOST=db.internal\nDB_PASSWORD={DB_PASSWORD}\nAWS_SECRET_ACCESS_KEY={AWS_SECRET}\nDEBUG=false\n"
    );
    std::fs::write(root.join(".env"), &env_file).unwrap();
    let customers = json!([{"name": "Jane", "email": EMAIL, "card": CARD, "notes": "VIP"}]);
    std::fs::write(root.join("customers.json"), customers.to_string()).unwrap();
    let root = root.canonicalize().unwrap();
    let data = dir.path().join("data");

    let written = format!("deploy:\n  github_token: {GITHUB}\n  stripe: {STRIPE}\n");
    let calls = [
        ("read_text_file", json!({"path": root.join(".env")})),
        (
            "read_text_file",
            json!({"path": root.join("customers.json")}),
        ),
        (
            "write_file",
            json!({"path": root.join("deploy.yml"), "content": written}),
        ),
    ];
    let (summary, out) = client(
        dir.path(),
        &data,
        None,
        &calls,
        server_filesystem_cmd(&root),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The client got the files as they are: recording changed nothing on the wire.
    let texts = summary["calls"].to_string();
    assert!(
        texts.contains(DB_PASSWORD) && texts.contains(AWS_SECRET.replace('/', "\\/").as_str())
            || texts.contains(AWS_SECRET),
        "{texts}"
    );
    assert!(texts.contains(CARD) && texts.contains(EMAIL));
    assert_eq!(
        std::fs::read_to_string(root.join("deploy.yml")).unwrap(),
        written
    );

    // Nothing of it is stored, in any file mcptrail wrote (the index is synced first).
    let (code, _, err) = run(&["--data-dir", data.to_str().unwrap(), "log"]);
    assert_eq!(code, 0, "{err}");
    assert_absent(
        &stored_bytes(&data),
        &[
            DB_PASSWORD,
            AWS_SECRET,
            "4111111111111111",
            CARD,
            EMAIL,
            GITHUB,
            STRIPE,
        ],
    );

    // The events say what was redacted, where, how, and are labelled.
    let evs = events(&data);
    let reads: Vec<&Event> = evs
        .iter()
        .filter(|e| {
            e.kind == EventKind::McpResponse && e.tool_invoked.as_deref() == Some("read_text_file")
        })
        .collect();
    assert_eq!(reads.len(), 2);
    let rules = |e: &Event| -> Vec<(String, String, String)> {
        e.redactions
            .iter()
            .map(|r| (r.rule.clone(), r.path.clone(), r.action.clone()))
            .collect()
    };
    let env_read = rules(reads[0]);
    assert!(
        env_read.contains(&(
            "secret_assignment".into(),
            "/response_summary/preview".into(),
            "mask".into()
        )),
        "{env_read:?}"
    );
    assert!(reads[0].labels.contains(&"secret".to_string()));
    let preview = reads[0]
        .response_summary
        .as_ref()
        .unwrap()
        .preview
        .as_deref()
        .unwrap();
    assert!(
        preview.contains("DB_HOST=db.internal")
            && preview.contains("DB_PASSWORD=[REDACTED:secret_assignment]"),
        "{preview}"
    );

    // JSON inside the file is redacted structurally; the card keeps its last 4, the e-mail
    // becomes a stable pseudonym.
    let p = reads[1]
        .response_summary
        .as_ref()
        .unwrap()
        .preview
        .as_deref()
        .unwrap();
    assert!(p.contains("[REDACTED:card:…1111]"), "{p}");
    let email_token = p
        .split('"')
        .find(|s| s.starts_with("[tok:email:"))
        .unwrap_or_else(|| panic!("{p}"))
        .to_string();
    assert_eq!(reads[1].labels, ["pci", "pii"]);
    assert!(rules(reads[1])
        .iter()
        .any(|(r, path, _)| r == "email" && path == "/response_summary/preview/{json}/0/email"));

    // Labels are queryable: the one event that carried card data.
    let (code, out, err) = run(&[
        "--data-dir",
        data.to_str().unwrap(),
        "log",
        "--label",
        "pci",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let pci: Vec<Event> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(pci.len(), 1);
    assert_eq!(pci[0].event_id, reads[1].event_id);
    let (_, out, _) = run(&[
        "--data-dir",
        data.to_str().unwrap(),
        "log",
        "--label",
        "pc",
        "--json",
    ]);
    assert!(out.is_empty(), "a label matches whole: {out}");

    // The arguments of write_file: the file content's tokens are masked in place.
    let write = evs
        .iter()
        .find(|e| {
            e.kind == EventKind::McpRequest && e.tool_invoked.as_deref() == Some("write_file")
        })
        .unwrap();
    let content = write.parameters_used.as_ref().unwrap()["content"]
        .as_str()
        .unwrap();
    assert!(content.contains("github_token: [REDACTED:"), "{content}");
    assert!(
        content.contains("stripe: [REDACTED:stripe_key]"),
        "{content}"
    );

    // The user is pseudonymised, under the same key.
    let principal = &evs[0].user_identity.as_ref().unwrap().principal;
    assert!(principal.starts_with("[tok:user:"), "{principal}");

    // A second session under the same key gives the e-mail the same token.
    let (_, out) = client(
        dir.path(),
        &data,
        None,
        &[("echo", json!({"message": format!("contact {EMAIL} today")}))],
        server_everything_cmd(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = events(&data);
    let echo = evs
        .iter()
        .find(|e| e.kind == EventKind::McpRequest && e.tool_invoked.as_deref() == Some("echo"))
        .unwrap();
    assert_eq!(
        echo.parameters_used.as_ref().unwrap()["message"],
        format!("contact {email_token} today")
    );
    assert_absent(&stored_bytes(&data), &[EMAIL]);
}

#[test]
fn custom_rules_from_the_config_apply_and_a_bad_rule_stops_wrap_before_the_server_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("mcptrail.toml");
    std::fs::write(
        &config,
        r#"
[redact]
disable = ["ip_address"]

[[redact.rules]]
name = "customer_id"
regex = "CUST-[0-9]{6}"
action = "token"
tools = ["ec*"]

[[redact.rules]]
name = "internal_note"
key = "note"
action = "drop"
label = "confidential"

[[redact.labels]]
tool = "echo"
labels = ["demo"]
"#,
    )
    .unwrap();
    let (_, out) = client(
        dir.path(),
        &data,
        Some(&config),
        &[
            (
                "echo",
                json!({"message": "order for CUST-123456 from 10.0.0.7", "note": "call Bob"}),
            ),
            ("get-sum", json!({"a": 1, "b": 2})),
        ],
        server_everything_cmd(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = events(&data);
    let echo = evs
        .iter()
        .find(|e| e.kind == EventKind::McpRequest && e.tool_invoked.as_deref() == Some("echo"))
        .unwrap();
    let msg = echo.parameters_used.as_ref().unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(
        msg.starts_with("order for [tok:customer_id:") && msg.ends_with(" from 10.0.0.7"),
        "{msg}"
    );
    assert_eq!(echo.labels, ["confidential", "demo", "pii"]);
    let args = echo.parameters_used.as_ref().unwrap();
    assert!(args.get("note").is_none(), "dropped: {args}");
    assert!(echo.redactions.iter().any(|r| r.rule == "internal_note"
        && r.path == "/parameters_used/note"
        && r.action == "drop"));
    // The rule is scoped to tools matching `ec*`: get-sum's events are not touched by it.
    assert!(evs
        .iter()
        .filter(|e| e.tool_invoked.as_deref() == Some("get-sum"))
        .all(|e| e.redactions.iter().all(|r| r.rule == "pseudonymise_user")));
    assert_absent(&stored_bytes(&data), &["CUST-123456"]);

    // A regex that cannot compile: wrap refuses to start, names the rule and the field, and
    // the server never ran (no session was recorded).
    std::fs::write(
        &config,
        "[[redact.rules]]\nname = \"broken\"\nregex = \"(unclosed\"\n",
    )
    .unwrap();
    let data2 = dir.path().join("data2");
    let (code, out, err) = run(&[
        "--config",
        config.to_str().unwrap(),
        "wrap",
        "--data-dir",
        data2.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &format!(
            "echo started > {}",
            dir.path().join("started.txt").display()
        ),
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("rule \"broken\", field `regex`"), "{err}");
    assert!(!dir.path().join("started.txt").exists());
    assert!(!data2.join("ledger").exists());
    // An unknown key in [redact] is named too.
    std::fs::write(&config, "[redact]\npseudonymize_user = false\n").unwrap();
    let (code, _, err) = run(&["--config", config.to_str().unwrap(), "wrap", "--", "true"]);
    assert_eq!(code, 2);
    assert!(err.contains("pseudonymize_user"), "{err}");
}

#[test]
fn encrypted_fields_are_revealed_with_a_reason_and_forgetting_the_subject_shreds_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let master = dir.path().join("master.key");
    std::fs::write(&master, "11".repeat(32)).unwrap();
    let config = dir.path().join("mcptrail.toml");
    std::fs::write(
        &config,
        format!(
            "[redact]\nmaster_key_file = \"{}\"\n[redact.actions]\nemail = \"encrypt\"\n[[redact.rules]]\nname = \"national_id\"\nkey = \"ssn\"\naction = \"encrypt\"\n",
            master.display()
        ),
    )
    .unwrap();
    let (_, out) = client(
        dir.path(),
        &data,
        Some(&config),
        &[(
            "echo",
            json!({"message": format!("mail {EMAIL}"), "ssn": "123-45-6789"}),
        )],
        server_everything_cmd(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_absent(&stored_bytes(&data), &["123-45-6789", EMAIL]);
    let evs = events(&data);
    let call = evs
        .iter()
        .find(|e| e.kind == EventKind::McpRequest && e.tool_invoked.as_deref() == Some("echo"))
        .unwrap();
    let args = call.parameters_used.as_ref().unwrap();
    assert!(
        args["ssn"]
            .as_str()
            .unwrap()
            .starts_with("[enc:national_id:"),
        "{args}"
    );
    assert!(call.redactions.iter().any(|r| r.rule == "national_id"
        && r.path == "/parameters_used/ssn"
        && r.action == "encrypt"));
    let d = data.to_str().unwrap();
    let c = config.to_str().unwrap();

    // Revealed with the master key and a reason; the access is recorded.
    let (code, out, err) = run(&[
        "--config",
        c,
        "--data-dir",
        d,
        "reveal",
        &call.event_id,
        "--field",
        "/parameters_used/ssn",
        "--reason",
        "case 42",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "123-45-6789");
    let (code, out, _) = run(&[
        "--config",
        c,
        "--data-dir",
        d,
        "reveal",
        &call.event_id,
        "--field",
        "/parameters_used/message",
        "--reason",
        "case 42",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("mail {EMAIL}"));
    let (code, _, err) = run(&[
        "--config",
        c,
        "--data-dir",
        d,
        "reveal",
        &call.event_id,
        "--field",
        "/parameters_used/ssn",
        "--reason",
        " ",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--reason"), "{err}");
    // Another master key: nothing revealed, the attempt recorded.
    let (code, out, _) = mcptrail_out(mcptrail().env("MCPTRAIL_MASTER_KEY", "22".repeat(32)).args(
        [
            "--data-dir",
            d,
            "reveal",
            &call.event_id,
            "--field",
            "/parameters_used/ssn",
            "--reason",
            "curious",
        ],
    ));
    assert_eq!(code, 1);
    assert!(!out.contains("6789"));

    // Forget the subject: the data key goes, the fields stay sealed for good, the ledger
    // still verifies.
    let (code, out, err) = run(&[
        "--config",
        c,
        "--data-dir",
        d,
        "forget",
        "--subject",
        EMAIL,
        "--reason",
        "GDPR art. 17 request #7",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("can no longer be read"), "{out}");
    let (code, _, err) = run(&[
        "--config",
        c,
        "--data-dir",
        d,
        "reveal",
        &call.event_id,
        "--field",
        "/parameters_used/ssn",
        "--reason",
        "case 42",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("forgotten"), "{err}");
    let (code, out, err) = run(&["--data-dir", d, "verify"]);
    assert_eq!(code, 0, "{out}{err}");

    let evs = events(&data);
    let reveals: Vec<&Event> = evs
        .iter()
        .filter(|e| e.kind == EventKind::GovernanceReveal)
        .collect();
    assert_eq!(
        reveals.len(),
        4,
        "every attempt is recorded, failed ones too"
    );
    let first = reveals[0].detail.as_ref().unwrap();
    assert_eq!(first["reason"], "case 42");
    assert_eq!(first["field"], "/parameters_used/ssn");
    assert_eq!(first["values"][0]["result"], "revealed");
    assert_eq!(
        reveals[2].detail.as_ref().unwrap()["values"][0]["result"],
        "key_unusable"
    );
    assert_eq!(
        reveals[3].detail.as_ref().unwrap()["values"][0]["result"],
        "forgotten"
    );
    let forget = evs
        .iter()
        .find(|e| e.kind == EventKind::GovernanceForget)
        .unwrap();
    let fd = forget.detail.as_ref().unwrap();
    assert_eq!(fd["key_deleted"], true);
    assert!(fd["encrypted_fields"].as_u64().unwrap() >= 3, "{fd}");
    assert_absent(&stored_bytes(&data), &["123-45-6789", EMAIL]);
}

fn mcptrail_out(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
