//! `mcptrail verify`: check the ledger's hash chain and signed checkpoints; exit 1 when
//! anything is wrong.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use mcptrail_integrity::NoteVerifier;
use mcptrail_ledger::{verify, VerifyOptions};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Start at this sequence number (the link into it is trusted).
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
}

pub(crate) fn run(
    args: Args,
    data_dir: &Path,
    anchor_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    if !data_dir.join(mcptrail_ledger::LEDGER_DIR).exists() {
        anyhow::bail!("no ledger in {}", data_dir.display());
    }
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
    let mut anchor_dirs = args.anchor.clone();
    if anchor_dirs.is_empty() {
        anchor_dirs.extend(anchor_dir.map(Path::to_path_buf));
    }
    let report = verify(
        data_dir,
        &VerifyOptions {
            from_seq: args.from,
            verifier,
            anchor_dirs,
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.problems {
            println!("FAIL  {p}");
        }
        for n in &report.notices {
            println!("note  {n}");
        }
        let range = match (report.first_seq, report.last_seq) {
            (Some(a), Some(b)) => format!("seq {a}..={b}"),
            _ => "empty".into(),
        };
        if report.ok() {
            println!(
                "OK    hash chain intact: {} record{} in {} segment{} ({range}), head {}",
                report.records,
                if report.records == 1 { "" } else { "s" },
                report.segments,
                if report.segments == 1 { "" } else { "s" },
                report.head_hash.as_deref().map(|h| &h[..16]).unwrap_or("-")
            );
            if let Some(latest) = report.latest_checkpoint {
                let n = report.checkpoints_verified;
                println!(
                    "OK    {n} signed checkpoint{} the records (latest covers seq 1..={latest})",
                    if n == 1 { " matches" } else { "s match" },
                );
            }
        } else {
            println!(
                "FAIL  {} problem(s) in {} records ({range})",
                report.problems.len(),
                report.records
            );
        }
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
