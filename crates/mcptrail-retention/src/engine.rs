//! The engine: the effective policy and its changes, the plan (what is archived or purged and
//! why), carrying it out, ad-hoc purges with an authorisation, and the journal that lets the
//! next run finish what a crash interrupted.
//!
//! State under `<data_dir>/retention/` (0700):
//! - `policy.json` (0600): the effective policy, where its authority comes from and the seq of
//!   the `governance.retention` event that recorded it. Replaced atomically.
//! - `JOURNAL` (0600): the removal in progress (written before the first step, deleted after
//!   the `governance.*` events are appended). Found at the start of a run: the interrupted
//!   run's segments are finished and the events say so.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mcptrail_event::{format_rfc3339_nanos, parse_rfc3339, Event, EventKind};
use mcptrail_ledger::{
    list_segments, list_tombstones, remove_segments, verify, Ledger, LedgerConfig, Removal,
    RemovalOptions, RemovalStep, Tombstone, TombstoneState, Verdict, VerifyOptions, LEDGER_DIR,
    TOMBSTONE_DIR,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::archive::{Archive, Deleted, Held};
use crate::auth::{Authorisation, PolicySource};
use crate::clock::Clock;
use crate::policy::{deadlines, Policy};
use crate::RetentionError;

/// Directory of the engine's state under the data directory.
pub const RETENTION_DIR: &str = "retention";
const POLICY_FILE: &str = "policy.json";
const JOURNAL_FILE: &str = "JOURNAL";
const POLICY_FORMAT: &str = "mcptrail-retention-policy v1";

/// A hook run on every `governance.*` event before it is appended (the binary redacts it
/// like every other event: a reason may name a person).
pub type EventHook = Arc<dyn Fn(&mut Event) + Send + Sync>;

/// Fault injection (tests): called between the steps of each removal; an error stops there
/// as a crash would.
pub type FaultHook = Arc<dyn Fn(RemovalStep, &str) -> Result<(), String> + Send + Sync>;

/// How the engine works on one data directory.
#[derive(Clone, Default)]
pub struct EngineConfig {
    /// For appending the `governance.*` events (and its `anchor_dir` gets tombstone copies).
    pub ledger: LedgerConfig,
    /// Where segments go before they leave this machine (all of them must hold a segment).
    pub archives: Vec<Arc<dyn Archive>>,
    /// Sinks whose cursor must have passed a segment before it is removed.
    pub wait_for_sinks: Vec<String>,
    /// How the ledger is verified before anything is removed (seed, key, anchors).
    pub verify: VerifyOptions,
    /// Applied to every governance event before it is appended.
    pub event_hook: Option<EventHook>,
    /// The master key, so the self-check can show a forgotten subject's fields do not open.
    pub master_key: Option<Arc<mcptrail_redact::MasterKey>>,
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("archives", &self.archives)
            .field("wait_for_sinks", &self.wait_for_sinks)
            .finish_non_exhaustive()
    }
}

/// The effective policy, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EffectivePolicy {
    format: String,
    /// The policy.
    pub policy: Policy,
    /// Its digest.
    pub digest: String,
    /// Who set it: the configuration, or a request and its approval.
    pub source: PolicySource,
    /// When (RFC 3339).
    pub set_at: String,
    /// Seq of the `governance.retention` event that recorded it (the latest re-recording).
    pub event_seq: u64,
}

/// What happens to a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Stays where it is.
    Keep,
    /// Copied to every archive (hash checked), then removed here under a tombstone.
    Archive,
    /// Deleted here and from the archive directory, under a tombstone.
    Purge,
}

/// Where a segment is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    /// The active segment (never removed).
    Active,
    /// A sealed segment on this machine.
    Local,
    /// Removed here, kept in the archive.
    Archived,
}

/// The plan for one segment.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentPlan {
    /// File name.
    pub segment: String,
    /// Its first and last seq.
    pub first_seq: u64,
    /// Last seq (0 for an empty active segment).
    pub last_seq: u64,
    /// SHA-256 of the file (hex; empty for the active segment).
    pub sha256: String,
    /// Where it is.
    pub place: Place,
    /// Labels of its events.
    pub labels: Vec<String>,
    /// When its last event leaves the at-hand time (RFC 3339).
    pub at_hand_until: Option<String>,
    /// When its last event's retention ends.
    pub keep_until: Option<String>,
    /// What the run does.
    pub action: Action,
    /// Why.
    pub reason: String,
    /// Removed before a crash but not yet recorded (an interrupted run): the run finishes it.
    pub interrupted: bool,
    #[serde(skip)]
    keep_until_t: Option<OffsetDateTime>,
    #[serde(skip)]
    at_hand_until_t: Option<OffsetDateTime>,
}

/// What `plan` found.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The time the plan is for.
    pub now: String,
    /// The effective policy (`None`: retention is off).
    pub policy: Option<EffectivePolicy>,
    /// Every segment, oldest first (archived ones, then local ones, then the active one).
    pub segments: Vec<SegmentPlan>,
    /// Things to know (a configuration that differs from the effective policy, …).
    pub notes: Vec<String>,
}

impl Plan {
    /// The segments with `action`.
    pub fn with(&self, action: Action) -> impl Iterator<Item = &SegmentPlan> {
        self.segments.iter().filter(move |s| s.action == action)
    }
}

/// One segment the run archived or purged.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    /// File name.
    pub segment: String,
    /// Seq range.
    pub first_seq: u64,
    /// Last seq.
    pub last_seq: u64,
    /// The tombstone file.
    pub tombstone: String,
    /// Where copies are (archive) / what happened to them (purge).
    pub copies: Vec<String>,
}

/// What a run (or an ad-hoc purge) did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// The time it ran at.
    pub now: String,
    /// Segments archived and removed here.
    pub archived: Vec<Done>,
    /// Segments purged.
    pub purged: Vec<Done>,
    /// Segments the plan wanted gone that were kept (an archive did not hold them yet).
    pub held: Vec<(String, String)>,
    /// Index rows deleted.
    pub index_rows_purged: u64,
    /// Seqs of the `governance.*` events appended.
    pub events: Vec<u64>,
    /// An interrupted run was finished.
    pub recovered: bool,
    /// Records `1..=removed_through` are no longer on this machine.
    pub removed_through: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    started: String,
    op: String,
    segments: Vec<String>,
}

/// The retention engine of one data directory.
pub struct Engine {
    data_dir: PathBuf,
    cfg: EngineConfig,
    clock: Arc<dyn Clock>,
    /// Fault injection for tests: called between the steps of each removal.
    #[doc(hidden)]
    pub fault: Option<FaultHook>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("data_dir", &self.data_dir)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// The first lines' fields the plan reads.
#[derive(Deserialize)]
struct Head {
    seq: u64,
    time: String,
    #[serde(default)]
    labels: Vec<String>,
}

impl Engine {
    /// An engine for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>, cfg: EngineConfig, clock: Arc<dyn Clock>) -> Self {
        Engine {
            data_dir: data_dir.into(),
            cfg,
            clock,
            fault: None,
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub(crate) fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub(crate) fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    fn state_dir(&self) -> PathBuf {
        self.data_dir.join(RETENTION_DIR)
    }

    // -----------------------------------------------------------------------------------------
    // The policy
    // -----------------------------------------------------------------------------------------

    /// The effective policy (`None`: none was ever set — retention is off).
    pub fn effective_policy(&self) -> Result<Option<EffectivePolicy>, RetentionError> {
        let path = self.state_dir().join(POLICY_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RetentionError::state(&path)(e)),
        };
        let p: EffectivePolicy =
            serde_json::from_slice(&text).map_err(|e| RetentionError::State {
                path: path.clone(),
                reason: format!("not a retention policy file ({e}); restore it from the newest governance.retention event"),
            })?;
        if p.format != POLICY_FORMAT || p.digest != p.policy.digest() {
            return Err(RetentionError::State {
                path,
                reason: "its digest does not match its policy (edited by hand?); restore it from the newest governance.retention event".into(),
            });
        }
        Ok(Some(p))
    }

    /// Make `policy` (from the configuration file `file`) the effective one if none is set
    /// yet, recording a `governance.retention` event. An effective policy already set is
    /// kept: a configuration edit must not bypass an approval; the returned note says when
    /// the configuration differs.
    pub fn bootstrap(
        &self,
        policy: &Policy,
        file: Option<&Path>,
        by: &str,
    ) -> Result<(EffectivePolicy, Option<String>), RetentionError> {
        policy.validate()?;
        if let Some(current) = self.effective_policy()? {
            let note = (current.policy != *policy).then(|| {
                format!(
                    "the configuration's [retention] ({}) differs from the effective policy ({}, set {} by {}); it is not applied: a change needs a second principal's approval (the governance server)",
                    policy.describe(),
                    current.policy.describe(),
                    current.set_at,
                    describe_source(&current.source)
                )
            });
            return Ok((current, note));
        }
        let source = PolicySource::Config {
            file: file.map(|f| f.display().to_string()),
            by: by.to_string(),
        };
        let p = self.record_policy(None, policy, source, "bootstrap")?;
        Ok((p, None))
    }

    /// Change the effective policy, with a second principal's approval: records a
    /// `governance.retention` event with the old and new policy, who requested and who
    /// approved. A self-approved or empty authorisation is refused (and the refusal recorded).
    pub fn set_policy(
        &self,
        new: &Policy,
        auth: &Authorisation,
    ) -> Result<EffectivePolicy, RetentionError> {
        if let Err(e) = auth.check().and_then(|()| new.validate()) {
            self.append(
                EventKind::GovernanceRetention,
                json!({"change": "refused", "requested": new.to_json(), "authorisation": auth, "reason": e.to_string()}),
            )?;
            return Err(e);
        }
        let old = self.effective_policy()?;
        self.record_policy(
            old.as_ref(),
            new,
            PolicySource::Approved(auth.clone()),
            "set",
        )
    }

    fn record_policy(
        &self,
        old: Option<&EffectivePolicy>,
        new: &Policy,
        source: PolicySource,
        change: &str,
    ) -> Result<EffectivePolicy, RetentionError> {
        let now = format_rfc3339_nanos(self.now());
        let seq = self.append(
            EventKind::GovernanceRetention,
            json!({
                "change": change,
                "old": old.map(|o| o.policy.to_json()),
                "new": new.to_json(),
                "digest": new.digest(),
                "summary": new.describe(),
                "authority": source,
            }),
        )?;
        let p = EffectivePolicy {
            format: POLICY_FORMAT.into(),
            policy: new.clone(),
            digest: new.digest(),
            source,
            set_at: now,
            event_seq: seq,
        };
        self.write_state(
            POLICY_FILE,
            &serde_json::to_vec_pretty(&p).expect("serialises"),
        )?;
        Ok(p)
    }

    fn write_state(&self, name: &str, bytes: &[u8]) -> Result<(), RetentionError> {
        let dir = self.state_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(RetentionError::state(&dir))?;
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| std::fs::File::open(&dir)?.sync_all())
            .map_err(RetentionError::state(&path))
    }

    /// Append a governance event (timed by the engine's clock); returns its seq.
    pub(crate) fn append(&self, kind: EventKind, detail: Value) -> Result<u64, RetentionError> {
        let mut e = Event::new(kind);
        e.time = format_rfc3339_nanos(self.now());
        e.detail = Some(detail);
        if let Some(h) = &self.cfg.event_hook {
            h(&mut e);
        }
        let mut ledger = Ledger::open(&self.data_dir, self.cfg.ledger.clone())?;
        Ok(ledger.append(&mut [e])?.last_seq)
    }

    // -----------------------------------------------------------------------------------------
    // The plan
    // -----------------------------------------------------------------------------------------

    /// What a run would archive and purge now, and why (reads only).
    pub fn plan(&self) -> Result<Plan, RetentionError> {
        self.plan_with(self.effective_policy()?, Vec::new())
    }

    /// [`plan`](Self::plan), previewing `configured` (from `[retention]`) when no policy is
    /// in effect yet — the first run would bootstrap it. Reads only.
    pub fn plan_configured(
        &self,
        configured: Option<&Policy>,
        file: Option<&Path>,
    ) -> Result<Plan, RetentionError> {
        let current = self.effective_policy()?;
        let mut notes = Vec::new();
        let policy = match (current, configured) {
            (Some(c), Some(p)) => {
                if c.policy != *p {
                    notes.push(format!(
                        "the configuration's [retention] ({}) differs from the effective policy ({}); it is not applied: a change needs a second principal's approval",
                        p.describe(),
                        c.policy.describe()
                    ));
                }
                Some(c)
            }
            (Some(c), None) => Some(c),
            (None, Some(p)) => {
                p.validate()?;
                notes.push(
                    "the configured policy is not in effect yet: the first `mcptrail retention run` records it (governance.retention)".into(),
                );
                Some(EffectivePolicy {
                    format: POLICY_FORMAT.into(),
                    policy: p.clone(),
                    digest: p.digest(),
                    source: PolicySource::Config {
                        file: file.map(|f| f.display().to_string()),
                        by: String::new(),
                    },
                    set_at: String::new(),
                    event_seq: 0,
                })
            }
            (None, None) => None,
        };
        self.plan_with(policy, notes)
    }

    fn plan_with(
        &self,
        policy: Option<EffectivePolicy>,
        notes: Vec<String>,
    ) -> Result<Plan, RetentionError> {
        let now = self.now();
        let mut plan = Plan {
            now: format_rfc3339_nanos(now),
            policy: policy.clone(),
            segments: Vec::new(),
            notes,
        };
        let tombs = self.tombstones()?;
        let ledger_dir = self.data_dir.join(LEDGER_DIR);
        let segments = list_segments(&ledger_dir)?;
        let through = tombs.values().map(|t| t.last_seq).max().unwrap_or(0);
        // Archived ones first (gone here, held in the archive).
        for t in tombs.values() {
            if t.state != TombstoneState::Archived
                || segments.iter().any(|s| s.first_seq == t.first_seq)
            {
                continue;
            }
            let last = parse_rfc3339(&t.times.1).ok();
            let (hand, keep) = match (&policy, last) {
                // The last event's time with the longest rule of all the segment's labels:
                // never earlier than the exact deadline of any of its events.
                (Some(p), Some(l)) => {
                    let (h, k) = deadlines(&p.policy, l, &t.labels);
                    (Some(h), Some(k))
                }
                _ => (None, None),
            };
            plan.segments.push(segment_plan(
                t.segment.clone(),
                (t.first_seq, t.last_seq),
                t.sha256.clone(),
                Place::Archived,
                t.labels.clone(),
                (hand, keep),
            ));
        }
        let last_index = segments.len().saturating_sub(1);
        let mut cache = self.load_cache();
        cache.retain(|name, _| segments.iter().any(|s| file_name(&s.path) == *name));
        for (i, seg) in segments.iter().enumerate() {
            let name = file_name(&seg.path);
            if i == last_index {
                let mut s = segment_plan(
                    name,
                    (seg.first_seq, 0),
                    String::new(),
                    Place::Active,
                    Vec::new(),
                    (None, None),
                );
                s.reason = "the active segment: never removed (it is sealed by rotation, segment_max_bytes / segment_max_age_secs)".into();
                plan.segments.push(s);
                continue;
            }
            let scanned = match cache.get(&name).filter(|c| c.len == seg.len) {
                Some(c) => c.clone(),
                None => {
                    let c = scan_segment(&seg.path, &name)?;
                    cache.insert(name.clone(), c.clone());
                    c
                }
            };
            let (hand, keep) = match &policy {
                Some(p) => scanned.deadlines(&p.policy),
                None => (None, None),
            };
            let mut s = segment_plan(
                name,
                (seg.first_seq, scanned.last_seq),
                scanned.sha256.clone(),
                Place::Local,
                scanned.labels.clone(),
                (hand, keep),
            );
            s.interrupted = seg.first_seq <= through;
            plan.segments.push(s);
        }
        self.save_cache(&cache);
        if policy.is_none() {
            for s in &mut plan.segments {
                if s.place != Place::Active {
                    s.reason = "no retention policy: kept".into();
                }
            }
            plan.notes.push(
                "no retention policy is in effect ([retention] retention_days is not set): nothing is archived or purged".into(),
            );
            return Ok(plan);
        };
        self.decide(&mut plan, now, &tombs)?;
        Ok(plan)
    }

    /// Decide each segment's action: removal here goes oldest first without a gap, and never
    /// takes the active segment; archived copies are purged on their own schedule.
    fn decide(
        &self,
        plan: &mut Plan,
        now: OffsetDateTime,
        tombs: &BTreeMap<u64, Tombstone>,
    ) -> Result<(), RetentionError> {
        let lag = self.sink_positions()?;
        let has_archive = !self.cfg.archives.is_empty();
        let mut open = true;
        for s in plan.segments.iter_mut() {
            let keep_done = s.keep_until_t.is_some_and(|k| k <= now);
            let hand_done = s.at_hand_until_t.is_some_and(|h| h <= now);
            let until = |t: &Option<String>| t.clone().unwrap_or_else(|| "?".into());
            match s.place {
                Place::Active => {}
                Place::Archived => {
                    if keep_done {
                        s.action = Action::Purge;
                        s.reason = format!(
                            "retention ended {}: the archived copy is purged",
                            until(&s.keep_until)
                        );
                    } else {
                        s.reason = format!(
                            "archived; purged when its retention ends ({})",
                            until(&s.keep_until)
                        );
                    }
                }
                Place::Local if s.interrupted => {
                    // A tombstone says it is removed: finish.
                    let state = tombs.get(&s.first_seq).map(|t| t.state);
                    s.action = if keep_done || state == Some(TombstoneState::Purged) {
                        Action::Purge
                    } else {
                        Action::Archive
                    };
                    s.reason =
                        "an interrupted run tombstoned it but did not finish: completed now".into();
                }
                Place::Local => {
                    if !open {
                        s.reason = if keep_done || (hand_done && has_archive) {
                            format!(
                                "its time is up ({} {}), but an older segment is kept: segments leave oldest first",
                                if keep_done { "retention ended" } else { "at-hand time ended" },
                                if keep_done { until(&s.keep_until) } else { until(&s.at_hand_until) }
                            )
                        } else if hand_done {
                            format!(
                                "past its at-hand time; kept here until {} (no archive configured)",
                                until(&s.keep_until)
                            )
                        } else {
                            format!("at hand until {}", until(&s.at_hand_until))
                        };
                        continue;
                    }
                    if let Some((sink, seq)) =
                        lag.iter().find(|(_, seq)| *seq < s.last_seq).cloned()
                    {
                        open = false;
                        s.reason = format!(
                            "sink {sink} has shipped up to seq {seq} only: kept until it has shipped this segment (wait_for_sinks)"
                        );
                        continue;
                    }
                    if keep_done {
                        s.action = Action::Purge;
                        s.reason = format!(
                            "every event is past its retention (the last ended {})",
                            until(&s.keep_until)
                        );
                    } else if hand_done && has_archive {
                        s.action = Action::Archive;
                        s.reason = format!(
                            "every event is past its at-hand time (the last ended {}); kept in the archive until {}",
                            until(&s.at_hand_until),
                            until(&s.keep_until)
                        );
                    } else if hand_done {
                        open = false;
                        s.reason = format!(
                            "past its at-hand time but no archive is configured (archive_dir / archive_s3_sink): kept here until {}",
                            until(&s.keep_until)
                        );
                    } else {
                        open = false;
                        s.reason = format!("at hand until {}", until(&s.at_hand_until));
                    }
                }
            }
        }
        Ok(())
    }

    /// (sink, cursor seq) of each sink the removal waits for.
    fn sink_positions(&self) -> Result<Vec<(String, u64)>, RetentionError> {
        let mut out = Vec::new();
        for name in &self.cfg.wait_for_sinks {
            let c = mcptrail_sinks::Cursor::new(&self.data_dir, name);
            let seq = c
                .load()
                .map_err(|e| RetentionError::Refused(e.to_string()))?
                .map_or(0, |s| s.seq);
            out.push((name.clone(), seq));
        }
        Ok(out)
    }

    /// The newest tombstone of each removed segment, by first seq (signatures not checked:
    /// a run verifies the ledger before it removes anything).
    pub(crate) fn tombstones(&self) -> Result<BTreeMap<u64, Tombstone>, RetentionError> {
        let mut out: BTreeMap<u64, Tombstone> = BTreeMap::new();
        for path in list_tombstones(&self.data_dir.join(TOMBSTONE_DIR))? {
            let text = std::fs::read_to_string(&path).map_err(RetentionError::state(&path))?;
            let t = Tombstone::read_unverified(&text).map_err(|reason| RetentionError::State {
                path: path.clone(),
                reason,
            })?;
            match out.get(&t.first_seq) {
                Some(prev) if prev.state >= t.state => {}
                _ => {
                    out.insert(t.first_seq, t);
                }
            }
        }
        Ok(out)
    }

    // -----------------------------------------------------------------------------------------
    // Carrying it out
    // -----------------------------------------------------------------------------------------

    /// Apply the effective policy: archive, then purge, what the plan says. Needs no fresh
    /// approval — the policy itself was approved (or bootstrapped from the configuration); its
    /// authority is signed into every tombstone and event. Verifies the ledger first.
    pub fn run(&self) -> Result<RunReport, RetentionError> {
        let plan = self.plan()?;
        let Some(policy) = plan.policy.clone() else {
            return Ok(RunReport {
                now: plan.now,
                ..RunReport::default()
            });
        };
        let authority = json!({
            "policy": policy.policy.to_json(),
            "policy_digest": policy.digest,
            "policy_event_seq": policy.event_seq,
            "authority": policy.source,
            "outside_policy": false,
        });
        let todo: Vec<SegmentPlan> = plan
            .segments
            .iter()
            .filter(|s| s.action != Action::Keep)
            .cloned()
            .collect();
        self.execute("run", &todo, authority, Some(&policy))
    }

    /// Purge every segment up to and including `through_seq` (the last seq of a sealed
    /// segment), outside the policy: an erasure order, a legal decision. Needs an
    /// authorisation by a second principal; a missing or self-approved one is refused and the
    /// refusal recorded.
    pub fn purge(
        &self,
        through_seq: u64,
        auth: &Authorisation,
        reason: &str,
    ) -> Result<RunReport, RetentionError> {
        if let Err(e) = auth.check().and_then(|()| {
            if reason.trim().is_empty() {
                Err(RetentionError::Unauthorised(
                    "an ad-hoc purge needs a reason (recorded)".into(),
                ))
            } else {
                Ok(())
            }
        }) {
            self.append(
                EventKind::GovernancePurge,
                json!({"outcome": "refused", "through_seq": through_seq, "authorisation": auth, "reason": reason, "why": e.to_string()}),
            )?;
            return Err(e);
        }
        let plan = self.plan()?;
        let mut todo = Vec::new();
        let mut boundary = false;
        for s in &plan.segments {
            if s.place == Place::Active || s.first_seq > through_seq {
                break;
            }
            if s.last_seq > through_seq {
                break;
            }
            boundary |= s.last_seq == through_seq;
            let mut s = s.clone();
            s.action = Action::Purge;
            s.reason = format!("ad-hoc purge {}: {reason}", auth.request_id);
            todo.push(s);
        }
        if !boundary {
            let ends: Vec<String> = plan
                .segments
                .iter()
                .filter(|s| s.place != Place::Active)
                .map(|s| s.last_seq.to_string())
                .collect();
            let e = RetentionError::Refused(format!(
                "seq {through_seq} is not the end of a sealed segment: purges remove whole sealed segments, oldest first (segment ends: {})",
                if ends.is_empty() { "none".into() } else { ends.join(", ") }
            ));
            self.append(
                EventKind::GovernancePurge,
                json!({"outcome": "refused", "through_seq": through_seq, "authorisation": auth, "reason": reason, "why": e.to_string()}),
            )?;
            return Err(e);
        }
        let authority = json!({
            "authorisation": auth,
            "reason": reason,
            "outside_policy": true,
            "policy_digest": plan.policy.as_ref().map(|p| p.digest.clone()),
        });
        self.execute("purge", &todo, authority, plan.policy.as_ref())
    }

    fn execute(
        &self,
        op: &str,
        todo: &[SegmentPlan],
        authority: Value,
        policy: Option<&EffectivePolicy>,
    ) -> Result<RunReport, RetentionError> {
        let now = self.now();
        let mut report = RunReport {
            now: format_rfc3339_nanos(now),
            ..RunReport::default()
        };
        // One run at a time (two overlapping timers): the journal and the events are its own.
        let _running = self.run_lock()?;
        let journal_path = self.state_dir().join(JOURNAL_FILE);
        let interrupted: Option<Journal> = std::fs::read(&journal_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        report.recovered = interrupted.is_some() || todo.iter().any(|s| s.interrupted);
        if todo.is_empty() && interrupted.is_none() {
            report.removed_through = self.removed_through()?;
            return Ok(report);
        }
        if !todo.is_empty() {
            let r = verify(&self.data_dir, &self.cfg.verify)?;
            if r.verdict == Verdict::Tampered {
                let first = r
                    .problems
                    .first()
                    .map(|p| format!("[{}] {p}", p.class()))
                    .unwrap_or_default();
                self.append(
                    EventKind::GovernancePurge,
                    json!({"outcome": "refused", "op": op, "why": "the ledger does not verify", "problems": r.problems.len(), "first_problem": first}),
                )?;
                return Err(RetentionError::Tampered(first));
            }
        }
        let journal = Journal {
            started: report.now.clone(),
            op: op.into(),
            segments: todo.iter().map(|s| s.segment.clone()).collect(),
        };
        self.write_state(
            JOURNAL_FILE,
            &serde_json::to_vec(&journal).expect("serialises"),
        )?;

        let fault = self.fault.clone();
        let hook = move |step: RemovalStep, seg: &str| match &fault {
            Some(f) => f(step, seg),
            None => Ok(()),
        };
        let mut notes: Vec<String> = Vec::new();
        for s in todo {
            let meta = {
                let mut m = authority.clone();
                m["action"] = json!(match s.action {
                    Action::Archive => "archive",
                    _ => "purge",
                });
                m["at_hand_until"] = json!(s.at_hand_until);
                m["keep_until"] = json!(s.keep_until);
                m["decided"] = json!(s.reason);
                m
            };
            let opts = RemovalOptions {
                meta,
                time: Some(report.now.clone()),
                anchor_dir: self.cfg.ledger.checkpoints.anchor_dir.clone(),
                hook: Some(&hook),
            };
            if let (Some(p), Place::Local, false) = (policy, s.place, s.interrupted) {
                if authority["outside_policy"] != json!(true) {
                    self.recheck(s, &p.policy, now)?;
                }
            }
            match (s.action, s.place) {
                (Action::Archive, Place::Local) => {
                    let path = self.data_dir.join(LEDGER_DIR).join(&s.segment);
                    let mut copies = Vec::new();
                    let mut missing = None;
                    for a in &self.cfg.archives {
                        match a.store(&s.segment, &path, &s.sha256)? {
                            Held::Yes => copies.push(a.location(&s.segment)),
                            Held::Missing => {
                                missing = Some(format!("{} does not hold it yet (the S3 sink uploads sealed segments: run `mcptrail ship`)", a.location(&s.segment)));
                                break;
                            }
                            Held::Mismatch(got) => {
                                missing = Some(format!(
                                    "{} holds other bytes (SHA-256 {got}, the segment's is {})",
                                    a.location(&s.segment),
                                    s.sha256
                                ));
                                break;
                            }
                        }
                    }
                    if let Some(why) = missing {
                        // Removal goes oldest first: nothing newer leaves either.
                        report.held.push((s.segment.clone(), why));
                        break;
                    }
                    let removed = remove_segments(
                        &self.data_dir,
                        &[Removal {
                            segment: s.segment.clone(),
                            state: TombstoneState::Archived,
                            archive: Some(copies.join(" ")),
                        }],
                        &opts,
                    )?;
                    report.archived.push(done(s, &removed, copies));
                }
                (Action::Purge, _) => {
                    let removed = remove_segments(
                        &self.data_dir,
                        &[Removal {
                            segment: s.segment.clone(),
                            state: TombstoneState::Purged,
                            archive: None,
                        }],
                        &opts,
                    )?;
                    let mut copies = Vec::new();
                    for a in &self.cfg.archives {
                        match a.delete(&s.segment)? {
                            Deleted::Deleted => {
                                copies.push(format!("{}: deleted", a.location(&s.segment)))
                            }
                            Deleted::NotThere => {}
                            Deleted::LeftToExpire(why) => {
                                copies.push(why.clone());
                                notes.push(why);
                            }
                        }
                    }
                    report.purged.push(done(s, &removed, copies));
                }
                _ => {}
            }
        }
        report.removed_through = self.removed_through()?;
        if report.removed_through > 0 && self.data_dir.join("index.sqlite").exists() {
            let mut idx = mcptrail_index::Index::open(&self.data_dir)?;
            report.index_rows_purged = idx.purge_through(report.removed_through)?;
        }
        let recovered =
            interrupted.map(|j| json!({"started": j.started, "op": j.op, "segments": j.segments}));
        if !report.archived.is_empty() {
            report.events.push(self.append(
                EventKind::GovernanceArchive,
                json!({
                    "op": op,
                    "segments": report.archived,
                    "archives": self.cfg.archives.iter().map(|a| a.label()).collect::<Vec<_>>(),
                    "authority": authority,
                    "removed_through": report.removed_through,
                    "completed_interrupted_run": recovered,
                }),
            )?);
        }
        if !report.purged.is_empty() {
            let first = report.purged.iter().map(|d| d.first_seq).min();
            let last = report.purged.iter().map(|d| d.last_seq).max();
            report.events.push(self.append(
                EventKind::GovernancePurge,
                json!({
                    "outcome": "purged",
                    "op": op,
                    "first_seq": first,
                    "last_seq": last,
                    "segments": report.purged,
                    "authority": authority,
                    "index_rows_purged": report.index_rows_purged,
                    "copies_left_to_expire": notes,
                    "removed_through": report.removed_through,
                    "completed_interrupted_run": recovered,
                }),
            )?);
        }
        if report.archived.is_empty() && report.purged.is_empty() {
            if let Some(r) = recovered {
                report.events.push(self.append(
                    EventKind::GovernancePurge,
                    json!({"outcome": "recovered", "op": op, "completed_interrupted_run": r, "removed_through": report.removed_through}),
                )?);
            }
        }
        // The event that recorded the effective policy was purged: record it again, so the
        // ledger always holds the policy it is governed by.
        if let Some(p) = policy {
            if p.event_seq <= report.removed_through {
                let seq = self.append(
                    EventKind::GovernanceRetention,
                    json!({"change": "reaffirmed", "new": p.policy.to_json(), "digest": p.digest, "summary": p.policy.describe(), "authority": p.source, "previous_event_seq": p.event_seq, "why": "the event that recorded this policy was purged"}),
                )?;
                let mut p = p.clone();
                p.event_seq = seq;
                self.write_state(
                    POLICY_FILE,
                    &serde_json::to_vec_pretty(&p).expect("serialises"),
                )?;
                report.events.push(seq);
            }
        }
        std::fs::remove_file(&journal_path).map_err(RetentionError::state(&journal_path))?;
        Ok(report)
    }

    /// Take `retention/LOCK` (released when the file is dropped), or refuse when another run
    /// holds it.
    fn run_lock(&self) -> Result<std::fs::File, RetentionError> {
        let dir = self.state_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(RetentionError::state(&dir))?;
        let path = dir.join("LOCK");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(RetentionError::state(&path))?;
        match f.try_lock() {
            Ok(()) => Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => Err(RetentionError::Refused(
                "another retention run (or purge) is in progress on this data directory; nothing was done".into(),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(RetentionError::state(&path)(e)),
        }
    }

    /// Records `1..=n` are no longer on this machine (0: none removed).
    pub fn removed_through(&self) -> Result<u64, RetentionError> {
        Ok(self
            .tombstones()?
            .values()
            .map(|t| t.last_seq)
            .max()
            .unwrap_or(0))
    }
}

/// What the plan needs of a sealed segment (immutable once sealed, so cached by name and
/// size in `retention/segments.cache`; a run re-reads every segment it removes).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Scanned {
    len: u64,
    sha256: String,
    last_seq: u64,
    labels: Vec<String>,
    /// The newest event time of each distinct label set (deadlines only depend on those).
    newest: Vec<(Vec<String>, String)>,
    /// A record whose time cannot be read: the segment is never removed by the policy.
    unreadable_time: bool,
}

impl Scanned {
    fn deadlines(&self, policy: &Policy) -> (Option<OffsetDateTime>, Option<OffsetDateTime>) {
        if self.unreadable_time {
            return (None, None);
        }
        let mut out: (Option<OffsetDateTime>, Option<OffsetDateTime>) = (None, None);
        for (labels, t) in &self.newest {
            let Ok(t) = parse_rfc3339(t) else {
                return (None, None);
            };
            let (h, k) = deadlines(policy, t, labels);
            out.0 = Some(out.0.map_or(h, |x| x.max(h)));
            out.1 = Some(out.1.map_or(k, |x| x.max(k)));
        }
        out
    }
}

fn scan_segment(path: &Path, name: &str) -> Result<Scanned, RetentionError> {
    let bytes = std::fs::read(path).map_err(|e| mcptrail_ledger::LedgerError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut out = Scanned {
        len: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
        last_seq: 0,
        labels: Vec::new(),
        newest: Vec::new(),
        unreadable_time: false,
    };
    let mut newest: BTreeMap<Vec<String>, OffsetDateTime> = BTreeMap::new();
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(h) = serde_json::from_slice::<Head>(line) else {
            return Err(RetentionError::Refused(format!(
                "{name}: a line is not an event; run `mcptrail verify`"
            )));
        };
        out.last_seq = h.seq;
        let mut labels = h.labels;
        labels.sort();
        labels.dedup();
        for l in &labels {
            if !out.labels.contains(l) {
                out.labels.push(l.clone());
            }
        }
        match parse_rfc3339(&h.time) {
            Ok(t) => {
                let e = newest.entry(labels).or_insert(t);
                *e = (*e).max(t);
            }
            Err(_) => out.unreadable_time = true,
        }
    }
    out.labels.sort();
    out.newest = newest
        .into_iter()
        .map(|(l, t)| (l, format_rfc3339_nanos(t)))
        .collect();
    Ok(out)
}

const CACHE_FILE: &str = "segments.cache";

impl Engine {
    fn load_cache(&self) -> BTreeMap<String, Scanned> {
        std::fs::read(self.state_dir().join(CACHE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Only once the engine has state (a policy was recorded): `plan` writes nothing else.
    fn save_cache(&self, cache: &BTreeMap<String, Scanned>) {
        if self.state_dir().is_dir() {
            let _ = self.write_state(CACHE_FILE, &serde_json::to_vec(cache).expect("serialises"));
        }
    }

    /// Before a segment is removed under the policy: its bytes are what the plan saw, and its
    /// own records (not a cache) say its time is up.
    fn recheck(
        &self,
        s: &SegmentPlan,
        policy: &Policy,
        now: OffsetDateTime,
    ) -> Result<(), RetentionError> {
        let path = self.data_dir.join(LEDGER_DIR).join(&s.segment);
        let fresh = scan_segment(&path, &s.segment)?;
        let (hand, keep) = fresh.deadlines(policy);
        let due = match s.action {
            Action::Purge => keep.is_some_and(|k| k <= now),
            Action::Archive => hand.is_some_and(|h| h <= now),
            Action::Keep => false,
        };
        if fresh.sha256 != s.sha256 || !due {
            let _ = std::fs::remove_file(self.state_dir().join(CACHE_FILE));
            return Err(RetentionError::Refused(format!(
                "{}: its records do not bear out the plan (changed since, or a stale cache); nothing more was removed — run again",
                s.segment
            )));
        }
        Ok(())
    }
}

fn done(s: &SegmentPlan, removed: &[mcptrail_ledger::Removed], copies: Vec<String>) -> Done {
    Done {
        segment: s.segment.clone(),
        first_seq: s.first_seq,
        last_seq: s.last_seq,
        tombstone: removed
            .first()
            .map(|r| file_name(&r.file))
            .unwrap_or_else(|| "(already recorded)".into()),
        copies,
    }
}

fn segment_plan(
    segment: String,
    (first_seq, last_seq): (u64, u64),
    sha256: String,
    place: Place,
    labels: Vec<String>,
    (hand, keep): (Option<OffsetDateTime>, Option<OffsetDateTime>),
) -> SegmentPlan {
    SegmentPlan {
        segment,
        first_seq,
        last_seq,
        sha256,
        place,
        labels,
        at_hand_until: hand.map(format_rfc3339_nanos),
        keep_until: keep.map(format_rfc3339_nanos),
        action: Action::Keep,
        reason: String::new(),
        interrupted: false,
        keep_until_t: keep,
        at_hand_until_t: hand,
    }
}

pub(crate) fn describe_source(s: &PolicySource) -> String {
    match s {
        PolicySource::Config { file, by } => format!(
            "{by} from {}",
            file.as_deref().unwrap_or("the configuration")
        ),
        PolicySource::Approved(a) => format!(
            "request {} by {}, approved by {}",
            a.request_id, a.requested_by, a.approved_by
        ),
    }
}

pub(crate) fn file_name(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .to_string()
}
