"""The console in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by Selenium, against the web process as production runs it (gunicorn with the
checked-in config, production defaults: rate limits on) on real PostgreSQL and Redis.

Each test signs in as an operator would and checks what the API then holds. Every test ends
with the browser's console free of CSP violations and script errors; a screenshot of each
view goes to tests/screenshots/ (ignored by git) for a person to look at. Waits are explicit
(WebDriverWait on a condition), generous for a slow shared machine; no correctness rests on
a fixed sleep. A missing chromium or chromedriver fails these tests: CI installs both."""
import base64
import json
import os
import urllib.request
from datetime import timedelta

import pytest
from redis import Redis as RedisClient
from rq import Queue, SimpleWorker
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from credits_app import grants
from credits_app.auth import tokens
from credits_app.extensions import db
from credits_app.webhooks import delivery
from tests.conftest import _fresh_url, make_app
from tests.services import ROOT, Web, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = os.path.join(ROOT, "tests", "screenshots")
SECRET = "console-browser-secret-0123456789abcdefghijkl"
WAIT = 60  # seconds: the longest any one condition may take on a loaded CI machine
GRANT_QUEUE = "credits"  # RQ_QUEUE's default, which the web process keeps

pytestmark = pytest.mark.slow


# ---- the stack ----------------------------------------------------------------------------

def http(base, method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Stack:
    """The web process, its database and Redis, and an app on the same database for setting
    up what the API cannot make quickly (grant runs, a dead delivery, a failed job)."""

    def __init__(self, url, redis_url, web, app):
        self.url, self.redis_url, self.web, self.app = url, redis_url, web, app
        self.admin = self.token("admin", "console-admin")

    def token(self, role, sub, ttl_seconds=None):
        return self.issue(role, sub, ttl_seconds)[0]

    def issue(self, role, sub, ttl_seconds=None):
        with self.app.app_context():
            return tokens.issue(role, sub, ttl_seconds=ttl_seconds)

    def api(self, method, path, body=None, token=None):
        return http(self.web.url, method, path, body, token or self.admin)

    def new_user(self, email, name="Console Test"):
        status, user = self.api("POST", "/api/users", {"email": email, "name": name})
        assert status == 201, user
        return user["user_id"]

    def entries(self, user_id, **query):
        params = "&".join(f"{k}={v}" for k, v in query.items())
        status, page = self.api("GET", f"/api/credits/{user_id}/transactions?limit=200&{params}")
        assert status == 200, page
        return page["items"]

    def balance(self, user_id):
        return self.api("GET", f"/api/credits/{user_id}")[1]["credits"]


@pytest.fixture(scope="module")
def stack(request, pg_server, redis_server):
    client = RedisClient.from_url(redis_server.url)
    client.flushall()
    client.close()
    url = _fresh_url("postgresql", request, None)
    env = {"DATABASE_URL": url, "REDIS_URL": redis_server.url, "JWT_SECRET_KEY": SECRET, "TESTING": "false",
           "WEBHOOKS_ALLOW_PRIVATE_URLS": "true"}  # the test's receiver is on loopback
    web = Web(env).start(timeout=60)
    app = make_app(url, JWT_SECRET_KEY=SECRET, REDIS_URL=redis_server.url, WEBHOOKS_ALLOW_PRIVATE_URLS="true",
                   WEBHOOKS_MAX_ATTEMPTS="1", DAILY_GRANT_CHUNK_SIZE="1")
    try:
        stack = Stack(url, redis_server.url, web, app)
        whoami = urllib.request.Request(web.url + "/api/auth/whoami", headers={"Authorization": f"Bearer {stack.admin}"})
        with urllib.request.urlopen(whoami, timeout=30) as answer:
            assert answer.headers["X-RateLimit-Limit"], "production defaults have rate limits on"
        yield stack
    finally:
        web.stop()
        with app.app_context():
            db.engine.dispose()


# ---- the browser --------------------------------------------------------------------------

@pytest.fixture
def browser(request):
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
    assert os.path.exists(CHROMEDRIVER), f"{CHROMEDRIVER} is missing: apt-get install chromium-driver (.ci/run does)"
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1000"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.log = Log(driver)
    try:
        yield driver
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:  # what the page showed when the test failed
            screenshot(driver, "failed-" + request.node.name)
            print("browser console:", json.dumps(driver.log.read().console, indent=1)[-4000:])
    finally:
        driver.quit()


class Log:
    """The browser's console and network logs, kept as they are read (reading drains them)."""

    def __init__(self, driver):
        self.driver, self.console, self.network = driver, [], []

    def read(self):
        self.console += self.driver.get_log("browser")
        self.network += [json.loads(e["message"])["message"] for e in self.driver.get_log("performance")]
        return self

    def requests(self, method, path_end):
        """The requests the page sent: [(requestId, headers)]."""
        return [(m["params"]["requestId"], m["params"]["request"]["headers"]) for m in self.read().network
                if m["method"] == "Network.requestWillBeSent" and m["params"]["request"]["method"] == method
                and m["params"]["request"]["url"].split("?")[0].endswith(path_end)]

    def finished(self, request_ids):
        done = {m["params"]["requestId"] for m in self.read().network
                if m["method"] in ("Network.loadingFinished", "Network.loadingFailed")}
        return set(request_ids) <= done

    def problems(self):
        """CSP violations and uncaught script errors (the API's 4xx answers, which the
        browser also logs, are expected: the console shows them)."""
        return [e["message"] for e in self.read().console
                if "Content Security Policy" in e["message"] or "Uncaught" in e["message"]
                or e.get("source") == "javascript"]


def wait(driver, condition, message, timeout=WAIT):
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)


def find(driver, css):
    return wait(driver, EC.presence_of_element_located((By.CSS_SELECTOR, css)), f"no element {css}")


def clickable(driver, css):
    return wait(driver, EC.element_to_be_clickable((By.CSS_SELECTOR, css)), f"{css} is not clickable")


def text_of(driver, css):
    elements = driver.find_elements(By.CSS_SELECTOR, css)
    return elements[0].text if elements else None


def wait_text(driver, css, predicate, what):
    return wait(driver, lambda d: (lambda t: t if t is not None and predicate(t) else False)(text_of(d, css)), what)


def screenshot(driver, name):
    """The whole page (not only the window) as tests/screenshots/<name>.png."""
    os.makedirs(SCREENSHOTS, exist_ok=True)
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {
        "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    with open(os.path.join(SCREENSHOTS, f"{name}.png"), "wb") as f:
        f.write(base64.b64decode(shot["data"]))


def sign_in(driver, stack, token):
    driver.get(stack.web.url + "/console")
    find(driver, "#token-input").send_keys(token)
    clickable(driver, "#sign-in").click()
    return wait_text(driver, "#who-text", bool, "the header never showed who is signed in")


def open_user(driver, user_id):
    box = clickable(driver, "#find-input")
    box.clear()
    box.send_keys(str(user_id))
    clickable(driver, "#find-button").click()
    wait_text(driver, "#balance-credits", bool, "the balance never showed")


def act(driver, action, **fields):
    """Open an action's panel, fill it and review it; returns the Idempotency-Key shown."""
    clickable(driver, action).click()
    for name, value in fields.items():
        box = find(driver, f"#action-slot input[name='{name}']")
        box.clear()
        box.send_keys(str(value))
    clickable(driver, "#action-review").click()
    key = find(driver, "#action-slot .key code")
    return key.text


def done_text(driver):
    return wait_text(driver, "#action-slot .status.ok", lambda t: t.startswith("Done"), "the action never finished")


def assert_no_browser_problems(driver):
    assert driver.log.problems() == []


# ---- the tests ----------------------------------------------------------------------------

def test_admin_finds_a_user_by_email_adds_and_sees_balance_chart_and_ledger_update(browser, stack):
    uid = stack.new_user("ann.console@example.com", "Ann")
    who = sign_in(browser, stack, stack.admin)
    assert "console-admin" in who and "admin" in who

    box = clickable(browser, "#find-input")
    box.send_keys("ANN.console@example.com")  # emails match case-insensitively
    clickable(browser, "#find-button").click()
    wait(browser, lambda d: d.current_url.endswith(f"#/user/{uid}"), "finding by email did not open the user")
    assert wait_text(browser, "#user-email", bool, "no email") == "ann.console@example.com"
    assert wait_text(browser, "#balance-credits", bool, "no balance") == "0"
    wait(browser, lambda d: d.find_element(By.ID, "chart").get_attribute("data-last") == "0", "no chart")

    key = act(browser, "#action-add", amount=25, reason="welcome bonus")
    assert "Add 25 credits to user" in text_of(browser, "#action-slot .summary")
    clickable(browser, "#action-confirm").click()
    assert "balance is now 25" in done_text(browser)

    wait_text(browser, "#balance-credits", lambda t: t == "25", "the balance did not refresh")
    assert text_of(browser, "#balance-available") == "25" and text_of(browser, "#balance-held") == "0"
    wait(browser, lambda d: d.find_element(By.ID, "chart").get_attribute("data-last") == "25", "the chart did not refresh")
    row = find(browser, "#ledger tbody tr[data-kind='add']")
    assert "welcome bonus" in row.text and "+25" in row.text and "console-admin" in row.text
    [entry] = stack.entries(uid)
    assert entry["amount"] == 25 and entry["idempotency_key"] == key and entry["actor"] == "console-admin"

    for label in ("7d", "30d", "all"):  # every range draws the same newest balance
        clickable(browser, f"#ranges button[data-range='{label}']").click()
        wait(browser, lambda d: d.find_element(By.ID, "chart").get_attribute("data-range") == label
             and d.find_element(By.ID, "chart").get_attribute("data-last") == "25", f"range {label} not drawn")

    # A hold made elsewhere shows, and releasing it from the console frees the credits.
    status, hold = stack.api("POST", f"/api/credits/{uid}/holds", {"amount": 5})
    assert status == 201, hold
    clickable(browser, "#refresh").click()
    wait_text(browser, "#balance-held", lambda t: t == "5", "the hold did not show")
    hold_id = hold["hold"]["hold_id"]
    clickable(browser, f"#holds button.release[data-hold='{hold_id}']").click()
    clickable(browser, "#action-review").click()  # a release, as every change here, needs a reason
    wait_text(browser, "#action-slot .status.error", lambda t: "reason is required" in t, "released without a reason")
    find(browser, "#action-slot input[name='reason']").send_keys("order cancelled")
    clickable(browser, "#action-review").click()
    assert "reason: “order cancelled”" in text_of(browser, "#action-slot .summary")
    clickable(browser, "#action-confirm").click()
    assert "is released" in done_text(browser)
    wait_text(browser, "#balance-available", lambda t: t == "25", "the release did not refresh the balance")
    wait_text(browser, "#holds tbody td.close-reason", lambda t: t == "order cancelled", "no release reason shown")
    status, released = stack.api("GET", f"/api/holds/{hold_id}")
    assert status == 200 and (released["status"], released["close_reason"]) == ("released", "order cancelled")

    # Reverse part of the add: a reversal entry naming it.
    act(browser, f"#ledger button.reverse[data-entry='{entry['id']}']", amount=10, reason="partly given in error")
    clickable(browser, "#action-confirm").click()
    assert "balance is now 15" in done_text(browser)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#ledger tbody tr[data-kind='reversal']"), "no reversal row")
    assert stack.balance(uid) == 15

    screenshot(browser, "user")

    # The kind filter asks the API for those kinds only.
    find(browser, "#ledger-filters input[value='reversal']").click()
    clickable(browser, "#ledger-apply").click()
    wait(browser, lambda d: {r.get_attribute("data-kind") for r in d.find_elements(By.CSS_SELECTOR, "#ledger tbody tr")}
         == {"reversal"}, "the kind filter did not apply")
    assert_no_browser_problems(browser)


def test_the_ledger_pages_and_filters_by_time_as_the_api_does(browser, stack):
    uid = stack.new_user("pat.console@example.com", "Pat")
    for n in range(1, 26):
        assert stack.api("POST", f"/api/credits/{uid}/add", {"amount": n, "reason": f"entry {n}"})[0] == 200
    sign_in(browser, stack, stack.admin)
    browser.get(stack.web.url + f"/console#/user/{uid}")
    wait_text(browser, "#balance-credits", lambda t: t == "325", "no balance")

    def amounts(d):
        rows = d.find_elements(By.CSS_SELECTOR, "#ledger tbody tr[data-entry]")
        return [r.find_element(By.CSS_SELECTOR, "td.num:nth-child(4)").text for r in rows]
    wait(browser, lambda d: amounts(d) == [f"+{n}" for n in range(25, 5, -1)], "not the newest 20 entries")
    clickable(browser, "#ledger-older").click()
    wait(browser, lambda d: amounts(d) == [f"+{n}" for n in range(5, 0, -1)], "not the older 5 entries")
    assert not browser.find_element(By.ID, "ledger-older").is_enabled()  # no next_cursor
    clickable(browser, "#ledger-newer").click()
    wait(browser, lambda d: amounts(d)[:1] == ["+25"], "not back at the newest page")

    # Time: the API judges the instant; its words are shown, then a window after every entry.
    since = find(browser, "#ledger-filters input[name='since']")
    since.send_keys("yesterday")
    clickable(browser, "#ledger-apply").click()
    status, refusal = stack.api("GET", f"/api/credits/{uid}/transactions?since=yesterday")
    assert status == 422
    wait_text(browser, "#ledger .error", lambda t: refusal["error"]["message"] in t, "the API's refusal not shown")
    since.clear()
    since.send_keys("2999-01-01")
    clickable(browser, "#ledger-apply").click()
    wait_text(browser, "#ledger td.empty", lambda t: t == "no entries", "the window was not applied")
    clickable(browser, "#ledger-clear").click()
    wait(browser, lambda d: len(amounts(d)) == 20, "clearing the filters did not show the entries again")
    assert_no_browser_problems(browser)


def test_a_double_clicked_deduct_applies_once(browser, stack):
    uid = stack.new_user("dee.console@example.com", "Dee")
    assert stack.api("POST", f"/api/credits/{uid}/add", {"amount": 100, "reason": "start"})[0] == 200
    sign_in(browser, stack, stack.admin)
    browser.get(stack.web.url + f"/console#/user/{uid}")
    wait_text(browser, "#balance-credits", lambda t: t == "100", "no balance")

    key = act(browser, "#action-deduct", amount=7, reason="double click")
    ActionChains(browser).double_click(clickable(browser, "#action-confirm")).perform()
    assert "balance is now 93" in done_text(browser)

    sent = browser.log.requests("POST", f"/api/credits/{uid}/deduct")
    assert sent and {headers.get("Idempotency-Key") for _, headers in sent} == {key}
    wait(browser, lambda d: d.log.finished([request_id for request_id, _ in sent]), "a deduct is still in flight")
    deducts = [e for e in stack.entries(uid) if e["kind"] == "deduct"]
    assert [(e["amount"], e["idempotency_key"]) for e in deducts] == [(-7, key)]
    assert stack.balance(uid) == 93
    wait_text(browser, "#balance-credits", lambda t: t == "93", "the balance did not refresh")
    assert_no_browser_problems(browser)


def test_a_resend_after_no_answer_reuses_the_idempotency_key(browser, stack):
    uid = stack.new_user("rae.console@example.com", "Rae")
    sign_in(browser, stack, stack.admin)
    browser.get(stack.web.url + f"/console#/user/{uid}")
    wait_text(browser, "#balance-credits", lambda t: t == "0", "no balance")
    key = act(browser, "#action-add", amount=3, reason="sent twice")

    browser.execute_cdp_cmd("Network.enable", {})
    offline = {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", offline)
    clickable(browser, "#action-confirm").click()
    wait_text(browser, "#action-slot .status.error", lambda t: "same Idempotency-Key" in t, "no resend offered")
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {**offline, "offline": False})
    clickable(browser, "#action-confirm").click()
    assert "balance is now 3" in done_text(browser)

    sent = browser.log.requests("POST", f"/api/credits/{uid}/add")
    assert len(sent) == 2 and {headers.get("Idempotency-Key") for _, headers in sent} == {key}
    assert [(e["amount"], e["idempotency_key"]) for e in stack.entries(uid)] == [(3, key)]
    assert_no_browser_problems(browser)


def test_markup_in_a_reason_is_shown_as_text_and_never_runs(browser, stack):
    uid = stack.new_user("mal.console@example.com", "<b>Mal</b>")
    payloads = ["<script>window.__pwned=1</script>", "<img src=x onerror=\"window.__pwned_img=1\">"]
    sign_in(browser, stack, stack.admin)
    browser.get(stack.web.url + f"/console#/user/{uid}")
    wait_text(browser, "#balance-credits", lambda t: t == "0", "no balance")
    for n, reason in enumerate(payloads, 1):
        act(browser, "#action-add", amount=n, reason=reason)
        assert reason in text_of(browser, "#action-slot .summary")
        clickable(browser, "#action-confirm").click()
        done_text(browser)
        clickable(browser, "#action-close").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#ledger tbody tr[data-kind='add']")) == 2, "no rows")
    shown = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#ledger tbody td.reason")]
    assert sorted(shown) == sorted(payloads)  # the very characters, not markup
    assert text_of(browser, "#user-name") == "<b>Mal</b>"
    assert browser.find_elements(By.CSS_SELECTOR, "#view script, #view img, #view b") == []
    assert browser.execute_script("return [window.__pwned, window.__pwned_img]") == [None, None]
    assert [e["reason"] for e in stack.entries(uid)] == payloads[::-1]
    assert_no_browser_problems(browser)


def test_a_support_token_reads_but_is_refused_a_change_with_the_apis_message(browser, stack):
    uid = stack.new_user("sue.console@example.com", "Sue")
    assert stack.api("POST", f"/api/credits/{uid}/add", {"amount": 9})[0] == 200
    support = stack.token("support", "sam-support")
    who = sign_in(browser, stack, support)
    assert "sam-support" in who and "support" in who
    open_user(browser, uid)
    assert wait_text(browser, "#balance-credits", bool, "no balance") == "9"
    find(browser, "#ledger tbody tr[data-kind='add']")

    assert "lacks" in clickable(browser, "#action-add").get_attribute("class")  # marked, yet the API decides
    act(browser, "#action-add", amount=1, reason="support tries")
    clickable(browser, "#action-confirm").click()
    status, refusal = stack.api("POST", f"/api/credits/{uid}/add", {"amount": 1}, token=support)
    assert status == 403
    shown = wait_text(browser, "#action-slot .status.error", bool, "no refusal shown")
    assert refusal["error"]["message"] in shown and "HTTP 403" in shown
    assert stack.balance(uid) == 9 and len(stack.entries(uid)) == 1
    screenshot(browser, "user-support-refused")

    # A view it may not read shows the API's refusal (and the note that the role lacks it).
    clickable(browser, "#nav a[href='#/queues']").click()
    refused = stack.api("GET", "/api/queues", token=support)[1]["error"]["message"]
    wait_text(browser, "#queues-overview .error", lambda t: refused in t, "the queues refusal not shown")
    assert "lacks queues:read" in text_of(browser, "#view .note")
    assert_no_browser_problems(browser)


def test_a_revoked_token_returns_to_sign_in_with_the_apis_message(browser, stack):
    uid = stack.new_user("rev.console@example.com", "Rev")
    token, claims = stack.issue("admin", "soon-revoked")
    sign_in(browser, stack, token)
    open_user(browser, uid)
    status, answer = stack.api("POST", "/api/auth/revoke", {"jti": claims["jti"], "reason": "console test"})
    assert status == 200 and answer["revoked"]

    # Another web worker may trust its cache for REVOCATION_CACHE_SECONDS: ask again until
    # an API call meets the revocation (each poll is a real click of Refresh).
    def back_at_sign_in(d):
        if d.find_elements(By.ID, "sign-in-message"):
            return d.find_element(By.ID, "sign-in-message").text
        refresh = d.find_elements(By.ID, "refresh")
        if refresh:
            refresh[0].click()
        return False
    message = wait(browser, back_at_sign_in, "a revoked token never returned to sign-in")
    assert message == "the token has been revoked"
    assert browser.execute_script("return window.sessionStorage.length") == 0
    assert not browser.find_element(By.ID, "nav").is_displayed()
    screenshot(browser, "sign-in")
    assert_no_browser_problems(browser)


def failing_job():
    raise RuntimeError("a job that fails on purpose (tests/test_console_browser.py)")


def test_every_view_shows_the_apis_data(browser, stack):
    today = grants.utc_today()
    uid = stack.new_user("eve.console@example.com", "Eve")  # so that every run has a user to grant
    with stack.app.app_context():
        # Grant runs for the chart: a few done dates, and today's planned but not run yet.
        for days_ago in (40, 20, 9, 3, 2):
            grants.run_date(today - timedelta(days=days_ago))
        grants.plan(today)
        running = grants.get_run(today)
        # A failed job on the grant queue, run by an RQ worker in this process.
        redis = RedisClient.from_url(stack.redis_url)
        Queue(GRANT_QUEUE, connection=redis).enqueue(failing_job)
        SimpleWorker([Queue(GRANT_QUEUE, connection=redis)], connection=redis).work(burst=True)
    assert running.status == "running" and running.chunks_total >= 1

    # A webhook endpoint nothing listens on, and one of its deliveries dead after one try.
    status, endpoint = stack.api("POST", "/api/webhooks/endpoints", {
        "url": f"http://127.0.0.1:{free_port()}/hook", "event_types": ["credits.changed"], "description": "nobody"})
    assert status == 201, endpoint
    assert stack.api("POST", f"/api/credits/{uid}/add", {"amount": 4, "reason": "for a webhook"})[0] == 200
    [pending] = stack.api("GET", f"/api/webhooks/deliveries?endpoint={endpoint['endpoint_id']}")[1]["items"]
    with stack.app.app_context():
        delivery.deliver_now(pending["delivery_id"])
    assert stack.api("GET", f"/api/webhooks/deliveries/{pending['delivery_id']}")[1]["status"] == "dead"

    sign_in(browser, stack, stack.admin)

    # Daily grant: today's run in progress refreshes itself as its chunks finish.
    clickable(browser, "#nav a[href='#/grants']").click()
    progress = wait_text(browser, "#grant-progress .progress", bool, "no run in progress shown")
    assert f"chunk 0/{running.chunks_total}" in progress
    assert len(browser.find_elements(By.CSS_SELECTOR, "#grant-runs tr[data-status='done']")) == 5
    users_chart, duration_chart = browser.find_elements(By.CSS_SELECTOR, "#grant-charts svg.chart")
    assert len(users_chart.find_elements(By.CSS_SELECTOR, "rect.bar")) == 6  # today's running run too
    assert len(duration_chart.find_elements(By.CSS_SELECTOR, "rect.bar")) == 5  # only finished runs have one
    screenshot(browser, "grants")
    with stack.app.app_context():
        for chunk in grants.pending_chunks(today):
            grants.run_chunk(today, running.amount, chunk.lo, chunk.hi)
    wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, f"#grant-runs tr[data-date='{today}']"
                                                                     f"[data-status='done']")), "no self-refresh")
    assert text_of(browser, "#grant-progress") == ""
    # A catch-up date: the API's refusal in its words, then one it queues.
    too_old = today - timedelta(days=30)
    for date, expected in ((str(too_old), f"date {too_old} is more than"), (str(today - timedelta(days=1)), "Queued: job")):
        box = clickable(browser, "#grant-date")
        box.clear()
        box.send_keys(date)
        clickable(browser, "#grant-run").click()
        wait_text(browser, "#grant-run-status", lambda t: expected in t, f"no answer for {date}")

    # Events: the dead delivery with its attempt, retried from the console.
    clickable(browser, "#nav a[href='#/events']").click()
    wait_text(browser, "#endpoints tbody", lambda t: endpoint["url"] in t, "no endpoint shown")
    row = f"#deliveries tr[data-delivery='{pending['delivery_id']}']"
    wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, row + "[data-status='dead']")), "no dead delivery")
    screenshot(browser, "events")
    clickable(browser, row + " button.retry").click()
    clickable(browser, "#action-review").click()
    clickable(browser, "#action-confirm").click()
    assert "is pending" in done_text(browser)
    wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, row + "[data-status='pending']")), "no refresh")
    assert stack.api("GET", f"/api/webhooks/deliveries/{pending['delivery_id']}")[1]["attempts"] == 0

    # Schema: the history of external updates, the live tables, and a dry run (applied and
    # rolled back) then a refusal in the API's words.
    status, change = stack.api("POST", "/api/schema/apply", {"sql": "CREATE TABLE console_notes (id bigint "
                                                                   "PRIMARY KEY, note text)", "name": "console-notes"})
    assert status == 200 and change["status"] == "applied", change
    clickable(browser, "#nav a[href='#/schema']").click()
    wait_text(browser, "#schema-changes tbody", lambda t: "console-notes" in t and "applied" in t, "no history")
    find(browser, "#schema-live details[data-table='console_notes'] summary").click()
    assert "note" in find(browser, "#schema-live details[data-table='console_notes'] table").text
    sql = find(browser, "#schema-sql")
    sql.send_keys("CREATE TABLE console_probe (id bigint PRIMARY KEY)")
    find(browser, "#schema-name").send_keys("console-probe")
    clickable(browser, "#schema-dry-run").click()
    wait_text(browser, "#schema-status", lambda t: t.startswith("dry_run: console-probe"), "no dry-run answer")
    assert "console_probe" in text_of(browser, "#schema-result")
    assert "console_probe" not in json.dumps(stack.api("GET", "/api/schema")[1])  # rolled back
    screenshot(browser, "schema")
    sql.clear()
    sql.send_keys("DROP TABLE users")
    clickable(browser, "#schema-dry-run").click()
    wait_text(browser, "#schema-status", lambda t: "schema_change_refused" in t, "no refusal shown")

    # Queues: the failed job, requeued from the console.
    clickable(browser, "#nav a[href='#/queues']").click()
    wait_text(browser, f"#queues-overview tr[data-queue='{GRANT_QUEUE}'] td.failed-count", lambda t: t == "1",
              "the failed job is not counted")
    job = find(browser, "#queue-failed tr[data-job]")
    assert "fails on purpose" in job.text or "failing_job" in job.text
    job_id = job.get_attribute("data-job")
    screenshot(browser, "queues")
    clickable(browser, f"#queue-failed button.requeue[data-job='{job_id}']").click()
    clickable(browser, "#action-review").click()
    clickable(browser, "#action-confirm").click()
    assert "is queued" in done_text(browser)
    wait_text(browser, f"#queues-overview tr[data-queue='{GRANT_QUEUE}'] td.failed-count", lambda t: t == "0",
              "the requeue did not refresh the counts")
    assert_no_browser_problems(browser)


def test_the_content_security_policy_is_enforced(browser, stack):
    sign_in(browser, stack, stack.admin)
    assert_no_browser_problems(browser)  # the console itself works under its policy
    blocked = browser.execute_script("""
        window.__inline = 0;
        const script = document.createElement('script');
        script.textContent = 'window.__inline = 1';
        document.body.append(script);
        const styled = document.createElement('p');
        styled.setAttribute('style', 'color: red');
        document.body.append(styled);
        return [window.__inline, getComputedStyle(styled).color];""")
    assert blocked[0] == 0 and blocked[1] != "rgb(255, 0, 0)"
    violations = wait(browser, lambda d: [m for m in d.log.problems() if "Content Security Policy" in m], "no report")
    assert any("inline script" in m or "script-src" in m for m in violations), violations
