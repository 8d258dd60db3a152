"""The gateway engine: resolves the requested model, routes a conversation, executes the decision on the pool with
fallback, and keeps the per-model health, stickiness, keys, ledger and metrics.

The HTTP layer is ``routecraft.serve.app``; this module has no FastAPI in it. Construction stores settings only;
``await Gateway.start()`` loads the pool, the routers (and their encoders), opens the ledger and the clients.

Executing a candidate (model, strategy, budget):

* strategy ``default``, or a pool model named directly: the conversation goes to the model unchanged (the request's
  temperature, top_p, stop, seed, penalties and max_tokens pass through); the answer is the model's text.
* any other strategy: for a single user turn with no output cap in the request, ``strategy.run(client, question, task,
  budget)`` exactly as in data collection; otherwise the strategy wraps the conversation (``strategy_messages``) and
  the gateway calls the model and extracts the answer the same way (self-consistency: k samples and a vote; PAL: the
  program runs in the sandbox). The answer returned is the strategy's extracted answer (the model text when nothing
  could be extracted); the full text, PAL's program and its output, and the votes are the "reasoning".

Fallback: a candidate whose call fails is abandoned for the next one in the decision's table, skipping models that
already failed in this request. What a failure means depends on whose fault it is (``failure_kind``):

* **backend** (connection refused or reset, time-out, HTTP 5xx, 401/403/404 from a misconfigured endpoint, anything
  else raised): the next candidate is tried, and the model is marked unhealthy for ``limits.unhealthy_cooldown_s``
  (tried last meanwhile) and ``down`` in ``/health`` until a probe or a call succeeds;
* **context** (the backend says the prompt does not fit its context): only candidates on models with a larger
  context are tried; none left is a 400 ``context_length_exceeded``;
* **client** (any other backend 4xx: the request itself is bad): no other candidate is tried, the answer is a 400
  ``invalid_request_error`` with the backend's message.

Neither of the last two marks a backend unhealthy: a client cannot take a model down for others. When every
candidate fails for backend reasons, ``AllCandidatesFailed`` carries the reasons (the app answers 502).

Backends are watched by ``routecraft.serve.backends.Supervisor`` (probes, restarts of private servers, pool-state
changes); admission (execution slots, queue bound) and failed-authentication throttling are
``routecraft.serve.admission``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import numpy as np

from routecraft.data.schema import DEFAULT, Candidate
from routecraft.routers.base import Decision, Prediction, Router, choose
from routecraft.serve.admission import AuthThrottle, Slots
from routecraft.serve.auth import KeyStore
from routecraft.serve.backends import DOWN, UP, Backend, Supervisor
from routecraft.serve.config import HEURISTIC, PREFIX, ServeConfig, ServeConfigError, Tradeoff, env_keys
from routecraft.serve.conversation import (
    ChatRequest,
    RequestError,
    conversation_chars,
    conversation_tokens,
    routing_text,
    single_question,
    strategy_messages,
)
from routecraft.serve.heuristic import HeuristicRouter, query_kind
from routecraft.serve.ledger import LedgerError, open_ledger
from routecraft.serve.metrics import Metrics

log = logging.getLogger("routecraft.serve")

#: strategies whose stream is passed through from the backend (no post-processing of the text is needed to show it)
PASSTHROUGH = {DEFAULT, "direct"}


@dataclass
class RouterEntry:
    """One router on offer (``routecraft/<name>``)."""

    name: str
    spec: str                     # "heuristic" or the artifact folder
    router: Router
    candidates: list[Candidate]   # the router's candidates whose model is served
    skipped: list[str]            # candidates dropped because their model is not served
    encoder: Optional[str] = None

    @property
    def kind(self) -> str:
        return HEURISTIC if isinstance(self.router, HeuristicRouter) else self.router.name


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


@dataclass
class Outcome:
    """What one candidate produced."""

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

    @property
    def content(self) -> str:
        return self.answer if self.answer is not None else self.text


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


#: phrases with which OpenAI-compatible servers say that a prompt does not fit the context
CONTEXT_PHRASES = ("context size", "context length", "context_length", "maximum context", "context window",
                   "exceed_context", "too many tokens", "prompt is too long", "input is too long")


def failure_kind(exc: BaseException) -> str:
    """Whose fault a failed call was: "context", "client" (the request) or "backend" (see the module docstring)."""
    from routecraft.pool.client import BackendError

    if isinstance(exc, BackendError):
        st = exc.status
        if st in (400, 413, 422):
            text = f"{exc.detail} {exc}".lower()
            return "context" if any(p in text for p in CONTEXT_PHRASES) else "client"
        return "backend"
    if isinstance(exc, UnicodeError):  # text the backend protocol cannot carry (refused at intake; a safety net)
        return "client"
    return "backend"


def _num(x: Any) -> Optional[float]:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


class Gateway:
    """The serving engine. ``endpoints`` maps served model names to base_urls (local models: their server's)."""

    def __init__(self, config: ServeConfig, *, base_dir: Optional[Path] = None,
                 endpoints: Optional[dict[str, str]] = None, environ: Optional[dict] = None) -> None:
        self.config = config
        self.base_dir = base_dir
        self._endpoints = dict(endpoints or {})
        # a pool_endpoints() result also says which of them are private servers (restarted when they die) and which
        # come from `routecraft pool up` (followed in the pool state file)
        self._endpoint_servers = dict(getattr(endpoints, "servers", {}) or {})
        self._endpoint_sources = dict(getattr(endpoints, "sources", {}) or {})
        self._environ = environ
        self.started = False

    # ================================================================ lifecycle
    async def start(self) -> "Gateway":
        from routecraft.pool.client import ChatClient
        from routecraft.pool.config import PoolConfigError

        cfg = self.config
        self.preflight(self._environ)
        self.t0 = time.time()
        self.metrics = Metrics()
        self.pool = self._load_pool()
        self.models = self._served_models()
        self.clients: dict[str, ChatClient] = {}
        for m in self.models.values():
            url = self._endpoints.get(m.name) or m.endpoint
            if not url:
                raise ServeConfigError(f"pool model {m.name!r} is local and has no running server (start it with "
                                       f"`routecraft pool up --models {m.name}` or set servers.start: true)")
            try:
                self.clients[m.name] = ChatClient(m, url, timeout=cfg.limits.backend_timeout_s,
                                                  max_retries=cfg.limits.backend_retries, backoff_s=0.2)
                _ = m.api_key() if m.api_key_env else None
            except PoolConfigError as exc:
                raise ServeConfigError(str(exc)) from None
        self._route_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="routecraft-route")
        self._embed_cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self.routers = await asyncio.get_running_loop().run_in_executor(self._route_pool, self._load_routers)
        self.keys = KeyStore(list(cfg.keys) + env_keys(cfg, self._environ))
        try:
            self.ledger = await asyncio.to_thread(open_ledger, cfg.ledger)
        except LedgerError as exc:
            raise ServeConfigError(f"field 'ledger': {exc}") from None
        self.keys.load_spent(await asyncio.to_thread(self.ledger.spent_by_key))
        # budgets are shared by every gateway (or worker) writing the same ledger: the keys re-read their spend
        self._spend_task: Optional[asyncio.Task] = None
        self._pending_records: set = set()
        if self.ledger.remote:  # PostgreSQL: read the totals off the event loop
            self._spend_task = asyncio.create_task(self.keys.run_refresher(self.ledger.spent_by_key, 0.5))
        else:  # SQLite: a few-microsecond lookup inside check_budget
            self.keys.set_spent_source(self.ledger.spent, refresh_s=0.5)
        self.unhealthy: dict[str, tuple[float, str]] = {}  # model -> (until monotonic, reason)
        self.sticky: OrderedDict[tuple[str, str], tuple[Candidate, float]] = OrderedDict()
        self.slots = Slots(cfg.limits.max_concurrency, cfg.limits.max_queue, cfg.limits.queue_timeout_s)
        self.auth_throttle = AuthThrottle(cfg.limits.auth_failures_per_min, 60.0)
        self.backends = self._backends()
        self.sandbox_isolation = self._check_sandbox()
        self._supervisor_task: Optional[asyncio.Task] = None
        sup = cfg.supervision
        if sup.enabled:
            keys = {}
            for m in self.models.values():
                if m.api_key_env:
                    try:
                        keys[m.name] = m.api_key()
                    except PoolConfigError:
                        pass
            self.supervisor = Supervisor(self.backends, interval_s=sup.interval_s, probe_timeout_s=sup.probe_timeout_s,
                                         backoff_s=sup.restart_backoff_s, max_backoff_s=sup.max_backoff_s,
                                         start_timeout_s=cfg.servers.start_timeout_s, rebind=self._rebind,
                                         api_keys=keys)
            self._supervisor_task = asyncio.create_task(self.supervisor.run())
        self.started = True
        return self

    @property
    def inflight(self) -> int:
        return self.slots.running

    @property
    def waiting(self) -> int:
        return self.slots.waiting

    def _backends(self) -> dict[str, Backend]:
        servers, sources = self._endpoint_servers, self._endpoint_sources
        out = {}
        for name, client in self.clients.items():
            src = sources.get(name) or ("private" if name in servers else "endpoint")
            out[name] = Backend(name, client.base_url, src, servers.get(name))
        return out

    async def _rebind(self, model: str, url: str) -> None:
        await self.clients[model].rebind(url)
        self.unhealthy.pop(model, None)

    def _check_sandbox(self) -> Optional[str]:
        """Refuse to start when a router offers PAL and the strong sandbox is unavailable, unless the operator
        opted in to the weak one (``sandbox.allow_weak``). Returns the isolation mode in force (None: no PAL)."""
        pal = sorted({c.strategy for e in self.routers.values() for c in e.candidates if "pal" in c.strategy})
        if not pal:
            return None
        from routecraft.strategies.sandbox import allow_weak_isolation, strong_isolation_available

        ok, why = strong_isolation_available()
        if ok:
            log.warning("PAL sandbox: strict isolation in force (%s)", why)
            return "strict"
        if not self.config.sandbox.allow_weak:
            raise ServeConfigError(f"routers offer program-aided strategies ({', '.join(pal)}) but the strong PAL "
                                   f"sandbox is unavailable here ({why}); set sandbox.allow_weak: true to run "
                                   f"model-written programs with the weaker audit-hook isolation (it does not "
                                   f"stop them reading files), or serve routers without PAL")
        allow_weak_isolation(True)
        log.warning("PAL sandbox: WEAK audit-hook isolation in force (sandbox.allow_weak is set; strong isolation "
                    "unavailable: %s)", why)
        return "audit"

    async def close(self) -> None:
        if not getattr(self, "started", False):
            return
        if self._supervisor_task is not None:
            self._supervisor_task.cancel()
            try:
                await self._supervisor_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        for c in self.clients.values():
            try:
                await c.aclose()
            except Exception:  # noqa: BLE001 - closing best effort
                pass
        self._route_pool.shutdown(wait=False, cancel_futures=True)
        if self._pending_records:
            await asyncio.gather(*list(self._pending_records), return_exceptions=True)
        if self._spend_task is not None:
            self._spend_task.cancel()
            try:
                await self._spend_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self.ledger.close()
        self.started = False

    def preflight(self, environ: Optional[dict] = None) -> None:
        """The checks that need no backend: run before any server is started (``run_server`` calls it first)."""
        cfg = self.config
        if not cfg.keys and not env_keys(cfg, environ) and not cfg.is_loopback() and not cfg.allow_open:
            raise ServeConfigError(f"host {cfg.host!r} is not a loopback address and no API key is configured: add "
                                   f"keys (or ${cfg.keys_env}), or set allow_open: true")
        heuristic_pal = [x for x in cfg.heuristic.strategies if "pal" in x]
        if heuristic_pal and HEURISTIC in cfg.routers.values() and not cfg.sandbox.allow_weak:
            from routecraft.strategies.sandbox import strong_isolation_available

            ok, why = strong_isolation_available()
            if not ok:  # the same refusal as start() gives, before any backend is started
                raise ServeConfigError(f"the heuristic router offers {', '.join(heuristic_pal)} but the strong PAL "
                                       f"sandbox is unavailable here ({why}); set sandbox.allow_weak: true to run "
                                       f"model-written programs with the weaker audit-hook isolation, or drop "
                                       f"{', '.join(heuristic_pal)} from heuristic.strategies")

    def _load_pool(self):
        from routecraft.pool.config import Pool, PoolConfigError, load_pool

        spec = self.config.pool
        try:
            if isinstance(spec, dict):
                return Pool.from_dict(spec, source="config field 'pool'")
            p = Path(spec)
            if not p.is_absolute() and self.base_dir is not None and (self.base_dir / p).exists():
                spec = str(self.base_dir / p)
            return load_pool(spec)
        except PoolConfigError as exc:
            raise ServeConfigError(str(exc)) from None

    def _served_models(self) -> dict:
        names = self.config.models
        if names is None:
            chosen = [m for m in self.pool.models if m.instruct]
            if not chosen:
                raise ServeConfigError(f"pool {self.pool.name!r} has no instruct model; list the models to serve in "
                                       f"'models'")
        else:
            chosen = []
            for n in names:
                if n not in self.pool:
                    raise ServeConfigError(f"field 'models': {n!r} is not in pool {self.pool.name!r} "
                                           f"(models: {', '.join(self.pool.names)})")
                chosen.append(self.pool.get(n))
        return {m.name: m for m in chosen}

    def _load_routers(self) -> dict[str, RouterEntry]:
        from routecraft.routers import load_router

        loaded: dict[str, RouterEntry] = {}
        by_spec: dict[str, RouterEntry] = {}
        specs = dict(self.config.routers)
        specs.setdefault(HEURISTIC, HEURISTIC)
        for name, spec in specs.items():
            if spec in by_spec:
                e = by_spec[spec]
                loaded[name] = RouterEntry(name, spec, e.router, e.candidates, e.skipped, e.encoder)
                continue
            if spec == HEURISTIC:
                r: Router = HeuristicRouter(strategies=self.config.heuristic.strategies).fit_pool(
                    list(self.models.values()))
            else:
                path = self.config.router_dir(spec, self.base_dir)
                try:
                    r = load_router(path)
                except (FileNotFoundError, ValueError, KeyError, ImportError, OSError) as exc:
                    raise ServeConfigError(f"router {name!r} ({path}): cannot load: {exc}") from None
            cands = [c for c in r.candidates if c.model in self.models]
            skipped = [c.id for c in r.candidates if c.model not in self.models]
            if not cands:
                models = sorted({c.model for c in r.candidates})
                raise ServeConfigError(f"router {name!r} ({spec}): none of its candidates' models is served "
                                       f"(router models: {', '.join(models) or 'none'}; served: "
                                       f"{', '.join(self.models)})")
            encoder = None
            if r.uses_features:
                encoder = r.encoder
                if not encoder:
                    raise ServeConfigError(f"router {name!r} ({spec}) uses query features but its artifact names "
                                           "no encoder")
                try:  # one torch thread: the gateway shares the CPU with llama.cpp backends
                    import torch

                    torch.set_num_threads(1)
                except ImportError:  # pragma: no cover - sentence-transformers needs torch anyway
                    pass
                self._embed(encoder, "warm-up")
            if skipped:
                log.warning("router %s: %d candidate(s) skipped (model not served): %s", name, len(skipped),
                            ", ".join(skipped[:8]))
            e = RouterEntry(name, spec, r, cands, skipped, encoder)
            by_spec[spec] = e
            loaded[name] = e
        return loaded

    # ================================================================ model names
    def offered(self) -> list[dict]:
        """The entries of GET /v1/models."""
        out = []
        created = int(self.t0)
        for name, e in self.routers.items():
            for tname, t in [(None, self.config.tradeoffs[self.config.default_tradeoff])] + \
                    list(self.config.tradeoffs.items()):
                mid = f"{PREFIX}{name}" + (f":{tname}" if tname else "")
                out.append({"id": mid, "object": "model", "created": created, "owned_by": "routecraft",
                            "routecraft": {"kind": "router", "router": name, "router_type": e.kind,
                                           "tradeoff": tname or self.config.default_tradeoff, "lam": t.lam,
                                           "max_cost": t.max_cost, "description": t.description,
                                           "candidates": len(e.candidates), "skipped_candidates": len(e.skipped)}})
        for m in self.models.values():
            out.append({"id": m.name, "object": "model", "created": created, "owned_by": "routecraft-pool",
                        "routecraft": {"kind": "pool-model", "size_b": m.size_b, "price_in_per_m": m.price_in_per_m,
                                       "price_out_per_m": m.price_out_per_m, "description": m.description}})
        return out

    def resolve(self, model: str) -> Target:
        if model in self.models:
            return Target(requested=model, model=model)
        if model.startswith(PREFIX):
            rest = model[len(PREFIX):]
            rname, _, tname = rest.partition(":")
            entry = self.routers.get(rname)
            if entry is not None:
                tname = tname or self.config.default_tradeoff
                t = self.config.tradeoffs.get(tname)
                if t is not None:
                    return Target(requested=model, router=entry, tradeoff_name=tname, tradeoff=t)
                raise RequestError(404, f"unknown trade-off {tname!r} in model {model!r} (trade-offs: "
                                   f"{', '.join(self.config.tradeoffs)})", param="model", code="model_not_found")
        known = [f"{PREFIX}{r}" for r in self.routers] + list(self.models)
        extra = ""
        if model in self.pool:
            extra = " (it is in the pool but not served by this gateway)"
        raise RequestError(404, f"The model {model!r} does not exist{extra}; available: {', '.join(known)} "
                           f"(routers take ':<trade-off>', see GET /v1/models)", param="model",
                           code="model_not_found")

    # ================================================================ routing
    def _embed(self, encoder: str, text: str) -> np.ndarray:
        """One normalised float32 embedding (as EmbeddingCache computes it), memoised in memory: the disk cache
        rewrites its whole file on every new text, which a server cannot afford per request."""
        key = (encoder, text)
        hit = self._embed_cache.get(key)
        if hit is not None:
            self._embed_cache.move_to_end(key)
            return hit
        from routecraft.data.features import load_encoder

        v = load_encoder(encoder).encode([text], convert_to_numpy=True, normalize_embeddings=True)
        v = np.asarray(v, dtype=np.float32)
        self._embed_cache[key] = v
        if len(self._embed_cache) > 4096:
            self._embed_cache.popitem(last=False)
        return v

    def task_for(self, req: ChatRequest, rtext: str) -> str:
        task = req.option("task")
        if task is None and self.config.task != "auto":
            task = self.config.task
        if task is not None:
            from routecraft.strategies import task_kind

            try:
                task_kind(task)
            except ValueError as exc:
                raise RequestError(400, str(exc), param="task") from None
            return task
        return query_kind(rtext)

    def _predict(self, entry: RouterEntry, rtext: str, task: str, chars: int, cap: Optional[int],
                 lam: float, max_cost: Optional[float]) -> tuple[Prediction, Optional[Decision]]:
        r = entry.router
        if isinstance(r, HeuristicRouter):
            kind = task if task in ("numeric", "choice", "qa", "math") else None
            return r.predict_rows([(rtext, chars, cap, kind)]), None
        import pandas as pd

        q = pd.DataFrame({"query_id": ["q0"], "text": [rtext], "task": [task], "gold": [None],
                          "input_chars": [chars], "max_tokens": [cap]})
        X = self._embed(entry.encoder, rtext) if entry.encoder else None
        d = r.decide(q, X, lam=lam, max_cost=max_cost)[0]
        cands, score, cost = [], [], []
        for row in d.table:
            cands.append(Candidate(row["model"], row.get("strategy") or DEFAULT,
                                   None if _num(row.get("budget")) is None else int(row["budget"])))
            score.append(float(row["predicted_score"]))
            cost.append(float(row["predicted_cost"]))
        if not cands:  # a router without a table: its one decision
            cands, score, cost = [d.candidate], [d.predicted_score], [d.predicted_cost]
        return Prediction(cands, np.array([score]), np.array([cost])), d

    def _decide(self, entry: RouterEntry, rtext: str, task: str, chars: int, cap: Optional[int], lam: float,
                max_cost: Optional[float], tokens: Optional[int] = None) -> tuple[Decision, list[dict]]:
        """The router's decision restricted to candidates the pool can run for this request (``tokens``: the
        conversation's estimated length, default chars/4), and what was dropped."""
        tokens = int(chars / 4) if tokens is None else tokens
        pred, raw = self._predict(entry, rtext, task, chars, cap, lam, max_cost)
        dropped: list[dict] = []
        keep: list[int] = []
        need_in = tokens + 64
        for j, c in enumerate(pred.candidates):
            m = self.models.get(c.model)
            if m is None:
                continue
            if cap is not None and c.budget is not None and c.budget > cap:
                dropped.append({"candidate": c.id, "reason": f"budget {c.budget} > max_tokens {cap}"})
                continue
            out = cap or (c.budget + 10 if c.budget else 0)
            if need_in + out > m.context:
                dropped.append({"candidate": c.id, "reason": f"context {m.context} too small"})
                continue
            keep.append(j)
        if not keep:
            budget_only = [j for j, c in enumerate(pred.candidates) if c.model in self.models and
                           tokens + 64 + (cap or 0) <= self.models[c.model].context]
            if not budget_only:
                raise RequestError(400, f"the conversation (~{tokens} tokens) plus max_tokens does not fit "
                                   f"the context of any served model", param="messages",
                                   code="context_length_exceeded")
            keep = budget_only  # only budgets were too large: keep them, every call is capped anyway
        sub = Prediction([pred.candidates[j] for j in keep], pred.score[:, keep], pred.cost[:, keep],
                         None if pred.tokens is None else pred.tokens[:, keep])
        i = int(choose(sub, lam=lam, max_cost=max_cost)[0])
        s, c = sub.score[0], sub.cost[0]
        if max_cost is not None:
            fits = c <= max_cost
            rest = sorted(range(len(keep)), key=lambda k: (not fits[k], -s[k] if fits[k] else c[k], k))
        else:
            rest = sorted(range(len(keep)), key=lambda k: (-(s[k] - lam * c[k]), c[k], k))
        order = [i] + [k for k in rest if k != i]
        table = [{"candidate": sub.candidates[k].id, "model": sub.candidates[k].model,
                  "strategy": sub.candidates[k].strategy, "budget": sub.candidates[k].budget,
                  "predicted_score": float(s[k]), "predicted_cost": float(c[k]),
                  **({"predicted_tokens": float(sub.tokens[0, k])} if sub.tokens is not None else {})}
                 for k in order]
        plan_obj = raw.plan if raw is not None else None
        return Decision(sub.candidates[i], float(s[i]), float(c[i]), table, plan_obj), dropped

    async def route(self, target: Target, req: ChatRequest, messages: list[dict], key: str) -> Plan:
        """Decide for one request (timed), apply stickiness and health to the order of candidates."""
        cap = req.output_cap
        if target.model is not None:  # bypass
            m = self.models[target.model]
            least = conversation_chars(messages) // 6  # fewer tokens than this no tokenizer gives: surely too long
            if least + (cap or 0) > m.context:
                raise RequestError(400, f"the conversation (at least ~{least} tokens) plus max_tokens does not fit "
                                   f"the context of {target.model!r} ({m.context} tokens)", param="messages",
                                   code="context_length_exceeded")
            return Plan([Candidate(target.model)], None, task="qa", lam=None, max_cost=None)
        t = target.tradeoff
        lam = _num(req.option("lam"))
        max_cost = _num(req.option("max_cost"))
        if lam is None and max_cost is None:
            lam, max_cost = t.lam, t.max_cost
        lam = lam or 0.0
        t0 = time.perf_counter()
        rtext = routing_text(messages)
        task = self.task_for(req, rtext)
        chars = conversation_chars(messages)
        tokens = conversation_tokens(messages)
        entry = target.router
        if isinstance(entry.router, HeuristicRouter):
            decision, dropped = self._decide(entry, rtext, task, chars, cap, lam, max_cost, tokens)
        else:
            decision, dropped = await asyncio.get_running_loop().run_in_executor(
                self._route_pool, self._decide, entry, rtext, task, chars, cap, lam, max_cost, tokens)
        order = [Candidate(r["model"], r["strategy"], r["budget"]) for r in decision.table]
        sticky = False
        conv = req.option("conversation_id")
        if conv and self.config.sticky.enabled:
            hit = self.sticky.get((key, conv))
            now = time.monotonic()
            if hit is not None and hit[1] > now and hit[0] in order:
                order.remove(hit[0])
                order.insert(0, hit[0])
                sticky = True
        decision_ms = (time.perf_counter() - t0) * 1e3
        plan = Plan(order, decision, task, lam, max_cost, decision_ms, sticky, dropped)
        self._apply_health(plan)
        m = self.metrics
        m.decision_latency.labels(entry.name).observe(decision_ms / 1e3)
        c = decision.candidate
        m.decisions.labels(entry.name, c.model, c.strategy, str(c.budget)).inc()
        return plan

    def _apply_health(self, plan: Plan) -> None:
        now = time.monotonic()
        bad = {m for m, (until, _) in self.unhealthy.items() if until > now}
        if not bad:
            return
        good = [c for c in plan.order if c.model not in bad]
        if not good:
            return  # everything is marked down: try them all in order anyway
        moved = [c for c in plan.order if c.model in bad]
        for c in moved:
            plan.skipped.append({"candidate": c.id, "reason": f"model unhealthy: {self.unhealthy[c.model][1]}"})
        plan.order = good + moved

    def remember(self, key: str, req: ChatRequest, cand: Candidate) -> None:
        conv = req.option("conversation_id")
        if not conv or not self.config.sticky.enabled:
            return
        self.sticky[(key, conv)] = (cand, time.monotonic() + self.config.sticky.ttl_s)
        self.sticky.move_to_end((key, conv))
        while len(self.sticky) > self.config.sticky.max_conversations:
            self.sticky.popitem(last=False)

    def mark_failed(self, model: str, error: str) -> None:
        """A backend fault (never a request's own error): tried last for the cooldown, ``down`` until it works."""
        self.unhealthy[model] = (time.monotonic() + self.config.limits.unhealthy_cooldown_s, error[:200])
        self.metrics.backend_errors.labels(model).inc()
        b = self.backends.get(model)
        if b is not None:
            b.set(DOWN, error)

    def mark_ok(self, model: str) -> None:
        self.unhealthy.pop(model, None)
        b = self.backends.get(model)
        if b is not None and b.state != UP:
            b.set(UP)

    def _failed(self, cand: Candidate, exc: BaseException, failures: list[dict]) -> str:
        """Record one failed attempt; its kind (see ``failure_kind``)."""
        kind = failure_kind(exc)
        err = describe_failure(exc)
        log.warning("candidate %s failed (%s): %s", cand.id, kind, err)
        failures.append({"candidate": cand.id, "model": cand.model, "error": err, "kind": kind})
        if kind == "backend":
            self.mark_failed(cand.model, err)
            self.metrics.fallbacks.labels(cand.model).inc()
        return kind

    def _refused(self, failures: list[dict], exc: BaseException) -> CandidateRefused:
        from routecraft.pool.client import BackendError

        last = failures[-1]
        detail = exc.detail if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}"
        if last["kind"] == "context":
            return CandidateRefused(f"the request does not fit the context of any served model that can take it "
                                    f"(last: {last['model']!r}: {detail})", failures, code="context_length_exceeded")
        return CandidateRefused(f"model {last['model']!r} refused the request: {detail}", failures,
                                code="invalid_request")

    def _skip_small(self, cand: Candidate, floor: Optional[int]) -> bool:
        """After a context failure, only models with a larger context are worth trying."""
        return floor is not None and self.models[cand.model].context <= floor

    # ================================================================ executing
    def _plain_kwargs(self, req: ChatRequest) -> dict:
        kw: dict[str, Any] = {}
        for f in ("top_p", "presence_penalty", "frequency_penalty"):
            v = getattr(req, f)
            if v is not None:
                kw[f] = v
        return kw

    def _plain_args(self, req: ChatRequest) -> dict:
        temp = req.temperature if req.temperature is not None else self.config.default_temperature
        return dict(max_tokens=req.output_cap or self.config.limits.default_max_tokens, temperature=float(temp),
                    stop=req.stop, seed=req.seed, **self._plain_kwargs(req))

    async def run_candidate(self, cand: Candidate, messages: list[dict], task: str, req: ChatRequest) -> Outcome:
        """Execute one candidate (no fallback)."""
        client = self.clients[cand.model]
        t0 = time.perf_counter()
        if cand.strategy == DEFAULT:
            r = await client.chat(messages, **self._plain_args(req))
            return Outcome(cand, r.text, None, "plain", int(r.input_tokens or 0), int(r.output_tokens or 0),
                           float(r.cost_usd or 0.0), r.finish_reason, time.perf_counter() - t0)
        from routecraft.strategies import get_strategy

        strat = get_strategy(cand.strategy)
        cap = req.output_cap
        q = single_question(messages)
        if q is not None and cap is None:
            run = await strat.run(client, q, task, cand.budget)
            return self._outcome(cand, run, t0)
        return await self._run_wrapped(cand, strat, client, messages, task, cap, t0)

    async def _run_wrapped(self, cand, strat, client, messages, task, cap, t0) -> Outcome:
        from routecraft.strategies import SelfConsistency

        msgs = strategy_messages(strat, messages, task, cand.budget)
        max_t = strat.max_tokens(cand.budget)
        if cap is not None:
            max_t = cap if max_t is None else min(max_t, cap)
        if isinstance(strat, SelfConsistency):
            base = strat.base_strategy

            async def one(i: int):
                r = await client.chat(msgs, max_tokens=max_t, temperature=strat.temperature, stop=base.stop("chat"))
                ex = await asyncio.to_thread(base.extract, r.text or "", task)
                return r, ex

            if strat.concurrent:
                parts = await asyncio.gather(*(one(i) for i in range(strat.k)))
            else:
                parts = [await one(i) for i in range(strat.k)]
            agg = strat.aggregate([ex for _, ex in parts], task)
            rep = next((r for r, ex in parts if ex.answer is not None and ex.answer == agg.answer), parts[0][0])
            return Outcome(cand, rep.text or "", agg.answer, agg.method,
                           sum(int(r.input_tokens or 0) for r, _ in parts),
                           sum(int(r.output_tokens or 0) for r, _ in parts),
                           sum(float(r.cost_usd or 0.0) for r, _ in parts), rep.finish_reason,
                           time.perf_counter() - t0, {"votes": agg.votes, "samples": [r.text for r, _ in parts]})
        r = await client.chat(msgs, max_tokens=max_t, temperature=strat.temperature, stop=strat.stop("chat"))
        ex = await asyncio.to_thread(strat.extract, r.text or "", task)
        return Outcome(cand, r.text or "", ex.answer, ex.method, int(r.input_tokens or 0), int(r.output_tokens or 0),
                       float(r.cost_usd or 0.0), r.finish_reason, time.perf_counter() - t0, _ex_details(ex))

    def _outcome(self, cand: Candidate, run: Any, t0: float) -> Outcome:
        details = _ex_details(run.extraction)
        if run.samples:
            details["samples"] = [s.text for s in run.samples]
        return Outcome(cand, run.text or "", run.answer, run.extraction.method, int(run.input_tokens or 0),
                       int(run.output_tokens or 0), float(run.cost_usd or 0.0), run.finish_reason,
                       time.perf_counter() - t0, details)

    async def execute(self, plan: Plan, messages: list[dict], req: ChatRequest) -> tuple[Outcome, list[dict]]:
        """Run the plan's candidates in order until one answers; (outcome, failures before it)."""
        failures: list[dict] = []
        failed_models: set[str] = set()
        floor: Optional[int] = None  # after a context failure: the largest context known to be too small
        last_exc: Optional[BaseException] = None
        for cand in plan.order:
            if cand.model in failed_models or self._skip_small(cand, floor):
                continue
            try:
                out = await self.run_candidate(cand, messages, plan.task, req)
            except Exception as exc:  # noqa: BLE001 - a failed candidate: see failure_kind
                kind = self._failed(cand, exc, failures)
                failed_models.add(cand.model)
                last_exc = exc
                if kind == "client":
                    raise self._refused(failures, exc) from None
                if kind == "context":
                    floor = max(floor or 0, self.models[cand.model].context)
                if plan.decision is None:  # bypass: the client named this model, there is nothing to fall back to
                    break
                continue
            self.mark_ok(cand.model)
            return out, failures
        if failures and all(f["kind"] == "context" for f in failures):
            raise self._refused(failures, last_exc) from None
        raise AllCandidatesFailed(failures)

    async def start_stream(self, plan: Plan, messages: list[dict], req: ChatRequest
                           ) -> tuple[Optional["StreamStart"], Optional[Outcome], list[dict]]:
        """For a streaming request: try the plan's candidates in order. A passthrough candidate (default/direct
        strategy, or a bypass) answers with its backend stream once the first chunk arrived: (StreamStart, None,
        failures). Any other strategy is executed whole (its answer needs post-processing): (None, Outcome,
        failures). AllCandidatesFailed when nothing answered."""
        failures: list[dict] = []
        failed: set[str] = set()
        floor: Optional[int] = None
        last_exc: Optional[BaseException] = None
        for cand in plan.order:
            if cand.model in failed or self._skip_small(cand, floor):
                continue
            it = None
            try:
                if cand.strategy not in PASSTHROUGH:
                    out = await self.run_candidate(cand, messages, plan.task, req)
                    self.mark_ok(cand.model)
                    return None, out, failures
                client = self.clients[cand.model]
                if cand.strategy == DEFAULT:
                    msgs, kw = messages, self._plain_args(req)
                else:
                    from routecraft.strategies import get_strategy

                    strat = get_strategy(cand.strategy)
                    msgs = strategy_messages(strat, messages, plan.task, cand.budget)
                    max_t = strat.max_tokens(cand.budget)
                    if req.output_cap is not None:
                        max_t = req.output_cap if max_t is None else min(max_t, req.output_cap)
                    kw = dict(max_tokens=max_t, temperature=strat.temperature, stop=strat.stop("chat"))
                it = client.stream(msgs, **kw).__aiter__()
                t0 = time.perf_counter()
                first = await it.__anext__()
            except Exception as exc:  # noqa: BLE001 - a failed candidate: see failure_kind
                kind = self._failed(cand, exc, failures)
                failed.add(cand.model)
                last_exc = exc
                if it is not None:
                    await _aclose(it)
                if kind == "client":
                    raise self._refused(failures, exc) from None
                if kind == "context":
                    floor = max(floor or 0, self.models[cand.model].context)
                if plan.decision is None:
                    break
                continue
            return StreamStart(cand, it, first, t0), None, failures
        if failures and all(f["kind"] == "context" for f in failures):
            raise self._refused(failures, last_exc) from None
        raise AllCandidatesFailed(failures)

    # ================================================================ accounting
    def new_request_id(self) -> str:
        return "chatcmpl-" + uuid.uuid4().hex

    async def record(self, row: dict) -> None:
        # in the event loop on purpose: one WAL append and commit (no fsync with synchronous=NORMAL) costs less than
        # handing it to a thread, most of all on a busy CPU
        if self.ledger.remote:  # a network round trip (and maybe a reconnect): not on the event loop
            await asyncio.to_thread(self.ledger.record, row)
        else:
            self.ledger.record(row)

    def record_soon(self, row: dict) -> None:
        """Record without awaiting (a stream's end, also while it is being cancelled): SQLite at once; a remote
        ledger in a thread, awaited by ``close()`` so no row is lost at shutdown."""
        if not self.ledger.remote:
            self.ledger.record(row)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (garbage collection after shutdown): write it here
            self.ledger.record(row)
            return
        fut = loop.run_in_executor(None, self.ledger.record, row)
        self._pending_records.add(fut)
        fut.add_done_callback(self._record_done)

    def _record_done(self, fut) -> None:
        self._pending_records.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.error("could not write a ledger row: %s", fut.exception())
            self.metrics.ledger_errors.inc()

    def health(self, details: bool = True) -> tuple[int, dict]:
        """(HTTP status, body) of GET /health: "ok" (200) when every served model has a working backend, "degraded"
        (503) when some have none, "down" (503) when none has. ``details`` (for key holders only) adds the
        backends' URLs, processes, errors and the gateway's load; without it only the states are shown."""
        down = [n for n in self.models if self.backends[n].state == DOWN]
        status = "ok" if not down else ("down" if len(down) == len(self.models) else "degraded")
        body: dict[str, Any] = {"status": status,
                                "models": {n: (self.backends[n].private_view() if details else
                                               self.backends[n].public()) for n in self.models}}
        if details:
            body.update({
                "uptime_s": round(time.time() - self.t0, 1),
                "routers": {n: {"type": e.kind, "candidates": len(e.candidates), "skipped": len(e.skipped)}
                            for n, e in self.routers.items()},
                "inflight": self.inflight,
                "queued": self.waiting,
                "auth": "open" if self.keys.open else "keys",
                "sandbox": self.sandbox_isolation,
            })
        return (200 if status == "ok" else 503), body


@dataclass
class StreamStart:
    """A backend stream that has produced its first chunk."""

    candidate: Candidate
    it: Any
    first: Any
    t0: float

    async def chunks(self) -> AsyncIterator[Any]:
        yield self.first
        async for ch in self.it:
            yield ch

    async def aclose(self) -> None:
        await _aclose(self.it)


def _ex_details(ex: Any) -> dict:
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


def describe_failure(exc: BaseException) -> str:
    from routecraft.pool.client import BackendError

    if isinstance(exc, BackendError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"[:500]


async def _aclose(it: Any) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # noqa: BLE001
            pass
