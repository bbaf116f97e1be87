#!/usr/bin/env python3
"""MCP client driven by the official MCP Python SDK, used as a real peer in
mcptrail's integration tests.

It spawns the stdio MCP server given after ``--`` (typically ``mcptrail wrap
... -- <real server>``), then runs a fixed session against it:

  1. ``initialize`` (+ ``notifications/initialized``)
  2. ``tools/list``, ``prompts/list``, ``resources/list`` (following cursors)
  3. ``tools/call`` for each ``--call NAME=JSON`` option, in order
     (a default script for server-everything when no ``--call`` is given)
  4. ``resources/read`` of the first listed resource, if any
  5. ``prompts/get`` of the first listed prompt without required arguments,
     if any

and writes a JSON summary to ``--out`` (or stdout)::

  {"server_info": {...}, "protocol_version": "...",
   "tools": [names], "prompts": [names], "resources": [uris],
   "calls": [{"name", "arguments", "is_error", "content"}],
   "resource_read": {"uri", "contents"} | null,
   "prompt_get": {"name", "messages"} | null}

Any failure (spawn, protocol error, a JSON-RPC error answering a tools/call
unless --allow-call-errors, a timeout) exits 1 with a message on stderr and
writes no summary. A tool *result* with ``isError: true`` is not a failure:
it is recorded as ``"is_error": true`` (with --expect-ok the summary is still
written, then the client exits 3 if any call has is_error or error).

Run it with the peers venv (installed by ``.ci/install-peers.sh``)::

  .ci/peers/venv/bin/python crates/mcptrail-test-support/peers/py_client.py \
      --out result.json -- \
      mcptrail wrap --data-dir D -- \
      node .ci/peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js stdio

@modelcontextprotocol/server-everything 2026.8.31 (pinned in
.ci/peers/package.json; entry ``dist/index.js``, first argument the transport:
``stdio`` (default), ``sse`` or ``streamableHttp``) exposes over stdio:

  tools, as tools/list returns them to this client (13, in this order):
    echo {message}, get-annotated-message, get-env, get-resource-links,
    get-resource-reference, get-structured-content, get-sum {a, b},
    get-tiny-image, gzip-file-as-resource, toggle-simulated-logging,
    toggle-subscriber-updates, trigger-long-running-operation,
    simulate-research-query
  (simulate-research-query is registered when notifications/initialized
  arrives; get-roots-list, trigger-elicitation-request(-async),
  trigger-url-elicitation and trigger-sampling-request(-async) only appear
  for clients advertising roots / elicitation / sampling, which this one
  does not.) An unknown tool or invalid arguments come back as a result with
  isError: true (MCP error -32602 text), not as a JSON-RPC error.
  prompts: simple-prompt (no args), args-prompt {city, state?},
    completable-prompt, resource-prompt
  resources: 7 static docs, demo://resource/static/document/<name>.md
    (architecture, extension, features, how-it-works, instructions, startup,
    structure; listing order is the server's), plus the resource templates
    demo://resource/dynamic/{text,blob}/{index}

The default script calls ``echo`` and ``get-sum`` (the "add" tool of older
server-everything releases is now ``get-sum``).

Uses only the SDK's stable client surface (``mcp.ClientSession``,
``mcp.client.stdio.stdio_client``, ``StdioServerParameters``); results are
read from their wire-form dumps (camelCase), so it is independent of the SDK's
Python attribute spelling.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

try:
    import anyio
    from mcp import ClientSession, StdioServerParameters, types
    from mcp.client.stdio import stdio_client
except ImportError as exc:  # pragma: no cover - environment problem
    sys.stderr.write(
        f"py_client: cannot import the MCP Python SDK ({exc}).\n"
        "Run it with the peers venv: .ci/peers/venv/bin/python (installed by .ci/install-peers.sh).\n"
    )
    sys.exit(2)

try:  # SDK 2.x
    from mcp.shared.exceptions import MCPError as _MCPError
except ImportError:  # pragma: no cover - SDK 1.x
    from mcp.shared.exceptions import McpError as _MCPError  # type: ignore[attr-defined,no-redef]

# The script run against @modelcontextprotocol/server-everything when no
# --call option is given.
DEFAULT_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("echo", {"message": "hello from python"}),
    ("get-sum", {"a": 2, "b": 40}),
]



class ClientError(Exception):
    """A failure reported with a clear one-line message."""


def wire(model: Any) -> Any:
    """A pydantic model (or list of them) as its JSON wire form."""
    if isinstance(model, list):
        return [wire(m) for m in model]
    if hasattr(model, "model_dump"):
        return model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return model


def parse_call(spec: str) -> tuple[str, dict[str, Any]]:
    name, sep, raw = spec.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"--call {spec!r}: empty tool name (expected NAME=JSON)")
    if not sep or not raw.strip():
        return name, {}
    try:
        args = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--call {spec!r}: arguments are not JSON: {exc}") from exc
    if not isinstance(args, dict):
        raise argparse.ArgumentTypeError(f"--call {spec!r}: arguments must be a JSON object")
    return name, args


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    http = any(a.startswith(("--url", "--sse-url")) for a in argv)
    if "--" not in argv and not http and not {"-h", "--help"} & set(argv):
        raise SystemExit(
            "py_client: missing '-- CMD [ARGS...]': the stdio MCP server command to spawn"
        )
    split = argv.index("--") if "--" in argv else len(argv)
    own, command = argv[:split], argv[split + 1 :]
    if not command and not http and not {"-h", "--help"} & set(own):
        raise SystemExit("py_client: empty server command after '--'")

    parser = argparse.ArgumentParser(
        prog="py_client.py",
        description="Run a fixed MCP session (official Python SDK) against a stdio server.",
        usage="%(prog)s [--out FILE] [--call NAME=JSON]... [options] -- CMD [ARGS...]",
    )
    parser.add_argument("--out", help="write the JSON summary here (default: stdout)")
    parser.add_argument(
        "--url", help="connect over Streamable HTTP to this URL instead of spawning a server"
    )
    parser.add_argument(
        "--sse-url", help="connect over the legacy HTTP+SSE transport to this URL"
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="HTTP header sent with every request (repeatable; --url/--sse-url only)",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="ask for progress on tool calls; the summary lists each notification with "
        "the seconds since the call started (progress_seen)",
    )
    parser.add_argument(
        "--call",
        action="append",
        type=parse_call,
        default=None,
        metavar="NAME=JSON",
        help="call tool NAME with the JSON object arguments (repeatable; "
        "default: echo + get-sum for server-everything)",
    )
    parser.add_argument(
        "--no-default-calls",
        action="store_true",
        help="call no tool when no --call is given",
    )
    parser.add_argument(
        "--allow-call-errors",
        action="store_true",
        help="record a JSON-RPC error answering tools/call as {'error': ...} instead of failing",
    )
    parser.add_argument(
        "--expect-ok",
        action="store_true",
        help="exit 3 (after writing the summary) if any tool call has is_error or error",
    )
    parser.add_argument(
        "--no-extras",
        action="store_true",
        help="skip the resources/read and prompts/get steps",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="overall timeout in seconds (default: 60)",
    )
    parser.add_argument(
        "--cwd", help="working directory for the spawned command (default: inherited)"
    )
    return parser.parse_args(own), command


async def list_all(fetch: Any, key: str) -> list[dict[str, Any]]:
    """Follows nextCursor pages of a */list request; returns the items in wire form."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        if cursor is None:
            result = await fetch()
        else:
            result = await fetch(params=types.PaginatedRequestParams(cursor=cursor))
        page = wire(result)
        items.extend(page.get(key, []))
        cursor = page.get("nextCursor")
        if not cursor:
            return items
    raise ClientError(f"{key}/list: more than 1000 pages")


async def run_session(opts: argparse.Namespace, command: list[str]) -> dict[str, Any]:
    calls = opts.call if opts.call is not None else ([] if opts.no_default_calls else DEFAULT_CALLS)
    params = StdioServerParameters(
        command=command[0] if command else "",
        args=command[1:],
        # The SDK passes only a "safe" subset of the environment by default;
        # pass all of it so wrappers (mcptrail) see e.g. MCPTRAIL_* and RUST_LOG.
        env=dict(os.environ),
        cwd=opts.cwd,
    )
    summary: dict[str, Any] = {}
    step = "spawn" if not (opts.url or opts.sse_url) else "connect"
    headers = dict(h.split("=", 1) for h in opts.header)
    if opts.url:
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        transport = streamable_http_client(
            opts.url, http_client=create_mcp_http_client(headers=headers)
        )
    elif opts.sse_url:
        from mcp.client.sse import sse_client

        transport = sse_client(opts.sse_url, headers=headers)
    else:
        transport = stdio_client(params)
    try:
        async with transport as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                step = "initialize"
                init = wire(await session.initialize())
                summary["server_info"] = init.get("serverInfo")
                summary["protocol_version"] = init.get("protocolVersion")
                capabilities = init.get("capabilities") or {}

                step = "tools/list"
                tools = await list_all(session.list_tools, "tools") if "tools" in capabilities else []
                summary["tools"] = [t["name"] for t in tools]

                step = "prompts/list"
                prompts = (
                    await list_all(session.list_prompts, "prompts") if "prompts" in capabilities else []
                )
                summary["prompts"] = [p["name"] for p in prompts]

                step = "resources/list"
                resources = (
                    await list_all(session.list_resources, "resources")
                    if "resources" in capabilities
                    else []
                )
                summary["resources"] = [r["uri"] for r in resources]

                summary["calls"] = []
                for name, arguments in calls:
                    step = f"tools/call {name}"
                    entry: dict[str, Any] = {"name": name, "arguments": arguments}
                    progress_seen: list[dict[str, Any]] = []
                    started = anyio.current_time()

                    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                        progress_seen.append(
                            {"progress": progress, "at": anyio.current_time() - started}
                        )

                    try:
                        result = wire(
                            await session.call_tool(
                                name,
                                arguments,
                                progress_callback=on_progress if opts.progress else None,
                            )
                        )
                    except _MCPError as exc:
                        if not opts.allow_call_errors:
                            raise
                        entry["error"] = wire(exc.error)
                    else:
                        entry["is_error"] = bool(result.get("isError", False))
                        if opts.progress:
                            # Timings vary run to run: only with --progress, so summaries
                            # of runs without it stay comparable.
                            entry["seconds"] = anyio.current_time() - started
                            entry["progress_seen"] = progress_seen
                        entry["content"] = result.get("content", [])
                        if "structuredContent" in result:
                            entry["structured_content"] = result["structuredContent"]
                    summary["calls"].append(entry)

                summary["resource_read"] = None
                summary["prompt_get"] = None
                if not opts.no_extras:
                    if resources:
                        uri = resources[0]["uri"]
                        step = f"resources/read {uri}"
                        read_result = wire(await session.read_resource(uri))
                        summary["resource_read"] = {
                            "uri": uri,
                            "contents": read_result.get("contents", []),
                        }
                    no_arg_prompt = next(
                        (
                            p
                            for p in prompts
                            if not any(a.get("required") for a in p.get("arguments") or [])
                        ),
                        None,
                    )
                    if no_arg_prompt is not None:
                        step = f"prompts/get {no_arg_prompt['name']}"
                        prompt = wire(await session.get_prompt(no_arg_prompt["name"]))
                        summary["prompt_get"] = {
                            "name": no_arg_prompt["name"],
                            "messages": prompt.get("messages", []),
                        }
                step = "shutdown"
    except BaseException as exc:
        # anyio task groups may wrap the real error in (nested) exception groups.
        leaf = unwrap(exc)
        if isinstance(leaf, _MCPError):
            raise ClientError(
                f"{step}: server answered JSON-RPC error {leaf.code}: {leaf.message}"
            ) from exc
        if isinstance(leaf, OSError):
            if step == "spawn":
                raise ClientError(f"cannot spawn {command[0]!r}: {leaf}") from exc
            raise ClientError(f"{step}: I/O error: {leaf}") from exc
        if isinstance(leaf, ClientError):
            raise leaf from None
        raise
    return summary


def unwrap(exc: BaseException) -> BaseException:
    """The first leaf of (possibly nested) exception groups raised by anyio task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def main_async(opts: argparse.Namespace, command: list[str]) -> dict[str, Any]:
    with anyio.fail_after(opts.timeout):
        return await run_session(opts, command)


def main(argv: list[str]) -> int:
    opts, command = parse_args(argv)
    try:
        summary = anyio.run(main_async, opts, command)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # noqa: BLE001 - report every failure clearly
        leaf = unwrap(exc)
        if isinstance(leaf, TimeoutError):
            msg = f"timed out after {opts.timeout:g}s"
        elif isinstance(leaf, ClientError):
            msg = str(leaf)
        else:
            msg = f"{type(leaf).__name__}: {leaf}"
        sys.stderr.write(f"py_client: FAILED against {' '.join(command)}: {msg}\n")
        return 1

    text = json.dumps(summary, indent=2, sort_keys=False) + "\n"
    if opts.out:
        with open(opts.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    if opts.expect_ok:
        bad = [c["name"] for c in summary["calls"] if c.get("is_error") or "error" in c]
        if bad:
            sys.stderr.write(f"py_client: tool call(s) failed: {', '.join(bad)}\n")
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
