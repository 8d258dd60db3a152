"""RouterR1: a trained Router-R1 policy behind routecraft's router interface.

Router-R1 is not fit on an outcomes table: it is trained by RL (``train_router_r1``, the one training entry point: the
CLI's ``routecraft train --router router-r1`` and ``python -m routecraft.routers.router_r1 train`` call it) and decides
by running a multi-round trajectory on the pool. ``run(question)`` returns the ``Trajectory``; ``decide`` returns one
``Decision`` per query whose ``plan`` is the trajectory summary (calls, models, costs, the final answer) and whose
candidate is the pool model the trajectory relied on (the most-called one, ties to the later call).

The policy and the pool's local servers are loaded/started on the first ``run`` (never in the constructor);
``close()`` stops private servers. Artifacts: ``router.json`` (params: the policy folder and the configuration; the
state is empty) and an empty ``state.safetensors`` (format 2, ``routers/artifact.py``); ``load_router`` and
``RouterR1.from_artifact`` restore it.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

from routecraft.data.schema import Candidate
from routecraft.routers.base import Decision, MultiStepRouter, candidate_row
from routecraft.routers.registry import load_router
from routecraft.routers.router_r1.backends import serve_backends
from routecraft.routers.router_r1.config import RouterR1Config, load_config
from routecraft.routers.router_r1.runtime import format_trajectory, load_inference_policy, make_caller, make_engine
from routecraft.routers.router_r1.training import train_policy


class RouterR1(MultiStepRouter):
    name = "router-r1"
    training_note = "reinforcement learning on the live pool (routecraft.routers.router_r1.train_router_r1)"
    running_note = "consult the pool and return the trajectory"

    @classmethod
    def train_from_config(cls, config, out, overrides=None, resume=True) -> Path:
        return train_router_r1(config, out, resume=resume, overrides=overrides)

    def __init__(self, policy: Optional[str] = None, config: Optional[dict] = None) -> None:
        super().__init__(policy=policy, config=config or {})

    # ---- configuration -----------------------------------------------------------------------------------------
    @property
    def config(self) -> RouterR1Config:
        return RouterR1Config.model_validate(self.params.get("config") or {})

    @property
    def policy_path(self) -> str:
        p = self.params.get("policy")
        if not p:
            raise ValueError("router-r1: no policy (train one with `routecraft train --router router-r1`, or pass "
                             "policy=<model folder or local model name>)")
        return str(p)

    @classmethod
    def from_artifact(cls, path: str | Path) -> "RouterR1":
        """Load an artifact; a policy folder that moved with the artifact (``<path>/policy``) is found there."""
        r = load_router(path)
        if not isinstance(r, cls):
            raise ValueError(f"{path} holds a {r.name!r} router, not router-r1")
        pol = Path(str(r.params.get("policy") or ""))
        local = Path(path) / "policy"
        if (not pol.is_dir()) and (local / "config.json").is_file():
            r.params["policy"] = str(local.resolve())
        return r

    # ---- running -----------------------------------------------------------------------------------------------
    def _start(self, stack: contextlib.ExitStack, base_urls: Optional[dict[str, str]]) -> Any:
        cfg = self.config
        pool = cfg.resolve_pool()
        targets = cfg.call_targets()
        self.candidates = list(targets) if targets is not None else [Candidate(n) for n in pool.names]
        model, tok = load_inference_policy(self.policy_path, cfg)
        urls = base_urls if base_urls is not None else stack.enter_context(serve_backends(
            pool, cfg.backends.mode, threads=cfg.backends.threads, parallel=cfg.backends.parallel,
            ctx=cfg.backends.ctx))
        return make_engine(cfg, model, tok, make_caller(cfg, pool, urls), cfg.protocol.eval_temperature)

    def run_batch(self, questions: Sequence[str]) -> list:
        return self.ensure_running().run(list(questions))

    def summary(self, result: Any) -> dict:
        return result.summary()

    def format(self, summary: dict) -> str:
        return format_trajectory(summary)

    def decision(self, tr: Any, lam: float = 0.0, max_cost: float | None = None) -> Decision:
        plan = tr.summary()
        plan["router"] = self.name
        plan["note"] = "multi-round: the pool was consulted during routing; lam/max_cost are fixed by training (α)"
        plan["lam"], plan["max_cost"] = lam, max_cost
        targets = tr.candidates_called()  # candidate targets: what was consulted is a candidate, not a model
        called = targets or tr.models_called()
        if called:
            counts = Counter(called)
            top = max(counts.values())
            chosen = [m for m in called if counts[m] == top][-1]
            plan["answered_by"] = "pool"
        else:
            pool = self.config.resolve_pool()
            chosen = min(pool.models, key=lambda m: m.price_out_per_m).name
            plan["answered_by"] = "policy"

        def cand(x: str) -> Candidate:
            return Candidate.parse(x) if targets else Candidate(x)

        def of(c: Any, x: str) -> bool:
            return (c.candidate if targets else c.model) == x

        table = [candidate_row(cand(m), 0.0, 0.0, calls=sum(1 for x in called if x == m),
                               cost_usd=sum(c.cost_usd for c in tr.calls if of(c, m)))
                 for m in dict.fromkeys(called)]
        return Decision(cand(chosen), float(tr.answer is not None), float(tr.cost_usd), table, plan)

    # ---- artifacts ---------------------------------------------------------------------------------------------
    def pool_names(self) -> list[str]:
        return self.config.resolve_pool().names

    def save(self, path: str | Path) -> Path:
        if not self.candidates:  # what its decisions name: the candidate targets, else the pool's models
            try:
                targets = self.config.call_targets()
            except Exception:  # the pool may not be resolvable here; the base class keeps the artifact loadable
                targets = None
            if targets is not None:
                self.candidates = list(targets)
        return super().save(path)


def train_router_r1(config_path: str | Path | None, out: str | Path, resume: bool = True,
                    overrides: Optional[dict] = None) -> Path:
    """Train a Router-R1 policy (``training.train_policy``) and write the router artifact; returns ``out``.

    ``config_path`` None: the built-in CPU config; ``overrides``: nested config fields ({"train": {"max_steps": 2}}).
    See ``routecraft.routers.router_r1.training`` for the output folder."""
    cfg = load_config(config_path, overrides)
    policy_dir = train_policy(cfg, out, resume=resume)
    RouterR1(policy=str(policy_dir.resolve()), config=cfg.model_dump()).save(out)
    return Path(out)


def route_router_r1(artifact: str | Path, question: str) -> dict:
    """Load a Router-R1 artifact, run one question, return the whole trajectory (turns, calls with model, sub-query,
    response, tokens and cost; the final answer; totals)."""
    router = RouterR1.from_artifact(artifact)
    try:
        return router.summary(router.run(question))
    finally:
        router.close()
