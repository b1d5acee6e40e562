"""What the claims of a token may hold, for tokens minted here and tokens presented to the
service alike (an identity provider's included).

The service stores two claims: `sub` becomes the actor of every ledger entry and the scope
of Idempotency-Keys (VARCHAR(200)), and `jti` is what a revocation names (VARCHAR(128)). So
both must fit their columns and be text PostgreSQL can hold, or every change the token makes
would fail. Some subjects are the service's own (`cli`, `system:...`): no token may carry
one, or the ledger could show forged entries of the service itself."""
import unicodedata

SUBJECT_MAX = 200  # ledger_entries.actor, idempotency_keys.scope
JTI_MAX = 128  # revoked_tokens.jti, and so what POST /api/auth/revoke accepts
USER_ID_MAX = 2**63 - 1  # users.user_id is a BIGINT

# The service's own actors. Every actor the service records for itself must be one of these
# or start with SYSTEM_PREFIX, so that is_reserved_subject() refuses it to every token.
CLI_ACTOR = "cli"
SYSTEM_PREFIX = "system:"

# Characters that pass for a letter of a reserved subject (or its colon) but that Unicode
# normalisation leaves apart: Cyrillic, Greek and small-capital look-alikes, and the ASCII
# l/1/| and i that many fonts draw alike.
_LOOK_ALIKES = str.maketrans({
    "с": "c", "ϲ": "c", "ᴄ": "c",
    "і": "l", "ӏ": "l", "ι": "l", "ı": "l", "ɩ": "l", "ɪ": "l", "ʟ": "l", "i": "l", "1": "l", "|": "l",
    "ѕ": "s", "ꜱ": "s",
    "у": "y", "ү": "y", "ʏ": "y", "γ": "y",
    "т": "t", "τ": "t", "ᴛ": "t",
    "е": "e", "ҽ": "e", "ᴇ": "e",
    "м": "m", "ᴍ": "m",
    "∶": ":", "꞉": ":", "ː": ":", "˸": ":", "׃": ":", "։": ":", "፡": ":",
})
_INVISIBLE = {"Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp"}  # controls, format marks, combining marks, spaces
_BLANK_LETTERS = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}  # fillers drawn as nothing


def _skeleton(text):
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    return "".join(c for c in text if unicodedata.category(c) not in _INVISIBLE and c not in _BLANK_LETTERS
                   ).translate(_LOOK_ALIKES)


_CLI_SKELETON, _SYSTEM_SKELETON = _skeleton(CLI_ACTOR), _skeleton(SYSTEM_PREFIX)


def is_reserved_subject(sub):
    """True for `cli` and anything starting with `system:`, in any case, with spaces or
    invisible characters around or inside, in compatibility forms (fullwidth, styled
    letters) or spelt with look-alike letters."""
    skeleton = _skeleton(sub)
    return skeleton == _CLI_SKELETON or skeleton.startswith(_SYSTEM_SKELETON)


def _text_problem(value, maximum):
    if not isinstance(value, str) or not 1 <= len(value) <= maximum:
        return f"must be a string of 1-{maximum} characters"
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON) is half a character
        return "must be valid Unicode text"
    return None


def subject_problem(sub):
    """What is wrong with `sub` as a token subject, or None when it may be one."""
    problem = _text_problem(sub, SUBJECT_MAX)
    if problem is None and is_reserved_subject(sub):
        problem = f"is reserved for the service's own entries ({CLI_ACTOR!r}, {SYSTEM_PREFIX!r}...)"
    return problem


def jti_problem(jti):
    """What is wrong with `jti` as a token id, or None when a revocation can name it."""
    return _text_problem(jti, JTI_MAX)


def problem(claims):
    """(claim, what is wrong with it) for the first claim of a verified token the service
    cannot rely on, or None. An unknown `role` is not a problem here: it is a 403, not a 401."""
    role, user_id = claims.get("role"), claims.get("user_id")
    checks = (
        ("sub", subject_problem(claims.get("sub"))),
        ("role", None if isinstance(role, str) and role else "must be a non-empty string"),
        ("jti", jti_problem(claims.get("jti"))),
        ("exp", None if "exp" in claims else "is required: a token without an expiry is refused"),
        # Checked whenever present: whoami echoes it, and a user token reads with it.
        ("user_id", None if (user_id is None and role != "user") or _is_user_id(user_id)
         else f"must be an integer from 1 to {USER_ID_MAX} (required for role user)"),
    )
    return next(((claim, message) for claim, message in checks if message), None)


def _is_user_id(value):
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= USER_ID_MAX
