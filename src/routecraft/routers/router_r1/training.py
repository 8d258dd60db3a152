"""Router-R1 training and evaluation.

* ``train_policy(cfg, out, resume=True)``: optional supervised warm start, then GRPO (TRL) with the Router-R1
  rollout (information masked), the paper's reward, checkpoints and resume, a metrics log (``metrics.jsonl``) and a
  curve (``curves.png``); returns the trained policy folder. ``router.train_router_r1`` (the one training entry
  point: ``routecraft train --router router-r1``, ``python -m routecraft.routers.router_r1 train``) calls it and
  writes the router artifact.
* ``evaluate_router_r1(policy, config, questions)``: held-out exact match, cost, calls per question.

Output folder::

    out/config.yaml          the validated configuration
    out/metrics.jsonl        one record per step (TRL's metrics + router_r1/*), warm-start records (stage)
    out/rollouts.jsonl       every training trajectory: step, question, response, reward parts, calls
    out/curves.png           reward, format errors, outcome, calls and cost per question against the step
    out/checkpoints/         TRL checkpoints (resume)
    out/warm_start/          the policy after the warm start (if any)
    out/policy/              the trained policy (HF folder)
    out/router.json, state.safetensors   the RouterR1 artifact (load_router), written by ``router.train_router_r1``
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from routecraft.routers.multistep import evaluate_in_batches, gsm8k_rows, heldout_rows
from routecraft.routers.router_r1.backends import serve_backends
from routecraft.routers.router_r1.config import RouterR1Config, load_config
from routecraft.routers.router_r1.protocol import check_format, information_block
from routecraft.routers.router_r1.reward import RouterR1Reward, outcome_score
from routecraft.routers.router_r1.runtime import load_inference_policy, make_caller, make_engine
from routecraft.train.curves import plot_curves
from routecraft.train.grpo import RolloutSample, last_checkpoint, log_rollouts, run_grpo, truncate_jsonl
from routecraft.train.masking import flatten
from routecraft.train.policy import is_hf_folder, load_policy
from routecraft.train.sft import Demo, warm_start

log = logging.getLogger("routecraft.routers.router_r1")

PANELS = [("reward", "reward (mean)"), ("router_r1/format_error", "format-error rate"),
          ("router_r1/outcome", "exact match (train)"), ("router_r1/calls", "calls per question"),
          ("router_r1/cost_usd", "cost per question (USD)"), ("router_r1/policy_tokens", "policy tokens")]


def train_rows(cfg: RouterR1Config) -> list[dict]:
    rows = gsm8k_rows("train")
    if cfg.data.train_limit is not None and cfg.data.train_limit < len(rows):
        rows = random.Random(cfg.data.seed).sample(rows, cfg.data.train_limit)
    return rows


def eval_rows(cfg: RouterR1Config, limit: Optional[int] = None) -> list[dict]:
    """Held-out questions for ``cfg`` (``data.eval_limit`` or ``limit``, chosen by ``data.eval_select``)."""
    return heldout_rows(limit or cfg.data.eval_limit, cfg.data.eval_select, cfg.data.seed)


# ---------------------------------------------------------------------------------------------------- pieces

def make_reward(cfg: RouterR1Config, names: Sequence[str]) -> RouterR1Reward:
    r = cfg.reward
    return RouterR1Reward(names, alpha=r.alpha, metric=r.outcome, window=r.cost_window, lo_pct=r.cost_lo_pct,
                          hi_pct=r.cost_hi_pct)


def rollout_info(tr: Any) -> dict:
    """What a reward function needs of a trajectory (and what the rollouts log keeps)."""
    s = tr.summary()
    return {k: s[k] for k in ("response", "answer", "stop_reason", "n_calls", "valid_actions", "cost_usd",
                              "cost_raw", "response_tokens", "policy_tokens")} | {
        "turns": len(tr.turns), "consultations": s["consultations"],
        "calls": [{"model": c.model, "written_model": c.written_model, "query": c.query,
                   "output_tokens": c.output_tokens, "cost_usd": c.cost_usd, "error": c.error,
                   **({"candidate": c.candidate, "answer": c.answer} if c.candidate is not None else {})}
                  for c in tr.calls]}


class RouterR1RewardFunc:
    """The TRL reward function: the paper's reward on each rollout; logs its parts as ``router_r1/*`` metrics and
    every trajectory to ``rollouts_path``."""

    __name__ = "router_r1"

    def __init__(self, reward: RouterR1Reward, rollouts_path: Optional[Path] = None) -> None:
        self.reward = reward
        self.rollouts_path = rollouts_path

    def __call__(self, prompts: list, completions: list, rollout: list[dict], gold: list, task: list | None = None,
                 log_metric: Any = None, trainer_state: Any = None, **_: Any) -> list[float]:
        parts = self.reward.score([r["response"] for r in rollout], gold, [r["cost_raw"] for r in rollout], task)
        n = len(parts)
        metrics = {
            "format_error": sum(p.format_score < 0 for p in parts) / n,
            "outcome": sum(p.outcome for p in parts) / n,
            "answered": sum(p.answer is not None for p in parts) / n,
            "cost_score": sum(p.cost_score for p in parts) / n,
            "cost_raw": sum(r["cost_raw"] for r in rollout) / n,
            "cost_usd": sum(r["cost_usd"] for r in rollout) / n,
            "calls": sum(r["n_calls"] for r in rollout) / n,
            "turns": sum(r["turns"] for r in rollout) / n,
            "policy_tokens": sum(r["policy_tokens"] for r in rollout) / n,
        }
        if log_metric is not None:
            for k, v in metrics.items():
                log_metric(f"router_r1/{k}", float(v))
        if self.rollouts_path is not None:
            log_rollouts(self.rollouts_path, trainer_state, [
                {"question": q, "gold": g, "reward": p.reward, "format_violations": p.format_violations,
                 "outcome": p.outcome, "cost_score": p.cost_score, **r}
                for p, r, q, g in zip(parts, rollout, prompts, gold)])
        return [p.reward for p in parts]


# ---------------------------------------------------------------------------------------------------- warm start

_CALC = re.compile(r"<<[^>]*>>")
_REASONS = ("This needs careful arithmetic, so I will ask a model.",
            "I should check the calculation with a model.",
            "A model can work this out step by step.")


def demonstrations(cfg: RouterR1Config, engine: Any, rows: Sequence[dict], n: int, seed: int = 0) -> list:
    """Protocol demonstrations for the warm start: think → search (a random pool model, the question itself) →
    information (the reference solution; masked, context only) → think → answer (the gold number). They teach the
    format and copying the reply's result, not which model to pick (chosen uniformly)."""
    rng = random.Random(seed)
    tok = engine.tokenizer
    prefix = cfg.protocol.response_prefix
    out = []
    for row in rng.sample(list(rows), min(n, len(rows))):
        model = rng.choice(engine.names)
        sol = _CALC.sub("", row["solution"]).split("####")[0].strip()
        sol = f"{sol}\nThe answer is {row['gold']}."
        question = " ".join(row["prompt"].split())
        first = f"<think> {rng.choice(_REASONS)} </think>\n<search> {model}: {question} </search>"
        last = f"<think> The reply says the answer is {row['gold']}. </think>\n<answer> {row['gold']} </answer>"
        segments: list[tuple[list[int], bool]] = []
        if prefix:
            if not first.startswith(prefix):
                raise ValueError(f"response_prefix {prefix!r} does not start the demonstrations")
            segments.append((tok.encode(prefix, add_special_tokens=False), False))
            first = first[len(prefix):]
        segments.append((tok.encode(first, add_special_tokens=False), True))
        segments.append((tok.encode(information_block(sol), add_special_tokens=False), False))
        segments.append((tok.encode(last, add_special_tokens=False), True))
        ids, mask = flatten(segments)
        out.append(Demo(engine.prompt_ids(row["prompt"]), ids, mask))
    return out


# ---------------------------------------------------------------------------------------------------- training

def train_policy(cfg: RouterR1Config, out: str | Path, resume: bool = True) -> Path:
    """Train a Router-R1 policy into ``out``; returns the trained policy folder (``out/policy``). See the module
    docstring for the layout."""
    import torch  # heavy and only needed to train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    pool = cfg.resolve_pool()
    rows = train_rows(cfg)
    metrics_path = out / "metrics.jsonl"
    rollouts_path = out / "rollouts.jsonl"
    resuming = resume and last_checkpoint(out / "checkpoints") is not None
    warm_dir = out / "warm_start"
    reuse_warm = cfg.warmup.steps > 0 and resume and is_hf_folder(warm_dir)
    if not resuming:  # (run_grpo cuts the RL records of both logs back to the checkpoint, or empties them)
        if reuse_warm:
            truncate_jsonl(metrics_path, 0)  # keep the warm start's records
        else:
            metrics_path.unlink(missing_ok=True)
    t0 = time.time()
    with serve_backends(pool, cfg.backends.mode, threads=cfg.backends.threads, parallel=cfg.backends.parallel,
                        ctx=cfg.backends.ctx) as urls:
        caller = make_caller(cfg, pool, urls)
        start = str(warm_dir) if reuse_warm else cfg.train.policy
        model, tok = load_policy(start, dtype=cfg.train.dtype)
        if cfg.warmup.steps > 0 and start != str(warm_dir) and not resuming:
            engine = make_engine(cfg, model, tok, caller, cfg.protocol.temperature)
            demos = demonstrations(cfg, engine, rows, cfg.warmup.demos, seed=cfg.data.seed)
            warm_start(model, tok, demos, steps=cfg.warmup.steps, batch_size=cfg.warmup.batch_size,
                       learning_rate=cfg.warmup.learning_rate, seed=cfg.data.seed, log_path=metrics_path)
            model.save_pretrained(warm_dir)
            tok.save_pretrained(warm_dir)
        engine = make_engine(cfg, model, tok, caller, cfg.protocol.temperature)
        reward = make_reward(cfg, caller.names)

        def rollout(prompts: list, policy_model: Any) -> list:
            engine.policy.model = policy_model
            trajs = engine.run(prompts)
            return [RolloutSample(tr.prompt_ids, tr.completion_ids, tr.loss_mask, rollout_info(tr)) for tr in trajs]

        trainer = run_grpo(model=model, tokenizer=tok, dataset=rows, reward_funcs=[
            RouterR1RewardFunc(reward, rollouts_path)], rollout=rollout, cfg=cfg.train, out_dir=out, resume=resume,
            state_objects={"cost_normalizer": reward.normalizer}, metrics_path=metrics_path,
            rollouts_path=rollouts_path)
        policy_dir = out / "policy"
        trainer.save_model(str(policy_dir))
        tok.save_pretrained(policy_dir)
    log.info("router-r1 trained in %.0fs", time.time() - t0)
    plot_curves(metrics_path, out / "curves.png", PANELS,
                title=f"Router-R1 GRPO ({cfg.train.policy}, α={cfg.reward.alpha})")
    return policy_dir


# ---------------------------------------------------------------------------------------------------- evaluation

def evaluate_router_r1(policy: str | Path, cfg: RouterR1Config | str | Path | None, rows: Sequence[dict], *,
                       batch_size: int = 8, out_jsonl: Optional[str | Path] = None,
                       base_urls: Optional[dict[str, str]] = None) -> dict:
    """Run the policy (greedy unless ``protocol.eval_temperature``) on ``rows`` ({prompt, gold, task}); returns
    exact match (the configured outcome), cost and calls per question, format-error rate. α plays no part here: it
    shaped the policy during training."""
    if not isinstance(cfg, RouterR1Config):
        cfg = load_config(cfg)
    pool = cfg.resolve_pool()
    model, tok = load_inference_policy(policy, cfg, threads=cfg.train.threads)
    ctx = contextlib.nullcontext(base_urls) if base_urls is not None else serve_backends(
        pool, cfg.backends.mode, threads=cfg.backends.threads, parallel=cfg.backends.parallel, ctx=cfg.backends.ctx)
    with ctx as urls:
        caller = make_caller(cfg, pool, urls)
        engine = make_engine(cfg, model, tok, caller, cfg.protocol.eval_temperature)

        def run_chunk(chunk: list[dict]) -> list[dict]:
            out = []
            for row, tr in zip(chunk, engine.run([r["prompt"] for r in chunk])):
                fmt = check_format(tr.response, caller.names)
                score = outcome_score(tr.answer, row["gold"], row.get("task", "qa"), cfg.reward.outcome)
                out.append({"query_id": row.get("query_id"), "gold": row["gold"], "score": score,
                            "format_ok": fmt.ok, **rollout_info(tr)})
            return out

        recs = evaluate_in_batches(rows, run_chunk, batch_size=batch_size, out_jsonl=out_jsonl,
                                   score=lambda r: r["score"], label="exact match", log=log)
    n = len(recs)
    models: dict[str, int] = {}
    for r in recs:
        for c in r["calls"]:
            if c["model"]:
                models[c["model"]] = models.get(c["model"], 0) + 1
    return {"n": n, "exact_match": sum(r["score"] for r in recs) / n,
            "format_error": sum(not r["format_ok"] for r in recs) / n,
            "answered": sum(r["answer"] is not None for r in recs) / n,
            "calls_per_question": sum(r["n_calls"] for r in recs) / n,
            "cost_usd_per_question": sum(r["cost_usd"] for r in recs) / n,
            "cost_raw_per_question": sum(r["cost_raw"] for r in recs) / n, "calls_by_model": models}
