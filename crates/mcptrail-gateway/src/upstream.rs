//! The HTTP client toward upstream servers: HTTP/1.1 over TCP, or TLS with rustls (system
//! roots plus an optional CA file).
//!
//! Proxied requests use [`Conn`]: one upstream connection per client connection, driven from
//! the task that serves the client rather than from a connection task of its own. A response
//! then goes from the upstream's socket to the client's in one task wake-up: the head, the
//! body and the end of a short response are written to the client together, instead of as
//! separate packets, each after a hand-over between tasks (which is what a pooled client
//! does). JWKS fetches use the pooled [`Client`].

use std::future::{poll_fn, Future};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::GatewayError;

/// The upstream client.
pub(crate) type Client<B> = hyper_util::client::legacy::Client<Connector, B>;

/// Opens TCP or TLS connections to upstreams.
pub(crate) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

/// A connection left idle longer than this is not reused: servers close idle keep-alive
/// connections after a few seconds (Node after 5), and a request must not race that close.
const MAX_IDLE: Duration = Duration::from_secs(4);

/// A client trusting the system roots and `ca_file`.
pub(crate) fn client<B>(ca_file: Option<&Path>) -> Result<Client<B>, GatewayError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    Ok(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector(ca_file, Duration::from_secs(5))?),
    )
}

/// A connector trusting the system roots and `ca_file`, giving up on connecting after
/// `connect_timeout`.
pub(crate) fn connector(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<Connector, GatewayError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        for cert in crate::tls::read_certs(path)? {
            roots.add(cert).map_err(|e| GatewayError::Tls {
                path: path.to_path_buf(),
                message: format!("not a usable CA certificate: {e}"),
            })?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| GatewayError::Tls {
            path: Default::default(),
            message: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// Where a client connection keeps its upstream connection between requests. (Boxed: a
/// connection is large, and moves between the slot, the request and the body.)
pub(crate) type Slot = Arc<Mutex<Option<Box<Conn>>>>;

/// One HTTP/1.1 connection to an upstream. Nothing polls it but its user: while a request is
/// sent and its response read ([`Conn::send`], [`InlineBody`]), or when it is taken for the
/// next request ([`Conn::ready`]).
pub(crate) struct Conn {
    /// The route it belongs to (its upstream).
    route: Arc<str>,
    sender: http1::SendRequest<Full<Bytes>>,
    /// `None` once the connection has ended.
    driver: Option<http1::Connection<Stream, Full<Bytes>>>,
    idle_since: Instant,
}

/// Why a request could not be sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened.
    Connect(String),
    /// The connection failed before or while answering.
    Failed(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(m) => write!(f, "unreachable: {m}"),
            SendError::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

/// `e` and its sources, `: `-separated.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

impl Conn {
    async fn open(
        connector: &Connector,
        route: &Arc<str>,
        uri: &Uri,
    ) -> Result<Box<Conn>, SendError> {
        let mut connector = connector.clone();
        let io = tower_service::Service::call(&mut connector, uri.clone())
            .await
            .map_err(|e| SendError::Connect(chain(&*e)))?;
        let (sender, driver) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(chain(&e)))?;
        Ok(Box::new(Conn {
            route: Arc::clone(route),
            sender,
            driver: Some(driver),
            idle_since: Instant::now(),
        }))
    }

    /// Let the connection read and write what it can; false once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(d) = self.driver.as_mut() else {
            return false;
        };
        match Pin::new(d).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(_) => {
                self.driver = None;
                false
            }
        }
    }

    /// Whether the connection can take a request now (it is alive and idle).
    async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            if !self.drive(cx) {
                return Poll::Ready(false);
            }
            self.sender.poll_ready(cx).map(|r| r.is_ok())
        })
        .await
    }

    /// Send `req`, driving the connection until the response head arrives.
    async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Full<Bytes>>>> {
        let mut answer = std::pin::pin!(self.sender.try_send_request(req));
        poll_fn(|cx| {
            // Once the connection has ended, the answer resolves with the reason.
            self.drive(cx);
            answer.as_mut().poll(cx)
        })
        .await
    }
}

/// Send `req` to the route's upstream over the client connection's upstream connection
/// (opened when there is none, or when it has ended, gone idle or serves another route).
/// The response body drives that connection and gives it back to `slot` when it ends.
pub(crate) async fn send(
    connector: &Connector,
    route: &Arc<str>,
    slot: &Slot,
    mut req: Request<Full<Bytes>>,
) -> Result<Response<InlineBody>, SendError> {
    let uri = req.uri().clone();
    // HTTP/1.1 requests carry the origin form; the client's Host header goes through as it
    // came (a request without one gets the upstream's).
    if !req.headers().contains_key(http::header::HOST) {
        if let Some(a) = uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                req.headers_mut().insert(http::header::HOST, v);
            }
        }
    }
    *req.uri_mut() = uri
        .path_and_query()
        .map(|pq| Uri::from(pq.clone()))
        .unwrap_or_else(|| Uri::from_static("/"));
    let kept = slot
        .lock()
        .map(|mut s| s.take())
        .unwrap_or_default()
        .filter(|c| Arc::ptr_eq(&c.route, route) && c.idle_since.elapsed() < MAX_IDLE);
    let mut reused = match kept {
        Some(mut c) => c.ready().await.then_some(c),
        None => None,
    };
    loop {
        let fresh = reused.is_none();
        let mut conn = match reused.take() {
            Some(c) => c,
            None => Conn::open(connector, route, &uri).await?,
        };
        match conn.send(req).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                return Ok(Response::from_parts(
                    parts,
                    InlineBody {
                        body,
                        conn: Some(conn),
                        slot: Arc::clone(slot),
                        ended: false,
                    },
                ));
            }
            Err(mut e) => match e.take_message() {
                // Not written: the kept connection ended just now. Once more, on a new one.
                Some(r) if !fresh => req = r,
                _ => return Err(SendError::Failed(chain(e.error()))),
            },
        }
    }
}

/// A response body read from a [`Conn`]: polling it drives the connection, and the
/// connection goes back to its slot once the body has ended.
pub(crate) struct InlineBody {
    body: Incoming,
    conn: Option<Box<Conn>>,
    slot: Slot,
    ended: bool,
}

impl InlineBody {
    fn give_back(&mut self) {
        if let Some(mut c) = self.conn.take() {
            if c.driver.is_some() && !c.sender.is_closed() {
                c.idle_since = Instant::now();
                if let Ok(mut s) = self.slot.lock() {
                    *s = Some(c);
                }
            }
        }
    }
}

impl Body for InlineBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(c) = this.conn.as_mut() {
            c.drive(cx);
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                this.ended = true;
                // Let the connection see the end of the message and become idle.
                if let Some(c) = this.conn.as_mut() {
                    c.drive(cx);
                }
                this.give_back();
            }
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for InlineBody {
    fn drop(&mut self) {
        // A body read to its end (or one that had none) leaves the connection reusable; one
        // dropped part-way (the client went away) closes it.
        if self.ended || self.body.is_end_stream() {
            self.give_back();
        }
    }
}
