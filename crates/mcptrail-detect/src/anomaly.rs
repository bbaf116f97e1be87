//! Anomaly rules: the current session, day or hour of an agent against its learnt
//! [`Baseline`], with the thresholds of `[detect.baseline]` (per agent where configured).
//!
//! Each event is judged against the newest stored version whose window ended at or before
//! the event's time, so the result depends on event time and the stored versions only.
//! Nothing is judged for an agent until its baseline has `min_sessions` sessions (per-day
//! metrics: `min_days` active days); an agent absent from the baseline is not judged.
//!
//! Each rule fires once per group (session, agent and day, agent and hour, agent and tool
//! and shape, agent and host); the cumulative rules fire at the first event that takes the
//! total past the threshold (`>`), never before.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use mcptrail_event::{Event, EventKind};

use crate::alert::{Alert, Raise};
use crate::baseline::{
    agent_of, counts_as_ingestion, egress_host, failed, format_ms, hour_of_day, is_call, is_result,
    result_bytes, shape_into, AgentBaseline, Baseline,
};
use crate::rules::Severity;
use crate::spec::{BaselineConfig, Thresholds};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// Hours of silence judged one by one at most (a longer gap is one run of dropped hours).
const MAX_HOURS_JUDGED: i64 = 24 * 31;

/// A built-in monitor rule: id, severity, what it fires on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MonitorRule {
    pub(crate) id: &'static str,
    pub(crate) rule_type: &'static str,
    pub(crate) severity: Severity,
    pub(crate) description: &'static str,
}

pub(crate) const SESSION_VOLUME: &str = "builtin.baseline.session_volume";
pub(crate) const SESSION_RECORDS: &str = "builtin.baseline.session_records";
pub(crate) const DAILY_VOLUME: &str = "builtin.baseline.daily_volume";
pub(crate) const DAILY_RECORDS: &str = "builtin.baseline.daily_records";
pub(crate) const CALL_RATE: &str = "builtin.baseline.call_rate";
pub(crate) const RESPONSE_SIZE: &str = "builtin.baseline.response_size";
pub(crate) const ARGUMENT_SHAPE: &str = "builtin.baseline.argument_shape";
pub(crate) const DESTINATION: &str = "builtin.baseline.destination";
pub(crate) const ERROR_RATE: &str = "builtin.baseline.error_rate";
pub(crate) const TIME_OF_DAY: &str = "builtin.baseline.time_of_day";
pub(crate) const INGESTION_DROP: &str = "builtin.silence.ingestion_drop";

const fn rule(id: &'static str, severity: Severity, description: &'static str) -> MonitorRule {
    MonitorRule {
        id,
        rule_type: "anomaly",
        severity,
        description,
    }
}

/// The anomaly rules, in evaluation order.
pub(crate) const RULES: &[MonitorRule] = &[
    rule(SESSION_VOLUME, Severity::High, "bytes of tool/resource results in one session above volume_factor × the agent's p99 per session (and min_bytes)"),
    rule(SESSION_RECORDS, Severity::High, "number of results in one session above volume_factor × the agent's p99 per session (and min_records)"),
    rule(DAILY_VOLUME, Severity::High, "bytes of results in one UTC day above volume_factor × the agent's p99 per day (and min_bytes; min_days of history)"),
    rule(DAILY_RECORDS, Severity::High, "results in one UTC day above volume_factor × the agent's p99 per day (and min_records; min_days of history)"),
    rule(CALL_RATE, Severity::Medium, "tool calls in one clock hour above rate_factor × the agent's p99 per hour (and min_hourly_calls)"),
    rule(RESPONSE_SIZE, Severity::Medium, "one result above response_factor × the p99 of that tool's results (and min_response_bytes)"),
    rule(ARGUMENT_SHAPE, Severity::Low, "a tool called with argument keys/types it never had in the baseline (tools with min_tool_calls)"),
    rule(DESTINATION, Severity::Medium, "net.egress to a host the agent never connected to in the baseline"),
    rule(ERROR_RATE, Severity::Medium, "share of failed results in one clock hour above error_factor × the baseline rate and error_margin above it"),
    rule(TIME_OF_DAY, Severity::Low, "tool calls in an hour of day that had under rare_hour_share of the agent's calls"),
    MonitorRule {
        id: INGESTION_DROP,
        rule_type: "silence",
        severity: Severity::Medium,
        description: "events recorded in a clock hour fell more than ingestion_drop below the baseline's mean for that hour of day",
    },
];

/// Evidence of a cumulative total: the first and the latest event ids.
#[derive(Default, Clone)]
struct Trail {
    head: Vec<String>,
    tail: std::collections::VecDeque<String>,
    total: usize,
    first_time: String,
}

impl Trail {
    fn push(&mut self, e: &Event, cap: usize) {
        if self.total == 0 {
            self.first_time = e.time.clone();
        }
        self.total += 1;
        let half = (cap / 2).max(1);
        if self.head.len() < half {
            self.head.push(e.event_id.clone());
        } else if self.tail.len() >= cap.saturating_sub(half).max(1) {
            // Reuse the oldest id's buffer: no allocation per event once the trail is full.
            let mut id = self.tail.pop_front().unwrap_or_default();
            id.clone_from(&e.event_id);
            self.tail.push_back(id);
        } else {
            self.tail.push_back(e.event_id.clone());
        }
    }

    fn ids(&self) -> Vec<String> {
        self.head.iter().chain(self.tail.iter()).cloned().collect()
    }
}

#[derive(Default)]
struct Totals {
    bytes: f64,
    records: u64,
    trail: Trail,
    fired_bytes: bool,
    fired_records: bool,
    last_ms: i64,
}

#[derive(Default)]
struct HourAcc {
    calls: u64,
    results: u64,
    errors: u64,
    calls_trail: Trail,
    errors_trail: Trail,
    fired_rate: bool,
    fired_errors: bool,
}

#[derive(Clone, Default)]
struct Ingestion {
    hour: Option<i64>,
    count: u64,
    /// The latest counted event before the current hour: (id, time, ms).
    before: Option<(String, String, i64)>,
    /// The latest counted event so far.
    last: Option<(String, String, i64)>,
    in_drop: bool,
}

/// The anomaly monitor.
pub(crate) struct Anomaly {
    cfg: BaselineConfig,
    enabled: HashSet<&'static str>,
    baselines: Vec<Arc<Baseline>>,
    max_groups: usize,
    max_evidence: usize,
    sessions: HashMap<String, Totals>,
    /// Per agent: the current UTC day and its totals.
    days: HashMap<String, (i64, Totals)>,
    /// Per agent: the current clock hour and its counts.
    hours: HashMap<String, (i64, HourAcc)>,
    /// Reused for argument shapes.
    scratch: String,
    fired: HashSet<(&'static str, String)>,
    ingestion: Ingestion,
    current_hour: i64,
}

impl Anomaly {
    pub(crate) fn new(
        cfg: BaselineConfig,
        enabled: HashSet<&'static str>,
        max_groups: usize,
        max_evidence: usize,
    ) -> Anomaly {
        Anomaly {
            cfg,
            enabled,
            baselines: Vec::new(),
            max_groups,
            max_evidence,
            sessions: HashMap::new(),
            days: HashMap::new(),
            hours: HashMap::new(),
            scratch: String::new(),
            fired: HashSet::new(),
            ingestion: Ingestion::default(),
            current_hour: i64::MIN,
        }
    }

    /// Add a stored version (kept ordered by the time it applies from).
    pub(crate) fn add_baseline(&mut self, b: Baseline) {
        if self.baselines.iter().any(|x| x.version == b.version) {
            return;
        }
        self.baselines.push(Arc::new(b));
        self.baselines
            .sort_by_key(|b| (b.effective_from(), b.version));
    }

    pub(crate) fn baselines(&self) -> usize {
        self.baselines.len()
    }

    /// The version in effect at `ms`.
    fn baseline_at(&self, ms: i64) -> Option<Arc<Baseline>> {
        self.baselines
            .iter()
            .rev()
            .find(|b| b.effective_from() <= ms)
            .cloned()
    }

    fn thresholds(&self, agent: &str) -> Thresholds {
        match self.cfg.agents.get(agent) {
            Some(o) => self.cfg.thresholds.with(o),
            None => self.cfg.thresholds,
        }
    }

    fn on(&self, id: &str) -> bool {
        self.enabled.contains(id)
    }

    fn first_fire(&mut self, rule: &'static str, key: String) -> bool {
        if self.fired.len() >= self.max_groups * 4 {
            self.fired.clear();
        }
        self.fired.insert((rule, key))
    }

    pub(crate) fn process(&mut self, e: &Event, ms: i64, out: &mut Vec<Alert>) {
        if e.kind == EventKind::Alert {
            return;
        }
        self.roll_hours(ms, out);
        if counts_as_ingestion(e) {
            self.ingestion.count += 1;
            self.ingestion.last = Some((e.event_id.clone(), e.time.clone(), ms));
        }
        if e.kind == EventKind::SessionEnd {
            if let Some(s) = &e.session_id {
                self.sessions.remove(s);
            }
            return;
        }
        let call = is_call(e);
        let result = is_result(e);
        let egress = e.kind == EventKind::NetEgress;
        if !(call || result || egress) {
            return;
        }
        let Some(b) = self.baseline_at(ms) else {
            return;
        };
        let agent = agent_of(e);
        let Some(ab) = b.agents.get(agent) else {
            return;
        };
        if ab.sessions < self.cfg.min_sessions {
            return;
        }
        let t = self.thresholds(agent);
        let version = b.version;
        let cap = self.max_evidence;
        let hour = ms.div_euclid(HOUR_MS);
        if call {
            self.on_call(e, ms, agent, ab, &t, version, hour, out);
        }
        if result {
            self.on_result(e, ms, agent, ab, &t, version, hour, out);
        }
        if egress && t.new_destinations && self.on(DESTINATION) {
            if let Some(host) = egress_host(e) {
                if !ab.destinations.contains_key(host)
                    && self.first_fire(DESTINATION, format!("{agent}\u{1f}{host}"))
                {
                    let known: Vec<&str> =
                        ab.destinations.keys().map(String::as_str).take(5).collect();
                    out.push(
                        Raise {
                            rule: DESTINATION,
                            rule_type: "anomaly",
                            severity: Severity::Medium,
                            summary: format!(
                                "agent {agent} connected to {host}, a host it never reached in its baseline (v{version}: {})",
                                if known.is_empty() { "no egress".to_string() } else { known.join(", ") }
                            ),
                            evidence: vec![e.event_id.clone()],
                            evidence_total: 1,
                            group: group(&[("agent_id", agent), ("host", host)]),
                            first_time: e.time.clone(),
                            event_time: e.time.clone(),
                            ms,
                            value: None,
                            threshold: None,
                            from: Some(e),
                            baseline_version: Some(version),
                        }
                        .into_alert(cap),
                    );
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_call(
        &mut self,
        e: &Event,
        ms: i64,
        agent: &str,
        ab: &AgentBaseline,
        t: &Thresholds,
        version: u64,
        hour: i64,
        out: &mut Vec<Alert>,
    ) {
        let cap = self.max_evidence;
        let tool = e.tool_invoked.as_deref().unwrap_or("-");
        // Argument shapes.
        if t.new_argument_shapes && self.on(ARGUMENT_SHAPE) {
            if let Some(tb) = ab.tools.get(tool).filter(|tb| tb.calls >= t.min_tool_calls) {
                let mut shape = std::mem::take(&mut self.scratch);
                shape_into(e.parameters_used.as_ref(), &mut shape);
                let known = tb.shapes.contains_key(&shape);
                self.scratch = shape;
                let shape = self.scratch.clone();
                if !known
                    && self.first_fire(ARGUMENT_SHAPE, format!("{agent}\u{1f}{tool}\u{1f}{shape}"))
                {
                    let usual = tb
                        .shapes
                        .iter()
                        .max_by_key(|(_, n)| **n)
                        .map_or("-", |(s, _)| s.as_str());
                    out.push(
                        Raise {
                            rule: ARGUMENT_SHAPE,
                            rule_type: "anomaly",
                            severity: Severity::Low,
                            summary: format!(
                                "agent {agent} called {tool} with arguments {{{shape}}}, never seen in {} calls of its baseline (v{version}; usually {{{usual}}})",
                                tb.calls
                            ),
                            evidence: vec![e.event_id.clone()],
                            evidence_total: 1,
                            group: group(&[("agent_id", agent), ("tool_invoked", tool)]),
                            first_time: e.time.clone(),
                            event_time: e.time.clone(),
                            ms,
                            value: None,
                            threshold: None,
                            from: Some(e),
                            baseline_version: Some(version),
                        }
                        .into_alert(cap),
                    );
                }
            }
        }
        // Time of day.
        if t.rare_hour_share > 0.0 && self.on(TIME_OF_DAY) && ab.calls >= t.min_profile_calls {
            let hod = hour_of_day(ms);
            let share = ab.hour_of_day[hod] as f64 / ab.calls as f64;
            if share < t.rare_hour_share
                && self.first_fire(TIME_OF_DAY, format!("{agent}\u{1f}{hour}"))
            {
                out.push(
                    Raise {
                        rule: TIME_OF_DAY,
                        rule_type: "anomaly",
                        severity: Severity::Low,
                        summary: format!(
                            "agent {agent} called {tool} at {:02}:xx UTC, an hour with {:.2} % of its calls in its baseline (v{version}; threshold {:.2} %)",
                            hod,
                            share * 100.0,
                            t.rare_hour_share * 100.0
                        ),
                        evidence: vec![e.event_id.clone()],
                        evidence_total: 1,
                        group: group(&[("agent_id", agent)]),
                        first_time: e.time.clone(),
                        event_time: e.time.clone(),
                        ms,
                        value: Some(share),
                        threshold: Some(t.rare_hour_share),
                        from: Some(e),
                        baseline_version: Some(version),
                    }
                    .into_alert(cap),
                );
            }
        }
        // Call rate.
        let limit = ab.limits(t).hourly_calls;
        let acc = period(&mut self.hours, agent, hour);
        acc.calls += 1;
        acc.calls_trail.push(e, cap);
        if self.enabled.contains(CALL_RATE) && !acc.fired_rate && acc.calls as f64 > limit {
            acc.fired_rate = true;
            out.push(
                Raise {
                    rule: CALL_RATE,
                    rule_type: "anomaly",
                    severity: Severity::Medium,
                    summary: format!(
                        "agent {agent} made {} tool calls in the hour from {}, above {} (rate_factor {} × p99 {:.0} of its baseline v{version})",
                        acc.calls,
                        format_ms(hour * HOUR_MS),
                        fmt_num(limit),
                        t.rate_factor,
                        ab.hourly_calls.p99
                    ),
                    evidence: acc.calls_trail.ids(),
                    evidence_total: acc.calls_trail.total,
                    group: group(&[("agent_id", agent)]),
                    first_time: acc.calls_trail.first_time.clone(),
                    event_time: e.time.clone(),
                    ms,
                    value: Some(acc.calls as f64),
                    threshold: Some(limit),
                    from: Some(e),
                    baseline_version: Some(version),
                }
                .into_alert(cap),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_result(
        &mut self,
        e: &Event,
        ms: i64,
        agent: &str,
        ab: &AgentBaseline,
        t: &Thresholds,
        version: u64,
        hour: i64,
        out: &mut Vec<Alert>,
    ) {
        let cap = self.max_evidence;
        let bad = failed(e);
        // Error rate per hour.
        let base_rate = ab.error_rate();
        let limits = ab.limits(t);
        let limit = limits.error_rate;
        let on_errors = self.on(ERROR_RATE);
        let acc = period(&mut self.hours, agent, hour);
        acc.results += 1;
        if bad {
            acc.errors += 1;
            acc.errors_trail.push(e, cap);
        }
        let rate = acc.errors as f64 / acc.results as f64;
        if on_errors
            && bad
            && !acc.fired_errors
            && acc.results >= t.min_error_results
            && rate > limit
        {
            acc.fired_errors = true;
            out.push(
                Raise {
                    rule: ERROR_RATE,
                    rule_type: "anomaly",
                    severity: Severity::Medium,
                    summary: format!(
                        "{:.0} % of agent {agent}'s {} tool results failed in the hour from {}, against {:.1} % in its baseline (v{version}; threshold {:.0} %)",
                        rate * 100.0,
                        acc.results,
                        format_ms(hour * HOUR_MS),
                        base_rate * 100.0,
                        limit * 100.0
                    ),
                    evidence: acc.errors_trail.ids(),
                    evidence_total: acc.errors_trail.total,
                    group: group(&[("agent_id", agent)]),
                    first_time: acc.errors_trail.first_time.clone(),
                    event_time: e.time.clone(),
                    ms,
                    value: Some(rate),
                    threshold: Some(limit),
                    from: Some(e),
                    baseline_version: Some(version),
                }
                .into_alert(cap),
            );
        }
        if bad {
            return;
        }
        let bytes = result_bytes(e);
        let tool = e.tool_invoked.as_deref().unwrap_or("-");
        // One large result.
        if self.on(RESPONSE_SIZE) {
            if let Some((tb, limit)) = ab
                .tools
                .get(tool)
                .and_then(|tb| tb.response_limit(t).map(|l| (tb, l)))
            {
                if bytes > limit
                    && self.first_fire(RESPONSE_SIZE, format!("{agent}\u{1f}{tool}\u{1f}{hour}"))
                {
                    out.push(
                        Raise {
                            rule: RESPONSE_SIZE,
                            rule_type: "anomaly",
                            severity: Severity::Medium,
                            summary: format!(
                                "a {tool} result of {} bytes for agent {agent}, above {} (response_factor {} × p99 {:.0} of its baseline v{version})",
                                bytes, fmt_num(limit), t.response_factor, tb.response_bytes.p99
                            ),
                            evidence: vec![e.event_id.clone()],
                            evidence_total: 1,
                            group: group(&[("agent_id", agent), ("tool_invoked", tool)]),
                            first_time: e.time.clone(),
                            event_time: e.time.clone(),
                            ms,
                            value: Some(bytes),
                            threshold: Some(limit),
                            from: Some(e),
                            baseline_version: Some(version),
                        }
                        .into_alert(cap),
                    );
                }
            }
        }
        // Cumulative per session.
        if let Some(s) = e.session_id.as_deref() {
            if !self.sessions.contains_key(s) {
                if self.sessions.len() >= self.max_groups {
                    evict_oldest(&mut self.sessions);
                }
                self.sessions.insert(s.to_string(), Totals::default());
            }
            let acc = self.sessions.get_mut(s).expect("inserted above");
            accumulate(
                acc,
                e,
                ms,
                bytes,
                cap,
                Cumulative {
                    scope: Scope::Session(s),
                    agent,
                    bytes_stat: ab.session_bytes.p99,
                    records_stat: ab.session_records.p99,
                    limits: (limits.session_bytes, limits.session_records),
                    rules: (SESSION_VOLUME, SESSION_RECORDS),
                    enabled: (
                        self.enabled.contains(SESSION_VOLUME),
                        self.enabled.contains(SESSION_RECORDS),
                    ),

                    version,
                },
                t,
                out,
            );
        }
        // Cumulative per UTC day.
        if ab.active_days >= self.cfg.min_days {
            let day = ms.div_euclid(DAY_MS);
            if !self.days.contains_key(agent) && self.days.len() >= self.max_groups {
                self.days.clear();
            }
            let acc = period(&mut self.days, agent, day);
            accumulate(
                acc,
                e,
                ms,
                bytes,
                cap,
                Cumulative {
                    scope: Scope::Day(day),
                    agent,
                    bytes_stat: ab.daily_bytes.p99,
                    records_stat: ab.daily_records.p99,
                    limits: (limits.daily_bytes, limits.daily_records),
                    rules: (DAILY_VOLUME, DAILY_RECORDS),
                    enabled: (
                        self.enabled.contains(DAILY_VOLUME),
                        self.enabled.contains(DAILY_RECORDS),
                    ),

                    version,
                },
                t,
                out,
            );
        }
    }

    /// Close every clock hour before the one of `ms`: judge ingestion, forget hour and day
    /// totals no longer current.
    fn roll_hours(&mut self, ms: i64, out: &mut Vec<Alert>) {
        let hour = ms.div_euclid(HOUR_MS);
        if hour <= self.current_hour {
            return;
        }
        if self.current_hour != i64::MIN {
            let mut ing = std::mem::take(&mut self.ingestion);
            self.judge_ingestion(&mut ing, hour, out);
            self.ingestion = ing;
        } else {
            self.ingestion.hour = Some(hour);
        }
        self.current_hour = hour;
        if self.hours.len() > self.max_groups {
            self.hours.retain(|_, (h, _)| *h >= hour);
        }
        let day = ms.div_euclid(DAY_MS);
        if self.days.len() > self.max_groups {
            self.days.retain(|_, (d, _)| *d >= day);
        }
    }

    /// Judge the hours of `ing` up to (not including) `until_hour`, advancing it.
    fn judge_ingestion(&self, ing: &mut Ingestion, until_hour: i64, out: &mut Vec<Alert>) {
        let Some(start) = ing.hour else {
            ing.hour = Some(until_hour);
            return;
        };
        let first = start.max(until_hour - MAX_HOURS_JUDGED);
        for h in first..until_hour {
            let count = if h == start { ing.count } else { 0 };
            self.judge_hour(ing, h, count, out);
            // The hour is closed: its last event is "before" the next one.
            if h == start {
                ing.before = ing.last.clone();
            }
        }
        ing.hour = Some(until_hour);
        ing.count = 0;
    }

    fn judge_hour(&self, ing: &mut Ingestion, h: i64, count: u64, out: &mut Vec<Alert>) {
        if !self.on(INGESTION_DROP) {
            return;
        }
        let Some(b) = self.baseline_at(h * HOUR_MS) else {
            return;
        };
        let t = self.cfg.thresholds;
        let expected = b.ingestion.hour_of_day_mean[hour_of_day(h * HOUR_MS)];
        if b.ingestion.days < self.cfg.min_days as f64 || expected < t.min_hourly_events {
            return;
        }
        let floor = (1.0 - t.ingestion_drop) * expected;
        if (count as f64) >= floor {
            ing.in_drop = false;
            return;
        }
        if ing.in_drop {
            return;
        }
        ing.in_drop = true;
        let Some((id, time, ms)) = ing.before.clone() else {
            return;
        };
        out.push(
            Raise {
                rule: INGESTION_DROP,
                rule_type: "silence",
                severity: Severity::Medium,
                summary: format!(
                    "ingestion dropped: {count} events in the hour from {}, against {:.0} on average at that hour in the baseline (v{}; alert below {:.0}, a drop of more than {:.0} %); the last event before it was at {time}",
                    format_ms(h * HOUR_MS),
                    expected,
                    b.version,
                    floor,
                    t.ingestion_drop * 100.0
                ),
                evidence: vec![id],
                evidence_total: 1,
                group: BTreeMap::new(),
                first_time: time.clone(),
                event_time: time,
                ms,
                value: Some(count as f64),
                threshold: Some(floor),
                from: None,
                baseline_version: Some(b.version),
            }
            .into_alert(self.max_evidence),
        );
    }

    /// Judge, as of the wall-clock time `now_ms`, the hours completed since the last event
    /// (without changing the state: later events are judged as if this had not run).
    pub(crate) fn judge_as_of(&self, now_ms: i64, out: &mut Vec<Alert>) {
        if self.current_hour == i64::MIN {
            return;
        }
        let mut ing = self.ingestion.clone();
        self.judge_ingestion(&mut ing, now_ms.div_euclid(HOUR_MS), out);
    }
}

/// What a cumulative total is of.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Session(&'a str),
    /// UTC day number.
    Day(i64),
}

impl Scope<'_> {
    fn word(self) -> &'static str {
        match self {
            Scope::Session(_) => "session",
            Scope::Day(_) => "day",
        }
    }

    fn what(self) -> String {
        match self {
            Scope::Session(s) => format!("session {s}"),
            Scope::Day(d) => format!("{} (UTC)", date_of(d)),
        }
    }

    fn group(self, agent: &str) -> BTreeMap<String, String> {
        match self {
            Scope::Session(s) => group(&[("agent_id", agent), ("session_id", s)]),
            Scope::Day(d) => group(&[("agent_id", agent), ("day", &date_of(d))]),
        }
    }
}

fn date_of(day: i64) -> String {
    let d = format_ms(day * DAY_MS);
    d.get(..10).unwrap_or(&d).to_string()
}

/// The counts of `agent` in `period` (an hour or a day), reset when the period moved on.
fn period<'m, T: Default>(
    map: &'m mut HashMap<String, (i64, T)>,
    agent: &str,
    period: i64,
) -> &'m mut T {
    if !map.contains_key(agent) {
        map.insert(agent.to_string(), (period, T::default()));
    }
    let slot = map.get_mut(agent).expect("inserted above");
    if slot.0 != period {
        *slot = (period, T::default());
    }
    &mut slot.1
}

struct Cumulative<'a> {
    scope: Scope<'a>,
    agent: &'a str,
    bytes_stat: f64,
    records_stat: f64,
    limits: (f64, f64),
    rules: (&'static str, &'static str),
    enabled: (bool, bool),
    version: u64,
}

#[allow(clippy::too_many_arguments)]
fn accumulate(
    acc: &mut Totals,
    e: &Event,
    ms: i64,
    bytes: f64,
    cap: usize,
    c: Cumulative<'_>,
    t: &Thresholds,
    out: &mut Vec<Alert>,
) {
    acc.bytes += bytes;
    acc.records += 1;
    acc.last_ms = ms;
    acc.trail.push(e, cap);
    let (byte_limit, record_limit) = c.limits;
    let agent = c.agent;
    let version = c.version;
    if c.enabled.0 && !acc.fired_bytes && acc.bytes > byte_limit {
        acc.fired_bytes = true;
        out.push(
            Raise {
                rule: c.rules.0,
                rule_type: "anomaly",
                severity: Severity::High,
                summary: format!(
                    "agent {agent} received {} bytes in {} results in {}, above {} (volume_factor {} × p99 {:.0} per {} of its baseline v{version})",
                    fmt_num(acc.bytes), acc.records, c.scope.what(), fmt_num(byte_limit), t.volume_factor, c.bytes_stat, c.scope.word()
                ),
                evidence: acc.trail.ids(),
                evidence_total: acc.trail.total,
                group: c.scope.group(agent),
                first_time: acc.trail.first_time.clone(),
                event_time: e.time.clone(),
                ms,
                value: Some(acc.bytes),
                threshold: Some(byte_limit),
                from: Some(e),
                baseline_version: Some(version),
            }
            .into_alert(cap),
        );
    }
    if c.enabled.1 && !acc.fired_records && acc.records as f64 > record_limit {
        acc.fired_records = true;
        out.push(
            Raise {
                rule: c.rules.1,
                rule_type: "anomaly",
                severity: Severity::High,
                summary: format!(
                    "agent {agent} received {} results ({} bytes) in {}, above {} (volume_factor {} × p99 {:.0} per {} of its baseline v{version})",
                    acc.records, fmt_num(acc.bytes), c.scope.what(), fmt_num(record_limit), t.volume_factor, c.records_stat, c.scope.word()
                ),
                evidence: acc.trail.ids(),
                evidence_total: acc.trail.total,
                group: c.scope.group(agent),
                first_time: acc.trail.first_time.clone(),
                event_time: e.time.clone(),
                ms,
                value: Some(acc.records as f64),
                threshold: Some(record_limit),
                from: Some(e),
                baseline_version: Some(version),
            }
            .into_alert(cap),
        );
    }
}

/// Forget the least recently active tenth of the sessions.
fn evict_oldest(map: &mut HashMap<String, Totals>) {
    let mut times: Vec<i64> = map.values().map(|t| t.last_ms).collect();
    if times.is_empty() {
        return;
    }
    times.sort_unstable();
    let cut = times[(times.len() / 10).min(times.len() - 1)];
    map.retain(|_, t| t.last_ms > cut);
}

fn group(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn fmt_num(v: f64) -> String {
    crate::baseline::fmt_number(v)
}
