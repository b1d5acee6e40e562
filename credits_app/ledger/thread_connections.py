"""Each thread keeps the pooled PostgreSQL connection its hot-path statements run on
(ledger/fast_path.py, fetch_one), instead of checking one out of SQLAlchemy's pool and back in for
every request. A gunicorn thread serves request after request; the checkout and checkin
(pool lock, events, reset, autocommit switched on and off) are CPU spent on every request
to hand the thread back a connection it would take again at once.

What the pool did at each checkout still happens:
- a connection idle for longer than DB_PING_IDLE_SECONDS is pinged before it is used, and
  replaced if the server is gone (extensions.ping_idle_connections does this for the pool);
- after engine.dispose() (a lost server; tests) no thread uses a connection of the old pool
  again: the thread that disposed closes its own at once, and those of threads that have
  ended; a live thread closes its own at its next use, never under a statement in flight;
  a forked child never touches its parent's (closing one would end the parent's session on
  the server);
- at most half the pool is kept by threads, so the other half stays for everything else
  (ORM sessions, the admin API); threads beyond that check out per use. A kept
  connection whose thread has ended goes back to the pool when a slot is needed.
A kept connection stays in autocommit: each hot-path statement is its own transaction.
"""
import os
import threading
import time

from sqlalchemy import event

_local = threading.local()
_lock = threading.Lock()
_kept = []  # every _Kept of this process, for dispose() and for slots held by ended threads
_inherited = []  # a parent's, after a fork: referenced forever so that no finaliser touches them


class _Kept:
    __slots__ = ("engine", "pool", "connection", "owner", "pid", "used")

    def __init__(self, engine, connection):
        self.engine, self.pool, self.connection = engine, engine.pool, connection
        self.owner, self.pid, self.used = threading.current_thread(), os.getpid(), time.monotonic()


def checkout(engine, idle_seconds):
    """(connection, kept): a pooled connection (SQLAlchemy's proxy) in autocommit. When `kept`
    is False the caller gives it back with checkin() after use; a kept one it must not close
    (discard() it if it turns out dead). Raises the driver's error if no connection can be made."""
    kept = _mine().get(engine)
    if kept is not None:
        if kept.pool is engine.pool and kept.pid == os.getpid():
            now = time.monotonic()
            if now - kept.used <= idle_seconds or _answers(kept.connection):
                kept.used = now
                return kept.connection, True
        _let_go(kept)
    connection = engine.raw_connection()  # checkout events (the idle ping) run as usual
    try:
        connection.driver_connection.autocommit = True
    except Exception:
        connection.close()
        raise
    size, pid = getattr(engine.pool, "size", None), os.getpid()
    with _lock:
        for inherited in [k for k in _kept if k.pid != pid]:  # a parent's (threads do not survive a fork)
            _kept.remove(inherited)
            _inherited.append(inherited)
        mine = [k for k in _kept if k.pool is engine.pool]
        if size is None or len(mine) >= size() // 2:
            for ended in [k for k in mine if not k.owner.is_alive()][:1]:  # its slot, back to the pool
                _kept.remove(ended)
                checkin(ended.connection)
            mine = [k for k in _kept if k.pool is engine.pool]
        if size is not None and len(mine) < size() // 2:
            _mine()[engine] = kept = _Kept(engine, connection)
            _kept.append(kept)
            return connection, True
    return connection, False


def kept_by_this_thread(engine):
    """The connection this thread keeps for `engine`, or None."""
    kept = _mine().get(engine)
    return kept.connection if kept is not None else None


def checkin(connection):
    """Give back a connection checkout() did not keep."""
    driver = connection.driver_connection
    if driver is not None and not driver.closed:
        driver.autocommit = False
    connection.close()


def discard(engine, connection, error=None):
    """The connection is dead: invalidate it (the pool replaces it) and stop keeping it."""
    kept = _mine().get(engine)
    if kept is not None and kept.connection is connection:
        _forget(kept)
    connection.invalidate(error)


def watch(engine):
    """Close kept connections of a pool that engine.dispose() replaced (see the module doc)."""

    @event.listens_for(engine, "engine_disposed")
    def _disposed(engine):
        me = threading.current_thread()
        with _lock:
            stale = [k for k in _kept if k.engine is engine and k.pool is not engine.pool
                     and (k.owner is me or not k.owner.is_alive() or k.pid != os.getpid())]
        for kept in stale:
            _let_go(kept)


def _let_go(kept):
    """Stop keeping `kept`: close it if it is ours (a stale pool), forget it if a parent's."""
    _forget(kept)
    if kept.pid != os.getpid():
        _inherited.append(kept)
    else:
        kept.connection.invalidate()  # its pool was disposed: close it, never reuse it


def _forget(kept):
    if _mine().get(kept.engine) is kept:
        del _mine()[kept.engine]
    with _lock:
        if kept in _kept:
            _kept.remove(kept)


def _mine():
    """This thread's kept connections by engine (one engine per app: tests build several)."""
    try:
        return _local.by_engine
    except AttributeError:
        _local.by_engine = {}
        return _local.by_engine


def _answers(connection):
    try:
        with connection.driver_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False

