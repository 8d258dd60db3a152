"""``python -m routecraft.routers.router_r1 {train,eval,route}`` — also the entry for multi-GPU training::

    accelerate launch --num_processes 4 -m routecraft.routers.router_r1 train --config cfg.yaml --out runs/rr1

Options: ``--set section.field=value`` (repeatable) overrides the config, e.g. ``--set train.max_steps=10``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m routecraft.routers.router_r1")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a policy (GRPO); resumes from the newest checkpoint in --out")
    t.add_argument("--config", default=None, help="config YAML (default: the built-in CPU config)")
    t.add_argument("--out", required=True)
    t.add_argument("--no-resume", action="store_true")
    t.add_argument("--set", action="append", default=[])
    e = sub.add_parser("eval", help="held-out exact match, calls and cost per question of a policy")
    e.add_argument("policy", help="artifact folder, HF policy folder or local model name (untrained)")
    e.add_argument("--config", default=None)
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--out", default=None, help="per-question JSONL")
    e.add_argument("--set", action="append", default=[])
    r = sub.add_parser("route", help="run one question and print the trajectory")
    r.add_argument("artifact")
    r.add_argument("question")
    r.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    # imported after parsing, so that `--help` and a usage error answer at once (these pull in pandas and the pool)
    from routecraft.routers.multistep import merge, parse_sets
    from routecraft.routers.router_r1.config import ConfigError, RouterR1Config, load_config
    from routecraft.routers.router_r1.router import route_router_r1, train_router_r1
    from routecraft.routers.router_r1.runtime import format_trajectory
    from routecraft.routers.router_r1.training import eval_rows, evaluate_router_r1
    from routecraft.train.policy import PolicyLoadError

    try:
        if args.cmd == "train":
            out = train_router_r1(args.config, args.out, resume=not args.no_resume, overrides=parse_sets(args.set))
            print(f"trained router-r1 artifact: {out}")
        elif args.cmd == "eval":
            policy = args.policy
            sets = parse_sets(args.set)
            if (Path(policy) / "router.json").is_file() and args.config is None:
                meta = json.loads((Path(policy) / "router.json").read_text())
                cfg = RouterR1Config.model_validate(merge(meta["params"]["config"], sets))
                policy = str(Path(policy) / "policy")
            else:
                if (Path(policy) / "router.json").is_file():
                    policy = str(Path(policy) / "policy")
                cfg = load_config(args.config, sets)
            res = evaluate_router_r1(policy, cfg, eval_rows(cfg, args.limit), out_jsonl=args.out)
            print(json.dumps(res, indent=2))
        else:
            s = route_router_r1(args.artifact, args.question)
            print(json.dumps(s, indent=2, default=str) if args.json else format_trajectory(s))
    except (ConfigError, ValueError, FileNotFoundError, PolicyLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
