//! The forward proxy: accept, read one request head, decide, relay, record.
//!
//! - `CONNECT host:port` opens a tunnel; the bytes are relayed untouched both ways (TLS is
//!   not intercepted), and the ClientHello's server name is read on the way through.
//! - An absolute-form plain request (`GET http://host/path HTTP/1.1`) is sent on in origin
//!   form with `Connection: close`, so each connection carries one request and one record;
//!   `Proxy-*` headers are not passed on.
//! - A refused destination gets `403 Forbidden`; one that cannot be resolved or reached,
//!   `502 Bad Gateway` (`504` on a connect timeout); more than `max_connections` at once,
//!   `503`. Each of these is recorded too.
//!
//! One thread per connection (two while a tunnel relays): a tool server opens a handful of
//! connections, and blocking sockets keep the accounting plain. [`EgressProxy::shutdown`]
//! closes the relays still open, so every connection's record is out before it returns.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::policy::{Decision, EgressConfig, EgressPolicy, Verdict};
use crate::record::{EgressRecord, Scheme};
use crate::sni::client_hello_sni;
use crate::EgressError;

/// Largest request head accepted (`431` above it).
const MAX_HEAD: usize = 64 * 1024;
/// Bytes of a tunnel's first client bytes kept to find the TLS server name.
const SNI_SCAN: usize = 16 * 1024;
const RELAY_BUF: usize = 32 * 1024;
/// How often a blocked relay read wakes to check the idle clock and the stop flag.
const POLL: Duration = Duration::from_millis(250);

/// Receives each connection's record.
pub trait EgressObserver: Send + Sync + 'static {
    /// Called once per connection, from the connection's thread, when it ends.
    fn observe(&self, record: EgressRecord);
}

impl<F: Fn(EgressRecord) + Send + Sync + 'static> EgressObserver for F {
    fn observe(&self, record: EgressRecord) {
        self(record)
    }
}

struct Shared {
    policy: EgressPolicy,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    observer: Arc<dyn EgressObserver>,
    stop: AtomicBool,
    active: AtomicUsize,
    next_id: AtomicU64,
    /// Open sockets of live connections, closed by `shutdown`.
    open: Mutex<HashMap<u64, Vec<TcpStream>>>,
}

/// A running proxy.
pub struct EgressProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressProxy")
            .field("addr", &self.addr)
            .finish()
    }
}

impl EgressProxy {
    /// Listen on `cfg.listen` and start serving.
    pub fn bind(
        cfg: &EgressConfig,
        observer: Arc<dyn EgressObserver>,
    ) -> Result<Self, EgressError> {
        let listener = TcpListener::bind(&cfg.listen).map_err(|source| EgressError::Listen {
            addr: cfg.listen.clone(),
            source,
        })?;
        Self::serve(cfg, listener, observer)
    }

    /// Serve on an already bound listener (e.g. `127.0.0.1:0` for `wrap --egress`).
    pub fn serve(
        cfg: &EgressConfig,
        listener: TcpListener,
        observer: Arc<dyn EgressObserver>,
    ) -> Result<Self, EgressError> {
        let policy = EgressPolicy::new(cfg)?;
        let addr = listener
            .local_addr()
            .map_err(|source| EgressError::Listen {
                addr: cfg.listen.clone(),
                source,
            })?;
        let shared = Arc::new(Shared {
            policy,
            connect_timeout: Duration::from_secs(cfg.connect_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(cfg.idle_timeout_secs.max(1)),
            max_connections: cfg.max_connections.max(1),
            observer,
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        });
        let accept_shared = shared.clone();
        let accept = std::thread::Builder::new()
            .name("mcptrail-egress".into())
            .spawn(move || accept_loop(listener, accept_shared))
            .map_err(|source| EgressError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        Ok(EgressProxy {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections being served now.
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Stop accepting, close the connections still open (their records say
    /// `proxy stopped`), and wait up to `grace` for every record to be delivered.
    pub fn shutdown(mut self, grace: Duration) {
        self.stop_now(grace);
    }

    fn stop_now(&mut self, grace: Duration) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let deadline = Instant::now() + grace;
        // Give connections that are ending anyway a moment, then close the rest.
        let soft = deadline.min(Instant::now() + POLL);
        while self.active() > 0 && Instant::now() < soft {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Ok(open) = self.shared.open.lock() {
            for s in open.values().flatten() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        while self.active() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.stop_now(Duration::from_secs(1));
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else {
            // EMFILE and friends: back off instead of spinning.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let n = shared.active.fetch_add(1, Ordering::SeqCst);
        let shared2 = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("mcptrail-egress-conn".into())
            .spawn(move || {
                let over = n >= shared2.max_connections;
                handle(stream, &shared2, over);
                shared2.active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// What the head of a proxy request asked for.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    scheme: Scheme,
    method: String,
    host: String,
    port: u16,
    /// Plain HTTP: the origin-form request target (path and query) sent on.
    origin_form: Option<String>,
}

/// Parse `host:port`, `[v6]:port` or (plain HTTP) `host`.
fn split_authority(authority: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return None,
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
        None => default_port?,
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    ok.then(|| (host.to_ascii_lowercase(), port))
}

fn parse_target(method: &str, target: &str) -> Result<Target, &'static str> {
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) =
            split_authority(target, None).ok_or("CONNECT needs a target of the form host:port")?;
        return Ok(Target {
            scheme: Scheme::Https,
            method: "CONNECT".into(),
            host,
            port,
            origin_form: None,
        });
    }
    let rest = match target.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("http://") => &target[7..],
        _ => {
            return Err(
                "this is a forward proxy: send plain requests in absolute form (http://host/path) and use CONNECT for https",
            )
        }
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) =
        split_authority(authority, Some(80)).ok_or("the request URL has no valid host")?;
    let origin_form = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok(Target {
        scheme: Scheme::Http,
        method: method.to_string(),
        host,
        port,
        origin_form: Some(origin_form),
    })
}

/// A connection being served, and its record.
struct Conn<'a> {
    shared: &'a Shared,
    id: u64,
    client: TcpStream,
    record: EgressRecord,
}

fn handle(client: TcpStream, shared: &Shared, over_capacity: bool) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let record = EgressRecord {
        opened_at: Instant::now(),
        opened_wall: SystemTime::now(),
        duration: Duration::ZERO,
        client: client.peer_addr().ok(),
        scheme: Scheme::Http,
        method: String::new(),
        host: String::new(),
        port: 0,
        path: None,
        sni: None,
        address: None,
        verdict: Verdict {
            decision: Decision::Allow,
            matched: None,
        },
        status: None,
        bytes_up: 0,
        bytes_down: 0,
        error: None,
    };
    let mut conn = Conn {
        shared,
        id,
        client,
        record,
    };
    if let Ok(c) = conn.client.try_clone() {
        if let Ok(mut open) = shared.open.lock() {
            open.entry(id).or_default().push(c);
        }
    }
    let recorded = conn.serve(over_capacity);
    if let Ok(mut open) = shared.open.lock() {
        open.remove(&id);
    }
    if recorded {
        conn.record.duration = conn.record.opened_at.elapsed();
        shared.observer.observe(conn.record);
    }
}

impl Conn<'_> {
    /// Serve the connection; false when nothing was asked of any destination (garbage,
    /// a client that left before its request head): there is nothing to record.
    fn serve(&mut self, over_capacity: bool) -> bool {
        let _ = self.client.set_read_timeout(Some(self.shared.idle_timeout));
        let (head, leftover) = match read_head(&mut self.client) {
            Ok(x) => x,
            Err(HeadError::TooLarge) => {
                self.answer(431, "the request head is larger than 64 KiB");
                return false;
            }
            Err(HeadError::Closed) => return false,
        };
        let mut headers = [httparse::EMPTY_HEADER; 96];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = req.parse(&head);
        let (Ok(httparse::Status::Complete(_)), Some(method), Some(path)) =
            (parsed, req.method, req.path)
        else {
            self.answer(400, "malformed HTTP request head");
            return false;
        };
        let target = match parse_target(method, path) {
            Ok(t) => t,
            Err(why) => {
                self.answer(400, why);
                return false;
            }
        };
        self.record.scheme = target.scheme;
        self.record.method = target.method.clone();
        self.record.host = target.host.clone();
        self.record.port = target.port;
        self.record.path = target
            .origin_form
            .as_deref()
            .map(|p| p.split('?').next().unwrap_or("/").to_string());
        if over_capacity {
            self.refuse(503, "too many connections through the egress proxy", None);
            return true;
        }
        self.record.verdict = self.shared.policy.decide(&target.host, None);
        if self.record.verdict.decision == Decision::Deny {
            self.deny();
            return true;
        }
        let addr = match self.resolve(&target) {
            Ok(a) => a,
            Err(e) => {
                self.refuse(
                    502,
                    &format!("could not resolve {}: {e}", target.host),
                    Some(e),
                );
                return true;
            }
        };
        self.record.address = Some(addr.ip());
        if self.shared.policy.has_networks() {
            self.record.verdict = self.shared.policy.decide(&target.host, Some(addr.ip()));
            if self.record.verdict.decision == Decision::Deny {
                self.deny();
                return true;
            }
        }
        let upstream = match TcpStream::connect_timeout(&addr, self.shared.connect_timeout) {
            Ok(s) => s,
            Err(e) => {
                let timed_out = matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock);
                let (code, what) = if timed_out {
                    (504, "timed out connecting to")
                } else {
                    (502, "could not connect to")
                };
                let msg = format!("{what} {}:{}: {e}", target.host, target.port);
                self.refuse(code, &msg, Some(e.to_string()));
                return true;
            }
        };
        let _ = upstream.set_nodelay(true);
        if let Ok(c) = upstream.try_clone() {
            if let Ok(mut open) = self.shared.open.lock() {
                open.entry(self.id).or_default().push(c);
            }
        }
        match target.scheme {
            Scheme::Https => {
                if self
                    .client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .is_err()
                {
                    self.record.error = Some("the client left before the tunnel opened".into());
                    return true;
                }
                self.record.status = Some(200);
                self.relay(upstream, leftover, None);
            }
            Scheme::Http => {
                let mut first = rewrite_head(&req, target.origin_form.as_deref().unwrap_or("/"));
                first.extend_from_slice(&leftover);
                self.relay(upstream, first, Some(()));
            }
        }
        if self.shared.stop.load(Ordering::SeqCst) && self.record.error.is_none() {
            self.record.error = Some("proxy stopped".into());
        }
        true
    }

    fn resolve(&self, target: &Target) -> Result<SocketAddr, String> {
        if let Some(ip) = self.shared.policy.fixed_address(&target.host) {
            return Ok(SocketAddr::new(ip, target.port));
        }
        let host = target.host.as_str();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, target.port));
        }
        (host, target.port)
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or_else(|| "no address".to_string())
    }

    fn deny(&mut self) {
        let why = match &self.record.verdict.matched {
            Some(m) => format!(
                "{} is not allowed by the egress policy (deny entry `{m}`)",
                self.record.host
            ),
            None => format!("{} is not on the egress allow list", self.record.host),
        };
        self.refuse(403, &why, None);
    }

    fn refuse(&mut self, code: u16, message: &str, error: Option<String>) {
        self.record.status = Some(code);
        self.record.error = error;
        self.answer(code, message);
    }

    fn answer(&mut self, code: u16, message: &str) {
        let reason = match code {
            400 => "Bad Request",
            403 => "Forbidden",
            431 => "Request Header Fields Too Large",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "Error",
        };
        let body = format!("mcptrail egress: {message}\n");
        let resp = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = self.client.write_all(resp.as_bytes());
        let _ = self.client.shutdown(Shutdown::Write);
    }

    /// Relay both ways until both sides are done. `first_up` goes to the destination before
    /// anything else. `plain` (one request per connection): the connection ends when the
    /// destination's answer ends.
    fn relay(&mut self, upstream: TcpStream, first_up: Vec<u8>, plain: Option<()>) {
        let last_activity = Arc::new(Mutex::new(Instant::now()));
        let (Ok(client_r), Ok(upstream_w)) = (self.client.try_clone(), upstream.try_clone()) else {
            self.record.error = Some("could not set up the relay".into());
            return;
        };
        let idle = self.shared.idle_timeout;
        let tunnel = plain.is_none();
        let la = last_activity.clone();
        // Client → destination on its own thread.
        let up = std::thread::Builder::new()
            .name("mcptrail-egress-up".into())
            .spawn(move || pump_up(client_r, upstream_w, first_up, tunnel, idle, &la));
        let Ok(up) = up else {
            self.record.error = Some("could not start the relay thread".into());
            return;
        };
        let (down_bytes, status, down_err) = pump_down(
            upstream,
            &self.client,
            plain.is_some(),
            idle,
            &last_activity,
        );
        if plain.is_some() {
            // One request per connection: the answer is complete, close the client side so
            // the up relay ends too.
            let _ = self.client.shutdown(Shutdown::Both);
        }
        let (up_bytes, sni, up_err) = up.join().unwrap_or((0, None, None));
        self.record.bytes_up = up_bytes;
        self.record.bytes_down = down_bytes;
        self.record.sni = sni;
        if plain.is_some() {
            self.record.status = status;
        }
        self.record.error = self.record.error.take().or(down_err).or(up_err);
    }
}

/// Copy client → destination; returns bytes, the TLS server name seen, an error.
fn pump_up(
    from: TcpStream,
    mut to: TcpStream,
    first: Vec<u8>,
    tunnel: bool,
    idle: Duration,
    last: &Mutex<Instant>,
) -> (u64, Option<String>, Option<String>) {
    let mut scan: Vec<u8> = Vec::new();
    let mut sni = None;
    let mut scanning = tunnel;
    if !first.is_empty() {
        inspect(&first, &mut scan, &mut scanning, &mut sni);
        if to.write_all(&first).is_err() {
            return (0, sni, Some("the destination closed the connection".into()));
        }
    }
    let (bytes, error) = pump(from, &to, idle, last, |chunk| {
        inspect(chunk, &mut scan, &mut scanning, &mut sni)
    });
    (first.len() as u64 + bytes, sni, error)
}

/// Copy destination → client; returns bytes, the HTTP status of a plain answer, an error.
fn pump_down(
    from: TcpStream,
    to: &TcpStream,
    plain: bool,
    idle: Duration,
    last: &Mutex<Instant>,
) -> (u64, Option<u16>, Option<String>) {
    let mut status = None;
    let mut status_line: Vec<u8> = Vec::new();
    let (bytes, error) = pump(from, to, idle, last, |chunk| {
        if plain && status.is_none() && status_line.len() < 64 {
            status_line.extend_from_slice(&chunk[..chunk.len().min(64)]);
            status = parse_status(&status_line);
        }
    });
    (bytes, status, error)
}

/// Copy `from` → `to` until `from` ends, a write fails, or neither direction has moved a
/// byte for `idle` (then both sockets are shut down and the error says so); `on_chunk` sees
/// each chunk before it is written. Half-closes `to` at the end. Returns bytes copied and
/// the idle error, if that is how it ended.
fn pump(
    mut from: TcpStream,
    mut to: &TcpStream,
    idle: Duration,
    last: &Mutex<Instant>,
    mut on_chunk: impl FnMut(&[u8]),
) -> (u64, Option<String>) {
    let mut bytes = 0u64;
    let mut error = None;
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; RELAY_BUF];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                on_chunk(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                bytes += n as u64;
                touch(last);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if idle_for(last) > idle {
                    error = Some(format!("idle for {}s, closed", idle.as_secs()));
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    (bytes, error)
}

/// Look for the TLS server name in the first bytes of a tunnel.
fn inspect(chunk: &[u8], scan: &mut Vec<u8>, scanning: &mut bool, sni: &mut Option<String>) {
    if !*scanning {
        return;
    }
    let room = SNI_SCAN.saturating_sub(scan.len());
    scan.extend_from_slice(&chunk[..chunk.len().min(room)]);
    if let Some(name) = client_hello_sni(scan) {
        *sni = Some(name);
        *scanning = false;
    } else if scan.len() >= SNI_SCAN || scan.first().is_some_and(|b| *b != 22) {
        *scanning = false;
    }
}

fn touch(last: &Mutex<Instant>) {
    if let Ok(mut l) = last.lock() {
        *l = Instant::now();
    }
}

fn idle_for(last: &Mutex<Instant>) -> Duration {
    last.lock().map(|l| l.elapsed()).unwrap_or_default()
}

fn parse_status(line: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(line.get(..12)?).ok()?;
    let mut parts = s.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

enum HeadError {
    TooLarge,
    Closed,
}

/// Read up to the end of the request head; returns the head and whatever came after it.
fn read_head(s: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Closed),
        };
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf[scan_from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = scan_from + i + 4;
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Hop-by-hop and proxy headers not passed on.
fn dropped_header(name: &str) -> bool {
    const DROP: &[&str] = &[
        "proxy-connection",
        "proxy-authorization",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
    ];
    DROP.iter().any(|d| name.eq_ignore_ascii_case(d))
}

fn rewrite_head(req: &httparse::Request<'_, '_>, origin_form: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(origin_form.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers.iter() {
        if dropped_header(h.name) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("CONNECT", "Api.Example.com:443").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.scheme),
            ("api.example.com", 443, Scheme::Https)
        );
        let t = parse_target("CONNECT", "[::1]:8443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        let t = parse_target("GET", "http://example.com/a/b?key=secret").unwrap();
        assert_eq!(t.port, 80);
        assert_eq!(t.origin_form.as_deref(), Some("/a/b?key=secret"));
        let t = parse_target("POST", "HTTP://example.com:8080?x=1").unwrap();
        assert_eq!((t.port, t.origin_form.as_deref()), (8080, Some("/?x=1")));
        let t = parse_target("GET", "http://example.com").unwrap();
        assert_eq!(t.origin_form.as_deref(), Some("/"));
        for bad in ["example.com", "example.com:0", ":443", "a b:1", "user@x:1"] {
            assert!(parse_target("CONNECT", bad).is_err(), "{bad}");
        }
        for bad in [
            "/relative",
            "https://x.com/",
            "http://",
            "http://u:p@x.com/",
        ] {
            assert!(parse_target("GET", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 404 x"), Some(404));
        assert_eq!(parse_status(b"SSH-2.0-Open"), None);
        assert_eq!(parse_status(b"HTTP/1.1"), None);
    }
}
