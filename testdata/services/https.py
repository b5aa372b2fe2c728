# An HTTPS service behind OpenSSL (Python's ssl module links libssl), for
# memdiag --tls without Node: a threading HTTP/1.1 server (keep-alive) on a
# loopback port the kernel picks, certificate from TLS_CERT and TLS_KEY.
# GET /keep/N keeps N bytes (written, so resident); any other path answers
# its name; GET /stats counts the requests each route served. Prints
# "listening PID PORT" when ready.
import json
import os
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

kept = []
counts = {}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/stats":
            body = json.dumps(counts).encode()
        else:
            key = "GET " + path
            m = re.fullmatch(r"/keep/(\d+)", path)
            with lock:
                counts[key] = counts.get(key, 0) + 1
                if m:
                    kept.append(bytearray(b"\x01") * int(m.group(1)))
            body = (key + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.environ["TLS_CERT"], os.environ["TLS_KEY"])
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("listening", os.getpid(), server.server_address[1], flush=True)
server.serve_forever()
