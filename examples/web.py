"""A tiny HTTP/1.1 server for the demo: answers every GET with its task name.

netd starts each replica with the task's name as its hostname, so a reply
says which replica served it. Keep-alive is supported (Content-Length is
always set), so clients can reuse connections through the balancer.

Usage: python3 examples/web.py [PORT [TAG]]   (port 8000 by default)

With a TAG, every answer is "<task name> <TAG>" (a version, say), so a
rolling update shows which replicas run the new command.
"""

import http.server
import socket
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the
    # second waits for the client's delayed ACK (40 ms per request on a
    # kept-alive connection).
    disable_nagle_algorithm = True

    def do_GET(self):
        body = (" ".join([socket.gethostname()] + TAG) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
TAG = sys.argv[2:3]
http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
