"""/api/users: create, read, list, update. No hard delete: the ledger must survive."""
from .. import users
from ..auth.access import require
from .common import Blueprint, decode_cursor, page
from .schemas import ErrorOut, UserIn, UserListArgs, UserOut, UserPage, UserPatch

blp = Blueprint("users", __name__, url_prefix="/api/users", description="Users and their zero balances")


@blp.route("", methods=["POST"])
@require("users:create")
@blp.arguments(UserIn())
@blp.response(201, UserOut)
@blp.alt_response(409, schema=ErrorOut, description="email_taken; constraint_violation (another unique rule)")
def create(body):
    """Create a user with a zero balance. Emails are unique, case-insensitively."""
    return users.create(body["email"], body["name"])


@blp.route("", methods=["GET"])
@require("users:read")
@blp.arguments(UserListArgs(), location="query")
@blp.response(200, UserPage)
def list_users(args):
    """Users by ascending id; `email` filters case-insensitively."""
    rows = users.find(email=args["email"], after_id=decode_cursor(args["cursor"]), limit=args["limit"] + 1)
    return page(rows, args["limit"], lambda u: u.user_id)


@blp.route("/<int:user_id>", methods=["GET"])
@require("users:read")
@blp.response(200, UserOut)
@blp.alt_response(404, schema=ErrorOut)
def get(user_id):
    return users.get(user_id)


@blp.route("/<int:user_id>", methods=["PATCH"])
@require("users:update")
@blp.arguments(UserPatch(), required=False)
@blp.response(200, UserOut)
@blp.alt_response(409, schema=ErrorOut, description="email_taken; constraint_violation (another unique rule)")
def update(body, user_id):
    """Change a user's name and/or email; an empty object changes nothing."""
    return users.update(user_id, **body)
