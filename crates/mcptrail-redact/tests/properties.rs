//! Properties of redaction over generated inputs: a secret planted anywhere in an event's
//! payload — any detector's kind, in any JSON shape, nested JSON inside strings, under any key,
//! next to non-ASCII text — never appears in the serialised event; tokens are stable under one
//! key and differ under another; hostile shapes (deep nesting, huge strings, invalid UTF-8
//! made lossy) neither crash nor leak.

use mcptrail_event::{Event, EventKind, ResponseSummary, Status};
use mcptrail_redact::{RedactConfig, Redactor, TokenKey};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Compiling the detectors takes a while in a debug build: once, then the same detectors
/// under each key.
fn redactor(key: [u8; 32]) -> Redactor {
    static BASE: std::sync::OnceLock<Redactor> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        Redactor::new(&RedactConfig::default(), TokenKey::from_bytes([0; 32])).unwrap()
    })
    .with_key(TokenKey::from_bytes(key))
}

/// Luhn check digit for `body`.
fn luhn_complete(body: &str) -> String {
    let digits: Vec<u32> = body.bytes().map(|b| u32::from(b - b'0')).collect();
    let mut sum = 0;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = d;
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    format!("{body}{}", (10 - sum % 10) % 10)
}

fn alnum(n: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![b'a'..=b'z', b'A'..=b'Z', b'0'..=b'9'], n)
        .prop_map(|v| String::from_utf8(v).unwrap())
}

/// A secret of some detected kind: (the secret bytes that must not be stored).
fn secret() -> impl Strategy<Value = String> {
    prop_oneof![
        // Visa / Mastercard with a valid Luhn digit.
        "[0-9]{14}".prop_map(|d| luhn_complete(&format!("4{d}"))),
        "[0-9]{13}".prop_map(|d| luhn_complete(&format!("51{d}"))),
        ("[a-z]{3,10}", "[a-z]{3,8}").prop_map(|(u, d)| format!("{u}.x@{d}.example.com")),
        alnum(36).prop_map(|s| format!("ghp_{s}")),
        alnum(32).prop_map(|s| format!("sk_live_{s}")),
        "[A-Z2-7]{16}".prop_map(|s| format!("AKIA{s}")),
        alnum(35).prop_map(|s| format!("AIza{s}")),
        alnum(48).prop_map(|s| format!("sk-proj-{s}Aa1")),
        alnum(90).prop_map(|s| format!("sk-ant-api03-{s}")),
        alnum(40).prop_map(|s| format!("xoxb-1234567890-{s}")),
        // A valid SSN: group not 00, serial not 0000.
        "[0-9][1-9]-[1-9][0-9]{3}".prop_map(|s| format!("123-{s}")),
    ]
}

/// Where the secret goes in the payload.
#[derive(Debug, Clone)]
enum Shape {
    Value,
    Sentence,
    UnderSecretKey,
    NestedJsonString,
    DeepArray(usize),
    NonAscii,
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Value),
        Just(Shape::Sentence),
        Just(Shape::UnderSecretKey),
        Just(Shape::NestedJsonString),
        (1usize..20).prop_map(Shape::DeepArray),
        Just(Shape::NonAscii),
    ]
}

fn plant(secret: &str, shape: &Shape, key: &str) -> Value {
    match shape {
        Shape::Value => json!({ key: secret }),
        Shape::Sentence => json!({ key: format!("please use {secret} for the deploy") }),
        Shape::UnderSecretKey => json!({ "auth": { "client_secret": secret } }),
        Shape::NestedJsonString => {
            json!({ key: json!({"inner": [1, {"v": format!("x {secret} y")}]}).to_string() })
        }
        Shape::DeepArray(n) => {
            let mut v = json!(secret);
            for _ in 0..*n {
                v = json!([v]);
            }
            json!({ key: v })
        }
        Shape::NonAscii => json!({ key: format!("Zoë's café ☕ {secret} — 東京") }),
    }
}

fn event_with(args: Value, preview: String) -> Event {
    let mut e = Event::new(EventKind::McpResponse);
    e.tool_invoked = Some("t".into());
    e.parameters_used = Some(args);
    e.response_summary = Some(ResponseSummary {
        status: Status::Ok,
        is_error: false,
        error_code: None,
        error_message: None,
        size: 1,
        sha256: None,
        preview: Some(preview),
        content_types: Vec::new(),
    });
    e
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_planted_secret_is_never_stored(
        s in secret(),
        sh in shape(),
        key in "[a-z_]{1,12}",
        text_shape in shape(),
    ) {
        let r = redactor([1; 32]);
        let args = plant(&s, &sh, &key);
        let preview = plant(&s, &text_shape, "result").to_string();
        let mut e = event_with(args, preview);
        r.redact_event(&mut e);
        let stored = serde_json::to_string(&e).unwrap();
        prop_assert!(!stored.contains(&s), "{} stored in {}", s, stored);
        prop_assert!(!e.redactions.is_empty());
        // Redacting again changes nothing: replacements are recognised.
        let before = stored.clone();
        r.redact_event(&mut e);
        let again = serde_json::to_string(&e).unwrap();
        prop_assert_eq!(before.len(), again.len());
    }

    #[test]
    fn tokens_are_stable_under_one_key_and_differ_under_another(
        user in "[a-z]{2,10}",
        domain in "[a-z]{2,10}",
        k1 in any::<[u8; 32]>(),
        k2 in any::<[u8; 32]>(),
    ) {
        prop_assume!(k1 != k2);
        let email = format!("{user}@{domain}.example.net");
        let token = |k: [u8; 32], text: &str| {
            let (out, _) = redactor(k).redact_text(text, "/x");
            out
        };
        let a = token(k1, &email);
        prop_assert!(a.starts_with("[tok:email:"), "{}", a);
        prop_assert_eq!(&a, &token(k1, &email.to_uppercase()));
        prop_assert_ne!(&a, &token(k2, &email));
    }
}

#[test]
fn hostile_shapes_neither_crash_nor_leak() {
    let r = redactor([2; 32]);
    let secret = "ghp_R2d2C3poBb8LukeLeiaHanSolo0123456789";
    // Nesting far past the depth limit, inside arrays and JSON strings alike.
    let mut v = json!(secret);
    for i in 0..500 {
        v = if i % 2 == 0 {
            json!([v])
        } else {
            json!({ "k": v })
        };
    }
    // Each level of JSON-in-a-string doubles the escapes: 18 levels are ~1 MB.
    let mut nested_text = json!(secret).to_string();
    for _ in 0..18 {
        nested_text = json!({ "s": nested_text }).to_string();
    }
    let mut e = event_with(json!({"deep": v, "text": nested_text}), "x".into());
    // serde_json refuses to *parse* deeper than 128, but values built in memory can be
    // deeper: the walk must still stop at the configured depth.
    r.redact_event(&mut e);
    let stored = serde_json::to_string(&e).unwrap();
    assert!(!stored.contains(secret));
    assert!(e.redactions.iter().any(|x| x.rule == "depth_limit"));

    // A huge string with secrets at both ends and invalid UTF-8 turned lossy in between.
    let mut bytes = format!("{secret} ").into_bytes();
    bytes.extend(std::iter::repeat_n(b'a', 1 << 20));
    bytes.extend([0xff, 0xfe, b' ']);
    bytes.extend(b" jane@example.org");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (out, recs) = r.redact_text(&text, "/p");
    assert!(!out.contains(secret) && !out.contains("jane@example.org"));
    assert_eq!(recs.len(), 2, "{recs:?}");
}
