//! Compiling rule specs into rules: each key checked against the rule's type, every field
//! path, regex, CIDR block, list and duration compiled once, every problem reported with the
//! rule's id and the key (`where[2].regex`). Also the rule set: the built-in pack, rule files
//! and inline rules merged by id, minus the disabled ones.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};

use mcptrail_event::EventKind;

use crate::clock::parse_duration;
use crate::error::DetectError;
use crate::field::Path;
use crate::matcher::{Condition, Env, Hours};
use crate::spec::{ConditionSpec, DetectConfig, RuleFile, RuleSpec};

/// How serious an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Look when convenient.
    Low,
    /// Look today.
    Medium,
    /// Look now.
    High,
    /// Someone is probably taking something.
    Critical,
}

impl Severity {
    /// The name used in rules and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parse a name.
    pub fn parse(s: &str) -> Option<Severity> {
        [
            Severity::Info,
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// How a threshold rule aggregates the events of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Aggregate {
    Count,
    Sum,
    Distinct,
    Avg,
    Ratio,
}

#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) conditions: Vec<Condition>,
    pub(crate) key: Option<Path>,
}

#[derive(Debug, Clone)]
pub(crate) enum Body {
    Match,
    Threshold {
        window_ms: i64,
        aggregate: Aggregate,
        field: Option<Path>,
        ratio_where: Vec<Condition>,
        min_events: u64,
        threshold: f64,
    },
    Sequence {
        steps: Vec<Step>,
        within_ms: i64,
    },
    Drift {
        window_ms: i64,
        reference_windows: i64,
        fields: Vec<Path>,
        min_events: u64,
        threshold: f64,
    },
}

/// One piece of a summary template.
#[derive(Debug, Clone)]
pub(crate) enum Piece {
    Text(String),
    Field(Path),
    Value,
    Threshold,
    Window,
    Group,
    Count,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) id: String,
    pub(crate) description: Option<String>,
    pub(crate) severity: Severity,
    pub(crate) summary: Vec<Piece>,
    /// Bit i set: the rule may match `EventKind::ALL[i]` (`None`: any kind but `alert`).
    pub(crate) kind_mask: Option<u32>,
    pub(crate) conditions: Vec<Condition>,
    pub(crate) group_by: Vec<(String, Path)>,
    pub(crate) cooldown_ms: i64,
    pub(crate) body: Body,
    pub(crate) builtin: bool,
}

impl Rule {
    /// The id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The severity of its alerts.
    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// `match`, `threshold` or `sequence`.
    pub fn kind(&self) -> &'static str {
        match self.body {
            Body::Match => "match",
            Body::Threshold { .. } => "threshold",
            Body::Sequence { .. } => "sequence",
            Body::Drift { .. } => "drift",
        }
    }

    /// The description, if it has one.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Whether it comes from the built-in pack.
    pub fn is_builtin(&self) -> bool {
        self.builtin
    }

    /// Every event field the rule reads (conditions, groups, summary, aggregates, keys).
    pub(crate) fn paths<'a>(&'a self, out: &mut Vec<&'a Path>) {
        self.conditions.iter().for_each(|c| c.paths(out));
        out.extend(self.group_by.iter().map(|(_, p)| p));
        for piece in &self.summary {
            if let Piece::Field(p) = piece {
                out.push(p);
            }
        }
        match &self.body {
            Body::Match => {}
            Body::Threshold {
                field, ratio_where, ..
            } => {
                out.extend(field.iter());
                ratio_where.iter().for_each(|c| c.paths(out));
            }
            Body::Sequence { steps, .. } => {
                for s in steps {
                    s.conditions.iter().for_each(|c| c.paths(out));
                    out.extend(s.key.iter());
                }
            }
            Body::Drift { fields, .. } => out.extend(fields.iter()),
        }
    }

    /// Whether a condition asks about the session's tool catalog.
    pub(crate) fn uses_catalog(&self) -> bool {
        let in_steps = match &self.body {
            Body::Sequence { steps, .. } => steps
                .iter()
                .any(|s| s.conditions.iter().any(Condition::uses_catalog)),
            Body::Threshold { ratio_where, .. } => ratio_where.iter().any(Condition::uses_catalog),
            _ => false,
        };
        in_steps || self.conditions.iter().any(Condition::uses_catalog)
    }

    /// How far back this rule looks (window, sequence span, cooldown), ms.
    pub(crate) fn lookback_ms(&self) -> i64 {
        let body = match &self.body {
            Body::Match => 0,
            Body::Threshold { window_ms, .. } => *window_ms,
            Body::Sequence { within_ms, .. } => *within_ms,
            Body::Drift {
                window_ms,
                reference_windows,
                ..
            } => window_ms * (reference_windows + 2),
        };
        body.max(self.cooldown_ms)
    }
}

pub(crate) fn kind_bit(k: EventKind) -> u32 {
    let i = EventKind::ALL.iter().position(|x| *x == k).unwrap_or(31);
    1 << i
}

/// The limits that keep memory bounded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_groups: usize,
    pub(crate) max_window_events: usize,
    pub(crate) max_evidence: usize,
}

/// The built-in monitors (baseline anomalies, silence) in force and their settings.
#[derive(Debug, Clone)]
pub(crate) struct Monitors {
    pub(crate) baseline: crate::spec::BaselineConfig,
    pub(crate) heartbeat_interval_ms: i64,
    pub(crate) missed_heartbeats: u64,
    /// Ids of the monitor rules switched on.
    pub(crate) enabled: std::collections::HashSet<&'static str>,
}

/// The rules in force, compiled.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub(crate) rules: Vec<Rule>,
    pub(crate) limits: Limits,
    pub(crate) monitors: Monitors,
}

/// A built-in monitor rule as listed to people: id, type, severity, what it fires on.
#[derive(Debug, Clone, Copy)]
pub struct MonitorInfo {
    /// The id (`builtin.baseline.*`, `builtin.silence.*`).
    pub id: &'static str,
    /// `anomaly` or `silence`.
    pub rule_type: &'static str,
    /// Severity of its alerts.
    pub severity: Severity,
    /// What it fires on.
    pub description: &'static str,
}

/// Every built-in monitor rule.
pub fn monitor_rules() -> impl Iterator<Item = MonitorInfo> {
    crate::anomaly::RULES
        .iter()
        .chain(crate::silence::RULES)
        .map(|r| MonitorInfo {
            id: r.id,
            rule_type: r.rule_type,
            severity: r.severity,
            description: r.description,
        })
}

fn check_settings(cfg: &DetectConfig) -> Result<(i64, Option<i64>, i64), DetectError> {
    let setting = |field: &str, problem: String| DetectError::Setting {
        field: field.into(),
        problem,
    };
    let window = parse_duration(&cfg.baseline.window).map_err(|p| setting("baseline.window", p))?;
    let relearn = cfg
        .baseline
        .relearn_every
        .as_deref()
        .map(|r| parse_duration(r).map_err(|p| setting("baseline.relearn_every", p)))
        .transpose()?;
    let hb = parse_duration(&cfg.silence.heartbeat_interval)
        .map_err(|p| setting("silence.heartbeat_interval", p))?;
    if cfg.silence.missed_heartbeats == 0 {
        return Err(setting(
            "silence.missed_heartbeats",
            "must be at least 1".into(),
        ));
    }
    if let Some(s) = &cfg.clients.scan_every {
        parse_duration(s).map_err(|p| setting("clients.scan_every", p))?;
    }
    let all = std::iter::once(("thresholds".to_string(), cfg.baseline.thresholds)).chain(
        cfg.baseline
            .agents
            .iter()
            .map(|(a, o)| (format!("agents.{a}"), cfg.baseline.thresholds.with(o))),
    );
    for (at, t) in all {
        for (key, v) in [
            ("volume_factor", t.volume_factor),
            ("rate_factor", t.rate_factor),
            ("response_factor", t.response_factor),
            ("error_factor", t.error_factor),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(setting(
                    &format!("baseline.{at}.{key}"),
                    format!(
                        "{v} is not a factor above 0 (e.g. 3 for three times the baseline's p99)"
                    ),
                ));
            }
        }
        for (key, v) in [
            ("min_bytes", t.min_bytes),
            ("min_records", t.min_records),
            ("min_hourly_calls", t.min_hourly_calls),
            ("min_response_bytes", t.min_response_bytes),
            ("min_hourly_events", t.min_hourly_events),
            ("error_margin", t.error_margin),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(setting(
                    &format!("baseline.{at}.{key}"),
                    format!("{v} must be a number of at least 0"),
                ));
            }
        }
        if !(t.ingestion_drop > 0.0 && t.ingestion_drop <= 1.0) {
            return Err(setting(
                &format!("baseline.{at}.ingestion_drop"),
                format!(
                    "{} is not a share between 0 and 1 (0.8 = a drop of more than 80 %)",
                    t.ingestion_drop
                ),
            ));
        }
        if !(0.0..1.0).contains(&t.rare_hour_share) {
            return Err(setting(
                &format!("baseline.{at}.rare_hour_share"),
                format!(
                    "{} is not a share from 0 (off) to under 1",
                    t.rare_hour_share
                ),
            ));
        }
    }
    Ok((window, relearn, hb))
}

/// The built-in rule pack, in the same format as user rule files.
pub const BUILTIN_RULES: &str = include_str!("builtin.toml");

/// Built-in rules that only make sense once a list is configured.
const BUILTIN_NEEDS_LIST: &[(&str, &str)] = &[("builtin.tool_not_allowed", "known_tools")];

/// Lists the built-in rules refer to; empty unless configured.
const DEFAULT_LISTS: &[&str] = &["egress_allow", "known_tools"];

impl RuleSet {
    /// Load the rules `cfg` asks for, plus `extra_files` (e.g. `detect --rules`). Relative
    /// rule file paths are taken from `base_dir` (the config file's directory).
    pub fn load(
        cfg: &DetectConfig,
        extra_files: &[PathBuf],
        base_dir: Option<&FsPath>,
    ) -> Result<RuleSet, DetectError> {
        let mut lists = cfg.lists.clone();
        for name in DEFAULT_LISTS {
            lists.entry((*name).to_string()).or_default();
        }
        // (spec, builtin, source)
        let mut specs: Vec<(RuleSpec, bool, String)> = Vec::new();
        if cfg.builtin {
            let file: RuleFile = toml::from_str(BUILTIN_RULES).expect("the built-in pack parses");
            specs.extend(
                file.rules
                    .into_iter()
                    .map(|r| (r, true, "built-in pack".to_string())),
            );
        }
        let files = cfg.rule_files.iter().map(|p| match base_dir {
            Some(b) if p.is_relative() => b.join(p),
            _ => p.clone(),
        });
        for path in files.chain(extra_files.iter().cloned()) {
            let text = std::fs::read_to_string(&path).map_err(DetectError::io(&path))?;
            let file = parse_rule_file(&text, &path.display().to_string())?;
            for (name, list) in file.lists {
                lists.insert(name, list);
            }
            let src = path.display().to_string();
            specs.extend(file.rules.into_iter().map(|r| (r, false, src.clone())));
        }
        specs.extend(
            cfg.rules
                .iter()
                .cloned()
                .map(|r| (r, false, "[detect]".to_string())),
        );

        let (_, _, heartbeat_interval_ms) = check_settings(cfg)?;
        let hours = cfg
            .allowed_hours
            .as_ref()
            .map(Hours::compile)
            .transpose()
            .map_err(|(field, problem)| DetectError::Setting { field, problem })?;
        let env = Env {
            lists: &lists,
            hours: hours.as_ref(),
        };
        let mut rules: Vec<Rule> = Vec::new();
        let mut seen: BTreeMap<String, (bool, String)> = BTreeMap::new();
        for (i, (spec, builtin, source)) in specs.into_iter().enumerate() {
            let label = spec.id.clone().unwrap_or_else(|| format!("#{}", i + 1));
            if builtin && hours.is_none() && uses_hours(&spec) {
                // Allowed hours are not configured: that rule has nothing to judge.
                seen.insert(label, (true, source));
                continue;
            }
            let needs_empty_list = BUILTIN_NEEDS_LIST.iter().any(|(r, l)| {
                spec.id.as_deref() == Some(r) && lists.get(*l).is_none_or(Vec::is_empty)
            });
            if builtin && needs_empty_list {
                // An allow list that is not set gives that rule nothing to judge.
                seen.insert(label, (true, source));
                continue;
            }
            let rule = compile(&spec, &env, builtin).map_err(|e| match e {
                DetectError::Rule {
                    rule,
                    field,
                    problem,
                } if !builtin => DetectError::Rule {
                    rule: format!("{rule}` in `{source}"),
                    field,
                    problem,
                },
                other => other,
            });
            let rule = rule?;
            match seen.get(&rule.id) {
                Some((true, _)) if !builtin => {
                    // A user rule with a built-in id replaces the built-in one.
                    rules.retain(|r| r.id != rule.id);
                }
                Some((_, other)) => {
                    return Err(DetectError::rule(
                        &label,
                        "id",
                        format!("is used twice (also in {other}); ids must be unique"),
                    ))
                }
                None => {}
            }
            seen.insert(rule.id.clone(), (builtin, source));
            if spec.enabled != Some(false) {
                rules.push(rule);
            }
        }
        let mut enabled = std::collections::HashSet::new();
        if cfg.builtin {
            for m in monitor_rules() {
                seen.insert(m.id.to_string(), (true, "built-in monitors".to_string()));
                if !cfg.disable.iter().any(|d| d == m.id) {
                    enabled.insert(m.id);
                }
            }
        }
        for id in &cfg.disable {
            if !seen.contains_key(id) {
                return Err(DetectError::Setting {
                    field: "disable".into(),
                    problem: format!(
                        "no rule has the id `{id}`; rules are: {}",
                        seen.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
        rules.retain(|r| !cfg.disable.contains(&r.id));
        for (field, v) in [
            ("max_groups", cfg.max_groups),
            ("max_window_events", cfg.max_window_events),
            ("max_evidence", cfg.max_evidence),
        ] {
            if v == 0 {
                return Err(DetectError::Setting {
                    field: field.into(),
                    problem: "must be at least 1".into(),
                });
            }
        }
        Ok(RuleSet {
            rules,
            limits: Limits {
                max_groups: cfg.max_groups,
                max_window_events: cfg.max_window_events,
                max_evidence: cfg.max_evidence,
            },
            monitors: Monitors {
                baseline: cfg.baseline.clone(),
                heartbeat_interval_ms,
                missed_heartbeats: cfg.silence.missed_heartbeats,
                enabled,
            },
        })
    }

    /// The built-in pack alone, with default settings.
    pub fn builtin() -> RuleSet {
        RuleSet::load(&DetectConfig::default(), &[], None).expect("the built-in pack compiles")
    }

    /// The rules, in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The built-in monitor rules switched on.
    pub fn monitors(&self) -> Vec<MonitorInfo> {
        monitor_rules()
            .filter(|m| self.monitors.enabled.contains(m.id))
            .collect()
    }
}

/// Parse a rule file's text (`source` names it in errors).
pub fn parse_rule_file(text: &str, source: &str) -> Result<RuleFile, DetectError> {
    toml::from_str(text).map_err(|e| DetectError::Document {
        source_name: source.to_string(),
        problem: e.to_string().trim_end().to_string(),
    })
}

fn uses_hours(spec: &RuleSpec) -> bool {
    fn any(cs: &[ConditionSpec]) -> bool {
        cs.iter()
            .any(|c| c.within_hours.is_some() || c.any.as_deref().is_some_and(any))
    }
    any(&spec.conditions) || spec.steps.iter().any(|s| any(&s.conditions))
}

fn compile_conditions(
    id: &str,
    key: &str,
    specs: &[ConditionSpec],
    env: &Env<'_>,
) -> Result<Vec<Condition>, DetectError> {
    specs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Condition::compile(c, env)
                .map_err(|(k, p)| DetectError::rule(id, format!("{key}[{i}].{k}"), p))
        })
        .collect()
}

fn mask_of(conditions: &[Condition]) -> Option<u32> {
    let mut mask: Option<u32> = None;
    for c in conditions {
        if let Some(kinds) = c.kinds() {
            let m = kinds
                .iter()
                .filter_map(|k| EventKind::parse(k))
                .fold(0u32, |m, k| m | kind_bit(k));
            mask = Some(mask.map_or(m, |prev| prev & m));
        }
    }
    mask
}

fn check_kinds(id: &str, key: &str, conditions: &[ConditionSpec]) -> Result<(), DetectError> {
    for (i, c) in conditions.iter().enumerate() {
        if c.field.as_deref() != Some("kind") {
            continue;
        }
        let mut names = Vec::new();
        if let Some(toml::Value::String(s)) = &c.equals {
            names.push(s.clone());
        }
        for v in c.one_of.iter().flatten() {
            if let toml::Value::String(s) = v {
                names.push(s.clone());
            }
        }
        for n in names {
            if EventKind::parse(&n).is_none() {
                let all: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                return Err(DetectError::rule(
                    id,
                    format!("{key}[{i}]"),
                    format!("unknown kind `{n}`; kinds are: {}", all.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

fn duration(id: &str, key: &str, v: Option<&str>) -> Result<Option<i64>, DetectError> {
    v.map(|s| parse_duration(s).map_err(|p| DetectError::rule(id, key, p)))
        .transpose()
}

fn compile(spec: &RuleSpec, env: &Env<'_>, builtin: bool) -> Result<Rule, DetectError> {
    let id = spec
        .id
        .clone()
        .ok_or_else(|| DetectError::rule("?", "id", "missing: every rule needs a unique id"))?;
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
    {
        return Err(DetectError::rule(
            &id,
            "id",
            "use lowercase letters, digits, `_`, `.` and `-` only",
        ));
    }
    if !builtin && id.starts_with("builtin.") && !BUILTIN_RULES.contains(&format!("\"{id}\"")) {
        return Err(DetectError::rule(
            &id,
            "id",
            "the `builtin.` prefix is for the built-in pack (a rule may reuse a built-in id to replace it)",
        ));
    }
    let kind = spec.kind.as_deref().ok_or_else(|| {
        DetectError::rule(
            &id,
            "type",
            "missing: `match`, `threshold`, `sequence` or `drift`",
        )
    })?;
    let severity = match spec.severity.as_deref() {
        None => {
            return Err(DetectError::rule(
                &id,
                "severity",
                "missing: info, low, medium, high or critical",
            ))
        }
        Some(s) => Severity::parse(s).ok_or_else(|| {
            DetectError::rule(
                &id,
                "severity",
                format!("`{s}` is not one of info, low, medium, high, critical"),
            )
        })?,
    };
    let not_here = |field: &str, present: bool| -> Result<(), DetectError> {
        if present {
            Err(DetectError::rule(
                &id,
                field,
                format!("does not apply to a `{kind}` rule"),
            ))
        } else {
            Ok(())
        }
    };
    let group_by = spec
        .group_by
        .iter()
        .enumerate()
        .map(|(i, f)| {
            Path::parse(f)
                .map(|p| (f.clone(), p))
                .map_err(|p| DetectError::rule(&id, format!("group_by[{i}]"), p))
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_kinds(&id, "where", &spec.conditions)?;
    let conditions = compile_conditions(&id, "where", &spec.conditions, env)?;
    let cooldown_ms = duration(&id, "cooldown", spec.cooldown.as_deref())?.unwrap_or(0);
    let threshold_keys = [
        ("window", spec.window.is_some()),
        ("aggregate", spec.aggregate.is_some()),
        ("field", spec.field.is_some()),
        ("ratio_where", !spec.ratio_where.is_empty()),
        ("min_events", spec.min_events.is_some()),
        ("threshold", spec.threshold.is_some()),
    ];
    let sequence_keys = [
        ("steps", !spec.steps.is_empty()),
        ("within", spec.within.is_some()),
    ];
    let drift_keys = [
        ("fields", !spec.fields.is_empty()),
        ("reference", spec.reference.is_some()),
    ];
    let (body, kind_mask, group_by) = match kind {
        "match" => {
            for (k, present) in threshold_keys
                .iter()
                .chain(&sequence_keys)
                .chain(&drift_keys)
            {
                not_here(k, *present)?;
            }
            if conditions.is_empty() {
                return Err(DetectError::rule(
                    &id,
                    "where",
                    "a match rule needs at least one condition",
                ));
            }
            (Body::Match, mask_of(&conditions), group_by)
        }
        "threshold" => {
            for (k, present) in sequence_keys.iter().chain(&drift_keys) {
                not_here(k, *present)?;
            }
            let window_ms = duration(&id, "window", spec.window.as_deref())?.ok_or_else(|| {
                DetectError::rule(&id, "window", "missing: the sliding window, e.g. 5m")
            })?;
            let aggregate = match spec.aggregate.as_deref().unwrap_or("count") {
                "count" => Aggregate::Count,
                "sum" => Aggregate::Sum,
                "distinct" => Aggregate::Distinct,
                "avg" => Aggregate::Avg,
                "ratio" => Aggregate::Ratio,
                other => {
                    return Err(DetectError::rule(
                        &id,
                        "aggregate",
                        format!("`{other}` is not one of count, sum, distinct, avg, ratio"),
                    ))
                }
            };
            let field = spec
                .field
                .as_deref()
                .map(|f| Path::parse(f).map_err(|p| DetectError::rule(&id, "field", p)))
                .transpose()?;
            let needs_field = matches!(
                aggregate,
                Aggregate::Sum | Aggregate::Distinct | Aggregate::Avg
            );
            if needs_field && field.is_none() {
                return Err(DetectError::rule(
                    &id,
                    "field",
                    "missing: sum, distinct and avg need the field to aggregate",
                ));
            }
            if !needs_field && field.is_some() {
                not_here("field", true).map_err(|_| {
                    DetectError::rule(&id, "field", "only sum, distinct and avg aggregate a field")
                })?;
            }
            let ratio_where = compile_conditions(&id, "ratio_where", &spec.ratio_where, env)?;
            if (aggregate == Aggregate::Ratio) == ratio_where.is_empty() {
                return Err(DetectError::rule(
                    &id,
                    "ratio_where",
                    "a ratio needs `ratio_where` (the share of events meeting it), and only a ratio has one",
                ));
            }
            let threshold = spec.threshold.ok_or_else(|| {
                DetectError::rule(
                    &id,
                    "threshold",
                    "missing: the value that raises the alert (>=)",
                )
            })?;
            if !threshold.is_finite() || threshold <= 0.0 {
                return Err(DetectError::rule(
                    &id,
                    "threshold",
                    "must be a number greater than zero",
                ));
            }
            if aggregate == Aggregate::Ratio && threshold > 1.0 {
                return Err(DetectError::rule(
                    &id,
                    "threshold",
                    "a ratio is between 0 and 1",
                ));
            }
            (
                Body::Threshold {
                    window_ms,
                    aggregate,
                    field,
                    ratio_where,
                    min_events: spec.min_events.unwrap_or(1).max(1),
                    threshold,
                },
                mask_of(&conditions),
                group_by,
            )
        }
        "sequence" => {
            for (k, present) in threshold_keys.iter().chain(&drift_keys) {
                not_here(k, *present)?;
            }
            if spec.steps.len() < 2 {
                return Err(DetectError::rule(
                    &id,
                    "steps",
                    "a sequence needs at least two steps",
                ));
            }
            let within_ms = duration(&id, "within", spec.within.as_deref())?.ok_or_else(|| {
                DetectError::rule(
                    &id,
                    "within",
                    "missing: how soon the steps follow each other, e.g. 5m",
                )
            })?;
            let mut steps = Vec::new();
            let mut mask: Option<u32> = Some(0);
            for (i, s) in spec.steps.iter().enumerate() {
                let key = format!("steps[{i}].where");
                check_kinds(&id, &key, &s.conditions)?;
                let mut cs = compile_conditions(&id, &key, &s.conditions, env)?;
                // The rule-level conditions apply to every step.
                cs.extend(conditions.iter().cloned());
                if cs.is_empty() {
                    return Err(DetectError::rule(
                        &id,
                        key,
                        "a step needs at least one condition",
                    ));
                }
                mask = match (mask, mask_of(&cs)) {
                    (Some(a), Some(b)) => Some(a | b),
                    _ => None,
                };
                let key = s
                    .key
                    .as_deref()
                    .map(|f| {
                        Path::parse(f)
                            .map_err(|p| DetectError::rule(&id, format!("steps[{i}].key"), p))
                    })
                    .transpose()?;
                steps.push(Step {
                    conditions: cs,
                    key,
                });
            }
            let group_by = if group_by.is_empty() {
                vec![("session_id".to_string(), Path::SessionId)]
            } else {
                group_by
            };
            (Body::Sequence { steps, within_ms }, mask, group_by)
        }
        "drift" => {
            for (k, present) in sequence_keys.iter().chain(&[
                ("aggregate", spec.aggregate.is_some()),
                ("field", spec.field.is_some()),
                ("ratio_where", !spec.ratio_where.is_empty()),
            ]) {
                not_here(k, *present)?;
            }
            let window_ms = duration(&id, "window", spec.window.as_deref())?.ok_or_else(|| {
                DetectError::rule(&id, "window", "missing: the current window, e.g. 1d")
            })?;
            let reference_ms =
                duration(&id, "reference", spec.reference.as_deref())?.ok_or_else(|| {
                    DetectError::rule(&id, "reference", "missing: the reference history, e.g. 7d")
                })?;
            if reference_ms % window_ms != 0 {
                return Err(DetectError::rule(
                    &id,
                    "reference",
                    "must be a whole number of windows (e.g. window 1d, reference 7d)",
                ));
            }
            if spec.fields.is_empty() {
                return Err(DetectError::rule(
                    &id,
                    "fields",
                    "missing: the fields whose values are compared, e.g. [\"tool_invoked\", \"status\"]",
                ));
            }
            let fields = spec
                .fields
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    Path::parse(f).map_err(|p| DetectError::rule(&id, format!("fields[{i}]"), p))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let threshold = spec.threshold.ok_or_else(|| {
                DetectError::rule(
                    &id,
                    "threshold",
                    "missing: the divergence (0..1) that raises the alert",
                )
            })?;
            if !(threshold > 0.0 && threshold <= 1.0) {
                return Err(DetectError::rule(
                    &id,
                    "threshold",
                    "a Jensen-Shannon divergence is between 0 and 1",
                ));
            }
            (
                Body::Drift {
                    window_ms,
                    reference_windows: reference_ms / window_ms,
                    fields,
                    min_events: spec.min_events.unwrap_or(30).max(1),
                    threshold,
                },
                mask_of(&conditions),
                group_by,
            )
        }
        other => {
            return Err(DetectError::rule(
                &id,
                "type",
                format!("`{other}` is not one of match, threshold, sequence, drift"),
            ))
        }
    };
    let summary_text = spec.summary.as_deref().ok_or_else(|| {
        DetectError::rule(
            &id,
            "summary",
            "missing: one line for the alert, with {field} placeholders",
        )
    })?;
    let summary = parse_template(summary_text).map_err(|p| DetectError::rule(&id, "summary", p))?;
    Ok(Rule {
        id,
        description: spec.description.clone(),
        severity,
        summary,
        kind_mask,
        conditions: if matches!(body, Body::Sequence { .. }) {
            Vec::new()
        } else {
            conditions
        },
        group_by,
        cooldown_ms,
        body,
        builtin,
    })
}

fn parse_template(s: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(Piece::Text(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("an unclosed `{{` at `{}`", &rest[open..]))?
            + open;
        let name = &rest[open + 1..close];
        out.push(match name {
            "value" => Piece::Value,
            "threshold" => Piece::Threshold,
            "window" => Piece::Window,
            "group" => Piece::Group,
            "count" => Piece::Count,
            f => Piece::Field(Path::parse(f).map_err(|p| format!("placeholder {{{f}}}: {p}"))?),
        });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}
