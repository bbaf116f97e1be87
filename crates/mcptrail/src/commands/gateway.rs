//! `mcptrail gateway`: the HTTP audit gateway. Routes come from `[gateway]` in the config,
//! or from `--route PATH=URL` for a quick start; `--check` validates and exits.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use mcptrail_gateway::{GatewayOptions, RouteConfig};

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Listen address (overrides `gateway.listen`; port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Admin listener for /healthz, /readyz, /metrics (overrides `gateway.admin_listen`).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// A route without authentication, `PATH=URL` (e.g. `/everything=http://127.0.0.1:3001`);
    /// repeatable, added to the configured routes.
    #[arg(long = "route", value_name = "PATH=URL")]
    routes: Vec<String>,
    /// Check the configuration (routes, key files, TLS files) and exit.
    #[arg(long)]
    check: bool,
}

pub(crate) fn run(args: Args, cfg: &Config, data_dir: PathBuf) -> anyhow::Result<ExitCode> {
    let mut gw = cfg.gateway.clone();
    if let Some(l) = args.listen {
        gw.listen = l;
    }
    if let Some(a) = args.admin_listen {
        gw.admin_listen = Some(a);
    }
    for r in &args.routes {
        let (path, url) = r
            .split_once('=')
            .with_context(|| format!("--route `{r}`: expected PATH=URL"))?;
        gw.routes.push(RouteConfig {
            name: None,
            path: path.to_string(),
            upstream: Some(url.to_string()),
            command: None,
            max_sessions: 64,
            upstream_ca_file: None,
            agent_id: None,
            auth: Default::default(),
            egress: false,
        });
    }
    mcptrail_gateway::check_config(&gw, &cfg.egress)?;
    if args.check {
        println!(
            "gateway configuration OK: {} route(s) on {}",
            gw.routes.len(),
            gw.listen
        );
        return Ok(ExitCode::SUCCESS);
    }
    let redactor = crate::config::redactor(cfg, &data_dir)?.map(std::sync::Arc::new);
    let routes: Vec<String> = gw
        .routes
        .iter()
        .map(|r| match (&r.upstream, &r.command) {
            (Some(url), _) => format!("{} -> {url}", r.path),
            (None, Some(cmd)) => format!("{} -> stdio `{}`", r.path, cmd.join(" ")),
            (None, None) => r.path.clone(),
        })
        .collect();
    let tls = gw.tls.is_some();
    let ledger = cfg.ledger.to_ledger_config();
    // Sinks ship in the background, as in `wrap`.
    let shipping = super::start_shipping(cfg, &data_dir, &ledger);
    let detecting = super::detect::start_detecting(cfg, &data_dir, &ledger);
    let opts = GatewayOptions {
        config: gw,
        data_dir,
        tap: cfg.tap.clone(),
        ledger,
        redactor,
        egress: cfg.egress.clone(),
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if opts.config.worker_threads > 0 {
        rt.worker_threads(opts.config.worker_threads);
    }
    let rt = rt
        .enable_all()
        .thread_name("mcptrail-gateway")
        .build()
        .context("starting the async runtime")?;
    let outcome = rt.block_on(async move {
        let shutdown = async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("mcptrail gateway: shutting down");
        };
        mcptrail_gateway::run(opts, shutdown, |bound| {
            let scheme = if tls { "https" } else { "http" };
            let admin = bound
                .admin
                .map(|a| format!(" (admin http://{a})"))
                .unwrap_or_default();
            eprintln!(
                "mcptrail gateway: listening on {scheme}://{}{admin}",
                bound.listen
            );
            for r in &routes {
                eprintln!("mcptrail gateway: route {r}");
            }
        })
        .await
    });
    super::detect::stop_detecting(detecting, std::time::Duration::from_secs(5));
    super::stop_shipping(shipping);
    let outcome = outcome?;
    if outcome.events_lost > 0 {
        eprintln!(
            "mcptrail gateway: {} audit events could not be written",
            outcome.events_lost
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
