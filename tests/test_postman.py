"""The Postman collection, run by newman against the real stack — gunicorn (web), the
project's worker and scheduler, PostgreSQL and Redis — as .ci/run and the README promise.
A failing pm.test fails this test, and so CI."""
import importlib.util
import json
import os
import subprocess

import pytest

from credits_app import grants
from credits_app.extensions import db
from tests.conftest import _fresh_url, make_app, token_for
from tests.redis_fixtures import QUEUE, wait_for
from tests.services import ROOT, Web

NEWMAN = os.path.join(ROOT, "postman", "node_modules", ".bin", "newman")
SECRET = "postman-ci-secret-0123456789abcdefghijklmnop"


@pytest.mark.slow
def test_postman_collection_passes_against_the_real_stack(request, tmp_path, rq_processes, redis_url):
    assert os.path.exists(NEWMAN), "newman is missing: run `npm ci --prefix postman` (make test does)"
    url = _fresh_url("postgresql", request, tmp_path)
    env = {"DATABASE_URL": url, "REDIS_URL": redis_url, "JWT_SECRET_KEY": SECRET, "RQ_QUEUE": QUEUE,
           "WEB_CONCURRENCY": "2", "TESTING": "false"}
    rq_processes.worker(url, entry_point=True, **env)
    rq_processes.scheduler(url, **env)
    web = Web(env, log_path=str(tmp_path / "web.log")).start()
    app = make_app(url, JWT_SECRET_KEY=SECRET)
    # The scheduler plans today's run when it starts: wait for it, so the collection sees
    # one state of today's run throughout (the users it creates are not in that run).
    with app.app_context():
        wait_for(lambda: grants.get_run(grants.utc_today()), "the scheduler to plan today's run", timeout=60)
    report = tmp_path / "newman.json"
    try:
        result = subprocess.run(
            [NEWMAN, "run", "postman/credits.postman_collection.json",
             "-e", "postman/credits.postman_environment.json",
             "--env-var", f"baseUrl={web.url}", "--env-var", f"adminToken={token_for(app, 'admin', sub='ci-admin')}",
             "--reporters", "cli,json", "--reporter-json-export", str(report), "--color", "off", "--timeout-request", "30000"],
            cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        web.stop()
        with app.app_context():
            db.engine.dispose()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:] + rq_processes.logs()
    if os.environ.get("POSTMAN_REPORT"):  # `make postman-examples` refreshes the saved examples from it
        report_copy = report.read_text()
        with open(os.environ["POSTMAN_REPORT"], "w") as f:
            f.write(report_copy)
    stats = json.loads(report.read_text())["run"]["stats"]
    assert stats["assertions"]["failed"] == 0 and stats["assertions"]["total"] >= 40
    assert stats["requests"]["failed"] == 0


def _builder():
    spec = importlib.util.spec_from_file_location("build_collection", os.path.join(ROOT, "postman", "build_collection.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _saved_collection():
    with open(os.path.join(ROOT, "postman", "credits.postman_collection.json")) as f:
        return json.load(f)


def test_every_request_in_the_collection_has_a_saved_example():
    """Postman shows a request's saved example as what it answers: one without is a blank
    page to a new user. `make postman-examples` saves one for each from a real run (a 204's
    example is its status and headers: it has no body)."""
    items = _saved_collection()["item"]
    missing = [item["name"] for item in items
               if not any(isinstance(r.get("code"), int) and (r.get("body") or r["code"] == 204)
                          for r in item["response"])]
    assert missing == [], f"no saved example (run `make postman-examples`): {missing}"


def test_the_saved_collection_is_what_build_collection_makes():
    """The committed collection holds the requests and tests build_collection.py writes
    today (examples aside): a request added to the builder but not rebuilt would otherwise
    go unrun and without an example."""
    def without_examples(collection):
        return {**collection, "item": [{k: v for k, v in item.items() if k != "response"}
                                       for item in collection["item"]]}
    assert without_examples(_saved_collection()) == without_examples(_builder().collection())


def test_building_with_examples_refuses_a_run_that_missed_a_request():
    builder = _builder()
    names = [item["name"] for item in builder.flow()]
    examples = {name: {"name": "200 OK", "code": 200, "status": "OK", "body": "{}"} for name in names[1:]}
    with pytest.raises(SystemExit, match=names[0]):
        builder.collection(examples)
    assert all(item["response"] for item in builder.collection({names[0]: examples[names[1]], **examples})["item"])
