"""Running a Router-R1 policy on the pool, shared by routing (``router.py``) and training (``training.py``): the pool
caller, the rollout engine, the policy loaded for inference, and the readable rendering of a trajectory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from routecraft.routers.router_r1.backends import PoolCaller
from routecraft.routers.router_r1.config import RouterR1Config
from routecraft.routers.router_r1.rollout import HFPolicy, RolloutEngine, RolloutSettings
from routecraft.train.policy import load_policy


def make_caller(cfg: RouterR1Config, pool: Any, base_urls: dict[str, str]) -> PoolCaller:
    c = cfg.call
    return PoolCaller(pool, base_urls, max_tokens=c.max_tokens, temperature=c.temperature, top_p=c.top_p,
                      seed=c.seed, max_concurrency=c.max_concurrency, timeout=c.timeout, max_retries=c.max_retries,
                      targets=cfg.call_targets(), task=cfg.data.dataset)


def make_engine(cfg: RouterR1Config, model: Any, tokenizer: Any, caller: Any, temperature: float) -> RolloutEngine:
    policy = HFPolicy(model, tokenizer, temperature=temperature, top_p=cfg.protocol.top_p)
    return RolloutEngine(policy, caller, RolloutSettings.from_config(cfg.protocol))


def load_inference_policy(path: str | Path, cfg: RouterR1Config, threads: Optional[int] = None) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) of the policy at ``path`` (a folder or a local model name)."""
    model, tok = load_policy(path, dtype=cfg.train.dtype, threads=threads)
    model.eval()
    return model, tok


def format_trajectory(summary: dict) -> str:
    """A readable multi-line rendering of one routed trajectory's summary (``route_router_r1``'s result)."""
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
