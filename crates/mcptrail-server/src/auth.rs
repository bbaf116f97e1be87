//! Who is calling and in which role. A bearer credential is either a local API token (see
//! [`crate::tokens`]) or a JWT verified by the gateway's verifier (JWKS, PEM key or HS256;
//! issuer, audience, expiry), whose role comes from a configured claim. A refusal names its
//! reason for the meta-audit and the `WWW-Authenticate` challenge, never the credential.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::tokens::{TokenStore, TOKEN_PREFIX};

/// The roles, with segregation of duties: each sees only what its job needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Health, metrics, counts — no payloads.
    Operator,
    /// Events, sessions, timelines, alerts, live tail — as stored (redacted), never decrypted.
    Investigator,
    /// Verification, meta-audit, approving requests.
    Auditor,
    /// Configuration and tokens.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [
        Role::Operator,
        Role::Investigator,
        Role::Auditor,
        Role::Admin,
    ];

    /// The name as configured and recorded.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Investigator => "investigator",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role `{s}`; roles are operator, investigator, auditor, admin")
            })
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    /// The name (token name, or the JWT's principal claim).
    pub name: String,
    /// Its roles (a token has one; a JWT claim may list several).
    pub roles: Vec<Role>,
    /// `token` or `jwt`.
    pub source: &'static str,
}

/// Why a caller was refused.
#[derive(Debug, Clone)]
pub struct Denied {
    /// Machine-readable reason (`missing_token`, `unknown_token`, `expired`, `no_role`, …).
    pub reason: String,
    /// A sentence for the caller and the record (never the credential).
    pub detail: String,
}

/// The server's authenticator.
#[derive(Debug)]
pub struct Authn {
    tokens: TokenStore,
    jwt: Option<(mcptrail_gateway::auth::Authenticator, String)>,
}

impl Authn {
    /// Tokens from `tokens`; JWTs with `jwt` (verifier, role claim) when configured.
    pub fn new(
        tokens: TokenStore,
        jwt: Option<(mcptrail_gateway::auth::Authenticator, String)>,
    ) -> Self {
        Authn { tokens, jwt }
    }

    /// Fetch the JWKS when the verifier needs it (at start and when due).
    pub async fn refresh(&self) -> Result<(), String> {
        if let Some((mcptrail_gateway::auth::Authenticator::Jwt(v), _)) = &self.jwt {
            v.refresh(false).await?;
        }
        Ok(())
    }

    /// Authenticate a request's headers.
    pub fn check(&self, headers: &http::HeaderMap) -> Result<Principal, Denied> {
        let deny = |reason: &str, detail: &str| Denied {
            reason: reason.into(),
            detail: detail.into(),
        };
        let token = match headers.get(http::header::AUTHORIZATION) {
            None => return Err(deny("missing_token", "no bearer token")),
            Some(h) => {
                let h = h.to_str().map_err(|_| {
                    deny("malformed_token", "the Authorization header is not ASCII")
                })?;
                match h.split_once(' ') {
                    Some((s, t)) if s.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
                        t.trim().to_string()
                    }
                    _ => {
                        return Err(deny(
                            "missing_token",
                            "the Authorization header is not a bearer token",
                        ))
                    }
                }
            }
        };
        if token.starts_with(TOKEN_PREFIX) {
            return match self.tokens.lookup(&token) {
                Ok(Some(e)) => Ok(Principal {
                    name: e.name,
                    roles: vec![e.role],
                    source: "token",
                }),
                Ok(None) => Err(deny(
                    "unknown_token",
                    "the API token is not known (revoked, or mistyped)",
                )),
                Err(e) => Err(Denied {
                    reason: "token_store".into(),
                    detail: e.to_string(),
                }),
            };
        }
        let Some((authn, role_claim)) = &self.jwt else {
            return Err(deny(
                "unknown_token",
                "not an mcptrail API token, and no [serve.jwt] is configured",
            ));
        };
        let caller = authn
            .check(headers, std::net::IpAddr::from([127, 0, 0, 1]), None)
            .map_err(|d| Denied {
                reason: d.reason.into(),
                detail: d.detail,
            })?;
        let claim = caller.user.claims.as_ref().and_then(|c| c.get(role_claim));
        let names: Vec<&str> = match claim {
            Some(serde_json::Value::String(s)) => vec![s.as_str()],
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        let roles: Vec<Role> = names.iter().filter_map(|n| n.parse().ok()).collect();
        if roles.is_empty() {
            return Err(Denied {
                reason: "no_role".into(),
                detail: format!("the token's `{role_claim}` claim names no mcptrail role"),
            });
        }
        Ok(Principal {
            name: caller.user.principal,
            roles,
            source: "jwt",
        })
    }
}
