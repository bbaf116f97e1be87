//! Rolling files: one event per line (the ledger line, CEF or OCSF), rotated by size and age,
//! each file 0600.
//!
//! A batch is appended with one `write` and, by default, one `fdatasync` before it counts as
//! delivered. If the write fails (a full disk, say), the file is truncated back to where the
//! batch began, so a retry never leaves half a line in the middle of the file.
//!
//! Rotation renames the active file to `<path>.<UTC time>` (e.g.
//! `events.jsonl.20261125T105837.622267Z`) and starts a new one. Nothing is ever deleted:
//! pruning old files is left to the operator's retention tooling.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::config::FileSinkConfig;
use crate::error::{SendError, SendErrorKind};
use crate::format::encode_into;
use crate::sink::Sink;
use crate::tail::ShipRecord;

struct Active {
    file: File,
    len: u64,
    opened: SystemTime,
}

/// The rolling-file sink.
pub struct FileSink {
    cfg: FileSinkConfig,
    active: Option<Active>,
    buf: Vec<u8>,
}

fn transport(what: &str, path: &std::path::Path, e: &std::io::Error) -> SendError {
    SendError::new(
        SendErrorKind::Transport,
        format!("{what} {}: {e}", path.display()),
    )
}

impl FileSink {
    /// A sink writing to `cfg.path`.
    pub fn new(cfg: FileSinkConfig) -> Self {
        FileSink {
            cfg,
            active: None,
            buf: Vec::with_capacity(1 << 20),
        }
    }

    fn open(&mut self) -> Result<&mut Active, SendError> {
        if self.active.is_none() {
            let path = &self.cfg.path;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.exists() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .map_err(|e| transport("cannot create", dir, &e))?;
                }
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| transport("cannot open", path, &e))?;
            let meta = file
                .metadata()
                .map_err(|e| transport("cannot stat", path, &e))?;
            if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
                file.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| transport("cannot make private", path, &e))?;
            }
            let opened = meta
                .created()
                .or_else(|_| meta.modified())
                .unwrap_or_else(|_| SystemTime::now());
            self.active = Some(Active {
                file,
                len: meta.len(),
                opened,
            });
        }
        Ok(self.active.as_mut().expect("set above"))
    }

    fn rotated_name(&self) -> PathBuf {
        let now = time::OffsetDateTime::now_utc();
        let stamp = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}.{:06}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.microsecond()
        );
        let mut name = self.cfg.path.as_os_str().to_owned();
        name.push(format!(".{stamp}"));
        let mut candidate = PathBuf::from(&name);
        let mut n = 1;
        while candidate.exists() {
            let mut with_n = name.clone();
            with_n.push(format!(".{n}"));
            candidate = PathBuf::from(with_n);
            n += 1;
        }
        candidate
    }

    fn rotate_if_due(&mut self, incoming: u64) -> Result<(), SendError> {
        let max_bytes = self.cfg.max_bytes.max(1);
        let max_age =
            (self.cfg.max_age_secs > 0).then(|| Duration::from_secs(self.cfg.max_age_secs));
        let active = self.open()?;
        let too_big = active.len > 0 && active.len + incoming > max_bytes;
        let too_old = active.len > 0
            && max_age.is_some_and(|a| active.opened.elapsed().unwrap_or_default() >= a);
        if !(too_big || too_old) || !active.file.metadata().is_ok_and(|m| m.is_file()) {
            return Ok(());
        }
        active
            .file
            .sync_data()
            .map_err(|e| transport("cannot sync", &self.cfg.path, &e))?;
        let target = self.rotated_name();
        std::fs::rename(&self.cfg.path, &target)
            .map_err(|e| transport("cannot rotate", &self.cfg.path, &e))?;
        self.active = None;
        self.open()?;
        Ok(())
    }
}

impl Sink for FileSink {
    fn send(&mut self, batch: &[ShipRecord]) -> Result<(), SendError> {
        let format = self.cfg.format;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for rec in batch {
            encode_into(format, rec, &mut buf)?;
            buf.push(b'\n');
        }
        let result = (|| {
            self.rotate_if_due(buf.len() as u64)?;
            let fsync = self.cfg.fsync;
            let path = self.cfg.path.clone();
            let active = self.open()?;
            let before = active.len;
            let written = active.file.write_all(&buf).and_then(|()| {
                if fsync {
                    active.file.sync_data()
                } else {
                    Ok(())
                }
            });
            match written {
                Ok(()) => {
                    active.len += buf.len() as u64;
                    Ok(())
                }
                Err(e) => {
                    // Leave no partial line behind: the retry appends the batch again.
                    let _ = active.file.set_len(before);
                    self.active = None;
                    Err(transport("cannot write", &path, &e))
                }
            }
        })();
        self.buf = buf;
        result
    }

    fn probe(&mut self) -> Result<String, SendError> {
        self.open()?;
        Ok(format!("{} is writable", self.cfg.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PayloadFormat;

    fn rec(seq: u64) -> ShipRecord {
        ShipRecord::from_line(
            format!(r#"{{"seq":{seq},"event_id":"e{seq}","kind":"mcp.request","time":"2026-11-25T10:00:00Z"}}"#)
                .into_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn rotates_by_size_and_keeps_every_line_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/events.jsonl");
        let mut s = FileSink::new(FileSinkConfig {
            path: path.clone(),
            max_bytes: 300,
            max_age_secs: 0,
            fsync: true,
            format: PayloadFormat::Json,
        });
        for seq in 1..=20 {
            s.send(&[rec(seq)]).unwrap();
        }
        let mut lines = Vec::new();
        let mut files = 0;
        for e in std::fs::read_dir(path.parent().unwrap()).unwrap() {
            let p = e.unwrap().path();
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.len() <= 300, "{} is {} bytes", p.display(), text.len());
            lines.extend(text.lines().map(str::to_string));
            files += 1;
        }
        assert!(files > 3, "rotated into {files} files");
        lines.sort_by_key(|l| ShipRecord::from_line(l.clone().into_bytes()).unwrap().seq);
        assert_eq!(lines.len(), 20);
        assert_eq!(lines[0], String::from_utf8(rec(1).line).unwrap());
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn rotates_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut s = FileSink::new(FileSinkConfig {
            path: path.clone(),
            max_bytes: 1 << 30,
            max_age_secs: 60,
            fsync: false,
            format: PayloadFormat::Json,
        });
        s.send(&[rec(1)]).unwrap();
        s.send(&[rec(2)]).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "young: no rotation"
        );
        // The active file was opened a minute ago.
        s.active.as_mut().unwrap().opened = SystemTime::now() - Duration::from_secs(61);
        s.send(&[rec(3)]).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(names[0], "events.jsonl");
        assert!(
            names[1].starts_with("events.jsonl.") && names[1].ends_with('Z'),
            "{names:?}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&names[1]))
                .unwrap()
                .lines()
                .count(),
            2
        );
    }

    #[test]
    fn a_full_disk_is_a_retryable_error_naming_the_cause() {
        let mut s = FileSink::new(FileSinkConfig {
            path: "/dev/full".into(),
            max_bytes: 1 << 20,
            max_age_secs: 0,
            fsync: false,
            format: PayloadFormat::Json,
        });
        let e = s.send(&[rec(1), rec(2)]).unwrap_err();
        assert_eq!(e.kind, SendErrorKind::Transport);
        assert!(e.message.contains("No space left on device"), "{e}");
    }
}
