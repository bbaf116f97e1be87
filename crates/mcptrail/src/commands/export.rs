//! `mcptrail export --session ID --out FILE`: one session as an evidence bundle (its records
//! with Merkle inclusion proofs, the covering signed checkpoint and the public key), and the
//! printing side of `mcptrail verify --bundle FILE`, which checks one with nothing else.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use mcptrail_index::{Filter, Index};
use mcptrail_integrity::NoteVerifier;
use mcptrail_ledger::{
    export_session_with, verify_bundle, write_bundle, Bundle, BundleReport, ExportOptions,
    KeySource, LedgerConfig, Verdict,
};

use super::synced_index;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Session id (a unique prefix is enough); `latest` for the most recent session.
    #[arg(long)]
    session: String,
    /// Where to write the bundle (mode 0600; an existing file is replaced).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Print a machine-readable summary.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args, data_dir: &Path, ledger: LedgerConfig) -> anyhow::Result<ExitCode> {
    let session = match synced_index(data_dir) {
        Ok(idx) => resolve_session(&idx, &args.session)?,
        // A read-only copy of a data directory may have no usable index: take the id as given.
        Err(e)
            if args.session != "latest" && data_dir.join(mcptrail_ledger::LEDGER_DIR).exists() =>
        {
            eprintln!(
                "mcptrail: warning: cannot use the index ({e:#}); looking for session `{}` exactly",
                args.session
            );
            args.session.clone()
        }
        Err(e) => return Err(e),
    };
    let export = export_session_with(
        data_dir,
        &session,
        &ExportOptions {
            sign_with: Some(ledger),
        },
    )?;
    write_bundle(&export.bundle, &args.out)?;
    let b = &export.bundle;
    if args.json {
        let summary = serde_json::json!({
            "out": args.out,
            "session_id": b.session_id,
            "records": b.count,
            "first_seq": b.first_seq,
            "last_seq": b.last_seq,
            "session_start": b.session_start,
            "session_end": b.session_end,
            "checkpoint_size": b.tree_size,
            "fresh_checkpoint": export.fresh_checkpoint,
            "record_list_signed": b.statement.is_some(),
            "key": b.key,
            "notices": export.notices,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        for n in &export.notices {
            eprintln!("mcptrail: note: {n}");
        }
        let bounds = match (b.session_start, b.session_end) {
            (true, true) => "session.start and session.end included",
            (true, false) => "no session.end: the session was still running, or its tap was killed",
            (false, true) => "no session.start",
            (false, false) => "neither session.start nor session.end",
        };
        println!(
            "exported {} record{} of session {} (seq {}..={}; {bounds}) to {}",
            b.count,
            if b.count == 1 { "" } else { "s" },
            b.session_id,
            b.first_seq,
            b.last_seq,
            args.out.display()
        );
        println!(
            "each with its inclusion proof under the signed checkpoint of {} records ({})",
            b.tree_size,
            if export.fresh_checkpoint {
                "it covers the whole ledger"
            } else {
                "the newest one covering the session: the ledger could not be written"
            }
        );
        println!(
            "check it anywhere with: mcptrail verify --bundle {} --key '{}'",
            args.out.display(),
            b.key
        );
        println!("(give the auditor that key separately: the bundle's own copy proves nothing about who made it)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `latest`, an id, or a unique prefix of one, as `timeline` reads it.
fn resolve_session(idx: &Index, arg: &str) -> anyhow::Result<String> {
    if arg == "latest" {
        let last = idx.query(&Filter {
            kind: Some("session.start".into()),
            limit: Some(1),
            ..Default::default()
        })?;
        return last
            .into_iter()
            .next()
            .and_then(|e| e.session_id)
            .ok_or_else(|| anyhow::anyhow!("no sessions recorded yet"));
    }
    let matches = idx.sessions_matching(arg)?;
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!(
            "no session matches `{arg}`; list sessions with `mcptrail log --kind session.start`"
        ),
        many => anyhow::bail!(
            "`{arg}` matches {} sessions; give more of the id (e.g. {})",
            many.len(),
            many[0]
        ),
    }
}

/// `mcptrail verify --bundle FILE [--key K] [--json]`: exit 0 intact, 1 tampered, 2 cannot
/// verify (the bundle carries no signed list of records); an unreadable file or another
/// format is an error (exit 2 as well).
pub(crate) fn verify_bundle_cli(
    path: &Path,
    key: Option<NoteVerifier>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read bundle {}", path.display()))?;
    let bundle = Bundle::from_json(&bytes).with_context(|| format!("{}", path.display()))?;
    let report = verify_bundle(&bundle, key.as_ref());
    if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print_bundle_report(&report);
    }
    Ok(ExitCode::from(report.verdict.exit_code()))
}

fn print_bundle_report(r: &BundleReport) {
    super::verify::print_findings(
        r.problems.iter().map(|p| (p.class(), p)),
        &r.unchecked,
        &r.notices,
    );
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!("seq {a}..={b}"),
        _ => "no records".into(),
    };
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    let key = format!(
        "{} ({})",
        r.key_name.as_deref().unwrap_or("-"),
        match r.key_source {
            KeySource::Bundled => "the bundle's own key",
            KeySource::Trusted => "trusted key",
        }
    );
    if r.verdict == Verdict::Tampered {
        println!(
            "FAIL  TAMPERED: {} problem(s) in the bundle of session {} ({} record{}, {range})",
            r.problems.len(),
            r.session_id,
            r.events,
            plural(r.events)
        );
        return;
    }
    println!(
        "OK    {} record{} of session {} ({range}), each included in the signed checkpoint of {} records; key {key}",
        r.events,
        plural(r.events),
        r.session_id,
        r.checkpoint_size.unwrap_or(0),
    );
    if r.record_list_verified {
        println!("OK    the signed list of the session's records matches the bundle");
    }
    match (r.session_start, r.session_end) {
        (Some(a), Some(b)) => println!("OK    session.start at seq {a}, session.end at seq {b}"),
        (Some(a), None) => println!(
            "note  session.start at seq {a}, no session.end: the session was still running when exported, or its tap was killed"
        ),
        (None, Some(b)) => println!("note  no session.start; session.end at seq {b}"),
        (None, None) => println!("note  neither session.start nor session.end is in the bundle"),
    }
    if r.verdict == Verdict::CannotVerify {
        println!("??    CANNOT VERIFY fully: see the lines marked ?? above");
    } else {
        println!("OK    INTACT");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcptrail_event::{Event, EventKind};
    use mcptrail_ledger::{export_session, Ledger};

    #[test]
    fn verify_bundle_cli_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
        let mut evs: Vec<Event> = [EventKind::SessionStart, EventKind::McpRequest]
            .into_iter()
            .map(|k| {
                let mut e = Event::new(k);
                e.session_id = Some("s-1".into());
                e
            })
            .collect();
        l.append(&mut evs).unwrap();
        let bundle = export_session(dir.path(), "s-1").unwrap();
        let path = dir.path().join("b.json");
        let check = |b: &Bundle, key: Option<NoteVerifier>| {
            write_bundle(b, &path).unwrap();
            verify_bundle_cli(&path, key, false).unwrap()
        };
        let key = mcptrail_ledger::local_verifier(dir.path()).unwrap();
        assert_eq!(check(&bundle, key), ExitCode::SUCCESS);
        let mut tampered = bundle.clone();
        tampered.events[1].line = tampered.events[1].line.replacen("mcp", "mcP", 1);
        assert_eq!(check(&tampered, None), ExitCode::from(1));
        let mut unsigned = bundle;
        unsigned.statement = None;
        assert_eq!(check(&unsigned, None), ExitCode::from(2));
        std::fs::write(&path, "{}").unwrap();
        assert!(verify_bundle_cli(&path, None, true).is_err());
        assert!(verify_bundle_cli(&dir.path().join("nope"), None, true).is_err());
    }
}
