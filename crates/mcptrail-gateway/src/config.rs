//! `[gateway]` in `mcptrail.toml`: listeners, limits, TLS, trace propagation and the routes,
//! each with its upstream and its authentication. Every table refuses unknown keys.

use std::path::PathBuf;

use serde::Deserialize;

/// The gateway's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address the MCP clients connect to.
    pub listen: String,
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`); none: no admin
    /// listener.
    pub admin_listen: Option<String>,
    /// Request bodies larger than this are refused with 413 (and recorded).
    pub max_body_bytes: usize,
    /// A client must send its request headers within this many seconds (slow clients are
    /// cut off, so they cannot hold connections open for free).
    pub header_read_timeout_secs: u64,
    /// A client must send its whole request body within this many seconds.
    pub body_read_timeout_secs: u64,
    /// Connecting to an upstream gives up after this many seconds.
    pub upstream_connect_timeout_secs: u64,
    /// An upstream must answer with response headers within this many seconds (the body,
    /// e.g. an SSE stream, may then take as long as it takes).
    pub upstream_response_timeout_secs: u64,
    /// A session with no traffic for this many seconds is closed in the record
    /// (`session.end`, reason `idle_timeout`); the upstream's own session is untouched.
    pub idle_session_timeout_secs: u64,
    /// Most client connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Serving threads: each runs an async runtime of its own and serves the client
    /// connections handed to it (to the one serving the fewest), so a request never waits on
    /// a wake-up between threads; 0: one per CPU. Also the size of the runtime that accepts
    /// connections and runs stdio routes' servers.
    pub worker_threads: usize,
    /// TLS termination; none: plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Trace context propagation.
    pub trace: TraceConfig,
    /// The routes.
    pub routes: Vec<RouteConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:8931".into(),
            admin_listen: None,
            max_body_bytes: 4 * 1024 * 1024,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            upstream_connect_timeout_secs: 5,
            upstream_response_timeout_secs: 120,
            idle_session_timeout_secs: 3600,
            max_connections: 1024,
            worker_threads: 0,
            tls: None,
            trace: TraceConfig::default(),
            routes: Vec::new(),
        }
    }
}

/// `[gateway.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA bundle for client certificates (mTLS): clients may present a certificate
    /// issued by it, and routes with `auth.mode = "mtls"` require one.
    pub client_ca_file: Option<PathBuf>,
    /// Refuse the TLS handshake of a client without a valid certificate (default: a route
    /// with `mode = "mtls"` answers such a client 401 instead, and records why).
    #[serde(default)]
    pub client_cert_required: bool,
}

/// `[gateway.trace]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// Send the gateway's span to the upstream as the parent: the `traceparent` header is
    /// set, and a `params._meta.traceparent` the request carried is rewritten in place.
    /// Off: headers and bodies reach the upstream exactly as sent.
    pub propagate: bool,
    /// With `propagate`: a request or notification without `params._meta.traceparent` gets
    /// one (the only bytes added to its body), so a server that reads trace context from
    /// `_meta` only (stdio-minded SDKs) continues the trace too. Off: only the header is set
    /// where the body had none.
    pub inject_meta: bool,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            propagate: true,
            inject_meta: true,
        }
    }
}

/// `[[gateway.routes]]`: one upstream MCP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name recorded as the server name (default: the path).
    pub name: Option<String>,
    /// Path prefix on the gateway, e.g. `/github` (requests to `/github/mcp` go to the
    /// upstream URL's path + `/mcp`).
    pub path: String,
    /// Upstream base URL, `http://` or `https://` (or `command`).
    pub upstream: Option<String>,
    /// A stdio MCP server the gateway runs and exposes over Streamable HTTP, one process per
    /// MCP session (or `upstream`).
    pub command: Option<Vec<String>>,
    /// With `command`: most sessions (server processes) at once; more are refused.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// PEM CA bundle trusted for an `https://` upstream in addition to the system roots.
    pub upstream_ca_file: Option<PathBuf>,
    /// Agent id recorded on the route's events (else the client's `clientInfo.name`).
    pub agent_id: Option<String>,
    /// Authentication of the route's clients.
    #[serde(default)]
    pub auth: AuthConfig,
    /// stdio routes: start each server process behind the egress proxy (`[egress]` policy),
    /// recording its outbound connections in its session.
    #[serde(default)]
    pub egress: bool,
}

fn default_max_sessions() -> usize {
    64
}

/// How a route authenticates clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication: callers are recorded as `anonymous`.
    #[default]
    None,
    /// Bearer JWT.
    Jwt,
    /// A header set by a trusted auth proxy.
    Header,
    /// A client certificate verified during the TLS handshake (`[gateway.tls]
    /// client_ca_file`); the principal is its first email, URI or DNS subject alternative
    /// name, else its subject common name.
    Mtls,
}

/// `[gateway.routes.auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `none`, `jwt`, `header` or `mtls`.
    pub mode: AuthMode,
    /// jwt: a JWK set file.
    pub jwks_file: Option<PathBuf>,
    /// jwt: a JWK set URL (fetched at start, refreshed, and re-fetched for an unknown `kid`).
    pub jwks_url: Option<String>,
    /// jwt: seconds between JWKS refreshes.
    pub jwks_refresh_secs: u64,
    /// jwt: one PEM public key (RSA, EC or Ed25519, matching `algorithms`).
    pub public_key_file: Option<PathBuf>,
    /// jwt: a file holding a shared HS256 secret (≥ 32 bytes).
    pub hs256_secret_file: Option<PathBuf>,
    /// jwt: an environment variable holding a shared HS256 secret.
    pub hs256_secret_env: Option<String>,
    /// jwt: accepted algorithms (default RS256, ES256, EdDSA; HS256 with a secret).
    pub algorithms: Vec<String>,
    /// jwt: required issuer.
    pub issuer: Option<String>,
    /// jwt: accepted audiences (one must match).
    pub audience: Vec<String>,
    /// jwt: seconds of clock skew tolerated on `exp`/`nbf`.
    pub leeway_secs: u64,
    /// jwt: the claim recorded as the principal.
    pub principal_claim: String,
    /// jwt: claims recorded with the identity (redaction policy applies to them).
    pub keep_claims: Vec<String>,
    /// URL of the route's OAuth protected resource metadata (RFC 9728), sent in the
    /// `WWW-Authenticate` challenge of a 401 as the MCP authorization spec asks.
    pub resource_metadata: Option<String>,
    /// header: the header carrying the principal.
    pub header: Option<String>,
    /// header: addresses or CIDR networks of the auth proxy.
    pub trusted_peers: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::None,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: 300,
            public_key_file: None,
            hs256_secret_file: None,
            hs256_secret_env: None,
            algorithms: Vec::new(),
            issuer: None,
            audience: Vec::new(),
            leeway_secs: 30,
            principal_claim: "sub".into(),
            keep_claims: Vec::new(),
            resource_metadata: None,
            header: None,
            trusted_peers: Vec::new(),
        }
    }
}
