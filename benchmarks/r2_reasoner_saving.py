"""How much of the searched labels' cost saving R2-Reasoner's allocator keeps, and which models it gives subtasks.

    python benchmarks/r2_reasoner_saving.py runs/r2r --stages heuristic,sft,final \
        --eval "final=runs/r2r-eval-final.jsonl" --eval "sft=runs/r2r-eval-sft.jsonl" --out runs/r2r-saving

* Training labels (``ARTIFACT/labels.jsonl``): for every labelled decomposition (its cheapest correct allocation
  found by the search), each allocator of ``--stages`` (``heuristic``: the untrained rule; ``sft``/``final``: the
  artifact's stages) allocates the same subtasks greedily; the plan is executed on the pool (through the artifact's
  execution cache, so allocations the search already ran cost nothing). Reported: saving against all-top of the
  labels and of the allocator, the share of the labels' saving kept ((top − allocator) / (top − label), summed over
  decompositions), how often the allocator's plan is still correct, and how often it equals the label.
* Held-out (``--eval STAGE=FILE``, the per-question JSONL of ``python -m routecraft.routers.r2_reasoner eval``): each
  evaluated plan's subtasks are also executed all-top, so its saving is measured against the same decomposition.
* Models per subtask: in the labels, and in every allocator's plans.

Writes ``OUT/saving.json`` and ``OUT/saving.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _read_eval(path: Path) -> list[dict]:
    """A per-question eval JSONL (the project's reader; its errors name the file and row)."""
    from routecraft.data.importers.common import read_jsonl
    from routecraft.data.schema import DataValidationError

    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    try:
        return read_jsonl(path)
    except DataValidationError as exc:
        raise SystemExit(str(exc)) from None


def _count(models: list[list[str]]) -> dict[str, int]:
    c: dict[str, int] = {}
    for ms in models:
        for m in ms:
            c[m] = c.get(m, 0) + 1
    return dict(sorted(c.items(), key=lambda kv: -kv[1]))


def labelled(records: list[dict]) -> list[dict]:
    """One row per labelled decomposition: question, gold, steps, label, its cost and all-top's."""
    rows = []
    for r in records:
        for d in r["decompositions"]:
            if d["label"] is None or not d["label_correct"] or not d.get("all_top_cost"):
                continue
            rows.append({"query_id": r["query_id"], "question": r["question"], "gold": r["gold"],
                         "steps": d["steps"], "label": d["label"], "label_cost": d["label_cost"],
                         "top_cost": d["all_top_cost"], "label_models": d["label_models"]})
    return rows


def train_side(pipe, rows: list[dict]) -> dict:
    allocs = pipe.allocate([r["question"] for r in rows], [r["steps"] for r in rows])
    res = pipe.executor.run_plans([(r["question"], r["steps"], a["allocation"], r["gold"])
                                   for r, a in zip(rows, allocs)])
    top = sum(r["top_cost"] for r in rows)
    lab = sum(r["label_cost"] for r in rows)
    cost = sum(x.cost_usd for x in res)
    return {"decompositions": len(rows), "top_cost": top, "label_cost": lab, "allocator_cost": cost,
            "label_saving": 1 - lab / top, "allocator_saving": 1 - cost / top,
            "saving_kept": (top - cost) / (top - lab) if top > lab else None,
            "still_correct": sum(bool(x.correct) for x in res) / len(rows),
            "equals_label": sum(list(x.allocation) == list(r["label"]) for x, r in zip(res, rows)) / len(rows),
            "allocation_errors": sum(a["error"] is not None for a in allocs),
            "models_per_subtask": _count([x.models for x in res])}


def heldout_side(executor, ladder, recs: list[dict]) -> dict:
    """Each evaluated plan against all-top on the same subtasks."""
    plans = [r for r in recs if r.get("subtasks")]
    steps = [[t["subtask"] for t in r["subtasks"]] for r in plans]
    tops = executor.run_plans([(r["question"], s, [ladder.top] * len(s), r["gold"]) for r, s in zip(plans, steps)])
    # the subtasks' execution only (a prompted decomposer's call is the same for both plans)
    cost = sum(r.get("execution_cost_usd", r["cost_usd"]) for r in plans)
    top = sum(t.cost_usd for t in tops)
    return {"n": len(plans), "accuracy": sum(bool(r["correct"]) for r in plans) / len(plans),
            "all_top_accuracy": sum(bool(t.correct) for t in tops) / len(plans),
            "cost_usd_per_question": cost / len(plans), "all_top_cost_usd_per_question": top / len(plans),
            "saving": 1 - cost / top if top else None,
            "models_per_subtask": _count([r["models"] for r in plans])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact")
    ap.add_argument("--stages", default="heuristic,sft,final")
    ap.add_argument("--eval", action="append", default=[], help="STAGE=FILE (held-out per-question JSONL)")
    ap.add_argument("--set", action="append", default=[], help="config override for the executor, e.g. "
                                                               "backends.threads=2")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from routecraft.routers.multistep import parse_sets
    from routecraft.routers.r2_reasoner.router import load_r2_reasoner
    from routecraft.routers.r2_reasoner.search import read_labels

    art = Path(args.artifact)
    try:
        rows = labelled(read_labels(art / "labels.jsonl"))
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from None
    if not rows:
        raise SystemExit(f"{art / 'labels.jsonl'}: no labelled decomposition")
    evals = {}
    for spec in args.eval:
        label, sep, path = spec.partition("=")
        if not sep:
            raise SystemExit(f"--eval {spec!r}: expected STAGE=FILE")
        evals[label] = _read_eval(Path(path))
    sets = parse_sets(args.set)
    stages = [s for s in args.stages.split(",") if s]
    t0 = time.time()
    result: dict = {"artifact": str(art), "labels": {"decompositions": len(rows),
                                                    "models_per_subtask": _count([r["label_models"] for r in rows])},
                    "train": {}, "heldout": {}}
    for stage in stages:
        router = load_r2_reasoner(str(art), None, sets, "sft" if stage == "heuristic" else stage)
        try:
            pipe = router.ensure_running()
            if stage == "heuristic":
                pipe.allocator = None
            print(f"{stage}: allocating {len(rows)} labelled decompositions", file=sys.stderr)
            result["train"][stage] = train_side(pipe, rows)
            if stage in evals:
                print(f"{stage}: all-top of {len(evals[stage])} held-out plans", file=sys.stderr)
                result["heldout"][stage] = heldout_side(pipe.executor, pipe.ladder, evals[stage])
            result.setdefault("executor", {})[stage] = pipe.executor.stats()
        finally:
            router.close()
    result["wall_s"] = round(time.time() - t0, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "saving.json").write_text(json.dumps(result, indent=2))
    lines = [f"Training labels: {len(rows)} labelled decompositions; models per subtask in the labels: "
             f"{result['labels']['models_per_subtask']}", "",
             "| allocator | saving vs all-top (labels: {:.1%}) | share of the labels' saving kept | plan still "
             "correct | equals the label | models per subtask |".format(1 - sum(r['label_cost'] for r in rows)
                                                                        / sum(r['top_cost'] for r in rows)),
             "|---|---|---|---|---|---|"]
    for stage, t in result["train"].items():
        kept = "—" if t["saving_kept"] is None else f"{t['saving_kept']:.0%}"
        lines.append(f"| {stage} | {t['allocator_saving']:.1%} | {kept} | {t['still_correct']:.0%} | "
                     f"{t['equals_label']:.0%} | {t['models_per_subtask']} |")
    if result["heldout"]:
        lines += ["", "| held-out plans | n | accuracy | all-top on the same subtasks | cost / q | all-top cost / q | "
                      "saving | models per subtask |", "|---|---|---|---|---|---|---|---|"]
        for stage, h in result["heldout"].items():
            lines.append(f"| {stage} | {h['n']} | {h['accuracy']:.3f} | {h['all_top_accuracy']:.3f} | "
                         f"{h['cost_usd_per_question']:.2e} | {h['all_top_cost_usd_per_question']:.2e} | "
                         f"{h['saving']:.1%} | {h['models_per_subtask']} |")
    (out / "saving.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
