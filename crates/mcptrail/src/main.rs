//! `mcptrail`: the command line. Glue only — every command calls into a library crate and
//! turns its typed errors into one line a user can act on.

mod commands;
mod config;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "mcptrail", version, about = "The flight recorder for AI agents that use MCP", long_about = None)]
struct Cli {
    /// Data directory (ledger and index). Default: $MCPTRAIL_DATA_DIR, else the config's
    /// `data_dir`, else $XDG_DATA_HOME/mcptrail (~/.local/share/mcptrail).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Configuration file (TOML). Default: $MCPTRAIL_CONFIG, else
    /// $XDG_CONFIG_HOME/mcptrail/mcptrail.toml when it exists.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a stdio MCP server and record every message: `mcptrail wrap -- CMD ARGS…`.
    Wrap(commands::wrap::Args),
    /// Audit gateway for MCP over HTTP: a reverse proxy in front of Streamable HTTP and
    /// HTTP+SSE servers that records every message, with verified identity and trace context.
    Gateway(commands::gateway::Args),
    /// HTTP(S) forward proxy for tool servers' outbound calls: every connection recorded as a
    /// `net.egress` event, destinations allowed or refused by the `[egress]` policy.
    Egress(commands::egress::Args),
    /// List recorded events, filtered.
    Log(commands::log::Args),
    /// Run the detection rules (built-in pack, `[detect]` rules, `--rules FILE`) over the
    /// ledger and print the alerts; `--append` records them as `alert` events.
    Detect(commands::detect::DetectArgs),
    /// List the alert events of the ledger (detections, sink alerts).
    Alerts(commands::detect::AlertsArgs),
    /// Learn what each agent normally does from the ledger (`learn --since 14d`), and review
    /// it with the thresholds the anomaly rules alert above (`show`).
    Baseline(commands::baseline::Args),
    /// Show one session as a request/response tree with durations.
    Timeline(commands::timeline::Args),
    /// Check the ledger (chain, MACs, checkpoints, anchors) or an evidence bundle; say exactly
    /// what is wrong and where. Exit 0 intact, 1 tampered, 2 cannot verify.
    Verify(commands::verify::Args),
    /// On copies of the ledger, tamper in every way and show that `verify` catches each.
    Drill(commands::drill::Args),
    /// Sign a checkpoint now and print it; export the public key; prove consistency with an
    /// older checkpoint you kept.
    Checkpoint(commands::checkpoint::Args),
    /// Write one session's records, with inclusion proofs, the covering signed checkpoint and
    /// the public key, to an evidence bundle that `verify --bundle` checks anywhere.
    Export(commands::export::Args),
    /// Find the MCP client configurations on this machine (Claude Desktop, Claude Code,
    /// Cursor, VS Code, Windsurf, or the files given) and say which servers are recorded.
    Scan(commands::clients::ScanArgs),
    /// Make every stdio server of the client configurations run through `mcptrail wrap`
    /// (backup first; `--dry-run` shows the diff).
    Install(commands::clients::InstallArgs),
    /// Undo `install`: restore the wrapped entries exactly as they were.
    Uninstall(commands::clients::InstallArgs),
    /// Crypto-shred a subject: delete their data key, so every field encrypted for them is
    /// unreadable for good (the ledger still verifies); recorded as `governance.forget`.
    Forget(commands::privacy::ForgetArgs),
    /// Decrypt one encrypted field of one event (master key and a reason required); recorded
    /// as `governance.reveal`.
    Reveal(commands::privacy::RevealArgs),
    /// Check that this machine records every MCP server and that the record would hold up:
    /// data directory, disk, ledger, keys, anchor, clock, index, sinks, client configs. Exit 1
    /// when a check fails.
    Doctor(commands::doctor::Args),
    /// Deliver the ledger to the configured [[sinks]] until caught up (`--follow`: keep
    /// tailing); `--status` shows each sink's cursor and lag.
    Ship(commands::ship::Args),
    /// Retention by label: `plan` what would be archived and purged, `run` it (signed
    /// tombstones keep `verify` passing), `selfcheck` that it did what the policy says.
    Retention(commands::retention::Args),
    /// The governance server: JSON API, live tail and dashboard with roles, dual
    /// authorisation and a meta-audit of every read (`[serve]`); `serve token add` makes
    /// API tokens.
    Serve(commands::serve::Args),
    /// Consume the fleet's records and checkpoints from NATS JetStream, check every source's
    /// chain and signed checkpoints, store the events in PostgreSQL (`[collector]`). Runs
    /// until SIGINT or SIGTERM; run several on one consumer to scale out.
    Collector,
    /// Rebuild the query index from the ledger.
    Reindex,
    /// Print the JSON Schema of audit events (schema v1).
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mcptrail: error: {}", error_line(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, each cause once: library errors already name their
/// cause in their message, and repeating it ("…: No such file: No such file") reads badly.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let explicit_config = cli
        .config
        .clone()
        .or_else(|| std::env::var_os("MCPTRAIL_CONFIG").map(PathBuf::from));
    // `doctor` reports a configuration that does not load as one of its checks.
    let (cfg, config_error) = match config::load(cli.config.as_deref()) {
        Ok(cfg) => (cfg, None),
        Err(e) if matches!(cli.command, Command::Doctor(_)) => {
            (config::Config::default(), Some(error_line(&e)))
        }
        Err(e) => return Err(e),
    };
    let data_dir = config::data_dir(cli.data_dir, &cfg)?;
    match cli.command {
        Command::Wrap(args) => commands::wrap::run(args, &cfg, data_dir),
        Command::Gateway(args) => commands::gateway::run(args, &cfg, data_dir),
        Command::Egress(args) => commands::egress::run(args, &cfg, data_dir),
        Command::Log(args) => commands::log::run(args, &data_dir, &cfg),
        Command::Detect(args) => commands::detect::detect(args, &cfg, &data_dir),
        Command::Alerts(args) => commands::detect::alerts(args, &data_dir),
        Command::Baseline(args) => commands::baseline::run(args, &cfg, &data_dir),
        Command::Timeline(args) => commands::timeline::run(args, &data_dir),
        Command::Verify(args) => commands::verify::run(
            args,
            &data_dir,
            cfg.ledger.anchor_dir.as_deref(),
            cfg.ledger.mac_seed_path.as_deref(),
            mcptrail_sinks::checkpoints::sink_anchors(&cfg.sinks),
        ),
        Command::Drill(args) => commands::drill::run(
            args,
            &data_dir,
            cfg.ledger.anchor_dir.as_deref(),
            cfg.ledger.mac_seed_path.as_deref(),
        ),
        Command::Export(args) => {
            commands::export::run(args, &data_dir, cfg.ledger.to_ledger_config())
        }
        Command::Checkpoint(args) => {
            commands::checkpoint::run(args, &data_dir, cfg.ledger.to_ledger_config())
        }
        Command::Scan(args) => commands::clients::scan(args),
        Command::Install(args) => commands::clients::install(
            args,
            false,
            &cfg,
            &data_dir,
            explicit_config.as_deref(),
            cfg.ledger.to_ledger_config(),
        ),
        Command::Uninstall(args) => commands::clients::install(
            args,
            true,
            &cfg,
            &data_dir,
            explicit_config.as_deref(),
            cfg.ledger.to_ledger_config(),
        ),
        Command::Forget(args) => {
            commands::privacy::forget(args, &data_dir, &cfg, cfg.ledger.to_ledger_config())
        }
        Command::Reveal(args) => {
            commands::privacy::reveal(args, &data_dir, &cfg, cfg.ledger.to_ledger_config())
        }
        Command::Doctor(args) => commands::doctor::run(
            args,
            commands::doctor::Setup {
                data_dir: &data_dir,
                config_path: config::path(cli.config.as_deref()),
                config_error,
                cfg: &cfg,
            },
        ),
        Command::Ship(args) => commands::ship::run(args, &cfg, &data_dir),
        Command::Retention(args) => {
            commands::retention::run(args, &data_dir, &cfg, config::path(cli.config.as_deref()))
        }
        Command::Serve(args) => commands::serve::run(args, &cfg, data_dir),
        Command::Collector => commands::collector::run(&cfg),
        Command::Reindex => commands::reindex(&data_dir),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&mcptrail_event::json_schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
