"""The daily grant's runs: plan a UTC date's run as user-id chunks, run chunks, report runs.

A run is one row of daily_grant_runs per UTC date; its chunks (user-id ranges fixed when
the run is planned) are rows of daily_grant_chunks. Crediting is ledger.grant_daily_chunk,
which is exactly-once per (user, date) on its own; this module only decides WHAT to run and
records progress in the same transaction as the credits, so counts are exact under retries,
duplicate jobs and concurrent workers.

Catch-up: once 00:00 UTC has passed, today is due until its run is done. An earlier date is
due when its run is not done (missing, running or failed), it lies within
DAILY_GRANT_CATCHUP_DAYS before today, and it is not before the first date the schedule
covered: the earliest run marked `scheduled` (the scheduler plans today's run when it
registers its entry, the midnight tick and catch-up mark the dates they start). Dates from
before the scheduler first ran, or granted only by hand, are never made up.
"""
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from flask import current_app
from sqlalchemy import bindparam, text

from .. import ledger
from ..events import outbox
from ..exceptions import InvalidRequest
from ..extensions import db
from ..ledger.records import iso
from ..types import UTCDateTime, utcnow

RUN_COLUMNS = ("grant_date, status, amount, chunk_size, chunks_total, chunks_done, users_credited, "
               "started_at, finished_at, max_user_id, last_error, scheduled")


@dataclass(frozen=True)
class Run:
    grant_date: date
    status: str
    amount: int
    chunk_size: int
    chunks_total: int
    chunks_done: int
    users_credited: int
    started_at: datetime
    finished_at: datetime | None
    max_user_id: int | None  # the run covers user_id <= max_user_id (None: no users when planned)
    last_error: str | None  # the latest chunk failure that used up its retries
    scheduled: bool  # the schedule asked for this date (else only an operator did)


@dataclass(frozen=True)
class Chunk:
    lo: int  # user_id >= lo
    hi: int  # user_id < hi


def utc_today(now=None):
    """The grant date for `now` (default: the current instant): its UTC calendar date,
    whatever the process's local time zone."""
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise ValueError("naive datetime given; use an aware datetime")
    return now.astimezone(timezone.utc).date()


def parse_date(raw):
    """A YYYY-MM-DD string (or a date) as a date. Raises InvalidRequest."""
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return raw
    try:
        return date.fromisoformat(raw)
    except (TypeError, ValueError):
        raise InvalidRequest("date must be YYYY-MM-DD", field="date", value=str(raw)) from None


def check_requested_date(grant_date, today=None):
    """A date an operator asks to grant (API, CLI) as a date. It must be today (UTC) or one
    of the DAILY_GRANT_CATCHUP_DAYS before it, or already have a run (to finish it): every
    other date would be one more +amount for every user (a typo such as 2099-01-01 or
    0001-01-01 would grant one), and a run planned ahead of its day would leave out the
    users who sign up before that day comes. Raises InvalidRequest (422)."""
    grant_date = parse_date(grant_date)
    today = today or utc_today()
    window = current_app.config["DAILY_GRANT_CATCHUP_DAYS"]
    earliest = today - timedelta(days=window)
    if earliest <= grant_date <= today or get_run(grant_date) is not None:
        return grant_date
    why = "is in the future" if grant_date > today else f"is more than {window} days ago (DAILY_GRANT_CATCHUP_DAYS)"
    raise InvalidRequest(f"date {grant_date} {why}: grant today ({today}, UTC) or a date since {earliest}",
                         field="date")


# Chunk bounds are the ids that exist: every DAILY_GRANT_CHUNK_SIZE-th user id in order opens
# a chunk, which ends where the next one opens (the last one just past max_user_id). Numbered
# over the primary key inside the database, so planning costs follow the number of users,
# never the spread of their ids, and no id list is ever held in Python.
_PLAN_CHUNKS = """
INSERT INTO daily_grant_chunks (grant_date, lo, hi)
SELECT :gd, user_id, COALESCE(LEAD(user_id) OVER (ORDER BY user_id), :hwm + 1)
FROM (SELECT user_id, ROW_NUMBER() OVER (ORDER BY user_id) AS n FROM users WHERE user_id <= :hwm) AS ids
WHERE (n - 1) % :size = 0"""
# A chunk's upper bound is exclusive and stored as BIGINT, so the largest BIGINT cannot be
# covered; a user holding that id is left out rather than stop the grant for everyone.
_MAX_COVERED_ID = 2**63 - 2


def plan(grant_date, amount=None, scheduled=False):
    """Plan the run for `grant_date` if it has none (amount, chunking and max_user_id are
    fixed then) and return it. The run covers the users with user_id <= max_user_id, the
    largest id when it is planned. `scheduled` records that the schedule (not an operator)
    asked for the date; catch-up counts from the first such date. Safe to call concurrently
    and repeatedly."""
    grant_date = parse_date(grant_date)
    amount = amount or current_app.config["DAILY_GRANT_AMOUNT"]
    size = current_app.config["DAILY_GRANT_CHUNK_SIZE"]
    with db.engine.begin() as conn:
        hwm = conn.execute(text("SELECT MAX(user_id) FROM users WHERE user_id <= :cap"),
                           {"cap": _MAX_COVERED_ID}).scalar()
        created = conn.execute(
            text("INSERT INTO daily_grant_runs (grant_date, status, amount, chunk_size, chunks_total, chunks_done, "
                 "users_credited, started_at, max_user_id, scheduled) VALUES (:gd, 'running', :amount, :size, 0, 0, "
                 "0, :now, :hwm, :scheduled) ON CONFLICT (grant_date) DO NOTHING").bindparams(
                bindparam("now", type_=UTCDateTime)),
            {"gd": grant_date, "amount": amount, "size": size, "now": utcnow(), "hwm": hwm,
             "scheduled": scheduled}).rowcount
        if created:
            total = 0 if hwm is None else conn.execute(text(_PLAN_CHUNKS),
                                                       {"gd": grant_date, "hwm": hwm, "size": size}).rowcount
            run = conn.execute(
                text("UPDATE daily_grant_runs SET chunks_total = :total, status = :status, finished_at = :finished "
                     f"WHERE grant_date = :gd RETURNING {RUN_COLUMNS}").bindparams(
                    bindparam("finished", type_=UTCDateTime)).columns(started_at=UTCDateTime, finished_at=UTCDateTime),
                {"total": total, "status": "running" if total else "done", "finished": None if total else utcnow(),
                 "gd": grant_date}).one()
            if not total:  # no users: done as planned
                _completed(conn, _run(run))
        elif scheduled:
            conn.execute(text("UPDATE daily_grant_runs SET scheduled = :yes WHERE grant_date = :gd "
                              "AND scheduled = :no"), {"gd": grant_date, "yes": True, "no": False})
    return get_run(grant_date)


def start(grant_date, amount=None, scheduled=False):
    """plan() the date, then return (run, chunks still to do). A failed run is set running
    again: the caller is about to run or enqueue its chunks."""
    run = plan(grant_date, amount, scheduled)
    if run.status == "failed":
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE daily_grant_runs SET status = 'running' WHERE grant_date = :gd "
                              "AND status = 'failed'"), {"gd": run.grant_date})
        run = get_run(run.grant_date)
    return run, pending_chunks(run.grant_date)


def pending_chunks(grant_date):
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT lo, hi FROM daily_grant_chunks WHERE grant_date = :gd "
                                 "AND finished_at IS NULL ORDER BY lo"), {"gd": grant_date}).all()
    return [Chunk(r.lo, r.hi) for r in rows]


def run_chunk(grant_date, amount, lo, hi):
    """Credit one chunk of a planned run and record it; returns users credited by THIS call
    (0 when the chunk was already done)."""
    grant_date = parse_date(grant_date)

    def bookkeeping(conn, credited):
        now = utcnow()
        marked = conn.execute(
            text("UPDATE daily_grant_chunks SET users_credited = :n, finished_at = :now "
                 "WHERE grant_date = :gd AND lo = :lo AND finished_at IS NULL").bindparams(
                bindparam("now", type_=UTCDateTime)), {"n": credited, "now": now, "gd": grant_date, "lo": lo}).rowcount
        if marked:
            # A retry of an unfinished chunk lands here once; a re-run of a finished one never.
            run = conn.execute(
                text("UPDATE daily_grant_runs SET chunks_done = chunks_done + 1, users_credited = users_credited + :n, "
                     "status = CASE WHEN chunks_done + 1 = chunks_total THEN 'done' ELSE status END, "
                     "finished_at = CASE WHEN chunks_done + 1 = chunks_total THEN :now ELSE finished_at END "
                     f"WHERE grant_date = :gd RETURNING {RUN_COLUMNS}").bindparams(bindparam("now", type_=UTCDateTime))
                .columns(started_at=UTCDateTime, finished_at=UTCDateTime),
                {"n": credited, "now": now, "gd": grant_date}).one()
            if run.chunks_done == run.chunks_total:  # this chunk finished the run: once per run
                _completed(conn, _run(run))
        elif credited:
            # Users credited outside the plan (a chunk re-run after it was marked done, e.g.
            # users who were at the cap then): still count them.
            conn.execute(text("UPDATE daily_grant_runs SET users_credited = users_credited + :n "
                              "WHERE grant_date = :gd"), {"n": credited, "gd": grant_date})

    return ledger.grant_daily_chunk(grant_date, amount, lo, hi, bookkeeping=bookkeeping)


def mark_failed(grant_date, lo, error):
    """Record that the chunk starting at `lo` failed its last retry: its run, unless done,
    becomes `failed` with `error` (the run cannot finish until the chunk runs again, which
    the next catch-up does). Returns True when the run was marked."""
    with db.engine.begin() as conn:
        return bool(conn.execute(
            text("UPDATE daily_grant_runs SET status = 'failed', last_error = :error WHERE grant_date = :gd "
                 "AND status <> 'done' AND EXISTS (SELECT 1 FROM daily_grant_chunks WHERE grant_date = :gd "
                 "AND lo = :lo AND finished_at IS NULL)"),
            {"gd": parse_date(grant_date), "lo": lo, "error": error[:500]}).rowcount)


def _completed(conn, run):
    """The run's grant.run.completed event, in the transaction that finished it."""
    outbox.emit(conn, "grant.run.completed", {
        "grant_date": run.grant_date.isoformat(), "amount": run.amount, "users_credited": run.users_credited,
        "chunks_total": run.chunks_total, "started_at": iso(run.started_at), "finished_at": iso(run.finished_at),
        "scheduled": run.scheduled}, at=run.finished_at)


def run_date(grant_date):
    """Run (or complete) a date's grant in this process, chunk after chunk. Idempotent."""
    run, chunks = start(grant_date)
    for chunk in chunks:
        run_chunk(run.grant_date, run.amount, chunk.lo, chunk.hi)
    return get_run(run.grant_date)


def due_dates(today=None):
    """Dates the schedule grants now (see the module docstring), oldest first; today is
    always among them until its run is done."""
    today = today or utc_today()
    window = current_app.config["DAILY_GRANT_CATCHUP_DAYS"]
    with db.engine.connect() as conn:
        first = conn.execute(text("SELECT MIN(grant_date) FROM daily_grant_runs WHERE scheduled = :yes"),
                             {"yes": True}).scalar()
        done = conn.execute(text("SELECT grant_date FROM daily_grant_runs WHERE grant_date >= :since "
                                 "AND status = 'done'"), {"since": today - timedelta(days=window)}).scalars().all()
    done = {parse_date(d) for d in done}
    since = today if first is None else min(today, max(parse_date(first), today - timedelta(days=window)))
    days = [since + timedelta(days=n) for n in range((today - since).days + 1)]
    return [d for d in days if d not in done]


def get_run(grant_date):
    with db.engine.connect() as conn:
        row = conn.execute(text(f"SELECT {RUN_COLUMNS} FROM daily_grant_runs WHERE grant_date = :gd")
                           .columns(started_at=UTCDateTime, finished_at=UTCDateTime),
                           {"gd": parse_date(grant_date)}).first()
    return _run(row) if row else None


def recent_runs(limit=30):
    """Runs, newest date first."""
    with db.engine.connect() as conn:
        rows = conn.execute(text(f"SELECT {RUN_COLUMNS} FROM daily_grant_runs ORDER BY grant_date DESC LIMIT :n")
                            .columns(started_at=UTCDateTime, finished_at=UTCDateTime), {"n": limit}).all()
    return [_run(r) for r in rows]


def _run(row):
    return Run(parse_date(row.grant_date) if isinstance(row.grant_date, str) else row.grant_date, row.status,
               row.amount, row.chunk_size, row.chunks_total, row.chunks_done, row.users_credited, row.started_at,
               row.finished_at, row.max_user_id, row.last_error, bool(row.scheduled))
