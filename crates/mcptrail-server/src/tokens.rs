//! Local API tokens: `mcptrail serve token add` prints a random token once and stores only
//! its SHA-256 (file 0600 in a 0700 directory). A presented token is hashed and compared
//! with every stored hash in constant time, so neither the comparison nor an early exit
//! tells an attacker how close a guess was.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::Role;
use crate::ServerError;

/// Prefix of every token (recognisable in a leaked paste, by secret scanners too).
pub const TOKEN_PREFIX: &str = "mct_";

/// One stored token (its hash, never the token).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it (the principal name recorded in the meta-audit).
    pub name: String,
    /// The role it grants.
    pub role: Role,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// When it was created (RFC 3339).
    pub created: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

/// The token file.
#[derive(Debug, Clone)]
pub struct TokenStore {
    path: PathBuf,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenStore {
    /// The store at `path` (created on the first `add`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TokenStore { path: path.into() }
    }

    /// The default file of a data directory.
    pub fn default_path(data_dir: &Path) -> PathBuf {
        data_dir.join("server").join("tokens.json")
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<TokenFile, ServerError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| ServerError::Tokens {
                path: self.path.clone(),
                message: format!(
                    "not a token file ({e}); restore it or remove it and add the tokens again"
                ),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
            Err(e) => Err(ServerError::Tokens {
                path: self.path.clone(),
                message: format!("cannot read: {e}"),
            }),
        }
    }

    fn save(&self, f: &TokenFile) -> Result<(), ServerError> {
        let err = |message: String| ServerError::Tokens {
            path: self.path.clone(),
            message,
        };
        if let Some(dir) = self.path.parent() {
            mcptrail_ledger::create_private_dir(dir).map_err(|e| err(e.to_string()))?;
        }
        let bytes = serde_json::to_vec_pretty(f).map_err(|e| err(e.to_string()))?;
        mcptrail_ledger::write_private_atomic(&self.path, &bytes).map_err(|e| err(e.to_string()))
    }

    /// Create a token for `name` with `role`; returns the token (shown once, never stored).
    pub fn add(&self, name: &str, role: Role) -> Result<String, ServerError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(ServerError::Usage(
                "a token name must be 1–128 printable characters".into(),
            ));
        }
        let mut f = self.load()?;
        if f.tokens.iter().any(|t| t.name == name) {
            return Err(ServerError::Usage(format!(
                "a token named `{name}` exists; revoke it first or pick another name (one principal, one role)"
            )));
        }
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| ServerError::Usage(format!("no randomness: {e}")))?;
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(raw));
        f.tokens.push(TokenEntry {
            name: name.to_string(),
            role,
            sha256: hex::encode(hash(&token)),
            created: mcptrail_event::now_rfc3339_nanos(),
        });
        self.save(&f)?;
        Ok(token)
    }

    /// The stored entries (hashes, no tokens).
    pub fn list(&self) -> Result<Vec<TokenEntry>, ServerError> {
        Ok(self.load()?.tokens)
    }

    /// Remove the token of `name`; whether there was one.
    pub fn revoke(&self, name: &str) -> Result<bool, ServerError> {
        let mut f = self.load()?;
        let before = f.tokens.len();
        f.tokens.retain(|t| t.name != name);
        let removed = f.tokens.len() != before;
        if removed {
            self.save(&f)?;
        }
        Ok(removed)
    }

    /// The entry whose hash matches `token`: every entry is compared, in constant time.
    pub fn lookup(&self, token: &str) -> Result<Option<TokenEntry>, ServerError> {
        let presented = hash(token);
        let mut found = None;
        for t in self.load()?.tokens {
            let Ok(stored) = hex::decode(&t.sha256) else {
                continue;
            };
            if bool::from(stored.ct_eq(&presented)) {
                found = Some(t);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn add_lookup_revoke_and_only_hashes_at_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(TokenStore::default_path(dir.path()));
        let t = store.add("alice", Role::Investigator).unwrap();
        assert!(t.starts_with(TOKEN_PREFIX) && t.len() == TOKEN_PREFIX.len() + 64);
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(
            !text.contains(&t[TOKEN_PREFIX.len()..]),
            "token stored in clear"
        );
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(store.path().parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        let e = store.lookup(&t).unwrap().unwrap();
        assert_eq!((e.name.as_str(), e.role), ("alice", Role::Investigator));
        assert!(store.lookup("mct_wrong").unwrap().is_none());
        assert!(store.add("alice", Role::Admin).is_err(), "duplicate name");
        assert!(store.revoke("alice").unwrap());
        assert!(store.lookup(&t).unwrap().is_none());
        assert!(!store.revoke("alice").unwrap());
    }
}
