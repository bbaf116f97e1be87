//! The query index: a SQLite database derived from the ledger, never the other way round.
//!
//! It is a ledger consumer like any other: it remembers the last `seq` (and that record's
//! `event_id`) it indexed and catches up from there on every [`Index::sync`]. If the ledger
//! no longer holds that record (a different ledger, or one restored from backup), the index
//! rebuilds itself. Deleting `index.sqlite` loses nothing: `mcptrail reindex` recreates it.
//!
//! Layout (schema 5), shaped by the searches of `mcptrail serve` over tens of millions of
//! records (BENCHMARKS.md, "Governance server"):
//! - `events`: one row per record, the stored JSON as is, `seq` as the rowid; secondary
//!   indexes end in `seq` (newest first walks the index, keyset pagination by `before_seq`
//!   needs no sort) or, for time ranges, in `time, kind` (the range is scanned in the index
//!   alone, `governance.*` left out without reading rows); a partial index of the seqs that
//!   are not `governance.*` pages through everything an investigator may see without walking
//!   over the meta-audit (which every read grows);
//! - `events_fts`: a contentless FTS5 table (rowid = `seq`) over the searchable text of each
//!   record — tool, method, URIs, the string values of the redacted parameters, the redacted
//!   preview and error message, the strings of `detail` (alert summaries) and labels; with
//!   prefix indexes of 2, 3 and 4 characters, so a `stea*` search reads one posting list
//!   newest first instead of merging those of every word that starts with it;
//! - `sessions`, `kind_counts` and `agent_hours`: summaries kept up to date by every sync, so
//!   listing sessions, counting kinds and charting an agent's activity hour by hour (calls,
//!   results, failures, bytes: [`mcptrail_event::activity::Tally`], what its baseline counts)
//!   does not scan the table.
//!
//! A sync resumes at the byte offset of the last record it indexed (checked against that
//! record's `seq` and `event_id`) instead of re-reading its segment from the start, and
//! commits every [`SYNC_COMMIT_EVERY`] records, so a rebuild keeps the write-ahead log small.

mod search;
mod timeline;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use mcptrail_event::activity::{hour_of, Tally};
use mcptrail_event::Event;
use mcptrail_ledger::{LedgerError, LedgerReader, RawRecord, LEDGER_DIR};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

pub use search::{AgentActivity, AgentHour, Page, Search, SessionSummary};
pub use timeline::render_timeline;

/// File name of the index inside the data directory.
pub const INDEX_FILE: &str = "index.sqlite";
const SCHEMA_VERSION: i64 = 5;
/// The records an investigator sees (the meta-audit is the auditor's): the condition of the
/// partial index `events_visible`, written the same way in the queries that use it (SQLite
/// uses a partial index only when the query states its condition literally).
pub(crate) const NOT_GOVERNANCE: &str = "NOT (kind >= 'governance.' AND kind < 'governance/')";
/// Adds a tally to an agent's hour (`?1` agent, `?2` hour, then events, calls, results,
/// errors, bytes).
const ADD_AGENT_HOUR: &str =
    "INSERT INTO agent_hours(agent_id, hour, events, calls, results, errors, bytes)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
     ON CONFLICT(agent_id, hour) DO UPDATE SET
        events = events + excluded.events, calls = calls + excluded.calls,
        results = results + excluded.results, errors = errors + excluded.errors,
        bytes = bytes + excluded.bytes";
/// Records per transaction while syncing (bounds the write-ahead log during a rebuild).
pub const SYNC_COMMIT_EVERY: u64 = 100_000;

/// Errors of the index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// SQLite failed.
    #[error(
        "index database {path}: {source}; it is derived data — delete it or run `mcptrail reindex`"
    )]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// Reading the ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Creating (or replacing) the database file failed.
    #[error("cannot create or replace {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Records added.
    pub indexed: u64,
    /// Lines that were not valid events (left out; `mcptrail verify` names them).
    pub skipped: u64,
    /// Whether the index was rebuilt from scratch.
    pub rebuilt: bool,
}

/// Filters for [`Index::query`]; all given filters must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Session id (prefix match).
    pub session: Option<String>,
    /// Agent id.
    pub agent: Option<String>,
    /// User principal: any of these (a principal and its pseudonym).
    pub users: Vec<String>,
    /// Tool name.
    pub tool: Option<String>,
    /// Classification label (`pii`, `secret`, …).
    pub label: Option<String>,
    /// Event kind (exact, or a prefix ending in `.`/`*`, e.g. `session.*`).
    pub kind: Option<String>,
    /// JSON-RPC method.
    pub method: Option<String>,
    /// Response status (`ok`, `error`, …).
    pub status: Option<String>,
    /// Inclusive lower bound, RFC 3339 UTC fixed width (as stored).
    pub since: Option<String>,
    /// Exclusive upper bound, same format.
    pub until: Option<String>,
    /// At most this many events (the newest, returned oldest first).
    pub limit: Option<u64>,
}

/// An open index.
#[derive(Debug)]
pub struct Index {
    conn: Connection,
    path: PathBuf,
    data_dir: PathBuf,
}

impl Index {
    /// Open (creating if needed) the index of `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, IndexError> {
        let path = data_dir.join(INDEX_FILE);
        if !path.exists() {
            std::fs::create_dir_all(data_dir).map_err(|source| IndexError::Io {
                path: data_dir.into(),
                source,
            })?;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(|source| IndexError::Io {
                    path: path.clone(),
                    source,
                })?;
        }
        let conn = Connection::open(&path).map_err(|source| IndexError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let idx = Index {
            conn,
            path,
            data_dir: data_dir.to_path_buf(),
        };
        idx.migrate()?;
        Ok(idx)
    }

    /// Delete the index files of `data_dir` (they are derived from the ledger) and open a new,
    /// empty index: the way out of an index that cannot be opened at all.
    pub fn recreate(data_dir: &Path) -> Result<Self, IndexError> {
        for suffix in ["", "-wal", "-shm"] {
            let path = data_dir.join(format!("{INDEX_FILE}{suffix}"));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(IndexError::Io { path, source }),
            }
        }
        Index::open(data_dir)
    }

    fn sql<T>(&self, r: rusqlite::Result<T>) -> Result<T, IndexError> {
        r.map_err(|source| IndexError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    fn migrate(&self) -> Result<(), IndexError> {
        self.sql(self.conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        ))?;
        let version: Option<i64> = self
            .sql(
                self.conn
                    .query_row(
                        "SELECT value FROM meta WHERE key='schema_version'",
                        [],
                        |r| r.get::<_, String>(0),
                    )
                    .optional(),
            )?
            .and_then(|v| v.parse().ok());
        if version != Some(SCHEMA_VERSION) {
            self.sql(self.conn.execute_batch(
                "DROP TABLE IF EXISTS events;
                 DROP TABLE IF EXISTS events_fts;
                 DROP TABLE IF EXISTS sessions;
                 DROP TABLE IF EXISTS kind_counts;
                 DROP TABLE IF EXISTS agent_hours;
                 DELETE FROM meta;
                 CREATE TABLE events(
                    seq INTEGER PRIMARY KEY,
                    event_id TEXT NOT NULL UNIQUE,
                    time TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    session_id TEXT,
                    agent_id TEXT,
                    user TEXT,
                    tool TEXT,
                    method TEXT,
                    status TEXT,
                    labels TEXT,
                    json TEXT NOT NULL
                 );
                 CREATE INDEX events_session ON events(session_id, seq);
                 CREATE INDEX events_time ON events(time, kind);
                 CREATE INDEX events_agent ON events(agent_id, seq);
                 CREATE INDEX events_user ON events(user, seq);
                 CREATE INDEX events_user_time ON events(user, time, kind);
                 CREATE INDEX events_tool ON events(tool, seq);
                 CREATE INDEX events_tool_time ON events(tool, time, kind);
                 CREATE INDEX events_kind ON events(kind, seq);
                 CREATE VIRTUAL TABLE events_fts USING fts5(
                    text, content='', contentless_delete=1, tokenize='unicode61',
                    prefix='2 3 4'
                 );
                 CREATE TABLE sessions(
                    session_id TEXT PRIMARY KEY,
                    first_time TEXT NOT NULL,
                    last_time TEXT NOT NULL,
                    events INTEGER NOT NULL,
                    agent_id TEXT,
                    user TEXT,
                    first_seq INTEGER NOT NULL,
                    last_seq INTEGER NOT NULL
                 );
                 CREATE INDEX sessions_last ON sessions(last_seq);
                 CREATE TABLE kind_counts(kind TEXT PRIMARY KEY, n INTEGER NOT NULL);
                 CREATE TABLE agent_hours(
                    agent_id TEXT NOT NULL,
                    hour TEXT NOT NULL,
                    events INTEGER NOT NULL,
                    calls INTEGER NOT NULL,
                    results INTEGER NOT NULL,
                    errors INTEGER NOT NULL,
                    bytes INTEGER NOT NULL,
                    PRIMARY KEY(agent_id, hour)
                 ) WITHOUT ROWID;",
            ))?;
            self.set_meta("schema_version", &SCHEMA_VERSION.to_string())?;
        }
        // Indexes added within a schema version are created when missing.
        self.sql(self.conn.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS events_visible ON events(seq) WHERE {NOT_GOVERNANCE};"
        )))?;
        Ok(())
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), IndexError> {
        self.sql(
            self.conn
                .execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
                    params![key, value],
                )
                .map(|_| ()),
        )
    }

    fn meta(&self, key: &str) -> Result<Option<String>, IndexError> {
        self.sql(
            self.conn
                .query_row("SELECT value FROM meta WHERE key=?1", [key], |r| r.get(0))
                .optional(),
        )
    }

    /// Drop everything and index the whole ledger again.
    pub fn rebuild(&mut self) -> Result<SyncReport, IndexError> {
        self.sql(self.conn.execute_batch(
            "DELETE FROM events; DELETE FROM events_fts; DELETE FROM sessions;
             DELETE FROM kind_counts; DELETE FROM agent_hours;
             DELETE FROM meta WHERE key IN ('last_seq','last_event_id','last_segment','last_offset');",
        ))?;
        let mut r = self.sync()?;
        r.rebuilt = true;
        Ok(r)
    }

    /// Delete the indexed events up to `seq`: records retention removed from the ledger must
    /// not live on here. Deleted content is overwritten (`secure_delete`) and the WAL
    /// checkpointed and truncated, so no copy stays in the database files. Returns the rows
    /// deleted.
    pub fn purge_through(&mut self, seq: u64) -> Result<u64, IndexError> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        self.sql(self.conn.execute_batch("PRAGMA secure_delete=ON;"))?;
        let tx = self.sql(self.conn.unchecked_transaction())?;
        // Counts and session summaries of what goes, before it goes.
        self.sql(tx.execute(
            "UPDATE kind_counts SET n = n - (SELECT COUNT(*) FROM events e
                WHERE e.seq <= ?1 AND e.kind = kind_counts.kind)",
            [seq],
        ))?;
        self.sql(tx.execute("DELETE FROM kind_counts WHERE n <= 0", []))?;
        // The agent hours that lose events: counted again from what is left of them.
        let hours: Vec<(String, String)> = {
            let mut stmt = self.sql(tx.prepare(
                "SELECT DISTINCT agent_id, substr(time, 1, 13) FROM events
                 WHERE seq <= ?1 AND agent_id IS NOT NULL",
            ))?;
            let rows = self.sql(stmt.query_map([seq], |r| Ok((r.get(0)?, r.get(1)?))))?;
            rows.collect::<Result<_, _>>()
                .map_err(|source| IndexError::Sqlite {
                    path: self.path.clone(),
                    source,
                })?
        };
        let n = self.sql(tx.execute("DELETE FROM events WHERE seq <= ?1", [seq]))?;
        for (agent, hour) in &hours {
            let mut tally = Tally::default();
            {
                let mut stmt = self.sql(tx.prepare_cached(
                    "SELECT json FROM events WHERE agent_id = ?1 AND time >= ?2 AND time < ?3",
                ))?;
                let mut rows = self.sql(stmt.query(params![agent, hour, format!("{hour};")]))?;
                while let Some(r) = self.sql(rows.next())? {
                    let json: String = self.sql(r.get(0))?;
                    if let Ok(ev) = serde_json::from_str::<Event>(&json) {
                        tally.add(&ev.activity_facts());
                    }
                }
            }
            self.sql(tx.execute(
                "DELETE FROM agent_hours WHERE agent_id = ?1 AND hour = ?2",
                params![agent, hour],
            ))?;
            if tally.events > 0 {
                self.sql(tx.execute(
                    ADD_AGENT_HOUR,
                    params![
                        agent,
                        hour,
                        tally.events as i64,
                        tally.calls as i64,
                        tally.results as i64,
                        tally.errors as i64,
                        tally.bytes as i64
                    ],
                ))?;
            }
        }
        self.sql(tx.execute("DELETE FROM events_fts WHERE rowid <= ?1", [seq]))?;
        self.sql(tx.execute("DELETE FROM sessions WHERE last_seq <= ?1", [seq]))?;
        // Sessions that straddle the boundary: summarise what is left of them.
        self.sql(tx.execute(
            "INSERT OR REPLACE INTO sessions(session_id, first_time, last_time, events, agent_id, user, first_seq, last_seq)
             SELECT session_id, MIN(time), MAX(time), COUNT(*), MAX(agent_id), MAX(user), MIN(seq), MAX(seq)
             FROM events WHERE session_id IN (SELECT session_id FROM sessions WHERE first_seq <= ?1)
             GROUP BY session_id",
            [seq],
        ))?;
        self.sql(tx.commit())?;
        self.sql(
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())),
        )?;
        Ok(n as u64)
    }

    /// The lowest and highest seq indexed (`None`: nothing is).
    pub fn seq_range(&self) -> Result<Option<(u64, u64)>, IndexError> {
        // Two subqueries: SQLite answers a lone MIN or MAX of the rowid from the b-tree's
        // ends, but MIN and MAX in one SELECT scan the table (1 s at 10M rows).
        let r: (Option<i64>, Option<i64>) = self.sql(self.conn.query_row(
            "SELECT (SELECT MIN(seq) FROM events), (SELECT MAX(seq) FROM events)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        ))?;
        Ok(match r {
            (Some(a), Some(b)) => Some((a as u64, b as u64)),
            _ => None,
        })
    }

    /// Index what the ledger gained since the last sync.
    pub fn sync(&mut self) -> Result<SyncReport, IndexError> {
        let last_seq: u64 = self
            .meta("last_seq")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let last_id = self.meta("last_event_id")?;
        // Records retention removed (a segment of an interrupted removal may still be there).
        let removed = mcptrail_ledger::removed_through(&self.data_dir)?.map_or(0, |t| t.last_seq);
        let resume = match (last_seq, &last_id) {
            (0, _) | (_, None) => None,
            (_, Some(id)) => self.resume_point(last_seq, id)?,
        };
        let mut records = match resume {
            Some(r) => r,
            None => Records::Reader(LedgerReader::open(
                &self.data_dir,
                last_seq.max(removed + 1),
            )?),
        };
        let mut checked_anchor = last_seq == 0 || matches!(records, Records::Resumed { .. });
        let mut report = SyncReport::default();
        let mut batch = Batch::default();
        while let Some(rec) = records.next_record()? {
            let Ok(ev) = serde_json::from_slice::<Event>(&rec.line) else {
                report.skipped += 1;
                continue;
            };
            if ev.seq <= removed {
                continue;
            }
            if !checked_anchor {
                if ev.seq < last_seq {
                    continue;
                }
                checked_anchor = true;
                if ev.seq != last_seq || Some(&ev.event_id) != last_id.as_ref() {
                    // Not the ledger we indexed.
                    return self.rebuild();
                }
                continue;
            }
            batch.add(ev, rec);
            report.indexed += 1;
            if batch.len() as u64 >= SYNC_COMMIT_EVERY {
                self.commit(std::mem::take(&mut batch))?;
            }
        }
        if !checked_anchor {
            // The ledger is shorter than what we indexed: it is not the ledger we indexed.
            return self.rebuild();
        }
        self.commit(batch)?;
        Ok(report)
    }

    /// Where the last sync stopped, if its record is still where it was: the rest of that
    /// segment, then the segments after it.
    fn resume_point(&self, last_seq: u64, last_id: &str) -> Result<Option<Records>, IndexError> {
        let (Some(seg_name), Some(offset)) = (
            self.meta("last_segment")?,
            self.meta("last_offset")?
                .and_then(|o| o.parse::<u64>().ok()),
        ) else {
            return Ok(None);
        };
        let segments = mcptrail_ledger::list_segments(&self.data_dir.join(LEDGER_DIR))?;
        let Some(pos) = segments
            .iter()
            .position(|s| s.path.file_name().is_some_and(|n| n == seg_name.as_str()))
        else {
            return Ok(None);
        };
        let seg = &segments[pos];
        let Ok(mut file) = std::fs::File::open(&seg.path) else {
            return Ok(None);
        };
        if file.seek(SeekFrom::Start(offset)).is_err() {
            return Ok(None);
        }
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).is_err() || line.last() != Some(&b'\n') {
            return Ok(None);
        }
        line.pop();
        match serde_json::from_slice::<Event>(&line) {
            Ok(ev) if ev.seq == last_seq && ev.event_id == last_id => {}
            _ => return Ok(None),
        }
        let next = segments.get(pos + 1).map(|s| s.first_seq);
        Ok(Some(Records::Resumed {
            path: seg.path.clone(),
            reader,
            offset: offset + line.len() as u64 + 1,
            next,
            data_dir: self.data_dir.clone(),
        }))
    }

    /// Write one batch and move the cursor, in one transaction.
    fn commit(&mut self, batch: Batch) -> Result<(), IndexError> {
        let Some((seq, id, segment, offset)) = batch.last.clone() else {
            return Ok(());
        };
        let path = self.path.clone();
        let sql = |r: rusqlite::Result<usize>| {
            r.map_err(|source| IndexError::Sqlite {
                path: path.clone(),
                source,
            })
        };
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|source| IndexError::Sqlite {
                path: self.path.clone(),
                source,
            })?;
        {
            let prep = |q: &str| {
                tx.prepare_cached(q).map_err(|source| IndexError::Sqlite {
                    path: self.path.clone(),
                    source,
                })
            };
            let mut insert = prep(
                "INSERT OR IGNORE INTO events(seq, event_id, time, kind, session_id, agent_id, user, tool, method, status, labels, json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            let mut fts = prep("INSERT INTO events_fts(rowid, text) VALUES (?1, ?2)")?;
            for r in &batch.rows {
                let ev = &r.event;
                let added = sql(insert.execute(params![
                    ev.seq as i64,
                    ev.event_id,
                    ev.time,
                    ev.kind.as_str(),
                    ev.session_id,
                    ev.agent_id,
                    ev.user_identity.as_ref().map(|u| u.principal.as_str()),
                    ev.tool_invoked,
                    ev.method,
                    ev.response_summary.as_ref().map(|s| s.status.as_str()),
                    // `,pci,pii,`: a label matches as `%,pii,%`.
                    (!ev.labels.is_empty()).then(|| format!(",{},", ev.labels.join(","))),
                    String::from_utf8_lossy(&r.line),
                ]))?;
                if added == 1 {
                    let text = search_text(ev);
                    if !text.is_empty() {
                        sql(fts.execute(params![ev.seq as i64, text]))?;
                    }
                }
            }
            let mut kinds = prep(
                "INSERT INTO kind_counts(kind, n) VALUES (?1, ?2)
                 ON CONFLICT(kind) DO UPDATE SET n = n + excluded.n",
            )?;
            for (k, n) in &batch.kinds {
                sql(kinds.execute(params![k, *n as i64]))?;
            }
            let mut sessions = prep(
                "INSERT INTO sessions(session_id, first_time, last_time, events, agent_id, user, first_seq, last_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(session_id) DO UPDATE SET
                    first_time = min(first_time, excluded.first_time),
                    last_time = max(last_time, excluded.last_time),
                    events = events + excluded.events,
                    agent_id = CASE WHEN agent_id IS NULL OR excluded.agent_id > agent_id
                                    THEN coalesce(excluded.agent_id, agent_id) ELSE agent_id END,
                    user = CASE WHEN user IS NULL OR excluded.user > user
                                THEN coalesce(excluded.user, user) ELSE user END,
                    first_seq = min(first_seq, excluded.first_seq),
                    last_seq = max(last_seq, excluded.last_seq)",
            )?;
            let mut hours = prep(ADD_AGENT_HOUR)?;
            for ((agent, hour), t) in &batch.hours {
                sql(hours.execute(params![
                    agent,
                    hour,
                    t.events as i64,
                    t.calls as i64,
                    t.results as i64,
                    t.errors as i64,
                    t.bytes as i64
                ]))?;
            }
            for (id, s) in &batch.sessions {
                sql(sessions.execute(params![
                    id,
                    s.first_time,
                    s.last_time,
                    s.events as i64,
                    s.agent_id,
                    s.user,
                    s.first_seq as i64,
                    s.last_seq as i64
                ]))?;
            }
            let mut meta = prep("INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)")?;
            sql(meta.execute(params!["last_seq", seq.to_string()]))?;
            sql(meta.execute(params!["last_event_id", id]))?;
            let name = segment
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            sql(meta.execute(params!["last_segment", name]))?;
            sql(meta.execute(params!["last_offset", offset.to_string()]))?;
        }
        tx.commit().map_err(|source| IndexError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Events matching `filter`, oldest first.
    pub fn query(&self, f: &Filter) -> Result<Vec<Event>, IndexError> {
        let mut sql = String::from("SELECT json, seq FROM events WHERE 1=1");
        let mut args: Vec<String> = Vec::new();
        let mut add = |clause: &str, v: &Option<String>| {
            if let Some(v) = v {
                args.push(v.clone());
                sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
            }
        };
        add(" AND session_id LIKE ? || '%'", &f.session);
        add(" AND agent_id = ?", &f.agent);
        add(" AND tool = ?", &f.tool);
        add(" AND labels LIKE '%,' || ? || ',%'", &f.label);
        add(" AND method = ?", &f.method);
        add(" AND status = ?", &f.status);
        add(" AND time >= ?", &f.since);
        add(" AND time < ?", &f.until);
        match f.kind.as_deref() {
            Some(k) if k.ends_with('*') || k.ends_with('.') => {
                add(
                    " AND kind LIKE ? || '%'",
                    &Some(k.trim_end_matches('*').to_string()),
                );
            }
            k => add(" AND kind = ?", &k.map(String::from)),
        }
        if !f.users.is_empty() {
            let mut placeholders = Vec::new();
            for u in &f.users {
                args.push(u.clone());
                placeholders.push(format!("?{}", args.len()));
            }
            sql.push_str(&format!(" AND user IN ({})", placeholders.join(",")));
        }
        // With a limit, take the newest N and return them oldest first.
        let sql = match f.limit {
            Some(n) => format!(
                "SELECT json, seq FROM ({sql} ORDER BY seq DESC LIMIT {n}) ORDER BY seq ASC"
            ),
            None => format!("{sql} ORDER BY seq ASC"),
        };
        let mut stmt = self.sql(self.conn.prepare(&sql))?;
        let rows =
            self.sql(stmt.query_map(params_from_iter(args.iter()), |r| r.get::<_, String>(0)))?;
        let mut out = Vec::new();
        for row in rows {
            let json = self.sql(row)?;
            if let Ok(ev) = serde_json::from_str::<Event>(&json) {
                out.push(ev);
            }
        }
        Ok(out)
    }

    /// Full session ids matching a prefix (to resolve `--session 0193a…`).
    pub fn sessions_matching(&self, prefix: &str) -> Result<Vec<String>, IndexError> {
        let mut stmt = self.sql(self.conn.prepare(
            "SELECT DISTINCT session_id FROM events WHERE session_id LIKE ?1 || '%' ORDER BY session_id",
        ))?;
        let rows = self.sql(stmt.query_map([prefix], |r| r.get::<_, String>(0)))?;
        rows.map(|r| self.sql(r)).collect()
    }

    /// Number of indexed events.
    pub fn count(&self) -> Result<u64, IndexError> {
        self.sql(
            self.conn
                .query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0)),
        )
        .map(|n| n as u64)
    }
}

/// The records a sync reads: from a resume point, or through a ledger reader.
enum Records {
    /// The rest of the segment of the last indexed record, then the segments after it.
    Resumed {
        path: PathBuf,
        reader: BufReader<File>,
        offset: u64,
        next: Option<u64>,
        data_dir: PathBuf,
    },
    Reader(LedgerReader),
}

impl Records {
    fn next_record(&mut self) -> Result<Option<RawRecord>, IndexError> {
        loop {
            match self {
                Records::Reader(r) => return Ok(r.next_record()?),
                Records::Resumed {
                    path,
                    reader,
                    offset,
                    next,
                    data_dir,
                } => {
                    let mut line = Vec::new();
                    let n = reader.read_until(b'\n', &mut line).map_err(|source| {
                        IndexError::Ledger(LedgerError::Io {
                            path: path.clone(),
                            source,
                        })
                    })?;
                    // A complete line: the next record. End of file or an unterminated line
                    // (a write in progress): on to the next segment, as the ledger reader does.
                    if n > 0 && line.last() == Some(&b'\n') {
                        line.pop();
                        let rec = RawRecord {
                            line,
                            segment: path.clone(),
                            offset: *offset,
                            line_no: 0,
                        };
                        *offset += n as u64;
                        return Ok(Some(rec));
                    }
                    match *next {
                        None => return Ok(None),
                        Some(first) => {
                            *self = Records::Reader(LedgerReader::open(data_dir, first)?)
                        }
                    }
                }
            }
        }
    }
}

/// One record on its way into the index.
struct Row {
    event: Event,
    line: Vec<u8>,
}

/// What a session gained in a batch.
#[derive(Default)]
struct SessionAgg {
    first_time: String,
    last_time: String,
    events: u64,
    agent_id: Option<String>,
    user: Option<String>,
    first_seq: u64,
    last_seq: u64,
}

/// Records to write in one transaction, with their session and kind summaries.
#[derive(Default)]
struct Batch {
    rows: Vec<Row>,
    sessions: HashMap<String, SessionAgg>,
    kinds: HashMap<&'static str, u64>,
    /// Activity per (agent, clock hour).
    hours: HashMap<(String, String), Tally>,
    last: Option<(u64, String, PathBuf, u64)>,
}

impl Batch {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn add(&mut self, ev: Event, rec: RawRecord) {
        *self.kinds.entry(ev.kind.as_str()).or_default() += 1;
        if let (Some(agent), Some(hour)) = (&ev.agent_id, hour_of(&ev.time)) {
            self.hours
                .entry((agent.clone(), hour.to_string()))
                .or_default()
                .add(&ev.activity_facts());
        }
        if let Some(id) = &ev.session_id {
            let s = self
                .sessions
                .entry(id.clone())
                .or_insert_with(|| SessionAgg {
                    first_time: ev.time.clone(),
                    last_time: ev.time.clone(),
                    first_seq: ev.seq,
                    last_seq: ev.seq,
                    ..Default::default()
                });
            s.events += 1;
            if ev.time < s.first_time {
                s.first_time.clone_from(&ev.time);
            }
            if ev.time > s.last_time {
                s.last_time.clone_from(&ev.time);
            }
            s.first_seq = s.first_seq.min(ev.seq);
            s.last_seq = s.last_seq.max(ev.seq);
            if ev.agent_id > s.agent_id {
                s.agent_id.clone_from(&ev.agent_id);
            }
            let user = ev.user_identity.as_ref().map(|u| u.principal.clone());
            if user > s.user {
                s.user = user;
            }
        }
        self.last = Some((ev.seq, ev.event_id.clone(), rec.segment, rec.offset));
        self.rows.push(Row {
            event: ev,
            line: rec.line,
        });
    }
}

/// The text of a record that `q` searches: what an investigator reads in it — tool, method,
/// URIs, the string values of the (redacted) parameters, the (redacted) preview and error
/// message, the strings of `detail` (an alert's rule and summary) and the labels. Hashes,
/// ids and field names are left out: they are searched by their own filters.
pub fn search_text(ev: &Event) -> String {
    let mut out = String::new();
    let mut push = |s: &str| {
        if !s.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(s);
        }
    };
    for s in [
        ev.tool_invoked.as_deref(),
        ev.method.as_deref(),
        ev.resource_uri.as_deref(),
        ev.prompt_name.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        push(s);
    }
    fn strings(v: &serde_json::Value, push: &mut dyn FnMut(&str)) {
        match v {
            serde_json::Value::String(s) => push(s),
            serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, push)),
            serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, push)),
            _ => {}
        }
    }
    if let Some(p) = &ev.parameters_used {
        strings(p, &mut push);
    }
    if let Some(r) = &ev.response_summary {
        if let Some(p) = &r.preview {
            push(p);
        }
        if let Some(m) = &r.error_message {
            push(m);
        }
    }
    if let Some(d) = &ev.detail {
        strings(d, &mut push);
    }
    for l in &ev.labels {
        push(l);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcptrail_event::{EventKind, ResponseSummary, Status, UserIdentity};
    use mcptrail_ledger::{Ledger, LedgerConfig};

    fn cfg() -> LedgerConfig {
        LedgerConfig {
            fsync: false,
            ..LedgerConfig::default()
        }
    }

    fn call(session: &str, user: &str, tool: &str, preview: &str) -> Vec<Event> {
        let mut req = Event::new(EventKind::McpRequest);
        req.session_id = Some(session.into());
        req.agent_id = Some("agent-a".into());
        req.method = Some("tools/call".into());
        req.tool_invoked = Some(tool.into());
        req.parameters_used = Some(serde_json::json!({"path": "/srv/invoice-042117.pdf"}));
        req.user_identity = Some(UserIdentity {
            principal: user.into(),
            source: "test".into(),
            ..Default::default()
        });
        let mut resp = Event::new(EventKind::McpResponse);
        resp.session_id = Some(session.into());
        resp.method = Some("tools/call".into());
        resp.tool_invoked = Some(tool.into());
        resp.response_summary = Some(ResponseSummary {
            status: Status::Ok,
            is_error: false,
            error_code: None,
            error_message: None,
            size: 10,
            sha256: None,
            preview: Some(preview.into()),
            content_types: Vec::new(),
        });
        vec![req, resp]
    }

    fn seqs(p: &Page) -> Vec<u64> {
        p.events
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn sync_resumes_at_its_offset_and_keeps_summaries_and_words() {
        let dir = tempfile::tempdir().unwrap();
        // Tiny segments: the resume point moves across segment boundaries.
        let mut l = Ledger::open(
            dir.path(),
            LedgerConfig {
                segment_max_bytes: 2048,
                ..cfg()
            },
        )
        .unwrap();
        l.append(&mut call(
            "s-1",
            "alice",
            "read_file",
            "quarterly revenue report",
        ))
        .unwrap();
        let mut idx = Index::open(dir.path()).unwrap();
        assert_eq!(idx.sync().unwrap().indexed, 2);
        assert!(idx.meta("last_offset").unwrap().is_some());
        for i in 0..5 {
            l.append(&mut call(
                &format!("s-{}", i % 2 + 1),
                "bob",
                "search",
                "nothing here",
            ))
            .unwrap();
        }
        assert!(list_segments_len(dir.path()) > 1, "the ledger rotated");
        let r = idx.sync().unwrap();
        assert_eq!((r.indexed, r.rebuilt), (10, false));
        assert_eq!(idx.sync().unwrap().indexed, 0, "nothing twice");
        assert_eq!(idx.count().unwrap(), 12);
        // Sessions and counts are kept as the rows come.
        let sessions = idx.sessions(None, 10).unwrap();
        let s1 = sessions.iter().find(|s| s.session_id == "s-1").unwrap();
        assert_eq!((s1.events, s1.user.as_deref()), (8, Some("bob")));
        assert_eq!(sessions[0].last_seq, 12, "most recently active first");
        let agents = idx.agents(10).unwrap();
        assert_eq!(agents.len(), 1);
        assert_eq!(
            (
                agents[0].agent_id.as_str(),
                agents[0].sessions,
                agents[0].events
            ),
            ("agent-a", 2, 12)
        );
        let counts: HashMap<String, u64> = idx.counts_by_kind().unwrap().into_iter().collect();
        assert_eq!(counts["mcp.request"], 6);
        // Words of the preview and the parameters, the last one a prefix; not field names.
        let find = |q: &str| {
            seqs(
                &idx.search(&Search {
                    text: Some(q.into()),
                    limit: 50,
                    ..Default::default()
                })
                .unwrap(),
            )
        };
        assert_eq!(find("REVENUE report"), vec![2]);
        assert_eq!(find("revenue rep*"), vec![2], "a trailing * makes a prefix");
        assert!(find("revenue rep").is_empty(), "whole words without it");
        assert!(find("quarterly rep*").is_empty(), "adjacent words only");
        assert_eq!(find("invoice-0421*").len(), 6);
        assert_eq!(find("invoice-042117").len(), 6);
        assert!(find("preview").is_empty(), "field names are not text");
        assert!(find("revenue quarterly").is_empty(), "a phrase, in order");
        // A different ledger under the same index: rebuilt, not mixed.
        drop(l);
        std::fs::remove_dir_all(dir.path().join(LEDGER_DIR)).unwrap();
        let mut l = Ledger::open(dir.path(), cfg()).unwrap();
        l.append(&mut call("s-9", "carol", "x", "fresh")).unwrap();
        let r = idx.sync().unwrap();
        assert!(r.rebuilt);
        assert_eq!(idx.count().unwrap(), 2);
        assert_eq!(idx.sessions(None, 10).unwrap().len(), 1);
    }

    #[test]
    fn agent_hours_count_calls_results_failures_and_bytes_and_follow_a_purge() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(dir.path(), cfg()).unwrap();
        // agent-a: two calls at 09:xx (one failing), one at 10:xx; agent-b: one at 09:xx.
        let mut at = |agent: &str, time: &str, fail: bool, size: u64| {
            let mut evs = call("s-1", "alice", "read_file", "x");
            for e in &mut evs {
                e.agent_id = Some(agent.into());
                e.time = time.into();
            }
            let r = evs[1].response_summary.as_mut().unwrap();
            r.size = size;
            if fail {
                r.status = Status::Error;
            }
            l.append(&mut evs).unwrap();
        };
        at("agent-a", "2026-12-01T09:05:00.000000000Z", false, 100);
        at("agent-b", "2026-12-01T09:30:00.000000000Z", false, 7);
        at("agent-a", "2026-12-01T09:59:59.999999999Z", true, 20);
        at("agent-a", "2026-12-01T10:00:00.000000000Z", false, 5);
        let mut idx = Index::open(dir.path()).unwrap();
        idx.sync().unwrap();
        let hours = |idx: &Index, agent: &str| {
            idx.agent_hours(agent, "2026-12-01T00", "2026-12-02T00")
                .unwrap()
                .into_iter()
                .map(|h| (h.hour, h.events, h.calls, h.results, h.errors, h.bytes))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            hours(&idx, "agent-a"),
            vec![
                ("2026-12-01T09:00:00Z".to_string(), 4, 2, 2, 1, 120),
                ("2026-12-01T10:00:00Z".to_string(), 2, 1, 1, 0, 5),
            ]
        );
        assert_eq!(
            hours(&idx, "agent-b"),
            vec![("2026-12-01T09:00:00Z".to_string(), 2, 1, 1, 0, 7)]
        );
        // Hours that start in [since's hour, until).
        let n = |since: &str, until: &str| idx.agent_hours("agent-a", since, until).unwrap().len();
        assert_eq!(n("2026-12-01T10:15:00Z", "2026-12-01T11"), 1);
        assert_eq!(n("2026-12-01T08:00:00Z", "2026-12-01T10:00:00.000Z"), 1);
        assert_eq!(n("2026-12-01T08:00:00Z", "2026-12-01T10:00:00.5Z"), 2);
        assert_eq!(n("2026-12-01T09:59:00Z", "2026-12-01T10:30:00Z"), 2);
        // Retention removes the first call of agent-a: its hour is counted again from the rest.
        idx.purge_through(2).unwrap();
        assert_eq!(
            hours(&idx, "agent-a"),
            vec![
                ("2026-12-01T09:00:00Z".to_string(), 2, 1, 1, 1, 20),
                ("2026-12-01T10:00:00Z".to_string(), 2, 1, 1, 0, 5),
            ]
        );
        idx.purge_through(4).unwrap();
        assert!(hours(&idx, "agent-b").is_empty(), "an emptied hour goes");
    }

    fn list_segments_len(dir: &Path) -> usize {
        mcptrail_ledger::list_segments(&dir.join(LEDGER_DIR))
            .unwrap()
            .len()
    }

    #[test]
    fn search_paths_agree_and_purge_fixes_the_summaries() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(dir.path(), cfg()).unwrap();
        for i in 0..30u32 {
            let user = if i % 3 == 0 {
                "alice"
            } else {
                "[tok:user:abc]"
            };
            let tool = if i % 2 == 0 { "read_file" } else { "fetch" };
            l.append(&mut call(&format!("s-{}", i % 4), user, tool, "word"))
                .unwrap();
        }
        let mut gov = Event::new(EventKind::GovernanceRead);
        gov.detail = Some(serde_json::json!({"query": "q=word"}));
        l.append(&mut [gov]).unwrap();
        let mut idx = Index::open(dir.path()).unwrap();
        idx.sync().unwrap();
        let all: Vec<Value> = {
            let mut stmt = idx
                .conn
                .prepare("SELECT json FROM events ORDER BY seq DESC")
                .unwrap();
            stmt.query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(|j| serde_json::from_str(&j.unwrap()).unwrap())
                .collect()
        };
        // Every driving index gives what a plain filter over all rows gives, page by page.
        type Case = (Search, Box<dyn Fn(&Value) -> bool>);
        let cases: Vec<Case> = vec![
            (
                Search {
                    users: vec!["alice".into(), "[tok:user:abc]".into()],
                    ..Default::default()
                },
                Box::new(|e: &Value| e["user_identity"]["principal"].is_string()),
            ),
            (
                Search {
                    users: vec!["alice".into()],
                    since: Some(all[40]["time"].as_str().unwrap().into()),
                    ..Default::default()
                },
                Box::new(|e: &Value| {
                    e["user_identity"]["principal"] == "alice" && e["seq"].as_u64().unwrap() >= 21
                }),
            ),
            (
                Search {
                    tool: Some("fetch".into()),
                    ..Default::default()
                },
                Box::new(|e: &Value| e["tool_invoked"] == "fetch"),
            ),
            (
                Search {
                    session: Some("s-1".into()),
                    ..Default::default()
                },
                Box::new(|e: &Value| e["session_id"] == "s-1"),
            ),
            (
                Search {
                    kind: Some("mcp.*".into()),
                    text: Some("word".into()),
                    ..Default::default()
                },
                // The word is in the responses' previews only.
                Box::new(|e: &Value| e["kind"] == "mcp.response"),
            ),
            (
                Search {
                    text: Some("word".into()),
                    exclude_kind_prefix: Some("governance.".into()),
                    ..Default::default()
                },
                Box::new(|e: &Value| e["kind"] == "mcp.response"),
            ),
            (
                // No driving filter: the partial index of what is not governance.*.
                Search {
                    exclude_kind_prefix: Some("governance.".into()),
                    ..Default::default()
                },
                Box::new(|e: &Value| e["kind"] != "governance.read"),
            ),
            (
                Search {
                    text: Some("word".into()),
                    ..Default::default()
                },
                // The meta-audit of a search holds its words too.
                Box::new(|e: &Value| e["kind"] != "mcp.request"),
            ),
        ];
        for (mut s, pred) in cases {
            let want: Vec<u64> = all
                .iter()
                .filter(|e| pred(e))
                .map(|e| e["seq"].as_u64().unwrap())
                .collect();
            let mut got = Vec::new();
            s.limit = 7;
            loop {
                let p = idx.search(&s).unwrap();
                got.extend(seqs(&p));
                match p.next_before_seq {
                    Some(b) => s.before_seq = Some(b),
                    None => break,
                }
            }
            assert_eq!(got, want, "{s:?}");
        }
        // Purge the first 20 records: rows, words, sessions and counts follow.
        assert_eq!(idx.purge_through(20).unwrap(), 20);
        let p = idx
            .search(&Search {
                text: Some("word".into()),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(p.events.len(), 21, "20 responses and the governance read");
        let sessions = idx.sessions(None, 10).unwrap();
        assert_eq!(sessions.iter().map(|s| s.events).sum::<u64>(), 40);
        assert!(sessions
            .iter()
            .all(|s| s.first_time.as_str() >= all[40]["time"].as_str().unwrap()));
        let total: u64 = idx.counts_by_kind().unwrap().iter().map(|(_, n)| n).sum();
        assert_eq!(total, 41);
    }

    use serde_json::Value;
}
