"""Router-R1 training, evaluation and routing entry points.

* ``train_router_r1(config_path, out, resume=True)``: optional supervised warm start, then GRPO (TRL) with the
  Router-R1 rollout (information masked), the paper's reward, checkpoints and resume, a metrics log
  (``metrics.jsonl``), a curve (``curves.png``) and a router artifact (``router.json`` + ``policy/``) in ``out``.
* ``evaluate_router_r1(policy, config, questions)``: held-out exact match, cost, calls per question.
* ``route_router_r1(artifact, question)``: one trajectory, as a JSON-ready dict (turns, calls, models, costs, answer).

Output folder::

    out/config.yaml          the validated configuration
    out/metrics.jsonl        one record per step (TRL's metrics + router_r1/*), warm-start records (stage)
    out/rollouts.jsonl       every training trajectory: step, question, response, reward parts, calls
    out/curves.png           reward, format errors, outcome, calls and cost per question against the step
    out/checkpoints/         TRL checkpoints (resume)
    out/warm_start/          the policy after the warm start (if any)
    out/policy/              the trained policy (HF folder)
    out/router.json, state.joblib   the RouterR1 artifact (load_router)
"""

from __future__ import annotations

import logging
import random
import re
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from routecraft.routers.router_r1.config import RouterR1Config, load_config
from routecraft.routers.router_r1.reward import RouterR1Reward

log = logging.getLogger("routecraft.routers.router_r1")

PANELS = [("reward", "reward (mean)"), ("router_r1/format_error", "format-error rate"),
          ("router_r1/outcome", "exact match (train)"), ("router_r1/calls", "calls per question"),
          ("router_r1/cost_usd", "cost per question (USD)"), ("router_r1/policy_tokens", "policy tokens")]


# ---------------------------------------------------------------------------------------------------- data

def gsm8k_rows(split: str) -> list[dict]:
    """GSM8K questions with gold number and the reference solution (for warm-start demonstrations)."""
    from routecraft.data.importers import _find, _read_jsonl, dataset_root, gsm8k_questions

    q = gsm8k_questions(split)
    raw = _read_jsonl(_find(dataset_root("routellm") / "gsm8k", f"{split}.jsonl"))
    if len(raw) != len(q):
        raise ValueError(f"GSM8K {split}: {len(raw)} raw rows but {len(q)} questions")
    return [{"query_id": r.query_id, "prompt": r.text, "gold": str(r.gold), "task": "gsm8k",
             "solution": str(raw[i]["answer"])} for i, r in enumerate(q.itertuples())]


def train_rows(cfg: RouterR1Config) -> list[dict]:
    rows = gsm8k_rows("train")
    if cfg.data.train_limit is not None and cfg.data.train_limit < len(rows):
        rows = random.Random(cfg.data.seed).sample(rows, cfg.data.train_limit)
    return rows


def heldout_rows(limit: int, select: str = "first", seed: int = 42) -> list[dict]:
    """Held-out questions from the GSM8K *test* split (never used in training): the first ``limit`` in file order
    (``select="first"``, the questions the collected dataset covers) or a seeded sample (``"sample"``)."""
    rows = gsm8k_rows("test")
    n = min(limit, len(rows))
    if select == "first":
        return rows[:n]
    if select == "sample":
        return random.Random(seed + 1).sample(rows, n)
    raise ValueError(f"data.eval_select must be 'first' or 'sample', got {select!r}")


def eval_rows(cfg: RouterR1Config, limit: Optional[int] = None) -> list[dict]:
    """Held-out questions for ``cfg`` (``data.eval_limit`` or ``limit``, chosen by ``data.eval_select``)."""
    return heldout_rows(limit or cfg.data.eval_limit, cfg.data.eval_select, cfg.data.seed)


# ---------------------------------------------------------------------------------------------------- pieces

def make_caller(cfg: RouterR1Config, pool: Any, base_urls: dict[str, str]):
    from routecraft.routers.router_r1.backends import PoolCaller

    c = cfg.call
    return PoolCaller(pool, base_urls, max_tokens=c.max_tokens, temperature=c.temperature, top_p=c.top_p,
                      seed=c.seed, max_concurrency=c.max_concurrency, timeout=c.timeout, max_retries=c.max_retries)


def make_engine(cfg: RouterR1Config, model: Any, tokenizer: Any, caller: Any, temperature: float):
    from routecraft.routers.router_r1.rollout import HFPolicy, RolloutEngine, RolloutSettings

    policy = HFPolicy(model, tokenizer, temperature=temperature, top_p=cfg.protocol.top_p)
    return RolloutEngine(policy, caller, RolloutSettings.from_config(cfg.protocol))


def make_reward(cfg: RouterR1Config, names: Sequence[str]) -> RouterR1Reward:
    r = cfg.reward
    return RouterR1Reward(names, alpha=r.alpha, metric=r.outcome, window=r.cost_window, lo_pct=r.cost_lo_pct,
                          hi_pct=r.cost_hi_pct)


def rollout_info(tr: Any) -> dict:
    """What a reward function needs of a trajectory (and what the rollouts log keeps)."""
    s = tr.summary()
    return {k: s[k] for k in ("response", "answer", "stop_reason", "n_calls", "valid_actions", "cost_usd",
                              "cost_raw", "response_tokens", "policy_tokens")} | {
        "turns": len(tr.turns), "calls": [{"model": c.model, "written_model": c.written_model, "query": c.query,
                                           "output_tokens": c.output_tokens, "cost_usd": c.cost_usd,
                                           "error": c.error} for c in tr.calls]}


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
            from routecraft.train.grpo import log_rollouts

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
    from routecraft.train.sft import Demo

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
        from routecraft.routers.router_r1.protocol import information_block

        segments.append((tok.encode(information_block(sol), add_special_tokens=False), False))
        segments.append((tok.encode(last, add_special_tokens=False), True))
        from routecraft.train.masking import flatten

        ids, mask = flatten(segments)
        out.append(Demo(engine.prompt_ids(row["prompt"]), ids, mask))
    return out


# ---------------------------------------------------------------------------------------------------- training

def train_router_r1(config_path: str | Path | None, out: str | Path, resume: bool = True,
                    overrides: Optional[dict] = None) -> Path:
    """Train a Router-R1 policy; returns ``out`` (a router artifact). See the module docstring for the layout."""
    import torch

    from routecraft.routers.router_r1.backends import serve_backends
    from routecraft.routers.router_r1.router import RouterR1
    from routecraft.train.curves import plot_curves
    from routecraft.train.grpo import RolloutSample, last_checkpoint, run_grpo, truncate_jsonl
    from routecraft.train.policy import is_hf_folder, load_policy
    from routecraft.train.sft import warm_start

    cfg = load_config(config_path, overrides)
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
    RouterR1(policy=str(policy_dir.resolve()), config=cfg.model_dump()).save(out)
    return out


# ---------------------------------------------------------------------------------------------------- evaluation

def evaluate_router_r1(policy: str | Path, cfg: RouterR1Config | str | Path | None, rows: Sequence[dict], *,
                       batch_size: int = 8, out_jsonl: Optional[str | Path] = None,
                       base_urls: Optional[dict[str, str]] = None) -> dict:
    """Run the policy (greedy unless ``protocol.eval_temperature``) on ``rows`` ({prompt, gold, task}); returns
    exact match (the configured outcome), cost and calls per question, format-error rate. α plays no part here: it
    shaped the policy during training."""
    import contextlib

    from routecraft.routers._multistep import evaluate_in_batches
    from routecraft.routers.router_r1.backends import serve_backends
    from routecraft.routers.router_r1.protocol import check_format
    from routecraft.routers.router_r1.reward import outcome_score
    from routecraft.train.policy import load_policy

    if not isinstance(cfg, RouterR1Config):
        cfg = load_config(cfg)
    pool = cfg.resolve_pool()
    model, tok = load_policy(policy, dtype=cfg.train.dtype, threads=cfg.train.threads)
    model.eval()
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


# ---------------------------------------------------------------------------------------------------- routing

def route_router_r1(artifact: str | Path, question: str) -> dict:
    """Load a Router-R1 artifact, run one question, return the whole trajectory (turns, calls with model, sub-query,
    response, tokens and cost; the final answer; totals)."""
    from routecraft.routers.router_r1.router import RouterR1

    router = RouterR1.from_artifact(artifact)
    try:
        return router.run(question).summary()
    finally:
        router.close()


def format_trajectory(summary: dict) -> str:
    """A readable multi-line rendering of ``route_router_r1``'s result."""
    lines = [f"question: {summary['question']}"]
    calls = summary["calls"]
    for t in summary["turns"]:
        lines.append(f"turn {t['index'] + 1}{' (final)' if t.get('final') else ''}: {t['text'].strip()}")
        if t.get("call") is not None:
            c = calls[t["call"]]
            resp = (c["response"] or "None").strip().replace("\n", " ")
            lines.append(f"  -> {c['model'] or c['written_model']} ({c['output_tokens']} output tokens, "
                         f"${c['cost_usd']:.3g}{', ' + c['error'] if c['error'] else ''}): "
                         f"{resp[:300]}{'…' if len(resp) > 300 else ''}")
        elif t.get("error"):
            lines.append(f"  (no call: {t['error']})")
    lines.append(f"answer: {summary['answer']}  [{summary['stop_reason']}; {summary['n_calls']} calls, "
                 f"${summary['cost_usd']:.3g}]")
    return "\n".join(lines)
