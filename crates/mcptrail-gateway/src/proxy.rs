//! The reverse proxy: route by path prefix, authenticate, open a trace span, forward to the
//! upstream with every end-to-end header unchanged (Host and Origin included), and relay the
//! response as it arrives — JSON bodies and SSE streams alike, chunk by chunk, bytes unchanged
//! (one exception: the legacy HTTP+SSE `endpoint` event, whose URL must point back through
//! the gateway). A copy of each MCP message goes to the recording thread.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Sender;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame as BodyFrame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use mcptrail_event::{Direction, EventKind, Flag, HttpDetail, ServerInfo, UserIdentity};
use mcptrail_tap::{Frame, FrameBody, FrameContext, MessageCopy};
use serde_json::json;

use crate::auth::{Authenticator, Caller, Denied};
use crate::config::{GatewayConfig, RouteConfig};
use crate::metrics::Metrics;
use crate::record::{self, RecordMsg, SessionKey, SessionOpen};
use crate::sse::SseParser;
use crate::stdio_bridge::StdioBridge;
use crate::tls::CertIdentity;
use crate::trace::{self, TraceParent};
use crate::upstream::{Connector, Slot};
use crate::GatewayError;

/// Body of every response the gateway sends.
pub(crate) type RespBody = BoxBody<Bytes, BoxError>;
/// Errors a response body can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MCP_SESSION_ID: &str = "mcp-session-id";

/// One route, ready to serve.
pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    path: String,
    pub(crate) target: Target,
    /// The upstream URL or command line, for messages.
    shown: String,
    pub(crate) auth: Authenticator,
    resource_metadata: Option<String>,
    streamable: Arc<SessionOpen>,
    legacy: Arc<SessionOpen>,
}

/// Where a route's requests go.
pub(crate) enum Target {
    /// An HTTP(S) server.
    Http {
        base: Uri,
        connector: Box<Connector>,
    },
    /// A stdio server the gateway runs, one process per session.
    Stdio(Arc<StdioBridge>),
}

impl Route {
    pub(crate) fn new(
        cfg: &RouteConfig,
        connect_timeout: Duration,
        egress: &mcptrail_egress::EgressConfig,
    ) -> Result<Self, GatewayError> {
        let name: Arc<str> = cfg.name.clone().unwrap_or_else(|| cfg.path.clone()).into();
        let err = |field: &str, message: String| GatewayError::Config {
            route: name.to_string(),
            field: field.into(),
            message,
        };
        if !cfg.path.starts_with('/') || cfg.path.contains(['?', '#']) {
            return Err(err(
                "path",
                format!("`{}` must be a path starting with `/`", cfg.path),
            ));
        }
        let (target, shown, server): (Target, String, ServerInfo) =
            match (&cfg.upstream, &cfg.command) {
                (Some(_), None) if cfg.egress => {
                    return Err(err(
                        "egress",
                        "applies to stdio routes (`command`) only: the gateway does not start an HTTP upstream, so it cannot put it behind the egress proxy".into(),
                    ))
                }
                (Some(url), None) => {
                    let base: Uri = url
                        .parse()
                        .map_err(|e| err("upstream", format!("`{url}` is not a URL: {e}")))?;
                    if !matches!(base.scheme_str(), Some("http" | "https")) || base.host().is_none() {
                        return Err(err("upstream", format!("`{url}` must be an http:// or https:// URL")));
                    }
                    if base.query().is_some() {
                        return Err(err("upstream", "the upstream URL must not have a query".into()));
                    }
                    let connector = crate::upstream::connector(
                        cfg.upstream_ca_file.as_deref(),
                        connect_timeout,
                    )?;
                    let server = ServerInfo {
                        name: Some(name.to_string()),
                        url: Some(url.clone()),
                        ..Default::default()
                    };
                    (
                        Target::Http {
                            base,
                            connector: Box::new(connector),
                        },
                        url.clone(),
                        server,
                    )
                }
                (None, Some(cmd)) if !cmd.is_empty() && !cmd[0].is_empty() => {
                    let server = ServerInfo {
                        name: Some(name.to_string()),
                        command: cmd.clone(),
                        ..Default::default()
                    };
                    let egress = if cfg.egress {
                        mcptrail_egress::EgressPolicy::new(egress)
                            .map_err(|e| err("egress", e.to_string()))?;
                        Some((egress.clone(), Arc::clone(&name)))
                    } else {
                        None
                    };
                    let bridge = StdioBridge::new(cmd.clone(), cfg.max_sessions.max(1), egress);
                    (Target::Stdio(Arc::new(bridge)), format!("`{}`", cmd.join(" ")), server)
                }
                (None, Some(_)) => return Err(err("command", "the command is empty".into())),
                _ => {
                    return Err(err(
                        "upstream",
                        "give exactly one of `upstream` (an HTTP server's URL) or `command` (a stdio server to run)".into(),
                    ))
                }
            };
        let auth = Authenticator::from_config(&name, &cfg.auth)?;
        let stdio = matches!(target, Target::Stdio(_));
        let open = |transport: &str| {
            let mut server = server.clone();
            server.transport = if stdio { "stdio" } else { transport }.into();
            Arc::new(SessionOpen {
                server,
                agent_id: cfg.agent_id.clone(),
            })
        };
        Ok(Route {
            path: cfg.path.trim_end_matches('/').to_string(),
            streamable: open("streamable_http"),
            legacy: open("sse"),
            target,
            shown,
            auth,
            resource_metadata: cfg.auth.resource_metadata.clone(),
            name,
        })
    }

    /// The part of `path` after the route prefix, if the route serves it.
    fn rest<'p>(&self, path: &'p str) -> Option<&'p str> {
        let rest = path.strip_prefix(self.path.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }

    fn base(&self) -> Option<&Uri> {
        match &self.target {
            Target::Http { base, .. } => Some(base),
            Target::Stdio(_) => None,
        }
    }

    /// Send a request to the route's server (over the client connection's upstream
    /// connection kept in `slot`); `Err` says why it could not be reached.
    async fn send(
        &self,
        slot: &Slot,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<RespBody>, String> {
        match &self.target {
            Target::Http { connector, .. } => {
                crate::upstream::send(connector, &self.name, slot, req)
                    .await
                    .map(|r| r.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed()))
                    .map_err(|e| e.to_string())
            }
            Target::Stdio(bridge) => bridge
                .send(req)
                .await
                .map_err(|e| format!("unreachable: {}", e.0)),
        }
    }

    fn upstream_uri(&self, rest: &str, query: Option<&str>) -> Uri {
        let Some(upstream) = self.base() else {
            // The stdio bridge reads only method, headers and body.
            return Uri::from_static("/");
        };
        let base = upstream.path().trim_end_matches('/');
        let mut pq = format!("{base}{rest}");
        if pq.is_empty() {
            pq.push('/');
        }
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        let mut parts = upstream.clone().into_parts();
        parts.path_and_query = pq.parse().ok();
        Uri::from_parts(parts).unwrap_or_else(|_| upstream.clone())
    }
}

/// Everything request handlers share.
pub(crate) struct Shared {
    pub(crate) routes: Vec<Route>,
    pub(crate) cfg: GatewayConfig,
    pub(crate) record: Sender<RecordMsg>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) seen: Arc<SeenSse>,
}

/// SSE event ids already relayed, per session: a resumed stream (`Last-Event-ID`) replays
/// events the record already has; those are flagged `replayed`. Bounded: the newest
/// [`SEEN_PER_SESSION`] ids of at most [`SEEN_SESSIONS`] sessions.
#[derive(Default)]
pub(crate) struct SeenSse {
    sessions: std::sync::Mutex<std::collections::HashMap<SessionKey, SeenIds>>,
}

#[derive(Default)]
struct SeenIds {
    set: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
}

const SEEN_PER_SESSION: usize = 4096;
const SEEN_SESSIONS: usize = 4096;

impl SeenSse {
    /// Whether `id` is new in `key`'s session (and remember it).
    fn first_time(&self, key: &SessionKey, id: &str) -> bool {
        let mut all = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        // The session is usually known already: its key is cloned only when it is new.
        if !all.contains_key(key) {
            if all.len() >= SEEN_SESSIONS {
                if let Some(k) = all.keys().next().cloned() {
                    all.remove(&k);
                }
            }
            all.insert(key.clone(), Default::default());
        }
        let Some(ids) = all.get_mut(key) else {
            return true; // inserted just above
        };
        if ids.set.contains(id) {
            return false;
        }
        if ids.order.len() >= SEEN_PER_SESSION {
            if let Some(old) = ids.order.pop_front() {
                ids.set.remove(&old);
            }
        }
        ids.set.insert(id.to_string());
        ids.order.push_back(id.to_string());
        true
    }

    fn forget(&self, key: &SessionKey) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

impl Shared {
    fn route_for(&self, path: &str) -> Option<(&Route, String)> {
        self.routes
            .iter()
            .filter_map(|r| r.rest(path).map(|rest| (r, rest.to_string())))
            .max_by_key(|(r, _)| r.path.len())
    }

    fn send(&self, msg: RecordMsg) {
        let _ = self.record.send(msg);
    }
}

/// The client at the other end of a connection: its address, and that address as events
/// show it (formatted once per connection, not for each event).
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    addr: SocketAddr,
    shown: Arc<str>,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Peer {
            addr,
            shown: addr.to_string().into(),
        }
    }
}

/// Handle one request. Never fails: every problem is answered with a status and recorded.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: Peer,
    cert: Option<Arc<CertIdentity>>,
    slot: Slot,
) -> Result<Response<RespBody>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let Some((route, rest)) = shared.route_for(req.uri().path()) else {
        shared
            .metrics
            .request(&Arc::from(""), &method, 404, started);
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "mcptrail gateway: no route for this path\n",
        ));
    };
    let resp = serve(&shared, route, rest, req, &peer, cert.as_deref(), &slot).await;
    shared
        .metrics
        .request(&route.name, &method, resp.status().as_u16(), started);
    Ok(resp)
}

struct Exchange<'a> {
    shared: &'a Shared,
    route: &'a Route,
    method: Method,
    peer: &'a Peer,
    caller: UserIdentity,
}

impl Exchange<'_> {
    fn http(&self, mcp_session_id: Option<String>, status: Option<u16>) -> HttpDetail {
        HttpDetail {
            route: self.route.name.to_string(),
            method: self.method.as_str().to_string(),
            mcp_session_id,
            client_address: Some(self.peer.shown.to_string()),
            status,
        }
    }

    fn event(
        &self,
        kind: EventKind,
        status: u16,
        detail: serde_json::Value,
    ) -> Box<mcptrail_event::Event> {
        let mut e = record::event(kind);
        e.user_identity = Some(self.caller.clone());
        e.server = Some(self.route.streamable.server.clone());
        e.agent_id = self.route.streamable.agent_id.clone();
        e.http = Some(self.http(None, Some(status)));
        e.detail = Some(detail);
        Box::new(e)
    }
}

async fn serve(
    shared: &Shared,
    route: &Route,
    rest: String,
    req: Request<Incoming>,
    peer: &Peer,
    cert: Option<&CertIdentity>,
    slot: &Slot,
) -> Response<RespBody> {
    // ---- who ----
    if let Authenticator::Jwt(v) = &route.auth {
        if let Ok(t) = crate::auth::bearer(req.headers()) {
            if v.needs_fetch(t) {
                if let Err(e) = v.refresh(true).await {
                    eprintln!("mcptrail gateway: route {}: {e}", route.name);
                }
            }
        }
    }
    let caller = match route.auth.check(req.headers(), peer.addr.ip(), cert) {
        Ok(Caller { user }) => user,
        Err(denied) => return deny(shared, route, &req, peer, denied),
    };
    let (mut parts, body) = req.into_parts();
    let x = Exchange {
        shared,
        route,
        method: parts.method.clone(),
        peer,
        caller,
    };
    let request_session = header_str(&parts.headers, MCP_SESSION_ID);

    // ---- the request body, whole (bounded in size and time) ----
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = shared.cfg.max_body_bytes;
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(&x, declared);
    }
    let read = tokio::time::timeout(
        Duration::from_secs(shared.cfg.body_read_timeout_secs.max(1)),
        Limited::new(body, limit).collect(),
    )
    .await;
    let body = match read {
        Err(_) => {
            shared.send(RecordMsg::Event {
                key: None,
                event: x.event(
                    EventKind::Malformed,
                    408,
                    json!({"error": "body_timeout", "message": format!("the client did not send its request body within {} s; refused with 408", shared.cfg.body_read_timeout_secs)}),
                ),
            });
            return jsonrpc_error(
                StatusCode::REQUEST_TIMEOUT,
                None,
                -32600,
                "mcptrail gateway: request body not received in time",
            );
        }
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return too_large(&x, declared);
            }
            // The client went away or sent a broken body: nothing reached the server.
            shared.send(RecordMsg::Event {
                key: None,
                event: x.event(
                    EventKind::Malformed,
                    400,
                    json!({"error": "body_unreadable", "message": format!("the request body could not be read: {e}")}),
                ),
            });
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                None,
                -32700,
                "mcptrail gateway: the request body could not be read",
            );
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    shared.metrics.bytes(&route.name, "in", body.len() as u64);

    // ---- trace span (for POSTs carrying MCP messages) ----
    let meta_tp = if body.is_empty() {
        None
    } else {
        trace::meta_traceparent(&body)
    };
    let header_tp = header_str(&parts.headers, "traceparent");
    let span = (parts.method == Method::POST && !body.is_empty()).then(|| {
        let parent = meta_tp
            .as_deref()
            .and_then(TraceParent::parse)
            .or_else(|| header_tp.as_deref().and_then(TraceParent::parse));
        trace::open_span(parent.as_ref())
    });
    let request_frame = (!body.is_empty()).then(|| {
        let mut copy = MessageCopy::new(shared.cfg.max_body_bytes.max(1));
        copy.absorb(&body);
        Frame::message(
            Direction::ClientToServer,
            copy.take_exact(),
            Some(FrameContext {
                user: Some(x.caller.clone()),
                trace: span.as_ref().map(|s| s.ids.clone()),
                http: None,
                flags: Vec::new(),
            }),
        )
    });

    // ---- forward ----
    let mut up_body = body.clone();
    // The request's own headers, hop-by-hop ones removed, go upstream (nothing reads them
    // after this).
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(&mut headers);
    if let (Some(span), true) = (&span, shared.cfg.trace.propagate) {
        if let Ok(v) = HeaderValue::from_str(&span.traceparent) {
            headers.insert(HeaderName::from_static("traceparent"), v);
        }
        if let Some(old) = &meta_tp {
            let mut b = body.to_vec();
            if trace::rewrite_meta_traceparent(&mut b, old, &span.traceparent) {
                up_body = Bytes::from(b);
            }
        } else if shared.cfg.trace.inject_meta {
            if let Some(b) = trace::inject_meta_traceparent(&body, &span.traceparent) {
                headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(b.len()));
                up_body = Bytes::from(b);
            }
        }
    }
    let uri = route.upstream_uri(&rest, parts.uri.query());
    let mut up = Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .version(http::Version::HTTP_11);
    if let Some(h) = up.headers_mut() {
        *h = headers;
    }
    let up = match up.body(Full::new(up_body)) {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("mcptrail gateway: {e}\n")),
    };
    let legacy_post_key = (request_session.is_none())
        .then(|| {
            parts
                .uri
                .query()
                .map(|q| format!("sse:{}?{q}", parts.uri.path()))
        })
        .flatten();
    let timeout = Duration::from_secs(shared.cfg.upstream_response_timeout_secs.max(1));
    let mut unanswered = Unanswered {
        x: &x,
        session: request_session.clone().or_else(|| legacy_post_key.clone()),
        legacy: request_session.is_none() && legacy_post_key.is_some(),
        frame: request_frame,
    };
    let result = tokio::time::timeout(timeout, route.send(slot, up)).await;
    let request_frame = unanswered.frame.take();
    drop(unanswered);
    let resp = match result {
        Ok(Ok(resp)) => resp,
        failed => {
            let (status, what) = match failed {
                Err(_) => (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("no response within {} s", timeout.as_secs()),
                ),
                Ok(Err(e)) => (StatusCode::BAD_GATEWAY, e),
                Ok(Ok(_)) => unreachable!(),
            };
            return upstream_failed(
                &x,
                request_session,
                legacy_post_key,
                request_frame,
                &body,
                status,
                &what,
            );
        }
    };

    // ---- which session, then record the request ----
    let status = resp.status();
    let response_session = header_str(resp.headers(), MCP_SESSION_ID);
    let session_id = request_session.clone().or(response_session);
    let (key, open) = match (&session_id, &legacy_post_key) {
        (Some(id), _) => (x.key(Some(id.clone())), &route.streamable),
        (None, Some(k)) => (x.key(Some(k.clone())), &route.legacy),
        (None, None) => (x.key(None), &route.streamable),
    };
    let mcp_id = session_id
        .clone()
        .or_else(|| legacy_post_key.as_deref().and_then(legacy_session_param));
    if let Some(mut f) = request_frame {
        if let Some(ctx) = f.context.as_mut() {
            ctx.http = Some(x.http(mcp_id.clone(), Some(status.as_u16())));
        }
        shared.send(RecordMsg::Frame {
            key: key.clone(),
            open: Arc::clone(open),
            frame: f,
        });
    }
    if parts.method == Method::DELETE && status.is_success() {
        shared.seen.forget(&key);
        shared.send(RecordMsg::End {
            key: key.clone(),
            reason: "client_deleted",
        });
    } else if status == StatusCode::NOT_FOUND && request_session.is_some() {
        shared.seen.forget(&key);
        shared.send(RecordMsg::End {
            key: key.clone(),
            reason: "session_not_found",
        });
    }

    // ---- relay the response as it comes ----
    let (mut rparts, rbody) = resp.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    if parts.method == Method::GET && request_session.is_none() {
        // A legacy stream's endpoint event may be rewritten: its length can change.
        rparts.headers.remove(CONTENT_LENGTH);
    }
    let content_type = header_str(&rparts.headers, CONTENT_TYPE.as_str()).unwrap_or_default();
    let is_sse = content_type.starts_with("text/event-stream");
    let is_json = content_type.starts_with("application/json");
    let legacy_get = is_sse && parts.method == Method::GET && request_session.is_none();
    let copy = if is_sse {
        Copy::Sse(Box::new(SseParser::new(
            shared.cfg.max_body_bytes.max(1 << 20),
        )))
    } else if is_json {
        Copy::Json(MessageCopy::new(shared.cfg.max_body_bytes.max(1 << 20)))
    } else {
        if status.is_server_error() {
            shared.send(RecordMsg::Event {
                key: Some(key.clone()),
                event: x.event(
                    EventKind::UpstreamError,
                    status.as_u16(),
                    json!({"error": "upstream_status", "message": format!("the upstream answered HTTP {status} ({content_type})"), "status": status.as_u16()}),
                ),
            });
        }
        Copy::None
    };
    let ctx = FrameContext {
        user: Some(x.caller.clone()),
        trace: None,
        http: Some(x.http(mcp_id, Some(status.as_u16()))),
        flags: Vec::new(),
    };
    let tap = TapBody {
        inner: rbody,
        copy,
        record: shared.record.clone(),
        metrics: Arc::clone(&shared.metrics),
        seen: Arc::clone(&shared.seen),
        route: Arc::clone(&route.name),
        key: (!legacy_get).then_some(key),
        open: Arc::clone(if legacy_get { &route.legacy } else { open }),
        ctx,
        legacy: route.base().filter(|_| legacy_get).map(|base| Legacy {
            held: Vec::new(),
            route_path: route.path.clone(),
            upstream: base.clone(),
            caller: x.caller.clone(),
            route_name: Arc::clone(&route.name),
        }),
        done: false,
    };
    Response::from_parts(rparts, tap.boxed())
}

/// A request sent upstream whose answer has not come yet. Dropped with its frame still in it
/// (the client went away, or the gateway stopped, while the upstream worked on it), it records
/// the request anyway: the server got it and may have acted on it. The recorder then closes it
/// as unanswered.
struct Unanswered<'x, 'a> {
    x: &'x Exchange<'a>,
    /// `Mcp-Session-Id`, or the legacy transport's key.
    session: Option<String>,
    legacy: bool,
    frame: Option<Frame>,
}

impl Drop for Unanswered<'_, '_> {
    fn drop(&mut self) {
        let Some(mut frame) = self.frame.take() else {
            return;
        };
        let x = self.x;
        let mcp_id = if self.legacy {
            self.session.as_deref().and_then(legacy_session_param)
        } else {
            self.session.clone()
        };
        if let Some(ctx) = frame.context.as_mut() {
            ctx.http = Some(x.http(mcp_id, None));
        }
        x.shared.send(RecordMsg::Frame {
            key: x.key(self.session.take()),
            open: Arc::clone(if self.legacy {
                &x.route.legacy
            } else {
                &x.route.streamable
            }),
            frame,
        });
    }
}

impl Exchange<'_> {
    /// The recorded session of `id` (`Mcp-Session-Id` or the legacy transport's key); none:
    /// the caller's session with a server that has no sessions.
    fn key(&self, id: Option<String>) -> SessionKey {
        SessionKey {
            route: Arc::clone(&self.route.name),
            id: id.unwrap_or_else(|| format!("stateless:{}", self.caller.principal)),
        }
    }
}

fn deny(
    shared: &Shared,
    route: &Route,
    req: &Request<Incoming>,
    peer: &Peer,
    denied: Denied,
) -> Response<RespBody> {
    shared.metrics.auth_denied(&route.name, denied.reason);
    let mut e = record::event(EventKind::AuthDenied);
    e.server = Some(route.streamable.server.clone());
    e.agent_id = route.streamable.agent_id.clone();
    e.http = Some(HttpDetail {
        route: route.name.to_string(),
        method: req.method().as_str().to_string(),
        mcp_session_id: header_str(req.headers(), MCP_SESSION_ID),
        client_address: Some(peer.shown.to_string()),
        status: Some(401),
    });
    e.detail = Some(json!({
        "reason": denied.reason,
        "message": denied.detail,
        "path": req.uri().path(),
    }));
    shared.send(RecordMsg::Event {
        key: None,
        event: Box::new(e),
    });
    // RFC 6750 §3: no error code when no credentials were sent; RFC 9728 §5.1: point at the
    // protected resource metadata.
    let mut challenge = String::from("Bearer realm=\"mcptrail\"");
    if !matches!(denied.reason, "missing_token" | "missing_header") {
        challenge.push_str(", error=\"invalid_token\", error_description=\"");
        challenge.extend(
            denied
                .detail
                .chars()
                .filter(|c| *c != '"' && *c != '\\' && !c.is_control()),
        );
        challenge.push('"');
    }
    if let Some(url) = &route.resource_metadata {
        challenge.push_str(&format!(", resource_metadata=\"{url}\""));
    }
    let mut resp = jsonrpc_error(
        StatusCode::UNAUTHORIZED,
        None,
        -32001,
        &format!("unauthorized: {}", denied.detail),
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
    }
    resp
}

fn too_large(x: &Exchange<'_>, declared: Option<u64>) -> Response<RespBody> {
    let limit = x.shared.cfg.max_body_bytes;
    x.shared.send(RecordMsg::Event {
        key: None,
        event: x.event(
            EventKind::Malformed,
            413,
            json!({"error": "body_too_large", "message": format!("request body over gateway.max_body_bytes ({limit}); refused with 413, not forwarded"), "declared_length": declared}),
        ),
    });
    jsonrpc_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
        -32600,
        &format!("mcptrail gateway: request body larger than {limit} bytes"),
    )
}

#[allow(clippy::too_many_arguments)]
fn upstream_failed(
    x: &Exchange<'_>,
    request_session: Option<String>,
    legacy_key: Option<String>,
    request_frame: Option<Frame>,
    body: &Bytes,
    status: StatusCode,
    what: &str,
) -> Response<RespBody> {
    let shared = x.shared;
    let route = x.route;
    shared.metrics.upstream_error(&route.name);
    let key = x.key(request_session.clone().or(legacy_key));
    let message = format!("mcptrail gateway: upstream {} {what}", route.shown);
    // The request was seen; record it, then the answer the client got in the server's place.
    let id = single_request_id(body);
    if let Some(mut f) = request_frame {
        if let Some(ctx) = f.context.as_mut() {
            ctx.http = Some(x.http(request_session.clone(), Some(status.as_u16())));
        }
        shared.send(RecordMsg::Frame {
            key: key.clone(),
            open: Arc::clone(&route.streamable),
            frame: f,
        });
    }
    let code = if status == StatusCode::GATEWAY_TIMEOUT {
        -32001
    } else {
        -32002
    };
    let payload = jsonrpc_error_body(id.clone(), code, &message);
    if id.is_some() {
        let frame = Frame::message(
            Direction::ServerToClient,
            FrameBody::Line(payload.clone().into_bytes()),
            Some(FrameContext {
                user: Some(x.caller.clone()),
                trace: None,
                http: Some(x.http(request_session, Some(status.as_u16()))),
                flags: vec![Flag::Synthesized],
            }),
        );
        shared.send(RecordMsg::Frame {
            key: key.clone(),
            open: Arc::clone(&route.streamable),
            frame,
        });
    }
    shared.send(RecordMsg::Event {
        key: Some(key),
        event: x.event(
            EventKind::UpstreamError,
            status.as_u16(),
            json!({"error": if status == StatusCode::GATEWAY_TIMEOUT { "timeout" } else { "unreachable" }, "message": message, "upstream": route.shown}),
        ),
    });
    let mut resp = Response::new(
        Full::new(Bytes::from(payload))
            .map_err(|e| match e {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The `id` of a body holding one JSON-RPC request.
fn single_request_id(body: &[u8]) -> Option<serde_json::Value> {
    #[derive(serde::Deserialize)]
    struct Req {
        id: Option<serde_json::Value>,
        method: Option<serde::de::IgnoredAny>,
    }
    let r: Req = serde_json::from_slice(body).ok()?;
    r.method?;
    r.id.filter(|v| !v.is_null())
}

fn legacy_session_param(key: &str) -> Option<String> {
    let q = key.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        matches!(k, "sessionId" | "session_id").then(|| v.to_string())
    })
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Remove the hop-by-hop headers (RFC 9110 §7.6.1: the fixed ones and those `Connection`
/// names), leaving the end-to-end ones as they were.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    use http::header::{
        CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING,
        UPGRADE,
    };
    const HOP: [HeaderName; 9] = [
        CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ];
    // The common case, nothing to take out (no `Connection` header, so none it names either),
    // costs nine lookups and copies nothing.
    if !HOP.iter().any(|n| h.contains_key(n)) {
        return;
    }
    let named: Vec<String> = h
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let hop = |n: &HeaderName| HOP.contains(n) || named.iter().any(|x| x == n.as_str());
    // Rebuilt rather than removed from: `HeaderMap::remove` would reorder the rest.
    let mut kept = HeaderMap::with_capacity(h.len());
    for (k, v) in h.iter() {
        if !hop(k) {
            kept.append(k.clone(), v.clone());
        }
    }
    *h = kept;
}

fn plain(status: StatusCode, text: &str) -> Response<RespBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(text.to_string()))
            .map_err(|e| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn jsonrpc_error_body(id: Option<serde_json::Value>, code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

fn jsonrpc_error(
    status: StatusCode,
    id: Option<serde_json::Value>,
    code: i64,
    message: &str,
) -> Response<RespBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(jsonrpc_error_body(id, code, message)))
            .map_err(|e| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

// ---- the relayed response body ----

enum Copy {
    None,
    Json(MessageCopy),
    Sse(Box<SseParser>),
}

/// A legacy HTTP+SSE stream before its `endpoint` event: bytes are held back (at most
/// [`LEGACY_HOLD_MAX`]) until the event is complete, so its URL can be rewritten.
struct Legacy {
    held: Vec<u8>,
    route_path: String,
    upstream: Uri,
    caller: UserIdentity,
    route_name: Arc<str>,
}

const LEGACY_HOLD_MAX: usize = 64 * 1024;

struct TapBody {
    inner: RespBody,
    seen: Arc<SeenSse>,
    copy: Copy,
    record: Sender<RecordMsg>,
    metrics: Arc<Metrics>,
    route: Arc<str>,
    /// `None` on a legacy stream until its endpoint names the session.
    key: Option<SessionKey>,
    open: Arc<SessionOpen>,
    ctx: FrameContext,
    legacy: Option<Legacy>,
    done: bool,
}

impl TapBody {
    fn send_frame(&self, body: FrameBody, sse_id: Option<&str>) {
        let Some(key) = &self.key else { return };
        let mut ctx = self.ctx.clone();
        if sse_id.is_some_and(|id| !self.seen.first_time(key, id)) {
            ctx.flags.push(Flag::Replayed);
        }
        let frame = Frame::message(Direction::ServerToClient, body, Some(ctx));
        let _ = self.record.send(RecordMsg::Frame {
            key: key.clone(),
            open: Arc::clone(&self.open),
            frame,
        });
    }

    fn observe(&mut self, data: &[u8]) {
        match &mut self.copy {
            Copy::None => {}
            Copy::Json(c) => c.absorb(data),
            Copy::Sse(p) => {
                let mut events = Vec::new();
                p.feed(data, &mut events);
                for ev in events {
                    // Priming events (an id, empty data) and keep-alives carry no message.
                    if matches!(&ev.data, FrameBody::Line(l) if l.iter().all(u8::is_ascii_whitespace))
                    {
                        continue;
                    }
                    match ev.event.as_deref() {
                        Some("endpoint") => {} // transport plumbing, handled by the rewrite
                        _ => self.send_frame(ev.data, ev.id.as_deref()),
                    }
                }
            }
        }
    }

    /// Legacy stream: hold bytes until the endpoint event is complete, then rewrite it.
    /// Returns the bytes to send now (possibly none).
    fn legacy_step(&mut self, data: Bytes) -> Option<Bytes> {
        let legacy = self.legacy.as_mut()?;
        legacy.held.extend_from_slice(&data);
        let mut parser = SseParser::new(LEGACY_HOLD_MAX);
        let mut events = Vec::new();
        parser.feed(&legacy.held, &mut events);
        let Some(first) = events.into_iter().next() else {
            if legacy.held.len() > LEGACY_HOLD_MAX {
                // No event in 64 KiB: not the legacy transport; release unchanged.
                let held = std::mem::take(&mut legacy.held);
                self.legacy = None;
                return Some(Bytes::from(held));
            }
            return Some(Bytes::new());
        };
        let legacy = self.legacy.take()?;
        let end = first.end_offset as usize;
        let FrameBody::Line(data) = &first.data else {
            return Some(Bytes::from(legacy.held));
        };
        if first.event.as_deref() != Some("endpoint") {
            return Some(Bytes::from(legacy.held));
        }
        let endpoint = String::from_utf8_lossy(data).trim().to_string();
        let Some(gw) = gateway_endpoint(&endpoint, &legacy.upstream, &legacy.route_path) else {
            return Some(Bytes::from(legacy.held));
        };
        self.key = Some(SessionKey {
            route: Arc::clone(&legacy.route_name),
            id: format!("sse:{gw}"),
        });
        if let Some(h) = self.ctx.http.as_mut() {
            h.mcp_session_id = legacy_session_param(&gw).or(Some(gw.clone()));
        }
        self.ctx.user = Some(legacy.caller);
        let mut out = format!("event: endpoint\ndata: {gw}\n\n").into_bytes();
        out.extend_from_slice(&legacy.held[end..]);
        // The rest of this chunk goes to the recorder's parser as usual.
        self.observe(&legacy.held[end..]);
        Some(Bytes::from(out))
    }

    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        match std::mem::replace(&mut self.copy, Copy::None) {
            Copy::None => {}
            Copy::Json(mut c) => {
                if let Some(body) = c.take() {
                    self.send_frame(body, None);
                }
            }
            Copy::Sse(mut p) => {
                if let Some(ev) = p.finish() {
                    self.send_frame(ev.data, ev.id.as_deref());
                }
            }
        }
    }
}

/// Where a legacy client must POST: the upstream's endpoint, mapped under the route.
fn gateway_endpoint(endpoint: &str, upstream: &Uri, route_path: &str) -> Option<String> {
    // Resolve against the upstream (absolute URL, absolute path or relative path).
    let (path_query, origin_ok) = if let Ok(u) = endpoint.parse::<Uri>() {
        if u.scheme().is_some() {
            let same = u.host() == upstream.host() && u.port_u16() == upstream.port_u16();
            (u.path_and_query().map(|p| p.as_str().to_string())?, same)
        } else if endpoint.starts_with('/') {
            (endpoint.to_string(), true)
        } else {
            let base = upstream.path();
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            (
                format!("{}{endpoint}", if dir.is_empty() { "/" } else { dir }),
                true,
            )
        }
    } else {
        return None;
    };
    if !origin_ok {
        return None;
    }
    let base = upstream.path().trim_end_matches('/');
    let rest = path_query.strip_prefix(base)?;
    if !(rest.starts_with('/') || rest.starts_with('?')) {
        return None;
    }
    Some(format!("{route_path}{rest}"))
}

impl Body for TapBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    if let Some(l) = this.legacy.take() {
                        this.finish();
                        if !l.held.is_empty() {
                            return Poll::Ready(Some(Ok(BodyFrame::data(Bytes::from(l.held)))));
                        }
                        return Poll::Ready(None);
                    }
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    let mut ev = record::event(EventKind::UpstreamError);
                    ev.user_identity = this.ctx.user.clone();
                    ev.http = this.ctx.http.clone();
                    ev.detail = Some(
                        json!({"error": "stream_broken", "message": format!("the upstream's response broke off mid-stream: {e}")}),
                    );
                    let _ = this.record.send(RecordMsg::Event {
                        key: this.key.clone(),
                        event: Box::new(ev),
                    });
                    this.metrics.upstream_error(&this.route);
                    this.finish();
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers: HTTP/1.1 upstreams rarely send them; not relayed
                    };
                    if this.legacy.is_some() {
                        this.metrics.bytes(&this.route, "out", data.len() as u64);
                        match this.legacy_step(data) {
                            Some(b) if b.is_empty() => continue,
                            Some(b) => return Poll::Ready(Some(Ok(BodyFrame::data(b)))),
                            None => continue,
                        }
                    }
                    this.metrics.bytes(&this.route, "out", data.len() as u64);
                    this.observe(&data);
                    return Poll::Ready(Some(Ok(BodyFrame::data(data))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.legacy.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.legacy.is_some() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

impl Drop for TapBody {
    fn drop(&mut self) {
        // The client went away mid-response: what was relayed so far is recorded.
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_ones_stay_in_order() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("host", "gw.example:8080"),
            ("origin", "http://agent.local"),
            ("connection", "keep-alive, X-Private-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-private-hop", "drop me"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("accept", "application/json"),
            ("accept", "text/event-stream"),
            ("mcp-session-id", "s-1"),
        ] {
            h.append(
                HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<(String, String)> = h
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        let want = [
            ("host", "gw.example:8080"),
            ("origin", "http://agent.local"),
            ("accept", "application/json"),
            ("accept", "text/event-stream"),
            ("mcp-session-id", "s-1"),
        ];
        assert_eq!(
            left,
            want.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        );
        // Nothing to take out: the map is left as it is.
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }
}
