//! `mcptrail verify`: check the ledger's hash chain, forward-secure MACs, signed checkpoints
//! (local and anchored), segment continuity and permissions — or an evidence bundle. Exit 0
//! intact, 1 tampered, 2 cannot verify.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use mcptrail_integrity::NoteVerifier;
use mcptrail_ledger::{verify, Progress, Verdict, VerifyOptions, VerifyReport};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Start at this sequence number (the link into it is trusted; checkpoints are only
    /// checked from the beginning).
    #[arg(long, value_name = "SEQ", default_value_t = 1)]
    from: u64,
    /// Machine-readable report.
    #[arg(long)]
    json: bool,
    /// Trust this checkpoint key (`name+id+key`, or a file holding it) instead of the
    /// ledger's own `keys/checkpoint.vkey`.
    #[arg(long, value_name = "VKEY|FILE")]
    key: Option<String>,
    /// Also check the checkpoint copies anchored in this directory (repeatable).
    #[arg(long, value_name = "DIR")]
    anchor: Vec<PathBuf>,
    /// The MAC verification seed file (default: `<data-dir>/keys/mac.seed` if it is there).
    #[arg(long, value_name = "FILE")]
    seed: Option<PathBuf>,
    /// Do not check MACs (no seed at hand): the verdict rests on the chain and checkpoints.
    #[arg(long, conflicts_with = "seed")]
    skip_macs: bool,
    /// Verify an evidence bundle written by `mcptrail export` instead of the ledger.
    #[arg(long, value_name = "FILE", conflicts_with = "consistency")]
    bundle: Option<PathBuf>,
    /// Verify a consistency proof written by `mcptrail checkpoint --since` (needs --key, the
    /// public key you were given): the newer checkpoint extends the older one.
    #[arg(long, value_name = "FILE", requires = "key")]
    consistency: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Hashing threads (default: one per core, at most 8); 1 to be gentle on a busy host.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
}

pub(crate) fn run(
    args: Args,
    data_dir: &Path,
    anchor_dir: Option<&Path>,
    seed_path: Option<&Path>,
    // Checkpoint anchors of the configured sinks (S3 Object Lock buckets).
    sink_anchors: Vec<Arc<dyn mcptrail_ledger::CheckpointAnchor>>,
) -> anyhow::Result<ExitCode> {
    let verifier = match &args.key {
        None => None,
        Some(k) => {
            let text = if Path::new(k).is_file() {
                std::fs::read_to_string(k).with_context(|| format!("cannot read key file {k}"))?
            } else {
                k.clone()
            };
            Some(NoteVerifier::from_vkey(text.trim()).context("--key")?)
        }
    };
    if let Some(path) = &args.consistency {
        let verifier = verifier.as_ref().context("--consistency needs --key")?;
        let text =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let proof: mcptrail_ledger::ConsistencyProof = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a consistency proof", path.display()))?;
        return Ok(match mcptrail_ledger::check_consistency(&proof, verifier) {
            Ok((old, new)) => {
                println!("OK    the checkpoint at {new} records extends the one at {old} (both signed by {})", verifier.name());
                ExitCode::SUCCESS
            }
            Err((class, e)) => {
                println!("FAIL  [{class}] {e}");
                ExitCode::from(1)
            }
        });
    }
    if let Some(bundle) = &args.bundle {
        return super::export::verify_bundle_cli(bundle, verifier, args.json);
    }
    if !data_dir.join(mcptrail_ledger::LEDGER_DIR).exists() {
        anyhow::bail!("no ledger in {}", data_dir.display());
    }
    let seed = if args.skip_macs {
        None
    } else {
        super::load_seed(args.seed.as_deref(), seed_path, data_dir)?
    };
    let mut anchor_dirs = args.anchor.clone();
    if anchor_dirs.is_empty() {
        anchor_dirs.extend(anchor_dir.map(Path::to_path_buf));
    }
    let bar = progress_bar(data_dir, args.quiet || args.json);
    let report = verify(
        data_dir,
        &VerifyOptions {
            from_seq: args.from,
            verifier,
            anchor_dirs,
            seed,
            skip_macs: args.skip_macs,
            threads: args.threads.map(usize::from),
            anchors: sink_anchors,
            progress: bar.clone().map(|b| {
                Progress(
                    Arc::new(move |done| b.set_position(done)) as Arc<dyn Fn(u64) + Send + Sync>
                )
            }),
        },
    )?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, args.skip_macs);
    }
    Ok(ExitCode::from(report.verdict.exit_code()))
}

/// A progress bar over the ledger's bytes, on a terminal only.
fn progress_bar(data_dir: &Path, quiet: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let total: u64 = mcptrail_ledger::list_segments(&data_dir.join(mcptrail_ledger::LEDGER_DIR))
        .ok()?
        .iter()
        .map(|s| s.len)
        .sum();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "verifying {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .ok()?,
    );
    Some(bar)
}

/// The lines every report starts with: problems (`FAIL  [class] …`), what could not be
/// checked (`??`), and notices.
pub(crate) fn print_findings<P: std::fmt::Display>(
    problems: impl IntoIterator<Item = (&'static str, P)>,
    unchecked: &[String],
    notices: &[String],
) {
    for (class, p) in problems {
        println!("FAIL  [{class}] {p}");
    }
    for u in unchecked {
        println!("??    {u}");
    }
    for n in notices {
        println!("note  {n}");
    }
}

pub(crate) fn print_report(report: &VerifyReport, skip_macs: bool) {
    print_findings(
        report.problems.iter().map(|p| (p.class(), p)),
        &report.unchecked,
        &report.notices,
    );
    let range = match (report.first_seq, report.last_seq) {
        (Some(a), Some(b)) => format!("seq {a}..={b}"),
        _ => "empty".into(),
    };
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    for line in removed_lines(&report.removed) {
        println!("{line}");
    }
    match report.verdict {
        Verdict::Tampered => println!(
            "FAIL  TAMPERED: {} problem(s) in {} records ({range})",
            report.problems.len(),
            report.records
        ),
        Verdict::Intact | Verdict::CannotVerify => {
            println!(
                "OK    hash chain intact: {} record{} in {} segment{} ({range}), head {}",
                report.records,
                plural(report.records),
                report.segments,
                if report.segments == 1 { "" } else { "s" },
                report.head_hash.as_deref().map(|h| &h[..16]).unwrap_or("-")
            );
            if report.macs_checked > 0 {
                let (a, b) = report.mac_epochs.unwrap_or_default();
                println!(
                    "OK    {} MAC{} valid across epochs {a}..={b}",
                    report.macs_checked,
                    plural(report.macs_checked)
                );
            } else if skip_macs && report.macs_unchecked > 0 {
                println!("note  MACs not checked (--skip-macs)");
            }
            if let Some(latest) = report.latest_checkpoint {
                let n = report.checkpoints_verified;
                println!(
                    "OK    {n} signed checkpoint{} the records (latest covers seq 1..={latest})",
                    if n == 1 { " matches" } else { "s match" },
                );
            }
            if report.verdict == Verdict::CannotVerify {
                println!("??    CANNOT VERIFY fully: see the lines marked ?? above");
            } else {
                println!("OK    INTACT");
            }
        }
    }
}

/// One line per run of consecutive removed segments with the same state and authority:
/// `OK    seq 1..=40960 purged under policy default 90d, pci 365d (at hand 90d) by tombstones
/// tombstones/ts-…1-purged.note … (3 segments), signatures OK`.
fn removed_lines(removed: &[mcptrail_ledger::RemovedSegment]) -> Vec<String> {
    let why = |m: &serde_json::Value| -> String {
        if m["outside_policy"] == serde_json::json!(true) {
            let a = &m["authorisation"];
            return format!(
                "by request {} ({}, approved by {}: {})",
                a["request_id"].as_str().unwrap_or("?"),
                a["requested_by"].as_str().unwrap_or("?"),
                a["approved_by"].as_str().unwrap_or("?"),
                m["reason"].as_str().unwrap_or("")
            );
        }
        match serde_json::from_value::<mcptrail_retention::Policy>(m["policy"].clone()) {
            Ok(p) => format!("under policy {}", p.describe()),
            Err(_) => "under a policy this version cannot read".into(),
        }
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < removed.len() {
        let first = &removed[i];
        let mut j = i;
        while j + 1 < removed.len()
            && removed[j + 1].state == first.state
            && why(&removed[j + 1].meta) == why(&first.meta)
        {
            j += 1;
        }
        let last = &removed[j];
        let n = j - i + 1;
        let files = if n == 1 {
            format!("tombstone {}", first.tombstone)
        } else {
            format!(
                "tombstones {} … {} ({n} segments)",
                first.tombstone, last.tombstone
            )
        };
        let state = match first.state {
            mcptrail_ledger::TombstoneState::Archived => format!(
                "removed here (archived to {})",
                first.archive.as_deref().unwrap_or("?")
            ),
            mcptrail_ledger::TombstoneState::Purged => "purged".to_string(),
        };
        out.push(format!(
            "OK    seq {}..={} {state} {} by {files}, signature{} OK",
            first.first_seq,
            last.last_seq,
            why(&first.meta),
            if n == 1 { "" } else { "s" }
        ));
        i = j + 1;
    }
    out
}
