//! `mcptrail scan`, `install` and `uninstall`: find the MCP client configurations on this
//! machine, report which servers are recorded, wrap them in `mcptrail wrap`, and undo it.
//! The work is in `mcptrail-clients`; this module chooses the files, prints, and records each
//! change as a `system.config` event naming who made it. Also the client scan of detection
//! (`detect --scan-clients`, `[detect.clients] scan_every`): changes made outside mcptrail,
//! recorded as `system.config` events too.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use mcptrail_clients::{
    given, plan_install, plan_uninstall, write_plan, ConfigFile, FileChange, Location, Plan,
    RecordStore, SearchRoots, Selection, Status, WatchState, WrapSpec,
};
use mcptrail_event::{Event, EventKind};
use mcptrail_ledger::{Ledger, LedgerConfig};
use serde_json::json;

/// Where install keeps its records and backups, under the data directory.
const INSTALL_DIR: &str = "install";

#[derive(clap::Args, Debug)]
pub(crate) struct ScanArgs {
    /// Configuration files to read instead of searching the usual places.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The project whose `.mcp.json`, `.cursor/mcp.json` and `.vscode/mcp.json` are read
    /// (default: the current directory).
    #[arg(long, value_name = "DIR")]
    project: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Exit 1 unless every server is recorded and every file could be read (for CI and MDM).
    #[arg(long)]
    require_all: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct InstallArgs {
    /// Configuration files to change instead of every one found in the usual places.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Every server of the chosen files.
    #[arg(long, conflicts_with = "server", required_unless_present = "server")]
    all: bool,
    /// Only the server(s) with this name.
    #[arg(long, value_name = "NAME")]
    server: Vec<String>,
    /// Show the changes as a diff and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// The project whose project-level files are included (default: the current directory).
    #[arg(long, value_name = "DIR")]
    project: Option<PathBuf>,
    /// The mcptrail executable wrapped entries run (default: this one).
    #[arg(long, value_name = "PATH")]
    mcptrail_path: Option<PathBuf>,
    /// uninstall: also unwrap entries that `mcptrail install` did not wrap (by hand, or
    /// whose install records are gone).
    #[arg(long)]
    force: bool,
}

fn roots(project: Option<PathBuf>) -> anyhow::Result<SearchRoots> {
    let project = match project {
        Some(p) => p,
        None => std::env::current_dir().context("the current directory")?,
    };
    Ok(SearchRoots::from_env(Some(project)))
}

fn locations(files: Vec<PathBuf>, project: Option<PathBuf>) -> anyhow::Result<Vec<Location>> {
    if !files.is_empty() {
        return Ok(files.into_iter().map(given).collect());
    }
    Ok(roots(project)?.existing())
}

fn exists(p: &str) -> bool {
    Path::new(p).is_file()
}

pub(crate) fn scan(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let locations = locations(args.files, args.project)?;
    let mut files = Vec::new();
    let (mut total, mut recorded, mut unreadable) = (0usize, 0usize, 0usize);
    for loc in locations {
        match ConfigFile::read(loc.clone()) {
            Ok(file) => {
                let servers: Vec<_> = file
                    .servers
                    .iter()
                    .map(|s| (s.clone(), s.status(exists)))
                    .collect();
                total += servers.len();
                recorded += servers
                    .iter()
                    .filter(|(_, st)| *st == Status::Recorded)
                    .count();
                files.push((loc, Ok(servers)));
            }
            Err(e) => {
                unreadable += 1;
                files.push((loc, Err(e.to_string())));
            }
        }
    }
    if args.json {
        let report = json!({
            "files": files.iter().map(|(loc, r)| {
                let mut v = json!({"client": loc.client, "scope": loc.scope, "path": loc.path});
                match r {
                    Ok(servers) => v["servers"] = servers.iter().map(|(s, st)| {
                        let mut sv = serde_json::to_value(s).expect("serialises");
                        sv["status"] = serde_json::to_value(st).expect("serialises");
                        sv
                    }).collect(),
                    Err(e) => v["error"] = e.clone().into(),
                }
                v
            }).collect::<Vec<_>>(),
            "summary": {"servers": total, "recorded": recorded, "not_recorded": total - recorded, "unreadable_files": unreadable},
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if files.is_empty() {
            println!("no MCP client configuration found (looked in the usual places for Claude Desktop, Claude Code, Cursor, VS Code and Windsurf, and in the project)");
        }
        for (loc, r) in &files {
            println!(
                "{} ({}) {}",
                loc.client.label(),
                scope_word(loc.scope),
                loc.path.display()
            );
            match r {
                Err(e) => println!("  error: {e}"),
                Ok(servers) if servers.is_empty() => println!("  no servers"),
                Ok(servers) => {
                    for (s, st) in servers {
                        let target = match (&s.wrapped, &s.command, &s.url) {
                            (Some(w), _, _) => w.inner.join(" "),
                            (None, Some(c), _) => std::iter::once(c.as_str())
                                .chain(s.args.iter().map(String::as_str))
                                .collect::<Vec<_>>()
                                .join(" "),
                            (None, None, Some(u)) => u.clone(),
                            _ => String::new(),
                        };
                        let (mark, note) = match st {
                            Status::Recorded => ("recorded    ", String::new()),
                            Status::NotRecorded(why) => ("NOT recorded", format!(" — {why}")),
                            Status::Broken(why) => ("BROKEN      ", format!(" — {why}")),
                        };
                        let disabled = if s.disabled { " (disabled)" } else { "" };
                        println!(
                            "  {mark} {:<20} {:<6} {target}{disabled}{note}",
                            s.name,
                            format!("{:?}", s.transport).to_lowercase()
                        );
                    }
                }
            }
        }
        println!(
            "{total} server(s): {recorded} recorded, {} not recorded{}",
            total - recorded,
            if unreadable > 0 {
                format!("; {unreadable} file(s) could not be read")
            } else {
                String::new()
            }
        );
    }
    let complete = recorded == total && unreadable == 0;
    Ok(if args.require_all && !complete {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn scope_word(s: mcptrail_clients::Scope) -> &'static str {
    match s {
        mcptrail_clients::Scope::User => "user",
        mcptrail_clients::Scope::Project => "project",
        mcptrail_clients::Scope::Given => "given",
    }
}

/// `install` (`undo = false`) or `uninstall`.
pub(crate) fn install(
    args: InstallArgs,
    undo: bool,
    cfg: &crate::config::Config,
    data_dir: &Path,
    explicit_config: Option<&Path>,
    ledger: LedgerConfig,
) -> anyhow::Result<ExitCode> {
    let selection = if args.all {
        Selection::All
    } else {
        Selection::Named(args.server.clone())
    };
    let named_files = !args.files.is_empty();
    let locations = locations(args.files, args.project)?;
    if locations.is_empty() {
        println!(
            "no MCP client configuration found; name the file: mcptrail {} FILE --all",
            verb(undo)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let data_dir = std::path::absolute(data_dir).context("the data directory")?;
    let store_dir = data_dir.join(INSTALL_DIR);
    let mut store = RecordStore::load(store_dir.join("records.json"))?;
    let spec = WrapSpec {
        mcptrail: match &args.mcptrail_path {
            Some(p) => p.display().to_string(),
            None => std::env::current_exe()
                .and_then(|p| p.canonicalize())
                .context("finding the mcptrail executable (pass --mcptrail-path)")?
                .display()
                .to_string(),
        },
        wrap_args: {
            // Wrapped servers record where this command would: the same data directory and
            // configuration, whatever environment the client starts them with.
            let mut a = vec!["--data-dir".to_string(), data_dir.display().to_string()];
            if let Some(c) = explicit_config {
                let c = std::path::absolute(c).context("the configuration file")?;
                a.extend(["--config".to_string(), c.display().to_string()]);
            }
            a
        },
    };
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .expect("formats");
    let now = mcptrail_event::now_rfc3339_nanos();
    let mut failed = false;
    let mut changed_servers = 0;
    let mut found = std::collections::BTreeSet::new();
    for loc in locations {
        let path = loc.path.clone();
        let file = match ConfigFile::read(loc) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("mcptrail: error: {e}");
                failed = true;
                continue;
            }
        };
        // Files found by search: each takes the named servers it has; a name no file has is
        // reported at the end. Files the user named must have every name.
        let file_selection = match &selection {
            Selection::Named(names) if !named_files => {
                let here: Vec<String> = names
                    .iter()
                    .filter(|n| file.servers.iter().any(|s| &s.name == *n))
                    .cloned()
                    .collect();
                if here.is_empty() {
                    continue;
                }
                found.extend(here.iter().cloned());
                Selection::Named(here)
            }
            other => other.clone(),
        };
        let planned = if undo {
            plan_uninstall(&file, &store.records, &file_selection, args.force)
        } else {
            plan_install(&file, &spec, &file_selection)
        };
        let plan = match planned {
            Ok(p) => p,
            Err(e) => {
                eprintln!("mcptrail: error: {e}");
                failed = true;
                continue;
            }
        };
        report(&plan, undo);
        if plan.is_noop() {
            continue;
        }
        if args.dry_run {
            print!("{}", plan.diff());
            continue;
        }
        let written = write_plan(&plan, &store_dir.join("backups"), &stamp)?;
        if undo {
            store.records.retain(|r| {
                !(r.path == path
                    && plan
                        .changes
                        .iter()
                        .any(|c| c.server == r.server && c.container == r.container))
            });
        } else {
            store.records.extend(plan.records(&now));
        }
        store.save()?;
        changed_servers += plan.changes.len();
        println!(
            "  written; the previous version is in {}",
            written.backup.display()
        );
        record_event(cfg, &data_dir, ledger.clone(), &plan, undo, &written.backup);
    }
    if let Selection::Named(names) = &selection {
        if !named_files {
            for n in names.iter().filter(|n| !found.contains(*n)) {
                eprintln!(
                    "mcptrail: error: no MCP client configuration found here has a server named {n:?}; `mcptrail scan` lists them, or name the file: mcptrail {} FILE --server {n}",
                    verb(undo)
                );
                failed = true;
            }
        }
    }
    if args.dry_run {
        println!("dry run: nothing was written");
    } else if changed_servers > 0 && !undo {
        println!("restart the MCP client (or reload its servers) for the change to take effect; `mcptrail scan` shows the result");
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn verb(undo: bool) -> &'static str {
    if undo {
        "uninstall"
    } else {
        "install"
    }
}

fn report(plan: &Plan, undo: bool) {
    println!(
        "{} {}",
        plan.location.client.label(),
        plan.location.path.display()
    );
    for c in &plan.changes {
        let how = match (undo, c.exact) {
            (false, _) => "wrapped in mcptrail wrap",
            (true, true) => "restored exactly as before install",
            (true, false) => "unwrapped (from its command line)",
        };
        println!("  {:<20} {how}", c.server);
    }
    for s in &plan.skipped {
        println!("  {:<20} unchanged: {}", s.server, s.reason);
    }
    if plan.changes.is_empty() && plan.skipped.is_empty() {
        println!("  no servers");
    }
}

/// The change as a `system.config` event naming who made it (best effort: the file is
/// written either way, and a ledger that cannot be opened is reported). The client watch
/// state learns the file as it is now, so a later scan does not report this change again.
fn record_event(
    cfg: &crate::config::Config,
    data_dir: &Path,
    ledger: LedgerConfig,
    plan: &Plan,
    undo: bool,
    backup: &Path,
) {
    let (user, uid) = actor();
    let how = format!("mcptrail {}", verb(undo));
    let names: Vec<&str> = plan.changes.iter().map(|c| c.server.as_str()).collect();
    let mut detail = json!({
        "action": verb(undo),
        "client": plan.location.client,
        "file": plan.location.path,
        "servers": plan.changes.iter().map(|c| json!({"name": c.server, "container": c.container})).collect::<Vec<_>>(),
        "backup": backup,
        "by": {"user": user, "uid": uid, "how": how},
        "who": format!("{user} (uid {uid}) with {how} at {}", mcptrail_event::now_rfc3339_nanos()),
    });
    if undo {
        // Unwrapped servers leave no trail from now on (builtin.unwrapped_server).
        detail["not_recorded"] = json!(names);
    }
    let mut e = config_event(detail);
    let watch = watch_path(data_dir);
    if let Ok(mut st) = WatchState::load(&watch) {
        if let Ok(file) = ConfigFile::read(plan.location.clone()) {
            st.observe(&file, exists);
            let _ = st.save(&watch);
        }
    }
    let appended = redact(cfg, data_dir, &mut e).and_then(|_| {
        Ok(Ledger::open(data_dir, ledger)?
            .append(&mut [e])
            .map(|_| ())?)
    });
    if let Err(err) = appended {
        eprintln!(
            "mcptrail: warning: the change was made but could not be recorded in the ledger: {err:#}"
        );
    }
}

/// Who runs this command: OS user name and uid.
fn actor() -> (String, u32) {
    let uid = nix::unistd::geteuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name);
    (name, uid.as_raw())
}

/// A `system.config` event attributed to the OS user running this command.
fn config_event(detail: serde_json::Value) -> Event {
    let mut e = Event::new(EventKind::SystemConfig);
    let id = mcptrail_tap::Identity::detect(std::env::var("MCPTRAIL_USER").ok());
    e.user_identity = Some(id.user);
    e.host = Some(id.host);
    e.detail = Some(detail);
    e
}

fn redact(cfg: &crate::config::Config, data_dir: &Path, e: &mut Event) -> anyhow::Result<()> {
    if let Some(r) = crate::config::redactor(cfg, data_dir)? {
        r.redact_event(e);
    }
    Ok(())
}

fn watch_path(data_dir: &Path) -> PathBuf {
    data_dir
        .join(mcptrail_detect::DETECT_DIR)
        .join("client-watch.json")
}

/// Look at the MCP client configurations (`[detect.clients] files`, else the usual places)
/// and record what changed since the last look as `system.config` events: servers
/// unwrapped, added without `mcptrail wrap`, wrapped, modified, removed, with the file's
/// owner and modification time (the editor of a hand edit cannot be known; `mcptrail
/// uninstall` records its user itself). A first look records the servers not recorded.
/// Files modified less than `settle` ago are left for the next look. Returns the number of
/// events appended.
pub(crate) fn scan_and_record(
    cfg: &crate::config::Config,
    data_dir: &Path,
    ledger: &LedgerConfig,
    observer: &str,
    settle: std::time::Duration,
) -> anyhow::Result<usize> {
    let files = &cfg.detect.clients.files;
    let locations = if files.is_empty() {
        roots(None)?.existing()
    } else {
        files
            .iter()
            .map(|p| match &cfg.base_dir {
                Some(b) if p.is_relative() => b.join(p),
                _ => p.clone(),
            })
            .map(given)
            .collect()
    };
    let path = watch_path(data_dir);
    let mut state = WatchState::load(&path)?;
    let mut events = Vec::new();
    for loc in locations {
        let Ok(meta) = std::fs::metadata(&loc.path) else {
            continue;
        };
        // A file written moments ago is looked at next time: `mcptrail install`/`uninstall`
        // writes the file, then records the change itself.
        let age = meta.modified().ok().and_then(|m| m.elapsed().ok());
        if age.is_some_and(|a| a < settle) {
            continue;
        }
        let file = match ConfigFile::read(loc) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("mcptrail: warning: client scan: {e}");
                continue;
            }
        };
        let Some(change) = state.observe(&file, exists) else {
            continue;
        };
        events.push(change_event(&change, observer));
    }
    state.save(&path)?;
    if events.is_empty() {
        return Ok(0);
    }
    for e in &mut events {
        redact(cfg, data_dir, e)?;
    }
    let n = events.len();
    Ledger::open(data_dir, ledger.clone())
        .context("opening the ledger to record client configuration changes")?
        .append(&mut events)
        .context("recording client configuration changes")?;
    Ok(n)
}

fn change_event(c: &FileChange, observer: &str) -> Event {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&c.location.path).ok();
    let owner_uid = meta.as_ref().map(MetadataExt::uid);
    let owner = owner_uid.map(|uid| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {uid}"), |u| u.name)
    });
    let modified = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .map(|t| mcptrail_event::format_rfc3339_nanos(t.into()));
    let what = if c.first_look {
        "found by a first scan".to_string()
    } else {
        c.changes
            .iter()
            .map(|s| format!("{} {}", s.server, s.change))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let who = format!(
        "{what}; edited outside mcptrail (the editor is unknown: file owner {} (uid {}), modified at {}), seen by {observer}",
        owner.as_deref().unwrap_or("?"),
        owner_uid.map_or("?".to_string(), |u| u.to_string()),
        modified.as_deref().unwrap_or("?"),
    );
    let mut detail = json!({
        "action": if c.first_look { "client_config_scanned" } else { "client_config_changed" },
        "client": c.location.client,
        "file": c.location.path,
        "changes": c.changes,
        "file_owner": {"user": owner, "uid": owner_uid},
        "modified": modified,
        "observed_by": observer,
        "who": who,
    });
    if !c.not_recorded.is_empty() {
        detail["not_recorded"] = json!(c.not_recorded);
    }
    config_event(detail)
}
