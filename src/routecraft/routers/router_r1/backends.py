"""Calling the pool's models for Router-R1: the called-LLM prompt, concurrent calls, and local servers.

``PoolCaller.call_many`` sends one batch of consultations (from every trajectory of a rollout batch) concurrently,
at most ``max_concurrency`` in flight, each as a single user message (the paper's AGENT_PROMPT, paraphrased) with
greedy decoding. A failed call does not raise: it comes back with ``error`` set and no response, which the rollout
turns into ``<information>None</information>`` (as the authors' rollout loop does).

With ``targets`` (config ``call.targets: candidates``) the policy consults *candidates* (model × strategy × budget)
instead: each is run by routecraft's consultation executor (``routecraft.routers.consult``: the strategy on the
sub-query, its answer extracted), the reply the policy reads is the candidate's output followed by ``Answer: <the
extracted answer>``, and the call records the consultation in the same form as the sequential router's
(``Call.consultation``, ``Trajectory.summary()["consultations"]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import asdict, dataclass
from typing import Iterator, Optional, Sequence

from routecraft.data.schema import Candidate
from routecraft.pool.client import BackendError, ChatClient
from routecraft.pool.config import Pool, PoolModel
from routecraft.pool.server import base_url_for, running, serve_local
from routecraft.routers.consult import PoolExecutor, consult
from routecraft.routers.router_r1.protocol import ModelCard

AGENT_PROMPT = (
    "You are a helpful assistant in a multi-agent process: a base model has delegated the sub-question below to "
    "you. Either answer it with a brief explanation, or give context that helps to answer it. If you cannot, say "
    "so and suggest that the base model consult another model. Be concise (preferably under {max_tokens} tokens) "
    "and stay on topic.\n\nSub-question: {query}"
)


@dataclass
class Call:
    """One consultation of a pool model."""

    model: Optional[str]  # the pool model called; None when the written name matched none
    written_model: Optional[str]
    query: str
    response: Optional[str]
    input_tokens: int = 0
    output_tokens: int = 0
    price_out_per_m: float = 0.0
    cost_usd: float = 0.0  # at the pool's prices, input and output tokens
    latency_s: float = 0.0
    error: Optional[str] = None
    turn: int = 0
    target: Optional[str] = None        # the consultation target's name (candidate targets only)
    candidate: Optional[str] = None     # its candidate id
    answer: Optional[str] = None        # the answer extracted from its output
    consultation: Optional[dict] = None  # the executor's record (``Consultation.to_dict``)

    @property
    def ok(self) -> bool:
        return self.error is None and self.response is not None

    @property
    def raw_cost(self) -> float:
        """The paper's cost unit: completion tokens × $ per 1M output tokens (micro-dollars)."""
        return float(self.output_tokens or 0) * self.price_out_per_m

    def to_dict(self) -> dict:
        d = asdict(self)
        d["raw_cost"] = self.raw_cost
        return d


def run_sync(coro):
    """Run a coroutine to completion from sync code, also when the caller is inside a running event loop
    (a gateway handler): then it runs on a helper thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def target() -> None:
        try:
            box["v"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["e"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]


class PoolCaller:
    """Calls pool models by name. ``base_urls`` maps local model names to running servers' base URLs; models with an
    ``endpoint`` use it; other local models are looked up among `routecraft pool up` servers at call time."""

    def __init__(self, pool: Pool, base_urls: Optional[dict[str, str]] = None, *, max_tokens: int = 512,
                 temperature: float = 0.0, top_p: float = 1.0, seed: Optional[int] = 42, max_concurrency: int = 10,
                 timeout: float = 300.0, max_retries: int = 2, prompt: str = AGENT_PROMPT,
                 targets: Optional[Sequence[Candidate]] = None, task: str = "gsm8k") -> None:
        self.pool = pool
        self.targets: Optional[dict[str, Candidate]] = (
            None if targets is None else {target_name(c): c for c in targets})
        if self.targets is not None and not self.targets:
            raise ValueError("router-r1: candidate targets given but empty")
        self.task = task
        self.base_urls = dict(base_urls or {})
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.prompt = prompt

    @property
    def names(self) -> list[str]:
        """What a consultation may name: the pool's models, or the candidate targets' names."""
        return list(self.targets) if self.targets is not None else self.pool.names

    def cards(self) -> list[ModelCard]:
        if self.targets is not None:
            out = []
            for name, c in self.targets.items():
                m = self.pool.get(c.model)
                out.append(ModelCard(name, f"{' '.join(m.description.split())} Strategy: {strategy_note(c)}",
                                     m.price_out_per_m, m.price_in_per_m, m.size_b))
            return out
        return [ModelCard(m.name, m.description, m.price_out_per_m, m.price_in_per_m, m.size_b)
                for m in self.pool.models]

    def _base_url(self, m: PoolModel) -> str:
        if m.name in self.base_urls:
            return self.base_urls[m.name]
        return base_url_for(m)

    def message(self, query: str) -> list[dict]:
        return [{"role": "user", "content": self.prompt.format(query=query, max_tokens=self.max_tokens)}]

    async def _call(self, client, sem: asyncio.Semaphore, call: Call) -> Call:
        async with sem:
            try:
                res = await client.chat(self.message(call.query), max_tokens=self.max_tokens,
                                        temperature=self.temperature, top_p=self.top_p, seed=self.seed)
            except BackendError as exc:
                call.error = str(exc)
                return call
        call.response = res.text
        call.input_tokens = int(res.input_tokens or 0)
        call.output_tokens = int(res.output_tokens or 0)
        call.cost_usd = float(res.cost_usd)
        call.latency_s = float(res.latency_s)
        return call

    async def acall_many(self, calls: Sequence[Call]) -> list[Call]:
        """Every call concurrently, at most ``max_concurrency`` at once: a pool model under the called-model prompt,
        or (candidate targets) a candidate through the consultation executor."""
        sem = asyncio.Semaphore(self.max_concurrency)
        clients: dict[str, ChatClient] = {}
        executor = PoolExecutor(clients, max_tokens=self.max_tokens,
                                chat_args={"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed})
        what = "model" if self.targets is None else "candidate"
        jobs = []
        try:
            for c in calls:
                if c.model is None:
                    c.error = c.error or f"unknown {what} {c.written_model!r}"
                    continue
                if self.targets is not None:
                    c.target = c.model
                    cand = self.targets[c.target]
                    c.model, c.candidate = cand.model, cand.id
                m = self.pool.get(c.model)
                c.price_out_per_m = m.price_out_per_m
                if c.model not in clients:
                    try:
                        url = self._base_url(m)
                    except Exception as exc:  # ServerError: not running
                        c.error = str(exc)
                        continue
                    clients[c.model] = ChatClient(m, url, timeout=self.timeout, max_retries=self.max_retries)
                jobs.append(self._call(clients[c.model], sem, c) if self.targets is None
                            else self._consult(executor, sem, c))
            await asyncio.gather(*jobs)
        finally:
            for cl in clients.values():
                await cl.aclose()
        return list(calls)

    async def _consult(self, executor: PoolExecutor, sem: asyncio.Semaphore, c: Call) -> Call:
        """One candidate target through the consultation executor; the reply ends with the extracted answer."""
        cand = self.targets[c.target]
        msgs = self.message(c.query) if cand.strategy == "default" else [{"role": "user", "content": c.query}]
        async with sem:
            con = await consult(executor, cand, msgs, self.task, None, c.turn)
        c.consultation = con.to_dict()
        c.answer = con.answer
        if con.outcome is None:
            c.error = con.error
            return c
        o = con.outcome
        c.response = (o.text or "").rstrip() + (f"\nAnswer: {con.answer}" if con.answer is not None else "")
        c.input_tokens, c.output_tokens = int(o.input_tokens), int(o.output_tokens)
        c.cost_usd, c.latency_s = float(o.cost_usd), float(o.backend_s)
        return c

    def call_many(self, calls: Sequence[Call]) -> list[Call]:
        """Fill in ``response``, tokens and costs of each call (in place), concurrently; returns the calls."""
        if not calls:
            return []
        return run_sync(self.acall_many(calls))


def target_name(c: Candidate) -> str:
    """The name a policy writes for a candidate target: ``model-strategy[-budget]``."""
    return f"{c.model}-{c.strategy}" + (f"-{c.budget}" if c.budget is not None else "")


STRATEGY_NOTES = {
    "default": "answers the sub-query as asked",
    "direct": "answers at once, no working",
    "cot": "works step by step, then states the answer",
    "cod": "works in short drafts, then states the answer",
    "pal": "writes a Python program; its result is the answer",
    "sc": "samples several worked answers and takes the majority",
}


def strategy_note(c: Candidate) -> str:
    note = STRATEGY_NOTES.get(c.strategy, c.strategy)
    return note + (f" (at most {c.budget} output tokens)" if c.budget is not None else "")


@contextlib.contextmanager
def serve_backends(pool: Pool, mode: str = "auto", *, threads: int = 1, parallel: int = 2,
                   ctx: int = 4096) -> Iterator[dict[str, str]]:
    """Base URLs for the pool's local models: servers already running (`routecraft pool up`) where ``mode`` allows,
    private servers (stopped on exit) otherwise. Models with an endpoint need nothing."""
    if mode not in ("auto", "running", "private"):
        raise ValueError(f"backend mode must be auto, running or private, got {mode!r}")
    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        up = running() if mode != "private" else {}
        for m in pool.models:
            if m.endpoint:
                continue
            if m.name in up:
                urls[m.name] = up[m.name].base_url
                continue
            if mode == "running":
                raise RuntimeError(f"local model {m.name!r} is not running; start it with `routecraft pool up "
                                   f"--models {m.name}` or use backends.mode: private")
            srv = stack.enter_context(serve_local(m, ctx=ctx, threads=threads, parallel=parallel))
            urls[m.name] = srv.base_url
        yield urls
