//! `mcptrail timeline --session ID`: one session as an indented request/response tree.

use std::path::Path;
use std::process::ExitCode;

use mcptrail_index::{render_timeline, Filter};

use super::synced_index;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Session id (a unique prefix is enough); `latest` for the most recent session.
    #[arg(long)]
    session: String,
    /// Print the session's events as JSON Lines instead.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let idx = synced_index(data_dir)?;
    let session = if args.session == "latest" {
        let last = idx.query(&Filter {
            kind: Some("session.start".into()),
            limit: Some(1),
            ..Default::default()
        })?;
        last.into_iter()
            .next()
            .and_then(|e| e.session_id)
            .ok_or_else(|| anyhow::anyhow!("no sessions recorded yet"))?
    } else {
        let matches = idx.sessions_matching(&args.session)?;
        match matches.as_slice() {
            [one] => one.clone(),
            [] => anyhow::bail!(
                "no session matches `{}`; list sessions with `mcptrail log --kind session.start`",
                args.session
            ),
            many => anyhow::bail!(
                "`{}` matches {} sessions; give more of the id (e.g. {})",
                args.session,
                many.len(),
                many[0]
            ),
        }
    };
    let events = idx.query(&Filter {
        session: Some(session),
        ..Default::default()
    })?;
    if args.json {
        for e in &events {
            println!("{}", serde_json::to_string(e)?);
        }
    } else {
        print!("{}", render_timeline(&events));
    }
    Ok(ExitCode::SUCCESS)
}
