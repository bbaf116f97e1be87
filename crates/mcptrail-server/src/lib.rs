//! `mcptrail serve`: the governance server — who may see and change the trail.
//!
//! An HTTP(S) API and dashboard over the ledger and its index, with roles and segregation of
//! duties (operator, investigator, auditor, admin; see [`api::ROUTES`]), authentication by
//! local API tokens (hashed at rest, [`tokens`]) or bearer JWTs ([`auth`]), dual
//! authorisation of forget, reveal, purge and retention policy changes ([`governance`]), and a
//! meta-audit in the ledger itself of every read and refusal ([`audit`]), so the watchers are
//! watched. TLS is terminated with rustls, with the gateway's certificate loading.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod fleet;
pub mod governance;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower::ServiceExt;

pub use audit::EventHook;
pub use auth::{Principal, Role};
pub use config::ServeConfig;
pub use tokens::TokenStore;

/// Errors of the server. Each names what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A `[serve]` setting cannot work.
    #[error("[serve] {field}: {message}")]
    Config {
        /// The key.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The token file.
    #[error("API token file {}: {message}", path.display())]
    Tokens {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A command was used wrongly.
    #[error("{0}")]
    Usage(String),
    /// The listener could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// TLS certificate or key.
    #[error(transparent)]
    Tls(#[from] mcptrail_gateway::GatewayError),
    /// The ledger.
    #[error(transparent)]
    Ledger(#[from] mcptrail_ledger::LedgerError),
    /// The index.
    #[error(transparent)]
    Index(#[from] mcptrail_index::IndexError),
}

/// What the server runs on; the binary builds it from `mcptrail.toml`.
pub struct ServerOptions {
    /// `[serve]`.
    pub config: ServeConfig,
    /// The data directory (ledger, index).
    pub data_dir: PathBuf,
    /// Ledger writer settings (MACs, checkpoints) for the meta-audit events.
    pub ledger: mcptrail_ledger::LedgerConfig,
    /// Applied to every event the server records (the binary's redactor).
    pub event_hook: Option<EventHook>,
    /// The retention engine, when `[retention]` is configured (purges, policy changes).
    pub engine: Option<Arc<mcptrail_retention::Engine>>,
    /// The pseudonym key (user search by principal, forget by subject).
    pub token_key: Option<mcptrail_redact::TokenKey>,
    /// The master key of the encrypted fields (`[redact] master_key_file` or
    /// `$MCPTRAIL_MASTER_KEY`); without it a reveal request is refused.
    pub master_key: Option<mcptrail_redact::MasterKey>,
    /// The configured sinks (lag).
    pub sinks: Vec<mcptrail_sinks::SinkConfig>,
    /// How `POST /api/v1/integrity/verify` verifies (seed, anchors).
    pub verify: mcptrail_ledger::VerifyOptions,
}

/// A server that is listening.
pub struct Running {
    /// The bound address (port 0 resolved).
    pub addr: SocketAddr,
    /// Whether it speaks TLS.
    pub tls: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Serve until the task ends (it does not on its own).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Stop accepting connections.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// The token store `[serve] tokens_file` names, else the data directory's.
pub fn token_store(cfg: &ServeConfig, data_dir: &std::path::Path) -> TokenStore {
    TokenStore::new(
        cfg.tokens_file
            .clone()
            .unwrap_or_else(|| TokenStore::default_path(data_dir)),
    )
}

/// Check the configuration, open everything, bind, and start serving on the current tokio
/// runtime.
pub async fn start(opts: ServerOptions) -> Result<Running, ServerError> {
    let cfg = opts.config;
    if cfg.max_page_size == 0 || cfg.max_page_size > 10_000 {
        return Err(ServerError::Config {
            field: "max_page_size".into(),
            message: "must be 1–10000".into(),
        });
    }
    if cfg.approval_ttl_secs == 0 {
        return Err(ServerError::Config {
            field: "approval_ttl_secs".into(),
            message: "must be at least 1".into(),
        });
    }
    let jwt = match &cfg.jwt {
        None => None,
        Some(j) => {
            let a =
                mcptrail_gateway::auth::Authenticator::from_config("serve", &j.to_auth_config())
                    .map_err(|e| ServerError::Config {
                        field: "jwt".into(),
                        message: e.to_string(),
                    })?;
            Some((a, j.role_claim.clone()))
        }
    };
    let tls = cfg
        .tls
        .as_ref()
        .map(|t| {
            mcptrail_gateway::tls_server_config(&mcptrail_gateway::TlsConfig {
                cert_file: t.cert_file.clone(),
                key_file: t.key_file.clone(),
                client_ca_file: None,
                client_cert_required: false,
            })
        })
        .transpose()?;
    let tokens = token_store(&cfg, &opts.data_dir);
    let authn = auth::Authn::new(tokens.clone(), jwt);
    if let Err(e) = authn.refresh().await {
        eprintln!("mcptrail serve: {e}; JWTs are refused until the key set loads");
    }
    let recorder = audit::Recorder::start(opts.data_dir.clone(), opts.ledger, opts.event_hook)?;
    let index = mcptrail_index::Index::open(&opts.data_dir)?;
    let requests = governance::Requests::load(&opts.data_dir)?;
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: cfg.listen.clone(),
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: cfg.listen.clone(),
            source,
        })?;
    let fleet = match cfg.fleet.clone() {
        Some(f) => Some(
            fleet::Fleet::connect(f)
                .await
                .map_err(|message| ServerError::Config {
                    field: "fleet".into(),
                    message,
                })?,
        ),
        None => None,
    };
    let vault = opts
        .master_key
        .map(|k| mcptrail_redact::Vault::new(&opts.data_dir, k));
    let state = Arc::new(api::AppState {
        data_dir: opts.data_dir,
        cfg,
        authn,
        tokens,
        recorder,
        index: Mutex::new(index),
        requests: Mutex::new(requests),
        decide: tokio::sync::Mutex::new(()),
        engine: opts.engine,
        token_key: opts.token_key,
        vault,
        sinks: opts.sinks,
        verify: opts.verify,
        last_verify: Mutex::new(None),
        started: std::time::Instant::now(),
        fleet,
    });
    let router = api::router(state);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let is_tls = acceptor.is_some();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _peer)) = listener.accept().await else {
                continue;
            };
            let router = router.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        router.clone().oneshot(req.map(axum::body::Body::new))
                    });
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(a) => {
                        let Ok(Ok(tls)) = tokio::time::timeout(
                            std::time::Duration::from_secs(10),
                            a.accept(stream),
                        )
                        .await
                        else {
                            return;
                        };
                        let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
    Ok(Running {
        addr,
        tls: is_tls,
        task,
    })
}
