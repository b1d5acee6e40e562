"""/api/ledger: the whole ledger out of the service, for accounting (admin). Thin: parse,
call ledger.export, stream."""
from flask import Response

from .. import ledger
from ..auth.access import require
from ..ledger.export import COLUMNS, FORMATS
from .common import Blueprint
from .schemas import ErrorOut, ExportArgs

blp = Blueprint("ledger", __name__, url_prefix="/api/ledger", description="The ledger, exported (admin)")

_STREAM = {"schema": {"type": "string"}}
EXPORT_RESPONSE = {
    "description": "Entries with since < created_at <= until, in time order (ties by id), from one snapshot. "
                   f"Columns, in this order: {', '.join(COLUMNS)}. Times are UTC (RFC 3339). CSV has a header row, "
                   "empty cells for nulls, and a leading apostrophe on a text cell that starts with = + - @ (so "
                   "spreadsheets do not run it); NDJSON has one JSON object a line, exact. Streamed: an export that "
                   "fails part way ends the connection without the last chunk, so a client sees an incomplete "
                   "transfer, never a short file that looks whole.",
    "content": {"text/csv": _STREAM, "application/x-ndjson": _STREAM},
}


@blp.route("/export", methods=["GET"])
@require("ledger:export")
@blp.arguments(ExportArgs(), location="query")
@blp.doc(responses={"200": EXPORT_RESPONSE})
@blp.alt_response(404, schema=ErrorOut, description="user_not_found (user_id)")
@blp.alt_response(422, schema=ErrorOut, description="validation_error")
def export(args):
    """Ledger entries as CSV or NDJSON, streamed in constant memory."""
    fmt, user_id = args["format"], args.get("user_id")
    chunks = ledger.export(fmt, since=args.get("since"), until=args.get("until"), user_id=user_id)
    name = "ledger" + (f"-user-{user_id}" if user_id else "") + f".{fmt}"
    return Response(chunks, content_type=FORMATS[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "X-Accel-Buffering": "no"})
