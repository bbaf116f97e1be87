//! Field-level encryption with per-subject data keys, and crypto-shredding.
//!
//! A value a rule marks `encrypt` is sealed with XChaCha20-Poly1305 under the data key of the
//! event's *subject* (the user the agent acts for), with the event id and the value's JSON path
//! as associated data, and stored as `[enc:<rule>:<subject token>:<base64url(nonce ‖ ct)>]`.
//! Each subject's data key is kept wrapped by the master key (from a file or the environment)
//! in `<data_dir>/keys/subjects/<subject token>.key` (0600). Deleting that file
//! ([`forget_subject`]) makes every field encrypted for the subject unreadable forever, while
//! the ledger still verifies: the chain covers the ciphertext, which does not change.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::{RedactError, TokenKey};

/// Environment variable that may hold the master key (64 hex digits) instead of a file.
pub const MASTER_KEY_ENV: &str = "MCPTRAIL_MASTER_KEY";
/// Directory of the wrapped subject keys, under the data directory's `keys/`.
pub const SUBJECT_KEY_DIR: &str = "subjects";

const PREFIX: &str = "[enc:";

/// The master key that wraps every subject's data key.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// From its bytes.
    pub fn from_bytes(b: [u8; 32]) -> MasterKey {
        MasterKey(Zeroizing::new(b))
    }

    /// From 64 hex digits in `file`, else in `$MCPTRAIL_MASTER_KEY`.
    pub fn load(file: Option<&Path>) -> Result<MasterKey, RedactError> {
        let (text, origin) = match file {
            Some(p) => (
                Zeroizing::new(std::fs::read_to_string(p).map_err(|e| RedactError::Key {
                    path: p.to_path_buf(),
                    message: e.to_string(),
                })?),
                p.to_path_buf(),
            ),
            None => (
                Zeroizing::new(std::env::var(MASTER_KEY_ENV).map_err(|_| RedactError::Key {
                    path: PathBuf::from(format!("${MASTER_KEY_ENV}")),
                    message: format!("no master key: set `[redact] master_key_file` or {MASTER_KEY_ENV} (64 hex digits; `openssl rand -hex 32` makes one)"),
                })?),
                PathBuf::from(format!("${MASTER_KEY_ENV}")),
            ),
        };
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), key.as_mut()).map_err(|_| RedactError::Key {
            path: origin,
            message: "not a master key (64 hex digits)".into(),
        })?;
        Ok(MasterKey(key))
    }
}

/// Where the subject keys live, and the keys to use them.
#[derive(Debug, Clone)]
pub struct Vault {
    dir: PathBuf,
    master: MasterKey,
}

/// An `[enc:…]` value, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The rule that encrypted it.
    pub rule: String,
    /// The subject token (whose key opens it).
    pub subject: String,
    /// Nonce ‖ ciphertext.
    pub blob: Vec<u8>,
}

impl Vault {
    /// The vault of `data_dir` (`keys/subjects/`), with `master`.
    pub fn new(data_dir: &Path, master: MasterKey) -> Vault {
        Vault {
            dir: data_dir.join("keys").join(SUBJECT_KEY_DIR),
            master,
        }
    }

    /// The token naming a subject (a principal) in file names and `[enc:…]` values.
    pub fn subject_token(tokens: &TokenKey, subject: &str) -> String {
        tokens.token("subject", &subject.trim().to_lowercase())
    }

    fn key_path(&self, subject: &str) -> PathBuf {
        self.dir.join(format!("{subject}.key"))
    }

    fn wrap_cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.master.0.as_ref().into())
    }

    /// The data key of `subject`, created when `create` and missing; `None` when it is gone.
    fn data_key(
        &self,
        subject: &str,
        create: bool,
    ) -> Result<Option<Zeroizing<[u8; 32]>>, RedactError> {
        let path = self.key_path(subject);
        let err = |message: String| RedactError::Key {
            path: path.clone(),
            message,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let blob = hex::decode(text.trim())
                    .map_err(|_| err("not a wrapped subject key".into()))?;
                if blob.len() < 24 {
                    return Err(err("not a wrapped subject key".into()));
                }
                let (nonce, ct) = blob.split_at(24);
                let dk = Zeroizing::new(
                    self.wrap_cipher()
                        .decrypt(
                            XNonce::from_slice(nonce),
                            Payload {
                                msg: ct,
                                aad: subject.as_bytes(),
                            },
                        )
                        .map_err(|_| {
                            err(
                                "cannot be unwrapped: wrong master key, or the file was altered"
                                    .into(),
                            )
                        })?,
                );
                let mut key = Zeroizing::new([0u8; 32]);
                if dk.len() != 32 {
                    return Err(err("not a wrapped subject key".into()));
                }
                key.copy_from_slice(&dk);
                Ok(Some(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dir)
                    .map_err(|e| err(e.to_string()))?;
                let mut key = Zeroizing::new([0u8; 32]);
                getrandom::fill(key.as_mut()).map_err(|e| err(e.to_string()))?;
                let mut nonce = [0u8; 24];
                getrandom::fill(&mut nonce).map_err(|e| err(e.to_string()))?;
                let ct = self
                    .wrap_cipher()
                    .encrypt(
                        XNonce::from_slice(&nonce),
                        Payload {
                            msg: key.as_ref(),
                            aad: subject.as_bytes(),
                        },
                    )
                    .map_err(|_| err("wrapping failed".into()))?;
                let text = hex::encode([nonce.as_slice(), &ct].concat());
                let written = crate::token::create_private_once(&path, text.as_bytes());
                match written {
                    Ok(()) => Ok(Some(key)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        self.data_key(subject, false)
                    }
                    Err(e) => Err(err(e.to_string())),
                }
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Seal `value` for `subject`, bound to `event_id` and `path`: the `[enc:…]` text.
    pub fn seal(
        &self,
        rule: &str,
        subject: &str,
        event_id: &str,
        path: &str,
        value: &str,
    ) -> Result<String, RedactError> {
        let key = self.data_key(subject, true)?.expect("created when missing");
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| RedactError::Key {
            path: self.dir.clone(),
            message: e.to_string(),
        })?;
        let aad = format!("{event_id}\0{path}");
        let ct = XChaCha20Poly1305::new(key.as_ref().into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("encryption of a bounded message cannot fail");
        let blob = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode([nonce.as_slice(), &ct].concat());
        Ok(format!("{PREFIX}{rule}:{subject}:{blob}]"))
    }

    /// Open a sealed value found at `path` of event `event_id`.
    pub fn open(&self, sealed: &Sealed, event_id: &str, path: &str) -> Result<String, OpenError> {
        let key = self
            .data_key(&sealed.subject, false)
            .map_err(OpenError::Key)?
            .ok_or(OpenError::Shredded)?;
        if sealed.blob.len() < 24 {
            return Err(OpenError::Corrupt);
        }
        let (nonce, ct) = sealed.blob.split_at(24);
        let aad = format!("{event_id}\0{path}");
        let pt = XChaCha20Poly1305::new(key.as_ref().into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Corrupt)?;
        String::from_utf8(pt).map_err(|_| OpenError::Corrupt)
    }
}

/// Delete `subject`'s data key in `data_dir` (no master key needed): every field sealed for
/// it becomes unreadable. Returns whether there was a key.
pub fn forget_subject(data_dir: &Path, subject: &str) -> Result<bool, RedactError> {
    let dir = data_dir.join("keys").join(SUBJECT_KEY_DIR);
    let path = dir.join(format!("{subject}.key"));
    match std::fs::remove_file(&path) {
        Ok(()) => {
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(RedactError::Key {
            path,
            message: e.to_string(),
        }),
    }
}

/// Why a sealed value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The subject's key was deleted (`forget`): the value is gone for good.
    #[error("the subject's data key was deleted (forgotten): the value cannot be recovered")]
    Shredded,
    /// The key file could not be used.
    #[error(transparent)]
    Key(RedactError),
    /// The value does not decrypt for this event and path: altered, moved, or another key.
    #[error("the value does not decrypt for this event and field (altered, copied from elsewhere, or a different master key)")]
    Corrupt,
}

/// Every `[enc:…]` value in `text`, with its byte range.
pub fn find_sealed(text: &str) -> Vec<(std::ops::Range<usize>, Sealed)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(PREFIX) {
        let start = from + i;
        let Some(len) = text[start..].find(']') else {
            break;
        };
        let inner = &text[start + PREFIX.len()..start + len];
        let mut parts = inner.splitn(3, ':');
        if let (Some(rule), Some(subject), Some(b64)) = (parts.next(), parts.next(), parts.next()) {
            if let Ok(blob) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64) {
                out.push((
                    start..start + len + 1,
                    Sealed {
                        rule: rule.to_string(),
                        subject: subject.to_string(),
                        blob,
                    },
                ));
            }
        }
        from = start + len + 1;
    }
    out
}

/// What revealing a field gave: the text with every sealed value opened (when all opened),
/// and per sealed value `{rule, result}` with `revealed`, `forgotten`, `does_not_decrypt` or
/// `key_unusable` (what is recorded: never the value).
#[derive(Debug)]
pub struct Revealed {
    /// The field's text with every sealed value opened (`None` unless all opened).
    pub text: Option<String>,
    /// Per sealed value, in order: `{rule, result}`.
    pub values: Vec<serde_json::Value>,
    /// Why each value that did not open did not, for the person asking: `rule: reason`
    /// (no value and no key in them).
    pub problems: Vec<String>,
}

/// The string at `path` of `event`, following `{json}` segments into JSON held in strings
/// (the paths an event's `redactions` name).
pub fn resolve_field(event: &serde_json::Value, path: &str) -> Option<String> {
    let mut parts = path.split("/{json}");
    let mut current = event.pointer(parts.next()?)?.as_str()?.to_string();
    for rest in parts {
        let inner: serde_json::Value = serde_json::from_str(&current).ok()?;
        current = if rest.is_empty() {
            inner.as_str()?.to_string()
        } else {
            inner.pointer(rest)?.as_str()?.to_string()
        };
    }
    Some(current)
}

impl Vault {
    /// Open every sealed value of `field` of the stored `event` (`mcptrail reveal`, and a
    /// reveal approved through the governance server). `None`: the event has no text there.
    pub fn reveal_field(
        &self,
        event: &serde_json::Value,
        event_id: &str,
        field: &str,
    ) -> Option<Revealed> {
        let text = resolve_field(event, field)?;
        let sealed = find_sealed(&text);
        let mut values = Vec::new();
        let mut problems = Vec::new();
        let mut revealed = text.clone();
        for (range, s) in sealed.iter().rev() {
            let result = match self.open(s, event_id, field) {
                Ok(clear) => {
                    revealed.replace_range(range.clone(), &clear);
                    "revealed"
                }
                Err(e) => {
                    problems.push(format!("{}: {e}", s.rule));
                    match e {
                        OpenError::Shredded => "forgotten",
                        OpenError::Corrupt => "does_not_decrypt",
                        OpenError::Key(_) => "key_unusable",
                    }
                }
            };
            values.push(serde_json::json!({"rule": s.rule, "result": result}));
        }
        values.reverse();
        problems.reverse();
        let ok = !values.is_empty() && values.iter().all(|v| v["result"] == "revealed");
        Some(Revealed {
            text: ok.then_some(revealed),
            values,
            problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_forget() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::new(dir.path(), MasterKey::from_bytes([3; 32]));
        let s = v.seal("ssn", "subj1", "ev1", "/p", "123-45-6789").unwrap();
        assert!(s.starts_with("[enc:ssn:subj1:") && !s.contains("6789"));
        let found = find_sealed(&format!("x {s} y"));
        assert_eq!(found.len(), 1);
        let sealed = &found[0].1;
        assert_eq!(v.open(sealed, "ev1", "/p").unwrap(), "123-45-6789");
        // Bound to its event and path.
        assert!(matches!(
            v.open(sealed, "ev2", "/p"),
            Err(OpenError::Corrupt)
        ));
        assert!(matches!(
            v.open(sealed, "ev1", "/q"),
            Err(OpenError::Corrupt)
        ));
        // Another master key cannot unwrap the subject key.
        let other = Vault::new(dir.path(), MasterKey::from_bytes([4; 32]));
        assert!(matches!(
            other.open(sealed, "ev1", "/p"),
            Err(OpenError::Key(_))
        ));
        // Forgotten: gone for good.
        assert!(forget_subject(dir.path(), "subj1").unwrap());
        assert!(matches!(
            v.open(sealed, "ev1", "/p"),
            Err(OpenError::Shredded)
        ));
        assert!(!forget_subject(dir.path(), "subj1").unwrap());
    }
}
