//! The HTTP plumbing the Splunk HEC, Elasticsearch and S3 sinks share: one `ureq` agent per
//! sink (rustls, an optional private CA, a global timeout, statuses as values), the mapping of
//! transport failures to [`SendErrorKind`]s, and a short, printable excerpt of an error body.
//! Messages and `Debug` output quote URLs without user info or query (see [`redact_url`]),
//! never a credential; [`check_http_url`] is the one check of an http(s) URL in a config
//! (Splunk HEC, Elasticsearch, S3, webhook, OTLP).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{SendError, SendErrorKind};

/// A URL without user info, query or fragment (they may hold credentials), for messages
/// and `Debug`. Any scheme (the NATS sink uses it too).
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}{path}")
}

/// The config key `key` holds `url`, which must be `http://` or `https://`; returns what
/// follows the scheme. The message quotes the URL redacted.
pub(crate) fn check_http_url<'u>(key: &str, url: &'u str) -> Result<&'u str, String> {
    url.strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            format!(
                "{key} `{}` must start with http:// or https://",
                redact_url(url)
            )
        })
}

/// An agent that answers every HTTP status as a response (the sinks map them), trusting
/// `ca_file` (else the Mozilla roots).
pub(crate) fn agent(ca_file: Option<&Path>, timeout_secs: u64) -> Result<ureq::Agent, String> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = ca_file {
        let certs = crate::tls::load_certs(ca)?
            .into_iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect::<Vec<_>>();
        tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)));
    }
    Ok(ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(timeout_secs.max(1))))
        .http_status_as_error(false)
        .user_agent(concat!("mcptrail/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls.build())
        .build()
        .into())
}

/// A transport failure (no HTTP answer) as a [`SendError`] naming `url` without credentials.
pub(crate) fn transport_error(url: &str, e: &ureq::Error) -> SendError {
    let kind = match e {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            SendErrorKind::Connect
        }
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => SendErrorKind::Connect,
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => SendErrorKind::Connect,
        _ => SendErrorKind::Transport,
    };
    let shown = redact_url(url);
    // An error may quote the URL; its user info and query may hold credentials.
    let text = e.to_string().replace(url, &shown);
    SendError::new(kind, format!("{shown}: {text}"))
}

/// `body` gzip-compressed at the fast level (sink bodies are JSON or protobuf of ledger
/// lines: the fast level keeps most of the gain for a fraction of the CPU).
pub(crate) fn gzip(body: &[u8]) -> Result<Vec<u8>, SendError> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(body)
        .and_then(|()| enc.finish())
        .map_err(|e| SendError::new(SendErrorKind::Encode, format!("gzip: {e}")))
}

/// The `Retry-After` of a response, in seconds form only (what HEC, Elasticsearch and S3 send).
pub(crate) fn retry_after(resp: &ureq::http::Response<ureq::Body>) -> Option<Duration> {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The whole body of a response, at most `limit` bytes (more is an error: a receiver that
/// answers with more than that is not the one we expect).
pub(crate) fn read_body(
    url: &str,
    resp: ureq::http::Response<ureq::Body>,
    limit: u64,
) -> Result<Vec<u8>, SendError> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(resp.into_body().into_reader(), limit + 1),
        &mut out,
    )
    .map_err(|e| {
        SendError::new(
            SendErrorKind::Transport,
            format!("{}: reading the answer: {e}", redact_url(url)),
        )
    })?;
    if out.len() as u64 > limit {
        return Err(SendError::new(
            SendErrorKind::Transport,
            format!(
                "{}: the answer is larger than {limit} bytes",
                redact_url(url)
            ),
        ));
    }
    Ok(out)
}

/// At most 200 printable characters of `body`, for messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

/// The kind of an HTTP status that is not a success: 429 and 503 ask us to slow down, other
/// 5xx are the receiver's trouble (retried), 4xx mean the request is wrong for it.
pub(crate) fn status_kind(status: u16) -> SendErrorKind {
    match status {
        429 | 503 => SendErrorKind::Throttled,
        500..=599 => SendErrorKind::Transport,
        _ => SendErrorKind::Rejected,
    }
}

/// A random RFC 4122 version-4 UUID (HEC channel identifiers).
pub(crate) fn random_uuid() -> String {
    let mut b = [0u8; 16];
    // Without OS randomness a fixed channel still works: it only has to be a GUID.
    let _ = getrandom::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// This machine's host name (for HEC's `host`, S3's default prefix).
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Seconds since the Unix epoch with microseconds (`1764108000.123456`) of an RFC 3339 time.
pub(crate) fn epoch_seconds(time: &str) -> Option<String> {
    let t = mcptrail_event::parse_rfc3339(time).ok()?;
    let micros = t.unix_timestamp_nanos() / 1000;
    Some(format!(
        "{}.{:06}",
        micros.div_euclid(1_000_000),
        micros.rem_euclid(1_000_000)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_quoted_without_credentials() {
        assert_eq!(check_http_url("url", "https://h:1/x"), Ok("h:1/x"));
        assert_eq!(check_http_url("url", "http://h"), Ok("h"));
        let e = check_http_url("url", "ftp://u:pw@h/x?token=t").unwrap_err();
        assert_eq!(e, "url `ftp://h/x` must start with http:// or https://");
        assert_eq!(
            redact_url("nats://u:p@127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
    }

    #[test]
    fn uuids_are_version_4_guids() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!("89ab".contains(&u[19..20]), "{u}");
        assert_ne!(u, random_uuid());
    }

    #[test]
    fn epoch_seconds_keep_microseconds() {
        assert_eq!(
            epoch_seconds("2026-11-25T10:00:00.123456789Z").as_deref(),
            Some("1795600800.123456")
        );
        assert_eq!(epoch_seconds("nope"), None);
    }
}
