//! Where segments go before they leave this machine: a local archive directory (copied, then
//! read back and hashed), or the S3 Object Lock bucket the S3 sink uploads sealed segments to
//! (confirmed present with the same SHA-256; never uploaded or deleted from here).
//!
//! ```text
//! <archive_dir>/                        0700
//!     segments/seg-<first seq>.jsonl    0400, byte for byte the sealed segment
//! s3://<bucket>/<prefix>segments/seg-<first seq>.jsonl   (the S3 sink's upload)
//! ```

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mcptrail_sinks::sink::s3::{S3Client, S3SinkConfig};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::RetentionError;

/// Whether an archive holds a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// Present, same SHA-256.
    Yes,
    /// Not there.
    Missing,
    /// There, with another SHA-256 (hex).
    Mismatch(String),
}

/// What deleting a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// Deleted.
    Deleted,
    /// There was none.
    NotThere,
    /// It cannot be deleted from here; it expires on its own (why, until when).
    LeftToExpire(String),
}

/// An archive of sealed segments.
pub trait Archive: std::fmt::Debug + Send + Sync {
    /// Where it is (a path, an `s3://` URL).
    fn label(&self) -> String;
    /// Where `segment`'s copy is.
    fn location(&self, segment: &str) -> String;
    /// Make sure the archive holds the segment at `path` with `sha256`: copy it (a
    /// directory) or check that it is there (S3). `Ok(Held::Missing)`: not yet (the S3 sink
    /// has not uploaded it).
    fn store(&self, segment: &str, path: &Path, sha256: &str) -> Result<Held, RetentionError>;
    /// Whether it holds `segment` with `sha256`.
    fn check(&self, segment: &str, sha256: &str) -> Result<Held, RetentionError>;
    /// Delete the copy of `segment` (the purge).
    fn delete(&self, segment: &str) -> Result<Deleted, RetentionError>;
    /// The segments it holds (file names).
    fn list(&self) -> Result<Vec<String>, RetentionError>;
    /// Whether [`Archive::delete`] really deletes (a directory) or leaves copies to expire
    /// (Object Lock).
    fn deletes(&self) -> bool {
        true
    }
    /// Until when the copy is locked against deletion, if the archive locks (Object Lock).
    fn locked_until(&self, _segment: &str) -> Result<Option<OffsetDateTime>, RetentionError> {
        Ok(None)
    }
}

/// A local archive directory.
#[derive(Debug, Clone)]
pub struct DirArchive {
    dir: PathBuf,
}

impl DirArchive {
    /// The archive in `dir` (created on first use, 0700).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirArchive { dir: dir.into() }
    }

    /// The directory of the copies.
    pub fn segments_dir(&self) -> PathBuf {
        self.dir.join("segments")
    }

    fn err(&self, reason: impl std::fmt::Display) -> RetentionError {
        RetentionError::Archive {
            archive: self.label(),
            reason: reason.to_string(),
        }
    }

    fn sha_of(&self, path: &Path) -> Result<Option<String>, RetentionError> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(hex::encode(Sha256::digest(&b)))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(format!("{}: {e}", path.display()))),
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Archive for DirArchive {
    fn label(&self) -> String {
        self.dir.display().to_string()
    }

    fn location(&self, segment: &str) -> String {
        self.segments_dir().join(segment).display().to_string()
    }

    fn store(&self, segment: &str, path: &Path, sha256: &str) -> Result<Held, RetentionError> {
        let dir = self.segments_dir();
        let dest = dir.join(segment);
        if self.sha_of(&dest)?.as_deref() == Some(sha256) {
            return Ok(Held::Yes);
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| self.err(format!("{}: {e}", dir.display())))?;
        let bytes =
            std::fs::read(path).map_err(|e| self.err(format!("{}: {e}", path.display())))?;
        if hex::encode(Sha256::digest(&bytes)) != sha256 {
            return Err(self.err(format!(
                "{} changed while it was being archived",
                path.display()
            )));
        }
        // A temporary file, fsynced, renamed over any (corrupt) copy: never a partial copy
        // under the segment's name.
        let tmp = dir.join(format!(".{segment}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o400)))
            .and_then(|()| std::fs::rename(&tmp, &dest))
            .and_then(|()| sync_dir(&dir));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.err(format!("writing {}: {e}", dest.display())));
        }
        // Read back what the disk holds now.
        match self.sha_of(&dest)? {
            Some(s) if s == sha256 => Ok(Held::Yes),
            Some(s) => Ok(Held::Mismatch(s)),
            None => Ok(Held::Missing),
        }
    }

    fn check(&self, segment: &str, sha256: &str) -> Result<Held, RetentionError> {
        Ok(match self.sha_of(&self.segments_dir().join(segment))? {
            Some(s) if s == sha256 => Held::Yes,
            Some(s) => Held::Mismatch(s),
            None => Held::Missing,
        })
    }

    fn delete(&self, segment: &str) -> Result<Deleted, RetentionError> {
        let path = self.segments_dir().join(segment);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.segments_dir())
                    .map_err(|e| self.err(format!("{}: {e}", path.display())))?;
                Ok(Deleted::Deleted)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Deleted::NotThere),
            Err(e) => Err(self.err(format!("deleting {}: {e}", path.display()))),
        }
    }

    fn list(&self) -> Result<Vec<String>, RetentionError> {
        let dir = self.segments_dir();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err(format!("{}: {e}", dir.display()))),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(|e| self.err(e))?;
            if let Some(n) = e.file_name().to_str() {
                if n.starts_with("seg-") && n.ends_with(".jsonl") {
                    out.push(n.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The S3 Object Lock bucket an S3 sink uploads sealed segments to.
#[derive(Debug, Clone)]
pub struct S3Archive {
    client: S3Client,
    prefix: String,
}

impl S3Archive {
    /// The archive of an S3 sink's configuration (loads its credentials now).
    pub fn new(cfg: &S3SinkConfig) -> Result<Self, RetentionError> {
        let client = S3Client::from_config(cfg).map_err(|reason| RetentionError::Archive {
            archive: format!("s3://{}", cfg.bucket),
            reason,
        })?;
        Ok(S3Archive {
            client,
            prefix: cfg.effective_prefix(),
        })
    }

    fn key(&self, segment: &str) -> String {
        format!("{}segments/{segment}", self.prefix)
    }

    fn err(&self, reason: impl std::fmt::Display) -> RetentionError {
        RetentionError::Archive {
            archive: self.label(),
            reason: reason.to_string(),
        }
    }
}

impl Archive for S3Archive {
    fn label(&self) -> String {
        format!("s3://{}/{}segments/", self.client.bucket(), self.prefix)
    }

    fn location(&self, segment: &str) -> String {
        format!("s3://{}/{}", self.client.bucket(), self.key(segment))
    }

    fn store(&self, segment: &str, _path: &Path, sha256: &str) -> Result<Held, RetentionError> {
        // The sink uploads (under Object Lock); here it is only confirmed.
        self.check(segment, sha256)
    }

    fn check(&self, segment: &str, sha256: &str) -> Result<Held, RetentionError> {
        let key = self.key(segment);
        let r = self
            .client
            .request("GET", &key, &[], &[], b"")
            .map_err(|e| self.err(e))?;
        match r.status {
            200 => {
                let got = hex::encode(Sha256::digest(&r.body));
                Ok(if got == sha256 {
                    Held::Yes
                } else {
                    Held::Mismatch(got)
                })
            }
            404 => Ok(Held::Missing),
            _ => Err(self.err(self.client.error(&format!("GET {key}"), &r))),
        }
    }

    fn delete(&self, segment: &str) -> Result<Deleted, RetentionError> {
        let until = self.locked_until(segment)?;
        Ok(Deleted::LeftToExpire(match until {
            Some(t) => format!(
                "{} stays under Object Lock until {t}: nobody can delete it before; it expires on its own (a bucket lifecycle rule removes expired versions)",
                self.location(segment)
            ),
            None => format!(
                "{} is not deleted by mcptrail: the bucket's Object Lock retention and lifecycle rules decide when it goes",
                self.location(segment)
            ),
        }))
    }

    fn list(&self) -> Result<Vec<String>, RetentionError> {
        let prefix = format!("{}segments/", self.prefix);
        let keys = self.client.list(&prefix).map_err(|e| self.err(e))?;
        Ok(keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(String::from))
            .collect())
    }

    fn deletes(&self) -> bool {
        false
    }

    fn locked_until(&self, segment: &str) -> Result<Option<OffsetDateTime>, RetentionError> {
        let key = self.key(segment);
        let r = self
            .client
            .request("HEAD", &key, &[], &[], b"")
            .map_err(|e| self.err(e))?;
        if r.status == 404 {
            return Ok(None);
        }
        if r.status != 200 {
            return Err(self.err(format!("HEAD {key}: HTTP {}", r.status)));
        }
        Ok(r.header("x-amz-object-lock-retain-until-date")
            .and_then(|v| {
                OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).ok()
            }))
    }
}
