"""A tiny threaded HTTP server on 127.0.0.1 for stateful fake vendor APIs.

A fake supplies one ``handle(request) -> Reply`` callable; :class:`LoopbackServer` does the socket work
on a random free port, in a background thread, and stops cleanly (also waking handlers that were told
to stall, so a simulated timeout never outlives the test)::

    with LoopbackServer(handle) as server:
        requests.get(server.url + "/ping")
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query string
    query: dict[str, str]  # last value wins; comma lists stay as sent
    headers: dict[str, str]  # lower-cased names
    body: bytes
    #: when the call reached the server (its request line and headers read, before its body: a fake's latency
    #: counts from here, as a vendor's answer time does); 0: not served over HTTP (a test calling handle())
    arrived: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # stall this long before answering (a timeout drill); cut short on stop
    drop: bool = False  # close the connection without answering (the work done: an answer lost on the way)
    cut: bool = False  # send the status line, the headers and half the body, then close (an answer cut off)

    @classmethod
    def json(cls, status: int, payload: Any, content_type: str = "application/json; charset=utf-8",
             **headers: str) -> "Reply":
        return cls(status, json.dumps(payload).encode(), {"Content-Type": content_type, **headers})


Handler = Callable[[Request], Reply]


@dataclass
class RawAnswer:
    """A one-shot fault: the next call matching ``method`` and ``path`` (a regex searched in the path, or a
    Unisender method name) is answered ``status`` with exactly ``body`` and ``content_type``. ``work``: the fake
    does the call's work first (the answer was lost or mangled on the way back); otherwise nothing is done
    (a proxy or maintenance page answered instead of the API)."""

    body: bytes
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    method: str | None = None
    path: str | None = None
    work: bool = False

    def matches(self, method: str, path: str) -> bool:
        return (not self.method or self.method == method) and (not self.path or re.search(self.path, path) is not None)

    def reply(self) -> Reply:
        headers = {"Content-Type": self.content_type} if self.content_type else {}
        return Reply(self.status, self.body, headers)


def take_raw(answers: list[RawAnswer], method: str, path: str) -> RawAnswer | None:
    """Pop the first raw answer matching this call (each is used once)."""
    for answer in answers:
        if answer.matches(method, path):
            answers.remove(answer)
            return answer
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a client opening its 10 connections at once (an apply's
    # first round) while the accept loop is busy had a SYN dropped, and that call waited for the kernel's
    # 1 s retransmit (a vendor's servers do not); the backlog a server usually gets instead
    request_queue_size = 128


class LoopbackServer:
    """Serve ``handler`` on 127.0.0.1:<free port> until :meth:`stop` (or the ``with`` block ends)."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1") -> None:
        self._handler = handler
        self._stopping = threading.Event()
        self.date_offset = 0.0  # seconds the answers' Date is off this host's clock (a proxy's clock, a cache)
        outer = self

        class _RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY, as a vendor's servers set it: the handler writes the status and headers, then the body,
            # so with Nagle's algorithm on the body waited for the client's delayed ACK of the headers (~40 ms on
            # Linux loopback) and every call to a fake took ~45 ms instead of ~1 ms
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                arrived = time.monotonic()
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                request = Request(self.command, parts.path, query,
                                  {k.lower(): v for k, v in self.headers.items()}, body, arrived)
                try:
                    reply = outer._handler(request)
                except Exception as exc:  # a bug in the fake: answer 500 with the reason, keep serving
                    reply = Reply.json(500, {"title": "Fake Error", "status": 500, "detail": repr(exc)})
                if reply.delay and outer._stopping.wait(reply.delay):
                    return
                if reply.drop:  # no status line at all: the client reads the connection closed
                    self.close_connection = True
                    return
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    if reply.cut:  # the body's Content-Length announced, half of it sent: the client reads it cut
                        self.wfile.write(reply.body[:len(reply.body) // 2])
                        self.close_connection = True
                    elif reply.body:
                        self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout drill)
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def date_time_string(self, timestamp: float | None = None) -> str:  # the Date header's
                return super().date_time_string(time.time() + outer.date_offset if timestamp is None else timestamp)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        self._httpd = _Server((host, 0), _RequestHandler)
        self.host, self.port = self._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=f"fake-http-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        started = self._thread.is_alive()  # shutdown() waits for a serve loop: one never started never ends
        if started:
            self._httpd.shutdown()
        self._httpd.server_close()
        if started:
            self._thread.join(timeout=5)

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
