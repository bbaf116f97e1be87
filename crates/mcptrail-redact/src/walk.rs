//! The redaction engine: walks an event's payload fields, applies the key-name rules to
//! members, the text detectors and custom regexes to strings (and to JSON nested inside
//! strings, structurally), replaces what it finds, and records each redaction and label.

use std::collections::BTreeMap;

use aho_corasick::AhoCorasick;
use mcptrail_event::{Event, Redaction};
use serde_json::{Map, Value};

use crate::detect::{high_entropy, hint_key, normalise_key, secret_key, Detector, TextDetectors};
use crate::policy::{glob, Action, LabelConfig, RedactConfig, Rule};
use crate::{RedactError, TokenKey, Vault};

/// Fragments at least one of which every member name a key rule fires on contains, as
/// written (before `_`, `-`, `.` are removed): `tests::key_fragments_cover_the_key_rules`.
const KEY_FRAGMENTS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "auth",
    "cookie",
    "key",
    "cred",
    "jwt",
    "otp",
    "cvv",
    "cvc",
    "pin",
    "ssn",
    "dsn",
    "sig",
    "cert",
    "session",
    "connection",
];

/// A configured redactor; cheap to share between threads (`Arc`) and to clone.
#[derive(Debug, Clone)]
pub struct Redactor {
    text: TextDetectors,
    actions: BTreeMap<Detector, Action>,
    disabled: Vec<Detector>,
    rules: Vec<Rule>,
    labels: Vec<LabelConfig>,
    key: TokenKey,
    vault: Option<Vault>,
    encrypts: bool,
    /// Fragments every secret-looking member name contains (case-insensitive).
    key_fragments: AhoCorasick,
    pseudonymise_user: bool,
    max_depth: usize,
}

/// Where the walk is, and what it found so far.
struct Walk<'a> {
    tool: Option<&'a str>,
    /// For `encrypt`: the event and the subject token the value is sealed for.
    event_id: &'a str,
    subject: &'a str,
    path: String,
    depth: usize,
    redactions: Vec<Redaction>,
    labels: Vec<String>,
}

impl Walk<'_> {
    fn record(&mut self, rule: &str, action: Action, label: &str) {
        let r = Redaction {
            rule: rule.to_string(),
            path: self.path.clone(),
            action: action.name().to_string(),
        };
        if !self.redactions.contains(&r) {
            self.redactions.push(r);
        }
        if !label.is_empty() && !self.labels.iter().any(|l| l == label) {
            self.labels.push(label.to_string());
        }
    }
    fn push(&mut self, segment: &str) -> usize {
        let len = self.path.len();
        self.path.push('/');
        for c in segment.chars() {
            match c {
                '~' => self.path.push_str("~0"),
                '/' => self.path.push_str("~1"),
                c => self.path.push(c),
            }
        }
        len
    }
}

/// What became of a value.
enum Outcome {
    Keep,
    Remove,
}

/// Which rule fired, for replacement text and records.
#[derive(Clone, Copy)]
enum Fired<'r> {
    Builtin(Detector),
    Custom(&'r Rule),
}

impl Fired<'_> {
    fn name(&self) -> &str {
        match self {
            Fired::Builtin(d) => d.name(),
            Fired::Custom(r) => &r.name,
        }
    }
    fn label(&self) -> &str {
        match self {
            Fired::Builtin(d) => d.class().label(),
            Fired::Custom(r) => &r.label,
        }
    }
}

impl Redactor {
    /// A redactor for `cfg`, with `key` for pseudonyms.
    pub fn new(cfg: &RedactConfig, key: TokenKey) -> Result<Redactor, RedactError> {
        let disabled = cfg.disabled()?;
        let actions = cfg.detector_actions()?;
        let encrypts = cfg.uses_encryption();
        Ok(Redactor {
            text: TextDetectors::new(&disabled),
            actions,
            disabled,
            rules: cfg
                .rules
                .iter()
                .map(|r| r.compile())
                .collect::<Result<_, _>>()?,
            labels: cfg.labels.clone(),
            key,
            vault: None,
            encrypts,
            key_fragments: AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(KEY_FRAGMENTS)
                .expect("fixed patterns"),
            pseudonymise_user: cfg.pseudonymise_user,
            max_depth: cfg.max_depth.max(1),
        })
    }

    /// Seal `encrypt` values in `vault`. Without one, a rule that says `encrypt` masks instead
    /// (and the binary refuses to start such a configuration without the master key).
    pub fn with_vault(mut self, vault: Vault) -> Redactor {
        self.vault = Some(vault);
        self
    }

    /// Whether some rule encrypts (so a vault is needed).
    pub fn encrypts(&self) -> bool {
        self.encrypts
    }

    /// The same rules under another pseudonym key (compiled patterns are shared).
    pub fn with_key(&self, key: TokenKey) -> Redactor {
        Redactor {
            key,
            ..self.clone()
        }
    }

    /// The pseudonym the redactor gives `value` under `rule` (for queries: `log --user`).
    pub fn token_of(&self, rule: &str, value: &str) -> String {
        self.key.pseudonym(rule, value)
    }

    /// Redact an event in place: its payload fields, the server command line, and (by
    /// default) the user identity; record what was done and add the labels.
    pub fn redact_event(&self, e: &mut Event) {
        let tool = e.tool_invoked.clone();
        let event_id = e.event_id.clone();
        // The subject whose key seals `encrypt` values: the user the agent acts for (taken
        // before the principal is pseudonymised; a principal already a token is its own name).
        let subject = Vault::subject_token(
            &self.key,
            e.user_identity
                .as_ref()
                .map_or("", |u| u.principal.as_str()),
        );
        let mut w = Walk {
            tool: tool.as_deref(),
            event_id: &event_id,
            subject: &subject,
            path: String::new(),
            depth: 0,
            redactions: Vec::new(),
            labels: Vec::new(),
        };
        if let Some(v) = e.parameters_used.as_mut() {
            let at = w.push("parameters_used");
            if let Outcome::Remove = self.value(v, &mut w) {
                e.parameters_used = None;
            }
            w.path.truncate(at);
        }
        self.field(&mut e.resource_uri, "/resource_uri", &mut w);
        if let Some(s) = e.response_summary.as_mut() {
            self.field(&mut s.preview, "/response_summary/preview", &mut w);
            self.field(
                &mut s.error_message,
                "/response_summary/error_message",
                &mut w,
            );
        }
        if let Some(m) = e.malformed.as_mut() {
            self.field(&mut m.preview, "/malformed/preview", &mut w);
            self.field(&mut m.error, "/malformed/error", &mut w);
        }
        if let Some(v) = e.detail.as_mut() {
            let at = w.push("detail");
            if let Outcome::Remove = self.value(v, &mut w) {
                e.detail = None;
            }
            w.path.truncate(at);
        }
        if let Some(server) = e.server.as_mut() {
            self.command_line(&mut server.command, &mut w);
        }
        if let Some(http) = e.http.as_mut() {
            self.field(&mut http.client_address, "/http/client_address", &mut w);
        }
        if let Some(claims) = e.user_identity.as_mut().and_then(|u| u.claims.as_mut()) {
            w.path = "/user_identity/claims".into();
            if let Outcome::Remove = self.value(claims, &mut w) {
                if let Some(u) = e.user_identity.as_mut() {
                    u.claims = None;
                }
            }
            w.path.clear();
        }
        if self.pseudonymise_user {
            if let Some(u) = e.user_identity.as_mut() {
                for s in [Some(&mut u.principal), u.os_user.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    if !s.starts_with("[tok:") {
                        *s = self.token_of("user", s);
                    }
                }
                // No label: labels are about payloads, and a pseudonym is not personal data
                // to whoever lacks the key.
                w.path = "/user_identity".into();
                w.record("pseudonymise_user", Action::Token, "");
                w.path.clear();
            }
        }
        let server = e.server.as_ref().and_then(|s| s.name.as_deref());
        for l in &self.labels {
            let tool_ok = l
                .tool
                .as_deref()
                .is_none_or(|g| tool.as_deref().is_some_and(|t| glob(g, t)));
            let server_ok = l
                .server
                .as_deref()
                .is_none_or(|g| server.is_some_and(|s| glob(g, s)));
            if tool_ok && server_ok && (l.tool.is_some() || l.server.is_some()) {
                w.labels.extend(l.labels.iter().cloned());
            }
        }
        e.redactions.extend(w.redactions);
        e.labels.extend(w.labels);
        e.labels.sort();
        e.labels.dedup();
    }

    /// Redact a JSON value at an arbitrary path prefix (for tests and other callers): returns
    /// the redactions and labels.
    pub fn redact_value(
        &self,
        v: &mut Value,
        path: &str,
        tool: Option<&str>,
    ) -> (Vec<Redaction>, Vec<String>) {
        let mut w = Walk {
            tool,
            event_id: "",
            subject: "",
            path: path.to_string(),
            depth: 0,
            redactions: Vec::new(),
            labels: Vec::new(),
        };
        if let Outcome::Remove = self.value(v, &mut w) {
            *v = Value::Null;
        }
        (w.redactions, w.labels)
    }

    /// Redact free text: returns the text with every finding replaced, and the redactions.
    pub fn redact_text(&self, text: &str, path: &str) -> (String, Vec<Redaction>) {
        let mut w = Walk {
            tool: None,
            event_id: "",
            subject: "",
            path: path.to_string(),
            depth: 0,
            redactions: Vec::new(),
            labels: Vec::new(),
        };
        let out = self
            .string(text, &mut w)
            .unwrap_or_else(|| text.to_string());
        (out, w.redactions)
    }

    fn field(&self, f: &mut Option<String>, path: &str, w: &mut Walk<'_>) {
        if let Some(s) = f.as_ref() {
            w.path = path.to_string();
            if let Some(new) = self.string(s, w) {
                *f = Some(new);
            }
            w.path.clear();
        }
    }

    /// `--token X`, `--api-key=X`, and secrets anywhere in the arguments.
    fn command_line(&self, args: &mut [String], w: &mut Walk<'_>) {
        let mut secret_next = false;
        for i in 0..args.len() {
            w.path = format!("/server/command/{i}");
            if secret_next {
                secret_next = false;
                if !args[i].starts_with('-') {
                    let d = Detector::SecretKeyName;
                    if let Some(r) = self.whole(&args[i], Fired::Builtin(d), self.actions[&d], w) {
                        args[i] = r;
                    }
                    continue;
                }
            }
            if let Some(flag) = args[i].strip_prefix('-') {
                let flag = flag.trim_start_matches('-');
                match flag.split_once('=') {
                    Some((name, value)) if self.secret_name(name) => {
                        let d = Detector::SecretKeyName;
                        if let Some(r) = self.whole(value, Fired::Builtin(d), self.actions[&d], w) {
                            args[i] =
                                format!("{}={r}", &args[i][..args[i].len() - value.len() - 1]);
                        }
                        continue;
                    }
                    None if self.secret_name(flag) => {
                        secret_next = true;
                        continue;
                    }
                    _ => {}
                }
            }
            if let Some(new) = self.string(&args[i], w) {
                args[i] = new;
            }
        }
        w.path.clear();
    }

    fn secret_name(&self, name: &str) -> bool {
        self.secret_norm(&normalise_key(name))
    }

    fn secret_norm(&self, normalised: &str) -> bool {
        !self.disabled.contains(&Detector::SecretKeyName) && secret_key(normalised)
    }

    fn rule_applies(&self, r: &Rule, w: &Walk<'_>) -> bool {
        r.tools.is_empty() || w.tool.is_some_and(|t| r.tools.iter().any(|g| glob(g, t)))
    }

    fn value(&self, v: &mut Value, w: &mut Walk<'_>) -> Outcome {
        // A pointer rule names this exact value.
        if let Some(r) = self
            .rules
            .iter()
            .find(|r| r.pointer.as_deref() == Some(w.path.as_str()) && self.rule_applies(r, w))
        {
            return self.replace_whole(v, Fired::Custom(r), r.action, w);
        }
        if w.depth >= self.max_depth {
            *v = Value::String("[REDACTED:depth_limit]".into());
            w.record("depth_limit", Action::Mask, "secret");
            return Outcome::Keep;
        }
        match v {
            Value::Object(m) => {
                w.depth += 1;
                self.object(m, w);
                w.depth -= 1;
                Outcome::Keep
            }
            Value::Array(a) => {
                w.depth += 1;
                for (i, x) in a.iter_mut().enumerate() {
                    let at = w.push(&i.to_string());
                    if let Outcome::Remove = self.value(x, w) {
                        *x = Value::Null;
                    }
                    w.path.truncate(at);
                }
                w.depth -= 1;
                Outcome::Keep
            }
            Value::String(s) => {
                if let Some(new) = self.string(s, w) {
                    *s = new;
                }
                Outcome::Keep
            }
            Value::Number(n) => {
                // A card or phone number sent as a JSON number (small ones cannot be either).
                if n.as_i64().is_some_and(|x| x.unsigned_abs() < 100_000_000) {
                    return Outcome::Keep;
                }
                let text = n.to_string();
                if text.len() >= 9 {
                    if let Some(new) = self.string(&text, w) {
                        *v = Value::String(new);
                    }
                }
                Outcome::Keep
            }
            Value::Bool(_) | Value::Null => Outcome::Keep,
        }
    }

    fn object(&self, m: &mut Map<String, Value>, w: &mut Walk<'_>) {
        // Member names hold data too (a map keyed by e-mail address, a key that is a token):
        // they are scanned as text and renamed, before any path that names them is recorded.
        let mut renames = Vec::new();
        for k in m.keys() {
            let at = w.push("{key}");
            if let Some(new) = self.text_spans(k, w) {
                renames.push((k.clone(), new));
            }
            w.path.truncate(at);
        }
        for (old, mut new) in renames {
            if let Some(v) = m.remove(&old) {
                // Two names masked alike must not overwrite each other.
                let mut n = 1;
                while m.contains_key(&new) {
                    n += 1;
                    new = format!("{new}#{n}");
                }
                m.insert(new, v);
            }
        }
        let mut remove = Vec::new();
        for (k, v) in m.iter_mut() {
            let at = w.push(k);
            let norm = normalise_key(k);
            let custom = self.rules.iter().find(|r| {
                r.key.as_deref().is_some_and(|g| glob(g, &norm)) && self.rule_applies(r, w)
            });
            let outcome = if let Some(r) = custom {
                self.replace_whole(v, Fired::Custom(r), r.action, w)
            } else if self.secret_norm(&norm) && !matches!(v, Value::Null | Value::Bool(_)) {
                let d = Detector::SecretKeyName;
                self.replace_whole(v, Fired::Builtin(d), self.actions[&d], w)
            } else if v.as_str().is_some_and(|s| s.len() >= 16)
                && !self.disabled.contains(&Detector::HighEntropySecret)
                && hint_key(&norm)
                && v.as_str().is_some_and(high_entropy)
            {
                let d = Detector::HighEntropySecret;
                self.replace_whole(v, Fired::Builtin(d), self.actions[&d], w)
            } else {
                self.value(v, w)
            };
            if let Outcome::Remove = outcome {
                remove.push(k.clone());
            }
            w.path.truncate(at);
        }
        for k in remove {
            m.remove(&k);
        }
    }

    /// Replace a whole member value found by a key or pointer rule.
    fn replace_whole(
        &self,
        v: &mut Value,
        fired: Fired<'_>,
        action: Action,
        w: &mut Walk<'_>,
    ) -> Outcome {
        if action == Action::Drop {
            w.record(fired.name(), action, fired.label());
            return Outcome::Remove;
        }
        let text = match &*v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Null | Value::Bool(_) => return Outcome::Keep,
            // A structure under a secret name (`"credentials": {"user": …, "password": …}`):
            // its shape stays readable, every scalar in it is replaced.
            Value::Object(_) | Value::Array(_) => {
                self.every_scalar(v, fired, action, w);
                return Outcome::Keep;
            }
        };
        if let Some(r) = self.whole(&text, fired, action, w) {
            *v = Value::String(r);
        }
        Outcome::Keep
    }

    fn every_scalar(&self, v: &mut Value, fired: Fired<'_>, action: Action, w: &mut Walk<'_>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    let at = w.push(k);
                    self.every_scalar(x, fired, action, w);
                    w.path.truncate(at);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter_mut().enumerate() {
                    let at = w.push(&i.to_string());
                    self.every_scalar(x, fired, action, w);
                    w.path.truncate(at);
                }
            }
            Value::String(_) | Value::Number(_) => {
                // Drop inside a structure empties the scalar (the member names stay).
                let action = if action == Action::Drop {
                    Action::Mask
                } else {
                    action
                };
                let text = match &*v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if let Some(r) = self.whole(&text, fired, action, w) {
                    *v = Value::String(r);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    /// The replacement of a whole value (recorded), or `None` when it is already one.
    fn whole(
        &self,
        text: &str,
        fired: Fired<'_>,
        action: Action,
        w: &mut Walk<'_>,
    ) -> Option<String> {
        if is_replacement(text) {
            return None;
        }
        let (out, done) = self.replacement(text, fired.name(), action, w);
        w.record(fired.name(), done, fired.label());
        Some(out)
    }

    /// The replacement text, and the action actually taken: sealing that fails (no vault,
    /// a key file that cannot be written) masks instead — a value is never left in clear.
    fn replacement(
        &self,
        value: &str,
        rule: &str,
        action: Action,
        w: &Walk<'_>,
    ) -> (String, Action) {
        if action == Action::Encrypt {
            if let Some(v) = &self.vault {
                if let Ok(sealed) = v.seal(rule, w.subject, w.event_id, &w.path, value) {
                    return (sealed, Action::Encrypt);
                }
            }
            return (format!("[REDACTED:{rule}]"), Action::Mask);
        }
        let text = match action {
            Action::Mask => format!("[REDACTED:{rule}]"),
            Action::Partial(n) => {
                let norm = crate::token::normalise_value(rule, value);
                let chars: Vec<char> = norm.chars().collect();
                // Never keep more than a quarter of the value.
                let keep = n.min(chars.len() / 4);
                let tail: String = chars[chars.len() - keep..].iter().collect();
                format!("[REDACTED:{rule}:…{tail}]")
            }
            Action::Token => self.token_of(rule, value),
            Action::Drop | Action::Encrypt => String::new(),
        };
        (text, action)
    }

    /// Redact a string: nested JSON structurally, else as text. `None`: unchanged.
    fn string(&self, s: &str, w: &mut Walk<'_>) -> Option<String> {
        let trimmed = s.trim_start();
        if (trimmed.starts_with('{') || trimmed.starts_with('['))
            && s.len() >= 2
            && self.worth_parsing(s)
        {
            if let Ok(mut nested) = serde_json::from_str::<Value>(s) {
                if nested.is_object() || nested.is_array() {
                    let before = w.redactions.len();
                    let at = w.push("{json}");
                    w.depth += 1;
                    let out = self.value(&mut nested, w);
                    w.depth -= 1;
                    w.path.truncate(at);
                    if w.redactions.len() == before {
                        // Nothing found in the parsed structure — but a parse keeps only the
                        // last of duplicate member names, so the raw text is scanned too: a
                        // secret in a shadowed member must not pass unseen.
                        return self.text_spans(s, w);
                    }
                    // Written back from the walked structure (shadowed duplicates are gone).
                    return Some(match out {
                        Outcome::Keep => nested.to_string(),
                        Outcome::Remove => String::new(),
                    });
                }
            }
        }
        self.text_spans(s, w)
    }

    /// Whether JSON held in a string could hold anything to redact, decided on its raw text:
    /// a detector finds something in it, or it names a member a key rule could fire on, or a
    /// custom key or pointer rule exists. Most strings fail this and are not parsed.
    fn worth_parsing(&self, raw: &str) -> bool {
        self.rules.iter().any(|r| {
            r.key.is_some()
                || r.pointer.is_some()
                || r.regex.as_ref().is_some_and(|re| re.is_match(raw))
        }) || self.key_fragments.is_match(raw)
            || !self.text.scan(raw).is_empty()
    }

    fn text_spans(&self, s: &str, w: &mut Walk<'_>) -> Option<String> {
        let mut spans: Vec<(usize, usize, Fired<'_>)> = self
            .text
            .scan(s)
            .into_iter()
            .map(|f| (f.start, f.end, Fired::Builtin(f.detector)))
            .collect();
        for r in &self.rules {
            if let (Some(re), true) = (&r.regex, self.rule_applies(r, w)) {
                for c in re.captures_iter(s) {
                    let m = c.get(1).or_else(|| c.get(0)).expect("match");
                    if !m.is_empty() {
                        spans.push((m.start(), m.end(), Fired::Custom(r)));
                    }
                }
            }
        }
        if spans.is_empty() {
            return None;
        }
        spans.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut out = String::with_capacity(s.len());
        let mut pos = 0;
        let mut changed = false;
        for (start, end, fired) in spans {
            if start < pos {
                continue; // overlaps a span already replaced
            }
            let value = &s[start..end];
            if is_replacement(value) {
                continue;
            }
            let action = match fired {
                Fired::Builtin(d) => self.actions[&d],
                Fired::Custom(r) => r.action,
            };
            out.push_str(&s[pos..start]);
            let (text, done) = self.replacement(value, fired.name(), action, w);
            out.push_str(&text);
            w.record(fired.name(), done, fired.label());
            pos = end;
            changed = true;
        }
        if !changed {
            return None;
        }
        out.push_str(&s[pos..]);
        Some(out)
    }
}

/// Replacement text the redactor wrote (redacting twice changes nothing).
fn is_replacement(s: &str) -> bool {
    (s.starts_with("[REDACTED:") || s.starts_with("[tok:") || s.starts_with("[enc:"))
        && s.ends_with(']')
        && !s[1..].contains('[')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_are_redacted_and_never_reach_a_path() {
        // Found by the fuzzer: a token as a member name, and its path in the record.
        let r = Redactor::new(&RedactConfig::default(), TokenKey::from_bytes([1; 32])).unwrap();
        let mut v = serde_json::json!({
            "jane@example.org": {"password": "x1y2z3w4"},
            "bob@example.org": 1,
        });
        let (recs, _) = r.redact_value(&mut v, "/p", None);
        let text = format!("{v} {recs:?}");
        assert!(
            !text.contains("jane@") && !text.contains("bob@") && !text.contains("x1y2z3w4"),
            "{text}"
        );
        assert_eq!(v.as_object().unwrap().len(), 2);
        assert!(recs
            .iter()
            .any(|r| r.rule == "email" && r.path == "/p/{key}"));
    }

    #[test]
    fn a_secret_in_a_shadowed_duplicate_member_is_still_found() {
        // Found by the fuzzer: a parse keeps the last `nested`, the first held the secret.
        let r = Redactor::new(&RedactConfig::default(), TokenKey::from_bytes([1; 32])).unwrap();
        let text = r#"{"nested":"DB_PASSWORD=hunter2x","nested":"plain"}"#;
        let (out, recs) = r.redact_text(text, "/p");
        assert!(!out.contains("hunter2x"), "{out}");
        assert_eq!(recs.len(), 1);
    }

    #[test]
    fn a_structure_under_a_secret_name_keeps_its_shape() {
        let r = Redactor::new(&RedactConfig::default(), TokenKey::from_bytes([1; 32])).unwrap();
        let mut v = serde_json::json!({"credentials": {"user": "bob", "tries": 123456789, "ok": true, "list": ["a1b2c3d4"]}});
        let (recs, labels) = r.redact_value(&mut v, "/p", None);
        assert_eq!(
            v,
            serde_json::json!({"credentials": {"user": "[REDACTED:secret_key_name]", "tries": "[REDACTED:secret_key_name]", "ok": true, "list": ["[REDACTED:secret_key_name]"]}})
        );
        assert_eq!(recs.len(), 3);
        assert!(recs.iter().any(|r| r.path == "/p/credentials/user"));
        assert_eq!(labels, ["secret"]);
    }

    #[test]
    fn key_fragments_cover_the_key_rules() {
        // Every name the built-in key rules know, in the spellings clients use.
        for name in [
            "password",
            "db_password",
            "passwd",
            "pwd",
            "passphrase",
            "secret",
            "client_secret",
            "token",
            "access_token",
            "refresh_token",
            "id_token",
            "authToken",
            "session_token",
            "Authorization",
            "Proxy-Authorization",
            "cookie",
            "Set-Cookie",
            "api_key",
            "x-api-key",
            "apiKey",
            "private_key",
            "secret_key",
            "access_key",
            "AWS_SECRET_ACCESS_KEY",
            "credentials",
            "credential",
            "jwt",
            "otp",
            "totp",
            "cvv",
            "cvc",
            "cvv2",
            "pin",
            "ssn",
            "connection_string",
            "dsn",
            "signature",
            "X-Auth-Token",
            "X-Amz-Security-Token",
            "webhook_secret",
            "signing_key",
            "encryption_key",
            "github_token",
            "my.passphrase",
            "sessionId",
            "client_cert",
        ] {
            let covered = KEY_FRAGMENTS
                .iter()
                .any(|f| name.to_ascii_lowercase().contains(f));
            assert!(covered, "{name}");
            let norm = normalise_key(name);
            assert!(
                secret_key(&norm) || hint_key(&norm),
                "{name} is not a key-rule name"
            );
        }
    }
}
