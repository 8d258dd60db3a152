"""Admission control: execution slots with a bounded wait queue, and failed-authentication throttling.

``Slots`` replaces a bare ``asyncio.Semaphore``: the decision to run, queue or refuse is taken synchronously when a
request arrives (no ``await`` between the check and the count), so a burst of simultaneous requests on an idle
gateway cannot all slip past the queue bound before any of them has been counted. Waiters are served first come,
first served.

``AuthThrottle`` counts failed authentications per client address in a rolling window; an address over the limit
gets 429 (with ``Retry-After``) for every request, right or wrong key, until its window has room again. A successful
authentication does not reset the count (a guesser holding one valid key must not get unlimited guesses).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from contextlib import asynccontextmanager
from typing import AsyncIterator, Optional

from routecraft.serve.conversation import RequestError


class Slots:
    """``limit`` requests run at once, at most ``max_queue`` wait (FIFO, up to ``timeout_s``); others get 429."""

    def __init__(self, limit: int, max_queue: int, timeout_s: float) -> None:
        self.limit, self.max_queue, self.timeout_s = limit, max_queue, timeout_s
        self.running = 0
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        if self.running < self.limit and not self._waiters:
            self.running += 1
            return
        if len(self._waiters) >= self.max_queue:
            raise RequestError(429, f"the gateway is at capacity ({self.running} running, {len(self._waiters)} "
                               f"queued); retry later", type="rate_limit_error", code="queue_full",
                               headers={"retry-after": "1"})
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout=self.timeout_s)
        except asyncio.TimeoutError:
            if fut.done() and not fut.cancelled():  # granted at the last moment: hand the slot on
                self.release()
            else:
                fut.cancel()
            raise RequestError(429, f"no execution slot within {self.timeout_s:g}s; retry later",
                               type="rate_limit_error", code="queue_timeout", headers={"retry-after": "1"}) from None
        except BaseException:  # cancelled while waiting (client gone)
            if fut.done() and not fut.cancelled():
                self.release()
            else:
                fut.cancel()
            raise
        finally:
            try:
                self._waiters.remove(fut)
            except ValueError:
                pass
        # the slot was handed over by release(): `running` already counts it

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes to this waiter; `running` is unchanged
                return
        self.running -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator["Held"]:
        """``async with slots.slot() as held``: one execution slot (429 when refused), freed on leaving the block or
        earlier by ``held.release()``; ``held.hand_over()`` passes it to what outlives the block (a stream)."""
        await self.acquire()
        held = Held(self)
        try:
            yield held
        finally:
            held.release()


class Held:
    """One execution slot held by a request: ``release()`` frees it once (later calls do nothing)."""

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._slots.release()

    def hand_over(self) -> "Held":
        """A new holder of this slot (this one no longer frees it)."""
        if not self.held:
            raise RuntimeError("hand_over of a slot already released")
        self.held = False
        return Held(self._slots)


class AuthThrottle:
    """At most ``max_failures`` failed authentications per client address in ``window_s`` seconds."""

    def __init__(self, max_failures: int = 20, window_s: float = 60.0, max_clients: int = 100_000) -> None:
        self.max_failures, self.window_s, self.max_clients = max_failures, window_s, max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _window(self, addr: str, now: float) -> Optional[deque]:
        w = self._failures.get(addr)
        if w is None:
            return None
        while w and w[0] <= now - self.window_s:
            w.popleft()
        if not w:
            del self._failures[addr]
            return None
        return w

    def check(self, addr: Optional[str], now: Optional[float] = None) -> None:
        """RequestError 429 when ``addr`` is over its failure limit."""
        if addr is None or self.max_failures <= 0:
            return
        now = time.monotonic() if now is None else now
        w = self._window(addr, now)
        if w is not None and len(w) >= self.max_failures:
            retry = max(1, int(self.window_s - (now - w[0])) + 1)
            raise RequestError(429, f"too many failed authentications from this address ({len(w)} in "
                               f"{self.window_s:g}s); retry later", type="rate_limit_error",
                               code="auth_throttled", headers={"retry-after": str(retry)})

    def failed(self, addr: Optional[str], now: Optional[float] = None) -> None:
        if addr is None or self.max_failures <= 0:
            return
        now = time.monotonic() if now is None else now
        w = self._window(addr, now)
        if w is None:
            w = self._failures[addr] = deque()
        w.append(now)
        self._failures.move_to_end(addr)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
