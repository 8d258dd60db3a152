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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Iterator, Optional

from routecraft.serve.config import ServeConfig, ServeConfigError

log = logging.getLogger("routecraft.serve")


class Endpoints(dict):
    """{model name: base_url}, plus ``servers`` (model → the private LocalServer started here) and ``sources``
    (model → "private" | "pool"), which the gateway's supervisor uses to restart or follow them."""

    def __init__(self) -> None:
        super().__init__()
        self.servers: dict = {}
        self.sources: dict[str, str] = {}


@contextlib.contextmanager
def pool_endpoints(config: ServeConfig, base_dir: Optional[Path] = None,
                   progress=lambda msg: None) -> Iterator[Endpoints]:
    """{model name: base_url} for the served local models, starting private servers where needed; stops them on
    exit. Endpoint models need nothing and are not listed."""
    from routecraft.pool.models import install
    from routecraft.pool.server import LocalServer, ServerError, running
    from routecraft.serve.gateway import Gateway

    gw = Gateway(config, base_dir=base_dir)
    pool = gw._load_pool()
    gw.pool = pool
    models = gw._served_models()
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


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


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
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        Gateway(config, base_dir=base_dir).preflight()  # refuse a bad config before any backend is started
        with pool_endpoints(config, base_dir, progress) as endpoints:
            gw = Gateway(config, base_dir=base_dir, endpoints=endpoints)
            asyncio.run(_serve(gw, config, ready_file, progress, create_app, uvicorn))
    except KeyboardInterrupt:
        progress("gateway stopped")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _json_400(message: str) -> bytes:
    return json.dumps({"error": {"message": f"malformed HTTP request: {message}", "type": "invalid_request_error",
                                 "param": None, "code": "bad_http_request"}}).encode()


def json_error_protocol():
    """The uvicorn HTTP protocol class whose own 400s are OpenAI-style JSON (built on first use)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    import h11

    class _JsonErrorH11Protocol(H11Protocol):
        """uvicorn's h11 protocol, answering its own 400s (bad headers, bad request line) as OpenAI-style JSON."""

        def send_400_response(self, msg: str) -> None:
            body = _json_400(msg)
            headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                       (b"content-length", str(len(body)).encode())]
            try:
                self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers,
                                                                 reason=b"Bad Request")))
                self.transport.write(self.conn.send(h11.Data(data=body)))
                self.transport.write(self.conn.send(h11.EndOfMessage()))
            except h11.LocalProtocolError:  # the connection state no longer allows a response
                pass
            self.transport.close()

    return _JsonErrorH11Protocol


async def _serve(gw, config: ServeConfig, ready_file, progress, create_app, uvicorn) -> None:
    await gw.start()  # fail before binding the port when the config is wrong
    app = create_app(gw)
    sock = bind_socket(config.host, config.port)
    port = sock.getsockname()[1]
    ucfg = uvicorn.Config(app, log_level=config.log_level, access_log=config.log_level in ("info", "debug", "trace"),
                          timeout_graceful_shutdown=int(config.limits.shutdown_grace_s) or None,
                          lifespan="on", server_header=False, http=json_error_protocol())
    server = uvicorn.Server(ucfg)
    url = f"http://{config.host}:{port}/v1"

    async def announce():
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.02)
        progress(f"routecraft gateway on {url} (routers: {', '.join('routecraft/' + r for r in gw.routers)}; "
                 f"models: {', '.join(gw.models)}; auth: {'open' if gw.keys.open else 'API keys'})")
        if ready_file:
            tmp = ready_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"host": config.host, "port": port, "pid": os.getpid(), "url": url}, f)
            os.replace(tmp, ready_file)

    task = asyncio.create_task(announce())
    try:
        await server.serve(sockets=[sock])
    finally:
        task.cancel()
        await gw.close()
        sock.close()
