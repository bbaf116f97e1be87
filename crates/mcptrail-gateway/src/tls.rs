//! TLS with rustls (ring provider): the listener's certificate and key, and PEM reading.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;
use crate::GatewayError;

/// The crypto provider every rustls config of the gateway uses.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read every certificate of a PEM file.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, GatewayError> {
    let err = |message: String| GatewayError::Tls {
        path: path.to_path_buf(),
        message,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(err("holds no certificate".into()));
    }
    Ok(certs)
}

fn client_verifier(
    cfg: &TlsConfig,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, GatewayError> {
    let Some(ca) = &cfg.client_ca_file else {
        return Ok(rustls::server::WebPkiClientVerifier::no_client_auth());
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots.add(cert).map_err(|e| GatewayError::Tls {
            path: ca.clone(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let builder =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if cfg.client_cert_required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder.build().map_err(|e| GatewayError::Tls {
        path: ca.clone(),
        message: format!("cannot verify client certificates with it: {e}"),
    })
}

/// Who a verified client certificate names.
#[derive(Debug, Clone)]
pub struct CertIdentity {
    /// First email, URI or DNS subject alternative name, else the subject CN, else the
    /// whole subject.
    pub principal: String,
    /// The subject distinguished name (RFC 4514 form).
    pub subject: String,
    /// The issuer distinguished name.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
}

/// Read the identity of a certificate rustls already verified.
pub(crate) fn cert_identity(der: &[u8]) -> Option<CertIdentity> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut san: Option<String> = None;
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for preferred in 0..3 {
            for n in &ext.value.general_names {
                let v = match (preferred, n) {
                    (0, GeneralName::RFC822Name(e)) => Some(e.to_string()),
                    (1, GeneralName::URI(u)) => Some(u.to_string()),
                    (2, GeneralName::DNSName(d)) => Some(d.to_string()),
                    _ => None,
                };
                if san.is_none() {
                    san = v;
                }
            }
        }
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .map(str::to_string);
    let subject = cert.subject().to_string();
    Some(CertIdentity {
        principal: san.or(cn).unwrap_or_else(|| subject.clone()),
        subject,
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string().replace(':', ""),
    })
}

/// The server config for `[gateway.tls]` (HTTP/1.1 by ALPN).
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, GatewayError> {
    let certs = read_certs(&cfg.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| GatewayError::Tls {
        path: cfg.key_file.clone(),
        message: format!("not a PEM private key: {e}"),
    })?;
    let mut sc = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| GatewayError::Tls {
            path: cfg.cert_file.clone(),
            message: e.to_string(),
        })?
        .with_client_cert_verifier(client_verifier(cfg)?)
        .with_single_cert(certs, key)
        .map_err(|e| GatewayError::Tls {
            path: cfg.key_file.clone(),
            message: format!("the key does not fit the certificate: {e}"),
        })?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(sc))
}
