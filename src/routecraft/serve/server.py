"""Running the gateway: backends for the pool's local models, then uvicorn on the configured address.

Local models (``local:`` pool entries) use a server already started by ``routecraft pool up`` when one is running and
healthy (``servers.reuse_running``); the others get a private llama.cpp server started here (``servers.start``) and
stopped when the gateway exits (they are not written to the pool state file, so ``routecraft pool down`` never stops
them and the gateway never stops servers it did not start).

Order of start-up: the checks that need no backend (``Gateway.preflight``: a non-loopback host without keys is
refused) run before any server is started; then the backends, then the gateway (routers, ledger), then the port.
Private servers are watched by the gateway's supervisor and restarted when they die (``routecraft.serve.backends``).

Protocol errors that never reach the app (a malformed ``Content-Length``, a broken request line) are answered by
uvicorn's HTTP layer; ``json_error_protocol()`` makes that answer an OpenAI-style JSON 400 instead of plain text.

Shutdown (SIGINT/SIGTERM): uvicorn stops accepting connections, waits up to ``limits.shutdown_grace_s`` for the
requests in flight (streams included) to finish, then the gateway closes its clients and the ledger, and the private
servers are stopped.

uvicorn runs on httptools and uvloop where they are installed (``http_impl``, ``run_loop``: both several times
cheaper per request than h11 and asyncio's own loop), and the objects made at start-up are frozen out of the garbage
collector's scans (``gc.freeze``: a full collection of the routers' and libraries' objects paused the event loop
for ~0.1 s here).

``workers: N`` (N > 1) serves from N processes sharing one listening socket: this process binds it, starts the
private servers, supervises them and the workers (``routecraft.serve.workers``) and writes the ready file once
every worker serves; each worker runs its own gateway (routers, clients, ledger connection) and uvicorn server.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path
from typing import Iterator, Optional

from routecraft.serve.config import ServeConfig, ServeConfigError
from routecraft.serve.http_server import Endpoints, interrupt, run_loop, serve_gateway
from routecraft.serve.workers import serve_workers

log = logging.getLogger("routecraft.serve")


@contextlib.contextmanager
def pool_endpoints(config: ServeConfig, base_dir: Optional[Path] = None,
                   progress=lambda msg: None) -> Iterator[Endpoints]:
    """{model name: base_url} for the served local models, starting private servers where needed; stops them on
    exit. Endpoint models need nothing and are not listed."""
    from routecraft.pool.models import install
    from routecraft.pool.server import LocalServer, ServerError, running
    from routecraft.serve.gateway import Gateway

    gw = Gateway(config, base_dir=base_dir)
    pool = gw.load_served_pool()
    gw.pool = pool
    models = gw.served_models()
    local = [m for m in models.values() if m.local]
    out = Endpoints()
    started: list[LocalServer] = []
    try:
        current = running() if (local and config.servers.reuse_running) else {}
        todo = []
        for m in local:
            srv = current.get(m.name)
            if srv is not None and srv.healthy():
                out[m.name] = srv.base_url
                out.sources[m.name] = "pool"
                progress(f"{m.name}: using the running server at {srv.base_url}")
                continue
            if not config.servers.start:
                raise ServeConfigError(f"local model {m.name!r} is not running and servers.start is false: run "
                                       f"`routecraft pool up --models {m.name}`")
            todo.append(m)
        for m in todo:
            path = install(m.local)[m.local]
            srv = LocalServer(name=m.name, local=m.local, model_path=str(path), ctx=config.servers.ctx or m.context,
                              threads=config.servers.threads, parallel=config.servers.parallel, private=True)
            srv.launch()
            started.append(srv)
            progress(f"{m.name}: starting a private llama.cpp server (pid {srv.pid})")
        for srv in started:
            try:
                srv.wait_ready(config.servers.start_timeout_s)
            except ServerError as exc:
                raise ServeConfigError(str(exc)) from None
            out[srv.name] = srv.base_url
            out.servers[srv.name] = srv
            out.sources[srv.name] = "private"
            progress(f"{srv.name}: ready at {srv.base_url}")
        yield out
    finally:
        for srv in started:
            srv.stop()


def run_server(config: ServeConfig, base_dir: Optional[Path] = None, *, ready_file: Optional[str] = None,
               progress=lambda msg: None) -> None:
    """Serve until interrupted. ``ready_file`` receives {"host", "port", "pid", "url"} once the gateway answers."""
    import uvicorn

    from routecraft.serve.app import create_app
    from routecraft.serve.gateway import Gateway

    logging.basicConfig(level=config.log_level.upper() if config.log_level != "trace" else "DEBUG",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    previous = None
    if threading.current_thread() is threading.main_thread():
        # uvicorn re-raises the signal that stopped it once it has drained; make SIGTERM end like Ctrl-C, so the
        # cleanup below (gateway close, private servers) runs instead of the process dying on the spot
        previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        Gateway(config, base_dir=base_dir).preflight()  # refuse a bad config before any backend is started
        with pool_endpoints(config, base_dir, progress) as endpoints:
            if config.workers > 1:
                run_loop(serve_workers(config, base_dir, endpoints, ready_file, progress))
            else:
                gw = Gateway(config, base_dir=base_dir, endpoints=endpoints)
                run_loop(serve_gateway(gw, config, ready_file, progress, create_app, uvicorn))
    except KeyboardInterrupt:
        progress("gateway stopped")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
