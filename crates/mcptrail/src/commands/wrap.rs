//! `mcptrail wrap -- CMD ARGS…`: the stdio tap. Nothing but the server's own bytes may go to
//! stdout; everything mcptrail has to say goes to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use mcptrail_tap::stdio::{run_wrap, WrapOptions};

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Agent id recorded on every event (default: the client name from `initialize`).
    #[arg(long, value_name = "ID")]
    agent_id: Option<String>,
    /// Start the server behind the egress proxy (`[egress]` policy, on a free loopback
    /// port): its outbound HTTP(S) connections are recorded as `net.egress` events of this
    /// session, refused ones answered 403.
    #[arg(long)]
    egress: bool,
    /// The MCP server command and its arguments (`--` before them is optional: everything
    /// from the command on belongs to the server, flags included).
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    command: Vec<String>,
}

pub(crate) fn run(args: Args, cfg: &Config, data_dir: PathBuf) -> anyhow::Result<ExitCode> {
    // Before the server starts: a redaction rule or egress entry that cannot work stops
    // here, with its name.
    if args.egress || env_flag("MCPTRAIL_EGRESS") {
        mcptrail_egress::EgressPolicy::new(&cfg.egress)?;
    }
    let redactor = crate::config::redactor(cfg, &data_dir)?.map(std::sync::Arc::new);
    let opts = WrapOptions {
        command: args.command,
        data_dir,
        agent_id: args
            .agent_id
            .or_else(|| std::env::var("MCPTRAIL_AGENT_ID").ok()),
        asserted_user: std::env::var("MCPTRAIL_USER").ok(),
        tap: cfg.tap.clone(),
        ledger: cfg.ledger.to_ledger_config(),
        redactor,
        egress: (args.egress || env_flag("MCPTRAIL_EGRESS")).then(|| cfg.egress.clone()),
    };
    let shipping = super::start_shipping(cfg, &opts.data_dir, &opts.ledger);
    let detecting = super::detect::start_detecting(cfg, &opts.data_dir, &opts.ledger);
    let outcome = run_wrap(opts);
    // The detector first: the alerts it appends for the session's last events are shipped too.
    super::detect::stop_detecting(detecting, std::time::Duration::from_secs(5));
    super::stop_shipping(shipping);
    let outcome = outcome?;
    if outcome.events_lost > 0 {
        eprintln!(
            "mcptrail: {} audit events of session {} could not be written",
            outcome.events_lost, outcome.session_id
        );
    }
    Ok(ExitCode::from(outcome.exit_code.clamp(0, 255) as u8))
}

/// `VAR=1` / `true` / `yes`.
fn env_flag(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}
