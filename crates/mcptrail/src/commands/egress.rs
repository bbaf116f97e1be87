//! `mcptrail egress`: the egress proxy as a service of its own, for tool servers started
//! elsewhere with `HTTP_PROXY`/`HTTPS_PROXY` pointing at it. Runs until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use mcptrail_tap::egress::{EgressOptions, EgressSession};

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Listen address (overrides `egress.listen`; port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Agent id recorded on its events.
    #[arg(long, value_name = "ID")]
    agent_id: Option<String>,
    /// Check the `[egress]` configuration and exit.
    #[arg(long)]
    check: bool,
}

pub(crate) fn run(args: Args, cfg: &Config, data_dir: PathBuf) -> anyhow::Result<ExitCode> {
    let mut egress = cfg.egress.clone();
    if let Some(l) = args.listen {
        egress.listen = l;
    }
    mcptrail_egress::EgressPolicy::new(&egress)?;
    if args.check {
        println!(
            "egress configuration OK: default {}, {} allow and {} deny entries",
            egress.default.as_str(),
            egress.allow.len(),
            egress.deny.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let ledger = cfg.ledger.to_ledger_config();
    let shipping = super::start_shipping(cfg, &data_dir, &ledger);
    let session = EgressSession::start(EgressOptions {
        egress,
        data_dir,
        agent_id: args
            .agent_id
            .or_else(|| std::env::var("MCPTRAIL_AGENT_ID").ok()),
        asserted_user: std::env::var("MCPTRAIL_USER").ok(),
        tap: cfg.tap.clone(),
        ledger,
    })?;
    eprintln!(
        "mcptrail egress: listening on http://{} (session {})",
        session.local_addr(),
        session.session_id()
    );
    signals.forever().next();
    let lost = session.stop();
    super::stop_shipping(shipping);
    if lost > 0 {
        eprintln!("mcptrail egress: {lost} audit events could not be written");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
