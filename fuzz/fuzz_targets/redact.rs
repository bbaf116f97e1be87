//! Fuzz target `redact`: owns the redactor's text scan and JSON walk on arbitrary input
//! (`Redactor::redact_text` over the bytes, and `redact_value` when they are JSON). Nothing may
//! panic, loop or blow the stack; and every finding of the built-in detectors must be
//! replaced — in free text, every finding of the text; in JSON, every finding of each member
//! name and string value (the raw JSON text is not the unit: a pattern may match across two
//! members' text, which the walk rightly sees as separate strings).
//! Seeds: fuzz/corpus/redact/ (payloads with secrets, nested JSON, non-ASCII text).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcptrail_redact::{RedactConfig, Redactor, TextDetectors, TokenKey};
use serde_json::Value;

fn redactor() -> &'static Redactor {
    static R: OnceLock<Redactor> = OnceLock::new();
    R.get_or_init(|| {
        Redactor::new(&RedactConfig::default(), TokenKey::from_bytes([9; 32])).expect("defaults")
    })
}

fn detectors() -> &'static TextDetectors {
    static D: OnceLock<TextDetectors> = OnceLock::new();
    D.get_or_init(|| TextDetectors::new(&[]))
}

/// Findings long enough to be unambiguous (short ones could reappear by chance next to a
/// replacement) in `text`.
fn findings(text: &str) -> Vec<String> {
    detectors()
        .scan(text)
        .into_iter()
        .map(|f| text[f.start..f.end].to_string())
        .filter(|f| f.len() >= 16)
        .collect()
}

/// Every member name and string of `v`.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.iter().for_each(|(k, x)| {
            out.push(k.clone());
            strings(x, out)
        }),
        _ => {}
    }
}

/// Each finding is replaced: the output holds fewer copies of it than the input (the same
/// characters elsewhere, without the context that made them a finding, may stay).
fn check(found: &[String], before: &str, after: &str) {
    for f in found {
        assert!(
            after.matches(f.as_str()).count() < before.matches(f.as_str()).count(),
            "a finding survived redaction"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let r = redactor();
    let text = String::from_utf8_lossy(data);
    match serde_json::from_str::<Value>(&text) {
        Ok(original) => {
            let mut v = original.clone();
            let _ = r.redact_value(&mut v, "/fuzz", Some("tool"));
            let before = serde_json::to_string(&original).expect("serialises");
            let after = serde_json::to_string(&v).expect("a redacted value serialises");
            let mut all = Vec::new();
            strings(&original, &mut all);
            for s in &all {
                // Compared in their JSON-escaped form, as they appear in the serialised value.
                let found: Vec<String> = findings(s)
                    .iter()
                    .map(|f| {
                        let q = serde_json::to_string(f).expect("serialises");
                        q[1..q.len() - 1].to_string()
                    })
                    .collect();
                check(&found, &before, &after);
            }
        }
        Err(_) => {
            let (out, records) = r.redact_text(&text, "/fuzz");
            assert!(
                out == text || !records.is_empty(),
                "changed without a record"
            );
            // JSON-looking text the redactor parses is covered by the branch above.
            let t = text.trim_start();
            if !(t.starts_with('{') || t.starts_with('[')) {
                check(&findings(&text), &text, &out);
            }
        }
    }
});
