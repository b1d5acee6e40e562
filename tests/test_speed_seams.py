"""The speed seams that differ from the frameworks' defaults (docs/stock.md) give what the
frameworks would give: each test compares the seam with the stock behaviour it replaces."""
import functools

import pytest
from flask import Flask

from credits_app.api.schemas import AmountIn
from tests.conftest import new_user


def test_ensure_sync_hands_back_what_flask_would(app):
    """Plain functions are remembered and handed back as they are, as Flask does after
    asking inspect; everything else still goes through Flask's own ensure_sync."""
    def plain():
        return 1

    async def coroutine():
        return 2

    assert app.ensure_sync(plain) is plain and Flask.ensure_sync(app, plain) is plain
    assert app.ensure_sync(plain) is plain  # the remembered answer
    partial = functools.partial(plain)
    assert app.ensure_sync(partial) is Flask.ensure_sync(app, partial)
    bound = app.make_response
    assert app.ensure_sync(bound) == Flask.ensure_sync(app, bound)
    # A coroutine function is never taken for a plain one: Flask's answer, whatever it is
    # (a wrapper, or asgiref's absence reported), is what the app gives.
    try:
        expected = Flask.ensure_sync(app, coroutine)
    except RuntimeError as e:
        with pytest.raises(RuntimeError, match=str(e)[:30]):
            app.ensure_sync(coroutine)
    else:
        assert app.ensure_sync(coroutine) is not coroutine and expected is not coroutine


def test_argument_schemas_are_built_once_not_per_request(client, monkeypatch):
    """Views give flask-smorest's `arguments` an instance: no request builds a schema."""
    built = []
    original = AmountIn.__init__

    def counting_init(self, *args, **kwargs):
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(AmountIn, "__init__", counting_init)
    uid = new_user(client)
    for amount in (5, 3):
        assert client.post(f"/api/credits/{uid}/add", json={"amount": amount}).status_code == 200
    assert client.post(f"/api/credits/{uid}/deduct", json={"amount": 1}).status_code == 200
    assert client.post(f"/api/credits/{uid}/add", json={"amount": "x"}).status_code == 422
    assert built == []
