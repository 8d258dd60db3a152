"""What one request resolves to, decides and produces, and how a call fails: the records the gateway's request path
(``gateway``), its consultation plans (``consult``) and its responses (``session``) share.

* ``RouterEntry`` (a router on offer), ``Target`` (what the ``model`` field names), ``Plan`` (a routing outcome: the
  decision and the order in which candidates are tried), ``Outcome`` (what a candidate, or a plan of consultations,
  produced);
* failures: ``failure_kind`` says whose fault a failed call was — "backend" (the next candidate is tried and the model
  marked unhealthy), "context" (only models with a larger context are tried) or "client" (the request itself: a 400);
  ``AllCandidatesFailed`` (a 502) and ``CandidateRefused`` (a 400) end a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from routecraft.data.schema import Candidate
from routecraft.pool.client import CONTEXT_PHRASES, BackendError, describe_failure, failure_kind
from routecraft.routers.base import Decision, Router
from routecraft.routers.consult import Outcome
from routecraft.serve.config import Tradeoff
from routecraft.serve.conversation import RequestError


@dataclass
class RouterEntry:
    """One router on offer (``routecraft/<name>``)."""

    name: str
    spec: str                     # "heuristic" or the artifact folder
    router: Router
    candidates: list[Candidate]   # the router's candidates whose model is served
    skipped: list[str]            # candidates dropped because their model is not served
    encoder: Optional[str] = None
    inline: bool = False          # decides on the event loop (fast, measured at start-up) instead of a thread
    #: the entry that routes an open request instead (no task named, none detected: the catch-all ``qa`` kind);
    #: set on the shipped learned default, whose candidates all prompt for an answer format (see Gateway._route)
    open_requests: Optional[str] = None

    @property
    def kind(self) -> str:
        return self.router.name


@dataclass
class Target:
    """What the ``model`` field names: a router with a trade-off, or one pool model (bypass)."""

    requested: str
    router: Optional[RouterEntry] = None
    tradeoff_name: Optional[str] = None
    tradeoff: Optional[Tradeoff] = None
    model: Optional[str] = None

    @property
    def label(self) -> str:
        return self.router.name if self.router is not None else "bypass"


@dataclass
class Plan:
    """A routing outcome: the decision and the order in which candidates are tried."""

    order: list[Candidate]
    decision: Optional[Decision]
    task: str
    lam: Optional[float]
    max_cost: Optional[float]
    decision_ms: float = 0.0
    sticky: bool = False
    skipped: list[dict] = field(default_factory=list)  # candidates moved back (unhealthy model) or filtered
    router: Optional[Router] = None                    # the router that decided (runs a plan of consultations)
    features: Optional[np.ndarray] = None              # the query's feature row, when the router reads features


class AllCandidatesFailed(RuntimeError):
    def __init__(self, failures: list[dict]):
        self.failures = failures
        reasons = "; ".join(f"{f['candidate']}: {f['error']}" for f in failures) or "no candidate to try"
        super().__init__(f"every candidate failed: {reasons}")


class CandidateRefused(RequestError):
    """The backends refused the request itself (context too long, or another 4xx): a 400 for the client, with the
    attempts made (they reached a backend, so the ledger records them)."""

    def __init__(self, message: str, failures: list[dict], *, code: str):
        super().__init__(400, message, param="messages", code=code)
        self.failures = failures


def refusal(failures: list[dict], exc: Optional[BaseException]) -> CandidateRefused:
    """The 400 for a request the backends refused (the last failure says why)."""
    last = failures[-1]
    detail = exc.detail if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}"
    if last["kind"] == "context":
        return CandidateRefused(f"the request does not fit the context of any served model that can take it "
                                f"(last: {last['model']!r}: {detail})", failures, code="context_length_exceeded")
    return CandidateRefused(f"model {last['model']!r} refused the request: {detail}", failures,
                            code="invalid_request")


def ex_details(ex: Any) -> dict:
    """What an answer extraction shows as reasoning: PAL's program and its sandbox run, the votes."""
    d: dict = {}
    if getattr(ex, "code", None):
        d["code"] = ex.code
    sb = getattr(ex, "sandbox", None)
    if sb is not None:
        d["sandbox"] = {"ok": sb.ok, "value": None if sb.value is None else str(sb.value), "stdout": sb.stdout[-2000:],
                        "error": sb.error, "timed_out": sb.timed_out}
    if getattr(ex, "votes", None):
        d["votes"] = ex.votes
    return d


__all__ = ["CONTEXT_PHRASES", "AllCandidatesFailed", "CandidateRefused", "Outcome", "Plan", "RouterEntry", "Target",
           "describe_failure", "ex_details", "failure_kind", "refusal"]
