"""Users API on both backends."""
from tests.conftest import new_user


def test_create_get_and_zero_balance(client):
    r = client.post("/api/users", json={"email": "Bob@Example.com", "name": "Bob"})
    assert r.status_code == 201
    user = r.get_json()
    assert user["email"] == "Bob@Example.com" and user["name"] == "Bob" and user["created_at"]
    assert client.get(f"/api/users/{user['user_id']}").get_json() == user
    assert client.get(f"/api/credits/{user['user_id']}").get_json()["credits"] == 0


def test_duplicate_email_is_409_case_insensitive(client):
    new_user(client, "bob@example.com")
    r = client.post("/api/users", json={"email": "BOB@example.COM", "name": "Other"})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "email_taken"


def test_invalid_users_are_422(client):
    for body in [{"email": "not-an-email", "name": "x"}, {"email": "a@b.io"}, {"name": "x"},
                 {"email": "a@b.io", "name": ""}, {"email": "a@b.io", "name": "x" * 201},
                 {"email": "a@b.io", "name": "x", "role": "admin"}, {"email": "a\x00@b.io", "name": "x"}]:
        r = client.post("/api/users", json=body)
        assert r.status_code == 422, body
        assert r.get_json()["error"]["code"] == "validation_error"


def test_unicode_names_round_trip(client):
    r = client.post("/api/users", json={"email": "zoe@example.com", "name": "Zoë 𝒵 \u202e"})
    assert r.status_code == 201 and r.get_json()["name"] == "Zoë 𝒵 \u202e"


def test_get_unknown_user_is_404(client):
    r = client.get("/api/users/424242")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "user_not_found"
    assert client.get(f"/api/users/{2**70}").status_code == 404


def test_list_by_email_and_cursor(client):
    ids = [new_user(client, f"u{i}@example.com", f"U{i}") for i in range(5)]
    r = client.get("/api/users?email=U3@EXAMPLE.com").get_json()
    assert [u["user_id"] for u in r["items"]] == [ids[3]] and r["next_cursor"] is None
    seen, cursor = [], None
    while True:
        body = client.get("/api/users?limit=2" + (f"&cursor={cursor}" if cursor else "")).get_json()
        seen += [u["user_id"] for u in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == ids


def test_update_name_and_email(client):
    uid = new_user(client, "old@example.com", "Old")
    r = client.patch(f"/api/users/{uid}", json={"name": "New", "email": "new@example.com"})
    assert r.status_code == 200 and r.get_json()["name"] == "New" and r.get_json()["email"] == "new@example.com"
    other = new_user(client, "other@example.com", "O")
    r = client.patch(f"/api/users/{other}", json={"email": "NEW@example.com"})
    assert r.status_code == 409
    assert client.get(f"/api/users/{other}").get_json()["email"] == "other@example.com"
    unchanged = client.patch(f"/api/users/{uid}", json={})  # PATCH with nothing to change: a no-op
    assert unchanged.status_code == 200 and unchanged.get_json()["email"] == "new@example.com"
    assert client.patch("/api/users/99999", json={"name": "x"}).status_code == 404
