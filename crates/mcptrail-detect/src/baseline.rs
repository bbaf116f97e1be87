//! Behavioural baselines: what each agent normally does, learnt from a window of the ledger,
//! stored as numbered versions under the data directory, and applied by event time.
//!
//! # What is learnt (per agent; events without `agent_id` count as agent `-`)
//!
//! | metric | from |
//! | --- | --- |
//! | `hourly_calls` | `tools/call` requests per clock hour with any |
//! | `session_bytes`, `session_records` | per session: bytes (`response_summary.size`) and number of successful tool / resource results |
//! | `daily_bytes`, `daily_records` | the same per UTC day with any |
//! | `tools.<tool>.response_bytes` | size of each result of that tool |
//! | `tools.<tool>.shapes` | argument shapes of its calls: the top-level keys of `parameters_used` with their JSON types, e.g. `path:string,tail:number` |
//! | `servers.<server>` | tool results and failures (error rate) |
//! | `destinations` | `net.egress` hosts |
//! | `hour_of_day` | tool calls per UTC hour of day |
//!
//! and, for the whole ledger, `ingestion`: the mean number of events (all but heartbeats and
//! alerts) in each UTC hour of day over the window.
//!
//! Numeric metrics are kept as [`Stat`] (count, mean, p50, p95, p99, max) computed from a
//! log-scale histogram (buckets 2 % wide: quantiles are the bucket's upper edge, so they err
//! on the high side), which keeps learning in bounded memory and deterministic.
//!
//! # Versions and the window
//!
//! A baseline records the event-time window it was learnt from (`since`, `until`) and
//! applies to events from `until` on ([`Baseline::effective_from`]): an event is judged
//! against the newest version whose window ended at or before the event's time. That makes
//! anomaly detection a pure function of the ledger and the stored versions, so the
//! streaming detector (which relearns on a schedule and adds a version) and `mcptrail detect`
//! over the ledger (which loads every version) give the same alerts with the same ids.
//!
//! Stored as `<data_dir>/detect/baselines/v000001.json`, … (0600 files in 0700 directories,
//! written atomically: temporary file, fsync, rename, fsync of the directory).

use std::collections::{BTreeMap, HashMap};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use mcptrail_event::{Event, EventKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::parse_event_time;
use crate::error::DetectError;
use crate::spec::Thresholds;

/// The `format` of a stored baseline.
pub const BASELINE_FORMAT: &str = "mcptrail-baseline v1";
/// Directory of the stored versions, under the detector's directory.
pub const BASELINES_DIR: &str = "baselines";

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// Histogram buckets are this much wider than the previous one.
const GROWTH: f64 = 1.02;

/// Summary statistics of one metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Samples.
    pub n: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

/// A mergeable log-scale histogram of non-negative values.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hist {
    buckets: BTreeMap<u32, u64>,
    n: u64,
    sum: f64,
    max: f64,
}

impl Hist {
    fn bucket(v: f64) -> u32 {
        if v <= 0.0 {
            0
        } else {
            ((v + 1.0).ln() / GROWTH.ln()).ceil() as u32
        }
    }

    fn upper(b: u32) -> f64 {
        GROWTH.powi(b as i32) - 1.0
    }

    pub(crate) fn add(&mut self, v: f64) {
        let v = v.max(0.0);
        *self.buckets.entry(Self::bucket(v)).or_default() += 1;
        self.n += 1;
        self.sum += v;
        self.max = self.max.max(v);
    }

    fn quantile(&self, q: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        // Nearest rank.
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (b, c) in &self.buckets {
            seen += c;
            if seen >= rank {
                return Self::upper(*b).min(self.max);
            }
        }
        self.max
    }

    pub(crate) fn stat(&self) -> Stat {
        Stat {
            n: self.n,
            mean: if self.n == 0 {
                0.0
            } else {
                self.sum / self.n as f64
            },
            p50: self.quantile(0.50),
            p95: self.quantile(0.95),
            p99: self.quantile(0.99),
            max: self.max,
        }
    }
}

/// One tool of one agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolBaseline {
    /// `tools/call` requests.
    pub calls: u64,
    /// Size of its results.
    pub response_bytes: Stat,
    /// Argument shapes and how often each was seen.
    pub shapes: BTreeMap<String, u64>,
}

/// One server of one agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerBaseline {
    /// Tool results.
    pub results: u64,
    /// Of which failed (status other than `ok`).
    pub errors: u64,
}

/// What one agent normally does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentBaseline {
    /// Sessions seen in the window.
    pub sessions: u64,
    /// UTC days with activity.
    pub active_days: u64,
    /// `tools/call` requests.
    pub calls: u64,
    /// Tool results, and how many failed.
    pub results: u64,
    /// See `results`.
    pub errors: u64,
    /// Tool calls per clock hour (hours with at least one).
    pub hourly_calls: Stat,
    /// Result bytes per session.
    pub session_bytes: Stat,
    /// Results per session.
    pub session_records: Stat,
    /// Result bytes per active UTC day.
    pub daily_bytes: Stat,
    /// Results per active UTC day.
    pub daily_records: Stat,
    /// Tool calls per UTC hour of day.
    pub hour_of_day: [u64; 24],
    /// Per tool.
    pub tools: BTreeMap<String, ToolBaseline>,
    /// Per server name.
    pub servers: BTreeMap<String, ServerBaseline>,
    /// `net.egress` hosts and how many connections each.
    pub destinations: BTreeMap<String, u64>,
}

impl AgentBaseline {
    /// The share of failed results (0 when there are none).
    pub fn error_rate(&self) -> f64 {
        if self.results == 0 {
            0.0
        } else {
            self.errors as f64 / self.results as f64
        }
    }

    /// The values above which the anomaly rules alert for this agent with thresholds `t`.
    pub fn limits(&self, t: &Thresholds) -> Limits {
        let rate = self.error_rate();
        Limits {
            session_bytes: (t.volume_factor * self.session_bytes.p99).max(t.min_bytes),
            session_records: (t.volume_factor * self.session_records.p99).max(t.min_records),
            daily_bytes: (t.volume_factor * self.daily_bytes.p99).max(t.min_bytes),
            daily_records: (t.volume_factor * self.daily_records.p99).max(t.min_records),
            hourly_calls: (t.rate_factor * self.hourly_calls.p99).max(t.min_hourly_calls),
            error_rate: (t.error_factor * rate).max(rate + t.error_margin),
        }
    }
}

impl ToolBaseline {
    /// The result size above which `builtin.baseline.response_size` alerts (`None`: too few
    /// calls in the baseline to judge).
    pub fn response_limit(&self, t: &Thresholds) -> Option<f64> {
        (self.calls >= t.min_tool_calls)
            .then(|| (t.response_factor * self.response_bytes.p99).max(t.min_response_bytes))
    }
}

/// The values an agent's current session, day or hour must exceed (`>`) to raise an alert.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limits {
    /// Result bytes in one session.
    pub session_bytes: f64,
    /// Results in one session.
    pub session_records: f64,
    /// Result bytes in one UTC day.
    pub daily_bytes: f64,
    /// Results in one UTC day.
    pub daily_records: f64,
    /// Tool calls in one clock hour.
    pub hourly_calls: f64,
    /// Share of failed results in one clock hour.
    pub error_rate: f64,
}

/// Events per hour for the whole ledger.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestionBaseline {
    /// Mean events (all but heartbeats and alerts) in each UTC hour of day over the window.
    pub hour_of_day_mean: [f64; 24],
    /// Days the window spans.
    pub days: f64,
}

/// A learnt baseline (one stored version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// [`BASELINE_FORMAT`].
    pub format: String,
    /// 1, 2, … (assigned when stored).
    pub version: u64,
    /// When it was learnt (wall clock).
    pub learnt_at: String,
    /// Start of the event-time window (inclusive), RFC 3339.
    pub since: String,
    /// End of the window (exclusive); the baseline applies to events from here on.
    pub until: String,
    /// Events read.
    pub events: u64,
    /// Per agent.
    pub agents: BTreeMap<String, AgentBaseline>,
    /// The whole ledger's hourly volume.
    pub ingestion: IngestionBaseline,
}

impl Baseline {
    /// The event time (ms) from which this version applies.
    pub fn effective_from(&self) -> i64 {
        parse_event_time(&self.until).unwrap_or(i64::MAX)
    }
}

/// The agent an event counts for.
pub(crate) fn agent_of(e: &Event) -> &str {
    e.agent_id.as_deref().unwrap_or("-")
}

/// A `tools/call` request from the client.
pub(crate) fn is_call(e: &Event) -> bool {
    e.activity_facts().is_tool_call()
}

/// A result the server sent for a tool call or a resource read.
pub(crate) fn is_result(e: &Event) -> bool {
    e.activity_facts().is_tool_result()
}

/// Whether a result failed.
pub(crate) fn failed(e: &Event) -> bool {
    e.activity_facts().failed()
}

/// Bytes of a result.
pub(crate) fn result_bytes(e: &Event) -> f64 {
    e.activity_facts().result_bytes() as f64
}

/// Counts toward ingestion volume (what taps record, not their liveness or our alerts).
pub(crate) fn counts_as_ingestion(e: &Event) -> bool {
    !matches!(e.kind, EventKind::SystemHeartbeat | EventKind::Alert)
}

/// The argument shape of a tool call: sorted top-level keys with their JSON types.
pub(crate) fn shape_of(params: Option<&Value>) -> String {
    let mut s = String::new();
    shape_into(params, &mut s);
    s
}

/// [`shape_of`] into `out` (cleared first), without allocating when it has the room.
pub(crate) fn shape_into(params: Option<&Value>, out: &mut String) {
    fn ty(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
    out.clear();
    match params {
        None => out.push_str("(none)"),
        Some(Value::Object(m)) => {
            // Sorted by key, whatever order the map keeps (keys are unique).
            let mut keys: Vec<(&str, &str)> = m.iter().map(|(k, v)| (k.as_str(), ty(v))).collect();
            keys.sort_unstable();
            for (i, (k, t)) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(k);
                out.push(':');
                out.push_str(t);
            }
        }
        Some(other) => {
            out.push('(');
            out.push_str(ty(other));
            out.push(')');
        }
    }
}

/// UTC hour of day of `ms`.
pub(crate) fn hour_of_day(ms: i64) -> usize {
    (ms.rem_euclid(DAY_MS) / HOUR_MS) as usize
}

#[derive(Default)]
struct ToolAcc {
    calls: u64,
    sizes: Hist,
    shapes: BTreeMap<String, u64>,
}

#[derive(Default)]
struct AgentAcc {
    sessions: HashMap<String, (f64, u64)>,
    days: BTreeMap<i64, (f64, u64)>,
    hours: BTreeMap<i64, u64>,
    calls: u64,
    results: u64,
    errors: u64,
    hour_of_day: [u64; 24],
    tools: BTreeMap<String, ToolAcc>,
    servers: BTreeMap<String, ServerBaseline>,
    destinations: BTreeMap<String, u64>,
}

/// Learns a baseline from the events of a window, fed in ledger order.
#[derive(Default)]
pub struct Learner {
    agents: BTreeMap<String, AgentAcc>,
    ingestion: BTreeMap<i64, u64>,
    events: u64,
}

impl Learner {
    /// An empty learner.
    pub fn new() -> Learner {
        Learner::default()
    }

    /// Feed one event of the window.
    pub fn observe(&mut self, e: &Event) {
        let Some(ms) = parse_event_time(&e.time) else {
            return;
        };
        if e.kind == EventKind::Alert {
            return;
        }
        self.events += 1;
        if counts_as_ingestion(e) {
            *self.ingestion.entry(ms.div_euclid(HOUR_MS)).or_default() += 1;
        }
        let call = is_call(e);
        let result = is_result(e);
        let egress = e.kind == EventKind::NetEgress;
        let start = e.kind == EventKind::SessionStart;
        if !(call || result || egress || start) {
            return;
        }
        let a = self.agents.entry(agent_of(e).to_string()).or_default();
        if let Some(s) = &e.session_id {
            if !a.sessions.contains_key(s) {
                a.sessions.insert(s.clone(), (0.0, 0));
            }
        }
        if call {
            a.calls += 1;
            *a.hours.entry(ms.div_euclid(HOUR_MS)).or_default() += 1;
            a.hour_of_day[hour_of_day(ms)] += 1;
            a.days.entry(ms.div_euclid(DAY_MS)).or_default();
            let t = a
                .tools
                .entry(e.tool_invoked.clone().unwrap_or_else(|| "-".into()))
                .or_default();
            t.calls += 1;
            *t.shapes
                .entry(shape_of(e.parameters_used.as_ref()))
                .or_default() += 1;
        }
        if result {
            let bad = failed(e);
            a.results += 1;
            a.errors += u64::from(bad);
            let srv = a.servers.entry(server_of(e).to_string()).or_default();
            srv.results += 1;
            srv.errors += u64::from(bad);
            if !bad {
                let bytes = result_bytes(e);
                if let Some(t) = &e.tool_invoked {
                    a.tools.entry(t.clone()).or_default().sizes.add(bytes);
                }
                if let Some(s) = &e.session_id {
                    let v = a.sessions.entry(s.clone()).or_default();
                    v.0 += bytes;
                    v.1 += 1;
                }
                let d = a.days.entry(ms.div_euclid(DAY_MS)).or_default();
                d.0 += bytes;
                d.1 += 1;
            }
        }
        if egress {
            if let Some(host) = egress_host(e) {
                *a.destinations.entry(host.to_string()).or_default() += 1;
            }
        }
    }

    /// The baseline of the window `[since_ms, until_ms)` (version 0 until stored).
    pub fn finish(self, since_ms: i64, until_ms: i64, learnt_at: &str) -> Baseline {
        let agents = self
            .agents
            .into_iter()
            .filter(|(_, a)| a.calls > 0 || a.results > 0 || !a.destinations.is_empty())
            .map(|(name, a)| {
                let mut sb = Hist::default();
                let mut sr = Hist::default();
                for (bytes, records) in a.sessions.values() {
                    sb.add(*bytes);
                    sr.add(*records as f64);
                }
                let mut db = Hist::default();
                let mut dr = Hist::default();
                for (bytes, records) in a.days.values() {
                    db.add(*bytes);
                    dr.add(*records as f64);
                }
                let mut hc = Hist::default();
                for n in a.hours.values() {
                    hc.add(*n as f64);
                }
                let tools = a
                    .tools
                    .into_iter()
                    .map(|(t, acc)| {
                        (
                            t,
                            ToolBaseline {
                                calls: acc.calls,
                                response_bytes: acc.sizes.stat(),
                                shapes: acc.shapes,
                            },
                        )
                    })
                    .collect();
                (
                    name,
                    AgentBaseline {
                        sessions: a.sessions.len() as u64,
                        active_days: a.days.len() as u64,
                        calls: a.calls,
                        results: a.results,
                        errors: a.errors,
                        hourly_calls: hc.stat(),
                        session_bytes: sb.stat(),
                        session_records: sr.stat(),
                        daily_bytes: db.stat(),
                        daily_records: dr.stat(),
                        hour_of_day: a.hour_of_day,
                        tools,
                        servers: a.servers,
                        destinations: a.destinations,
                    },
                )
            })
            .collect();
        // Mean events per hour of day over the hours of the window.
        let mut sums = [0f64; 24];
        let mut hours = [0f64; 24];
        if until_ms > since_ms {
            let first = since_ms.div_euclid(HOUR_MS);
            let last = (until_ms - 1).div_euclid(HOUR_MS);
            // Whole hours only (the partial first and last hours would understate).
            let whole = |h: i64| h * HOUR_MS >= since_ms && (h + 1) * HOUR_MS <= until_ms;
            let span = (last - first + 1).min(400 * 24);
            for h in (last - span + 1)..=last {
                if whole(h) {
                    let hod = hour_of_day(h * HOUR_MS);
                    hours[hod] += 1.0;
                    sums[hod] += self.ingestion.get(&h).copied().unwrap_or(0) as f64;
                }
            }
        }
        let mut mean = [0f64; 24];
        for i in 0..24 {
            if hours[i] > 0.0 {
                mean[i] = sums[i] / hours[i];
            }
        }
        Baseline {
            format: BASELINE_FORMAT.to_string(),
            version: 0,
            learnt_at: learnt_at.to_string(),
            since: format_ms(since_ms),
            until: format_ms(until_ms),
            events: self.events,
            agents,
            ingestion: IngestionBaseline {
                hour_of_day_mean: mean,
                days: (until_ms - since_ms).max(0) as f64 / DAY_MS as f64,
            },
        }
    }
}

/// A number as people read it: whole numbers without decimals, others with one.
pub fn fmt_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.1}")
    }
}

pub(crate) fn server_of(e: &Event) -> &str {
    e.server
        .as_ref()
        .and_then(|s| s.name.as_deref())
        .unwrap_or("-")
}

pub(crate) fn egress_host(e: &Event) -> Option<&str> {
    e.detail.as_ref()?.get("host")?.as_str()
}

pub(crate) fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(mcptrail_event::format_rfc3339_nanos)
        .unwrap_or_default()
}

/// The stored versions under a data directory.
#[derive(Debug, Clone)]
pub struct BaselineStore {
    dir: PathBuf,
}

impl BaselineStore {
    /// The store of `data_dir` (nothing is read or created yet).
    pub fn new(data_dir: &Path) -> BaselineStore {
        BaselineStore {
            dir: data_dir.join(crate::DETECT_DIR).join(BASELINES_DIR),
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, version: u64) -> PathBuf {
        self.dir.join(format!("v{version:06}.json"))
    }

    /// Every stored version, oldest first. A file that is not a baseline is an error naming
    /// it (move it aside).
    pub fn load_all(&self) -> Result<Vec<Baseline>, DetectError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(DetectError::io(&self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(DetectError::io(&self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with('v') && name.ends_with(".json")) {
                continue;
            }
            let path = entry.path();
            let text = std::fs::read_to_string(&path).map_err(DetectError::io(&path))?;
            let b: Baseline = serde_json::from_str(&text).map_err(|e| DetectError::Baseline {
                path: path.clone(),
                problem: e.to_string(),
            })?;
            if b.format != BASELINE_FORMAT {
                return Err(DetectError::Baseline {
                    path,
                    problem: format!(
                        "format `{}` is not `{BASELINE_FORMAT}` (written by another version?)",
                        b.format
                    ),
                });
            }
            out.push(b);
        }
        out.sort_by_key(|b| b.version);
        Ok(out)
    }

    /// The newest version, if any.
    pub fn latest(&self) -> Result<Option<Baseline>, DetectError> {
        Ok(self.load_all()?.pop())
    }

    /// Store `b` as the next version; returns the number it got.
    pub fn store(&self, b: &mut Baseline) -> Result<u64, DetectError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(DetectError::io(&self.dir))?;
        let next = self.load_all()?.last().map_or(1, |l| l.version + 1);
        b.version = next;
        let path = self.path_of(next);
        let tmp = self.dir.join(format!(".v{next:06}.json.tmp"));
        let text = serde_json::to_string_pretty(b).expect("a baseline serialises");
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(DetectError::io(&path))?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_err_high_and_stay_close() {
        let mut h = Hist::default();
        for v in 1..=1000 {
            h.add(f64::from(v));
        }
        let s = h.stat();
        assert_eq!(s.n, 1000);
        assert!((s.mean - 500.5).abs() < 1e-9);
        assert!(s.p50 >= 500.0 && s.p50 <= 500.0 * 1.021, "{s:?}");
        assert!(s.p99 >= 990.0 && s.p99 <= 1000.0, "{s:?}");
        assert_eq!(s.max, 1000.0);
        let mut one = Hist::default();
        one.add(0.0);
        assert_eq!(one.stat().p99, 0.0);
        assert_eq!(Hist::default().stat(), Stat::default());
    }

    #[test]
    fn shapes_name_keys_and_types() {
        let v = serde_json::json!({"path": "/a", "tail": 3, "opts": {"x": 1}});
        assert_eq!(shape_of(Some(&v)), "opts:object,path:string,tail:number");
        assert_eq!(shape_of(None), "(none)");
        assert_eq!(shape_of(Some(&serde_json::json!([1]))), "(array)");
    }
}
