//! `mcptrail verify`: check the ledger's hash chain; exit 1 when anything is wrong.

use std::path::Path;
use std::process::ExitCode;

use mcptrail_ledger::{verify, VerifyOptions};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Start at this sequence number (the link into it is trusted).
    #[arg(long, value_name = "SEQ", default_value_t = 1)]
    from: u64,
    /// Machine-readable report.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args, data_dir: &Path) -> anyhow::Result<ExitCode> {
    if !data_dir.join(mcptrail_ledger::LEDGER_DIR).exists() {
        anyhow::bail!("no ledger in {}", data_dir.display());
    }
    let report = verify(
        data_dir,
        &VerifyOptions {
            from_seq: args.from,
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
