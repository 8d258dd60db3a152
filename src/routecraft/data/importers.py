"""Importers: published routing logs (and any CSV/Parquet of your own) -> :class:`RoutingData`.

Built-in sources (copies ship in ``routecraft/datasets``; pass ``root`` to read a checkout of the raw data
instead, in its published layout or in the packaged one, files plain or gzipped):

=====================  ==========================================================================================
name                   loader
=====================  ==========================================================================================
``zeroeval-gsm8k``     :func:`import_zeroeval_gsm8k`: GSM8K test, 1,319 questions x 42 models (ZeroEval, re-scored)
``llmrouter-dcrouter`` :func:`import_llmrouter_dcrouter`: 14 tasks, 9 models (LLMRouter's dcrouter split, de-duplicated)
``routellm-gsm8k``     :func:`import_routellm` ("gsm8k"): 2 models, with full responses
``routellm-mmlu``      :func:`import_routellm` ("mmlu"): 57 subjects, 2 models
``routellm-mtbench``   :func:`import_routellm` ("mt-bench"): 80 two-turn questions, GPT-4 judge scores
=====================  ==========================================================================================

None of these logs has real token counts. Where tokens are derived, the rule is OpenAI's rule of thumb
"one token is about 4 characters of English text" (https://help.openai.com/en/articles/4936856): ``tokens =
ceil(chars / 4)``, see :func:`estimate_tokens`; such rows carry ``tokens_estimated=True`` and ``meta["tokens"]``
says exactly what was counted. Costs are ``input_tokens * input_price + output_tokens * output_price`` with
prices from the price table (:mod:`routecraft.data.prices`) or, for LLMRouter, from its own candidate file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .prices import MissingPriceError, OnMissing, PriceEntry, PriceTable
from .schema import DataValidationError, RoutingData

__all__ = [
    "BUILTIN", "CHARS_PER_TOKEN", "GenericImportConfig", "UnknownDatasetError", "ZEROEVAL_OEQA_TEMPLATE",
    "builtin_names",
    "dataset_root", "estimate_tokens", "import_generic", "import_llmrouter_dcrouter", "import_routellm",
    "import_zeroeval_gsm8k", "load_builtin", "zeroeval_rescoring_check",
]

CHARS_PER_TOKEN = 4
TOKEN_RULE = ("tokens = ceil(characters / 4), OpenAI's rule of thumb 'one token ~ 4 characters of English text' "
              "(https://help.openai.com/en/articles/4936856-what-are-tokens-and-how-to-count-them)")


def estimate_tokens(chars) -> Any:
    """``ceil(chars / 4)`` for a character count, a string, or an array/Series of either."""
    if isinstance(chars, str):
        return int(math.ceil(len(chars) / CHARS_PER_TOKEN))
    if np.isscalar(chars):
        return int(math.ceil(float(chars) / CHARS_PER_TOKEN))
    s = pd.Series(chars)
    if s.dtype == object or pd.api.types.is_string_dtype(s):
        s = s.fillna("").astype(str).str.len()
    return np.ceil(s.to_numpy(dtype="float64") / CHARS_PER_TOKEN).astype("int64")


# ------------------------------------------------------------------------------------------------------------
# file access: packaged copies or a raw checkout, plain or gzipped
# ------------------------------------------------------------------------------------------------------------
def dataset_root(source: str) -> Path:
    """Folder of the packaged copy of a source ("zeroeval", "llmrouter", "routellm")."""
    from importlib.resources import files

    return Path(str(files("routecraft") / "datasets" / source))


def _source_root(source: str, root: str | Path | None) -> Path:
    if root is None:
        return dataset_root(source)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{source} data folder {root} does not exist")
    # accept the parent folder too (e.g. .../shared/data holding zeroeval/, llmrouter/, routellm/)
    if (root / source).is_dir():
        return root / source
    return root


def _find(root: Path, *candidates: str) -> Path:
    tried = []
    for rel in candidates:
        for p in (root / rel, root / (rel + ".gz")):
            tried.append(str(p))
            if p.is_file():
                return p
    raise FileNotFoundError("none of these files exists: " + ", ".join(tried))


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _read_json(path: Path):
    with _open_text(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as exc:
            raise DataValidationError(f"not valid JSON: {exc.msg} (line {exc.lineno})", file=str(path)) from None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with _open_text(path) as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataValidationError(f"not valid JSON: {exc.msg}", file=str(path), row=i) from None
    return rows


def _read_csv(path: Path, **kw) -> pd.DataFrame:
    try:
        return pd.read_csv(path, compression="infer" if not _is_gz(path) else "gzip", **kw)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataValidationError(f"cannot read CSV: {exc}", file=str(path)) from None


def _is_gz(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _require_columns(df: pd.DataFrame, cols, file: Path) -> None:
    for c in cols:
        if c not in df.columns:
            raise DataValidationError(f"missing column (has: {', '.join(map(str, df.columns))})",
                                      file=str(file), field=c)


def _prices_for(models, prices, on_missing: OnMissing, where: str) -> tuple[PriceTable, dict[str, PriceEntry]]:
    table = PriceTable.coerce(prices)
    return table, table.require(sorted(models), on_missing=on_missing, where=where)


def _price_meta(entries: dict[str, PriceEntry]) -> dict[str, dict]:
    return {m: {"input_per_1m": e.input_per_1m, "output_per_1m": e.output_per_1m, "source": e.source,
                "date": e.date, **({"note": e.note} if e.note else {})} for m, e in entries.items()}


def _add_cost(o: pd.DataFrame, entries: dict[str, PriceEntry]) -> pd.DataFrame:
    pin = o["model"].map({m: e.input_per_1m for m, e in entries.items()}).astype("float64")
    pout = o["model"].map({m: e.output_per_1m for m, e in entries.items()}).astype("float64")
    o["cost_usd"] = (o["input_tokens"].astype("float64") * pin + o["output_tokens"].astype("float64") * pout) / 1e6
    return o


# ------------------------------------------------------------------------------------------------------------
# ZeroEval GSM8K
# ------------------------------------------------------------------------------------------------------------
#: ZeroEval's open-ended QA prompt (src/templates/OEQA.py, yuchenlin/ZeroEval), used for its "gsm" task.
ZEROEVAL_OEQA_TEMPLATE = """
## Question: 

{question}


## Instruction 

Please answer this question by first reasoning and then providing your answer.
Present your reasoning and solution in the following json format. 
Please show your final answer in the `answer` field, e.g.,`"answer": "42"`.

```json
{
    "reasoning": "___",
    "answer": "___"
}
```
"""
ZEROEVAL = {"repository": "yuchenlin/ZeroEval", "commit": "570c6269", "licence": "Apache-2.0"}


def import_zeroeval_gsm8k(root: str | Path | None = None, prices: PriceTable | str | Path | None = None,
                          on_missing: OnMissing = "error") -> RoutingData:
    """ZeroEval's GSM8K test set (1,319 questions) answered by 42 models, re-scored with ZeroEval's own rule.

    * ``score`` = ``correct`` (0/1) from the re-scored matrix; ``prediction`` = the parsed answer.
    * Tokens are estimated (``tokens_estimated=True``): ZeroEval publishes only the output length in characters
      and words. ``output_tokens = ceil(out_chars / 4)``; ``input_tokens = ceil(len(prompt) / 4)`` where
      ``prompt`` is the question inserted into ZeroEval's OEQA template (:data:`ZEROEVAL_OEQA_TEMPLATE`,
      about 320 characters of instructions). Chat-template/system tokens are not counted. o1-mini's hidden
      reasoning tokens are not in the output either, so its cost is an underestimate.
    * ``cost_usd`` from the price table (default: the packaged one); a model without a price raises
      :class:`~routecraft.data.prices.MissingPriceError` unless ``on_missing`` says otherwise.
    * Coverage: 41 models answered all 1,319 questions; ``gemini-1.5-flash-exp-0827`` only the first 681.
      All rows are kept (54,760 outcomes); ``RoutingData.complete()`` or ``filter_candidates`` make it square.
    """
    src = _source_root("zeroeval", root)
    mfile = _find(src, "gsm8k_matrix.csv")
    qfile = _find(src, "gsm8k_questions.csv")
    m = _read_csv(mfile, dtype={"qid": str, "model": str, "pred": str, "gold": str, "task": str},
                  keep_default_na=False, na_values={"pred": [""]})
    _require_columns(m, ["qid", "model", "correct", "parsed", "pred", "gold", "out_chars", "out_words"], mfile)
    q = _read_csv(qfile, dtype=str, keep_default_na=False)
    _require_columns(q, ["qid", "question"], qfile)

    unknown = ~m["qid"].isin(set(q["qid"]))
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DataValidationError(f"qid {m['qid'].iloc[i]!r} is not in {qfile.name}", file=str(mfile), row=i,
                                  field="qid")
    golds = m.groupby("qid")["gold"].nunique()
    if (golds > 1).any():
        raise DataValidationError(f"qid {golds[golds > 1].index[0]!r} has more than one gold answer",
                                  file=str(mfile), field="gold")
    gold = m.drop_duplicates("qid").set_index("qid")["gold"]
    queries = pd.DataFrame({"query_id": q["qid"], "text": q["question"], "task": "gsm8k",
                            "gold": q["qid"].map(gold)})

    prompt_chars = q.set_index("qid")["question"].map(
        lambda s: len(ZEROEVAL_OEQA_TEMPLATE.replace("{question}", s)))
    o = pd.DataFrame({
        "query_id": m["qid"], "model": m["model"],
        "score": pd.to_numeric(m["correct"], errors="coerce"),
        "input_tokens": np.ceil(m["qid"].map(prompt_chars).to_numpy(dtype="float64") / CHARS_PER_TOKEN),
        "output_tokens": np.ceil(pd.to_numeric(m["out_chars"], errors="coerce").to_numpy(dtype="float64")
                                 / CHARS_PER_TOKEN),
        "tokens_estimated": True,
        "prediction": m["pred"], "parsed": m["parsed"].astype(int).astype(bool),
        "out_chars": m["out_chars"].astype("int64"), "out_words": m["out_words"].astype("int64"),
    })
    table, entries = _prices_for(o["model"].unique(), prices, on_missing, "the price table (zeroeval-gsm8k)")
    o = _add_cost(o, entries)

    counts = o.groupby("model").size()
    n_q = len(queries)
    meta = {
        "name": "zeroeval-gsm8k", "source": "ZeroEval GSM8K (re-scored from ZeroEval's published raw outputs "
        "with ZeroEval's own answer-matching rule)", **ZEROEVAL,
        "score": "correct (0/1) under ZeroEval's answer matching",
        "tokens": {"estimated": True, "rule": TOKEN_RULE,
                   "output": "ceil(out_chars / 4) from the published output length in characters",
                   "input": "ceil(len(OEQA prompt) / 4): the question inserted into ZeroEval's OEQA template "
                            "(src/templates/OEQA.py); chat-template tokens not counted"},
        "cost": "input_tokens * input_per_1m / 1e6 + output_tokens * output_per_1m / 1e6, prices from the "
                "routecraft price table (see 'prices')",
        "prices": _price_meta(entries), "price_reference_date": table.reference_date,
        "n_queries": n_q, "n_models": int(o["model"].nunique()),
        "incomplete_models": {k: int(v) for k, v in counts.items() if v < n_q},
        "gold": "as published in ZeroEval's matrix (thousands separators kept, e.g. '2,125')",
    }
    try:
        meta["rescoring_check"] = zeroeval_rescoring_check(o, _find(src, "gsm.summary.json"))
    except FileNotFoundError:
        meta["rescoring_check"] = None
    return RoutingData.from_frames(queries, o, meta, source=str(src))


def zeroeval_rescoring_check(outcomes: pd.DataFrame | RoutingData, summary_file: str | Path | None = None) -> dict:
    """Compare re-scored accuracy (percent) with ZeroEval's published ``gsm.summary.json``, matching exact
    model names. Returns ``{"matched_models", "mean_abs_gap_points", "max_abs_gap_points", "per_model"}``."""
    o = outcomes.outcomes if isinstance(outcomes, RoutingData) else outcomes
    path = Path(summary_file) if summary_file else _find(dataset_root("zeroeval"), "gsm.summary.json")
    summary = {r["Model"]: float(r["Acc"]) for r in _read_json(path)}
    acc = o.groupby("model")["score"].mean() * 100
    per = {m: {"ours": round(float(a), 3), "published": summary[m], "gap": round(float(a) - summary[m], 3)}
           for m, a in acc.items() if m in summary}
    gaps = np.array([abs(v["gap"]) for v in per.values()])
    return {"summary_file": path.name, "matched_models": len(per),
            "unmatched_models": sorted(set(acc.index) - set(summary)),
            "mean_abs_gap_points": round(float(gaps.mean()), 4) if len(gaps) else None,
            "max_abs_gap_points": round(float(gaps.max()), 4) if len(gaps) else None,
            "per_model": per}


# ------------------------------------------------------------------------------------------------------------
# LLMRouter dcrouter
# ------------------------------------------------------------------------------------------------------------
LLMROUTER = {"repository": "ulab-uiuc/LLMRouter", "commit": "4e7a7969", "licence": "MIT"}
DCROUTER_OUTPUT_TOKENS = 256


def import_llmrouter_dcrouter(root: str | Path | None = None,
                              output_tokens: int = DCROUTER_OUTPUT_TOKENS) -> RoutingData:
    """LLMRouter's dcrouter data: 5,608 train + 500 test questions of 14 tasks, each scored for 9 models.

    * **De-duplicated**: 119 test questions appear verbatim in train. Train and test are merged and identical
      question texts kept once, so that routecraft's own seeded splits cannot leak. ``queries.source_split`` is
      ``train``, ``test`` or ``both``. Where the two copies' scores differ (``queries.scores_conflict``), the
      train copy's scores are kept.
    * ``query_id`` = ``"dcr-" + sha1(text)[:12]`` (stable under re-ordering).
    * ``task``, ``gold``, ``metric``, ``choices`` come from LLMRouter's ``query_data`` files (matched on the exact
      text); 41 texts occur there under two tasks (e.g. mmlu and openbook_qa): the first one is used and
      ``task_all`` lists both.
    * ``score``: LLMRouter's per-model score in [0, 1] (task metric: exact match, F1, pass@1, ...).
    * Tokens: none of the published LLMRouter files (dcrouter_preprocessed, query_data, llm_candidates) holds
      token counts, lengths or responses. Proxy (``tokens_estimated=True``): ``input_tokens = ceil(len(question)
      / 4)`` (LLMRouter's prompt wrapper not counted) and ``output_tokens`` = the constant ``output_tokens``
      (default 256) for every model and query, so cost differences between models come from prices and
      between queries from the question length only.
    * Prices: ``input_price``/``output_price`` fields of LLMRouter's ``default_llm.json`` ($/1M). Its free-text
      ``feature`` sometimes quotes other numbers (qwen2.5-7b-instruct: $0.30 in the text, $0.20 in the fields):
      the fields are used.
    """
    if int(output_tokens) != output_tokens or output_tokens < 0:
        raise ValueError(f"output_tokens must be a non-negative integer, got {output_tokens!r}")
    src = _source_root("llmrouter", root)
    trf = _find(src, "dcrouter_preprocessed/train.json")
    tef = _find(src, "dcrouter_preprocessed/test.json")
    llmf = _find(src, "llm_candidates/default_llm.json", "example_data/llm_candidates/default_llm.json")
    qfiles = [_find(src, f"query_data/default_query_{s}.jsonl", f"example_data/query_data/default_query_{s}.jsonl")
              for s in ("train", "test")]

    splits = {"train": _read_json(trf), "test": _read_json(tef)}
    kept: dict[str, dict] = {}
    for split, f in (("train", trf), ("test", tef)):
        if not isinstance(splits[split], list):
            raise DataValidationError("expected a JSON list of {question, scores}", file=str(f))
        for i, rec in enumerate(splits[split]):
            if not isinstance(rec, dict) or not isinstance(rec.get("question"), str) \
                    or not isinstance(rec.get("scores"), dict):
                raise DataValidationError("expected an object with 'question' (str) and 'scores' (object)",
                                          file=str(f), row=i, field="question")
            text = rec["question"]
            if text in kept:
                k = kept[text]
                if split not in k["splits"]:
                    k["splits"].append(split)
                if rec["scores"] != k["scores"]:
                    k["conflict"] = True
                continue
            kept[text] = {"scores": rec["scores"], "splits": [split], "conflict": False,
                          "cluster_id": rec.get("cluster_id"), "file": f, "row": i}

    qinfo: dict[str, dict] = {}
    for f in qfiles:
        for r in _read_jsonl(f):
            text = r.get("query")
            if not isinstance(text, str):
                continue
            d = qinfo.setdefault(text, {"tasks": [], "first": r})
            if r.get("task_name") not in d["tasks"]:
                d["tasks"].append(r.get("task_name"))

    cands = _read_json(llmf)
    rows_q, rows_o = [], []
    models: set[str] = set()
    unmatched = 0
    for text, k in kept.items():
        qid = "dcr-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]
        info = qinfo.get(text)
        if info is None:
            unmatched += 1
        first = info["first"] if info else {}
        split = "both" if len(k["splits"]) > 1 else k["splits"][0]
        rows_q.append({"query_id": qid, "text": text, "task": first.get("task_name") or "unknown",
                       "gold": None if first.get("ground_truth") is None else str(first.get("ground_truth")),
                       "metric": first.get("metric"),
                       "choices": None if first.get("choices") is None else str(first.get("choices")),
                       "task_all": "|".join(map(str, info["tasks"])) if info else None,
                       "source_split": split, "scores_conflict": k["conflict"],
                       "cluster_id": k["cluster_id"]})
        for model, score in k["scores"].items():
            models.add(model)
            rows_o.append((qid, model, score, k["file"], k["row"]))

    missing = sorted(m for m in models if m not in cands)
    if missing:
        raise MissingPriceError(missing, where=f"{llmf} (LLMRouter's candidate file)")
    entries = {}
    for m in sorted(models):
        c = cands[m]
        try:
            entries[m] = PriceEntry(input_per_1m=float(c["input_price"]), output_per_1m=float(c["output_price"]),
                                    source=f"{LLMROUTER['repository']}@{LLMROUTER['commit']} "
                                           "data/example_data/llm_candidates/default_llm.json",
                                    date="2025-12", provider=c.get("service"))
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            raise DataValidationError(f"bad price for {m!r}: {exc}", file=str(llmf), field="input_price") from None

    queries = pd.DataFrame(rows_q)
    queries["cluster_id"] = pd.array(queries["cluster_id"], dtype="Int64")
    o = pd.DataFrame(rows_o, columns=["query_id", "model", "score", "_file", "_row"])
    bad = pd.to_numeric(o["score"], errors="coerce")
    if bad.isna().any() or ((bad < 0) | (bad > 1)).any():
        i = int(np.flatnonzero((bad.isna() | (bad < 0) | (bad > 1)).to_numpy())[0])
        raise DataValidationError(f"score {o['score'].iloc[i]!r} of model {o['model'].iloc[i]!r} is not in [0, 1]",
                                  file=str(o["_file"].iloc[i]), row=int(o["_row"].iloc[i]), field="scores")
    o = o.drop(columns=["_file", "_row"])
    o["score"] = bad
    in_tok = queries.set_index("query_id")["text"].map(estimate_tokens)
    o["input_tokens"] = o["query_id"].map(in_tok).astype("int64")
    o["output_tokens"] = int(output_tokens)
    o["tokens_estimated"] = True
    o = _add_cost(o, entries)

    n_dup = sum(len(splits[s]) for s in splits) - len(kept)
    meta = {
        "name": "llmrouter-dcrouter", "source": "LLMRouter dcrouter_preprocessed train+test, de-duplicated",
        **LLMROUTER,
        "score": "LLMRouter's per-model score in [0, 1] (metric per task: see queries.metric)",
        "deduplication": {"train": len(splits["train"]), "test": len(splits["test"]), "duplicates_removed": n_dup,
                          "kept": len(kept),
                          "conflicting_scores": int(sum(k["conflict"] for k in kept.values())),
                          "rule": "identical question text kept once; train copy's scores kept on conflict"},
        "tokens": {"estimated": True, "rule": TOKEN_RULE,
                   "input": "ceil(len(question) / 4); LLMRouter's prompt wrapper not counted",
                   "output": f"constant {int(output_tokens)} tokens for every model and query (no length "
                             "information exists in the published LLMRouter files)"},
        "cost": "input_tokens * input_price / 1e6 + output_tokens * output_price / 1e6, prices from "
                "default_llm.json's input_price/output_price fields (not its feature text)",
        "prices": _price_meta(entries),
        "task_source": "query_data/default_query_{train,test}.jsonl, matched on exact question text",
        "unmatched_task": unmatched,
        "n_queries": len(queries), "n_models": len(models),
    }
    return RoutingData.from_frames(queries, o, meta, source=str(src))


# ------------------------------------------------------------------------------------------------------------
# RouteLLM
# ------------------------------------------------------------------------------------------------------------
ROUTELLM = {"repository": "lm-sys/RouteLLM", "commit": "0b64fdaf", "licence": "Apache-2.0"}
ROUTELLM_STRONG = "gpt-4-1106-preview"
ROUTELLM_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
ROUTELLM_MODELS = (ROUTELLM_WEAK, ROUTELLM_STRONG)
ROUTELLM_BENCHMARKS = ("gsm8k", "mmlu", "mt-bench")
MMLU_NTRAIN = 5
MMLU_FEWSHOT_TOKEN_CAP = 1536
GSM8K_NSHOT = 8


def import_routellm(benchmark: str, root: str | Path | None = None, prices: PriceTable | str | Path | None = None,
                    on_missing: OnMissing = "error") -> RoutingData:
    """RouteLLM's evaluation logs for Mixtral-8x7B-Instruct-v0.1 (weak) and gpt-4-1106-preview (strong).

    ``benchmark`` is ``"gsm8k"``, ``"mmlu"`` or ``"mt-bench"``. Prompts listed in the benchmark's
    ``contaminated_prompts.jsonl`` are dropped, as RouteLLM does (gsm8k: 12, mmlu: 5, mt-bench: 8 questions).
    Costs use the price table (default: packaged). All tokens are estimates (``ceil(chars / 4)``):

    * **gsm8k** (1,307 questions): score = correct (0/1). RouteLLM prompted 8-shot (the first 8 questions of
      GSM8K train, ``"Question: ...\\nAnswer: ..."``) then ``"Question: {q}\\nAnswer:"``; ``input_tokens`` counts
      that exact prompt text, ``output_tokens`` the published response (also kept in ``response``). ``gold`` is
      the final answer after ``####`` in GSM8K test, ``gold_solution`` the full solution. Query ids match
      ZeroEval's (``gsm8k-main-test-#i``, same question order).
    * **mmlu** (14,037 questions): score = correct (0/1). RouteLLM asked for a single token
      (``max_new_tokens=1``), so ``output_tokens = 1``. The 5-shot dev examples it prepended are not published:
      ``input_tokens`` = the question plus a proxy for the few-shot block, i.e. the subject header plus 5 x
      (median question length in that subject + the 4 characters of an answer line), capped at RouteLLM's
      1,536-token few-shot limit. ``gold`` is not published (null).
    * **mt-bench** (72 questions, one query each): ``text`` is the first turn (RouteLLM routes on it), ``turn2``
      the second. score = (mean of the GPT-4 judge's two turn scores - 1) / 9, mapping the judge's 1-10 scale
      onto [0, 1]; ``judge_score`` keeps the raw mean (RouteLLM's own metric averages the two turns too).
      The answers are recovered from the judge prompts: ``input_tokens`` = turn 1 + (turn 1 + answer 1 +
      turn 2) (two calls), ``output_tokens`` = answer 1 + answer 2.
    """
    b = benchmark.lower().replace("_", "-")
    if b == "mtbench":
        b = "mt-bench"
    if b not in ROUTELLM_BENCHMARKS:
        raise ValueError(f"unknown RouteLLM benchmark {benchmark!r}; choose one of {', '.join(ROUTELLM_BENCHMARKS)}")
    src = _source_root("routellm", root)
    table, entries = _prices_for(ROUTELLM_MODELS, prices, on_missing, f"the price table (routellm-{b})")
    if b == "gsm8k":
        queries, o, extra = _routellm_gsm8k(src)
    elif b == "mmlu":
        queries, o, extra = _routellm_mmlu(src)
    else:
        queries, o, extra = _routellm_mtbench(src)
    o["tokens_estimated"] = True
    o = _add_cost(o, entries)
    meta = {"name": f"routellm-{b.replace('-', '')}", "source": f"RouteLLM evals/{b.replace('-', '_')}", **ROUTELLM,
            **extra, "cost": "input_tokens * input_per_1m / 1e6 + output_tokens * output_per_1m / 1e6, prices "
                             "from the routecraft price table",
            "prices": _price_meta(entries), "n_queries": len(queries), "n_models": int(o["model"].nunique())}
    return RoutingData.from_frames(queries, o, meta, source=str(src / b.replace("-", "_")))


def _contaminated(src: Path, bench: str) -> set[str]:
    f = _find(src, f"{bench}/contaminated_prompts.jsonl")
    out = set()
    for i, r in enumerate(_read_jsonl(f)):
        if not isinstance(r.get("eval_prompt"), str):
            raise DataValidationError("missing eval_prompt", file=str(f), row=i, field="eval_prompt")
        out.add(r["eval_prompt"])
    return out


def _bool_col(s: pd.Series, file: Path, col: str) -> pd.Series:
    if s.dtype == bool:
        return s.astype("float64")
    m = s.astype(str).str.strip().str.lower().map({"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0})
    if m.isna().any():
        i = int(np.flatnonzero(m.isna().to_numpy())[0])
        raise DataValidationError(f"expected True/False, got {s.iloc[i]!r}", file=str(file), row=i, field=col)
    return m


def _routellm_gsm8k(src: Path):
    rf = _find(src, "gsm8k/gsm8k_responses.csv")
    r = _read_csv(rf, keep_default_na=False, dtype=str)
    cols = ["prompt", *ROUTELLM_MODELS, *(f"{m}_response" for m in ROUTELLM_MODELS)]
    _require_columns(r, cols, rf)
    tf = _find(src, "gsm8k/test.jsonl")
    test = _read_jsonl(tf)
    if len(test) != len(r):
        raise DataValidationError(f"{len(r)} responses but {len(test)} test questions in {tf.name}", file=str(rf))
    for i, (p, t) in enumerate(zip(r["prompt"], test)):
        if p != t.get("question"):
            raise DataValidationError(f"prompt differs from {tf.name} question {i}", file=str(rf), row=i,
                                      field="prompt")
    trf = _find(src, "gsm8k/train.jsonl")
    train = []
    with _open_text(trf) as f:  # only the first GSM8K_NSHOT lines are needed
        for line in f:
            if line.strip():
                train.append(json.loads(line))
            if len(train) == GSM8K_NSHOT:
                break
    few_shot = "".join(f"Question: {t['question']}\nAnswer: {t['answer']}\n\n" for t in train)

    keep = ~r["prompt"].isin(_contaminated(src, "gsm8k"))
    idx = np.flatnonzero(keep.to_numpy())
    qids = [f"gsm8k-main-test-#{i}" for i in idx]
    answers = [test[i]["answer"] for i in idx]
    queries = pd.DataFrame({"query_id": qids, "text": r["prompt"].iloc[idx].to_numpy(), "task": "gsm8k",
                            "gold": [a.split("####")[-1].strip() for a in answers], "gold_solution": answers})
    in_tok = [estimate_tokens(few_shot + f"Question: {q}\nAnswer:") for q in queries["text"]]
    frames = []
    for m in ROUTELLM_MODELS:
        resp = r[f"{m}_response"].iloc[idx].to_numpy()
        frames.append(pd.DataFrame({"query_id": qids, "model": m,
                                    "score": _bool_col(r[m], rf, m).iloc[idx].to_numpy(),
                                    "input_tokens": in_tok, "output_tokens": estimate_tokens(resp),
                                    "response": resp}))
    extra = {"score": "correct (0/1) as published by RouteLLM (last number in the response == gold)",
             "contaminated_dropped": int((~keep).sum()),
             "tokens": {"estimated": True, "rule": TOKEN_RULE,
                        "input": f"ceil(len(prompt) / 4) of RouteLLM's exact {GSM8K_NSHOT}-shot prompt (first "
                                 f"{GSM8K_NSHOT} GSM8K train examples + the question); chat template not counted",
                        "output": "ceil(len(response) / 4) of the published response"}}
    return queries, pd.concat(frames, ignore_index=True), extra


def _routellm_mmlu(src: Path):
    cm = _contaminated(src, "mmlu")
    raw_dir = src / "mmlu" / "responses"
    frames = []
    if raw_dir.is_dir():  # published layout: one CSV per subject
        files = sorted(raw_dir.glob("mmlu_*.csv*"))
        for f in files:
            df = _read_csv(f, dtype={"prompt": str}, keep_default_na=False)
            subject = f.name[len("mmlu_"):].split(".csv")[0]
            df.insert(0, "subject", subject)
            df["_file"], df["_row"] = str(f), np.arange(len(df))
            frames.append(df)
    else:  # packaged layout: combined, with a subject column
        files = sorted((src / "mmlu").glob("mmlu_responses*.csv*"))
        for f in files:
            df = _read_csv(f, dtype={"prompt": str, "subject": str}, keep_default_na=False)
            df["_file"], df["_row"] = str(f), np.arange(len(df))
            frames.append(df)
    if not frames:
        raise FileNotFoundError(f"no MMLU response files under {src / 'mmlu'} (expected responses/mmlu_*.csv or "
                                "mmlu_responses*.csv.gz)")
    d = pd.concat(frames, ignore_index=True)
    for c in ("subject", "prompt", *ROUTELLM_MODELS):
        if c not in d.columns:
            raise DataValidationError("missing column", file=str(files[0]), field=c)
    d["_i"] = d.groupby("subject").cumcount()
    # few-shot proxy per subject (see import_routellm docstring)
    med = d.groupby("subject")["prompt"].apply(lambda s: float(s.str.len().median()))
    header = {s: len(f"The following are multiple choice questions (with answers) about {' '.join(s.split('_'))}.\n\n")
              for s in med.index}
    few_tok = {s: min(MMLU_FEWSHOT_TOKEN_CAP, math.ceil((header[s] + MMLU_NTRAIN * (med[s] + 4)) / CHARS_PER_TOKEN))
               for s in med.index}
    keep = ~d["prompt"].isin(cm)
    dropped = int((~keep).sum())
    d = d[keep].reset_index(drop=True)
    qids = ("mmlu-" + d["subject"] + "-" + d["_i"].astype(str)).to_numpy()
    queries = pd.DataFrame({"query_id": qids, "text": d["prompt"].to_numpy(), "task": "mmlu",
                            "gold": None, "subject": d["subject"].to_numpy()})
    in_tok = d["subject"].map(few_tok).to_numpy() + estimate_tokens(d["prompt"])
    frames = []
    for m in ROUTELLM_MODELS:
        score = np.empty(len(d))
        for f, g in d.groupby("_file"):
            score[g.index] = _bool_col(g[m].reset_index(drop=True), Path(f), m).to_numpy()
        frames.append(pd.DataFrame({"query_id": qids, "model": m, "score": score, "input_tokens": in_tok,
                                    "output_tokens": 1}))
    extra = {"score": "correct (0/1) as published by RouteLLM (first generated character == answer letter)",
             "contaminated_dropped": dropped,
             "duplicate_prompt_texts": int(queries["text"].duplicated().sum()),
             "tokens": {"estimated": True, "rule": TOKEN_RULE,
                        "output": "1: RouteLLM generated with max_new_tokens=1 (evals/mmlu/generate_responses.py)",
                        "input": "ceil(len(question) / 4) + few-shot proxy: ceil((len(subject header) + 5 * "
                                 "(median question length in the subject + 4)) / 4), capped at 1536 (RouteLLM's "
                                 "few-shot limit); the real 5 dev examples are not published"}}
    return queries, pd.concat(frames, ignore_index=True), extra


_CONV_START = "<|The Start of Assistant A's Conversation with User|>"
_CONV_END = "<|The End of Assistant A's Conversation with User|>"


def _mt_answers(prompt: str, t1: str, t2: str) -> tuple[str, str] | None:
    """(answer 1, answer 2) from a multi-turn judge prompt, anchored on the known turn texts."""
    start = prompt.find(_CONV_START)
    if start < 0:
        return None
    conv = prompt[start + len(_CONV_START):]
    end = conv.rfind(_CONV_END)
    if end < 0:
        return None
    conv = conv[:end]
    h1 = f"\n\n### User:\n{t1}\n\n### Assistant A:\n"
    h2 = f"\n\n### User:\n{t2}\n\n### Assistant A:\n"
    if not conv.startswith(h1):
        return None
    rest = conv[len(h1):]
    j = rest.find(h2)
    if j < 0:
        return None
    return rest[:j], rest[j + len(h2):].rstrip("\n")


def _routellm_mtbench(src: Path):
    qf = _find(src, "mt_bench/question.jsonl")
    jf = _find(src, "mt_bench/judgements.jsonl")
    cm = _contaminated(src, "mt_bench")
    questions = _read_jsonl(qf)
    judg = _read_jsonl(jf)
    scores: dict[tuple, float] = {}
    prompts: dict[tuple, str] = {}
    for i, r in enumerate(judg):
        try:
            key = (int(r["question_id"]), str(r["model"]), int(r["turn"]))
            s = float(r["score"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataValidationError(f"bad judgement record: {exc}", file=str(jf), row=i, field="score") from None
        if not 1 <= s <= 10:
            raise DataValidationError(f"judge score {s} is outside 1-10", file=str(jf), row=i, field="score")
        if key in scores:
            raise DataValidationError(f"duplicate judgement for {key}", file=str(jf), row=i, field="question_id")
        scores[key] = s
        prompts[key] = (r.get("user_prompt") or "", i)
    rows_q, rows_o = [], []
    dropped = 0
    for qi, q in enumerate(questions):
        t1, t2 = q["turns"][0], q["turns"][1]
        if t1 in cm or t2 in cm:
            dropped += 1
            continue
        qid = int(q["question_id"])
        rows_q.append({"query_id": f"mtbench-{qid}", "text": t1, "task": q.get("category") or "mt-bench",
                       "gold": None, "turn2": t2, "question_id": qid})
        for m in ROUTELLM_MODELS:
            for turn in (1, 2):
                if (qid, m, turn) not in scores:
                    raise DataValidationError(f"no judgement for question {qid}, model {m!r}, turn {turn}",
                                              file=str(jf), field="question_id")
            s1, s2 = scores[(qid, m, 1)], scores[(qid, m, 2)]
            p2, row2 = prompts[(qid, m, 2)]
            ans = _mt_answers(p2, t1, t2)
            if ans is None:
                raise DataValidationError(f"cannot find the two answers of {m!r} to question {qid} in the judge "
                                          "prompt", file=str(jf), row=row2, field="user_prompt")
            a1, a2 = ans
            mean = (s1 + s2) / 2
            rows_o.append({"query_id": f"mtbench-{qid}", "model": m, "score": (mean - 1) / 9,
                           "judge_score": mean, "judge_score_turn1": s1, "judge_score_turn2": s2,
                           "input_tokens": estimate_tokens(t1) + estimate_tokens(t1 + a1 + t2),
                           "output_tokens": estimate_tokens(a1) + estimate_tokens(a2),
                           "response_turn1": a1, "response_turn2": a2})
    extra = {"score": "(mean of the GPT-4 judge's turn-1 and turn-2 scores - 1) / 9, i.e. the 1-10 judge scale "
                      "mapped linearly onto [0, 1]; raw mean in judge_score",
             "query": "one query per question: text = turn 1 (RouteLLM routes on the first turn), turn2 kept",
             "contaminated_dropped": dropped,
             "tokens": {"estimated": True, "rule": TOKEN_RULE,
                        "input": "two calls: ceil(len(turn1)/4) + ceil(len(turn1 + answer1 + turn2)/4); "
                                 "chat template not counted",
                        "output": "ceil(len(answer1)/4) + ceil(len(answer2)/4); answers recovered from the "
                                  "GPT-4 judge's multi-turn prompts"}}
    return pd.DataFrame(rows_q), pd.DataFrame(rows_o), extra


# ------------------------------------------------------------------------------------------------------------
# Generic CSV / Parquet
# ------------------------------------------------------------------------------------------------------------
class GenericImportConfig(BaseModel):
    """Column mapping for :func:`import_generic`. Values are column names in the file (``None``: absent).

    * ``format: long`` — one row per query x model (x strategy x budget): ``model`` and ``score`` columns, plus
      optional ``strategy``, ``budget``, ``input_tokens``, ``output_tokens``, ``cost``, ``latency``, ``response``.
    * ``format: wide`` — one row per query, one score column per model: ``model_columns`` lists them (a list,
      or a mapping column -> model name); left out, every column not mapped to something else is a model.
      ``input_tokens``, ``output_tokens``, ``cost`` may be templates with ``{model}`` (e.g. ``"{model}_cost"``,
      one column per model) or a plain column shared by all models.
    * Cost: the ``cost`` column if given, else ``tokens x prices`` (``prices``: a price-table YAML path, or
      ``"builtin"`` for the packaged table) — which needs both token columns.
    * ``score_range: [lo, hi]`` rescales scores linearly to [0, 1]; True/False scores read as 1/0.
    """

    model_config = ConfigDict(extra="forbid")

    format: Literal["wide", "long"]
    name: str | None = None
    query_id: str | None = "query_id"
    text: str = "text"
    task: str | None = None
    task_value: str = "default"
    gold: str | None = None
    # long format
    model: str = "model"
    score: str = "score"
    strategy: str | None = None
    budget: str | None = None
    latency: str | None = None
    response: str | None = None
    # wide format
    model_columns: list[str] | dict[str, str] | None = None
    # measures (long: columns; wide: columns or '{model}' templates)
    input_tokens: str | None = None
    output_tokens: str | None = None
    cost: str | None = None
    tokens_estimated: bool = False
    prices: str | None = None
    on_missing_price: Literal["error", "zero"] = "error"
    score_range: tuple[float, float] | None = None
    extra_query_columns: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "GenericImportConfig":
        if self.score_range is not None and not self.score_range[1] > self.score_range[0]:
            raise ValueError(f"score_range must be [lo, hi] with hi > lo, got {list(self.score_range)}")
        if self.cost is None and self.prices is None:
            raise ValueError("give either a 'cost' column or 'prices' (a price-table YAML path, or 'builtin') "
                             "together with 'input_tokens' and 'output_tokens' columns")
        if self.cost is None and (self.input_tokens is None or self.output_tokens is None):
            raise ValueError("pricing from 'prices' needs both 'input_tokens' and 'output_tokens' columns")
        if self.format == "long" and self.model_columns is not None:
            raise ValueError("'model_columns' is for format: wide")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> "GenericImportConfig":
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"import config {path} not found") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"import config {path}: not valid YAML: {exc}") from None
        if isinstance(raw, dict) and isinstance(raw.get("import"), dict):
            raw = raw["import"]
        try:
            cfg = cls.model_validate(raw or {})
        except ValidationError as exc:
            errs = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<config>'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"import config {path}: {errs}") from None
        if cfg.prices not in (None, "builtin") and not Path(cfg.prices).is_absolute():
            cfg = cfg.model_copy(update={"prices": str((path.parent / cfg.prices).resolve())})
        return cfg


def _read_table(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types
            raise DataValidationError(f"cannot read Parquet: {exc}", file=str(path)) from None
    if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz")):
        sep = "\t" if ".tsv" in name else ","
        return _read_csv(path, sep=sep, keep_default_na=True, na_values=[""], dtype=str)
    raise DataValidationError("unsupported file type (use .csv, .csv.gz, .tsv or .parquet)", file=str(path))


def _numeric(df: pd.DataFrame, col: str, file: Path, row_of: np.ndarray | None = None, *, allow_na: bool,
             integer: bool = False, nonneg: bool = True, what: str | None = None) -> pd.Series:
    """Column as float, with an error naming file, row and column for the first bad value."""
    s = df[col]
    if s.dtype == bool:
        return s.astype("float64")
    txt = s.astype("string").str.strip()
    low = txt.str.lower()
    txt = txt.mask((low == "true").fillna(False).astype(bool), "1").mask(
        (low == "false").fillna(False).astype(bool), "0")
    vals = pd.to_numeric(txt, errors="coerce").astype("float64")
    present = (txt.notna() & (txt != "")).fillna(False).astype(bool)
    bad = vals.isna() & present
    if not allow_na:
        bad |= ~present
    if integer:
        bad |= (vals.notna() & (vals != np.floor(vals.fillna(0)))).astype(bool)
    if nonneg:
        bad |= (vals < 0).fillna(False).astype(bool)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        row = int(row_of[i]) if row_of is not None else i
        kind = what or ("a non-negative integer" if integer else "a non-negative number" if nonneg else "a number")
        v = s.iloc[i]
        raise DataValidationError(f"expected {kind}, got {'an empty value' if pd.isna(v) or v == '' else repr(v)}",
                                  file=str(file), row=row, field=col)
    return vals


def import_generic(path: str | Path, config: GenericImportConfig | dict | str | Path) -> RoutingData:
    """Import a wide or long CSV/Parquet routing log using a :class:`GenericImportConfig` (or a dict, or the
    path of a YAML file holding one). Every error about the data names the file, the row (0-based data row,
    header excluded; for text files the 1-based record number after the header is added) and the column."""
    try:
        return _import_generic(Path(path), config)
    except DataValidationError as exc:
        p = Path(path)
        if exc.row is not None and not p.name.lower().endswith((".parquet", ".pq")) and "(record " not in str(exc):
            msg = str(exc).split(": ", 1)[-1] if exc.file else str(exc)
            raise DataValidationError(f"{msg} (record {exc.row + 1} after the header)", file=exc.file, row=exc.row,
                                      field=exc.field) from None
        raise


def _import_generic(path: Path, config: GenericImportConfig | dict | str | Path) -> RoutingData:
    if isinstance(config, (str, Path)):
        config = GenericImportConfig.from_yaml(config)
    elif isinstance(config, dict):
        try:
            config = GenericImportConfig.model_validate(config)
        except ValidationError as exc:
            errs = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<config>'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"import config: {errs}") from None
    cfg = config
    if not path.is_file():
        raise FileNotFoundError(f"routing log {path} not found")
    df = _read_table(path).reset_index(drop=True)
    file = path

    def need(col: str | None) -> None:
        if col is not None and col not in df.columns:
            raise DataValidationError(f"column not found (has: {', '.join(map(str, df.columns))})", file=str(file),
                                      field=col)

    for c in (cfg.query_id, cfg.text, cfg.task, cfg.gold, *cfg.extra_query_columns):
        need(c)

    def strcol(col: str, allow_na: bool = False) -> pd.Series:
        s = df[col].astype("string")
        if not allow_na:
            na = s.isna() | (s.str.strip() == "")
            if na.any():
                raise DataValidationError("empty value", file=str(file), row=int(np.flatnonzero(na.to_numpy())[0]),
                                          field=col)
        return s

    qid = strcol(cfg.query_id) if cfg.query_id else pd.Series([f"q{i}" for i in range(len(df))], dtype="string")
    text = strcol(cfg.text)
    task = strcol(cfg.task) if cfg.task else pd.Series([cfg.task_value] * len(df), dtype="string")
    qcols = {"query_id": qid, "text": text, "task": task}
    if cfg.gold:
        qcols["gold"] = strcol(cfg.gold, allow_na=True)
    for c in cfg.extra_query_columns:
        qcols[c] = df[c]
    qframe = pd.DataFrame(qcols)

    def scale(v: pd.Series, col: str, rows: np.ndarray) -> pd.Series:
        if cfg.score_range is not None:
            lo, hi = cfg.score_range
            v = (v - lo) / (hi - lo)
        bad = (v < 0) | (v > 1)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            rng = f"[{cfg.score_range[0]}, {cfg.score_range[1]}]" if cfg.score_range else "[0, 1]"
            raise DataValidationError(f"score must be in {rng} (set score_range to rescale), got "
                                      f"{df[col].iloc[rows[i]]!r}", file=str(file), row=int(rows[i]), field=col)
        return v

    if cfg.format == "long":
        for c in (cfg.model, cfg.score, cfg.strategy, cfg.budget, cfg.latency, cfg.response, cfg.input_tokens,
                  cfg.output_tokens, cfg.cost):
            need(c)
        rows = np.arange(len(df))
        # one queries row per query id; text/task/gold must agree across its outcome rows
        first = ~qframe["query_id"].duplicated()
        for c in ("text", "task", "gold"):
            if c in qframe.columns:
                ref = qframe.loc[first].set_index("query_id")[c]
                diff = (qframe[c].fillna("\x00") != qframe["query_id"].map(ref).fillna("\x00")).to_numpy()
                if diff.any():
                    i = int(np.flatnonzero(diff)[0])
                    col = {"text": cfg.text, "task": cfg.task, "gold": cfg.gold}[c]
                    raise DataValidationError(f"query {qframe['query_id'].iloc[i]!r} has a different {c} here than "
                                              "in its first row", file=str(file), row=i, field=col)
        queries = qframe.loc[first].reset_index(drop=True)
        o = pd.DataFrame({"query_id": qid, "model": strcol(cfg.model)})
        o["score"] = scale(_numeric(df, cfg.score, file, allow_na=False, nonneg=False, what="a number (score)"),
                           cfg.score, rows)
        if cfg.strategy:
            o["strategy"] = df[cfg.strategy].astype("string").fillna("default").replace("", "default")
        if cfg.budget:
            o["budget"] = _numeric(df, cfg.budget, file, allow_na=True, integer=True)
        if cfg.latency:
            o["latency_s"] = _numeric(df, cfg.latency, file, allow_na=True)
        if cfg.response:
            o["response"] = df[cfg.response].astype("string")
        for fld, col in (("input_tokens", cfg.input_tokens), ("output_tokens", cfg.output_tokens)):
            if col:
                o[fld] = _numeric(df, col, file, allow_na=cfg.cost is not None, integer=True)
        if cfg.cost:
            o["cost_usd"] = _numeric(df, cfg.cost, file, allow_na=False)
        src_rows, src_cols = rows, None
    else:
        models = _wide_models(df, cfg)
        for mc in models:
            need(mc)
        queries = qframe
        frames, src_rows, src_cols = [], [], []
        rows = np.arange(len(df))
        for col, model in models.items():
            f = pd.DataFrame({"query_id": qid, "model": model})
            f["score"] = scale(_numeric(df, col, file, allow_na=False, nonneg=False, what="a number (score)"),
                               col, rows)
            for fld, spec in (("input_tokens", cfg.input_tokens), ("output_tokens", cfg.output_tokens),
                              ("cost_usd", cfg.cost)):
                if spec is None:
                    continue
                c = spec.replace("{model}", model) if "{model}" in spec else spec
                need(c)
                f[fld] = _numeric(df, c, file, allow_na=(fld != "cost_usd" and cfg.cost is not None),
                                  integer=(fld != "cost_usd"))
            frames.append(f)
            src_rows.append(rows)
            src_cols += [col] * len(df)
        o = pd.concat(frames, ignore_index=True)
        src_rows = np.concatenate(src_rows)

    if cfg.input_tokens or cfg.output_tokens:
        o["tokens_estimated"] = cfg.tokens_estimated
    meta = {"name": cfg.name or path.stem, "source": str(path), "format": cfg.format,
            "config": cfg.model_dump(exclude_none=True)}
    if cfg.cost is None:
        table = PriceTable.default() if cfg.prices == "builtin" else PriceTable.from_yaml(cfg.prices)
        entries = table.require(sorted(o["model"].unique()), on_missing=cfg.on_missing_price, where=str(cfg.prices))
        o = _add_cost(o, entries)
        meta["cost"] = "tokens x prices from " + str(cfg.prices)
        meta["prices"] = {m: {"input_per_1m": e.input_per_1m, "output_per_1m": e.output_per_1m,
                              "source": e.source, "date": e.date} for m, e in entries.items()}
    else:
        meta["cost"] = f"from column {cfg.cost!r}"
    try:
        return RoutingData.from_frames(queries, o, meta, source=str(path))
    except DataValidationError as exc:
        # re-point the error at the user's file: row and column as they are there
        internal = {"query_id": cfg.query_id, "text": cfg.text, "task": cfg.task, "gold": cfg.gold,
                    "model": cfg.model, "score": cfg.score, "strategy": cfg.strategy, "budget": cfg.budget}
        row, field = exc.row, exc.field
        if exc.file and exc.file.endswith("/outcomes") and row is not None:
            field = (src_cols[row] if (src_cols is not None and field in ("score",)) else
                     internal.get(field) or field)
            row = int(src_rows[row])
        elif field in internal:
            field = internal.get(field) or field
        msg = str(exc).split(": ", 1)[-1] if exc.file else str(exc)
        if "duplicate (query_id, model, strategy, budget)" in msg and cfg.format == "wide":
            msg = f"duplicate query id {o['query_id'].iloc[exc.row]!r}"
        raise DataValidationError(msg, file=str(path), row=row, field=field) from None


def _wide_models(df: pd.DataFrame, cfg: GenericImportConfig) -> dict[str, str]:
    if isinstance(cfg.model_columns, dict):
        return dict(cfg.model_columns)
    if isinstance(cfg.model_columns, list):
        return {c: c for c in cfg.model_columns}
    used = {c for c in (cfg.query_id, cfg.text, cfg.task, cfg.gold, *cfg.extra_query_columns) if c}
    templ = [t for t in (cfg.input_tokens, cfg.output_tokens, cfg.cost) if t]
    cols = [c for c in df.columns if c not in used and c not in templ]
    models = {}
    for c in cols:
        # a column that some '{model}' template produces from another column is not a model
        if any("{model}" in t and any(t.replace("{model}", m) == c for m in cols if m != c) for t in templ):
            continue
        models[c] = c
    if not models:
        raise DataValidationError("no model score columns found (set model_columns)", field="model_columns")
    return models


# ------------------------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------------------------
BUILTIN: dict[str, Callable[..., RoutingData]] = {
    "zeroeval-gsm8k": import_zeroeval_gsm8k,
    "llmrouter-dcrouter": import_llmrouter_dcrouter,
    "routellm-gsm8k": lambda **kw: import_routellm("gsm8k", **kw),
    "routellm-mmlu": lambda **kw: import_routellm("mmlu", **kw),
    "routellm-mtbench": lambda **kw: import_routellm("mt-bench", **kw),
}


def builtin_names() -> list[str]:
    return sorted(BUILTIN)


def load_builtin(name: str, **kwargs) -> RoutingData:
    """Load a built-in dataset by name (see :data:`BUILTIN`); keyword arguments go to its importer."""
    try:
        loader = BUILTIN[name]
    except KeyError:
        raise UnknownDatasetError(f"unknown built-in dataset {name!r}; built-in datasets: "
                                  f"{', '.join(builtin_names())}") from None
    return loader(**kwargs)


class UnknownDatasetError(KeyError):
    """No built-in dataset of that name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


# ------------------------------------------------------------------------------------------------------------
# GSM8K questions with gold answers (for collection and the RL routers)
# ------------------------------------------------------------------------------------------------------------
def gsm8k_questions(split: str = "test", path: str | Path | None = None) -> pd.DataFrame:
    """GSM8K questions (RouteLLM's copy of the official test/train files) as a queries table.

    ``query_id`` follows ZeroEval's ids (``gsm8k-main-<split>-#<i>``, file order), so collected outcomes join the
    ZeroEval logs; ``gold`` is the final number after ``####``.
    """
    if split not in ("test", "train"):
        raise ValueError(f"GSM8K split must be 'test' or 'train', got {split!r}")
    file = Path(path) if path is not None else _find(dataset_root("routellm") / "gsm8k", f"{split}.jsonl")
    rows = _read_jsonl(file)
    out = []
    for i, r in enumerate(rows):
        if "question" not in r or "answer" not in r:
            raise DataValidationError("needs 'question' and 'answer'", file=str(file), row=i,
                                      field="question" if "question" not in r else "answer")
        gold = str(r["answer"]).split("####")[-1].strip().replace(",", "")
        out.append({"query_id": f"gsm8k-main-{split}-#{i}", "text": r["question"], "task": "gsm8k", "gold": gold})
    return pd.DataFrame(out)
