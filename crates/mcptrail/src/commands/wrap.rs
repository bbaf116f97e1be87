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
    /// The MCP server command and its arguments (`--` before them is optional: everything
    /// from the command on belongs to the server, flags included).
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    command: Vec<String>,
}

pub(crate) fn run(args: Args, cfg: &Config, data_dir: PathBuf) -> anyhow::Result<ExitCode> {
    // Before the server starts: a redaction rule that cannot work stops here, with its name.
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
    };
    // Sinks ship in the background, off the relay path (own threads, low priority); what
    // they have not shipped when the session ends waits in the ledger for the next run.
    let shipping = (!cfg.sinks.is_empty()).then(|| {
        let alerts = mcptrail_sinks::LedgerAlerts {
            data_dir: opts.data_dir.clone(),
            config: opts.ledger.clone(),
        };
        let (handle, failed) = mcptrail_sinks::spawn(&opts.data_dir, &cfg.sinks, Some(alerts));
        for e in failed {
            eprintln!("mcptrail: warning: {e}; recording goes on, run `mcptrail ship` later");
        }
        handle
    });
    let outcome = run_wrap(opts);
    if let Some(handle) = shipping {
        for (name, result) in handle.stop(std::time::Duration::from_secs(2)) {
            match result {
                Err(e) => eprintln!("mcptrail: warning: sink {name} stopped: {e}"),
                Ok(st) if st.failing_since.is_some() => eprintln!(
                    "mcptrail: warning: sink {name} is failing ({}); its events wait in the ledger: run `mcptrail ship --sink {name}`",
                    st.last_error.as_deref().unwrap_or("unknown error")
                ),
                Ok(_) => {}
            }
        }
    }
    let outcome = outcome?;
    if outcome.events_lost > 0 {
        eprintln!(
            "mcptrail: {} audit events of session {} could not be written",
            outcome.events_lost, outcome.session_id
        );
    }
    Ok(ExitCode::from(outcome.exit_code.clamp(0, 255) as u8))
}
