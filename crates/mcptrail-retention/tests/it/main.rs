//! The retention engine on real ledgers with a fake clock: archive, purge with tombstones,
//! verify, the self-check (and its failures), prefixes, crashes, the index and sink cursors,
//! and the S3 Object Lock archive against a real moto server.

mod engine;
mod s3;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mcptrail_event::{format_rfc3339_nanos, Event, EventKind};
use mcptrail_integrity::Seed;
use mcptrail_ledger::{
    default_seed_path, list_segments, local_verifier, CheckpointPolicy, Ledger, LedgerConfig,
    LedgerReader, MacPolicy, VerifyOptions, LEDGER_DIR,
};
use mcptrail_retention::{
    Archive, Authorisation, DirArchive, Engine, EngineConfig, FixedClock, Policy, RetentionConfig,
};
use time::OffsetDateTime;

/// 2026-01-01T00:00:00Z.
pub(crate) fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap()
}

pub(crate) fn day(n: i64) -> OffsetDateTime {
    t0() + time::Duration::days(n)
}

/// default 90 days, pci 365 (90 at hand), pii 30.
pub(crate) fn pci_policy() -> Policy {
    RetentionConfig {
        retention_days: Some(90),
        label_retention_days: [("pci".into(), 365), ("pii".into(), 30)].into(),
        label_at_hand_days: [("pci".into(), 90)].into(),
        ..RetentionConfig::default()
    }
    .policy()
    .unwrap()
    .unwrap()
}

pub(crate) fn ledger_config(segment_max_bytes: u64) -> LedgerConfig {
    LedgerConfig {
        segment_max_bytes,
        // Events carry fake (past) times; rotation by age would follow them.
        segment_max_age: Duration::from_secs(100 * 365 * 86_400),
        fsync: false,
        checkpoints: CheckpointPolicy {
            every_records: 4,
            interval: Duration::from_secs(3600),
            ..CheckpointPolicy::default()
        },
        macs: MacPolicy {
            enabled: true,
            epoch_records: 3,
            epoch_interval: Duration::from_secs(3600),
            seed_path: None,
        },
    }
}

pub(crate) const SESSION: &str = "0190a1b2-eeee-7000-8000-00000000000e";

/// One segment per entry of `segments`: (day of its events, labels of its second event).
/// Three events each; then an active segment with one event on `active_day`.
pub(crate) fn build(dir: &Path, segments: &[(i64, &[&str])], active_day: i64) {
    // Every append after the first rotates (segment_max_bytes 1): one segment per batch.
    let mut l = Ledger::open(dir, ledger_config(1)).unwrap();
    for (i, (d, labels)) in segments.iter().enumerate() {
        let mut batch: Vec<Event> = (0..3)
            .map(|k| {
                let mut e = Event::new(EventKind::McpRequest);
                e.time = format_rfc3339_nanos(day(*d) + time::Duration::minutes(k));
                e.method = Some("tools/call".into());
                e.request_id = Some(serde_json::json!(i * 10 + k as usize));
                if k == 1 {
                    e.labels = labels.iter().map(|l| l.to_string()).collect();
                }
                e
            })
            .collect();
        l.append(&mut batch).unwrap();
    }
    let mut e = Event::new(EventKind::SessionStart);
    e.time = format_rfc3339_nanos(day(active_day));
    e.session_id = Some(SESSION.into());
    l.append(&mut [e]).unwrap();
    drop(l);
    // (Without rotating again.)
    Ledger::open(dir, ledger_config(64 << 20))
        .unwrap()
        .checkpoint_now()
        .unwrap();
}

pub(crate) fn verify_opts(dir: &Path) -> VerifyOptions {
    VerifyOptions {
        seed: Some(Seed::read(&default_seed_path(dir)).unwrap()),
        verifier: Some(local_verifier(dir).unwrap().unwrap()),
        ..VerifyOptions::default()
    }
}

pub(crate) struct Fixture {
    pub(crate) data: tempfile::TempDir,
    pub(crate) archive_dir: tempfile::TempDir,
    pub(crate) clock: Arc<FixedClock>,
}

impl Fixture {
    pub(crate) fn new(segments: &[(i64, &[&str])], active_day: i64) -> Fixture {
        let data = tempfile::tempdir().unwrap();
        // A data directory is 0700 (mcptrail creates it so; the self-check insists).
        std::fs::set_permissions(
            data.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        build(data.path(), segments, active_day);
        Fixture {
            data,
            archive_dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(FixedClock::new(t0())),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.data.path()
    }

    pub(crate) fn archive(&self) -> DirArchive {
        DirArchive::new(self.archive_dir.path().join("mcptrail"))
    }

    pub(crate) fn engine_with(&self, archives: Vec<Arc<dyn Archive>>) -> Engine {
        Engine::new(
            self.path(),
            EngineConfig {
                // Governance events go to the active segment (no rotation).
                ledger: ledger_config(64 << 20),
                archives,
                verify: verify_opts(self.path()),
                ..EngineConfig::default()
            },
            self.clock.clone(),
        )
    }

    /// An engine with the archive directory, its policy bootstrapped.
    pub(crate) fn engine(&self) -> Engine {
        let e = self.engine_with(vec![Arc::new(self.archive())]);
        e.bootstrap(&pci_policy(), Some(Path::new("/etc/mcptrail.toml")), "ops")
            .unwrap();
        e
    }

    pub(crate) fn at(&self, d: i64) {
        self.clock.set(day(d));
    }

    pub(crate) fn segments(&self) -> Vec<String> {
        list_segments(&self.path().join(LEDGER_DIR))
            .unwrap()
            .iter()
            .map(|s| s.path.file_name().unwrap().to_str().unwrap().to_string())
            .collect()
    }

    pub(crate) fn events(&self, kind: EventKind) -> Vec<serde_json::Value> {
        LedgerReader::open(self.path(), 1)
            .unwrap()
            .map(|r| serde_json::from_slice::<serde_json::Value>(&r.unwrap().line).unwrap())
            .filter(|v| v["kind"] == kind.as_str())
            .collect()
    }
}

pub(crate) fn auth(by: &str, ok: &str) -> Authorisation {
    Authorisation {
        request_id: "req-42".into(),
        requested_by: by.into(),
        approved_by: ok.into(),
    }
}

pub(crate) fn copy_dir(src: &Path, dst: &Path) -> PathBuf {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
        std::fs::set_permissions(&to, std::fs::metadata(e.path()).unwrap().permissions()).unwrap();
    }
    dst.to_path_buf()
}
