//! Shared fixtures for mcptrail integration tests: where the workspace, the
//! built binaries and the pinned peer servers live, plus a temp data dir.
//!
//! The library uses `std` and `tempfile`, plus, for the sink fixtures in [`sinks`], the
//! ledger and event crates, `tiny_http` and the HMAC crates; the rmcp/tokio dependencies of
//! this package exist for the binaries in `src/bin/` only.
//!
//! Peer servers (`@modelcontextprotocol/server-everything`, the Python venv)
//! are installed by `.ci/install-peers.sh` into [`peers_dir`]. The accessors
//! panic with an actionable message when a peer is missing: tests that need a
//! peer never skip silently.

pub mod destinations;
pub mod fetch;
pub mod fleet;
pub mod otlp;
pub mod siem;
pub mod sinks;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

/// Environment variable overriding the peers directory.
pub const PEERS_DIR_ENV: &str = "MCPTRAIL_PEERS_DIR";

/// Entry script of `@modelcontextprotocol/server-filesystem`, relative to [`peers_dir`]; its
/// arguments are the directories it may use.
pub const SERVER_FILESYSTEM_ENTRY: &str =
    "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js";

/// Entry script of `@modelcontextprotocol/server-everything`, relative to
/// [`peers_dir`]. Its first CLI argument selects the transport (`stdio`,
/// `sse`, `streamableHttp`).
pub const SERVER_EVERYTHING_ENTRY: &str =
    "node_modules/@modelcontextprotocol/server-everything/dist/index.js";

/// Binaries built from this package (`mcptrail-test-support`).
const TEST_SUPPORT_BINS: &[&str] = &["rmcp-echo-server", "rmcp-client", "mcp-bench"];

/// The workspace root (two levels above this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("{} has no grandparent directory", manifest.display()))
}

/// The `target/<profile>` directory the running executable was built into.
///
/// Test executables live in `target/<profile>/deps/`; binaries run directly
/// (e.g. via `cargo run`) live in `target/<profile>/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("cannot determine the current executable path");
    let dir = exe
        .parent()
        .unwrap_or_else(|| panic!("{} has no parent directory", exe.display()));
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn package_of(bin: &str) -> &'static str {
    if TEST_SUPPORT_BINS.contains(&bin) {
        "mcptrail-test-support"
    } else if bin == "mcptrail" {
        "mcptrail"
    } else {
        panic!(
            "target_bin: unknown binary {bin:?}; known: mcptrail, {}",
            TEST_SUPPORT_BINS.join(", ")
        )
    }
}

/// Path of binary `name` built into the same `target/<profile>/` directory as
/// the running test executable.
///
/// Known names: `mcptrail` (package `mcptrail`) and `rmcp-echo-server`,
/// `rmcp-client`, `mcp-bench` (package `mcptrail-test-support`). If the binary
/// is missing, runs `cargo build -p <pkg> --bin <name>` (with the matching
/// profile) once per process and panics if that fails. An existing binary is
/// used as is, so a stale one is not rebuilt: build it first when in doubt.
pub fn target_bin(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);

    let package = package_of(name);
    let profile_dir = profile_dir();
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        return path;
    }

    // Serialise builds so concurrent tests do not all invoke cargo.
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    let built = built.get_or_insert_with(HashSet::new);
    if path.is_file() {
        return path;
    }
    if !built.insert(name.to_owned()) {
        panic!(
            "{} is still missing although `cargo build -p {package} --bin {name}` already ran in this process",
            path.display()
        );
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet", "-p", package, "--bin", name]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("failed to run {cmd:?} to build {name}: {e}"));
    if !status.success() {
        panic!("building binary {name:?} failed ({status}): {cmd:?}");
    }
    if !path.is_file() {
        panic!(
            "{cmd:?} succeeded but {} does not exist (cross-compiling or custom target layout?)",
            path.display()
        );
    }
    path
}

/// Directory holding the pinned peer servers: `$MCPTRAIL_PEERS_DIR`, or
/// `<workspace_root>/.ci/peers` when unset.
pub fn peers_dir() -> PathBuf {
    match std::env::var_os(PEERS_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join(".ci").join("peers"),
    }
}

fn require_peer(path: PathBuf, what: &str) -> PathBuf {
    if !path.exists() {
        panic!(
            "{what} not found at {}. Install the test peers with `.ci/install-peers.sh` \
             (or point {PEERS_DIR_ENV} at a directory holding them).",
            path.display()
        );
    }
    path
}

/// Command line that runs `@modelcontextprotocol/server-everything` over stdio:
/// `["node", "<peers>/node_modules/@modelcontextprotocol/server-everything/dist/index.js", "stdio"]`.
///
/// Panics if the package is not installed.
pub fn server_everything_cmd() -> Vec<String> {
    let entry = require_peer(
        peers_dir().join(SERVER_EVERYTHING_ENTRY),
        "@modelcontextprotocol/server-everything",
    );
    vec![
        "node".to_owned(),
        entry.to_string_lossy().into_owned(),
        "stdio".to_owned(),
    ]
}

/// Command line that runs `@modelcontextprotocol/server-filesystem` over stdio, allowed to
/// read and write under `root`.
///
/// Panics if the package is not installed.
pub fn server_filesystem_cmd(root: &Path) -> Vec<String> {
    let entry = require_peer(
        peers_dir().join(SERVER_FILESYSTEM_ENTRY),
        "@modelcontextprotocol/server-filesystem",
    );
    vec![
        "node".to_owned(),
        entry.to_string_lossy().into_owned(),
        root.to_string_lossy().into_owned(),
    ]
}

/// Command line that runs the reference fetch server (`mcp-server-fetch`, PyPI) over stdio
/// from the peers virtualenv, with `args` (e.g. `--ignore-robots-txt`).
///
/// Panics if the virtualenv is not installed.
pub fn server_fetch_cmd(args: &[&str]) -> Vec<String> {
    let mut cmd = vec![
        python_peer().to_string_lossy().into_owned(),
        "-m".to_owned(),
        "mcp_server_fetch".to_owned(),
    ];
    cmd.extend(args.iter().map(|a| a.to_string()));
    cmd
}

/// The Python interpreter of the peers virtualenv, `<peers>/venv/bin/python`.
///
/// Panics if the virtualenv is not installed.
pub fn python_peer() -> PathBuf {
    require_peer(
        peers_dir().join("venv").join("bin").join("python"),
        "Python peer virtualenv",
    )
}

/// A temporary data directory removed on drop.
#[derive(Debug)]
pub struct TempDataDir {
    dir: tempfile::TempDir,
}

impl TempDataDir {
    /// Creates a fresh empty directory under the system temp dir.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mcptrail-test-")
            .tempdir()
            .expect("failed to create a temporary data directory");
        Self { dir }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the directory on disk (e.g. to inspect a failing test) and
    /// returns its path.
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

impl Default for TempDataDir {
    fn default() -> Self {
        Self::new()
    }
}

impl AsRef<Path> for TempDataDir {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn target_bin_resolves_into_the_profile_dir() {
        assert_eq!(package_of("mcptrail"), "mcptrail");
        assert_eq!(package_of("mcp-bench"), "mcptrail-test-support");
        let dir = profile_dir();
        assert!(dir.join("deps").is_dir(), "{} has no deps/", dir.display());
    }

    #[test]
    fn temp_data_dir_is_removed_on_drop() {
        let dir = TempDataDir::new();
        let path = dir.path().to_path_buf();
        assert!(path.is_dir());
        drop(dir);
        assert!(!path.exists());
    }
}

/// An MCP server (or test upstream) listening on a loopback HTTP port, killed on drop.
#[derive(Debug)]
pub struct HttpPeer {
    child: std::process::Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl HttpPeer {
    /// `@modelcontextprotocol/server-everything` over `transport` (`streamableHttp`, its
    /// endpoint `/mcp`; or `sse`, endpoints `/sse` and `/message`) on a free port.
    ///
    /// Panics if the package is missing or the server does not listen within 20 s.
    pub fn everything(transport: &str) -> Self {
        let entry = require_peer(
            peers_dir().join(SERVER_EVERYTHING_ENTRY),
            "@modelcontextprotocol/server-everything",
        );
        let port = free_port();
        let child = Command::new("node")
            .arg(entry)
            .arg(transport)
            .env("PORT", port.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning node for server-everything: {e}"));
        let peer = HttpPeer { child, port };
        peer.wait_listening();
        peer
    }

    /// `peers/http_upstream.py` (see its docstring for the paths it serves) on a free port.
    pub fn test_upstream(args: &[&str]) -> Self {
        use std::io::BufRead;
        let script = workspace_root().join("crates/mcptrail-test-support/peers/http_upstream.py");
        let mut child = Command::new(python_peer())
            .arg(script)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning http_upstream.py: {e}"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("reading the upstream's port");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("http_upstream.py printed {line:?}, not `PORT <n>`"));
        HttpPeer { child, port }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_listening(&self) {
        wait_listening(self.port, "the HTTP peer");
    }
}

/// Wait up to 20 s until something accepts connections on 127.0.0.1:`port`; panics naming
/// `what` otherwise.
pub fn wait_listening(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within 20 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Drop for HttpPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port free on 127.0.0.1 right now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat` (`"self"` for this
/// one), in seconds (benchmarks).
pub fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}
