"""Bad input always gets a JSON error with the right status, and changes nothing."""
import json
import os
import re

import pytest

from tests.conftest import new_user


def _error(r, status, code=None):
    assert r.status_code == status, (r.status_code, r.data[:300])
    assert r.is_json, r.data[:300]
    err = r.get_json()["error"]
    assert set(err) == {"code", "message", "details"}
    if code:
        assert err["code"] == code, err
    assert r.headers["X-Request-ID"]
    return err


@pytest.fixture
def uid(client):
    return new_user(client)


@pytest.mark.parametrize("amount", [0, -1, -(2**63), 1.5, 5.0, True, False, "5", None, [], {}, 2**63, 10**400])
def test_bad_amounts_are_422(client, uid, amount):
    for op in ("add", "deduct"):
        err = _error(client.post(f"/api/credits/{uid}/{op}", json={"amount": amount}), 422)
        assert list(err["details"]["fields"]) == ["amount"]  # one shape, whichever layer refused it
    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == 0


def test_amount_over_configured_maximum(app, client, uid):
    app.config["MAX_AMOUNT"] = 1000
    err = _error(client.post(f"/api/credits/{uid}/add", json={"amount": 1001}), 422, "validation_error")
    assert err["details"] == {"maximum": 1000, "fields": {"amount": ["amount must be at most 1000"]}}
    assert client.post(f"/api/credits/{uid}/add", json={"amount": 1000}).status_code == 200


@pytest.mark.parametrize("raw", [b"{", b"{'amount': 1}", b'{"amount": NaN}', b'{"amount": Infinity}',
                                 b'{"amount": 1e309}', b"\xff\xfe", b'{"amount": 1}garbage',
                                 b"[" * 30000 + b"]" * 30000, b'\xef\xbb\xbf{"amount": 1}',
                                 b'{"amount": 1, "amount": 1000}'])
def test_malformed_or_hostile_json(client, uid, raw):
    r = client.post(f"/api/credits/{uid}/add", data=raw, content_type="application/json")
    assert r.status_code in (400, 422), r.status_code
    _error(r, r.status_code)
    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == 0


class _BrokenInput:
    """A request body whose read fails, as a reset connection's does under gunicorn."""

    def read(self, *args):
        raise ConnectionResetError("connection reset by peer")


def test_a_body_that_cannot_be_read_is_400_and_changes_nothing(client, uid):
    r = client.post(f"/api/credits/{uid}/add", data=b'{"amount": 5}', content_type="application/json",
                    environ_overrides={"wsgi.input": _BrokenInput()})
    _error(r, 400, "bad_request")
    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == 0


def test_non_object_json_is_422(client, uid):
    for body in ("[1]", "5", '"amount"', "null"):
        r = client.post(f"/api/credits/{uid}/add", data=body, content_type="application/json")
        assert r.status_code in (400, 422), body
        _error(r, r.status_code)


def test_wrong_content_type_is_415(client, uid):
    _error(client.post(f"/api/credits/{uid}/add", data="amount=5", content_type="application/x-www-form-urlencoded"),
           415, "unsupported_media_type")
    _error(client.post(f"/api/credits/{uid}/add", data='{"amount": 5}', content_type="text/plain"), 415)


def test_missing_body_extra_and_ill_typed_fields(client, uid):
    err = _error(client.post(f"/api/credits/{uid}/add"), 422)
    assert "amount" in err["details"]["fields"]
    err = _error(client.post(f"/api/credits/{uid}/add", json={"amount": 1, "bonus": 2}), 422)
    assert "bonus" in err["details"]["fields"]
    _error(client.post(f"/api/credits/{uid}/add", json={"amount": 1, "reason": 5}), 422)
    _error(client.post(f"/api/credits/{uid}/add", json={"amount": 1, "reason": "x" * 501}), 422)
    _error(client.post(f"/api/credits/{uid}/add", json={"amount": 1, "reason": "nul\x00byte"}), 422)
    _error(client.patch(f"/api/credits/{uid}/reset", json={"amount": 1}), 422)


def test_oversized_body_is_413(client, uid):
    body = json.dumps({"amount": 1, "reason": "x" * 200_000})
    _error(client.post(f"/api/credits/{uid}/add", data=body, content_type="application/json"), 413)


def test_unknown_route_and_wrong_method(client, uid):
    _error(client.get("/api/nothing-here"), 404, "not_found")
    _error(client.get("/nothing"), 404)
    _error(client.get("/api/credits/-5"), 404)
    _error(client.get("/api/credits/abc"), 404)
    r = client.delete(f"/api/credits/{uid}")
    _error(r, 405, "method_not_allowed")
    assert "GET" in r.headers["Allow"]
    _error(client.get(f"/api/credits/{uid}/add"), 405)
    _error(client.delete(f"/api/users/{uid}"), 405)


def test_sql_injection_strings_are_inert(client, uid):
    evil = "1; DROP TABLE credits; --"
    r = client.post(f"/api/credits/{uid}/add", json={"amount": 3, "reason": evil})
    assert r.status_code == 200 and r.get_json()["entry"]["reason"] == evil
    _error(client.get("/api/credits/1%3B%20DROP%20TABLE%20credits"), 404)
    r = client.get("/api/users?email=' OR '1'='1")
    assert r.status_code == 200 and r.get_json()["items"] == []
    assert client.get(f"/api/credits/{uid}").get_json()["credits"] == 3


def test_request_id_is_echoed_or_generated(client, uid):
    r = client.get(f"/api/credits/{uid}", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    r = client.get(f"/api/credits/{uid}", headers={"X-Request-ID": "<script>" + "x" * 300})
    assert r.headers["X-Request-ID"] != "" and "<" not in r.headers["X-Request-ID"]
    fresh = {client.get(f"/api/credits/{uid}").headers["X-Request-ID"] for _ in range(50)}
    assert len(fresh) == 50 and all(re.fullmatch("[0-9a-f]{32}", i) for i in fresh), fresh


def test_forked_processes_draw_different_request_ids():
    """Ids are drawn from os.urandom a batch at a time (no system call per request): a forked
    child, as a gunicorn worker is, must not hand out the rest of its parent's batch, nor a
    sibling's; across batch boundaries ids stay whole and distinct."""
    from credits_app.web.request_ids import new_request_id
    many = [new_request_id() for _ in range(600)]  # more than two batches
    assert len(set(many)) == 600 and all(re.fullmatch("[0-9a-f]{32}", i) for i in many)
    drawn = []
    for _ in range(2):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its next ids, then out, whatever happens, without pytest's exit
            try:
                os.write(write, " ".join(new_request_id() for _ in range(3)).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as f:
            drawn.append(f.read().split())
        os.waitpid(pid, 0)
    drawn.append([new_request_id() for _ in range(3)])  # the parent's own next ids
    ids = [i for batch in drawn for i in batch]
    assert len(set(ids)) == 9 and all(re.fullmatch("[0-9a-f]{32}", i) for i in ids), drawn


def test_a_405_names_the_allowed_methods(client, anon, uid):
    """The Allow header is not the only place a caller looks: the body names the methods
    too, sorted, in the message and in details.allowed. An anonymous caller gets the same
    answer (the Allow header already told it as much)."""
    for who in (client, anon):
        r = who.delete(f"/api/credits/{uid}")
        err = _error(r, 405, "method_not_allowed")
        assert err["details"] == {"allowed": ["GET", "HEAD", "OPTIONS"]}
        assert r.headers["Allow"] == "GET, HEAD, OPTIONS"
        assert "DELETE" in err["message"] and "GET, HEAD, OPTIONS" in err["message"], err
    err = _error(client.get(f"/api/credits/{uid}/add"), 405)
    assert err["details"]["allowed"] == ["OPTIONS", "POST"] and "OPTIONS, POST" in err["message"]



def test_a_422_names_the_fields_in_its_message(client, uid):
    err = _error(client.post(f"/api/credits/{uid}/add", json={"amount": 0, "reason": 5}), 422, "validation_error")
    assert err["message"] == ("the request body is invalid: amount (must be greater than or equal to 1), "
                              "reason (not a valid string)")
    assert err["details"] == {"fields": {"amount": ["Must be greater than or equal to 1."],
                                         "reason": ["Not a valid string."]}}
    err = _error(client.get(f"/api/credits/{uid}/transactions?limit=0"), 422)
    assert err["message"].startswith("the query string is invalid: limit (must be greater than or equal to 1")
    err = _error(client.post(f"/api/credits/{uid}/add", data="[1]", content_type="application/json"), 422)
    assert err["message"] == "the request body is invalid: invalid input type", err


def test_a_long_list_of_bad_fields_keeps_the_message_short(client, uid):
    body = {"amount": "x", **{f"extra{i}": i for i in range(500)}, "y" * 5000: 1}
    r = client.post(f"/api/credits/{uid}/add", json=body)
    err = _error(r, 422)
    assert len(err["details"]["fields"]) == 502  # every field stays in details
    assert err["message"].startswith("the request body is invalid: amount (not a valid integer), ")
    assert err["message"].count("(unknown field)") == 2
    assert err["message"].endswith("and 499 more fields"), err["message"]
    assert len(err["message"]) < 200



def test_a_url_that_matches_no_route_says_so_briefly(client, anon, uid):
    """A 404 from routing names the method and path; when the path has the shape of a
    route but a parameter of the wrong type, it says what the parameter must be. The same
    answer with or without a token: it tells no more than the public OpenAPI document."""
    for who in (client, anon):
        err = _error(who.get("/api/credits/abc"), 404, "not_found")
        assert err["message"] == ("no such endpoint: GET /api/credits/abc (user_id must be a positive integer "
                                  "in ASCII digits, without a sign or leading zero)"), err
        assert err["details"] == {"parameter": "user_id"}
        err = _error(who.post("/api/credits/-1/add", json={"amount": 1}), 404, "not_found")
        assert err["message"].startswith("no such endpoint: POST /api/credits/-1/add (user_id must be a positive")
        err = _error(who.get("/api/nothing-here"), 404, "not_found")
        assert err == {"code": "not_found", "message": "no such endpoint: GET /api/nothing-here", "details": {}}
    # A method that no route of that shape takes: no hint about the id, which would not help.
    assert _error(client.delete("/api/credits/abc"), 404)["message"] == "no such endpoint: DELETE /api/credits/abc"
    # A file that is not there under a route that serves files: as brief, without a hint.
    assert _error(anon.get("/static/nope.js"), 404, "not_found")["message"] == "not found: GET /static/nope.js"
    # A 404 the view raises keeps its own code and message.
    assert _error(client.get("/api/users/999999"), 404)["code"] == "user_not_found"
    assert client.get(f"/api/credits/{uid}").status_code == 200
