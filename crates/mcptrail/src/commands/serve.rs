//! `mcptrail serve`: the governance server (`mcptrail-server`) with `[serve]` of the
//! configuration; `mcptrail serve token add|list|revoke` manages the local API tokens.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use mcptrail_server::{Role, ServerOptions};

use crate::config::{token_key_path, Config};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Listen address (overrides `serve.listen`; port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Local API tokens (only their SHA-256 is stored).
    Token {
        #[command(subcommand)]
        command: TokenSub,
    },
}

#[derive(clap::Subcommand, Debug)]
enum TokenSub {
    /// Create a token for a principal with one role; prints it once.
    Add {
        /// Who holds it (recorded in the meta-audit).
        #[arg(long)]
        name: String,
        /// operator, investigator, auditor or admin.
        #[arg(long)]
        role: String,
    },
    /// List the tokens (names, roles, creation times; never the tokens).
    List,
    /// Revoke the token of a principal.
    Revoke {
        /// The principal.
        #[arg(long)]
        name: String,
    },
}

pub(crate) fn run(args: Args, cfg: &Config, data_dir: PathBuf) -> anyhow::Result<ExitCode> {
    let store = mcptrail_server::token_store(&cfg.serve, &data_dir);
    match args.command {
        Some(Sub::Token { command }) => {
            match command {
                TokenSub::Add { name, role } => {
                    let role: Role = role.parse().map_err(anyhow::Error::msg)?;
                    let t = store.add(&name, role)?;
                    eprintln!(
                        "token for {name} ({}) — shown once, store it now; only its hash is kept in {}",
                        role.as_str(),
                        store.path().display()
                    );
                    println!("{t}");
                }
                TokenSub::List => {
                    for t in store.list()? {
                        println!("{}\t{}\t{}", t.name, t.role.as_str(), t.created);
                    }
                }
                TokenSub::Revoke { name } => {
                    if !store.revoke(&name)? {
                        anyhow::bail!("no token named `{name}` (see `mcptrail serve token list`)");
                    }
                    println!("revoked the token of {name}");
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    let mut serve = cfg.serve.clone();
    if let Some(l) = args.listen {
        serve.listen = l;
    }
    let token_key = mcptrail_redact::TokenKey::load(&token_key_path(cfg, &data_dir))?;
    let event_hook: Option<mcptrail_server::EventHook> = if cfg.redact.enabled {
        let key = mcptrail_redact::TokenKey::load_or_create(&token_key_path(cfg, &data_dir))?;
        let redactor = mcptrail_redact::Redactor::new(&cfg.redact, key)?;
        Some(Arc::new(move |e: &mut mcptrail_event::Event| {
            redactor.redact_event(e)
        }))
    } else {
        None
    };
    let engine = if cfg.retention.policy()?.is_some() {
        Some(Arc::new(super::retention::engine(cfg, &data_dir, None)?))
    } else {
        None
    };
    // The master key of the encrypted fields, when one is configured: reveal requests need it.
    let master_key = if cfg.redact.master_key_file.is_some()
        || std::env::var_os("MCPTRAIL_MASTER_KEY").is_some()
    {
        Some(mcptrail_redact::MasterKey::load(
            cfg.redact.master_key_file.as_deref(),
        )?)
    } else {
        None
    };
    let seed = super::load_seed(None, cfg.ledger.mac_seed_path.as_deref(), &data_dir)?;
    let verify = mcptrail_ledger::VerifyOptions {
        skip_macs: seed.is_none(),
        seed,
        anchor_dirs: cfg.ledger.anchor_dir.iter().cloned().collect(),
        anchors: mcptrail_sinks::checkpoints::sink_anchors(&cfg.sinks),
        ..Default::default()
    };
    let opts = ServerOptions {
        config: serve,
        data_dir,
        ledger: cfg.ledger.to_ledger_config(),
        event_hook,
        engine,
        token_key,
        master_key,
        sinks: cfg.sinks.clone(),
        verify,
    };
    let fleet = opts.config.fleet.as_ref().map(|f| {
        format!(
            "; searching the fleet store {} schema {}",
            mcptrail_collector::config::redact_pg(&f.postgres_url),
            f.schema
        )
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let running = mcptrail_server::start(opts).await?;
        eprintln!(
            "mcptrail serve: listening on {}://{} (dashboard at /, API under /api/v1/){}",
            if running.tls { "https" } else { "http" },
            running.addr,
            fleet.unwrap_or_default()
        );
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                use tokio::signal::unix::{signal, SignalKind};
                if let Ok(mut s) = signal(SignalKind::terminate()) { s.recv().await; }
            } => {}
        }
        running.abort();
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
