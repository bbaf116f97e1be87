use std::path::Path;

use mcptrail_sinks::{ShipOptions, Shipper, SinkConfig, SinkStatus};

/// One `[[sinks]]` table from TOML text.
pub(crate) fn sink_config(toml_text: &str) -> SinkConfig {
    let table: toml::Table = toml::from_str(toml_text).expect("valid TOML");
    SinkConfig::from_table(table).expect("valid sink config")
}

/// Ship the ledger of `data_dir` to `cfg` until caught up.
pub(crate) fn ship(data_dir: &Path, cfg: &SinkConfig) -> SinkStatus {
    let sink = mcptrail_sinks::build(cfg).expect("build sink");
    let mut shipper = Shipper::new(data_dir, cfg.clone(), sink, None);
    shipper
        .run(&ShipOptions {
            jitter_seed: Some(1),
            ..ShipOptions::default()
        })
        .expect("ship")
}

/// Every stored ledger line, in order.
pub(crate) fn ledger_lines(data_dir: &Path) -> Vec<Vec<u8>> {
    mcptrail_ledger::LedgerReader::open(data_dir, 1)
        .unwrap()
        .map(|r| r.unwrap().line)
        .collect()
}

/// A CA and a server certificate for `localhost` and 127.0.0.1, as PEM files in `dir`:
/// (ca, cert, key); plus a client certificate and key from the same CA (`client.pem`,
/// `client.key`, 0600).
pub(crate) fn test_pki(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType,
    };
    use std::os::unix::fs::PermissionsExt;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mcptrail test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client
        .distinguished_name
        .push(DnType::CommonName, "mcptrail shipper");
    client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client.signed_by(&client_key, &ca).unwrap();
    std::fs::write(dir.join("client.pem"), client_cert.pem()).unwrap();
    std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();
    std::fs::set_permissions(
        dir.join("client.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    (ca_path, cert_path, key_path)
}
