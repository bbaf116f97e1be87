//! The rule engine: events in (in ledger order), alerts out.
//!
//! Driven by event time only. A window, a sequence span or a cooldown is measured between the
//! `time` fields of events, never against the wall clock, so the engine is a pure function of
//! the event sequence: fed the same events, in one batch or in any chunks, now or a month
//! later, it raises the same alerts with the same ids. That is what lets `mcptrail detect`
//! over a ledger and the streaming detector in a tap agree.
//!
//! Memory is bounded: per rule at most `max_groups` groups (the least recently active are
//! forgotten first, and every group idle for longer than the rule looks back is dropped), per
//! threshold group at most `max_window_events` events, per sequence group at most
//! [`MAX_CHAINS`] partial matches, and at most `max_sessions` tool catalogs.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use mcptrail_event::{Event, EventKind};

use crate::alert::{alert_id, Alert};
use crate::anomaly::Anomaly;
use crate::clock::{format_duration, parse_event_time};
use crate::field::Path;
use crate::matcher::{Condition, Context};
use crate::rules::{kind_bit, Aggregate, Body, Limits, Piece, Rule, RuleSet};
use crate::silence::Silence;

/// Partial matches kept per sequence group (the oldest is dropped first).
pub const MAX_CHAINS: usize = 16;
/// Sessions whose tool catalog is remembered.
const MAX_SESSIONS: usize = 10_000;
const DAY_MS: i64 = 86_400_000;
/// Idle groups are swept every this many events.
const SWEEP_EVERY: u64 = 4096;

/// Counters of one engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events processed.
    pub events: u64,
    /// Alerts raised.
    pub alerts: u64,
    /// Groups forgotten because a rule had `max_groups` of them.
    pub groups_evicted: u64,
    /// Window events dropped because a group had `max_window_events` of them.
    pub window_events_dropped: u64,
}

struct Entry {
    ms: i64,
    id: String,
    num: f64,
    key: Option<String>,
    hit: bool,
}

#[derive(Default)]
struct Window {
    entries: VecDeque<Entry>,
    sum: f64,
    hits: u64,
    distinct: HashMap<String, u32>,
}

impl Window {
    fn pop_front(&mut self) {
        if let Some(old) = self.entries.pop_front() {
            self.sum -= old.num;
            self.hits -= u64::from(old.hit);
            if let Some(k) = old.key {
                if let Some(n) = self.distinct.get_mut(&k) {
                    *n -= 1;
                    if *n == 0 {
                        self.distinct.remove(&k);
                    }
                }
            }
        }
    }

    fn clear(&mut self) {
        *self = Window::default();
    }
}

struct Chain {
    next: usize,
    start_ms: i64,
    first_time: String,
    key: Option<String>,
    evidence: Vec<String>,
}

/// Per-group state with the time it was last touched.
struct Groups<T> {
    map: HashMap<String, (i64, T)>,
}

impl<T: Default> Groups<T> {
    fn new() -> Self {
        Groups {
            map: HashMap::new(),
        }
    }

    fn entry(&mut self, key: &str, ms: i64, max: usize, horizon: i64, evicted: &mut u64) -> &mut T {
        if !self.map.contains_key(key) && self.map.len() >= max {
            self.sweep(horizon);
            if self.map.len() >= max {
                // Forget the least recently active tenth.
                let mut times: Vec<i64> = self.map.values().map(|(t, _)| *t).collect();
                times.sort_unstable();
                let cut = times[(times.len() / 10).min(times.len() - 1)];
                let before = self.map.len();
                self.map.retain(|_, (t, _)| *t > cut);
                *evicted += (before - self.map.len()) as u64;
            }
        }
        // Allocate the key only for a new group.
        if !self.map.contains_key(key) {
            self.map.insert(key.to_string(), (ms, T::default()));
        }
        let slot = self.map.get_mut(key).expect("inserted above");
        slot.0 = slot.0.max(ms);
        &mut slot.1
    }

    fn sweep(&mut self, horizon: i64) {
        self.map.retain(|_, (t, _)| *t >= horizon);
    }
}

enum State {
    Match,
    Threshold(Groups<Window>),
    Sequence(Groups<Vec<Chain>>),
    Drift(Groups<VecDeque<Bucket>>),
}

/// Events of one window of a drift rule: counts per category and a few event ids.
struct Bucket {
    index: i64,
    counts: HashMap<String, u64>,
    total: u64,
    sample: Vec<String>,
    first_ms: i64,
}

/// Jensen–Shannon divergence (base 2, so 0..=1) between two count distributions.
pub(crate) fn jensen_shannon(p: &HashMap<String, u64>, q: &HashMap<String, u64>) -> f64 {
    let (tp, tq) = (
        p.values().sum::<u64>() as f64,
        q.values().sum::<u64>() as f64,
    );
    if tp == 0.0 || tq == 0.0 {
        return 0.0;
    }
    let mut d = 0.0;
    for k in p.keys().chain(q.keys().filter(|k| !p.contains_key(*k))) {
        let a = p.get(k).copied().unwrap_or(0) as f64 / tp;
        let b = q.get(k).copied().unwrap_or(0) as f64 / tq;
        let m = (a + b) / 2.0;
        if a > 0.0 {
            d += 0.5 * a * (a / m).log2();
        }
        if b > 0.0 {
            d += 0.5 * b * (b / m).log2();
        }
    }
    d.clamp(0.0, 1.0)
}

/// Tool names per session, from `tool.catalog` events of the `tools` list.
#[derive(Default)]
struct Catalogs {
    sessions: HashMap<String, (i64, HashSet<String>)>,
}

impl Catalogs {
    fn observe(&mut self, e: &Event, ms: i64) {
        let Some(session) = e.session_id.as_deref() else {
            return;
        };
        match e.kind {
            EventKind::ToolCatalog | EventKind::ToolChanged => {
                let Some(cat) = e.catalog.as_ref().filter(|c| c.list == "tools") else {
                    return;
                };
                if !self.sessions.contains_key(session) && self.sessions.len() >= MAX_SESSIONS {
                    let oldest = self
                        .sessions
                        .iter()
                        .min_by_key(|(_, (t, _))| *t)
                        .map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        self.sessions.remove(&k);
                    }
                }
                let slot = self
                    .sessions
                    .entry(session.to_string())
                    .or_insert_with(|| (ms, HashSet::new()));
                slot.0 = ms;
                slot.1.extend(cat.items.iter().map(|i| i.name.clone()));
                for gone in &cat.removed {
                    slot.1.remove(gone);
                }
            }
            EventKind::SessionEnd => {
                self.sessions.remove(session);
            }
            _ => {}
        }
    }

    fn knows(&self, e: &Event) -> Option<bool> {
        let (_, tools) = self.sessions.get(e.session_id.as_deref()?)?;
        Some(tools.contains(e.tool_invoked.as_deref()?))
    }
}

/// The rule engine.
pub struct Engine {
    rules: Vec<Rule>,
    states: Vec<State>,
    cooldowns: Vec<Groups<i64>>,
    catalogs: Catalogs,
    limits: Limits,
    watermark: i64,
    stats: Stats,
    anomaly: Option<Anomaly>,
    silence: Option<Silence>,
    monitor_lookback_ms: i64,
    needs: crate::lean::Needs,
}

impl Engine {
    /// An engine running `rules`, with empty state.
    pub fn new(rules: RuleSet) -> Engine {
        let states = rules
            .rules
            .iter()
            .map(|r| match r.body {
                Body::Match => State::Match,
                Body::Threshold { .. } => State::Threshold(Groups::new()),
                Body::Sequence { .. } => State::Sequence(Groups::new()),
                Body::Drift { .. } => State::Drift(Groups::new()),
            })
            .collect();
        let cooldowns = rules.rules.iter().map(|_| Groups::new()).collect();
        let needs = crate::lean::Needs::of(&rules);
        let m = &rules.monitors;
        let on = |id: &str| m.enabled.contains(id);
        let anomaly = crate::anomaly::RULES.iter().any(|r| on(r.id)).then(|| {
            Anomaly::new(
                m.baseline.clone(),
                m.enabled.clone(),
                rules.limits.max_groups,
                rules.limits.max_evidence,
            )
        });
        let silence = crate::silence::RULES.iter().any(|r| on(r.id)).then(|| {
            Silence::new(
                m.heartbeat_interval_ms,
                m.missed_heartbeats,
                &on,
                rules.limits.max_groups,
                rules.limits.max_evidence,
            )
        });
        let monitor_lookback_ms = silence
            .as_ref()
            .map_or(0, Silence::lookback_ms)
            .max(if anomaly.is_some() { DAY_MS } else { 0 });
        Engine {
            rules: rules.rules,
            states,
            cooldowns,
            catalogs: Catalogs::default(),
            limits: rules.limits,
            watermark: i64::MIN,
            stats: Stats::default(),
            anomaly,
            silence,
            monitor_lookback_ms,
            needs,
        }
    }

    /// The event members its rules and monitors read.
    pub fn needs(&self) -> crate::lean::Needs {
        self.needs
    }

    /// Judge events against this stored baseline from its `until` on (versions are kept;
    /// each event is judged against the newest version in effect at its time).
    pub fn add_baseline(&mut self, b: crate::baseline::Baseline) {
        if let Some(a) = &mut self.anomaly {
            a.add_baseline(b);
        }
    }

    /// Stored baseline versions loaded (0 when the anomaly rules are off).
    pub fn baselines(&self) -> usize {
        self.anomaly.as_ref().map_or(0, Anomaly::baselines)
    }

    /// Judge what only the wall clock can tell, as of `now_ms`: sessions silent since their
    /// last event, hours without ingestion since the last event. The state is not changed
    /// (events read later are judged as before), and an alert raised here has the id the
    /// same alert gets when later events show the silence.
    pub fn judge_as_of(&mut self, now_ms: i64, out: &mut Vec<Alert>) {
        let before = out.len();
        if let Some(s) = &self.silence {
            s.judge_as_of(now_ms, out);
        }
        if let Some(a) = &self.anomaly {
            a.judge_as_of(now_ms, out);
        }
        self.stats.alerts += (out.len() - before) as u64;
    }

    /// Sessions the silence rules track as open.
    pub fn open_sessions(&self) -> usize {
        self.silence.as_ref().map_or(0, Silence::open_sessions)
    }

    /// The rules it runs.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// How far back in event time any rule looks (windows, sequences, cooldowns), ms.
    pub fn lookback_ms(&self) -> i64 {
        self.rules
            .iter()
            .map(Rule::lookback_ms)
            .max()
            .unwrap_or(0)
            .max(self.monitor_lookback_ms)
    }

    /// Feed one event; alerts it raises are pushed to `out`. `alert` events are seen only
    /// by rules whose conditions name the `alert` kind.
    pub fn process(&mut self, e: &Event, out: &mut Vec<Alert>) {
        let ms = parse_event_time(&e.time).unwrap_or(self.watermark);
        self.watermark = self.watermark.max(ms);
        self.stats.events += 1;
        self.catalogs.observe(e, ms);
        let bit = kind_bit(e.kind);
        let is_alert = e.kind == EventKind::Alert;
        let Engine {
            rules,
            states,
            cooldowns,
            catalogs,
            limits,
            stats,
            watermark,
            ..
        } = self;
        let in_catalog = |e: &Event| catalogs.knows(e);
        let cx = Context {
            ms,
            in_catalog: &in_catalog,
        };
        let before = out.len();
        for ((rule, state), cooldown) in rules
            .iter()
            .zip(states.iter_mut())
            .zip(cooldowns.iter_mut())
        {
            match rule.kind_mask {
                Some(m) if m & bit == 0 => continue,
                None if is_alert => continue,
                _ => {}
            }
            let horizon = watermark.saturating_sub(rule.lookback_ms());
            let mut fire = |evidence: Vec<String>,
                            first_time: String,
                            value: Option<f64>,
                            group_key: &str,
                            out: &mut Vec<Alert>,
                            stats: &mut Stats| {
                if rule.cooldown_ms > 0 {
                    let last = cooldown.entry(
                        group_key,
                        ms,
                        limits.max_groups,
                        horizon,
                        &mut stats.groups_evicted,
                    );
                    if *last != 0 && ms - *last < rule.cooldown_ms {
                        return;
                    }
                    *last = ms.max(1);
                }
                out.push(make_alert(
                    rule,
                    e,
                    ms,
                    evidence,
                    first_time,
                    value,
                    limits.max_evidence,
                ));
            };
            match (state, &rule.body) {
                (State::Match, Body::Match) => {
                    if all(&rule.conditions, e, &cx) {
                        let key = group_key(&rule.group_by, e);
                        fire(
                            vec![e.event_id.clone()],
                            e.time.clone(),
                            None,
                            &key,
                            out,
                            stats,
                        );
                    }
                }
                (
                    State::Threshold(groups),
                    Body::Threshold {
                        window_ms,
                        aggregate,
                        field,
                        ratio_where,
                        min_events,
                        threshold,
                    },
                ) => {
                    if !all(&rule.conditions, e, &cx) {
                        continue;
                    }
                    let (num, key) = match (aggregate, field) {
                        (Aggregate::Distinct, Some(f)) => match f.get(e).text() {
                            Some(k) => (0.0, Some(k)),
                            None => continue,
                        },
                        (Aggregate::Sum | Aggregate::Avg, Some(f)) => match f.get(e).num() {
                            Some(n) => (n, None),
                            None => continue,
                        },
                        _ => (1.0, None),
                    };
                    let hit = *aggregate == Aggregate::Ratio && all(ratio_where, e, &cx);
                    let gk = group_key(&rule.group_by, e);
                    let w = groups.entry(
                        &gk,
                        ms,
                        limits.max_groups,
                        horizon,
                        &mut stats.groups_evicted,
                    );
                    while w.entries.front().is_some_and(|x| x.ms <= ms - window_ms) {
                        w.pop_front();
                    }
                    w.sum += num;
                    w.hits += u64::from(hit);
                    if let Some(k) = &key {
                        *w.distinct.entry(k.clone()).or_default() += 1;
                    }
                    w.entries.push_back(Entry {
                        ms,
                        id: e.event_id.clone(),
                        num,
                        key,
                        hit,
                    });
                    if w.entries.len() > limits.max_window_events {
                        w.pop_front();
                        stats.window_events_dropped += 1;
                    }
                    let n = w.entries.len() as u64;
                    let value = match aggregate {
                        Aggregate::Count => n as f64,
                        Aggregate::Sum => w.sum,
                        Aggregate::Distinct => w.distinct.len() as f64,
                        Aggregate::Avg if n >= *min_events => w.sum / n as f64,
                        Aggregate::Ratio if n >= *min_events => w.hits as f64 / n as f64,
                        Aggregate::Avg | Aggregate::Ratio => continue,
                    };
                    if value + 1e-9 < *threshold {
                        continue;
                    }
                    let evidence: Vec<String> = match aggregate {
                        Aggregate::Ratio => w
                            .entries
                            .iter()
                            .filter(|x| x.hit)
                            .map(|x| x.id.clone())
                            .collect(),
                        Aggregate::Distinct => {
                            // One event per distinct value: its first occurrence.
                            let mut seen = HashSet::new();
                            w.entries
                                .iter()
                                .filter(|x| x.key.as_ref().is_some_and(|k| seen.insert(k.clone())))
                                .map(|x| x.id.clone())
                                .collect()
                        }
                        _ => w.entries.iter().map(|x| x.id.clone()).collect(),
                    };
                    let first = w.entries.front().map_or(ms, |x| x.ms);
                    w.clear();
                    fire(evidence, format_ms(first), Some(value), &gk, out, stats);
                }
                (State::Sequence(groups), Body::Sequence { steps, within_ms }) => {
                    let matches: Vec<bool> =
                        steps.iter().map(|s| all(&s.conditions, e, &cx)).collect();
                    if !matches.iter().any(|m| *m) {
                        continue;
                    }
                    let gk = group_key(&rule.group_by, e);
                    let chains = groups.entry(
                        &gk,
                        ms,
                        limits.max_groups,
                        horizon,
                        &mut stats.groups_evicted,
                    );
                    chains.retain(|c| ms - c.start_ms <= *within_ms);
                    let mut completed: Option<Chain> = None;
                    let mut i = 0;
                    while i < chains.len() {
                        let c = &mut chains[i];
                        let step = &steps[c.next];
                        let key_ok = match (&step.key, &c.key) {
                            (None, _) => Some(None),
                            (Some(p), None) => p.get(e).text().map(Some),
                            (Some(p), Some(k)) => p.get(e).text().filter(|v| v == k).map(|_| None),
                        };
                        match key_ok {
                            Some(new_key) if matches[c.next] => {
                                if new_key.is_some() {
                                    c.key = new_key;
                                }
                                c.evidence.push(e.event_id.clone());
                                c.next += 1;
                                if c.next == steps.len() {
                                    let done = chains.remove(i);
                                    if completed.is_none() {
                                        completed = Some(done);
                                    }
                                    continue;
                                }
                            }
                            _ => {}
                        }
                        i += 1;
                    }
                    if matches[0] {
                        let key = steps[0].key.as_ref().and_then(|p| p.get(e).text());
                        if steps[0].key.is_none() || key.is_some() {
                            if chains.len() >= MAX_CHAINS {
                                chains.remove(0);
                            }
                            chains.push(Chain {
                                next: 1,
                                start_ms: ms,
                                first_time: e.time.clone(),
                                key,
                                evidence: vec![e.event_id.clone()],
                            });
                        }
                    }
                    if let Some(c) = completed {
                        fire(c.evidence, c.first_time, None, &gk, out, stats);
                    }
                }
                (
                    State::Drift(groups),
                    Body::Drift {
                        window_ms,
                        reference_windows,
                        fields,
                        min_events,
                        threshold,
                    },
                ) => {
                    if !all(&rule.conditions, e, &cx) {
                        continue;
                    }
                    let mut category = String::new();
                    for (i, f) in fields.iter().enumerate() {
                        if i > 0 {
                            category.push('/');
                        }
                        if !f.get(e).push_text(&mut category) {
                            category.push('-');
                        }
                    }
                    let index = ms.div_euclid(*window_ms);
                    let gk = group_key(&rule.group_by, e);
                    let buckets = groups.entry(
                        &gk,
                        ms,
                        limits.max_groups,
                        horizon,
                        &mut stats.groups_evicted,
                    );
                    let mut judged: Option<(f64, Vec<String>, i64)> = None;
                    if buckets.back().is_some_and(|b| index > b.index) {
                        // The newest window is complete: compare it with the reference before it.
                        let cur = buckets.back().expect("checked");
                        let mut reference: HashMap<String, u64> = HashMap::new();
                        for b in buckets.iter().filter(|b| {
                            b.index < cur.index && b.index >= cur.index - reference_windows
                        }) {
                            for (k, n) in &b.counts {
                                *reference.entry(k.clone()).or_default() += n;
                            }
                        }
                        let ref_total: u64 = reference.values().sum();
                        if cur.total >= *min_events && ref_total >= *min_events {
                            let d = jensen_shannon(&reference, &cur.counts);
                            if d + 1e-12 >= *threshold {
                                judged = Some((d, cur.sample.clone(), cur.first_ms));
                            }
                        }
                    }
                    if buckets.back().is_none_or(|b| index > b.index) {
                        buckets.push_back(Bucket {
                            index,
                            counts: HashMap::new(),
                            total: 0,
                            sample: Vec::new(),
                            first_ms: ms,
                        });
                        while buckets
                            .front()
                            .is_some_and(|b| b.index < index - reference_windows)
                        {
                            buckets.pop_front();
                        }
                    }
                    let b = buckets.back_mut().expect("pushed above");
                    *b.counts.entry(category).or_default() += 1;
                    b.total += 1;
                    if b.sample.len() < limits.max_evidence {
                        b.sample.push(e.event_id.clone());
                    }
                    if let Some((d, evidence, first)) = judged {
                        fire(evidence, format_ms(first), Some(d), &gk, out, stats);
                    }
                }
                _ => unreachable!("state and rule body are built together"),
            }
        }
        if let Some(a) = &mut self.anomaly {
            a.process(e, ms, out);
        }
        if let Some(s) = &mut self.silence {
            s.process(e, ms, out);
        }
        let stats = &mut self.stats;
        stats.alerts += (out.len() - before) as u64;
        if stats.events.is_multiple_of(SWEEP_EVERY) {
            self.sweep();
        }
    }

    /// Drop every group idle for longer than its rule looks back.
    fn sweep(&mut self) {
        for ((rule, state), cooldown) in self
            .rules
            .iter()
            .zip(&mut self.states)
            .zip(&mut self.cooldowns)
        {
            let horizon = self.watermark.saturating_sub(rule.lookback_ms());
            cooldown.sweep(horizon);
            match state {
                State::Match => {}
                State::Threshold(g) => g.sweep(horizon),
                State::Sequence(g) => g.sweep(horizon),
                State::Drift(g) => g.sweep(horizon),
            }
        }
    }

    /// Groups currently tracked, over all rules (for tests of the memory bound).
    pub fn tracked_groups(&self) -> usize {
        self.states
            .iter()
            .map(|s| match s {
                State::Match => 0,
                State::Threshold(g) => g.map.len(),
                State::Sequence(g) => g.map.len(),
                State::Drift(g) => g.map.len(),
            })
            .sum::<usize>()
            + self.cooldowns.iter().map(|c| c.map.len()).sum::<usize>()
    }
}

fn all(conds: &[Condition], e: &Event, cx: &Context<'_>) -> bool {
    conds.iter().all(|c| c.eval(e, cx))
}

fn group_key(group_by: &[(String, Path)], e: &Event) -> String {
    let mut k = String::new();
    for (i, (_, p)) in group_by.iter().enumerate() {
        if i > 0 {
            k.push('\u{1f}');
        }
        p.get(e).push_text(&mut k);
    }
    k
}

fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(mcptrail_event::format_rfc3339_nanos)
        .unwrap_or_default()
}

fn format_value(agg: Option<Aggregate>, v: f64) -> String {
    match agg {
        Some(Aggregate::Ratio) => format!("{:.0}%", v * 100.0),
        None if v < 1.0 => format!("{v:.3}"),
        _ if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        _ => format!("{v:.1}"),
    }
}

fn make_alert(
    rule: &Rule,
    e: &Event,
    ms: i64,
    mut evidence: Vec<String>,
    first_time: String,
    value: Option<f64>,
    max_evidence: usize,
) -> Alert {
    let total = evidence.len();
    if total > max_evidence {
        // Keep the first and the most recent ones.
        let head = max_evidence / 2;
        let tail = max_evidence - head;
        evidence.drain(head..total - tail);
    }
    let group: BTreeMap<String, String> = rule
        .group_by
        .iter()
        .filter_map(|(name, p)| p.get(e).text().map(|v| (name.clone(), v)))
        .collect();
    let (agg, threshold, span) = match &rule.body {
        Body::Match => (None, None, rule.cooldown_ms),
        Body::Threshold {
            window_ms,
            aggregate,
            threshold,
            ..
        } => (Some(*aggregate), Some(*threshold), *window_ms),
        Body::Sequence { within_ms, .. } => (None, None, *within_ms),
        Body::Drift {
            window_ms,
            threshold,
            ..
        } => (None, Some(*threshold), *window_ms),
    };
    let mut summary = String::new();
    for piece in &rule.summary {
        match piece {
            Piece::Text(t) => summary.push_str(t),
            Piece::Field(p) => summary.push_str(p.get(e).text().as_deref().unwrap_or("-")),
            Piece::Value => summary.push_str(&value.map_or("-".into(), |v| format_value(agg, v))),
            Piece::Threshold => {
                summary.push_str(&threshold.map_or("-".into(), |v| format_value(agg, v)))
            }
            Piece::Window => summary.push_str(&format_duration(span.max(1))),
            Piece::Group => summary.push_str(
                &group
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Piece::Count => summary.push_str(&total.to_string()),
        }
    }
    Alert {
        id: alert_id(&rule.id, &evidence, ms),
        rule: rule.id.clone(),
        rule_type: rule.kind(),
        severity: rule.severity,
        summary,
        evidence,
        evidence_total: total,
        group,
        first_time,
        event_time: e.time.clone(),
        value,
        threshold,
        session_id: e.session_id.clone(),
        agent_id: e.agent_id.clone(),
        user_identity: e.user_identity.clone(),
        server: e.server.clone(),
        baseline_version: None,
    }
}
