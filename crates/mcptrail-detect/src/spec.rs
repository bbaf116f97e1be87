//! The rule format as written in TOML (`[[rules]]` in a rule file, `[[detect.rules]]` in
//! `mcptrail.toml`) and the `[detect]` settings. Every table rejects unknown keys; the
//! meaning of each key is checked when the rules are compiled (`rules.rs`).

use serde::Deserialize;

/// `[detect]` in `mcptrail.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Run the streaming detector in the background of `wrap` and `gateway`.
    pub streaming: bool,
    /// Load the built-in rule pack.
    pub builtin: bool,
    /// Rule ids to switch off (built-in or not).
    pub disable: Vec<String>,
    /// Rule files (TOML, `[[rules]]`) loaded after the built-in pack; a rule with the id of a
    /// built-in rule replaces it.
    pub rule_files: Vec<std::path::PathBuf>,
    /// Rules written inline.
    pub rules: Vec<RuleSpec>,
    /// Named lists for `in_list` matchers, e.g. `egress_allow = ["*.example.com"]`.
    pub lists: std::collections::BTreeMap<String, Vec<String>>,
    /// The hours in which tool calls are expected (`within_hours` matchers; the built-in
    /// `builtin.outside_allowed_hours` rule runs only when this is set).
    pub allowed_hours: Option<AllowedHours>,
    /// Per rule, at most this many groups (agents, sessions, …) are tracked; the least
    /// recently active are forgotten first.
    pub max_groups: usize,
    /// Per group of a threshold rule, at most this many events are kept in the window (the
    /// oldest drop out first).
    pub max_window_events: usize,
    /// At most this many evidence event ids are listed in one alert (the count is kept).
    pub max_evidence: usize,
    /// How often the streaming detector looks for new events, milliseconds.
    pub poll_interval_ms: u64,
    /// `[detect.baseline]`: learning baselines and the thresholds of the anomaly rules.
    pub baseline: BaselineConfig,
    /// `[detect.silence]`: heartbeats and silent taps.
    pub silence: SilenceConfig,
    /// `[detect.clients]`: scanning MCP client configurations for servers mcptrail does not
    /// record.
    pub clients: ClientsConfig,
}

/// `[detect.baseline]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// The history `mcptrail baseline learn` and relearning read by default, e.g. `14d`.
    pub window: String,
    /// The streaming detector learns a new version this often (wall clock), e.g. `1d`;
    /// unset: never (only `mcptrail baseline learn`).
    pub relearn_every: Option<String>,
    /// An agent is judged once its baseline has this many sessions…
    pub min_sessions: u64,
    /// …and per-day metrics once it has this many active days.
    pub min_days: u64,
    /// Thresholds for every agent.
    pub thresholds: Thresholds,
    /// Per agent (by `agent_id`): thresholds that differ from `thresholds`.
    pub agents: std::collections::BTreeMap<String, ThresholdOverrides>,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            window: "14d".into(),
            relearn_every: None,
            min_sessions: 5,
            min_days: 3,
            thresholds: Thresholds::default(),
            agents: Default::default(),
        }
    }
}

macro_rules! thresholds {
    ($( $(#[$doc:meta])* $name:ident : $ty:ty = $default:expr ),* $(,)?) => {
        /// `[detect.baseline.thresholds]`: how far from its baseline an agent may go.
        #[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Thresholds {
            $( $(#[$doc])* pub $name: $ty, )*
        }

        impl Default for Thresholds {
            fn default() -> Self {
                Thresholds { $( $name: $default, )* }
            }
        }

        /// `[detect.baseline.agents.<agent>]`: any of the keys of
        /// `[detect.baseline.thresholds]`, for one agent.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct ThresholdOverrides {
            $( $(#[$doc])* pub $name: Option<$ty>, )*
        }

        impl Thresholds {
            /// These thresholds with `o`'s values where it has one.
            pub fn with(mut self, o: &ThresholdOverrides) -> Thresholds {
                $( if let Some(v) = o.$name { self.$name = v; } )*
                self
            }
        }
    };
}

thresholds! {
    /// Session and daily bytes / records: alert above this many times the baseline's p99.
    volume_factor: f64 = 3.0,
    /// … and above at least this many bytes (per session or day).
    min_bytes: f64 = 65_536.0,
    /// … and above at least this many results (per session or day).
    min_records: f64 = 50.0,
    /// Tool calls in a clock hour: alert above this many times the baseline's p99 …
    rate_factor: f64 = 3.0,
    /// … and above at least this many calls.
    min_hourly_calls: f64 = 120.0,
    /// One result: alert above this many times the p99 of that tool's results …
    response_factor: f64 = 4.0,
    /// … and above at least this many bytes.
    min_response_bytes: f64 = 262_144.0,
    /// Tools with at least this many calls in the baseline are checked for new argument
    /// shapes and response sizes.
    min_tool_calls: u64 = 20,
    /// Alert on argument shapes a tool was never called with.
    new_argument_shapes: bool = true,
    /// Alert on egress to hosts the agent never connected to (once it has any egress).
    new_destinations: bool = true,
    /// Error rate of the agent's results in a clock hour: alert above this many times the
    /// baseline rate …
    error_factor: f64 = 3.0,
    /// … and at least this much above it (0.2 = 20 points) …
    error_margin: f64 = 0.2,
    /// … with at least this many results in the hour.
    min_error_results: u64 = 20,
    /// Tool calls in an hour of day that had less than this share of the baseline's calls
    /// (0 switches the check off) …
    rare_hour_share: f64 = 0.002,
    /// … once the baseline has at least this many calls.
    min_profile_calls: u64 = 500,
    /// Ingestion: alert when a clock hour has more than this share fewer events than the
    /// baseline's mean for that hour of day (0.8 = a drop of more than 80 %) …
    ingestion_drop: f64 = 0.8,
    /// … for hours whose baseline mean is at least this many events.
    min_hourly_events: f64 = 100.0,
}

/// `[detect.silence]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SilenceConfig {
    /// The heartbeat interval assumed when a heartbeat does not say its own (`interval_s`),
    /// e.g. `30s` (the taps' default).
    pub heartbeat_interval: String,
    /// A session is silent after this many heartbeat intervals without any event from it.
    pub missed_heartbeats: u64,
}

impl Default for SilenceConfig {
    fn default() -> Self {
        SilenceConfig {
            heartbeat_interval: "30s".into(),
            missed_heartbeats: 3,
        }
    }
}

/// `[detect.clients]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientsConfig {
    /// The streaming detector scans the MCP client configurations this often, e.g. `5m`;
    /// unset: never (`mcptrail detect --scan-clients` scans once).
    pub scan_every: Option<String>,
    /// Configuration files to scan instead of the usual places.
    pub files: Vec<std::path::PathBuf>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            streaming: false,
            builtin: true,
            disable: Vec::new(),
            rule_files: Vec::new(),
            rules: Vec::new(),
            lists: Default::default(),
            allowed_hours: None,
            max_groups: 10_000,
            max_window_events: 4096,
            max_evidence: 32,
            poll_interval_ms: 200,
            baseline: BaselineConfig::default(),
            silence: SilenceConfig::default(),
            clients: ClientsConfig::default(),
        }
    }
}

/// `[detect.allowed_hours]`: a daily window in an IANA time zone or a fixed UTC offset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedHours {
    /// Start of the window, `HH:MM` local time (inclusive).
    pub start: String,
    /// End of the window, `HH:MM` local time (exclusive); may be earlier than `start` for a
    /// window across midnight.
    pub end: String,
    /// An IANA time zone, e.g. `Europe/Berlin` (daylight saving included), from the system's
    /// tzdb (`/usr/share/zoneinfo`) or, without one, the copy built into mcptrail.
    #[serde(default)]
    pub tz: Option<String>,
    /// Instead of `tz`: a fixed offset from UTC, `+01:00` (default `+00:00`).
    #[serde(default)]
    pub utc_offset: Option<String>,
    /// Days the window applies to (`mon` … `sun`); other days are entirely outside. Default:
    /// every day.
    #[serde(default)]
    pub days: Vec<String>,
}

/// A rules file: `[[rules]]` tables and optionally `[lists]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// The rules.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Named lists, merged with `[detect.lists]`.
    #[serde(default)]
    pub lists: std::collections::BTreeMap<String, Vec<String>>,
}

/// One `[[rules]]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique id (`[a-z0-9_.-]`), named in every alert.
    pub id: Option<String>,
    /// What the rule looks for, for people.
    pub description: Option<String>,
    /// `match`, `threshold`, `sequence` or `drift`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `info`, `low`, `medium`, `high` or `critical`.
    pub severity: Option<String>,
    /// One line for the alert, with `{field}` placeholders (fields of the triggering event)
    /// and `{value}`, `{threshold}`, `{window}`, `{group}`, `{count}`.
    pub summary: Option<String>,
    /// `false` switches the rule off.
    pub enabled: Option<bool>,
    /// Conditions an event must meet (all of them).
    #[serde(default, rename = "where")]
    pub conditions: Vec<ConditionSpec>,
    /// Fields whose values form the group a threshold counts in, a sequence runs in, or a
    /// cooldown applies to. Sequences default to `["session_id"]`.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Threshold: the sliding window, e.g. `5m`.
    pub window: Option<String>,
    /// Threshold: `count` (default), `sum`, `distinct`, `avg` or `ratio`.
    pub aggregate: Option<String>,
    /// Threshold: the numeric field of `sum`/`avg`, the field whose values `distinct` counts.
    pub field: Option<String>,
    /// Threshold `ratio`: the share of matching events that also meet these conditions.
    #[serde(default)]
    pub ratio_where: Vec<ConditionSpec>,
    /// Threshold `avg`/`ratio`: at least this many events in the window before judging.
    pub min_events: Option<u64>,
    /// Threshold: alert when the aggregate reaches this value (`>=`).
    pub threshold: Option<f64>,
    /// Sequence: the steps, in order.
    #[serde(default)]
    pub steps: Vec<StepSpec>,
    /// Sequence: all steps within this time of the first, e.g. `5m`.
    pub within: Option<String>,
    /// Drift: the fields whose joint values form the distribution compared (e.g.
    /// `["tool_invoked", "status"]`).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Drift: how much history before the current window is the reference, e.g. `7d` (a
    /// whole number of windows).
    pub reference: Option<String>,
    /// After an alert, no other alert of this rule for the same group for this long.
    pub cooldown: Option<String>,
}

/// One step of a sequence.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Conditions of this step.
    #[serde(default, rename = "where")]
    pub conditions: Vec<ConditionSpec>,
    /// Join: the value of this field must be the same at every step that names a `key`.
    pub key: Option<String>,
}

/// One condition: a field and one or more tests (all must hold), or `any` of nested ones;
/// `not = true` inverts it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    /// The event field (see the crate docs for the names).
    pub field: Option<String>,
    /// Equal to this string, number or boolean.
    pub equals: Option<toml::Value>,
    /// Equal to one of these.
    pub one_of: Option<Vec<toml::Value>>,
    /// Matches this glob (`*`, `?`) or one of these globs.
    pub glob: Option<OneOrMany>,
    /// Matches this regular expression (Rust `regex` syntax, unanchored).
    pub regex: Option<String>,
    /// An IP address (or `ip:port`) inside this CIDR block or one of these.
    pub cidr: Option<OneOrMany>,
    /// Greater than.
    pub gt: Option<f64>,
    /// Greater than or equal.
    pub gte: Option<f64>,
    /// Less than.
    pub lt: Option<f64>,
    /// Less than or equal.
    pub lte: Option<f64>,
    /// Present (non-empty for lists) or absent.
    pub exists: Option<bool>,
    /// A string containing this text, or a list with this element (e.g. a label).
    pub contains: Option<String>,
    /// Matches a glob of the named list (`[detect.lists]`).
    pub in_list: Option<String>,
    /// The tool is (or is not) in the session's latest `tools/list` catalog; judged only once
    /// the session has one.
    pub in_catalog: Option<bool>,
    /// The event time is (or is not) within `[detect.allowed_hours]`.
    pub within_hours: Option<bool>,
    /// Any of these conditions.
    pub any: Option<Vec<ConditionSpec>>,
    /// Invert the condition.
    #[serde(default)]
    pub not: bool,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    pub(crate) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}
