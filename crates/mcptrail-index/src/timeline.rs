//! A session as people read it: requests with their responses nested under them, messages
//! sent *during* a request (progress, sampling, elicitation) nested under that request.

use std::collections::HashMap;
use std::fmt::Write;

use mcptrail_event::{Direction, Event, EventKind, Status};

/// Render the events of one session (in `seq` order) as an indented tree.
pub fn render_timeline(events: &[Event]) -> String {
    let mut out = String::new();
    if let Some(first) = events.first() {
        let _ = writeln!(out, "{}", header(events, first));
    }
    // Open requests: event_id -> (depth, direction).
    let mut open: Vec<(String, usize, Direction)> = Vec::new();
    let mut depth_of: HashMap<String, usize> = HashMap::new();
    for e in events {
        let time = e.time.get(11..26).unwrap_or(&e.time);
        let (depth, text) = match e.kind {
            EventKind::McpRequest | EventKind::McpNotification => {
                let dir = e.direction.unwrap_or(Direction::ClientToServer);
                // Sent during the most recent open request that travelled the other way.
                let depth = open
                    .iter()
                    .rev()
                    .find(|(_, _, d)| *d == dir.reverse())
                    .map_or(0, |(_, d, _)| d + 1);
                if e.kind == EventKind::McpRequest {
                    open.push((e.event_id.clone(), depth, dir));
                    depth_of.insert(e.event_id.clone(), depth);
                }
                (depth, message_line(e, dir))
            }
            EventKind::McpResponse => {
                let depth = e
                    .request_event_id
                    .as_ref()
                    .and_then(|id| depth_of.get(id))
                    .map_or(0, |d| d + 1);
                if let Some(id) = &e.request_event_id {
                    open.retain(|(o, _, _)| o != id);
                }
                (depth, response_line(e))
            }
            // An outbound connection sits under the tool call it was made during (it is
            // written when it closes, so usually after the call's response).
            EventKind::NetEgress => {
                let depth = e
                    .request_event_id
                    .as_ref()
                    .and_then(|id| depth_of.get(id))
                    .map_or(0, |d| d + 1);
                (depth, other_line(e))
            }
            _ => (0, other_line(e)),
        };
        let _ = writeln!(out, "{time}  {}{}", "  ".repeat(depth), text);
    }
    out
}

fn header(events: &[Event], first: &Event) -> String {
    let last_with = |f: &dyn Fn(&Event) -> Option<String>| events.iter().rev().find_map(f);
    let agent = last_with(&|e| e.agent_id.clone()).unwrap_or_else(|| "-".into());
    let user = first
        .user_identity
        .as_ref()
        .map(|u| u.principal.clone())
        .unwrap_or_else(|| "-".into());
    let host = first.host.clone().unwrap_or_else(|| "-".into());
    let server = last_with(&|e| {
        e.server.as_ref().and_then(|s| {
            s.name
                .as_ref()
                .map(|n| format!("{n} {}", s.version.clone().unwrap_or_default()))
        })
    })
    .unwrap_or_else(|| "-".into());
    let command = first
        .server
        .as_ref()
        .map(|s| s.command.join(" "))
        .unwrap_or_default();
    let client = last_with(&|e| {
        e.client
            .as_ref()
            .map(|c| format!("{} {}", c.name, c.version.clone().unwrap_or_default()))
    })
    .unwrap_or_else(|| "-".into());
    format!(
        "session {}  {}\n  agent {agent} · user {user}@{host} · client {} · server {} ({})",
        first.session_id.as_deref().unwrap_or("-"),
        first.time.get(..10).unwrap_or(""),
        client.trim(),
        server.trim(),
        command
    )
}

fn message_line(e: &Event, dir: Direction) -> String {
    let method = e.method.as_deref().unwrap_or("?");
    let mut s = format!("{} {method}", dir.arrow());
    if let Some(t) = &e.tool_invoked {
        let _ = write!(s, " {t}");
    }
    if let Some(p) = &e.prompt_name {
        let _ = write!(s, " {p}");
    }
    if let Some(u) = &e.resource_uri {
        let _ = write!(s, " {u}");
    }
    if let Some(id) = &e.request_id {
        let _ = write!(
            s,
            " #{}",
            id.as_str()
                .map(String::from)
                .unwrap_or_else(|| id.to_string())
        );
    }
    if e.kind == EventKind::McpRequest && method == "tools/call" {
        if let Some(args) = &e.parameters_used {
            let _ = write!(s, "  {}", clip(&args.to_string(), 80));
        }
    }
    flags(&mut s, e);
    s
}

fn response_line(e: &Event) -> String {
    let dir = e.direction.unwrap_or(Direction::ServerToClient);
    let mut s = format!("{} ", dir.arrow());
    match &e.response_summary {
        Some(r) => {
            let _ = write!(s, "{}", r.status.as_str());
            if let Some(d) = e.duration_ms {
                let _ = write!(s, " {d:.2} ms");
            }
            if r.status == Status::Error {
                if let Some(code) = r.error_code {
                    let _ = write!(s, " code {code}");
                }
                if let Some(m) = &r.error_message {
                    let _ = write!(s, " {}", clip(m, 60));
                }
            }
            if let Some(p) = &r.preview {
                let _ = write!(s, "  {}", clip(p, 70));
            }
            if r.size > 0 {
                let _ = write!(s, "  ({} B)", r.size);
            }
        }
        None => s.push('?'),
    }
    if e.request_event_id.is_none() {
        let _ = write!(
            s,
            "  [{}]",
            e.method.as_deref().unwrap_or("response to unknown request")
        );
    }
    flags(&mut s, e);
    s
}

fn other_line(e: &Event) -> String {
    let mut s = format!("● {}", e.kind);
    match e.kind {
        EventKind::SessionStart => {
            if let Some(p) = &e.process {
                let _ = write!(s, "  tap pid {}", p.tap_pid);
                if let Some(sp) = p.server_pid {
                    let _ = write!(s, ", server pid {sp}");
                }
            }
        }
        EventKind::SessionEnd => {
            if let Some(d) = &e.session {
                let _ = write!(s, "  {}", d.end_reason.as_deref().unwrap_or("?"));
                if let Some(c) = d.exit_code {
                    let _ = write!(s, ", exit {c}");
                }
                if let Some(sig) = &d.exit_signal {
                    let _ = write!(s, ", killed by {sig}");
                }
                if let Some(f) = &d.forced_stop {
                    let _ = write!(s, ", stopped with {f}");
                }
                let _ = write!(
                    s,
                    " · {} in / {} out, {} unanswered",
                    d.messages_in.unwrap_or(0),
                    d.messages_out.unwrap_or(0),
                    d.unanswered.unwrap_or(0)
                );
            }
            if let Some(ms) = e.duration_ms {
                let _ = write!(s, " · {:.1} s", ms / 1000.0);
            }
        }
        EventKind::ToolCatalog | EventKind::ToolChanged => {
            if let Some(c) = &e.catalog {
                let _ = write!(
                    s,
                    "  {} {} items, hash {}",
                    c.list,
                    c.items.len(),
                    clip(&c.hash, 12)
                );
                for (what, list) in [
                    ("changed", &c.changed),
                    ("added", &c.added),
                    ("removed", &c.removed),
                ] {
                    if !list.is_empty() {
                        let _ = write!(s, " · {what}: {}", list.join(", "));
                    }
                }
            }
        }
        EventKind::SystemVerify => {
            if let Some(d) = &e.detail {
                let _ = write!(
                    s,
                    "  ledger {} · {} records, {} checkpoints matched",
                    d["verdict"].as_str().unwrap_or("?"),
                    d["records"].as_u64().unwrap_or(0),
                    d["checkpoints_verified"].as_u64().unwrap_or(0)
                );
                if let Some(first) = d["problems"].get(0) {
                    let _ = write!(
                        s,
                        " · {}",
                        clip(first["problem"].as_str().unwrap_or(""), 100)
                    );
                }
            }
        }
        EventKind::Alert => {
            if let Some(d) = &e.detail {
                let _ = write!(
                    s,
                    "  {} {}: {}",
                    d["severity"].as_str().unwrap_or("?"),
                    d["rule"].as_str().unwrap_or("?"),
                    clip(d["summary"].as_str().unwrap_or(""), 100)
                );
            }
        }
        EventKind::NetEgress => {
            if let Some(d) = &e.detail {
                let text = |k: &str| d[k].as_str().unwrap_or("").to_string();
                let _ = write!(
                    s,
                    "  {} {} {}://{}:{}{}",
                    text("decision"),
                    text("method"),
                    text("scheme"),
                    text("host"),
                    d["port"].as_u64().unwrap_or(0),
                    text("path")
                );
                if let Some(code) = d["status"].as_u64() {
                    let _ = write!(s, " → {code}");
                }
                let sni = text("sni");
                if !sni.is_empty() && sni != text("host") {
                    let _ = write!(s, " (sni {sni})");
                }
                let _ = write!(
                    s,
                    " · {} B out / {} B in",
                    e.bytes_out.unwrap_or(0),
                    e.bytes_in.unwrap_or(0)
                );
                if let Some(ms) = e.duration_ms {
                    let _ = write!(s, " · {ms:.1} ms");
                }
                if let Some(err) = d["error"].as_str() {
                    let _ = write!(s, " · {}", clip(err, 60));
                }
            }
            if let Some(t) = &e.tool_invoked {
                let _ = write!(s, "  (during {t})");
            }
        }
        EventKind::Malformed => {
            if let Some(m) = &e.malformed {
                let _ = write!(
                    s,
                    "  {} {} {} B",
                    e.direction.map(|d| d.arrow()).unwrap_or(""),
                    m.reason,
                    m.digest.size
                );
            }
        }
        _ => {
            if let Some(d) = &e.detail {
                let _ = write!(s, "  {}", clip(&d.to_string(), 100));
            }
        }
    }
    flags(&mut s, e);
    s
}

fn flags(s: &mut String, e: &Event) {
    if !e.flags.is_empty() {
        let names: Vec<String> = e
            .flags
            .iter()
            .map(|f| {
                serde_json::to_value(f)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            })
            .collect();
        let _ = write!(s, "  [{}]", names.join(", "));
    }
}

fn clip(s: &str, n: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match one_line.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}
