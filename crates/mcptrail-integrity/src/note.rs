//! C2SP signed notes (c2sp.org/signed-note) with Ed25519, and the `tlog-checkpoint` body
//! (c2sp.org/tlog-checkpoint) they carry: the format transparency logs use to publish a
//! signed tree head, readable by any tool of that ecosystem.
//!
//! Keys travel in the `golang.org/x/mod/sumdb/note` text encodings:
//! verifier `<name>+<key id hex>+<base64(0x01 ‖ public key)>`, signer
//! `PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 ‖ seed)>`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// Signature type byte of Ed25519 in signed notes.
const ED25519: u8 = 0x01;
/// Verifiers must accept at least 16 signatures; more is refused as malformed.
const MAX_SIGNATURES: usize = 64;

/// A note, key or checkpoint that is not what it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// A key string does not parse.
    #[error("malformed {what} key: {why}")]
    MalformedKey {
        /// `signer` or `verifier`.
        what: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// The note does not follow the signed-note format.
    #[error("malformed signed note: {0}")]
    Malformed(&'static str),
    /// The text to sign is not acceptable (must end in a newline, no control characters).
    #[error("cannot sign: {0}")]
    BadText(&'static str),
    /// A signature by a known key does not verify.
    #[error(
        "the signature by {0} does not verify: the note was altered or not signed by that key"
    )]
    BadSignature(String),
    /// No signature by any known key.
    #[error("the note carries no signature by a known key")]
    Unverified,
    /// The note text is not a checkpoint.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
}

/// `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]` as a big-endian u32.
fn key_id(name: &str, public: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519]);
    h.update(public.as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// Split `name+hex8+base64`, where base64 may itself contain `+`.
fn split_key<'a>(s: &'a str, what: &'static str) -> Result<(&'a str, u32, Vec<u8>), NoteError> {
    let bad = |why| NoteError::MalformedKey { what, why };
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(id), Some(material)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected name+keyid+key"));
    };
    if !valid_name(name) {
        return Err(bad("the name is empty or contains a space or '+'"));
    }
    if id.len() != 8 {
        return Err(bad("the key id is not 8 hex digits"));
    }
    let id = u32::from_str_radix(id, 16).map_err(|_| bad("the key id is not 8 hex digits"))?;
    let material = B64
        .decode(material)
        .map_err(|_| bad("the key is not base64"))?;
    if material.len() != 33 || material[0] != ED25519 {
        return Err(bad("not an Ed25519 key (type 0x01, 32 bytes)"));
    }
    Ok((name, id, material[1..].to_vec()))
}

/// A key that signs notes.
pub struct NoteSigner {
    name: String,
    id: u32,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("id", &format_args!("{:08x}", self.id))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A new random key named `name` (e.g. `mcptrail.example/host-17`).
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::MalformedKey {
                what: "signer",
                why: "the name is empty or contains a space or '+'",
            });
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|_| NoteError::MalformedKey {
            what: "signer",
            why: "the operating system provided no randomness",
        })?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(Self::from_parts(name, key))
    }

    fn from_parts(name: &str, key: SigningKey) -> Self {
        NoteSigner {
            id: key_id(name, &key.verifying_key()),
            name: name.to_string(),
            key,
        }
    }

    /// Parse `PRIVATE+KEY+<name>+<id>+<base64(0x01 ‖ seed)>`.
    pub fn from_skey(skey: &str) -> Result<Self, NoteError> {
        let rest = skey
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::MalformedKey {
                what: "signer",
                why: "it does not start with PRIVATE+KEY+",
            })?;
        let (name, id, seed) = split_key(rest, "signer")?;
        let seed: [u8; 32] = seed.try_into().expect("split_key checked the length");
        let signer = Self::from_parts(name, SigningKey::from_bytes(&seed));
        if signer.id != id {
            return Err(NoteError::MalformedKey {
                what: "signer",
                why: "the key id does not match the key",
            });
        }
        Ok(signer)
    }

    /// The signer key in its text encoding. It is the secret: store it 0600, never log it.
    pub fn to_skey(&self) -> String {
        let mut material = vec![ED25519];
        material.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            B64.encode(&material)
        )
    }

    /// The matching verifier key, safe to publish.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Sign `text` (which must end in a newline) and return the signed note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') {
            return Err(NoteError::BadText("the text must end with a newline"));
        }
        if text.chars().any(|c| c < ' ' && c != '\n') {
            return Err(NoteError::BadText("the text contains control characters"));
        }
        let sig = self.key.sign(text.as_bytes());
        let mut blob = self.id.to_be_bytes().to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n\u{2014} {} {}\n",
            self.name,
            B64.encode(blob)
        ))
    }
}

/// A public key that verifies notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parse `<name>+<id>+<base64(0x01 ‖ public key)>`.
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        let (name, id, public) = split_key(vkey, "verifier")?;
        let public: [u8; 32] = public.try_into().expect("split_key checked the length");
        let key = VerifyingKey::from_bytes(&public).map_err(|_| NoteError::MalformedKey {
            what: "verifier",
            why: "not a valid Ed25519 public key",
        })?;
        if key_id(name, &key) != id {
            return Err(NoteError::MalformedKey {
                what: "verifier",
                why: "the key id does not match the key",
            });
        }
        Ok(NoteVerifier {
            name: name.to_string(),
            id,
            key,
        })
    }

    /// The verifier key in its text encoding.
    pub fn to_vkey(&self) -> String {
        let mut material = vec![ED25519];
        material.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, B64.encode(&material))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Check `note` against `known` keys and return its text. Signatures by unknown keys are
/// ignored; one failing signature by a known key rejects the note; at least one must verify.
pub fn open<'a>(note: &'a str, known: &[NoteVerifier]) -> Result<&'a str, NoteError> {
    if note.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed("control characters"));
    }
    let body = note
        .strip_suffix('\n')
        .ok_or(NoteError::Malformed("no final newline"))?;
    let split = body
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let text = &note[..split + 1];
    let sig_lines: Vec<&str> = body[split + 2..].split('\n').collect();
    if sig_lines.len() > MAX_SIGNATURES {
        return Err(NoteError::Malformed("too many signatures"));
    }
    let mut verified = false;
    for line in sig_lines {
        let rest = line.strip_prefix("\u{2014} ").ok_or(NoteError::Malformed(
            "a signature line does not start with '— '",
        ))?;
        let (name, blob) = rest
            .split_once(' ')
            .ok_or(NoteError::Malformed("a signature line has no signature"))?;
        if !valid_name(name) || blob.contains(' ') {
            return Err(NoteError::Malformed(
                "a signature line is not '— name base64'",
            ));
        }
        let blob = B64
            .decode(blob)
            .map_err(|_| NoteError::Malformed("a signature is not base64"))?;
        if blob.len() < 4 {
            return Err(NoteError::Malformed(
                "a signature is shorter than its key id",
            ));
        }
        let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
        let Some(key) = known.iter().find(|k| k.name == name && k.id == id) else {
            continue;
        };
        let sig = Signature::from_slice(&blob[4..])
            .map_err(|_| NoteError::BadSignature(key.name.clone()))?;
        key.key
            .verify_strict(text.as_bytes(), &sig)
            .map_err(|_| NoteError::BadSignature(key.name.clone()))?;
        verified = true;
    }
    if verified {
        Ok(text)
    } else {
        Err(NoteError::Unverified)
    }
}

/// A tlog-checkpoint: the log's origin, its size and the root of its Merkle tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Unique identity of the log (schema-less URL style, e.g. `mcptrail.example/host-17`).
    pub origin: String,
    /// Number of records covered.
    pub size: u64,
    /// RFC 9162 root of those records.
    pub root: Hash,
    /// Optional extension lines (no empty lines).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text: `origin\nsize\nbase64(root)\n[extensions\n]`.
    pub fn to_text(&self) -> String {
        let mut t = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            t.push_str(e);
            t.push('\n');
        }
        t
    }

    /// Parse a checkpoint note text (as returned by [`open`]).
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(NoteError::MalformedCheckpoint("no final newline"))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(NoteError::MalformedCheckpoint("no origin"))?;
        let size = lines
            .next()
            .ok_or(NoteError::MalformedCheckpoint("no size"))?;
        if size.is_empty()
            || (size.len() > 1 && size.starts_with('0'))
            || !size.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(NoteError::MalformedCheckpoint(
                "the size is not a decimal number",
            ));
        }
        let size = size
            .parse()
            .map_err(|_| NoteError::MalformedCheckpoint("the size is too large"))?;
        let root = lines
            .next()
            .ok_or(NoteError::MalformedCheckpoint("no root hash"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(NoteError::MalformedCheckpoint(
                "the root is not base64 of 32 bytes",
            ))?;
        let extensions: Vec<String> = lines.map(String::from).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(NoteError::MalformedCheckpoint("empty extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            extensions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of golang.org/x/mod/sumdb/note, an independent implementation: Ed25519 is
    // deterministic, so signing its text with its key must give its signature byte for byte.
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const PETER_NOTE: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn reproduces_the_go_reference_note() {
        let signer = NoteSigner::from_skey(PETER_SKEY).unwrap();
        assert_eq!(signer.verifier().to_vkey(), PETER_VKEY);
        assert_eq!(signer.to_skey(), PETER_SKEY);
        assert_eq!(signer.sign(PETER_TEXT).unwrap(), PETER_NOTE);
        let v = NoteVerifier::from_vkey(PETER_VKEY).unwrap();
        assert_eq!(open(PETER_NOTE, &[v]).unwrap(), PETER_TEXT);
    }

    #[test]
    fn altered_or_unknown_notes_are_rejected() {
        let v = NoteVerifier::from_vkey(PETER_VKEY).unwrap();
        let altered = PETER_NOTE.replace("cryptography", "cryptographY");
        assert_eq!(
            open(&altered, std::slice::from_ref(&v)),
            Err(NoteError::BadSignature("PeterNeumann".into()))
        );
        let other = NoteSigner::generate("mcptrail.test/other")
            .unwrap()
            .verifier();
        assert_eq!(open(PETER_NOTE, &[other]), Err(NoteError::Unverified));
        assert!(matches!(
            open("no signatures\n", std::slice::from_ref(&v)),
            Err(NoteError::Malformed(_))
        ));
        assert!(matches!(
            open(&PETER_NOTE.replace('\u{2014}', "-"), &[v]),
            Err(NoteError::Malformed(_))
        ));
        assert!(NoteVerifier::from_vkey(
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        )
        .is_err());
        assert!(NoteSigner::generate("has space").is_err());
        let s = NoteSigner::generate("mcptrail.test/a").unwrap();
        assert!(
            !format!("{s:?}").contains(&s.to_skey()[20..]),
            "Debug never shows the key"
        );
        assert_eq!(
            s.sign("no newline"),
            Err(NoteError::BadText("the text must end with a newline"))
        );
    }

    #[test]
    fn checkpoints_round_trip_through_a_signed_note() {
        let signer = NoteSigner::generate("mcptrail.test/host").unwrap();
        let cp = Checkpoint {
            origin: "mcptrail.test/host".into(),
            size: 42,
            root: crate::merkle::leaf_hash(b"x"),
            extensions: vec!["seal seg-00000000000000000001".into()],
        };
        let note = signer.sign(&cp.to_text()).unwrap();
        let text = open(&note, &[signer.verifier()]).unwrap();
        assert_eq!(Checkpoint::parse(text).unwrap(), cp);
        for bad in [
            "o\n01\nAAAA\n",
            "o\n-1\n",
            "\n1\n",
            "o\n1\nnot base64!\n",
            "o\n1\nAAAA\n",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
    }
}
