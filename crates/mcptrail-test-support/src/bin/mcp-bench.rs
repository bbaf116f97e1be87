//! `mcp-bench`: end-to-end latency and throughput driver for a stdio MCP
//! server, speaking raw newline-delimited JSON-RPC over pipes (std only: no
//! async runtime, no MCP SDK, so the driver adds as little as possible).
//!
//! ```text
//! mcp-bench [--calls N] [--pipelined M] [--warmup W] [--label L] [--text S] -- CMD [ARGS...]
//! ```
//!
//! Spawns `CMD ARGS`, sends `initialize` (protocolVersion 2025-06-18) and
//! `notifications/initialized`, then:
//!
//! 1. warm-up: W sequential `tools/call echo` round trips (default 500, not
//!    counted);
//! 2. latency: N sequential `tools/call echo` round trips, each timed from
//!    writing the request to reading its response line; reports p50/p90/p99/max
//!    in microseconds and calls/s;
//! 3. throughput: a writer thread sends M requests back to back while the main
//!    thread reads the M responses; reports messages/s where **one request and
//!    its response count as two messages**.
//!
//! Prints one JSON object on stdout:
//! `{"label","calls","p50_us","p90_us","p99_us","max_us","calls_per_s","pipelined_requests","pipelined_msgs_per_s",...}`,
//! then closes the child's stdin and waits for it to exit.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _};
use serde_json::{json, Value};

const USAGE: &str = "usage: mcp-bench [--calls N] [--pipelined M] [--warmup W] [--label L] \
                     [--text S] -- CMD [ARGS...]\n\
                     pipelined_msgs_per_s counts each request and each response as one message";

const PROTOCOL_VERSION: &str = "2025-06-18";
/// How long to wait for the child to exit after its stdin is closed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

struct Options {
    calls: usize,
    pipelined: usize,
    warmup: usize,
    label: String,
    text: String,
    command: Vec<String>,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Options> {
    let mut args = args.into_iter();
    let mut opts = Options {
        calls: 20_000,
        pipelined: 50_000,
        warmup: 500,
        label: "run".to_owned(),
        text: "hello mcptrail".to_owned(),
        command: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))
        };
        let count = |flag: &str, v: String| -> anyhow::Result<usize> {
            v.parse()
                .with_context(|| format!("{flag} must be a non-negative integer, got {v:?}"))
        };
        match arg.as_str() {
            "--" => {
                opts.command = args.by_ref().collect();
                break;
            }
            "--calls" => opts.calls = count("--calls", value("--calls")?)?,
            "--pipelined" => opts.pipelined = count("--pipelined", value("--pipelined")?)?,
            "--warmup" => opts.warmup = count("--warmup", value("--warmup")?)?,
            "--label" => opts.label = value("--label")?,
            "--text" => opts.text = value("--text")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unexpected argument {other:?}\n{USAGE}"),
        }
    }
    if opts.command.is_empty() {
        bail!("no server command given after `--`\n{USAGE}");
    }
    Ok(opts)
}

/// Pre-rendered `tools/call echo` request: `prefix` + id + `suffix` + '\n'.
struct EchoRequest {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
}

impl EchoRequest {
    fn new(text: &str) -> Self {
        let params = json!({"name": "echo", "arguments": {"text": text}});
        Self {
            prefix: br#"{"jsonrpc":"2.0","id":"#.to_vec(),
            suffix: format!(r#","method":"tools/call","params":{params}}}"#).into_bytes(),
        }
    }

    fn write(&self, out: &mut impl Write, id: u64) -> std::io::Result<()> {
        out.write_all(&self.prefix)?;
        write!(out, "{id}")?;
        out.write_all(&self.suffix)?;
        out.write_all(b"\n")
    }
}

/// Reads newline-delimited JSON-RPC messages from the child.
struct Responses {
    reader: BufReader<ChildStdout>,
    line: String,
}

impl Responses {
    /// Reads lines until a response (a message with an `id` and no `method`)
    /// arrives and returns its numeric id. Server-initiated notifications and
    /// requests are skipped. Error responses are reported as errors.
    fn next_id(&mut self) -> anyhow::Result<u64> {
        loop {
            self.line.clear();
            let n = self
                .reader
                .read_line(&mut self.line)
                .context("reading from the server's stdout")?;
            ensure!(n > 0, "server closed its stdout (exited?)");
            let trimmed = self.line.trim_end();
            if trimmed.is_empty() {
                continue;
            }
            let msg: Value = serde_json::from_str(trimmed)
                .with_context(|| format!("server wrote a non-JSON line: {trimmed}"))?;
            if msg.get("method").is_some() {
                continue;
            }
            let Some(id) = msg.get("id") else { continue };
            if let Some(err) = msg.get("error") {
                bail!("server answered request {id} with an error: {err}");
            }
            return id
                .as_u64()
                .ok_or_else(|| anyhow!("unexpected response id {id} (the driver sends integers)"));
        }
    }

    fn expect(&mut self, want: u64) -> anyhow::Result<()> {
        let got = self.next_id()?;
        ensure!(got == want, "expected response to id {want}, got id {got}");
        Ok(())
    }
}

fn percentile(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    // Nearest-rank percentile.
    let rank = (p * sorted_ns.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted_ns.len()) - 1;
    sorted_ns[idx] as f64 / 1_000.0
}

fn round1(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 10.0).round() / 10.0)
    } else {
        Value::Null
    }
}

fn wait_with_grace(child: &mut Child) -> anyhow::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + EXIT_GRACE;
    loop {
        if let Some(status) = child.try_wait().context("waiting for the server")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            eprintln!(
                "mcp-bench: server did not exit within {}s of stdin closing; killing it",
                EXIT_GRACE.as_secs()
            );
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn run(opts: &Options) -> anyhow::Result<Value> {
    let mut child = Command::new(&opts.command[0])
        .args(&opts.command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("failed to spawn {:?}", opts.command))?;
    let result = drive(opts, &mut child);
    if result.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        return result;
    }
    let status = wait_with_grace(&mut child)?;
    if let Some(status) = status {
        if !status.success() {
            eprintln!("mcp-bench: server exited with {status}");
        }
    }
    result
}

fn drive(opts: &Options, child: &mut Child) -> anyhow::Result<Value> {
    let stdin = child.stdin.take().context("child stdin")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut out = BufWriter::with_capacity(64 * 1024, stdin);
    let mut responses = Responses {
        reader: BufReader::with_capacity(64 * 1024, stdout),
        line: String::with_capacity(1024),
    };

    // Handshake.
    let init = json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcp-bench", "version": env!("CARGO_PKG_VERSION")}
        }
    });
    writeln!(out, "{init}")?;
    out.flush()?;
    responses.expect(0).context("initialize")?;
    writeln!(
        out,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )?;
    out.flush()?;

    let request = EchoRequest::new(&opts.text);
    let mut next_id: u64 = 1;
    let mut round_trip =
        |out: &mut BufWriter<ChildStdin>, responses: &mut Responses| -> anyhow::Result<Duration> {
            let id = next_id;
            next_id += 1;
            let start = Instant::now();
            request.write(out, id)?;
            out.flush()?;
            responses.expect(id)?;
            Ok(start.elapsed())
        };

    // (0) Warm-up.
    for _ in 0..opts.warmup {
        round_trip(&mut out, &mut responses).context("warm-up call")?;
    }

    // (a) Sequential latency.
    let mut samples_ns = Vec::with_capacity(opts.calls);
    let seq_start = Instant::now();
    for _ in 0..opts.calls {
        let rtt = round_trip(&mut out, &mut responses).context("sequential call")?;
        samples_ns.push(u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX));
    }
    let seq_elapsed = seq_start.elapsed();
    samples_ns.sort_unstable();
    let calls_per_s = if opts.calls > 0 {
        opts.calls as f64 / seq_elapsed.as_secs_f64()
    } else {
        f64::NAN
    };

    // (b) Pipelined throughput.
    let m = opts.pipelined;
    let first_id = next_id;
    let pipe_start = Instant::now();
    let writer = thread::spawn(move || -> std::io::Result<BufWriter<ChildStdin>> {
        for i in 0..m as u64 {
            request.write(&mut out, first_id + i)?;
        }
        out.flush()?;
        Ok(out)
    });
    let mut seen = vec![false; m];
    let mut read_error = None;
    for _ in 0..m {
        match responses.next_id() {
            Ok(id) => {
                let slot = id
                    .checked_sub(first_id)
                    .and_then(|i| usize::try_from(i).ok())
                    .filter(|&i| i < m);
                match slot {
                    Some(i) if !seen[i] => seen[i] = true,
                    _ => {
                        read_error = Some(anyhow!("unexpected or duplicate response id {id}"));
                        break;
                    }
                }
            }
            Err(e) => {
                read_error = Some(e);
                break;
            }
        }
    }
    let pipe_elapsed = pipe_start.elapsed();
    if let Some(e) = read_error {
        // The writer may be blocked on a full pipe; `run` kills the child,
        // which unblocks it (EPIPE), and the detached thread then ends.
        return Err(e.context("pipelined phase"));
    }
    let out = writer
        .join()
        .map_err(|_| anyhow!("pipelined writer thread panicked"))?
        .context("pipelined writer")?;
    let msgs_per_s = if m > 0 {
        (2 * m) as f64 / pipe_elapsed.as_secs_f64()
    } else {
        f64::NAN
    };

    // Close the child's stdin: the MCP stdio shutdown signal.
    drop(out);

    Ok(json!({
        "label": opts.label,
        "calls": opts.calls,
        "p50_us": round1(percentile(&samples_ns, 0.50)),
        "p90_us": round1(percentile(&samples_ns, 0.90)),
        "p99_us": round1(percentile(&samples_ns, 0.99)),
        "max_us": round1(samples_ns.last().map_or(f64::NAN, |&ns| ns as f64 / 1_000.0)),
        "calls_per_s": round1(calls_per_s),
        "pipelined_requests": m,
        "pipelined_msgs_per_s": round1(msgs_per_s),
        "pipelined_msgs_count": "request+response (2 per call)",
        "warmup_calls": opts.warmup,
        "protocol_version": PROTOCOL_VERSION,
        "command": opts.command,
    }))
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("mcp-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mcp-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
