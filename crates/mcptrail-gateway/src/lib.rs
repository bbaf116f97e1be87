//! mcptrail gateway: an auditing reverse proxy for MCP over HTTP (`mcptrail gateway`).
//!
//! ```text
//! client ──HTTP──► listener (TLS optional) ──► proxy.rs: route, authenticate (auth.rs),
//!                                              open a span (trace.rs), forward, relay
//!                                              the response as it comes (SSE or JSON)
//!                        copies of each message │
//!                                               ▼
//!                      record.rs: one Recorder per MCP session ──► redaction ──► ledger
//! admin listener: /healthz /readyz /metrics (metrics.rs)
//! ```
//!
//! Streamable HTTP (POST with JSON or SSE answers, GET streams, `Mcp-Session-Id`, DELETE,
//! `Last-Event-ID`) and the legacy HTTP+SSE transport pass through with bytes and end-to-end
//! headers unchanged; the events, ledger and queries are the same as `wrap`'s.

mod admin;
pub mod auth;
pub mod config;
mod metrics;
mod proxy;
mod record;
mod serving;
pub mod sse;
mod stdio_bridge;
mod tls;
pub mod trace;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use mcptrail_ledger::{Ledger, LedgerConfig};
use mcptrail_tap::{LedgerWriter, Preparer, TapConfig};
use tokio::net::TcpListener;

pub use config::{AuthConfig, AuthMode, GatewayConfig, RouteConfig, TlsConfig, TraceConfig};
pub use metrics::Metrics;
/// The rustls server config of a `[gateway.tls]`-shaped table (also used by `mcptrail serve`).
pub use tls::server_config as tls_server_config;
pub use tls::CertIdentity;

/// Errors of the gateway. Each names what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A route or setting cannot work.
    #[error("gateway route `{route}`: {field}: {message}")]
    Config {
        /// Route name (or `gateway` for global settings).
        route: String,
        /// The offending key.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A certificate or key file.
    #[error("TLS: {}: {message}", path.display())]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A listener could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The ledger could not be opened.
    #[error(transparent)]
    Ledger(#[from] mcptrail_ledger::LedgerError),
    /// Another I/O failure.
    #[error("{what}: {source}")]
    Io {
        /// What the gateway was doing.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Everything `gateway` needs.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// `[gateway]`.
    pub config: GatewayConfig,
    /// Data directory holding the ledger.
    pub data_dir: PathBuf,
    /// Tap settings (message limits, heartbeats, request timeouts, self-verify interval).
    pub tap: TapConfig,
    /// Ledger settings.
    pub ledger: LedgerConfig,
    /// Redaction applied to every event before it is serialised.
    pub redactor: Option<Arc<mcptrail_redact::Redactor>>,
    /// `[egress]`: the policy of stdio routes with `egress = true`.
    pub egress: mcptrail_egress::EgressConfig,
}

/// How the gateway ended.
#[derive(Debug, Clone)]
pub struct GatewayOutcome {
    /// Events made durable.
    pub events_written: u64,
    /// Events that could not be written.
    pub events_lost: u64,
}

/// Addresses actually bound (a configured port 0 is resolved here).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The MCP listener.
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin: Option<SocketAddr>,
}

/// Check a configuration without starting anything: every route builds (URLs, key files,
/// JWKS files, secrets) and the TLS files load.
pub fn check_config(
    cfg: &GatewayConfig,
    egress: &mcptrail_egress::EgressConfig,
) -> Result<(), GatewayError> {
    build_routes(cfg, egress).map(|_| ())?;
    if let Some(t) = &cfg.tls {
        tls::server_config(t)?;
    }
    Ok(())
}

fn build_routes(
    cfg: &GatewayConfig,
    egress: &mcptrail_egress::EgressConfig,
) -> Result<Vec<proxy::Route>, GatewayError> {
    if cfg.routes.is_empty() {
        return Err(GatewayError::Config {
            route: "gateway".into(),
            field: "routes".into(),
            message: "no routes: add at least one [[gateway.routes]] with `path` and `upstream`"
                .into(),
        });
    }
    let connect = Duration::from_secs(cfg.upstream_connect_timeout_secs.max(1));
    let routes: Vec<proxy::Route> = cfg
        .routes
        .iter()
        .map(|r| proxy::Route::new(r, connect, egress))
        .collect::<Result<_, _>>()?;
    let client_ca = cfg.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
    if let Some(r) = cfg
        .routes
        .iter()
        .find(|r| r.auth.mode == config::AuthMode::Mtls && !client_ca)
    {
        return Err(GatewayError::Config {
            route: r.name.clone().unwrap_or_else(|| r.path.clone()),
            field: "auth.mode".into(),
            message: "mode = \"mtls\" needs [gateway.tls] with client_ca_file".into(),
        });
    }
    for (i, a) in routes.iter().enumerate() {
        if routes[..i].iter().any(|b| b.name == a.name) {
            return Err(GatewayError::Config {
                route: a.name.to_string(),
                field: "name".into(),
                message: "two routes have this name; names must be unique".into(),
            });
        }
    }
    Ok(routes)
}

/// Run the gateway until `shutdown` completes, then stop accepting, give open requests a
/// few seconds, end every session in the record, and flush the ledger. `on_bound` is told
/// the bound addresses once both listeners are open.
pub async fn run(
    opts: GatewayOptions,
    shutdown: impl Future<Output = ()>,
    on_bound: impl FnOnce(Bound),
) -> Result<GatewayOutcome, GatewayError> {
    let cfg = opts.config.clone();
    let routes = build_routes(&cfg, &opts.egress)?;
    let tls = cfg.tls.as_ref().map(tls::server_config).transpose()?;
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| GatewayError::Listen {
            addr: cfg.listen.clone(),
            source,
        })?;
    let admin_listener = match &cfg.admin_listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(|source| GatewayError::Listen {
                    addr: a.clone(),
                    source,
                })?,
        ),
        None => None,
    };
    let bound = Bound {
        listen: listener.local_addr().map_err(|source| GatewayError::Io {
            what: "reading the listener's address",
            source,
        })?,
        admin: admin_listener.as_ref().and_then(|l| l.local_addr().ok()),
    };

    // Recording: ledger writer, self-checks, the recorder thread.
    let ledger = Ledger::open(&opts.data_dir, opts.ledger.clone())?;
    let writer = LedgerWriter::spawn(ledger, 1_000_000, Duration::from_secs(10));
    let checker = mcptrail_tap::selfcheck::spawn(
        opts.data_dir.clone(),
        opts.ledger.checkpoints.anchor_dir.iter().cloned().collect(),
        (opts.tap.self_verify_interval_secs > 0)
            .then(|| Duration::from_secs(opts.tap.self_verify_interval_secs)),
    );
    let stats = Arc::new(record::RecordStats::default());
    let (record_tx, record_rx) = crossbeam_channel::unbounded();
    let recorder = record::spawn(
        opts.tap.clone(),
        format!(
            "{}://{}",
            if tls.is_some() { "https" } else { "http" },
            bound.listen
        ),
        Preparer::new(opts.redactor.clone(), opts.tap.preview_chars),
        writer.sender(),
        record_rx,
        Duration::from_secs(cfg.idle_session_timeout_secs.max(1)),
        checker,
        Arc::clone(&stats),
    )
    .map_err(|source| GatewayError::Io {
        what: "starting the recorder thread",
        source,
    })?;
    for r in &routes {
        if let proxy::Target::Stdio(bridge) = &r.target {
            bridge.attach_recorder(record_tx.clone());
        }
    }
    let metrics = Arc::new(Metrics::new(stats, writer.written()));
    let shared = Arc::new(proxy::Shared {
        routes,
        cfg: cfg.clone(),
        record: record_tx,
        metrics: Arc::clone(&metrics),
        seen: Default::default(),
    });
    // JWKS URLs: fetch before serving; refresh in the background.
    for r in &shared.routes {
        if let auth::Authenticator::Jwt(v) = &r.auth {
            if let Err(e) = v.refresh(false).await {
                eprintln!("mcptrail gateway: route {}: {e} (will retry)", r.name);
            }
        }
    }
    let refresher = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                for r in &shared.routes {
                    if let auth::Authenticator::Jwt(v) = &r.auth {
                        if let Err(e) = v.refresh(false).await {
                            eprintln!("mcptrail gateway: route {}: {e}", r.name);
                        }
                    }
                }
            }
        })
    };
    let admin = admin_listener.map(|l| tokio::spawn(admin::serve(l, Arc::clone(&shared))));
    on_bound(bound);

    // Serve until told to stop.
    let threads = match cfg.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let serving = serving::ServingThreads::start(threads).map_err(|source| GatewayError::Io {
        what: "starting the serving threads",
        source,
    })?;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections.max(1)));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let header_timeout = Duration::from_secs(cfg.header_read_timeout_secs.max(1));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => p.expect("semaphore never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: say so, back off, go on.
                    eprintln!("mcptrail gateway: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The connection moves to a serving thread, whose runtime then polls its socket.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mcptrail gateway: accepted connection unusable: {e}");
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let metrics = Arc::clone(&metrics);
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        let peer = proxy::Peer::new(peer);
        serving.serve(async move {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("mcptrail gateway: accepted connection unusable: {e}");
                    return;
                }
            };
            metrics.connection(1);
            // The connection's upstream connection, kept between its requests.
            let slot = upstream::Slot::default();
            let svc = |cert: Option<Arc<tls::CertIdentity>>| {
                let shared = Arc::clone(&shared);
                service_fn(move |req| {
                    proxy::handle(
                        Arc::clone(&shared),
                        req,
                        peer.clone(),
                        cert.clone(),
                        Arc::clone(&slot),
                    )
                })
            };
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true);
            match acceptor {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), svc(None));
                    let _ = watcher.watch(conn).await;
                }
                Some(acceptor) => {
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(header_timeout, acceptor.accept(stream)).await
                    {
                        // rustls verified the chain against client_ca_file; read who it names.
                        let cert = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|c| tls::cert_identity(c))
                            .map(Arc::new);
                        let conn = builder.serve_connection(TokioIo::new(tls), svc(cert));
                        let _ = watcher.watch(conn).await;
                    }
                }
            }
            metrics.connection(-1);
            drop(permit);
        });
    }
    drop(listener);
    // Open requests get a few seconds; long-lived SSE streams are then cut.
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    refresher.abort();
    if let Some(a) = admin {
        a.abort();
    }
    for r in &shared.routes {
        if let proxy::Target::Stdio(bridge) = &r.target {
            bridge.stop_all();
        }
    }
    drop(shared);
    drop(metrics);
    // Connections still open (long-lived SSE streams) are cut: every handler's sender is then
    // gone, and the recorder ends the sessions and stops.
    let join = tokio::task::spawn_blocking(move || {
        serving.stop();
        let _ = recorder.join();
        writer.finish()
    });
    let stats = join.await.map_err(|e| GatewayError::Io {
        what: "stopping the recorder",
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(GatewayOutcome {
        events_written: stats.written,
        events_lost: stats.lost,
    })
}
