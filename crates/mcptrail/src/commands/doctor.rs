//! `mcptrail doctor`: is this machine recording every MCP server, and would the record hold
//! up in front of an auditor? One line per check — PASS, WARN, FAIL or SKIP — with a fix hint
//! for each that is not a pass. Exit 1 when any check fails. Read-only, except that the query
//! index is brought up to date (it is derived from the ledger), the anchor directory gets a
//! probe file that is removed at once, and each configured sink is probed (a connection; a
//! webhook receives a signed batch with no events).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use mcptrail_clients::{ConfigFile, Status, Transport};
use mcptrail_ledger::{
    list_checkpoints, list_segments, verify, LedgerReader, Verdict, VerifyOptions, CHECKPOINT_DIR,
    KEY_DIR, LEDGER_DIR, MAC_STATE_FILE,
};
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The project whose `.mcp.json`, `.cursor/mcp.json` and `.vscode/mcp.json` are checked
    /// (default: the current directory).
    #[arg(long, value_name = "DIR")]
    project: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Fail when the data directory's file system has less free space than this many MiB;
    /// warn below four times as much.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    min_free_mib: u64,
    /// Largest tolerated amount by which the newest record's time may be ahead of the clock.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    max_skew_secs: u64,
}

/// What the command line knows before the checks start.
pub(crate) struct Setup<'a> {
    pub(crate) data_dir: &'a Path,
    pub(crate) config_path: Option<PathBuf>,
    /// The configuration file could not be loaded (the checks then use the defaults).
    pub(crate) config_error: Option<String>,
    pub(crate) cfg: &'a Config,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Pass,
    Skip,
    Warn,
    Fail,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Pass => "PASS",
            Level::Skip => "SKIP",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One check's result.
#[derive(Debug, Serialize)]
struct Check {
    check: &'static str,
    status: Level,
    message: String,
    /// One line each: what exactly is wrong (files, servers, problems).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

impl Check {
    fn new(check: &'static str, status: Level, message: impl Into<String>) -> Check {
        Check {
            check,
            status,
            message: message.into(),
            details: Vec::new(),
            fix: None,
        }
    }
    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
    fn details(mut self, details: Vec<String>) -> Check {
        self.details = details;
        self
    }
}

/// The oldest and newest record of the ledger, read once for the disk and clock checks.
#[derive(Default)]
struct LedgerFacts {
    exists: bool,
    bytes: u64,
    first_time: Option<OffsetDateTime>,
    last: Option<(u64, OffsetDateTime)>,
}

pub(crate) fn run(args: Args, setup: Setup<'_>) -> anyhow::Result<ExitCode> {
    let data_dir = std::path::absolute(setup.data_dir)?;
    let facts = ledger_facts(&data_dir);
    let present = data_dir.is_dir();
    let skip = |name: &'static str| Check::new(name, Level::Skip, "no data directory yet");
    let mut checks = vec![config_check(&setup), data_dir_check(&data_dir)];
    checks.push(disk_check(&data_dir, &facts, args.min_free_mib));
    checks.push(settings_check(setup.cfg));
    if present {
        checks.push(ledger_check(&data_dir, setup.cfg, &facts));
        checks.push(keys_check(&data_dir, setup.cfg, &facts));
    } else {
        checks.extend([skip("ledger"), skip("keys")]);
    }
    checks.push(anchor_check(&data_dir, setup.cfg));
    checks.push(clock_check(&facts, args.max_skew_secs));
    checks.push(if facts.exists {
        index_check(&data_dir)
    } else {
        Check::new("index", Level::Skip, "no ledger yet")
    });
    checks.push(sinks_check(&data_dir, setup.cfg));
    checks.push(servers_check(&data_dir, args.project)?);
    checks.push(gateway_check(setup.cfg));

    let count = |l: Level| checks.iter().filter(|c| c.status == l).count();
    let (pass, warn, fail) = (count(Level::Pass), count(Level::Warn), count(Level::Fail));
    if args.json {
        let report = json!({
            "data_dir": data_dir,
            "config": setup.config_path,
            "checks": checks,
            "summary": {"pass": pass, "warn": warn, "fail": fail, "skip": count(Level::Skip)},
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("mcptrail doctor: data directory {}", data_dir.display());
        for c in &checks {
            println!("{}  {:<9} {}", c.status.word(), c.check, c.message);
            for d in &c.details {
                println!("                 {d}");
            }
            if let Some(f) = &c.fix {
                println!("      fix:       {f}");
            }
        }
        println!("{pass} passed, {warn} warning(s), {fail} failed");
    }
    Ok(if fail > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `[gateway]`: routes build (URLs, key files, secrets, TLS files); plain HTTP or anonymous
/// routes on an address other machines can reach are warned about.
fn gateway_check(cfg: &Config) -> Check {
    let gw = &cfg.gateway;
    if gw.routes.is_empty() {
        return Check::new("gateway", Level::Skip, "no [gateway] routes configured");
    }
    if let Err(e) = mcptrail_gateway::check_config(gw, &cfg.egress) {
        return Check::new("gateway", Level::Fail, e.to_string()).fix(
            "correct [gateway] in the configuration; `mcptrail gateway --check` re-checks it",
        );
    }
    let loopback = gw
        .listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
        || gw.listen.starts_with("localhost:");
    let names = |pick: &dyn Fn(&mcptrail_gateway::RouteConfig) -> bool| -> Vec<String> {
        gw.routes
            .iter()
            .filter(|r| pick(r))
            .map(|r| r.name.clone().unwrap_or_else(|| r.path.clone()))
            .collect()
    };
    let anonymous = names(&|r| r.auth.mode == mcptrail_gateway::AuthMode::None);
    if !loopback && gw.tls.is_none() {
        return Check::new(
            "gateway",
            Level::Warn,
            format!(
                "listens on {} in plain HTTP: bearer tokens and payloads cross the network in clear",
                gw.listen
            ),
        )
        .fix("add [gateway.tls] cert_file and key_file, or listen on a loopback address behind a TLS proxy");
    }
    if !loopback && !anonymous.is_empty() {
        return Check::new(
            "gateway",
            Level::Warn,
            format!(
                "routes without authentication on {}: {} (callers are recorded as anonymous)",
                gw.listen,
                anonymous.join(", ")
            ),
        )
        .fix("set [gateway.routes.auth] mode = \"jwt\", \"mtls\" or \"header\" on them");
    }
    Check::new(
        "gateway",
        Level::Pass,
        format!("{} route(s) valid on {}", gw.routes.len(), gw.listen),
    )
}

fn config_check(setup: &Setup<'_>) -> Check {
    let shown = setup.config_path.as_ref().map(|p| p.display().to_string());
    match (&setup.config_error, shown) {
        (Some(e), _) => Check::new("config", Level::Fail, e.clone()).fix(
            "correct the file (an unknown key is named in the message; the README lists every key); the checks below use the defaults",
        ),
        (None, Some(p)) => Check::new("config", Level::Pass, format!("{p} loaded")),
        (None, None) => Check::new(
            "config",
            Level::Pass,
            "no configuration file: the defaults apply",
        ),
    }
}

/// Every configured sink: reachable (a probe that sends no event), and how far behind.
fn sinks_check(data_dir: &Path, cfg: &Config) -> Check {
    if cfg.sinks.is_empty() {
        return Check::new(
            "sinks",
            Level::Skip,
            "none configured: the record stays in the local ledger only",
        )
        .fix("add [[sinks]] to mcptrail.toml to ship events to a SIEM, NATS, a webhook or files");
    }
    let health = super::ship::health(data_dir, cfg);
    let worst = health.iter().map(|h| h.severity).max().unwrap_or(0);
    let bad = health.iter().filter(|h| h.severity > 0).count();
    let level = [Level::Pass, Level::Warn, Level::Fail][usize::from(worst.min(2))];
    let message = match level {
        Level::Pass => format!("{} sink(s) reachable and caught up", health.len()),
        Level::Warn => format!(
            "{bad} of {} sink(s) behind their alert threshold",
            health.len()
        ),
        _ => format!("{bad} of {} sink(s) unreachable or broken", health.len()),
    };
    let fixes: Vec<String> = health.iter().filter_map(|h| h.fix.clone()).collect();
    let check =
        Check::new("sinks", level, message).details(health.into_iter().map(|h| h.line).collect());
    if fixes.is_empty() {
        check
    } else {
        check.fix(fixes.join("; "))
    }
}

fn mode_of(m: &std::fs::Metadata) -> u32 {
    m.permissions().mode() & 0o777
}

fn data_dir_check(dir: &Path) -> Check {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Check::new("data dir", Level::Warn, format!("{} does not exist yet: nothing is recorded here", dir.display()))
                .fix("record a session (`mcptrail wrap -- CMD ARGS`) or wrap the servers you have (`mcptrail install --all`); or pass the --data-dir you use")
        }
        Err(e) => {
            return Check::new("data dir", Level::Fail, format!("{}: {e}", dir.display()))
                .fix("make the directory readable by the user mcptrail runs as")
        }
    };
    if !meta.is_dir() {
        return Check::new(
            "data dir",
            Level::Fail,
            format!("{} is not a directory", dir.display()),
        )
        .fix("point --data-dir (or MCPTRAIL_DATA_DIR) at a directory");
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Check::new(
            "data dir",
            Level::Fail,
            format!(
                "{} is owned by uid {}, not by you (uid {me})",
                dir.display(),
                meta.uid()
            ),
        )
        .fix(format!(
            "run mcptrail as the directory's owner, or `chown -R {me} {}`",
            dir.display()
        ));
    }
    // The directory and everything in it must be private: events carry tool arguments and
    // results, and the key directory holds the signing key.
    let mut open = Vec::new();
    let mut visit = vec![dir.to_path_buf()];
    while let Some(d) = visit.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        if let Ok(m) = std::fs::symlink_metadata(&d) {
            if mode_of(&m) & 0o077 != 0 {
                open.push(format!("{} (mode {:04o})", d.display(), mode_of(&m)));
            }
        }
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() && d == dir {
                // One level of subdirectories (ledger, keys, checkpoints, install): their
                // contents are checked too.
                visit.push(e.path());
            } else if m.is_file() && mode_of(&m) & 0o077 != 0 && !is_public(&e.path()) {
                open.push(format!("{} (mode {:04o})", e.path().display(), mode_of(&m)));
            }
        }
    }
    if !open.is_empty() {
        let n = open.len();
        return Check::new(
            "data dir",
            Level::Fail,
            format!("{n} path(s) can be read or changed by other users"),
        )
        .details(open)
        .fix(format!(
            "chmod -R go-rwx {} (mcptrail creates them 0700/0600; something widened them)",
            dir.display()
        ));
    }
    if nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_err() {
        return Check::new(
            "data dir",
            Level::Fail,
            format!("{} is not writable", dir.display()),
        )
        .fix(format!(
            "chmod u+w {} (or remount the file system read-write)",
            dir.display()
        ));
    }
    Check::new(
        "data dir",
        Level::Pass,
        format!("{} is yours and private (0700)", dir.display()),
    )
}

/// Files meant to be handed out, whose mode may be wider.
fn is_public(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n == mcptrail_ledger::VERIFIER_KEY_FILE)
}

fn human(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn disk_check(dir: &Path, facts: &LedgerFacts, min_free_mib: u64) -> Check {
    // The file system the ledger is (or will be) on: the nearest directory that exists.
    let probe = dir
        .ancestors()
        .find(|p| p.is_dir())
        .unwrap_or(Path::new("/"));
    let st = match nix::sys::statvfs::statvfs(probe) {
        Ok(s) => s,
        Err(e) => {
            return Check::new(
                "disk",
                Level::Warn,
                format!("cannot read free space of {}: {e}", probe.display()),
            )
        }
    };
    if st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
        return Check::new(
            "disk",
            Level::Fail,
            format!("{} is on a read-only file system", probe.display()),
        )
        .fix("remount it read-write, or choose a data directory on a writable disk");
    }
    let block = st.fragment_size() as u64;
    let free = st.blocks_available() as u64 * block;
    let total = st.blocks() as u64 * block;
    let pct = if total > 0 {
        free as f64 * 100.0 / total as f64
    } else {
        0.0
    };
    let mut message = format!(
        "{} free of {} ({pct:.0} %)",
        human(free as f64),
        human(total as f64)
    );
    // How long the free space lasts at the rate the ledger grew so far (over at least an hour).
    let mut days_left = None;
    if let (Some(first), Some((_, last))) = (facts.first_time, facts.last) {
        let span = (last - first).as_seconds_f64();
        if span >= 3600.0 && facts.bytes > 0 {
            let per_day = facts.bytes as f64 / (span / 86_400.0);
            let days = free as f64 / per_day;
            message.push_str(&format!(
                "; the ledger holds {} and grew {}/day: ≈ {days:.0} days left",
                human(facts.bytes as f64),
                human(per_day)
            ));
            days_left = Some(days);
        }
    }
    let min = min_free_mib.saturating_mul(1 << 20);
    let fix = format!(
        "free space on the file system of {}, or move the data directory (sealed segments can be archived and removed once exported)",
        probe.display()
    );
    if free < min {
        return Check::new("disk", Level::Fail, format!("{message}: below the {min_free_mib} MiB minimum; when the disk fills, the tap holds events in memory and, past its limit, sheds them")).fix(fix);
    }
    if free < min.saturating_mul(4) || days_left.is_some_and(|d| d < 7.0) {
        return Check::new("disk", Level::Warn, format!("{message}: running low")).fix(fix);
    }
    if st.files_available() < 1000 && st.files() > 0 {
        return Check::new(
            "disk",
            Level::Warn,
            format!(
                "{message}, but only {} inodes are left",
                st.files_available()
            ),
        )
        .fix(fix);
    }
    Check::new("disk", Level::Pass, message)
}

fn settings_check(cfg: &Config) -> Check {
    let mut weak = Vec::new();
    if !cfg.ledger.fsync {
        weak.push("`[ledger] fsync = false`: records the tap accepted can be lost on a crash or power cut".to_string());
    }
    if !cfg.ledger.mac {
        weak.push("`[ledger] mac = false`: records carry no forward-secure MAC, so an edit that rebuilds the chain after the last checkpoint is not caught".to_string());
    }
    if !cfg.redact.enabled {
        weak.push("`[redact] enabled = false`: tool arguments and results are stored as sent, secrets and personal data included".to_string());
    }
    if weak.is_empty() {
        return Check::new(
            "settings",
            Level::Pass,
            "fsync on every commit, forward-secure MACs on every record, redaction on",
        );
    }
    Check::new(
        "settings",
        Level::Warn,
        "durability, tamper evidence or redaction is switched off",
    )
    .details(weak)
    .fix("remove those keys from the configuration (the defaults are on)")
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// Seq and time of a raw ledger line, without parsing the whole event.
fn line_seq_time(line: &[u8]) -> Option<(u64, OffsetDateTime)> {
    #[derive(serde::Deserialize)]
    struct Stamp {
        seq: u64,
        time: String,
    }
    let s: Stamp = serde_json::from_slice(line).ok()?;
    Some((s.seq, parse_time(&s.time)?))
}

fn ledger_facts(data_dir: &Path) -> LedgerFacts {
    let mut facts = LedgerFacts::default();
    let Ok(segments) = list_segments(&data_dir.join(LEDGER_DIR)) else {
        return facts;
    };
    facts.exists = data_dir.join(LEDGER_DIR).is_dir();
    facts.bytes = segments.iter().map(|s| s.len).sum();
    if let Ok(mut r) = LedgerReader::open(data_dir, 1) {
        if let Ok(Some(rec)) = r.next_record() {
            facts.first_time = line_seq_time(&rec.line).map(|(_, t)| t);
        }
    }
    // The newest record: read the last segment through.
    if let Some(last) = segments.last() {
        if let Ok(mut r) = LedgerReader::open(data_dir, last.first_seq.max(1)) {
            while let Ok(Some(rec)) = r.next_record() {
                if let Some(st) = line_seq_time(&rec.line) {
                    facts.last = Some(st);
                }
            }
        }
    }
    facts
}

fn ledger_check(data_dir: &Path, cfg: &Config, facts: &LedgerFacts) -> Check {
    if !facts.exists {
        return Check::new(
            "ledger",
            Level::Skip,
            "no records yet (the ledger is created by the first `mcptrail wrap`)",
        );
    }
    let opts = VerifyOptions {
        skip_macs: true,
        anchor_dirs: cfg.ledger.anchor_dir.iter().cloned().collect(),
        ..VerifyOptions::default()
    };
    let started = Instant::now();
    let report = match verify(data_dir, &opts) {
        Ok(r) => r,
        Err(e) => {
            return Check::new("ledger", Level::Fail, format!("cannot be read: {e}"))
                .fix("`mcptrail verify` gives the details; keep a copy of the data directory before changing anything")
        }
    };
    let took = started.elapsed().as_secs_f64();
    let what = format!(
        "{} record(s) in {} segment(s), {} signed checkpoint(s) verified (anchored copies included), {} read in {took:.2} s",
        report.records,
        report.segments,
        report.checkpoints_verified,
        human(report.bytes as f64)
    );
    let mut details: Vec<String> = report
        .problems
        .iter()
        .take(5)
        .map(|p| format!("[{}] {p}", p.class()))
        .collect();
    if report.problems.len() > 5 {
        details.push(format!("… and {} more", report.problems.len() - 5));
    }
    match report.verdict {
        Verdict::Tampered => Check::new("ledger", Level::Fail, format!("{} integrity problem(s): the record was altered or damaged ({what})", report.problems.len()))
            .details(details)
            .fix("copy the data directory aside as evidence before anything else writes to it; `mcptrail verify` gives the full report"),
        Verdict::CannotVerify => Check::new("ledger", Level::Warn, format!("no problem found, but not everything could be checked ({what})"))
            .details(report.unchecked.clone())
            .fix("`mcptrail verify` says what is missing (a checkpoint key, an anchor)"),
        Verdict::Intact => {
            let mut c = Check::new("ledger", Level::Pass, format!("chain intact: {what}; MACs are left to `mcptrail verify` with the seed"));
            c.details = report.notices.clone();
            c
        }
    }
}

fn keys_check(data_dir: &Path, cfg: &Config, facts: &LedgerFacts) -> Check {
    let keys = data_dir.join(KEY_DIR);
    let mut fails = Vec::new();
    let mut warns = Vec::new();
    let has_checkpoints = list_checkpoints(&data_dir.join(CHECKPOINT_DIR))
        .map(|c| !c.is_empty())
        .unwrap_or(false);
    let mut private = |name: &str, needed: bool, what: &str| {
        let p = keys.join(name);
        match std::fs::metadata(&p) {
            Ok(m) if mode_of(&m) & 0o077 != 0 => fails.push(format!(
                "{} has mode {:04o}: {what} must be readable by its owner only",
                p.display(),
                mode_of(&m)
            )),
            Ok(_) => {}
            Err(_) if needed => fails.push(format!(
                "{} is missing: {what}; the next write creates a new one, which breaks continuity for whoever holds the old public key or seed",
                p.display()
            )),
            Err(_) => {}
        }
    };
    private(
        "checkpoint.skey",
        has_checkpoints,
        "the checkpoint signing key",
    );
    private(
        MAC_STATE_FILE,
        cfg.ledger.mac && facts.last.is_some(),
        "the MAC key state",
    );
    // The pseudonym key: whoever reads it can test guesses against the tokens.
    let token_key = crate::config::token_key_path(cfg, data_dir);
    if let Ok(m) = std::fs::metadata(&token_key) {
        if mode_of(&m) & 0o077 != 0 {
            fails.push(format!(
                "{} has mode {:04o}: the pseudonym key must be readable by its owner only",
                token_key.display(),
                mode_of(&m)
            ));
        }
    }
    let seed = cfg
        .ledger
        .mac_seed_path
        .clone()
        .unwrap_or_else(|| mcptrail_ledger::default_seed_path(data_dir));
    if let Ok(m) = std::fs::metadata(&seed) {
        if mode_of(&m) & 0o077 != 0 {
            fails.push(format!(
                "{} has mode {:04o}: the MAC verification seed must be readable by its owner only",
                seed.display(),
                mode_of(&m)
            ));
        }
        warns.push(format!(
            "the MAC verification seed is on this machine ({}): whoever reads it can compute every epoch's key and forge MACs",
            seed.display()
        ));
    }
    if !fails.is_empty() {
        fails.extend(warns);
        return Check::new("keys", Level::Fail, "key files are exposed or missing")
            .details(fails)
            .fix(format!("chmod 600 the files named (mcptrail writes them 0600); a missing key cannot be recovered — say so in the audit record and keep the old public key ({}) with the evidence", keys.join(mcptrail_ledger::VERIFIER_KEY_FILE).display()));
    }
    if !warns.is_empty() {
        return Check::new("keys", Level::Warn, "key files private (0600), but the verification seed should not be here")
            .details(warns)
            .fix(format!("move the seed off this machine (to the auditors or offline storage) and check with `mcptrail verify --seed FILE`: mv {} /secure/place/", seed.display()));
    }
    Check::new(
        "keys",
        Level::Pass,
        "signing key and MAC state private (0600); no verification seed on this machine",
    )
}

fn anchor_check(data_dir: &Path, cfg: &Config) -> Check {
    let Some(anchor) = &cfg.ledger.anchor_dir else {
        return Check::new(
            "anchor",
            Level::Warn,
            "no anchor directory: signed checkpoints are kept only next to the ledger, so whoever controls this disk can replace both",
        )
        .fix("set `[ledger] anchor_dir` to a directory on another disk or machine (an NFS or object-store mount the tap can only add to)");
    };
    let meta = match std::fs::metadata(anchor) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => {
            return Check::new(
                "anchor",
                Level::Fail,
                format!("{} is not a directory", anchor.display()),
            )
            .fix("point `[ledger] anchor_dir` at a directory")
        }
        Err(e) => {
            return Check::new("anchor", Level::Fail, format!("{}: {e}", anchor.display())).fix(
                format!("create it (`mkdir -p {}`) or mount it", anchor.display()),
            )
        }
    };
    let probe = anchor.join(format!(".mcptrail-doctor-{}", std::process::id()));
    let writable = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map(|_| {
            let _ = std::fs::remove_file(&probe);
        });
    if let Err(e) = writable {
        return Check::new(
            "anchor",
            Level::Fail,
            format!("{} is not writable: {e}", anchor.display()),
        )
        .fix("give the user mcptrail runs as write access to it; checkpoints are not anchored meanwhile");
    }
    let local = list_checkpoints(&data_dir.join(CHECKPOINT_DIR)).unwrap_or_default();
    let anchored = list_checkpoints(anchor).unwrap_or_default();
    let newest = |v: &[(u64, PathBuf)]| v.iter().map(|c| c.0).max();
    let same_disk = std::fs::metadata(data_dir)
        .map(|d| d.dev() == meta.dev())
        .unwrap_or(false);
    let mut c = match (newest(&local), newest(&anchored)) {
        (Some(l), a) if a.is_none_or(|a| a < l) => Check::new(
            "anchor",
            Level::Warn,
            format!(
                "{} lags: the newest local checkpoint covers {l} records, the newest anchored one {}",
                anchor.display(),
                a.map_or("none".to_string(), |a| a.to_string())
            ),
        )
        .fix("checkpoints written while the anchor was unreachable are not copied later; `mcptrail checkpoint` signs one now and anchors it"),
        (_, a) => Check::new(
            "anchor",
            Level::Pass,
            format!(
                "{} is writable and holds the newest checkpoint ({} records)",
                anchor.display(),
                a.map_or("none yet".to_string(), |a| a.to_string())
            ),
        ),
    };
    if same_disk && c.status == Level::Pass {
        c = Check::new(
            "anchor",
            Level::Warn,
            format!(
                "{} is on the same file system as the data directory",
                anchor.display()
            ),
        )
        .fix("an anchor only helps off this disk: use another disk, a network mount, or a machine the tap can only append to");
    }
    c
}

fn clock_check(facts: &LedgerFacts, max_skew_secs: u64) -> Check {
    let now = OffsetDateTime::now_utc();
    let fmt = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    if now.year() < 2025 {
        return Check::new(
            "clock",
            Level::Fail,
            format!(
                "the system clock reads {}: it is not set, and every event time would be wrong",
                fmt(now)
            ),
        )
        .fix("set the clock and keep it synchronised (systemd-timesyncd, chrony or ntpd)");
    }
    let ntp = ntp_synchronised();
    if let Some((seq, last)) = facts.last {
        let ahead = (last - now).as_seconds_f64();
        if ahead > max_skew_secs as f64 {
            return Check::new(
                "clock",
                Level::Fail,
                format!(
                    "the newest record (seq {seq}) is stamped {}, {ahead:.0} s ahead of the clock ({}): the clock was set back, or ran ahead when it was written",
                    fmt(last),
                    fmt(now)
                ),
            )
            .fix("synchronise the clock (NTP); the records keep the times they were written with, so note the skew for whoever reads them");
        }
    }
    if ntp == Some(false) {
        return Check::new(
            "clock",
            Level::Warn,
            format!(
                "{} by the system clock, which is not synchronised (timedatectl: NTPSynchronized=no)",
                fmt(now)
            ),
        )
        .fix("enable time synchronisation: `timedatectl set-ntp true` (or chrony/ntpd)");
    }
    let newest = facts.last.map_or(String::new(), |(seq, t)| {
        format!(
            "; the newest record (seq {seq}) is {:.0} s old",
            (now - t).as_seconds_f64()
        )
    });
    let synced = match ntp {
        Some(true) => ", synchronised",
        _ => "",
    };
    Check::new(
        "clock",
        Level::Pass,
        format!("{}{synced}{newest}", fmt(now)),
    )
}

/// `timedatectl`'s view where systemd runs; `None` when it cannot say (containers, no systemd).
fn ntp_synchronised() -> Option<bool> {
    let out = std::process::Command::new("timedatectl")
        .args(["show", "--property=NTPSynchronized", "--value"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

fn index_check(data_dir: &Path) -> Check {
    let synced = mcptrail_index::Index::open(data_dir).and_then(|mut idx| {
        let r = idx.sync()?;
        Ok((idx.count()?, r))
    });
    match synced {
        Ok((n, r)) if r.skipped > 0 => Check::new("index", Level::Warn, format!("{n} events indexed; {} ledger lines are not valid events", r.skipped))
            .fix("`mcptrail verify` names them"),
        Ok((n, _)) => Check::new("index", Level::Pass, format!("{n} events indexed, up to date with the ledger")),
        Err(e) => Check::new("index", Level::Fail, format!("the query index cannot be used: {e}"))
            .fix("`mcptrail reindex` rebuilds it from the ledger (the ledger is the record; the index is only derived from it)"),
    }
}

fn servers_check(data_dir: &Path, project: Option<PathBuf>) -> anyhow::Result<Check> {
    let project = match project {
        Some(p) => p,
        None => std::env::current_dir()?,
    };
    let locations = mcptrail_clients::SearchRoots::from_env(Some(project)).existing();
    if locations.is_empty() {
        return Ok(Check::new(
            "servers",
            Level::Skip,
            "no MCP client configuration found (Claude Desktop, Claude Code, Cursor, VS Code, Windsurf, and the project)",
        ));
    }
    let (mut fails, mut warns) = (Vec::new(), Vec::new());
    let (mut total, mut recorded) = (0, 0);
    let here = data_dir.canonicalize().unwrap_or_else(|_| data_dir.into());
    for loc in &locations {
        let file = match ConfigFile::read(loc.clone()) {
            Ok(f) => f,
            Err(e) => {
                fails.push(format!("{}: {e}", loc.client.label()));
                continue;
            }
        };
        for s in &file.servers {
            total += 1;
            let at = format!("{} {}: {}", loc.client.label(), loc.path.display(), s.name);
            match s.status(|p| Path::new(p).is_file()) {
                Status::Recorded => {
                    recorded += 1;
                    let elsewhere = s
                        .wrapped
                        .as_ref()
                        .and_then(|w| w.data_dir.as_deref())
                        .map(|d| {
                            let d = Path::new(d);
                            d.canonicalize().unwrap_or_else(|_| d.into())
                        })
                        .filter(|d| *d != here);
                    if let Some(d) = elsewhere {
                        warns.push(format!(
                            "{at} — recorded to {}, not to the data directory checked here",
                            d.display()
                        ));
                    }
                }
                Status::Broken(why) => fails.push(format!("{at} — {why}")),
                Status::NotRecorded(why) if s.disabled => {
                    warns.push(format!("{at} — disabled, and {why}"))
                }
                Status::NotRecorded(why) => match s.transport {
                    Transport::Http | Transport::Sse => warns.push(format!("{at} — {why}")),
                    _ => fails.push(format!("{at} — {why}")),
                },
            }
        }
    }
    let summary = format!(
        "{total} server(s) in {} client file(s): {recorded} recorded",
        locations.len()
    );
    Ok(if !fails.is_empty() {
        let n = fails.len();
        fails.extend(warns);
        Check::new("servers", Level::Fail, format!("{summary}; {n} not recorded or broken"))
            .details(fails)
            .fix("`mcptrail install --all --dry-run` shows the change, `mcptrail install --all` makes it")
    } else if !warns.is_empty() {
        Check::new("servers", Level::Warn, summary)
            .details(warns)
            .fix("HTTP servers wait for `mcptrail gateway`; wrapped servers recording elsewhere are checked with `mcptrail --data-dir DIR doctor`")
    } else {
        Check::new("servers", Level::Pass, summary)
    })
}
