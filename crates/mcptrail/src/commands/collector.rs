//! `mcptrail collector`: the `[collector]` table, signal handling, and a summary line at exit.
//! Everything else is in `mcptrail-collector`.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;

pub(crate) fn run(cfg: &crate::config::Config) -> anyhow::Result<ExitCode> {
    let Some(c) = &cfg.collector else {
        anyhow::bail!("no [collector] table in the configuration: set postgres_url and trusted_keys (README, \"Fleet: NATS JetStream and PostgreSQL\")");
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let rules = mcptrail_detect::RuleSet::load(&cfg.detect, &[], cfg.base_dir.as_deref())
        .context("the [detect] rules")?;
    let stats = mcptrail_collector::run(c, Some(rules), stop)?;
    eprintln!(
        "mcptrail collector: stopped after {} batches: {} stored, {} duplicates, {} pending, {} quarantined, {} alerts, {} checkpoints verified, {} alerts from detection, {} PostgreSQL reconnects",
        stats.batches,
        stats.counts.stored,
        stats.counts.duplicates,
        stats.counts.pending,
        stats.counts.quarantined,
        stats.counts.alerts,
        stats.counts.checkpoints,
        stats.detected,
        stats.pg_reconnects
    );
    Ok(ExitCode::SUCCESS)
}
