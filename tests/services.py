"""Throwaway real servers for tests and benchmarks: a PostgreSQL cluster and a redis-server,
each in its own temp dir on a free loopback port. PostgreSQL refuses to run as root, so
as root the cluster runs as the `postgres` OS user. Missing binaries raise: CI must fail,
never skip, when a real store cannot be started."""
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time


class ServiceError(RuntimeError):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir():
    if shutil.which("pg_config"):
        candidate = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
        if os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise ServiceError("PostgreSQL server binaries (initdb) not found; install postgresql (see .ci/run)")
    return os.path.dirname(found[-1])


class Postgres:
    """A throwaway cluster. `durable=False` turns fsync off: for tests only, never benchmarks."""

    def __init__(self, durable=False, extra=()):
        self.bindir = pg_bindir()
        self.dir = tempfile.mkdtemp(prefix="credits-pg-")
        self.port = free_port()
        self.durable = durable
        self.extra = list(extra)
        self.as_root = os.geteuid() == 0

    def _run(self, *args, check=True, stdin=None):
        cmd = [os.path.join(self.bindir, args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, input=stdin)
        if check and result.returncode != 0:
            raise ServiceError(f"{args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result

    def settings(self):
        """Server settings, written to postgresql.conf so every start (restart too) uses them."""
        conf = {"port": self.port, "unix_socket_directories": f"'{self.dir}'", "listen_addresses": "'127.0.0.1'",
                "max_connections": 300, "timezone": "'UTC'"}
        if not self.durable:
            conf.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        for option in self.extra:  # "-c name=value"
            name, value = option.removeprefix("-c").strip().split("=", 1)
            conf[name.strip()] = value.strip()
        return conf

    def start(self):
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", f"{self.dir}/data", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale")
        with open(f"{self.dir}/data/postgresql.conf", "a") as f:
            f.write("\n# throwaway cluster (tests/services.py)\n")
            f.writelines(f"{k} = {v}\n" for k, v in self.settings().items())
        self.restart()
        return self

    def createdb(self, name):
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def url(self, name):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def psql(self, dbname, sql):
        """Run SQL (one command or a whole script) through psql, stopping at the first error."""
        return self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", dbname,
                         "-v", "ON_ERROR_STOP=1", "-qAt", stdin=sql).stdout

    def stop(self, mode="immediate"):
        self._run("pg_ctl", "-D", f"{self.dir}/data", "-m", mode, "-w", "stop", check=False)

    def restart(self):
        """Start (again) with the same settings. -l matters: without it the server would keep
        pg_ctl's captured stdout open and this call would never return."""
        self._run("pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "-t", "60", "start")

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    def __init__(self):
        self.binary = shutil.which("redis-server")
        if not self.binary:
            raise ServiceError("redis-server not found; install redis-server (see .ci/run)")
        self.dir = tempfile.mkdtemp(prefix="credits-redis-")
        self.port = free_port()
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise ServiceError("redis-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where a Web without a log_path writes its log: conftest points it at the test session's
# pytest temp directory (pytest keeps the last few and removes older ones), so test runs
# do not leave a log per gunicorn in /tmp.
WEB_LOG_DIR = None


class Web:
    """The `web` process exactly as the Procfile runs it: gunicorn with gunicorn.conf.py."""

    def __init__(self, env, port=None, log_path=None):
        self.port = port or free_port()
        self.env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), "TZ": "UTC", **env}
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.env.pop("CREDITS_OWN_METRICS_DIR", None)
        self.log_path = log_path or tempfile.mktemp(prefix="credits-web-", suffix=".log", dir=WEB_LOG_DIR)
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=30):
        import sys
        import urllib.request
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                                     cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"gunicorn exited: {open(self.log_path).read()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise ServiceError("gunicorn did not become healthy")

    def stop(self, timeout=40):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
        return self.proc.returncode if self.proc else None
