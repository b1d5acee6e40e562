"""Fresh request ids for requests that bring none: 32 hex digits of os.urandom each, as
uuid4().hex gives, drawn for 256 ids at a time.

Why a batch: getrandom() is a system call, and CPython lets go of the GIL around it. Drawn
per request, under load the request thread then waits for the GIL behind a sibling thread's
slice of Python, a wait the in-process CPU measure cannot see. Not a seeded generator: its ids could be predicted from the ones it
echoed. A forked child (a gunicorn worker) starts with an empty batch and a new lock, so no
two processes hand out the same ids."""
import os
import threading


class _RequestIds:
    BATCH = 256

    def __init__(self):
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self):
        self._lock = threading.Lock()
        self._hex, self._next = "", 0

    def __call__(self):
        with self._lock:
            if self._next >= len(self._hex):
                self._hex, self._next = os.urandom(16 * self.BATCH).hex(), 0
            start = self._next
            self._next += 32
            return self._hex[start:self._next]


new_request_id = _RequestIds()
