"""A real, throw-away PostgreSQL server for the ledger tests (no mock).

``postgres_server`` (session): initdb into a fresh temporary folder, ``postgres`` on a free port of 127.0.0.1 (password
authentication over TCP), stopped and deleted at the end. Binaries: ``$ROUTECRAFT_PG_BINDIR``, ``pg_config
--bindir``, the newest ``/usr/lib/postgresql/*/bin`` or ``initdb`` on PATH. As root (initdb refuses to run as root)
the server runs as the ``postgres`` user, or as a system user ``routecraft-pg`` created when that is missing.
``$ROUTECRAFT_TEST_POSTGRES_URL`` (a superuser URL) uses an existing server instead.

``pg_url`` (function): a ``postgresql://`` URL of a fresh, empty database on that server, dropped afterwards.

When no server can be had the tests using these skip — or FAIL when ``ROUTECRAFT_REQUIRE_POSTGRES=1`` (CI sets it, so
a broken PostgreSQL install cannot hide behind skips).
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_USER = "routecraft"
PG_PASSWORD = "pw-Zq8u3-never-shown"
RUN_AS = ("postgres", "routecraft-pg")


def require_postgres() -> bool:
    return os.environ.get("ROUTECRAFT_REQUIRE_POSTGRES", "").strip() not in ("", "0", "false", "no")


def find_bindir() -> Optional[Path]:
    if os.environ.get("ROUTECRAFT_PG_BINDIR"):  # this folder or nothing
        c = Path(os.environ["ROUTECRAFT_PG_BINDIR"])
        return c if (c / "initdb").is_file() and (c / "postgres").is_file() else None
    cands: list[Path] = []
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            cands.append(Path(out.stdout.strip()))
    except (OSError, subprocess.SubprocessError):
        pass

    def version(p: str) -> tuple:
        return tuple(int(x) for x in re.findall(r"\d+", p)) or (0,)
    cands += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    which = shutil.which("initdb")
    if which:
        cands.append(Path(which).parent)
    for c in cands:
        if (c / "initdb").is_file() and (c / "postgres").is_file():
            return c
    return None


def _run_as_user() -> Optional[tuple[int, int, str]]:
    """(uid, gid, name) of the non-root user to run the server as; None when we are not root."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in RUN_AS:
        try:
            pw = pwd.getpwnam(name)
            return pw.pw_uid, pw.pw_gid, name
        except KeyError:
            continue
    name = RUN_AS[-1]
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                    "/usr/sbin/nologin", name], check=True, capture_output=True, timeout=60)
    pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid, name


def _die_with_parent() -> None:  # in the server's child process: a killed test run takes the server with it
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGINT))  # PR_SET_PDEATHSIG: fast shutdown
    except Exception:  # noqa: BLE001 - not Linux: stop() at the end of the session still does it
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_db(url: str, db: str) -> str:
    u = urlsplit(url)
    return urlunsplit((u.scheme, u.netloc, "/" + db, u.query, u.fragment))


@dataclass
class PgServer:
    url: str  # superuser URL (database "postgres")
    port: int = 0
    tmp: Optional[Path] = None
    proc: Optional[subprocess.Popen] = None
    log: Optional[Path] = None
    _dbs: list = field(default_factory=list)

    def admin(self):
        import psycopg

        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def new_database(self) -> str:
        name = "rc_" + uuid.uuid4().hex[:12]
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def start_postgres(timeout_s: float = 60.0) -> PgServer:
    """initdb + postgres on a free 127.0.0.1 port; RuntimeError (with the server log's tail) when it cannot start."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb, postgres) found: install the 'postgresql' package "
                           "or set ROUTECRAFT_PG_BINDIR")
    who = _run_as_user()
    kw: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="routecraft-pg-"))
    if who is not None:
        uid, gid, _ = who
        os.chown(tmp, uid, gid)
        kw = {"user": uid, "group": gid, "extra_groups": []}
    data, pwfile, log = tmp / "data", tmp / "pwfile", tmp / "server.log"
    pwfile.write_text(PG_PASSWORD + "\n")
    if who is not None:
        os.chown(pwfile, who[0], who[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    srv = PgServer(url="", tmp=tmp, log=log)
    try:
        r = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, f"--pwfile={pwfile}",
                            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
                           capture_output=True, text=True, timeout=180, cwd=tmp, env=env, **kw)
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed ({r.returncode}): {(r.stderr or r.stdout)[-2000:]}")
        srv.port = port = _free_port()
        logf = open(log, "ab")
        if who is not None:
            os.chown(log, who[0], who[1])
        srv.proc = subprocess.Popen([str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(tmp),
                                     "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=60"],
                                    stdout=logf, stderr=subprocess.STDOUT, cwd=tmp, env=env,
                                    start_new_session=True, preexec_fn=_die_with_parent, **kw)
        atexit.register(srv.stop)
        logf.close()
        srv.url = f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{port}/postgres"
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            if srv.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({srv.proc.returncode}): {log.read_text()[-2000:]}")
            try:
                psycopg.connect(srv.url, connect_timeout=2).close()
                return srv
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres not ready after {timeout_s:.0f} s: {exc}; "
                                       f"{log.read_text()[-2000:]}") from None
                time.sleep(0.1)
    except BaseException:
        srv.stop()
        raise


def _unavailable(msg: str):
    if require_postgres():
        pytest.fail(f"{msg} (ROUTECRAFT_REQUIRE_POSTGRES=1)", pytrace=False)
    pytest.skip(f"{msg} (set ROUTECRAFT_REQUIRE_POSTGRES=1 to fail instead)")


@pytest.fixture(scope="session")
def postgres_server():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'routecraft[postgres]')")
    ext = os.environ.get("ROUTECRAFT_TEST_POSTGRES_URL")
    if ext:
        yield PgServer(url=ext)
        return
    try:
        srv = start_postgres()
    except Exception as exc:  # noqa: BLE001 - reported as a skip or a failure
        _unavailable(f"cannot start a PostgreSQL server: {exc}")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def pg_url(postgres_server):
    name = postgres_server.new_database()
    try:
        yield with_db(postgres_server.url, name)
    finally:
        postgres_server.drop_database(name)
