//! Rewriting a configuration file: wrap each chosen stdio server in `mcptrail wrap`, or undo
//! it. Every edit is a splice of the server entry's own text — comments, formatting and every
//! other byte of the file stay as they are — and undoing restores the entry byte for byte
//! (from the install record; without one, from the wrapped command line itself).
//!
//! A wrapped entry keeps its `env`, `cwd` and every other member; only `command` becomes the
//! mcptrail executable and `args` gains `"wrap", [options…,] "--", <the old command>` in
//! front of the old arguments, in the array's own layout (one per line if it had one per
//! line).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use jsonc_parser::ast::{Object, Value};
use jsonc_parser::common::Ranged;
use serde::{Deserialize, Serialize};

use crate::client::Location;
use crate::error::ClientsError;
use crate::servers::{parse_root, prop, range_of, wrapped, ConfigFile, Server, Transport};

/// How to run mcptrail in a wrapped entry.
#[derive(Debug, Clone)]
pub struct WrapSpec {
    /// The mcptrail executable (an absolute path: clients start servers with a minimal PATH).
    pub mcptrail: String,
    /// Options between `wrap` and `--`, e.g. `["--data-dir", "/srv/mcptrail"]`.
    pub wrap_args: Vec<String>,
}

/// Which servers of a file to change.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Every server.
    All,
    /// These names only.
    Named(Vec<String>),
}

impl Selection {
    fn wants(&self, name: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::Named(names) => names.iter().any(|n| n == name),
        }
    }
}

/// One server entry changed.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Server name.
    pub server: String,
    /// Where in the file.
    pub container: String,
    /// The entry's text before.
    pub before: String,
    /// The entry's text after.
    pub after: String,
    /// Restored from the install record (byte for byte) rather than from the command line.
    pub exact: bool,
}

/// One server left alone, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skip {
    /// Server name.
    pub server: String,
    /// Where in the file.
    pub container: String,
    /// Why it was not changed.
    pub reason: String,
}

/// The edits for one file, not yet written.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The file.
    pub location: Location,
    /// Its text as read.
    pub original: String,
    /// Its text after the changes.
    pub text: String,
    /// The servers changed.
    pub changes: Vec<Change>,
    /// The servers selected but left alone.
    pub skipped: Vec<Skip>,
}

impl Plan {
    /// Whether writing it would change nothing.
    pub fn is_noop(&self) -> bool {
        self.text == self.original
    }

    /// A unified diff of the file, for `--dry-run`.
    pub fn diff(&self) -> String {
        let name = self.location.path.display().to_string();
        similar::TextDiff::from_lines(&self.original, &self.text)
            .unified_diff()
            .context_radius(3)
            .header(&name, &name)
            .to_string()
    }

    /// The install records this plan creates (one per wrapped server).
    pub fn records(&self, installed_at: &str) -> Vec<InstallRecord> {
        self.changes
            .iter()
            .map(|c| InstallRecord {
                path: self.location.path.clone(),
                container: c.container.clone(),
                server: c.server.clone(),
                original: c.before.clone(),
                wrapped: c.after.clone(),
                installed_at: installed_at.to_string(),
            })
            .collect()
    }
}

/// Plan wrapping the selected stdio servers of `file`. Servers already wrapped are left
/// alone (installing twice changes nothing).
pub fn plan_install(
    file: &ConfigFile,
    spec: &WrapSpec,
    selection: &Selection,
) -> Result<Plan, ClientsError> {
    plan(file, selection, |s: &Server, entry_text: &str| {
        if s.wrapped.is_some() {
            return Err("already recorded (runs through mcptrail wrap)".into());
        }
        match s.transport {
            Transport::Stdio => wrap_entry(entry_text, spec).map(|t| (t, false)),
            Transport::Http | Transport::Sse => {
                Err("HTTP server: left as is until `mcptrail gateway` exists to record it".into())
            }
            Transport::Unknown => Err("neither a command nor a URL: left as is".into()),
        }
    })
}

/// Plan unwrapping the selected servers of `file` that `mcptrail install` wrapped: each is
/// restored from its install record when the entry is still exactly what install wrote, else
/// from its command line. Entries wrapped without a record (by hand, or records lost) are
/// left alone unless `force`.
pub fn plan_uninstall(
    file: &ConfigFile,
    records: &[InstallRecord],
    selection: &Selection,
    force: bool,
) -> Result<Plan, ClientsError> {
    plan(file, selection, |s: &Server, entry_text: &str| {
        if s.wrapped.is_none() {
            return Err("not wrapped: nothing to undo".into());
        }
        let mine = |r: &&InstallRecord| {
            r.path == file.location.path && r.container == s.container && r.server == s.name
        };
        match records.iter().rev().filter(mine).find(|r| r.wrapped == entry_text) {
            Some(r) => Ok((r.original.clone(), true)),
            None if force || records.iter().any(|r| mine(&r)) => {
                unwrap_entry(entry_text).map(|t| (t, false))
            }
            None => Err("wrapped, but not by `mcptrail install` (no install record): left as is; --force unwraps it".into()),
        }
    })
}

fn plan(
    file: &ConfigFile,
    selection: &Selection,
    edit: impl Fn(&Server, &str) -> Result<(String, bool), String>,
) -> Result<Plan, ClientsError> {
    if let Selection::Named(names) = selection {
        for n in names {
            if !file.servers.iter().any(|s| &s.name == n) {
                return Err(ClientsError::Shape {
                    path: file.location.path.clone(),
                    message: format!("no server named {n:?} in this file"),
                });
            }
        }
    }
    let mut text = file.text.clone();
    let mut changes = Vec::new();
    let mut skipped = Vec::new();
    // Back to front, so earlier ranges stay valid.
    for s in file.servers.iter().rev() {
        if !selection.wants(&s.name) {
            continue;
        }
        let (start, end) = s.range;
        let before = &file.text[start..end];
        match edit(s, before) {
            Ok((after, exact)) => {
                text.replace_range(start..end, &after);
                changes.push(Change {
                    server: s.name.clone(),
                    container: s.container.clone(),
                    before: before.to_string(),
                    after,
                    exact,
                });
            }
            Err(reason) => skipped.push(Skip {
                server: s.name.clone(),
                container: s.container.clone(),
                reason,
            }),
        }
    }
    changes.reverse();
    skipped.reverse();
    // What we write must read back as the same servers, changed as planned.
    parse_root(&file.location.path, &text)?;
    Ok(Plan {
        location: file.location.clone(),
        original: file.text.clone(),
        text,
        changes,
        skipped,
    })
}

fn entry_object<'a>(entry: &'a str) -> Result<Object<'a>, String> {
    match parse_root(Path::new("entry"), entry) {
        Ok(Some(Value::Object(o))) => Ok(o),
        _ => Err("the entry is not a JSON object".into()),
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// The leading whitespace of the line `pos` is on, if only whitespace precedes it there.
fn indent_at(text: &str, pos: usize) -> Option<&str> {
    let line_start = text[..pos].rfind('\n')? + 1;
    let lead = &text[line_start..pos];
    lead.chars().all(|c| c == ' ' || c == '\t').then_some(lead)
}

/// `entry` (a server's `{…}`) with its command run through mcptrail.
pub fn wrap_entry(entry: &str, spec: &WrapSpec) -> Result<String, String> {
    let o = entry_object(entry)?;
    let cmd = prop(&o, "command").ok_or("no \"command\"")?;
    if cmd.value.as_string_lit().is_none() {
        return Err("\"command\" is not a string".into());
    }
    let (cs, ce) = range_of(&cmd.value);
    let mut elems: Vec<String> = std::iter::once("wrap")
        .chain(spec.wrap_args.iter().map(String::as_str))
        .chain(std::iter::once("--"))
        .map(json_str)
        .collect();
    elems.push(entry[cs..ce].to_string());
    // (position, end of the replaced text, new text), applied back to front.
    let mut edits: Vec<(usize, usize, String)> = vec![(cs, ce, json_str(&spec.mcptrail))];
    match prop(&o, "args").map(|p| &p.value) {
        Some(Value::Array(a)) => match a.elements.first() {
            Some(first) => {
                let at = first.range().start;
                let sep = match indent_at(entry, at) {
                    Some(indent) if entry[a.range.start..at].contains('\n') => {
                        format!(",\n{indent}")
                    }
                    _ => ", ".to_string(),
                };
                edits.push((at, at, format!("{}{sep}", elems.join(&sep))));
            }
            None => {
                let at = a.range.start + 1;
                edits.push((at, at, elems.join(", ")));
            }
        },
        Some(_) => return Err("\"args\" is not an array".into()),
        None => {
            let at = cmd.range.end;
            let sep = match indent_at(entry, cmd.range.start) {
                Some(indent) => format!("\n{indent}"),
                None => " ".to_string(),
            };
            edits.push((at, at, format!(",{sep}\"args\": [{}]", elems.join(", "))));
        }
    }
    Ok(apply_edits(entry, edits))
}

/// `entry` with `mcptrail wrap … --` taken off its command line: the inverse of
/// [`wrap_entry`] (byte for byte, except that an `args` install added stays, empty).
pub fn unwrap_entry(entry: &str) -> Result<String, String> {
    let o = entry_object(entry)?;
    let cmd = prop(&o, "command").ok_or("no \"command\"")?;
    let Some(Value::Array(a)) = prop(&o, "args").map(|p| &p.value) else {
        return Err("no \"args\" array".into());
    };
    let is = |i: usize, s: &str| {
        a.elements
            .get(i)
            .and_then(|v| v.as_string_lit())
            .is_some_and(|l| l.value == s)
    };
    let command = cmd.value.as_string_lit().map(|l| l.value.to_string());
    let args: Vec<String> = a
        .elements
        .iter()
        .map(|v| {
            v.as_string_lit()
                .map(|l| l.value.to_string())
                .unwrap_or_default()
        })
        .collect();
    // `wrapped` also checks that the first argument is `wrap`.
    if command.as_deref().and_then(|c| wrapped(c, &args)).is_none() {
        return Err("not an `mcptrail wrap` command line".into());
    }
    let dashes = (0..a.elements.len())
        .find(|&i| is(i, "--"))
        .ok_or("no \"--\" before the server command: edit this entry by hand")?;
    let inner = a
        .elements
        .get(dashes + 1)
        .filter(|v| v.as_string_lit().is_some())
        .ok_or("no server command after \"--\"")?;
    let (is_, ie) = range_of(inner);
    let first = a.elements[0].range().start;
    let cut_end = match a.elements.get(dashes + 2) {
        Some(next) => next.range().start,
        None => ie,
    };
    let (cs, ce) = range_of(&cmd.value);
    let edits = vec![
        (cs, ce, entry[is_..ie].to_string()),
        (first, cut_end, String::new()),
    ];
    Ok(apply_edits(entry, edits))
}

fn apply_edits(text: &str, mut edits: Vec<(usize, usize, String)>) -> String {
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = text.to_string();
    for (start, end, new) in edits {
        out.replace_range(start..end, &new);
    }
    out
}

/// What install changed in one server entry, kept so uninstall can restore it exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallRecord {
    /// The configuration file.
    pub path: PathBuf,
    /// Where in the file.
    pub container: String,
    /// Server name.
    pub server: String,
    /// The entry's text before install.
    pub original: String,
    /// The entry's text install wrote.
    pub wrapped: String,
    /// When (RFC 3339).
    pub installed_at: String,
}

/// The install records of a data directory: one JSON file, 0600.
#[derive(Debug)]
pub struct RecordStore {
    path: PathBuf,
    /// The records, oldest first.
    pub records: Vec<InstallRecord>,
}

impl RecordStore {
    /// Load `path` (no file: no records).
    pub fn load(path: PathBuf) -> Result<RecordStore, ClientsError> {
        let records = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| ClientsError::Shape {
                path: path.clone(),
                message: format!("the install records are not readable ({e}); move the file away to continue without them"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(ClientsError::io(&path)(e)),
        };
        Ok(RecordStore { path, records })
    }

    /// Write the records back (0600, through a temporary file).
    pub fn save(&self) -> Result<(), ClientsError> {
        let body = serde_json::to_vec_pretty(&self.records).expect("records serialise");
        write_atomic(&self.path, &body, 0o600)
    }
}

/// The result of writing a plan.
#[derive(Debug, Clone)]
pub struct Written {
    /// The copy of the file as it was before.
    pub backup: PathBuf,
}

/// Write `plan` to its file: first a backup of the file as read into `backup_dir` (0600),
/// then the new text through a temporary file and a rename, keeping the file's permissions.
/// Refuses (and writes nothing) when the file changed since it was read.
pub fn write_plan(plan: &Plan, backup_dir: &Path, stamp: &str) -> Result<Written, ClientsError> {
    let path = &plan.location.path;
    let now = std::fs::read(path).map_err(ClientsError::io(path))?;
    if now != plan.original.as_bytes() {
        return Err(ClientsError::Changed { path: path.clone() });
    }
    std::fs::create_dir_all(backup_dir).map_err(ClientsError::io(backup_dir))?;
    let _ = std::fs::set_permissions(backup_dir, std::fs::Permissions::from_mode(0o700));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let mut backup = backup_dir.join(format!("{name}.{stamp}.bak"));
    let mut n = 1;
    while backup.exists() {
        n += 1;
        backup = backup_dir.join(format!("{name}.{stamp}.{n}.bak"));
    }
    write_new(&backup, plan.original.as_bytes(), 0o600)?;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .map_err(ClientsError::io(path))?;
    write_atomic(path, plan.text.as_bytes(), mode)?;
    Ok(Written { backup })
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ClientsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(ClientsError::io(path))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(ClientsError::io(path))
}

/// Replace `path` with `bytes` through a temporary file in the same directory.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ClientsError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(ClientsError::io(dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".mcptrail-")
        .tempfile_in(dir)
        .map_err(ClientsError::io(dir))?;
    tmp.write_all(bytes)
        .and_then(|_| {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(mode))
        })
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(ClientsError::io(path))?;
    tmp.persist(path)
        .map_err(|e| ClientsError::io(path)(e.error))?;
    Ok(())
}
