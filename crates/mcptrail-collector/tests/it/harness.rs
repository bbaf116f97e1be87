//! A fleet for one test: unique names, collectors running in threads, publishing as the
//! fleet sink does, the alerts that arrive on NATS, and cleanup (stream and schema).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_nats::jetstream;
use futures_util::StreamExt;
use mcptrail_collector::{CollectorConfig, RunStats};
use mcptrail_test_support::fleet::{psql, wait_until, FleetNames, NATS_URL, PG_URL};

pub(crate) use mcptrail_test_support::fleet::FixtureSource;

type Collector = (
    Arc<AtomicBool>,
    JoinHandle<Result<RunStats, mcptrail_collector::Error>>,
);

pub(crate) struct Fleet {
    pub(crate) names: FleetNames,
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) js: jetstream::Context,
    pub(crate) dir: tempfile::TempDir,
    collectors: Vec<Collector>,
    alerts: Arc<Mutex<Vec<serde_json::Value>>>,
    /// Detection rules the collectors run (none by default).
    pub(crate) rules: Option<mcptrail_detect::RuleSet>,
}

impl Fleet {
    /// Names tagged `tag`; subscribes to `<prefix>.*.alerts` at once.
    pub(crate) fn new(tag: &str) -> Self {
        let names = FleetNames::new(tag);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = rt
            .block_on(async_nats::connect(NATS_URL))
            .expect("NATS JetStream must run at 127.0.0.1:4222 (tests never skip)");
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let mut sub = rt
            .block_on(client.subscribe(format!("{}.*.alerts", names.prefix)))
            .unwrap();
        let sink = alerts.clone();
        rt.spawn(async move {
            while let Some(m) = sub.next().await {
                let v: serde_json::Value =
                    serde_json::from_slice(&m.payload).expect("an alert is JSON");
                sink.lock().unwrap().push(v);
            }
        });
        let js = {
            let _in = rt.enter();
            jetstream::new(client)
        };
        Fleet {
            names,
            rt,
            js,
            dir: tempfile::tempdir().unwrap(),
            collectors: Vec::new(),
            alerts,
            rules: None,
        }
    }

    /// A config for this fleet trusting `keys`; `extra` TOML lines override the defaults.
    pub(crate) fn config(&self, keys: &[&str], extra: &str) -> CollectorConfig {
        let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
        let text = format!(
            "nats_url = \"{NATS_URL}\"\nprefix = \"{}\"\nstream = \"{}\"\nconsumer = \"c\"\npostgres_url = \"{PG_URL}\"\nschema = \"{}\"\ntrusted_keys = [{}]\nbatch_size = 200\nsweep_interval_ms = 200\n{extra}",
            self.names.prefix,
            self.names.stream,
            self.names.schema,
            keys.join(", ")
        );
        toml::from_str(&text).expect("a valid [collector] table")
    }

    /// Start a collector in a thread; returns once the stream exists.
    pub(crate) fn start_collector(&mut self, cfg: &CollectorConfig) {
        let stop = Arc::new(AtomicBool::new(false));
        let (cfg, flag) = (cfg.clone(), stop.clone());
        let rules = self.rules.clone();
        let handle = std::thread::spawn(move || mcptrail_collector::run(&cfg, rules, flag));
        self.collectors.push((stop, handle));
        let (js, stream) = (self.js.clone(), self.names.stream.clone());
        wait_until("the collector to create the stream", 60, || {
            self.rt.block_on(js.get_stream(&stream)).is_ok()
        });
        let newest = mcptrail_collector::schema::MIGRATIONS.last().unwrap().0;
        let schema = self.names.schema.clone();
        wait_until("the collector's migrations", 60, || {
            psql(&format!(
                "SELECT to_regclass('{schema}.schema_migrations') IS NOT NULL"
            )) == "t"
                && psql(&format!(
                    "SELECT max(version) FROM {schema}.schema_migrations"
                )) == newest.to_string()
        });
    }

    /// Stop every collector; their run statistics.
    pub(crate) fn stop_collectors(&mut self) -> Vec<RunStats> {
        for (stop, _) in &self.collectors {
            stop.store(true, Ordering::Relaxed);
        }
        self.collectors
            .drain(..)
            .map(|(_, h)| h.join().expect("collector thread").expect("collector run"))
            .collect()
    }

    /// Publish `body` on `subject` through JetStream (waits for the ack).
    pub(crate) fn publish_raw(&self, subject: &str, id: &str, body: &[u8]) {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", id);
        self.rt.block_on(async {
            self.js
                .publish_with_headers(subject.to_string(), h, body.to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap();
        });
    }

    /// Publish record `seq` (1-based) of `src` as source `source`, as the fleet sink does.
    pub(crate) fn publish_record(&self, source: &str, src: &FixtureSource, seq: usize) {
        let line = &src.lines[seq - 1];
        let id = mcptrail_test_support::sinks::event_id_of(line.as_bytes());
        self.publish_raw(
            &format!("{}.acme.{source}.events", self.names.prefix),
            &id,
            line.as_bytes(),
        );
    }

    /// Publish the checkpoint of `size` of `src`.
    pub(crate) fn publish_checkpoint(&self, source: &str, src: &FixtureSource, size: u64) {
        let note = &src
            .checkpoints
            .iter()
            .find(|(s, _)| *s == size)
            .unwrap_or_else(|| panic!("no checkpoint of size {size}"))
            .1;
        self.publish_raw(
            &format!("{}.acme.{source}.checkpoints", self.names.prefix),
            &format!("cp-{source}-{size}"),
            note.as_bytes(),
        );
    }

    /// `SELECT <what>` in this fleet's schema.
    pub(crate) fn pg(&self, sql: &str) -> String {
        psql(&format!("SET search_path TO {}; {sql}", self.names.schema))
    }

    /// Rows of `alerts` of `source` as `kind` strings, in order.
    pub(crate) fn alert_kinds(&self, source: &str) -> Vec<String> {
        let s = self.pg(&format!(
            "SELECT coalesce(string_agg(kind, ',' ORDER BY id), '') FROM alerts WHERE source = '{source}'"
        ));
        s.split(',')
            .filter(|k| !k.is_empty())
            .map(String::from)
            .collect()
    }

    /// Events stored for `source`.
    pub(crate) fn events_of(&self, source: &str) -> u64 {
        self.pg(&format!(
            "SELECT count(*) FROM events e JOIN sources s USING (source_id) WHERE s.source = '{source}'"
        ))
        .parse()
        .unwrap()
    }

    /// The alerts received on NATS so far.
    pub(crate) fn nats_alerts(&self) -> Vec<serde_json::Value> {
        self.alerts.lock().unwrap().clone()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (stop, _) in &self.collectors {
            stop.store(true, Ordering::Relaxed);
        }
        for (_, h) in self.collectors.drain(..) {
            let _ = h.join();
        }
        let _ = self.rt.block_on(self.js.delete_stream(&self.names.stream));
        if !std::thread::panicking() {
            self.names.drop_schema();
        }
    }
}
