"""A real HTTP receiver on 127.0.0.1 for the webhooks tests.

It records every request it reads (headers, body, when) and answers as its `mode` says:
- "ok": 200; "error": 500;
- "hang": never answers (holds the request until released or stopped), so the sender's
  read timeout fires;
- "delay": 200 after `delay` seconds;
and `down()` closes its listening socket (connections are refused) until `up()`, on the
same port. Nothing here is mocked: the sender speaks HTTP to a socket.
"""
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.services import free_port

HANG_SECONDS = 120  # a hung request's upper bound, should a test forget to release it


@dataclass
class Received:
    headers: dict  # lower-case names
    body: bytes
    at: float  # time.monotonic() on arrival
    status: int | None = None  # what was answered; None: nothing (hang)
    answered_at: float | None = None

    @property
    def msg_id(self):
        return self.headers.get("webhook-id")


@dataclass
class Receiver:
    mode: str = "ok"
    delay: float = 0.0
    requests: list = field(default_factory=list)
    port: int = field(default_factory=free_port)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                request = Received({k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                with receiver._lock:
                    receiver.requests.append(request)
                mode = receiver.mode
                if mode == "hang":
                    receiver._release.wait(HANG_SECONDS)
                    self.close_connection = True
                    return
                if mode == "delay":
                    time.sleep(receiver.delay)
                request.status = 500 if mode == "error" else 200
                request.answered_at = time.monotonic()
                self.send_response(request.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._release.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def release(self):
        """Let go of the hung requests (they end without an answer)."""
        self._release.set()

    def down(self):
        """Stop listening: connections are refused until up()."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def up(self):
        return self.start()

    def stop(self):
        self.release()
        self.down()

    def received(self, status=None):
        """The requests read so far (those answered `status`, if given)."""
        with self._lock:
            return [r for r in self.requests if status is None or r.status == status]

    def ids(self, status=None):
        return [r.msg_id for r in self.received(status)]
