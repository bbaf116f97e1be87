//! `mcptrail drill`: on copies of the ledger, perform each tamper class and show that `verify`
//! catches it — the seed's "attempt to tamper with logs and validate detection". The real
//! ledger is only read (under the writer lock, for a consistent snapshot).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use mcptrail_event::{Event, EventKind};
use mcptrail_integrity::{NoteVerifier, Seed};
use mcptrail_ledger::tamper::{apply, Tamper};
use mcptrail_ledger::{
    local_verifier, verify, CheckpointPolicy, Ledger, LedgerConfig, MacPolicy, Verdict,
    VerifyOptions, LEDGER_DIR,
};
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Drill on a practice ledger built for the purpose (several segments, MAC epochs,
    /// checkpoints and an anchor) instead of a copy of the real one.
    #[arg(long)]
    practice: bool,
    /// The MAC verification seed (default: `<data-dir>/keys/mac.seed` if it is there).
    #[arg(long, value_name = "FILE")]
    seed: Option<PathBuf>,
    /// Machine-readable results.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    class: &'static str,
    applied_at: String,
    detected: Option<bool>,
    reported_as: Vec<&'static str>,
    location: String,
    why_not: Option<String>,
}

pub(crate) fn run(
    args: Args,
    data_dir: &Path,
    anchor_dir: Option<&Path>,
    seed_path: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let work = tempfile::Builder::new()
        .prefix("mcptrail-drill-")
        .tempdir()
        .context("cannot create a scratch directory for the drill")?;
    let (source, anchor, seed) = if args.practice {
        let src = work.path().join("practice");
        let anchor = work.path().join("practice-anchor");
        build_practice(&src, &anchor)?;
        let seed = Seed::read(&mcptrail_ledger::default_seed_path(&src))?;
        (src, Some(anchor), Some(seed))
    } else {
        if !data_dir.join(LEDGER_DIR).exists() {
            bail!(
                "no ledger in {} (or run `mcptrail drill --practice`)",
                data_dir.display()
            );
        }
        let seed = super::load_seed(args.seed.as_deref(), seed_path, data_dir)?;
        (
            data_dir.to_path_buf(),
            anchor_dir.map(Path::to_path_buf),
            seed,
        )
    };
    // The auditor's key is the one before the drill: a tamperer may replace the local copy.
    let verifier: Option<NoteVerifier> = local_verifier(&source)?;
    let opts = |seed: &Option<Seed>| VerifyOptions {
        verifier: verifier.clone(),
        anchor_dirs: anchor.iter().cloned().collect(),
        seed: seed.clone(),
        skip_macs: seed.is_none(),
        ..VerifyOptions::default()
    };

    let pristine = work.path().join("pristine");
    snapshot(&source, &pristine)?;
    let baseline = verify(&pristine, &opts(&seed))?;
    if baseline.verdict != Verdict::Intact {
        bail!(
            "the ledger does not verify before the drill ({} problems, verdict {:?}): run `mcptrail verify` first",
            baseline.problems.len(),
            baseline.verdict
        );
    }
    let n = baseline.records;
    if n < 4 {
        bail!("the ledger holds {n} records; the drill needs at least 4 (or run `mcptrail drill --practice`)");
    }
    // Records 1..first-1 may have been removed by retention (under tombstones).
    let first = baseline.first_seq.unwrap_or(1);
    let last = baseline.last_seq.unwrap_or(n);
    let mid = first + n / 2;
    let cases = [
        Tamper::ModifyRecord { seq: mid },
        Tamper::ModifyAndRechain { seq: mid },
        Tamper::RemacWithCurrentKey { seq: first + 1 },
        Tamper::DeleteRecord { seq: mid },
        Tamper::InsertForged { after_seq: mid },
        Tamper::SwapRecords { seq: mid },
        Tamper::TruncateTail { records: 1 },
        Tamper::DeleteSegment,
        Tamper::Fork { from_seq: last - 1 },
        Tamper::BadSignature,
        Tamper::UnsealSegment,
        Tamper::DeleteOldestSegment,
        Tamper::TombstoneForMiddleSegment,
        Tamper::ModifyTombstone,
    ];
    let mut rows = Vec::new();
    for (i, t) in cases.iter().enumerate() {
        let copy = work.path().join(format!("case-{i}"));
        snapshot(&pristine, &copy)?;
        let row = match apply(&copy, *t) {
            Err(e) => Row {
                class: t.name(),
                applied_at: "-".into(),
                detected: None,
                reported_as: Vec::new(),
                location: "-".into(),
                why_not: Some(e.to_string()),
            },
            Ok(site) => {
                let r = verify(&copy, &opts(&seed))?;
                let mut classes: Vec<&'static str> = Vec::new();
                for c in r.problems.iter().map(|p| p.class()) {
                    if !classes.contains(&c) {
                        classes.push(c);
                    }
                }
                Row {
                    class: t.name(),
                    applied_at: match site.seq {
                        Some(s) => format!("seq {s} ({})", site.file),
                        None => site.file.clone(),
                    },
                    detected: Some(r.verdict == Verdict::Tampered),
                    reported_as: classes,
                    location: r
                        .problems
                        .first()
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "-".into()),
                    why_not: (r.verdict != Verdict::Tampered)
                        .then(|| explain_miss(t, &anchor, &seed)),
                }
            }
        };
        let _ = std::fs::remove_dir_all(&copy);
        rows.push(row);
    }
    let missed = rows.iter().filter(|r| r.detected == Some(false)).count();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "drill on a copy of {} ({n} records)",
            if args.practice {
                "a practice ledger".to_string()
            } else {
                source.display().to_string()
            }
        );
        println!(
            "{:<40} {:<9} {:<28} where",
            "tamper class", "detected", "reported as"
        );
        for r in &rows {
            let detected = match r.detected {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "n/a",
            };
            println!(
                "{:<40} {:<9} {:<28} {}",
                r.class,
                detected,
                r.reported_as.join(","),
                r.why_not.as_deref().unwrap_or(&r.location)
            );
        }
        if missed == 0 {
            println!("every applicable tamper class was detected");
        } else {
            println!("{missed} tamper class(es) went undetected: see the reasons above");
        }
    }
    Ok(if missed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn explain_miss(t: &Tamper, anchor: &Option<PathBuf>, seed: &Option<Seed>) -> String {
    match t {
        Tamper::TruncateTail { .. } | Tamper::Fork { .. } if anchor.is_none() => {
            "no anchor: set [ledger] anchor_dir so a copy of each checkpoint lives elsewhere".into()
        }
        Tamper::RemacWithCurrentKey { .. } if seed.is_none() => {
            "no MAC seed given (--seed): MACs were not checked".into()
        }
        Tamper::RemacWithCurrentKey { .. } => {
            "the record is in the current MAC epoch, which the current key can rewrite; only an anchored checkpoint covering it catches this".into()
        }
        _ => "not detected".into(),
    }
}

/// Copy the ledger, checkpoints, keys and tombstones of `from` into `to` (modes kept), holding the writer
/// lock of `from` so no batch is half-copied.
fn snapshot(from: &Path, to: &Path) -> anyhow::Result<()> {
    let lock = std::fs::File::open(from.join(LEDGER_DIR).join("LOCK")).ok();
    if let Some(l) = &lock {
        l.lock_shared()
            .context("cannot lock the ledger for a snapshot")?;
    }
    for sub in [
        LEDGER_DIR,
        mcptrail_ledger::CHECKPOINT_DIR,
        mcptrail_ledger::KEY_DIR,
        mcptrail_ledger::TOMBSTONE_DIR,
    ] {
        if sub == mcptrail_ledger::TOMBSTONE_DIR && !from.join(sub).exists() {
            continue;
        }
        copy_dir(&from.join(sub), &to.join(sub))?;
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    if !from.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(to)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            let mode = entry.metadata()?.permissions().mode();
            std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// 200 records in 40 batches: segments of ~16 KiB, an epoch every 10 records, a checkpoint
/// every 25 records, anchored.
fn build_practice(dir: &Path, anchor: &Path) -> anyhow::Result<()> {
    let cfg = LedgerConfig {
        segment_max_bytes: 16 * 1024,
        checkpoints: CheckpointPolicy {
            every_records: 25,
            interval: Duration::from_secs(3600),
            anchor_dir: Some(anchor.to_path_buf()),
            ..CheckpointPolicy::default()
        },
        macs: MacPolicy {
            epoch_records: 10,
            epoch_interval: Duration::from_secs(3600),
            ..MacPolicy::default()
        },
        ..LedgerConfig::default()
    };
    let mut l = Ledger::open(dir, cfg)?;
    for b in 0..40u64 {
        let mut batch: Vec<Event> = (0..5)
            .map(|i| {
                let mut e = Event::new(EventKind::McpRequest);
                e.agent_id = Some("drill-practice".into());
                e.method = Some("tools/call".into());
                e.tool_invoked = Some("read_file".into());
                e.request_id = Some(serde_json::json!(b * 5 + i));
                e
            })
            .collect();
        l.append(&mut batch)?;
    }
    l.checkpoint_now()?;
    drop(l);
    // Retention removed the oldest segment (so the tombstone classes apply too).
    let oldest = mcptrail_ledger::list_segments(&dir.join(LEDGER_DIR))?
        .first()
        .and_then(|s| s.path.file_name()?.to_str().map(String::from))
        .context("the practice ledger has a segment")?;
    mcptrail_ledger::remove_segments(
        dir,
        &[mcptrail_ledger::Removal {
            segment: oldest,
            state: mcptrail_ledger::TombstoneState::Purged,
            archive: None,
        }],
        &mcptrail_ledger::RemovalOptions {
            meta: serde_json::json!({"policy": "drill practice"}),
            anchor_dir: Some(anchor.to_path_buf()),
            ..Default::default()
        },
    )?;
    Ok(())
}
