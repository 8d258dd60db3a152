"""R2Reasoner: decomposer + allocator + pool execution behind routecraft's router interface.

Not fit on an outcomes table: trained by label search, SFT and GRPO (``R2Reasoner.train`` / ``train_r2_reasoner``).
``run(question)`` decomposes the question into subtasks, allocates a ladder model to each, executes them in order on
the pool and returns the plan (subtasks, model per subtask, answers, final answer, tokens and cost). ``decide``
returns one ``Decision`` per query whose ``plan`` is that summary and whose candidate is the model that gave the
final answer. Without trained policies (``decomposer``/``allocator`` None) the few-shot prompt runs on a pool model
and the heuristic allocator decides: the untrained R2-Reasoner.

Policies and servers are loaded/started on the first ``run`` (never in the constructor); ``close()`` stops private
servers. Artifacts: ``router.json`` (params: policy folders, configuration, stages) and an empty ``state.joblib``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional, Sequence


from routecraft.data.schema import Candidate
from routecraft.routers._multistep import MultiStepRouter
from routecraft.routers.base import Decision


class R2Reasoner(MultiStepRouter):
    name = "r2-reasoner"
    training_note = ("label search, SFT and GRPO on the live pool "
                     "(routecraft.routers.r2_reasoner.train_r2_reasoner)")

    @classmethod
    def train_cli(cls, config: str | Path | None, out: str | Path, overrides: Optional[dict] = None,
                  resume: bool = True) -> Path:
        from routecraft.routers.r2_reasoner.training import train_r2_reasoner

        return train_r2_reasoner(config, out, resume=resume, overrides=overrides)

    @classmethod
    def route_cli(cls, artifact: str | Path, question: str) -> tuple[dict, str]:
        from routecraft.routers.r2_reasoner import route_r2_reasoner
        from routecraft.routers.r2_reasoner.training import format_plan

        plan = route_r2_reasoner(artifact, question)
        return plan, format_plan(plan)

    def __init__(self, decomposer: Optional[str] = None, allocator: Optional[str] = None,
                 config: Optional[dict] = None, stages: Optional[dict] = None, cache: Optional[str] = None,
                 stage: str = "final") -> None:
        super().__init__(decomposer=decomposer, allocator=allocator, config=config or {}, stages=stages or {},
                         cache=cache, stage=stage)

    @property
    def config(self):
        from routecraft.routers.r2_reasoner.config import validate

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
    def train(cls, config_path: str | Path | None, out: str | Path, resume: bool = True,
              overrides: Optional[dict] = None) -> "R2Reasoner":
        from routecraft.routers.r2_reasoner.training import train_r2_reasoner

        return cls.from_artifact(train_r2_reasoner(config_path, out, resume=resume, overrides=overrides))

    @classmethod
    def from_artifact(cls, path: str | Path, stage: str = "final") -> "R2Reasoner":
        from routecraft.routers.base import load_router

        r = load_router(path)
        if not isinstance(r, cls):
            raise ValueError(f"{path} holds a {r.name!r} router, not r2-reasoner")
        r.params["stage"] = stage
        r.policy_paths()  # the stage exists
        return r

    # ---- running -----------------------------------------------------------------------------------------------
    def _start(self, stack: contextlib.ExitStack, base_urls: Optional[dict[str, str]]) -> Any:
        from routecraft.routers.r2_reasoner.training import Pipeline, load_text_policy, pool_executor

        cfg = self.config
        paths = self.policy_paths()
        for role, p in paths.items():
            if p and not Path(p).is_dir():
                from routecraft.pool.models import REGISTRY

                if p not in REGISTRY:
                    raise FileNotFoundError(f"r2-reasoner: the {role} policy {p} does not exist")
        cache = self.params.get("cache") or str(Path.home() / ".cache" / "routecraft" / "r2_reasoner.sqlite")
        pool, ladder, executor = stack.enter_context(pool_executor(cfg, cache, base_urls, max_calls=None))
        dec = load_text_policy(paths.get("decomposer"), cfg, "decomposer", cfg.decomposer.eval_temperature)
        alloc = load_text_policy(paths.get("allocator"), cfg, "allocator", cfg.allocator.eval_temperature)
        self.candidates = [Candidate(n) for n in ladder.names]
        return Pipeline(cfg, ladder, executor, dec, alloc)

    def run_batch(self, questions: Sequence[str], golds: Optional[Sequence[Any]] = None) -> list[dict]:
        return self._ensure().run(list(questions), golds)

    def run(self, question: str, gold: Any = None) -> dict:
        """The plan of one question, executed: subtasks with model, answer and cost; final answer; totals."""
        return self.run_batch([question], [gold])[0]

    def decision(self, plan: dict, lam: float = 0.0, max_cost: float | None = None) -> Decision:
        plan = {**plan, "router": self.name, "lam": lam, "max_cost": max_cost,
                "note": "subtasks were executed on the pool during routing; lam/max_cost are fixed by training (β)"}
        table = []
        for m in dict.fromkeys(plan["models"]):
            table.append({"candidate": m, "model": m, "strategy": Candidate(m).strategy, "budget": None,
                          "subtasks": sum(1 for x in plan["models"] if x == m),
                          "cost_usd": sum(t["cost_usd"] or 0.0 for t in plan["subtasks"] if t["model"] == m),
                          "predicted_score": 0.0, "predicted_cost": 0.0})
        return Decision(Candidate(plan["final_model"]), float(plan["answer"] is not None), float(plan["cost_usd"]),
                        table, plan)

    def format_plan(self, plan: dict) -> str:
        from routecraft.routers.r2_reasoner.training import format_plan

        return format_plan(plan)

    # ---- artifacts ---------------------------------------------------------------------------------------------
    def pool_names(self) -> list[str]:
        from routecraft.routers.r2_reasoner.training import make_ladder

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
