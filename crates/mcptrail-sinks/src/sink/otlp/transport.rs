//! The two OTLP transports, each delivering one encoded `Export*ServiceRequest` and mapping
//! the receiver's answer to `Ok(partial success)` or a [`SendError`]:
//!
//! | answer | OTLP/HTTP | OTLP/gRPC | kind |
//! | --- | --- | --- | --- |
//! | accepted | 2xx, body `Export*ServiceResponse` | `grpc-status: 0` | `Ok` (rejected items: `Rejected`, by the caller) |
//! | slow down | 429, 502, 503, 504 (`Retry-After` honoured) | `UNAVAILABLE`, `RESOURCE_EXHAUSTED` (`RetryInfo` honoured) | `Throttled` |
//! | broken exchange | other 5xx, timeouts, resets | `DEADLINE_EXCEEDED`, `ABORTED`, `CANCELLED`, `DATA_LOSS`, `OUT_OF_RANGE` | `Transport` |
//! | refused | other 4xx (401/403: credentials) | `UNAUTHENTICATED`, `PERMISSION_DENIED`, `INVALID_ARGUMENT`, … | `Rejected` |
//! | unreachable | refused, DNS, TLS handshake | the same | `Connect` |
//!
//! OTLP/HTTP is a blocking ureq agent (as the webhook sink). OTLP/gRPC is a unary call over
//! h2 (no tonic): `POST /opentelemetry.proto.collector.<signal>.v1.<Service>/Export`,
//! `content-type: application/grpc`, the message behind the 5-byte gRPC prefix, the status in
//! the `grpc-status` trailer. Its connection lives on a one-worker tokio runtime owned by the
//! sink and is reused across batches; a broken one is replaced at the next export. TLS is
//! rustls (ALPN `h2` for gRPC). Header values (tokens) are sent, never quoted in errors.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::config::{Compression, HeaderValue, OtlpProtocol, OtlpSinkConfig, Signal};
use super::proto::{read_partial_success, PartialSuccess};
use crate::error::{SendError, SendErrorKind};
use crate::sink::http::{gzip, redact_url};

/// Longest receiver text quoted in an error.
const QUOTE_CHARS: usize = 200;

/// A header to send with every export: name, value (from config or a secret).
pub(crate) type Headers = Vec<(String, String)>;

/// Load header values (secrets from their sources; errors name the source, not the value).
pub(crate) fn load_headers(cfg: &OtlpSinkConfig) -> Result<Headers, String> {
    cfg.headers
        .iter()
        .map(|(name, value)| {
            let v = match value {
                HeaderValue::Plain(v) => v.clone(),
                HeaderValue::Secret(s) => {
                    let secret = s.load().map_err(|e| format!("header `{name}`: {e}"))?;
                    String::from_utf8(secret.expose().to_vec()).map_err(|_| {
                        format!(
                            "header `{name}`: the value in {} is not UTF-8",
                            s.describe()
                        )
                    })?
                }
            };
            if v.bytes().any(|b| b.is_ascii_control()) {
                return Err(format!(
                    "header `{name}`: its value holds control characters (a stray newline?)"
                ));
            }
            Ok((name.to_ascii_lowercase(), v))
        })
        .collect()
}

fn quote(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control())
        .take(QUOTE_CHARS)
        .collect()
}

/// One of the two transports.
pub(crate) enum Transport {
    /// OTLP/HTTP.
    Http(HttpTransport),
    /// OTLP/gRPC.
    Grpc(Box<GrpcTransport>),
}

impl Transport {
    /// The transport `cfg` asks for (loads certificates and keys now).
    pub(crate) fn new(cfg: &OtlpSinkConfig, headers: Headers) -> Result<Self, String> {
        Ok(match cfg.protocol {
            OtlpProtocol::HttpProtobuf => Transport::Http(HttpTransport::new(cfg, headers)?),
            OtlpProtocol::Grpc => Transport::Grpc(Box::new(GrpcTransport::new(cfg, headers)?)),
        })
    }

    /// Deliver one export request of `signal` (taken by value: gRPC sends it without a copy).
    pub(crate) fn export(
        &mut self,
        signal: Signal,
        body: Vec<u8>,
    ) -> Result<PartialSuccess, SendError> {
        match self {
            Transport::Http(t) => t.export(signal, &body),
            Transport::Grpc(t) => t.export(signal, body),
        }
    }

    /// Deliver the export requests of several signals at once (a batch's traces, metrics and
    /// logs): concurrent streams on the one HTTP/2 connection for gRPC, one connection each
    /// for OTLP/HTTP, so the receiver works on all of them while none waits for another.
    /// One answer per request, in order.
    pub(crate) fn export_all(
        &mut self,
        requests: Vec<(Signal, Vec<u8>)>,
    ) -> Vec<Result<PartialSuccess, SendError>> {
        if requests.len() == 1 {
            let (signal, body) = requests.into_iter().next().expect("one");
            return vec![self.export(signal, body)];
        }
        match self {
            Transport::Http(t) => {
                let t = &*t;
                std::thread::scope(|scope| {
                    let handles: Vec<_> = requests
                        .iter()
                        .map(|(signal, body)| scope.spawn(move || t.export(*signal, body)))
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| {
                            h.join().unwrap_or_else(|_| {
                                Err(SendError::new(
                                    SendErrorKind::Transport,
                                    "an OTLP/HTTP export thread panicked".to_string(),
                                ))
                            })
                        })
                        .collect()
                })
            }
            Transport::Grpc(t) => t.export_all(requests),
        }
    }
}

/// OTLP/HTTP with protobuf bodies.
pub(crate) struct HttpTransport {
    agent: ureq::Agent,
    base: String,
    headers: Headers,
    compression: Compression,
}

impl HttpTransport {
    fn new(cfg: &OtlpSinkConfig, headers: Headers) -> Result<Self, String> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &cfg.tls_ca_file {
            let certs = crate::tls::load_certs(ca)?
                .into_iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect::<Vec<_>>();
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)));
        }
        if let (Some(cert), Some(key)) = (&cfg.tls_client_cert_file, &cfg.tls_client_key_file) {
            let chain = crate::tls::load_certs(cert)?
                .into_iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect::<Vec<_>>();
            let key = private_key_pem(key)?;
            let key = ureq::tls::PrivateKey::from_pem(&key)
                .map_err(|_| format!("{}: no readable PEM private key in it", key_path(cfg)))?;
            tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(cfg.timeout_secs.max(1))))
            .http_status_as_error(false)
            .user_agent(concat!("mcptrail/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build()
            .into();
        Ok(HttpTransport {
            agent,
            base: cfg.endpoint.trim_end_matches('/').to_string(),
            headers,
            compression: cfg.compression,
        })
    }

    fn export(&self, signal: Signal, body: &[u8]) -> Result<PartialSuccess, SendError> {
        let url = format!("{}/v1/{}", self.base, signal.as_str());
        let shown = redact_url(&url);
        let compressed;
        let payload = match self.compression {
            Compression::None => body,
            Compression::Gzip => {
                compressed = gzip(body)?;
                &compressed[..]
            }
        };
        let mut req = self
            .agent
            .post(&url)
            .header("Content-Type", "application/x-protobuf");
        if self.compression == Compression::Gzip {
            req = req.header("Content-Encoding", "gzip");
        }
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send(payload).map_err(|e| {
            let kind = match &e {
                ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                    SendErrorKind::Connect
                }
                ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => SendErrorKind::Connect,
                ureq::Error::Tls(_) | ureq::Error::Rustls(_) => SendErrorKind::Connect,
                _ => SendErrorKind::Transport,
            };
            SendError::new(kind, format!("{shown}: {e}"))
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut answer = Vec::new();
        let _ = std::io::Read::read_to_end(
            &mut std::io::Read::take(resp.into_body().into_reader(), 1 << 20),
            &mut answer,
        );
        if (200..300).contains(&status) {
            return read_partial_success(&answer).ok_or_else(|| {
                SendError::new(
                    SendErrorKind::Rejected,
                    format!("{shown} answered HTTP {status} with a body that is not an OTLP export response"),
                )
            });
        }
        let kind = match status {
            429 | 502 | 503 | 504 => SendErrorKind::Throttled,
            500..=599 => SendErrorKind::Transport,
            _ => SendErrorKind::Rejected,
        };
        let hint = match status {
            401 | 403 => " (check the credentials in `headers`)",
            404 => {
                " (is the endpoint an OTLP/HTTP receiver? gRPC receivers need protocol = \"grpc\")"
            }
            415 => " (the receiver does not take protobuf)",
            _ => "",
        };
        let mut e = SendError::new(
            kind,
            format!("{shown} answered HTTP {status}{hint}: {}", quote(&answer)),
        );
        e.retry_after = retry_after;
        Err(e)
    }
}

fn key_path(cfg: &OtlpSinkConfig) -> String {
    cfg.tls_client_key_file
        .as_ref()
        .map_or(String::new(), |p| p.display().to_string())
}

/// A private key file's PEM, refused when others can read it.
fn private_key_pem(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "private key {} is readable by others (mode {mode:o}); chmod 600 it",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The gRPC method path of a signal's `Export`.
fn grpc_path(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    }
}

/// OTLP/gRPC over h2.
pub(crate) struct GrpcTransport {
    runtime: tokio::runtime::Runtime,
    authority: String,
    scheme: &'static str,
    shown: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    compression: Compression,
    timeout: Duration,
    conn: Option<h2::client::SendRequest<Bytes>>,
}

/// What a gRPC call came back with.
struct GrpcAnswer {
    http_status: u16,
    grpc_status: Option<u32>,
    grpc_message: Option<String>,
    retry_delay: Option<Duration>,
    data: Vec<u8>,
}

impl GrpcTransport {
    fn new(cfg: &OtlpSinkConfig, headers: Headers) -> Result<Self, String> {
        let (authority, tls_on) = cfg.authority();
        let tls = if tls_on {
            let client = cfg
                .tls_client_cert_file
                .as_deref()
                .zip(cfg.tls_client_key_file.as_deref());
            let base = crate::tls::client_config(cfg.tls_ca_file.as_deref(), client)?;
            let mut config = (*base).clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let host = super::encode::host_port(&authority)
                .map(|(h, _)| h.to_string())
                .unwrap_or_default();
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| format!("`{host}` is not a valid TLS server name"))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let headers = headers
            .into_iter()
            .map(|(k, v)| {
                let name = http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("header `{k}` is not a valid gRPC metadata name"))?;
                let value = http::HeaderValue::from_str(&v)
                    .map_err(|_| format!("header `{k}`: its value is not a valid header value"))?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mcptrail-otlp")
            .on_thread_start(crate::shipper::run_in_background)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the OTLP/gRPC runtime: {e}"))?;
        Ok(GrpcTransport {
            runtime,
            shown: redact_url(&cfg.endpoint),
            scheme: if tls_on { "https" } else { "http" },
            authority,
            tls,
            headers,
            compression: cfg.compression,
            timeout: Duration::from_secs(cfg.timeout_secs.max(1)),
            conn: None,
        })
    }

    fn connect(&mut self) -> Result<h2::client::SendRequest<Bytes>, SendError> {
        let (authority, shown, timeout) =
            (self.authority.clone(), self.shown.clone(), self.timeout);
        let tls = self.tls.clone();
        let conn = self.runtime.block_on(async move {
            let connect_error =
                |m: String| SendError::new(SendErrorKind::Connect, format!("{shown}: {m}"));
            let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&authority))
                .await
                .map_err(|_| connect_error("connection timed out".into()))?
                .map_err(|e| connect_error(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            match tls {
                None => handshake(tcp, timeout).await,
                Some((connector, name)) => {
                    let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
                        .await
                        .map_err(|_| connect_error("TLS handshake timed out".into()))?
                        .map_err(|e| connect_error(format!("TLS: {e}")))?;
                    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                        return Err(connect_error(
                            "the server did not agree to HTTP/2 (ALPN h2): is it a gRPC endpoint?"
                                .into(),
                        ));
                    }
                    handshake(stream, timeout).await
                }
            }
            .map_err(|e| connect_error(format!("HTTP/2 handshake: {e}")))
        })?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    fn request(&self, signal: Signal) -> Result<http::Request<()>, SendError> {
        let mut req = http::Request::post(format!(
            "{}://{}{}",
            self.scheme,
            self.authority,
            grpc_path(signal)
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(
            "user-agent",
            concat!("mcptrail/", env!("CARGO_PKG_VERSION")),
        )
        .body(())
        .map_err(|e| SendError::new(SendErrorKind::Encode, e.to_string()))?;
        if self.compression == Compression::Gzip {
            req.headers_mut()
                .insert("grpc-encoding", http::HeaderValue::from_static("gzip"));
        }
        for (k, v) in &self.headers {
            req.headers_mut().append(k.clone(), v.clone());
        }
        Ok(req)
    }

    /// Unary calls, all in flight at once on one connection: for each, the 5-byte gRPC
    /// message prefix, then the message. A cached connection may have been closed by the
    /// server while idle (GOAWAY): the calls it refused are tried once on a fresh connection
    /// before the failure counts.
    fn call_all(
        &mut self,
        calls: Vec<(Signal, Bytes, Bytes)>,
    ) -> Vec<Result<GrpcAnswer, SendError>> {
        let mut results: Vec<Option<Result<GrpcAnswer, SendError>>> =
            calls.iter().map(|_| None).collect();
        for attempt in 0..2 {
            let todo: Vec<usize> = (0..calls.len()).filter(|&i| results[i].is_none()).collect();
            if todo.is_empty() {
                break;
            }
            let reused = self.conn.is_some();
            let conn = match self.conn.clone() {
                Some(c) => c,
                None => match self.connect() {
                    Ok(c) => c,
                    Err(e) => {
                        for i in todo {
                            results[i] = Some(Err(e.clone()));
                        }
                        break;
                    }
                },
            };
            let mut pending = Vec::new();
            for &i in &todo {
                match self.request(calls[i].0) {
                    Ok(req) => pending.push((i, req)),
                    Err(e) => results[i] = Some(Err(e)),
                }
            }
            let timeout = self.timeout;
            let flights: Vec<_> = pending
                .into_iter()
                .map(|(i, req)| {
                    let (conn, prefix, message) =
                        (conn.clone(), calls[i].1.clone(), calls[i].2.clone());
                    (i, async move {
                        tokio::time::timeout(timeout, unary(conn, req, prefix, message))
                            .await
                            .unwrap_or(Err(CallError::Exchange(
                                "no answer within the timeout".into(),
                            )))
                    })
                })
                .collect();
            let answers: Vec<(usize, Result<GrpcAnswer, CallError>)> =
                self.runtime.block_on(async move {
                    let handles: Vec<_> = flights
                        .into_iter()
                        .map(|(i, f)| (i, tokio::spawn(f)))
                        .collect();
                    let mut out = Vec::new();
                    for (i, h) in handles {
                        out.push((
                            i,
                            h.await.unwrap_or_else(|e| {
                                Err(CallError::Exchange(format!("the call failed: {e}")))
                            }),
                        ));
                    }
                    out
                });
            for (i, a) in answers {
                match a {
                    Ok(a) => results[i] = Some(Ok(a)),
                    Err(CallError::NotReady(_)) if reused && attempt == 0 => {
                        self.conn = None;
                    }
                    Err(CallError::NotReady(m) | CallError::Exchange(m)) => {
                        self.conn = None;
                        results[i] = Some(Err(SendError::new(
                            SendErrorKind::Transport,
                            format!("{}: {m}", self.shown),
                        )));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(SendError::new(
                        SendErrorKind::Transport,
                        format!("{}: the connection closed twice", self.shown),
                    ))
                })
            })
            .collect()
    }

    /// The 5-byte prefix and the (maybe compressed) message of one export.
    fn framed(&self, body: Vec<u8>) -> Result<(Bytes, Bytes), SendError> {
        let (flag, payload) = match self.compression {
            Compression::None => (0u8, body),
            Compression::Gzip => (1u8, gzip(&body)?),
        };
        let mut prefix = [flag, 0, 0, 0, 0];
        prefix[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        Ok((Bytes::copy_from_slice(&prefix), Bytes::from(payload)))
    }

    fn export(&mut self, signal: Signal, body: Vec<u8>) -> Result<PartialSuccess, SendError> {
        self.export_all(vec![(signal, body)])
            .pop()
            .expect("one answer")
    }

    fn export_all(
        &mut self,
        requests: Vec<(Signal, Vec<u8>)>,
    ) -> Vec<Result<PartialSuccess, SendError>> {
        let mut framed: Vec<Option<SendError>> = Vec::new();
        let mut calls = Vec::new();
        for (signal, body) in requests {
            match self.framed(body) {
                Ok((prefix, message)) => {
                    calls.push((signal, prefix, message));
                    framed.push(None);
                }
                Err(e) => framed.push(Some(e)),
            }
        }
        let mut answers = self.call_all(calls).into_iter();
        framed
            .into_iter()
            .map(|f| match f {
                Some(e) => Err(e),
                None => answers
                    .next()
                    .expect("an answer per call")
                    .and_then(|a| self.decode(a)),
            })
            .collect()
    }

    /// A gRPC answer as an export result.
    fn decode(&self, a: GrpcAnswer) -> Result<PartialSuccess, SendError> {
        let shown = &self.shown;
        if a.http_status != 200 {
            // Not a gRPC answer at all (a proxy, or an HTTP/1 server behind h2c).
            let kind = match a.http_status {
                429 | 502 | 503 | 504 => SendErrorKind::Throttled,
                500..=599 => SendErrorKind::Transport,
                _ => SendErrorKind::Rejected,
            };
            return Err(SendError::new(
                kind,
                format!("{shown} answered HTTP {} to a gRPC call", a.http_status),
            ));
        }
        let Some(status) = a.grpc_status else {
            return Err(SendError::new(
                SendErrorKind::Transport,
                format!("{shown}: the gRPC answer has no grpc-status (stream cut short?)"),
            ));
        };
        if status != 0 {
            let (kind, name, hint) = match status {
                14 => (SendErrorKind::Throttled, "UNAVAILABLE", ""),
                8 => (SendErrorKind::Throttled, "RESOURCE_EXHAUSTED", " (a message over the receiver's size limit also says this: lower batch_max_bytes)"),
                4 => (SendErrorKind::Transport, "DEADLINE_EXCEEDED", ""),
                1 => (SendErrorKind::Transport, "CANCELLED", ""),
                10 => (SendErrorKind::Transport, "ABORTED", ""),
                11 => (SendErrorKind::Transport, "OUT_OF_RANGE", ""),
                15 => (SendErrorKind::Transport, "DATA_LOSS", ""),
                16 => (SendErrorKind::Rejected, "UNAUTHENTICATED", " (check the credentials in `headers`)"),
                7 => (SendErrorKind::Rejected, "PERMISSION_DENIED", " (check the credentials in `headers`)"),
                3 => (SendErrorKind::Rejected, "INVALID_ARGUMENT", ""),
                12 => (SendErrorKind::Rejected, "UNIMPLEMENTED", " (is the endpoint an OTLP/gRPC receiver for this signal?)"),
                _ => (SendErrorKind::Rejected, "error", ""),
            };
            let mut e = SendError::new(
                kind,
                format!(
                    "{shown} answered gRPC status {status} {name}{hint}: {}",
                    a.grpc_message.as_deref().unwrap_or("")
                ),
            );
            e.retry_after = a.retry_delay;
            return Err(e);
        }
        let message = match a.data.split_first() {
            None => &[][..],
            Some((0, rest)) if rest.len() >= 4 => &rest[4..],
            Some((1, rest)) if rest.len() >= 4 => {
                let mut out = Vec::new();
                let mut d = flate2::read::GzDecoder::new(&rest[4..]);
                std::io::Read::read_to_end(&mut d, &mut out).map_err(|e| {
                    SendError::new(
                        SendErrorKind::Transport,
                        format!("{shown}: gzip answer: {e}"),
                    )
                })?;
                return read_partial_success(&out).ok_or_else(|| not_otlp(shown));
            }
            Some(_) => return Err(not_otlp(shown)),
        };
        read_partial_success(message).ok_or_else(|| not_otlp(shown))
    }
}

fn not_otlp(shown: &str) -> SendError {
    SendError::new(
        SendErrorKind::Rejected,
        format!("{shown}: the gRPC answer is not an OTLP export response"),
    )
}

async fn handshake<T>(io: T, timeout: Duration) -> Result<h2::client::SendRequest<Bytes>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = tokio::time::timeout(
        timeout,
        h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .handshake::<_, Bytes>(io),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        // Ends when the connection closes; the next export then connects again.
        let _ = connection.await;
    });
    Ok(send)
}

enum CallError {
    /// The connection could not take a new stream (closed while idle).
    NotReady(String),
    /// The exchange failed after the request went out.
    Exchange(String),
}

async fn unary(
    conn: h2::client::SendRequest<Bytes>,
    req: http::Request<()>,
    prefix: Bytes,
    message: Bytes,
) -> Result<GrpcAnswer, CallError> {
    let mut ready = conn
        .ready()
        .await
        .map_err(|e| CallError::NotReady(e.to_string()))?;
    let (response, mut stream) = ready
        .send_request(req, false)
        .map_err(|e| CallError::NotReady(e.to_string()))?;
    stream
        .send_data(prefix, false)
        .and_then(|()| stream.send_data(message, true))
        .map_err(|e| CallError::Exchange(e.to_string()))?;
    let response = response
        .await
        .map_err(|e| CallError::Exchange(e.to_string()))?;
    let (parts, mut body) = response.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| CallError::Exchange(e.to_string()))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if data.len() < 4 << 20 {
            data.extend_from_slice(&chunk);
        }
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|e| CallError::Exchange(e.to_string()))?;
    // A "trailers-only" answer carries the status in the headers.
    let source = trailers.as_ref().unwrap_or(&parts.headers);
    let get = |name: &str| {
        source
            .get(name)
            .or_else(|| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
    };
    Ok(GrpcAnswer {
        http_status: parts.status.as_u16(),
        grpc_status: get("grpc-status").and_then(|s| s.trim().parse().ok()),
        grpc_message: get("grpc-message").map(percent_decode),
        retry_delay: get("grpc-status-details-bin").and_then(retry_delay),
        data,
    })
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2, "Responses").
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    quote(&out)
}

/// The `RetryInfo.retry_delay` inside a `grpc-status-details-bin` (base64 of a
/// `google.rpc.Status { details = 3: Any { type_url = 1; value = 2 } }`).
fn retry_delay(b64: &str) -> Option<Duration> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(b64.trim().trim_end_matches('='))
        .ok()?;
    let status = super::proto::fields(&bytes)?;
    for (f, any) in status {
        let super::proto::Field::Len(any) = any else {
            continue;
        };
        if f != 3 {
            continue;
        }
        let any = super::proto::fields(any)?;
        let is_retry_info = any.iter().any(|(f, v)| {
            *f == 1
                && matches!(v, super::proto::Field::Len(t) if t.ends_with(b"google.rpc.RetryInfo"))
        });
        let value = any.iter().find_map(|(f, v)| match v {
            super::proto::Field::Len(v) if *f == 2 => Some(*v),
            _ => None,
        });
        if let (true, Some(value)) = (is_retry_info, value) {
            // RetryInfo { retry_delay = 1: Duration { seconds = 1; nanos = 2 } }
            for (f, d) in super::proto::fields(value)? {
                if let (1, super::proto::Field::Len(d)) = (f, d) {
                    let mut secs = 0u64;
                    let mut nanos = 0u32;
                    for (k, v) in super::proto::fields(d)? {
                        match (k, v) {
                            (1, super::proto::Field::Varint(s)) => secs = s,
                            (2, super::proto::Field::Varint(n)) => nanos = n as u32,
                            _ => {}
                        }
                    }
                    return Some(Duration::new(secs, nanos.min(999_999_999)));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::otlp::proto::Writer;

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decode("bad%20things%3A%20x"), "bad things: x");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn retry_info_gives_the_delay() {
        let mut w = Writer::default();
        w.uint(1, 8);
        w.message(3, |any| {
            any.string(1, "type.googleapis.com/google.rpc.RetryInfo");
            any.message(2, |ri| {
                ri.message(1, |d| {
                    d.uint(1, 2);
                    d.uint(2, 500_000_000);
                })
            });
        });
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&w.buf);
        assert_eq!(retry_delay(&b64), Some(Duration::from_millis(2500)));
        assert_eq!(retry_delay("not base64!"), None);
    }
}
