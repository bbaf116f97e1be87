//! Small private files written atomically (cursors, proofs, progress markers): the one place
//! that knows the recipe, so every consumer of the ledger gets the same crash behaviour.
//!
//! The recipe: a temporary file `.<name>.tmp` next to the target, created 0600 (and set to
//! 0600 again, in case an older temporary file had another mode), written, `fdatasync`ed,
//! renamed over the target, then the directory `fsync`ed so the rename itself survives a
//! crash. A crash at any point leaves either the old file or the new one, never a mix; a
//! half-written temporary file is harmless and overwritten by the next write.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A step of [`write_private_atomic`] or [`create_private_dir`] failed on `path`.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct PrivateFileError {
    /// The file or directory the failing step worked on (the temporary file, the target or
    /// the directory).
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> PrivateFileError + '_ {
    move |source| PrivateFileError {
        path: path.to_path_buf(),
        source,
    }
}

/// Create `dir` (and missing parents) with mode 0700; an existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> Result<(), PrivateFileError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(at(dir))
}

/// Replace the file at `path` by `bytes`, atomically and durably, readable by the owner only
/// (0600). The directory must exist (see [`create_private_dir`]).
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), PrivateFileError> {
    let name = path.file_name().ok_or_else(|| PrivateFileError {
        path: path.to_path_buf(),
        source: std::io::Error::other("not a file name"),
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(at(&tmp))?;
    // An older temp file may have been created with another mode.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(at(&tmp))?;
    f.write_all(bytes).map_err(at(&tmp))?;
    f.sync_data().map_err(at(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(at(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn replaces_the_file_privately_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_private_dir(&sub).unwrap();
        assert_eq!(mode(&sub), 0o700);
        let path = sub.join("x.cursor");
        // A world-readable file in the way, and a stale temp file with another mode.
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(sub.join(".x.cursor.tmp"), b"{\"half").unwrap();
        std::fs::set_permissions(
            sub.join(".x.cursor.tmp"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        write_private_atomic(&path, b"new\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
        assert_eq!(mode(&path), 0o600);
        let names: Vec<_> = std::fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["x.cursor".to_string()]);
    }

    #[test]
    fn a_missing_directory_names_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_private_atomic(&dir.path().join("nope/f"), b"x").unwrap_err();
        assert!(e.path.ends_with("nope/.f.tmp"), "{e}");
        assert_eq!(e.source.kind(), std::io::ErrorKind::NotFound);
    }
}
