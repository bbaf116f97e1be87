//! The query index: a SQLite database derived from the ledger, never the other way round.
//!
//! It is a ledger consumer like any other: it remembers the last `seq` (and that record's
//! `event_id`) it indexed and catches up from there on every [`Index::sync`]. If the ledger
//! no longer holds that record (a different ledger, or one restored from backup), the index
//! rebuilds itself. Deleting `index.sqlite` loses nothing: `mcptrail reindex` recreates it.

mod search;
mod timeline;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use mcptrail_event::Event;
use mcptrail_ledger::{LedgerError, LedgerReader};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

pub use search::{Page, Search, SessionSummary};
pub use timeline::render_timeline;

/// File name of the index inside the data directory.
pub const INDEX_FILE: &str = "index.sqlite";
const SCHEMA_VERSION: i64 = 2;

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
                 CREATE INDEX events_time ON events(time);
                 CREATE INDEX events_agent ON events(agent_id, time);
                 CREATE INDEX events_user ON events(user, time);
                 CREATE INDEX events_tool ON events(tool, time);
                 CREATE INDEX events_kind ON events(kind, time);",
            ))?;
            self.set_meta("schema_version", &SCHEMA_VERSION.to_string())?;
        }
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
            "DELETE FROM events; DELETE FROM meta WHERE key IN ('last_seq','last_event_id');",
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
        self.sql(self.conn.execute_batch("PRAGMA secure_delete=ON;"))?;
        let n = self.sql(
            self.conn
                .execute("DELETE FROM events WHERE seq <= ?1", [seq as i64]),
        )?;
        self.sql(
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())),
        )?;
        Ok(n as u64)
    }

    /// The lowest and highest seq indexed (`None`: nothing is).
    pub fn seq_range(&self) -> Result<Option<(u64, u64)>, IndexError> {
        let r: (Option<i64>, Option<i64>) = self.sql(self.conn.query_row(
            "SELECT MIN(seq), MAX(seq) FROM events",
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
        let mut reader = LedgerReader::open(&self.data_dir, last_seq.max(removed + 1))?;
        let mut report = SyncReport::default();
        let mut checked_anchor = last_seq == 0;
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|source| IndexError::Sqlite {
                path: self.path.clone(),
                source,
            })?;
        let mut new_last: Option<(u64, String)> = None;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO events(seq, event_id, time, kind, session_id, agent_id, user, tool, method, status, labels, json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(|source| IndexError::Sqlite { path: self.path.clone(), source })?;
            while let Some(rec) = reader.next_record()? {
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
                        drop(insert);
                        drop(tx);
                        return self.rebuild();
                    }
                    continue;
                }
                let json = String::from_utf8_lossy(&rec.line);
                insert
                    .execute(params![
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
                        json,
                    ])
                    .map_err(|source| IndexError::Sqlite {
                        path: self.path.clone(),
                        source,
                    })?;
                report.indexed += 1;
                new_last = Some((ev.seq, ev.event_id));
            }
            if !checked_anchor {
                // The ledger is shorter than what we indexed: it is not the ledger we indexed.
                drop(insert);
                drop(tx);
                return self.rebuild();
            }
        }
        if let Some((seq, id)) = new_last {
            self.sql(tx.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('last_seq', ?1)",
                [seq.to_string()],
            ))?;
            self.sql(tx.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('last_event_id', ?1)",
                [id],
            ))?;
        }
        self.sql(tx.commit())?;
        Ok(report)
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
