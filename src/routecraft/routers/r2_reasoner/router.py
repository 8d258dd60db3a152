"""R2Reasoner: decomposer + allocator + pool execution behind routecraft's router interface.

Not fit on an outcomes table: trained by label search, SFT and GRPO (``train_r2_reasoner``, the one training entry
point: the CLI's ``routecraft train --router r2-reasoner`` and ``python -m routecraft.routers.r2_reasoner train`` call
it).
``run(question)`` decomposes the question into subtasks, allocates a ladder model to each, executes them in order on
the pool and returns the plan (subtasks, model per subtask, answers, final answer, tokens and cost). ``decide``
returns one ``Decision`` per query whose ``plan`` is that summary and whose candidate is the model that gave the
final answer. Without trained policies (``decomposer``/``allocator`` None) the few-shot prompt runs on a pool model
and the heuristic allocator decides: the untrained R2-Reasoner.

Policies and servers are loaded/started on the first ``run`` (never in the constructor); ``close()`` stops private
servers. Artifacts: ``router.json`` (params: policy folders, configuration, stages; the state is empty) and an empty
``state.safetensors`` (format 2, ``routers/artifact.py``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional, Sequence

from routecraft.data.schema import Candidate
from routecraft.pool.models import REGISTRY
from routecraft.routers.base import Decision, MultiStepRouter, candidate_row
from routecraft.routers.multistep import merge
from routecraft.routers.r2_reasoner.config import R2ReasonerConfig, load_config, validate
from routecraft.routers.r2_reasoner.runtime import (
    Pipeline,
    format_plan,
    load_text_policy,
    make_ladder,
    pool_executor,
)
from routecraft.routers.r2_reasoner.training import train_policies
from routecraft.routers.registry import load_router


class R2Reasoner(MultiStepRouter):
    name = "r2-reasoner"
    training_note = ("label search, SFT and GRPO on the live pool "
                     "(routecraft.routers.r2_reasoner.train_r2_reasoner)")

    @classmethod
    def train_from_config(cls, config: str | Path | None, out: str | Path, overrides: Optional[dict] = None,
                          resume: bool = True) -> Path:
        return train_r2_reasoner(config, out, resume=resume, overrides=overrides)

    def __init__(self, decomposer: Optional[str] = None, allocator: Optional[str] = None,
                 config: Optional[dict] = None, stages: Optional[dict] = None, cache: Optional[str] = None,
                 stage: str = "final") -> None:
        super().__init__(decomposer=decomposer, allocator=allocator, config=config or {}, stages=stages or {},
                         cache=cache, stage=stage)

    @property
    def config(self) -> R2ReasonerConfig:
        return validate(self.params.get("config") or {}, "r2-reasoner artifact config")

    def policy_paths(self) -> dict[str, Optional[str]]:
        """The decomposer and allocator of ``stage`` (``final``: the params; ``sft``: the SFT-only pair)."""
        stage = self.params.get("stage") or "final"
        if stage == "final":
            return {"decomposer": self.params.get("decomposer"), "allocator": self.params.get("allocator")}
        stages = self.params.get("stages") or {}
        if stage not in stages:
            raise ValueError(f"r2-reasoner: no stage {stage!r} in this artifact (stages: "
                             f"{', '.join(['final', *stages]) })")
        return dict(stages[stage])

    @classmethod
    def from_artifact(cls, path: str | Path, stage: str = "final") -> "R2Reasoner":
        r = load_router(path)
        if not isinstance(r, cls):
            raise ValueError(f"{path} holds a {r.name!r} router, not r2-reasoner")
        r.params["stage"] = stage
        r.policy_paths()  # the stage exists
        return r

    # ---- running -----------------------------------------------------------------------------------------------
    def _start(self, stack: contextlib.ExitStack, base_urls: Optional[dict[str, str]]) -> Any:
        cfg = self.config
        paths = self.policy_paths()
        for role, p in paths.items():
            if p and not Path(p).is_dir():
                if p not in REGISTRY:
                    raise FileNotFoundError(f"r2-reasoner: the {role} policy {p} does not exist")
        cache = self.params.get("cache") or str(Path.home() / ".cache" / "routecraft" / "r2_reasoner.sqlite")
        pool, ladder, executor = stack.enter_context(pool_executor(cfg, cache, base_urls, max_calls=None))
        dec = load_text_policy(paths.get("decomposer"), cfg, "decomposer", cfg.decomposer.eval_temperature)
        alloc = load_text_policy(paths.get("allocator"), cfg, "allocator", cfg.allocator.eval_temperature)
        self.candidates = [Candidate(n) for n in ladder.names]
        return Pipeline(cfg, ladder, executor, dec, alloc)

    def run_batch(self, questions: Sequence[str], golds: Optional[Sequence[Any]] = None) -> list[dict]:
        return self.ensure_running().run(list(questions), golds)

    def run(self, question: str, gold: Any = None) -> dict:
        """The plan of one question, executed: subtasks with model, answer and cost; final answer; totals."""
        return self.run_batch([question], [gold])[0]

    def decision(self, plan: dict, lam: float = 0.0, max_cost: float | None = None) -> Decision:
        plan = {**plan, "router": self.name, "lam": lam, "max_cost": max_cost,
                "note": "subtasks were executed on the pool during routing; lam/max_cost are fixed by training (β)"}
        table = [candidate_row(Candidate(m), 0.0, 0.0, subtasks=sum(1 for x in plan["models"] if x == m),
                               cost_usd=sum(t["cost_usd"] or 0.0 for t in plan["subtasks"] if t["model"] == m))
                 for m in dict.fromkeys(plan["models"])]
        return Decision(Candidate(plan["final_model"]), float(plan["answer"] is not None), float(plan["cost_usd"]),
                        table, plan)

    def format(self, summary: dict) -> str:
        return format_plan(summary)

    # ---- artifacts ---------------------------------------------------------------------------------------------
    def pool_names(self) -> list[str]:
        cfg = self.config
        return make_ladder(cfg, cfg.resolve_pool()).names

    def save(self, path: str | Path) -> Path:
        params = dict(self.params)
        params.pop("stage", None)
        saved, self.params = self.params, params
        try:
            return super().save(path)
        finally:
            self.params = saved


def train_r2_reasoner(config_path: str | Path | None, out: str | Path, resume: bool = True,
                      overrides: Optional[dict] = None, base_urls: Optional[dict[str, str]] = None) -> Path:
    """Search → SFT → alternating GRPO (``training.train_policies``), then the router artifact; returns ``out``.

    ``config_path`` None: the built-in CPU config; ``overrides``: nested config fields ({"sft": {"steps": 2}});
    ``base_urls``: use these servers (model name → base_url) instead of starting any."""
    cfg = load_config(config_path, overrides)
    paths, sft_paths, cache = train_policies(cfg, out, resume=resume, base_urls=base_urls)
    r = R2Reasoner(decomposer=paths["decomposer"], allocator=paths["allocator"], config=cfg.model_dump(),
                   stages={"sft": sft_paths, "final": dict(paths)}, cache=str(cache.resolve()))
    r.save(out)
    return Path(out)


def route_r2_reasoner(artifact: str | Path, question: str, stage: str = "final") -> dict:
    """Load an artifact, run one question, return the executed plan (a JSON-ready dict)."""
    r = R2Reasoner.from_artifact(artifact, stage=stage)
    try:
        return r.run(question)
    finally:
        r.close()


def load_r2_reasoner(artifact: str, config: str | None = None, overrides: Optional[dict] = None,
                     stage: str = "final") -> R2Reasoner:
    """The router of an artifact folder (at ``stage``), or ``"untrained"``: the prompted decomposer and the heuristic
    allocator of ``config`` (default: the built-in one). ``config``/``overrides`` replace an artifact's configuration
    (overrides on top of the artifact's own when no ``config`` is given)."""
    overrides = overrides or {}
    if artifact == "untrained":
        cfg = load_config(config, overrides)
        return R2Reasoner(config=cfg.model_dump(), cache=cfg.cache)
    r = R2Reasoner.from_artifact(artifact, stage=stage)
    if config is not None or overrides:
        base = load_config(config).model_dump() if config is not None else r.params["config"]
        r.params["config"] = validate(merge(base, overrides), "--set").model_dump()
    return r
