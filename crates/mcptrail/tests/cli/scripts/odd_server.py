#!/usr/bin/env python3
"""A deliberately irregular stdio MCP server for tap tests.

It answers `initialize` properly, then misbehaves on purpose so the tap's handling of bad
server output can be checked: responses to unknown ids, `id: null` errors, garbage lines,
invalid UTF-8, server->client requests that the client must answer, crashes, and stubbornness
about shutdown. Behaviour per `tools/call` name:
  anomalies  -> emits the irregular messages, sends sampling/createMessage and roots/list to
                the client, waits for both answers, then answers the call
  crash      -> exits with status 3 without answering
  hang       -> never answers
  echo       -> answers with the text
Flags: --ignore-eof (keep running after stdin closes), --ignore-term (ignore SIGTERM).
"""
import json
import signal
import sys
import time

ignore_eof = "--ignore-eof" in sys.argv
# Die of SIGINT like a native server: Python's KeyboardInterrupt can be swallowed depending on
# where it lands, which made "the server died of the forwarded SIGINT" flaky.
signal.signal(signal.SIGINT, signal.SIG_DFL)
if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

out = sys.stdout.buffer


def send_raw(b):
    out.write(b)
    out.flush()


def send(obj):
    send_raw((json.dumps(obj, separators=(",", ":")) + "\n").encode())


def read_msg():
    line = sys.stdin.buffer.readline()
    if not line:
        return None
    try:
        return json.loads(line)
    except ValueError:
        return {}


while True:
    msg = read_msg()
    if msg is None:
        break
    if not isinstance(msg, dict) or "method" not in msg or "id" not in msg:
        continue
    mid, method, params = msg["id"], msg["method"], msg.get("params") or {}
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": mid, "result": {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {"listChanged": True}},
            "serverInfo": {"name": "odd-server", "version": "9.9"}}})
    elif method == "tools/list":
        variant = "v2" if params.get("_meta", {}).get("variant") == "v2" else "v1"
        tools = [{"name": "anomalies", "inputSchema": {"type": "object"}},
                 {"name": "echo", "description": "echo " + variant, "inputSchema": {"type": "object"}}]
        if variant == "v2":
            tools.append({"name": "new_tool", "inputSchema": {"type": "object"}})
            tools = tools[1:]
        send({"jsonrpc": "2.0", "id": mid, "result": {"tools": tools}})
    elif method == "tools/call":
        name = params.get("name")
        if name == "anomalies":
            send({"jsonrpc": "2.0", "id": 999, "result": {}})
            send({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}})
            send_raw(b"this is not json\n")
            send_raw(b"\xff\xfe\xfd{\"jsonrpc\":\"2.0\"}\n")
            send({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage",
                  "params": {"messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}], "maxTokens": 5}})
            send({"jsonrpc": "2.0", "id": "s2", "method": "roots/list"})
            answered = set()
            while len(answered) < 2:
                m = read_msg()
                if m is None:
                    sys.exit(0)
                if m.get("id") in ("s1", "s2") and "method" not in m:
                    answered.add(m["id"])
            send({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "done"}})
            send({"jsonrpc": "2.0", "id": mid, "result": {"content": [{"type": "text", "text": "anomalies done"}]}})
        elif name == "crash":
            sys.exit(3)
        elif name == "hang":
            pass
        else:
            text = (params.get("arguments") or {}).get("text", "")
            send({"jsonrpc": "2.0", "id": mid, "result": {"content": [{"type": "text", "text": text}]}})
    else:
        send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "Method not found"}})

if ignore_eof:
    while True:
        time.sleep(1)
