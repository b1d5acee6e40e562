"""Builds postman/credits.postman_collection.json and the environment file.

    python postman/build_collection.py                       # requests + tests
    python postman/build_collection.py --examples report.json  # + saved example responses
                                                             #   from a `newman --reporters json` run

The flow is the one a person follows: issue a token, create a user, add, deduct, be
refused, replay idempotently, reverse part of the deduct (and be refused more than remains),
reset, page the ledger, read the balance as of an entry's time
and its history, export the ledger (CSV and NDJSON), hold credits (replay the hold, be
refused more than is available), capture part of the hold (the rest is released), release
another hold with a reason, read and list holds, set a low-balance threshold and cross it
both ways (reading balance.low and balance.recovered from the events feed), create, rotate and delete a webhook
endpoint (and be refused a loopback one), dry-run and apply a schema change,
trigger the daily grant and see it in the ledger. Every request carries pm.test assertions."""
import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
JSON_HEADERS = [{"key": "Content-Type", "value": "application/json"}]
ADMIN_AUTH = {"type": "bearer", "bearer": [{"key": "token", "value": "{{adminToken}}", "type": "string"}]}
NO_AUTH = {"type": "noauth"}
# The export's columns, in its documented order (credits_app/ledger/export.py: COLUMNS, from
# records.ENTRY_COLUMNS; new fields go at the end).
EXPORT_COLUMNS = ("id,user_id,kind,amount,balance_after,reason,actor,idempotency_key,grant_date,created_at,reverses,"
                  "hold_id")

ERROR_SHAPE = """
pm.test("error has the one JSON shape", function () {
    const e = pm.response.json().error;
    pm.expect(e).to.have.all.keys("code", "message", "details");
    pm.expect(pm.response.headers.get("X-Request-ID")).to.be.a("string").and.not.empty;
});"""


def status(code):
    return f'pm.test("status is {code}", function () {{ pm.response.to.have.status({code}); }});'


def request(name, method, path, *, body=None, tests="", pre="", auth=None, headers=None, description=""):
    item = {
        "name": name,
        "event": [{"listen": "test", "script": {"type": "text/javascript", "exec": tests.strip().splitlines()}}],
        "request": {
            "method": method,
            "header": (JSON_HEADERS if body is not None else []) + (headers or []),
            "url": {"raw": "{{baseUrl}}" + path, "host": ["{{baseUrl}}"],
                    "path": [p for p in path.split("?")[0].split("/") if p],
                    **({"query": [{"key": k, "value": v} for k, v in
                                  (q.split("=", 1) for q in path.split("?", 1)[1].split("&"))]}
                       if "?" in path else {})},
            "description": description,
        },
        "response": [],
    }
    if pre:
        item["event"].insert(0, {"listen": "prerequest",
                                 "script": {"type": "text/javascript", "exec": pre.strip().splitlines()}})
    if body is not None:
        item["request"]["body"] = {"mode": "raw", "raw": json.dumps(body, indent=2),
                                   "options": {"raw": {"language": "json"}}}
    if auth is not None:
        item["request"]["auth"] = auth
    return item


def flow():
    u = "/api/credits/{{userId}}"
    return [
        request("Readiness", "GET", "/readyz", auth=NO_AUTH, tests=status(200) + """
pm.test("database and redis are ok", function () {
    const c = pm.response.json().checks;
    pm.expect(c.database).to.eql("ok");
});"""),
        request("Issue a service token (admin)", "POST", "/api/auth/tokens", auth=ADMIN_AUTH,
                body={"role": "service", "sub": "postman-service", "ttl_seconds": 3600},
                description="The admin bootstrap token (environment variable adminToken, from "
                            "`flask auth issue-token --role admin`) mints the service token the rest of "
                            "the flow uses.",
                tests=status(201) + """
const t = pm.response.json();
pm.test("a service token with a jti", function () {
    pm.expect(t.role).to.eql("service");
    pm.expect(t.jti).to.be.a("string").and.not.empty;
});
pm.collectionVariables.set("serviceToken", t.token);"""),
        request("Today's grant so far (admin)", "GET", "/api/grants/daily?limit=1", auth=ADMIN_AUTH,
                description="A date's grant covers the users that exist when its run is planned. Against a "
                            "service whose run for today (UTC) is already planned, the user created next is "
                            "not in it: the grant steps below then check that it is left out.",
                tests=status(200) + """
const today = new Date().toISOString().slice(0, 10);
const latest = pm.response.json().items[0];
pm.collectionVariables.set("todayPlanned", latest && latest.grant_date === today ? "yes" : "no");"""),
        request("Create a user", "POST", "/api/users", body={"email": "{{email}}", "name": "Postman Demo"},
                pre="""
const run = Date.now().toString(36) + Math.floor(Math.random() * 1e6).toString(36);
pm.collectionVariables.set("runId", run);
pm.collectionVariables.set("email", "postman+" + run + "@example.com");""",
                tests=status(201) + """
const user = pm.response.json();
pm.test("the user is created", function () {
    pm.expect(user.email).to.eql(pm.collectionVariables.get("email"));
    pm.expect(user.user_id).to.be.a("number");
});
pm.collectionVariables.set("userId", user.user_id);
pm.collectionVariables.set("userCreatedAt", user.created_at);"""),
        request("Balance starts at zero", "GET", u, tests=status(200) + """
const b = pm.response.json();
pm.test("zero credits, none held, none available", function () {
    pm.expect(b).to.have.all.keys("user_id", "credits", "last_updated", "held", "available");
    pm.expect([b.credits, b.held, b.available]).to.eql([0, 0, 0]);
});"""),
        request("Add credits", "POST", u + "/add", body={"amount": 10, "reason": "publishing"},
                tests=status(200) + """
const b = pm.response.json();
pm.test("balance is 10 and the ledger entry says add", function () {
    pm.expect(b.credits).to.eql(10);
    pm.expect(b.entry.kind).to.eql("add");
    pm.expect(b.entry.amount).to.eql(10);
    pm.expect(b.entry.actor).to.eql("postman-service");
});
// The as-of read below asks for the balance at this entry's time.
pm.collectionVariables.set("addEntryAt", b.entry.created_at);
pm.collectionVariables.set("addEntryAtQuery", encodeURIComponent(b.entry.created_at));
pm.collectionVariables.set("addBalanceAfter", b.entry.balance_after);"""),
        request("Deduct credits (with an Idempotency-Key)", "POST", u + "/deduct",
                body={"amount": 3, "reason": "comment boost"},
                headers=[{"key": "Idempotency-Key", "value": "postman-{{runId}}"}],
                tests=status(200) + """
const b = pm.response.json();
pm.test("balance is 7", function () { pm.expect(b.credits).to.eql(7); });
pm.collectionVariables.set("deductEntryId", b.entry.id);
// The history below ends at this entry's time.
pm.collectionVariables.set("deductEntryAt", b.entry.created_at);
pm.collectionVariables.set("deductEntryAtQuery", encodeURIComponent(b.entry.created_at));"""),
        request("Replay the deduct: same key, same body", "POST", u + "/deduct",
                body={"amount": 3, "reason": "comment boost"},
                headers=[{"key": "Idempotency-Key", "value": "postman-{{runId}}"}],
                tests=status(200) + """
const b = pm.response.json();
pm.test("the original answer, nothing deducted twice", function () {
    pm.expect(pm.response.headers.get("Idempotent-Replayed")).to.eql("true");
    pm.expect(b.credits).to.eql(7);
    pm.expect(b.entry.id).to.eql(Number(pm.collectionVariables.get("deductEntryId")));
});"""),
        request("Same key, different body: 422", "POST", u + "/deduct", body={"amount": 4},
                headers=[{"key": "Idempotency-Key", "value": "postman-{{runId}}"}],
                tests=status(422) + ERROR_SHAPE + """
pm.test("idempotency_key_reused", function () {
    pm.expect(pm.response.json().error.code).to.eql("idempotency_key_reused");
});"""),
        request("Deduct more than the balance: 409", "POST", u + "/deduct", body={"amount": 1000},
                tests=status(409) + ERROR_SHAPE + """
pm.test("insufficient_credits with balance, held, available and requested", function () {
    const e = pm.response.json().error;
    pm.expect(e.code).to.eql("insufficient_credits");
    pm.expect(e.details).to.eql({balance: 7, held: 0, available: 7, requested: 1000});
});"""),
        request("Invalid amount: 422", "POST", u + "/add", body={"amount": "ten"},
                tests=status(422) + ERROR_SHAPE + """
pm.test("names the field", function () {
    pm.expect(pm.response.json().error.details.fields).to.have.property("amount");
});"""),
        request("No token: 401", "GET", u, auth=NO_AUTH, tests=status(401) + ERROR_SHAPE + """
pm.test("missing_token with WWW-Authenticate", function () {
    pm.expect(pm.response.json().error.code).to.eql("missing_token");
    pm.expect(pm.response.headers.get("WWW-Authenticate")).to.include("Bearer");
});"""),
        request("Reverse part of the deduct (admin)", "POST", u + "/entries/{{deductEntryId}}/reverse",
                auth=ADMIN_AUTH, body={"amount": 2, "reason": "refund part of the boost"},
                description="A compensating entry of kind `reversal` naming the original (`reverses`); the "
                            "original is not changed. `amount` defaults to all that remains; partial reversals "
                            "go on until the whole, never beyond. Permission credits:reverse: admin (service "
                            "tokens only with AUTH_SERVICE_CAN_REVERSE=true).",
                tests=status(200) + """
const b = pm.response.json();
pm.test("balance is 9: the deduct's 3, 2 of them given back", function () {
    pm.expect(b.credits).to.eql(9);
    pm.expect(b.entry.kind).to.eql("reversal");
    pm.expect(b.entry.amount).to.eql(2);
    pm.expect(b.entry.balance_after).to.eql(9);
    pm.expect(b.entry.reason).to.eql("refund part of the boost");
});
pm.test("the reversal names the deduct", function () {
    pm.expect(b.entry.reverses).to.eql(Number(pm.collectionVariables.get("deductEntryId")));
});
pm.collectionVariables.set("reversalEntryId", b.entry.id);"""),
        request("Reverse more than remains: 409", "POST", u + "/entries/{{deductEntryId}}/reverse",
                auth=ADMIN_AUTH, body={"amount": 5, "reason": "refund the rest, and more"},
                tests=status(409) + ERROR_SHAPE + """
pm.test("reversal_exceeds_remaining with the entry, remaining and requested", function () {
    const e = pm.response.json().error;
    pm.expect(e.code).to.eql("reversal_exceeds_remaining");
    pm.expect(e.details).to.eql({entry_id: Number(pm.collectionVariables.get("deductEntryId")),
                                 remaining: 1, requested: 5});
    pm.expect(e.details.remaining).to.be.below(e.details.requested);
});"""),
        request("Reverse a reversal: 422", "POST", u + "/entries/{{reversalEntryId}}/reverse",
                auth=ADMIN_AUTH, body={"reason": "undo the refund"},
                tests=status(422) + ERROR_SHAPE + """
pm.test("not_reversible: a reversal is not reversed", function () {
    const e = pm.response.json().error;
    pm.expect(e.code).to.eql("not_reversible");
    pm.expect(e.details).to.eql({entry_id: Number(pm.collectionVariables.get("reversalEntryId")),
                                 kind: "reversal"});
});"""),
        request("Reset (admin)", "PATCH", u + "/reset", auth=ADMIN_AUTH, body={"reason": "postman demo"},
                tests=status(200) + """
const b = pm.response.json();
pm.test("balance is 0, entry records -9", function () {
    pm.expect(b.credits).to.eql(0);
    pm.expect(b.entry.kind).to.eql("reset");
    pm.expect(b.entry.amount).to.eql(-9);
    pm.expect(b.entry.reverses).to.eql(null);
});"""),
        request("Ledger, first page", "GET", u + "/transactions?limit=3", tests=status(200) + """
const p = pm.response.json();
pm.test("newest first, with a cursor", function () {
    pm.expect(p.items.map(e => e.kind)).to.eql(["reset", "reversal", "deduct"]);
    pm.expect(p.items.map(e => e.reverses)).to.eql(
        [null, Number(pm.collectionVariables.get("deductEntryId")), null]);
    pm.expect(p.next_cursor).to.be.a("string");
});
pm.collectionVariables.set("cursor", p.next_cursor);"""),
        request("Ledger, next page", "GET", u + "/transactions?limit=2&cursor={{cursor}}", tests=status(200) + """
const p = pm.response.json();
pm.test("the add, and no further page", function () {
    pm.expect(p.items.map(e => e.kind)).to.eql(["add"]);
    pm.expect(p.next_cursor).to.eql(null);
});"""),
        request("Balance as of the add", "GET", u + "?as_of={{addEntryAtQuery}}",
                description="`as_of` (an RFC 3339 instant; in a URL write + as %2B) gives the balance then: "
                            "after the last entry at or before it. At the add's own time that is the add's "
                            "balance_after, though the balance has moved on since.",
                tests=status(200) + """
const b = pm.response.json();
pm.test("balance, last_updated and as_of", function () {
    // held and available describe the balance now: a past balance has neither
    pm.expect(b).to.have.all.keys("user_id", "credits", "last_updated", "as_of");
    pm.expect(b.user_id).to.eql(Number(pm.collectionVariables.get("userId")));
});
pm.test("the add's balance_after, as of the add's time", function () {
    pm.expect(b.credits).to.eql(Number(pm.collectionVariables.get("addBalanceAfter")));
    pm.expect(b.last_updated).to.eql(pm.collectionVariables.get("addEntryAt"));
    pm.expect(new Date(b.as_of).getTime()).to.eql(new Date(pm.collectionVariables.get("addEntryAt")).getTime());
});"""),
        request("Balance history up to the deduct", "GET", u + "/history?until={{deductEntryAtQuery}}&points=4",
                description="The balance over time for a chart: `points` equal spans of since..until, each point "
                            "the balance at its span's end. `since` defaults to the user's creation.",
                tests=status(200) + """
const h = pm.response.json();
pm.test("user_id, since, until and points", function () {
    pm.expect(h).to.have.all.keys("user_id", "since", "until", "points");
    pm.expect(h.user_id).to.eql(Number(pm.collectionVariables.get("userId")));
    pm.expect(h.since).to.eql(pm.collectionVariables.get("userCreatedAt"));
    pm.expect(h.until).to.eql(pm.collectionVariables.get("deductEntryAt"));
});
pm.test("4 points, oldest first, each {at, credits}", function () {
    pm.expect(h.points).to.have.lengthOf(4);
    h.points.forEach(function (p) {
        pm.expect(p).to.have.all.keys("at", "credits");
        pm.expect([0, 10, 7]).to.include(p.credits);
    });
    const times = h.points.map(p => new Date(p.at).getTime());
    pm.expect(times).to.eql(times.slice().sort((a, b) => a - b));
});
pm.test("the last point is the balance after the deduct, at its time", function () {
    pm.expect(h.points[3]).to.eql({at: pm.collectionVariables.get("deductEntryAt"), credits: 7});
});"""),
        request("Export the user's ledger as CSV (admin)", "GET", "/api/ledger/export?user_id={{userId}}&format=csv",
                auth=ADMIN_AUTH,
                description="The ledger for accounting, streamed: entries in time order with a header row "
                            "(`since` and `until` bound the window; without `user_id`, every user's).",
                tests=status(200) + f"""
pm.test("text/csv, as an attachment", function () {{
    pm.expect(pm.response.headers.get("Content-Type")).to.include("text/csv");
    pm.expect(pm.response.headers.get("Content-Disposition"))
        .to.include('filename="ledger-user-' + pm.collectionVariables.get("userId") + '.csv"');
}});
const lines = pm.response.text().split("\\n");
pm.test("the header row, then the add, deduct, reversal and reset", function () {{
    pm.expect(lines[0]).to.eql("{EXPORT_COLUMNS}");
    pm.expect(lines[lines.length - 1]).to.eql("");  // every row ends with a newline
    const rows = lines.slice(1, -1).map(l => l.split(","));
    pm.expect(rows.map(r => r[2])).to.eql(["add", "deduct", "reversal", "reset"]);
    pm.expect(rows.map(r => Number(r[4]))).to.eql([10, 7, 9, 0]);
    pm.expect(rows[0][9]).to.eql(pm.collectionVariables.get("addEntryAt"));
    // reverses: the deduct's id on the reversal, empty elsewhere; hold_id (a capture's), empty on all four
    pm.expect(rows.map(r => r[10])).to.eql(["", "", String(pm.collectionVariables.get("deductEntryId")), ""]);
    pm.expect(rows.map(r => r[11])).to.eql(["", "", "", ""]);
}});"""),
        request("Export the user's ledger as NDJSON (admin)", "GET",
                "/api/ledger/export?user_id={{userId}}&format=ndjson", auth=ADMIN_AUTH,
                description="The same entries, one exact JSON object a line.",
                tests=status(200) + f"""
pm.test("application/x-ndjson", function () {{
    pm.expect(pm.response.headers.get("Content-Type")).to.include("application/x-ndjson");
}});
const entries = pm.response.text().split("\\n").filter(l => l !== "").map(l => JSON.parse(l));
pm.test("four entries, each with the export's columns; the amounts sum to the balance", function () {{
    pm.expect(entries).to.have.lengthOf(4);
    entries.forEach(function (e) {{ pm.expect(Object.keys(e)).to.eql("{EXPORT_COLUMNS}".split(",")); }});
    pm.expect(entries.map(e => e.kind)).to.eql(["add", "deduct", "reversal", "reset"]);
    pm.expect(entries.map(e => e.amount)).to.eql([10, -3, 2, -9]);
    pm.expect(entries.reduce((sum, e) => sum + e.amount, 0)).to.eql(0);
    const deductId = Number(pm.collectionVariables.get("deductEntryId"));
    pm.expect(entries[1].id).to.eql(deductId);
    pm.expect(entries.map(e => e.reverses)).to.eql([null, null, deductId, null]);
    pm.expect(entries.map(e => e.hold_id)).to.eql([null, null, null, null]);
    pm.expect(entries[2].id).to.eql(Number(pm.collectionVariables.get("reversalEntryId")));
}});"""),
        *holds(u),
        *alerts_and_events(u),
        request("Schema update: dry run (admin)", "POST", "/api/schema/apply", auth=ADMIN_AUTH,
                body={"name": "postman-dry-{{runId}}", "dry_run": True,
                      "sql": "ALTER TABLE users ADD COLUMN IF NOT EXISTS postman_dry_run text"},
                tests="""
// Schema updates need PostgreSQL; the embedded SQLite default answers a clear 501.
const sqlite = pm.response.code === 501;
pm.collectionVariables.set("schemaSupported", sqlite ? "no" : "yes");
if (sqlite) {
    pm.test("SQLite: 501 not_supported_on_sqlite", function () {
        pm.expect(pm.response.json().error.code).to.eql("not_supported_on_sqlite");
    });
} else {
    pm.test("status is 200", function () { pm.response.to.have.status(200); });
    pm.test("reported, rolled back", function () { pm.expect(pm.response.json().status).to.eql("dry_run"); });
}"""),
        request("Schema update: apply (admin)", "POST", "/api/schema/apply", auth=ADMIN_AUTH,
                body={"name": "postman-demo-nickname",
                      "sql": "ALTER TABLE users ADD COLUMN IF NOT EXISTS nickname text"},
                tests="""
if (pm.collectionVariables.get("schemaSupported") === "no") {
    pm.test("SQLite: 501", function () { pm.response.to.have.status(501); });
} else {
    pm.test("status is 200", function () { pm.response.to.have.status(200); });
    pm.test("applied (or already applied by an earlier run)", function () {
        pm.expect(["applied", "already_applied"]).to.include(pm.response.json().status);
    });
}"""),
        request("The new column shows on the user", "GET", "/api/users/{{userId}}", tests=status(200) + """
if (pm.collectionVariables.get("schemaSupported") === "yes") {
    pm.test("attributes.nickname", function () {
        pm.expect(pm.response.json().attributes).to.have.property("nickname");
    });
}"""),
        request("Trigger today's daily grant (admin)", "POST", "/api/grants/daily/run", auth=ADMIN_AUTH, body={},
                tests="""
const j = pm.response.json();
if (pm.collectionVariables.get("todayPlanned") === "no") {
    pm.test("status is 202", function () { pm.response.to.have.status(202); });
    pm.test("queued with a job id", function () {
        pm.expect(j.status).to.eql("queued");
        pm.expect(j.job_id).to.be.a("string").and.not.empty;
    });
} else {
    pm.test("today's run exists: done (200) or still running (202)", function () {
        pm.expect(pm.response.code).to.be.oneOf([200, 202]);
        pm.expect(j.status).to.eql(pm.response.code === 200 ? "already_done" : "queued");
    });
}
pm.collectionVariables.set("grantDate", j.date);
pm.collectionVariables.set("grantPolls", 0);"""),
        request("The grant is in the ledger", "GET", u + "/transactions?limit=5",
                pre="if (Number(pm.collectionVariables.get('grantPolls')) > 0) { setTimeout(function () {}, 500); }",
                description="The worker runs the grant; this request polls (up to 40 times) until it shows.",
                tests=status(200) + """
const grant = pm.response.json().items.find(e => e.kind === "daily_grant");
const polls = Number(pm.collectionVariables.get("grantPolls")) + 1;
pm.collectionVariables.set("grantPolls", polls);
if (pm.collectionVariables.get("todayPlanned") === "yes") {
    pm.test("a user created after today's run was planned is not in it", function () {
        pm.expect(grant).to.be.undefined;
    });
} else if (!grant && polls < 40) {
    postman.setNextRequest(pm.info.requestName);
} else {
    pm.test("+5 for today's UTC date", function () {
        pm.expect(grant, "no daily_grant entry after " + polls + " polls").to.be.an("object");
        pm.expect(grant.amount).to.eql(5);
        pm.expect(grant.grant_date).to.eql(pm.collectionVariables.get("grantDate"));
    });
}"""),
        request("Daily-grant runs (admin)", "GET", "/api/grants/daily", auth=ADMIN_AUTH, tests=status(200) + """
pm.test("today's run is listed", function () {
    const run = pm.response.json().items.find(r => r.grant_date === pm.collectionVariables.get("grantDate"));
    pm.expect(run).to.be.an("object");
});"""),
        request("Balance after the grant", "GET", u, tests=status(200) + """
// 38 left after the capture, and the grant's 5 if today's run includes the user.
const expected = pm.collectionVariables.get("todayPlanned") === "yes" ? 38 : 43;
const b = pm.response.json();
pm.test(expected + " credits, none held", function () {
    pm.expect([b.credits, b.held, b.available]).to.eql([expected, 0, expected]);
});"""),
    ]


HOLD_KEY = [{"key": "Idempotency-Key", "value": "postman-hold-{{runId}}"}]
HOLD_FIELDS = """
const HOLD_FIELDS = ["hold_id", "user_id", "amount", "status", "captured", "reason", "actor", "idempotency_key",
                     "created_at", "expires_at", "closed_at", "close_reason", "entry_id"];"""


def holds(u):
    """Hold 30 of 50, capture 12 of it (the rest is released), hold 10 more and release it."""
    return [
        request("Add credits to hold", "POST", u + "/add", body={"amount": 50, "reason": "holds demo"},
                tests=status(200) + """
pm.test("balance is 50 after the reset", function () {
    pm.expect(pm.response.json().credits).to.eql(50);
});"""),
        request("Hold credits (with an Idempotency-Key)", "POST", u + "/holds",
                body={"amount": 30, "ttl_seconds": 600, "reason": "render job"}, headers=HOLD_KEY,
                description="A hold keeps `amount` of the available balance for a later capture, until it is "
                            "captured, released or expires (`ttl_seconds`; default HOLD_DEFAULT_TTL_SECONDS). "
                            "Creating it writes no ledger entry: the balance stays, what is available drops.",
                tests=status(201) + HOLD_FIELDS + """
const b = pm.response.json();
pm.test("50 credits, 30 held, 20 available", function () {
    pm.expect(b.user_id).to.eql(Number(pm.collectionVariables.get("userId")));
    pm.expect([b.credits, b.held, b.available]).to.eql([50, 30, 20]);
});
pm.test("an open hold of 30 for 600 seconds, with its key", function () {
    const h = b.hold;
    pm.expect(h).to.have.all.keys(HOLD_FIELDS);
    pm.expect([h.status, h.amount, h.reason, h.actor]).to.eql(["open", 30, "render job", "postman-service"]);
    pm.expect(h.idempotency_key).to.eql("postman-hold-" + pm.collectionVariables.get("runId"));
    pm.expect([h.captured, h.closed_at, h.close_reason, h.entry_id]).to.eql([null, null, null, null]);
    pm.expect(new Date(h.expires_at) - new Date(h.created_at)).to.eql(600 * 1000);
});
pm.collectionVariables.set("holdId", b.hold.hold_id);"""),
        request("Replay the hold: same key, same body", "POST", u + "/holds",
                body={"amount": 30, "ttl_seconds": 600, "reason": "render job"}, headers=HOLD_KEY,
                tests=status(201) + """
const b = pm.response.json();
pm.test("the original answer, nothing held twice", function () {
    pm.expect(pm.response.headers.get("Idempotent-Replayed")).to.eql("true");
    pm.expect(b.hold.hold_id).to.eql(Number(pm.collectionVariables.get("holdId")));
    pm.expect([b.credits, b.held, b.available]).to.eql([50, 30, 20]);
});"""),
        request("Balance shows what is held", "GET", u,
                description="`held` is what open holds keep; `available` (credits - held) is what a debit or "
                            "a new hold may take.",
                tests=status(200) + """
const b = pm.response.json();
pm.test("50 credits, 30 held (once, after the replay), 20 available", function () {
    pm.expect([b.credits, b.held, b.available]).to.eql([50, 30, 20]);
});"""),
        request("Hold more than is available: 409", "POST", u + "/holds", body={"amount": 25},
                tests=status(409) + ERROR_SHAPE + """
pm.test("insufficient_credits: 25 asked, 20 available of 50 (30 held)", function () {
    const e = pm.response.json().error;
    pm.expect(e.code).to.eql("insufficient_credits");
    pm.expect(e.details).to.eql({balance: 50, held: 30, available: 20, requested: 25});
});"""),
        request("Deduct more than is available: 409", "POST", u + "/deduct", body={"amount": 25},
                description="A debit spends only what holds do not keep.",
                tests=status(409) + ERROR_SHAPE + """
pm.test("insufficient_credits: the balance covers 25, what is available does not", function () {
    const e = pm.response.json().error;
    pm.expect(e.code).to.eql("insufficient_credits");
    pm.expect(e.details).to.eql({balance: 50, held: 30, available: 20, requested: 25});
});"""),
        request("Capture part of the hold", "POST", "/api/holds/{{holdId}}/capture", body={"amount": 12},
                description="A ledger entry of kind `capture` naming the hold (`hold_id`) takes `amount` (default: "
                            "all the hold keeps) from the balance; the rest of the hold is released. The entry's "
                            "reason defaults to the hold's.",
                tests=status(200) + """
const b = pm.response.json();
const holdId = Number(pm.collectionVariables.get("holdId"));
pm.test("38 credits, nothing held: the other 18 are released", function () {
    pm.expect([b.credits, b.held, b.available]).to.eql([38, 0, 38]);
});
pm.test("the hold is captured, 12 of its 30", function () {
    pm.expect(b.hold.hold_id).to.eql(holdId);
    pm.expect([b.hold.status, b.hold.amount, b.hold.captured]).to.eql(["captured", 30, 12]);
    pm.expect(b.hold.closed_at).to.be.a("string");
    pm.expect(b.hold.entry_id).to.eql(b.entry.id);
});
pm.test("the entry is a capture of 12 naming the hold", function () {
    const e = b.entry;
    pm.expect([e.kind, e.amount, e.balance_after, e.hold_id]).to.eql(["capture", -12, 38, holdId]);
    pm.expect([e.reason, e.actor, e.reverses]).to.eql(["render job", "postman-service", null]);
});
pm.collectionVariables.set("captureEntryId", b.entry.id);"""),
        request("Capture it again: 409", "POST", "/api/holds/{{holdId}}/capture", body={},
                tests=status(409) + ERROR_SHAPE + """
pm.test("hold_not_open: it is captured", function () {
    const e = pm.response.json().error;
    pm.expect(e.code).to.eql("hold_not_open");
    pm.expect(e.details).to.eql({hold_id: Number(pm.collectionVariables.get("holdId")), status: "captured"});
});"""),
        request("Get the hold", "GET", "/api/holds/{{holdId}}", tests=status(200) + HOLD_FIELDS + """
const h = pm.response.json();
pm.test("captured: 12 of 30, by the capture entry (whose reason it is: no close_reason)", function () {
    pm.expect(h).to.have.all.keys(HOLD_FIELDS);
    pm.expect(h.hold_id).to.eql(Number(pm.collectionVariables.get("holdId")));
    pm.expect([h.status, h.amount, h.captured, h.close_reason]).to.eql(["captured", 30, 12, null]);
    pm.expect(h.entry_id).to.eql(Number(pm.collectionVariables.get("captureEntryId")));
});"""),
        request("Balance after the capture", "GET", u, tests=status(200) + """
const b = pm.response.json();
pm.test("38 credits, none held, 38 available", function () {
    pm.expect([b.credits, b.held, b.available]).to.eql([38, 0, 38]);
});"""),
        request("Hold credits to release", "POST", u + "/holds", body={"amount": 10, "reason": "cancelled job"},
                tests=status(201) + """
const b = pm.response.json();
pm.test("10 held, 28 available", function () {
    pm.expect([b.credits, b.held, b.available]).to.eql([38, 10, 28]);
    pm.expect([b.hold.status, b.hold.amount, b.hold.idempotency_key]).to.eql(["open", 10, null]);
});
pm.collectionVariables.set("releaseHoldId", b.hold.hold_id);"""),
        request("Release the hold", "POST", "/api/holds/{{releaseHoldId}}/release",
                body={"reason": "job cancelled by the customer"},
                description="What the hold kept is available again; no ledger entry is written. The optional "
                            "`reason` is kept on the hold as `close_reason`.",
                tests=status(200) + HOLD_FIELDS + """
const b = pm.response.json();
pm.test("released with its reason: nothing captured, no entry", function () {
    pm.expect(b.hold).to.have.all.keys(HOLD_FIELDS);
    pm.expect(b.hold.hold_id).to.eql(Number(pm.collectionVariables.get("releaseHoldId")));
    pm.expect([b.hold.status, b.hold.captured, b.hold.entry_id]).to.eql(["released", null, null]);
    pm.expect([b.hold.reason, b.hold.close_reason]).to.eql(["cancelled job", "job cancelled by the customer"]);
    pm.expect(b.hold.closed_at).to.be.a("string");
    pm.expect(b).to.not.have.property("entry");
});
pm.test("38 credits, none held, 38 available", function () {
    pm.expect([b.credits, b.held, b.available]).to.eql([38, 0, 38]);
});"""),
        request("The user's holds", "GET", u + "/holds?limit=5",
                description="Newest first; `status` (open, captured, released, expired) keeps only holds with "
                            "that status now. Pass `next_cursor` back as `cursor` for the next page.",
                tests=status(200) + """
const p = pm.response.json();
pm.test("the released hold, then the captured one, and no further page", function () {
    pm.expect(p.items.map(h => h.hold_id)).to.eql([Number(pm.collectionVariables.get("releaseHoldId")),
                                                  Number(pm.collectionVariables.get("holdId"))]);
    pm.expect(p.items.map(h => [h.status, h.close_reason])).to.eql(
        [["released", "job cancelled by the customer"], ["captured", null]]);
    pm.expect(p.next_cursor).to.eql(null);
});"""),
        request("The user's captured holds", "GET", u + "/holds?status=captured", tests=status(200) + """
const p = pm.response.json();
pm.test("only the captured hold", function () {
    pm.expect(p.items.map(h => [h.hold_id, h.status, h.captured])).to.eql(
        [[Number(pm.collectionVariables.get("holdId")), "captured", 12]]);
    pm.expect(p.next_cursor).to.eql(null);
});"""),
        request("The user's open holds: none", "GET", u + "/holds?status=open", tests=status(200) + """
pm.test("no open hold", function () { pm.expect(pm.response.json().items).to.eql([]); });"""),
        request("The capture is in the ledger", "GET", u + "/transactions?limit=2", tests=status(200) + """
const p = pm.response.json();
pm.test("the capture naming its hold, then the add", function () {
    pm.expect(p.items.map(e => [e.kind, e.amount, e.hold_id])).to.eql(
        [["capture", -12, Number(pm.collectionVariables.get("holdId"))], ["add", 50, null]]);
    pm.expect(p.items[0].id).to.eql(Number(pm.collectionVariables.get("captureEntryId")));
});"""),
    ]


def alerts_and_events(u):
    """A low-balance threshold at the balance, a deduct under it and an add back over it
    (balance.low, then balance.recovered, read from the polling feed); a webhook endpoint
    created disabled (no demo event leaves the service), listed, rotated and deleted; a
    loopback URL refused. The balance ends where it began (38, none held)."""
    return [
        request("Set a low-balance threshold", "PUT", u + "/alerts", body={"low_balance_threshold": 38},
                description="balance.low fires when a change takes the available balance below the threshold, "
                            "balance.depleted at zero, balance.recovered when it is back at or above it. Setting "
                            "a threshold fires nothing: the answer says where the balance stands. null: the "
                            "LOW_BALANCE_THRESHOLD setting's; 0: off.",
                tests=status(200) + """
const a = pm.response.json();
pm.test("threshold 38 in force, the balance at it: ok", function () {
    pm.expect(a.user_id).to.eql(Number(pm.collectionVariables.get("userId")));
    pm.expect([a.low_balance_threshold, a.threshold, a.alert_state, a.available]).to.eql([38, 38, "ok", 38]);
});
// The user's creation (the service's clock, not this machine's) bounds the feed below.
pm.collectionVariables.set("alertsSinceQuery", encodeURIComponent(pm.collectionVariables.get("userCreatedAt")));"""),
        request("Deduct under the threshold", "POST", u + "/deduct", body={"amount": 1, "reason": "under the threshold"},
                tests=status(200) + """
pm.test("37 credits", function () { pm.expect(pm.response.json().credits).to.eql(37); });"""),
        request("Add back over it", "POST", u + "/add", body={"amount": 1, "reason": "back at the threshold"},
                tests=status(200) + """
pm.test("38 credits", function () { pm.expect(pm.response.json().credits).to.eql(38); });"""),
        request("Read the alert settings", "GET", u + "/alerts", tests=status(200) + """
const a = pm.response.json();
pm.test("back at the threshold: ok", function () {
    pm.expect([a.threshold, a.alert_state, a.available]).to.eql([38, "ok", 38]);
});"""),
        request("Poll the user's alert events", "GET",
                "/api/events?since={{alertsSinceQuery}}&types=balance.low,balance.recovered&limit=100",
                description="Every event at or after `since`, oldest first, each as a webhook delivers it (an id "
                            "that never changes, a type, a timestamp, data). For clients that poll instead of "
                            "taking webhooks; `next_cursor` pages on.",
                tests=status(200) + """
const mine = pm.response.json().items.filter(e => e.data.user_id === Number(pm.collectionVariables.get("userId")));
pm.test("balance.low at 37, then balance.recovered at 38, threshold 38", function () {
    pm.expect(mine.map(e => e.type)).to.eql(["balance.low", "balance.recovered"]);
    pm.expect(mine.map(e => [e.data.available, e.data.threshold])).to.eql([[37, 38], [38, 38]]);
    mine.forEach(function (e) { pm.expect(e.id).to.match(/^evt_\\d+$/); });
});"""),
        request("Threshold back to the default", "PUT", u + "/alerts", body={"low_balance_threshold": None},
                tests=status(200) + """
pm.test("no threshold of the user's own", function () {
    pm.expect(pm.response.json().low_balance_threshold).to.eql(null);
});"""),
        request("Create a webhook endpoint (admin)", "POST", "/api/webhooks/endpoints", auth=ADMIN_AUTH,
                body={"url": "https://93.184.215.14/credits-hooks", "event_types": ["balance.low", "balance.recovered"],
                      "description": "postman demo {{runId}}", "enabled": False},
                description="The secret (`whsec_...`) signs every delivery (Standard Webhooks) and is shown this "
                            "once. The URL's host must resolve to public addresses only (unless "
                            "WEBHOOKS_ALLOW_PRIVATE_URLS). Created disabled here, so the demo sends nothing.",
                tests=status(201) + """
const e = pm.response.json();
pm.test("disabled, subscribed to two types, with its secret", function () {
    pm.expect(e.secret).to.match(/^whsec_/);
    pm.expect(e.enabled).to.eql(false);
    pm.expect(e.event_types.slice().sort()).to.eql(["balance.low", "balance.recovered"]);
});
pm.collectionVariables.set("endpointId", e.endpoint_id);"""),
        request("A loopback URL is refused: 422", "POST", "/api/webhooks/endpoints", auth=ADMIN_AUTH,
                body={"url": "http://127.0.0.1:8000/hooks", "event_types": ["balance.low"]},
                tests=status(422) + ERROR_SHAPE + """
pm.test("the url names the rule and the setting that lifts it", function () {
    const e = pm.response.json().error;
    pm.expect(e.code).to.eql("validation_error");
    pm.expect(JSON.stringify(e.details)).to.include("WEBHOOKS_ALLOW_PRIVATE_URLS");
});"""),
        request("Rotate the endpoint's secret (admin)", "POST", "/api/webhooks/endpoints/{{endpointId}}/rotate-secret",
                auth=ADMIN_AUTH, body={},
                description="A new secret, shown once; the old one keeps signing beside it for the overlap.",
                tests=status(200) + """
const e = pm.response.json();
pm.test("a new secret, the old one until previous_secret_until", function () {
    pm.expect(e.secret).to.match(/^whsec_/);
    pm.expect(e.previous_secret_until).to.be.a("string");
});"""),
        request("The endpoint's deliveries (admin)", "GET", "/api/webhooks/deliveries?endpoint={{endpointId}}",
                auth=ADMIN_AUTH,
                description="Each delivery with its status (pending, delivered, dead), tries and their history; "
                            "`status=dead` lists the dead letters, which POST .../deliveries/<id>/retry sends again.",
                tests=status(200) + """
pm.test("none: an endpoint gets the events after it is created and enabled", function () {
    pm.expect(pm.response.json().items).to.eql([]);
});"""),
        request("Delete the endpoint (admin)", "DELETE", "/api/webhooks/endpoints/{{endpointId}}", auth=ADMIN_AUTH,
                tests=status(204)),
    ]


def collection(examples=None):
    items = flow()
    if examples:
        # Every request gets its example, or the collection is not written: a run that
        # missed a request (a stopped flow, a renamed step) must not leave one blank.
        missing = [item["name"] for item in items if item["name"] not in examples]
        if missing:
            raise SystemExit(f"the newman report has no response for: {', '.join(missing)}")
        for item in items:
            item["response"] = [examples[item["name"]]]
    variables = ["serviceToken", "runId", "email", "userId", "userCreatedAt", "addEntryAt", "addEntryAtQuery",
                 "addBalanceAfter", "deductEntryId", "deductEntryAt", "deductEntryAtQuery", "reversalEntryId", "cursor",
                 "holdId", "captureEntryId", "releaseHoldId", "alertsSinceQuery", "endpointId", "grantDate", "grantPolls", "schemaSupported", "todayPlanned"]
    return {
        "info": {"name": "credits", "_postman_id": "6f1b2a8e-credits-0000-0000-000000000001",
                 "description": "The credits service end to end. Set baseUrl and adminToken in the environment "
                                "(postman/credits.postman_environment.json); see the README.",
                 "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"},
        "auth": {"type": "bearer", "bearer": [{"key": "token", "value": "{{serviceToken}}", "type": "string"}]},
        "item": items,
        "variable": [{"key": k, "value": ""} for k in variables],
    }


def environment():
    return {"id": "6f1b2a8e-credits-0000-0000-000000000002", "name": "credits (local)",
            "values": [{"key": "baseUrl", "value": "http://127.0.0.1:8000", "enabled": True},
                       {"key": "adminToken", "value": "", "type": "secret", "enabled": True}]}


def examples_from(report_path):
    """The last response newman saw for each request, as a Postman saved example."""
    with open(report_path) as f:
        report = json.load(f)
    found = {}
    for execution in report["run"]["executions"]:
        name, response = execution["item"]["name"], execution.get("response")
        if not response:
            continue
        body = bytes(response.get("stream", {}).get("data", [])).decode("utf-8", "replace")
        headers = response.get("header", [])
        content_type = next((h["value"] for h in headers if h["key"].lower() == "content-type"), "")
        json_body = content_type.startswith("application/json")
        if json_body:
            try:
                body = json.dumps(json.loads(body), indent=2)
            except ValueError:
                pass
        found[name] = {"name": f"{response['code']} {response['status']}", "code": response["code"],
                       "status": response["status"], "_postman_previewlanguage": "json" if json_body else "text",
                       "header": [h for h in headers
                                  if h["key"] in ("Content-Type", "X-Request-ID", "Idempotent-Replayed",
                                                  "WWW-Authenticate", "Content-Disposition")],
                       "body": body,
                       "originalRequest": execution["item"]["request"]}
    return found


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", help="a newman JSON report to take example responses from")
    args = parser.parse_args()
    data = collection(examples_from(args.examples) if args.examples else None)
    with open(os.path.join(HERE, "credits.postman_collection.json"), "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    with open(os.path.join(HERE, "credits.postman_environment.json"), "w") as f:
        json.dump(environment(), f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
