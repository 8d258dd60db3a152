"""Where a Router-R1 policy's accuracy comes from: per evaluation JSONL (``python -m routecraft.routers.router_r1 eval
... --out FILE``), the models it called, how often the last number of the last ``<information>`` reply was right,
how often the policy's answer equals that number, and its exact match.

    python benchmarks/router_r1_replies.py runs/rr1-eval-a0-s5.jsonl runs/rr1-eval-warm.jsonl
    python benchmarks/router_r1_replies.py --rollouts runs/rr1-a0/rollouts.jsonl     # calls per model, per step

(Rollout logs written before 2026-11-24 number steps from 0, the step's global_step; later ones as metrics.jsonl.)
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

from routecraft.data.importers.common import read_jsonl
from routecraft.data.schema import DataValidationError
from routecraft.strategies.graders import gsm8k_match

INFO = re.compile(r"<information>(.*?)</information>", re.S)
NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")


def last_reply_number(response: str) -> str | None:
    infos = INFO.findall(response or "")
    nums = NUMBER.findall(infos[-1]) if infos else []
    return nums[-1].replace(",", "").rstrip(".") if nums else None


def summarise(path: Path) -> dict:
    rows = read_jsonl(path)
    n = len(rows)
    if not n:
        raise ValueError(f"{path}: no rows")
    reply_right = copied = 0
    for r in rows:
        num = last_reply_number(r.get("response", ""))
        reply_right += bool(num is not None and gsm8k_match(num, r["gold"]))
        copied += bool(num is not None and r.get("answer") is not None and gsm8k_match(r["answer"], num))
    calls = collections.Counter(c["model"] or f"unknown:{c.get('written_model')}" for r in rows for c in r["calls"])
    return {"file": str(path), "n": n, "calls_by_model": dict(calls), "reply_last_number_right": reply_right,
            "answer_equals_reply_number": copied, "exact_match": sum(float(r["score"]) for r in rows) / n,
            "format_errors": sum(not r["format_ok"] for r in rows)}


def calls_per_step(path: Path) -> dict[int, collections.Counter]:
    out: dict[int, collections.Counter] = {}
    for r in read_jsonl(path):
        c = out.setdefault(int(r.get("step") or 0), collections.Counter())
        c.update(x["model"] or "unknown" for x in r["calls"])
        c["rollouts"] += 1
    return dict(sorted(out.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("evals", nargs="+", type=Path)
    ap.add_argument("--rollouts", action="store_true", help="the files are training rollout logs: calls per step")
    args = ap.parse_args(argv)
    for p in args.evals:
        try:
            res = calls_per_step(p) if args.rollouts else summarise(p)
        except (OSError, ValueError, DataValidationError, KeyError) as exc:
            print(f"error: {p}: {exc}", file=sys.stderr)
            return 2
        if args.rollouts:
            for step, c in res.items():
                print(f"{p} step {step}: {c.pop('rollouts')} rollouts, calls {dict(c)}")
            continue
        s = res
        print(f"{s['file']}: n={s['n']} exact match {s['exact_match']:.3f}; reply's last number right "
              f"{s['reply_last_number_right']}/{s['n']}; answer = reply's number {s['answer_equals_reply_number']}"
              f"/{s['n']}; format errors {s['format_errors']}; calls {s['calls_by_model']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
