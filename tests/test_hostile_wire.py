"""Hostile input a test client cannot send, over a raw socket to gunicorn as the Procfile runs
it: CR/LF/NUL header injection in Idempotency-Key and X-Request-ID, obs-folded headers,
request smuggling shapes (two Content-Lengths, Content-Length with chunked), chunked and
lying bodies past the 64 KiB limit, invalid UTF-8 in headers, an oversized header.

Injected: each raw request below. Observed: a 4xx answer in the one JSON error shape (also
when gunicorn's parser refuses malformed HTTP before the app sees it: gunicorn.conf.py
replaces its HTML error page); no injected header ever appears in a response; the ledger,
balances and idempotency claims are unchanged (invariants 2 and 4)."""
import json
import socket

import pytest
from sqlalchemy import text

from credits_app import ledger
from credits_app.extensions import db
from tests.chaos_fixtures import Api, stack_env, tokens_for
from tests.conftest import _fresh_url, make_app
from tests.services import Web

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(pg_server, tmp_path_factory):
    class _Req:  # _fresh_url wants a pytest request only for getfixturevalue
        def getfixturevalue(self, name):
            return pg_server
    url = _fresh_url("postgresql", _Req(), tmp_path_factory.mktemp("wire")).replace("+psycopg2", "")
    web = Web(stack_env(url, WEB_CONCURRENCY=1)).start()
    (token,) = tokens_for(url, "admin")
    api = Api(web.url, token)
    uid = api.post("/api/users", {"email": "wire@example.com", "name": "W"}).body["user_id"]
    assert api.post(f"/api/credits/{uid}/add", {"amount": 40}).status == 200
    app = make_app(url)
    yield {"web": web, "token": token, "uid": uid, "app": app}
    web.stop()
    with app.app_context():
        db.engine.dispose()


def state(app):
    with app.app_context():
        with db.engine.connect() as conn:
            out = tuple(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                        for t in ("ledger_entries", "idempotency_keys", "users"))
            out += (tuple(conn.execute(text("SELECT user_id, credits FROM credits ORDER BY 1")).all()),)
        assert ledger.verify() == []
    return out


def raw(web, data, timeout=20):
    """Send bytes, read the whole answer (the server closes or answers Connection: close)."""
    with socket.create_connection(("127.0.0.1", web.port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if _complete(b"".join(chunks)):
                    break
        except (socket.timeout, ConnectionResetError):
            pass
    return _parse(b"".join(chunks))


def _complete(buf):
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def _parse(buf):
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines and lines[0].startswith(b"HTTP/1."), f"no HTTP answer: {buf[:200]!r}"
    status = int(lines[0].split()[1])
    headers = [l.partition(b":")[0].strip().lower() for l in lines[1:]]
    hdr = {l.partition(b":")[0].strip().lower(): l.partition(b":")[2].strip() for l in lines[1:]}
    return status, headers, hdr, body


def request(live, method, path, extra_headers=b"", body=b"", content_length=True):
    uid = live["uid"]
    data = (f"{method} {path.format(uid=uid)} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Authorization: Bearer {live['token']}\r\nContent-Type: application/json\r\n").encode()
    if content_length:
        data += f"Content-Length: {len(body)}\r\n".encode()
    return data + extra_headers + b"\r\n" + body


ADD = b'{"amount": 5}'
CASES = {
    "CR in Idempotency-Key": b"Idempotency-Key: abc\rX-Injected: yes\r\n",
    "bare LF in Idempotency-Key": b"Idempotency-Key: abc\nX-Injected: yes\r\n",
    "NUL in Idempotency-Key": b"Idempotency-Key: a\x00b\r\n",
    "invalid UTF-8 in Idempotency-Key": b"Idempotency-Key: \xff\xfe\r\n",
    "obs-fold Idempotency-Key": b"Idempotency-Key: abc\r\n def\r\n",
    "space in Idempotency-Key": b"Idempotency-Key: a b\r\n",
    "256-char Idempotency-Key": b"Idempotency-Key: " + b"k" * 256 + b"\r\n",
    "CR in X-Request-ID with a key": b"X-Request-ID: abc\rSet-Cookie: evil=1\r\nIdempotency-Key: wire-x\x00\r\n",
    "oversized header": b"X-Big: " + b"a" * 20000 + b"\r\nIdempotency-Key: wire-big\r\n",
    # gunicorn joins repeated fields with commas ("wire-a,wire-b"): which key did the caller
    # mean? A proxy that keeps the first and a service that kept the last would double-charge.
    "two Idempotency-Key headers": b"Idempotency-Key: wire-a\r\nIdempotency-Key: wire-b\r\n",
}


@pytest.mark.parametrize("case", CASES)
def test_header_injection_is_refused_and_changes_nothing(live, case):
    before = state(live["app"])
    status, names, hdr, body = raw(live["web"], request(live, "POST", "/api/credits/{uid}/add", CASES[case], ADD))
    assert 400 <= status < 500, f"{case}: {status} {body[:200]!r}"
    assert b"x-injected" not in names and b"set-cookie" not in names, f"{case}: injected header answered: {names}"
    assert_json_error(hdr, body, case)
    assert state(live["app"]) == before, f"{case} changed something"


def assert_json_error(hdr, body, case):
    assert hdr.get(b"content-type", b"").startswith(b"application/json"), f"{case}: {hdr} {body[:200]!r}"
    err = json.loads(body)["error"]
    assert set(err) == {"code", "message", "details"} and err["code"], f"{case}: {err}"
    assert hdr.get(b"x-request-id"), f"{case}: no X-Request-ID"
    return err


def test_a_body_shorter_than_its_content_length_is_refused(live):
    """The client declares 20 bytes, sends a complete JSON change in 13 and stops sending: an
    incomplete request, refused (400) rather than applied from what happened to arrive."""
    before = state(live["app"])
    data = request(live, "POST", "/api/credits/{uid}/add", b"Idempotency-Key: wire-short\r\n", ADD)
    data = data.replace(f"Content-Length: {len(ADD)}".encode(), b"Content-Length: 20")
    with socket.create_connection(("127.0.0.1", live["web"].port), timeout=20) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status, _, hdr, body = _parse(answer)
    assert status == 400, (status, body[:200])
    assert assert_json_error(hdr, body, "short body")["code"] == "bad_request"
    assert state(live["app"]) == before


def test_a_chunked_body_past_the_limit_is_413_for_every_reader(live):
    """The schema API's seed-token hook reads the body before the parser does: a chunked
    body reaching the limit is refused there too (once, where the body is read), not handed
    to the hook cut at 64 KiB."""
    before = state(live["app"])
    sql = b'{"name": "wire_big", "sql": "ALTER TABLE users ADD COLUMN wire_big text", "token": "x"}'
    body = b"%x\r\n" % (len(sql) + 70000) + sql + b" " * 70000 + b"\r\n0\r\n\r\n"
    status, _, hdr, resp = raw(live["web"], request(live, "POST", "/api/schema/apply", b"Transfer-Encoding: chunked\r\n",
                                                    body, content_length=False))
    assert status == 413 and assert_json_error(hdr, resp, "chunked apply")["code"] == "payload_too_large", resp[:200]
    assert state(live["app"]) == before


MALFORMED = {  # refused by gunicorn's parser: (raw request, status, code)
    "garbage request line": (b"HELLO\r\n\r\n", 400, "bad_request"),
    "bad HTTP version": (b"GET / HTTP/9.x\r\nHost: x\r\n\r\n", 400, "bad_request"),
    "lower-case method": (b"get / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
    "request line past the limit": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    "header without a colon": (b"GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n", 400, "bad_request"),
    "too many headers": (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
                         431, "request_header_fields_too_large"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_http_gets_the_json_error_shape(live, case):
    data, expected_status, expected_code = MALFORMED[case]
    status, names, hdr, body = raw(live["web"], data)
    assert status == expected_status, f"{case}: {status} {body[:200]!r}"
    assert assert_json_error(hdr, body, case)["code"] == expected_code
    assert b"<html" not in body.lower()


def test_request_id_injection_is_never_echoed(live):
    """X-Request-ID with CR / LF / NUL / a header line: the answer's X-Request-ID is a fresh
    id (or the request is refused); no injected header appears."""
    for evil in (b"abc\rSet-Cookie: x=1", b"abc\nSet-Cookie: x=1", b"a\x00b", b"<script>", b"abc%0d%0aSet-Cookie:x"):
        status, names, hdr, body = raw(live["web"], request(live, "GET", "/api/credits/{uid}",
                                                           b"X-Request-ID: " + evil + b"\r\n"))
        assert b"set-cookie" not in names, (evil, names)
        if status == 200:
            assert hdr[b"x-request-id"] != evil and all(c not in hdr[b"x-request-id"] for c in b"\r\n\x00<%")
        else:
            assert 400 <= status < 500, (evil, status)


SMUGGLING = {
    "two different Content-Lengths": (b"Content-Length: 13\r\nContent-Length: 5\r\n", ADD, False),
    "Content-Length and chunked": (b"Content-Length: 13\r\nTransfer-Encoding: chunked\r\n",
                                   b"d\r\n" + ADD + b"\r\n0\r\n\r\n", False),
    "chunked past the body limit": (b"Transfer-Encoding: chunked\r\n",
                                    b"".join(b"4000\r\n" + b" " * 0x4000 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n",
                                    False),
    # Before the fix werkzeug cut a chunked body at 64 KiB and the app parsed the rest: this
    # one (valid JSON, then padding, then garbage) added 5 credits instead of a 413.
    "chunked past the limit, valid JSON in its first 64 KiB": (
        b"Transfer-Encoding: chunked\r\n",
        b"%x\r\n" % (13 + 70000 + 7) + ADD + b" " * 70000 + b"garbage" + b"\r\n0\r\n\r\n", False),
    "Content-Length of a terabyte": (b"Content-Length: 1099511627776\r\n", ADD, False),
    "negative Content-Length": (b"Content-Length: -1\r\n", ADD, False),
    "Content-Length past the limit, body cut short": (b"Content-Length: 70000\r\n", b"{" + b" " * 100, False),
}


@pytest.mark.parametrize("case", SMUGGLING)
def test_smuggling_and_oversized_bodies_are_refused(live, case):
    headers, body, with_length = SMUGGLING[case]
    before = state(live["app"])
    status, names, hdr, resp = raw(live["web"], request(live, "POST", "/api/credits/{uid}/add", headers, body,
                                                        content_length=with_length))
    assert 400 <= status < 500, f"{case}: {status} {resp[:200]!r}"
    assert_json_error(hdr, resp, case)
    if "limit" in case or "terabyte" in case:
        assert status == 413, f"{case}: {status}"
        assert json.loads(resp)["error"]["code"] == "payload_too_large"
    assert state(live["app"]) == before, f"{case} changed something"
