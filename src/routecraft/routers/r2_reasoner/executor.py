"""Executing R2-Reasoner plans on the pool, with every call cached on disk.

``ExecutionCache`` is a SQLite file (WAL; one row per distinct call, committed as soon as the call returns), keyed by
the SHA-256 of (pool model name, messages, max_tokens, temperature, seed, logprobs). A search or a training run that
is killed resumes from it without repeating any call: an execution is made once per key, ever. Greedy decoding
(``execution.temperature: 0``) makes a cached answer the answer the model would give again.

``Executor.run_plans`` runs (question, subtasks, allocation) plans concurrently (at most ``max_concurrency`` calls in
flight): subtasks in order, each seeing the earlier (sub-problem, answer) pairs, then the final-answer turn (DoT).
It counts real calls and cache hits; ``max_calls`` stops it (``CallBudgetExhausted``) before a call over the limit,
so an interrupted run leaves only complete calls in the cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from routecraft.pool.client import ChatClient
from routecraft.pool.config import Pool
from routecraft.pool.server import base_url_for
from routecraft.routers.r2_reasoner.protocol import Ladder, final_messages, subtask_messages
from routecraft.routers.router_r1.backends import run_sync
from routecraft.strategies.answers import extract_answer
from routecraft.strategies.graders import grade


class CallBudgetExhausted(RuntimeError):
    """The run reached its budget of real (uncached) calls; everything done so far is cached, so rerunning resumes."""


# ---------------------------------------------------------------------------------------------------- cache

def call_key(model: str, messages: Sequence[dict], max_tokens: int, temperature: float, seed: Optional[int],
             logprobs: bool) -> str:
    blob = json.dumps({"model": model, "messages": list(messages), "max_tokens": int(max_tokens),
                       "temperature": float(temperature), "seed": seed, "logprobs": bool(logprobs)},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class ExecutionCache:
    """Calls already made, on disk. Safe across threads of one process and across processes (SQLite locking)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: Optional[sqlite3.Connection] = None
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("""CREATE TABLE IF NOT EXISTS calls (
                key TEXT PRIMARY KEY, model TEXT NOT NULL, messages TEXT NOT NULL, text TEXT NOT NULL,
                input_tokens INTEGER, output_tokens INTEGER, cost_usd REAL, logprobs TEXT, latency_s REAL,
                created REAL)""")
            self._conn = conn
        return self._conn

    def get(self, key: str) -> Optional[dict]:
        with self._lock:
            row = self._db().execute("SELECT model, text, input_tokens, output_tokens, cost_usd, logprobs, latency_s "
                                     "FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return {"model": row[0], "text": row[1], "input_tokens": row[2], "output_tokens": row[3],
                "cost_usd": row[4], "logprobs": json.loads(row[5]) if row[5] else None, "latency_s": row[6]}

    def put(self, key: str, model: str, messages: Sequence[dict], rec: dict) -> None:
        with self._lock:
            self._db().execute(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, model, json.dumps(list(messages), ensure_ascii=False), rec["text"], rec["input_tokens"],
                 rec["output_tokens"], rec["cost_usd"], json.dumps(rec["logprobs"]) if rec.get("logprobs") else None,
                 rec["latency_s"], time.time()))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db().execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def keys(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db().execute("SELECT key FROM calls")}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# ---------------------------------------------------------------------------------------------------- results

@dataclass
class CallRecord:
    model: str
    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    cached: bool
    key: str
    logprobs: Optional[list[float]] = None

    def confidence(self, alpha: float = 0.4) -> Optional[float]:
        """DoT's confidence: the α-quantile of the answer's token probabilities (sorted ascending, index ⌊α·n⌋)."""
        if not self.logprobs:
            return None
        probs = sorted(math.exp(x) for x in self.logprobs)
        return probs[min(int(alpha * len(probs)), len(probs) - 1)]


@dataclass
class PlanResult:
    question: str
    steps: list[str]
    allocation: list[int]
    models: list[str]
    answers: list[str]
    final_text: str
    final_model: str
    answer: Optional[str]
    correct: Optional[bool]
    calls: list[CallRecord] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        return float(sum(c.cost_usd for c in self.calls))

    @property
    def new_calls(self) -> int:
        return sum(not c.cached for c in self.calls)

    def cost_at(self, model) -> float:
        """What the same tokens would cost at one model's prices (the 'top_price' normaliser)."""
        return float(sum(model.cost(c.input_tokens, c.output_tokens) for c in self.calls))

    def summary(self) -> dict:
        return {"question": self.question, "subtasks": [
            {"index": i + 1, "subtask": s, "model": m, "rung": a, "answer": ans,
             "cost_usd": self.calls[i].cost_usd if i < len(self.calls) else None}
            for i, (s, m, a, ans) in enumerate(zip(self.steps, self.models, self.allocation, self.answers))],
            "final_model": self.final_model, "final_text": self.final_text, "answer": self.answer,
            "correct": self.correct, "cost_usd": self.cost_usd,
            "input_tokens": sum(c.input_tokens for c in self.calls),
            "output_tokens": sum(c.output_tokens for c in self.calls), "calls": len(self.calls),
            "cached_calls": sum(c.cached for c in self.calls)}


def grade_answer(text: str, gold: Any, task: str = "gsm8k") -> tuple[Optional[str], Optional[bool]]:
    ans, _ = extract_answer(text or "", task)
    if gold is None:
        return ans, None
    return ans, bool(grade(task, ans, gold) >= 1.0)


# ---------------------------------------------------------------------------------------------------- executor

class Executor:
    """Runs plans on the ladder's models (and decomposition prompts on any pool model), through the cache."""

    def __init__(self, pool: Pool, ladder: Ladder, base_urls: Optional[dict[str, str]], cache: ExecutionCache, *,
                 max_tokens: int = 500, final_max_tokens: int = 300, temperature: float = 0.0,
                 seed: Optional[int] = 42, final_answer: str = "last", logprobs: bool = True,
                 max_concurrency: int = 4, timeout: float = 300.0, max_retries: int = 2,
                 max_calls: Optional[int] = None, task: str = "gsm8k", subtask_prompt: str = "concise") -> None:
        if final_answer not in ("last", "strongest", "none"):
            raise ValueError(f"final_answer must be last, strongest or none, got {final_answer!r}")
        self.pool = pool
        self.ladder = ladder
        self.base_urls = dict(base_urls or {})
        self.cache = cache
        self.max_tokens = max_tokens
        self.final_max_tokens = final_max_tokens
        self.temperature = temperature
        self.seed = seed
        self.final_answer = final_answer
        self.logprobs = logprobs
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_calls = max_calls
        self.task = task
        self.subtask_prompt = subtask_prompt
        self.real_calls = 0
        self.cache_hits = 0
        self.call_seconds = 0.0
        self.executed_keys: list[str] = []  # keys of real calls made by this executor, in order
        self._budget_lock = threading.Lock()
        self._logprobs_ok: dict[str, bool] = {}

    @classmethod
    def from_config(cls, cfg: Any, pool: Pool, ladder: Ladder, base_urls: Optional[dict[str, str]],
                    cache: ExecutionCache, **kw: Any) -> "Executor":
        e = cfg.execution
        args = dict(max_tokens=e.max_tokens, final_max_tokens=e.final_max_tokens, temperature=e.temperature,
                    seed=e.seed, final_answer=e.final_answer, logprobs=e.logprobs,
                    max_concurrency=e.max_concurrency, timeout=e.timeout, max_retries=e.max_retries,
                    max_calls=cfg.search.max_calls, subtask_prompt=e.subtask_prompt)
        args.update(kw)
        return cls(pool, ladder, base_urls, cache, **args)

    def stats(self) -> dict:
        return {"real_calls": self.real_calls, "cache_hits": self.cache_hits,
                "call_seconds": round(self.call_seconds, 2),
                "seconds_per_call": round(self.call_seconds / self.real_calls, 3) if self.real_calls else None}

    # ---- one call -------------------------------------------------------------------------------------------------
    def _client(self, clients: dict, name: str):
        if name not in clients:
            m = self.pool.get(name)
            url = self.base_urls.get(name) or base_url_for(m)
            clients[name] = ChatClient(m, url, timeout=self.timeout, max_retries=self.max_retries)
        return clients[name]

    async def _call(self, clients: dict, sem: asyncio.Semaphore, model: str, messages: list[dict], max_tokens: int,
                    temperature: float, seed: Optional[int], logprobs: bool) -> CallRecord:
        key = call_key(model, messages, max_tokens, temperature, seed, logprobs)
        inflight = clients.setdefault("__inflight__", {})
        if key in inflight:  # the same call already running in this batch: wait for it, do not repeat it
            rec = await asyncio.shield(inflight[key])
            self.cache_hits += 1
            return CallRecord(**{**asdict(rec), "cached": True})
        fut = asyncio.get_running_loop().create_future()
        inflight[key] = fut
        try:
            rec = await self._call_once(clients, sem, key, model, messages, max_tokens, temperature, seed, logprobs)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        fut.set_result(rec)
        return rec

    async def _call_once(self, clients: dict, sem: asyncio.Semaphore, key: str, model: str, messages: list[dict],
                         max_tokens: int, temperature: float, seed: Optional[int], logprobs: bool) -> CallRecord:
        hit = self.cache.get(key)
        if hit is not None:
            self.cache_hits += 1
            return CallRecord(model, hit["text"], int(hit["input_tokens"] or 0), int(hit["output_tokens"] or 0),
                              float(hit["cost_usd"] or 0.0), float(hit["latency_s"] or 0.0), True, key,
                              hit["logprobs"])
        with self._budget_lock:
            if self.max_calls is not None and self.real_calls >= self.max_calls:
                raise CallBudgetExhausted(f"stopped after {self.real_calls} real calls (max_calls={self.max_calls});"
                                          f" rerun to resume from the cache {self.cache.path}")
            self.real_calls += 1
        async with sem:
            extra: dict = {}
            if logprobs and self._logprobs_ok.get(model, True):
                extra["logprobs"] = True
            res = await self._client(clients, model).chat(messages, max_tokens=max_tokens, temperature=temperature,
                                                          seed=seed, **extra)
        lps = res.logprobs if logprobs else None
        if logprobs and lps is None:
            self._logprobs_ok[model] = False
        rec = {"text": res.text, "input_tokens": int(res.input_tokens or 0),
               "output_tokens": int(res.output_tokens or 0), "cost_usd": float(res.cost_usd),
               "latency_s": float(res.latency_s), "logprobs": lps}
        self.cache.put(key, model, messages, rec)
        self.call_seconds += res.latency_s
        self.executed_keys.append(key)
        return CallRecord(model, rec["text"], rec["input_tokens"], rec["output_tokens"], rec["cost_usd"],
                          rec["latency_s"], False, key, lps)

    # ---- plans ----------------------------------------------------------------------------------------------------
    async def _plan(self, clients: dict, sem: asyncio.Semaphore, question: str, steps: Sequence[str],
                    allocation: Sequence[int], gold: Any) -> PlanResult:
        if len(steps) != len(allocation):
            raise ValueError(f"plan: {len(steps)} subtasks but {len(allocation)} allocated models")
        if not steps:
            raise ValueError("plan: no subtasks")
        names = self.ladder.names
        for a in allocation:
            if not 0 <= int(a) < len(names):
                raise ValueError(f"plan: rung {a} is off the ladder (0..{len(names) - 1})")
        models = [names[int(a)] for a in allocation]
        answers: list[str] = []
        calls: list[CallRecord] = []
        for k in range(len(steps)):
            msgs = subtask_messages(question, steps, answers, k, self.subtask_prompt)
            rec = await self._call(clients, sem, models[k], msgs,
                                   self.max_tokens, self.temperature, self.seed, self.logprobs)
            calls.append(rec)
            answers.append(rec.text.strip())
        if self.final_answer == "none":
            final_model, final_text = models[-1], answers[-1]
        else:
            final_model = models[-1] if self.final_answer == "last" else names[max(int(a) for a in allocation)]
            msgs = final_messages(question, steps, answers, self.subtask_prompt)
            rec = await self._call(clients, sem, final_model, msgs,
                                   self.final_max_tokens, self.temperature, self.seed, self.logprobs)
            calls.append(rec)
            final_text = rec.text.strip()
        ans, ok = grade_answer(final_text, gold, self.task)
        return PlanResult(question, list(steps), [int(a) for a in allocation], models, answers, final_text,
                          final_model, ans, ok, calls)

    async def _run(self, jobs: Sequence[tuple], kind: str) -> list:
        sem = asyncio.Semaphore(self.max_concurrency)
        clients: dict = {}
        try:
            if kind == "plan":
                coros = [self._plan(clients, sem, *j) for j in jobs]
            else:
                coros = [self._call(clients, sem, *j) for j in jobs]
            results = await asyncio.gather(*coros, return_exceptions=True)
        finally:
            clients.pop("__inflight__", None)
            for c in clients.values():
                await c.aclose()
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return list(results)

    def run_plans(self, plans: Sequence[tuple[str, Sequence[str], Sequence[int], Any]]) -> list[PlanResult]:
        """Execute (question, subtasks, allocation, gold-or-None) plans concurrently; results in order."""
        if not plans:
            return []
        return run_sync(self._run(list(plans), "plan"))

    def run_plan(self, question: str, steps: Sequence[str], allocation: Sequence[int], gold: Any = None) -> PlanResult:
        return self.run_plans([(question, steps, allocation, gold)])[0]

    def generate(self, model: str, prompts: Sequence[str], *, max_tokens: int, temperature: float,
                 seeds: Sequence[Optional[int]]) -> list[CallRecord]:
        """One user-message completion per prompt (a prompted decomposer on a pool model), cached like the rest."""
        jobs = [(model, [{"role": "user", "content": p}], max_tokens, temperature, s, False)
                for p, s in zip(prompts, seeds)]
        return run_sync(self._run(jobs, "call")) if jobs else []


def as_dict(c: CallRecord) -> dict:
    d = asdict(c)
    d.pop("logprobs", None)
    return d
