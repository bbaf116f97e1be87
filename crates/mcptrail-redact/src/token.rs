//! The pseudonym key: 32 random bytes in a 0600 file, created on first use. A token is
//! `HMAC-SHA256(key, rule ‖ 0x00 ‖ normalised value)` cut to 64 bits, so the same e-mail
//! address gives the same token in every event under one key (investigators can join on it)
//! and nobody without the key can test a guess against it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::RedactError;

/// Default file name of the key, under the data directory's `keys/`.
pub const TOKEN_KEY_FILE: &str = "redact.key";

/// The key of the pseudonym tokens.
#[derive(Clone)]
pub struct TokenKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from its bytes (tests, or a key kept elsewhere).
    pub fn from_bytes(bytes: [u8; 32]) -> TokenKey {
        TokenKey(Zeroizing::new(bytes))
    }

    /// Read the key at `path`, creating it (0600, in a 0700 directory) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<TokenKey, RedactError> {
        let err = |message: String| RedactError::Key {
            path: path.to_path_buf(),
            message,
        };
        match std::fs::read(path) {
            Ok(text) => {
                let mode = std::fs::metadata(path)
                    .map_err(|e| err(e.to_string()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(err(format!(
                        "mode {:04o}: the key must be readable by its owner only (chmod 600)",
                        mode & 0o777
                    )));
                }
                let text = Zeroizing::new(text);
                let hex_text = std::str::from_utf8(&text)
                    .map_err(|_| err("not a key file (64 hex digits)".into()))?
                    .trim();
                let mut key = Zeroizing::new([0u8; 32]);
                hex::decode_to_slice(hex_text, key.as_mut())
                    .map_err(|_| err("not a key file (64 hex digits)".into()))?;
                Ok(TokenKey(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .map_err(|e| err(e.to_string()))?;
                }
                let mut key = Zeroizing::new([0u8; 32]);
                getrandom::fill(key.as_mut()).map_err(|e| err(e.to_string()))?;
                let text = Zeroizing::new(hex::encode(key.as_ref()));
                let mut bytes = Zeroizing::new(text.as_bytes().to_vec());
                bytes.push(b'\n');
                let written = create_private_once(path, &bytes);
                match written {
                    Ok(()) => Ok(TokenKey(key)),
                    // Another tap created it meanwhile: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        TokenKey::load_or_create(path)
                    }
                    Err(e) => Err(err(e.to_string())),
                }
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Read the key at `path` if there is one (never creates it).
    pub fn load(path: &Path) -> Result<Option<TokenKey>, RedactError> {
        if !path.exists() {
            return Ok(None);
        }
        TokenKey::load_or_create(path).map(Some)
    }

    /// The replacement text of `value` found by `rule`: `[tok:rule:<token>]`, over the value's
    /// normalised form (so one e-mail address written in two cases gets one token).
    pub fn pseudonym(&self, rule: &str, value: &str) -> String {
        format!(
            "[tok:{rule}:{}]",
            self.token(rule, &normalise_value(rule, value))
        )
    }

    /// The token of `value` found by `rule`: 16 hex digits.
    pub fn token(&self, rule: &str, value: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_ref()).expect("any key length");
        mac.update(rule.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..8])
    }
}

/// The form a value is tokenised in, so that one datum written two ways gets one token.
pub(crate) fn normalise_value(rule: &str, v: &str) -> String {
    match rule {
        "email" | "user" => v.trim().to_lowercase(),
        "card" | "phone" | "us_ssn" => v.chars().filter(char::is_ascii_digit).collect(),
        "iban" => v
            .chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_uppercase)
            .collect(),
        _ => v.to_string(),
    }
}

/// Create the private file (0600) `path` holding `bytes`, unless it exists
/// (`AlreadyExists`): the bytes go to a temporary file beside it first, synced, which is then
/// linked in under its name. So a process that reads `path` meanwhile sees no file or the
/// whole file, never an empty or half-written one; and of two processes creating it at once,
/// one wins and the other reads the winner's.
pub(crate) fn create_private_once(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", hex::encode(nonce)));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_creating_the_key_at_once_all_read_one_whole_key() {
        // Several wraps starting on a fresh data directory: none may read the key file while
        // another is still writing it (seen in CI as "not a key file").
        for round in 0..30 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("keys/redact.key");
            let keys: Vec<[u8; 32]> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| *TokenKey::load_or_create(&path).unwrap().0))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(keys.iter().all(|k| *k == keys[0]), "round {round}");
            let left: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
                .unwrap()
                .collect();
            assert_eq!(left.len(), 1, "no temporary file left behind");
        }
    }

    #[test]
    fn created_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys/redact.key");
        let a = TokenKey::load_or_create(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = TokenKey::load_or_create(&p).unwrap();
        assert_eq!(a.token("email", "a@b.c"), b.token("email", "a@b.c"));
        assert_ne!(a.token("email", "a@b.c"), a.token("email", "a@b.d"));
        assert_ne!(a.token("email", "x"), a.token("phone", "x"));
        let other = TokenKey::from_bytes([7; 32]);
        assert_ne!(a.token("email", "a@b.c"), other.token("email", "a@b.c"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = TokenKey::load_or_create(&p).unwrap_err().to_string();
        assert!(e.contains("0644"), "{e}");
        assert!(
            !format!("{a:?}").contains(&hex::encode([0u8; 1]))
                || format!("{a:?}") == "TokenKey(..)"
        );
    }
}
