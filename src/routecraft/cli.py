"""The routecraft command line. Heavy imports happen inside commands, so `routecraft --help` is instant."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup


class _Commands(TyperGroup):
    """The top-level group: an exception escaping any subcommand (a missing price, a bad file, a bad router spec, a
    missing artifact, ...) becomes one line on stderr and exit code 2; ``--debug`` prints the traceback first."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):
            raise  # typer's own: usage errors, --help, _fail's Exit(2), Ctrl-C
        except Exception as exc:  # noqa: BLE001 - the point: one clear line instead of a traceback
            debug = bool(ctx.params.get("debug")) or _env_debug()
            if debug:
                import traceback

                traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
            _error_line(_describe(exc) + ("" if debug else " (--debug shows the traceback)"))
            raise typer.Exit(2) from None


def _env_debug() -> bool:
    import os

    return os.environ.get("ROUTECRAFT_DEBUG", "").lower() not in ("", "0", "false", "no")


def _describe(exc: BaseException) -> str:
    """The message of an exception, in one line; the type is named where the message alone would not be clear."""
    from routecraft.data.prices import MissingPriceError

    if isinstance(exc, MissingPriceError):
        return exc.message("pass --on-missing-price zero to import them at cost 0 (listed in meta.json)")
    msg = " ".join((exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str)
                    else str(exc)).split())
    if type(exc).__name__ == "ValidationError" and hasattr(exc, "errors"):  # pydantic: its messages, one line
        try:
            return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors())
        except Exception:  # noqa: BLE001
            pass
    known = (ValueError, LookupError, OSError, RuntimeError)
    if not msg:
        return type(exc).__name__
    if isinstance(exc, known) and type(exc).__module__.startswith(("routecraft", "builtins", "pydantic")):
        return msg
    return f"{type(exc).__name__}: {msg}"


def _error_line(msg: str) -> None:
    from rich.text import Text

    console.print(Text.assemble(("error:", "bold red"), " ", msg), soft_wrap=True)


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=_Commands, pretty_exceptions_enable=False,
                  help="routecraft: LLM routing that reasons (model × strategy × length budget), for the least cost.")


@app.callback()
def _global_options(debug: bool = typer.Option(False, "--debug", help="On an error, print the Python traceback "
                                               "too (also: ROUTECRAFT_DEBUG=1).")) -> None:
    """routecraft: LLM routing that reasons (model × strategy × length budget), for the least cost."""
    _DEBUG[0] = debug or _env_debug()


_DEBUG = [False]  # set by --debug for the command being run (read by _fail)


data_app = typer.Typer(no_args_is_help=True, help="Built-in datasets and importers.")
app.add_typer(data_app, name="data")
features_app = typer.Typer(no_args_is_help=True, help="Query encoders: build the static one.")
app.add_typer(features_app, name="features")
artifact_app = typer.Typer(no_args_is_help=True, help="Router artifacts: convert an old pickled one (format 1).")
app.add_typer(artifact_app, name="artifact")

from routecraft.pool.cli import pool_app  # noqa: E402  (a light module: its commands import lazily)

app.add_typer(pool_app, name="pool")

from routecraft.serve.cli import serve_cmd, usage_cmd  # noqa: E402  (light: the server imports lazily)

app.command("serve", help="Run the OpenAI-compatible routing gateway (default: the local pool, loopback).")(serve_cmd)
app.command("usage", help="Summarise the gateway's usage ledger.")(usage_cmd)
console = Console(stderr=True)
out_console = Console()


_COVERAGE_HELP = ("Keep the candidates with an outcome on at least this share of the queries (or the larger set "
                  "that leaves more complete cells), then the queries complete over them.")


def _for_routers(rd, min_coverage: float = 0.9):
    """The data a router is fit on (``RoutingData.for_routers``), saying on stderr what was filled or dropped."""
    from routecraft.evaluate.bench import preparation_notes

    if not 0 < min_coverage <= 1:
        _fail(f"--min-coverage must be in (0, 1], got {min_coverage}")
    n = len(rd.queries)
    out, filled, dropped = rd.for_routers(min_coverage)
    for note in preparation_notes(filled, dropped, len(out.queries), n, len(out.candidates)):
        console.print(note, markup=False, soft_wrap=True)
    return out


def _fail(msg: str, code: int = 2) -> None:
    msg = str(msg)
    if len(msg) > 1 and msg[0] == msg[-1] and msg[0] in "'\"":  # str() of a KeyError quotes its message
        import ast

        try:
            msg = str(ast.literal_eval(msg))
        except (ValueError, SyntaxError):
            pass
    if _DEBUG[0] and sys.exc_info()[0] is not None:  # --debug: the exception being handled, in full
        import traceback

        traceback.print_exc(file=sys.stderr)
    _error_line(" ".join(msg.split()))
    raise typer.Exit(code)


_ENCODER_HELP = ("Query encoder: all-MiniLM-L6-v2 (default), static (MiniLM distilled to a static 256-d model: "
                 "~0.2 ms a query; static:minilm-<dim>, static:<folder>), or any sentence-transformers model.")


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
    out: Path = typer.Option(Path("runs/bench"), help="Output folder (summary.json, table.md, tradeoff.png; "
                             "report.html with --html)."),
    encoder: Optional[str] = typer.Option(None, help=_ENCODER_HELP),
    n_lambdas: int = typer.Option(60, help="Number of λ values in the sweep."),
    candidates: Optional[str] = typer.Option(None, help="Restrict to these candidates (comma-separated ids)."),
    html: bool = typer.Option(False, "--html", help="Also write report.html: the table and the accuracy-cost plot "
                              "with hover (λ, routed shares) in one self-contained file."),
    min_coverage: float = typer.Option(0.9, help=_COVERAGE_HELP),
) -> None:
    """Train and compare routers on logged outcomes; print the metrics table and write a report."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from routecraft.data.resolve import resolve_data
    from routecraft.data.schema import DataValidationError
    from routecraft.evaluate.bench import default_routers, markdown_table, parse_router_spec, run_bench, write_report
    from routecraft.routers import get_router_class

    try:
        name, rd = resolve_data(data)
        if candidates:
            rd = rd.filter_candidates(_csv(candidates))
        router_list = _csv(routers) or default_routers(rd)
        for spec in router_list:  # a bad spec is an error before any work (and before the progress bar)
            get_router_class(parse_router_spec(spec)[1])
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
                               min_coverage=min_coverage, data_name=name, progress=progress)
        except (DataValidationError, ValueError, KeyError) as exc:
            _fail(str(exc))
    paths = write_report(result, out, title=f"routecraft bench — {name}", html=html)
    out_console.print(markdown_table(result))
    t = result.timings
    console.print(f"embeddings {t.get('embed_s', 0):.1f}s, routers {t.get('routers_s', 0):.1f}s; "
                  f"wrote {', '.join(str(p) for p in paths.values())}")


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
    prices: Optional[List[str]] = typer.Option(
        None, help="Price table YAML(s) to price tokens ('builtin' = the packaged table): several comma-separated or "
        "repeated, later files overriding earlier ones for the same model. Generic files and the built-in "
        "zeroeval/routellm logs (default: the packaged table)."),
    on_missing_price: Optional[str] = typer.Option(
        None, help="A model without a price: 'error' (default: one line naming it and the file) or 'zero' (import "
        "it at cost 0; meta.json lists it under 'unpriced')."),
) -> None:
    """Import published logs or your own CSV/Parquet into a routecraft data folder.

    A generic file is mapped by --config (YAML) or by the column flags (--format and the *-col options)."""
    from pydantic import ValidationError

    from routecraft.data.importers import BUILTIN, GenericImportConfig, import_generic, load_builtin
    from routecraft.data.prices import MissingPriceError, price_sources
    from routecraft.data.schema import DataValidationError

    if on_missing_price not in (None, "error", "zero"):
        _fail(f"--on-missing-price must be 'error' or 'zero', got {on_missing_price!r}")
    price_list = price_sources(prices) if prices else None
    price_arg = None if not price_list else price_list[0] if len(price_list) == 1 else price_list
    try:
        if source in BUILTIN:
            kw = {}
            if source.startswith(("zeroeval", "routellm")):
                kw = {"prices": price_arg, "on_missing": on_missing_price or "error"}
            elif price_arg is not None or on_missing_price is not None:
                _fail(f"{source} is priced from its own published candidate file; --prices and --on-missing-price "
                      "apply to the zeroeval and routellm logs and to your own files")
            rd = load_builtin(source, **kw)
        else:
            if config is not None:
                cfg = GenericImportConfig.from_yaml(config)
                update = {k: v for k, v in (("prices", price_arg), ("on_missing_price", on_missing_price))
                          if v is not None}
                if update:  # the command line overrides the config file
                    cfg = GenericImportConfig.model_validate({**cfg.model_dump(), **update})
            elif fmt is not None:
                raw = {"format": fmt, "text": text_col, "query_id": id_col, "task": task_col, "gold": gold_col,
                       "cost": cost_col, "input_tokens": input_tokens_col, "output_tokens": output_tokens_col,
                       "prices": price_arg, "on_missing_price": on_missing_price or "error"}
                if fmt == "long":
                    raw.update(model=model_col, score=score_col)
                elif model_columns:
                    raw["model_columns"] = _csv(model_columns)
                cfg = GenericImportConfig.model_validate(raw)
            else:
                _fail(f"{source!r} is not a built-in dataset ({', '.join(sorted(BUILTIN))}); for your own file give "
                      "--config (YAML column mapping) or --format wide|long with the column flags")
            rd = import_generic(source, cfg)
    except (DataValidationError, ValueError, FileNotFoundError, ValidationError, MissingPriceError) as exc:
        _fail(_describe(exc))
    rd.save(out)
    console.print(f"wrote {out}: {len(rd.queries)} queries, {len(rd.candidates)} candidates, "
                  f"{len(rd.outcomes)} outcomes")
    unpriced = (rd.meta.get("unpriced") or {}).get("models")
    if unpriced:
        console.print(f"note: no price for {', '.join(unpriced)}: imported at cost 0 (--on-missing-price zero; "
                      "listed under 'unpriced' in meta.json)", soft_wrap=True, markup=False)


# ---- features -------------------------------------------------------------------------------------------------
@features_app.command("build-static")
def features_build_static(
    dim: int = typer.Option(256, help="Dimensions of the static model (PCA of MiniLM's 384)."),
    out: Optional[Path] = typer.Option(None, help="Model folder (default: the cache folder where "
                                       "static:minilm-<dim> is looked up, under ~/.cache/routecraft/static)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if it is built."),
    vocab_size: Optional[int] = typer.Option(None, help="Keep only MiniLM's N most frequent words (a small, fast "
                                             "build, e.g. for tests); default: the whole vocabulary."),
) -> None:
    """Distil the shipped all-MiniLM-L6-v2 into a static encoder (model2vec), offline; about a minute on 2 cores.

    Use it with --encoder static (256-d) or static:minilm-<dim>; an --out folder with --encoder static:<folder>."""
    from routecraft.data.static_encoder import StaticEncoderError, build_static, read_manifest

    try:
        folder = build_static(dim, out, vocab_size=vocab_size, force=force,
                              log=lambda msg: console.print(msg, soft_wrap=True, markup=False))
    except StaticEncoderError as exc:
        _fail(str(exc))
    m = read_manifest(folder) or {}
    name = f"static:minilm-{dim}" if out is None and vocab_size is None else f"static:{folder}"
    out_console.print_json(json.dumps({"encoder": name, "path": str(folder), "dim": m.get("dim"),
                                       "vocab_size": m.get("vocab_size"), "checksum": m.get("checksum")}))


# ---- artifact -------------------------------------------------------------------------------------------------
@artifact_app.command("convert")
def artifact_convert(
    src: Path = typer.Argument(..., help="A format-1 artifact folder (router.json + state.joblib)."),
    out: Optional[Path] = typer.Option(None, help="Folder to write the format-2 artifact to (default: SRC itself, "
                                       "whose state.joblib is then removed). Other files in SRC are not copied."),
    trust: bool = typer.Option(False, "--trust", help="Required: converting unpickles SRC's state.joblib, which runs "
                               "any code the file carries."),
) -> None:
    """Convert a format-1 artifact (state.joblib, a pickle) to format 2 (router.json + state.safetensors), which
    loading never unpickles. Only for artifacts you made or whose maker you trust; otherwise train it again."""
    from routecraft.routers.convert import TRUST_NOTE

    if not trust:
        _fail(f"{src}: {TRUST_NOTE}. Pass --trust to convert it")
    from routecraft.routers.convert import convert_artifact

    try:
        dst = convert_artifact(src, out, trust=True)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        _fail(str(exc))
    console.print(f"converted {src} (format 1, state.joblib) to {dst} (format 2: router.json + state.safetensors)")


# ---- calibrate / train / route --------------------------------------------------------------------------------
@app.command()
def calibrate(
    data: str = typer.Option("zeroeval-gsm8k", help="Built-in dataset name or data folder."),
    router: str = typer.Option("knn", help="Router spec."),
    target_cost: Optional[float] = typer.Option(None, help="Target mean cost per query (USD)."),
    model: Optional[str] = typer.Option(None, help="With --share: the model whose call share is targeted."),
    share: Optional[float] = typer.Option(None, help="Target share of calls to --model, in [0, 1]."),
    seed: int = typer.Option(0, help="Split seed."),
    min_coverage: float = typer.Option(0.9, help=_COVERAGE_HELP),
) -> None:
    """Pick λ on the calibration split to hit a cost or call-share target; report what it achieves on test."""
    from routecraft.core.sweep import realised
    from routecraft.data.features import EmbeddingCache
    from routecraft.data.query_text import query_texts
    from routecraft.data.resolve import resolve_data
    from routecraft.data.schema import DataValidationError
    from routecraft.evaluate.bench import align_prediction, parse_router_spec
    from routecraft.evaluate.calibrate import calibrate as do_calibrate
    from routecraft.routers import make_router

    try:
        name, rd = resolve_data(data)
        rd = _for_routers(rd, min_coverage)
        label, rname, params = parse_router_spec(router)
        r = make_router(rname, **params)
        sp = rd.split(seed=seed)
        enc = EmbeddingCache()
        fx = (lambda d: enc.embed(query_texts(d.queries))) if r.uses_features else (lambda d: None)
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
    encoder: Optional[str] = typer.Option(None, help=_ENCODER_HELP),
    config: Optional[Path] = typer.Option(None, help="Config YAML of a multi-step router (router-r1, r2-reasoner)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a multi-step router's config field: "
                                             "section.field=value (repeatable)."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Multi-step routers: start over instead of resuming."),
    min_coverage: float = typer.Option(0.9, help=_COVERAGE_HELP),
) -> None:
    """Fit a router on a dataset (or train a multi-step router on the pool) and save a versioned artifact."""
    from routecraft.data.features import DEFAULT_ENCODER, EmbeddingCache, canonical_encoder
    from routecraft.data.query_text import query_texts
    from routecraft.data.resolve import resolve_data
    from routecraft.data.schema import DataValidationError
    from routecraft.evaluate.bench import parse_router_spec
    from routecraft.routers import MultiStepRouter, ObservingRouter, TabularRouter, get_router_class, make_router

    try:
        _, rname, params = parse_router_spec(router)
        cls = get_router_class(rname)
    except (ValueError, KeyError) as exc:
        _fail(str(exc))
    if issubclass(cls, MultiStepRouter):  # trained from its own config on the pool
        from routecraft.routers.multistep import parse_sets

        try:
            path = cls.train_from_config(str(config) if config else None, out, overrides=parse_sets(set_ or []),
                                         resume=not no_resume)
        except (ValueError, FileNotFoundError, SystemExit) as exc:
            _fail(str(exc))
        console.print(f"trained {rname}: artifact {path}")
        return
    if not issubclass(cls, (TabularRouter, ObservingRouter)):
        _fail(f"{rname} is not trained: it is built from the pool when the gateway starts (routecraft serve)")
    if config is not None or set_:
        _fail(f"--config/--set are for multi-step routers; {rname} takes its parameters in the spec "
              f"(e.g. '{rname}:name=value')")
    if data is None:
        _fail(f"--data is required to fit {rname} (a built-in dataset or a data folder)")
    try:
        name, rd = resolve_data(data)
        rd = _for_routers(rd, min_coverage)
        r = make_router(rname, **params)
        X = None
        if r.uses_features:
            X = EmbeddingCache(encoder or DEFAULT_ENCODER).embed(query_texts(rd.queries))
            r.encoder = canonical_encoder(encoder or DEFAULT_ENCODER)
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
    encoder: Optional[str] = typer.Option(None, help="The query encoder; default: the one the artifact records "
                                          "(naming a different one is an error: its features would not match)."),
) -> None:
    """Print a trained router's decision and every candidate's predicted score and cost."""
    from routecraft.data.features import EmbeddingCache, canonical_encoder, is_static_encoder, load_encoder
    from routecraft.routers import MultiStepRouter, get_router_class, load_router

    try:
        meta = json.loads((Path(router) / "router.json").read_text())
        cls = get_router_class(meta["router"])
    except FileNotFoundError:
        _fail(f"{router} is not a router artifact (no router.json)")
    except (ValueError, KeyError) as exc:
        _fail(f"{router}/router.json: {exc}")
    if issubclass(cls, MultiStepRouter):  # routing runs it on the pool: show what ran
        try:
            ms = cls.from_artifact(router)
            try:
                summary = ms.summary(ms.run(question))
            finally:
                ms.close()
            text = ms.format(summary)
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
    enc = r.encoder
    if encoder is not None:
        if enc and canonical_encoder(encoder) != canonical_encoder(enc):
            _fail(f"{router} was trained on {enc} features; --encoder {encoder} would give features it was not "
                  f"trained on (leave --encoder out, or train with --encoder {encoder})")
        enc = enc or canonical_encoder(encoder)
    if r.uses_features and not enc:
        _fail(f"{router} records no encoder: name the one it was trained with (--encoder)")
    X = None
    if r.uses_features:
        if is_static_encoder(enc):  # sub-millisecond: encoding beats reading (and rewriting) the disk cache
            X = load_encoder(enc).encode([question], normalize_embeddings=True)
        else:
            X = EmbeddingCache(enc).embed([question])
    d = r.decide_one(question, X, lam=lam, max_cost=max_cost, task=task)
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
    data: str = typer.Option("gsm8k-test", help="Queries: gsm8k-test, gsm8k-train, llmrouter-train, llmrouter-test "
                                                 "(LLMRouter's 14 tasks; ':N' = N per task, e.g. llmrouter-train:50), "
                                                 "or a JSONL/CSV/Parquet file."),
    out: Path = typer.Option(..., help="Collection folder (resumable; a routecraft data folder when done)."),
    pool: str = typer.Option("local", help="Built-in pool name or a pool YAML file."),
    models: Optional[str] = typer.Option(None, help="Comma-separated pool model names (default: all)."),
    strategies: str = typer.Option("direct,cot,cod,pal", help="Comma-separated strategies for every query, or "
                                   "'auto' (the strategies that apply to each query's task: no PAL on trivia), or "
                                   "'auto:direct,pal' (those of the list that apply)."),
    budgets: str = typer.Option("default", help="Comma-separated output-token budgets, 'default' = none."),
    per_task: Optional[int] = typer.Option(None, help="llmrouter-*: N queries per task (same as ':N')."),
    seed: int = typer.Option(0, help="llmrouter-*: seed of the per-task sample."),
    tasks: Optional[str] = typer.Option(None, help="llmrouter-*: comma-separated tasks (default: all 14)."),
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

    from routecraft.data.collect import check_strategies, load_queries, parse_budgets, plan_cells
    from routecraft.data.collect import collect as do_collect
    from routecraft.data.schema import DataValidationError
    from routecraft.pool.config import PoolConfigError, load_pool

    try:
        p = load_pool(pool)
        model_list = _csv(models) or p.names
        for m in model_list:
            p.get(m)
        q = load_queries(data, limit=limit, offset=offset, per_task=per_task, seed=seed, tasks=_csv(tasks))
        budget_list = parse_budgets(budgets)
        auto = strategies.strip().lower().startswith("auto")
        strategy_spec = strategies.strip() if auto else _csv(strategies)
        if not strategy_spec:
            raise ValueError("--strategies: no strategy given")
        # unknown strategies, and strategies that do not apply to a query's task, fail here, before any server starts
        check_strategies(plan_cells(q["query_id"].tolist(), model_list[:1], strategy_spec, budget_list[:1],
                                    tasks=q["task"].tolist()), dict(zip(q["query_id"], q["task"])))
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

        res = do_collect(p, q, model_list, strategy_spec, budget_list, out, concurrency=concurrency,
                         flush_every=flush_every, timeout_s=timeout, executor=executor, progress=progress,
                         endpoints=endpoints, ray_address=ray_address)
    out_console.print_json(json.dumps(res))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
