"""The routecraft command line. Heavy imports happen inside commands, so `routecraft --help` is instant."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="routecraft: LLM routing that reasons (model × strategy × length budget), for the least cost.")
data_app = typer.Typer(no_args_is_help=True, help="Built-in datasets and importers.")
app.add_typer(data_app, name="data")

from routecraft.pool.cli import pool_app  # noqa: E402  (a light module: its commands import lazily)

app.add_typer(pool_app, name="pool")

from routecraft.serve.cli import serve_cmd, usage_cmd  # noqa: E402  (light: the server imports lazily)

app.command("serve", help="Run the OpenAI-compatible routing gateway (default: the local pool, loopback).")(serve_cmd)
app.command("usage", help="Summarise the gateway's usage ledger.")(usage_cmd)
console = Console(stderr=True)
out_console = Console()


def _fail(msg: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code)


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


# ---- bench ----------------------------------------------------------------------------------------------------
@app.command()
def bench(
    data: str = typer.Option("zeroeval-gsm8k", help="Built-in dataset name or a routecraft data folder."),
    routers: Optional[str] = typer.Option(None, help="Comma-separated router specs, e.g. 'knn:k=20,mlp,oracle'. "
                                          "Default: random,cheapest,best-single,knn,mlp,mf,linear,ensemble,oracle, and "
                                          "cascade,sequential where the data has extracted answers."),
    seeds: str = typer.Option("0,1,2", help="Comma-separated split seeds (mean ± std over them)."),
    out: Path = typer.Option(Path("runs/bench"), help="Output folder (summary.json, table.md, tradeoff.png)."),
    encoder: Optional[str] = typer.Option(None, help="sentence-transformers encoder (default all-MiniLM-L6-v2)."),
    n_lambdas: int = typer.Option(60, help="Number of λ values in the sweep."),
    candidates: Optional[str] = typer.Option(None, help="Restrict to these candidates (comma-separated ids)."),
) -> None:
    """Train and compare routers on logged outcomes; print the metrics table and write a report."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from routecraft.data.resolve import resolve_data
    from routecraft.data.schema import DataValidationError
    from routecraft.evaluate.bench import default_routers, markdown_table, run_bench, write_report

    try:
        name, rd = resolve_data(data)
        if candidates:
            rd = rd.filter_candidates(_csv(candidates))
        router_list = _csv(routers) or default_routers(rd)
        seed_list = [int(s) for s in _csv(seeds)]
    except (DataValidationError, ValueError, KeyError) as exc:
        _fail(str(exc))
    console.print(f"[bold]{name}[/]: {len(rd.queries)} queries, {len(rd.candidates)} candidates, "
                  f"{len(rd.outcomes)} outcomes")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task("bench", total=len(seed_list) * len(router_list))

        def progress(msg: str) -> None:
            if msg.startswith("seed"):
                bar.advance(task)
            bar.update(task, description=msg)

        try:
            result = run_bench(rd, router_list, seed_list, encoder=encoder, n_lambdas=n_lambdas,
                               data_name=name, progress=progress)
        except (DataValidationError, ValueError, KeyError) as exc:
            _fail(str(exc))
    paths = write_report(result, out, title=f"routecraft bench — {name}")
    out_console.print(markdown_table(result))
    t = result.timings
    console.print(f"embeddings {t.get('embed_s', 0):.1f}s, routers {t.get('routers_s', 0):.1f}s; "
                  f"wrote {paths['json']}, {paths['markdown']}, {paths['plot']}")


# ---- data -----------------------------------------------------------------------------------------------------
@data_app.command("list")
def data_list() -> None:
    """List the built-in datasets."""
    from routecraft.data.resolve import builtin_names

    for n in builtin_names():
        out_console.print(n)


@data_app.command("show")
def data_show(data: str = typer.Argument(..., help="Built-in name or data folder."),
              out: Optional[Path] = typer.Option(None, help="Write cells.md, cells.csv and cells.png here."),
              all_queries: bool = typer.Option(False, "--all-queries",
                                               help="Use every query of a cell, not only those all cells answered.")
              ) -> None:
    """Queries, candidates, and each (model, strategy, budget) cell's accuracy, output tokens and cost."""
    from routecraft.data.resolve import resolve_data
    from routecraft.data.schema import DataValidationError
    from routecraft.evaluate.cells import cell_table, cells_markdown, plot_cells

    try:
        name, rd = resolve_data(data)
    except DataValidationError as exc:
        _fail(str(exc))
    t = cell_table(rd.outcomes, common=not all_queries)
    n_q = int(t["n"].max()) if len(t) else 0
    scope = "all answered queries per cell" if all_queries else f"{n_q} queries answered by every cell"
    out_console.print(f"{name}: {len(rd.queries)} queries, {len(rd.candidates)} candidates; table over {scope}")
    out_console.print(cells_markdown(t), soft_wrap=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        t.to_csv(out / "cells.csv", index=False)
        (out / "cells.md").write_text(f"{name}: {scope}\n\n" + cells_markdown(t) + "\n")
        plot_cells(t, out / "cells.png", title=f"{name} ({scope})")
        out_console.print(f"wrote {out}/cells.md, cells.csv, cells.png")


@data_app.command("import")
def data_import(
    source: str = typer.Argument(..., help="A built-in name, or a CSV/Parquet file for the generic importer."),
    out: Path = typer.Option(..., help="Folder to write (queries.parquet, outcomes.parquet, meta.json)."),
    config: Optional[Path] = typer.Option(None, help="YAML column mapping for a generic file (see docs/data.md)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Generic file without --config: 'wide' or 'long'."),
    text_col: str = typer.Option("text", help="Generic: query text column."),
    id_col: Optional[str] = typer.Option(None, help="Generic: query id column (default: row number)."),
    task_col: Optional[str] = typer.Option(None, help="Generic: task column."),
    gold_col: Optional[str] = typer.Option(None, help="Generic: gold answer column."),
    model_col: str = typer.Option("model", help="Generic long: model column."),
    score_col: str = typer.Option("score", help="Generic long: score column."),
    model_columns: Optional[str] = typer.Option(None, help="Generic wide: comma-separated model score columns."),
    cost_col: Optional[str] = typer.Option(None, help="Generic: cost column (wide: may use {model})."),
    input_tokens_col: Optional[str] = typer.Option(None, help="Generic: input tokens column (wide: {model})."),
    output_tokens_col: Optional[str] = typer.Option(None, help="Generic: output tokens column (wide: {model})."),
    prices: Optional[str] = typer.Option(None, help="Generic: price table YAML, or 'builtin', to price tokens."),
) -> None:
    """Import published logs or your own CSV/Parquet into a routecraft data folder.

    A generic file is mapped by --config (YAML) or by the column flags (--format and the *-col options)."""
    from pydantic import ValidationError

    from routecraft.data.importers import BUILTIN, GenericImportConfig, import_generic, load_builtin
    from routecraft.data.schema import DataValidationError

    try:
        if source in BUILTIN:
            rd = load_builtin(source)
        else:
            if config is not None:
                cfg = GenericImportConfig.from_yaml(config)
            elif fmt is not None:
                raw = {"format": fmt, "text": text_col, "query_id": id_col, "task": task_col, "gold": gold_col,
                       "cost": cost_col, "input_tokens": input_tokens_col, "output_tokens": output_tokens_col,
                       "prices": prices}
                if fmt == "long":
                    raw.update(model=model_col, score=score_col)
                elif model_columns:
                    raw["model_columns"] = _csv(model_columns)
                cfg = GenericImportConfig.model_validate(raw)
            else:
                _fail(f"{source!r} is not a built-in dataset ({', '.join(sorted(BUILTIN))}); for your own file give "
                      "--config (YAML column mapping) or --format wide|long with the column flags")
            rd = import_generic(source, cfg)
    except (DataValidationError, ValueError, FileNotFoundError, ValidationError) as exc:
        _fail(str(exc))
    rd.save(out)
    console.print(f"wrote {out}: {len(rd.queries)} queries, {len(rd.candidates)} candidates, "
                  f"{len(rd.outcomes)} outcomes")


# ---- calibrate / train / route --------------------------------------------------------------------------------
@app.command()
def calibrate(
    data: str = typer.Option("zeroeval-gsm8k", help="Built-in dataset name or data folder."),
    router: str = typer.Option("knn", help="Router spec."),
    target_cost: Optional[float] = typer.Option(None, help="Target mean cost per query (USD)."),
    model: Optional[str] = typer.Option(None, help="With --share: the model whose call share is targeted."),
    share: Optional[float] = typer.Option(None, help="Target share of calls to --model, in [0, 1]."),
    seed: int = typer.Option(0, help="Split seed."),
) -> None:
    """Pick λ on the calibration split to hit a cost or call-share target; report what it achieves on test."""
    from routecraft.core.sweep import realised
    from routecraft.data.features import EmbeddingCache
    from routecraft.data.resolve import resolve_data
    from routecraft.data.schema import DataValidationError
    from routecraft.evaluate.bench import align_prediction, parse_router_spec
    from routecraft.evaluate.calibrate import calibrate as do_calibrate
    from routecraft.routers import make_router

    try:
        name, rd = resolve_data(data)
        rd = rd.complete()
        label, rname, params = parse_router_spec(router)
        r = make_router(rname, **params)
        sp = rd.split(seed=seed)
        enc = EmbeddingCache()
        fx = (lambda d: enc.embed(d.queries["text"].tolist())) if r.uses_features else (lambda d: None)
        r.fit(sp.train, fx(sp.train))
        val_truth, test_truth = sp.val.matrices(), sp.test.matrices()
        pv = align_prediction(r.predict(sp.val.queries, fx(sp.val)), val_truth.candidates)
        cal = do_calibrate(pv, val_truth, target_cost=target_cost, model=model, share=share)
        pt = align_prediction(r.predict(sp.test.queries, fx(sp.test)), test_truth.candidates)
        s, c, idx = realised(pt, test_truth, cal.lam)
    except (DataValidationError, ValueError, KeyError) as exc:
        _fail(str(exc))
    res = {"data": name, "router": label, **cal.to_dict(), "test_cost": c, "test_score": s}
    if share is not None:
        import numpy as np

        cols = np.array([cd.model == model for cd in pt.candidates])
        res["test_share"] = float(cols[idx].mean())
    out_console.print_json(json.dumps(res))


@app.command()
def train(
    router: str = typer.Option(..., help="Router spec, e.g. 'knn:k=20', 'rtr', 'r2', 'joint', 'router-r1'."),
    data: Optional[str] = typer.Option(None, help="Built-in dataset name or data folder (routers fit on outcomes)."),
    out: Path = typer.Option(..., help="Artifact folder to write."),
    encoder: Optional[str] = typer.Option(None, help="sentence-transformers encoder."),
    config: Optional[Path] = typer.Option(None, help="Config YAML of a multi-step router (router-r1, r2-reasoner)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a multi-step router's config field: "
                                             "section.field=value (repeatable)."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Multi-step routers: start over instead of resuming."),
) -> None:
    """Fit a router on a dataset (or train a multi-step router on the pool) and save a versioned artifact."""
    from routecraft.data.features import DEFAULT_ENCODER, EmbeddingCache
    from routecraft.data.resolve import resolve_data
    from routecraft.data.schema import DataValidationError
    from routecraft.evaluate.bench import parse_router_spec
    from routecraft.routers import get_router_class, make_router

    try:
        _, rname, params = parse_router_spec(router)
        cls = get_router_class(rname)
    except (ValueError, KeyError) as exc:
        _fail(str(exc))
    if cls.trains_itself:
        from routecraft.routers.multistep import parse_sets

        try:
            path = cls.train_cli(str(config) if config else None, out, overrides=parse_sets(set_ or []),
                                 resume=not no_resume)
        except (ValueError, FileNotFoundError, SystemExit) as exc:
            _fail(str(exc))
        console.print(f"trained {rname}: artifact {path}")
        return
    if config is not None or set_:
        _fail(f"--config/--set are for multi-step routers; {rname} takes its parameters in the spec "
              f"(e.g. '{rname}:name=value')")
    if data is None:
        _fail(f"--data is required to fit {rname} (a built-in dataset or a data folder)")
    try:
        name, rd = resolve_data(data)
        rd = rd.complete()
        r = make_router(rname, **params)
        X = None
        if r.uses_features:
            X = EmbeddingCache(encoder or DEFAULT_ENCODER).embed(rd.queries["text"].tolist())
            r.encoder = encoder or DEFAULT_ENCODER
        r.fit(rd, X)
    except (DataValidationError, ValueError, KeyError) as exc:
        _fail(str(exc))
    r.save(out)
    console.print(f"saved {rname} trained on {name} ({len(rd.queries)} queries, {len(r.candidates)} candidates) "
                  f"to {out}")


@app.command()
def route(
    question: str = typer.Argument(..., help="The query to route."),
    router: Path = typer.Option(..., help="A router artifact folder (from `routecraft train`)."),
    lam: float = typer.Option(0.0, "--lambda", help="Trade-off: maximise predicted score − λ·cost (USD)."),
    max_cost: Optional[float] = typer.Option(None, help="Cost cap per query (USD) instead of λ."),
    task: str = typer.Option("general", help="Task name for the query."),
    top: int = typer.Option(10, help="Rows of the candidate table to print."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print a trained router's decision and every candidate's predicted score and cost."""
    import pandas as pd

    from routecraft.data.features import EmbeddingCache
    from routecraft.routers import get_router_class, load_router

    try:
        meta = json.loads((Path(router) / "router.json").read_text())
        cls = get_router_class(meta["router"])
    except FileNotFoundError:
        _fail(f"{router} is not a router artifact (no router.json)")
    except (ValueError, KeyError) as exc:
        _fail(f"{router}/router.json: {exc}")
    if cls.trains_itself:
        try:
            summary, text = cls.route_cli(router, question)
        except (FileNotFoundError, ValueError) as exc:
            _fail(str(exc))
        if as_json:
            out_console.print_json(json.dumps(summary, default=str))
        else:
            out_console.print(text, soft_wrap=True, markup=False)
        return
    try:
        r = load_router(router)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        _fail(str(exc))
    q = pd.DataFrame({"query_id": ["q0"], "text": [question], "task": [task], "gold": [None]})
    X = EmbeddingCache(r.encoder).embed([question]) if r.uses_features and r.encoder else None
    d = r.decide(q, X, lam=lam, max_cost=max_cost)[0]
    if as_json:
        out_console.print_json(json.dumps(d.to_dict(), default=str))
        return
    from rich.table import Table

    out_console.print(f"[bold]decision:[/] {d.candidate.id}  predicted score {d.predicted_score:.3f}, "
                      f"predicted cost ${d.predicted_cost:.3g}")
    t = Table("candidate", "pred. score", "pred. cost $", title=f"{r.name} (λ={lam})")
    for row in d.table[:top]:
        t.add_row(row["candidate"], f"{row['predicted_score']:.3f}", f"{row['predicted_cost']:.3g}")
    out_console.print(t)


# ---- collect --------------------------------------------------------------------------------------------------
@app.command()
def collect(
    data: str = typer.Option("gsm8k-test", help="Queries: gsm8k-test, gsm8k-train, or a JSONL/CSV/Parquet file."),
    out: Path = typer.Option(..., help="Collection folder (resumable; a routecraft data folder when done)."),
    pool: str = typer.Option("local", help="Built-in pool name or a pool YAML file."),
    models: Optional[str] = typer.Option(None, help="Comma-separated pool model names (default: all)."),
    strategies: str = typer.Option("direct,cot,cod,pal", help="Comma-separated strategies."),
    budgets: str = typer.Option("default", help="Comma-separated output-token budgets, 'default' = none."),
    limit: Optional[int] = typer.Option(None, help="Use the first N queries."),
    offset: int = typer.Option(0, help="Skip the first N queries."),
    concurrency: int = typer.Option(
        2, help="Requests the backend runs at once (its parallel slots); one more waits in its queue."),
    executor: str = typer.Option("local", help="'local' (asyncio) or 'ray'."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address (default: start a local Ray)."),
    start_servers: bool = typer.Option(True, help="Start local llama.cpp servers that are not running."),
    parallel: int = typer.Option(2, help="Parallel slots per local server started here."),
    flush_every: int = typer.Option(8, help="Rows per checkpoint shard."),
    timeout: float = typer.Option(600.0, help="Seconds per backend request before a retry."),
) -> None:
    """Run every (query, model, strategy, budget) cell on real models, grade it, and append it (resumable)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from routecraft.data.collect import collect as do_collect
    from routecraft.data.collect import load_queries, parse_budgets
    from routecraft.data.schema import DataValidationError
    from routecraft.pool.config import PoolConfigError, load_pool

    try:
        p = load_pool(pool)
        model_list = _csv(models) or p.names
        for m in model_list:
            p.get(m)
        q = load_queries(data, limit=limit, offset=offset)
        budget_list = parse_budgets(budgets)
        strategy_list = _csv(strategies)
        from routecraft.strategies import get_strategy

        for s in strategy_list:
            get_strategy(s)
    except (DataValidationError, PoolConfigError, ValueError, KeyError, FileNotFoundError) as exc:
        _fail(str(exc))
    endpoints: dict[str, str] = {}
    local = [m for m in model_list if not p.get(m).endpoint]
    if local:
        from routecraft.pool.server import ServerError, base_url_for, up

        try:
            if start_servers:
                endpoints.update(up(p, local, parallel=parallel))
            else:
                endpoints.update({m: base_url_for(p.get(m)) for m in local})
        except ServerError as exc:
            _fail(str(exc))
    stats = {"right": 0, "n": 0, "t0": __import__("time").time(), "last": 0.0}

    def log_line(done: int, total: int, row: dict) -> None:
        # without a terminal (nohup, CI) the bar cannot redraw: print a line every 30 s instead
        import time as _t

        now = _t.time()
        if now - stats["last"] < 30 and done < total:
            return
        stats["last"] = now
        rate = stats["n"] / max(1e-9, now - stats["t0"])
        eta = (total - done) / rate if rate > 0 else float("nan")
        console.print(f"{done}/{total} cells, {rate * 60:.1f}/min, eta {eta / 60:.0f} min; last "
                      f"{row['model']} {row['strategy']} b={row['budget'] or '-'}, "
                      f"acc so far {stats['right'] / max(1, stats['n']):.2f}")

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("collect", total=None)

        def progress(done: int, total: int, row: dict | None) -> None:
            if row is not None:
                stats["n"] += 1
                stats["right"] += row["score"] >= 0.5
                bar.update(task, completed=done, total=total,
                           description=f"{row['model']} {row['strategy']} b={row['budget'] or '-'} "
                                       f"acc={stats['right'] / stats['n']:.2f}")
                if not console.is_terminal:
                    log_line(done, total, row)
            else:
                bar.update(task, completed=done, total=total)

        res = do_collect(p, q, model_list, strategy_list, budget_list, out, concurrency=concurrency,
                         flush_every=flush_every, timeout_s=timeout, executor=executor, progress=progress,
                         endpoints=endpoints, ray_address=ray_address)
    out_console.print_json(json.dumps(res))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
