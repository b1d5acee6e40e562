"""Speed seams (docs/stock.md) that no behaviour test would notice if they were lost."""
from credits_app.api.schemas import AmountIn
from tests.conftest import new_user


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
