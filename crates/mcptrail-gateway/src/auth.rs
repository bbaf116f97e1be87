//! Who is calling: per-route authentication at the gateway. A bearer JWT verified against a
//! JWKS (file or URL), a PEM public key or a shared HS256 secret, with issuer, audience and
//! expiry checked; or a header set by a trusted auth proxy, accepted only from configured peer
//! addresses; or no authentication (`anonymous`). A refusal names its reason for the
//! `auth.denied` event and the `WWW-Authenticate` challenge; never the token.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mcptrail_event::UserIdentity;
use serde_json::{Map, Value};

use crate::config::{AuthConfig, AuthMode};
use crate::tls::CertIdentity;
use crate::GatewayError;

/// The verified caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// As recorded on events.
    pub user: UserIdentity,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Short machine-readable reason: `missing_token`, `malformed_token`, `expired`,
    /// `bad_signature`, `wrong_audience`, `wrong_issuer`, `unknown_key`, `algorithm_not_allowed`,
    /// `invalid_token`, `missing_header`, `untrusted_peer`, `missing_principal`.
    pub reason: &'static str,
    /// A sentence for the log and the challenge (never contains the token).
    pub detail: String,
}

impl Denied {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Denied {
            reason,
            detail: detail.into(),
        }
    }
}

/// A route's authenticator.
#[derive(Debug)]
pub enum Authenticator {
    /// Everyone is `anonymous`.
    None,
    /// Bearer JWT.
    Jwt(Box<JwtVerifier>),
    /// A header set by an auth proxy at one of `trusted`.
    Header {
        /// Header name (lower case).
        name: String,
        /// Peer networks allowed to set it.
        trusted: Vec<IpNet>,
    },
    /// A client certificate verified in the TLS handshake.
    Mtls,
}

impl Authenticator {
    /// Build from a route's `[auth]`; `route` names the route in errors.
    pub fn from_config(route: &str, cfg: &AuthConfig) -> Result<Self, GatewayError> {
        let err = |field: &str, message: String| GatewayError::Config {
            route: route.to_string(),
            field: format!("auth.{field}"),
            message,
        };
        match cfg.mode {
            AuthMode::None => Ok(Authenticator::None),
            AuthMode::Header => {
                let name = cfg.header.clone().ok_or_else(|| {
                    err("header", "mode = \"header\" needs the header name".into())
                })?;
                if cfg.trusted_peers.is_empty() {
                    return Err(err(
                        "trusted_peers",
                        "mode = \"header\" needs the addresses of the auth proxy (e.g. [\"127.0.0.1/32\"]); without them anyone could set the header".into(),
                    ));
                }
                let trusted = cfg
                    .trusted_peers
                    .iter()
                    .map(|p| {
                        p.parse::<IpNet>()
                            .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                            .map_err(|_| {
                                err(
                                    "trusted_peers",
                                    format!("`{p}` is not an address or CIDR network"),
                                )
                            })
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Authenticator::Header {
                    name: name.to_ascii_lowercase(),
                    trusted,
                })
            }
            AuthMode::Jwt => Ok(Authenticator::Jwt(Box::new(JwtVerifier::new(route, cfg)?))),
            AuthMode::Mtls => Ok(Authenticator::Mtls),
        }
    }

    /// Check a request's headers from `peer`.
    pub fn check(
        &self,
        headers: &http::HeaderMap,
        peer: IpAddr,
        cert: Option<&CertIdentity>,
    ) -> Result<Caller, Denied> {
        match self {
            Authenticator::Mtls => {
                let c = cert.ok_or_else(|| {
                    Denied::new(
                        "missing_client_certificate",
                        "no client certificate verified by the gateway's client CA",
                    )
                })?;
                Ok(Caller {
                    user: UserIdentity {
                        principal: c.principal.clone(),
                        source: "mtls".into(),
                        claims: Some(serde_json::json!({
                            "subject": c.subject,
                            "issuer": c.issuer,
                            "serial": c.serial,
                        })),
                        ..Default::default()
                    },
                })
            }
            Authenticator::None => Ok(Caller {
                user: UserIdentity {
                    principal: "anonymous".into(),
                    source: "anonymous".into(),
                    ..Default::default()
                },
            }),
            Authenticator::Header { name, trusted } => {
                if !trusted.iter().any(|n| n.contains(&peer)) {
                    return Err(Denied::new(
                        "untrusted_peer",
                        format!("{peer} is not a trusted auth proxy for this route"),
                    ));
                }
                let v = headers
                    .get(name.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| Denied::new("missing_header", format!("no `{name}` header")))?;
                Ok(Caller {
                    user: UserIdentity {
                        principal: v.to_string(),
                        source: "header".into(),
                        ..Default::default()
                    },
                })
            }
            Authenticator::Jwt(v) => {
                let token = bearer(headers)?;
                v.verify(token)
            }
        }
    }
}

pub(crate) fn bearer(headers: &http::HeaderMap) -> Result<&str, Denied> {
    let Some(h) = headers.get(http::header::AUTHORIZATION) else {
        return Err(Denied::new("missing_token", "no bearer token"));
    };
    let h = h
        .to_str()
        .map_err(|_| Denied::new("malformed_token", "the Authorization header is not ASCII"))?;
    let (scheme, token) = h.split_once(' ').unwrap_or((h, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Denied::new(
            "missing_token",
            "the Authorization header is not a bearer token",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Denied::new("missing_token", "empty bearer token"));
    }
    Ok(token)
}

/// Where the verification keys come from.
#[derive(Debug)]
enum KeySource {
    Static,
    Url {
        url: String,
        refresh: Duration,
        client: Box<reqwest_lite::Fetcher>,
    },
}

#[derive(Debug, Default)]
struct Keys {
    /// By `kid`; keys without one under "".
    by_kid: HashMap<String, Vec<(DecodingKey, Option<Algorithm>)>>,
    loaded: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// Verifies bearer JWTs for one route.
pub struct JwtVerifier {
    validation: Validation,
    algorithms: Vec<Algorithm>,
    keys: Arc<RwLock<Keys>>,
    source: KeySource,
    principal_claim: String,
    keep_claims: Vec<String>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.algorithms)
            .field("principal_claim", &self.principal_claim)
            .finish_non_exhaustive()
    }
}

const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl JwtVerifier {
    fn new(route: &str, cfg: &AuthConfig) -> Result<Self, GatewayError> {
        let err = |field: &str, message: String| GatewayError::Config {
            route: route.to_string(),
            field: format!("auth.{field}"),
            message,
        };
        let sources = [
            cfg.jwks_file.is_some(),
            cfg.jwks_url.is_some(),
            cfg.public_key_file.is_some(),
            cfg.hs256_secret_file.is_some() || cfg.hs256_secret_env.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if sources != 1 {
            return Err(err(
                "jwks_file",
                "mode = \"jwt\" needs exactly one key source: jwks_file, jwks_url, public_key_file, or hs256_secret_file / hs256_secret_env".into(),
            ));
        }
        let symmetric = cfg.hs256_secret_file.is_some() || cfg.hs256_secret_env.is_some();
        let algorithms: Vec<Algorithm> = if cfg.algorithms.is_empty() {
            if symmetric {
                vec![Algorithm::HS256]
            } else {
                vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]
            }
        } else {
            cfg.algorithms
                .iter()
                .map(|a| {
                    let alg: Algorithm = a.parse().map_err(|_| {
                        err("algorithms", format!("`{a}` is not a JWS algorithm name"))
                    })?;
                    let ok = if symmetric {
                        alg == Algorithm::HS256
                    } else {
                        ASYMMETRIC.contains(&alg)
                    };
                    if !ok {
                        return Err(err(
                            "algorithms",
                            format!(
                                "`{a}` cannot be used with this key source ({})",
                                if symmetric {
                                    "HS256 secret: only HS256"
                                } else {
                                    "public keys: RS*, PS*, ES256, ES384, EdDSA"
                                }
                            ),
                        ));
                    }
                    Ok(alg)
                })
                .collect::<Result<_, _>>()?
        };
        if cfg.issuer.is_none() {
            return Err(err(
                "issuer",
                "mode = \"jwt\" needs the expected issuer (`iss`)".into(),
            ));
        }
        if cfg.audience.is_empty() {
            return Err(err(
                "audience",
                "mode = \"jwt\" needs the expected audience (`aud`): this gateway's resource identifier, so tokens minted for other services are refused".into(),
            ));
        }
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.clone();
        validation.leeway = cfg.leeway_secs;
        validation.set_issuer(&[cfg.issuer.as_deref().unwrap_or_default()]);
        validation.set_audience(&cfg.audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;

        let mut keys = Keys::default();
        let source = if let Some(path) = &cfg.jwks_file {
            let text = read_secret_file(path).map_err(|e| err("jwks_file", e))?;
            keys.load_jwks(&text).map_err(|e| err("jwks_file", e))?;
            KeySource::Static
        } else if let Some(path) = &cfg.public_key_file {
            let pem = read_secret_file(path).map_err(|e| err("public_key_file", e))?;
            let key =
                pem_key(pem.as_bytes(), &algorithms).map_err(|e| err("public_key_file", e))?;
            keys.by_kid
                .entry(String::new())
                .or_default()
                .push((key, None));
            KeySource::Static
        } else if let Some(url) = &cfg.jwks_url {
            let client = Box::new(reqwest_lite::Fetcher::new(url).map_err(|e| err("jwks_url", e))?);
            KeySource::Url {
                url: url.clone(),
                refresh: Duration::from_secs(cfg.jwks_refresh_secs.max(10)),
                client,
            }
        } else {
            let secret = if let Some(path) = &cfg.hs256_secret_file {
                read_secret_file(path).map_err(|e| err("hs256_secret_file", e))?
            } else {
                let var = cfg.hs256_secret_env.as_deref().unwrap_or_default();
                std::env::var(var).map_err(|_| {
                    err(
                        "hs256_secret_env",
                        format!("environment variable `{var}` is not set"),
                    )
                })?
            };
            let secret = secret.trim_end_matches(['\n', '\r']);
            if secret.len() < 32 {
                return Err(err(
                    "hs256_secret_file",
                    "the HS256 secret is shorter than 32 bytes; use at least 256 bits".into(),
                ));
            }
            keys.by_kid
                .entry(String::new())
                .or_default()
                .push((DecodingKey::from_secret(secret.as_bytes()), None));
            KeySource::Static
        };
        if matches!(source, KeySource::Static) {
            keys.loaded = Some(Instant::now());
        }
        Ok(JwtVerifier {
            validation,
            algorithms,
            keys: Arc::new(RwLock::new(keys)),
            source,
            principal_claim: cfg.principal_claim.clone(),
            keep_claims: cfg.keep_claims.clone(),
        })
    }

    /// Fetch the JWKS from its URL when due (at start, every `jwks_refresh_secs`, and when a
    /// token names an unknown key, at most every 10 s). A failed fetch keeps the old keys.
    pub async fn refresh(&self, force: bool) -> Result<(), String> {
        let KeySource::Url {
            url,
            refresh,
            client,
        } = &self.source
        else {
            return Ok(());
        };
        {
            let k = self.keys.read().unwrap_or_else(|p| p.into_inner());
            let due = k.loaded.is_none_or(|t| t.elapsed() >= *refresh);
            let recently = k
                .last_attempt
                .is_some_and(|t| t.elapsed() < Duration::from_secs(10));
            if recently || !(due || force) {
                return Ok(());
            }
        }
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .last_attempt = Some(Instant::now());
        let text = client
            .get_text()
            .await
            .map_err(|e| format!("fetching the JWKS from {url}: {e}"))?;
        let mut fresh = Keys::default();
        fresh
            .load_jwks(&text)
            .map_err(|e| format!("the JWKS at {url}: {e}"))?;
        fresh.loaded = Some(Instant::now());
        fresh.last_attempt = Some(Instant::now());
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Whether the key set would need a fetch to know `token`'s key.
    pub fn needs_fetch(&self, token: &str) -> bool {
        if !matches!(self.source, KeySource::Url { .. }) {
            return false;
        }
        let kid = jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|h| h.kid)
            .unwrap_or_default();
        let k = self.keys.read().unwrap_or_else(|p| p.into_inner());
        k.loaded.is_none() || (!k.by_kid.contains_key(&kid) && !k.by_kid.contains_key(""))
    }

    fn verify(&self, token: &str) -> Result<Caller, Denied> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Denied::new("malformed_token", "the bearer token is not a JWT"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(Denied::new(
                "algorithm_not_allowed",
                format!("tokens signed with {:?} are not accepted here", header.alg),
            ));
        }
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let kid = header.kid.clone().unwrap_or_default();
        let candidates: Vec<&DecodingKey> = keys
            .by_kid
            .get(&kid)
            .into_iter()
            .chain(if kid.is_empty() {
                None
            } else {
                keys.by_kid.get("")
            })
            .flatten()
            .filter(|(_, alg)| alg.is_none_or(|a| a == header.alg))
            .map(|(k, _)| k)
            .collect();
        if candidates.is_empty() {
            return Err(Denied::new(
                "unknown_key",
                if kid.is_empty() {
                    "no key for this token's algorithm".to_string()
                } else {
                    format!("no key with kid `{kid}`")
                },
            ));
        }
        // The library checks every listed algorithm against the key's family: list only the
        // token's own (already known to be allowed).
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
                Ok(data) => return self.caller(data.claims),
                Err(e) => last = Some(e),
            }
        }
        Err(denial(last.expect("at least one candidate")))
    }

    fn caller(&self, claims: Map<String, Value>) -> Result<Caller, Denied> {
        let principal = match claims.get(&self.principal_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(Denied::new(
                    "missing_principal",
                    format!("the token has no `{}` claim", self.principal_claim),
                ))
            }
        };
        let kept: Map<String, Value> = self
            .keep_claims
            .iter()
            .filter_map(|c| claims.get(c).map(|v| (c.clone(), v.clone())))
            .collect();
        Ok(Caller {
            user: UserIdentity {
                principal,
                source: "jwt".into(),
                claims: (!kept.is_empty()).then_some(Value::Object(kept)),
                ..Default::default()
            },
        })
    }
}

fn denial(e: jsonwebtoken::errors::Error) -> Denied {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => Denied::new("expired", "the token has expired"),
        K::ImmatureSignature => Denied::new("invalid_token", "the token is not valid yet (nbf)"),
        K::InvalidAudience => Denied::new(
            "wrong_audience",
            "the token is not meant for this gateway (aud)",
        ),
        K::InvalidIssuer => Denied::new(
            "wrong_issuer",
            "the token was issued by an issuer this route does not trust (iss)",
        ),
        K::InvalidSignature => {
            Denied::new("bad_signature", "the token's signature does not verify")
        }
        K::MissingRequiredClaim(c) => {
            Denied::new("invalid_token", format!("the token lacks the `{c}` claim"))
        }
        K::InvalidAlgorithm => Denied::new(
            "algorithm_not_allowed",
            "the token's algorithm does not match its key",
        ),
        _ => Denied::new("malformed_token", "the bearer token could not be decoded"),
    }
}

impl Keys {
    fn load_jwks(&mut self, text: &str) -> Result<(), String> {
        let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWK set: {e}"))?;
        let mut n = 0;
        for jwk in &set.keys {
            // Keys for encryption are not signature keys.
            if matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            ) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            self.by_kid
                .entry(jwk.common.key_id.clone().unwrap_or_default())
                .or_default()
                .push((key, alg));
            n += 1;
        }
        if n == 0 {
            return Err("it holds no usable signature key".into());
        }
        Ok(())
    }
}

fn pem_key(pem: &[u8], algorithms: &[Algorithm]) -> Result<DecodingKey, String> {
    let alg = algorithms[0];
    let r = match alg {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        _ => DecodingKey::from_rsa_pem(pem),
    };
    r.map_err(|e| format!("not a PEM public key for {alg:?}: {e}"))
}

fn read_secret_file(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A minimal HTTP(S) GET for the JWKS, on the gateway's own client.
pub(crate) mod reqwest_lite {
    use http_body_util::{BodyExt, Empty, Limited};

    /// Fetches one URL.
    #[derive(Debug)]
    pub(crate) struct Fetcher {
        uri: http::Uri,
        client: crate::upstream::Client<Empty<bytes::Bytes>>,
    }

    impl Fetcher {
        pub(crate) fn new(url: &str) -> Result<Self, String> {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) {
                return Err(format!("`{url}` is not an http(s) URL"));
            }
            Ok(Fetcher {
                uri,
                client: crate::upstream::client(None).map_err(|e| e.to_string())?,
            })
        }

        pub(crate) async fn get_text(&self) -> Result<String, String> {
            let req = http::Request::get(self.uri.clone())
                .header(http::header::ACCEPT, "application/json")
                .body(Empty::new())
                .map_err(|e| e.to_string())?;
            let resp =
                tokio::time::timeout(std::time::Duration::from_secs(10), self.client.request(req))
                    .await
                    .map_err(|_| "timed out".to_string())?
                    .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status()));
            }
            let body = Limited::new(resp.into_body(), 1 << 20)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            String::from_utf8(body.to_vec()).map_err(|_| "not UTF-8".to_string())
        }
    }
}
