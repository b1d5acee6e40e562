"""The Postman collection, run by newman against the real stack — gunicorn (web), the
project's worker and scheduler, PostgreSQL and Redis — as .ci/run and the README promise.
A failing pm.test fails this test, and so CI."""
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
