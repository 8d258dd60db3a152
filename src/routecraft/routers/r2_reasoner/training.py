"""R2-Reasoner training, evaluation and routing (seed-algorithms §1.4).

``train_r2_reasoner(config, out)`` runs the whole pipeline, each stage resumable:

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
4. The artifact: ``out/router.json`` (+ ``state.joblib``) pointing at the final decomposer and allocator, with the
   SFT-only pair kept under ``params.stages.sft``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from routecraft.routers.r2_reasoner.config import R2ReasonerConfig, load_config
from routecraft.routers.r2_reasoner.protocol import (FormatError, Ladder, allocate_prompt, decompose_prompt,
                                                     format_allocation, format_steps, heuristic_allocation,
                                                     parse_allocation, parse_decomposition)

log = logging.getLogger("routecraft.routers.r2_reasoner")

PANELS = [("reward", "reward (mean)"), ("r2/format_error", "format-error rate"), ("r2/correct", "correct (train)"),
          ("r2/cost_usd", "cost per question (USD)"), ("r2/cost_ratio", "cost / all-top cost"),
          ("r2/steps", "subtasks per question")]
DECOMPOSER_STOP = ("\nQuestion:", "\n\n\n")
ALLOCATOR_STOP = ("]",)


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
    from routecraft.routers.router_r1.training import gsm8k_rows

    rows = read_questions(cfg.data.train_file) if cfg.data.train_file else gsm8k_rows("train")
    if cfg.data.train_limit is not None and cfg.data.train_limit < len(rows):
        rows = random.Random(cfg.data.seed).sample(rows, cfg.data.train_limit)
    return rows


def eval_rows(cfg: R2ReasonerConfig, limit: Optional[int] = None) -> list[dict]:
    """Held-out questions: the same rule as Router-R1's (``data.eval_select``, same seed → same questions)."""
    from routecraft.routers.router_r1.training import heldout_rows

    return heldout_rows(limit or cfg.data.eval_limit, cfg.data.eval_select, cfg.data.seed)


def make_ladder(cfg: R2ReasonerConfig, pool: Any) -> Ladder:
    names = cfg.models or [m.name for m in pool.models if m.instruct and m.name != cfg.search.decomposer_model]
    return Ladder.from_pool(pool, names, cfg.search.groups)


# ---------------------------------------------------------------------------------------------------- policies

class TextPolicy:
    """A transformers causal LM that answers one chat prompt (decomposer or allocator): batched generation with
    stop strings (``HFPolicy`` of Router-R1), returning (prompt ids, completion ids, text)."""

    def __init__(self, model: Any, tokenizer: Any, *, temperature: float, max_tokens: int,
                 stop: Sequence[str]) -> None:
        from routecraft.routers.router_r1.rollout import HFPolicy

        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.gen = HFPolicy(model, tokenizer, temperature=temperature, stop_strings=list(stop))

    @property
    def model(self) -> Any:
        return self.gen.model

    @model.setter
    def model(self, m: Any) -> None:
        self.gen.model = m

    def prompt_ids(self, text: str) -> list[int]:
        return prompt_ids(self.tokenizer, text)

    def __call__(self, prompts: Sequence[str]) -> list[tuple[list[int], list[int], str]]:
        ids = [self.prompt_ids(p) for p in prompts]
        out = self.gen.generate(ids, self.max_tokens)
        return [(p, c, self.tokenizer.decode(c, skip_special_tokens=True)) for p, c in zip(ids, out)]


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer.encode(text + "\n", add_special_tokens=True))


def demo(tokenizer: Any, prompt: str, target: str):
    """An SFT demonstration: the chat prompt, then the target text and an end-of-sequence token (all trained on)."""
    from routecraft.train.sft import Demo

    ids = list(tokenizer.encode(target, add_special_tokens=False))
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return Demo(prompt_ids(tokenizer, prompt), ids, [1] * len(ids))


# ---------------------------------------------------------------------------------------------------- a pipeline

@dataclass
class Pipeline:
    """Decompose → allocate → execute, with any mix of trained policies, the prompted pool decomposer and the
    heuristic allocator. Used for routing, evaluation and inside the GRPO rollouts."""

    cfg: R2ReasonerConfig
    ladder: Ladder
    executor: Any
    decomposer: Optional[TextPolicy] = None  # None: the few-shot prompt on a pool model
    allocator: Optional[TextPolicy] = None  # None: the heuristic

    def decompose(self, questions: Sequence[str], fallback: bool = True, skip: bool = False) -> list[dict]:
        """One decomposition per question; an unparsable output falls back (``decomposer.fallback``) or, with
        ``skip``, comes back with ``steps`` None."""
        d = self.cfg.decomposer
        if self.decomposer is not None:
            texts = [t for _, _, t in self.decomposer([decompose_prompt(q, d.examples) for q in questions])]
            by = "policy"
            bills = [None] * len(questions)  # a trained policy runs locally: nothing billed
        else:
            model = self.cfg.search.decomposer_model or self.ladder.names[-1]
            recs = self.executor.generate(model, [decompose_prompt(q, d.examples) for q in questions],
                                          max_tokens=d.max_tokens, temperature=d.eval_temperature,
                                          seeds=[self.cfg.data.seed] * len(questions))
            texts = [r.text for r in recs]
            by = f"prompted:{model}"
            bills = recs  # the prompted decomposer is a pool call and is billed like one
        out = []
        for q, t, bill in zip(questions, texts, bills):
            try:
                steps, err = parse_decomposition(t, d.min_steps, d.max_steps), None
            except FormatError as exc:
                if skip:
                    steps, err = None, str(exc)
                elif not fallback or d.fallback == "error":
                    raise
                else:
                    steps, err = [" ".join(q.split())], str(exc)
            out.append({"steps": steps, "text": t, "error": err, "by": by,
                        "cost_usd": bill.cost_usd if bill is not None else 0.0, "calls": int(bill is not None),
                        "input_tokens": bill.input_tokens if bill is not None else 0,
                        "output_tokens": bill.output_tokens if bill is not None else 0})
        return out

    def allocate(self, questions: Sequence[str], steps: Sequence[Sequence[str]], fallback: bool = True) -> list[dict]:
        a = self.cfg.allocator
        if self.allocator is None:
            return [{"allocation": heuristic_allocation(s, self.ladder, a.heuristic_thresholds), "text": None,
                     "error": None, "by": "heuristic"} for s in steps]
        prompts = [allocate_prompt(q, s, self.ladder) for q, s in zip(questions, steps)]
        texts = [t for _, _, t in self.allocator(prompts)]
        out = []
        for s, t in zip(steps, texts):
            try:
                alloc, err = parse_allocation(t, len(s), len(self.ladder)), None
            except FormatError as exc:
                if not fallback or a.fallback == "error":
                    raise
                err = str(exc)
                alloc = (heuristic_allocation(s, self.ladder, a.heuristic_thresholds) if a.fallback == "heuristic"
                         else [self.ladder.top] * len(s))
            out.append({"allocation": alloc, "text": t, "error": err, "by": "policy"})
        return out

    def run(self, questions: Sequence[str], golds: Optional[Sequence[Any]] = None) -> list[dict]:
        golds = list(golds) if golds is not None else [None] * len(questions)
        decs = self.decompose(questions)
        allocs = self.allocate(questions, [d["steps"] for d in decs])
        res = self.executor.run_plans([(q, d["steps"], a["allocation"], g)
                                       for q, d, a, g in zip(questions, decs, allocs, golds)])
        out = []
        for d, a, r in zip(decs, allocs, res):
            s = r.summary()
            # the plan's bill includes a prompted (pool-model) decomposition; execution_cost_usd is the subtasks'
            s.update({"execution_cost_usd": s["cost_usd"], "decomposition_cost_usd": d["cost_usd"],
                      "cost_usd": s["cost_usd"] + d["cost_usd"], "calls": s["calls"] + d["calls"],
                      "input_tokens": s["input_tokens"] + d["input_tokens"],
                      "output_tokens": s["output_tokens"] + d["output_tokens"]})
            s.update({"decomposer": d["by"], "decomposition_text": d["text"], "decomposition_error": d["error"],
                      "allocator": a["by"], "allocation_text": a["text"], "allocation_error": a["error"],
                      "allocation": r.allocation, "models": r.models})
            out.append(s)
        return out


def load_text_policy(path: Optional[str], cfg: R2ReasonerConfig, role: str, temperature: float) -> Optional[TextPolicy]:
    if not path:
        return None
    from routecraft.train.policy import load_policy

    model, tok = load_policy(path, dtype=cfg.grpo.rl.dtype, threads=cfg.grpo.rl.threads)
    model.eval()
    if role == "decomposer":
        return TextPolicy(model, tok, temperature=temperature, max_tokens=cfg.decomposer.max_tokens,
                          stop=DECOMPOSER_STOP)
    return TextPolicy(model, tok, temperature=temperature, max_tokens=cfg.allocator.max_tokens, stop=ALLOCATOR_STOP)


@contextlib.contextmanager
def pool_executor(cfg: R2ReasonerConfig, cache_path: str | Path, base_urls: Optional[dict[str, str]] = None,
                  **kw: Any):
    """(pool, ladder, executor) with the pool's local models served (``backends``) or at ``base_urls``."""
    from routecraft.routers.r2_reasoner.executor import ExecutionCache, Executor
    from routecraft.routers.router_r1.backends import serve_backends

    pool = cfg.resolve_pool()
    ladder = make_ladder(cfg, pool)
    cache = ExecutionCache(cache_path)
    ctx = contextlib.nullcontext(base_urls) if base_urls is not None else serve_backends(
        pool, cfg.backends.mode, threads=cfg.backends.threads, parallel=cfg.backends.parallel, ctx=cfg.backends.ctx)
    try:
        with ctx as urls:
            yield pool, ladder, Executor.from_config(cfg, pool, ladder, urls, cache, **kw)
    finally:
        cache.close()


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
            from routecraft.train.grpo import log_rollouts

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
    from routecraft.routers.r2_reasoner.search import sft_examples
    from routecraft.train.policy import is_hf_folder, load_policy
    from routecraft.train.sft import sft_trl

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
    the pool, and the reward of §1.4 goes into the sample's info."""
    from routecraft.train.grpo import RolloutSample

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


def train_r2_reasoner(config_path: str | Path | None, out: str | Path, resume: bool = True,
                      overrides: Optional[dict] = None, base_urls: Optional[dict[str, str]] = None) -> Path:
    """Search → SFT → alternating GRPO; returns ``out`` (a router artifact). See the module docstring."""
    import torch

    from routecraft.routers.r2_reasoner.router import R2Reasoner
    from routecraft.routers.r2_reasoner.search import read_labels, search_labels
    from routecraft.train.curves import plot_curves
    from routecraft.train.grpo import run_grpo
    from routecraft.train.policy import is_hf_folder, load_policy

    cfg = load_config(config_path, overrides)
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
    r = R2Reasoner(decomposer=paths["decomposer"], allocator=paths["allocator"], config=cfg.model_dump(),
                   stages={"sft": sft_paths, "final": dict(paths)}, cache=str(cache.resolve()))
    r.save(out)
    return out


# ---------------------------------------------------------------------------------------------------- evaluation

def evaluate_pipeline(pipe: Pipeline, rows: Sequence[dict], *, batch_size: int = 8,
                      out_jsonl: Optional[str | Path] = None) -> dict:
    """Accuracy, cost per question, subtasks per question, format errors and models per subtask on ``rows``."""
    from routecraft.routers._multistep import evaluate_in_batches

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


def format_plan(s: dict) -> str:
    """A readable rendering of one routed plan (``routecraft route`` and ``python -m ... route``)."""
    lines = [f"question: {s['question']}",
             f"decomposer: {s.get('decomposer')}"
             + (f", ${s['decomposition_cost_usd']:.3g}" if s.get("decomposition_cost_usd") else "")
             + (f"  (fallback: {s['decomposition_error']})" if s.get("decomposition_error") else ""),
             f"allocator: {s.get('allocator')}" + (f"  (fallback: {s['allocation_error']})"
                                                   if s.get("allocation_error") else "")]
    for t in s["subtasks"]:
        ans = " ".join(str(t["answer"]).split())
        cost = t.get("cost_usd")
        lines.append(f"  {t['index']}. [{t['model']}{'' if cost is None else f', ${cost:.3g}'}] {t['subtask']}")
        lines.append(f"       -> {ans[:200]}{'…' if len(ans) > 200 else ''}")
    lines.append(f"final ({s['final_model']}): {' '.join(str(s['final_text']).split())[:200]}")
    lines.append(f"answer: {s['answer']}  [{s['calls']} calls, {s['input_tokens']}+{s['output_tokens']} tokens, "
                 f"${s['cost_usd']:.3g}]")
    return "\n".join(lines)
