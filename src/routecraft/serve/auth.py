"""Bearer API keys (sha256 digests), per-key rate limits (requests per rolling minute) and budgets (USD)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from routecraft.serve.config import KeySpec
from routecraft.serve.conversation import RequestError

OPEN = "open"


@dataclass
class KeyState:
    spec: KeySpec
    spent_usd: float = 0.0
    window: deque = field(default_factory=deque)


class KeyStore:
    """The configured keys. Without keys every request is allowed and accounted to the key name "open"."""

    def __init__(self, keys: list[KeySpec]) -> None:
        self.keys = {k.name: KeyState(k) for k in keys}

    @property
    def open(self) -> bool:
        return not self.keys

    def load_spent(self, spent: dict[str, float]) -> None:
        for name, st in self.keys.items():
            st.spent_usd = float(spent.get(name, 0.0))

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
        st = self.keys.get(name)
        if st is None or st.spec.budget_usd is None:
            return
        if st.spent_usd >= st.spec.budget_usd:
            raise RequestError(429, f"key {name!r} has used its budget (${st.spent_usd:.6g} of "
                               f"${st.spec.budget_usd:.6g})", type="insufficient_quota", code="insufficient_quota")

    def charge(self, name: str, cost_usd: float) -> None:
        st = self.keys.get(name)
        if st is not None:
            st.spent_usd += float(cost_usd or 0.0)

    def describe(self) -> list[dict]:
        return [{"name": n, "budget_usd": st.spec.budget_usd, "spent_usd": st.spent_usd, "rpm": st.spec.rpm}
                for n, st in self.keys.items()]
