"""Allocation labels by search (a grouped search, [D], guided by DoT's search in tsinghua-fib-lab/DoT @ 1d7c4fa).

``grouped_search`` is the algorithm, independent of how an allocation is executed (``evaluate(allocation) ->
(correct, cost)``), for one decomposition of one query:

0. Probe: every subtask on the cheapest model (rung 0). Its answers' token probabilities give each subtask's
   confidence (α-quantile, DoT α=0.4); if the probe is already correct it is the label (only all-top is still
   executed, as the cost reference).
1. Stage A, group level: every subtask on the top group (its top model). Wrong → the decomposition is dropped (or
   labelled all-top, ``unsolved``). Correct → greedy downgrade, most confident subtask first: move the subtask one
   group down while the final answer stays correct, then go on with the next subtask.
2. Stage B, within groups: each subtask (same order) tries the cheaper models of its group, cheapest first, and
   takes the first that keeps the final answer correct.
3. Label: the cheapest correct allocation among all executed (ties: lower rungs).

Every distinct allocation executed counts against ``max_evaluations`` (the execution budget per decomposition); an
allocation already executed is never executed again (memoised here, and each call is in the on-disk cache).

``search_labels`` drives it over training queries: sample decompositions with the few-shot prompt on a pool model
(``search.decomposer_model``, default the ladder's top), search each, and append one JSON line per finished query to
``labels.jsonl``; a rerun skips finished queries and replays cached calls, so a killed search resumes without
re-executing anything. ``search_stats.json`` reports executions (real calls, cache hits, evaluations) and time.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from routecraft.routers.r2_reasoner.executor import CallBudgetExhausted
from routecraft.routers.r2_reasoner.protocol import FormatError, Ladder, decompose_prompt, parse_decomposition

log = logging.getLogger("routecraft.routers.r2_reasoner.search")

Evaluate = Callable[[tuple[int, ...]], tuple[bool, float]]


@dataclass
class SearchOutcome:
    label: Optional[list[int]]  # the cheapest correct allocation (None: dropped)
    label_cost: Optional[float]
    label_correct: bool
    all_top_correct: Optional[bool]
    all_top_cost: Optional[float]
    evaluations: int
    budget_exhausted: bool
    order: list[int]
    trace: list[dict] = field(default_factory=list)  # every executed allocation: stage, allocation, correct, cost


class _Budget(Exception):
    pass


def grouped_search(n_steps: int, ladder: Ladder, evaluate: Evaluate, *,
                   confidences: Optional[Callable[[], Optional[Sequence[Optional[float]]]]] = None,
                   max_evaluations: int = 32, order: str = "confidence", unsolved: str = "drop",
                   probe: bool = True) -> SearchOutcome:
    """The grouped search for one decomposition (see the module docstring). ``confidences()`` is called after the
    probe and returns one confidence per subtask (None entries or None: position order)."""
    if n_steps < 1:
        raise ValueError(f"grouped search: n_steps must be ≥ 1, got {n_steps}")
    if order not in ("confidence", "position"):
        raise ValueError(f"grouped search: order must be confidence or position, got {order!r}")
    if unsolved not in ("drop", "all_top"):
        raise ValueError(f"grouped search: unsolved must be drop or all_top, got {unsolved!r}")
    seen: dict[tuple[int, ...], tuple[bool, float]] = {}
    trace: list[dict] = []

    def run(alloc: Sequence[int], stage: str) -> bool:
        key = tuple(int(a) for a in alloc)
        if key not in seen:
            if len(seen) >= max_evaluations:
                raise _Budget
            ok, cost = evaluate(key)
            seen[key] = (bool(ok), float(cost))
            trace.append({"stage": stage, "allocation": list(key), "correct": bool(ok), "cost": float(cost)})
        return seen[key][0]

    ranges = ladder.group_ranges()
    G = len(ranges)
    top = tuple([ladder.top] * n_steps)
    idx = list(range(n_steps))
    exhausted = False
    try:
        cheapest_ok = run(tuple([0] * n_steps), "probe") if probe else False
        if order == "confidence" and confidences is not None:
            conf = confidences()
            if conf is not None and len(conf) == n_steps and all(c is not None for c in conf):
                idx = sorted(range(n_steps), key=lambda i: (-float(conf[i]), i))  # most confident first
        # a correct probe is already the cheapest allocation: all-top runs only as the cost reference
        if run(top, "all_top") and not cheapest_ok:
            # Stage A: group level, greedy downgrade
            g = [G - 1] * n_steps
            for i in idx:
                while g[i] > 0:
                    trial = list(g)
                    trial[i] -= 1
                    if run([ranges[x][-1] for x in trial], "group"):
                        g = trial
                    else:
                        break
            # Stage B: within the group, cheapest first
            rungs = [ranges[x][-1] for x in g]
            for i in idx:
                for r in ranges[g[i]]:
                    if r >= rungs[i]:
                        break
                    trial = list(rungs)
                    trial[i] = r
                    if run(trial, "within"):
                        rungs = trial
                        break
    except _Budget:
        exhausted = True
    correct = [(cost, sum(a), a) for a, (ok, cost) in seen.items() if ok]
    top_res = seen.get(top)
    if correct:
        cost, _, best = min(correct)
        return SearchOutcome(list(best), cost, True, top_res[0] if top_res else None,
                             top_res[1] if top_res else None, len(seen), exhausted, idx, trace)
    if unsolved == "all_top" and top_res is not None:
        return SearchOutcome(list(top), top_res[1], False, False, top_res[1], len(seen), exhausted, idx, trace)
    return SearchOutcome(None, None, False, top_res[0] if top_res else None, top_res[1] if top_res else None,
                         len(seen), exhausted, idx, trace)


# ---------------------------------------------------------------------------------------------------- driver

def done_queries(labels_path: Path) -> set[str]:
    if not labels_path.is_file():
        return set()
    out = set()
    for i, line in enumerate(labels_path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            out.add(str(json.loads(line)["query_id"]))
        except (json.JSONDecodeError, KeyError):
            # a line cut by a kill while being written: drop it, the query is searched again (from the cache)
            log.warning("%s: line %d is incomplete; that query is searched again", labels_path, i + 1)
    return out


def _clean_tail(labels_path: Path) -> None:
    """Remove an incomplete last line (a kill during the write)."""
    if not labels_path.is_file():
        return
    text = labels_path.read_text()
    lines = text.splitlines()
    good = []
    for line in lines:
        try:
            json.loads(line)
            good.append(line)
        except json.JSONDecodeError:
            continue
    new = "".join(x + "\n" for x in good)
    if new != text:
        labels_path.write_text(new)


def search_query(row: dict, cfg: Any, ladder: Ladder, executor: Any) -> dict:
    """All sampled decompositions of one query, each searched; a JSON-ready record."""
    s, d = cfg.search, cfg.decomposer
    dec_model = s.decomposer_model or ladder.names[-1]
    prompt = decompose_prompt(row["prompt"], d.examples)
    n = s.decompositions
    temps = [0.0] + [d.temperature] * (n - 1)
    seeds = [cfg.data.seed + i for i in range(n)]
    recs = []
    for t, sd in zip(temps, seeds):  # one by one: greedy first; identical seeds/temps hit the cache
        recs += executor.generate(dec_model, [prompt], max_tokens=d.max_tokens, temperature=t, seeds=[sd])
    seen_steps: set[tuple[str, ...]] = set()
    decomps, errors = [], []
    for i, r in enumerate(recs):
        try:
            steps = parse_decomposition(r.text, d.min_steps, d.max_steps)
        except FormatError as exc:
            errors.append({"sample": i, "error": str(exc), "text": r.text[:500]})
            continue
        if tuple(steps) in seen_steps:
            continue
        seen_steps.add(tuple(steps))
        decomps.append((i, steps))
    out = []
    for i, steps in decomps:
        probe_box: dict = {}

        def evaluate(alloc: tuple[int, ...], steps=steps, probe_box=probe_box) -> tuple[bool, float]:
            res = executor.run_plan(row["prompt"], steps, list(alloc), row["gold"])
            if not probe_box:
                probe_box["res"] = res
            return bool(res.correct), res.cost_usd

        def confidences(probe_box=probe_box, steps=steps):
            res = probe_box.get("res")
            if res is None:
                return None
            return [c.confidence(s.confidence_alpha) for c in res.calls[:len(steps)]]

        o = grouped_search(len(steps), ladder, evaluate, confidences=confidences, max_evaluations=s.max_evaluations,
                           order=s.order, unsolved=s.unsolved)
        out.append({"sample": i, "steps": steps, **asdict(o),
                    "label_models": [ladder.names[a] for a in o.label] if o.label is not None else None})
    return {"query_id": row["query_id"], "question": row["prompt"], "gold": row["gold"], "decomposer": dec_model,
            "decompositions": out, "format_errors": errors}


def search_labels(cfg: Any, rows: Sequence[dict], out: str | Path, ladder: Ladder, executor: Any,
                  progress: Optional[Callable[[int, int, dict], None]] = None) -> dict:
    """Search labels for ``rows`` ({query_id, prompt, gold}); resumable. Returns (and writes) the statistics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels_path = out / "labels.jsonl"
    stats_path = out / "search_stats.json"
    _clean_tail(labels_path)
    labels_path.touch()
    done = done_queries(labels_path)
    prev = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    t0 = time.time()
    evaluations = 0
    finished = 0
    interrupted = None
    todo = [r for r in rows if str(r["query_id"]) not in done]
    try:
        for k, row in enumerate(todo):
            rec = search_query(row, cfg, ladder, executor)
            with open(labels_path, "a") as f:
                f.write(json.dumps(rec, default=str) + "\n")
            evaluations += sum(d["evaluations"] for d in rec["decompositions"])
            finished += 1
            if progress is not None:
                progress(k + 1, len(todo), rec)
    except CallBudgetExhausted as exc:
        interrupted = str(exc)
    st = executor.stats()
    stats = {"queries": len(rows), "done": len(done) + finished, "finished_this_run": finished,
             "evaluations_this_run": evaluations, "real_calls_this_run": st["real_calls"],
             "cache_hits_this_run": st["cache_hits"], "wall_s_this_run": round(time.time() - t0, 2),
             "call_seconds_this_run": st["call_seconds"], "seconds_per_real_call": st["seconds_per_call"],
             "interrupted": interrupted,
             "total_real_calls": prev.get("total_real_calls", 0) + st["real_calls"],
             "total_wall_s": round(prev.get("total_wall_s", 0.0) + time.time() - t0, 2),
             "cache_entries": len(executor.cache)}
    stats.update(label_summary(read_labels(labels_path), ladder))
    stats_path.write_text(json.dumps(stats, indent=2))
    if interrupted:
        raise CallBudgetExhausted(interrupted)
    return stats


def read_labels(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no labels at {p} (run the search first)")
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def label_summary(records: Sequence[dict], ladder: Ladder) -> dict:
    """Labelled decompositions, the labels' cost against all-top, and the models per subtask of the labels."""
    n_dec = labelled = 0
    cost = top_cost = 0.0
    models: dict[str, int] = {}
    for r in records:
        for d in r["decompositions"]:
            n_dec += 1
            if d["label"] is None or not d["label_correct"]:
                continue
            labelled += 1
            cost += d["label_cost"]
            top_cost += d["all_top_cost"] or 0.0
            for m in d["label_models"]:
                models[m] = models.get(m, 0) + 1
    return {"decompositions": n_dec, "labelled": labelled,
            "queries_with_label": sum(any(d["label"] is not None and d["label_correct"] for d in r["decompositions"])
                                      for r in records),
            "label_cost_usd": cost, "all_top_cost_usd": top_cost,
            "label_cost_saving": (1 - cost / top_cost) if top_cost > 0 else None, "label_models": models}


def sft_examples(records: Sequence[dict]) -> tuple[list[tuple[str, list[str]]], list[tuple[str, list[str], list[int]]]]:
    """(decomposer pairs (question, steps), allocator triples (question, steps, label)) from searched labels:
    the decomposer learns, per query, the correct decomposition with the cheapest label; the allocator learns every
    correct (decomposition, label)."""
    dec, alloc = [], []
    for r in records:
        good = [d for d in r["decompositions"] if d["label"] is not None and d["label_correct"]]
        if not good:
            continue
        best = min(good, key=lambda d: (d["label_cost"], d["sample"]))
        dec.append((r["question"], best["steps"]))
        for d in good:
            alloc.append((r["question"], d["steps"], d["label"]))
    return dec, alloc
