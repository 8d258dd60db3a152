"""Training curves: read the JSONL metrics log of a run and plot chosen series against the step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional, Sequence


def read_metrics(path: str | Path, stage: str = "rl") -> list[dict]:
    """The records of one stage (``rl``: records without a ``stage`` field) in step order, the last record of a step
    winning (a resumed run may repeat a step)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no metrics log at {p}")
    by_step: dict[int, dict] = {}
    for i, line in enumerate(p.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: line {i + 1} is not JSON: {exc}") from None
        if rec.get("stage", "rl") != stage or "step" not in rec:
            continue
        by_step.setdefault(int(rec["step"]), {}).update(rec)
    return [by_step[k] for k in sorted(by_step)]


def series(records: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)):
            xs.append(int(r["step"]))
            ys.append(float(v))
    return xs, ys


def plot_curves(path: str | Path | Mapping[str, str | Path], out: str | Path, panels: Sequence[tuple[str, str]],
                title: Optional[str] = None, smooth: int = 5) -> Path:
    """One panel per (key, label): the raw values and a trailing moving average of ``smooth`` steps. ``path`` is one
    run's metrics log, or {run label: metrics log} to overlay several runs (e.g. an α sweep)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {"": path} if isinstance(path, (str, Path)) else dict(path)
    recs = {label: read_metrics(p) for label, p in runs.items()}
    n = len(panels)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (key, label) in zip(axes.flat, panels):
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        drawn = False
        for i, (run, rr) in enumerate(recs.items()):
            xs, ys = series(rr, key)
            if not xs:
                continue
            drawn = True
            color = f"C{i}"
            ax.plot(xs, ys, "o-", ms=3, lw=1, alpha=0.35 if run else 0.5, color=color if run else None)
            if smooth > 1 and len(ys) > 1:
                avg = [sum(ys[max(0, j - smooth + 1): j + 1]) / len(ys[max(0, j - smooth + 1): j + 1])
                       for j in range(len(ys))]
                ax.plot(xs, avg, "-", lw=2, color=color, label=run or None)
        if not drawn:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        if len(recs) > 1:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m routecraft.train.curves OUT.png LABEL=metrics.jsonl ... [--keys k1,k2] [--title T]``: overlay the
    training curves of several runs (default keys: Router-R1's reward, format errors, exact match, calls, cost)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m routecraft.train.curves", description=main.__doc__)
    ap.add_argument("out")
    ap.add_argument("runs", nargs="+", metavar="LABEL=METRICS")
    ap.add_argument("--keys", default="reward,router_r1/format_error,router_r1/outcome,router_r1/calls,"
                                      "router_r1/cost_usd,router_r1/policy_tokens")
    ap.add_argument("--title", default=None)
    ap.add_argument("--smooth", type=int, default=5)
    args = ap.parse_args(argv)
    runs = {}
    for spec in args.runs:
        if "=" not in spec:
            ap.error(f"runs are LABEL=METRICS, got {spec!r}")
        label, p = spec.rsplit("=", 1)  # a label may hold "=" (α=0.5); a path rarely does
        runs[label] = p
    keys = [k for k in args.keys.split(",") if k]
    try:
        plot_curves(runs, args.out, [(k, k) for k in keys], title=args.title, smooth=args.smooth)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
