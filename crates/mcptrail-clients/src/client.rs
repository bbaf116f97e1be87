//! The MCP clients mcptrail knows, where each keeps its server list on disk, and in which
//! member of the file.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// An MCP client application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    /// Claude Desktop: `claude_desktop_config.json`, `mcpServers`.
    ClaudeDesktop,
    /// Claude Code: `~/.claude.json` (`mcpServers`, and per project under `projects`) and a
    /// project's `.mcp.json`.
    ClaudeCode,
    /// Cursor: `~/.cursor/mcp.json` and a project's `.cursor/mcp.json`, `mcpServers`.
    Cursor,
    /// VS Code: a workspace's `.vscode/mcp.json` and the user's `mcp.json` (`servers`), and
    /// user `settings.json` (`mcp.servers`).
    VsCode,
    /// Windsurf: `~/.codeium/windsurf/mcp_config.json`, `mcpServers`.
    Windsurf,
    /// A file given by path that matches none of the above.
    Other,
}

impl ClientKind {
    /// The name shown to users.
    pub fn label(self) -> &'static str {
        match self {
            ClientKind::ClaudeDesktop => "Claude Desktop",
            ClientKind::ClaudeCode => "Claude Code",
            ClientKind::Cursor => "Cursor",
            ClientKind::VsCode => "VS Code",
            ClientKind::Windsurf => "Windsurf",
            ClientKind::Other => "MCP config",
        }
    }

    /// The client a file belongs to, judged by its path (for files given by path).
    pub fn from_path(path: &Path) -> ClientKind {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let parent = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("");
        match (parent, name) {
            (_, "claude_desktop_config.json") => ClientKind::ClaudeDesktop,
            (_, ".claude.json") | (_, ".mcp.json") => ClientKind::ClaudeCode,
            (".cursor", "mcp.json") => ClientKind::Cursor,
            (".vscode", "mcp.json") | ("User", "mcp.json") | ("User", "settings.json") => {
                ClientKind::VsCode
            }
            ("windsurf", "mcp_config.json") => ClientKind::Windsurf,
            _ => ClientKind::Other,
        }
    }
}

/// Where a file's servers live: a path of member names from the root, `*` standing for every
/// member of an object (Claude Code's `projects`).
pub(crate) fn server_containers(
    kind: ClientKind,
    path: &Path,
) -> &'static [&'static [&'static str]] {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match kind {
        ClientKind::ClaudeCode if name == ".claude.json" => {
            &[&["mcpServers"], &["projects", "*", "mcpServers"]]
        }
        ClientKind::VsCode if name == "settings.json" => &[&["mcp", "servers"]],
        ClientKind::VsCode => &[&["servers"]],
        ClientKind::Other => &[
            &["mcpServers"],
            &["servers"],
            &["mcp", "servers"],
            &["projects", "*", "mcpServers"],
        ],
        _ => &[&["mcpServers"]],
    }
}

/// Whether a file is the user's or a project's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// In the user's home or application-data directories.
    User,
    /// In a project directory.
    Project,
    /// Given on the command line.
    Given,
}

/// A place a client configuration may be.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Location {
    /// The client.
    pub client: ClientKind,
    /// User, project, or given by path.
    pub scope: Scope,
    /// The file.
    pub path: PathBuf,
}

/// The directories the search starts from; taken from the environment by
/// [`SearchRoots::from_env`], set by hand in tests.
#[derive(Debug, Clone, Default)]
pub struct SearchRoots {
    /// The user's home directory.
    pub home: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME` (default `~/.config`): Linux application settings.
    pub config_home: Option<PathBuf>,
    /// `%APPDATA%` on Windows.
    pub app_data: Option<PathBuf>,
    /// Project directories whose project-level files are looked at.
    pub projects: Vec<PathBuf>,
}

impl SearchRoots {
    /// Home, XDG config home and `APPDATA` from the environment; `project` (usually the
    /// current directory) as the one project.
    pub fn from_env(project: Option<PathBuf>) -> SearchRoots {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = var("HOME").or_else(|| var("USERPROFILE"));
        SearchRoots {
            config_home: var("XDG_CONFIG_HOME")
                .or_else(|| home.as_ref().map(|h| h.join(".config"))),
            app_data: var("APPDATA"),
            home,
            projects: project.into_iter().collect(),
        }
    }

    /// Every place a known client may keep its configuration, whether or not it exists,
    /// without duplicates.
    pub fn candidates(&self) -> Vec<Location> {
        let mut out = Vec::new();
        let mut user = |client, path: PathBuf| {
            out.push(Location {
                client,
                scope: Scope::User,
                path,
            })
        };
        if let Some(home) = &self.home {
            let mac = home.join("Library/Application Support");
            user(
                ClientKind::ClaudeDesktop,
                mac.join("Claude/claude_desktop_config.json"),
            );
            user(ClientKind::ClaudeCode, home.join(".claude.json"));
            user(ClientKind::Cursor, home.join(".cursor/mcp.json"));
            user(
                ClientKind::Windsurf,
                home.join(".codeium/windsurf/mcp_config.json"),
            );
            user(ClientKind::VsCode, mac.join("Code/User/settings.json"));
            user(ClientKind::VsCode, mac.join("Code/User/mcp.json"));
        }
        // Linux (`$XDG_CONFIG_HOME`) and Windows (`%APPDATA%`) lay the apps out alike.
        for base in [&self.config_home, &self.app_data].into_iter().flatten() {
            user(
                ClientKind::ClaudeDesktop,
                base.join("Claude/claude_desktop_config.json"),
            );
            user(ClientKind::VsCode, base.join("Code/User/settings.json"));
            user(ClientKind::VsCode, base.join("Code/User/mcp.json"));
        }
        for p in &self.projects {
            for (client, rel) in [
                (ClientKind::ClaudeCode, ".mcp.json"),
                (ClientKind::Cursor, ".cursor/mcp.json"),
                (ClientKind::VsCode, ".vscode/mcp.json"),
            ] {
                out.push(Location {
                    client,
                    scope: Scope::Project,
                    path: p.join(rel),
                });
            }
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|l| seen.insert(l.path.clone()));
        out
    }

    /// The candidates that exist as files.
    pub fn existing(&self) -> Vec<Location> {
        self.candidates()
            .into_iter()
            .filter(|l| l.path.is_file())
            .collect()
    }
}

/// A file given by path: its client judged by its name.
pub fn given(path: PathBuf) -> Location {
    Location {
        client: ClientKind::from_path(&path),
        scope: Scope::Given,
        path,
    }
}
