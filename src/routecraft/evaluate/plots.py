"""Accuracy-vs-cost plots of routers, single candidates and the oracle (matplotlib, Agg backend).

The backend is chosen inside each function, never at import, so importing this module has no side effects.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from routecraft.core import metrics as M

__all__ = ["plot_tradeoff", "plot_tradeoff_bands", "choose_labels"]

_Curve = tuple  # (cost array, score array)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _short(name: str, width: int = 28) -> str:
    """Model ids like 'openai/gpt-4o-2024-08-06' shortened for labels."""
    name = str(name).rsplit("/", 1)[-1]
    return name if len(name) <= width else name[: width - 1] + "…"


def choose_labels(singles: Mapping[str, tuple[float, float]], max_labels: int = 8) -> list[str]:
    """Which single candidates to name on the plot: the best, the cheapest, then the other Pareto-optimal ones
    (highest score first), at most ``max_labels`` in all. Everything is still drawn; only labels are limited."""
    if not singles:
        return []
    names = list(singles)
    c = np.array([float(singles[n][0]) for n in names])
    s = np.array([float(singles[n][1]) for n in names])
    best = names[int(np.lexsort((c, -s))[0])]
    cheap = names[int(np.lexsort((-s, c))[0])]
    fc, fs = M.pareto_frontier(c, s)
    front = [n for n in names if any(float(singles[n][0]) == a and float(singles[n][1]) == b for a, b in zip(fc, fs))]
    front.sort(key=lambda n: -float(singles[n][1]))
    out: list[str] = []
    for n in [best, cheap] + front:
        if n not in out and len(out) < max_labels:
            out.append(n)
    return out


def _check_curve(name: str, cost, score) -> tuple[np.ndarray, np.ndarray]:
    c = np.atleast_1d(np.asarray(cost, dtype=float)).reshape(-1)
    s = np.atleast_1d(np.asarray(score, dtype=float)).reshape(-1)
    if c.size != s.size:
        raise ValueError(f"plot: {name}: cost has {c.size} points but score has {s.size}")
    ok = np.isfinite(c) & np.isfinite(s)
    if not ok.any():
        raise ValueError(f"plot: {name}: no finite (cost, score) point to draw")
    c, s = c[ok], s[ok]
    # one marker per distinct operating point (a λ sweep repeats points), in cost order
    pts = np.unique(np.stack([c, s], axis=1), axis=0)
    order = np.lexsort((pts[:, 1], pts[:, 0]))
    return pts[order, 0], pts[order, 1]


def _setup_axes(ax, all_cost: np.ndarray, log_x: bool, title: str) -> None:
    scale = ")"
    if log_x:
        pos = all_cost[all_cost > 0]
        if pos.size and (all_cost <= 0).any():
            ax.set_xscale("symlog", linthresh=float(pos.min()))   # zero-cost points stay visible
            scale = f", log scale, linear below {float(pos.min()):.2g})"
        elif pos.size:
            ax.set_xscale("log")
            scale = ", log scale)"
    ax.set_xlabel("mean cost per query (USD" + scale)
    ax.set_ylabel("accuracy (mean score)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)


def _draw_singles(ax, singles, max_labels: int) -> list:
    if not singles:
        return []
    names = list(singles)
    c = np.array([float(singles[n][0]) for n in names])
    s = np.array([float(singles[n][1]) for n in names])
    ax.scatter(c, s, s=22, color="0.55", edgecolor="0.3", linewidth=0.4, zorder=2,
               label=f"single candidates ({len(names)})")
    labels = choose_labels(singles, max_labels)
    best = labels[0]
    bc, bs = singles[best]
    ax.axhline(float(bs), color="0.5", linestyle=":", linewidth=0.9, zorder=1)
    ax.scatter([bc], [bs], s=60, marker="s", facecolor="none", edgecolor="black", linewidth=1.2, zorder=4,
               label=f"best single: {_short(best)}")
    texts = []
    for n in labels:
        texts.append(ax.annotate(
            _short(n), (float(singles[n][0]), float(singles[n][1])), textcoords="offset points", xytext=(6, 2),
            fontsize=7, color="0.15", ha="left", va="center", zorder=5,
            bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.7),
            arrowprops=dict(arrowstyle="-", color="0.5", linewidth=0.5, shrinkA=0, shrinkB=2)))
    return texts


def _spread_labels(fig, texts, iters: int = 60) -> None:
    """Push overlapping labels apart vertically (a few pixels at a time) so that none print on top of another."""
    if len(texts) < 2:
        return
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72.0
    for _ in range(iters):
        boxes = [t.get_window_extent(renderer) for t in texts]
        moved = False
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                a, b = boxes[i], boxes[j]
                if a.x1 < b.x0 or b.x1 < a.x0 or a.y1 < b.y0 or b.y1 < a.y0:
                    continue
                overlap = min(a.y1, b.y1) - max(a.y0, b.y0)
                step = (overlap / 2 + 1) / px_per_pt
                up, down = (texts[i], texts[j]) if (a.y0 + a.y1) >= (b.y0 + b.y1) else (texts[j], texts[i])
                ux, uy = up.xyann
                dx, dy = down.xyann
                up.xyann, down.xyann = (ux, uy + step), (dx, dy - step)
                moved = True
        if not moved:
            return
        fig.canvas.draw()


def _draw_oracle(ax, oracle) -> None:
    if oracle is None:
        return
    oc, osc = _check_curve("oracle", *oracle)
    if oc.size > 1:
        ax.plot(oc, osc, color="gold", linewidth=1.0, linestyle="--", alpha=0.8, zorder=2)
    i = int(np.lexsort((oc, -osc))[0])      # the oracle's best score at its least cost
    ax.scatter([oc[i]], [osc[i]], marker="*", s=260, color="gold", edgecolor="black", linewidth=0.8, zorder=6,
               label=f"oracle ({osc[i]:.3f})")


def _finish(fig, ax, out_png, n_entries: int, texts: list) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9, ncol=1 if n_entries <= 9 else 2)
    fig.tight_layout()
    _spread_labels(fig, texts)
    fig.savefig(out, dpi=150)
    return out


def plot_tradeoff(curves: Mapping[str, _Curve], singles: Mapping[str, tuple[float, float]] | None,
                  oracle: _Curve | None, out_png: str | Path, title: str, log_x: bool = True,
                  max_labels: int = 8) -> Path:
    """Accuracy against mean cost per query: one line with markers per router, single candidates as grey points
    (the best, the cheapest and the Pareto-optimal ones named, at most ``max_labels``), the best single model
    as a square with a dotted line at its accuracy, and the oracle as a gold star (its curve dashed if it has one).

    ``curves``: router name → (cost array, score array). ``singles``: candidate id → (cost, score).
    ``oracle``: (cost, score) scalars or arrays, or None. Writes ``out_png`` (parents created) and returns its path.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    try:
        all_cost = []
        markers = "osD^vP<>Xh"
        for k, (name, (cost, score)) in enumerate(curves.items()):
            c, s = _check_curve(name, cost, score)
            all_cost.append(c)
            ax.plot(c, s, marker=markers[k % len(markers)], markersize=4, linewidth=1.6, alpha=0.9, zorder=3,
                    label=str(name))
        texts = _draw_singles(ax, singles or {}, max_labels)
        _draw_oracle(ax, oracle)
        if singles:
            all_cost.append(np.array([float(v[0]) for v in singles.values()]))
        if oracle is not None:
            all_cost.append(np.atleast_1d(np.asarray(oracle[0], dtype=float)))
        all_c = np.concatenate(all_cost) if all_cost else np.array([1.0])
        _setup_axes(ax, all_c[np.isfinite(all_c)], log_x, title)
        return _finish(fig, ax, out_png, len(curves) + 3, texts)
    finally:
        plt.close(fig)


def plot_tradeoff_bands(curves: Mapping[str, Sequence[_Curve]], singles: Mapping[str, tuple[float, float]] | None,
                        oracle: _Curve | None, out_png: str | Path, title: str, log_x: bool = True,
                        max_labels: int = 8, n_grid: int = 80) -> Path:
    """Like :func:`plot_tradeoff` for several seeds per router: ``curves`` maps a router to a list of per-seed
    (cost, score) curves. Each seed's curve is read through its hull (:func:`metrics.score_at_cost`) on a common
    cost grid; the line is the mean over the seeds that reach that cost and the band ± one standard deviation.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    try:
        all_cost = []
        for name, seeds in curves.items():
            if len(seeds) == 0:
                raise ValueError(f"plot: {name}: no seed curves")
            cs = [_check_curve(f"{name} seed {i}", *cv) for i, cv in enumerate(seeds)]
            lo = min(float(c.min()) for c, _ in cs)
            hi = max(float(c.max()) for c, _ in cs)
            if log_x and lo > 0 and hi > lo:
                grid = np.geomspace(lo, hi, n_grid)
            else:
                grid = np.linspace(lo, hi, n_grid) if hi > lo else np.array([lo])
            ys = np.stack([M.score_at_cost(c, s, grid) for c, s in cs])
            ok = np.isfinite(ys).sum(0) > 0
            mean = np.array([np.nanmean(col) if k else np.nan for col, k in zip(ys.T, ok)])
            std = np.array([np.nanstd(col, ddof=1) if np.isfinite(col).sum() > 1 else 0.0 for col in ys.T])
            line, = ax.plot(grid[ok], mean[ok], linewidth=1.8, zorder=3, label=f"{name} (n={len(cs)} seeds)")
            ax.fill_between(grid[ok], (mean - std)[ok], (mean + std)[ok], color=line.get_color(), alpha=0.2,
                            linewidth=0, zorder=2)
            all_cost.append(grid)
        texts = _draw_singles(ax, singles or {}, max_labels)
        _draw_oracle(ax, oracle)
        if singles:
            all_cost.append(np.array([float(v[0]) for v in singles.values()]))
        all_c = np.concatenate(all_cost) if all_cost else np.array([1.0])
        _setup_axes(ax, all_c[np.isfinite(all_c)], log_x, title)
        return _finish(fig, ax, out_png, len(curves) + 3, texts)
    finally:
        plt.close(fig)
