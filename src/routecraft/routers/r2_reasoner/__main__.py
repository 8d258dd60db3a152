"""``python -m routecraft.routers.r2_reasoner {search,train,eval,route}``.

* ``search --out DIR``: the allocation-label search alone (resumable; ``DIR/labels.jsonl``, ``search_stats.json``).
* ``train --out DIR``: search (resumes), SFT, alternating GRPO, artifact. Multi-GPU: ``accelerate launch -m ...``.
* ``eval ARTIFACT|untrained``: held-out GSM8K accuracy and cost (``--stage sft`` for the SFT-only policies).
* ``route ARTIFACT|untrained QUESTION``: one plan (subtasks, model per subtask, cost).

``--set section.field=value`` (repeatable) overrides the config, e.g. ``--set search.decompositions=2``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m routecraft.routers.r2_reasoner")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, hlp in (("search", "allocation-label search only (resumable)"),
                      ("train", "search, SFT, alternating GRPO; resumes every stage from --out")):
        t = sub.add_parser(name, help=hlp)
        t.add_argument("--config", default=None, help="config YAML (default: the built-in CPU config)")
        t.add_argument("--out", required=True)
        t.add_argument("--set", action="append", default=[])
        if name == "train":
            t.add_argument("--no-resume", action="store_true")
    e = sub.add_parser("eval", help="held-out GSM8K accuracy, cost per question, models per subtask")
    e.add_argument("artifact", help="artifact folder, or 'untrained' (prompted decomposer + heuristic allocator)")
    e.add_argument("--config", default=None)
    e.add_argument("--stage", default="final", help="final or sft")
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--out", default=None, help="per-question JSONL")
    e.add_argument("--set", action="append", default=[])
    r = sub.add_parser("route", help="run one question and print the plan")
    r.add_argument("artifact", help="artifact folder, or 'untrained'")
    r.add_argument("question")
    r.add_argument("--config", default=None)
    r.add_argument("--stage", default="final")
    r.add_argument("--json", action="store_true")
    r.add_argument("--set", action="append", default=[])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    # imported after parsing, so that `--help` and a usage error answer at once (these pull in pandas and the pool)
    from routecraft.routers.multistep import parse_sets
    from routecraft.routers.r2_reasoner.config import ConfigError, load_config
    from routecraft.routers.r2_reasoner.executor import CallBudgetExhausted
    from routecraft.routers.r2_reasoner.router import load_r2_reasoner, train_r2_reasoner
    from routecraft.routers.r2_reasoner.runtime import format_plan, pool_executor
    from routecraft.routers.r2_reasoner.search import search_labels
    from routecraft.routers.r2_reasoner.training import eval_rows, evaluate_pipeline, train_rows
    from routecraft.train.policy import PolicyLoadError

    sets = parse_sets(args.set)
    try:
        if args.cmd == "search":
            cfg = load_config(args.config, sets)
            out = Path(args.out)
            with pool_executor(cfg, Path(cfg.cache) if cfg.cache else out / "executions.sqlite") as (_, ladder, ex):
                stats = search_labels(cfg, train_rows(cfg), out, ladder, ex,
                                      progress=lambda k, n, rec: print(f"search {k}/{n}: {rec['query_id']}",
                                                                       file=sys.stderr))
            print(json.dumps(stats, indent=2))
        elif args.cmd == "train":
            out = train_r2_reasoner(args.config, args.out, resume=not args.no_resume, overrides=sets)
            print(f"trained r2-reasoner artifact: {out}")
        elif args.cmd == "eval":
            router = load_r2_reasoner(args.artifact, args.config, sets, args.stage)
            try:
                pipe = router.ensure_running()
                res = evaluate_pipeline(pipe, eval_rows(router.config, args.limit), out_jsonl=args.out)
            finally:
                router.close()
            print(json.dumps({"artifact": args.artifact, "stage": args.stage, **res}, indent=2))
        else:
            router = load_r2_reasoner(args.artifact, args.config, sets, args.stage)
            try:
                plan = router.run(args.question)
            finally:
                router.close()
            print(json.dumps(plan, indent=2, default=str) if args.json else format_plan(plan))
    except CallBudgetExhausted as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 3
    except (ConfigError, ValueError, FileNotFoundError, PolicyLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
