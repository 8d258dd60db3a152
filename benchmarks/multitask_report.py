"""Per task × model × strategy: accuracy (95% Wilson interval), mean output tokens and $/query of a multi-task
collection, as it stands (compacted rows and checkpoint shards alike, so a collection still running can be read),
plus the collection rate per model from the rows' timestamps and the hardware that produced them.

    python benchmarks/multitask_report.py data/routecraft-multitask [--out runs/multitask] [--common]
        [--since 2026-12-01T16:43:00Z] [--per-task 30 [--snapshot /tmp/mt30]]

``--common``: per task, only the questions every (model, strategy) cell of that task has answered, so cells are
compared on the same questions while the collection grows. ``--since``: the rate from the rows collected at or
after that time only (a sitting run with other settings, say more llama.cpp slots). ``--per-task N``: only the
first N questions of each task (in ``queries.parquet`` order, the collection's own: the first N of a larger draw are
the draw of N), so a report, or a bench on ``--snapshot DIR`` (``queries.parquet`` + ``outcomes.parquet`` of those
questions, a collection folder the bench reads), can be rerun at an earlier size. Writes ``OUT/cells.md`` (the
table, tasks in rows), ``OUT/cells.json``, ``OUT/accuracy.png`` (a heat map: tasks × (model, strategy), each cell's
accuracy and n) and ``OUT/cost.png`` (per task, each cell's accuracy against its $/query: which cells are worth
their price differs by task).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from routecraft.data.collect.store import CollectionStore
from routecraft.evaluate.cells import wilson

STRATEGY_ORDER = {"direct": 0, "cot": 1, "cod": 2, "pal": 3, "sc": 4}


def rows_of(folder: Path, per_task: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows with their task, queries); ``per_task``: only each task's first ``per_task`` questions."""
    store = CollectionStore(folder)
    if not (folder / "queries.parquet").is_file():
        raise SystemExit(f"{folder}: no queries.parquet (not a collection folder)")
    q = store.queries()
    if per_task is not None:
        q = q[q.groupby("task", sort=False).cumcount() < per_task].reset_index(drop=True)
    o = store.rows()
    o = o[o["query_id"].isin(q["query_id"])]
    if not len(o):
        raise SystemExit(f"{folder}: no collected rows yet")
    return o.merge(q[["query_id", "task"]], on="query_id", how="left"), q


def write_snapshot(o: pd.DataFrame, q: pd.DataFrame, out: Path) -> None:
    """A collection folder of these rows (``queries.parquet`` + ``outcomes.parquet``) that the bench reads."""
    out.mkdir(parents=True, exist_ok=True)
    q.to_parquet(out / "queries.parquet", index=False)
    o.drop(columns=["task"]).to_parquet(out / "outcomes.parquet", index=False, compression="zstd")


def task_cells(o: pd.DataFrame, common: bool = False) -> pd.DataFrame:
    parts = []
    for task, g in o.groupby("task"):
        if common:
            n_cells = g.groupby(["model", "strategy"]).ngroups
            per_q = g.groupby("query_id").apply(lambda d: d[["model", "strategy"]].drop_duplicates().shape[0],
                                                include_groups=False)
            g = g[g["query_id"].isin(per_q.index[per_q == n_cells])]
        t = g.groupby(["model", "strategy"]).agg(n=("score", "size"), correct=("score", "sum"),
                                                 accuracy=("score", "mean"), out_tokens=("output_tokens", "mean"),
                                                 cost_usd=("cost_usd", "mean"),
                                                 truncated=("finish_reason", lambda s: float((s == "length").mean())),
                                                 latency_s=("latency_s", "mean")).reset_index()
        t.insert(0, "task", task)
        parts.append(t)
    t = pd.concat(parts, ignore_index=True)
    # a graded score can be partial (commongen coverage, F1): the interval is then over the rounded successes
    lo, hi = wilson(np.round(t["correct"].to_numpy()), t["n"].to_numpy())
    t["acc_lo"], t["acc_hi"] = lo, hi
    t["_s"] = t["strategy"].map(STRATEGY_ORDER).fillna(9)
    return t.sort_values(["task", "model", "_s"]).drop(columns=["_s", "correct"]).reset_index(drop=True)


def markdown(t: pd.DataFrame) -> str:
    lines = ["| task | model | strategy | n | accuracy (95% CI) | mean out tokens | cut at cap | $/query |",
             "|---|---|---|---|---|---|---|---|"]
    for r in t.itertuples(index=False):
        lines.append(f"| {r.task} | {r.model} | {r.strategy} | {r.n} | {r.accuracy:.2f} ({r.acc_lo:.2f}–"
                     f"{r.acc_hi:.2f}) | {r.out_tokens:.0f} | {r.truncated:.0%} | {r.cost_usd:.2g} |")
    return "\n".join(lines) + "\n"


#: a pause longer than this between two of a model's rows is time it was not being collected (another model's
#: turn, or between sittings): not counted in its rate
GAP_S = 300.0


def rate(o: pd.DataFrame, since: str | None = None) -> list[dict]:
    """Cells per minute per model, from the timestamps of its rows: rows / the time spent collecting them (the sum
    of the gaps between consecutive rows, leaving out pauses over ``GAP_S`` — other models' turns, other
    sittings); ``since``: only rows collected at or after that time."""
    ts = pd.to_datetime(o["collected_at"], utc=True, errors="coerce")
    if since is not None:
        start = pd.Timestamp(since)
        keep = (ts >= (start.tz_localize("UTC") if start.tzinfo is None else start)).to_numpy()
        o, ts = o[keep], ts[keep]
    out = []
    for m, g in o.assign(_t=ts).groupby("model", sort=False):
        gaps = g["_t"].sort_values().diff().dt.total_seconds().dropna()
        busy = float(gaps[gaps <= GAP_S].sum())
        out.append({"model": m, "cells": int(len(g)), "minutes": busy / 60,
                    "cells_per_min": len(g) / (busy / 60) if busy > 0 else None,
                    "sittings": int((gaps > GAP_S).sum()) + 1,
                    "mean_out_tokens": float(g["output_tokens"].mean()),
                    "hardware": sorted(g["hardware"].dropna().unique().tolist())})
    return out


def plot(t: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    cols = sorted({(m, s) for m, s in zip(t["model"], t["strategy"])},
                  key=lambda x: (x[0], STRATEGY_ORDER.get(x[1], 9)))
    tasks = sorted(t["task"].unique())
    A = np.full((len(tasks), len(cols)), np.nan)
    N = np.zeros_like(A)
    for r in t.itertuples(index=False):
        i, j = tasks.index(r.task), cols.index((r.model, r.strategy))
        A[i, j], N[i, j] = r.accuracy, r.n
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(cols) + 3), 0.45 * len(tasks) + 2.5))
    im = ax.imshow(A, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i in range(len(tasks)):
        for j in range(len(cols)):
            if np.isfinite(A[i, j]):
                ax.text(j, i, f"{A[i, j]:.2f}\n{int(N[i, j])}", ha="center", va="center", fontsize=6,
                        color="white" if A[i, j] < 0.6 else "black")
    ax.set_xticks(range(len(cols)), [f"{m}\n{s}" for m, s in cols], fontsize=6, rotation=90)
    ax.set_yticks(range(len(tasks)), tasks, fontsize=7)
    ax.set_title("accuracy per task × (model, strategy); in each cell: accuracy and n (blank: not applicable or "
                 "not collected yet)", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_cost(t: pd.DataFrame, path: Path) -> None:
    """Per task, each (model, strategy) cell's accuracy against its mean $/query (log scale): colour = model,
    marker = strategy."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    tasks = sorted(t["task"].unique())
    models = sorted(t["model"].unique())
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    markers = dict(zip(sorted(t["strategy"].unique(), key=lambda s: STRATEGY_ORDER.get(s, 9)), "osD^vP*X"))
    cols = min(5, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.5 * rows + 0.8), squeeze=False, sharey=True)
    for ax, task in zip(axes.flat, tasks):
        g = t[t["task"] == task]
        for r in g.itertuples(index=False):
            ax.scatter(r.cost_usd, r.accuracy, color=colours[r.model], marker=markers[r.strategy], s=26)
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(task, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes.flat[len(tasks):]:
        ax.axis("off")
    handles = ([plt.Line2D([], [], color=colours[m], marker="o", ls="", label=m) for m in models]
               + [plt.Line2D([], [], color="grey", marker=mk, ls="", label=s) for s, mk in markers.items()])
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 9), fontsize=7, frameon=False)
    fig.suptitle("accuracy against mean $/query (log) per task × (model, strategy)", fontsize=9)
    fig.supxlabel("$/query", fontsize=8, y=0.06)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--out", type=Path, default=Path("runs/multitask"))
    ap.add_argument("--common", action="store_true")
    ap.add_argument("--since", default=None, help="rate from the rows collected at or after this time (ISO 8601)")
    ap.add_argument("--per-task", type=int, default=None, help="only the first N questions of each task")
    ap.add_argument("--snapshot", type=Path, default=None,
                    help="also write the rows read (after --per-task) as a collection folder the bench reads")
    args = ap.parse_args(argv)
    if args.per_task is not None and args.per_task < 1:
        raise SystemExit(f"--per-task: {args.per_task} is not a positive number of questions")
    if args.since is not None:
        try:
            if pd.isna(pd.Timestamp(args.since)):  # "", "nat": no time at all
                raise ValueError(args.since)
        except ValueError:
            raise SystemExit(f"--since: {args.since!r} is not an ISO 8601 time") from None
    o, q = rows_of(args.folder, args.per_task)
    if args.snapshot is not None:
        write_snapshot(o, q, args.snapshot)
    t = task_cells(o, args.common)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cells.md").write_text(markdown(t))
    r = rate(o, args.since)
    (args.out / "cells.json").write_text(json.dumps({"rows": int(len(o)), "queries": int(o["query_id"].nunique()),
                                                     "queries_in_plan": int(len(q)), "rate": r,
                                                     "cells": t.to_dict("records")}, indent=1, default=float))
    plot(t, args.out / "accuracy.png")
    plot_cost(t, args.out / "cost.png")
    print(f"{len(o)} rows over {o['query_id'].nunique()} of {len(q)} queries", file=sys.stderr)
    for x in r:
        print(f"  {x['model']}: {x['cells']} cells in {x['minutes']:.1f} min = "
              f"{(x['cells_per_min'] or 0):.1f}/min, mean {x['mean_out_tokens']:.0f} output tokens, {x['hardware']}",
              file=sys.stderr)
    print(markdown(t))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
