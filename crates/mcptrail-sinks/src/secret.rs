//! Secrets (webhook keys, NATS tokens and passwords) come from an environment variable or a
//! file, never from the configuration file itself, and never appear in a log line, an error
//! or `Debug` output: errors name the variable or the path, not the value.

use std::path::PathBuf;

use serde::Deserialize;

/// Where a secret is read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SecretSource {
    /// `{ env = "VAR" }`: the value of an environment variable.
    Env {
        /// The variable's name.
        env: String,
    },
    /// `{ file = "/path" }`: a file's contents, trailing newline removed. The file should be
    /// private (0600): a group- or world-readable key file is refused.
    File {
        /// The file.
        file: PathBuf,
    },
}

impl SecretSource {
    /// Where the secret comes from, for messages (`env MCPTRAIL_WEBHOOK_KEY`, `file /x/key`).
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env { env } => format!("environment variable {env}"),
            SecretSource::File { file } => format!("file {}", file.display()),
        }
    }

    /// Read the secret.
    pub fn load(&self) -> Result<Secret, String> {
        let bytes = match self {
            SecretSource::Env { env } => std::env::var_os(env)
                .ok_or_else(|| format!("environment variable {env} is not set"))?
                .into_encoded_bytes(),
            SecretSource::File { file } => {
                use std::os::unix::fs::PermissionsExt;
                let meta = std::fs::metadata(file)
                    .map_err(|e| format!("secret file {}: {e}", file.display()))?;
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(format!(
                        "secret file {} is readable by others (mode {mode:o}); chmod 600 it",
                        file.display()
                    ));
                }
                let mut b = std::fs::read(file)
                    .map_err(|e| format!("secret file {}: {e}", file.display()))?;
                while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                    b.pop();
                }
                b
            }
        };
        if bytes.is_empty() {
            return Err(format!("the secret in {} is empty", self.describe()));
        }
        Ok(Secret(bytes))
    }
}

/// A secret value. `Debug` shows its length only; the bytes are wiped on drop.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from bytes (tests, and keys made in memory).
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    /// The bytes, for the code that uses them (HMAC, authentication).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort without `unsafe`: overwrite before the allocation is freed.
        for b in self.0.iter_mut() {
            *b = 0;
        }
        std::hint::black_box(&self.0);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes, redacted)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new(b"hunter2-very-secret".to_vec());
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("19 bytes"), "{d}");
    }

    #[test]
    fn file_secrets_must_be_private_and_errors_name_the_source_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "topsecretvalue\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let src = SecretSource::File { file: p.clone() };
        let err = src.load().unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("topsecret"), "{err}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(src.load().unwrap().expose(), b"topsecretvalue");
        let missing = SecretSource::Env {
            env: "MCPTRAIL_TEST_SURELY_UNSET_VAR".into(),
        };
        assert!(missing.load().unwrap_err().contains("is not set"));
    }
}
