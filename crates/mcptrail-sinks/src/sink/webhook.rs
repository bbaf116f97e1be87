//! Generic webhook: each batch is one HTTP POST of a JSON document, signed with
//! HMAC-SHA256 over the exact body bytes.
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! X-Mcptrail-Signature: sha256=<hex HMAC-SHA256(key, body)>
//! X-Mcptrail-Batch: <first_seq>-<last_seq>
//!
//! {"source":"mcptrail","sink":"<name>","first_seq":1,"last_seq":500,"count":500,"events":[…]}
//! ```
//!
//! `events` holds the ledger lines verbatim (format `json`) or OCSF objects. A 2xx answer
//! acknowledges the batch; 429 and 503 are throttling (`Retry-After` is honoured up to the
//! backoff maximum); other answers and network errors are retried. A receiver should verify
//! the signature with a constant-time comparison before parsing, and dedupe by `event_id`
//! (a batch is sent again after a failure or a restart).

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{PayloadFormat, WebhookSinkConfig};
use crate::error::{SendError, SendErrorKind};
use crate::format::encode_into;
use crate::secret::Secret;
use crate::sink::http::redact_url;
use crate::sink::Sink;
use crate::tail::ShipRecord;

/// The webhook sink.
pub struct WebhookSink {
    name: String,
    cfg: WebhookSinkConfig,
    key: Secret,
    agent: ureq::Agent,
    body: Vec<u8>,
}

/// `sha256=<hex>` of `body` under `key`: the signature header's value.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl WebhookSink {
    /// A sink for `cfg`, loading its key now.
    pub fn new(name: &str, cfg: WebhookSinkConfig) -> Result<Self, String> {
        let key = cfg.secret.load().map_err(|e| format!("webhook key: {e}"))?;
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &cfg.tls_ca_file {
            let certs = crate::tls::load_certs(ca)?
                .into_iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect::<Vec<_>>();
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(cfg.timeout_secs.max(1))))
            .http_status_as_error(false)
            .user_agent(concat!("mcptrail/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build()
            .into();
        Ok(WebhookSink {
            name: name.to_string(),
            cfg,
            key,
            agent,
            body: Vec::with_capacity(1 << 20),
        })
    }

    fn build_body(&mut self, batch: &[ShipRecord]) -> Result<(), SendError> {
        let (first, last) = (
            batch.first().map_or(0, |r| r.seq),
            batch.last().map_or(0, |r| r.seq),
        );
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        body.extend_from_slice(b"{\"source\":\"mcptrail\",\"sink\":");
        serde_json::to_writer(&mut body, &self.name).expect("string serialises");
        body.extend_from_slice(
            format!(
                ",\"format\":\"{}\",\"first_seq\":{first},\"last_seq\":{last},\"count\":{},\"events\":[",
                match self.cfg.format {
                    PayloadFormat::Ocsf => "ocsf",
                    _ => "json",
                },
                batch.len()
            )
            .as_bytes(),
        );
        let mut result = Ok(());
        for (i, rec) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            if let Err(e) = encode_into(self.cfg.format, rec, &mut body) {
                result = Err(e);
                break;
            }
        }
        body.extend_from_slice(b"]}");
        self.body = body;
        result
    }

    fn post(&mut self, batch: &[ShipRecord], probe: bool) -> Result<u16, SendError> {
        self.build_body(batch)?;
        let sig = signature(self.key.expose(), &self.body);
        let range = format!(
            "{}-{}",
            batch.first().map_or(0, |r| r.seq),
            batch.last().map_or(0, |r| r.seq)
        );
        let mut req = self
            .agent
            .post(&self.cfg.url)
            .header("Content-Type", "application/json")
            .header(self.cfg.signature_header.as_str(), sig.as_str())
            .header("X-Mcptrail-Batch", range.as_str());
        if probe {
            req = req.header("X-Mcptrail-Probe", "1");
        }
        let url = redact_url(&self.cfg.url);
        let resp = req.send(&self.body[..]).map_err(|e| {
            let kind = match &e {
                ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                    SendErrorKind::Connect
                }
                ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => SendErrorKind::Connect,
                ureq::Error::Tls(_) | ureq::Error::Rustls(_) => SendErrorKind::Connect,
                _ => SendErrorKind::Transport,
            };
            // An error may quote the URL; its user info and query may hold credentials.
            let text = e.to_string().replace(self.cfg.url.as_str(), &url);
            SendError::new(kind, format!("{url}: {text}"))
        })?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(status);
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(
            &mut std::io::Read::take(resp.into_body().into_reader(), 200),
            &mut text,
        );
        let text: String = text.chars().filter(|c| !c.is_control()).collect();
        let kind = match status {
            429 | 503 => SendErrorKind::Throttled,
            500..=599 => SendErrorKind::Transport,
            _ => SendErrorKind::Rejected,
        };
        let mut e = SendError::new(kind, format!("{url} answered HTTP {status}: {text}"));
        e.retry_after = retry_after;
        Err(e)
    }
}

impl Sink for WebhookSink {
    fn send(&mut self, batch: &[ShipRecord]) -> Result<(), SendError> {
        self.post(batch, false).map(drop)
    }

    fn probe(&mut self) -> Result<String, SendError> {
        let status = self.post(&[], true)?;
        Ok(format!(
            "{} accepted a signed empty batch (HTTP {status})",
            redact_url(&self.cfg.url)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc4231_test_case_2() {
        // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn urls_lose_credentials_in_messages() {
        assert_eq!(
            redact_url("https://u:p@h.example/x?token=abc"),
            "https://h.example/x"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:8080/hook"),
            "http://127.0.0.1:8080/hook"
        );
    }
}
