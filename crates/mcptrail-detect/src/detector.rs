//! A detector over a ledger: the engine, plus what it takes to append alerts exactly once —
//! alert ids already in the ledger are remembered and never raised again — and to resume
//! after a restart without missing a sequence that spans it.
//!
//! # Resuming (the streaming detector's cursor)
//!
//! Window and sequence state lives in memory. Rather than persisting it, the detector
//! re-reads a little history: its cursor ([`crate::cursor`]) stores the last `seq` it finished
//! with *and* a `replay_from` seq, the oldest event any rule could still be looking at
//! (the engine's [`lookback`](crate::Engine::lookback_ms) before the newest event). On start it
//! reads from `replay_from`: the state is rebuilt, alerts the previous run raised come out
//! again with the same ids and are dropped because they are in the ledger (appended after
//! their evidence, so the replay reads them before [`Detector::take_new`] is called at the end
//! of the available records), and nothing after the cursor is missed.

use std::collections::{HashSet, VecDeque};

use mcptrail_event::{Event, EventKind};

use crate::alert::Alert;
use crate::clock::parse_event_time;
use crate::engine::Engine;
use crate::lean::Needs;

/// Alert ids remembered (the oldest are forgotten first).
const MAX_SEEN: usize = 200_000;
/// A `(time, seq)` sample is kept every this many events, to find `replay_from`.
const SAMPLE_EVERY: u64 = 256;

/// The engine plus exactly-once alert bookkeeping.
pub struct Detector {
    engine: Engine,
    needs: Needs,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    pending: Vec<Alert>,
    samples: VecDeque<(i64, u64)>,
    counted: u64,
    last_seq: u64,
    last_ms: i64,
    duplicates: u64,
}

impl Detector {
    /// A detector running `engine`.
    pub fn new(engine: Engine) -> Detector {
        Detector {
            needs: engine.needs(),
            engine,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            pending: Vec::new(),
            samples: VecDeque::new(),
            counted: 0,
            last_seq: 0,
            last_ms: i64::MIN,
            duplicates: 0,
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine, e.g. to add a baseline version.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Parse a ledger line with only what the rules read ([`crate::lean`]).
    pub fn parse_line(&self, line: &[u8]) -> Result<Event, serde_json::Error> {
        crate::lean::parse(line, &self.needs)
    }

    /// Feed the next ledger event, parsed from `line` by [`Detector::parse_line`]: alerts
    /// it raises get the identity members the lean parse left out, from a full parse.
    pub fn observe_line(&mut self, e: &Event, line: &[u8]) {
        let before = self.pending.len();
        self.observe(e);
        if self.pending.len() > before && self.needs.skips_identity() {
            if let Ok(full) = serde_json::from_slice::<Event>(line) {
                for a in &mut self.pending[before..] {
                    if a.session_id == full.session_id && a.agent_id == full.agent_id {
                        if a.user_identity.is_none() {
                            a.user_identity.clone_from(&full.user_identity);
                        }
                        if a.server.as_ref().is_some_and(|s| s.command.is_empty()) {
                            a.server.clone_from(&full.server);
                        }
                    }
                }
            }
        }
    }

    /// Judge silence as of the wall-clock time `now_ms` (see [`Engine::judge_as_of`]); the
    /// alerts come out of [`Detector::take_new`] like the others.
    pub fn judge_as_of(&mut self, now_ms: i64) {
        self.engine.judge_as_of(now_ms, &mut self.pending);
    }

    /// Feed the next ledger event.
    pub fn observe(&mut self, e: &Event) {
        if e.kind == EventKind::Alert {
            self.remember(e.event_id.clone());
        }
        let ms = parse_event_time(&e.time).unwrap_or(self.last_ms);
        if self.counted.is_multiple_of(SAMPLE_EVERY) {
            self.samples.push_back((ms, e.seq));
        }
        self.counted += 1;
        self.last_seq = e.seq;
        self.last_ms = self.last_ms.max(ms);
        self.engine.process(e, &mut self.pending);
        let horizon = self.last_ms.saturating_sub(self.engine.lookback_ms());
        // Keep the newest sample at or before the horizon: replaying from it covers it.
        while self.samples.len() >= 2 && self.samples[1].0 <= horizon {
            self.samples.pop_front();
        }
    }

    fn remember(&mut self, id: String) {
        if self.seen.insert(id.clone()) {
            self.seen_order.push_back(id);
            if self.seen_order.len() > MAX_SEEN {
                if let Some(old) = self.seen_order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }

    /// The alerts raised since the last call that are not in the ledger yet, in the order
    /// they were raised. Call it once the available records are read (alerts a previous run
    /// appended then have been seen); the returned ids count as in the ledger from now on.
    pub fn take_new(&mut self) -> Vec<Alert> {
        self.take_all()
            .into_iter()
            .filter_map(|(a, new)| new.then_some(a))
            .collect()
    }

    /// Like [`Detector::take_new`], but every alert raised, each with whether it is new
    /// (`false`: already in the ledger).
    pub fn take_all(&mut self) -> Vec<(Alert, bool)> {
        let mut out = Vec::new();
        for a in std::mem::take(&mut self.pending) {
            if self.seen.contains(&a.id) {
                self.duplicates += 1;
                out.push((a, false));
                continue;
            }
            self.remember(a.id.clone());
            out.push((a, true));
        }
        out
    }

    /// Alerts raised again but already in the ledger (so not returned) so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// The `seq` of the last event observed (0: none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Where a restarted detector should start reading so its state is complete again.
    pub fn replay_from(&self) -> u64 {
        self.samples.front().map_or(self.last_seq + 1, |s| s.1)
    }
}
