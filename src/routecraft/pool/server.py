"""Serve local GGUF models with llama.cpp's OpenAI-compatible server (xllamacpp) on loopback.

Each model runs in its own process (``python -m routecraft.pool._worker``), in its own process group, listening on
127.0.0.1 on a port the OS picks free. Readiness is checked with GET /health. Servers started by ``up()`` are
recorded in a state file (``~/.cache/routecraft/pool-state.json``, or ``$ROUTECRAFT_POOL_STATE``) so that ``down()``
and ``status()`` work from another process; entries whose process is gone (or whose pid now belongs to another
program) are detected as stale and pruned.

``serve_local(name)`` is a context manager for tests and scripts: a server that is not recorded in the state file and
is stopped on exit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

from routecraft.pool.config import Pool, PoolModel
from routecraft.pool.models import get_model, install, model_path

log = logging.getLogger("routecraft.pool.server")

ENV_STATE = "ROUTECRAFT_POOL_STATE"
WORKER_MODULE = "routecraft.pool._worker"
DEFAULT_CTX = 4096
DEFAULT_START_TIMEOUT = 180.0


class ServerError(RuntimeError):
    """A local server could not be started or is not running."""


def state_path() -> Path:
    env = os.environ.get(ENV_STATE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "routecraft" / "pool-state.json"


def _log_dir() -> Path:
    d = state_path().parent / "logs"
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---- process helpers ----------------------------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live routecraft worker (not a zombie, not a reused pid of another program)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        if "\nState:\tZ" in status:
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return WORKER_MODULE in cmdline
    except OSError:
        return sys.platform != "linux"  # no /proc: trust kill(0)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _kill_group(pid: int, pgid: Optional[int], grace_s: float = 10.0) -> None:
    """SIGTERM the process group (or the pid), wait, then SIGKILL."""
    target_group = pgid if pgid and pgid > 1 else None

    def send(sig: int) -> None:
        try:
            if target_group is not None:
                os.killpg(target_group, sig)
            else:
                os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    send(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _exists(pid):
            return
        time.sleep(0.1)
    send(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _exists(pid):
        time.sleep(0.05)


def _exists(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap if it is our child
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


# ---- one server ---------------------------------------------------------------------------------------------------
@dataclass
class LocalServer:
    """A running (or starting) llama.cpp server for one local model."""

    name: str  # pool model name (the model id the server answers to)
    local: str  # registry name
    model_path: str
    ctx: int = DEFAULT_CTX
    threads: int = 0  # 0: $ROUTECRAFT_THREADS, else half the logical cores (at least 1)
    parallel: int = 1
    poll: int = 0  # llama.cpp busy-wait level (0-100); 0 yields the CPU between ops (much faster on a shared CPU)
    listen_port: int = 0  # 0: the OS picks a free port
    private: bool = False  # private servers exit when the launching process is gone
    pid: Optional[int] = None
    pgid: Optional[int] = None
    port: Optional[int] = None
    started_at: Optional[float] = None
    start_s: Optional[float] = None
    log_file: Optional[str] = None
    _proc: Optional[subprocess.Popen] = field(default=None, repr=False, compare=False)
    _ready_file: Optional[str] = field(default=None, repr=False, compare=False)

    @property
    def model_id(self) -> str:
        return self.name

    @property
    def root_url(self) -> str:
        if self.port is None:
            raise ServerError(f"server for {self.name!r} has no port yet (not started)")
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base_url (…/v1)."""
        return self.root_url + "/v1"

    def launch(self) -> None:
        """Start the worker process (returns at once; call wait_ready())."""
        fd, ready = tempfile.mkstemp(prefix=f"routecraft-{self.name}-", suffix=".ready")
        os.close(fd)
        os.unlink(ready)
        self._ready_file = ready
        log_path = _log_dir() / f"{self.name}.log"
        self.log_file = str(log_path)
        cmd = [sys.executable, "-m", WORKER_MODULE, "--model", self.model_path, "--alias", self.name,
               "--ready-file", ready, "--ctx", str(self.ctx), "--threads", str(self.threads),
               "--parallel", str(self.parallel), "--port", str(self.listen_port),
               "--poll", str(self.poll)]
        if self.private:
            cmd += ["--parent-pid", str(os.getpid())]
        with open(log_path, "ab") as logf:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                          start_new_session=True, close_fds=True)
        self.pid = self._proc.pid
        self.pgid = self._proc.pid  # start_new_session: the worker leads its own group
        self.started_at = time.time()
        log.info("%s: started worker pid %d (log %s)", self.name, self.pid, log_path)

    def wait_ready(self, timeout: float = DEFAULT_START_TIMEOUT) -> "LocalServer":
        """Block until the server answers GET /health with 200; ServerError (and cleanup) on failure/timeout."""
        t0 = self.started_at or time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                self._cleanup_ready()
                raise ServerError(f"server for {self.name!r} exited with code {self._proc.returncode} while "
                                  f"starting; last log lines:\n{self._log_tail()}")
            if self.port is None and self._ready_file and os.path.exists(self._ready_file):
                with open(self._ready_file) as f:
                    info = json.load(f)
                self.port = int(info["address"].rsplit(":", 1)[1].strip("/"))
                self.threads = int(info.get("threads", self.threads))
            if self.port is not None and http_ok(self.root_url + "/health"):
                self.start_s = time.time() - t0
                self._cleanup_ready()
                log.info("%s: ready at %s in %.1fs", self.name, self.base_url, self.start_s)
                return self
            time.sleep(0.1)
        self.stop()
        raise ServerError(f"server for {self.name!r} not ready after {timeout:.0f}s; last log lines:\n"
                          f"{self._log_tail()}")

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> "LocalServer":
        self.launch()
        return self.wait_ready(timeout)

    def alive(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)

    def healthy(self) -> bool:
        return self.port is not None and http_ok(self.root_url + "/health")

    def stop(self, grace_s: float = 10.0) -> None:
        if self.pid is not None:
            _kill_group(self.pid, self.pgid, grace_s)
            if self._proc is not None:
                with contextlib.suppress(Exception):
                    self._proc.wait(timeout=1)
        self._cleanup_ready()

    def _cleanup_ready(self) -> None:
        if self._ready_file:
            for p in (self._ready_file, self._ready_file + ".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(p)

    def _log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(Path(self.log_file).read_text(errors="replace").splitlines()[-n:])
        except (OSError, TypeError):
            return "(no log)"

    def to_state(self) -> dict:
        d = {f: getattr(self, f) for f in self.__dataclass_fields__ if not f.startswith("_")}
        d["base_url"] = self.base_url if self.port else None
        return d

    @classmethod
    def from_state(cls, d: dict) -> "LocalServer":
        keys = {f for f in cls.__dataclass_fields__ if not f.startswith("_")}
        return cls(**{k: v for k, v in d.items() if k in keys})


def _resolve_local(model: PoolModel | str) -> tuple[str, str]:
    """(pool name, registry name) for a PoolModel with ``local`` or a registry name."""
    if isinstance(model, PoolModel):
        if model.local is None:
            raise ServerError(f"model {model.name!r} has an endpoint ({model.endpoint}), not a local model")
        return model.name, model.local
    get_model(model)
    return model, model


@contextlib.contextmanager
def serve_local(model: PoolModel | str, *, ctx: int = DEFAULT_CTX, threads: int = 0, parallel: int = 1,
                port: int = 0, poll: int = 0, timeout: float = DEFAULT_START_TIMEOUT,
                install_missing: bool = True) -> Iterator[LocalServer]:
    """Start a private server for one local model and stop it on exit.

    Not recorded in the state file; the worker also exits by itself if this process dies. ``port`` 0 lets the OS
    pick a free port.
    """
    name, local = _resolve_local(model)
    path = install(local)[local] if install_missing else model_path(local)
    srv = LocalServer(name=name, local=local, model_path=str(path), ctx=ctx, threads=threads, parallel=parallel,
                      listen_port=port, poll=poll, private=True)
    try:
        srv.start(timeout)
        yield srv
    finally:
        srv.stop()


# ---- the state file -----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked_state() -> Iterator[dict]:
    """Read-modify-write the state file under an exclusive lock; yields {name: entry}."""
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        try:
            state = json.loads(path.read_text()) if path.exists() else {}
            if not isinstance(state, dict):
                state = {}
        except (ValueError, OSError):
            log.warning("state file %s is unreadable; starting a fresh one", path)
            state = {}
        before = json.dumps(state, sort_keys=True)
        yield state
        if json.dumps(state, sort_keys=True) != before:
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(json.dumps(state, indent=2))
            os.replace(tmp, path)


def running() -> dict[str, LocalServer]:
    """Servers recorded in the state file whose process is alive (stale entries are pruned)."""
    with _locked_state() as state:
        out = {}
        for name, entry in list(state.items()):
            srv = LocalServer.from_state(entry)
            if srv.alive():
                out[name] = srv
            else:
                log.info("%s: pruning stale entry (pid %s is gone)", name, srv.pid)
                del state[name]
        return out


def base_url_for(model: PoolModel) -> str:
    """The base_url to call ``model`` at: its endpoint, or the running local server's (ServerError if down)."""
    if model.endpoint:
        return model.endpoint
    srv = running().get(model.name)
    if srv is None:
        raise ServerError(f"local model {model.name!r} is not running; start it with `routecraft pool up "
                          f"--models {model.name}`")
    return srv.base_url


def up(pool: Pool, names: Optional[Sequence[str]] = None, *, ctx: Optional[int] = None, threads: int = 0,
       parallel: int = 1, timeout: float = DEFAULT_START_TIMEOUT) -> dict[str, str]:
    """Start servers for the pool's local models (all, or ``names``); return {name: base_url}.

    Models already running and healthy are reused. Missing model files are installed first. All servers are launched
    before waiting, so they load in parallel. Endpoint models are returned with their endpoint.
    """
    chosen = [pool.get(n) for n in names] if names else list(pool.models)
    result: dict[str, str] = {}
    current = running()
    to_start: list[LocalServer] = []
    for m in chosen:
        if m.endpoint:
            result[m.name] = m.endpoint
            continue
        srv = current.get(m.name)
        if srv is not None and srv.healthy():
            log.info("%s: already running at %s", m.name, srv.base_url)
            if srv.parallel < parallel:  # reused as it is: requests beyond its slots queue in the server
                log.warning("%s: reusing the running server at %s with %d slot(s), fewer than the %d asked for; "
                            "`routecraft pool down --models %s` first to start it with %d", m.name, srv.base_url,
                            srv.parallel, parallel, m.name, parallel)
            result[m.name] = srv.base_url
            continue
        if srv is not None:  # alive but unhealthy: replace it
            srv.stop()
        path = install(m.local)[m.local]
        to_start.append(LocalServer(name=m.name, local=m.local, model_path=str(path), ctx=ctx or m.context,
                                    threads=threads, parallel=parallel))
    try:
        for srv in to_start:
            srv.launch()
    finally:  # record every launched process at once, so `down` can clean up even if this process dies
        with _locked_state() as state:
            for srv in to_start:
                if srv.pid is not None:
                    state[srv.name] = srv.to_state()
    errors = []
    ready: set[str] = set()
    try:
        for srv in to_start:
            try:
                srv.wait_ready(timeout)
                result[srv.name] = srv.base_url
                ready.add(srv.name)
            except ServerError as exc:
                errors.append(str(exc))
    except BaseException:  # interrupted (Ctrl-C): stop everything this call launched
        ready.clear()
        raise
    finally:
        with _locked_state() as state:
            for srv in to_start:
                if srv.name in ready:
                    state[srv.name] = srv.to_state()
                else:
                    srv.stop()
                    state.pop(srv.name, None)
    if errors:
        raise ServerError("\n".join(errors))
    return result


def down(names: Optional[Sequence[str]] = None) -> list[str]:
    """Stop recorded servers (all, or ``names``); return the names stopped. Unknown names are ignored."""
    stopped = []
    with _locked_state() as state:
        for name in list(state):
            if names and name not in names:
                continue
            srv = LocalServer.from_state(state[name])
            if srv.alive():
                srv.stop()
                stopped.append(name)
            del state[name]
    return stopped


def status() -> list[dict]:
    """One dict per recorded server: name, local, pid, port, base_url, alive, healthy, state, uptime_s, ...

    ``state`` is "ready" (alive and /health ok), "starting" (alive, no port yet), "unhealthy" (alive, /health
    failing) or "stale" (process gone; the entry is pruned).
    """
    out = []
    with _locked_state() as state:
        for name, entry in list(state.items()):
            srv = LocalServer.from_state(entry)
            alive = srv.alive()
            healthy = alive and srv.healthy()
            row = dict(entry)
            row.update(alive=alive, healthy=healthy,
                       state="ready" if healthy else (("starting" if srv.port is None else "unhealthy")
                                                      if alive else "stale"),
                       uptime_s=(time.time() - srv.started_at) if (alive and srv.started_at) else None)
            out.append(row)
            if not alive:
                del state[name]
    return out
