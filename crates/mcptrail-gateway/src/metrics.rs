//! Prometheus metrics of the gateway (`/metrics` on the admin listener): requests by route,
//! method and status; request durations (to the upstream's response headers); bytes each way;
//! upstream errors; refused authentications; open sessions; and ledger lag (events handed to
//! the writer but not yet durable).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::record::RecordStats;

// Label values are built for every request: shared or static strings and integers, so that
// counting a request allocates and formats nothing (a `String` per label did).
type Route = Arc<str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    method: Cow<'static, str>,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteMethod {
    route: Route,
    method: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteDirection {
    route: Route,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Route,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteReason {
    route: Route,
    reason: &'static str,
}

/// `method` as a label value: the standard ones without a copy.
fn method_label(method: &Method) -> Cow<'static, str> {
    static STANDARD: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::DELETE,
        Method::PUT,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    match STANDARD.iter().find(|m| *m == method) {
        Some(m) => Cow::Borrowed(m.as_str()),
        None => Cow::Owned(method.as_str().to_owned()),
    }
}

/// The gateway's metrics.
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteMethod, Histogram>,
    bytes: Family<RouteDirection, Counter>,
    upstream_errors: Family<RouteLabel, Counter>,
    auth_denied: Family<RouteReason, Counter>,
    active_connections: Gauge,
    sessions: Gauge,
    ledger_lag: Gauge,
    events_written: Gauge,
    record: Arc<RecordStats>,
    written: Arc<AtomicU64>,
    registry: Registry,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Metrics reading live figures from the recorder and the ledger writer.
    pub(crate) fn new(record: Arc<RecordStats>, written: Arc<AtomicU64>) -> Self {
        let mut registry = Registry::with_prefix("mcptrail_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "HTTP requests answered", requests.clone());
        let durations = Family::<RouteMethod, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ])
        });
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers",
            durations.clone(),
        );
        let bytes = Family::<RouteDirection, Counter>::default();
        registry.register(
            "bytes",
            "Body bytes relayed (in: client to server)",
            bytes.clone(),
        );
        let upstream_errors = Family::<RouteLabel, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream unreachable, timed out or broke off",
            upstream_errors.clone(),
        );
        let auth_denied = Family::<RouteReason, Counter>::default();
        registry.register(
            "auth_denied",
            "Requests refused with 401",
            auth_denied.clone(),
        );
        let active_connections = Gauge::default();
        registry.register(
            "active_connections",
            "Client connections open",
            active_connections.clone(),
        );
        let sessions = Gauge::default();
        registry.register(
            "active_sessions",
            "MCP sessions open in the record",
            sessions.clone(),
        );
        let ledger_lag = Gauge::default();
        registry.register(
            "ledger_lag_events",
            "Events recorded but not yet durable in the ledger",
            ledger_lag.clone(),
        );
        let events_written = Gauge::default();
        registry.register(
            "ledger_events_written",
            "Events made durable since start",
            events_written.clone(),
        );
        Metrics {
            requests,
            durations,
            bytes,
            upstream_errors,
            auth_denied,
            active_connections,
            sessions,
            ledger_lag,
            events_written,
            record,
            written,
            registry,
        }
    }

    pub(crate) fn request(&self, route: &Route, method: &Method, status: u16, started: Instant) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                route: Arc::clone(route),
                method: method.clone(),
                status,
            })
            .inc();
        self.durations
            .get_or_create(&RouteMethod {
                route: Arc::clone(route),
                method,
            })
            .observe(started.elapsed().as_secs_f64());
    }

    pub(crate) fn bytes(&self, route: &Route, direction: &'static str, n: u64) {
        self.bytes
            .get_or_create(&RouteDirection {
                route: Arc::clone(route),
                direction,
            })
            .inc_by(n);
    }

    pub(crate) fn upstream_error(&self, route: &Route) {
        self.upstream_errors
            .get_or_create(&RouteLabel {
                route: Arc::clone(route),
            })
            .inc();
    }

    pub(crate) fn auth_denied(&self, route: &Route, reason: &'static str) {
        self.auth_denied
            .get_or_create(&RouteReason {
                route: Arc::clone(route),
                reason,
            })
            .inc();
    }

    pub(crate) fn connection(&self, delta: i64) {
        self.active_connections.inc_by(delta);
    }

    /// Events recorded but not yet durable.
    pub fn ledger_lag(&self) -> u64 {
        let queued = self.record.events_queued.load(Ordering::Relaxed);
        queued.saturating_sub(self.written.load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        self.sessions
            .set(self.record.active_sessions.load(Ordering::Relaxed) as i64);
        self.ledger_lag.set(self.ledger_lag() as i64);
        self.events_written
            .set(self.written.load(Ordering::Relaxed) as i64);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
