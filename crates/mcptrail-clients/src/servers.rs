//! Reading one configuration file: the servers it declares, how each is reached, and whether
//! mcptrail records it. Files are JSON with comments (VS Code) or plain JSON; the parser keeps
//! every value's byte range so that edits touch nothing else.

use std::path::Path;

use jsonc_parser::ast::{Array, Object, ObjectProp, Value};
use jsonc_parser::common::Ranged;
use jsonc_parser::{CollectOptions, ParseOptions};
use serde::Serialize;

use crate::client::{server_containers, Location};
use crate::error::ClientsError;

/// How a server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// The client spawns `command` and speaks MCP over its stdin/stdout.
    Stdio,
    /// Streamable HTTP at `url`.
    Http,
    /// The legacy HTTP+SSE transport at `url`.
    Sse,
    /// Neither a command nor a URL: the entry is not one mcptrail understands.
    Unknown,
}

/// A server that already runs through `mcptrail wrap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wrapped {
    /// The mcptrail executable the entry runs.
    pub mcptrail: String,
    /// The data directory it records to (`--data-dir`), when the entry names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// The server command line it wraps.
    pub inner: Vec<String>,
}

/// Whether a server's traffic is recorded, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "kebab-case")]
pub enum Status {
    /// Runs through `mcptrail wrap`.
    Recorded,
    /// Runs without mcptrail; the reason says what is missing.
    NotRecorded(String),
    /// Meant to be recorded but cannot run as it stands.
    Broken(String),
}

/// One server entry of a configuration file.
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// Its name (the member name in the file).
    pub name: String,
    /// Where in the file it is, e.g. `mcpServers` or `projects["/home/me/app"].mcpServers`.
    pub container: String,
    /// How it is reached.
    pub transport: Transport,
    /// The command (stdio), exactly as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its arguments (stdio).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The URL (HTTP and SSE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Names of the environment variables it sets (never their values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Its working directory, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Marked `"disabled": true` in the file.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Set when it runs through `mcptrail wrap`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrapped: Option<Wrapped>,
    /// Byte range of the entry's value (the `{…}`) in the file.
    #[serde(skip)]
    pub(crate) range: (usize, usize),
}

impl Server {
    /// Whether it is recorded and what is missing if not. `exists` tells whether an
    /// executable path exists (injected so tests do not depend on the machine).
    pub fn status(&self, exists: impl Fn(&str) -> bool) -> Status {
        if let Some(w) = &self.wrapped {
            let absolute = Path::new(&w.mcptrail).is_absolute();
            if absolute && !exists(&w.mcptrail) {
                return Status::Broken(format!(
                    "runs through {}, which does not exist: run `mcptrail install` again",
                    w.mcptrail
                ));
            }
            if w.inner.is_empty() {
                return Status::Broken(
                    "runs `mcptrail wrap` without a server command after it".into(),
                );
            }
            return Status::Recorded;
        }
        Status::NotRecorded(match self.transport {
            Transport::Stdio => "not wrapped: its traffic is not recorded (`mcptrail install`)".into(),
            Transport::Http | Transport::Sse => "HTTP server: recording it needs `mcptrail gateway`, which this version does not have yet".into(),
            Transport::Unknown => "neither a command nor a URL: not an entry mcptrail understands".into(),
        })
    }
}

/// A configuration file as read.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// Which client and where.
    pub location: Location,
    /// Its text, exactly.
    pub text: String,
    /// Its servers, in file order.
    pub servers: Vec<Server>,
}

impl ConfigFile {
    /// Read and parse `location`. An empty file (or one holding only whitespace and
    /// comments) has no servers; a file that is not JSON is an error naming line and column.
    pub fn read(location: Location) -> Result<ConfigFile, ClientsError> {
        let bytes = std::fs::read(&location.path).map_err(ClientsError::io(&location.path))?;
        let text = String::from_utf8(bytes).map_err(|e| ClientsError::NotUtf8 {
            path: location.path.clone(),
            offset: e.utf8_error().valid_up_to(),
        })?;
        Self::parse(location, text)
    }

    /// Parse `text` as the file at `location`.
    pub fn parse(location: Location, text: String) -> Result<ConfigFile, ClientsError> {
        let servers = {
            let root = parse_root(&location.path, &text)?;
            let mut servers = Vec::new();
            if let Some(Value::Object(root)) = &root {
                for path in server_containers(location.client, &location.path) {
                    collect(root, path, String::new(), &mut servers);
                }
            } else if root.is_some() {
                return Err(ClientsError::Shape {
                    path: location.path.clone(),
                    message: "the file holds JSON, but not an object: no MCP servers can be configured in it".into(),
                });
            }
            servers
        };
        Ok(ConfigFile {
            location,
            text,
            servers,
        })
    }
}

/// JSON with comments and trailing commas, as VS Code reads it; nothing looser (a missing
/// comma or a single-quoted string is an error a client would report too).
pub fn jsonc_options() -> ParseOptions {
    ParseOptions {
        allow_comments: true,
        allow_trailing_commas: true,
        allow_loose_object_property_names: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    }
}

/// The file's root value; `None` when it holds none (empty, or comments only).
pub(crate) fn parse_root<'a>(
    path: &Path,
    text: &'a str,
) -> Result<Option<Value<'a>>, ClientsError> {
    jsonc_parser::parse_to_ast(text, &CollectOptions::default(), &jsonc_options())
        .map(|r| r.value)
        .map_err(|e| {
            let start = e.range().start.min(text.len());
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            ClientsError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                message: e.kind().to_string(),
            }
        })
}

/// Walk `path` (member names, `*` = every member) from `obj` and collect the servers there.
fn collect(obj: &Object<'_>, path: &[&str], label: String, out: &mut Vec<Server>) {
    let Some((first, rest)) = path.split_first() else {
        for prop in &obj.properties {
            if let Value::Object(entry) = &prop.value {
                out.push(read_server(prop, entry, &label));
            }
        }
        return;
    };
    if *first == "*" {
        for prop in &obj.properties {
            if let Value::Object(inner) = &prop.value {
                let name = prop.name.as_str();
                let quoted = serde_json::to_string(name).unwrap_or_default();
                collect(inner, rest, format!("{label}[{quoted}]"), out);
            }
        }
        return;
    }
    if let Some(Value::Object(inner)) = prop(obj, first).map(|p| &p.value) {
        let label = if label.is_empty() {
            (*first).to_string()
        } else {
            format!("{label}.{first}")
        };
        collect(inner, rest, label, out);
    }
}

pub(crate) fn prop<'a, 'b>(obj: &'b Object<'a>, name: &str) -> Option<&'b ObjectProp<'a>> {
    obj.properties.iter().find(|p| p.name.as_str() == name)
}

fn string<'a>(v: &'a Value<'_>) -> Option<&'a str> {
    v.as_string_lit().map(|s| s.value.as_ref())
}

/// The string elements of an array (others are skipped: clients reject them anyway).
fn strings(a: &Array<'_>) -> Vec<String> {
    a.elements
        .iter()
        .filter_map(|v| string(v).map(str::to_string))
        .collect()
}

fn read_server(p: &ObjectProp<'_>, entry: &Object<'_>, container: &str) -> Server {
    let get = |name: &str| prop(entry, name).map(|p| &p.value);
    let command = get("command").and_then(string).map(str::to_string);
    let args = match get("args") {
        Some(Value::Array(a)) => strings(a),
        _ => Vec::new(),
    };
    let url = ["url", "serverUrl", "httpUrl"]
        .into_iter()
        .find_map(|k| get(k).and_then(string))
        .map(str::to_string);
    let declared = get("type").and_then(string).map(str::to_ascii_lowercase);
    let transport = match declared.as_deref() {
        Some("stdio") => Transport::Stdio,
        Some("sse") => Transport::Sse,
        Some("http" | "streamable-http" | "streamablehttp" | "streamable_http") => Transport::Http,
        _ if command.is_some() => Transport::Stdio,
        _ => match &url {
            Some(u) if u.trim_end_matches('/').ends_with("/sse") => Transport::Sse,
            Some(_) => Transport::Http,
            None => Transport::Unknown,
        },
    };
    let env = match get("env") {
        Some(Value::Object(o)) => o
            .properties
            .iter()
            .map(|p| p.name.as_str().to_string())
            .collect(),
        _ => Vec::new(),
    };
    let wrapped = command.as_deref().and_then(|c| wrapped(c, &args));
    Server {
        name: p.name.as_str().to_string(),
        container: container.to_string(),
        transport,
        command,
        args,
        url,
        env,
        cwd: get("cwd").and_then(string).map(str::to_string),
        disabled: matches!(get("disabled"), Some(Value::BooleanLit(b)) if b.value),
        wrapped,
        range: (entry.range.start, entry.range.end),
    }
}

/// Whether `command args` is `mcptrail wrap … [--] CMD ARGS…`; the wrapped command line.
pub(crate) fn wrapped(command: &str, args: &[String]) -> Option<Wrapped> {
    let base = command.rsplit(['/', '\\']).next().unwrap_or(command);
    let base = base.strip_suffix(".exe").unwrap_or(base);
    if base != "mcptrail" || args.first().map(String::as_str) != Some("wrap") {
        return None;
    }
    let rest = &args[1..];
    let (options, inner) = match rest.iter().position(|a| a == "--") {
        Some(i) => (&rest[..i], rest[i + 1..].to_vec()),
        None => {
            // `mcptrail wrap [--opt VALUE]… CMD ARGS…` written by hand.
            let mut i = 0;
            while i < rest.len() && rest[i].starts_with("--") {
                i += if rest[i].contains('=') { 1 } else { 2 };
            }
            let i = i.min(rest.len());
            (&rest[..i], rest[i..].to_vec())
        }
    };
    let data_dir =
        options
            .iter()
            .enumerate()
            .find_map(|(i, o)| match o.strip_prefix("--data-dir") {
                Some("") => options.get(i + 1).cloned(),
                Some(v) => v.strip_prefix('=').map(str::to_string),
                None => None,
            });
    Some(Wrapped {
        mcptrail: command.to_string(),
        data_dir,
        inner,
    })
}

/// The byte range of a value, for edits.
pub(crate) fn range_of(v: &Value<'_>) -> (usize, usize) {
    let r = v.range();
    (r.start, r.end)
}
