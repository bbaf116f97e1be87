//! Start a server over a fresh ledger, make tokens for every role, speak HTTP to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcptrail_event::{Event, EventKind, UserIdentity};
use mcptrail_ledger::{Ledger, LedgerConfig, LedgerReader};
use mcptrail_server::{Role, ServeConfig, ServerOptions};
use serde_json::Value;

pub(crate) struct Server {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) base: String,
    pub(crate) tokens: std::collections::HashMap<&'static str, String>,
    pub(crate) agent: ureq::Agent,
    running: Option<mcptrail_server::Running>,
    rt: tokio::runtime::Runtime,
}

pub(crate) fn ledger_cfg() -> LedgerConfig {
    LedgerConfig {
        fsync: false,
        ..LedgerConfig::default()
    }
}

/// A small recorded session: start, a tools/call with a user, its response, an alert.
pub(crate) fn seed_ledger(data_dir: &Path) {
    let mut l = Ledger::open(data_dir, ledger_cfg()).unwrap();
    let mut evs = Vec::new();
    let mut start = Event::new(EventKind::SessionStart);
    start.session_id = Some("sess-1".into());
    start.agent_id = Some("claude-desktop".into());
    evs.push(start);
    let mut req = Event::new(EventKind::McpRequest);
    req.session_id = Some("sess-1".into());
    req.agent_id = Some("claude-desktop".into());
    req.method = Some("tools/call".into());
    req.tool_invoked = Some("read_file".into());
    req.parameters_used =
        Some(serde_json::json!({"path": "/etc/hosts", "note": "[redacted:email]"}));
    req.user_identity = Some(UserIdentity {
        principal: "alice@example.com".into(),
        source: "test".into(),
        ..Default::default()
    });
    evs.push(req);
    let mut resp = Event::new(EventKind::McpResponse);
    resp.session_id = Some("sess-1".into());
    resp.method = Some("tools/call".into());
    evs.push(resp);
    let mut alert = Event::new(EventKind::Alert);
    alert.session_id = Some("sess-1".into());
    alert.detail =
        Some(serde_json::json!({"rule": "builtin.sensitive_path", "evidence": ["/etc/hosts"]}));
    evs.push(alert);
    l.append(&mut evs).unwrap();
}

pub(crate) const ROLES: [(&str, Role); 5] = [
    ("oscar", Role::Operator),
    ("ivy", Role::Investigator),
    ("audrey", Role::Auditor),
    ("abe", Role::Auditor),
    ("ada", Role::Admin),
];

impl Server {
    pub(crate) fn start(cfg: ServeConfig) -> Server {
        let dir = tempfile::tempdir().unwrap();
        seed_ledger(dir.path());
        Self::start_in(dir, cfg, None)
    }

    pub(crate) fn start_without_master_key() -> Server {
        let dir = tempfile::tempdir().unwrap();
        seed_ledger(dir.path());
        Self::start_with(dir, ServeConfig::default(), None, None)
    }

    pub(crate) fn start_in(
        dir: tempfile::TempDir,
        cfg: ServeConfig,
        engine: Option<Arc<mcptrail_retention::Engine>>,
    ) -> Server {
        let master = mcptrail_redact::MasterKey::from_bytes([7; 32]);
        Self::start_with(dir, cfg, engine, Some(master))
    }

    fn start_with(
        dir: tempfile::TempDir,
        mut cfg: ServeConfig,
        engine: Option<Arc<mcptrail_retention::Engine>>,
        master_key: Option<mcptrail_redact::MasterKey>,
    ) -> Server {
        cfg.listen = "127.0.0.1:0".into();
        let store = mcptrail_server::token_store(&cfg, dir.path());
        let mut tokens = std::collections::HashMap::new();
        for (name, role) in ROLES {
            let _ = store.revoke(name);
            tokens.insert(name, store.add(name, role).unwrap());
        }
        let token_key = mcptrail_redact::TokenKey::load_or_create(
            &dir.path()
                .join("keys")
                .join(mcptrail_redact::TOKEN_KEY_FILE),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let opts = ServerOptions {
            config: cfg,
            data_dir: dir.path().to_path_buf(),
            ledger: ledger_cfg(),
            event_hook: None,
            engine,
            token_key: Some(token_key),
            master_key,
            sinks: Vec::new(),
            verify: mcptrail_ledger::VerifyOptions {
                skip_macs: true,
                ..Default::default()
            },
        };
        let running = rt.block_on(mcptrail_server::start(opts)).unwrap();
        let base = format!("http://{}", running.addr);
        // A new connection per request: a pooled connection the server closed (after a
        // refusal that left a request body unread, say) makes the next POST fail with EOF,
        // which is the client's race, not the server's answer.
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .build()
            .new_agent();
        Server {
            dir,
            base,
            tokens,
            agent,
            running: Some(running),
            rt,
        }
    }

    /// Stop serving; keep the data directory (for a restart).
    pub(crate) fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.abort();
        }
        let Server { dir, rt, .. } = self;
        rt.shutdown_timeout(Duration::from_secs(2));
        dir
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub(crate) fn get(&self, who: Option<&str>, path: &str) -> (u16, Value) {
        let mut r = self.agent.get(format!("{}{path}", self.base));
        if let Some(w) = who {
            r = r.header("Authorization", format!("Bearer {}", self.token(w)));
        }
        let mut resp = r.call().unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub(crate) fn post(&self, who: Option<&str>, path: &str, body: &Value) -> (u16, Value) {
        let mut r = self.agent.post(format!("{}{path}", self.base));
        if let Some(w) = who {
            r = r.header("Authorization", format!("Bearer {}", self.token(w)));
        }
        let mut resp = r
            .header("Content-Type", "application/json")
            .send(serde_json::to_vec(body).unwrap())
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub(crate) fn token(&self, who: &str) -> String {
        self.tokens
            .get(who)
            .cloned()
            .unwrap_or_else(|| who.to_string())
    }
}

/// Every event of the ledger (as stored).
pub(crate) fn ledger_events(data_dir: &Path) -> Vec<Value> {
    LedgerReader::open(data_dir, 1)
        .unwrap()
        .map(|r| serde_json::from_slice(&r.unwrap().line).unwrap())
        .collect()
}

/// Wait (group commit is asynchronous) until `pred` holds for the ledger's events.
pub(crate) fn wait_for_ledger(
    data_dir: &Path,
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let evs = ledger_events(data_dir);
        if pred(&evs) {
            return evs;
        }
        assert!(Instant::now() < deadline, "the ledger never showed {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
