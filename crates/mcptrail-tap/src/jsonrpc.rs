//! Classifying a JSON-RPC 2.0 message without building a tree for the parts we do not need:
//! the envelope is parsed, `params`/`result`/`error` stay raw (`&RawValue`) until asked for.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// One JSON-RPC message, borrowing from the line it was read from.
#[derive(Debug)]
pub enum Message<'a> {
    /// Has `method` and `id`.
    Request {
        /// The id, raw (string, number, or irregularly `null`).
        id: &'a RawValue,
        /// Method name.
        method: String,
        /// Raw params.
        params: Option<&'a RawValue>,
        /// Envelope irregular (`jsonrpc` missing or not "2.0").
        irregular: bool,
    },
    /// Has `method`, no `id`.
    Notification {
        /// Method name.
        method: String,
        /// Raw params.
        params: Option<&'a RawValue>,
        /// Envelope irregular.
        irregular: bool,
    },
    /// Has `result` or `error`.
    Response {
        /// The id, raw; `null` for errors about unparseable requests.
        id: Option<&'a RawValue>,
        /// Raw result.
        result: Option<&'a RawValue>,
        /// Raw error object.
        error: Option<&'a RawValue>,
        /// Envelope irregular (`jsonrpc` wrong, or both `result` and `error`).
        irregular: bool,
    },
}

/// Why a line is not JSON-RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// `invalid_utf8`, `invalid_json`, `not_jsonrpc`, `empty_batch`.
    pub reason: &'static str,
    /// Parser detail (positions, never content).
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<String>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

/// `Some` whenever the key is present, even with a `null` value (absent keys use `default`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Parse one line into its messages (one, or several for a batch). The bool is true for
/// elements of a batch.
pub fn classify(line: &[u8]) -> Result<Vec<(Message<'_>, bool)>, Malformed> {
    let text = std::str::from_utf8(line).map_err(|e| Malformed {
        reason: "invalid_utf8",
        error: Some(format!("invalid UTF-8 at byte {}", e.valid_up_to())),
    })?;
    let first = text.bytes().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(json_err)?;
            if items.is_empty() {
                return Err(Malformed {
                    reason: "empty_batch",
                    error: None,
                });
            }
            items
                .into_iter()
                .map(|raw| one(raw.get()).map(|m| (m, true)))
                .collect()
        }
        Some(b'{') => Ok(vec![(one(text)?, false)]),
        _ => {
            // Valid JSON that is not an object or array, or not JSON at all.
            match serde_json::from_str::<&RawValue>(text) {
                Ok(_) => Err(Malformed {
                    reason: "not_jsonrpc",
                    error: Some("a JSON-RPC message must be an object or an array".into()),
                }),
                Err(e) => Err(json_err(e)),
            }
        }
    }
}

fn json_err(e: serde_json::Error) -> Malformed {
    Malformed {
        reason: "invalid_json",
        error: Some(format!(
            "{} at line {} column {}",
            category(&e),
            e.line(),
            e.column()
        )),
    }
}

fn category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "unexpected end of input",
    }
}

fn one(text: &str) -> Result<Message<'_>, Malformed> {
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Malformed {
            reason: "not_jsonrpc",
            error: Some(format!(
                "unexpected field type at line {} column {}",
                e.line(),
                e.column()
            )),
        },
        _ => json_err(e),
    })?;
    let irregular = env.jsonrpc.map(|v| v.get()) != Some("\"2.0\"");
    match (env.method, env.id) {
        (Some(method), Some(id)) => Ok(Message::Request {
            id,
            method,
            params: env.params,
            irregular,
        }),
        (Some(method), None) => Ok(Message::Notification {
            method,
            params: env.params,
            irregular,
        }),
        (None, id) if env.result.is_some() || env.error.is_some() => Ok(Message::Response {
            id,
            result: env.result,
            error: env.error,
            irregular: irregular || (env.result.is_some() && env.error.is_some()),
        }),
        (None, _) => Err(Malformed {
            reason: "not_jsonrpc",
            error: Some("object has neither `method` nor `result`/`error`".into()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_four_shapes() {
        let r =
            classify(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#)
                .unwrap();
        assert!(
            matches!(&r[0].0, Message::Request { method, irregular: false, .. } if method == "tools/call")
        );
        let r = classify(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(matches!(&r[0].0, Message::Notification { .. }));
        let r = classify(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert!(matches!(&r[0].0, Message::Response { id: Some(id), .. } if id.get() == "\"a\""));
        let r = classify(
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#,
        )
        .unwrap();
        assert!(
            matches!(&r[0].0, Message::Response { id: Some(id), error: Some(_), .. } if id.get() == "null")
        );
        let r = classify(
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"n"}]"#,
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|(_, batch)| *batch));
    }

    #[test]
    fn irregular_envelopes_are_flagged_not_rejected() {
        let r = classify(br#"{"id":1,"method":"ping"}"#).unwrap();
        assert!(matches!(
            &r[0].0,
            Message::Request {
                irregular: true,
                ..
            }
        ));
        let r =
            classify(br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}"#)
                .unwrap();
        assert!(matches!(
            &r[0].0,
            Message::Response {
                irregular: true,
                ..
            }
        ));
    }

    #[test]
    fn malformed_inputs_say_why() {
        assert_eq!(classify(b"\xff\xfe{}").unwrap_err().reason, "invalid_utf8");
        assert_eq!(
            classify(b"{\"jsonrpc\":").unwrap_err().reason,
            "invalid_json"
        );
        assert_eq!(classify(b"not json").unwrap_err().reason, "invalid_json");
        assert_eq!(classify(b"42").unwrap_err().reason, "not_jsonrpc");
        assert_eq!(classify(b"[]").unwrap_err().reason, "empty_batch");
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0"}"#).unwrap_err().reason,
            "not_jsonrpc"
        );
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","method":5}"#)
                .unwrap_err()
                .reason,
            "not_jsonrpc"
        );
    }
}
