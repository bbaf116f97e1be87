//! The JSON API under `/api/v1/`, the live tail, the OpenAPI document and the dashboard.
//!
//! Every route is in [`ROUTES`] with the roles allowed to call it — one table that the
//! handlers enforce, the OpenAPI test checks and the role × endpoint test walks. A handler
//! first authenticates ([`AppState::authorise`]): no or bad credentials → 401 with a
//! `WWW-Authenticate` challenge, a role not in the route's list → 403; both are recorded as
//! `governance.access`. Every successful read is recorded as `governance.read` (principal,
//! role, endpoint, query, how many events it returned). Query parameters are parsed into
//! typed structs that refuse unknown keys; bad values are a 400 that says what to fix; SQL
//! sees them only as bound parameters.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mcptrail_event::{Event, EventKind};
use mcptrail_index::{Index, Search};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::audit::Recorder;
use crate::auth::{Authn, Principal, Role};
use crate::config::ServeConfig;
use crate::governance::{self, Action, NotCollectable, Refusal, Requests};
use crate::tokens::TokenStore;

use Role::{Admin, Auditor, Investigator, Operator};

/// One route: method, path (axum syntax), roles allowed (empty: public).
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path, `{param}` for parameters (as in OpenAPI).
    pub path: &'static str,
    /// Roles allowed; empty means no authentication (dashboard, OpenAPI).
    pub roles: &'static [Role],
}

const ALL: &[Role] = &[Operator, Investigator, Auditor, Admin];

/// Every route of the server.
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        method: "GET",
        path: "/",
        roles: &[],
    },
    RouteSpec {
        method: "GET",
        path: "/assets/app.js",
        roles: &[],
    },
    RouteSpec {
        method: "GET",
        path: "/assets/app.css",
        roles: &[],
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/openapi.json",
        roles: &[],
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/status",
        roles: ALL,
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/whoami",
        roles: ALL,
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/counts",
        roles: &[Operator],
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/sinks",
        roles: &[Operator],
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/agents",
        roles: &[Operator, Investigator, Auditor],
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/agents/{id}/activity",
        roles: &[Operator, Investigator, Auditor],
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/baselines",
        roles: &[Operator, Investigator, Auditor],
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/integrity",
        roles: &[Operator, Auditor],
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/integrity/verify",
        roles: &[Auditor],
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/events",
        roles: &[Investigator],
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/sessions",
        roles: &[Investigator],
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/sessions/{id}/timeline",
        roles: &[Investigator],
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/alerts",
        roles: &[Investigator],
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/tail",
        roles: &[Investigator],
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/meta-audit",
        roles: &[Auditor],
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/requests",
        roles: &[Investigator, Auditor, Admin],
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/requests",
        roles: &[Investigator, Auditor, Admin],
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/requests/{id}/approve",
        roles: &[Auditor],
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/requests/{id}/deny",
        roles: &[Auditor],
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/requests/{id}/reveal",
        roles: &[Investigator, Auditor, Admin],
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/retention/purge",
        roles: ALL,
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/config",
        roles: &[Admin],
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/tokens",
        roles: &[Admin],
    },
];

fn route(method: &str, path: &str) -> &'static RouteSpec {
    ROUTES
        .iter()
        .find(|r| r.method == method && r.path == path)
        .expect("every handler's route is in ROUTES")
}

/// The OpenAPI document, as kept in the repository.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");
const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// Everything the handlers share.
pub struct AppState {
    pub(crate) data_dir: PathBuf,
    pub(crate) cfg: ServeConfig,
    pub(crate) authn: Authn,
    pub(crate) tokens: TokenStore,
    pub(crate) recorder: Recorder,
    pub(crate) index: Mutex<Index>,
    pub(crate) requests: Mutex<Requests>,
    pub(crate) decide: tokio::sync::Mutex<()>,
    pub(crate) engine: Option<Arc<mcptrail_retention::Engine>>,
    pub(crate) token_key: Option<mcptrail_redact::TokenKey>,
    pub(crate) vault: Option<mcptrail_redact::Vault>,
    pub(crate) sinks: Vec<mcptrail_sinks::SinkConfig>,
    pub(crate) verify: mcptrail_ledger::VerifyOptions,
    pub(crate) last_verify: Mutex<Option<Value>>,
    pub(crate) started: std::time::Instant,
    /// `[serve.fleet]`: the searches read the fleet store.
    pub(crate) fleet: Option<crate::fleet::Fleet>,
}

type St = State<Arc<AppState>>;

/// An API error: status and a JSON body `{error, message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    challenge: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            challenge: None,
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    fn internal(message: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            message.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response();
        if let Some(c) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        r
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad(format!("malformed query: {}", r.body_text()))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::bad(format!("malformed JSON body: {}", r.body_text()))
    }
}

type ApiResult = Result<Response, ApiError>;

impl AppState {
    /// Authenticate and check the route's roles; refusals are recorded.
    fn authorise(
        &self,
        headers: &HeaderMap,
        spec: &RouteSpec,
        query: Option<&str>,
    ) -> Result<Principal, ApiError> {
        let endpoint = format!("{} {}", spec.method, spec.path);
        let p = match self.authn.check(headers) {
            Ok(p) => p,
            Err(d) => {
                self.access_event(&endpoint, None, &d.reason, 401, query);
                let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", d.detail);
                // RFC 6750 §3: no error code when no credentials were sent.
                e.challenge = Some(if d.reason == "missing_token" {
                    "Bearer realm=\"mcptrail\"".to_string()
                } else {
                    format!(
                        "Bearer realm=\"mcptrail\", error=\"invalid_token\", error_description=\"{}\"",
                        d.reason
                    )
                });
                return Err(e);
            }
        };
        if !p.roles.iter().any(|r| spec.roles.contains(r)) {
            self.access_event(&endpoint, Some(&p), "wrong_role", 403, query);
            let allowed: Vec<&str> = spec.roles.iter().map(|r| r.as_str()).collect();
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{endpoint} needs the role {}", allowed.join(" or ")),
            ));
        }
        Ok(p)
    }

    fn access_event(
        &self,
        endpoint: &str,
        p: Option<&Principal>,
        reason: &str,
        status: u16,
        query: Option<&str>,
    ) {
        let mut e = Event::new(EventKind::GovernanceAccess);
        e.detail = Some(json!({
            "endpoint": endpoint, "status": status, "reason": reason,
            "principal": p.map(|p| p.name.clone()),
            "roles": p.map(|p| p.roles.clone()),
            "query": query,
        }));
        self.recorder.record(e);
    }

    fn read_event(&self, spec: &RouteSpec, p: &Principal, query: Option<&str>, returned: usize) {
        let mut e = Event::new(EventKind::GovernanceRead);
        e.detail = Some(json!({
            "principal": p.name, "source": p.source, "roles": p.roles,
            "endpoint": format!("{} {}", spec.method, spec.path),
            "query": query, "returned": returned,
        }));
        self.recorder.record(e);
    }

    /// Run `f` on the index after bringing it up to date with the ledger.
    async fn with_index<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Index) -> Result<T, mcptrail_index::IndexError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let st = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut idx = st.index.lock().unwrap_or_else(|p| p.into_inner());
            idx.sync().map_err(ApiError::internal)?;
            f(&idx).map_err(ApiError::internal)
        })
        .await
        .map_err(ApiError::internal)?
    }

    fn limit(&self, asked: Option<u64>) -> Result<u64, ApiError> {
        let max = self.cfg.max_page_size;
        match asked {
            None => Ok(max.min(100)),
            Some(0) => Err(ApiError::bad("limit must be at least 1")),
            Some(n) if n > max => Err(ApiError::bad(format!(
                "limit {n} is above the maximum page size {max}; page with before_seq"
            ))),
            Some(n) => Ok(n),
        }
    }
}

/// Build the router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/status", get(status))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/counts", get(counts))
        .route("/api/v1/sinks", get(sinks))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/agents/{id}/activity", get(agent_activity))
        .route("/api/v1/baselines", get(baselines))
        .route("/api/v1/integrity", get(integrity))
        .route("/api/v1/integrity/verify", post(integrity_verify))
        .route("/api/v1/events", get(events))
        .route("/api/v1/sessions", get(sessions))
        .route("/api/v1/sessions/{id}/timeline", get(timeline))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/tail", get(tail))
        .route("/api/v1/meta-audit", get(meta_audit))
        .route("/api/v1/requests", get(list_requests).post(create_request))
        .route("/api/v1/requests/{id}/approve", post(approve))
        .route("/api/v1/requests/{id}/deny", post(deny))
        .route("/api/v1/requests/{id}/reveal", post(collect_reveal))
        .route("/api/v1/retention/purge", post(direct_purge))
        .route("/api/v1/config", get(config))
        .route("/api/v1/tokens", get(tokens))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see /api/v1/openapi.json",
            )
        })
        .with_state(state)
}

async fn dashboard() -> impl IntoResponse {
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        )],
        Html(INDEX_HTML),
    )
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

async fn app_css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn status(State(st): St, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    let spec = route("GET", "/api/v1/status");
    let p = st.authorise(&headers, spec, q.as_deref())?;
    let range = st.with_index(|i| i.seq_range()).await?;
    let fleet = match st.fleet_store().await? {
        Some(f) => {
            let (events, oldest, newest) = f.totals().await.map_err(fleet_err)?;
            let sources = f.sources().await.map_err(fleet_err)?.len();
            Some(json!({"events": events, "sources": sources,
                        "oldest_us": oldest, "newest_us": newest}))
        }
        None => None,
    };
    st.read_event(spec, &p, q.as_deref(), 0);
    Ok(Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": st.started.elapsed().as_secs(),
        "indexed": range.map(|(a, b)| json!({"first_seq": a, "last_seq": b})),
        "fleet": fleet,
    }))
    .into_response())
}

async fn whoami(State(st): St, headers: HeaderMap) -> ApiResult {
    let spec = route("GET", "/api/v1/whoami");
    let p = st.authorise(&headers, spec, None)?;
    st.read_event(spec, &p, None, 0);
    Ok(Json(json!({"name": p.name, "roles": p.roles, "source": p.source})).into_response())
}

async fn counts(State(st): St, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    let spec = route("GET", "/api/v1/counts");
    let p = st.authorise(&headers, spec, q.as_deref())?;
    let counts = match st.fleet_store().await? {
        Some(f) => f.counts_by_kind().await.map_err(fleet_err)?,
        None => st.with_index(|i| i.counts_by_kind()).await?,
    };
    st.read_event(spec, &p, q.as_deref(), 0);
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let by_kind: serde_json::Map<String, Value> =
        counts.into_iter().map(|(k, n)| (k, json!(n))).collect();
    Ok(Json(json!({"total": total, "by_kind": by_kind})).into_response())
}

/// Query of `GET /api/v1/agents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsQuery {
    limit: Option<u64>,
}

/// Activity per agent: counts only (sessions, events, first and last time), so operators may
/// read it too.
async fn agents(
    State(st): St,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    q: Result<Query<AgentsQuery>, QueryRejection>,
) -> ApiResult {
    let spec = route("GET", "/api/v1/agents");
    let p = st.authorise(&headers, spec, raw.as_deref())?;
    let Query(q) = q?;
    let limit = st.limit(q.limit)?;
    let list = match st.fleet_store().await? {
        Some(f) => json!(f
            .agents(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(fleet_err)?),
        None => json!(st.with_index(move |i| i.agents(limit)).await?),
    };
    st.read_event(spec, &p, raw.as_deref(), 0);
    Ok(Json(json!({"agents": list})).into_response())
}

/// Query of `GET /api/v1/agents/{id}/activity`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityQuery {
    since: Option<String>,
    until: Option<String>,
}

/// The longest span `GET /api/v1/agents/{id}/activity` returns, in hours (31 days).
const MAX_ACTIVITY_HOURS: i64 = 31 * 24;

/// One agent's activity per clock hour (events, tool calls, results, failures, bytes — counts
/// only) next to what its newest baseline says is normal (calls per hour, calls per hour of
/// day). Hours without events are left out.
async fn agent_activity(
    State(st): St,
    headers: HeaderMap,
    UrlPath(agent): UrlPath<String>,
    RawQuery(raw): RawQuery,
    q: Result<Query<ActivityQuery>, QueryRejection>,
) -> ApiResult {
    let spec = route("GET", "/api/v1/agents/{id}/activity");
    let p = st.authorise(&headers, spec, raw.as_deref())?;
    let Query(q) = q?;
    let until = parse_time_param("until", q.until)?.unwrap_or_else(time::OffsetDateTime::now_utc);
    let since = parse_time_param("since", q.since)?.unwrap_or(until - time::Duration::hours(48));
    if since >= until {
        return Err(ApiError::bad("since must be before until"));
    }
    if until - since > time::Duration::hours(MAX_ACTIVITY_HOURS) {
        return Err(ApiError::bad(format!(
            "at most {MAX_ACTIVITY_HOURS} hours at a time; page with since and until"
        )));
    }
    let (since, until) = (
        mcptrail_event::format_rfc3339_nanos(since),
        mcptrail_event::format_rfc3339_nanos(until),
    );
    let hours = match st.fleet_store().await? {
        Some(f) => json!(f
            .agent_hours(&agent, &since, &until)
            .await
            .map_err(fleet_err)?),
        None => {
            let (a, s, u) = (agent.clone(), since.clone(), until.clone());
            json!(st.with_index(move |i| i.agent_hours(&a, &s, &u)).await?)
        }
    };
    let data_dir = st.data_dir.clone();
    let a = agent.clone();
    let baseline = tokio::task::spawn_blocking(move || {
        mcptrail_detect::BaselineStore::new(&data_dir)
            .latest()
            .map(|b| {
                b.and_then(|b| {
                    b.agents.get(&a).map(|ab| {
                        json!({
                            "version": b.version, "since": b.since, "until": b.until,
                            "hourly_calls": ab.hourly_calls,
                            "hour_of_day": ab.hour_of_day,
                            "active_days": ab.active_days,
                            "error_rate": ab.error_rate(),
                        })
                    })
                })
            })
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    st.read_event(spec, &p, raw.as_deref(), 0);
    Ok(Json(json!({
        "agent_id": agent, "since": since, "until": until,
        "hours": hours, "baseline": baseline,
    }))
    .into_response())
}

/// Query of `GET /api/v1/baselines`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselinesQuery {
    version: Option<u64>,
    agent: Option<String>,
}

/// The stored behavioural baselines (`mcptrail baseline learn`): the list of versions and one
/// of them (the newest unless `version` is given), optionally one agent only. Statistics and
/// names (tools, servers, destinations, argument key shapes) — no payloads.
async fn baselines(
    State(st): St,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    q: Result<Query<BaselinesQuery>, QueryRejection>,
) -> ApiResult {
    let spec = route("GET", "/api/v1/baselines");
    let p = st.authorise(&headers, spec, raw.as_deref())?;
    let Query(q) = q?;
    let data_dir = st.data_dir.clone();
    let all = tokio::task::spawn_blocking(move || {
        mcptrail_detect::BaselineStore::new(&data_dir).load_all()
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let versions: Vec<Value> = all
        .iter()
        .map(|b| {
            json!({
                "version": b.version, "learnt_at": b.learnt_at, "since": b.since,
                "until": b.until, "events": b.events, "agents": b.agents.len(),
            })
        })
        .collect();
    let chosen = match q.version {
        None => all.into_iter().last(),
        Some(v) => Some(all.into_iter().find(|b| b.version == v).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no baseline version {v}; GET /api/v1/baselines lists them"),
            )
        })?),
    };
    let baseline = match chosen {
        None => Value::Null,
        Some(mut b) => {
            if let Some(a) = &q.agent {
                b.agents.retain(|k, _| k == a);
            }
            let mut v = serde_json::to_value(&b).map_err(ApiError::internal)?;
            if let Some(agents) = v.get_mut("agents").and_then(Value::as_object_mut) {
                for (name, a) in agents.iter_mut() {
                    if let Some(rate) = b.agents.get(name).map(|x| x.error_rate()) {
                        a["error_rate"] = json!(rate);
                    }
                }
            }
            v
        }
    };
    st.read_event(spec, &p, raw.as_deref(), 0);
    Ok(Json(json!({"versions": versions, "baseline": baseline})).into_response())
}

async fn sinks(State(st): St, headers: HeaderMap) -> ApiResult {
    let spec = route("GET", "/api/v1/sinks");
    let p = st.authorise(&headers, spec, None)?;
    let st2 = st.clone();
    let list = tokio::task::spawn_blocking(move || {
        st2.sinks
            .iter()
            .map(|s| match mcptrail_sinks::lag(&st2.data_dir, s) {
                Ok(l) => json!({
                    "name": l.name, "cursor": l.cursor, "head": l.head,
                    "lag_records": l.lag_records(),
                    "lag_secs": l.lag_age().map(|d| d.as_secs_f64()),
                    "oldest_unshipped": l.oldest_unshipped,
                }),
                Err(e) => json!({"name": s.name, "error": e.to_string()}),
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(ApiError::internal)?;
    st.read_event(spec, &p, None, 0);
    Ok(Json(json!({"sinks": list})).into_response())
}

async fn integrity(State(st): St, headers: HeaderMap) -> ApiResult {
    let spec = route("GET", "/api/v1/integrity");
    let p = st.authorise(&headers, spec, None)?;
    let tap_verify = st
        .with_index(|i| {
            i.search(&Search {
                kind: Some("system.verify".into()),
                limit: 1,
                ..Default::default()
            })
        })
        .await?;
    let dir = st.data_dir.join(mcptrail_ledger::CHECKPOINT_DIR);
    let cps = mcptrail_ledger::list_checkpoints(&dir).map_err(ApiError::internal)?;
    let last_verify = st
        .last_verify
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let fleet = match st.fleet_store().await? {
        Some(f) => {
            let sources = f.sources().await.map_err(fleet_err)?;
            let broken = sources
                .iter()
                .filter(|s| s.pending > 0 || s.quarantined > 0)
                .count();
            Some(json!({"sources": sources, "sources_with_problems": broken}))
        }
        None => None,
    };
    st.read_event(spec, &p, None, 0);
    // Green only when the last verification run here found the ledger intact (and, for a
    // fleet, no source has records waiting or quarantined).
    let green = last_verify
        .as_ref()
        .is_some_and(|v| v["verdict"] == "intact")
        && fleet
            .as_ref()
            .is_none_or(|f| f["sources_with_problems"] == 0);
    Ok(Json(json!({
        "fleet": fleet,
        "green": green,
        "last_server_verify": last_verify,
        "last_tap_verify": tap_verify.events.first().map(|e| e["detail"].clone()),
        "checkpoints": {"count": cps.len(), "latest_size": cps.last().map(|c| c.0)},
    }))
    .into_response())
}

async fn integrity_verify(State(st): St, headers: HeaderMap) -> ApiResult {
    let spec = route("POST", "/api/v1/integrity/verify");
    let p = st.authorise(&headers, spec, None)?;
    let st2 = st.clone();
    let report =
        tokio::task::spawn_blocking(move || mcptrail_ledger::verify(&st2.data_dir, &st2.verify))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
    let v = json!({
        "verdict": report.verdict, "records": report.records, "last_seq": report.last_seq,
        "problems": report.problems.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>(),
        "unchecked": report.unchecked, "checkpoints_verified": report.checkpoints_verified,
        "at": mcptrail_event::now_rfc3339_nanos(), "by": p.name,
    });
    *st.last_verify.lock().unwrap_or_else(|p| p.into_inner()) = Some(v.clone());
    let mut e = Event::new(EventKind::SystemVerify);
    e.detail = Some(
        json!({"source": "mcptrail serve", "verdict": report.verdict,
        "records": report.records, "by": p.name}),
    );
    st.recorder.record(e);
    st.read_event(spec, &p, None, 0);
    Ok(Json(v).into_response())
}

/// Query of `GET /api/v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    session: Option<String>,
    user: Option<String>,
    agent: Option<String>,
    tool: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
    q: Option<String>,
    before_seq: Option<u64>,
    limit: Option<u64>,
}

fn parse_time_param(
    name: &str,
    v: Option<String>,
) -> Result<Option<time::OffsetDateTime>, ApiError> {
    v.map(|s| {
        mcptrail_event::parse_rfc3339(&s).map_err(|_| {
            ApiError::bad(format!(
                "{name}={s:?} is not an RFC 3339 time (e.g. 2026-11-25T10:00:00Z)"
            ))
        })
    })
    .transpose()
}

/// A time parameter as the index stores times (UTC, nanoseconds).
fn time_param(name: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    Ok(parse_time_param(name, v)?.map(mcptrail_event::format_rfc3339_nanos))
}

fn text_param(name: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) => Err(
            ApiError::bad(format!("{name} must be 1–256 printable characters")),
        ),
        v => Ok(v),
    }
}

fn kind_param(v: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(k) = v else { return Ok(None) };
    let prefix = k.ends_with('*') || k.ends_with('.');
    let known = EventKind::ALL.iter().any(|e| {
        if prefix {
            e.as_str().starts_with(k.trim_end_matches('*'))
        } else {
            e.as_str() == k
        }
    });
    if !known {
        return Err(ApiError::bad(format!(
            "kind={k:?} is no event kind (e.g. mcp.request, or a prefix like session.*)"
        )));
    }
    Ok(Some(k))
}

impl AppState {
    fn users(&self, u: Option<String>) -> Vec<String> {
        match u {
            None => Vec::new(),
            Some(u) => {
                // Principals are pseudonymised by default: look for the token as well.
                let token = self.token_key.as_ref().map(|k| k.pseudonym("user", &u));
                std::iter::once(u).chain(token).collect()
            }
        }
    }
}

/// The fleet store when `[serve.fleet]` is set (reconnected if its connection dropped).
impl AppState {
    async fn fleet_store(
        &self,
    ) -> Result<Option<Arc<mcptrail_collector::query::FleetStore>>, ApiError> {
        match &self.fleet {
            None => Ok(None),
            Some(f) => f.store().await.map(Some).map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "fleet_store_unavailable",
                    format!("the fleet store cannot be reached: {e}"),
                )
            }),
        }
    }
}

fn fleet_err(e: mcptrail_collector::Error) -> ApiError {
    match e {
        mcptrail_collector::Error::Config(m) => ApiError::bad(m),
        e => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "fleet_store_unavailable",
            format!("the fleet store failed: {e}"),
        ),
    }
}

/// A local search as a fleet search: `before_seq` is the fleet's time cursor (µs), `q` a
/// case-insensitive substring of the stored (redacted) event.
fn to_fleet(s: &Search) -> mcptrail_collector::query::FleetSearch {
    mcptrail_collector::query::FleetSearch {
        session: s.session.clone(),
        agent: s.agent.clone(),
        users: s.users.clone(),
        tool: s.tool.clone(),
        kind: s.kind.clone(),
        since: s.since.clone(),
        until: s.until.clone(),
        text: s.text.clone(),
        exclude_kind_prefix: s.exclude_kind_prefix.clone(),
        before_us: s.before_seq.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
        limit: i64::try_from(s.limit).unwrap_or(i64::MAX),
    }
}

async fn fleet_page(
    store: &mcptrail_collector::query::FleetStore,
    s: &Search,
) -> Result<(usize, Value), ApiError> {
    let page = store.search(&to_fleet(s)).await.map_err(fleet_err)?;
    let n = page.events.len();
    Ok((
        n,
        json!({"events": page.events, "next_before_seq": page.next_before_us}),
    ))
}

fn page_json(page: mcptrail_index::Page) -> (usize, Value) {
    let n = page.events.len();
    (
        n,
        json!({"events": page.events, "next_before_seq": page.next_before_seq}),
    )
}

async fn events(
    State(st): St,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult {
    let spec = route("GET", "/api/v1/events");
    let p = st.authorise(&headers, spec, raw.as_deref())?;
    let Query(q) = q?;
    let search =
        Search {
            session: text_param("session", q.session)?,
            agent: text_param("agent", q.agent)?,
            users: st.users(text_param("user", q.user)?),
            tool: text_param("tool", q.tool)?,
            kind: kind_param(q.kind)?,
            since: time_param("since", q.since)?,
            until: time_param("until", q.until)?,
            text: match text_param("q", q.q)? {
                Some(t) if !t.chars().any(char::is_alphanumeric) => return Err(ApiError::bad(
                    "q matches words of the redacted text: give it at least one letter or digit",
                )),
                t => t,
            },
            before_seq: q.before_seq,
            limit: st.limit(q.limit)?,
            // The meta-audit is the auditor's (GET /api/v1/meta-audit), not the investigator's.
            exclude_kind_prefix: Some("governance.".into()),
        };
    let (n, body) = match st.fleet_store().await? {
        Some(f) => fleet_page(&f, &search).await?,
        None => page_json(st.with_index(move |i| i.search(&search)).await?),
    };
    st.read_event(spec, &p, raw.as_deref(), n);
    Ok(Json(body).into_response())
}

/// Query of the paged lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    before_seq: Option<u64>,
    limit: Option<u64>,
}

async fn sessions(
    State(st): St,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult {
    let spec = route("GET", "/api/v1/sessions");
    let p = st.authorise(&headers, spec, raw.as_deref())?;
    let Query(q) = q?;
    let limit = st.limit(q.limit)?;
    if let Some(f) = st.fleet_store().await? {
        let before = q.before_seq.map(|b| i64::try_from(b).unwrap_or(i64::MAX));
        let list = f
            .sessions(before, i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(fleet_err)?;
        let next = (list.len() as u64 == limit)
            .then(|| list.last().map(|s| s.last_us))
            .flatten();
        st.read_event(spec, &p, raw.as_deref(), 0);
        return Ok(Json(json!({"sessions": list, "next_before_seq": next})).into_response());
    }
    let list = st
        .with_index(move |i| i.sessions(q.before_seq, limit))
        .await?;
    let next = (list.len() as u64 == limit)
        .then(|| list.last().map(|s| s.last_seq))
        .flatten();
    st.read_event(spec, &p, raw.as_deref(), 0);
    Ok(Json(json!({"sessions": list, "next_before_seq": next})).into_response())
}

fn valid_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        || id.contains("..")
    {
        return Err(ApiError::bad(
            "an id is 1–128 characters of letters, digits, '-', '_', ':' or '.'",
        ));
    }
    Ok(())
}

async fn timeline(
    State(st): St,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    RawQuery(raw): RawQuery,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult {
    let spec = route("GET", "/api/v1/sessions/{id}/timeline");
    let p = st.authorise(&headers, spec, raw.as_deref())?;
    valid_id(&id)?;
    let Query(q) = q?;
    let search = Search {
        session: Some(id.clone()),
        before_seq: q.before_seq,
        limit: st.limit(q.limit)?,
        ..Default::default()
    };
    let (n, mut body) = match st.fleet_store().await? {
        Some(f) => fleet_page(&f, &search).await?,
        None => page_json(st.with_index(move |i| i.search(&search)).await?),
    };
    // A timeline reads oldest first.
    if let Some(events) = body["events"].as_array_mut() {
        events.reverse();
    }
    body["session_id"] = json!(id);
    st.read_event(spec, &p, raw.as_deref(), n);
    Ok(Json(body).into_response())
}

async fn kind_page(
    st: Arc<AppState>,
    headers: HeaderMap,
    raw: Option<String>,
    q: Result<Query<PageQuery>, QueryRejection>,
    spec: &'static RouteSpec,
    kind: &'static str,
) -> ApiResult {
    let p = st.authorise(&headers, spec, raw.as_deref())?;
    let Query(q) = q?;
    let search = Search {
        kind: Some(kind.into()),
        before_seq: q.before_seq,
        limit: st.limit(q.limit)?,
        ..Default::default()
    };
    let page = st.with_index(move |i| i.search(&search)).await?;
    let (n, body) = page_json(page);
    st.read_event(spec, &p, raw.as_deref(), n);
    Ok(Json(body).into_response())
}

async fn alerts(
    State(st): St,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult {
    let spec = route("GET", "/api/v1/alerts");
    if st.fleet.is_some() {
        // The fleet's alerts are the collector's: integrity, silence and detection across
        // sources (alerts the taps raised themselves are events: `/events?kind=alert`).
        let p = st.authorise(&headers, spec, raw.as_deref())?;
        let Query(q) = q?;
        let limit = st.limit(q.limit)?;
        let f = st.fleet_store().await?.expect("fleet mode");
        let before = q.before_seq.map(|b| i64::try_from(b).unwrap_or(i64::MAX));
        let rows = f
            .alerts(before, i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(fleet_err)?;
        let next = (rows.len() as u64 == limit)
            .then(|| rows.last().and_then(|r| r["id"].as_u64()))
            .flatten();
        // Shaped like the `alert` events of a tap's ledger, so the dashboard shows them.
        let events: Vec<Value> = rows
            .into_iter()
            .map(|r| {
                let evidence = r["detail"]["evidence"].clone();
                json!({
                    "event_id": r["alert_id"].as_str().map(String::from)
                        .unwrap_or_else(|| format!("collector-alert-{}", r["id"])),
                    "kind": "alert",
                    "time": r["time"],
                    "seq": r["seq"],
                    "_source": format!("{}/{}", r["tenant"].as_str().unwrap_or("-"),
                                       r["source"].as_str().unwrap_or("-")),
                    "detail": {
                        "source": "collector",
                        "rule": r["detail"]["rule"].as_str().unwrap_or(r["kind"].as_str().unwrap_or("")),
                        "severity": r["severity"],
                        "summary": r["message"],
                        "evidence": if evidence.is_null() { json!([]) } else { evidence },
                    },
                })
            })
            .collect();
        let n = events.len();
        st.read_event(spec, &p, raw.as_deref(), n);
        return Ok(Json(json!({"events": events, "next_before_seq": next})).into_response());
    }
    kind_page(st, headers, raw, q, spec, "alert").await
}

async fn meta_audit(
    State(st): St,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult {
    kind_page(
        st,
        headers,
        raw,
        q,
        route("GET", "/api/v1/meta-audit"),
        "governance.*",
    )
    .await
}

/// Query of the live tail.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TailQuery {
    /// Start at this seq (default: after the current head).
    from_seq: Option<u64>,
}

async fn tail(
    State(st): St,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    q: Result<Query<TailQuery>, QueryRejection>,
) -> ApiResult {
    let spec = route("GET", "/api/v1/tail");
    let p = st.authorise(&headers, spec, raw.as_deref())?;
    let Query(q) = q?;
    if st.fleet.is_some() {
        st.read_event(spec, &p, raw.as_deref(), 0);
        return Ok(fleet_tail(st.clone(), q.from_seq));
    }
    let from = match q.from_seq {
        Some(s) => s.max(1),
        None => {
            let dir = st.data_dir.clone();
            tokio::task::spawn_blocking(move || mcptrail_sinks::ledger_head(&dir))
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?
                .map_or(1, |h| h.0 + 1)
        }
    };
    st.read_event(spec, &p, raw.as_deref(), 0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<SseEvent, Infallible>>(256);
    let dir = st.data_dir.clone();
    // Follow the ledger like the sinks do, on a blocking thread; stop when the client goes.
    tokio::task::spawn_blocking(move || {
        let mut t = mcptrail_sinks::LedgerTail::open(&dir, from);
        loop {
            match t.next_record() {
                // The meta-audit is the auditor's (GET /api/v1/meta-audit): investigators do not
                // watch who reads what, here any more than in the search.
                Ok(Some(r)) if r.kind.starts_with("governance.") => {}
                Ok(Some(r)) => {
                    let data = String::from_utf8_lossy(&r.line).into_owned();
                    let ev = SseEvent::default()
                        .id(r.seq.to_string())
                        .event(r.kind)
                        .data(data);
                    if tx.blocking_send(Ok(ev)).is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    if tx.is_closed() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    let _ = tx
                        .blocking_send(Ok(SseEvent::default().event("error").data(e.to_string())));
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The live tail over the fleet store: every event stored from now on (or from `from_us`, µs
/// since the epoch), polled every `tail_poll_ms`. Sources catch up out of order, so each
/// poll looks `tail_lookback_secs` back in event time again and skips what it sent; an event
/// that arrives later than that is in the search, not in the tail.
fn fleet_tail(st: Arc<AppState>, from_us: Option<u64>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<SseEvent, Infallible>>(256);
    tokio::spawn(async move {
        let settings = st.fleet.as_ref().expect("fleet mode").settings.clone();
        let poll = Duration::from_millis(settings.tail_poll_ms.max(50));
        let lookback = i64::try_from(settings.tail_lookback_secs.saturating_mul(1_000_000))
            .unwrap_or(i64::MAX);
        let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64;
        let mut watermark = from_us.map_or(now, |f| i64::try_from(f).unwrap_or(now));
        let mut sent: std::collections::HashMap<String, i64> = Default::default();
        let fail = |e: String| Ok(SseEvent::default().event("error").data(e));
        loop {
            if tx.is_closed() {
                return;
            }
            let store = match st.fleet_store().await {
                Ok(Some(s)) => s,
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(fail(e.message.clone())).await;
                    return;
                }
            };
            let mut cursor = watermark.saturating_sub(lookback);
            loop {
                let before = cursor;
                let rows = match store.since(cursor, "governance.", 1000).await {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(fail(e.to_string())).await;
                        return;
                    }
                };
                let full = rows.len() == 1000;
                for (t, id, ev) in rows {
                    cursor = cursor.max(t);
                    if sent.contains_key(&id) {
                        continue;
                    }
                    watermark = watermark.max(t);
                    let kind = ev["kind"].as_str().unwrap_or("event").to_string();
                    let item = SseEvent::default()
                        .id(id.clone())
                        .event(kind)
                        .data(ev.to_string());
                    sent.insert(id, t);
                    if tx.send(Ok(item)).await.is_err() {
                        return;
                    }
                }
                if !full || cursor == before {
                    break;
                }
            }
            let horizon = watermark.saturating_sub(lookback);
            sent.retain(|_, t| *t >= horizon);
            tokio::time::sleep(poll).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn list_requests(State(st): St, headers: HeaderMap) -> ApiResult {
    let spec = route("GET", "/api/v1/requests");
    let p = st.authorise(&headers, spec, None)?;
    let now = time::OffsetDateTime::now_utc();
    let list = st
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .list(now);
    st.read_event(spec, &p, None, 0);
    Ok(Json(json!({"requests": list})).into_response())
}

/// Body of `POST /api/v1/requests`.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
enum NewRequest {
    Forget {
        subject: String,
        reason: String,
    },
    Reveal {
        event_id: String,
        field: String,
        reason: String,
    },
    Purge {
        through_seq: u64,
        reason: String,
    },
    RetentionPolicy {
        policy: mcptrail_retention::Policy,
    },
}

async fn create_request(
    State(st): St,
    headers: HeaderMap,
    body: Result<Json<NewRequest>, JsonRejection>,
) -> ApiResult {
    let spec = route("POST", "/api/v1/requests");
    let p = st.authorise(&headers, spec, None)?;
    let Json(body) = body?;
    let reason_ok = |r: &str| {
        if r.trim().is_empty() || r.len() > 1000 {
            Err(ApiError::bad(
                "reason must say why (1–1000 characters); it is recorded",
            ))
        } else {
            Ok(())
        }
    };
    let action = match body {
        NewRequest::Forget { subject, reason } => {
            reason_ok(&reason)?;
            if subject.trim().is_empty() || subject.len() > 512 {
                return Err(ApiError::bad(
                    "subject must name the principal (1–512 characters)",
                ));
            }
            let key = st.token_key.as_ref().ok_or_else(|| {
                ApiError::new(StatusCode::CONFLICT, "no_key", "no pseudonym key in this data directory: nothing was ever encrypted, there is nothing to forget")
            })?;
            Action::Forget {
                subject_token: mcptrail_redact::Vault::subject_token(key, &subject),
                reason,
            }
        }
        NewRequest::Reveal {
            event_id,
            field,
            reason,
        } => {
            reason_ok(&reason)?;
            valid_id(&event_id)?;
            if !field.starts_with('/') || field.len() > 512 || field.chars().any(char::is_control) {
                return Err(ApiError::bad(
                    "field is a JSON pointer from the event's `redactions`, e.g. /parameters_used/ssn",
                ));
            }
            if st.vault.is_none() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "no_master_key",
                    "this server has no master key ([redact] master_key_file or $MCPTRAIL_MASTER_KEY): nothing can be revealed",
                ));
            }
            // Checked now, so the approver decides on something that can be carried out.
            let (id2, f2) = (event_id.clone(), field.clone());
            let event = st.with_index(move |i| i.event_by_id(&id2)).await?;
            match event {
                None => {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        format!("no event {event_id} in the index"),
                    ))
                }
                Some(e) if !governance::has_sealed(&e, &f2) => {
                    return Err(ApiError::bad(format!(
                        "{field} of event {event_id} holds no encrypted value (its `redactions` name the encrypted fields)"
                    )))
                }
                Some(_) => {}
            }
            Action::Reveal {
                event_id,
                field,
                reason,
            }
        }
        NewRequest::Purge {
            through_seq,
            reason,
        } => {
            reason_ok(&reason)?;
            if through_seq == 0 {
                return Err(ApiError::bad(
                    "through_seq must be the last seq of a sealed segment",
                ));
            }
            Action::Purge {
                through_seq,
                reason,
            }
        }
        NewRequest::RetentionPolicy { policy } => {
            policy
                .validate()
                .map_err(|e| ApiError::bad(e.to_string()))?;
            Action::RetentionPolicy { policy }
        }
    };
    let id = uuid::Uuid::now_v7().to_string();
    let now = time::OffsetDateTime::now_utc();
    let ttl =
        time::Duration::seconds(i64::try_from(st.cfg.approval_ttl_secs).unwrap_or(i64::MAX / 2));
    let expires = mcptrail_event::format_rfc3339_nanos(now + ttl);
    let role = p.roles.first().map_or("", |r| r.as_str());
    let mut ev = governance::request_event(&id, &action, &p.name, role, &expires);
    st.recorder
        .record_durable(ev.clone())
        .await
        .map_err(ApiError::internal)?;
    ev.time = mcptrail_event::format_rfc3339_nanos(now);
    let req = {
        let mut rs = st.requests.lock().unwrap_or_else(|p| p.into_inner());
        rs.apply(&ev);
        rs.get(&id, now)
    };
    Ok((StatusCode::CREATED, Json(json!(req))).into_response())
}

async fn decide(st: Arc<AppState>, headers: HeaderMap, id: String, approve: bool) -> ApiResult {
    let spec = route(
        "POST",
        if approve {
            "/api/v1/requests/{id}/approve"
        } else {
            "/api/v1/requests/{id}/deny"
        },
    );
    let p = st.authorise(&headers, spec, None)?;
    valid_id(&id)?;
    let _one_at_a_time = st.decide.lock().await;
    let now = time::OffsetDateTime::now_utc();
    let checked = st
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check_decision(&id, &p.name, now);
    let req = match checked {
        Ok(r) => r,
        Err(Refusal::NotFound) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such request",
            ))
        }
        Err(refusal) => {
            let why = refusal.why();
            let ev = governance::decision_event(&id, "refused", &p.name, Some(&why));
            st.recorder
                .record_durable(ev.clone())
                .await
                .map_err(ApiError::internal)?;
            st.requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .apply(&ev);
            let (status, code) = match refusal {
                Refusal::SelfApproval => (StatusCode::FORBIDDEN, "self_approval"),
                Refusal::Expired => (StatusCode::CONFLICT, "expired"),
                _ => (StatusCode::CONFLICT, "already_decided"),
            };
            return Err(ApiError::new(status, code, why));
        }
    };
    let decision = if approve { "approved" } else { "denied" };
    let ev = governance::decision_event(&id, decision, &p.name, None);
    st.recorder
        .record_durable(ev.clone())
        .await
        .map_err(ApiError::internal)?;
    st.requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .apply(&ev);
    // A reveal is carried out when its requester collects it (POST .../reveal).
    if approve && !matches!(req.action, Action::Reveal { .. }) {
        let st2 = st.clone();
        let by = p.name.clone();
        let x = tokio::task::spawn_blocking(move || {
            governance::execute(&st2.data_dir, st2.engine.as_deref(), &req, &by)
        })
        .await
        .map_err(ApiError::internal)?;
        for e in x.events.clone() {
            st.recorder
                .record_durable(e)
                .await
                .map_err(ApiError::internal)?;
        }
        let ev = governance::execution_event(&id, &x, &p.name);
        st.recorder
            .record_durable(ev.clone())
            .await
            .map_err(ApiError::internal)?;
        st.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apply(&ev);
    }
    let r = st
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id, now);
    Ok(Json(json!(r)).into_response())
}

async fn approve(State(st): St, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> ApiResult {
    decide(st, headers, id, true).await
}

async fn deny(State(st): St, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> ApiResult {
    decide(st, headers, id, false).await
}

/// The requester collects an approved reveal: decrypted now, returned once, recorded as
/// `governance.reveal` (without the value) before the answer leaves.
async fn collect_reveal(
    State(st): St,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult {
    let spec = route("POST", "/api/v1/requests/{id}/reveal");
    let p = st.authorise(&headers, spec, None)?;
    valid_id(&id)?;
    let _one_at_a_time = st.decide.lock().await;
    let now = time::OffsetDateTime::now_utc();
    let ttl =
        time::Duration::seconds(i64::try_from(st.cfg.approval_ttl_secs).unwrap_or(i64::MAX / 2));
    let checked = st
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check_collect(&id, &p.name, now, ttl);
    let req = match checked {
        Ok(r) => r,
        Err(why) => {
            let (status, code, msg) = match why {
                NotCollectable::NotFound => (
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no such reveal request".to_string(),
                ),
                NotCollectable::NotRequester => (
                    StatusCode::FORBIDDEN,
                    "not_requester",
                    "only the principal who asked for the reveal can collect it".to_string(),
                ),
                NotCollectable::NotApproved(s) => (
                    StatusCode::CONFLICT,
                    "not_approved",
                    format!("the request is not approved ({s:?})"),
                ),
                NotCollectable::Collected => (
                    StatusCode::GONE,
                    "collected",
                    "the value was already collected (a reveal is given once); make a new request"
                        .to_string(),
                ),
                NotCollectable::Expired => (
                    StatusCode::CONFLICT,
                    "expired",
                    "the approval is older than approval_ttl_secs; make a new request".to_string(),
                ),
            };
            st.access_event(
                &format!("POST {}", spec.path),
                Some(&p),
                code,
                status.as_u16(),
                None,
            );
            return Err(ApiError::new(status, code, msg));
        }
    };
    let Action::Reveal {
        event_id,
        field,
        reason,
    } = &req.action
    else {
        return Err(ApiError::internal("not a reveal"));
    };
    let vault = st.vault.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_master_key",
            "this server has no master key: nothing can be revealed",
        )
    })?;
    let eid = event_id.clone();
    let event = st.with_index(move |i| i.event_by_id(&eid)).await?;
    let (eid, f) = (event_id.clone(), field.clone());
    let revealed = tokio::task::spawn_blocking(move || match event {
        Some(e) => governance::reveal(&vault, &e, &eid, &f),
        None => mcptrail_redact::Revealed {
            text: None,
            values: vec![json!({"result": "no_such_event"})],
            problems: Vec::new(),
        },
    })
    .await
    .map_err(ApiError::internal)?;
    let approved_by = req.decided_by.clone().unwrap_or_default();
    let mut ev = Event::new(EventKind::GovernanceReveal);
    ev.detail = Some(json!({
        "request_id": id, "event_id": event_id, "field": field, "reason": reason,
        "by": req.requested_by, "approved_by": approved_by, "values": revealed.values,
    }));
    st.recorder
        .record_durable(ev)
        .await
        .map_err(ApiError::internal)?;
    let x = governance::Executed {
        outcome: if revealed.text.is_some() {
            "executed"
        } else {
            "failed"
        },
        detail: json!({"values": revealed.values}),
        events: Vec::new(),
    };
    let ev = governance::execution_event(&id, &x, &approved_by);
    st.recorder
        .record_durable(ev.clone())
        .await
        .map_err(ApiError::internal)?;
    st.requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .apply(&ev);
    st.read_event(spec, &p, None, usize::from(revealed.text.is_some()));
    match revealed.text {
        Some(value) => Ok((
            [(header::CACHE_CONTROL, "no-store")],
            Json(json!({
                "request_id": id, "event_id": event_id, "field": field,
                "value": value, "values": revealed.values,
            })),
        )
            .into_response()),
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_revealed",
            format!(
                "the value cannot be revealed: {}",
                serde_json::to_string(&revealed.values).unwrap_or_default()
            ),
        )),
    }
}

/// A purge asked for directly, without a request: refused, and the refusal recorded.
async fn direct_purge(State(st): St, headers: HeaderMap) -> ApiResult {
    let spec = route("POST", "/api/v1/retention/purge");
    let p = st.authorise(&headers, spec, None)?;
    st.access_event(
        "POST /api/v1/retention/purge",
        Some(&p),
        "purge_without_approval",
        403,
        None,
    );
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "approval_required",
        "a purge needs a request (POST /api/v1/requests, action \"purge\") approved by a second principal with the auditor role",
    ))
}

async fn config(State(st): St, headers: HeaderMap) -> ApiResult {
    let spec = route("GET", "/api/v1/config");
    let p = st.authorise(&headers, spec, None)?;
    st.read_event(spec, &p, None, 0);
    Ok(Json(json!({
        "serve": st.cfg,
        "data_dir": st.data_dir,
        "retention_configured": st.engine.is_some(),
        "sinks": st.sinks.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
    }))
    .into_response())
}

async fn tokens(State(st): St, headers: HeaderMap) -> ApiResult {
    let spec = route("GET", "/api/v1/tokens");
    let p = st.authorise(&headers, spec, None)?;
    let list = st.tokens.list().map_err(ApiError::internal)?;
    st.read_event(spec, &p, None, 0);
    let list: Vec<Value> = list
        .into_iter()
        .map(|t| json!({"name": t.name, "role": t.role, "created": t.created}))
        .collect();
    Ok(Json(json!({"tokens": list})).into_response())
}
