"""LLMRouter's dcrouter split (ulab-uiuc/LLMRouter): 14 tasks, 9 models, de-duplicated."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from routecraft.data.importers.common import (
    TOKEN_RULE,
    add_cost,
    estimate_tokens,
    find,
    price_meta,
    read_json,
    read_jsonl,
    source_root,
)
from routecraft.data.prices import MissingPriceError, PriceEntry
from routecraft.data.schema import DataValidationError, RoutingData

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
    src = source_root("llmrouter", root)
    trf = find(src, "dcrouter_preprocessed/train.json")
    tef = find(src, "dcrouter_preprocessed/test.json")
    llmf = find(src, "llm_candidates/default_llm.json", "example_data/llm_candidates/default_llm.json")
    qfiles = [find(src, f"query_data/default_query_{s}.jsonl", f"example_data/query_data/default_query_{s}.jsonl")
              for s in ("train", "test")]

    splits = {"train": read_json(trf), "test": read_json(tef)}
    kept: dict[str, dict] = {}
    for split, f in (("train", trf), ("test", tef)):
        if not isinstance(splits[split], list):
            raise DataValidationError("expected a JSON list of {question, scores}", file=str(f))
        for i, rec in enumerate(splits[split]):
            if (not isinstance(rec, dict) or not isinstance(rec.get("question"), str)
                    or not isinstance(rec.get("scores"), dict)):
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
        for r in read_jsonl(f):
            text = r.get("query")
            if not isinstance(text, str):
                continue
            d = qinfo.setdefault(text, {"tasks": [], "first": r})
            if r.get("task_name") not in d["tasks"]:
                d["tasks"].append(r.get("task_name"))

    cands = read_json(llmf)
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
    o = add_cost(o, entries)

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
        "prices": price_meta(entries),
        "task_source": "query_data/default_query_{train,test}.jsonl, matched on exact question text",
        "unmatched_task": unmatched,
        "n_queries": len(queries), "n_models": len(models),
    }
    return RoutingData.from_frames(queries, o, meta, source=str(src))
