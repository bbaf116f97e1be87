//! The proxy against real peers: curl as the client (it speaks the proxy protocol the way
//! tool servers' HTTP libraries do), `python3 -m http.server` and `openssl s_server` as the
//! destinations. Names such as `files.partner.example` are mapped to 127.0.0.1 by
//! `[egress.resolve]`, so the destinations look external while traffic stays on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcptrail_egress::{Decision, EgressConfig, EgressProxy, EgressRecord, Scheme};
use mcptrail_test_support::destinations::Destination;

type Records = Arc<Mutex<Vec<EgressRecord>>>;

fn proxy(cfg: EgressConfig) -> (EgressProxy, Records) {
    let records: Records = Arc::default();
    let sink = records.clone();
    let cfg = EgressConfig {
        listen: "127.0.0.1:0".into(),
        ..cfg
    };
    let p = EgressProxy::bind(&cfg, Arc::new(move |r| sink.lock().unwrap().push(r))).unwrap();
    (p, records)
}

fn partner_names() -> EgressConfig {
    let mut cfg = EgressConfig::default();
    for name in [
        "files.partner.example",
        "docs.partner.example",
        "exfil.attacker.example",
    ] {
        cfg.resolve
            .insert(name.into(), "127.0.0.1".parse().unwrap());
    }
    cfg
}

fn curl(proxy: &EgressProxy, url: &str, extra: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "-k", "--max-time", "10", "--noproxy", ""])
        .arg("-x")
        .arg(format!("http://{}", proxy.local_addr()))
        .args(extra)
        .arg(url)
        .output()
        .expect("running curl")
}

/// The records, once `n` have arrived (records are delivered when a connection closes).
fn wait_records(records: &Records, n: usize) -> Vec<EgressRecord> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = records.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} records: {got:?}",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn plain_http_is_relayed_and_recorded_without_the_query() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("report.txt"),
        "quarterly numbers\n".repeat(100),
    )
    .unwrap();
    let web = Destination::http_files(root.path());
    let (p, records) = proxy(partner_names());
    let out = curl(
        &p,
        &format!(
            "http://docs.partner.example:{}/report.txt?api_key=hunter2",
            web.port
        ),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 1800);
    let r = &wait_records(&records, 1)[0];
    assert_eq!(r.scheme, Scheme::Http);
    assert_eq!(r.method, "GET");
    assert_eq!(
        (r.host.as_str(), r.port),
        ("docs.partner.example", web.port)
    );
    assert_eq!(r.path.as_deref(), Some("/report.txt"));
    assert_eq!(r.status, Some(200));
    assert_eq!(r.verdict.decision, Decision::Allow);
    assert!(r.bytes_down > 1800, "{r:?}");
    assert!(r.bytes_up > 0);
    assert_eq!(r.address, Some("127.0.0.1".parse().unwrap()));
    let detail = r.detail().to_string();
    assert!(
        !detail.contains("hunter2"),
        "the query string must not be recorded: {detail}"
    );
}

#[test]
fn https_tunnel_records_the_server_name_and_sizes() {
    let tls = Destination::tls("files.partner.example");
    let (p, records) = proxy(partner_names());
    let out = curl(
        &p,
        &format!("https://files.partner.example:{}/", tls.port),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("s_server"),
        "not the s_server page"
    );
    let r = &wait_records(&records, 1)[0];
    assert_eq!(r.scheme, Scheme::Https);
    assert_eq!(r.method, "CONNECT");
    assert_eq!(r.sni.as_deref(), Some("files.partner.example"));
    assert_eq!(r.status, Some(200));
    assert!(r.bytes_up > 200 && r.bytes_down > 500, "{r:?}");
    assert!(r.error.is_none(), "{r:?}");
}

#[test]
fn denied_destinations_get_403_and_are_recorded() {
    let tls = Destination::tls("exfil.attacker.example");
    let mut cfg = partner_names();
    cfg.default = Decision::Deny;
    cfg.allow = vec!["*.partner.example".into()];
    let (p, records) = proxy(cfg);
    let out = curl(
        &p,
        &format!("https://exfil.attacker.example:{}/", tls.port),
        &["-o", "/dev/null"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = curl(
        &p,
        &format!("http://exfil.attacker.example:{}/", tls.port),
        &["-i"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 403"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not on the egress allow list"));
    let got = wait_records(&records, 2);
    for r in &got {
        assert_eq!(r.verdict.decision, Decision::Deny);
        assert_eq!(r.verdict.matched, None);
        assert_eq!(r.status, Some(403));
        assert_eq!(r.bytes_up, 0);
        assert_eq!(r.address, None, "a denied name is not even resolved");
    }
    // An explicit deny entry wins over the allow list and is named.
    let mut cfg = partner_names();
    cfg.allow = vec!["*.partner.example".into()];
    cfg.deny = vec!["127.0.0.0/8".into()];
    let (p, records) = proxy(cfg);
    let out = curl(
        &p,
        &format!("https://files.partner.example:{}/", tls.port),
        &["-o", "/dev/null"],
    );
    assert!(!out.status.success());
    let r = &wait_records(&records, 1)[0];
    assert_eq!(r.verdict.matched.as_deref(), Some("127.0.0.0/8"));
}

#[test]
fn unreachable_and_unresolvable_destinations_get_502() {
    let (p, records) = proxy(partner_names());
    let closed = mcptrail_test_support::free_port();
    let out = curl(
        &p,
        &format!("http://files.partner.example:{closed}/"),
        &["-i"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 502"));
    let out = curl(&p, "http://no-such-host.invalid/", &["-i"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 502"));
    let got = wait_records(&records, 2);
    assert!(
        got.iter()
            .all(|r| r.status == Some(502) && r.error.is_some()),
        "{got:?}"
    );
}

fn raw(p: &EgressProxy, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(p.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn bad_requests_are_refused_and_not_recorded() {
    let (p, records) = proxy(partner_names());
    assert!(raw(&p, b"\x16\x03\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert!(raw(&p, b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n").contains("absolute form"));
    assert!(raw(&p, b"CONNECT nohost HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400"));
    let huge = format!(
        "GET http://x.example/ HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    assert!(raw(&p, huge.as_bytes()).starts_with("HTTP/1.1 431"));
    // A client that connects and leaves.
    drop(TcpStream::connect(p.local_addr()).unwrap());
    std::thread::sleep(Duration::from_millis(200));
    assert!(records.lock().unwrap().is_empty());
}

#[test]
fn shutdown_closes_open_tunnels_and_still_records_them() {
    let tls = Destination::tls("files.partner.example");
    let (p, records) = proxy(partner_names());
    let mut s = TcpStream::connect(p.local_addr()).unwrap();
    write!(
        s,
        "CONNECT files.partner.example:{} HTTP/1.1\r\n\r\n",
        tls.port
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    s.write_all(b"some bytes that are not TLS").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(p.active(), 1);
    p.shutdown(Duration::from_secs(2));
    let got = records.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].bytes_up, 27);
    assert_eq!(got[0].error.as_deref(), Some("proxy stopped"));
}

#[test]
fn connections_over_the_limit_get_503() {
    let tls = Destination::tls("files.partner.example");
    let mut cfg = partner_names();
    cfg.max_connections = 1;
    let (p, records) = proxy(cfg);
    let mut first = TcpStream::connect(p.local_addr()).unwrap();
    write!(
        first,
        "CONNECT files.partner.example:{} HTTP/1.1\r\n\r\n",
        tls.port
    )
    .unwrap();
    let mut buf = [0u8; 64];
    assert!(first.read(&mut buf).unwrap() > 0);
    let second = raw(
        &p,
        format!(
            "CONNECT files.partner.example:{} HTTP/1.1\r\n\r\n",
            tls.port
        )
        .as_bytes(),
    );
    assert!(second.starts_with("HTTP/1.1 503"), "{second}");
    drop(first);
    let got = wait_records(&records, 2);
    assert!(got.iter().any(|r| r.status == Some(503)));
}
