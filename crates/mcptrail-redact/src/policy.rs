//! `[redact]` in `mcptrail.toml`: which detectors run, what each does with what it finds,
//! custom rules (regex, key name, JSON pointer, scoped to tools), and labels per tool or
//! server. Every key is known (an unknown one is an error naming it), and a rule that cannot
//! work — a regex that does not compile or is too large, a rule with nothing to match, an
//! action that does not exist — is an error naming the rule and the field.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::detect::Detector;
use crate::RedactError;

/// What a rule does with what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Replace with `[REDACTED:rule]`.
    Mask,
    /// Replace with `[REDACTED:rule:…last]`, keeping the last `n` characters (cards: 4).
    Partial(usize),
    /// Replace with a keyed pseudonym `[tok:rule:hex]`: the same value gives the same token
    /// under the same key, so events can be joined without showing the value.
    Token,
    /// Remove the member (a whole value) or the text (a span), leaving only the record.
    Drop,
    /// Seal with the data key of the event's subject (see `vault`): readable with the master
    /// key through `mcptrail reveal`, unreadable for good once the subject is forgotten.
    Encrypt,
}

impl Action {
    /// The name recorded in `redactions[].action`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Mask => "mask",
            Action::Partial(_) => "partial_mask",
            Action::Token => "token",
            Action::Drop => "drop",
            Action::Encrypt => "encrypt",
        }
    }

    fn parse(s: &str, keep: Option<usize>, rule: &str) -> Result<Action, RedactError> {
        Ok(match s {
            "mask" => Action::Mask,
            "partial" | "partial_mask" => Action::Partial(keep.unwrap_or(4)),
            "token" | "hash" => Action::Token,
            "drop" => Action::Drop,
            "encrypt" => Action::Encrypt,
            other => {
                return Err(RedactError::Rule {
                    rule: rule.into(),
                    field: "action".into(),
                    message: format!(
                        "unknown action {other:?}; use mask, partial, token, drop or encrypt"
                    ),
                })
            }
        })
    }
}

/// `[redact]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactConfig {
    /// Redact at all (default: yes). Off stores payloads as sent: say why in your records.
    pub enabled: bool,
    /// The key of the pseudonym tokens (32 random bytes; default `<data_dir>/keys/redact.key`,
    /// created 0600 on first use). Taps sharing it give the same value the same token.
    pub token_key_file: Option<PathBuf>,
    /// Replace `user_identity.principal` and `os_user` with tokens (default: yes).
    pub pseudonymise_user: bool,
    /// The master key (64 hex digits) wrapping the per-subject data keys of `encrypt`;
    /// default: `$MCPTRAIL_MASTER_KEY`. Needed only when an action is `encrypt`.
    pub master_key_file: Option<PathBuf>,
    /// Built-in detectors to switch off, by name (`ip_address`, `phone`, …).
    pub disable: Vec<String>,
    /// Action per built-in detector (by name) or per class (`pci`, `pii`, `secret`):
    /// `mask`, `partial`, `token`, `drop` or `encrypt`.
    pub actions: BTreeMap<String, String>,
    /// Custom rules.
    pub rules: Vec<RuleConfig>,
    /// Labels added to every event of a tool or server.
    pub labels: Vec<LabelConfig>,
    /// JSON nested deeper than this (counting JSON inside strings) is replaced, not scanned.
    pub max_depth: usize,
}

impl Default for RedactConfig {
    fn default() -> Self {
        RedactConfig {
            enabled: true,
            token_key_file: None,
            pseudonymise_user: true,
            master_key_file: None,
            disable: Vec::new(),
            actions: BTreeMap::new(),
            rules: Vec::new(),
            labels: Vec::new(),
            max_depth: 32,
        }
    }
}

/// `[[redact.rules]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Its name, recorded in `redactions[].rule`.
    pub name: String,
    /// A regex over text: the match (or its first capture group) is redacted.
    pub regex: Option<String>,
    /// A member name (compared like the built-in key names: case, `_`, `-`, `.` ignored, `*`
    /// and `?` as globs): its whole value is redacted.
    pub key: Option<String>,
    /// A JSON pointer within the event (`/parameters_used/customer/id`): that value is redacted.
    pub pointer: Option<String>,
    /// Only in events of these tools (globs); default: every event.
    #[serde(default)]
    pub tools: Vec<String>,
    /// `mask` (default), `partial`, `token`, `drop` or `encrypt`.
    pub action: Option<String>,
    /// Characters `partial` keeps (default 4).
    pub keep: Option<usize>,
    /// Label added to events where it fires (default `pii`).
    pub label: Option<String>,
}

/// `[[redact.labels]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelConfig {
    /// Tool name glob.
    pub tool: Option<String>,
    /// Server name glob (`serverInfo.name`).
    pub server: Option<String>,
    /// Labels to add.
    pub labels: Vec<String>,
}

/// A custom rule, compiled.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) name: String,
    pub(crate) regex: Option<regex::Regex>,
    pub(crate) key: Option<String>,
    pub(crate) pointer: Option<String>,
    pub(crate) tools: Vec<String>,
    pub(crate) action: Action,
    pub(crate) label: String,
}

/// Largest compiled size of a custom regex: a pattern past it (`(a{100}){100}{100}`) is
/// refused at load rather than slowing every message.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl RuleConfig {
    pub(crate) fn compile(&self) -> Result<Rule, RedactError> {
        let err = |field: &str, message: String| RedactError::Rule {
            rule: self.name.clone(),
            field: field.into(),
            message,
        };
        if self.name.trim().is_empty() {
            return Err(err("name", "a rule needs a name".into()));
        }
        if self.regex.is_none() && self.key.is_none() && self.pointer.is_none() {
            return Err(err(
                "regex",
                "the rule matches nothing: give regex, key or pointer".into(),
            ));
        }
        let regex = match &self.regex {
            None => None,
            Some(p) => {
                let r = regex::RegexBuilder::new(p)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| match e {
                        regex::Error::CompiledTooBig(n) => err(
                            "regex",
                            format!("the pattern compiles to more than {n} bytes: too costly to run on every message; simplify it (bounded repetitions multiply)"),
                        ),
                        other => err("regex", other.to_string()),
                    })?;
                if r.is_match("") {
                    return Err(err(
                        "regex",
                        "the pattern matches the empty string, so it would fire everywhere".into(),
                    ));
                }
                Some(r)
            }
        };
        if let Some(p) = &self.pointer {
            if !p.starts_with('/') {
                return Err(err(
                    "pointer",
                    format!("{p:?} is not a JSON pointer (it starts with `/`, e.g. /parameters_used/customer/id)"),
                ));
            }
        }
        let action = Action::parse(
            self.action.as_deref().unwrap_or("mask"),
            self.keep,
            &self.name,
        )?;
        Ok(Rule {
            name: self.name.clone(),
            regex,
            key: self.key.as_deref().map(crate::detect::normalise_key),
            pointer: self.pointer.clone(),
            tools: self.tools.clone(),
            action,
            label: self.label.clone().unwrap_or_else(|| "pii".into()),
        })
    }
}

/// Default action of a built-in detector.
pub(crate) fn default_action(d: Detector) -> Action {
    match d {
        Detector::Card => Action::Partial(4),
        Detector::Email | Detector::Phone | Detector::IpAddress | Detector::Iban => Action::Token,
        _ => Action::Mask,
    }
}

impl RedactConfig {
    /// The action of each built-in detector, with the configured overrides.
    pub(crate) fn detector_actions(&self) -> Result<BTreeMap<Detector, Action>, RedactError> {
        let mut out: BTreeMap<Detector, Action> = Detector::ALL
            .into_iter()
            .map(|d| (d, default_action(d)))
            .collect();
        // Classes first, then single detectors, so `pii = "mask"` + `email = "token"` works.
        let mut entries: Vec<(&String, &String)> = self.actions.iter().collect();
        entries.sort_by_key(|(k, _)| Detector::from_name(k).is_some());
        for (k, v) in entries {
            let action = Action::parse(v, None, k)?;
            match (Detector::from_name(k), k.as_str()) {
                (Some(d), _) => {
                    out.insert(d, action);
                }
                (None, class @ ("pci" | "pii" | "secret")) => {
                    for d in Detector::ALL {
                        if d.class().label() == class {
                            out.insert(d, action);
                        }
                    }
                }
                (None, other) => {
                    return Err(RedactError::Rule {
                        rule: other.into(),
                        field: "actions".into(),
                        message: format!("no built-in detector or class named {other:?}; detectors: {}; classes: pci, pii, secret", names()),
                    })
                }
            }
        }
        Ok(out)
    }

    /// Whether any rule or detector encrypts (then the master key is needed).
    pub fn uses_encryption(&self) -> bool {
        self.actions.values().any(|a| a == "encrypt")
            || self
                .rules
                .iter()
                .any(|r| r.action.as_deref() == Some("encrypt"))
    }

    /// The detectors switched off.
    pub(crate) fn disabled(&self) -> Result<Vec<Detector>, RedactError> {
        self.disable
            .iter()
            .map(|n| {
                Detector::from_name(n).ok_or_else(|| RedactError::Rule {
                    rule: n.clone(),
                    field: "disable".into(),
                    message: format!("no built-in detector named {n:?}; detectors: {}", names()),
                })
            })
            .collect()
    }
}

fn names() -> String {
    Detector::ALL.map(Detector::name).join(", ")
}

/// `*` and `?` globs over a whole name.
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> Result<Rule, RedactError> {
        let c: RuleConfig = toml::from_str(toml_text).unwrap();
        c.compile()
    }

    #[test]
    fn bad_rules_are_named() {
        let e = rule("name = \"x\"\nregex = \"(\"").unwrap_err().to_string();
        assert!(e.contains("rule \"x\"") && e.contains("regex"), "{e}");
        let e = rule("name = \"big\"\nregex = \"(?:a{100}){100}{100}\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("too costly"), "{e}");
        let e = rule("name = \"empty\"\nregex = \"a*\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty string"), "{e}");
        let e = rule("name = \"n\"").unwrap_err().to_string();
        assert!(e.contains("matches nothing"), "{e}");
        let e = rule("name = \"p\"\npointer = \"a/b\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("JSON pointer"), "{e}");
        let e = rule("name = \"e\"\nkey = \"k\"\naction = \"scramble\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown action") && e.contains("encrypt"), "{e}");
        let e = rule("name = \"lookaround\"\nregex = \"(?=x)y\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lookaround") || e.contains("look-around"), "{e}");
    }

    #[test]
    fn actions_by_class_then_detector() {
        let c: RedactConfig =
            toml::from_str("[actions]\npii = \"mask\"\nemail = \"drop\"\n").unwrap();
        let a = c.detector_actions().unwrap();
        assert_eq!(a[&Detector::Phone], Action::Mask);
        assert_eq!(a[&Detector::Email], Action::Drop);
        assert_eq!(a[&Detector::Card], Action::Partial(4));
        let c: RedactConfig = toml::from_str("[actions]\nemial = \"mask\"\n").unwrap();
        assert!(c
            .detector_actions()
            .unwrap_err()
            .to_string()
            .contains("emial"));
    }

    #[test]
    fn globs() {
        assert!(glob("crm_*", "crm_lookup"));
        assert!(glob("get-?", "get-x"));
        assert!(!glob("crm_*", "hr_lookup"));
        assert!(glob("*", ""));
    }
}
