"""Users API on both backends."""
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import text

from credits_app.extensions import db
from tests.conftest import LiveServer, new_user, token_for
from tests.test_concurrency import call


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


# --- users seeded by SQL with explicit ids ------------------------------------------------

def _seed_by_sql(app, count):
    """What the seed's schema.sql flow does: explicit ids, no balance rows, the id sequence untouched."""
    values = ", ".join(f"({i}, 'seed{i}@example.com', 'Seed {i}')" for i in range(1, count + 1))
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text(f"INSERT INTO users (user_id, email, name) VALUES {values}"))


def test_sign_up_works_at_once_after_users_seeded_with_explicit_ids(app, client):
    _seed_by_sql(app, 3)
    r = client.post("/api/users", json={"email": "first@example.com", "name": "First"})
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["user_id"] == 4
    assert new_user(client, "second@example.com") == 5
    r = client.post("/api/users", json={"email": "SEED2@example.com", "name": "Not new"})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "email_taken"
    assert [u["user_id"] for u in client.get("/api/users").get_json()["items"]] == [1, 2, 3, 4, 5]
    assert client.get("/api/credits/4").get_json()["credits"] == 0
    r = client.patch("/api/users/4", json={"email": "seed3@EXAMPLE.com"})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "email_taken"


def test_concurrent_sign_ups_after_seeding_all_succeed(app):
    _seed_by_sql(app, 20)
    with LiveServer(app, token_for(app, "service")) as srv:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: call(srv.url, "POST", "/api/users",
                                                   {"email": f"racer{i}@example.com", "name": f"R{i}"},
                                                   token=srv.token), range(24)))
    assert [s for s, _ in results] == [201] * 24, results
    ids = sorted(b["user_id"] for _, b in results)
    assert len(set(ids)) == 24 and ids[0] > 20
    with app.app_context(), db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM users")).scalar() == 44
        assert conn.execute(text("SELECT count(*) FROM credits WHERE user_id > 20")).scalar() == 24


def test_a_conflict_on_another_constraint_is_not_email_taken(app, client):
    # A rule put on the table directly by a database administrator (the schema API refuses it).
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("CREATE UNIQUE INDEX uq_users_name ON users (name)"))
    uid = new_user(client, "one@example.com", "Same")
    other = new_user(client, "two@example.com", "Other")
    for r in (client.post("/api/users", json={"email": "three@example.com", "name": "Same"}),
              client.patch(f"/api/users/{other}", json={"name": "Same"})):
        assert r.status_code == 409, r.get_json()
        error = r.get_json()["error"]
        assert error["code"] == "constraint_violation"
        assert error["details"]["constraint"] in ("uq_users_name", "users.name")  # PostgreSQL, SQLite
    r = client.patch(f"/api/users/{other}", json={"email": "ONE@example.com"})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "email_taken"
    assert client.get(f"/api/users/{uid}").get_json()["name"] == "Same"
    assert client.get(f"/api/users/{other}").get_json()["name"] == "Other"
