"""`make run` (scripts/local_stack.py) as a new user meets it, on a copy of the tree with no
.venv of its own and nothing configured: SQLite in instance/, a Redis it starts itself, the
Procfile's processes under honcho. It must say when and where it is ready, serve the
README's curl tour on the loopback only, and stop cleanly on Ctrl-C."""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.services import ROOT, free_port

pytestmark = pytest.mark.slow

# What a clean clone has, without what a checkout grows (virtualenv, databases, caches).
_NOT_IN_A_CLONE = shutil.ignore_patterns(".git", ".venv", "instance", "node_modules", "__pycache__", ".pytest_cache",
                                         "screenshots", ".env", "out")


def _call(url, token=None, method="GET", body=None, headers=None):
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={**({"Authorization": f"Bearer {token}"} if token else {}),
                                              **({"Content-Type": "application/json"} if body is not None else {}),
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _other_address():
    """An address of this machine that is not the loopback, if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, the kernel picks the route's source
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_make_run_announces_serves_the_curl_tour_on_the_loopback_and_stops_cleanly_on_ctrl_c(tmp_path):
    tree = tmp_path / "credits"
    shutil.copytree(ROOT, tree, ignore=_NOT_IN_A_CLONE)
    # What `make run` does before the script: a random JWT secret in .env.
    (tree / ".env").write_text(f"JWT_SECRET_KEY={secrets.token_urlsafe(48)}\n")
    port, redis_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET_KEY", "HOST",
                                                             "PORT", "FLASK_DEBUG", "TESTING")}
    env.update(PORT=str(port), LOCAL_REDIS_PORT=str(redis_port))
    # A session of its own, as a terminal's foreground job: Ctrl-C reaches the whole group.
    stack = subprocess.Popen([sys.executable, "scripts/local_stack.py"], cwd=tree, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(stack.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("local_stack: ready at" in line for line in lines):
            assert stack.poll() is None and time.monotonic() < deadline, "".join(lines)[-4000:]
            time.sleep(0.2)
        output = "".join(lines)
        base = f"http://127.0.0.1:{port}"
        assert f"ready at {base} (API docs: {base}/docs, operator console: {base}/console)" in output, output
        command = next(line for line in lines if "export TOKEN=$(" in line)
        issue = command.split("$(", 1)[1].rsplit(")", 1)[0].replace("$(whoami)", "newcomer").split()
        token = subprocess.run(issue, cwd=tree, env=env, capture_output=True, text=True, check=True).stdout.strip()

        # The README's curl tour, in short.
        status, _, body = _call(f"{base}/api/users", token, "POST", {"email": "ann@example.com", "name": "Ann"})
        assert status == 201, body
        uid = json.loads(body)["user_id"]
        status, _, body = _call(f"{base}/api/credits/{uid}/add", token, "POST", {"amount": 10, "reason": "publishing"})
        assert status == 200 and json.loads(body)["credits"] == 10, body
        status, _, body = _call(f"{base}/api/credits/{uid}/deduct", token, "POST", {"amount": 25})
        error = json.loads(body)["error"]
        assert status == 409 and error["code"] == "insufficient_credits", body
        assert error["details"]["balance"] == 10 and error["details"]["requested"] == 25, body
        for replay in (False, True):
            status, headers, body = _call(f"{base}/api/credits/{uid}/deduct", token, "POST", {"amount": 4},
                                          {"Idempotency-Key": "order-17"})
            assert status == 200 and json.loads(body)["credits"] == 6, body
            assert (headers.get("Idempotent-Replayed") == "true") is replay, headers
        assert _call(f"{base}/api/credits/{uid}")[0] == 401
        status, headers, _ = _call(f"{base}/docs")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert _call(f"{base}/readyz")[0] == 200
        assert (tree / "instance").is_dir() and any(name.endswith(".db") for name in os.listdir(tree / "instance"))

        other = _other_address()
        if other:  # bound to the loopback: the machine's other address refuses the connection
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((other, port)) != 0, f"the web answered on {other}"

        os.killpg(stack.pid, signal.SIGINT)  # Ctrl-C
        assert stack.wait(60) == 0, "".join(lines)[-4000:]
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGKILL)
            stack.wait()
    reader.join(5)
    for freed in (port, redis_port):  # nothing left listening
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", freed)) != 0, f"port {freed} still answers after the stop"
