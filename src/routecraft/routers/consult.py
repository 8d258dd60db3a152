"""Consulting candidates and executing a plan of consultations: consult, extract, vote, accept or escalate.

One executor for every router that looks at answers before it decides: the gateway runs the ``cascade`` and
``sequential`` routers' plans through it (``routecraft.serve.consult``), and Router-R1 runs its consultations of pool
candidates through it (``routecraft.routers.router_r1.backends``), so both record the same observation form
(``Consultation.to_dict``: candidate, model, stage, answer, tokens, cost, latency, error).

An *executor* is any object with ``serves(model) -> bool``, ``async run_candidate(candidate, messages, task, req) ->
Outcome``, ``mark_failed(model, error)`` and ``mark_ok(model)``: the gateway (which adds admission, caps and
health) or ``PoolExecutor`` (pool models through their chat clients, for offline runs).

A decision of the ``cascade`` or ``sequential`` router carries a plan (``Decision.plan``, ``kind`` "cascade" or
"sequential") instead of one candidate. ``run_plan`` executes it with the same rules the bench replays on logs:

* a cascade stage's consultations go out concurrently; the answers are extracted by the strategies' own extractors
  (plain-chat candidates by the task's answer extractor) and compared by the task's vote key; the majority over
  everything consulted so far is accepted when it has the stage's ``min_agree`` votes, else the next stage runs;
  the last candidate's answer is returned as it is;
* a sequential plan consults its sequence one candidate at a time and, after each, asks the router's policy whether
  to stop, consult the next one or jump to the strongest (``SequentialPolicy.online_action``).

A backend that fails during a consultation (or a candidate whose model the executor does not serve) is an
observation ("no answer"), never a lost request: the plan goes on without it. When the last candidate fails too, the
majority answer observed is returned (else the latest answer); only when nothing consulted answered does
``NothingAnswered`` end the plan (the gateway answers 502, or 400 when every backend refused the request itself).
Every call made is counted: a ``PlanResult``'s tokens and cost are the sums over all consultations (failed ones at 0).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from routecraft.data.schema import DEFAULT, Candidate
from routecraft.pool.client import BackendError, ChatClient, describe_failure, failure_kind
from routecraft.strategies import get_strategy
from routecraft.strategies.answers import extract_answer, vote_key
from routecraft.strategies.conversation import plain_call


@dataclass
class Outcome:
    """What one candidate produced — or, for a plan of consultations, what the request produced: the accepted answer,
    the sums of every consultation's tokens and cost, and the consultations (``consulted``)."""

    candidate: Candidate
    text: str
    answer: Optional[str]
    method: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    finish_reason: Optional[str]
    backend_s: float
    details: dict = field(default_factory=dict)
    consulted: Optional[dict] = None  # kind, plan, consultations, escalated, how, answered_by
    logprob_mean: Optional[float] = None  # of the output's token log-probabilities, when they were asked for
    logprob_min: Optional[float] = None

    @property
    def content(self) -> str:
        return self.answer if self.answer is not None else self.text



CONSULT_KINDS = ("cascade", "sequential")


@dataclass
class Consultation:
    candidate: Candidate
    outcome: Any = None            # the gateway's Outcome, None when the call failed
    answer: Optional[str] = None   # the extracted answer
    key: Optional[str] = None      # its vote key
    error: Optional[str] = None
    kind: Optional[str] = None     # of a failure: "backend", "context" or "client" (see failure_kind)
    stage: int = 0
    exc: Optional[BaseException] = field(default=None, repr=False)

    def to_dict(self) -> dict:
        o = self.outcome
        return {"candidate": self.candidate.id, "model": self.candidate.model, "stage": self.stage,
                "answer": self.answer, "input_tokens": o.input_tokens if o else 0,
                "output_tokens": o.output_tokens if o else 0, "cost_usd": o.cost_usd if o else 0.0,
                "latency_ms": round(o.backend_s * 1e3, 3) if o else None, "error": self.error}


@dataclass
class PlanResult:
    consultations: list[Consultation]
    answer: Optional[str]
    chosen: Optional[Consultation]   # whose answer was returned (None: nothing answered)
    escalated: bool
    how: str
    failures: list[dict] = field(default_factory=list)

    @property
    def input_tokens(self) -> int:
        return sum(c.outcome.input_tokens for c in self.consultations if c.outcome)

    @property
    def output_tokens(self) -> int:
        return sum(c.outcome.output_tokens for c in self.consultations if c.outcome)

    @property
    def cost_usd(self) -> float:
        return float(sum(c.outcome.cost_usd for c in self.consultations if c.outcome))


class NothingAnswered(RuntimeError):
    """No consultation of a plan answered: ``failures`` lists them (as ``failures_of``), ``last`` the last exception."""

    def __init__(self, failures: list[dict], last: Optional[BaseException]) -> None:
        self.failures = failures
        self.last = last
        reasons = "; ".join(f"{f['candidate']}: {f['error']}" for f in failures) or "no candidate to try"
        super().__init__(f"no consultation answered: {reasons}")

    @property
    def refused(self) -> bool:
        """Every failure was the request's own (too long for the context, or refused by the backend)."""
        return bool(self.failures) and all(f["kind"] in ("context", "client") for f in self.failures)


def is_consult_plan(plan: Any) -> bool:
    return isinstance(plan, dict) and plan.get("kind") in CONSULT_KINDS


async def consult(gw: Any, cand: Candidate, messages: list[dict], task: str, req: Any, stage: int,
                  logprobs: bool = False) -> Consultation:
    """One consultation; a failure is recorded, never raised (a backend fault still marks the model unhealthy).
    ``logprobs``: ask for token log-probabilities (a backend that refuses them is asked again without them, by the
    pool client, and not asked again)."""
    c = Consultation(cand, stage=stage)
    if not gw.serves(cand.model):
        c.error, c.kind = f"model {cand.model!r} is not served here", "backend"
        return c
    try:  # a backend that refuses the log-probabilities is asked again without them by the client
        out = await gw.run_candidate(cand, messages, task, req, **({"logprobs": True} if logprobs else {}))
    except Exception as exc:  # noqa: BLE001 - an observation: "no answer"
        c.error, c.kind = describe_failure(exc), failure_kind(exc)
        c.exc = exc
        if c.kind == "backend":
            gw.mark_failed(cand.model, c.error)
        return c
    gw.mark_ok(cand.model)
    c.outcome = out
    ans = out.answer
    if ans is None and out.text:
        ans = (await asyncio.to_thread(extract_answer, out.text, task))[0]
    c.answer = ans
    try:
        c.key = vote_key(ans, task) if ans is not None else None
    except ValueError:
        c.key = vote_key(ans, "qa") if ans is not None else None
    return c


def majority(cons: list[Consultation]) -> tuple[Optional[Consultation], int]:
    """The consultation holding the most frequent answer (ties: the latest of them) and its vote count."""
    counts: dict[str, int] = {}
    last: dict[str, Consultation] = {}
    for c in cons:
        if c.key is not None:
            counts[c.key] = counts.get(c.key, 0) + 1
            last[c.key] = c
    if not counts:
        return None, 0
    best = max(counts.values())
    order = [c.key for c in cons if c.key is not None and counts[c.key] == best]
    k = order[-1]
    return last[k], best


async def run_plan(gw: Any, router: Any, plan: dict, messages: list[dict], task: str, req: Any,
                   features: Optional[np.ndarray] = None) -> PlanResult:
    by_id = {c.id: c for c in router.candidates}
    if plan["kind"] == "cascade":
        return await _run_cascade(gw, plan, by_id, messages, task, req)
    return await _run_sequential(gw, router, plan, by_id, messages, task, req, features)


async def _run_cascade(gw, plan, by_id, messages, task, req) -> PlanResult:
    cons: list[Consultation] = []
    done: set[str] = set()
    for i, st in enumerate(plan["stages"]):
        todo = [by_id[cid] for cid in st["consult"] if cid not in done]
        done |= {c.id for c in todo}
        cons += await asyncio.gather(*(consult(gw, c, messages, task, req, i) for c in todo))
        top, n = majority(cons)
        if top is not None and n >= st["min_agree"]:
            return PlanResult(cons, top.answer, top, False, f"stage {i + 1}: {n} agree")
    return await _finish(gw, by_id[plan["final"]], cons, messages, task, req, len(plan["stages"]),
                         escalated=bool(plan["stages"]))


async def _finish(gw, final: Candidate, cons, messages, task, req, stage: int, escalated: bool) -> PlanResult:
    have = next((c for c in cons if c.candidate == final), None)  # consulted already (a sequence of one)
    c = have or await consult(gw, final, messages, task, req, stage)
    if have is None:
        cons.append(c)
    if c.outcome is not None:  # the last candidate's answer, as it is
        return PlanResult(cons, c.outcome.content, c, escalated, "final candidate")
    top, n = majority(cons)  # the last candidate failed: the best answer observed, if any
    if top is not None:
        return PlanResult(cons, top.answer, top, escalated, f"final candidate failed; majority of {n}")
    answered = [x for x in cons if x.outcome is not None]
    if answered:  # answers without a vote key (nothing extracted): the latest one
        x = answered[-1]
        return PlanResult(cons, x.outcome.content, x, escalated, "final candidate failed; latest answer")
    raise NothingAnswered(failures_of(cons), next((x.exc for x in reversed(cons) if x.exc is not None), None))


def failures_of(cons: list[Consultation]) -> list[dict]:
    """The failed consultations, as the gateway lists failed attempts."""
    return [{"candidate": x.candidate.id, "model": x.candidate.model, "error": x.error, "kind": x.kind or "backend"}
            for x in cons if x.outcome is None]


async def _run_sequential(gw, router, plan, by_id, messages, task, req, features) -> PlanResult:
    pol = router.policy
    seq = [by_id[cid] for cid in plan["sequence"]]
    lam, max_cost = plan.get("lam") or 0.0, plan.get("max_cost")
    lp = bool(getattr(pol, "logprobs", False))
    cons = [await consult(gw, seq[0], messages, task, req, 0, lp)]
    K = len(seq)
    t = 1
    while t < K:
        action = pol.online_action(t, _as_observed(cons), features, lam, max_cost)
        if action == "stop":
            top, n = majority(cons)
            if top is not None:
                return PlanResult(cons, top.answer, top, False, f"stopped after {t}: {n} agree")
            action = "strong"  # nothing answered: a stop has nothing to return
        if action == "strong":
            return await _finish(gw, seq[-1], cons, messages, task, req, t, escalated=True)
        if t + 1 == K:
            return await _finish(gw, seq[-1], cons, messages, task, req, t, escalated=True)
        cons.append(await consult(gw, seq[t], messages, task, req, t, lp))
        t += 1
    return await _finish(gw, seq[-1], cons, messages, task, req, t, escalated=K > 1)


def _as_observed(cons: list[Consultation]) -> list[dict]:
    """What the policy's state reads of each consultation, in sequence order."""
    out = []
    for c in cons:
        o = c.outcome
        out.append({"key": c.key, "truncated": bool(o is not None and o.finish_reason == "length"),
                    "out_tokens": float(o.output_tokens) if o is not None else float("nan"),
                    "cost": o.cost_usd if o is not None else 0.0,
                    "logprob_mean": o.logprob_mean if o is not None else None,
                    "logprob_min": o.logprob_min if o is not None else None})
    return out


def plan_info(res: PlanResult, plan: dict) -> dict:
    return {"kind": plan["kind"], "plan": plan.get("describe") or plan.get("sequence"),
            "consultations": [c.to_dict() for c in res.consultations], "escalated": res.escalated, "how": res.how,
            "answered_by": res.chosen.candidate.id if res.chosen else None}


def chat_outcome(cand: Candidate, r: Any, t0: float, extraction: Any = None,
                 details: Optional[dict] = None) -> Outcome:
    """The outcome of one chat call (a ``ChatResult``) started at ``t0``: with the strategy's ``extraction`` of its
    text (answer and method), else no extracted answer (method "plain")."""
    mean, low = r.logprob_summary
    answer, method = (None, "plain") if extraction is None else (extraction.answer, extraction.method)
    return Outcome(cand, r.text or "", answer, method, int(r.input_tokens or 0), int(r.output_tokens or 0),
                   float(r.cost_usd or 0.0), r.finish_reason, time.perf_counter() - t0, dict(details or {}),
                   logprob_mean=mean, logprob_min=low)


def plain_outcome(cand: Candidate, r: Any, t0: float) -> Outcome:
    """The outcome of a plain chat call (a ``ChatResult``) started at ``t0``: no extracted answer."""
    return chat_outcome(cand, r, t0)


def run_outcome(cand: Candidate, run: Any, t0: float, details: Optional[dict] = None) -> Outcome:
    """The outcome of a strategy run (a ``StrategyRun``) started at ``t0``."""
    return Outcome(cand, run.text or "", run.answer, run.extraction.method, int(run.input_tokens or 0),
                   int(run.output_tokens or 0), float(run.cost_usd or 0.0), run.finish_reason,
                   time.perf_counter() - t0, dict(details or {}), logprob_mean=getattr(run, "logprob_mean", None),
                   logprob_min=getattr(run, "logprob_min", None))


class PoolExecutor:
    """An executor over pool models' chat clients (no gateway): a candidate with a strategy runs that strategy on
    the question (the last user message), a plain candidate (strategy ``default``) is one chat call with
    ``messages`` as they are. ``clients`` maps model name -> ``ChatClient``; ``max_tokens`` caps plain calls.
    Health is only recorded (``failed``: model -> last error)."""

    def __init__(self, clients: dict[str, ChatClient], max_tokens: Optional[int] = None,
                 chat_args: Optional[dict] = None) -> None:
        self.clients = clients
        self.max_tokens = max_tokens
        self.chat_args = dict(chat_args or {})
        self.failed: dict[str, str] = {}

    def serves(self, model: str) -> bool:
        return model in self.clients

    def mark_failed(self, model: str, error: str) -> None:
        self.failed[model] = error

    def mark_ok(self, model: str) -> None:
        self.failed.pop(model, None)

    async def run_candidate(self, cand: Candidate, messages: list[dict], task: str, req: Any = None,
                            logprobs: bool = False) -> Outcome:
        client = self.clients[cand.model]
        t0 = time.perf_counter()
        lp = {"logprobs": True} if logprobs else {}
        if cand.strategy == DEFAULT:  # as the gateway sends it (a budget: the length instruction and the cap)
            args = dict(self.chat_args)
            msgs, cap = plain_call(messages, task, cand.budget, self.max_tokens)
            if cap is not None:
                args["max_tokens"] = cap
            return plain_outcome(cand, await client.chat(msgs, **args, **lp), t0)
        question = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), None)
        if not isinstance(question, str) or not question.strip():
            raise BackendError("no user question to run the strategy on", model=cand.model, endpoint="-",
                               status=400)
        return run_outcome(cand, await get_strategy(cand.strategy).run(client, question, task, cand.budget, **lp),
                           t0)
