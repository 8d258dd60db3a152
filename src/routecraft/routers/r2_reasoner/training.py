"""R2-Reasoner training and evaluation.

``train_policies(cfg, out)`` runs the whole pipeline, each stage resumable; ``router.train_r2_reasoner`` (the one
training entry point: ``routecraft train --router r2-reasoner``, ``python -m routecraft.routers.r2_reasoner train``)
calls it and writes the artifact. The stages follow the paper's outline (Shao et al., "Route-and-Reason",
arXiv 2506.05901: SFT, then GRPO alternating between decomposer and allocator); the details the paper leaves open are
our choices, marked [D] in ``config.py``:

1. **Label search** (``search.search_labels``) on GSM8K training questions, every execution cached in
   ``out/executions.sqlite``; ``out/labels.jsonl``, ``out/search_stats.json``.
2. **Stage 0, SFT** (TRL ``SFTTrainer`` via ``routecraft.train.sft.sft_trl``): the decomposer on (question →
   cheapest correct decomposition), the allocator on (question + subtasks → searched label), each from
   ``policy``; ``out/sft/{decomposer,allocator}``.
3. **Stage 1, GRPO** (``routecraft.train.grpo.run_grpo``, the trainer Router-R1 uses), ``grpo.rounds`` rounds of:
   (a) allocator, decomposer frozen: reward = 1[correct] − β·cost/cost_all_top + format term; (b) decomposer,
   allocator frozen: reward = 1[correct] + format term − step/cost penalties. ``out/grpo/round<k>-<phase>/``
   (checkpoints, metrics, rollouts, ``policy/``); a finished phase is skipped on resume, an unfinished one resumes
   from its newest checkpoint.
4. The artifact (written by ``router.train_r2_reasoner``): ``out/router.json`` (+ ``state.safetensors``) pointing at the
   final decomposer and allocator, with the SFT-only pair kept under ``params.stages.sft``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from routecraft.routers.multistep import evaluate_in_batches, gsm8k_rows, heldout_rows
from routecraft.routers.r2_reasoner.config import R2ReasonerConfig
from routecraft.routers.r2_reasoner.protocol import (
    FormatError,
    Ladder,
    allocate_prompt,
    decompose_prompt,
    format_allocation,
    format_steps,
    parse_allocation,
    parse_decomposition,
)
from routecraft.routers.r2_reasoner.runtime import (
    ALLOCATOR_STOP,
    DECOMPOSER_STOP,
    Pipeline,
    TextPolicy,
    load_text_policy,
    pool_executor,
    prompt_ids,
)
from routecraft.routers.r2_reasoner.search import read_labels, search_labels, sft_examples
from routecraft.train.curves import plot_curves
from routecraft.train.grpo import RolloutSample, log_rollouts, run_grpo
from routecraft.train.policy import is_hf_folder, load_policy
from routecraft.train.sft import Demo, sft_trl

log = logging.getLogger("routecraft.routers.r2_reasoner")

PANELS = [("reward", "reward (mean)"), ("r2/format_error", "format-error rate"), ("r2/correct", "correct (train)"),
          ("r2/cost_usd", "cost per question (USD)"), ("r2/cost_ratio", "cost / all-top cost"),
          ("r2/steps", "subtasks per question")]


# ---------------------------------------------------------------------------------------------------- data

def read_questions(path: str | Path) -> list[dict]:
    """Questions from a JSONL file with ``question`` (or ``prompt``) and ``gold`` fields (``query_id`` optional)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no questions file {p}")
    rows = []
    for i, line in enumerate(p.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: line {i + 1} is not JSON: {exc}") from None
        q = r.get("question", r.get("prompt")) if isinstance(r, dict) else None
        if not q or r.get("gold") is None:
            raise ValueError(f"{p}: line {i + 1} needs 'question' and 'gold'")
        rows.append({"query_id": str(r.get("query_id", f"{p.stem}-{i}")), "prompt": str(q), "gold": str(r["gold"]),
                     "task": r.get("task", "gsm8k")})
    if not rows:
        raise ValueError(f"{p}: no questions")
    return rows


def train_rows(cfg: R2ReasonerConfig) -> list[dict]:
    rows = read_questions(cfg.data.train_file) if cfg.data.train_file else gsm8k_rows("train")
    if cfg.data.train_limit is not None and cfg.data.train_limit < len(rows):
        rows = random.Random(cfg.data.seed).sample(rows, cfg.data.train_limit)
    return rows


def eval_rows(cfg: R2ReasonerConfig, limit: Optional[int] = None) -> list[dict]:
    """Held-out questions: the same rule as Router-R1's (``data.eval_select``, same seed → same questions)."""
    return heldout_rows(limit or cfg.data.eval_limit, cfg.data.eval_select, cfg.data.seed)


def demo(tokenizer: Any, prompt: str, target: str):
    """An SFT demonstration: the chat prompt, then the target text and an end-of-sequence token (all trained on)."""
    ids = list(tokenizer.encode(target, add_special_tokens=False))
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return Demo(prompt_ids(tokenizer, prompt), ids, [1] * len(ids))


# ---------------------------------------------------------------------------------------------------- rewards

class R2RewardFunc:
    """The TRL reward function: the reward was computed in the rollout (it needs the execution); this logs its parts
    as ``r2/*`` metrics and every rollout to ``rollouts_path``."""

    __name__ = "r2_reasoner"

    def __init__(self, rollouts_path: Optional[Path] = None) -> None:
        self.rollouts_path = rollouts_path

    def __call__(self, prompts: list, completions: list, rollout: list[dict], log_metric: Any = None,
                 trainer_state: Any = None, **_: Any) -> list[float]:
        n = len(rollout)
        if log_metric is not None and n:
            for k in ("format_error", "correct", "cost_usd", "cost_ratio", "steps"):
                log_metric(f"r2/{k}", float(sum(float(r.get(k) or 0.0) for r in rollout) / n))
        if self.rollouts_path is not None:
            log_rollouts(self.rollouts_path, trainer_state, rollout)
        return [float(r["reward"]) for r in rollout]


def cost_norm(cfg: R2ReasonerConfig, executor: Any, ladder: Ladder, results: Sequence[Any],
              golds: Sequence[Any]) -> list[float]:
    """cost_all_top per result: the all-top allocation executed (cached), or the result's tokens at top prices."""
    if cfg.reward.cost_norm == "top_price":
        return [r.cost_at(ladder.models[-1]) for r in results]
    tops = executor.run_plans([(r.question, r.steps, [ladder.top] * len(r.steps), g) for r, g in zip(results, golds)])
    return [t.cost_usd for t in tops]


def _ratio(cost: float, top: float) -> float:
    return cost / top if top > 0 else 0.0


# ---------------------------------------------------------------------------------------------------- training

def _sft_stage(cfg: R2ReasonerConfig, out: Path, records: list[dict], ladder: Ladder, resume: bool,
               metrics_path: Path) -> dict[str, str]:
    dec_pairs, alloc_triples = sft_examples(records)
    paths = {}
    for role in ("decomposer", "allocator"):
        dest = out / "sft" / role
        paths[role] = str(dest.resolve())
        if resume and is_hf_folder(dest):
            log.info("SFT %s: reusing %s", role, dest)
            continue
        model, tok = load_policy(cfg.policy, dtype=cfg.grpo.rl.dtype)
        if role == "decomposer":
            demos = [demo(tok, decompose_prompt(q, cfg.decomposer.examples), format_steps(s)) for q, s in dec_pairs]
        else:
            demos = [demo(tok, allocate_prompt(q, s, ladder), format_allocation(a)) for q, s, a in alloc_triples]
        if cfg.sft.steps > 0 and demos:
            t0 = time.time()
            sft_trl(model, tok, demos, out_dir=out / "sft" / f"{role}-trainer", steps=cfg.sft.steps,
                    batch_size=cfg.sft.batch_size, learning_rate=cfg.sft.learning_rate, seed=cfg.data.seed,
                    max_length=cfg.sft.max_length, threads=cfg.grpo.rl.threads, log_path=metrics_path)
            log.info("SFT %s: %d demos, %d steps in %.0fs", role, len(demos), cfg.sft.steps, time.time() - t0)
        else:
            log.warning("SFT %s: skipped (%d demos, %d steps): the base policy is saved", role, len(demos),
                        cfg.sft.steps)
        model.save_pretrained(dest)
        tok.save_pretrained(dest)
        (dest / "sft.json").write_text(json.dumps({"demos": len(demos), "steps": cfg.sft.steps}))
    return paths


def _phase_rows(cfg: R2ReasonerConfig, phase: str, rows: Sequence[dict], pipe: Pipeline) -> list[dict]:
    if phase == "decomposer":
        return [{"prompt": decompose_prompt(r["prompt"], cfg.decomposer.examples), "question": r["prompt"],
                 "gold": r["gold"]} for r in rows]
    # allocator: the frozen decomposer's (greedy) decomposition of each question; an unparsable one gets the routing
    # fallback (decomposer.fallback), or is left out with fallback: error
    out = []
    skip = cfg.decomposer.fallback == "error"
    decs = pipe.decompose([r["prompt"] for r in rows], skip=skip) if rows else []
    for r, d in zip(rows, decs):
        if d["steps"] is None:
            continue
        out.append({"prompt": allocate_prompt(r["prompt"], d["steps"], pipe.ladder), "question": r["prompt"],
                    "gold": r["gold"], "steps": json.dumps(d["steps"])})
    return out


def make_rollout(cfg: R2ReasonerConfig, phase: str, pipe: Pipeline, policy: TextPolicy, by_prompt: dict):
    """The GRPO rollout of one phase: the policy writes (decomposition | allocation), the pipeline executes it on
    the pool, and the phase's reward (see the module docstring) goes into the sample's info."""
    rw = cfg.reward

    def rollout(prompts: list, model: Any) -> list:
        policy.model = model
        gens = policy(prompts)
        rows = [by_prompt[p] for p in prompts]
        infos: list[dict] = [{} for _ in prompts]
        plans, where = [], []
        for i, ((_, _, text), row) in enumerate(zip(gens, rows)):
            infos[i] = {"question": row["question"], "gold": row["gold"], "text": text, "format_error": 0.0,
                        "correct": 0.0, "cost_usd": 0.0, "cost_ratio": 0.0}
            try:
                if phase == "allocator":
                    steps = json.loads(row["steps"])
                    alloc = parse_allocation(text, len(steps), len(pipe.ladder))
                else:
                    steps = parse_decomposition(text, cfg.decomposer.min_steps, cfg.decomposer.max_steps)
                    alloc = None
            except FormatError as exc:
                infos[i].update(format_error=1.0, error=str(exc), reward=rw.format_penalty, steps=0)
                continue
            infos[i]["steps"] = len(steps)
            plans.append([row["question"], steps, alloc, row["gold"]])
            where.append(i)
        if phase == "decomposer" and plans:
            allocs = pipe.allocate([p[0] for p in plans], [p[1] for p in plans])
            for p, a in zip(plans, allocs):
                p[2] = a["allocation"]
        results = pipe.executor.run_plans([tuple(p) for p in plans])
        norms = cost_norm(cfg, pipe.executor, pipe.ladder, results, [p[3] for p in plans]) if results else []
        for i, r, top in zip(where, results, norms):
            ratio = _ratio(r.cost_usd, top)
            correct = float(bool(r.correct))
            if phase == "allocator":
                reward = correct - rw.beta * ratio
            else:
                reward = correct - rw.step_penalty * len(r.steps) - rw.decomposer_beta * ratio
            infos[i].update(correct=correct, cost_usd=r.cost_usd, cost_ratio=ratio, reward=reward,
                            allocation=r.allocation, answer=r.answer)
        return [RolloutSample(p, c, [1] * len(c), info) for (p, c, _), info in zip(gens, infos)]

    return rollout


def train_policies(cfg: R2ReasonerConfig, out: str | Path, resume: bool = True,
                   base_urls: Optional[dict[str, str]] = None) -> tuple[dict[str, str], dict[str, str], Path]:
    """Search → SFT → alternating GRPO into ``out``; returns (the final decomposer and allocator folders, the
    SFT-only pair, the execution cache). See the module docstring."""
    import torch  # heavy and only needed to train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    if cfg.grpo.rl.threads:
        torch.set_num_threads(cfg.grpo.rl.threads)
    rows = train_rows(cfg)
    metrics_path = out / "metrics.jsonl"
    cache = Path(cfg.cache) if cfg.cache else out / "executions.sqlite"
    t0 = time.time()
    with pool_executor(cfg, cache, base_urls) as (pool, ladder, executor):
        stats = search_labels(cfg, rows, out, ladder, executor,
                              progress=lambda k, n, rec: log.info("search %d/%d: %s", k, n, rec["query_id"]))
        log.info("search: %s", json.dumps(stats))
        executor.max_calls = None  # the budget is the search's; training executes what its rollouts need
        records = read_labels(out / "labels.jsonl")
        paths = _sft_stage(cfg, out, records, ladder, resume, metrics_path)
        sft_paths = dict(paths)
        for k in range(1, cfg.grpo.rounds + 1):
            for phase in cfg.grpo.phases:
                pdir = out / "grpo" / f"round{k}-{phase}"
                final = pdir / "policy"
                if resume and is_hf_folder(final):
                    paths[phase] = str(final.resolve())
                    continue
                other = "allocator" if phase == "decomposer" else "decomposer"
                frozen = load_text_policy(paths[other], cfg, other, 0.0)
                model, tok = load_policy(paths[phase], dtype=cfg.grpo.rl.dtype)
                temp = cfg.allocator.temperature if phase == "allocator" else cfg.decomposer.temperature
                policy = TextPolicy(model, tok, temperature=temp,
                                    max_tokens=(cfg.allocator if phase == "allocator" else cfg.decomposer).max_tokens,
                                    stop=ALLOCATOR_STOP if phase == "allocator" else DECOMPOSER_STOP)
                pipe = Pipeline(cfg, ladder, executor,
                                decomposer=frozen if phase == "allocator" else None,
                                allocator=frozen if phase == "decomposer" else None)
                if phase == "allocator":
                    data = _phase_rows(cfg, phase, rows, pipe)
                    if not data:
                        raise ValueError("GRPO allocator phase: the decomposer parsed no training question "
                                         "(train it longer, or check decomposer.max_steps)")
                else:
                    data = _phase_rows(cfg, phase, rows, pipe)
                by_prompt = {r["prompt"]: r for r in data}
                pdir.mkdir(parents=True, exist_ok=True)
                trainer = run_grpo(model=model, tokenizer=tok, dataset=data,
                                   reward_funcs=[R2RewardFunc(pdir / "rollouts.jsonl")],
                                   rollout=make_rollout(cfg, phase, pipe, policy, by_prompt), cfg=cfg.grpo.rl,
                                   out_dir=pdir, resume=resume, metrics_path=pdir / "metrics.jsonl",
                                   rollouts_path=pdir / "rollouts.jsonl")
                trainer.save_model(str(final))
                tok.save_pretrained(final)
                paths[phase] = str(final.resolve())
                with contextlib.suppress(Exception):
                    plot_curves(pdir / "metrics.jsonl", pdir / "curves.png", PANELS,
                                title=f"R2-Reasoner GRPO round {k}: {phase}")
                del trainer, model, frozen
        stats = {**stats, "executor_after_training": executor.stats()}
    (out / "train_stats.json").write_text(json.dumps({**stats, "wall_s": round(time.time() - t0, 1)}, indent=2))
    return paths, sft_paths, cache


# ---------------------------------------------------------------------------------------------------- evaluation

def evaluate_pipeline(pipe: Pipeline, rows: Sequence[dict], *, batch_size: int = 8,
                      out_jsonl: Optional[str | Path] = None) -> dict:
    """Accuracy, cost per question, subtasks per question, format errors and models per subtask on ``rows``."""
    def run_chunk(chunk: list[dict]) -> list[dict]:
        return [{"query_id": row.get("query_id"), "gold": row["gold"], **s}
                for row, s in zip(chunk, pipe.run([r["prompt"] for r in chunk], [r["gold"] for r in chunk]))]

    recs = evaluate_in_batches(rows, run_chunk, batch_size=batch_size, out_jsonl=out_jsonl,
                               score=lambda r: float(bool(r["correct"])), label="accuracy", log=log)
    n = len(recs)
    if not n:
        raise ValueError("evaluate: no questions")
    models: dict[str, int] = {}
    for r in recs:
        for m in r["models"]:
            models[m] = models.get(m, 0) + 1
    return {"n": n, "accuracy": sum(bool(r["correct"]) for r in recs) / n,
            "cost_usd_per_question": sum(r["cost_usd"] for r in recs) / n,
            "subtasks_per_question": sum(len(r["subtasks"]) for r in recs) / n,
            "decomposition_errors": sum(r["decomposition_error"] is not None for r in recs) / n,
            "allocation_errors": sum(r["allocation_error"] is not None for r in recs) / n,
            "models_per_subtask": models, "executor": pipe.executor.stats()}
