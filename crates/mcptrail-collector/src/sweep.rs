//! The periodic sweep: what only the passing of time decides. Every collector runs it (each
//! source in its own transaction, its `sources` row locked, the conditions re-read under the
//! lock, so two collectors never raise the same alert twice):
//! - a new source whose records start after seq 1 and whose seq 1 has not arrived within
//!   `hold_secs` is accepted as **unanchored** from its lowest pending seq (alert
//!   `unanchored_source`, info), and its pending records are chained;
//! - a gap in a source's chain older than `gap_alert_secs` is an alert (`chain_gap`, high),
//!   once per missing seq; the records after it stay pending;
//! - a signed checkpoint still ahead of the chain after `gap_alert_secs` is an alert
//!   (`checkpoint_ahead`, high), once;
//! - a source with open sessions (a `session.start` without its `session.end`) that sent no
//!   record for `silence_secs` — taps write heartbeats while they run, so silence means the
//!   tap or its shipping stopped — is an alert (`source_silent`, high), once until it speaks
//!   again. Judged only while this collector is caught up with the stream, so a backlog is
//!   not mistaken for silence.
//! - pending records left behind at seqs the chain has already passed (possible only when
//!   more than a chunk of candidates competed for one seq) are settled: duplicates dropped,
//!   others quarantined (`chain_conflict`);
//! - pending records whose predecessor is stored are chained (a safety net: the batch that
//!   stores a predecessor chains what waits after it).

use tokio_postgres::Client;

use crate::store::{self, Alert, BatchCounts, Checks, Outcome, SourceState};
use crate::Error;

/// The sweep's time limits, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wait for a new source's seq 1 before accepting it unanchored.
    pub hold_secs: u64,
    /// Age of a gap (or of a checkpoint ahead of the chain) before it is an alert.
    pub gap_alert_secs: u64,
    /// Quiet time of a source with open sessions before it is an alert.
    pub silence_secs: u64,
}

/// Sweep every source that may need it. `caught_up`: this collector has consumed what the
/// stream holds, so silence can be judged.
pub async fn sweep(
    client: &mut Client,
    checks: &Checks,
    limits: Limits,
    caught_up: bool,
) -> Result<(BatchCounts, Vec<Alert>), Error> {
    let soonest = limits.hold_secs.min(limits.gap_alert_secs) as f64;
    let silence = limits.silence_secs as f64;
    let due = client
        .query(
            "SELECT s.tenant, s.source FROM sources s
             WHERE EXISTS (SELECT 1 FROM pending p WHERE p.source_id = s.source_id
                           AND p.received_at < now() - make_interval(secs => $1))
                OR EXISTS (SELECT 1 FROM pending_checkpoints c WHERE c.source_id = s.source_id
                           AND NOT c.alerted AND c.received_at < now() - make_interval(secs => $1))
                OR ($3 AND NOT s.silent_alerted AND s.last_record_at < now() - make_interval(secs => $2)
                    AND EXISTS (SELECT 1 FROM open_sessions o WHERE o.source_id = s.source_id))
             ORDER BY s.tenant, s.source",
            &[&soonest, &silence, &caught_up],
        )
        .await?;
    let mut counts = BatchCounts::default();
    let mut alerts = Vec::new();
    for row in due {
        let (tenant, source): (String, String) = (row.get(0), row.get(1));
        let mut out = Outcome::default();
        let tx = client.transaction().await?;
        let mut st = SourceState::lock(&tx, &tenant, &source).await?;
        sweep_source(&tx, checks, limits, caught_up, &mut st, &mut out).await?;
        store::save(&tx, &mut st).await?;
        out.write(&tx).await?;
        tx.commit().await?;
        counts += out.counts;
        alerts.extend(out.alerts);
    }
    Ok((counts, alerts))
}

async fn sweep_source(
    tx: &tokio_postgres::Transaction<'_>,
    checks: &Checks,
    limits: Limits,
    caught_up: bool,
    st: &mut SourceState,
    out: &mut Outcome,
) -> Result<(), Error> {
    let (tenant, source) = (st.tenant.clone(), st.source.clone());
    let hold = limits.hold_secs as f64;
    let gap = limits.gap_alert_secs as f64;
    // Leftovers at seqs the chain has passed.
    let stale = tx
        .query(
            "DELETE FROM pending p WHERE p.source_id = $1 AND p.seq <= $2
             RETURNING p.seq, p.record_hash, p.subject, p.line,
                       (SELECT r.record_hash FROM records r WHERE r.source_id = p.source_id AND r.seq = p.seq)",
            &[&st.id, &st.last_seq],
        )
        .await?;
    for r in stale {
        let (seq, hash, subject, line): (i64, Vec<u8>, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let stored: Option<Vec<u8>> = r.get(4);
        if stored.as_deref() == Some(&hash[..]) {
            out.counts.duplicates += 1;
        } else {
            out.reject(
                &tenant,
                &source,
                &subject,
                line.as_bytes(),
                Some(seq),
                "chain_conflict",
                "critical",
                format!("record seq {seq} differs from the stored record of that seq (modified or forged in transit)"),
            );
        }
    }
    // The oldest waiting record after the chain's end.
    let first = tx
        .query_opt(
            "SELECT seq, line, received_at < now() - make_interval(secs => $3),
                    (SELECT count(*) FROM pending WHERE source_id = $1 AND seq > $2)
             FROM pending WHERE source_id = $1 AND seq > $2 ORDER BY seq, received_at LIMIT 1",
            &[&st.id, &st.last_seq, &hold],
        )
        .await?;
    let oldest_waiting = tx
        .query_one(
            "SELECT coalesce(min(received_at) < now() - make_interval(secs => $2), false)
             FROM pending WHERE source_id = $1",
            &[&st.id, &gap],
        )
        .await?
        .get::<_, bool>(0);
    if let Some(row) = first {
        let (seq, line, past_hold, waiting): (i64, String, bool, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if st.first_seq.is_none() {
            if past_hold {
                if let Ok(rec) = crate::parse::record(line.as_bytes()) {
                    st.start_unanchored(seq, rec.prev_hash);
                    out.alert(
                        &tenant, &source, "unanchored_source", "info", Some(seq),
                        format!("the first record of this source is seq {seq}, not 1 (earlier records purged or never shipped): its chain is checked from there, its checkpoints cannot be"),
                    );
                    store::settle(tx, checks, st, Vec::new(), Vec::new(), true, out).await?;
                }
            }
        } else if seq == st.last_seq + 1 {
            // Its predecessor is stored: it chains now. (A batch chains what waits right after
            // its records; this is the safety net for anything a batch did not reach.)
            store::settle(tx, checks, st, Vec::new(), Vec::new(), true, out).await?;
        } else if seq > st.last_seq + 1 && oldest_waiting && st.gap_alerted_seq != st.last_seq + 1 {
            out.alert(
                &tenant,
                &source,
                "chain_gap",
                "high",
                Some(st.last_seq + 1),
                format!(
                    "records seq {}..={} have not arrived; {waiting} later records wait for them (not stored until they do)",
                    st.last_seq + 1,
                    seq - 1
                ),
            );
            st.gap_alerted_seq = st.last_seq + 1;
            st.mark_changed();
        }
    }
    // Checkpoints still ahead of the chain.
    let ahead = tx
        .query(
            "UPDATE pending_checkpoints SET alerted = true
             WHERE source_id = $1 AND NOT alerted AND received_at < now() - make_interval(secs => $2)
             RETURNING size",
            &[&st.id, &gap],
        )
        .await?;
    for r in ahead {
        let size: i64 = r.get(0);
        out.alert(
            &tenant,
            &source,
            "checkpoint_ahead",
            "high",
            Some(size),
            format!(
                "signed checkpoint of size {size}, but the chain stored for this source ends at seq {}",
                st.last_seq
            ),
        );
    }
    // Silence during open sessions.
    if caught_up && !st.silent_alerted {
        let row = tx
            .query_one(
                "SELECT s.last_record_at < now() - make_interval(secs => $2),
                        (SELECT count(*) FROM open_sessions o WHERE o.source_id = $1),
                        extract(epoch FROM now() - s.last_record_at)::int8
                 FROM sources s WHERE s.source_id = $1",
                &[&st.id, &(limits.silence_secs as f64)],
            )
            .await?;
        let (quiet, open, secs): (Option<bool>, i64, Option<i64>) =
            (row.get(0), row.get(1), row.get(2));
        if quiet == Some(true) && open > 0 {
            out.alert(
                &tenant,
                &source,
                "source_silent",
                "high",
                Some(st.last_seq),
                format!(
                    "no record for {} s while {open} session(s) are open (last stored seq {}): the tap or its shipping stopped, or telemetry was disabled",
                    secs.unwrap_or(0),
                    st.last_seq
                ),
            );
            st.silent_alerted = true;
            st.mark_changed();
        }
    }
    Ok(())
}
