//! A borrowed view of the event fields OTLP export reads. Parsing a ledger line into this
//! (strings borrowed where they hold no escapes, unknown members skipped) is several times
//! cheaper than building a `serde_json::Value` or the owned `Event`, and it tolerates events
//! of newer minor schema versions.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A string of the line, borrowed unless it holds escapes. (serde borrows a bare
/// `Cow<str>` field marked `borrow`, but not one inside `Option` or `Vec`, which is most of
/// them here: this type borrows wherever it appears, so parsing an event allocates only for
/// escaped strings.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Str<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Str<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Str<'_> {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Str<'_> {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl fmt::Display for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The fields of one event that become spans, metrics and log records.
#[derive(Debug, Deserialize)]
pub(crate) struct EventView<'a> {
    #[serde(borrow)]
    pub event_id: Str<'a>,
    #[serde(borrow)]
    pub time: Str<'a>,
    #[serde(borrow)]
    pub kind: Str<'a>,
    #[serde(default, borrow)]
    pub user_identity: Option<UserView<'a>>,
    #[serde(default, borrow)]
    pub agent_id: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub host: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub process: Option<ProcessView<'a>>,
    #[serde(default, borrow)]
    pub server: Option<ServerView<'a>>,
    #[serde(default, borrow)]
    pub session_id: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub trace_id: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub span_id: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub parent_span_id: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub direction: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub method: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub request_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub request_event_id: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub tool_invoked: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub parameters_used: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub resource_uri: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub prompt_name: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub tool_schema_hash: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub protocol_version: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub response_summary: Option<SummaryView<'a>>,
    #[serde(default)]
    pub duration_ms: Option<f64>,
    #[serde(default, borrow)]
    pub labels: Vec<Str<'a>>,
    #[serde(default, borrow)]
    pub redactions: Vec<RedactionView<'a>>,
    #[serde(default, borrow)]
    pub flags: Vec<Str<'a>>,
    #[serde(default, borrow)]
    pub catalog: Option<CatalogView<'a>>,
    #[serde(default, borrow)]
    pub session: Option<SessionView<'a>>,
    #[serde(default, borrow)]
    pub malformed: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub detail: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub http: Option<HttpView<'a>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct UserView<'a> {
    #[serde(borrow)]
    pub principal: Str<'a>,
    #[serde(borrow)]
    pub source: Str<'a>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProcessView<'a> {
    #[serde(default, borrow)]
    pub tap_version: Option<Str<'a>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ServerView<'a> {
    #[serde(default, borrow)]
    pub name: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub version: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub transport: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub url: Option<Str<'a>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SummaryView<'a> {
    #[serde(borrow)]
    pub status: Str<'a>,
    #[serde(default)]
    pub is_error: bool,
    #[serde(default)]
    pub error_code: Option<i64>,
    #[serde(default, borrow)]
    pub error_message: Option<Str<'a>>,
    /// Kept raw: the log encoder cuts it out of the stored line by position.
    #[serde(default, borrow)]
    pub preview: Option<&'a RawValue>,
}

impl SummaryView<'_> {
    /// The preview text.
    pub(crate) fn preview_text(&self) -> Option<String> {
        self.preview
            .and_then(|p| serde_json::from_str(p.get()).ok())
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RedactionView<'a> {
    #[serde(borrow)]
    pub rule: Str<'a>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CatalogView<'a> {
    #[serde(borrow)]
    pub list: Str<'a>,
    #[serde(borrow)]
    pub hash: Str<'a>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SessionView<'a> {
    #[serde(default, borrow)]
    pub end_reason: Option<Str<'a>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct HttpView<'a> {
    #[serde(default, borrow)]
    pub mcp_session_id: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub client_address: Option<Str<'a>>,
}

/// The `rule` and `severity` of an alert's `detail`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AlertDetail<'a> {
    #[serde(default, borrow)]
    pub rule: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub severity: Option<Str<'a>>,
}

impl EventView<'_> {
    /// The alert's rule and severity (empty for other kinds or a detail of another shape).
    pub(crate) fn alert_detail(&self) -> AlertDetail<'_> {
        self.detail
            .and_then(|d| serde_json::from_str(d.get()).ok())
            .unwrap_or_default()
    }

    /// The JSON-RPC id as an attribute value: a string id without its quotes, a number as
    /// written.
    pub(crate) fn request_id_text(&self) -> Option<Cow<'_, str>> {
        let raw = self.request_id?.get();
        if raw.starts_with('"') {
            serde_json::from_str::<Cow<'_, str>>(raw).ok()
        } else {
            Some(Cow::Borrowed(raw))
        }
    }

    /// Whether this event holds payload fields (tool arguments, result previews, raw message
    /// prefixes) that `include_payloads = false` keeps out of the export.
    pub(crate) fn has_payload(&self) -> bool {
        self.parameters_used.is_some()
            || self.malformed.is_some()
            || self
                .response_summary
                .as_ref()
                .is_some_and(|s| s.preview.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_borrowed_from_the_line_unless_escaped() {
        let line = r#"{"event_id":"e1","time":"t","kind":"mcp.response","host":"h","session_id":"s\"1","labels":["pii","a\u00e9"],"server":{"name":"srv"},"redactions":[{"rule":"email"}]}"#;
        let v: EventView<'_> = serde_json::from_str(line).unwrap();
        let borrowed = |s: &Str<'_>| matches!(s.0, Cow::Borrowed(_));
        assert!(borrowed(&v.event_id) && borrowed(&v.kind));
        assert!(borrowed(v.host.as_ref().unwrap()), "inside Option");
        assert!(borrowed(v.server.as_ref().unwrap().name.as_ref().unwrap()));
        assert!(borrowed(&v.labels[0]), "inside Vec");
        assert!(borrowed(&v.redactions[0].rule));
        let escaped = v.session_id.as_ref().unwrap();
        assert!(!borrowed(escaped));
        assert_eq!(&**escaped, "s\"1");
        assert_eq!(&*v.labels[1], "aé");
        assert!(v.kind == "mcp.response");
    }
}
