"""Several gateway processes on one port (config ``workers: N``, N > 1).

The parent process (``serve_workers``, called by ``run_server`` once the private llama.cpp servers are up):

* binds the listening socket once and starts N workers (``python -m routecraft.serve.workers SPEC``), each
  inheriting the socket; the kernel hands each new connection to one of them;
* supervises the private servers it started (the only process that restarts them, on their old port only, so the
  workers' URLs stay valid; the workers probe them and follow their state like any backend);
* restarts a worker that dies (after a back-off that doubles up to 30 s), and writes the ready file
  (``{"host", "port", "pid", "url", "workers"}``, ``pid`` being the parent's) once every worker serves;
* on SIGTERM/SIGINT closes its copy of the socket and passes SIGTERM to every worker, which drains its in-flight
  requests (up to ``limits.shutdown_grace_s``) like a single gateway does; then the private servers are stopped.

Each worker runs a whole gateway (routers, backend clients, its own connection to the shared ledger: SQLite in WAL
mode with a busy timeout is safe for several writers, and every request is still committed before its response) and
a uvicorn server. A worker ends itself when its parent dies (``PR_SET_PDEATHSIG``).

Per worker, not shared: rate limits (a key's ``rpm`` is counted by each worker, so N workers admit up to N × rpm),
failed-authentication throttling, stickiness (a conversation sticks per worker; its connection usually stays on
one), the execution slots and queue bound (N × ``limits.max_concurrency``), the backends' health as each worker sees
it, and ``/health``'s in-flight and queued counts. ``/metrics`` is shared: every worker answers with the sums over
all workers (``routecraft.serve.metrics``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from routecraft.serve.config import ServeConfig, ServeConfigError

log = logging.getLogger("routecraft.serve")

START_TIMEOUT_S = 300.0
MAX_RESPAWN_BACKOFF_S = 30.0


class _Worker:
    def __init__(self, index: int, spec: Path, ready: Path) -> None:
        self.index, self.spec, self.ready = index, spec, ready
        self.proc: Optional[subprocess.Popen] = None
        self.started_at = 0.0
        self.backoff_s = 0.5
        self.next_start = 0.0

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def start(self, fd: int, env: dict) -> None:
        self.ready.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "routecraft.serve.workers", str(self.spec)],
                                     pass_fds=(fd,), env=env)
        self.started_at = time.monotonic()


async def serve_workers(config: ServeConfig, base_dir: Optional[Path], endpoints, ready_file: Optional[str],
                        progress) -> None:
    """Serve with ``config.workers`` worker processes until SIGTERM/SIGINT (see the module docstring)."""
    from routecraft.serve.http_server import bind_socket, interrupt

    n = config.workers
    sock = bind_socket(config.host, config.port)
    port = sock.getsockname()[1]
    url = f"http://{config.host}:{port}/v1"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = threading.current_thread() is threading.main_thread()
    if main:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    supervisor_task = _supervise_private_servers(config, endpoints)
    with tempfile.TemporaryDirectory(prefix="routecraft-workers-") as d:
        d = Path(d)
        metrics_dir = d / "metrics"
        metrics_dir.mkdir()
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        spec = {"config": config.model_dump(mode="json"), "base_dir": str(base_dir) if base_dir else None,
                "endpoints": dict(endpoints), "sources": dict(getattr(endpoints, "sources", {}) or {}),
                "fd": sock.fileno(), "parent": os.getpid()}
        workers = []
        for i in range(n):
            p = d / f"worker-{i}.json"
            p.write_text(json.dumps({**spec, "index": i, "ready_file": str(d / f"ready-{i}.json")}))
            workers.append(_Worker(i, p, d / f"ready-{i}.json"))
        try:
            for w in workers:
                w.start(sock.fileno(), env)
            await _wait_ready(workers, stop)
            if stop.is_set():
                return
            info = json.loads(workers[0].ready.read_text())
            progress(f"routecraft gateway on {url} ({n} workers; routers: "
                     f"{', '.join('routecraft/' + r for r in info.get('routers', []))}; models: "
                     f"{', '.join(info.get('models', []))}; auth: "
                     f"{'open' if info.get('auth') == 'open' else 'API keys'})")
            if ready_file:
                tmp = ready_file + ".tmp"
                with open(tmp, "w") as f:
                    json.dump({"host": config.host, "port": port, "pid": os.getpid(), "url": url,
                               "workers": [w.pid for w in workers]}, f)
                os.replace(tmp, ready_file)
            while not stop.is_set():
                _respawn_dead(workers, sock.fileno(), env, metrics_dir)
                try:
                    await asyncio.wait_for(stop.wait(), 0.25)
                except asyncio.TimeoutError:
                    pass
        finally:
            sock.close()  # new connections are refused once the workers have closed theirs too
            await _stop_workers(workers, config.limits.shutdown_grace_s)
            if supervisor_task is not None:
                supervisor_task.cancel()
                try:
                    await supervisor_task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass
            if main:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
                signal.signal(signal.SIGTERM, interrupt)  # as run_server set it: the private servers still stop


async def _wait_ready(workers: list[_Worker], stop: asyncio.Event) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not all(w.ready.exists() for w in workers):
        for w in workers:
            rc = w.proc.poll()
            if rc is not None:
                raise ServeConfigError(f"gateway worker {w.index} exited (code {rc}) before serving; its errors "
                                       f"are above")
        if stop.is_set():
            return
        if time.monotonic() > deadline:
            raise ServeConfigError(f"the gateway workers did not start within {START_TIMEOUT_S:.0f}s")
        await asyncio.sleep(0.05)


def _respawn_dead(workers: list[_Worker], fd: int, env: dict, metrics_dir: Path) -> None:
    now = time.monotonic()
    for w in workers:
        rc = w.proc.poll() if w.proc is not None else None
        if w.proc is not None and rc is None:
            if now - w.started_at > MAX_RESPAWN_BACKOFF_S:
                w.backoff_s = 0.5  # it ran long enough: the next death is not part of a crash loop
            continue
        if w.proc is not None:  # it died: its live gauges no longer count; restart it after the back-off
            _mark_dead(w.proc.pid, metrics_dir)
            log.warning("gateway worker %d (pid %d) exited with code %s; restarting it in %.1fs", w.index,
                        w.proc.pid, rc, w.backoff_s)
            w.proc = None
            w.next_start = now + w.backoff_s
            w.backoff_s = min(MAX_RESPAWN_BACKOFF_S, 2 * w.backoff_s)
        if now >= w.next_start:
            w.start(fd, env)


def _mark_dead(pid: int, metrics_dir: Path) -> None:
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(metrics_dir))
    except Exception:  # noqa: BLE001 - metrics bookkeeping must not stop the supervision
        pass


async def _stop_workers(workers: list[_Worker], grace_s: float) -> None:
    live = [w for w in workers if w.proc is not None and w.proc.poll() is None]
    for w in live:
        try:
            w.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s + 15.0  # each drains for up to grace_s, then closes its gateway
    while any(w.proc.poll() is None for w in live) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for w in live:
        if w.proc.poll() is None:
            log.warning("gateway worker %d (pid %d) did not stop in time: killed", w.index, w.proc.pid)
            w.proc.kill()
            w.proc.wait()
        elif w.proc.returncode != 0:
            log.warning("gateway worker %d (pid %d) exited with code %s", w.index, w.proc.pid, w.proc.returncode)


def _supervise_private_servers(config: ServeConfig, endpoints) -> Optional[asyncio.Task]:
    """The parent's watch over the private llama.cpp servers: restarts on their old port (probes too)."""
    servers = dict(getattr(endpoints, "servers", {}) or {})
    sup = config.supervision
    if not servers or not sup.enabled:
        return None
    from routecraft.serve.backends import Backend, Supervisor

    backends = {name: Backend(name, endpoints[name], "private", srv) for name, srv in servers.items()}

    async def rebind(model: str, url: str) -> None:  # pragma: no cover - keep_port: the URL never changes
        log.warning("%s: private server moved to %s; the workers still use %s", model, url, endpoints[model])

    s = Supervisor(backends, interval_s=sup.interval_s, probe_timeout_s=sup.probe_timeout_s,
                   backoff_s=sup.restart_backoff_s, max_backoff_s=sup.max_backoff_s,
                   start_timeout_s=config.servers.start_timeout_s, rebind=rebind, keep_port=True)
    return asyncio.create_task(s.run())


# ================================================================ the worker process
def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when its parent dies (Linux); exit now if it is already gone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the parent's SIGTERM still stops it
        pass
    if os.getppid() != parent:
        sys.exit(0)


def worker_main(spec_path: str) -> int:
    import socket

    import uvicorn

    from routecraft.serve.app import create_app
    from routecraft.serve.config import config_from_dict
    from routecraft.serve.gateway import Gateway
    from routecraft.serve.http_server import Endpoints, interrupt, run_loop, serve_gateway

    spec = json.loads(Path(spec_path).read_text())
    _die_with_parent(spec["parent"])
    config = config_from_dict(spec["config"], f"gateway worker {spec['index']} config")
    logging.basicConfig(level=config.log_level.upper() if config.log_level != "trace" else "DEBUG",
                        format=f"%(asctime)s %(levelname)s %(name)s[w{spec['index']}]: %(message)s")
    endpoints = Endpoints()
    endpoints.update(spec["endpoints"])
    endpoints.sources.update(spec["sources"])  # private servers: probed here, restarted by the parent only
    sock = socket.socket(fileno=spec["fd"])
    signal.signal(signal.SIGTERM, interrupt)  # after uvicorn has drained, end like Ctrl-C (clean close)
    gw = Gateway(config, base_dir=Path(spec["base_dir"]) if spec["base_dir"] else None, endpoints=endpoints)
    try:
        run_loop(serve_gateway(gw, config, spec["ready_file"], lambda msg: None, create_app, uvicorn, sock=sock,
                        worker=True))
    except KeyboardInterrupt:
        pass
    except ServeConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
