"""The ledger out of the service, for accounting: every entry in a time window (since, until],
of one user or all, as CSV or NDJSON, streamed in constant memory (a server-side cursor on
PostgreSQL, the cursor itself on SQLite). The API and `flask credits export` share it.

Rows come in time order, ties by id (for one user: entry order, by the time rule), from one
snapshot. Per user, the amounts exported up to `until` sum to the balance as of `until`.
"""
import csv
import io
import json

from sqlalchemy import bindparam, text

from ..exceptions import InvalidRequest, UserNotFound
from ..extensions import db
from ..types import UTCDateTime
from .reads import EARLIEST, LATEST
from .records import ENTRY_COLUMNS, entry_from_row
from .rules import check_user_id

FORMATS = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}
# The documented column order (CSV header, NDJSON keys): the API's entry fields. Times are
# UTC in RFC 3339 with microseconds, as the API writes them.
COLUMNS = [c.strip() for c in ENTRY_COLUMNS.split(",")]
BATCH = 2000  # rows fetched per round trip, and written per chunk

_WINDOW = "created_at > :since AND created_at <= :until"
_ALL = text(f"SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE {_WINDOW} ORDER BY created_at, id")
_ONE_USER = text(f"SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE user_id = :uid AND {_WINDOW} "
                 "ORDER BY created_at, id")
# A spreadsheet runs a cell that starts with one of these as a formula; CSV text cells that
# do are written with a leading apostrophe (OWASP's advice). NDJSON is exact.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_TEXT_COLUMNS = {"reason", "actor", "idempotency_key"}


def export(fmt, *, since=None, until=None, user_id=None):
    """Check the request now (raises InvalidRequest, UserNotFound), then return an iterator of
    text chunks. The iterator holds a database connection until it is exhausted or closed."""
    if fmt not in FORMATS:
        raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}", field="format")
    since, until = since or EARLIEST, until or LATEST
    if since >= until:
        raise InvalidRequest("since must be before until", field="since")
    params = {"since": since, "until": until}
    stmt = _ALL
    if user_id is not None:
        check_user_id(user_id)
        with db.engine.connect() as conn:
            if conn.execute(text("SELECT 1 FROM users WHERE user_id = :uid"), {"uid": user_id}).first() is None:
                raise UserNotFound(user_id)
        params["uid"], stmt = user_id, _ONE_USER
    stmt = stmt.bindparams(bindparam("since", type_=UTCDateTime), bindparam("until", type_=UTCDateTime)
                           ).columns(created_at=UTCDateTime)
    return (_csv if fmt == "csv" else _ndjson)(_entries(db.engine, stmt, params))


def _entries(engine, stmt, params):
    # read_only: on SQLite a deferred transaction, so writers go on while the export runs.
    with engine.connect().execution_options(stream_results=True, yield_per=BATCH, read_only=True) as conn:
        for row in conn.execute(stmt, params):
            yield entry_from_row(row)


def _batches(entries):
    batch = []
    for entry in entries:
        batch.append(entry)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _values(entry):
    return [getattr(entry, column) for column in COLUMNS]


def _csv(entries):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    yield out.getvalue()
    for batch in _batches(entries):
        out.seek(0)
        out.truncate()
        for entry in batch:
            writer.writerow([_csv_cell(column, value) for column, value in zip(COLUMNS, _values(entry))])
        yield out.getvalue()


def _csv_cell(column, value):
    if value is None:
        return ""
    if column == "created_at" or column == "grant_date":
        return value.isoformat()
    if column in _TEXT_COLUMNS and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _ndjson(entries):
    for batch in _batches(entries):
        yield "".join(json.dumps(dict(zip(COLUMNS, [_json_value(v) for v in _values(entry)])),
                                 ensure_ascii=False) + "\n" for entry in batch)


def _json_value(value):
    return value.isoformat() if hasattr(value, "isoformat") else value
