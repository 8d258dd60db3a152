"""Serving one gateway process with uvicorn: the listening socket, the event loop, the HTTP protocol classes whose
own 400s are OpenAI-style JSON, and the serve loop of one gateway (used by ``serve.server`` for one process and by
``serve.workers`` in each worker).

uvicorn runs on httptools and uvloop where they are installed (``http_impl``, ``run_loop``: both several times
cheaper per request than h11 and asyncio's own loop). Protocol errors that never reach the app (a malformed
``Content-Length``, a broken request line) are answered by uvicorn's HTTP layer; ``json_error_protocol()`` makes that
answer an OpenAI-style JSON 400 instead of plain text.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import socket

from routecraft.serve.config import ServeConfig, ServeConfigError

log = logging.getLogger("routecraft.serve")


class Endpoints(dict):
    """{model name: base_url}, plus ``servers`` (model → the private LocalServer started here) and ``sources``
    (model → "private" | "pool"), which the gateway's supervisor uses to restart or follow them."""

    def __init__(self) -> None:
        super().__init__()
        self.servers: dict = {}
        self.sources: dict[str, str] = {}


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


def interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _json_400(message: str) -> bytes:
    return json.dumps({"error": {"message": f"malformed HTTP request: {message}", "type": "invalid_request_error",
                                 "param": None, "code": "bad_http_request"}}).encode()


def http_impl(prefer: str = "auto") -> str:
    """The HTTP parser uvicorn runs on: "httptools" (C, several times cheaper per request) where it is installed and
    ``prefer`` is "auto", else "h11"."""
    if prefer not in ("auto", "httptools", "h11"):
        raise ValueError(f"http must be 'auto', 'httptools' or 'h11', got {prefer!r}")
    if prefer in ("auto", "httptools"):
        try:
            import httptools  # noqa: F401
            return "httptools"
        except ImportError:
            if prefer == "httptools":
                raise
    return "h11"


def json_error_protocol(impl: str = "auto"):
    """The uvicorn HTTP protocol class whose own 400s are OpenAI-style JSON (built on first use): httptools-based
    where httptools is installed (``impl="auto"``), h11-based otherwise or with ``impl="h11"``."""
    if http_impl(impl) == "httptools":
        return _json_error_httptools_protocol()
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

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


def _json_error_httptools_protocol():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class _JsonErrorHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, answering its own 400s (a malformed request) as OpenAI-style JSON."""

        def send_400_response(self, msg: str) -> None:
            body = _json_400(msg)
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            self.transport.close()

    return _JsonErrorHttpToolsProtocol


def run_loop(coro, prefer: str = "auto"):
    """``asyncio.run(coro)`` on uvloop where it is installed and ``prefer`` is "auto" (a cheaper event loop: less
    CPU per request), else on asyncio's own loop."""
    if prefer not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"loop must be 'auto', 'uvloop' or 'asyncio', got {prefer!r}")
    if prefer != "asyncio":
        try:
            import uvloop
        except ImportError:
            if prefer == "uvloop":
                raise
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


async def serve_gateway(gw, config: ServeConfig, ready_file, progress, create_app, uvicorn, sock=None,
                 worker: bool = False) -> None:
    """Start the gateway and serve it with uvicorn on ``sock`` (default: a socket bound here). ``worker``: one of
    several processes on a shared socket (its ready file also names its routers and models, and it keeps its
    load gauges fresh for the shared metrics)."""
    await gw.start()  # fail before binding the port when the config is wrong
    app = create_app(gw)
    gc.collect()
    gc.freeze()  # what start-up made lives as long as the process: keep it out of every later collection
    if sock is None:
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
            info = {"host": config.host, "port": port, "pid": os.getpid(), "url": url}
            if worker:
                info.update(routers=list(gw.routers), models=list(gw.models), auth="open" if gw.keys.open else "keys")
            tmp = ready_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump(info, f)
            os.replace(tmp, ready_file)
        while worker:  # the shared /metrics sums every worker's last values of these gauges
            gw.metrics.inflight.set(gw.inflight)
            gw.metrics.queued.set(gw.waiting)
            await asyncio.sleep(1.0)

    task = asyncio.create_task(announce())
    try:
        await server.serve(sockets=[sock])
    finally:
        task.cancel()
        await gw.close()
        sock.close()
