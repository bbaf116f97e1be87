//! Property tests of `_meta.traceparent` injection: for any JSON-RPC request the gateway
//! injects into, the result parses, names the span in `params._meta.traceparent`, and is the
//! original message once that member is taken out again (nothing else added, removed or
//! reordered); the original bytes are the result with one contiguous insertion removed; and
//! arbitrary bytes never panic it.

use mcptrail_gateway::trace::{inject_meta_traceparent, meta_traceparent};
use proptest::prelude::*;
use serde_json::{Map, Value};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z0-9 ü\"\\\\{}]{0,12}".prop_map(Value::String),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A request: method, maybe id, maybe params (an object, maybe with a `_meta` object).
fn request() -> impl Strategy<Value = Value> {
    (
        "[a-z/]{1,16}",
        prop::option::of(any::<u32>()),
        prop::option::of((
            prop::collection::btree_map("[a-z]{1,6}", json(), 0..4),
            prop::option::of(prop::collection::btree_map("[a-zA-Z]{1,8}", leaf(), 0..3)),
        )),
    )
        .prop_map(|(method, id, params)| {
            let mut m = Map::new();
            m.insert("jsonrpc".into(), "2.0".into());
            if let Some(id) = id {
                m.insert("id".into(), id.into());
            }
            m.insert("method".into(), method.into());
            if let Some((p, meta)) = params {
                let mut p: Map<String, Value> = p.into_iter().collect();
                if let Some(meta) = meta {
                    p.insert("_meta".into(), Value::Object(meta.into_iter().collect()));
                }
                m.insert("params".into(), Value::Object(p));
            }
            Value::Object(m)
        })
}

/// Whether `small` is `big` with one contiguous run of bytes removed.
fn one_insertion(small: &[u8], big: &[u8]) -> bool {
    let head = small.iter().zip(big).take_while(|(a, b)| a == b).count();
    let tail = small[head..]
        .iter()
        .rev()
        .zip(big.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    head + tail >= small.len()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn injection_adds_only_the_traceparent(req in request(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&req).unwrap()
        } else {
            serde_json::to_string(&req).unwrap()
        };
        let out = inject_meta_traceparent(text.as_bytes(), TP)
            .expect("a request without a traceparent gets one");
        let named = meta_traceparent(&out);
        prop_assert_eq!(named.as_deref(), Some(TP));
        prop_assert!(one_insertion(text.as_bytes(), &out));
        let mut back: Value = serde_json::from_slice(&out).unwrap();
        let params = back["params"].as_object_mut().unwrap();
        let meta = params["_meta"].as_object_mut().unwrap();
        meta.remove("traceparent");
        // `_meta` and `params` the gateway created itself go again.
        let had_params = req.get("params").is_some();
        let had_meta = req.get("params").and_then(|p| p.get("_meta")).is_some();
        if !had_meta {
            prop_assert!(meta.is_empty());
            params.remove("_meta");
        }
        if !had_params {
            prop_assert!(params.is_empty());
            back.as_object_mut().unwrap().remove("params");
        }
        prop_assert_eq!(back, req);
        // Once there, a second pass leaves it alone.
        prop_assert!(inject_meta_traceparent(&out, TP).is_none());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Some(out) = inject_meta_traceparent(&bytes, TP) {
            prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
            prop_assert!(one_insertion(&bytes, &out));
        }
    }
}
