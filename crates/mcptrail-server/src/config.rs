//! `[serve]`: where the governance server listens, how it authenticates (local API tokens,
//! bearer JWTs with the role in a claim), how long an approval request stays open, and the
//! hard page-size limit. Unknown keys are errors, like the rest of `mcptrail.toml`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[serve]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address to listen on (`127.0.0.1:8940`).
    pub listen: String,
    /// TLS termination (the same table as `[gateway.tls]`); without it, plain HTTP — keep
    /// the listener on loopback then.
    pub tls: Option<TlsSettings>,
    /// The local API tokens (hashes only); default `<data_dir>/server/tokens.json`.
    pub tokens_file: Option<PathBuf>,
    /// Bearer JWTs from an identity provider (optional; tokens work either way).
    pub jwt: Option<JwtSettings>,
    /// Seconds a governance request stays open for approval.
    pub approval_ttl_secs: u64,
    /// Largest page an API call returns (`limit` above it is a 400).
    pub max_page_size: u64,
    /// Serve the fleet's PostgreSQL store (what `mcptrail collector` writes) instead of this
    /// data directory's index.
    pub fleet: Option<crate::fleet::FleetSettings>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:8940".into(),
            tls: None,
            tokens_file: None,
            jwt: None,
            approval_ttl_secs: 86_400,
            max_page_size: 500,
            fleet: None,
        }
    }
}

/// `[serve.tls]`: certificate and key (PEM).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (0600).
    pub key_file: PathBuf,
}

/// `[serve.jwt]`: verified by the gateway's JWT verifier.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtSettings {
    /// A JWK set file.
    pub jwks_file: Option<PathBuf>,
    /// A JWK set URL (fetched at start and refreshed).
    pub jwks_url: Option<String>,
    /// One PEM public key.
    pub public_key_file: Option<PathBuf>,
    /// A file holding a shared HS256 secret (≥ 32 bytes).
    pub hs256_secret_file: Option<PathBuf>,
    /// An environment variable holding a shared HS256 secret.
    pub hs256_secret_env: Option<String>,
    /// Accepted algorithms (default as the gateway's).
    pub algorithms: Vec<String>,
    /// Required issuer.
    pub issuer: Option<String>,
    /// Accepted audiences.
    pub audience: Vec<String>,
    /// The claim naming the principal.
    pub principal_claim: String,
    /// The claim holding the role (`operator`, `investigator`, `auditor`, `admin`), a string
    /// or an array of strings.
    pub role_claim: String,
    /// Clock skew tolerated, seconds.
    pub leeway_secs: u64,
}

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            jwks_file: None,
            jwks_url: None,
            public_key_file: None,
            hs256_secret_file: None,
            hs256_secret_env: None,
            algorithms: Vec::new(),
            issuer: None,
            audience: Vec::new(),
            principal_claim: "sub".into(),
            role_claim: "mcptrail_role".into(),
            leeway_secs: 30,
        }
    }
}

impl JwtSettings {
    /// The gateway's `[auth]` table for the same verifier; the role claim is kept.
    pub(crate) fn to_auth_config(&self) -> mcptrail_gateway::AuthConfig {
        mcptrail_gateway::AuthConfig {
            mode: mcptrail_gateway::AuthMode::Jwt,
            jwks_file: self.jwks_file.clone(),
            jwks_url: self.jwks_url.clone(),
            public_key_file: self.public_key_file.clone(),
            hs256_secret_file: self.hs256_secret_file.clone(),
            hs256_secret_env: self.hs256_secret_env.clone(),
            algorithms: self.algorithms.clone(),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            leeway_secs: self.leeway_secs,
            principal_claim: self.principal_claim.clone(),
            keep_claims: vec![self.role_claim.clone()],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_and_defaults_hold() {
        let c: ServeConfig = toml_like("listen = \"127.0.0.1:1\"").unwrap();
        assert_eq!(c.listen, "127.0.0.1:1");
        assert_eq!(c.approval_ttl_secs, 86_400);
        let e = toml_like("lisen = \"x\"").unwrap_err();
        assert!(e.contains("lisen"), "{e}");
    }

    /// A tiny TOML subset is enough here: the binary parses the real file with `toml`.
    fn toml_like(line: &str) -> Result<ServeConfig, String> {
        let (k, v) = line.split_once(" = ").unwrap();
        let v: serde_json::Value = serde_json::from_str(v).unwrap();
        serde_json::from_value(serde_json::json!({ k: v })).map_err(|e| e.to_string())
    }
}
