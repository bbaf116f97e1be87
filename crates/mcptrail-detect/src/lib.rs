//! mcptrail detection: declarative rules over audit events, raising alerts that name their
//! evidence (DESIGN.md §6).
//!
//! ```text
//! ledger events ──► Engine (rules: match · threshold · sequence) ──► Alert ──► `alert` event
//!   (in seq order)    event time only, bounded state                  deterministic id
//! ```
//!
//! This crate has no I/O but its cursor file: the binary reads the ledger (`mcptrail detect`,
//! the streaming detector of `wrap`/`gateway`) and appends the alerts.
//!
//! # Rules
//!
//! Rules are TOML tables, in a rule file (`[[rules]]`) or inline in `mcptrail.toml`
//! (`[[detect.rules]]`). The built-in pack ([`BUILTIN_RULES`]) is written the same way.
//!
//! ```toml
//! [[rules]]
//! id = "bulk-reads"                 # unique; a built-in id replaces that built-in rule
//! type = "threshold"                # match | threshold | sequence
//! severity = "medium"               # info | low | medium | high | critical
//! summary = "{value} reads by {agent_id} in {window}"
//! where = [                          # all must hold
//!   { field = "kind", equals = "mcp.request" },
//!   { field = "tool_invoked", glob = ["read_*", "get_*"] },
//! ]
//! group_by = ["agent_id"]           # count per agent
//! window = "10m"                    # sliding, in event time
//! aggregate = "count"               # count | sum | distinct | avg | ratio
//! threshold = 500                   # alert when the aggregate reaches it
//! cooldown = "1h"                   # then stay quiet for this group
//! ```
//!
//! - **Conditions** (`where`, `ratio_where`, `steps[].where`): `field` plus one or more of
//!   `equals`, `one_of`, `glob` (one or a list, `*`/`?`, lowercase globs ignore case),
//!   `regex`, `cidr` (addresses or `ip:port`), `gt`/`gte`/`lt`/`lte`, `exists`, `contains`
//!   (substring, or list element such as a label), `in_list` (a named list of globs from
//!   `[detect.lists]`), `in_catalog` (the tool is in the session's `tools/list`),
//!   `within_hours` (`[detect.allowed_hours]`); `any = [...]` for alternatives; `not = true`
//!   inverts. On lists (labels, `catalog.changed`, JSON arrays) a test holds when it holds for
//!   one element; a missing field fails every test except `exists = false`.
//! - **Fields**: the event's typed fields by name (`kind`, `agent_id`, `tool_invoked`,
//!   `response_summary.status`, `labels`, `bytes_out`, `http.client_address`, …, with the
//!   short forms `agent`, `session`, `tool`, `user`, `server`, `status`), and any JSON path
//!   under `detail.` or `parameters_used.` (`detail.host` of a `net.egress` event).
//! - **match**: one alert per matching event (per group, with a cooldown).
//! - **threshold**: per group, over a sliding window: `count`, `sum` of a numeric `field`,
//!   `distinct` values of a `field`, `avg` of a `field` (after `min_events`), or `ratio` of
//!   events also meeting `ratio_where` (after `min_events`). An alert restarts the window.
//! - **sequence**: `steps` in order within `within` of the first step, in the same group
//!   (default `group_by = ["session_id"]`); a step's `key` joins on a field (its value must
//!   be the same at every step naming a key).
//!
//! - **drift**: per group, the distribution of the joint values of `fields` in the newest
//!   `window` against the `reference` windows before it (Jensen–Shannon divergence, 0..1),
//!   judged when the window completes; alerts at `threshold` with `min_events` on each side.
//!
//! Every rule is validated at load; errors name the rule and the key (`rule
//! \`x\`: \`where[1].regex\`: does not compile: …`), and unknown keys are rejected.
//!
//! # Alerts
//!
//! See [`alert`] for the `alert` event's `detail` and the deterministic ids; [`detector`] for
//! exactly-once appending and resuming after a restart.

pub mod alert;
mod anomaly;
pub mod baseline;
pub mod clock;
pub mod cursor;
pub mod detector;
mod engine;
mod error;
mod field;
pub mod lean;
mod matcher;
mod rules;
mod silence;
pub mod spec;

pub use alert::{alert_id, Alert};
pub use baseline::{AgentBaseline, Baseline, BaselineStore, Learner, Limits};
pub use cursor::{DetectCursor, DETECT_DIR};
pub use detector::Detector;
pub use engine::{Engine, Stats, MAX_CHAINS};
pub use error::DetectError;
pub use rules::{
    monitor_rules, parse_rule_file, MonitorInfo, Rule, RuleSet, Severity, BUILTIN_RULES,
};
pub use spec::{BaselineConfig, DetectConfig, RuleFile, RuleSpec, Thresholds};
