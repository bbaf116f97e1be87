#!/usr/bin/env python3
"""An OTLP/HTTP protobuf receiver for the OTLP sink tests: decodes every export request with
the official ``opentelemetry-proto`` messages (google.protobuf) and appends it, as JSON, to
a file, one line per request. It sits behind rotel (rotel's OTLP exporter forwards what rotel
received, so the file shows what the real collector took), or is pointed at directly to play
the failure modes of a real collector.

Listens on 127.0.0.1:<port> (``--port 0`` picks one) and prints ``PORT <n>`` once listening.

Routes: ``POST /v1/traces``, ``/v1/metrics``, ``/v1/logs`` with
``Content-Type: application/x-protobuf`` (``Content-Encoding: gzip`` accepted), answered as
the OTLP/HTTP specification says: 200 with an ``Export*ServiceResponse`` (protobuf),
400 with a ``google.rpc.Status`` for a body that does not decode, 415 for another content
type, 401 without the required header (``--require-header 'name: value'``).

Fault injection, like a collector under pressure (``POST /control`` with a JSON object;
``GET /control`` returns the counters):

``{"fail_next": [503, 429], "retry_after": 1}``
    answer the next requests with these statuses (and ``Retry-After``); nothing is stored.
``{"reject_next": 2}``
    the next export request is stored but answered with ``partial_success`` naming 2 rejected
    items (what a collector does when it refuses some of them); with ``"reject_signal":
    "traces"`` the next request of that signal (senders export a batch's signals at once).

Each output line: ``{"signal": "traces", "request": {...}}`` with the request as
``MessageToDict(preserving_proto_field_name=True)`` and trace/span ids turned to lowercase hex.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

SIGNALS = {
    "/v1/traces": (
        "traces",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
        "rejected_spans",
    ),
    "/v1/metrics": (
        "metrics",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
        "rejected_data_points",
    ),
    "/v1/logs": (
        "logs",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
        "rejected_log_records",
    ),
}

ID_KEYS = {"trace_id", "span_id", "parent_span_id"}


def hex_ids(node):
    """Trace and span ids come out of MessageToDict as base64; tests compare hex."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ID_KEYS and isinstance(v, str):
                node[k] = base64.b64decode(v).hex()
            else:
                hex_ids(v)
    elif isinstance(node, list):
        for v in node:
            hex_ids(v)
    return node


class State:
    def __init__(self, out_path: str, required_header):
        self.lock = threading.Lock()
        self.out = open(out_path, "a", encoding="utf-8")
        self.required_header = required_header
        self.fail_next: list[int] = []
        self.retry_after = None
        self.reject_next = 0
        self.reject_signal = None
        self.counters = {"requests": 0, "stored": 0, "injected": 0, "unauthorized": 0, "bad": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State

    def log_message(self, fmt, *args):  # quiet
        pass

    def reply(self, status: int, body: bytes = b"", ctype: str = "application/x-protobuf", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n)

    def do_GET(self):
        if self.path == "/control":
            with self.state.lock:
                body = json.dumps(self.state.counters).encode()
            self.reply(200, body, "application/json")
        else:
            self.reply(404, b"", "text/plain")

    def do_POST(self):
        st = self.state
        body = self.read_body()
        if self.path == "/control":
            cmd = json.loads(body or b"{}")
            with st.lock:
                st.fail_next = list(cmd.get("fail_next", st.fail_next))
                st.retry_after = cmd.get("retry_after", st.retry_after)
                st.reject_next = int(cmd.get("reject_next", st.reject_next))
                st.reject_signal = cmd.get("reject_signal", None)
            self.reply(200, b"{}", "application/json")
            return
        route = SIGNALS.get(self.path)
        if route is None:
            self.reply(404, b"", "text/plain")
            return
        signal, req_type, resp_type, rejected_field = route
        with st.lock:
            st.counters["requests"] += 1
            if st.required_header is not None:
                name, value = st.required_header
                if self.headers.get(name) != value:
                    st.counters["unauthorized"] += 1
                    self.reply(401, b"missing or wrong credentials", "text/plain")
                    return
            if st.fail_next:
                status = st.fail_next.pop(0)
                st.counters["injected"] += 1
                headers = {}
                if st.retry_after is not None:
                    headers["Retry-After"] = str(st.retry_after)
                self.reply(status, b"", "application/x-protobuf", headers)
                return
        if not (self.headers.get("Content-Type") or "").startswith("application/x-protobuf"):
            self.reply(415, b"only application/x-protobuf", "text/plain")
            return
        if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
            body = gzip.decompress(body)
        try:
            req = req_type.FromString(body)
        except Exception as e:  # what a collector answers for an undecodable body
            with st.lock:
                st.counters["bad"] += 1
            self.reply(400, str(e).encode(), "text/plain")
            return
        doc = hex_ids(MessageToDict(req, preserving_proto_field_name=True))
        resp = resp_type()
        with st.lock:
            st.out.write(json.dumps({"signal": signal, "request": doc}) + "\n")
            st.out.flush()
            st.counters["stored"] += 1
            if st.reject_next and st.reject_signal in (None, signal):
                setattr(resp.partial_success, rejected_field, st.reject_next)
                resp.partial_success.error_message = "test receiver refused some items"
                st.reject_next = 0
        self.reply(200, resp.SerializeToString())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--require-header", default=None, help="'Name: value' every request must carry")
    args = ap.parse_args()
    required = None
    if args.require_header:
        name, _, value = args.require_header.partition(":")
        required = (name.strip(), value.strip())
    Handler.state = State(args.out, required)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
