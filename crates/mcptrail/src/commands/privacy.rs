//! `mcptrail forget` and `mcptrail reveal`: crypto-shredding a subject's encrypted fields, and
//! decrypting one field of one event for someone with the master key and a reason. Both are
//! recorded in the ledger as `governance.*` events — who, what, why — so the watchers are
//! watched. (Roles and dual approval come with the governance server.)

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use mcptrail_event::{Event, EventKind};
use mcptrail_ledger::{Ledger, LedgerConfig, LedgerReader};
use mcptrail_redact::{find_sealed, forget_subject, MasterKey, TokenKey, Vault};
use serde_json::{json, Value};

use crate::config::{token_key_path, Config};

#[derive(clap::Args, Debug)]
pub(crate) struct ForgetArgs {
    /// The subject: the user principal as the agent's events name it (e.g. alice@example.com).
    #[arg(long, value_name = "PRINCIPAL")]
    subject: String,
    /// Why (an erasure request's reference): recorded in the ledger.
    #[arg(long, value_name = "TEXT")]
    reason: String,
}

#[derive(clap::Args, Debug)]
pub(crate) struct RevealArgs {
    /// The event (its `event_id`).
    event_id: String,
    /// The field: a JSON pointer as in the event's `redactions` (e.g. `/parameters_used/ssn`).
    #[arg(long, value_name = "PATH")]
    field: String,
    /// Why: recorded in the ledger with who asked.
    #[arg(long, value_name = "TEXT")]
    reason: String,
}

fn who() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {}", nix::unistd::geteuid()), |u| u.name)
}

/// Append a governance event, redacted like every other (a reason may name a person).
fn record(
    data_dir: &Path,
    cfg: &Config,
    ledger: LedgerConfig,
    kind: EventKind,
    detail: Value,
) -> anyhow::Result<()> {
    let mut e = Event::new(kind);
    e.detail = Some(detail);
    if cfg.redact.enabled {
        let key = TokenKey::load_or_create(&token_key_path(cfg, data_dir))?;
        mcptrail_redact::Redactor::new(&cfg.redact, key)?.redact_event(&mut e);
    }
    Ledger::open(data_dir, ledger)?
        .append(&mut [e])
        .context("recording the governance event")?;
    Ok(())
}

fn token_key(cfg: &Config, data_dir: &Path) -> anyhow::Result<TokenKey> {
    let path = token_key_path(cfg, data_dir);
    TokenKey::load(&path)?.with_context(|| {
        format!(
            "no pseudonym key at {}: nothing was ever encrypted with this data directory's keys",
            path.display()
        )
    })
}

pub(crate) fn forget(
    args: ForgetArgs,
    data_dir: &Path,
    cfg: &Config,
    ledger: LedgerConfig,
) -> anyhow::Result<ExitCode> {
    if args.reason.trim().is_empty() {
        bail!("--reason must say why (e.g. the erasure request's reference)");
    }
    let subject = Vault::subject_token(&token_key(cfg, data_dir)?, &args.subject);
    // Count what becomes unreadable, for the record (the ciphertext stays in the ledger).
    let (mut fields, mut events) = (0u64, 0u64);
    for rec in LedgerReader::open(data_dir, 1)? {
        let rec = rec?;
        let n = find_sealed(&String::from_utf8_lossy(&rec.line))
            .iter()
            .filter(|(_, s)| s.subject == subject)
            .count() as u64;
        fields += n;
        events += u64::from(n > 0);
    }
    let existed = forget_subject(data_dir, &subject)?;
    record(
        data_dir,
        cfg,
        ledger,
        EventKind::GovernanceForget,
        json!({"subject": subject, "reason": args.reason, "by": who(), "key_deleted": existed,
               "encrypted_fields": fields, "events": events}),
    )?;
    if existed {
        println!("forgot subject {subject}: its data key is deleted; {fields} encrypted field(s) in {events} event(s) can no longer be read. The ledger still verifies.");
    } else {
        println!("subject {subject} had no data key (never encrypted for, or already forgotten); recorded");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn reveal(
    args: RevealArgs,
    data_dir: &Path,
    cfg: &Config,
    ledger: LedgerConfig,
) -> anyhow::Result<ExitCode> {
    if args.reason.trim().is_empty() {
        bail!("--reason must say why the value is needed; it is recorded");
    }
    let master = MasterKey::load(cfg.redact.master_key_file.as_deref())?;
    let vault = Vault::new(data_dir, master);
    let mut found = None;
    for rec in LedgerReader::open(data_dir, 1)? {
        let rec = rec?;
        let v: Value = match serde_json::from_slice(&rec.line) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if v["event_id"] == args.event_id.as_str() {
            found = Some(v);
            break;
        }
    }
    let event = found.with_context(|| format!("no event {} in the ledger", args.event_id))?;
    let text = mcptrail_redact::resolve_field(&event, &args.field).with_context(|| {
        format!(
            "event {} has no text at {} (the paths of its encrypted fields are in its `redactions`)",
            args.event_id, args.field
        )
    })?;
    if find_sealed(&text).is_empty() {
        bail!(
            "{} of event {} holds no encrypted value",
            args.field,
            args.event_id
        );
    }
    let revealed = vault
        .reveal_field(&event, &args.event_id, &args.field)
        .expect("the field was just resolved");
    for p in &revealed.problems {
        eprintln!("mcptrail: {p}");
    }
    let outcome = revealed.values.clone();
    // Recorded whether it worked or not: an attempt is an access.
    record(
        data_dir,
        cfg,
        ledger,
        EventKind::GovernanceReveal,
        json!({"event_id": args.event_id, "field": args.field, "reason": args.reason,
               "by": who(), "values": outcome}),
    )?;
    let Some(text) = revealed.text else {
        return Ok(ExitCode::from(1));
    };
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}
