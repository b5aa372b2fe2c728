# A non-Node service with a leaking route, for memdiag's syscall-only path:
# GET /leak keeps LEAK bytes (written, so resident); GET /ok keeps nothing.
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

LEAK = int(os.environ.get("LEAK", str(1 << 20)))
kept = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/leak"):
            kept.append(b"x" * LEAK)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
print("listening", os.getpid(), flush=True)
server.serve_forever()
