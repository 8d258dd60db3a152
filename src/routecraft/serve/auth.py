"""Bearer API keys (sha256 digests), per-key rate limits (requests per rolling minute) and budgets (USD).

Budgets across replicas: several gateways (or uvicorn workers) writing one ledger see each other's spend when the
KeyStore reads their shared totals, in one of two ways:

* pull: ``KeyStore(keys, spent_source=ledger.spent, refresh_s=0.5)`` — ``check_budget`` re-reads a key's total at most
  every ``refresh_s`` seconds (0: at every check), in the caller's thread (right for SQLite: a 4 µs lookup);
* push: ``asyncio.create_task(keys.run_refresher(ledger.spent_by_key, 0.5))`` — a task reads every key's total in a
  worker thread and ``apply_shared``s it, so the event loop never waits on a remote database (PostgreSQL).

``charge`` still counts this process's costs at once, so between two reads a key's spend is the last shared total
plus the local charges since. A failing read (ledger unreachable) keeps the local value, logs a warning, and is
retried after ``max(refresh_s, 5 s)``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

from routecraft.serve.config import KeySpec
from routecraft.serve.conversation import RequestError

OPEN = "open"
FAILED_SOURCE_RETRY_S = 5.0

log = logging.getLogger("routecraft.serve.auth")

SpentSource = Callable[[str], float]


@dataclass
class KeyState:
    spec: KeySpec
    spent_usd: float = 0.0  # what check_budget compares: the last shared total (or load) + local charges since
    window: deque = field(default_factory=deque)
    shared_usd: float = 0.0  # the last value read from the spent source (or given to load_spent)
    pending_usd: float = 0.0  # charged here since then
    next_refresh: float = -math.inf  # monotonic time of the next read of the source


class KeyStore:
    """The configured keys. Without keys every request is allowed and accounted to the key name "open".

    ``spent_source(name) -> float``: the key's spend shared by every replica (e.g. ``ledger.spent``); read by
    ``check_budget`` at most every ``refresh_s`` seconds per key with a budget."""

    def __init__(self, keys: list[KeySpec], spent_source: Optional[SpentSource] = None, refresh_s: float = 0.5,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = {k.name: KeyState(k) for k in keys}
        self._clock = clock
        self.spent_source = spent_source
        self.refresh_s = 0.0
        self.set_spent_source(spent_source, refresh_s)

    def set_spent_source(self, spent_source: Optional[SpentSource], refresh_s: Optional[float] = None) -> None:
        """Use ``spent_source`` (None: local spend only) from the next check on."""
        if refresh_s is not None:
            if not refresh_s >= 0:
                raise ValueError(f"refresh_s must be >= 0, got {refresh_s!r}")
            self.refresh_s = float(refresh_s)
        self.spent_source = spent_source
        for st in self.keys.values():
            st.next_refresh = -math.inf

    @property
    def open(self) -> bool:
        return not self.keys

    def load_spent(self, spent: dict[str, float]) -> None:
        now = self._clock()
        for name, st in self.keys.items():
            st.spent_usd = st.shared_usd = float(spent.get(name, 0.0))
            st.pending_usd = 0.0
            st.next_refresh = now + self.refresh_s

    def refresh(self, name: str, force: bool = False) -> None:
        """Re-read ``name``'s shared spend if a source is set and its ``refresh_s`` is up (or ``force``)."""
        st = self.keys.get(name)
        if st is None or self.spent_source is None:
            return
        now = self._clock()
        if not force and self.refresh_s > 0 and now < st.next_refresh:
            return
        try:
            shared = float(self.spent_source(name))
        except Exception as exc:  # noqa: BLE001 - the ledger is down: keep counting locally
            st.next_refresh = now + max(self.refresh_s, FAILED_SOURCE_RETRY_S)
            log.warning("cannot read the shared spend of key %r (using this replica's count): %s", name, exc)
            return
        self._apply(st, shared, now)

    def apply_shared(self, spent: dict[str, float]) -> None:
        """Push mode: take every key's shared spend (``ledger.spent_by_key()``), read elsewhere (``run_refresher``)."""
        now = self._clock()
        for name, st in self.keys.items():
            if st.spec.budget_usd is not None:
                self._apply(st, float(spent.get(name, 0.0)), now)

    async def run_refresher(self, spent_by_key: Callable[[], dict[str, float]], interval_s: float = 0.5) -> None:
        """Push mode for a remote ledger: forever read ``spent_by_key()`` in a worker thread (so the event loop never
        waits on the database) and ``apply_shared`` it every ``interval_s``; cancel the task to stop. Returns at
        once when no key has a budget."""
        import asyncio

        if not any(st.spec.budget_usd is not None for st in self.keys.values()):
            return
        while True:
            try:
                spent = await asyncio.to_thread(spent_by_key)
            except Exception as exc:  # noqa: BLE001 - the ledger is down: keep counting locally
                log.warning("cannot read the shared spend of the keys (using this replica's counts): %s", exc)
                await asyncio.sleep(max(interval_s, FAILED_SOURCE_RETRY_S))
                continue
            self.apply_shared(spent)
            await asyncio.sleep(interval_s)

    def _apply(self, st: KeyState, shared: float, now: float) -> None:
        # the source may not hold this replica's latest charges yet (their rows are written just after): never
        # count less than the previous reading plus them; a total that went down (rows deleted) shows at the next read
        st.spent_usd = max(shared, st.shared_usd + st.pending_usd)
        st.shared_usd, st.pending_usd = shared, 0.0
        st.next_refresh = now + self.refresh_s

    def authenticate(self, authorization: Optional[str]) -> str:
        """The key name for an ``Authorization`` header, or RequestError 401."""
        if self.open:
            return OPEN
        if not authorization:
            raise RequestError(401, "missing API key: send 'Authorization: Bearer <key>'", type="invalid_request_error",
                               code="invalid_api_key")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise RequestError(401, "malformed Authorization header: expected 'Bearer <key>'",
                               type="invalid_request_error", code="invalid_api_key")
        digest = hashlib.sha256(token.encode()).hexdigest()
        found = None
        for name, st in self.keys.items():  # compare against every key (constant time per key)
            if hmac.compare_digest(digest, st.spec.sha256):
                found = name
        if found is None:
            raise RequestError(401, "incorrect API key", type="invalid_request_error", code="invalid_api_key")
        return found

    def check_rate(self, name: str, now: Optional[float] = None) -> None:
        """Count one request against ``name``'s rpm; RequestError 429 (with Retry-After) over the limit."""
        st = self.keys.get(name)
        if st is None or st.spec.rpm is None:
            return
        now = time.monotonic() if now is None else now
        w = st.window
        while w and w[0] <= now - 60.0:
            w.popleft()
        if len(w) >= st.spec.rpm:
            retry = max(1, int(60.0 - (now - w[0])) + 1)
            raise RequestError(429, f"rate limit reached for key {name!r}: {st.spec.rpm} requests per minute",
                               type="rate_limit_error", code="rate_limit_exceeded",
                               headers={"retry-after": str(retry)})
        w.append(now)

    def check_budget(self, name: str) -> None:
        """RequestError 429 when ``name`` has spent its budget (across replicas when a spent source is set)."""
        st = self.keys.get(name)
        if st is None or st.spec.budget_usd is None:
            return
        self.refresh(name)
        if st.spent_usd >= st.spec.budget_usd:
            raise RequestError(429, f"key {name!r} has used its budget (${st.spent_usd:.6g} of "
                               f"${st.spec.budget_usd:.6g})", type="insufficient_quota", code="insufficient_quota")

    def charge(self, name: str, cost_usd: float) -> None:
        st = self.keys.get(name)
        if st is not None:
            c = float(cost_usd or 0.0)
            st.spent_usd += c
            st.pending_usd += c

    def describe(self) -> list[dict]:
        return [{"name": n, "budget_usd": st.spec.budget_usd, "spent_usd": st.spent_usd, "rpm": st.spec.rpm}
                for n, st in self.keys.items()]
