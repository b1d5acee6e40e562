"""Flask and werkzeug as this service uses them: the app, URL map and request classes that
create_app() builds the app from. Each differs from the stock class where the stock one
answered in HTML or handed the app an incomplete body (docs/stock.md)."""
import io

from flask import Flask, Request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.routing import IntegerConverter, Map
from werkzeug.utils import cached_property


class AsciiIntegerConverter(IntegerConverter):
    """`<int:...>` with ASCII digits only and no leading zero. Python's \\d also matches
    fullwidth '１' and Arabic-Indic '١', and int() reads '01' as 1, so /api/credits/１/add and
    /api/credits/01/add would reach user 1 by paths that no proxy rule, rate limit or log
    search written for /api/credits/1 recognises."""

    regex = r"0|[1-9][0-9]*"
    description = "a positive integer in ASCII digits, without a sign or leading zero"  # a 404 says so


class NoSlashMergingMap(Map):
    """werkzeug answers /api/credits//1 with a 308 redirect to /api/credits/1 and an HTML
    body, a response Flask sends without any error handler seeing it: a 404 JSON instead.
    `<int:...>` is AsciiIntegerConverter."""

    default_converters = {**Map.default_converters, "int": AsciiIntegerConverter}

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("merge_slashes", False)
        super().__init__(*args, **kwargs)


class CreditsRequest(Request):
    """A body with a Content-Length is read in one call of that length. werkzeug reads it
    through a stream wrapper that asks gunicorn for 64 KB at a time until an empty read: even
    a credit change's few bytes take several reads through two layers of Python, all holding
    the GIL. Limits and errors stay werkzeug's: a declared length over MAX_CONTENT_LENGTH is
    413, a failed read is ClientDisconnected (400), and a chunked body (no Content-Length) is
    read through werkzeug's stream. Stricter than werkzeug behind gunicorn, for every reader
    of the body (the parser, the schema API's hooks): a body shorter than its Content-Length
    (the client stopped sending) is ClientDisconnected too, where werkzeug hands the app what
    has arrived; and a chunked body that reaches MAX_CONTENT_LENGTH is 413, where werkzeug
    cuts it there without an error and the app would parse what is left (a valid change in
    the first 64 KB would be applied)."""

    @cached_property
    def stream(self):
        length = self.content_length
        limit = self.max_content_length
        if length is None:
            body = super().stream.read()
            if limit is not None and len(body) >= limit:
                raise RequestEntityTooLarge()
            return io.BytesIO(body)
        if limit is not None and length > limit:
            raise RequestEntityTooLarge()
        try:
            body = self.environ["wsgi.input"].read(length)
        except (OSError, ValueError):
            raise ClientDisconnected() from None
        if len(body) < length:  # the client stopped sending: an incomplete request is not applied
            raise ClientDisconnected()
        return io.BytesIO(body)


class CreditsFlask(Flask):
    """Flask with the URL map and request class above, and OPTIONS answered without a body."""

    url_map_class = NoSlashMergingMap
    request_class = CreditsRequest

    def make_default_options_response(self):
        # Flask's answer is a 200 with an empty text/html body; there is nothing to send but
        # the Allow header, and no HTML from this service.
        response = super().make_default_options_response()
        response.status_code = 204
        response.headers.remove("Content-Type")
        return response
