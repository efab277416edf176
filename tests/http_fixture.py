"""A local HTTP file server for download tests: 127.0.0.1, a free port, switchable faults.

    server = FileServer().start()
    server.add("/model.ckpt", data)
    server.fail("/model.ckpt", "500", "drop")   # the next two requests fail this way, then it serves normally
    server.always("/other.ckpt", "html")         # every request fails this way
    server.url("/model.ckpt")
    server.requests                               # [(path, Range header or None), ...]
    server.stop()

Faults: "404", "500", "html" (an HTML page with status 200), "drop" (sends the headers for the whole answer,
then half the body, then closes), "lie_length" (declares a Content-Length larger than the body, then closes),
"slow" (waits ``slow_s`` before answering), "garbage" (right length, wrong bytes).
``range_support`` switches HTTP Range handling on or off.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HTML_PAGE = b"<!DOCTYPE html><html><head><title>Moved</title></head><body>Please log in</body></html>"


class FileServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.queued: dict[str, deque[str]] = defaultdict(deque)
        self.persistent: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.range_support = True
        self.slow_s = 1.0
        self._httpd: ThreadingHTTPServer | None = None

    # -- setup -------------------------------------------------------------------------------------------
    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url(path)

    def fail(self, path: str, *faults: str) -> None:
        self.queued[path].extend(faults)

    def always(self, path: str, fault: str) -> None:
        self.persistent[path] = fault

    def url(self, path: str) -> str:
        assert self._httpd is not None, "start() the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def hits(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> "FileServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server._serve(self)

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    # -- serving -----------------------------------------------------------------------------------------
    def _next_fault(self, path: str) -> str | None:
        if self.queued[path]:
            return self.queued[path].popleft()
        return self.persistent.get(path)

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path
        rng = h.headers.get("Range")
        self.requests.append((path, rng))
        fault = self._next_fault(path)
        if fault == "slow":
            time.sleep(self.slow_s)
            fault = None
        if path not in self.files or fault == "404":
            return self._plain(h, 404, b"not found", "text/plain")
        if fault == "500":
            return self._plain(h, 500, b"internal error", "text/plain")
        if fault == "html":
            return self._plain(h, 200, HTML_PAGE, "text/html; charset=utf-8")
        data = self.files[path]
        if fault == "garbage":
            data = bytes(b ^ 0xFF for b in data)
        start, status = 0, 200
        if rng and self.range_support:
            first = int(rng.split("=")[1].split("-")[0])
            if first >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            start, status = first, 206
        body = data[start:]
        h.send_response(status)
        h.send_header("Content-Type", "application/octet-stream")
        declared = len(body) + (1000 if fault == "lie_length" else 0)
        h.send_header("Content-Length", str(declared))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Connection", "close")
        h.end_headers()
        if fault == "drop":
            body = body[: len(body) // 2]
        h.wfile.write(body)
        h.wfile.flush()
        h.close_connection = True

    @staticmethod
    def _plain(h: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str) -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
