//! Watching client configurations: what each file's servers looked like at the last look
//! (a fingerprint and whether mcptrail records it), and what changed since — a server
//! unwrapped, added without `mcptrail wrap`, wrapped, modified or removed. The state file
//! holds SHA-256 fingerprints of the entries, never their commands or arguments.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::client::Location;
use crate::servers::{ConfigFile, Status};
use crate::ClientsError;

const FORMAT: &str = "mcptrail-client-watch v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ServerState {
    fingerprint: String,
    recorded: bool,
}

/// What the watcher last saw, per file and server (`container/name`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchState {
    #[serde(default)]
    format: String,
    files: BTreeMap<PathBuf, BTreeMap<String, ServerState>>,
}

/// One server that changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerChange {
    /// Its name.
    pub server: String,
    /// Where in the file.
    pub container: String,
    /// `found` (first look at the file), `added`, `removed`, `wrapped`, `unwrapped` or
    /// `modified`.
    pub change: &'static str,
    /// Whether mcptrail records it now.
    pub recorded: bool,
}

/// The changes of one file since the last look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// The file.
    pub location: Location,
    /// The servers that changed, in file order (removed ones last).
    pub changes: Vec<ServerChange>,
    /// Names of the changed servers mcptrail does not record now.
    pub not_recorded: Vec<String>,
    /// First look at this file (every server is `found`).
    pub first_look: bool,
}

impl WatchState {
    /// The state in `path`; none yet is an empty state.
    pub fn load(path: &Path) -> Result<WatchState, ClientsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| ClientsError::Shape {
                path: path.to_path_buf(),
                message: format!("not a client-watch state ({e}); move it aside to start again"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(WatchState::default()),
            Err(source) => Err(ClientsError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Write it to `path` (0600, atomically).
    pub fn save(&mut self, path: &Path) -> Result<(), ClientsError> {
        self.format = FORMAT.to_string();
        let io = |source| ClientsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(".client-watch.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(
            serde_json::to_string_pretty(self)
                .expect("serialises")
                .as_bytes(),
        )
        .and_then(|_| f.sync_all())
        .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Look at `file` now; what changed since the last look (`None`: nothing, or a first
    /// look at a file whose servers are all recorded). `exists` as in [`crate::Server::status`].
    pub fn observe(
        &mut self,
        file: &ConfigFile,
        exists: impl Fn(&str) -> bool,
    ) -> Option<FileChange> {
        let now: Vec<(String, &crate::Server, ServerState)> = file
            .servers
            .iter()
            .map(|s| {
                let json = serde_json::to_string(s).expect("serialises");
                let st = ServerState {
                    fingerprint: hex(&Sha256::digest(json.as_bytes())),
                    recorded: s.status(&exists) == Status::Recorded,
                };
                (format!("{}/{}", s.container, s.name), s, st)
            })
            .collect();
        let before = self.files.get(&file.location.path);
        let first_look = before.is_none();
        let mut changes = Vec::new();
        for (key, s, st) in &now {
            let change = match before.and_then(|b| b.get(key)) {
                None if first_look => "found",
                None => "added",
                Some(old) if old == st => continue,
                Some(old) if old.recorded && !st.recorded => "unwrapped",
                Some(old) if !old.recorded && st.recorded => "wrapped",
                Some(_) => "modified",
            };
            changes.push(ServerChange {
                server: s.name.clone(),
                container: s.container.clone(),
                change,
                recorded: st.recorded,
            });
        }
        if let Some(b) = before {
            for (key, old) in b {
                if !now.iter().any(|(k, _, _)| k == key) {
                    let (container, name) = key.rsplit_once('/').unwrap_or(("", key));
                    changes.push(ServerChange {
                        server: name.to_string(),
                        container: container.to_string(),
                        change: "removed",
                        recorded: old.recorded,
                    });
                }
            }
        }
        self.files.insert(
            file.location.path.clone(),
            now.into_iter().map(|(k, _, st)| (k, st)).collect(),
        );
        let not_recorded: Vec<String> = changes
            .iter()
            .filter(|c| !c.recorded && c.change != "removed")
            .map(|c| c.server.clone())
            .collect();
        if changes.is_empty() || (first_look && not_recorded.is_empty()) {
            return None;
        }
        Some(FileChange {
            location: file.location.clone(),
            changes,
            not_recorded,
            first_look,
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, text: &str) -> ConfigFile {
        let path = dir.join("mcp.json");
        std::fs::write(&path, text).unwrap();
        ConfigFile::read(crate::given(path)).unwrap()
    }

    #[test]
    fn changes_since_the_last_look() {
        let dir = tempfile::tempdir().unwrap();
        let wrapped = r#"{"mcpServers": {"files": {"command": "/usr/bin/mcptrail", "args": ["wrap", "--", "npx", "server-filesystem", "/srv"]}, "web": {"command": "/usr/bin/mcptrail", "args": ["wrap", "--", "uvx", "mcp-server-fetch"]}}}"#;
        let yes = |_: &str| true;
        let mut st = WatchState::default();
        assert_eq!(
            st.observe(&file(dir.path(), wrapped), yes),
            None,
            "all recorded"
        );
        assert_eq!(
            st.observe(&file(dir.path(), wrapped), yes),
            None,
            "unchanged"
        );
        let unwrapped = r#"{"mcpServers": {"files": {"command": "npx", "args": ["server-filesystem", "/srv"]}, "web": {"command": "/usr/bin/mcptrail", "args": ["wrap", "--", "uvx", "mcp-server-fetch"]}, "new": {"command": "node", "args": ["x.js"]}}}"#;
        let c = st.observe(&file(dir.path(), unwrapped), yes).unwrap();
        let got: Vec<(&str, &str, bool)> = c
            .changes
            .iter()
            .map(|c| (c.server.as_str(), c.change, c.recorded))
            .collect();
        assert_eq!(
            got,
            [("files", "unwrapped", false), ("new", "added", false)]
        );
        assert_eq!(c.not_recorded, ["files", "new"]);
        assert!(!c.first_look);
        let c = st
            .observe(&file(dir.path(), r#"{"mcpServers": {}}"#), yes)
            .unwrap();
        assert_eq!(c.changes.len(), 3);
        assert!(c.changes.iter().all(|c| c.change == "removed"));
        assert!(c.not_recorded.is_empty());
        // Saved and loaded: the fingerprints, not the commands.
        let path = dir.path().join("state/watch.json");
        st.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("server-filesystem"), "{text}");
        assert_eq!(WatchState::load(&path).unwrap().files, st.files);
        // A first look at a file with an unrecorded server reports it.
        let mut fresh = WatchState::default();
        let c = fresh.observe(&file(dir.path(), unwrapped), yes).unwrap();
        assert!(c.first_look);
        assert_eq!(c.not_recorded, ["files", "new"]);
    }
}
