//! Paged searches for the governance server (`mcptrail serve`): keyset pagination by `seq`
//! (newest first), a word search (FTS5) over the searchable text of the stored events —
//! which is the redacted form, as written by the taps, so the search never sees a value the
//! redactor removed — session summaries and counts per kind. Every value reaches SQLite as a
//! bound parameter; the SQL text is built only from fixed fragments.

use rusqlite::{params_from_iter, types::Value as SqlValue, OptionalExtension};
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
    /// Words of the searchable (redacted) text, as a phrase, the last word a prefix
    /// ([`crate::search_text`]); case-insensitive. No letter or digit in it: no match.
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

/// One agent's activity in one clock hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentHour {
    /// Start of the hour, RFC 3339 UTC.
    pub hour: String,
    /// Records of the agent.
    pub events: u64,
    /// `tools/call` requests.
    pub calls: u64,
    /// Tool and resource results.
    pub results: u64,
    /// Of which failed.
    pub errors: u64,
    /// Bytes of those results.
    pub bytes: u64,
}

/// What one agent did, from the session summaries.
#[derive(Debug, Clone, Serialize)]
pub struct AgentActivity {
    /// The agent id.
    pub agent_id: String,
    /// Sessions it appeared in.
    pub sessions: u64,
    /// Events of those sessions.
    pub events: u64,
    /// Time of its first indexed event.
    pub first_time: String,
    /// Time of its last indexed event.
    pub last_time: String,
}

/// The smallest string above every string starting with `p` (`None`: no such string).
fn prefix_upper(p: &str) -> Option<String> {
    let mut chars: Vec<char> = p.chars().collect();
    while let Some(c) = chars.pop() {
        if let Some(n) = char::from_u32(c as u32 + 1) {
            chars.push(n);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// `q` as an FTS5 query: its words as one phrase (adjacent, in order); a `*` at the end makes
/// the last word a prefix (`invoice-0421*` finds `invoice-042117`). A prefix of 2–4
/// characters is served by the FTS table's prefix index (one posting list, read newest first);
/// a shorter or longer one makes FTS5 merge the whole posting lists of every word that starts
/// with it before the first row, whatever the rowid range — the cost of every record holding
/// such a word. `None` when it holds no word.
pub(crate) fn fts_query(q: &str) -> Option<String> {
    let (words, prefix) = match q.trim_end().strip_suffix('*') {
        Some(w) => (w, true),
        None => (q, false),
    };
    if !words.chars().any(char::is_alphanumeric) {
        return None;
    }
    let phrase = format!("\"{}\"", words.replace('"', "\"\""));
    Some(if prefix { phrase + " *" } else { phrase })
}

/// SQL text and its bound values.
#[derive(Default)]
struct Sql {
    text: String,
    args: Vec<SqlValue>,
}

impl Sql {
    fn push(&mut self, clause: &str, v: SqlValue) {
        self.args.push(v);
        self.text
            .push_str(&clause.replace('?', &format!("?{}", self.args.len())));
    }

    /// `col` starts with `p`: a range the index can walk (case-sensitive).
    fn prefix(&mut self, col: &str, p: &str) {
        self.push(&format!(" AND {col} >= ?"), SqlValue::Text(p.to_string()));
        if let Some(hi) = prefix_upper(p) {
            self.push(&format!(" AND {col} < ?"), SqlValue::Text(hi));
        }
    }
}

impl Index {
    /// One page of events matching `s`, newest first.
    ///
    /// Each filter is a bound parameter. Which index drives the search is chosen here, not
    /// left to the planner: the most selective filter given (session, user, tool, agent,
    /// kind, time range, in that order; the words of `text` through the FTS table), in an
    /// index that ends in `seq` — or in `time, kind` when a time range is given — so a page
    /// is read newest first without sorting the whole match.
    pub fn search(&self, s: &Search) -> Result<Page, IndexError> {
        let fts = match &s.text {
            Some(t) => match fts_query(t) {
                Some(q) => Some(q),
                None => {
                    return Ok(Page {
                        events: Vec::new(),
                        next_before_seq: None,
                    })
                }
            },
            None => None,
        };
        let limit = i64::try_from(s.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let ranged = s.since.is_some() || s.until.is_some();
        // One arm per user value (a principal and its pseudonym), merged by seq.
        let users: Vec<Option<&String>> = if s.users.is_empty() {
            vec![None]
        } else {
            s.users.iter().map(Some).collect()
        };
        let mut sql = Sql::default();
        let mut arms = Vec::new();
        for user in &users {
            let index = if fts.is_some() {
                None
            } else if s.session.is_some() {
                Some("events_session")
            } else if user.is_some() {
                Some(if ranged {
                    "events_user_time"
                } else {
                    "events_user"
                })
            } else if s.tool.is_some() {
                Some(if ranged {
                    "events_tool_time"
                } else {
                    "events_tool"
                })
            } else if s.agent.is_some() {
                Some("events_agent")
            } else if s.kind.is_some() {
                Some("events_kind")
            } else if ranged {
                Some("events_time")
            } else if s.exclude_kind_prefix.as_deref() == Some("governance.") {
                Some("events_visible")
            } else {
                None
            };
            let start = sql.text.len();
            match (&fts, index) {
                (Some(q), _) => {
                    // The FTS table drives, newest first (CROSS JOIN keeps it the outer loop).
                    sql.text.push_str(
                        "SELECT f.rowid AS seq FROM events_fts f CROSS JOIN events e \
                         ON e.seq = f.rowid WHERE 1=1",
                    );
                    sql.push(" AND events_fts MATCH ?", SqlValue::Text(q.clone()));
                    if let Some(v) = s.before_seq {
                        sql.push(
                            " AND f.rowid < ?",
                            SqlValue::Integer(i64::try_from(v).unwrap_or(i64::MAX)),
                        );
                    }
                }
                (None, Some(ix)) => {
                    sql.text.push_str(&format!(
                        "SELECT e.seq AS seq FROM events e INDEXED BY {ix} WHERE 1=1"
                    ));
                }
                (None, None) => sql
                    .text
                    .push_str("SELECT e.seq AS seq FROM events e WHERE 1=1"),
            }
            if let Some(v) = &s.session {
                sql.prefix("e.session_id", v);
            }
            if let Some(u) = user {
                sql.push(" AND e.user = ?", SqlValue::Text((*u).clone()));
            }
            if let Some(v) = &s.agent {
                sql.push(" AND e.agent_id = ?", SqlValue::Text(v.clone()));
            }
            if let Some(v) = &s.tool {
                sql.push(" AND e.tool = ?", SqlValue::Text(v.clone()));
            }
            if let Some(v) = &s.since {
                sql.push(" AND e.time >= ?", SqlValue::Text(v.clone()));
            }
            if let Some(v) = &s.until {
                sql.push(" AND e.time < ?", SqlValue::Text(v.clone()));
            }
            match s.kind.as_deref() {
                Some(k) if k.ends_with('*') || k.ends_with('.') => {
                    sql.prefix("e.kind", k.trim_end_matches('*'));
                }
                Some(k) => sql.push(" AND e.kind = ?", SqlValue::Text(k.to_string())),
                None => {}
            }
            if s.exclude_kind_prefix.as_deref() == Some("governance.") {
                // Literally the condition of the partial index `events_visible`.
                sql.text.push_str(" AND ");
                sql.text
                    .push_str(&crate::NOT_GOVERNANCE.replace("kind", "e.kind"));
            } else if let Some(v) = &s.exclude_kind_prefix {
                match prefix_upper(v) {
                    Some(hi) => {
                        sql.push(" AND NOT (e.kind >= ?", SqlValue::Text(v.clone()));
                        sql.push(" AND e.kind < ?)", SqlValue::Text(hi));
                    }
                    None => sql.push(" AND e.kind < ?", SqlValue::Text(v.clone())),
                }
            }
            if let Some(v) = s.before_seq {
                sql.push(
                    " AND e.seq < ?",
                    SqlValue::Integer(i64::try_from(v).unwrap_or(i64::MAX)),
                );
            }
            // The FTS table yields rowids newest first without a sort; so does an index
            // ending in seq.
            let order = if fts.is_some() { "f.rowid" } else { "e.seq" };
            sql.push(
                &format!(" ORDER BY {order} DESC LIMIT ?"),
                SqlValue::Integer(limit),
            );
            arms.push(sql.text.split_off(start));
        }
        // The arms select seqs only: a sort over a time range then reads the index alone, and
        // only the rows of the page are fetched (SQLite would otherwise read the JSON of every
        // candidate into its sorter).
        let seqs = if arms.len() == 1 {
            arms.pop().unwrap_or_default()
        } else {
            let merged: Vec<String> = arms
                .iter()
                .map(|a| format!("SELECT seq FROM ({a})"))
                .collect();
            sql.args.push(SqlValue::Integer(limit));
            format!(
                "SELECT seq FROM ({}) ORDER BY seq DESC LIMIT ?{}",
                merged.join(" UNION ALL "),
                sql.args.len()
            )
        };
        let text = format!(
            "SELECT p.json, p.seq FROM ({seqs}) k CROSS JOIN events p ON p.seq = k.seq ORDER BY p.seq DESC"
        );
        let mut stmt = self.sql(self.conn.prepare(&text))?;
        let rows = self.sql(stmt.query_map(params_from_iter(sql.args.iter()), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        }))?;
        let mut events = Vec::new();
        let mut last_seq = None;
        let mut more = false;
        let mut previous = None;
        for row in rows {
            let (json, seq) = self.sql(row)?;
            // A principal and its pseudonym never name the same record, but be exact.
            if previous == Some(seq) {
                continue;
            }
            previous = Some(seq);
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

    /// The stored event with this `event_id`, if indexed.
    pub fn event_by_id(&self, event_id: &str) -> Result<Option<serde_json::Value>, IndexError> {
        let json: Option<String> = self.sql(
            self.conn
                .query_row(
                    "SELECT json FROM events WHERE event_id = ?1",
                    [event_id],
                    |r| r.get(0),
                )
                .optional(),
        )?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Sessions, the most recently active first; `before_seq` pages on their last seq.
    pub fn sessions(
        &self,
        before_seq: Option<u64>,
        limit: u64,
    ) -> Result<Vec<SessionSummary>, IndexError> {
        let mut stmt = self.sql(self.conn.prepare(
            "SELECT session_id, first_time, last_time, events, agent_id, user, last_seq
             FROM sessions WHERE last_seq < ?1 ORDER BY last_seq DESC LIMIT ?2",
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

    /// Activity per agent (sessions, their events, first and last time), the busiest first;
    /// read from the session summaries, not the events.
    pub fn agents(&self, limit: u64) -> Result<Vec<AgentActivity>, IndexError> {
        let mut stmt = self.sql(self.conn.prepare(
            "SELECT agent_id, COUNT(*), SUM(events), MIN(first_time), MAX(last_time)
             FROM sessions WHERE agent_id IS NOT NULL
             GROUP BY agent_id ORDER BY SUM(events) DESC, agent_id LIMIT ?1",
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.sql(stmt.query_map([limit], |r| {
            Ok(AgentActivity {
                agent_id: r.get(0)?,
                sessions: r.get::<_, i64>(1)? as u64,
                events: r.get::<_, i64>(2)? as u64,
                first_time: r.get(3)?,
                last_time: r.get(4)?,
            })
        }))?;
        rows.map(|r| self.sql(r)).collect()
    }

    /// One agent's activity per clock hour, oldest first, for the hours that start in
    /// `[since's hour, until)` (RFC 3339 UTC times as stored, or hours as `2026-12-07T13`);
    /// hours without events are left out.
    pub fn agent_hours(
        &self,
        agent: &str,
        since: &str,
        until: &str,
    ) -> Result<Vec<AgentHour>, IndexError> {
        let cut = |t: &str| t.get(..13).unwrap_or(t).to_string();
        // The hour `until` falls in starts before it unless `until` is that hour's start.
        let past_start = until
            .get(13..)
            .is_some_and(|rest| rest.bytes().any(|b| (b'1'..=b'9').contains(&b)));
        let mut stmt = self.sql(self.conn.prepare(
            "SELECT hour, events, calls, results, errors, bytes FROM agent_hours
             WHERE agent_id = ?1 AND hour >= ?2 AND (hour < ?3 OR (hour = ?3 AND ?4))
             ORDER BY hour",
        ))?;
        let rows = self.sql(stmt.query_map(
            rusqlite::params![agent, cut(since), cut(until), past_start],
            |r| {
                Ok(AgentHour {
                    hour: format!("{}:00:00Z", r.get::<_, String>(0)?),
                    events: r.get::<_, i64>(1)? as u64,
                    calls: r.get::<_, i64>(2)? as u64,
                    results: r.get::<_, i64>(3)? as u64,
                    errors: r.get::<_, i64>(4)? as u64,
                    bytes: r.get::<_, i64>(5)? as u64,
                })
            },
        ))?;
        rows.map(|r| self.sql(r)).collect()
    }

    /// Indexed events per kind.
    pub fn counts_by_kind(&self) -> Result<Vec<(String, u64)>, IndexError> {
        let mut stmt = self.sql(
            self.conn
                .prepare("SELECT kind, n FROM kind_counts WHERE n > 0 ORDER BY kind"),
        )?;
        let rows = self.sql(stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        }))?;
        rows.map(|r| self.sql(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{fts_query, prefix_upper, Search};
    use crate::Index;
    use mcptrail_event::{Event, EventKind, ResponseSummary, Status};
    use mcptrail_ledger::{Ledger, LedgerConfig};

    #[test]
    fn prefixes_and_fts_queries() {
        assert_eq!(prefix_upper("sess-1").as_deref(), Some("sess-2"));
        assert_eq!(prefix_upper("governance.").as_deref(), Some("governance/"));
        assert_eq!(prefix_upper(""), None);
        assert_eq!(
            fts_query("invoice-0421*").as_deref(),
            Some("\"invoice-0421\" *")
        );
        assert_eq!(
            fts_query("invoice-0421").as_deref(),
            Some("\"invoice-0421\"")
        );
        assert_eq!(fts_query("a \" OR b").as_deref(), Some("\"a \"\" OR b\""));
        assert_eq!(fts_query("%_\\"), None);
        assert_eq!(fts_query(" * "), None);
    }

    /// A response whose searchable text is `preview` alone.
    fn response(preview: &str) -> Event {
        let mut ev = Event::new(EventKind::McpResponse);
        ev.response_summary = Some(ResponseSummary {
            status: Status::Ok,
            is_error: false,
            error_code: None,
            error_message: None,
            size: 1,
            sha256: None,
            preview: Some(preview.into()),
            content_types: Vec::new(),
        });
        ev
    }

    fn ledger(dir: &std::path::Path) -> Ledger {
        Ledger::open(
            dir,
            LedgerConfig {
                fsync: false,
                ..LedgerConfig::default()
            },
        )
        .unwrap()
    }

    /// Every seq `s` finds, page by page (`limit` a page), checked newest first and unique.
    fn all_pages(idx: &Index, mut s: Search, limit: u64) -> Vec<u64> {
        s.limit = limit;
        let mut got: Vec<u64> = Vec::new();
        loop {
            let p = idx.search(&s).unwrap();
            assert!(p.events.len() as u64 <= limit);
            for e in &p.events {
                let seq = e["seq"].as_u64().unwrap();
                assert!(
                    got.last().is_none_or(|&l| seq < l),
                    "newest first, once: {s:?}"
                );
                got.push(seq);
            }
            match p.next_before_seq {
                Some(b) => {
                    assert_eq!(p.events.len() as u64, limit, "only a full page has a next");
                    s.before_seq = Some(b);
                }
                None => break,
            }
        }
        got
    }

    #[test]
    fn prefix_searches_are_complete_across_pages_lengths_and_purges() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = ledger(dir.path());
        // Words sharing prefixes of every length, served by the prefix index (2-4 characters)
        // and past it (1, 5, 6+); non-ASCII ones (a prefix is counted in characters).
        const WORDS: &[&str] = &[
            "steal", "steam", "steady", "stealth", "Stealing", "st", "s", "stove", "strait",
            "teal", "quick", "brown", "Ĉefo", "ĉevalo", "x",
        ];
        let mut texts = Vec::new();
        let mut rng = 0x2545_f491_u64;
        for i in 0..400u64 {
            // The oldest records match, then a long stretch that does not: a search must
            // find them past many pages of newer, non-matching records.
            let text = if i < 3 {
                "quick steam".to_string()
            } else if i < 250 {
                "nothing brown here".to_string()
            } else {
                (0..1 + i % 5)
                    .map(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        WORDS[(rng % WORDS.len() as u64) as usize]
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            l.append(&mut [response(&text)]).unwrap();
            texts.push(text);
        }
        let mut idx = Index::open(dir.path()).unwrap();
        idx.sync().unwrap();
        // What a plain scan finds (seqs from `from_seq` on, newest first): the last word a
        // case-insensitive prefix, the words before it the same words, adjacent.
        let want = |q: &str, from_seq: u64| -> Vec<u64> {
            let q = q.to_lowercase();
            let q: Vec<&str> = q.trim_end_matches('*').split(' ').collect();
            let (last, before) = q.split_last().unwrap();
            let mut out: Vec<u64> = (from_seq..=texts.len() as u64)
                .filter(|&seq| {
                    let t = texts[seq as usize - 1].to_lowercase();
                    let t: Vec<&str> = t.split(' ').collect();
                    t.windows(q.len())
                        .any(|w| w[..before.len()] == *before && w[before.len()].starts_with(last))
                })
                .collect();
            out.reverse();
            out
        };
        let queries = [
            "s*",
            "st*",
            "ste*",
            "stea*",
            "steal*",
            "steali*",
            "STEA*",
            "stealth*",
            "quick stea*",
            "quick ste*",
            "ĉe*",
            "ĉev*",
            "stez*",
            "x*",
        ];
        for q in queries {
            let w = want(q, 1);
            assert!(q == "stez*" || !w.is_empty(), "{q} finds something");
            for limit in [1, 7, 100] {
                let s = Search {
                    text: Some(q.into()),
                    ..Default::default()
                };
                assert_eq!(all_pages(&idx, s, limit), w, "{q}, pages of {limit}");
            }
        }
        assert_eq!(want("quick stea*", 1).last(), Some(&1), "the oldest found");
        // A page that starts in the middle.
        let s = Search {
            text: Some("stea*".into()),
            before_seq: Some(300),
            ..Default::default()
        };
        let w: Vec<u64> = want("stea*", 1).into_iter().filter(|&q| q < 300).collect();
        assert_eq!(all_pages(&idx, s, 5), w);
        // Purged records leave the prefix indexes too.
        idx.purge_through(320).unwrap();
        for q in ["s*", "st*", "stea*", "steal*", "quick stea*"] {
            let s = Search {
                text: Some(q.into()),
                ..Default::default()
            };
            assert_eq!(all_pages(&idx, s, 7), want(q, 321), "{q} after a purge");
        }
    }

    #[test]
    fn an_index_of_an_older_schema_is_rebuilt_with_the_prefix_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = ledger(dir.path());
        l.append(&mut [response("steady steam")]).unwrap();
        let mut idx = Index::open(dir.path()).unwrap();
        idx.sync().unwrap();
        // As schema 3 left it: the same table without `prefix=`.
        idx.conn
            .execute_batch(
                "DROP TABLE events_fts;
                 CREATE VIRTUAL TABLE events_fts USING fts5(
                    text, content='', contentless_delete=1, tokenize='unicode61');
                 UPDATE meta SET value = '3' WHERE key = 'schema_version';",
            )
            .unwrap();
        drop(idx);
        let mut idx = Index::open(dir.path()).unwrap();
        let sql: String = idx
            .conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'events_fts'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(sql.contains("prefix='2 3 4'"), "{sql}");
        assert_eq!(idx.count().unwrap(), 0, "emptied");
        assert_eq!(idx.sync().unwrap().indexed, 1, "and filled again");
        let s = Search {
            text: Some("stea*".into()),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(idx.search(&s).unwrap().events.len(), 1);
    }
}
