# memdiag accuracy corpus: a threaded Python server leaking through glibc's
# per-thread malloc arenas.
#
# ThreadingHTTPServer serves each connection on its own thread. Objects
# above 512 bytes bypass pymalloc and go to glibc malloc, which gives each
# thread an arena (up to 8 x cores); an arena is a 64 MiB reservation
# committed piecewise with mprotect as it grows, and a thread that exits
# hands its arena to the next thread. The warm-up's connections create the
# arenas before memdiag attaches; the measured load's threads reuse them.
#
# Categories (categories.yaml) and their truth:
#   leak   GET /leak   retains 4 bytes objects of 12 KiB (48 KiB + 4 x 33)
#   churn  GET /churn  retains nothing (allocates 16 x 16 KiB and drops it)
#   ping   GET /ping   retains nothing
#
# Env: PORT (required), TRUTH_FILE (SIGUSR2 writes the truth there,
# atomically). Prints "listening <port>" when ready.
import ctypes
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LEAK_OBJECTS = 4
LEAK_SIZE = 12 * 1024
CHURN_OBJECTS = 16
CHURN_SIZE = 16 * 1024

lock = threading.Lock()
ops = {"leak": 0, "churn": 0, "ping": 0}
kept = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY the body
    # waits for the client's delayed ACK (40 ms a request).
    disable_nagle_algorithm = True

    def do_GET(self):
        if self.path.startswith("/leak"):
            with lock:
                ops["leak"] += 1
                n = ops["leak"]
            # os.urandom-free unique content: bytes objects of LEAK_SIZE,
            # each written (so resident).
            objs = [bytes([(n + i) % 251 + 1]) * LEAK_SIZE for i in range(LEAK_OBJECTS)]
            with lock:
                kept.extend(objs)
            body = b"kept"
        elif self.path.startswith("/churn"):
            with lock:
                ops["churn"] += 1
            scratch = [bytes([i + 1]) * CHURN_SIZE for i in range(CHURN_OBJECTS)]
            body = b"churned %d" % sum(len(s) for s in scratch)
            del scratch
        elif self.path.startswith("/ping"):
            with lock:
                ops["ping"] += 1
            body = b"pong"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2


def write_truth(signum, frame):
    path = os.environ.get("TRUTH_FILE")
    if not path:
        print("py-arena: SIGUSR2 needs TRUTH_FILE set to where the truth goes", file=sys.stderr)
        return
    with lock:
        # Truth: a kept bytes object of n bytes is one malloc'd block of
        # n + 33 bytes (sys.getsizeof: header 32 + n + the trailing NUL);
        # the list slots holding them (8 bytes each, in the list's own
        # block) are not counted: 0.07% of 12 KiB.
        retained = sum(len(b) + 33 for b in kept)
        cats = {
            "leak": {"ops": ops["leak"], "retained_bytes": retained},
            "churn": {"ops": ops["churn"], "retained_bytes": 0},
            "ping": {"ops": ops["ping"], "retained_bytes": 0},
        }
    # Self-check, independent of the count above: glibc's own bytes in use
    # over every arena (mallinfo2 sums them), plus mmapped chunks.
    mi = libc.mallinfo2()
    doc = {"categories": cats, "self_check": {
        "method": "glibc mallinfo2 uordblks + hblkhd (every arena)",
        "bytes": mi.uordblks + mi.hblkhd, "arena": mi.arena, "uordblks": mi.uordblks, "hblkhd": mi.hblkhd}}
    tmp = os.path.join(os.path.dirname(path), ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.rename(tmp, path)


def main():
    try:
        port = int(os.environ["PORT"])
    except (KeyError, ValueError):
        print("py-arena: set PORT to the port to listen on", file=sys.stderr)
        sys.exit(2)
    signal.signal(signal.SIGUSR2, write_truth)
    signal.signal(signal.SIGTERM, lambda s, f: os._exit(0))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("listening %d" % port, flush=True)
    server.serve_forever()


main()
