"""JSON logs: one line per request (written by the app, which alone knows the route and the
token subject; gunicorn's own access log stays off) and one per job (worker/)."""
import collections
import json
import logging
import sys
import threading
import time
from datetime import datetime, timezone

from flask import g, request


_ENCODER = json.JSONEncoder(default=str)  # json.dumps(default=...) would build one per line


class JsonFormatter(logging.Formatter):
    def format(self, record):
        line = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _ENCODER.encode(line)


class BackgroundStreamHandler(logging.StreamHandler):
    """Formats a record in the thread that logs it and writes the lines from a writer thread,
    a batch every INTERVAL seconds (and on flush(), which logging.shutdown() calls at exit).

    Why (gunicorn workers only, write_in_background()): a write to stderr is a system call,
    and a system call lets go of the GIL. Under load another request thread takes it, and the
    thread that logged waits behind that thread's whole slice of Python before it can answer;
    written inline, the request line would cost every request that wait.
    The costs: a worker killed outright (SIGKILL, OOM) loses at most INTERVAL of log lines;
    while stderr cannot take lines (a full disk, a closed or stalled pipe) at most MAX_PENDING
    wait in memory, the rest are dropped and a warning line says how many once writing works
    again. The ledger, not the log, is the record of money."""

    INTERVAL = 0.02
    MAX_PENDING = 10_000
    # PIPE_BUF: a pipe never interleaves another process's output into a write this size (the
    # lines are ASCII: the JSON encoder escapes the rest, so characters are bytes). A single
    # longer line (a traceback) is written alone, and may interleave, as it did inline.
    CHUNK = 4096

    def __init__(self, stream):
        super().__init__(stream)
        self._pending = collections.deque()  # append and popleft are atomic: no lock to log
        self._writing = threading.Lock()  # one writer at a time, so lines keep their order
        self._stop = threading.Event()  # (not _closed: logging.Handler uses that name)
        self.dropped = 0  # lines dropped since the last warning; changed under self.lock
        threading.Thread(target=self._write_until_closed, name="log-writer", daemon=True).start()

    def emit(self, record):  # called under self.lock (Handler.handle)
        if len(self._pending) >= self.MAX_PENDING:
            self.dropped += 1
            return
        try:
            self._pending.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)

    def flush(self, timeout=-1):
        """Write what is pending; False if another flush held the stream for `timeout` s."""
        if not self._writing.acquire(timeout=timeout):
            return False
        try:
            lines = []
            while self._pending:
                lines.append(self._pending.popleft())
            with self.lock:
                dropped, self.dropped = self.dropped, 0
            written = 0
            try:
                if dropped:
                    self.stream.write(self._dropped_line(dropped))
                    dropped = 0
                while written < len(lines):
                    end, size = written + 1, len(lines[written])
                    while end < len(lines) and size + len(lines[end]) <= self.CHUNK:
                        size += len(lines[end])
                        end += 1
                    self.stream.write("".join(lines[written:end]))
                    written = end
                self.stream.flush()
            except (OSError, ValueError):  # stderr refuses (full, closed): drop, and say so later
                with self.lock:
                    self.dropped += dropped + len(lines) - written
            return True
        finally:
            self._writing.release()

    def _dropped_line(self, count):
        record = logging.LogRecord("credits.logs", logging.WARNING, "", 0,
                                   f"{count} log lines dropped: stderr could not take them", (), None)
        record.fields = {"dropped": count}
        return self.format(record) + self.terminator

    def close(self):
        self._stop.set()
        self.flush(timeout=5)
        super().close()

    def _write_until_closed(self):
        while not self._stop.wait(self.INTERVAL):
            try:
                self.flush()
            except Exception:  # as StreamHandler: a logging failure never kills the process
                pass


def write_in_background():
    """Swap the app's stderr handler for a BackgroundStreamHandler (called in each gunicorn
    worker once it has started: the writer thread belongs to that process)."""
    handlers = logging.getLogger("credits").handlers  # the one list every configured logger shares
    for i, handler in enumerate(handlers):
        if isinstance(handler.formatter, JsonFormatter) and type(handler) is logging.StreamHandler:
            background = BackgroundStreamHandler(handler.stream)
            background.setFormatter(handler.formatter)
            background.setLevel(handler.level)
            handlers[i] = background


def configure(level="INFO"):
    """Route the app's loggers to stderr as JSON (idempotent)."""
    # No line shows the thread or process, so don't collect them for every record (the
    # logging module's public switches).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logger = logging.getLogger("credits")
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
    # Our modules' loggers, RQ's own (rq adds its own coloured handler only to a logger that
    # has none) and Python's warnings (a library's FutureWarning: raw stderr text otherwise)
    # go through the same formatter.
    logging.captureWarnings(True)
    for name in ("credits_app", "worker", "rq.worker", "rq.scheduler", "rq_scheduler.scheduler", "py.warnings"):
        sub = logging.getLogger(name)
        sub.handlers = logger.handlers
        sub.propagate = False
        sub.setLevel(level)
    return logger


request_log = logging.getLogger("credits.request")
MAX_PATH = 1000  # a client chooses the path: an 8 KB one would make each line 8 KB


def _start():
    g.log_started = time.perf_counter()


def _log(response):
    req, ctx = request._get_current_object(), g._get_current_object()  # behind the proxy, once (docs/stock.md, 5)
    started = ctx.pop("log_started", None)
    if started is not None:
        request_log.info("request", extra={"fields": {
            "request_id": ctx.get("request_id"), "method": req.method,
            "route": req.url_rule.rule if req.url_rule else None, "path": req.path[:MAX_PATH],
            "status": response.status_code, "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "subject": ctx.get("actor"),
        }})
    return response


def init_app(app):
    configure(app.config.get("LOG_LEVEL", "INFO"))
    app.before_request(_start)
    app.after_request(_log)
