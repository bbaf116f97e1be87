//! Paged searches for the governance server (`mcptrail serve`): keyset pagination by `seq`
//! (newest first), a substring search over the stored event JSON — which is the redacted
//! form, as written by the taps, so the search never sees a value the redactor removed —
//! session summaries and counts per kind. Every value reaches SQLite as a bound parameter;
//! the SQL text is built only from fixed fragments.

use rusqlite::{params_from_iter, types::Value as SqlValue};
use serde::Serialize;

use crate::{Index, IndexError};

/// A search: all given filters must match; results newest first, at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Session id (prefix match).
    pub session: Option<String>,
    /// Agent id.
    pub agent: Option<String>,
    /// User principal: any of these (a principal and its pseudonym).
    pub users: Vec<String>,
    /// Tool name.
    pub tool: Option<String>,
    /// Event kind (exact, or a prefix ending in `.`/`*`).
    pub kind: Option<String>,
    /// Inclusive lower bound on `time` (RFC 3339 UTC, as stored).
    pub since: Option<String>,
    /// Exclusive upper bound on `time`.
    pub until: Option<String>,
    /// Substring of the stored (redacted) event JSON, case-insensitive for ASCII.
    pub text: Option<String>,
    /// Leave out the kinds starting with this (e.g. `governance.`).
    pub exclude_kind_prefix: Option<String>,
    /// Only events with a `seq` below this (the cursor of the next page).
    pub before_seq: Option<u64>,
    /// At most this many events.
    pub limit: u64,
}

/// One page of a search.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// Stored events (their JSON as in the ledger), newest first.
    pub events: Vec<serde_json::Value>,
    /// Pass as `before_seq` for the next page; `None` when this is the last.
    pub next_before_seq: Option<u64>,
}

/// A session as the index sees it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSummary {
    /// Session id.
    pub session_id: String,
    /// Time of its first indexed event.
    pub first_time: String,
    /// Time of its last indexed event.
    pub last_time: String,
    /// Indexed events.
    pub events: u64,
    /// An agent id seen in it.
    pub agent_id: Option<String>,
    /// A user principal seen in it (as stored: pseudonymised by default).
    pub user: Option<String>,
    /// Highest seq (the cursor of the next page).
    pub last_seq: u64,
}

/// Escape `%`, `_` and `\` for `LIKE … ESCAPE '\'`.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Index {
    /// One page of events matching `s`, newest first.
    pub fn search(&self, s: &Search) -> Result<Page, IndexError> {
        let mut sql = String::from("SELECT json, seq FROM events WHERE 1=1");
        let mut args: Vec<SqlValue> = Vec::new();
        let mut push = |sql: &mut String, clause: &str, v: SqlValue| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(v) = &s.session {
            push(
                &mut sql,
                " AND session_id LIKE ? || '%' ESCAPE '\\'",
                SqlValue::Text(like_escape(v)),
            );
        }
        if let Some(v) = &s.agent {
            push(&mut sql, " AND agent_id = ?", SqlValue::Text(v.clone()));
        }
        if let Some(v) = &s.tool {
            push(&mut sql, " AND tool = ?", SqlValue::Text(v.clone()));
        }
        if let Some(v) = &s.since {
            push(&mut sql, " AND time >= ?", SqlValue::Text(v.clone()));
        }
        if let Some(v) = &s.until {
            push(&mut sql, " AND time < ?", SqlValue::Text(v.clone()));
        }
        match s.kind.as_deref() {
            Some(k) if k.ends_with('*') || k.ends_with('.') => push(
                &mut sql,
                " AND kind LIKE ? || '%' ESCAPE '\\'",
                SqlValue::Text(like_escape(k.trim_end_matches('*'))),
            ),
            Some(k) => push(&mut sql, " AND kind = ?", SqlValue::Text(k.to_string())),
            None => {}
        }
        if let Some(v) = &s.text {
            push(
                &mut sql,
                " AND json LIKE '%' || ? || '%' ESCAPE '\\'",
                SqlValue::Text(like_escape(v)),
            );
        }
        if let Some(v) = &s.exclude_kind_prefix {
            push(
                &mut sql,
                " AND kind NOT LIKE ? || '%' ESCAPE '\\'",
                SqlValue::Text(like_escape(v)),
            );
        }
        if let Some(v) = s.before_seq {
            push(
                &mut sql,
                " AND seq < ?",
                SqlValue::Integer(i64::try_from(v).unwrap_or(i64::MAX)),
            );
        }
        if !s.users.is_empty() {
            let mut marks = Vec::new();
            for u in &s.users {
                args.push(SqlValue::Text(u.clone()));
                marks.push(format!("?{}", args.len()));
            }
            sql.push_str(&format!(" AND user IN ({})", marks.join(",")));
        }
        // One more than asked, to know whether there is a next page.
        args.push(SqlValue::Integer(
            i64::try_from(s.limit.saturating_add(1)).unwrap_or(i64::MAX),
        ));
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT ?{}", args.len()));
        let mut stmt = self.sql(self.conn.prepare(&sql))?;
        let rows = self.sql(stmt.query_map(params_from_iter(args.iter()), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        }))?;
        let mut events = Vec::new();
        let mut last_seq = None;
        let mut more = false;
        for row in rows {
            let (json, seq) = self.sql(row)?;
            if events.len() as u64 == s.limit {
                more = true;
                break;
            }
            if let Ok(v) = serde_json::from_str(&json) {
                events.push(v);
                last_seq = Some(seq as u64);
            }
        }
        Ok(Page {
            events,
            next_before_seq: if more { last_seq } else { None },
        })
    }

    /// Sessions, the most recently active first; `before_seq` pages on their last seq.
    pub fn sessions(
        &self,
        before_seq: Option<u64>,
        limit: u64,
    ) -> Result<Vec<SessionSummary>, IndexError> {
        let mut stmt = self.sql(self.conn.prepare(
            "SELECT session_id, MIN(time), MAX(time), COUNT(*), MAX(agent_id), MAX(user), MAX(seq) AS last
             FROM events WHERE session_id IS NOT NULL
             GROUP BY session_id HAVING last < ?1 ORDER BY last DESC LIMIT ?2",
        ))?;
        let before = before_seq.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.sql(stmt.query_map(rusqlite::params![before, limit], |r| {
            Ok(SessionSummary {
                session_id: r.get(0)?,
                first_time: r.get(1)?,
                last_time: r.get(2)?,
                events: r.get::<_, i64>(3)? as u64,
                agent_id: r.get(4)?,
                user: r.get(5)?,
                last_seq: r.get::<_, i64>(6)? as u64,
            })
        }))?;
        rows.map(|r| self.sql(r)).collect()
    }

    /// Indexed events per kind.
    pub fn counts_by_kind(&self) -> Result<Vec<(String, u64)>, IndexError> {
        let mut stmt = self.sql(
            self.conn
                .prepare("SELECT kind, COUNT(*) FROM events GROUP BY kind ORDER BY kind"),
        )?;
        let rows = self.sql(stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        }))?;
        rows.map(|r| self.sql(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::like_escape;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(like_escape("50%_a\\b"), "50\\%\\_a\\\\b");
        assert_eq!(like_escape("plain"), "plain");
    }
}
