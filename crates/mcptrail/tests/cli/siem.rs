//! `mcptrail ship` to Splunk HEC and Elasticsearch (the protocol-faithful receivers of
//! test-support) with a receiver outage and a `kill -9` of the shipper, and `mcptrail verify`
//! against the checkpoints an S3 sink put into a real moto Object Lock bucket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mcptrail_test_support::siem::{ElasticReceiver, HecReceiver, MotoS3};
use mcptrail_test_support::sinks::write_ledger;

use crate::support::*;

const HEC_TOKEN: &str = "0b7c5e2a-51d4-4c8e-a3b1-9f6e2d7c4a10";
const ES_KEY: &str = "Y2xpOmVzLWtleS0wMTIz";

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("mcptrail.toml");
    std::fs::write(&p, body).unwrap();
    p
}

fn cmd(data: &Path, config: &Path, args: &[&str]) -> Command {
    let mut c = mcptrail();
    c.arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("MCPTRAIL_TEST_HEC_TOKEN", HEC_TOKEN)
        .env("MCPTRAIL_TEST_ES_KEY", ES_KEY);
    c
}

fn run(mut c: Command) -> (i32, String) {
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(120), "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Count deliveries per id: (missing, distinct, duplicates).
fn tally(ids: &[String], got: &[String]) -> (usize, usize, usize) {
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for id in got {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let missing = ids
        .iter()
        .filter(|i| !counts.contains_key(i.as_str()))
        .count();
    (missing, counts.len(), got.len() - counts.len())
}

/// 30k events to HEC: the collector goes away and comes back, the shipper is killed with
/// SIGKILL mid-stream and started again; every event is indexed at least once.
#[test]
fn nothing_lost_splunk_hec_outage_and_kill_9() {
    const N: usize = 30_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ids = write_ledger(&data, N);
    let mut rx = HecReceiver::start(HEC_TOKEN, &["mcp_audit"]);
    rx.log.lock().unwrap().ack_after_polls = 1;
    let config = write_config(
        dir.path(),
        &format!("[[sinks]]\nname = \"splunk\"\ntype = \"splunk_hec\"\nurl = \"{}\"\ntoken = {{ env = \"MCPTRAIL_TEST_HEC_TOKEN\" }}\nindex = \"mcp_audit\"\nbatch_max_events = 500\nack_poll_ms = 5\nbackoff_initial_ms = 50\nbackoff_max_ms = 400\ntimeout_secs = 2\n", rx.url()),
    );
    let received = |rx: &HecReceiver| rx.log.lock().unwrap().event_ids.len();
    let mut first = cmd(&data, &config, &["ship", "--give-up-after", "120"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("before the outage", || received(&rx) >= 5_000);
    rx.stop();
    let during = received(&rx);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(received(&rx), during, "nothing arrives while HEC is down");
    rx.resume();
    wait_until("after HEC came back", || received(&rx) >= during + 5_000);
    first.kill().unwrap();
    first.wait().unwrap();
    let cursor: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("sinks/splunk.cursor")).unwrap()).unwrap();
    let at_kill = cursor["seq"].as_u64().unwrap();
    assert!(
        at_kill < N as u64,
        "killed before the end (cursor {at_kill})"
    );
    let (code, out) = run(cmd(&data, &config, &["ship"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("cursor {N} of {N} (lag 0)")), "{out}");
    let log = rx.log.lock().unwrap();
    let (missing, distinct, duplicates) = tally(&ids, &log.event_ids);
    println!("nothing lost (HEC): {N} events, cursor at kill {at_kill}, {distinct} distinct, {missing} missing, {duplicates} duplicates (dedupe by event.event_id)");
    assert_eq!((missing, distinct), (0, N));
}

/// 30k events to Elasticsearch with per-item 429s and a whole-request 503, a `kill -9` and a
/// restart: the index ends with every event exactly once (`_id` = event id, repeats are 409s).
#[test]
fn nothing_lost_elasticsearch_throttling_and_kill_9_with_dedupe_by_id() {
    const N: usize = 30_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ids = write_ledger(&data, N);
    let rx = ElasticReceiver::start(ES_KEY);
    {
        let mut log = rx.log.lock().unwrap();
        log.fail_next = vec![503];
        log.reject_items_429 = 700;
    }
    let config = write_config(
        dir.path(),
        &format!("[[sinks]]\nname = \"es\"\ntype = \"elasticsearch\"\nurl = \"{}\"\napi_key = {{ env = \"MCPTRAIL_TEST_ES_KEY\" }}\nbatch_max_events = 1000\nbackoff_initial_ms = 20\nbackoff_max_ms = 200\n", rx.url()),
    );
    let created = |rx: &ElasticReceiver| rx.log.lock().unwrap().created.len();
    let mut first = cmd(&data, &config, &["ship"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("first documents", || created(&rx) >= 8_000);
    first.kill().unwrap();
    first.wait().unwrap();
    let (code, out) = run(cmd(&data, &config, &["ship"]));
    assert_eq!(code, 0, "{out}");
    let log = rx.log.lock().unwrap();
    let (missing, distinct, duplicates) = tally(&ids, &log.created);
    println!("nothing lost (Elasticsearch): {N} events, {distinct} documents, {missing} missing, {} repeats answered 409", log.conflicts);
    assert_eq!(
        (missing, distinct, duplicates),
        (0, N, 0),
        "each event exactly once in the index"
    );
    assert_eq!(log.docs.len(), N);
}

/// `ship` puts the signed checkpoints into the Object Lock bucket; `verify` (with the S3 sink
/// in the config) checks the local ledger against them and catches a rollback that the local
/// files alone no longer show.
#[test]
fn verify_checks_against_the_s3_sink_and_catches_a_rollback() {
    let moto = MotoS3::start("mcptrail-cli-anchor");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_ledger(&data, 2_000);
    let config = write_config(
        dir.path(),
        &format!("[[sinks]]\nname = \"worm\"\ntype = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"cli\"\naccess_key_id = {{ env = \"MCPTRAIL_TEST_S3_ID\" }}\nsecret_access_key = {{ env = \"MCPTRAIL_TEST_S3_SECRET\" }}\nretention_days = 1\n", moto.endpoint, moto.bucket),
    );
    let with_keys = |mut c: Command| {
        c.env("MCPTRAIL_TEST_S3_ID", &moto.access_key_id)
            .env("MCPTRAIL_TEST_S3_SECRET", &moto.secret_access_key);
        c
    };
    let (code, out) = run(with_keys(cmd(&data, &config, &["checkpoint"])));
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(with_keys(cmd(&data, &config, &["ship"])));
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(with_keys(cmd(&data, &config, &["verify", "--skip-macs"])));
    assert_eq!(code, 0, "{out}");
    // Roll back: cut the newest 500 records and every local checkpoint.
    let seg = mcptrail_ledger::list_segments(&data.join(mcptrail_ledger::LEDGER_DIR))
        .unwrap()
        .pop()
        .unwrap();
    let text = std::fs::read(&seg.path).unwrap();
    let keep: usize = text
        .split_inclusive(|b| *b == b'\n')
        .take(1_500)
        .map(<[u8]>::len)
        .sum();
    let mut perms = std::fs::metadata(&seg.path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&seg.path, perms).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg.path)
        .unwrap()
        .set_len(keep as u64)
        .unwrap();
    std::fs::remove_dir_all(data.join(mcptrail_ledger::CHECKPOINT_DIR)).unwrap();
    let (code, out) = run(with_keys(cmd(&data, &config, &["verify", "--skip-macs"])));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("s3://mcptrail-cli-anchor/cli/checkpoints/"),
        "{out}"
    );
    // Without the credentials the anchor cannot be read: verify says so, it does not pass.
    let (code, out) = run(cmd(&data, &config, &["verify", "--skip-macs"]));
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("MCPTRAIL_TEST_S3_ID"), "{out}");
}

/// `doctor` probes each new sink without sending an event: HEC answers an acknowledgement
/// query, Elasticsearch its root, the bucket its Object Lock configuration. A bucket without
/// Object Lock (here: a name that does not exist) fails the check with the fix.
#[test]
fn doctor_probes_hec_elasticsearch_and_the_object_lock_bucket() {
    let moto = MotoS3::start("mcptrail-cli-doctor");
    let hec = HecReceiver::start(HEC_TOKEN, &[]);
    let es = ElasticReceiver::start(ES_KEY);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_ledger(&data, 10);
    let sinks = |bucket: &str| {
        format!(
            "[[sinks]]\nname = \"splunk\"\ntype = \"splunk_hec\"\nurl = \"{}\"\ntoken = {{ env = \"MCPTRAIL_TEST_HEC_TOKEN\" }}\n\n[[sinks]]\nname = \"es\"\ntype = \"elasticsearch\"\nurl = \"{}\"\napi_key = {{ env = \"MCPTRAIL_TEST_ES_KEY\" }}\n\n[[sinks]]\nname = \"worm\"\ntype = \"s3\"\nendpoint = \"{}\"\nbucket = \"{bucket}\"\naccess_key_id = {{ env = \"MCPTRAIL_TEST_S3_ID\" }}\nsecret_access_key = {{ env = \"MCPTRAIL_TEST_S3_SECRET\" }}\n",
            hec.url(),
            es.url(),
            moto.endpoint
        )
    };
    let doctor = |config: &Path| {
        let mut c = cmd(&data, config, &["doctor", "--json"]);
        c.env("MCPTRAIL_TEST_S3_ID", &moto.access_key_id)
            .env("MCPTRAIL_TEST_S3_SECRET", &moto.secret_access_key);
        let out = c.output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let check = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "sinks")
            .unwrap()
            .clone();
        (check, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let config = write_config(dir.path(), &sinks(&moto.bucket));
    let mut ship = cmd(&data, &config, &["ship"]);
    ship.env("MCPTRAIL_TEST_S3_ID", &moto.access_key_id)
        .env("MCPTRAIL_TEST_S3_SECRET", &moto.secret_access_key);
    let (code, out) = run(ship);
    assert_eq!(code, 0, "{out}");
    let (check, stdout) = doctor(&config);
    assert_eq!(check["status"], "pass", "{check}");
    let details = check["details"].to_string();
    for want in ["acknowledgement query", "8.15.0", "Object Lock enabled"] {
        assert!(details.contains(want), "{want}: {details}");
    }
    for secret in [HEC_TOKEN, ES_KEY, moto.secret_access_key.as_str()] {
        assert!(!stdout.contains(secret), "a secret is printed: {stdout}");
    }
    let config = write_config(dir.path(), &sinks("no-such-bucket"));
    let (check, _) = doctor(&config);
    assert_eq!(check["status"], "fail", "{check}");
    assert!(check.to_string().contains("NoSuchBucket"), "{check}");
}
