//! mcptrail egress (DESIGN.md §6, §9): an HTTP/HTTPS forward proxy that tool servers are
//! started behind, so every outbound connection they open becomes a `net.egress` event.
//!
//! ```text
//! tool server ──HTTP(S)_PROXY──► EgressProxy ──► destination
//!                                  │ policy.rs: allow / deny by name, wildcard, CIDR
//!                                  │ sni.rs:    TLS server name, read not decrypted
//!                                  ▼
//!                         EgressRecord (record.rs) ──► EgressObserver
//!                         (wrap: the session's recorder; `mcptrail egress`: its own session)
//! ```
//!
//! The proxy never decrypts TLS: for `https` it sees the host the client asked for, the
//! server name in the ClientHello, the bytes each way and the duration — enough to say
//! *where* data went and *how much*, not what it was.

mod policy;
mod proxy;
mod record;
mod sni;

pub use policy::{Decision, EgressConfig, EgressPolicy, Verdict};
pub use proxy::{EgressObserver, EgressProxy};
pub use record::{EgressRecord, Scheme};
pub use sni::client_hello_sni;

/// The proxy variables set for a server started behind the proxy. Both spellings: libraries
/// differ in which they read (curl and Python read the lowercase ones first).
pub const PROXY_VARS: &[&str] = &["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"];
/// Removed from such a server's environment, so no destination bypasses the proxy.
pub const BYPASS_VARS: &[&str] = &["NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"];

/// Point `cmd` (std or tokio `Command`, through the closure) at the proxy on `addr`.
pub fn set_child_env(addr: std::net::SocketAddr, mut set: impl FnMut(&str, Option<&str>)) {
    let url = format!("http://{addr}");
    for var in PROXY_VARS {
        set(var, Some(&url));
    }
    for var in BYPASS_VARS {
        set(var, None);
    }
}

/// Errors of the egress proxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// An `[egress]` setting is wrong; the message names it.
    #[error("{0}")]
    Config(String),
    /// The listening socket could not be opened.
    #[error("the egress proxy could not listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
