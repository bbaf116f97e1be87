//! One module per subcommand; shared helpers for the query commands live here.

pub(crate) mod baseline;
pub(crate) mod checkpoint;
pub(crate) mod clients;
pub(crate) mod collector;
pub(crate) mod detect;
pub(crate) mod doctor;
pub(crate) mod drill;
pub(crate) mod egress;
pub(crate) mod export;
pub(crate) mod gateway;
pub(crate) mod log;
pub(crate) mod privacy;
pub(crate) mod retention;
pub(crate) mod serve;
pub(crate) mod ship;
pub(crate) mod timeline;
pub(crate) mod verify;
pub(crate) mod wrap;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use mcptrail_index::Index;

/// Start the configured sinks shipping in the background, off the relay path (own threads,
/// low priority), for `wrap` and `gateway`. A sink that cannot be set up is a warning:
/// recording goes on, and `mcptrail ship` catches up later.
pub(crate) fn start_shipping(
    cfg: &crate::config::Config,
    data_dir: &Path,
    ledger: &mcptrail_ledger::LedgerConfig,
) -> Option<mcptrail_sinks::ShippingHandle> {
    (!cfg.sinks.is_empty()).then(|| {
        let alerts = mcptrail_sinks::LedgerAlerts {
            data_dir: data_dir.to_path_buf(),
            config: ledger.clone(),
        };
        let (handle, failed) = mcptrail_sinks::spawn(data_dir, &cfg.sinks, Some(alerts));
        for e in failed {
            eprintln!("mcptrail: warning: {e}; recording goes on, run `mcptrail ship` later");
        }
        handle
    })
}

/// Give the background shippers two seconds to send what is left; what they have not
/// shipped waits in the ledger for the next run. Says which sinks are failing.
pub(crate) fn stop_shipping(shipping: Option<mcptrail_sinks::ShippingHandle>) {
    let Some(handle) = shipping else { return };
    for (name, result) in handle.stop(std::time::Duration::from_secs(2)) {
        match result {
            Err(e) => eprintln!("mcptrail: warning: sink {name} stopped: {e}"),
            Ok(st) if st.failing_since.is_some() => eprintln!(
                "mcptrail: warning: sink {name} is failing ({}); its events wait in the ledger: run `mcptrail ship --sink {name}`",
                st.last_error.as_deref().unwrap_or("unknown error")
            ),
            Ok(_) => {}
        }
    }
}

/// The MAC verification seed to use: `--seed FILE` if given, else the configured or default
/// seed path if a seed is there, else none (MACs then cannot be checked).
pub(crate) fn load_seed(
    explicit: Option<&Path>,
    configured: Option<&Path>,
    data_dir: &Path,
) -> anyhow::Result<Option<mcptrail_integrity::Seed>> {
    let default = configured
        .map(Path::to_path_buf)
        .unwrap_or_else(|| mcptrail_ledger::default_seed_path(data_dir));
    Ok(match explicit {
        Some(p) => Some(mcptrail_integrity::Seed::read(p).context("--seed")?),
        None if default.exists() => Some(mcptrail_integrity::Seed::read(&default)?),
        None => None,
    })
}

/// Open the index and bring it up to date with the ledger.
pub(crate) fn synced_index(data_dir: &Path) -> anyhow::Result<Index> {
    if !data_dir.join(mcptrail_ledger::LEDGER_DIR).exists() {
        anyhow::bail!(
            "no ledger in {} — record a session with `mcptrail wrap` first, or pass --data-dir",
            data_dir.display()
        );
    }
    let mut idx = Index::open(data_dir)?;
    let r = idx.sync().context("updating the index from the ledger")?;
    if r.skipped > 0 {
        eprintln!("mcptrail: warning: {} ledger lines are not valid events and were not indexed; run `mcptrail verify`", r.skipped);
    }
    Ok(idx)
}

pub(crate) fn reindex(data_dir: &Path) -> anyhow::Result<ExitCode> {
    if !data_dir.join(mcptrail_ledger::LEDGER_DIR).exists() {
        anyhow::bail!("no ledger in {}", data_dir.display());
    }
    let mut idx = match Index::open(data_dir) {
        Ok(idx) => idx,
        Err(e) => {
            eprintln!("mcptrail: the index could not be opened ({e}); replacing it");
            Index::recreate(data_dir)?
        }
    };
    let r = idx.rebuild()?;
    println!(
        "reindexed {} events from {}{}",
        r.indexed,
        data_dir.display(),
        if r.skipped > 0 {
            format!(" ({} invalid lines skipped)", r.skipped)
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Parse `--since`/`--until`: RFC 3339, a date (`2026-11-25`), or an age (`30s`, `15m`, `2h`, `7d`).
pub(crate) fn parse_time_bound(s: &str) -> anyhow::Result<String> {
    use time::{Duration, OffsetDateTime};
    let s = s.trim();
    if let Some((num, unit)) = s.char_indices().last().map(|(i, c)| (&s[..i], c)) {
        if let Ok(n) = num.parse::<i64>() {
            let d = match unit {
                's' => Some(Duration::seconds(n)),
                'm' => Some(Duration::minutes(n)),
                'h' => Some(Duration::hours(n)),
                'd' => Some(Duration::days(n)),
                _ => None,
            };
            if let Some(d) = d {
                return Ok(mcptrail_event::format_rfc3339_nanos(
                    OffsetDateTime::now_utc() - d,
                ));
            }
        }
    }
    if let Ok(t) = mcptrail_event::parse_rfc3339(s) {
        return Ok(mcptrail_event::format_rfc3339_nanos(t));
    }
    let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(s, &date_fmt) {
        return Ok(mcptrail_event::format_rfc3339_nanos(
            d.midnight().assume_utc(),
        ));
    }
    anyhow::bail!("cannot read time `{s}`: use RFC 3339 (2026-11-25T10:00:00Z), a date (2026-11-25) or an age (30m, 2h, 7d)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds() {
        assert_eq!(
            parse_time_bound("2026-11-25T10:00:00+01:00").unwrap(),
            "2026-11-25T09:00:00.000000000Z"
        );
        assert_eq!(
            parse_time_bound("2026-11-25").unwrap(),
            "2026-11-25T00:00:00.000000000Z"
        );
        assert!(parse_time_bound("2h").unwrap() < mcptrail_event::now_rfc3339_nanos());
        assert!(parse_time_bound("yesterday")
            .unwrap_err()
            .to_string()
            .contains("RFC 3339"));
    }
}
