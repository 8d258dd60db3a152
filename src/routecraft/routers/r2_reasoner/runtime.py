"""Running R2-Reasoner on the pool, shared by routing (``router.py``) and training (``training.py``): the model ladder,
the text policies (decomposer, allocator) loaded for inference, the decompose → allocate → execute pipeline, the pool
executor, and the readable rendering of a plan."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from routecraft.routers.r2_reasoner.config import R2ReasonerConfig
from routecraft.routers.r2_reasoner.executor import ExecutionCache, Executor
from routecraft.routers.r2_reasoner.protocol import (
    FormatError,
    Ladder,
    allocate_prompt,
    decompose_prompt,
    heuristic_allocation,
    parse_allocation,
    parse_decomposition,
)
from routecraft.routers.router_r1.backends import serve_backends
from routecraft.routers.router_r1.rollout import HFPolicy
from routecraft.train.policy import load_policy

DECOMPOSER_STOP = ("\nQuestion:", "\n\n\n")
ALLOCATOR_STOP = ("]",)


def make_ladder(cfg: R2ReasonerConfig, pool: Any) -> Ladder:
    names = cfg.models or [m.name for m in pool.models if m.instruct and m.name != cfg.search.decomposer_model]
    return Ladder.from_pool(pool, names, cfg.search.groups)


# ---------------------------------------------------------------------------------------------------- policies

class TextPolicy:
    """A transformers causal LM that answers one chat prompt (decomposer or allocator): batched generation with
    stop strings (``HFPolicy`` of Router-R1), returning (prompt ids, completion ids, text)."""

    def __init__(self, model: Any, tokenizer: Any, *, temperature: float, max_tokens: int,
                 stop: Sequence[str]) -> None:
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


# ---------------------------------------------------------------------------------------------------- formatting

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
