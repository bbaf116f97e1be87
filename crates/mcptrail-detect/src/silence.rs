//! Gaps and silence in the trail of a session, from the taps' heartbeats (DESIGN.md §2:
//! "silence during an open session is itself evidence").
//!
//! Every tap session writes `session.start` (with `detail.heartbeat_interval_s`), a
//! `system.heartbeat` every interval while it runs (with `detail.interval_s` and
//! `detail.events_recorded`: the events the tap made for the session before it), and
//! `session.end`. A session is tracked from its `session.start`, or from the first heartbeat
//! seen (a session begun before the events read).
//!
//! - `builtin.silence.tap_silent`: an open session (no `session.end`) with no event at all
//!   for more than `missed_heartbeats` intervals: its tap stopped writing (killed, hung,
//!   telemetry turned off). Judged in event time, when any later event of the ledger (another
//!   tap's, a config change) is more than that past the session's last one, and *as of now*
//!   (the wall clock) by [`Silence::judge_as_of`] at the end of the ledger.
//! - `builtin.silence.heartbeat_gap`: a session that went quiet for longer than that and then
//!   wrote again (a hung or suspended tap; the hole in the trail is the evidence).
//! - `builtin.silence.events_missing`: a heartbeat says the tap made more events for the
//!   session than the ledger holds before it (tracked from `session.start` only): events
//!   were lost between tap and ledger, or removed.
//!
//! The alert ids depend only on the evidence (the session's last event, or the events
//! around the gap), so the event-time and the as-of-now judgement of one silence are the same
//! alert and it is appended once.

use std::collections::{BTreeMap, HashMap};

use mcptrail_event::{Event, EventKind};

use crate::alert::{Alert, Raise};
use crate::anomaly::MonitorRule;
use crate::baseline::format_ms;
use crate::clock::format_duration;
use crate::rules::Severity;

pub(crate) const TAP_SILENT: &str = "builtin.silence.tap_silent";
pub(crate) const HEARTBEAT_GAP: &str = "builtin.silence.heartbeat_gap";
pub(crate) const EVENTS_MISSING: &str = "builtin.silence.events_missing";

/// The silence rules.
pub(crate) const RULES: &[MonitorRule] = &[
    MonitorRule {
        id: TAP_SILENT,
        rule_type: "silence",
        severity: Severity::High,
        description: "an open session wrote nothing (no heartbeat, no session.end) for more than missed_heartbeats intervals: its tap stopped",
    },
    MonitorRule {
        id: HEARTBEAT_GAP,
        rule_type: "silence",
        severity: Severity::Low,
        description: "an open session was silent for more than missed_heartbeats intervals, then wrote again (a hole in the trail)",
    },
    MonitorRule {
        id: EVENTS_MISSING,
        rule_type: "silence",
        severity: Severity::High,
        description: "a heartbeat counts more events made by the tap for its session than the ledger holds",
    },
];

struct Session {
    interval_ms: i64,
    from_start: bool,
    /// Events of the session in the ledger so far (not counting detector alerts).
    counted: u64,
    requests: u64,
    /// Who the session is (identity fields only), for the alerts.
    who: Event,
    last_id: String,
    last_time: String,
    last_ms: i64,
    silent_alerted: bool,
    missing_alerted: bool,
}

/// The silence monitor.
pub(crate) struct Silence {
    default_interval_ms: i64,
    missed: i64,
    tap_silent: bool,
    heartbeat_gap: bool,
    events_missing: bool,
    max_sessions: usize,
    max_evidence: usize,
    sessions: HashMap<String, Session>,
    watermark: i64,
    next_deadline: i64,
}

/// Is this an alert made by a detector (not by a tap)?
fn detector_alert(e: &Event) -> bool {
    e.kind == EventKind::Alert
        && e.detail
            .as_ref()
            .and_then(|d| d.get("source"))
            .and_then(|s| s.as_str())
            == Some("detect")
}

fn detail_u64(e: &Event, key: &str) -> Option<u64> {
    e.detail.as_ref()?.get(key)?.as_u64()
}

impl Silence {
    pub(crate) fn new(
        default_interval_ms: i64,
        missed: u64,
        enabled: &dyn Fn(&str) -> bool,
        max_sessions: usize,
        max_evidence: usize,
    ) -> Silence {
        Silence {
            default_interval_ms,
            missed: missed.clamp(1, 1_000_000) as i64,
            tap_silent: enabled(TAP_SILENT),
            heartbeat_gap: enabled(HEARTBEAT_GAP),
            events_missing: enabled(EVENTS_MISSING),
            max_sessions,
            max_evidence,
            sessions: HashMap::new(),
            watermark: i64::MIN,
            next_deadline: i64::MAX,
        }
    }

    /// How far back its state reaches: a little more than the silence it waits for.
    pub(crate) fn lookback_ms(&self) -> i64 {
        self.default_interval_ms
            .saturating_mul(self.missed.saturating_add(2))
    }

    fn limit(&self, s: &Session) -> i64 {
        s.interval_ms.saturating_mul(self.missed)
    }

    pub(crate) fn process(&mut self, e: &Event, ms: i64, out: &mut Vec<Alert>) {
        if detector_alert(e) {
            return;
        }
        self.watermark = self.watermark.max(ms);
        if let Some(sid) = e.session_id.as_deref() {
            self.on_session_event(sid, e, ms, out);
        }
        if self.tap_silent && self.watermark > self.next_deadline {
            self.sweep_silent(out);
        }
    }

    fn on_session_event(&mut self, sid: &str, e: &Event, ms: i64, out: &mut Vec<Alert>) {
        // Whole seconds, from 1 s to a day (a heartbeat claiming more is not believed).
        let interval = |key: &str| detail_u64(e, key).map(|s| (s.clamp(1, 86_400) as i64) * 1000);
        if !self.sessions.contains_key(sid) {
            let from_start = match e.kind {
                EventKind::SessionStart => true,
                EventKind::SystemHeartbeat => false,
                _ => return,
            };
            if self.sessions.len() >= self.max_sessions {
                // Forget the session quiet for longest.
                if let Some(k) = self
                    .sessions
                    .iter()
                    .min_by_key(|(_, s)| s.last_ms)
                    .map(|(k, _)| k.clone())
                {
                    self.sessions.remove(&k);
                }
            }
            let interval_ms = interval("heartbeat_interval_s")
                .or_else(|| interval("interval_s"))
                .unwrap_or(self.default_interval_ms);
            let s = Session {
                interval_ms,
                from_start,
                counted: 0,
                requests: 0,
                who: who(e),
                last_id: e.event_id.clone(),
                last_time: e.time.clone(),
                last_ms: ms,
                silent_alerted: false,
                missing_alerted: false,
            };
            self.next_deadline = self.next_deadline.min(ms.saturating_add(self.limit(&s)));
            self.sessions.insert(sid.to_string(), s);
        }
        let limit_of = |s: &Session| s.interval_ms.saturating_mul(self.missed);
        let (heartbeat_gap, events_missing, max_evidence) =
            (self.heartbeat_gap, self.events_missing, self.max_evidence);
        let s = self.sessions.get_mut(sid).expect("inserted above");
        let gap = ms.saturating_sub(s.last_ms);
        if heartbeat_gap && s.counted > 0 && gap > limit_of(s) {
            out.push(
                Raise {
                    rule: HEARTBEAT_GAP,
                    rule_type: "silence",
                    severity: Severity::Low,
                    summary: format!(
                        "session {sid} wrote nothing for {} (from {} to {}; heartbeats every {}): a hole in the trail",
                        format_duration(gap.max(1)),
                        s.last_time,
                        e.time,
                        format_duration(s.interval_ms)
                    ),
                    evidence: vec![s.last_id.clone(), e.event_id.clone()],
                    evidence_total: 2,
                    group: group(sid),
                    first_time: s.last_time.clone(),
                    event_time: e.time.clone(),
                    ms,
                    value: Some(gap as f64 / 1000.0),
                    threshold: Some(limit_of(s) as f64 / 1000.0),
                    from: Some(e),
                    baseline_version: None,
                }
                .into_alert(max_evidence),
            );
        }
        s.counted += 1;
        if e.kind == EventKind::McpRequest {
            s.requests += 1;
        }
        if e.kind == EventKind::SystemHeartbeat {
            s.who = who(e);
            if let Some(i) = interval("interval_s") {
                s.interval_ms = i;
            }
            let before = s.counted - 1;
            if let Some(made) = detail_u64(e, "events_recorded") {
                if events_missing && s.from_start && !s.missing_alerted && before < made {
                    s.missing_alerted = true;
                    out.push(
                        Raise {
                            rule: EVENTS_MISSING,
                            rule_type: "silence",
                            severity: Severity::High,
                            summary: format!(
                                "session {sid}: the tap made {made} events before its heartbeat at {}, the ledger holds {before} of them: {} missing (lost on the way to the ledger, or removed)",
                                e.time,
                                made - before
                            ),
                            evidence: vec![e.event_id.clone()],
                            evidence_total: 1,
                            group: group(sid),
                            first_time: e.time.clone(),
                            event_time: e.time.clone(),
                            ms,
                            value: Some(before as f64),
                            threshold: Some(made as f64),
                            from: Some(e),
                            baseline_version: None,
                        }
                        .into_alert(max_evidence),
                    );
                }
            }
        }
        if ms >= s.last_ms {
            s.last_id.clone_from(&e.event_id);
            s.last_time.clone_from(&e.time);
            s.last_ms = ms;
            // It spoke again: a later silence is a new one.
            s.silent_alerted = false;
        }
        if e.kind == EventKind::SessionEnd {
            self.sessions.remove(sid);
        }
    }

    fn silent_alert(&self, sid: &str, s: &Session, judged: &str) -> Alert {
        let limit = self.limit(s);
        Raise {
            rule: TAP_SILENT,
            rule_type: "silence",
            severity: Severity::High,
            summary: format!(
                "session {sid} of agent {} ({}) went silent: no heartbeat or event for more than {} after {} and no session.end ({} requests recorded); its tap stopped writing — {judged}",
                s.who.agent_id.as_deref().unwrap_or("-"),
                s.who
                    .server
                    .as_ref()
                    .and_then(|x| x.name.as_deref())
                    .unwrap_or("server -"),
                format_duration(limit),
                s.last_time,
                s.requests,
            ),
            evidence: vec![s.last_id.clone()],
            evidence_total: 1,
            group: group(sid),
            first_time: s.last_time.clone(),
            event_time: s.last_time.clone(),
            ms: s.last_ms,
            value: None,
            threshold: Some(limit as f64 / 1000.0),
            from: Some(&s.who),
            baseline_version: None,
        }
        .into_alert(self.max_evidence)
    }

    fn sweep_silent(&mut self, out: &mut Vec<Alert>) {
        let mut next = i64::MAX;
        let mut fired = Vec::new();
        for (sid, s) in &self.sessions {
            if s.silent_alerted {
                continue;
            }
            let deadline = s.last_ms.saturating_add(self.limit(s));
            if self.watermark > deadline {
                fired.push(sid.clone());
            } else {
                next = next.min(deadline);
            }
        }
        fired.sort();
        for sid in fired {
            let s = &self.sessions[&sid];
            let judged = format!("judged at event time {}", format_ms(self.watermark));
            out.push(self.silent_alert(&sid, s, &judged));
            self.sessions.get_mut(&sid).expect("present").silent_alerted = true;
        }
        self.next_deadline = next;
    }

    /// Silent sessions as of the wall-clock time `now_ms` (state unchanged; the same alert
    /// raised later in event time has the same id).
    pub(crate) fn judge_as_of(&self, now_ms: i64, out: &mut Vec<Alert>) {
        if !self.tap_silent {
            return;
        }
        let mut silent: Vec<(&String, &Session)> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.silent_alerted && now_ms.saturating_sub(s.last_ms) > self.limit(s))
            .collect();
        silent.sort_by(|a, b| a.0.cmp(b.0));
        for (sid, s) in silent {
            let judged = format!("judged as of {} (wall clock)", format_ms(now_ms));
            out.push(self.silent_alert(sid, s, &judged));
        }
    }

    /// Open sessions tracked.
    pub(crate) fn open_sessions(&self) -> usize {
        self.sessions.len()
    }
}

/// The identity fields of `e`, copied onto alerts about its session.
fn who(e: &Event) -> Event {
    let mut w = Event {
        kind: e.kind,
        ..Event::default()
    };
    w.session_id.clone_from(&e.session_id);
    w.agent_id.clone_from(&e.agent_id);
    w.user_identity.clone_from(&e.user_identity);
    w.server.clone_from(&e.server);
    w
}

fn group(sid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("session_id".to_string(), sid.to_string())])
}
