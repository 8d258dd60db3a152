"""One chat request as it goes through the gateway: what it answers (body, headers, stream chunks), what it writes
(the ledger row), what it counts (metrics) and what it charges (the key's budget). No HTTP framework in here: the
gateway hands a ``Reply`` to the HTTP layer (``routecraft.serve.app``), which only sends it.

Billing: a non-streamed answer is billed from the backend's usage (a plan of consultations: the sum over every call,
failed ones at 0). A stream is billed for what was delivered: the backend's usage when its last chunk arrives, else
(the client went away, or the backend failed mid-way) the prompt's estimated tokens and one output token per content
chunk sent (``StreamGuard``) — the ledger row, the key's budget and the metrics all see it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional

from routecraft.serve.conversation import ChatRequest, RequestError
from routecraft.serve.outcomes import Outcome, Plan, Target

log = logging.getLogger("routecraft.serve")


@dataclass
class Reply:
    """What the gateway answers: a JSON body with status and headers, or (``stream``) server-sent events.
    ``encode``: the body may hold values JSON does not know as such (sent through FastAPI's encoder)."""

    status: int
    body: Any = None
    headers: dict = field(default_factory=dict)
    stream: Optional[AsyncIterator[str]] = None
    encode: bool = False

    @classmethod
    def error(cls, exc: RequestError) -> "Reply":
        return cls(exc.status, exc.body(), exc.headers or {})


def _fmt(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.6g}"


def usage_dict(i: int, o: int) -> dict:
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}


class Session:
    """One chat request as it goes through the gateway (for the response, headers, ledger and metrics). ``gw`` is the
    gateway: its metrics, keys and request ids."""

    def __init__(self, gw: Any, key: str, req: ChatRequest, target: Target, client_id: Optional[str],
                 t_start: float) -> None:
        self.gw, self.key, self.req, self.target = gw, key, req, target
        self.client_id, self.t_start = client_id, t_start
        self.rid = gw.new_request_id()
        self.created = int(time.time())
        self.plan: Optional[Plan] = None

    @property
    def show_reasoning(self) -> bool:
        return bool(self.req.option("reasoning"))

    def predicted(self, cid: str) -> tuple[Optional[float], Optional[float]]:
        d = self.plan.decision if self.plan else None
        if d is None:
            return None, None
        for row in d.table:
            if row["candidate"] == cid:
                return row["predicted_score"], row["predicted_cost"]
        return d.predicted_score, d.predicted_cost

    # ---- the response ------------------------------------------------------------------------------------------
    def info(self, cand, out: Optional[Outcome], failures: list[dict], backend_s: float,
             answer: Optional[str] = None, method: Optional[str] = None) -> dict:
        plan = self.plan
        ps, pc = self.predicted(cand.id)
        total = time.perf_counter() - self.t_start
        d = plan.decision
        info: dict[str, Any] = {
            "request_id": self.rid,
            "router": self.target.label,
            "decided_by": plan.router.name if plan.router is not None else None,
            "requested_model": self.target.requested,
            "tradeoff": self.target.tradeoff_name,
            "lam": plan.lam, "max_cost": plan.max_cost,
            "task": plan.task if d is not None else None,
            "model": cand.model, "strategy": cand.strategy, "budget": cand.budget, "candidate": cand.id,
            "decided": d.candidate.id if d is not None else None,
            "predicted_score": ps, "predicted_cost": pc,
            "sticky": plan.sticky,
            "fallbacks": failures,
            "skipped": plan.skipped,
            "decision_ms": round(plan.decision_ms, 3),
            "backend_ms": round(backend_s * 1e3, 3),
            "latency_ms": round(total * 1e3, 3),
            "overhead_ms": round((total - backend_s) * 1e3, 3),
        }
        if out is not None:
            info.update(answer=out.answer, answer_method=out.method, input_tokens=out.input_tokens,
                        output_tokens=out.output_tokens, cost_usd=out.cost_usd)
            if out.consulted is not None:
                c = out.consulted
                info.update(consultations=c["consultations"], escalated=c["escalated"],
                            answered_by=c["answered_by"], plan={"kind": c["kind"], "plan": c["plan"], "how": c["how"]})
        elif answer is not None or method is not None:
            info.update(answer=answer, answer_method=method)
        if d is not None and isinstance(d.plan, dict) and d.plan.get("kind") == "upfront":
            info.update(consultations=[], escalated=False, plan=dict(d.plan))  # open chat: which decision was used
        if d is not None:
            info["candidates"] = d.table[:10]
        if self.show_reasoning and out is not None and out.candidate.strategy != "default":
            info["reasoning"] = {"text": out.text, **out.details}
        return info

    def headers(self, cand, cost: Optional[float], failures: list[dict], backend_s: Optional[float] = None,
                tokens: Optional[tuple[int, int]] = None, consultations: Optional[int] = None) -> dict:
        plan = self.plan
        ps, pc = self.predicted(cand.id)
        h = {"x-routecraft-request-id": self.rid, "x-routecraft-router": self.target.label,
             "x-routecraft-model": cand.model, "x-routecraft-strategy": cand.strategy,
             "x-routecraft-budget": "default" if cand.budget is None else str(cand.budget),
             "x-routecraft-decision-ms": f"{plan.decision_ms:.3f}", "x-routecraft-fallbacks": str(len(failures))}
        if plan.router is not None:
            h["x-routecraft-decided-by"] = plan.router.name  # the router type; for an open request under the
            # shipped default, the heuristic (see Gateway._load_routers)
        if consultations is not None:
            h["x-routecraft-consultations"] = str(consultations)
        elif plan.decision is not None and isinstance(plan.decision.plan, dict) \
                and plan.decision.plan.get("kind") == "upfront":
            h["x-routecraft-consultations"] = "0"
            h["x-routecraft-plan"] = f"upfront (open chat; no {plan.decision.plan['instead_of']} plan)"
        if plan.decision is not None:
            h.update({"x-routecraft-predicted-score": _fmt(ps), "x-routecraft-predicted-cost": _fmt(pc),
                      "x-routecraft-task": plan.task, "x-routecraft-tradeoff": self.target.tradeoff_name or ""})
        if cost is not None:
            h["x-routecraft-cost"] = _fmt(cost)
        if tokens is not None:
            h["x-routecraft-input-tokens"], h["x-routecraft-output-tokens"] = str(tokens[0]), str(tokens[1])
        if backend_s is not None:
            total = time.perf_counter() - self.t_start
            h["x-routecraft-backend-ms"] = f"{backend_s * 1e3:.3f}"
            h["x-routecraft-overhead-ms"] = f"{(total - backend_s) * 1e3:.3f}"
        return h

    def completion(self, out: Outcome, failures: list[dict]) -> dict:
        """The body of a non-streamed answer."""
        cand = out.candidate
        info = self.info(cand, out, failures, out.backend_s)
        msg: dict[str, Any] = {"role": "assistant", "content": out.content}
        if self.show_reasoning and cand.strategy != "default":
            msg["reasoning_content"] = out.text
        body = {"id": self.rid, "object": "chat.completion", "created": self.created, "model": cand.model,
                "choices": [{"index": 0, "message": msg, "finish_reason": out.finish_reason or "stop",
                             "logprobs": None}],
                "usage": usage_dict(out.input_tokens, out.output_tokens), "routecraft": info}
        return body

    def completion_headers(self, out: Outcome, failures: list[dict]) -> dict:
        """The headers of a non-streamed answer (taken last: the overhead counts the ledger write)."""
        return self.headers(out.candidate, out.cost_usd, failures, out.backend_s, (out.input_tokens,
                                                                                    out.output_tokens),
                            consultations_of(out))

    def chunk(self, model: str, delta: dict, finish: Optional[str] = None, **extra: Any) -> str:
        obj = {"id": self.rid, "object": "chat.completion.chunk", "created": self.created, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(obj)}\n\n"

    def usage_chunk(self, model: str, tin: int, tout: int, info: dict) -> str:
        obj = {"id": self.rid, "object": "chat.completion.chunk", "created": self.created, "model": model,
               "choices": [], "usage": usage_dict(tin, tout), "routecraft": info}
        return f"data: {json.dumps(obj)}\n\n"

    # ---- the ledger, metrics and the key's budget ---------------------------------------------------------------
    def ledger_row(self, cand, status: str, http_status: int, *, input_tokens=0, output_tokens=0, cost=0.0,
                   backend_s=None, failures=None, error=None, attempts=None) -> dict:
        plan = self.plan
        d = plan.decision if plan else None
        ps, pc = self.predicted(cand.id) if cand is not None else (None, None)
        return {"request_id": self.rid, "ts": time.time(), "key": self.key, "client_request_id": self.client_id,
                "requested_model": self.target.requested, "router": self.target.label,
                "tradeoff": self.target.tradeoff_name, "lam": plan.lam if plan else None,
                "max_cost": plan.max_cost if plan else None,
                "model": cand.model if cand else None, "strategy": cand.strategy if cand else None,
                "budget": cand.budget if cand else None, "task": plan.task if d is not None else None,
                "predicted_score": ps, "predicted_cost": pc, "input_tokens": input_tokens,
                "output_tokens": output_tokens, "cost_usd": cost,
                "latency_s": time.perf_counter() - self.t_start, "backend_s": backend_s,
                "decision_ms": plan.decision_ms if plan else None, "status": status, "http_status": http_status,
                "error": error, "attempts": attempts, "fallbacks": failures or [],
                "stream": int(bool(self.req.stream)), "sticky": int(bool(plan and plan.sticky)),
                "conversation_id": self.req.option("conversation_id"), "candidates": ledger_table(d)}

    def outcome_row(self, out: Outcome, status: str, http: int, failures: list[dict], *, tokens=None, cost=None,
                    backend_s=None, error=None) -> dict:
        """The ledger row of an answer: one attempt per candidate tried, or per consultation of a plan."""
        tin, tout = tokens if tokens is not None else (out.input_tokens, out.output_tokens)
        n = consultations_of(out)
        return self.ledger_row(out.candidate, status, http, input_tokens=tin, output_tokens=tout,
                               cost=out.cost_usd if cost is None else cost,
                               backend_s=out.backend_s if backend_s is None else backend_s, failures=failures,
                               error=error, attempts=len(failures) + 1 if n is None else n)

    def account(self, cand, status: str, http: int, tokens_in: int, tokens_out: int, cost: float,
                total_s: Optional[float] = None, out: Optional[Outcome] = None) -> None:
        """Metrics and the key's charge. ``out`` of a plan of consultations: tokens and cost are counted per
        consulted model (the request, its latency and the charge once, under the model that answered)."""
        m = self.gw.metrics
        model = cand.model if cand is not None else "none"
        m.requests.labels(self.target.requested, model, str(http)).inc()
        if status == "ok" and total_s is not None:
            m.latency.labels(model).observe(total_s)
        parts = [(model, tokens_in, tokens_out, cost)]
        if out is not None and out.consulted is not None:
            parts = [(c["model"], c["input_tokens"], c["output_tokens"], c["cost_usd"])
                     for c in out.consulted["consultations"]]
        for mdl, tin, tout, c in parts:
            if tin or tout:
                m.tokens.labels(mdl, "input").inc(tin)
                m.tokens.labels(mdl, "output").inc(tout)
            if c:
                m.cost.labels(mdl).inc(c)
        self.gw.keys.charge(self.key, cost)


#: rows of a decision's candidate table kept in the ledger (the response shows as many)
LEDGER_TABLE_ROWS = 10


def ledger_table(d: Any) -> Optional[list]:
    """The ledger's compact copy of a decision's candidate table, best first: ``[candidate, predicted score,
    predicted cost]`` per row (6 significant digits), at most ``LEDGER_TABLE_ROWS``; None without a decision."""
    if d is None or not d.table:
        return None
    return [[r["candidate"], float(f"{r['predicted_score']:.6g}"), float(f"{r['predicted_cost']:.6g}")]
            for r in d.table[:LEDGER_TABLE_ROWS]]


def consultations_of(out: Optional[Outcome]) -> Optional[int]:
    """How many consultations a plan's outcome made (None: not a plan of consultations)."""
    if out is None or out.consulted is None:
        return None
    return len(out.consulted["consultations"])


class StreamGuard:
    """Ends a stream exactly once: frees the execution slot, writes the ledger row, counts the metrics, charges the
    key. Called from the stream's ``finally`` or, for a stream that never started (client gone before the first
    byte), when the generator is garbage-collected.

    Billing: ``set_usage`` (the backend's own counts, or a whole answer executed before streaming) wins; otherwise the
    prompt's estimate and ``delivered`` (content chunks sent; a llama.cpp/OpenAI stream sends one token a chunk)."""

    def __init__(self, s: Session, cand: Any, failures: list[dict], release: Any, model: Any,
                 whole: Optional[Outcome] = None) -> None:
        self.s, self.cand, self.failures, self.release, self.model = s, cand, failures, release, model
        self.whole = whole
        self.done = False
        self.delivered = 0
        self.prompt_tokens = 0
        self.backend_s = 0.0
        self._usage: Optional[tuple[int, int, float]] = None

    def set_usage(self, tin: int, tout: int, cost: float) -> None:
        self._usage = (tin, tout, cost)

    def usage(self) -> tuple[int, int, float]:
        if self._usage is not None:
            return self._usage
        tin, tout = self.prompt_tokens, self.delivered
        return tin, tout, float(self.model.cost(tin, tout)) if (tin or tout) else 0.0

    def finish(self, status: str, http: int, err: Optional[str]) -> None:
        if self.done:
            return
        self.done = True
        s = self.s
        tin, tout, cost = self.usage()
        backend_s = self.backend_s
        self.release()
        n = consultations_of(self.whole)
        try:  # synchronous on purpose: this also runs while the stream is being cancelled
            s.gw.record_soon(s.ledger_row(self.cand, status, http, input_tokens=tin, output_tokens=tout, cost=cost,
                                          backend_s=backend_s, failures=self.failures, error=err,
                                          attempts=len(self.failures) + 1 if n is None else n))
        except Exception:  # noqa: BLE001
            log.exception("could not write the ledger row of %s", s.rid)
            s.gw.metrics.ledger_errors.inc()
        s.account(self.cand, status, http, tin, tout, cost, time.perf_counter() - s.t_start, out=self.whole)
