#!/usr/bin/env python3
"""Stand-in audit receiver for bench/audit.sh: it takes the shipper's POST /audit/v1/events batches
(NDJSON, bearer token), counts their events, and acknowledges each with the server's answer,
{"accepted": n, "duplicates": 0}. It stores nothing and checks no ids: it stands in for a
`palisade server` on another machine, so that the benchmark measures what shipping costs the
gateway alone (the real server's ingest is measured on its own, as events/s). GET /count returns
the number of events received so far (a retried batch counts again).

Usage: ack-receiver.py PORT TOKEN_FILE
"""
import http.server
import sys
import threading

PORT, TOKEN = int(sys.argv[1]), open(sys.argv[2]).read().strip()
EXPECTED_AUTH = f"Bearer {TOKEN}"
received = 0
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    # One write per answer and no Nagle: headers and body written apart would wait for the client's
    # delayed ACK (40 ms) before the body went out, a stall per batch no real server has.
    disable_nagle_algorithm = True

    def _answer(self, status, body):
        data = body.encode()
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found"}[status]
        head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
        self.wfile.write(head.encode() + data)

    def do_POST(self):
        global received
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        if self.path != "/audit/v1/events":
            return self._answer(404, '{"error":"not_found"}')
        if self.headers.get("authorization") != EXPECTED_AUTH:
            return self._answer(401, '{"error":"unauthorized"}')
        n = body.count(b"\n")
        with lock:
            received += n
        self._answer(200, f'{{"accepted":{n},"duplicates":0}}')

    def do_GET(self):
        with lock:
            n = received
        self._answer(200, f'{{"received":{n}}}')

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
