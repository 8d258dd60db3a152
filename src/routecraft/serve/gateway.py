"""The gateway engine: resolves the requested model, routes a conversation, executes the decision on the pool with
fallback (or runs its plan of consultations), answers, bills, and keeps the per-model health, stickiness, keys,
ledger and metrics.

The HTTP layer is ``routecraft.serve.app``; this module has no FastAPI in it. Construction stores settings only;
``await Gateway.start()`` loads the pool, the routers (and their encoders), opens the ledger and the clients.

The request path, once per chat request (``chat``): the app authenticates the key (``admit_key``: throttling, key,
rate) and reads the body; the gateway validates it and resolves the model (``parse``), checks the key's budget, takes
an execution slot (``async with self.slots.slot()``), decides (``route``: every router is asked the same way,
``decide_one``; the candidates the pool cannot run for this request are dropped from the decision's table), executes
(``execute`` or ``start_stream``) and answers (a ``Reply`` the app sends), writing the ledger row, the metrics and the
key's charge (``routecraft.serve.session``).

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

Plans of consultations: a decision of an observing router (``cascade``, ``sequential``) carries a plan instead of one
candidate to run; it is executed by ``routecraft.serve.consult`` in place of the fallback loop (a failing backend is an
observation there, never a lost request). The answer is the accepted one, every consultation is billed, and the
response lists them (``routecraft.consultations``, ``-escalated``, ``-answered_by``; header
``x-routecraft-consultations``); a stream sends the answer as one content chunk once decided.

Backends are watched by ``routecraft.serve.backends.Supervisor`` (probes, restarts of private servers, pool-state
changes); admission (execution slots, queue bound) and failed-authentication throttling are
``routecraft.serve.admission``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import numpy as np

from routecraft.data.features import load_encoder
from routecraft.data.schema import DEFAULT, Candidate
from routecraft.pool.client import ChatClient
from routecraft.pool.config import Pool, PoolConfigError, load_pool
from routecraft.routers.base import Decision, MultiStepRouter, Router
from routecraft.routers.consult import chat_outcome, plain_outcome, run_outcome
from routecraft.routers.heuristic import query_kind
from routecraft.routers.registry import load_router, make_router
from routecraft.serve.admission import AuthThrottle, Held, Slots
from routecraft.serve.auth import KeyStore
from routecraft.serve.backends import DOWN, UP, Backend, Supervisor
from routecraft.serve.config import (
    BUILTIN,
    HEURISTIC,
    PREFIX,
    ServeConfig,
    ServeConfigError,
    builtin_router,
    env_keys,
)
from routecraft.serve.consult import execute_plan, is_consult_plan
from routecraft.serve.conversation import (
    ChatRequest,
    RequestError,
    check_conversation,
    conversation_chars,
    conversation_tokens,
    parse_chat,
    routing_text,
)
from routecraft.serve.ledger import LedgerError, open_ledger
from routecraft.serve.metrics import Metrics
from routecraft.serve.outcomes import (
    AllCandidatesFailed,
    CandidateRefused,
    Outcome,
    Plan,
    RouterEntry,
    Target,
    describe_failure,
    ex_details,
    failure_kind,
    refusal,
)
from routecraft.serve.session import Reply, Session, StreamGuard, consultations_of
from routecraft.strategies import COMPARABLE_KINDS, SelfConsistency, get_strategy, strategy_applies, task_kind
from routecraft.strategies.conversation import plain_call, single_question, strategy_messages
from routecraft.strategies.sandbox import allow_weak_isolation, strong_isolation_available

log = logging.getLogger("routecraft.serve")

#: strategies whose stream is passed through from the backend (no post-processing of the text is needed to show it)
PASSTHROUGH = {DEFAULT, "direct"}


__all__ = ["AllCandidatesFailed", "CandidateRefused", "Gateway", "Outcome", "Plan", "RouterEntry", "StreamStart",
           "Target", "describe_failure", "failure_kind"]


def _num(x: Any) -> Optional[float]:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def default_served_models(pool) -> list:
    """The models a gateway serves when its config names none (``models: null``): the pool's instruct models, in
    pool order. A base model (``instruct: false``) does not follow chat requests; it is served only when listed."""
    return [m for m in pool.models if m.instruct]


class Gateway:
    """The serving engine. ``endpoints`` maps served model names to base_urls (local models: their server's)."""

    def __init__(self, config: ServeConfig, *, base_dir: Optional[Path] = None,
                 endpoints: Optional[dict[str, str]] = None, environ: Optional[dict] = None,
                 builtin_dir: Optional[Path] = None) -> None:
        self.config = config
        self.base_dir = base_dir
        self.builtin_dir = builtin_dir  # where the shipped learned router is looked for (None: inside the package)
        self._endpoints = dict(endpoints or {})
        # a pool_endpoints() result also says which of them are private servers (restarted when they die) and which
        # come from `routecraft pool up` (followed in the pool state file)
        self._endpoint_servers = dict(getattr(endpoints, "servers", {}) or {})
        self._endpoint_sources = dict(getattr(endpoints, "sources", {}) or {})
        self._environ = environ
        self.started = False

    # ================================================================ lifecycle
    async def start(self) -> "Gateway":
        cfg = self.config
        self.preflight(self._environ)
        self.t0 = time.time()
        self.metrics = Metrics()
        self.pool = self.load_served_pool()
        self.models = self.served_models()
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
        self._embed_lock = threading.Lock()  # inline (event loop) and threaded routers share the memo
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
        ok, why = self._require_strict_sandbox(pal, "routers offer")
        if ok:
            log.warning("PAL sandbox: strict isolation in force (%s)", why)
            return "strict"
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
        if heuristic_pal and {HEURISTIC, BUILTIN} & set(cfg.routers.values()):  # start() refuses the same
            self._require_strict_sandbox(heuristic_pal, "the heuristic router offers")

    def _require_strict_sandbox(self, pal: list[str], offered: str) -> tuple[bool, str]:
        """(strict sandbox available, why); ServeConfigError when it is not and ``sandbox.allow_weak`` is not set."""
        ok, why = strong_isolation_available()
        if not ok and not self.config.sandbox.allow_weak:
            raise ServeConfigError(f"{offered} program-aided strategies ({', '.join(pal)}) but the strong PAL "
                                   f"sandbox is unavailable here ({why}); set sandbox.allow_weak: true to run "
                                   f"model-written programs with the weaker audit-hook isolation (it does not "
                                   f"stop them reading files), or serve no router that offers them")
        return ok, why

    def load_served_pool(self):
        """The pool the config names (a file, a built-in name or an inline mapping), its errors as config errors."""
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

    def served_models(self) -> dict:
        """{name: PoolModel} of the models this gateway serves (config `models`, else every instruct model)."""
        names = self.config.models
        if names is None:
            chosen = default_served_models(self.pool)
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
        loaded: dict[str, RouterEntry] = {}
        by_spec: dict[str, RouterEntry] = {}
        specs = dict(self.config.routers)
        specs.setdefault(HEURISTIC, HEURISTIC)
        builtin_failed: set[str] = set()
        shipped_names: list[str] = []  # routes served by the shipped learned default
        for name, spec in specs.items():
            shipped = spec == BUILTIN
            if shipped:
                spec = self._builtin_spec(name)
                if spec in builtin_failed:
                    spec = HEURISTIC
                elif spec != HEURISTIC and spec not in by_spec:
                    try:
                        by_spec[spec] = self._load_entry(name, spec)
                    except Exception as exc:  # noqa: BLE001 - not asked for by name: the heuristic serves instead
                        log.warning("router %s: the shipped learned router cannot serve here (%s); the heuristic "
                                    "serves instead", name, exc)
                        builtin_failed.add(spec)
                        spec = HEURISTIC
            if shipped and spec != HEURISTIC:
                shipped_names.append(name)
            if spec in by_spec:
                e = by_spec[spec]
                loaded[name] = RouterEntry(name, spec, e.router, e.candidates, e.skipped, e.encoder, e.inline)
                continue
            e = self._load_entry(name, spec)
            by_spec[spec] = e
            loaded[name] = e
        # the shipped learned default was trained on cells that all prompt for an answer format (a short answer, a
        # letter, a number, a program): an open request — no task named, none detected — would be told to give "a
        # short answer", so the heuristic's plain call routes those, unless the router can make a plain call itself
        plain = next((n for n, e in loaded.items() if e.spec == HEURISTIC), None)  # "heuristic" unless overridden
        for name in shipped_names:
            e = loaded[name]
            if not any(c.strategy == DEFAULT for c in e.candidates):
                e.open_requests = plain
                if plain is None:
                    log.warning("router %s: no route serves the heuristic, so open requests (no task named, none "
                                "detected) are routed by the shipped router, which prompts for a short answer", name)
                elif DEFAULT not in self.config.heuristic.strategies:
                    log.warning("router %s: open requests go to the heuristic, whose strategies %s have no plain "
                                "call (default)", name, list(self.config.heuristic.strategies))
        return loaded

    def _load_entry(self, name: str, spec: str) -> RouterEntry:
        """Load router ``spec`` (the heuristic or an artifact folder) for route ``name``, warm its encoder and time
        its decisions; a ServeConfigError says what is wrong."""
        if spec == HEURISTIC:  # the built-in rule router, built from the served pool models
            r: Router = make_router(HEURISTIC, strategies=self.config.heuristic.strategies).fit_pool(
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
            try:
                self._embed(encoder, "warm-up")
            except Exception as exc:  # noqa: BLE001 - a missing extra, a missing or corrupt model folder
                raise ServeConfigError(f"router {name!r} ({spec}): its query encoder {encoder!r} cannot load: "
                                       f"{exc}") from None
        if skipped:
            log.warning("router %s: %d candidate(s) skipped (model not served): %s", name, len(skipped),
                        ", ".join(skipped[:8]))
        e = RouterEntry(name, spec, r, cands, skipped, encoder)
        e.inline = r.light or self._fast_decider(e)
        return e

    def _builtin_spec(self, name: str) -> str:
        """What ``builtin`` stands for here: the shipped learned router's folder when it was selected and all of its
        candidates' models are served, else the heuristic (the log line says which, and why)."""
        path, why = builtin_router(self.builtin_dir)
        if path is not None:
            try:
                models = {Candidate.parse(c).model for c in json.loads((path / "router.json").read_text())
                          ["candidates"]}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                path, why = None, f"its artifact is unreadable ({exc})"
            else:
                missing = sorted(models - set(self.models))
                if missing:
                    path, why = None, f"its models {', '.join(missing)} are not all served here"
        # at warning level, as the other start-up lines: the default log level shows what routecraft/auto is, and why
        log.warning("router %s: %s (%s)", name, "the shipped learned router" if path else "the heuristic", why)
        return str(path) if path is not None else HEURISTIC

    #: a router whose decision (encode + decide) measured at most this at start-up decides on the event loop: a
    #: thread hop and the GIL hand-over cost more than such a decision, and under load the hop's queue dominates
    INLINE_DECISION_MS = 2.0

    def _fast_decider(self, e: RouterEntry, n: int = 24) -> bool:
        """Time ``n`` fresh decisions (new texts: embedding included) at start-up; inline when the p90 is within
        ``INLINE_DECISION_MS``. Multi-step routers are never timed (a decision of theirs runs on the pool). A failing
        trial decision leaves the router on the routing thread (logged); the request path reports its errors."""
        if isinstance(e.router, MultiStepRouter):
            return False
        times = []
        upfront = getattr(e.router, "upfront_decision", None)  # an observing router's open-chat path
        for i in range(n):
            # short and long texts (a long conversation's routing text costs more to encode)
            text = f"warm-up question {i}: what is {i} plus {2 * i + 1}?" + (" and then" * 200 if i % 3 == 2 else "")
            t0 = time.perf_counter()
            try:
                X = self._embed(e.encoder, text) if e.encoder else None
                e.router.decide_one(text, X, lam=0.0, task="numeric", input_chars=len(text), max_tokens=None)
                if upfront is not None and i % 2:
                    upfront(text, X, lam=0.0, task="qa", input_chars=len(text), max_tokens=None)
            except Exception as exc:  # noqa: BLE001 - see the docstring
                log.warning("router %s: a start-up trial decision failed (%s: %s); it decides on the routing "
                            "thread", e.name, type(exc).__name__, exc)
                return False
            times.append((time.perf_counter() - t0) * 1e3)
            with self._embed_lock:
                self._embed_cache.pop((e.encoder, text), None)
        times.sort()
        p90 = times[int(0.9 * (len(times) - 1))]
        log.info("router %s: decision p90 %.2f ms at start-up: %s", e.name, p90,
                 "decides inline" if p90 <= self.INLINE_DECISION_MS else "decides on the routing thread")
        return p90 <= self.INLINE_DECISION_MS

    # ================================================================ the request path
    def admit_key(self, header: Optional[str], addr: Optional[str], rate: bool = True) -> str:
        """The key named by an ``Authorization`` header, or RequestError 401/429. Failed attempts count against the
        client's address ``addr``; ``rate``: the key's request rate is checked too (before its body is read)."""
        self.auth_throttle.check(addr)
        try:
            key = self.keys.authenticate(header)
        except RequestError:
            if header:  # a guess (no header at all is not one)
                self.auth_throttle.failed(addr)
            raise
        if rate:
            self.keys.check_rate(key)
        return key

    def parse(self, data: dict) -> tuple[ChatRequest, Target, list[dict]]:
        """A chat body, checked: (the request, what its model names, its messages), or RequestError."""
        req = parse_chat(data)
        target = self.resolve(req.model)
        messages = req.plain_messages()
        check_conversation(messages, self.config.limits.max_messages)
        cap = req.output_cap
        if cap is not None and cap > self.config.limits.max_output_tokens:
            raise RequestError(400, f"max_tokens {cap} is over this gateway's limit of "
                               f"{self.config.limits.max_output_tokens}", param="max_tokens")
        return req, target, messages

    def reject(self, exc: RequestError) -> Reply:
        """The error reply of a refused request (counted)."""
        self.metrics.rejected.labels(str(exc.status), exc.code or exc.type).inc()
        return Reply.error(exc)

    async def decide_only(self, key: str, data: dict) -> Reply:
        """``POST /v1/routecraft/route``: the decision alone (nothing executed or billed)."""
        try:
            req, target, messages = self.parse(data)
            plan = await self.route(target, req, messages, key)
        except RequestError as exc:
            return self.reject(exc)
        d = plan.decision
        return Reply(200, {"decision": d.to_dict() if d is not None else None, "order": [c.id for c in plan.order],
                           "task": plan.task, "router": plan.router.name if plan.router is not None else None,
                           "lam": plan.lam, "max_cost": plan.max_cost,
                           "decision_ms": plan.decision_ms, "sticky": plan.sticky, "skipped": plan.skipped},
                     encode=True)

    async def chat(self, key: str, data: dict, client_id: Optional[str], t_start: float) -> Reply:
        """``POST /v1/chat/completions`` once the key is known and the body read: check the request and the key's
        budget, take an execution slot, decide, execute (with fallback, or a plan of consultations), answer (JSON or
        a stream), write the ledger row, count, charge."""
        try:
            req, target, messages = self.parse(data)
            self.keys.check_budget(key)
            async with self.slots.slot() as slot:
                s = Session(self, key, req, target, client_id, t_start)
                s.plan = await self.route(target, req, messages, key)
                if req.stream:
                    return await self._stream(s, messages, slot)
                return await self._complete(s, messages, slot)
        except RequestError as exc:
            return self.reject(exc)

    async def _complete(self, s: Session, messages: list[dict], slot: Held) -> Reply:
        try:
            out, failures = await self.execute(s.plan, messages, s.req)
        except AllCandidatesFailed as exc:
            return await self._failed_reply(s, exc)
        except CandidateRefused as exc:
            return await self._refused_reply(s, exc)
        finally:
            slot.release()
        self.remember(s.key, s.req, out.candidate)
        body = s.completion(out, failures)
        try:
            await self.record(s.outcome_row(out, "ok", 200, failures))
        except Exception:  # noqa: BLE001 - the answer exists and is paid for: log, count, and still deliver it
            log.exception("could not write the ledger row of %s", s.rid)
            self.metrics.ledger_errors.inc()
        s.account(out.candidate, "ok", 200, out.input_tokens, out.output_tokens, out.cost_usd,
                  time.perf_counter() - s.t_start, out=out)
        return Reply(200, body, s.completion_headers(out, failures))

    async def _refused_reply(self, s: Session, exc: CandidateRefused) -> Reply:
        """The backends refused the request itself: recorded (it reached a backend), answered 400, no model blamed."""
        first = s.plan.order[0] if s.plan and s.plan.order else None
        await self.record(s.ledger_row(first, "refused", 400, failures=exc.failures, error=exc.message[:2000],
                                       attempts=len(exc.failures)))
        s.account(first, "refused", 400, 0, 0, 0.0)
        self.metrics.rejected.labels("400", exc.code or exc.type).inc()
        body = exc.body()
        body["error"]["request_id"] = s.rid
        return Reply(400, body, {**exc.headers, "x-routecraft-request-id": s.rid})

    async def _failed_reply(self, s: Session, exc: AllCandidatesFailed) -> Reply:
        first = s.plan.order[0] if s.plan and s.plan.order else None
        await self.record(s.ledger_row(first, "failed", 502, failures=exc.failures, error=str(exc)[:2000],
                                       attempts=len(exc.failures)))
        s.account(first, "failed", 502, 0, 0, 0.0)
        return Reply(502, {"error": {"message": str(exc), "type": "backend_error", "param": None,
                                     "code": "all_backends_failed", "failures": exc.failures, "request_id": s.rid}},
                     {"x-routecraft-request-id": s.rid})

    async def _stream(self, s: Session, messages: list[dict], slot: Held) -> Reply:
        """A stream: its headers once a candidate answered (or a whole answer was executed); the slot passes to the
        stream, which frees it, records, counts and charges when it ends (``StreamGuard``)."""
        try:
            start, whole, failures = await self.start_stream(s.plan, messages, s.req)
        except AllCandidatesFailed as exc:
            slot.release()
            return await self._failed_reply(s, exc)
        except CandidateRefused as exc:
            slot.release()
            return await self._refused_reply(s, exc)
        cand = start.candidate if start is not None else whole.candidate
        headers = s.headers(cand, None, failures, consultations=consultations_of(whole))
        headers["cache-control"] = "no-cache"
        guard = StreamGuard(s, cand, failures, slot.hand_over().release, self.models[cand.model], whole)
        if whole is not None:  # executed and paid for already: billed even if the client never reads a byte
            guard.set_usage(whole.input_tokens, whole.output_tokens, whole.cost_usd)
            guard.backend_s = whole.backend_s
        else:  # billed for what is delivered until the backend's usage arrives
            guard.prompt_tokens = conversation_tokens(messages)
        gen = self._events(s, guard, cand, start, whole, failures)
        weakref.finalize(gen, guard.finish, "cancelled", 499, "client gone before the stream started")
        return Reply(200, headers=headers, stream=gen)

    async def _events(self, s: Session, guard: StreamGuard, cand: Candidate, start: Optional["StreamStart"],
                      whole: Optional[Outcome], failures: list[dict]) -> AsyncIterator[str]:
        """The server-sent events of a stream: the backend's chunks passed through (or a whole answer as one content
        chunk), the last chunk with the ``routecraft`` info, the usage chunk when asked for, ``[DONE]``."""
        status, http, err = "ok", 200, None
        include_usage = bool(s.req.stream_options and s.req.stream_options.include_usage)
        try:
            yield s.chunk(cand.model, {"role": "assistant", "content": ""})
            if whole is not None:
                if s.show_reasoning:
                    yield s.chunk(cand.model, {"reasoning_content": whole.text})
                yield s.chunk(cand.model, {"content": whole.content})
                tin, tout, _ = guard.usage()
                info = s.info(cand, whole, failures, whole.backend_s)
                finish = whole.finish_reason or "stop"
            else:
                parts: list[str] = []
                finish, result = None, None
                async for ch in start.chunks():
                    guard.backend_s = time.perf_counter() - start.t0
                    if ch.done:
                        result = ch.result
                        finish = ch.finish_reason or finish
                        break
                    if ch.finish_reason:
                        finish = ch.finish_reason
                    if ch.text:
                        parts.append(ch.text)
                        guard.delivered += 1  # counted as it is handed out: what may have reached the client
                        yield s.chunk(cand.model, {"content": ch.text})
                backend_s = guard.backend_s = time.perf_counter() - start.t0
                if result is not None and not result.tokens_estimated:
                    guard.set_usage(int(result.input_tokens or 0), int(result.output_tokens or 0),
                                    float(result.cost_usd or 0.0))
                tin, tout, cost = guard.usage()
                out = self.streamed_outcome(cand, "".join(parts), tin, tout, cost, finish, s.plan.task, backend_s)
                info = s.info(cand, out, failures, backend_s)
                self.mark_ok(cand.model)
            self.remember(s.key, s.req, cand)
            yield s.chunk(cand.model, {}, finish or "stop", routecraft=info)
            if include_usage:
                yield s.usage_chunk(cand.model, tin, tout, info)
            yield "data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            status, http, err = "cancelled", 499, "client disconnected"
            raise
        except Exception as exc:  # noqa: BLE001 - the backend broke mid-stream: tell the client in-band
            status, http, err = "failed", 502, describe_failure(exc)
            if failure_kind(exc) == "backend":
                self.mark_failed(cand.model, err)
            event = {"error": {"message": f"backend failed mid-stream: {err}", "type": "backend_error",
                               "param": None, "code": "backend_failed_mid_stream"}}
            yield f"data: {json.dumps(event)}\n\n"
        finally:
            if status != "ok":
                err = f"{err} (after {guard.delivered} content chunks delivered)"
            guard.finish(status, http, err)
            if start is not None:
                await _safe_close(start)

    def streamed_outcome(self, cand: Candidate, text: str, tin: int, tout: int, cost: float,
                         finish: Optional[str], task: str, backend_s: float) -> Outcome:
        """What a passed-through stream produced: its text, and (``direct``) the strategy's answer extracted."""
        answer = method = None
        if cand.strategy != DEFAULT:
            ex = get_strategy(cand.strategy).extract(text, task)
            answer, method = ex.answer, ex.method
        return Outcome(cand, text, answer, method or "plain", tin, tout, cost, finish, backend_s)

    # ================================================================ model names
    def offered(self) -> list[dict]:
        """The entries of GET /v1/models."""
        out = []
        created = int(self.t0)
        for name, e in self.routers.items():
            for tname, t in ([(None, self.config.tradeoffs[self.config.default_tradeoff])]
                             + list(self.config.tradeoffs.items())):
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
        with self._embed_lock:
            hit = self._embed_cache.get(key)
            if hit is not None:
                self._embed_cache.move_to_end(key)
                return hit
        v = load_encoder(encoder).encode([text], convert_to_numpy=True, normalize_embeddings=True)
        v = np.asarray(v, dtype=np.float32)
        with self._embed_lock:
            self._embed_cache[key] = v
            if len(self._embed_cache) > 4096:
                self._embed_cache.popitem(last=False)
        return v

    def task_for(self, req: ChatRequest, rtext: str) -> str:
        task = req.option("task")
        if task is None and self.config.task != "auto":
            task = self.config.task
        if task is not None:
            try:
                task_kind(task)
            except ValueError as exc:
                raise RequestError(400, str(exc), param="task") from None
            return task
        return query_kind(rtext)

    def consultable(self, req: ChatRequest, task: str) -> bool:
        """Whether consulted candidates' answers can be compared for this request: the client (or the config) named
        the task, or the text was recognised as one with a comparable answer (a number, a formula, an option
        letter). Anything else is open chat: free text never agrees, so a plan of consultations would only pay for
        the consultations and then the strong model."""
        if req.option("task") is not None or self.config.task != "auto":
            return True
        return task_kind(task) in COMPARABLE_KINDS

    def _decide(self, entry: RouterEntry, rtext: str, task: str, chars: int, cap: Optional[int], lam: float,
                max_cost: Optional[float], tokens: Optional[int] = None, consult: bool = True
                ) -> tuple[Decision, list[dict], Optional[np.ndarray]]:
        """The router's decision restricted to candidates the pool can run for this request (``tokens``: the
        conversation's estimated length, default chars/4), what was dropped, and the query's feature row. A plan of
        consultations for a request that is not ``consult``-able (open chat) is replaced by the router's up-front
        decision, whose ``plan`` says so (kind "upfront")."""
        tokens = int(chars / 4) if tokens is None else tokens
        X = self._embed(entry.encoder, rtext) if entry.encoder else None
        d = entry.router.decide_one(rtext, X, lam=lam, max_cost=max_cost, task=task, input_chars=chars,
                                    max_tokens=cap)
        if not consult and is_consult_plan(d.plan):
            kind = d.plan["kind"]
            d = entry.router.upfront_decision(rtext, X, lam=lam, max_cost=max_cost, task=task, input_chars=chars,
                                              max_tokens=cap)
            d.plan = {"kind": "upfront", "instead_of": kind, "how": (
                f"open chat (task {task!r} detected, no comparable answer): the {kind} plan was not run; the "
                f"router's up-front decision answered (its candidates, in order, as for any decision)")}
        pred = d.as_prediction()
        dropped: list[dict] = []
        keep: list[int] = []
        need_in = tokens + 64
        for j, c in enumerate(pred.candidates):
            m = self.models.get(c.model)
            if m is None:
                continue
            if not strategy_applies(c.strategy, task):  # e.g. PAL on a chat or code request: never sent
                dropped.append({"candidate": c.id, "reason": f"strategy {c.strategy!r} does not apply to task "
                                                              f"{task!r}"})
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
        return d.restricted(keep, lam, max_cost), dropped, X

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
        if entry.open_requests and task == "qa" and req.option("task") is None and self.config.task == "auto":
            entry = self.routers[entry.open_requests]  # an open request: see _load_routers
        consult = self.consultable(req, task)
        if entry.inline:  # a fast decision (measured at start-up): not worth a thread hop
            decision, dropped, X = self._decide(entry, rtext, task, chars, cap, lam, max_cost, tokens, consult)
        else:
            decision, dropped, X = await asyncio.get_running_loop().run_in_executor(
                self._route_pool, self._decide, entry, rtext, task, chars, cap, lam, max_cost, tokens, consult)
        order = decision.order()
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
        plan = Plan(order, decision, task, lam, max_cost, decision_ms, sticky, dropped, entry.router, X)
        self._apply_health(plan)
        m = self.metrics
        route = target.router.name  # the route asked for, as in the request log (entry: the router that decided)
        m.decision_latency.labels(route).observe(decision_ms / 1e3)
        c = decision.candidate
        m.decisions.labels(route, c.model, c.strategy, str(c.budget)).inc()
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

    def serves(self, model: str) -> bool:
        """Whether this gateway has a backend for ``model`` (the consultation executor's question)."""
        return model in self.clients

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

    def plain_call(self, cand: Candidate, messages: list[dict], task: str, req: ChatRequest) -> tuple[list[dict], dict]:
        """The messages and arguments of a plain call (strategy ``default``): the conversation unchanged, the
        client's sampling. A budgeted plain call (``m|default|32``, a router trained on budgeted plain-call cells)
        also gets the length instruction and the hard cap (budget + slack), as the cells were collected."""
        kw = self._plain_args(req)
        msgs, kw["max_tokens"] = plain_call(messages, task, cand.budget, kw["max_tokens"])
        return msgs, kw

    async def run_candidate(self, cand: Candidate, messages: list[dict], task: str, req: ChatRequest,
                            logprobs: bool = False) -> Outcome:
        """Execute one candidate (no fallback). ``logprobs``: ask for token log-probabilities (a sequential plan's
        policy reads their mean and minimum) where the call is a single one."""
        client = self.clients[cand.model]
        t0 = time.perf_counter()
        lp = {"logprobs": True} if logprobs else {}
        if cand.strategy == DEFAULT:
            msgs, kw = self.plain_call(cand, messages, task, req)
            return plain_outcome(cand, await client.chat(msgs, **kw, **lp), t0)
        strat = get_strategy(cand.strategy)
        cap = req.output_cap
        q = single_question(messages)
        if q is not None and cap is None:
            run = await strat.run(client, q, task, cand.budget, **lp)
            return self._outcome(cand, run, t0)
        return await self._run_wrapped(cand, strat, client, messages, task, cap, t0, lp)

    async def _run_wrapped(self, cand, strat, client, messages, task, cap, t0, lp: Optional[dict] = None) -> Outcome:
        msgs = strategy_messages(strat, messages, task, cand.budget)
        max_t = strat.max_tokens(cand.budget, task)
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
        r = await client.chat(msgs, max_tokens=max_t, temperature=strat.temperature, stop=strat.stop("chat"),
                              **(lp or {}))
        ex = await asyncio.to_thread(strat.extract, r.text or "", task)
        return chat_outcome(cand, r, t0, ex, ex_details(ex))

    def _outcome(self, cand: Candidate, run: Any, t0: float) -> Outcome:
        details = ex_details(run.extraction)
        if run.samples:
            details["samples"] = [s.text for s in run.samples]
        return run_outcome(cand, run, t0, details)

    async def execute(self, plan: Plan, messages: list[dict], req: ChatRequest) -> tuple[Outcome, list[dict]]:
        """Run the plan's candidates in order until one answers; (outcome, failures before it). A plan of
        consultations runs instead (``routecraft.serve.consult``): (its outcome, the failed consultations)."""
        d = plan.decision
        if d is not None and is_consult_plan(d.plan):
            return await execute_plan(self, plan.router, d.plan, messages, plan.task, req, plan.features)
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
                    raise refusal(failures, exc) from None
                if kind == "context":
                    floor = max(floor or 0, self.models[cand.model].context)
                if plan.decision is None:  # bypass: the client named this model, there is nothing to fall back to
                    break
                continue
            self.mark_ok(cand.model)
            return out, failures
        if failures and all(f["kind"] == "context" for f in failures):
            raise refusal(failures, last_exc) from None
        raise AllCandidatesFailed(failures)

    async def start_stream(self, plan: Plan, messages: list[dict], req: ChatRequest
                           ) -> tuple[Optional["StreamStart"], Optional[Outcome], list[dict]]:
        """For a streaming request: try the plan's candidates in order. A passthrough candidate (default/direct
        strategy, or a bypass) answers with its backend stream once the first chunk arrived: (StreamStart, None,
        failures). Any other strategy is executed whole (its answer needs post-processing): (None, Outcome,
        failures). AllCandidatesFailed when nothing answered. A plan of consultations is executed whole (its answer
        is decided only at the end)."""
        d = plan.decision
        if d is not None and is_consult_plan(d.plan):
            out, failures = await self.execute(plan, messages, req)
            return None, out, failures
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
                    msgs, kw = self.plain_call(cand, messages, plan.task, req)
                else:
                    strat = get_strategy(cand.strategy)
                    msgs = strategy_messages(strat, messages, plan.task, cand.budget)
                    max_t = strat.max_tokens(cand.budget, plan.task)
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
                    raise refusal(failures, exc) from None
                if kind == "context":
                    floor = max(floor or 0, self.models[cand.model].context)
                if plan.decision is None:
                    break
                continue
            return StreamStart(cand, it, first, t0), None, failures
        if failures and all(f["kind"] == "context" for f in failures):
            raise refusal(failures, last_exc) from None
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


async def _aclose(it: Any) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # noqa: BLE001
            pass


async def _safe_close(start: Any) -> None:
    try:
        await asyncio.shield(start.aclose())
    except BaseException:  # noqa: BLE001 - closing best effort, also during cancellation
        pass
