"""A relay between the SDK and the real gateway that can swallow an answer.

It forwards each request to the gateway, and for the requests chosen by `drop` it reads
the gateway's answer and then closes the connection without sending a byte of it: the
gateway has done (and billed) the work, the client saw a dropped connection. That is
the case idempotency keys exist for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

# content-encoding too: httpx hands over the decoded body
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


class Relay:
    def __init__(self, upstream: str, drop: Callable[[str, str, int], bool]) -> None:
        self.upstream = upstream
        self.drop = drop  # (method, path, number of this request on the path) -> swallow the answer?
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.dropped: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._http = httpx.Client(base_url=upstream, timeout=60)
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                with relay._lock:
                    relay.seen.append((self.command, self.path, headers))
                    number = sum(
                        1
                        for m, p, _ in relay.seen
                        if (m, p.split("?")[0]) == (self.command, self.path.split("?")[0])
                    )
                answer = relay._http.request(self.command, self.path, content=body, headers=headers)
                if relay.drop(self.command, self.path, number):
                    with relay._lock:
                        relay.dropped.append((self.command, self.path, answer.status_code))
                    self.close_connection = True
                    return  # nothing written: the client sees the connection close
                self.send_response(answer.status_code)
                for k, v in answer.headers.items():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = _forward
            do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._http.close()
