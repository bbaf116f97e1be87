//! `rmcp-client`: a scripted MCP client built on the official Rust SDK
//! (`rmcp`), used by integration tests to drive a stdio server (directly or
//! through `mcptrail wrap`) with a real, independent client implementation.
//!
//! ```text
//! rmcp-client [--call NAME=JSONARGS]... [--protocol-version V] [--timeout-secs N] -- CMD [ARGS...]
//! rmcp-client [--call NAME=JSONARGS]... --url http://HOST:PORT/PATH
//! ```
//!
//! With `--url` it connects over Streamable HTTP (rmcp's reqwest client) instead.
//!
//! Spawns `CMD ARGS` through rmcp's child-process transport, initializes with
//! clientInfo name `rmcp-client`, lists tools, performs each `--call` in order
//! and prints one JSON document on stdout:
//! `{"server_info":{..},"protocol_version":"..","tools":[names],"calls":[{"name","result"}]}`.
//! Then it shuts the session down (closing the child's stdin and waiting for
//! it to exit). Any failure, including a JSON-RPC error reply to a call,
//! exits non-zero with a message on stderr and nothing on stdout.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, JsonObject,
    ProtocolVersion,
};
use rmcp::transport::TokioChildProcess;
use rmcp::ServiceExt;
use serde_json::{json, Value};

const USAGE: &str = "usage: rmcp-client [--call NAME=JSONARGS]... [--protocol-version V] \
                     [--timeout-secs N] (-- CMD [ARGS...] | --url URL)";

struct Call {
    name: String,
    arguments: Option<JsonObject>,
}

struct Options {
    calls: Vec<Call>,
    protocol_version: String,
    timeout: Duration,
    command: Vec<String>,
    url: Option<String>,
}

fn parse_call(spec: &str) -> anyhow::Result<Call> {
    let (name, args) = match spec.split_once('=') {
        Some((name, args)) => (name, Some(args)),
        None => (spec, None),
    };
    if name.is_empty() {
        bail!("--call {spec:?}: empty tool name");
    }
    let arguments = match args {
        None => None,
        Some(text) => match serde_json::from_str::<Value>(text)
            .with_context(|| format!("--call {name}: arguments are not valid JSON: {text}"))?
        {
            Value::Object(map) => Some(map),
            other => bail!("--call {name}: arguments must be a JSON object, got {other}"),
        },
    };
    Ok(Call {
        name: name.to_owned(),
        arguments,
    })
}

fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Options> {
    let mut args = args.into_iter();
    let mut opts = Options {
        calls: Vec::new(),
        // The newest revision that still has the initialize handshake; later
        // ones move the lifecycle into per-request metadata.
        protocol_version: ProtocolVersion::LATEST_WITH_INITIALIZE.to_string(),
        timeout: Duration::from_secs(60),
        command: Vec::new(),
        url: None,
    };
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--" => {
                opts.command = args.by_ref().collect();
                break;
            }
            "--call" => opts.calls.push(parse_call(&value("--call")?)?),
            "--url" => opts.url = Some(value("--url")?),
            "--protocol-version" => opts.protocol_version = value("--protocol-version")?,
            "--timeout-secs" => {
                let secs: u64 = value("--timeout-secs")?
                    .parse()
                    .context("--timeout-secs must be a non-negative integer")?;
                opts.timeout = Duration::from_secs(secs);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => {
                if let Some(spec) = other.strip_prefix("--call=") {
                    opts.calls.push(parse_call(spec)?);
                } else {
                    bail!("unexpected argument {other:?}\n{USAGE}");
                }
            }
        }
    }
    if opts.command.is_empty() && opts.url.is_none() {
        bail!("no server command given after `--`\n{USAGE}");
    }
    Ok(opts)
}

async fn run(opts: Options) -> anyhow::Result<Value> {
    // ProtocolVersion has no public string constructor; it deserializes from one.
    let protocol_version: ProtocolVersion =
        serde_json::from_value(Value::String(opts.protocol_version.clone()))
            .context("invalid --protocol-version")?;
    let config = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("rmcp-client", env!("CARGO_PKG_VERSION")),
    )
    .with_protocol_version(protocol_version);

    let mut client = match &opts.url {
        Some(url) => {
            let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url.as_str());
            config
                .serve(transport)
                .await
                .context("MCP initialization failed")?
        }
        None => {
            let mut cmd = tokio::process::Command::new(&opts.command[0]);
            cmd.args(&opts.command[1..]).kill_on_drop(true);
            let transport = TokioChildProcess::new(cmd)
                .with_context(|| format!("failed to spawn {:?}", opts.command))?;
            config
                .serve(transport)
                .await
                .context("MCP initialization failed")?
        }
    };

    let outcome = async {
        let peer_info = client
            .peer_info()
            .ok_or_else(|| anyhow!("no server info after initialization"))?;
        let tools = client.list_all_tools().await.context("tools/list failed")?;
        let mut calls = Vec::with_capacity(opts.calls.len());
        for call in &opts.calls {
            let mut params = CallToolRequestParams::new(call.name.clone());
            if let Some(arguments) = &call.arguments {
                params = params.with_arguments(arguments.clone());
            }
            let result = client
                .call_tool(params)
                .await
                .with_context(|| format!("tools/call {} failed", call.name))?;
            calls.push(json!({
                "name": call.name,
                "result": serde_json::to_value(&result)?,
            }));
        }
        anyhow::Ok(json!({
            "server_info": serde_json::to_value(&peer_info.server_info)?,
            "protocol_version": peer_info.protocol_version.to_string(),
            "tools": tools.iter().map(|t| t.name.as_ref()).collect::<Vec<_>>(),
            "calls": calls,
        }))
    }
    .await;

    // Always shut down: closes the child's stdin and waits for it to exit
    // (rmcp escalates to SIGTERM / SIGKILL after a grace period).
    let closed = client.close().await;
    let document = outcome?;
    closed.context("shutting down the MCP session failed")?;
    Ok(document)
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("rmcp-client: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rmcp-client: cannot start tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = opts.timeout;
    let result = runtime.block_on(async move {
        match tokio::time::timeout(timeout, run(opts)).await {
            Ok(result) => result,
            Err(_) => Err(anyhow!("timed out after {}s", timeout.as_secs())),
        }
    });
    match result {
        Ok(document) => {
            println!("{document}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rmcp-client: {e:#}");
            ExitCode::FAILURE
        }
    }
}
