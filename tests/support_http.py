"""A real HTTP server on 127.0.0.1 serving one generated file, for the downloader and
``fcn-edge fetch`` tests: ``with serve_file(data, "w-1234abcd.pth") as server: ...``.
No request leaves this machine. Plain functions only; fixtures stay in the test modules."""
from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class FileHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.data`` the way ``server.mode`` says — ``range`` (honours Range),
    ``ignore-range``, ``cut`` and ``stall`` (stop after ``server.cut`` bytes, closing or holding
    the connection), ``404`` — and records every request's Range header and the bytes of body
    it sent, in ``server.log``."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        data, mode, asked = self.server.data, self.server.mode, self.headers.get("Range")
        entry = {"range": asked, "sent": 0}
        self.server.log.append(entry)
        if mode == "404":
            self.send_error(404, "Not Found")
            return
        start = int(asked[len("bytes="):-1]) if asked and mode != "ignore-range" else 0
        if start >= len(data):
            self.send_error(416, "Range Not Satisfiable")
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))  # cut/stall: a promise broken
        if getattr(self.server, "content_type", None):  # e.g. text/html: a page, not a file
            self.send_header("Content-Type", self.server.content_type)
        self.end_headers()
        body = data[start:self.server.cut] if mode in ("cut", "stall") else data[start:]
        self.wfile.write(body)
        self.wfile.flush()
        entry["sent"] = len(body)
        if mode == "stall":
            time.sleep(1.5)  # longer than the tests' timeout, with the connection open
        self.close_connection = True

    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass


@contextmanager
def serve_file(data: bytes, name: str, cut: int = 0) -> Iterator[http.server.HTTPServer]:
    """A started server whose ``url`` serves ``data`` as ``/weights/NAME``; ``mode`` starts
    as ``range`` and ``cut`` is where ``cut``/``stall`` stop. Shut down on exit."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FileHandler)
    httpd.daemon_threads = True
    httpd.data, httpd.cut, httpd.mode, httpd.log = data, cut, "range", []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/weights/{name}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
