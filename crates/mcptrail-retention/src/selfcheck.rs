//! The self-check: proof that retention, encryption and deletion did what the policy says,
//! recorded as a `governance.selfcheck` event.
//!
//! | check | passes when |
//! | --- | --- |
//! | `policy` | an effective policy is set (warn: none, so nothing is ever removed) |
//! | `retention_local` | no sealed segment here holds only events past their retention (the active one: warn) |
//! | `retention_archive` | the archive directory holds no copy past its retention or of a purged segment (Object Lock copies: warn until they expire) |
//! | `removals_on_time` | every tombstone was signed after its at-hand time (archived) or retention (purged), or carries an ad-hoc authorisation |
//! | `archive_integrity` | every archived segment is in every archive with its SHA-256 (and Object Lock keeps it at least as long as the policy) |
//! | `verify` | the ledger verifies with its tombstones (no seed: warn) |
//! | `governance_records` | every `governance.archive`/`governance.purge` event still in the ledger names tombstones that exist |
//! | `forgotten_subjects` | every subject of a `governance.forget` has no data key left, and (with the master key) their values do not open |
//! | `file_modes` | data, key, tombstone, state and archive files are 0600/0400, directories 0700 |
//! | `index` | the query index holds no removed record |

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use mcptrail_event::{format_rfc3339_nanos, parse_rfc3339, EventKind};
use mcptrail_ledger::{list_segments, verify, LedgerReader, TombstoneState, Verdict, LEDGER_DIR};
use serde::Serialize;
use serde_json::{json, Value};

use crate::archive::Held;
use crate::engine::{Engine, Place};
use crate::RetentionError;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Holds.
    Pass,
    /// Holds, with a caveat worth reading.
    Warn,
    /// Does not hold.
    Fail,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Its name (see the module doc).
    pub name: &'static str,
    /// Pass, warn or fail.
    pub status: Status,
    /// What was found.
    pub details: Vec<String>,
}

/// The self-check's result.
#[derive(Debug, Clone, Serialize)]
pub struct SelfcheckReport {
    /// When it ran (the engine's clock).
    pub now: String,
    /// No check failed.
    pub ok: bool,
    /// Every check.
    pub checks: Vec<Check>,
    /// Seq of the `governance.selfcheck` event recording it.
    pub event_seq: u64,
}

impl SelfcheckReport {
    /// The check named `name`.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

struct Checks(Vec<Check>);

impl Checks {
    fn add(&mut self, name: &'static str, fails: Vec<String>, warns: Vec<String>, ok: String) {
        let (status, details) = if !fails.is_empty() {
            (Status::Fail, fails.into_iter().chain(warns).collect())
        } else if !warns.is_empty() {
            (Status::Warn, warns)
        } else {
            (Status::Pass, vec![ok])
        };
        self.0.push(Check {
            name,
            status,
            details,
        });
    }
}

impl Engine {
    /// Run every check and record the result as a `governance.selfcheck` event.
    pub fn selfcheck(&self) -> Result<SelfcheckReport, RetentionError> {
        let now = self.now();
        let mut c = Checks(Vec::new());
        let plan = self.plan()?;
        let tombs = self.tombstones()?;
        let through = tombs.values().map(|t| t.last_seq).max().unwrap_or(0);

        // policy
        match &plan.policy {
            Some(p) => c.add(
                "policy",
                vec![],
                plan.notes.clone(),
                format!("{} (digest {})", p.policy.describe(), &p.digest[..12]),
            ),
            None => c.add(
                "policy",
                vec![],
                vec!["no retention policy is in effect: nothing is ever archived or purged".into()],
                String::new(),
            ),
        }

        // retention_local
        let (mut fails, mut warns) = (Vec::new(), Vec::new());
        if let Some(p) = &plan.policy {
            for s in plan.segments.iter().filter(|s| s.place == Place::Local) {
                let past = s
                    .keep_until
                    .as_deref()
                    .and_then(|k| parse_rfc3339(k).ok())
                    .is_some_and(|k| k <= now);
                if past {
                    fails.push(format!(
                        "{} (seq {}..={}): every event is past its retention (ended {}) but it is still here: {}",
                        s.segment,
                        s.first_seq,
                        s.last_seq,
                        s.keep_until.as_deref().unwrap_or("?"),
                        s.reason
                    ));
                }
            }
            if let Some(active) = plan.segments.iter().find(|s| s.place == Place::Active) {
                let path = self.data_dir().join(LEDGER_DIR).join(&active.segment);
                let bytes = std::fs::read(&path).unwrap_or_default();
                let expired = bytes
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
                    .filter(|v| {
                        let labels: Vec<String> = v["labels"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|l| l.as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default();
                        v["time"]
                            .as_str()
                            .and_then(|t| parse_rfc3339(t).ok())
                            .is_some_and(|t| {
                                crate::policy::deadlines(&p.policy, t, &labels).1 <= now
                            })
                    })
                    .count();
                if expired > 0 {
                    warns.push(format!(
                        "the active segment {} holds {expired} event(s) past their retention: it is removed once it is sealed (segment_max_age_secs)",
                        active.segment
                    ));
                }
            }
        }
        c.add(
            "retention_local",
            fails,
            warns,
            "no sealed segment here is past its retention".into(),
        );

        // retention_archive
        let (mut fails, mut warns) = (Vec::new(), Vec::new());
        for a in &self.config().archives {
            for name in a.list()? {
                let first: Option<u64> = name
                    .strip_prefix("seg-")
                    .and_then(|n| n.strip_suffix(".jsonl"))
                    .and_then(|n| n.parse().ok());
                let Some(t) = first.and_then(|f| tombs.get(&f)) else {
                    continue; // still here (copied before a crash): the next run removes it
                };
                let expired = plan
                    .segments
                    .iter()
                    .find(|s| s.segment == name)
                    .and_then(|s| s.keep_until.as_deref())
                    .and_then(|k| parse_rfc3339(k).ok())
                    .is_some_and(|k| k <= now);
                let what = if t.state == TombstoneState::Purged {
                    Some("purged")
                } else if expired {
                    Some("past its retention")
                } else {
                    None
                };
                if let Some(what) = what {
                    let msg = format!("{}: {what} but the copy is still there", a.location(&name));
                    if a.deletes() {
                        fails.push(msg);
                    } else {
                        let until = a.locked_until(&name)?;
                        warns.push(format!(
                            "{msg}; it expires with its Object Lock ({}) — nobody can delete it before",
                            until.map_or("no lock date".into(), format_rfc3339_nanos)
                        ));
                    }
                }
            }
        }
        c.add(
            "retention_archive",
            fails,
            warns,
            format!(
                "{} archive(s) hold nothing past its retention",
                self.config().archives.len()
            ),
        );

        // removals_on_time
        let mut fails = Vec::new();
        for t in tombs.values() {
            if t.meta["outside_policy"] == json!(true) {
                if t.meta["authorisation"]["approved_by"]
                    .as_str()
                    .is_none_or(str::is_empty)
                {
                    fails.push(format!(
                        "{}: an ad-hoc removal without an approval",
                        t.segment
                    ));
                }
                continue;
            }
            let key = match t.state {
                TombstoneState::Archived => "at_hand_until",
                TombstoneState::Purged => "keep_until",
            };
            let due = t.meta[key].as_str().and_then(|d| parse_rfc3339(d).ok());
            let at = parse_rfc3339(&t.time).ok();
            match (due, at) {
                (Some(d), Some(a)) if d <= a => {}
                (Some(d), Some(a)) => fails.push(format!(
                    "{} ({} {}): removed at {} before its {key} {}",
                    t.segment,
                    t.state.as_str(),
                    t.first_seq,
                    format_rfc3339_nanos(a),
                    format_rfc3339_nanos(d)
                )),
                _ => fails.push(format!(
                    "{}: its tombstone does not say when it was due ({key})",
                    t.segment
                )),
            }
        }
        c.add(
            "removals_on_time",
            fails,
            vec![],
            format!(
                "{} tombstone(s): every removal happened when the policy (or an approved request) said",
                tombs.len()
            ),
        );

        // archive_integrity
        let (mut fails, mut warns) = (Vec::new(), Vec::new());
        let archived: Vec<_> = tombs
            .values()
            .filter(|t| t.state == TombstoneState::Archived)
            .collect();
        for t in &archived {
            if self.config().archives.is_empty() {
                fails.push(format!(
                    "{} is archived ({}) but no archive is configured to check it",
                    t.segment,
                    t.archive.as_deref().unwrap_or("-")
                ));
            }
            for a in &self.config().archives {
                match a.check(&t.segment, &t.sha256)? {
                    Held::Yes => {}
                    Held::Missing => fails.push(format!(
                        "{} is missing (seq {}..={} are archived there, within their retention)",
                        a.location(&t.segment),
                        t.first_seq,
                        t.last_seq
                    )),
                    Held::Mismatch(got) => fails.push(format!(
                        "{} is corrupt: SHA-256 {got}, the tombstone signed {}",
                        a.location(&t.segment),
                        t.sha256
                    )),
                }
                let keep = plan
                    .segments
                    .iter()
                    .find(|s| s.segment == t.segment)
                    .and_then(|s| s.keep_until.as_deref())
                    .and_then(|k| parse_rfc3339(k).ok());
                if let (Some(until), Some(keep)) = (a.locked_until(&t.segment)?, keep) {
                    if until < keep {
                        warns.push(format!(
                            "{}: Object Lock ends {} but its retention runs until {} (raise the sink's retention_days)",
                            a.location(&t.segment),
                            format_rfc3339_nanos(until),
                            format_rfc3339_nanos(keep)
                        ));
                    }
                }
            }
        }
        c.add(
            "archive_integrity",
            fails,
            warns,
            format!(
                "{} archived segment(s), each in every archive with its SHA-256",
                archived.len()
            ),
        );

        // verify
        let r = verify(self.data_dir(), &self.config().verify)?;
        let summary = format!(
            "{} records (seq {}..={}), {} removed segment(s) under signed tombstones",
            r.records,
            r.first_seq.unwrap_or(0),
            r.last_seq.unwrap_or(0),
            r.removed.len()
        );
        match r.verdict {
            Verdict::Intact => c.add("verify", vec![], vec![], format!("intact: {summary}")),
            Verdict::CannotVerify => c.add("verify", vec![], r.unchecked.clone(), String::new()),
            Verdict::Tampered => c.add(
                "verify",
                r.problems
                    .iter()
                    .take(10)
                    .map(|p| format!("[{}] {p}", p.class()))
                    .collect(),
                vec![],
                String::new(),
            ),
        }

        // governance_records and forgotten_subjects: one pass over the ledger.
        let (gov, forgotten) = scan_governance(self.data_dir())?;
        let mut fails = Vec::new();
        for (seq, names) in &gov {
            for n in names {
                if !self
                    .data_dir()
                    .join(mcptrail_ledger::TOMBSTONE_DIR)
                    .join(n)
                    .exists()
                {
                    fails.push(format!(
                        "the governance event at seq {seq} names tombstone {n}, which is missing"
                    ));
                }
            }
        }
        c.add(
            "governance_records",
            fails,
            vec![],
            format!(
                "{} governance.archive/purge event(s); every tombstone they name is there",
                gov.len()
            ),
        );
        c.add(
            "forgotten_subjects",
            self.check_forgotten(&forgotten)?,
            vec![],
            format!(
                "{} forgotten subject(s): no data key left{}",
                forgotten.len(),
                if self.config().master_key.is_some() {
                    ", and their encrypted values do not open with the master key"
                } else {
                    " (no master key at hand to try opening their values)"
                }
            ),
        );

        // file_modes
        let mut fails = Vec::new();
        check_modes(self.data_dir(), &mut fails);
        for a in &self.config().archives {
            if a.deletes() {
                check_modes(Path::new(&a.label()), &mut fails);
            }
        }
        let ledger_dir = self.data_dir().join(LEDGER_DIR);
        let segs = list_segments(&ledger_dir)?;
        for (i, s) in segs.iter().enumerate() {
            let mode = std::fs::metadata(&s.path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            let want = if i + 1 == segs.len() { 0o600 } else { 0o400 };
            if mode != want {
                fails.push(format!(
                    "{}: mode {mode:04o}, should be {want:04o}",
                    s.path.display()
                ));
            }
        }
        fails.dedup();
        c.add(
            "file_modes",
            fails,
            vec![],
            "files 0600 (sealed segments and archive copies 0400), directories 0700".into(),
        );

        // index
        let mut fails = Vec::new();
        if self.data_dir().join("index.sqlite").exists() && through > 0 {
            let idx = mcptrail_index::Index::open(self.data_dir())?;
            if let Some((first, _)) = idx.seq_range()? {
                if first <= through {
                    fails.push(format!(
                        "the index still holds records from seq {first}, but records 1..={through} were removed: run `mcptrail retention run` (or `mcptrail reindex`)"
                    ));
                }
            }
        }
        c.add(
            "index",
            fails,
            vec![],
            "the index holds no removed record".into(),
        );

        let checks = c.0;
        let ok = checks.iter().all(|c| c.status != Status::Fail);
        let event_seq = self.append(
            EventKind::GovernanceSelfcheck,
            json!({"ok": ok, "now": format_rfc3339_nanos(now), "checks": checks, "removed_through": through}),
        )?;
        Ok(SelfcheckReport {
            now: format_rfc3339_nanos(now),
            ok,
            checks,
            event_seq,
        })
    }

    fn check_forgotten(&self, subjects: &[String]) -> Result<Vec<String>, RetentionError> {
        let mut fails = Vec::new();
        let keys = self.data_dir().join("keys").join("subjects");
        for s in subjects {
            if keys.join(format!("{s}.key")).exists() {
                fails.push(format!(
                    "subject {s} was forgotten but its data key is still in {}",
                    keys.display()
                ));
            }
        }
        if let (Some(master), false) = (&self.config().master_key, subjects.is_empty()) {
            let vault = mcptrail_redact::Vault::new(
                self.data_dir(),
                mcptrail_redact::MasterKey::clone(master),
            );
            // Try one sealed value of each forgotten subject, wherever it is stored.
            let mut tried = std::collections::BTreeSet::new();
            for rec in LedgerReader::open(self.data_dir(), 1)? {
                let rec = rec?;
                let text = String::from_utf8_lossy(&rec.line);
                if !text.contains("[enc:") {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let id = v["event_id"].as_str().unwrap_or_default().to_string();
                for (path, sealed) in sealed_fields(&v, String::new()) {
                    if subjects.contains(&sealed.subject) && tried.insert(sealed.subject.clone()) {
                        if let Ok(_clear) = vault.open(&sealed, &id, &path) {
                            fails.push(format!(
                                "a value of forgotten subject {} in event {id} still decrypts",
                                sealed.subject
                            ));
                        }
                    }
                }
            }
        }
        Ok(fails)
    }
}

/// Every sealed value in `v` with its JSON pointer.
fn sealed_fields(v: &Value, at: String) -> Vec<(String, mcptrail_redact::Sealed)> {
    match v {
        Value::String(s) => mcptrail_redact::find_sealed(s)
            .into_iter()
            .map(|(_, sealed)| (at.clone(), sealed))
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .flat_map(|(i, x)| sealed_fields(x, format!("{at}/{i}")))
            .collect(),
        Value::Object(o) => o
            .iter()
            .flat_map(|(k, x)| {
                sealed_fields(
                    x,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// (seq, tombstone files named) of every governance.archive/purge event, and the subject
/// tokens of every governance.forget event.
type Governance = (Vec<(u64, Vec<String>)>, Vec<String>);

fn scan_governance(data_dir: &Path) -> Result<Governance, RetentionError> {
    let finder = memchr::memmem::Finder::new(b"\"kind\":\"governance.");
    let (mut gov, mut forgotten) = (Vec::new(), Vec::new());
    for rec in LedgerReader::open(data_dir, 1)? {
        let rec = rec?;
        if finder.find(&rec.line).is_none() {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&rec.line) else {
            continue;
        };
        match v["kind"].as_str() {
            Some("governance.archive" | "governance.purge") => {
                let names: Vec<String> = v["detail"]["segments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["tombstone"].as_str().map(String::from))
                    .filter(|n| n.starts_with("ts-"))
                    .collect();
                gov.push((v["seq"].as_u64().unwrap_or(0), names));
            }
            Some("governance.forget") => {
                if let Some(s) = v["detail"]["subject"].as_str() {
                    forgotten.push(s.to_string());
                }
            }
            _ => {}
        }
    }
    forgotten.sort();
    forgotten.dedup();
    Ok((gov, forgotten))
}

/// Files readable by others, directories open to others, under `dir`.
fn check_modes(dir: &Path, fails: &mut Vec<String>) {
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        fails.push(format!(
            "{}: mode {mode:04o}, should be 0700",
            dir.display()
        ));
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let path = e.path();
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if m.is_dir() {
            check_modes(&path, fails);
        } else if m.is_file() {
            let mode = m.permissions().mode() & 0o777;
            // The verifier key is public; everything else is the owner's alone.
            let public = path.file_name().is_some_and(|n| n == "checkpoint.vkey");
            if mode & 0o077 != 0 && !public {
                fails.push(format!(
                    "{}: mode {mode:04o}, should be 0600",
                    path.display()
                ));
            }
        }
    }
}
