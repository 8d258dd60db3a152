"""Training curves: read the JSONL metrics log of a run and plot chosen series against the step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence


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


def plot_curves(path: str | Path, out: str | Path, panels: Sequence[tuple[str, str]],
                title: Optional[str] = None, smooth: int = 5) -> Path:
    """One panel per (key, label): the raw values and a trailing moving average of ``smooth`` steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_metrics(path)
    n = len(panels)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (key, label) in zip(axes.flat, panels):
        xs, ys = series(recs, key)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        if not xs:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.plot(xs, ys, "o-", ms=3, lw=1, alpha=0.5)
        if smooth > 1 and len(ys) > 1:
            avg = [sum(ys[max(0, i - smooth + 1): i + 1]) / len(ys[max(0, i - smooth + 1): i + 1])
                   for i in range(len(ys))]
            ax.plot(xs, avg, "-", lw=2)
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
