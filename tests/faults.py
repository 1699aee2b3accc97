"""A fault-injecting S3 proxy: an HTTP server on 127.0.0.1 (port 0) in front of the moto server.

Each request is forwarded to the server as it came (the Host header too, so the SigV4 signature
still holds), unless a `Rule` chosen by the test matches it: by operation (`get`, `head`, `list`,
`put`, `part`, `create`, `complete`, `post`, `delete`) and by the Nth request of that operation
since the rule was added. The faults are those real networks and real S3 produce:

- `status`: an S3 error answer (500 InternalError, 503 SlowDown, 400 RequestTimeout);
- `reset`: the answer's headers and `arg` bytes of its body, then a TCP reset;
- `truncate`: the body cut to `arg` bytes with a Content-Length that says so;
- `tiny`: the body sent in segments of `arg` bytes, each its own TCP send;
- `slow`: the answer held back for `arg` seconds;
- `lost`: the request done by the server, its answer lost (the connection reset instead);
- `ignore-range`: a ranged GET answered as a server that ignores Range does: 200 and the
  whole object, which `whole` gives (the Range header is signed: it cannot be dropped);
- `replace`: `action` (say, a PUT of a new version) done just before the request goes on.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}
_ERRORS = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
    400: ("RequestTimeout", "Your socket connection to the server was not read from or written to"),
}


@dataclass
class Rule:
    """A fault for the `nth` request of `op` (every one when `nth` is None)."""

    op: str
    fault: str
    nth: int | None = 1
    arg: float = 0
    action: Callable[[], None] | None = None
    whole: Callable[[], bytes] | None = None
    seen: int = 0
    fired: int = 0

    def matches(self, op: str) -> bool:
        if op != self.op:
            return False
        self.seen += 1
        return self.nth is None or self.seen == self.nth


@dataclass
class FaultProxy:
    """The proxy: `endpoint` to give an authorization; `rules` to add faults to."""

    upstream: str
    endpoint: str = ""
    rules: list[Rule] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, *rules: Rule) -> None:
        with self._lock:
            self.rules.extend(rules)

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()

    def rule_for(self, op: str) -> Rule | None:
        with self._lock:
            # Every rule counts every request of its operation, whichever one strikes.
            matched = [rule for rule in self.rules if rule.matches(op)]
            if not matched:
                return None
            matched[0].fired += 1
            return matched[0]

    def start(self) -> None:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        # Bind to port 0 so the OS assigns a free ephemeral port.
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.endpoint = f"http://{host!s}:{port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that drops a connection the proxy reset: nothing to report


def _operation(method: str, path: str) -> str:
    parts = urlsplit(path)
    has_key = "/" in parts.path.strip("/")
    query = parts.query
    if method == "GET":
        return "get" if has_key else "list"
    if method == "PUT" and "partNumber=" in query:
        return "part"  # UploadPart
    if method == "POST" and "uploadId=" in query:
        return "complete"  # CompleteMultipartUpload
    if method == "POST" and "uploads" in query:
        return "create"  # CreateMultipartUpload
    return method.lower()


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def do_PUT(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def do_DELETE(self) -> None:
        self._forward()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self) -> None:
        op = _operation(self.command, self.path)
        body = self._body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            headers["Content-Length"] = str(len(body))
        self.owner.requests.append((op, self.path, dict(headers)))
        rule = self.owner.rule_for(op)
        fault = rule.fault if rule else None
        if rule is not None and fault == "status":
            self._error(int(rule.arg))
            return
        if rule is not None and fault == "slow":
            time.sleep(rule.arg)
        if rule is not None and fault == "replace" and rule.action is not None:
            rule.action()
        upstream = urlsplit(self.owner.upstream)
        conn = http.client.HTTPConnection(upstream.hostname or "", upstream.port, timeout=60)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.endheaders(body or None)
            answer = conn.getresponse()
            data = answer.read()
            answer_headers = [
                (k, v) for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP
            ]
        finally:
            conn.close()
        status = answer.status
        if rule is not None and fault == "lost":
            self._reset()
            return
        if rule is not None and fault == "truncate":
            data = data[: int(rule.arg)]
        if rule is not None and fault == "ignore-range" and rule.whole is not None:
            status, data = 200, rule.whole()
            answer_headers = [(k, v) for k, v in answer_headers if k.lower() != "content-range"]
        self.send_response(status)
        for key, value in answer_headers:
            if key.lower() == "content-length" and self.command != "HEAD":
                value = str(len(data))
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        if rule is not None and fault == "reset":
            self.wfile.write(data[: int(rule.arg)])
            self.wfile.flush()
            self._reset()
        elif rule is not None and fault == "tiny":
            self.wfile.flush()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            step = int(rule.arg)
            for at in range(0, len(data), step):
                self.connection.sendall(data[at : at + step])
                if at // step % 16 == 0:
                    time.sleep(0.0005)  # let the segments reach the client apart
        else:
            self.wfile.write(data)

    def finish(self) -> None:
        with contextlib.suppress(OSError):  # the connection was reset on purpose
            super().finish()

    def _error(self, status: int) -> None:
        code, message = _ERRORS[status]
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout: close() sends a TCP RST, as a dropped connection does.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()
