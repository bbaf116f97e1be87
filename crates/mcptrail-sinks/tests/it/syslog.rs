use std::collections::HashSet;
use std::time::Duration;

use mcptrail_sinks::format::syslog::SD_ID;
use mcptrail_test_support::sinks::{
    event_id_of, free_loopback_port, write_ledger, Rsyslog, SyslogInput,
};

use crate::common::*;

/// Split an RFC 5424 message into (header fields, structured data, MSG).
fn parse_5424(m: &str) -> (Vec<&str>, &str, &str) {
    let mut header = Vec::new();
    let mut rest = m;
    for _ in 0..6 {
        let (f, r) = rest
            .split_once(' ')
            .unwrap_or_else(|| panic!("short header: {m}"));
        header.push(f);
        rest = r;
    }
    assert!(rest.starts_with('['), "structured data expected: {m}");
    // The SD ends at the first `]` not escaped by a backslash.
    let bytes = rest.as_bytes();
    let mut i = 1;
    while bytes[i] != b']' {
        i += if bytes[i] == b'\\' { 2 } else { 1 };
    }
    (header, &rest[..=i], &rest[i + 2..])
}

fn sd_event_id(sd: &str) -> String {
    let start = sd.find("event_id=\"").unwrap() + 10;
    sd[start..start + 36].to_string()
}

#[test]
fn tcp_octet_counted_json_arrives_complete_and_byte_exact() {
    let rs = Rsyslog::start(SyslogInput::Tcp);
    let dir = tempfile::tempdir().unwrap();
    let ids = write_ledger(dir.path(), 1500);
    let cfg = sink_config(&format!(
        "name = \"rs-tcp\"\ntype = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\nbatch_max_events = 200\n",
        rs.port
    ));
    let st = ship(dir.path(), &cfg);
    assert_eq!(st.shipped, 1500);
    let lines = rs.wait_for_lines(1500, Duration::from_secs(30));
    assert_eq!(lines.len(), 1500, "no extra or split messages");
    let ledger = ledger_lines(dir.path());
    for (i, line) in lines.iter().enumerate() {
        let (h, sd, msg) = parse_5424(line);
        assert_eq!(
            h[0], "<110>1",
            "facility 13 (audit), severity informational: {line}"
        );
        assert_eq!(h[2], "fixture-host");
        assert_eq!(h[3], "mcptrail");
        assert!(h[5] == "mcp.request" || h[5] == "mcp.response", "{line}");
        assert!(sd.starts_with(&format!("[{SD_ID} event_id=")), "{sd}");
        // MSG is the ledger line, byte for byte, and it parses as JSON.
        assert_eq!(
            msg.as_bytes(),
            &ledger[i][..],
            "message {i} differs from the ledger line"
        );
        assert_eq!(sd_event_id(sd), ids[i]);
        assert_eq!(event_id_of(msg.as_bytes()), ids[i]);
    }
}

#[test]
fn tls_with_cef_payloads_verifies_the_server_and_escapes_headers() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(pki.path());
    let rs = Rsyslog::start(SyslogInput::Tls {
        cert,
        key,
        ca: ca.clone(),
    });
    let dir = tempfile::tempdir().unwrap();
    let ids = write_ledger(dir.path(), 400);
    let cfg = sink_config(&format!(
        "name = \"rs-tls\"\ntype = \"syslog\"\ntransport = \"tls\"\naddress = \"127.0.0.1:{}\"\ntls_server_name = \"localhost\"\ntls_ca_file = \"{}\"\nformat = \"cef\"\nbatch_max_events = 100\n",
        rs.port,
        ca.display()
    ));
    let mut sink = mcptrail_sinks::build(&cfg).unwrap();
    assert!(sink.probe().unwrap().contains("verified TLS handshake"));
    let st = ship(dir.path(), &cfg);
    assert_eq!(st.shipped, 400);
    let lines = rs.wait_for_lines(400, Duration::from_secs(30));
    assert_eq!(lines.len(), 400);
    let mut seen = HashSet::new();
    for line in &lines {
        let (_, sd, msg) = parse_5424(line);
        assert!(msg.starts_with("CEF:0|mcptrail|mcptrail|"), "{msg}");
        // A CEF parser splits the header at the first seven unescaped pipes: the tool name's
        // `|` and `\` were escaped in the Name field, the severity is where it belongs.
        let mut fields = Vec::new();
        let (mut start, mut escaped) = (0, false);
        for (i, c) in msg.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '|' if fields.len() < 7 => {
                    fields.push(&msg[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        assert_eq!(fields.len(), 7, "{msg}");
        assert!(
            fields[4] == "mcp.request" || fields[4] == "mcp.response",
            "{msg}"
        );
        assert!(
            fields[5].starts_with(r"tools/call get\|weather=now\\"),
            "{msg}"
        );
        assert!(fields[6].parse::<u8>().is_ok_and(|s| s <= 10), "{msg}");
        assert!(msg.contains(r"cs3=get|weather\=now\\"), "{msg}");
        let ext_id = msg
            .split("externalId=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        assert_eq!(ext_id, sd_event_id(sd));
        seen.insert(ext_id.to_string());
    }
    assert_eq!(
        seen,
        ids.into_iter().collect::<HashSet<_>>(),
        "every event once"
    );
}

#[test]
fn tls_to_an_untrusted_server_is_a_connect_error() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(pki.path());
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = test_pki(other.path());
    let rs = Rsyslog::start(SyslogInput::Tls { cert, key, ca });
    let cfg = sink_config(&format!(
        "name = \"rs-bad\"\ntype = \"syslog\"\ntransport = \"tls\"\naddress = \"127.0.0.1:{}\"\ntls_server_name = \"localhost\"\ntls_ca_file = \"{}\"\n",
        rs.port,
        other_ca.display()
    ));
    let e = mcptrail_sinks::build(&cfg).unwrap().probe().unwrap_err();
    assert_eq!(e.kind, mcptrail_sinks::SendErrorKind::Connect);
    assert!(e.message.contains("TLS handshake"), "{e}");
}

#[test]
fn udp_messages_arrive_one_per_datagram() {
    let rs = Rsyslog::start(SyslogInput::Udp);
    let dir = tempfile::tempdir().unwrap();
    let ids = write_ledger(dir.path(), 100);
    let cfg = sink_config(&format!(
        "name = \"rs-udp\"\ntype = \"syslog\"\ntransport = \"udp\"\naddress = \"127.0.0.1:{}\"\nformat = \"ocsf\"\nbatch_max_events = 10\n",
        rs.port
    ));
    assert_eq!(ship(dir.path(), &cfg).shipped, 100);
    let lines = rs.wait_for_lines(100, Duration::from_secs(30));
    let got: HashSet<String> = lines
        .iter()
        .map(|l| {
            let (_, _, msg) = parse_5424(l);
            let v: serde_json::Value = serde_json::from_str(msg).unwrap();
            assert_eq!(v["class_uid"], 6003);
            v["metadata"]["uid"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(got, ids.into_iter().collect::<HashSet<_>>());
}

#[test]
fn a_restarted_tcp_receiver_gets_the_next_batches_on_a_new_connection() {
    let port = free_loopback_port();
    let mut first = Rsyslog::start_on(SyslogInput::Tcp, port);
    let dir = tempfile::tempdir().unwrap();
    write_ledger(dir.path(), 50);
    let cfg = sink_config(&format!(
        "name = \"rs-restart\"\ntype = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n"
    ));
    let mut sink = mcptrail_sinks::build(&cfg).unwrap();
    let mut tail = mcptrail_sinks::LedgerTail::open(dir.path(), 1);
    let mut batch = Vec::new();
    while let Some(r) = tail.next_record().unwrap() {
        batch.push(r);
    }
    sink.send(&batch[..25]).unwrap();
    first.wait_for_lines(25, Duration::from_secs(20));
    first.kill();
    // The sender still holds the old connection; the receiver comes back on the same port.
    let second = Rsyslog::start_on(SyslogInput::Tcp, port);
    sink.send(&batch[25..]).unwrap();
    let lines = second.wait_for_lines(25, Duration::from_secs(20));
    assert_eq!(lines.len(), 25, "the second half went to the new receiver");
}

#[test]
fn a_dead_receiver_is_a_connect_error_naming_the_address() {
    let port = free_loopback_port();
    let cfg = sink_config(&format!(
        "name = \"dead\"\ntype = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n"
    ));
    let e = mcptrail_sinks::build(&cfg).unwrap().probe().unwrap_err();
    assert_eq!(e.kind, mcptrail_sinks::SendErrorKind::Connect);
    assert!(
        e.message.contains(&format!("127.0.0.1:{port}")) && e.message.contains("refused"),
        "{e}"
    );
}

#[test]
fn mutual_tls_presents_the_client_certificate_and_refuses_a_shared_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(pki.path());
    let rs = Rsyslog::start(SyslogInput::MutualTls {
        cert,
        key,
        ca: ca.clone(),
    });
    let dir = tempfile::tempdir().unwrap();
    let ids = write_ledger(dir.path(), 50);
    let table = |client_key: &std::path::Path| {
        format!(
            "name = \"rs-mtls\"\ntype = \"syslog\"\ntransport = \"tls\"\naddress = \"127.0.0.1:{}\"\ntls_server_name = \"localhost\"\ntls_ca_file = \"{}\"\ntls_client_cert_file = \"{}\"\ntls_client_key_file = \"{}\"\n",
            rs.port,
            ca.display(),
            pki.path().join("client.pem").display(),
            client_key.display()
        )
    };
    let cfg = sink_config(&table(&pki.path().join("client.key")));
    assert_eq!(ship(dir.path(), &cfg).shipped, 50);
    let lines = rs.wait_for_lines(50, Duration::from_secs(30));
    let got: HashSet<String> = lines.iter().map(|l| sd_event_id(parse_5424(l).1)).collect();
    assert_eq!(got, ids.into_iter().collect::<HashSet<_>>());
    // Without a client certificate the receiver takes nothing (whether the handshake or
    // the first write is where it refuses: syslog has no acknowledgement to say which).
    let anon = sink_config(&format!(
        "name = \"rs-anon\"\ntype = \"syslog\"\ntransport = \"tls\"\naddress = \"127.0.0.1:{}\"\ntls_server_name = \"localhost\"\ntls_ca_file = \"{}\"\nbackoff_initial_ms = 50\n",
        rs.port,
        ca.display()
    ));
    let other = tempfile::tempdir().unwrap();
    write_ledger(other.path(), 5);
    let sink = mcptrail_sinks::build(&anon).unwrap();
    mcptrail_sinks::Shipper::new(other.path(), anon, sink, None)
        .run(&mcptrail_sinks::ShipOptions {
            give_up_after: Some(Duration::from_secs(1)),
            ..Default::default()
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        rs.lines().len(),
        50,
        "the receiver accepted messages without a client certificate"
    );
    // A client key others can read is refused before anything is sent, and not quoted.
    let shared = pki.path().join("shared.key");
    std::fs::copy(pki.path().join("client.key"), &shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = mcptrail_sinks::build(&sink_config(&table(&shared)))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("chmod 600") && e.contains("shared.key"), "{e}");
    assert!(!e.contains("PRIVATE KEY"), "{e}");
}
