//! Field matchers: a compiled condition (`equals`, `one_of`, `glob`, `regex`, `cidr`, numeric
//! comparisons, `exists`, `contains`, `in_list`, `in_catalog`, `within_hours`, `any`, `not`)
//! and its evaluation against one event. On a list field (labels, `catalog.changed`, a JSON
//! array) a test holds when it holds for one element. A missing field fails every test but
//! `exists = false` (and so passes under `not`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use mcptrail_event::Event;
use regex::Regex;

use crate::clock::local_minute_and_weekday;
use crate::field::{Path, Val};
use crate::spec::{AllowedHours, ConditionSpec};

/// What a condition may consult besides the event itself.
pub(crate) struct Context<'a> {
    /// The event time, ms.
    pub(crate) ms: i64,
    /// Whether the tool of the event is in its session's catalog (`None`: no catalog known).
    pub(crate) in_catalog: &'a dyn Fn(&Event) -> Option<bool>,
}

/// A scalar to compare with.
#[derive(Debug, Clone)]
pub(crate) enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
}

impl Lit {
    fn from_toml(v: &toml::Value) -> Result<Lit, String> {
        Ok(match v {
            toml::Value::String(s) => Lit::Str(s.clone()),
            toml::Value::Integer(i) => Lit::Num(*i as f64),
            toml::Value::Float(f) => Lit::Num(*f),
            toml::Value::Boolean(b) => Lit::Bool(*b),
            other => {
                return Err(format!(
                    "compare with a string, number or boolean, not {}",
                    other.type_str()
                ))
            }
        })
    }

    fn eq(&self, v: Val<'_>) -> bool {
        match (self, v) {
            (Lit::Str(a), Val::Str(b)) => a == b,
            (Lit::Num(a), Val::Num(b)) => a == &b,
            (Lit::Num(a), Val::Str(b)) => b.parse::<f64>().is_ok_and(|b| *a == b),
            (Lit::Bool(a), Val::Bool(b)) => *a == b,
            _ => false,
        }
    }
}

/// A compiled `HH:MM`–`HH:MM` window on some weekdays, in a fixed offset or an IANA zone.
#[derive(Debug, Clone)]
pub(crate) struct Hours {
    start: u32,
    end: u32,
    offset_min: i32,
    /// An IANA zone (daylight saving included); wins over `offset_min`.
    tz: Option<jiff::tz::TimeZone>,
    /// Bit d (0 = Monday) set when the window applies that day.
    days: u8,
}

impl Hours {
    pub(crate) fn compile(h: &AllowedHours) -> Result<Hours, (String, String)> {
        let hm = |field: &str, s: &str| -> Result<u32, (String, String)> {
            let bad = || {
                (
                    format!("allowed_hours.{field}"),
                    format!("`{s}` is not a time of day: write HH:MM, e.g. 08:30"),
                )
            };
            let (h, m) = s.split_once(':').ok_or_else(bad)?;
            let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 24 || m > 59 || (h == 24 && m != 0) {
                return Err(bad());
            }
            Ok(h * 60 + m)
        };
        let start = hm("start", &h.start)?;
        let end = hm("end", &h.end)?;
        if h.tz.is_some() && h.utc_offset.is_some() {
            return Err((
                "allowed_hours.tz".to_string(),
                "set either `tz` (an IANA zone such as Europe/Berlin) or `utc_offset`, not both"
                    .to_string(),
            ));
        }
        let tz = h
            .tz
            .as_deref()
            .map(|name| {
                jiff::tz::db().get(name).map_err(|e| {
                    (
                        "allowed_hours.tz".to_string(),
                        format!("`{name}` is not a time zone this system knows ({e}); write an IANA name such as Europe/Berlin or America/New_York"),
                    )
                })
            })
            .transpose()?;
        let offset_min = match h.utc_offset.as_deref() {
            None | Some("Z") => 0,
            Some(o) => {
                let bad = || {
                    (
                        "allowed_hours.utc_offset".to_string(),
                        format!("`{o}` is not a UTC offset: write +01:00 or -05:30 (zone names are not supported)"),
                    )
                };
                let (sign, rest) = match o.as_bytes().first() {
                    Some(b'+') => (1, &o[1..]),
                    Some(b'-') => (-1, &o[1..]),
                    _ => return Err(bad()),
                };
                let (h, m) = rest.split_once(':').ok_or_else(bad)?;
                let (h, m): (i32, i32) =
                    (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
                if h > 14 || m > 59 {
                    return Err(bad());
                }
                sign * (h * 60 + m)
            }
        };
        let mut days = 0u8;
        for d in &h.days {
            let i = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .iter()
                .position(|x| x.eq_ignore_ascii_case(d))
                .ok_or_else(|| {
                    (
                        "allowed_hours.days".to_string(),
                        format!("`{d}` is not a day: use mon, tue, wed, thu, fri, sat, sun"),
                    )
                })?;
            days |= 1 << i;
        }
        if days == 0 {
            days = 0x7f;
        }
        Ok(Hours {
            start,
            end,
            offset_min,
            tz,
            days,
        })
    }

    /// The offset from UTC in minutes at `ms` (the zone's, daylight saving included).
    pub(crate) fn offset_at(&self, ms: i64) -> i32 {
        match (&self.tz, jiff::Timestamp::from_millisecond(ms)) {
            (Some(tz), Ok(ts)) => tz.to_offset(ts).seconds() / 60,
            _ => self.offset_min,
        }
    }

    pub(crate) fn contains(&self, ms: i64) -> bool {
        let (minute, weekday) = local_minute_and_weekday(ms, self.offset_at(ms));
        if self.days & (1 << weekday) == 0 {
            return false;
        }
        if self.start <= self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Test {
    Equals(Lit),
    OneOf(Vec<Lit>),
    Glob(Vec<Glob>),
    Regex(Regex),
    Cidr(Vec<IpNet>),
    Range {
        gt: Option<f64>,
        gte: Option<f64>,
        lt: Option<f64>,
        lte: Option<f64>,
    },
    Exists(bool),
    Contains(String),
    InCatalog(bool),
    WithinHours(bool, Hours),
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub(crate) enum Condition {
    Field {
        path: Path,
        tests: Vec<Test>,
        not: bool,
    },
    Any {
        of: Vec<Condition>,
        not: bool,
    },
}

/// What compiling needs from the rest of the configuration.
pub(crate) struct Env<'a> {
    pub(crate) lists: &'a BTreeMap<String, Vec<String>>,
    pub(crate) hours: Option<&'a Hours>,
}

impl Condition {
    /// The event fields it reads.
    pub(crate) fn paths<'a>(&'a self, out: &mut Vec<&'a Path>) {
        match self {
            Condition::Field { path, .. } => out.push(path),
            Condition::Any { of, .. } => of.iter().for_each(|c| c.paths(out)),
        }
    }

    /// Whether it asks about the session's tool catalog.
    pub(crate) fn uses_catalog(&self) -> bool {
        match self {
            Condition::Field { tests, .. } => tests.iter().any(|t| matches!(t, Test::InCatalog(_))),
            Condition::Any { of, .. } => of.iter().any(Condition::uses_catalog),
        }
    }

    /// Compile `spec`; an error is (key relative to the condition, problem).
    pub(crate) fn compile(
        spec: &ConditionSpec,
        env: &Env<'_>,
    ) -> Result<Condition, (String, String)> {
        if let Some(any) = &spec.any {
            let only_any = spec.field.is_none()
                && spec.equals.is_none()
                && spec.one_of.is_none()
                && spec.glob.is_none()
                && spec.regex.is_none()
                && spec.cidr.is_none()
                && spec.gt.is_none()
                && spec.gte.is_none()
                && spec.lt.is_none()
                && spec.lte.is_none()
                && spec.exists.is_none()
                && spec.contains.is_none()
                && spec.in_list.is_none()
                && spec.in_catalog.is_none()
                && spec.within_hours.is_none();
            if !only_any {
                return Err((
                    "any".into(),
                    "a condition with `any` has only `any` (and `not`): put the field tests inside it".into(),
                ));
            }
            if any.is_empty() {
                return Err(("any".into(), "lists no condition".into()));
            }
            let of = any
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    Condition::compile(c, env).map_err(|(k, p)| (format!("any[{i}].{k}"), p))
                })
                .collect::<Result<_, _>>()?;
            return Ok(Condition::Any { of, not: spec.not });
        }
        let field = spec.field.as_deref().ok_or_else(|| {
            (
                "field".to_string(),
                "missing: name the event field to test (or use `any`)".to_string(),
            )
        })?;
        let path = Path::parse(field).map_err(|p| ("field".to_string(), p))?;
        let mut tests = Vec::new();
        if let Some(v) = &spec.equals {
            tests.push(Test::Equals(
                Lit::from_toml(v).map_err(|p| ("equals".to_string(), p))?,
            ));
        }
        if let Some(vs) = &spec.one_of {
            let lits = vs
                .iter()
                .map(Lit::from_toml)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|p| ("one_of".to_string(), p))?;
            if lits.is_empty() {
                return Err(("one_of".into(), "is empty: nothing could match".into()));
            }
            tests.push(Test::OneOf(lits));
        }
        if let Some(g) = &spec.glob {
            let globs = g.clone().into_vec();
            if globs.is_empty() {
                return Err(("glob".into(), "is empty: nothing could match".into()));
            }
            tests.push(Test::Glob(globs.iter().map(|g| Glob::new(g)).collect()));
        }
        if let Some(name) = &spec.in_list {
            let list = env.lists.get(name).ok_or_else(|| {
                let known: Vec<&str> = env.lists.keys().map(String::as_str).collect();
                (
                    "in_list".to_string(),
                    format!(
                        "no list named `{name}`: define it under [detect.lists] (lists: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
            })?;
            tests.push(Test::Glob(list.iter().map(|g| Glob::new(g)).collect()));
        }
        if let Some(r) = &spec.regex {
            let re = regex::RegexBuilder::new(r)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| ("regex".to_string(), format!("does not compile: {e}")))?;
            tests.push(Test::Regex(re));
        }
        if let Some(c) = &spec.cidr {
            let nets = c
                .clone()
                .into_vec()
                .iter()
                .map(|s| {
                    s.parse::<IpNet>()
                        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| {
                            (
                                "cidr".to_string(),
                                format!("`{s}` is not a CIDR block such as 10.0.0.0/8 or fd00::/8"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            tests.push(Test::Cidr(nets));
        }
        if spec.gt.is_some() || spec.gte.is_some() || spec.lt.is_some() || spec.lte.is_some() {
            tests.push(Test::Range {
                gt: spec.gt,
                gte: spec.gte,
                lt: spec.lt,
                lte: spec.lte,
            });
        }
        if let Some(b) = spec.exists {
            tests.push(Test::Exists(b));
        }
        if let Some(s) = &spec.contains {
            tests.push(Test::Contains(s.clone()));
        }
        if let Some(b) = spec.in_catalog {
            if path != Path::ToolInvoked {
                return Err(("in_catalog".into(), "applies to `tool_invoked` only".into()));
            }
            tests.push(Test::InCatalog(b));
        }
        if let Some(b) = spec.within_hours {
            if path != Path::Time {
                return Err(("within_hours".into(), "applies to `time` only".into()));
            }
            let hours = env.hours.ok_or_else(|| {
                (
                    "within_hours".to_string(),
                    "needs [detect.allowed_hours] (start, end, tz or utc_offset, days)".to_string(),
                )
            })?;
            tests.push(Test::WithinHours(b, hours.clone()));
        }
        if tests.is_empty() {
            return Err((
                "field".into(),
                format!("`{field}` has no test: add equals, one_of, glob, regex, cidr, gt/gte/lt/lte, exists, contains, in_list, in_catalog or within_hours"),
            ));
        }
        Ok(Condition::Field {
            path,
            tests,
            not: spec.not,
        })
    }

    /// Whether `e` meets the condition.
    pub(crate) fn eval(&self, e: &Event, cx: &Context<'_>) -> bool {
        match self {
            Condition::Any { of, not } => of.iter().any(|c| c.eval(e, cx)) != *not,
            Condition::Field { path, tests, not } => {
                let v = path.get(e);
                tests.iter().all(|t| t.eval(v, e, cx)) != *not
            }
        }
    }

    /// The kinds this condition pins the event to, when it is a plain `kind` test.
    pub(crate) fn kinds(&self) -> Option<Vec<String>> {
        let Condition::Field {
            path: Path::Kind,
            tests,
            not: false,
        } = self
        else {
            return None;
        };
        let mut out: Option<Vec<String>> = None;
        for t in tests {
            let these: Vec<String> = match t {
                Test::Equals(Lit::Str(s)) => vec![s.clone()],
                Test::OneOf(ls) => ls
                    .iter()
                    .filter_map(|l| match l {
                        Lit::Str(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect(),
                _ => continue,
            };
            out = Some(match out {
                None => these,
                Some(prev) => prev.into_iter().filter(|k| these.contains(k)).collect(),
            });
        }
        out
    }
}

impl Test {
    fn eval(&self, v: Val<'_>, e: &Event, cx: &Context<'_>) -> bool {
        match self {
            Test::Equals(l) => v.any(&mut |x| l.eq(x)),
            Test::OneOf(ls) => v.any(&mut |x| ls.iter().any(|l| l.eq(x))),
            Test::Glob(gs) => v.any(&mut |x| match x {
                Val::Str(s) => gs.iter().any(|g| g.matches(s)),
                _ => false,
            }),
            Test::Regex(re) => v.any(&mut |x| match x {
                Val::Str(s) => re.is_match(s),
                other => other.text().is_some_and(|t| re.is_match(&t)),
            }),
            Test::Cidr(nets) => v.any(&mut |x| match x {
                Val::Str(s) => parse_ip(s).is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
                _ => false,
            }),
            Test::Range { gt, gte, lt, lte } => v.any(&mut |x| {
                x.num().is_some_and(|n| {
                    gt.is_none_or(|b| n > b)
                        && gte.is_none_or(|b| n >= b)
                        && lt.is_none_or(|b| n < b)
                        && lte.is_none_or(|b| n <= b)
                })
            }),
            Test::Exists(b) => v.exists() == *b,
            Test::Contains(s) => match v {
                Val::Str(x) => x.contains(s.as_str()),
                other => other.any(&mut |x| matches!(x, Val::Str(y) if y == s)),
            },
            Test::InCatalog(b) => (cx.in_catalog)(e).is_some_and(|known| known == *b),
            Test::WithinHours(b, h) => h.contains(cx.ms) == *b,
        }
    }
}

/// An IP address, or the address of `ip:port` / `[ipv6]:port`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// A glob over a whole string: `*` any run (also empty), `?` one character; case-sensitive
/// except that a glob written in lowercase matches host names in any case.
#[derive(Debug, Clone)]
pub(crate) struct Glob {
    pattern: Vec<char>,
    literal: Option<String>,
    fold_case: bool,
}

impl Glob {
    pub(crate) fn new(p: &str) -> Glob {
        let fold_case = !p.chars().any(|c| c.is_uppercase());
        let literal = (!p.contains(['*', '?'])).then(|| p.to_string());
        Glob {
            pattern: p.chars().collect(),
            literal,
            fold_case,
        }
    }

    pub(crate) fn matches(&self, s: &str) -> bool {
        if let Some(l) = &self.literal {
            return if self.fold_case {
                l.eq_ignore_ascii_case(s)
            } else {
                l == s
            };
        }
        let text: Vec<char> = if self.fold_case {
            s.chars().flat_map(char::to_lowercase).collect()
        } else {
            s.chars().collect()
        };
        // Iterative wildcard matching with one backtrack point.
        let (p, t) = (&self.pattern, &text);
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ti));
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcptrail_event::EventKind;

    #[test]
    fn allowed_hours_in_an_iana_zone_follow_daylight_saving() {
        let h = |tz: Option<&str>, off: Option<&str>| {
            Hours::compile(&AllowedHours {
                start: "08:00".into(),
                end: "18:00".into(),
                tz: tz.map(Into::into),
                utc_offset: off.map(Into::into),
                days: vec![],
            })
        };
        let berlin = h(Some("Europe/Berlin"), None).unwrap();
        let ms = |s: &str| crate::clock::parse_event_time(s).unwrap();
        // Winter (CET, +01:00): 07:30 UTC is 08:30 in Berlin; summer (CEST, +02:00): 06:30
        // UTC is 08:30, and 16:30 UTC is 18:30, outside.
        assert!(berlin.contains(ms("2026-01-15T07:30:00Z")));
        assert!(!berlin.contains(ms("2026-01-15T06:30:00Z")));
        assert!(berlin.contains(ms("2026-07-15T06:30:00Z")));
        assert!(!berlin.contains(ms("2026-07-15T16:30:00Z")));
        assert!(berlin.contains(ms("2026-01-15T16:30:00Z")));
        // The day the clocks change (2026-03-29, 02:00 → 03:00 local).
        assert_eq!(berlin.offset_at(ms("2026-03-29T00:59:00Z")), 60);
        assert_eq!(berlin.offset_at(ms("2026-03-29T01:00:00Z")), 120);
        let (k, p) = h(Some("Europe/Berlinn"), None).unwrap_err();
        assert_eq!(k, "allowed_hours.tz");
        assert!(p.contains("`Europe/Berlinn` is not a time zone"), "{p}");
        let (k, p) = h(Some("Europe/Berlin"), Some("+01:00")).unwrap_err();
        assert_eq!(k, "allowed_hours.tz");
        assert!(p.contains("not both"), "{p}");
    }

    fn cond(toml_text: &str) -> Result<Condition, (String, String)> {
        let spec: ConditionSpec = toml::from_str(toml_text).unwrap();
        let mut lists = BTreeMap::new();
        lists.insert(
            "allow".to_string(),
            vec!["*.example.com".to_string(), "api.github.com".to_string()],
        );
        let hours = Hours::compile(&AllowedHours {
            start: "08:00".into(),
            end: "18:00".into(),
            tz: None,
            utc_offset: Some("+01:00".into()),
            days: vec![
                "mon".into(),
                "tue".into(),
                "wed".into(),
                "thu".into(),
                "fri".into(),
            ],
        })
        .unwrap();
        Condition::compile(
            &spec,
            &Env {
                lists: &lists,
                hours: Some(&hours),
            },
        )
    }

    fn holds(c: &str, e: &Event) -> bool {
        let cx = Context {
            ms: crate::clock::parse_event_time(&e.time).unwrap(),
            in_catalog: &|e: &Event| e.tool_invoked.as_deref().map(|t| t != "rogue"),
        };
        cond(c).unwrap().eval(e, &cx)
    }

    fn egress(host: &str) -> Event {
        let mut e = Event::new(EventKind::NetEgress);
        e.time = "2026-11-25T10:00:00Z".into(); // a Wednesday, 11:00 at +01:00
        e.bytes_out = Some(2048);
        e.labels = vec!["secret".into()];
        e.detail = Some(
            serde_json::json!({"host": host, "port": 443, "client": "10.1.2.3:5555", "matched": null}),
        );
        e
    }

    #[test]
    fn each_test() {
        let e = egress("Exfil.Evil.test");
        assert!(holds(
            r#"field = "kind"
equals = "net.egress""#,
            &e
        ));
        assert!(holds(
            r#"field = "detail.port"
one_of = [80, 443]"#,
            &e
        ));
        assert!(
            holds(
                r#"field = "detail.host"
glob = "*.evil.test""#,
                &e
            ),
            "lowercase globs fold case"
        );
        assert!(!holds(
            r#"field = "detail.host"
glob = "*.Good.test""#,
            &e
        ));
        assert!(holds(
            r#"field = "detail.host"
regex = "(?i)^exfil\\.""#,
            &e
        ));
        assert!(
            holds(
                r#"field = "detail.client"
cidr = ["10.0.0.0/8"]"#,
                &e
            ),
            "ip:port is read as its address"
        );
        assert!(!holds(
            r#"field = "detail.client"
cidr = "192.168.0.0/16""#,
            &e
        ));
        assert!(holds(
            r#"field = "bytes_out"
gt = 1024
lte = 2048"#,
            &e
        ));
        assert!(!holds(
            r#"field = "bytes_out"
lt = 1024"#,
            &e
        ));
        assert!(holds(
            r#"field = "labels"
contains = "secret""#,
            &e
        ));
        assert!(holds(
            r#"field = "labels"
one_of = ["pii", "secret"]"#,
            &e
        ));
        assert!(
            holds(
                r#"field = "detail.matched"
exists = false"#,
                &e
            ),
            "null is missing"
        );
        assert!(holds(
            r#"field = "detail.host"
in_list = "allow"
not = true"#,
            &e
        ));
        assert!(holds(
            r#"field = "detail.host"
in_list = "allow""#,
            &egress("API.github.com")
        ));
        assert!(holds(
            r#"field = "time"
within_hours = true"#,
            &e
        ));
        let mut late = egress("x");
        late.time = "2026-11-25T18:30:00Z".into();
        assert!(holds(
            r#"field = "time"
within_hours = false"#,
            &late
        ));
        let mut saturday = egress("x");
        saturday.time = "2026-11-28T10:00:00Z".into();
        assert!(!holds(
            r#"field = "time"
within_hours = true"#,
            &saturday
        ));
        assert!(holds(
            r#"any = [{ field = "detail.host", equals = "nope" }, { field = "detail.port", equals = 443 }]"#,
            &e
        ));
        assert!(!holds(
            r#"not = true
any = [{ field = "detail.port", equals = 443 }]"#,
            &e
        ));
        let mut call = Event::new(EventKind::McpRequest);
        call.tool_invoked = Some("rogue".into());
        assert!(holds(
            r#"field = "tool_invoked"
in_catalog = false"#,
            &call
        ));
        call.tool_invoked = Some("read_file".into());
        assert!(!holds(
            r#"field = "tool_invoked"
in_catalog = false"#,
            &call
        ));
        // Missing fields fail tests, pass under `not`.
        assert!(!holds(
            r#"field = "detail.nothing"
glob = "*""#,
            &e
        ));
        assert!(holds(
            r#"field = "detail.nothing"
glob = "*"
not = true"#,
            &e
        ));
    }

    #[test]
    fn compile_errors_name_the_key() {
        let err = |s: &str| cond(s).unwrap_err();
        assert_eq!(err(r#"field = "detail.host""#).0, "field");
        assert!(err(r#"field = "detail.host""#).1.contains("has no test"));
        assert_eq!(
            err(r#"field = "tool_name"
exists = true"#)
            .0,
            "field"
        );
        let (k, p) = err(r#"field = "detail.host"
regex = "(unclosed""#);
        assert_eq!(k, "regex");
        assert!(p.contains("does not compile"), "{p}");
        assert_eq!(
            err(r#"field = "detail.client"
cidr = "10.0.0.0/33""#)
            .0,
            "cidr"
        );
        let (k, p) = err(r#"field = "detail.host"
in_list = "nope""#);
        assert_eq!(k, "in_list");
        assert!(p.contains("allow"), "{p}");
        assert_eq!(
            err(r#"field = "method"
in_catalog = true"#)
            .0,
            "in_catalog"
        );
        assert_eq!(
            err(r#"any = [{ field = "x.y", exists = true }]"#).0,
            "any[0].field"
        );
    }

    #[test]
    fn globs() {
        let g = |p: &str, s: &str| Glob::new(p).matches(s);
        assert!(g("*", ""));
        assert!(g("a*b*c", "aXXbYYc"));
        assert!(!g("a*b*c", "aXXbYY"));
        assert!(g("?.test", "x.test"));
        assert!(!g("?.test", "xy.test"));
        assert!(g("*.example.com", "a.b.example.com"));
        assert!(!g("*.example.com", "example.com.evil"));
        assert!(g("**a", "a"));
    }
}
