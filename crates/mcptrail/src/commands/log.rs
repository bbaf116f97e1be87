//! `mcptrail log`: filtered events, as a table for people or JSON Lines for machines.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use mcptrail_event::{Event, EventKind};
use mcptrail_index::Filter;

use super::{parse_time_bound, synced_index};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Session id (a unique prefix is enough).
    #[arg(long)]
    session: Option<String>,
    /// Agent id.
    #[arg(long)]
    agent: Option<String>,
    /// User principal, as given (events recorded with user pseudonyms are found too, through
    /// the pseudonym key).
    #[arg(long)]
    user: Option<String>,
    /// Tool name.
    #[arg(long)]
    tool: Option<String>,
    /// Classification label the event carries (`pii`, `pci`, `secret`, custom ones).
    #[arg(long)]
    label: Option<String>,
    /// Event kind, e.g. `mcp.request`, or a prefix like `session.*`.
    #[arg(long)]
    kind: Option<String>,
    /// JSON-RPC method.
    #[arg(long)]
    method: Option<String>,
    /// Response status: ok, error, timeout, cancelled, no_response.
    #[arg(long)]
    status: Option<String>,
    /// From this time: RFC 3339, a date, or an age like 2h.
    #[arg(long)]
    since: Option<String>,
    /// Until this time (exclusive).
    #[arg(long)]
    until: Option<String>,
    /// Only the newest N matching events.
    #[arg(long, short = 'n')]
    limit: Option<u64>,
    /// JSON Lines: the stored events, one per line.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(
    args: Args,
    data_dir: &Path,
    cfg: &crate::config::Config,
) -> anyhow::Result<ExitCode> {
    if let Some(k) = &args.kind {
        let prefix = k.ends_with('*') || k.ends_with('.');
        if !prefix && EventKind::parse(k).is_none() {
            let all: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            anyhow::bail!("unknown kind `{k}`; kinds are: {}", all.join(", "));
        }
    }
    let idx = synced_index(data_dir)?;
    let filter = Filter {
        session: args.session,
        agent: args.agent,
        users: match args.user {
            None => Vec::new(),
            Some(u) => {
                // Principals are pseudonymised by default: look for the token as well.
                let key =
                    mcptrail_redact::TokenKey::load(&crate::config::token_key_path(cfg, data_dir))?;
                let token = key.map(|k| k.pseudonym("user", &u));
                std::iter::once(u).chain(token).collect()
            }
        },
        tool: args.tool,
        label: args.label,
        kind: args.kind,
        method: args.method,
        status: args.status,
        since: args.since.as_deref().map(parse_time_bound).transpose()?,
        until: args.until.as_deref().map(parse_time_bound).transpose()?,
        limit: args.limit,
    };
    let events = idx.query(&filter)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = if args.json {
        events.iter().try_for_each(|e| {
            serde_json::to_writer(&mut out, e)
                .map_err(std::io::Error::other)
                .and_then(|_| out.write_all(b"\n"))
        })
    } else {
        write_table(&mut out, &events)
    };
    match result.and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        other => other.map(|_| ExitCode::SUCCESS).map_err(Into::into),
    }
}

fn write_table(out: &mut impl Write, events: &[Event]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<6} {:<26} {:<18} {:<2} {:<16} {:<32} {:<11} {:>9}  SESSION",
        "SEQ", "TIME (UTC)", "KIND", "", "AGENT", "WHAT", "STATUS", "MS"
    )?;
    for e in events {
        let what = match (&e.method, &e.tool_invoked) {
            (Some(m), Some(t)) => format!("{m} {t}"),
            (Some(m), None) => m.clone(),
            _ if e.kind == mcptrail_event::EventKind::SystemConfig => e
                .detail
                .as_ref()
                .map(|d| {
                    let file = d["file"].as_str().unwrap_or("");
                    let name = file.rsplit('/').next().unwrap_or(file);
                    let n = d["servers"].as_array().map_or(0, Vec::len);
                    format!("{} {n} × {name}", d["action"].as_str().unwrap_or("config"))
                })
                .unwrap_or_default(),
            _ => e
                .malformed
                .as_ref()
                .map(|m| m.reason.clone())
                .unwrap_or_default(),
        };
        let status = e
            .response_summary
            .as_ref()
            .map(|s| s.status.as_str())
            .unwrap_or("");
        let ms = e.duration_ms.map(|d| format!("{d:.2}")).unwrap_or_default();
        writeln!(
            out,
            "{:<6} {:<26} {:<18} {:<2} {:<16} {:<32} {:<11} {:>9}  {}",
            e.seq,
            e.time.get(..26).unwrap_or(&e.time),
            e.kind.as_str(),
            e.direction.map(|d| d.arrow()).unwrap_or(""),
            clip(e.agent_id.as_deref().unwrap_or("-"), 16),
            clip(&what, 32),
            status,
            ms,
            e.session_id
                .as_deref()
                .map(|s| clip(s, 13))
                .unwrap_or_default(),
        )?;
    }
    if events.is_empty() {
        writeln!(out, "(no matching events)")?;
    }
    Ok(())
}

fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i.saturating_sub(1).min(i)]),
        None => s.to_string(),
    }
}
