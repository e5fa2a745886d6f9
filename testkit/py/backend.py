"""An HTTP/1.1 upstream in a process of its own, for testkit::http::python_backend.

Usage: python3 backend.py NAME

Serves on 127.0.0.1 and a port the kernel chose, printed alone on the first line of stdout
once it listens. Keep-alive (protocol_version HTTP/1.1), a thread per connection, standard
library only. Any method and path: 200 with JSON describing the request, the same fields as
testkit's in-process Backend (so Seen::parse reads either); /status/NNN answers NNN.
"""

import itertools
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[1]
# next() on a count is atomic in CPython: connection numbers from 1, as the Backend's.
CONNECTIONS = itertools.count(1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "testkit-python"

    def setup(self):
        super().setup()
        self.number = next(CONNECTIONS)

    def log_message(self, format, *args):
        pass

    def read_body(self):
        """Reads the whole request body (Content-Length or chunked); its length."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            total = 0
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers, up to the empty line.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return total
                total += len(self.rfile.read(size))
                self.rfile.readline(3)
        left = int(self.headers.get("Content-Length") or 0)
        total = 0
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            total += len(chunk)
            left -= len(chunk)
        return total

    def answer(self):
        body_bytes = self.read_body()
        path = self.path.split("?", 1)[0]
        if path.startswith("/status/") and path[len("/status/"):].isdigit():
            status = int(path[len("/status/"):])
            body = f"{NAME}: status {status}\n".encode()
            content_type = "text/plain"
        else:
            status = 200
            seen = {
                "backend": NAME,
                "method": self.command,
                "uri": self.path,
                "version": self.request_version,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body_bytes": body_bytes,
                "connection": self.number,
                "peer": "%s:%d" % self.client_address[:2],
            }
            body = json.dumps(seen).encode()
            content_type = "application/json"
        self.send_response(status)
        if status in (204, 304) or status < 200:
            # No body, and no Content-Length (RFC 9110 8.6).
            self.end_headers()
            return
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = answer


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
