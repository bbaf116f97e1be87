//! The TLS listener: `[serve.tls]` with a certificate from a CA made here (rcgen); a client
//! that trusts that CA gets the API over HTTPS, a client that trusts only the public roots
//! is refused in the handshake, and plain HTTP on the TLS port gets no answer.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use mcptrail_server::config::TlsSettings;
use mcptrail_server::ServeConfig;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::harness::Server;

/// (CA PEM, certificate file, key file) for `localhost` and 127.0.0.1.
fn pki(dir: &Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType,
    };
    use std::os::unix::fs::PermissionsExt;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mcptrail serve test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let cert = params.signed_by(&key, &ca).unwrap();
    let (cert_path, key_path) = (dir.join("serve.pem"), dir.join("serve.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (ca.pem(), cert_path, key_path)
}

fn agent(roots: RootCerts) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build()
        .new_agent()
}

#[test]
fn the_tls_listener_serves_clients_that_trust_its_ca_only() {
    let pki_dir = tempfile::tempdir().unwrap();
    let (ca_pem, cert_file, key_file) = pki(pki_dir.path());
    let s = Server::start(ServeConfig {
        tls: Some(TlsSettings {
            cert_file,
            key_file,
        }),
        ..ServeConfig::default()
    });
    let addr = s.base.trim_start_matches("http://").to_string();
    let ca = Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let trusting = agent(RootCerts::new_with_certs(&[ca]));
    for host in ["localhost", "127.0.0.1"] {
        let port = addr.rsplit(':').next().unwrap();
        let mut r = trusting
            .get(format!("https://{host}:{port}/api/v1/whoami"))
            .header("Authorization", format!("Bearer {}", s.token("ivy")))
            .call()
            .unwrap_or_else(|e| panic!("HTTPS to {host}: {e}"));
        assert_eq!(r.status().as_u16(), 200);
        let body: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(body["name"], "ivy");
        // Authentication still applies behind TLS.
        let r = trusting
            .get(format!("https://{host}:{port}/api/v1/events"))
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    // A client that does not trust the CA: refused in the handshake, nothing served.
    let err = agent(RootCerts::WebPki)
        .get(format!("https://{addr}/api/v1/status"))
        .call()
        .expect_err("an untrusted certificate must fail the handshake");
    assert!(
        matches!(err, ureq::Error::Rustls(_) | ureq::Error::Io(_)),
        "{err:?}"
    );
    // Plain HTTP on the TLS port: no HTTP answer.
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
    tcp.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"),
        "plain HTTP was served on the TLS port"
    );
}
