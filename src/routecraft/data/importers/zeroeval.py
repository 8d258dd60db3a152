"""ZeroEval's GSM8K logs (yuchenlin/ZeroEval): 1,319 test questions answered by 42 models, re-scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from routecraft.data.importers.common import (
    CHARS_PER_TOKEN,
    TOKEN_RULE,
    add_cost,
    dataset_root,
    find,
    price_meta,
    prices_for,
    read_csv,
    read_json,
    require_columns,
    source_root,
    unpriced_meta,
)
from routecraft.data.prices import OnMissing, PriceTable
from routecraft.data.schema import DataValidationError, RoutingData

#: ZeroEval's open-ended QA prompt (src/templates/OEQA.py, yuchenlin/ZeroEval), used for its "gsm" task. Verbatim,
#: with its trailing spaces (written ``\x20``): the prompt's length sets the estimated input tokens.
ZEROEVAL_OEQA_TEMPLATE = """
## Question:\x20

{question}


## Instruction\x20

Please answer this question by first reasoning and then providing your answer.
Present your reasoning and solution in the following json format.\x20
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
    src = source_root("zeroeval", root)
    mfile = find(src, "gsm8k_matrix.csv")
    qfile = find(src, "gsm8k_questions.csv")
    m = read_csv(mfile, dtype={"qid": str, "model": str, "pred": str, "gold": str, "task": str},
                  keep_default_na=False, na_values={"pred": [""]})
    require_columns(m, ["qid", "model", "correct", "parsed", "pred", "gold", "out_chars", "out_words"], mfile)
    q = read_csv(qfile, dtype=str, keep_default_na=False)
    require_columns(q, ["qid", "question"], qfile)

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
    table, entries = prices_for(o["model"].unique(), prices, on_missing, "zeroeval-gsm8k")
    o = add_cost(o, entries)

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
        "prices": price_meta(entries), **unpriced_meta(entries), "price_reference_date": table.reference_date,
        "n_queries": n_q, "n_models": int(o["model"].nunique()),
        "incomplete_models": {k: int(v) for k, v in counts.items() if v < n_q},
        "gold": "as published in ZeroEval's matrix (thousands separators kept, e.g. '2,125')",
    }
    try:
        meta["rescoring_check"] = zeroeval_rescoring_check(o, find(src, "gsm.summary.json"))
    except FileNotFoundError:
        meta["rescoring_check"] = None
    return RoutingData.from_frames(queries, o, meta, source=str(src))


def zeroeval_rescoring_check(outcomes: pd.DataFrame | RoutingData, summary_file: str | Path | None = None) -> dict:
    """Compare re-scored accuracy (percent) with ZeroEval's published ``gsm.summary.json``, matching exact
    model names. Returns ``{"matched_models", "mean_abs_gap_points", "max_abs_gap_points", "per_model"}``."""
    o = outcomes.outcomes if isinstance(outcomes, RoutingData) else outcomes
    path = Path(summary_file) if summary_file else find(dataset_root("zeroeval"), "gsm.summary.json")
    summary = {r["Model"]: float(r["Acc"]) for r in read_json(path)}
    acc = o.groupby("model")["score"].mean() * 100
    per = {m: {"ours": round(float(a), 3), "published": summary[m], "gap": round(float(a) - summary[m], 3)}
           for m, a in acc.items() if m in summary}
    gaps = np.array([abs(v["gap"]) for v in per.values()])
    return {"summary_file": path.name, "matched_models": len(per),
            "unmatched_models": sorted(set(acc.index) - set(summary)),
            "mean_abs_gap_points": round(float(gaps.mean()), 4) if len(gaps) else None,
            "max_abs_gap_points": round(float(gaps.max()), 4) if len(gaps) else None,
            "per_model": per}
