"""The gateway's view of its backends: where each served model answers, whether it works, and bringing it back.

One ``Backend`` per served model, of one of three sources:

* ``endpoint``: a URL from the pool (a hosted API, or any server the gateway does not manage). Its state comes from
  the calls the gateway makes; while it is down, it is also probed (``GET {base_url}/models``) each round, so it comes
  back up without waiting for a client to try it.
* ``private``: a llama.cpp server the gateway started itself. It is probed (``GET /health``) each round; when its
  process has died it is restarted, on the same port where possible, after a back-off that doubles per failed
  restart (``supervision.restart_backoff_s`` up to ``supervision.max_backoff_s``).
* ``pool``: a server started by ``routecraft pool up``. The pool state file is re-read each round, so a server
  restarted there on a new port is picked up; it is probed like a private one, and never restarted by the gateway.

A backend is ``up`` after a successful probe or call, ``down`` after a failed one (a connection failure, time-out or
5xx — never because of a request's own error), ``unknown`` before either. ``Supervisor.run`` is the loop; the
gateway starts it as a task and cancels it on close. With several gateway workers (``workers``), the parent process
supervises the private servers (restarting them on their old port only, ``keep_port``, so the workers' URLs stay
valid) and the workers only probe them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

import httpx

from routecraft.pool.server import ServerError, running

log = logging.getLogger("routecraft.serve")

UP, DOWN, UNKNOWN = "up", "down", "unknown"


@dataclass
class Backend:
    model: str
    url: str                      # OpenAI-style base_url (…/v1)
    source: str = "endpoint"      # "endpoint" | "private" | "pool"
    server: Any = None            # the LocalServer of a private backend
    state: str = UNKNOWN
    since: float = field(default_factory=time.time)
    last_error: Optional[str] = None
    restarts: int = 0
    failed_restarts: int = 0
    next_restart: float = 0.0     # monotonic time before which no restart is tried
    restarting: bool = False

    def set(self, state: str, error: Optional[str] = None) -> bool:
        """Set the state; True when it changed."""
        changed = state != self.state
        if changed:
            self.since = time.time()
        self.state = state
        if error is not None:
            self.last_error = error[:300]
        return changed

    @property
    def root(self) -> str:
        return self.url[:-3] if self.url.endswith("/v1") else self.url

    def public(self) -> dict:
        return {"healthy": self.state != DOWN}

    def private_view(self) -> dict:
        d = {"healthy": self.state != DOWN, "state": self.state, "since": round(self.since, 3), "source": self.source,
             "url": self.url, "restarts": self.restarts}
        if self.last_error:
            d["last_error"] = self.last_error
        if self.server is not None and getattr(self.server, "pid", None):
            d["pid"] = self.server.pid
        return d


class Supervisor:
    """Probes the backends, restarts dead private servers, follows the pool state file.

    ``rebind(model, url)`` is awaited when a backend's URL changes (the gateway points its client there)."""

    def __init__(self, backends: dict[str, Backend], *, interval_s: float, probe_timeout_s: float,
                 backoff_s: float, max_backoff_s: float, start_timeout_s: float,
                 rebind: Callable[[str, str], Awaitable[None]], api_keys: Optional[dict[str, str]] = None,
                 keep_port: bool = False) -> None:
        self.backends = backends
        self.keep_port = keep_port  # restart private servers on their old port only (other processes use the URL)
        self.interval_s, self.probe_timeout_s = interval_s, probe_timeout_s
        self.backoff_s, self.max_backoff_s, self.start_timeout_s = backoff_s, max_backoff_s, start_timeout_s
        self.rebind = rebind
        self.api_keys = api_keys or {}
        self._http: Optional[httpx.AsyncClient] = None
        self._restarts: set[asyncio.Task] = set()

    async def run(self) -> None:
        self._http = httpx.AsyncClient(timeout=self.probe_timeout_s)
        try:
            while True:
                try:
                    await self.tick()
                except Exception:  # noqa: BLE001 - the loop must survive anything
                    log.exception("backend supervision round failed")
                await asyncio.sleep(self.interval_s)
        finally:
            for t in list(self._restarts):
                t.cancel()
            await self._http.aclose()

    async def tick(self) -> None:
        """One round: pool-state changes, restarts, probes."""
        if any(b.source == "pool" for b in self.backends.values()):
            await self._follow_pool_state()
        probes = []
        for b in self.backends.values():
            if b.source == "private" and not b.restarting and b.server is not None and not b.server.alive():
                if b.set(DOWN, "the server process has exited"):
                    log.warning("%s: private server (pid %s) has exited", b.model, b.server.pid)
                if time.monotonic() >= b.next_restart:
                    t = asyncio.create_task(self._restart(b))
                    self._restarts.add(t)
                    t.add_done_callback(self._restarts.discard)
                continue
            if b.restarting:
                continue
            if b.source in ("private", "pool") or b.state == DOWN:
                probes.append(self._probe(b))
        if probes:
            await asyncio.gather(*probes)

    async def _probe(self, b: Backend) -> None:
        if b.source == "endpoint":
            url, headers = b.url + "/models", {}
            key = self.api_keys.get(b.model)
            if key:
                headers["authorization"] = f"Bearer {key}"
        else:
            url, headers = b.root + "/health", {}
        try:
            r = await self._http.get(url, headers=headers)
            ok, err = r.status_code == 200, f"probe {url}: HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            ok, err = False, f"probe {url}: {type(exc).__name__}: {exc}"
        if ok:
            if b.set(UP):
                log.warning("%s: backend at %s is up", b.model, b.url)
        elif b.set(DOWN, err):
            log.warning("%s: backend down (%s)", b.model, err)

    async def _follow_pool_state(self) -> None:
        try:
            current = await asyncio.to_thread(running)
        except Exception as exc:  # noqa: BLE001 - an unreadable state file: keep the URLs we have
            log.warning("cannot read the pool state file: %s", exc)
            return
        for b in self.backends.values():
            if b.source != "pool":
                continue
            srv = current.get(b.model)
            if srv is None or srv.port is None:
                if b.set(DOWN, "no `routecraft pool up` server is running for this model"):
                    log.warning("%s: its pool server is gone", b.model)
                continue
            if srv.base_url != b.url:
                log.warning("%s: pool server moved from %s to %s", b.model, b.url, srv.base_url)
                b.url = srv.base_url
                b.set(UNKNOWN)
                await self.rebind(b.model, b.url)

    async def _restart(self, b: Backend) -> None:
        srv = b.server
        b.restarting = True
        try:
            old_port = srv.port
            try:
                await asyncio.to_thread(self._relaunch, srv, old_port)
            except Exception as exc:  # noqa: BLE001 - a failed restart is retried after a longer back-off
                b.failed_restarts += 1
                wait = min(self.max_backoff_s, self.backoff_s * 2 ** (b.failed_restarts - 1))
                b.next_restart = time.monotonic() + wait
                b.set(DOWN, f"restart failed: {exc}")
                log.warning("%s: restart failed (%s); next try in %.0fs", b.model, str(exc)[:200], wait)
                return
            b.restarts += 1
            b.failed_restarts = 0
            b.next_restart = time.monotonic() + self.backoff_s
            b.set(UP)
            if srv.base_url != b.url:
                b.url = srv.base_url
                await self.rebind(b.model, b.url)
            log.warning("%s: private server restarted (pid %s) at %s", b.model, srv.pid, b.url)
        finally:
            b.restarting = False

    def _relaunch(self, srv: Any, port: Optional[int]) -> None:
        srv.stop(grace_s=1)
        srv.pid = srv.pgid = None
        srv.port, srv.listen_port = None, port or 0
        srv.started_at = None
        try:
            srv.launch()
            srv.wait_ready(self.start_timeout_s)
        except ServerError:
            if not port or self.keep_port:
                raise
            # the old port is taken (or the server failed on it): any free port
            srv.port, srv.listen_port, srv.started_at = None, 0, None
            srv.launch()
            srv.wait_ready(self.start_timeout_s)
