//! What redaction costs, each figure beside a baseline measured in the same run:
//!
//! 1. **Throughput** over a deterministic corpus of realistic MCP payloads — `tools/call`
//!    arguments (paths, searches, SQL, e-mails, code, commands, URLs) and tool results (file
//!    contents, directory listings, JSON records as text and as `structuredContent`, logs, web
//!    search results, documents in several languages with emoji), generated once from a seeded
//!    PRNG; about 1.5 % of payloads carry one planted secret or personal datum, and the e-mail
//!    tools carry their recipients. `MCPTRAIL_BENCH_REDACT_MB` MB of JSON (default 100, all
//!    distinct payloads, no repetition). Each case makes one pass over the corpus per iteration;
//!    a case that would need more than 1.5 s per pass runs over the leading payloads that fit
//!    (payloads are drawn independently, so a prefix has the same mix), and the summary says
//!    how much, so that the whole run keeps to about a minute and a half. Cases:
//!    - baselines: `memchr` counting `"` over the JSON bytes, and one simple e-mail-ish
//!      `regex::bytes::Regex` over the same bytes; `serde_json::to_vec` of every payload (what
//!      the tap pays anyway to store an event);
//!    - `Redactor::redact_value` over every payload parsed beforehand (each pass works on a
//!      fresh copy, copied in chunks outside the timed part), default configuration;
//!    - the same with every detector disabled (walk, key names and nested JSON alone);
//!    - `TextDetectors::scan` over every string value of the corpus.
//!
//!    MB/s are of corpus JSON bytes (10^6 bytes) for every case, so they compare directly.
//! 2. **Latency** per typical `tools/call` event (≈ 2 KB of arguments + result preview, with
//!    the who/where context the tap adds): `Redactor::redact_event` on a copy made outside
//!    the timed part (`iter_batched`), without and with one e-mail address in the preview,
//!    against serialising the same event with `serde_json` (the step that follows it); and
//!    with every detector off (the walk, key names and the user pseudonym alone).
//!
//! `cargo bench -p mcptrail-redact --bench redact` — criterion's figures, then a summary with
//! the ratios and the targets (≥ 300 MB/s on one core; ≤ 10 µs added per 2 KB call).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use mcptrail_event::{
    Event, EventKind, PeerInfo, ProcessInfo, ResponseSummary, ServerInfo, Status, UserIdentity,
};
use mcptrail_redact::{Detector, RedactConfig, Redactor, TextDetectors, TokenKey};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Deterministic corpus
// ---------------------------------------------------------------------------------------------

/// SplitMix64: small, fast, good enough for test data, and the same on every machine.
#[path = "../tests/support/splitmix.rs"]
mod splitmix;
use splitmix::Rng;

/// This file's helpers on top of `next`/`below`/`range`.
impl Rng {
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
    fn chars(&mut self, n: usize, alphabet: &[u8]) -> String {
        (0..n)
            .map(|_| alphabet[self.below(alphabet.len())] as char)
            .collect()
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "a", "of", "to", "and", "in", "is", "for", "on", "with", "that", "this", "by", "from",
    "as", "be", "are", "it", "at", "or", "not", "we", "all", "can", "will", "when", "after",
    "before", "each", "only", "new", "old", "first", "last", "next", "file", "files", "report",
    "project", "customer", "order", "invoice", "server", "client", "request", "response",
    "error", "warning", "build", "test", "tests", "release", "version", "update", "change",
    "changes", "config", "settings", "value", "values", "record", "records", "table", "query",
    "index", "cache", "memory", "disk", "network", "timeout", "retry", "queue", "worker",
    "thread", "process", "service", "module", "function", "method", "struct", "field", "type",
    "schema", "event", "events", "ledger", "audit", "agent", "tool", "tools", "result",
    "results", "meeting", "team", "quarter", "revenue", "growth", "budget", "plan", "draft",
    "review", "merge", "branch", "commit", "issue", "ticket", "deploy", "rollback", "metric",
    "latency", "throughput", "user", "users", "account", "payment", "shipping", "address",
    "delivery", "product", "catalog", "price", "discount", "weekly", "summary", "notes",
    "migration", "database", "backup", "restore", "snapshot", "policy", "access", "owner",
    "upstream", "downstream", "pipeline", "staging", "production", "fixed", "added", "removed",
    "improved", "slow", "fast", "large", "small", "pending", "done", "open", "closed",
];

#[rustfmt::skip]
const FIRST: &[&str] = &[
    "Alice", "Bob", "José", "Zoë", "François", "Łukasz", "Søren", "Ingrid", "Mateo", "Aïcha",
    "Björn", "Chloé", "Dmitri", "Noémie", "Renée", "Jürgen", "Priya", "Wei", "Yūki", "Ana",
    "Émile", "Małgorzata", "Nguyễn", "Oğuz",
];
#[rustfmt::skip]
const LAST: &[&str] = &[
    "García", "Müller", "Nowak", "Dupont", "Østergaard", "Smith", "Rossi", "Kowalski",
    "Sánchez", "Johansson", "Tanaka", "Dubois", "Fernández", "Schäfer", "Lefèvre", "Çelik",
    "Ångström", "Brontë", "Nakamura", "O'Neil",
];
#[rustfmt::skip]
const CITIES: &[&str] = &[
    "Zürich", "São Paulo", "Kraków", "Malmö", "Montréal", "Berlin", "Lyon", "Göteborg",
    "Ciudad de México", "東京", "Reykjavík", "Paris", "Łódź", "İstanbul",
];
const I18N: &[&str] = &[
    "Le café est prêt, merci à toute l'équipe.",
    "Größere Änderungen müssen vorher überprüft werden.",
    "El niño comió una manzana en el jardín de su abuela.",
    "会議は明日の午前中に始まります。",
    "Проверка завершена успешно, ошибок не найдено.",
    "Déjà vu — naïve façade, coöperate, résumé.",
    "これはテストです 🚀",
    "Ça marche très bien ✅",
    "Zażółć gęślą jaźń.",
    "Ελέγξτε τα αρχεία καταγραφής πριν από την κυκλοφορία.",
    "Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "请在周五之前提交季度报告。",
    "Vi ses på fredag i Malmö 🎉",
];
#[rustfmt::skip]
const EMOJI: &[&str] = &["🚀", "✅", "🔥", "😀", "👍", "📦", "⚠️", "🎉", "🐛", "✨", "❤️", "🙏"];
const USERS: &[&str] = &["alice", "bob", "jgarcia", "zoe", "lukasz", "dev"];
#[rustfmt::skip]
const EXTS: &[&str] = &["rs", "py", "ts", "md", "toml", "json", "go", "tsx", "yaml", "txt"];
#[rustfmt::skip]
const DOMAINS: &[&str] = &["example.com", "example.org", "mail.example.net", "corp.example"];
#[rustfmt::skip]
const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR", "TRACE"];

/// Lines of code; `§w` an identifier, `§W` a type name, `§n` a number, `§s` a phrase.
const CODE: &[&str] = &[
    "fn §w(&self, §w: &str) -> Result<§W, Error> {",
    "    let §w = self.§w.get(§n).ok_or(Error::NotFound)?;",
    "    for (i, §w) in §w.iter().enumerate() {",
    "        if §w.len() > §n { return Err(Error::TooLong(§w.len())); }",
    "    }",
    "}",
    "",
    "#[derive(Debug, Clone, PartialEq, Eq)]",
    "pub struct §W { pub §w: u64, pub §w: String, §w: Vec<§W> }",
    "// §s",
    "    /// §s",
    "import { §W, §w } from './§w';",
    "const §w = await fetch(`${BASE_URL}/api/§w?limit=§n`);",
    "export function §w(§w: string): number { return §w.length * §n; }",
    "def §w(self, §w, §w=None):",
    "    \"\"\"§s\"\"\"",
    "    return [x for x in §w if x.§w > §n]",
    "    logger.info(\"§s: %s\", §w)",
    "class §W(BaseModel):",
    "    §w: Optional[str] = None",
    "    assert_eq!(§w(§n), §n);",
    "    println!(\"{} §s\", §w);",
    "    let mut §w = Vec::with_capacity(§n);",
    "    match §w { Some(x) => x, None => return Ok(()) }",
    "if (§w === null) { throw new Error('§s'); }",
    "    }).catch((err) => console.error('§w failed', err));",
    "    §w = §w.map(|§w| §w * §n).unwrap_or_default();",
    "impl §W for §W {",
    "    #[test]",
    "    fn §w_§w() {",
];

/// The corpus generator; `pending` is a planted secret still to place in this payload.
struct Gen {
    rng: Rng,
    pending: bool,
    planted: usize,
}

impl Gen {
    fn word(&mut self) -> &'static str {
        self.rng.pick(WORDS)
    }
    fn ident(&mut self) -> String {
        let (a, b) = (self.word(), self.word());
        format!("{a}_{b}")
    }
    fn type_name(&mut self) -> String {
        let mut s = String::new();
        for _ in 0..self.rng.range(1, 2) {
            let w = self.word();
            let mut c = w.chars();
            if let Some(f) = c.next() {
                s.extend(f.to_uppercase());
                s.push_str(c.as_str());
            }
        }
        s
    }
    fn name(&mut self) -> String {
        format!("{} {}", self.rng.pick(FIRST), self.rng.pick(LAST))
    }
    fn phrase(&mut self, lo: usize, hi: usize) -> String {
        let n = self.rng.range(lo, hi);
        let mut s = String::new();
        for i in 0..n {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(self.word());
        }
        s
    }

    /// A secret or personal datum of one of the built-in kinds.
    fn secret(&mut self) -> String {
        let r = &mut self.rng;
        match r.below(14) {
            0 => format!(
                "{}.{}{}@{}",
                r.pick(&["maria", "john", "li", "kofi", "ines"]),
                r.pick(&["lopez", "smith", "wang", "mensah", "berg"]),
                r.below(100),
                r.pick(DOMAINS)
            ),
            1 => r
                .pick(&[
                    "4111 1111 1111 1111",
                    "5555555555554444",
                    "378282246310005",
                    "4012-8888-8888-1881",
                ])
                .to_string(),
            2 => format!("AKIA{}", r.chars(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
            3 => format!("ghp_{}", r.chars(36, ALNUM)),
            4 => format!(
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{}.{}",
                r.chars(40, B64URL),
                r.chars(43, B64URL)
            ),
            5 => format!("Authorization: Bearer {}", r.chars(40, ALNUM)),
            6 => r
                .pick(&["+44 20 7946 0958", "+1 415 555 0132", "+49 30 901820"])
                .to_string(),
            7 => format!(
                "{}-{:02}-{:04}",
                r.range(100, 665),
                r.range(1, 99),
                r.range(1, 9999)
            ),
            8 => r
                .pick(&["DE89 3704 0044 0532 0130 00", "GB82 WEST 1234 5698 7654 32"])
                .to_string(),
            9 => format!("DB_PASSWORD={}", r.chars(16, ALNUM)),
            10 => format!(
                "postgres://app:{}@db.internal:5432/prod",
                r.chars(14, ALNUM)
            ),
            11 => format!("sk-proj-{}", r.chars(48, ALNUM)),
            12 => format!("10.{}.{}.{}", r.below(256), r.below(256), r.range(1, 254)),
            _ => format!("xoxb-{}-{}", r.range(100_000, 999_999), r.chars(24, ALNUM)),
        }
    }

    /// Place the pending secret in this text unit, sometimes.
    fn plant(&mut self, s: &mut String) {
        if self.pending && self.rng.chance(0.25) {
            self.pending = false;
            self.planted += 1;
            let secret = self.secret();
            s.push_str(" (see ");
            s.push_str(&secret);
            s.push(')');
        }
    }

    fn sentence(&mut self) -> String {
        let mut s = if self.rng.chance(0.12) {
            self.rng.pick(I18N).to_string()
        } else {
            let mut s = self.phrase(5, 16);
            if self.rng.chance(0.15) {
                let n = self.name();
                s.push_str(" with ");
                s.push_str(&n);
            }
            if let Some(f) = s.get_mut(0..1) {
                f.make_ascii_uppercase();
            }
            s.push('.');
            s
        };
        if self.rng.chance(0.04) {
            s.push(' ');
            s.push_str(self.rng.pick(EMOJI));
        }
        self.plant(&mut s);
        s
    }

    fn prose(&mut self, bytes: usize) -> String {
        let mut s = String::new();
        while s.len() < bytes {
            for _ in 0..self.rng.range(2, 5) {
                s.push_str(&self.sentence());
                s.push(' ');
            }
            s.pop();
            s.push_str("\n\n");
        }
        s
    }

    fn path(&mut self) -> String {
        let user = self.rng.pick(USERS);
        let (p, d) = (self.word(), self.word());
        let f = self.ident();
        let ext = self.rng.pick(EXTS);
        format!("/home/{user}/projects/{p}/{d}/{f}.{ext}")
    }

    fn code(&mut self, bytes: usize) -> String {
        let mut s = String::new();
        while s.len() < bytes {
            let tpl = self.rng.pick(CODE);
            let mut line = String::with_capacity(tpl.len() + 32);
            let mut it = tpl.chars();
            while let Some(c) = it.next() {
                if c != '§' {
                    line.push(c);
                    continue;
                }
                match it.next() {
                    Some('w') => line.push_str(&self.ident()),
                    Some('W') => line.push_str(&self.type_name()),
                    Some('n') => line.push_str(&self.rng.below(10_000).to_string()),
                    Some('s') => {
                        let p = if self.rng.chance(0.08) {
                            self.rng.pick(I18N).to_string()
                        } else {
                            self.phrase(3, 9)
                        };
                        line.push_str(&p);
                    }
                    _ => {}
                }
            }
            if line.starts_with("//") || line.trim_start().starts_with("///") {
                self.plant(&mut line);
            }
            s.push_str(&line);
            s.push('\n');
        }
        s
    }

    fn sql(&mut self) -> String {
        let (t1, t2) = (self.word(), self.word());
        let mut s = format!(
            "SELECT {t1}.id, {t1}.{}, {t2}.{}, {t2}.created_at\nFROM {t1}s {t1}\nJOIN {t2}s {t2} ON {t2}.{t1}_id = {t1}.id\nWHERE {t2}.created_at >= '2026-{:02}-01'",
            self.ident(),
            self.ident(),
            self.rng.range(1, 12)
        );
        for _ in 0..self.rng.range(0, 6) {
            let w = self.ident();
            let v = self.word();
            s.push_str(&format!("\n  AND {t1}.{w} = '{v}'"));
        }
        let mut tail = format!(
            "\nORDER BY {t2}.created_at DESC\nLIMIT {};",
            self.rng.range(10, 500)
        );
        self.plant(&mut tail);
        s.push_str(&tail);
        s
    }

    fn log_line(&mut self) -> String {
        let lvl = self.rng.pick(LEVELS);
        let module = self.ident();
        let mut s = format!(
            "2026-11-{:02}T{:02}:{:02}:{:02}.{:03}Z {lvl:<5} {}::{module}: {} request_id=0193a0f0-{:04x}-7000-8000-{:012x} latency_ms={} status={}",
            self.rng.range(1, 28),
            self.rng.below(24),
            self.rng.below(60),
            self.rng.below(60),
            self.rng.below(1000),
            self.word(),
            self.phrase(3, 10),
            self.rng.below(0x10000),
            self.rng.next() & 0xffff_ffff_ffff,
            self.rng.below(2000),
            self.rng.pick(&["200", "200", "200", "201", "404", "500"])
        );
        if self.rng.chance(0.03) {
            s.push_str(" msg=\"");
            s.push_str(self.rng.pick(I18N));
            s.push('"');
        }
        self.plant(&mut s);
        s
    }

    fn record(&mut self, id: usize) -> Value {
        let mut notes = if self.rng.chance(0.3) {
            self.sentence()
        } else {
            String::new()
        };
        self.plant(&mut notes);
        let tags: Vec<&str> = (0..self.rng.range(0, 4)).map(|_| self.word()).collect();
        json!({
            "id": id,
            "name": self.name(),
            "city": self.rng.pick(CITIES),
            "status": self.rng.pick(&["active", "pending", "closed", "suspended"]),
            "created_at": format!("2026-{:02}-{:02}T{:02}:{:02}:00Z", self.rng.range(1, 12), self.rng.range(1, 28), self.rng.below(24), self.rng.below(60)),
            "ts": 1_764_000_000_000u64 + self.rng.below(100_000_000) as u64,
            "score": (self.rng.below(10_000) as f64) / 100.0,
            "tags": tags,
            "notes": notes,
        })
    }

    fn text_result(text: String) -> Value {
        json!({"content": [{"type": "text", "text": text}], "isError": false})
    }

    /// One payload: the tool and the value the tap would hand to the redactor.
    fn payload(&mut self) -> (&'static str, Value) {
        self.pending = self.rng.chance(0.015);
        let (tool, mut v) = match self.rng.below(100) {
            // ---- tools/call arguments ----
            0..=9 => ("read_file", json!({"path": self.path()})),
            10..=17 => {
                let q = self.phrase(2, 7);
                let dir = self.path();
                let include = [
                    format!("*.{}", self.rng.pick(EXTS)),
                    format!("*.{}", self.rng.pick(EXTS)),
                ];
                let max_results = self.rng.range(10, 200);
                (
                    "search_files",
                    json!({"query": q, "path": dir, "include": include, "max_results": max_results, "case_sensitive": false}),
                )
            }
            18..=23 => {
                let q = self.sql();
                (
                    "query",
                    json!({"database": "analytics", "sql": q, "timeout_ms": 30000}),
                )
            }
            24..=26 => {
                let to = format!("{}.{}@{}", self.word(), self.word(), self.rng.pick(DOMAINS));
                let subject = self.phrase(3, 8);
                let n = self.rng.range(400, 3000);
                let mut body = format!("Hi {},\n\n", self.rng.pick(FIRST));
                body.push_str(&self.prose(n));
                body.push_str(&format!("\n\nBest regards,\n{}\n", self.name()));
                (
                    "send_email",
                    json!({"to": [to], "cc": [], "subject": subject, "body": body}),
                )
            }
            27..=30 => {
                let n = self.rng.range(500, 8000);
                let content = self.code(n);
                (
                    "write_file",
                    json!({"path": self.path(), "content": content}),
                )
            }
            31..=36 => {
                let cmd = format!(
                    "cargo test -p {} -- {} --nocapture",
                    self.ident(),
                    self.ident()
                );
                let cwd = self.path();
                (
                    "run_command",
                    json!({"command": cmd, "cwd": cwd, "timeout_ms": 60000, "env": {"RUST_LOG": "info"}}),
                )
            }
            37..=41 => {
                let url = format!(
                    "https://api.{}.com/v1/{}/{}?page={}&per_page=50",
                    self.word(),
                    self.word(),
                    self.ident(),
                    self.rng.range(1, 20)
                );
                (
                    "fetch",
                    json!({"url": url, "method": "GET", "headers": {"Accept": "application/json", "User-Agent": "mcp-fetch/1.2"}}),
                )
            }
            // ---- tool results ----
            42..=55 => {
                let n = self.rng.range(1000, 16000);
                ("read_file", Self::text_result(self.code(n)))
            }
            56..=63 => {
                let mut s = String::new();
                for _ in 0..self.rng.range(10, 150) {
                    let line = match self.rng.below(10) {
                        0..=2 => format!("[DIR] {}", self.ident()),
                        3 => format!(
                            "[FILE] {}_{}.pdf ({} bytes)",
                            self.rng
                                .pick(&["Résumé", "Übersicht", "写真", "Ångström", "niño"]),
                            self.rng.below(100),
                            self.rng.below(1_000_000)
                        ),
                        _ => format!(
                            "[FILE] {}.{} ({} bytes)",
                            self.ident(),
                            self.rng.pick(EXTS),
                            self.rng.below(1_000_000)
                        ),
                    };
                    s.push_str(&line);
                    s.push('\n');
                }
                self.plant(&mut s);
                ("list_directory", Self::text_result(s))
            }
            64..=75 => {
                let n = self.rng.range(3, 40);
                let recs: Vec<Value> = (0..n).map(|i| self.record(i)).collect();
                let text = if self.rng.chance(0.5) {
                    serde_json::to_string_pretty(&recs).unwrap()
                } else {
                    serde_json::to_string(&recs).unwrap()
                };
                let mut v = Self::text_result(text);
                if self.rng.chance(0.4) {
                    v["structuredContent"] = json!({ "items": recs });
                }
                ("query", v)
            }
            76..=85 => {
                let mut s = String::new();
                for _ in 0..self.rng.range(15, 150) {
                    s.push_str(&self.log_line());
                    s.push('\n');
                }
                ("read_logs", Self::text_result(s))
            }
            86..=91 => {
                let mut s = String::new();
                for i in 1..=self.rng.range(5, 10) {
                    let title = self.phrase(3, 8);
                    let url = format!(
                        "https://www.{}.com/{}/{}-{}",
                        self.word(),
                        self.word(),
                        self.word(),
                        self.word()
                    );
                    let snippet = self.prose(120);
                    s.push_str(&format!("{i}. {title}\n   {url}\n   {}\n", snippet.trim()));
                }
                ("web_search", Self::text_result(s))
            }
            _ => {
                let mut s = format!("# {} — {}\n\n", self.phrase(2, 5), self.rng.pick(CITIES));
                let n = self.rng.range(500, 6000);
                s.push_str(&self.prose(n));
                ("read_document", Self::text_result(s))
            }
        };
        if self.pending {
            // Nothing in the payload took it: a member of its own.
            let mut s = self.phrase(2, 5);
            while self.pending {
                self.plant(&mut s);
            }
            if let Some(o) = v.as_object_mut() {
                o.insert("note".into(), Value::String(s));
            }
        }
        (tool, v)
    }
}

struct Payload {
    tool: &'static str,
    bytes: Range<usize>,
    value: Value,
}

struct Corpus {
    /// Every payload's JSON, one per line.
    json: Vec<u8>,
    payloads: Vec<Payload>,
    planted: usize,
}

fn corpus(target_bytes: usize) -> Corpus {
    let mut g = Gen {
        rng: Rng::new(0x6d63_7074_7261_696c), // "mcptrail"
        pending: false,
        planted: 0,
    };
    let mut json = Vec::with_capacity(target_bytes + (1 << 20));
    let mut spans = Vec::new();
    while json.len() < target_bytes {
        let (tool, v) = g.payload();
        let start = json.len();
        serde_json::to_writer(&mut json, &v).unwrap();
        spans.push((tool, start..json.len()));
        json.push(b'\n');
    }
    // Parsed beforehand, from the bytes, as the tap would have them.
    let payloads = spans
        .into_iter()
        .map(|(tool, bytes)| Payload {
            tool,
            value: serde_json::from_slice(&json[bytes.clone()]).unwrap(),
            bytes,
        })
        .collect();
    Corpus {
        json,
        payloads,
        planted: g.planted,
    }
}

fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// A typical tools/call event
// ---------------------------------------------------------------------------------------------

/// A `tools/call` event as the tap hands it to the redactor: ≈ 2 KB of arguments and result
/// preview, and the who/where context every event carries.
fn call_event(with_pii: bool) -> Event {
    let mut e = Event::new(EventKind::McpResponse);
    e.agent_id = Some("claude-desktop".into());
    e.session_id = Some("0193a0f0-0000-7000-8000-000000000001".into());
    e.method = Some("tools/call".into());
    e.tool_invoked = Some("search_files".into());
    e.request_id = Some(json!(42));
    e.parameters_used = Some(json!({
        "path": "/home/alice/projects/mcptrail",
        "pattern": "fn redact_(event|value|text)",
        "include": ["*.rs", "*.toml", "*.md"],
        "exclude": ["target/**", "node_modules/**", ".git/**"],
        "context_lines": 2,
        "max_results": 50,
        "case_sensitive": false,
        "follow_symlinks": false,
        "note": "Looking for every place the tap redacts an event before it is serialised, \
                 so we can measure what redaction adds per call. Zoë asked for the list \
                 before Friday's review in Zürich — merci ✅",
        "options": {"regex": true, "whole_word": false, "max_file_size": 1048576},
    }));
    let mut preview = String::new();
    let hits = [
        ("crates/mcptrail-redact/src/walk.rs", 112, "pub fn redact_event(&self, e: &mut Event) {"),
        ("crates/mcptrail-redact/src/walk.rs", 186, "pub fn redact_value(&self, v: &mut Value, path: &str, tool: Option<&str>)"),
        ("crates/mcptrail-redact/src/walk.rs", 203, "pub fn redact_text(&self, text: &str, path: &str) -> (String, Vec<Redaction>) {"),
        ("crates/mcptrail-tap/src/writer.rs", 108, "r.redact_event(&mut e);"),
        ("crates/mcptrail-tap/src/recorder.rs", 544, "let mut summary = summarise_response(result, error, line, self.cfg.preview_scan_chars());"),
        ("crates/mcptrail/src/main.rs", 377, "// Redact before anything is written: café-proof, emoji-proof 🚀"),
        ("crates/mcptrail-redact/src/lib.rs", 8, "//! Every tap runs it before an event is serialised, so nothing unredacted reaches the disk."),
        ("docs/redaction.md", 41, "The redactor records the rule, the JSON path and the action in `redactions`, never the value."),
        ("docs/redaction.md", 57, "Beispiel: Größe der Vorschau (preview_chars) — 200 Zeichen."),
        ("crates/mcptrail-redact/benches/redact.rs", 12, "//! `Redactor::redact_value` over every payload parsed beforehand"),
        ("README.md", 93, "mcptrail keeps secrets and personal data out of the audit record without switching it off."),
        ("CHANGELOG.md", 14, "- redact: typed detectors (cards, IBANs, e-mail, tokens), key-name rules, custom rules"),
    ];
    for (file, line, text) in hits {
        preview.push_str(&format!("{file}:{line}: {text}\n"));
    }
    if with_pii {
        preview.push_str("docs/redaction.md:88: Questions to maria.lopez@example.com, please.\n");
    }
    e.response_summary = Some(ResponseSummary {
        status: Status::Ok,
        is_error: false,
        error_code: None,
        error_message: None,
        size: preview.len() as u64,
        sha256: Some("9f2c".repeat(16)),
        preview: Some(preview),
        content_types: vec!["text".into()],
    });
    e.duration_ms = Some(3.5);
    e.user_identity = Some(UserIdentity {
        principal: "alice".into(),
        source: "os".into(),
        os_user: Some("alice".into()),
        os_uid: Some(1000),
        claims: None,
    });
    e.client = Some(PeerInfo {
        name: "claude-desktop".into(),
        version: Some("0.14.2".into()),
    });
    e.host = Some("build-host-17".into());
    e.process = Some(ProcessInfo {
        tap_pid: 4581,
        server_pid: Some(4584),
        tap_version: "0.1.0".into(),
    });
    e.server = Some(ServerInfo {
        name: Some("filesystem".into()),
        version: Some("2026.8.31".into()),
        transport: "stdio".into(),
        command: vec![
            "npx".into(),
            "-y".into(),
            "@modelcontextprotocol/server-filesystem".into(),
            "/home/alice/projects".into(),
        ],
        url: None,
    });
    e.request_event_id = Some("0193a0f0-0000-7000-8000-000000000002".into());
    e.protocol_version = Some("2025-11-25".into());
    e
}

// ---------------------------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------------------------

const GROUP_TP: &str = "redact_throughput";
const GROUP_LAT: &str = "redact_event_2kb";

fn redactor(disable_all: bool) -> Redactor {
    let cfg = RedactConfig {
        disable: if disable_all {
            Detector::ALL.iter().map(|d| d.name().to_string()).collect()
        } else {
            Vec::new()
        },
        ..RedactConfig::default()
    };
    Redactor::new(&cfg, TokenKey::from_bytes([7; 32])).unwrap()
}

/// `redact_value` over `payloads`, `iters` times; each pass works on fresh copies made outside
/// the timed part, a chunk at a time.
fn redact_corpus(r: &Redactor, payloads: &[Payload], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        for chunk in payloads.chunks(512) {
            let mut copies: Vec<Value> = chunk.iter().map(|p| p.value.clone()).collect();
            let t = Instant::now();
            for (v, p) in copies.iter_mut().zip(chunk) {
                black_box(r.redact_value(v, "/parameters_used", Some(p.tool)));
            }
            total += t.elapsed();
            drop(black_box(copies));
        }
    }
    total
}

/// How many leading payloads a case can take so that one pass stays within `budget`: all of
/// them when it is fast enough, else as many as a probe of ~0.3 s of the case suggests. Every
/// payload is drawn independently, so a prefix has the corpus's mix.
fn payloads_within(budget: Duration, payloads: &[Payload], mut run: impl FnMut(&Payload)) -> usize {
    let t = Instant::now();
    let (mut n, mut bytes) = (0, 0);
    while n < payloads.len() && t.elapsed() < Duration::from_millis(300) {
        run(&payloads[n]);
        bytes += payloads[n].bytes.len();
        n += 1;
    }
    let rate = bytes as f64 / t.elapsed().as_secs_f64();
    let want = rate * budget.as_secs_f64();
    let (mut k, mut acc) = (0, 0.0);
    while k < payloads.len() && acc < want {
        acc += payloads[k].bytes.len() as f64;
        k += 1;
    }
    k.max(1)
}

/// The JSON bytes of the first `n` payloads.
fn bytes_of(payloads: &[Payload]) -> usize {
    payloads.iter().map(|p| p.bytes.len()).sum()
}

/// What each throughput case ran over: (payloads, JSON bytes).
type Extent = BTreeMap<&'static str, (usize, usize)>;

fn throughput(c: &mut Criterion, corpus: &Corpus, quick: bool) -> Extent {
    let all = &corpus.payloads[..];
    let full = redactor(false);
    let walk_only = redactor(true);
    let text = TextDetectors::new(&[]);
    let email =
        regex::bytes::Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}").unwrap();

    // A slow case runs over a prefix of the corpus (see `payloads_within`), so that the run
    // keeps to a few minutes whatever the redactor's speed; the summary says how much.
    let budget = Duration::from_millis(if quick { 50 } else { 1500 });
    let n_redact = payloads_within(budget, all, |p| {
        black_box(full.redact_value(&mut p.value.clone(), "/parameters_used", Some(p.tool)));
    });
    let n_scan = payloads_within(budget, all, |p| {
        let mut s = Vec::new();
        strings(&p.value, &mut s);
        black_box(s.iter().map(|s| text.scan(s).len()).sum::<usize>());
    });
    let n_off = payloads_within(budget, all, |p| {
        black_box(walk_only.redact_value(&mut p.value.clone(), "/parameters_used", Some(p.tool)));
    });
    let mut scan_strings = Vec::new();
    for p in &all[..n_scan] {
        strings(&p.value, &mut scan_strings);
    }
    let string_bytes: usize = scan_strings.iter().map(|s| s.len()).sum();
    let mut extent = Extent::new();
    for (id, n) in [
        ("baseline_memchr_quote", all.len()),
        ("baseline_regex_email", all.len()),
        ("baseline_serde_json_to_vec", all.len()),
        ("text_detectors_scan", n_scan),
        ("redact_value", n_redact),
        ("redact_value_detectors_off", n_off),
    ] {
        extent.insert(id, (n, bytes_of(&all[..n])));
    }
    let tp = |id: &str| Throughput::BytesDecimal(extent[id].1 as u64);

    let mut g = c.benchmark_group(GROUP_TP);
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(if quick { 10 } else { 500 }));
    g.measurement_time(Duration::from_secs(if quick { 1 } else { 4 }));

    g.throughput(tp("baseline_memchr_quote"));
    g.bench_function("baseline_memchr_quote", |b| {
        b.iter(|| memchr::memchr_iter(b'"', black_box(&corpus.json)).count())
    });
    g.throughput(tp("baseline_regex_email"));
    g.bench_function("baseline_regex_email", |b| {
        b.iter(|| email.find_iter(black_box(&corpus.json)).count())
    });
    g.throughput(tp("baseline_serde_json_to_vec"));
    g.bench_function("baseline_serde_json_to_vec", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            let mut n = 0;
            for p in all {
                out.clear();
                serde_json::to_writer(&mut out, &p.value).unwrap();
                n += out.len();
            }
            n
        })
    });
    g.throughput(tp("text_detectors_scan"));
    g.bench_function("text_detectors_scan", |b| {
        b.iter(|| {
            scan_strings
                .iter()
                .map(|s| text.scan(black_box(s)).len())
                .sum::<usize>()
        })
    });
    g.throughput(tp("redact_value"));
    g.bench_function("redact_value", |b| {
        b.iter_custom(|iters| redact_corpus(&full, &all[..n_redact], iters))
    });
    g.throughput(tp("redact_value_detectors_off"));
    g.bench_function("redact_value_detectors_off", |b| {
        b.iter_custom(|iters| redact_corpus(&walk_only, &all[..n_off], iters))
    });
    g.finish();
    println!(
        "text_detectors_scan input: {} string values, {:.1} MB of string bytes ({:.0} % of their payloads' JSON bytes)",
        scan_strings.len(),
        string_bytes as f64 / 1e6,
        string_bytes as f64 / extent["text_detectors_scan"].1 as f64 * 100.0
    );
    extent
}

fn latency(c: &mut Criterion, quick: bool) {
    let r = redactor(false);
    let clean = call_event(false);
    let pii = call_event(true);
    let mut g = c.benchmark_group(GROUP_LAT);
    g.throughput(Throughput::Elements(1));
    g.warm_up_time(Duration::from_millis(if quick { 10 } else { 500 }));
    g.measurement_time(Duration::from_secs(if quick { 1 } else { 3 }));
    g.bench_function("baseline_serde_json_to_vec", |b| {
        b.iter(|| serde_json::to_vec(black_box(&clean)).unwrap())
    });
    g.bench_function("redact_event_clean", |b| {
        b.iter_batched(
            || clean.clone(),
            |mut e| {
                r.redact_event(&mut e);
                e
            },
            BatchSize::SmallInput,
        )
    });
    // Diagnostic: the walk, key names and the user pseudonym alone.
    let walk_only = redactor(true);
    g.bench_function("redact_event_detectors_off", |b| {
        b.iter_batched(
            || clean.clone(),
            |mut e| {
                walk_only.redact_event(&mut e);
                e
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("redact_event_one_email", |b| {
        b.iter_batched(
            || pii.clone(),
            |mut e| {
                r.redact_event(&mut e);
                e
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------------

/// Where criterion writes its estimates: `$CRITERION_HOME`, `$CARGO_TARGET_DIR/criterion`, or
/// `criterion` in the target directory this bench binary was built in.
fn criterion_home() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("CRITERION_HOME") {
        return Some(h.into());
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(t).join("criterion"));
    }
    // target/<profile>/deps/redact-<hash>
    let exe = std::env::current_exe().ok()?;
    Some(exe.ancestors().nth(3)?.join("criterion"))
}

/// The median time per iteration (ns) and its 95 % interval, written by this run.
fn estimate(group: &str, id: &str, since: SystemTime) -> Option<(f64, f64, f64)> {
    let path = criterion_home()?
        .join(group)
        .join(id)
        .join("new")
        .join("estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None; // left by an earlier run (filtered out of this one)
    }
    let v: Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let m = &v["median"];
    let ci = &m["confidence_interval"];
    Some((
        m["point_estimate"].as_f64()?,
        ci["lower_bound"].as_f64()?,
        ci["upper_bound"].as_f64()?,
    ))
}

fn summary(corpus: &Corpus, extent: &Extent, event_bytes: (usize, usize), since: SystemTime) {
    println!();
    println!(
        "=== redaction summary (corpus {:.1} MB, {} payloads; criterion's median, 95 % CI; MB = 10^6 bytes of payload JSON) ===",
        corpus.json.len() as f64 / 1e6,
        corpus.payloads.len()
    );
    let cases = [
        (
            "baseline_memchr_quote",
            "raw memchr ('\"') over the JSON bytes",
        ),
        (
            "baseline_regex_email",
            "raw regex::bytes (e-mail-ish) over the JSON bytes",
        ),
        (
            "baseline_serde_json_to_vec",
            "serde_json::to_vec of every payload",
        ),
        (
            "text_detectors_scan",
            "TextDetectors::scan over every string value",
        ),
        ("redact_value", "Redactor::redact_value, all detectors on"),
        (
            "redact_value_detectors_off",
            "Redactor::redact_value, every detector off",
        ),
    ];
    let mut got = BTreeMap::new();
    for (id, what) in cases {
        let (n, bytes) = extent[id];
        let mbs = |ns: f64| bytes as f64 / (ns / 1e9) / 1e6;
        let over = if n == corpus.payloads.len() {
            "whole corpus".to_string()
        } else {
            format!("first {n} payloads, {:.1} MB", bytes as f64 / 1e6)
        };
        match estimate(GROUP_TP, id, since) {
            Some((ns, lo, hi)) => {
                got.insert(id, mbs(ns));
                println!(
                    "{what:<52} {:>9.1} MB/s  ({:.1}–{:.1})  {:>8.1} ms per pass over {over}",
                    mbs(ns),
                    mbs(hi),
                    mbs(lo),
                    ns / 1e6
                );
            }
            None => println!("{what:<52} (not measured in this run)"),
        }
    }
    if let (Some(r), Some(m), Some(x)) = (
        got.get("redact_value"),
        got.get("baseline_memchr_quote"),
        got.get("baseline_regex_email"),
    ) {
        println!(
            "ratio redact_value / raw memchr = {:.5} (1/{:.0});  redact_value / raw regex = {:.5} (1/{:.0})",
            r / m,
            m / r,
            r / x,
            x / r
        );
        println!(
            "target >= 300 MB/s on one core: redact_value {r:.1} MB/s -> {}",
            if *r >= 300.0 { "MET" } else { "NOT MET" }
        );
    }
    if let (Some(s), Some(x)) = (
        got.get("text_detectors_scan"),
        got.get("baseline_regex_email"),
    ) {
        println!(
            "ratio text_detectors_scan / raw regex = {:.5} (1/{:.0})",
            s / x,
            x / s
        );
    }

    println!(
        "--- per tools/call event: arguments + preview {} B, stored line {} B ---",
        event_bytes.0, event_bytes.1
    );
    let ser = estimate(GROUP_LAT, "baseline_serde_json_to_vec", since);
    for (id, what) in [
        (
            "baseline_serde_json_to_vec",
            "serde_json::to_vec(event) (baseline)",
        ),
        ("redact_event_clean", "redact_event, nothing to redact"),
        (
            "redact_event_one_email",
            "redact_event, one e-mail in the preview",
        ),
        (
            "redact_event_detectors_off",
            "redact_event, every detector off",
        ),
    ] {
        let Some((ns, lo, hi)) = estimate(GROUP_LAT, id, since) else {
            println!("{what:<44} (not measured in this run)");
            continue;
        };
        let mut tail = String::new();
        if id != "baseline_serde_json_to_vec" {
            if let Some((s, _, _)) = ser {
                tail.push_str(&format!("  = {:.1}x serialising", ns / s));
            }
            let ok = if ns <= 10_000.0 { "MET" } else { "NOT MET" };
            tail.push_str(&format!("  (target <= 10 µs: {ok})"));
        }
        println!(
            "{what:<44} {:>8.2} µs  ({:.2}–{:.2}){tail}",
            ns / 1e3,
            lo / 1e3,
            hi / 1e3
        );
    }
}

fn main() {
    let since = SystemTime::now();
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and wants speed.
    let quick = !std::env::args().any(|a| a == "--bench");
    let mb: usize = std::env::var("MCPTRAIL_BENCH_REDACT_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2 } else { 100 });

    let t = Instant::now();
    let corpus = corpus(mb * 1_000_000);
    let gen_s = t.elapsed().as_secs_f64();
    let n = corpus.payloads.len();
    let non_ascii = corpus
        .payloads
        .iter()
        .filter(|p| !corpus.json[p.bytes.clone()].is_ascii())
        .count();
    let requests = corpus
        .payloads
        .iter()
        .filter(|p| p.value.get("content").is_none())
        .count();
    println!(
        "corpus: {:.1} MB of JSON, {n} distinct payloads ({requests} tools/call arguments, {} tool results; mean {:.0} B), \
         built and parsed in {gen_s:.1} s; {:.0} % hold non-ASCII text; {} planted secrets/PII ({:.2} % of payloads)",
        corpus.json.len() as f64 / 1e6,
        n - requests,
        corpus.json.len() as f64 / n as f64,
        non_ascii as f64 / n as f64 * 100.0,
        corpus.planted,
        corpus.planted as f64 / n as f64 * 100.0,
    );

    let ev = call_event(false);
    let payload_bytes = serde_json::to_vec(&ev.parameters_used).unwrap().len()
        + ev.response_summary
            .as_ref()
            .and_then(|s| s.preview.as_ref())
            .map_or(0, String::len);
    let line_bytes = serde_json::to_vec(&ev).unwrap().len();

    let mut c = Criterion::default().configure_from_args();
    let extent = throughput(&mut c, &corpus, quick);

    // What the redactor found, over the payloads `redact_value` ran over (untimed).
    let r = redactor(false);
    let measured = &corpus.payloads[..extent["redact_value"].0];
    let mut hit = 0usize;
    let mut rules: BTreeMap<String, usize> = BTreeMap::new();
    for p in measured {
        let (red, _) = r.redact_value(&mut p.value.clone(), "/parameters_used", Some(p.tool));
        hit += usize::from(!red.is_empty());
        for x in red {
            *rules.entry(x.rule).or_default() += 1;
        }
    }
    println!(
        "redact_value over {} payloads: {hit} ({:.1} %) had at least one redaction; by rule: {rules:?}",
        measured.len(),
        hit as f64 / measured.len() as f64 * 100.0
    );

    latency(&mut c, quick);
    c.final_summary();
    if !quick {
        summary(&corpus, &extent, (payload_bytes, line_bytes), since);
    }
}
