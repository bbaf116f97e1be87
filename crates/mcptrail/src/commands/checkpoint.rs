//! `mcptrail checkpoint`: sign a checkpoint over every record now, print it and the public
//! key to hand to auditors, or prove that today's log extends a checkpoint kept earlier.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use mcptrail_ledger::{list_checkpoints, local_verifier, prove_consistency, Ledger, LedgerConfig};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Print only the public key (`name+id+key`): give it to auditors out of band.
    #[arg(long, conflicts_with = "since")]
    public_key: bool,
    /// An older checkpoint of this ledger (a file you kept): write the consistency proof from
    /// it to the newest checkpoint, for `mcptrail verify --consistency`.
    #[arg(long, value_name = "OLD.note", requires = "out")]
    since: Option<PathBuf>,
    /// Where to write the consistency proof (mode 0600).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub(crate) fn run(args: Args, data_dir: &Path, ledger: LedgerConfig) -> anyhow::Result<ExitCode> {
    if !data_dir.join(mcptrail_ledger::LEDGER_DIR).exists() {
        bail!("no ledger in {}", data_dir.display());
    }
    let anchor_dir = ledger.checkpoints.anchor_dir.clone();
    // Cover every record first, so the newest checkpoint is current.
    let covered = Ledger::open(data_dir, ledger)?
        .checkpoint_now()
        .context("signing a checkpoint")?;
    let verifier = local_verifier(data_dir)?.context("the ledger has no checkpoint key")?;
    if args.public_key {
        println!("{}", verifier.to_vkey());
        return Ok(ExitCode::SUCCESS);
    }
    if let (Some(old), Some(out)) = (&args.since, &args.out) {
        let old_note = std::fs::read_to_string(old)
            .with_context(|| format!("cannot read {}", old.display()))?;
        let proof = prove_consistency(data_dir, &old_note)?;
        let json = serde_json::to_vec_pretty(&proof)?;
        write_private(out, &json)?;
        println!(
            "wrote the consistency proof ({} hashes) from the checkpoint you kept to the newest to {}",
            proof.proof.len(),
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (size, path) = list_checkpoints(&data_dir.join(mcptrail_ledger::CHECKPOINT_DIR))?
        .pop()
        .context("no checkpoint")?;
    debug_assert_eq!(Some(size), covered);
    let note =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    // The newest checkpoint may predate the anchor (or have been signed while it was
    // unreachable): make sure the anchor holds it.
    if let Some(dir) = anchor_dir {
        use mcptrail_ledger::CheckpointAnchor;
        mcptrail_ledger::DirAnchor::new(&dir)
            .publish(size, &note)
            .with_context(|| format!("anchoring the checkpoint in {}", dir.display()))?;
    }
    print!("{note}");
    eprintln!(
        "(file {}; public key: {})",
        path.display(),
        verifier.to_vkey()
    );
    Ok(ExitCode::SUCCESS)
}

/// The proof goes to a 0600 file, replaced atomically (a crash never leaves half a proof).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    mcptrail_ledger::write_private_atomic(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}
