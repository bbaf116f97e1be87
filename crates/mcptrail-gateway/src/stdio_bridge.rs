//! A stdio MCP server exposed over Streamable HTTP, in process: a route with
//! `command = [...]` instead of `upstream`. Each MCP session (an `initialize` POST without
//! `Mcp-Session-Id`) spawns its own server process; the gateway issues the session id.
//! POSTs carrying requests are answered with an SSE stream that ends once each of their
//! requests is answered; messages the server starts itself (requests, notifications) go to
//! the newest POST stream still open, else the session's GET stream, else wait (bounded) for
//! one. DELETE ends the session (stdin closed, then SIGKILL after a grace period).
//!
//! The proxy treats the bridge like any upstream, so recording, identity and trace context
//! are the same as for HTTP servers; no network port is opened for it.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame as BodyFrame};
use http_body_util::{BodyExt, Full};
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::proxy::{BoxError, RespBody};
use crate::record::{RecordMsg, SessionKey};

/// Messages a session holds for a GET stream that is not open yet.
const BACKLOG_MAX: usize = 1000;

/// The bridge for one route.
pub(crate) struct StdioBridge {
    command: Vec<String>,
    max_sessions: usize,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// `egress = true`: each server process runs behind its own egress proxy, whose records
    /// go to the recorder (set once the recorder runs) under the session's key.
    egress: Option<EgressSetup>,
    /// The runtime the bridge was made on (the gateway's main one). Server processes and
    /// their readers run there, not on the serving thread of the connection that started
    /// them: they outlive that connection, and are stopped from the main runtime.
    runtime: Option<tokio::runtime::Handle>,
}

struct EgressSetup {
    cfg: mcptrail_egress::EgressConfig,
    route: Arc<str>,
    record: std::sync::OnceLock<crossbeam_channel::Sender<RecordMsg>>,
}

struct Session {
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    child: tokio::sync::Mutex<Child>,
    routing: Mutex<Routing>,
    egress: Mutex<Option<mcptrail_egress::EgressProxy>>,
}

impl Session {
    /// Stop the session's egress proxy off the async threads (it waits for its connections'
    /// records).
    fn stop_egress(&self) {
        let proxy = self.egress.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(p) = proxy {
            std::thread::spawn(move || p.shutdown(Duration::from_secs(2)));
        }
    }
}

#[derive(Default)]
struct Routing {
    next_stream: u64,
    /// Request id (raw JSON) → the POST stream that waits for its response.
    waiting: HashMap<String, u64>,
    /// Open POST streams: id, sender, requests still unanswered.
    posts: Vec<(u64, mpsc::UnboundedSender<Bytes>, usize)>,
    get: Option<mpsc::UnboundedSender<Bytes>>,
    backlog: VecDeque<Bytes>,
    dead: bool,
}

impl Routing {
    /// Deliver one server message.
    fn deliver(&mut self, line: &[u8]) {
        let frame = sse_frame(line);
        #[derive(serde::Deserialize)]
        struct Probe<'a> {
            #[serde(borrow)]
            id: Option<&'a RawValue>,
            method: Option<serde::de::IgnoredAny>,
        }
        let probe: Option<Probe<'_>> = serde_json::from_slice(line).ok();
        if let Some(Probe {
            id: Some(id),
            method: None,
        }) = probe
        {
            if let Some(stream) = self.waiting.remove(&compact(id.get())) {
                if let Some(pos) = self.posts.iter().position(|p| p.0 == stream) {
                    let _ = self.posts[pos].1.send(frame);
                    self.posts[pos].2 -= 1;
                    if self.posts[pos].2 == 0 {
                        self.posts.remove(pos); // its sender drops: the stream ends
                    }
                    return;
                }
            }
        }
        // Server-initiated (or a response nobody waits for): newest open POST stream, else
        // the GET stream, else keep it for the next GET.
        while let Some(last) = self.posts.last() {
            if last.1.send(frame.clone()).is_ok() {
                return;
            }
            self.posts.pop();
        }
        if let Some(get) = &self.get {
            if get.send(frame.clone()).is_ok() {
                return;
            }
            self.get = None;
        }
        if self.backlog.len() >= BACKLOG_MAX {
            self.backlog.pop_front();
        }
        self.backlog.push_back(frame);
    }
}

fn sse_frame(line: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(line.len() + 24);
    f.extend_from_slice(b"event: message\ndata: ");
    f.extend_from_slice(line);
    f.extend_from_slice(b"\n\n");
    Bytes::from(f)
}

/// Why the bridge could not serve a request as a server would.
#[derive(Debug)]
pub(crate) struct BridgeError(pub(crate) String);

impl StdioBridge {
    pub(crate) fn new(
        command: Vec<String>,
        max_sessions: usize,
        egress: Option<(mcptrail_egress::EgressConfig, Arc<str>)>,
    ) -> Self {
        StdioBridge {
            command,
            max_sessions,
            sessions: Mutex::new(HashMap::new()),
            egress: egress.map(|(cfg, route)| EgressSetup {
                cfg,
                route,
                record: std::sync::OnceLock::new(),
            }),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Where egress records go (the gateway's recorder).
    pub(crate) fn attach_recorder(&self, record: crossbeam_channel::Sender<RecordMsg>) {
        if let Some(e) = &self.egress {
            let _ = e.record.set(record);
        }
    }

    /// A proxy for the server process of session `id`, if this route wants one.
    fn start_egress(&self, id: &str) -> Result<Option<mcptrail_egress::EgressProxy>, BridgeError> {
        let Some(setup) = &self.egress else {
            return Ok(None);
        };
        let Some(record) = setup.record.get().cloned() else {
            return Ok(None);
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| BridgeError(format!("cannot open the egress proxy's port: {e}")))?;
        let key = SessionKey {
            route: Arc::clone(&setup.route),
            id: id.to_string(),
        };
        let observer = move |r: mcptrail_egress::EgressRecord| {
            let _ = record.send(RecordMsg::Egress {
                key: key.clone(),
                record: Box::new(r),
            });
        };
        mcptrail_egress::EgressProxy::serve(&setup.cfg, listener, Arc::new(observer))
            .map(Some)
            .map_err(|e| BridgeError(e.to_string()))
    }

    /// Sessions with a running server.
    pub(crate) fn session_count(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Serve one request as a Streamable HTTP server would.
    pub(crate) async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<RespBody>, BridgeError> {
        let session_id = req
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let method = req.method().clone();
        let body = req
            .into_body()
            .collect()
            .await
            .map_err(|e| match e {})?
            .to_bytes();
        let session = match &session_id {
            Some(id) => match self.get(id) {
                Some(s) => Some(s),
                None => return Ok(jsonrpc_status(StatusCode::NOT_FOUND, "session not found")),
            },
            None => None,
        };
        match method {
            Method::POST => self.post(session, body).await,
            Method::GET => {
                let Some(s) = session else {
                    return Ok(jsonrpc_status(
                        StatusCode::BAD_REQUEST,
                        "GET needs an Mcp-Session-Id",
                    ));
                };
                let (tx, rx) = mpsc::unbounded_channel();
                {
                    let mut r = s.routing.lock().unwrap_or_else(|p| p.into_inner());
                    if r.get.as_ref().is_some_and(|g| !g.is_closed()) {
                        return Ok(jsonrpc_status(
                            StatusCode::CONFLICT,
                            "this session already has a GET stream",
                        ));
                    }
                    for f in r.backlog.drain(..) {
                        let _ = tx.send(f);
                    }
                    if !r.dead {
                        r.get = Some(tx);
                    }
                }
                Ok(sse_response(rx))
            }
            Method::DELETE => {
                let Some(id) = session_id else {
                    return Ok(jsonrpc_status(
                        StatusCode::BAD_REQUEST,
                        "DELETE needs an Mcp-Session-Id",
                    ));
                };
                if let Some(s) = self.remove(&id) {
                    stop(s);
                }
                Ok(empty(StatusCode::OK))
            }
            _ => Ok(empty(StatusCode::METHOD_NOT_ALLOWED)),
        }
    }

    async fn post(
        &self,
        session: Option<Arc<Session>>,
        body: Bytes,
    ) -> Result<Response<RespBody>, BridgeError> {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return Ok(jsonrpc_status(
                StatusCode::BAD_REQUEST,
                "the body is not JSON",
            ));
        };
        let messages: Vec<&serde_json::Value> = match &value {
            serde_json::Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        let is_init = messages
            .iter()
            .any(|m| m.get("method").and_then(|v| v.as_str()) == Some("initialize"));
        let (session, new_id) = match session {
            Some(s) => (s, None),
            None if is_init => {
                let (id, s) = self.spawn()?;
                (s, Some(id))
            }
            None => {
                return Ok(jsonrpc_status(
                    StatusCode::BAD_REQUEST,
                    "no Mcp-Session-Id: initialize first",
                ))
            }
        };
        let ids: Vec<String> = messages
            .iter()
            .filter(|m| m.get("method").is_some())
            .filter_map(|m| m.get("id").filter(|v| !v.is_null()).map(|v| v.to_string()))
            .collect();
        let rx = if ids.is_empty() {
            None
        } else {
            let (tx, rx) = mpsc::unbounded_channel();
            let mut r = session.routing.lock().unwrap_or_else(|p| p.into_inner());
            r.next_stream += 1;
            let stream = r.next_stream;
            for id in &ids {
                // The wire form of the id, as the server will echo it (compact JSON).
                r.waiting.insert(compact(id), stream);
            }
            r.posts.push((stream, tx, ids.len()));
            Some(rx)
        };
        // One message per line, as the stdio transport frames them: the body as sent, unless
        // it spans lines (pretty-printed JSON), which must be joined.
        let mut line = if body.contains(&b'\n') {
            serde_json::to_vec(&value).unwrap_or_else(|_| body.to_vec())
        } else {
            body.to_vec()
        };
        line.push(b'\n');
        let written = {
            let mut stdin = session.stdin.lock().await;
            match stdin.as_mut() {
                Some(w) => w.write_all(&line).await.is_ok() && w.flush().await.is_ok(),
                None => false,
            }
        };
        if !written {
            return Err(BridgeError(
                "the server process is gone (its stdin is closed)".into(),
            ));
        }
        let resp = match rx {
            None => empty(StatusCode::ACCEPTED),
            Some(rx) => sse_response(rx),
        };
        let mut resp = resp;
        if let Some(id) = new_id {
            if let Ok(v) = HeaderValue::from_str(&id) {
                resp.headers_mut().insert("mcp-session-id", v);
            }
        }
        Ok(resp)
    }

    fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    fn spawn(&self) -> Result<(String, Arc<Session>), BridgeError> {
        let _on_main = self.runtime.as_ref().map(tokio::runtime::Handle::enter);
        if self.session_count() >= self.max_sessions {
            return Err(BridgeError(format!(
                "{} sessions already run this server (max_sessions); refusing another",
                self.max_sessions
            )));
        }
        let id = mcptrail_event::new_event_id();
        let egress = self.start_egress(&id)?;
        let mut command = Command::new(&self.command[0]);
        if let Some(proxy) = &egress {
            mcptrail_egress::set_child_env(proxy.local_addr(), |var, value| match value {
                Some(v) => {
                    command.env(var, v);
                }
                None => {
                    command.env_remove(var);
                }
            });
        }
        let mut child = command
            .args(&self.command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BridgeError(format!("cannot start `{}`: {e}", self.command[0])))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BridgeError("no stdout".into()))?;
        let session = Arc::new(Session {
            stdin: tokio::sync::Mutex::new(stdin),
            child: tokio::sync::Mutex::new(child),
            routing: Mutex::new(Routing::default()),
            egress: Mutex::new(egress),
        });
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), Arc::clone(&session));
        let reader = Arc::clone(&session);
        tokio::spawn(async move {
            let mut out = BufReader::with_capacity(64 * 1024, stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match out.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        while matches!(line.last(), Some(b'\n' | b'\r')) {
                            line.pop();
                        }
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        reader
                            .routing
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .deliver(&line);
                    }
                }
            }
            // The server ended: every stream ends; later requests find no session. Its
            // connections are closed with it: their records are written now.
            reader.stop_egress();
            let mut r = reader.routing.lock().unwrap_or_else(|p| p.into_inner());
            r.dead = true;
            r.posts.clear();
            r.get = None;
            r.waiting.clear();
        });
        Ok((id, session))
    }

    /// End every session (gateway shutdown).
    pub(crate) fn stop_all(&self) {
        let all: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in all {
            stop(s);
        }
    }
}

/// Close the server's stdin (the stdio transport's way to end), SIGKILL after 2 s.
fn stop(s: Arc<Session>) {
    tokio::spawn(async move {
        s.stdin.lock().await.take();
        let mut child = s.child.lock().await;
        if tokio::time::timeout(Duration::from_secs(2), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    });
}

/// JSON text of an id as `serde_json` writes it (what a server echoes back).
fn compact(id: &str) -> String {
    serde_json::from_str::<serde_json::Value>(id)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| id.to_string())
}

fn empty(status: StatusCode) -> Response<RespBody> {
    let mut r = Response::new(Full::new(Bytes::new()).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r
}

fn jsonrpc_status(status: StatusCode, message: &str) -> Response<RespBody> {
    let body =
        serde_json::json!({"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":message}})
            .to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn sse_response(rx: mpsc::UnboundedReceiver<Bytes>) -> Response<RespBody> {
    let mut r = Response::new(ChannelBody { rx }.boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    r
}

/// An SSE body fed by a channel; it ends when every sender is gone.
struct ChannelBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|m| m.map(|b| Ok(BodyFrame::data(b))))
    }
}
