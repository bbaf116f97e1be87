#!/usr/bin/env python3
"""A deliberately simple (and, on some paths, misbehaving) MCP-over-HTTP upstream for the
gateway tests: stdlib only, one thread per connection, listening on 127.0.0.1:<port>
(printed as ``PORT <n>`` on stdout once listening; ``--port 0`` picks a free one).

Paths (POST with a JSON-RPC request unless said otherwise):

``/echo/mcp``
    Answers ``application/json`` with a result that echoes the request headers it received
    and the body (as text), and sets ``Mcp-Session-Id: echo-session``. Used to show what the
    gateway forwarded (trace context, end-to-end headers, unchanged bytes). ``peer_port`` in
    the result is the port the request came from: which connection carried it.
``/close-after/mcp``
    Answers like ``/echo/mcp``, then closes the connection although the answer did not say
    so (what a server does when a keep-alive connection has been idle too long).
``/bad-sse/mcp``
    Answers ``text/event-stream`` with, in order: a valid progress notification, an event
    whose data is not JSON, an event whose data is not UTF-8, the valid response, and an
    event cut off without its blank line; then the stream ends.
``/broken/mcp``
    Starts a chunked SSE answer, sends one event, then closes the connection without the
    terminating chunk (a stream that breaks off).
``/slow/mcp``
    Waits ``--slow-secs`` (default 10) before answering.
``/status/<code>``
    Answers that status with a text/plain body.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def request_id(body: bytes):
    try:
        return json.loads(body).get("id")
    except Exception:
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    slow_secs = 10.0

    def log_message(self, *args):  # quiet
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, ctype: str, body: bytes, extra: dict[str, str] | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/status/"):
            code = int(self.path.rsplit("/", 1)[1])
            self._send(code, "text/plain", f"status {code}\n".encode())
        else:
            self._send(405, "text/plain", b"GET not supported\n")

    def do_DELETE(self):
        self._send(200, "text/plain", b"")

    def do_POST(self):
        body = self._body()
        rid = request_id(body)
        if self.path.startswith(("/echo/", "/close-after/")):
            result = {
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace"),
                "peer_port": self.client_address[1],
            }
            out = json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}).encode()
            self._send(200, "application/json", out, {"Mcp-Session-Id": "echo-session"})
            if self.path.startswith("/close-after/"):
                self.wfile.flush()
                self.close_connection = True
        elif self.path.startswith("/bad-sse/"):
            events = [
                b'data: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}\n\n',
                b"data: this is not json\n\n",
                b"data: \xff\xfe not utf-8\n\n",
                b'data: ' + json.dumps({"jsonrpc": "2.0", "id": rid, "result": {"content": []}}).encode() + b"\n\n",
                b"data: {\"cut\": off",
            ]
            payload = b"".join(events)
            self._send(200, "text/event-stream", payload, {"Mcp-Session-Id": "bad-sse-session"})
        elif self.path.startswith("/broken/"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Mcp-Session-Id", "broken-session")
            self.end_headers()
            ev = b'data: {"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"before the break"}}\n\n'
            self.wfile.write(f"{len(ev):x}\r\n".encode() + ev + b"\r\n")
            self.wfile.flush()
            time.sleep(0.2)
            self.connection.shutdown(socket.SHUT_RDWR)
            self.connection.close()
        elif self.path.startswith("/slow/"):
            time.sleep(self.slow_secs)
            out = json.dumps({"jsonrpc": "2.0", "id": rid, "result": {}}).encode()
            self._send(200, "application/json", out)
        elif self.path.startswith("/status/"):
            code = int(self.path.rsplit("/", 1)[1])
            self._send(code, "text/plain", f"status {code}\n".encode())
        else:
            self._send(404, "text/plain", b"no such path\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--slow-secs", type=float, default=10.0)
    opts = ap.parse_args()
    Handler.slow_secs = opts.slow_secs
    srv = ThreadingHTTPServer(("127.0.0.1", opts.port), Handler)
    srv.daemon_threads = True
    print(f"PORT {srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
