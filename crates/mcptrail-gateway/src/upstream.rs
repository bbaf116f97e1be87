//! The HTTP client toward upstream servers: HTTP/1.1 over TCP, or TLS with rustls (system
//! roots plus an optional CA file).

use std::path::Path;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::GatewayError;

/// The upstream client.
pub(crate) type Client<B> =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, B>;

/// A client trusting the system roots and `ca_file`.
pub(crate) fn client<B>(ca_file: Option<&Path>) -> Result<Client<B>, GatewayError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    client_with_timeout(ca_file, Duration::from_secs(5))
}

/// Like [`client`], giving up on connecting after `connect_timeout`.
pub(crate) fn client_with_timeout<B>(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<Client<B>, GatewayError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        for cert in crate::tls::read_certs(path)? {
            roots.add(cert).map_err(|e| GatewayError::Tls {
                path: path.to_path_buf(),
                message: format!("not a usable CA certificate: {e}"),
            })?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| GatewayError::Tls {
            path: Default::default(),
            message: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https),
    )
}
