"""The gateway's side of a plan of consultations (``cascade``, ``sequential``): the plan runs on the gateway through
the shared executor (``routecraft.routers.consult.run_plan``: consult, extract, vote, accept or escalate), and
``plan_outcome`` turns its result into the request's ``Outcome`` (the accepted answer, the sums of every
consultation's tokens and cost, and the consultations), which the request path answers, streams, records and bills
like any other. When nothing consulted answered, the request fails: 400 when every backend refused the request
itself (``refusal``), else 502 (``AllCandidatesFailed``).
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np

from routecraft.routers.consult import (
    CONSULT_KINDS,
    Consultation,
    NothingAnswered,
    PlanResult,
    failures_of,
    is_consult_plan,
    plan_info,
    run_plan,
)
from routecraft.serve.outcomes import AllCandidatesFailed, Outcome, refusal

__all__ = ["CONSULT_KINDS", "Consultation", "PlanResult", "execute_plan", "is_consult_plan", "plan_outcome"]


def plan_outcome(res: PlanResult, plan: dict, backend_s: float) -> Outcome:
    """The request's outcome: the accepted answer (as the answering consultation's, with its text and finish
    reason), the sums of every consultation's tokens and cost, and the consultations; ``backend_s``: the plan's
    wall time."""
    chosen = res.chosen.outcome
    return Outcome(res.chosen.candidate, chosen.text, res.answer, chosen.method, res.input_tokens,
                   res.output_tokens, res.cost_usd, chosen.finish_reason, backend_s, dict(chosen.details),
                   consulted=plan_info(res, plan))


async def execute_plan(gw: Any, router: Any, plan: dict, messages: list[dict], task: str, req: Any,
                       features: Optional[np.ndarray] = None) -> tuple[Outcome, list[dict]]:
    """Run a plan of consultations: (the request's outcome, the failed consultations)."""
    t0 = time.perf_counter()
    try:
        res = await run_plan(gw, router, plan, messages, task, req, features)
    except NothingAnswered as exc:
        if exc.refused:
            raise refusal(exc.failures, exc.last) from None
        raise AllCandidatesFailed(exc.failures) from None
    return plan_outcome(res, plan, time.perf_counter() - t0), failures_of(res.consultations)
