"""The strict JSON body parser every reader of a request body uses (the API's parser, the
schema API's hooks): one answer for what JSON parsers disagree on, and a 400, never a 500."""
import json
import re

from ..exceptions import MalformedJSON


# "\ud800" is valid JSON syntax but names half a character: no UTF-8 text (nor the database
# driver) can hold it. Only bodies with such an escape pay for the full check.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _no_constants(name):
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs):
    # {"amount": 1, "amount": 1000}: parsers disagree on which wins, so a proxy or audit
    # log could read one amount while the ledger applies the other. Refuse it.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return obj


# One decoder (json.loads with options builds a new one, scanner included, per call).
_STRICT_JSON = json.JSONDecoder(parse_constant=_no_constants, object_pairs_hook=_unique_keys)


def parse_json_body(raw):
    """Strict JSON: refuses NaN/Infinity, bad UTF-8, a byte-order mark, lone surrogate
    escapes, duplicate keys and nesting deep enough to blow the stack, all as a 400 rather
    than a 500."""
    try:
        value = _STRICT_JSON.decode(raw.decode("utf-8"))
        if _SURROGATE_ESCAPE.search(raw):
            json.dumps(value, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError on a lone half
        return value
    except (ValueError, RecursionError, UnicodeError) as e:
        raise MalformedJSON(str(e)[:200]) from None

