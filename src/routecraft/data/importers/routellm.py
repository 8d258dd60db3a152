"""RouteLLM's logs (lm-sys/RouteLLM): GSM8K, MMLU and MT-Bench with 2 models; and the GSM8K questions of RouteLLM's copy
of the official test/train files (for collection and the multi-step routers)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from routecraft.data.importers.common import (
    CHARS_PER_TOKEN,
    TOKEN_RULE,
    add_cost,
    dataset_root,
    estimate_tokens,
    find,
    open_text,
    price_meta,
    prices_for,
    read_csv,
    read_jsonl,
    require_columns,
    source_root,
    unpriced_meta,
)
from routecraft.data.prices import OnMissing, PriceTable
from routecraft.data.schema import DataValidationError, RoutingData
from routecraft.strategies.answers import extract_numeric
from routecraft.strategies.graders import gsm8k_match

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
    src = source_root("routellm", root)
    table, entries = prices_for(ROUTELLM_MODELS, prices, on_missing, f"routellm-{b}")
    if b == "gsm8k":
        queries, o, extra = _routellm_gsm8k(src)
    elif b == "mmlu":
        queries, o, extra = _routellm_mmlu(src)
    else:
        queries, o, extra = _routellm_mtbench(src)
    o["tokens_estimated"] = True
    o = add_cost(o, entries)
    meta = {"name": f"routellm-{b.replace('-', '')}", "source": f"RouteLLM evals/{b.replace('-', '_')}", **ROUTELLM,
            **extra, "cost": "input_tokens * input_per_1m / 1e6 + output_tokens * output_per_1m / 1e6, prices "
                             "from the routecraft price table",
            "prices": price_meta(entries), **unpriced_meta(entries), "n_queries": len(queries),
            "n_models": int(o["model"].nunique())}
    return RoutingData.from_frames(queries, o, meta, source=str(src / b.replace("-", "_")))


def _contaminated(src: Path, bench: str) -> set[str]:
    f = find(src, f"{bench}/contaminated_prompts.jsonl")
    out = set()
    for i, r in enumerate(read_jsonl(f)):
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
    rf = find(src, "gsm8k/gsm8k_responses.csv")
    r = read_csv(rf, keep_default_na=False, dtype=str)
    cols = ["prompt", *ROUTELLM_MODELS, *(f"{m}_response" for m in ROUTELLM_MODELS)]
    require_columns(r, cols, rf)
    tf = find(src, "gsm8k/test.jsonl")
    test = read_jsonl(tf)
    if len(test) != len(r):
        raise DataValidationError(f"{len(r)} responses but {len(test)} test questions in {tf.name}", file=str(rf))
    for i, (p, t) in enumerate(zip(r["prompt"], test)):
        if p != t.get("question"):
            raise DataValidationError(f"prompt differs from {tf.name} question {i}", file=str(rf), row=i,
                                      field="prompt")
    trf = find(src, "gsm8k/train.jsonl")
    train = []
    with open_text(trf) as f:  # only the first GSM8K_NSHOT lines are needed
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
                                    "response": resp, "prediction": [extract_numeric(x)[0] for x in resp]}))
    outcomes = pd.concat(frames, ignore_index=True)
    gold = dict(zip(queries["query_id"], queries["gold"]))
    ours = np.array([gsm8k_match(p, gold[q]) for p, q in zip(outcomes["prediction"], outcomes["query_id"])])
    agree = {m: float((ours[outcomes["model"].to_numpy() == m] ==
                       outcomes.loc[outcomes["model"] == m, "score"].to_numpy()).mean()) for m in ROUTELLM_MODELS}
    extra = {"score": "correct (0/1) as published by RouteLLM (last number in the response == gold)",
             "prediction": "the answer extracted from the published response by routecraft's numeric extractor "
                           "(strategies.answers.extract_numeric); graded with the GSM8K grader it agrees with "
                           "RouteLLM's labels on this share of the responses: "
                           + ", ".join(f"{m} {v:.1%}" for m, v in agree.items()),
             "prediction_agreement": agree,
             "contaminated_dropped": int((~keep).sum()),
             "tokens": {"estimated": True, "rule": TOKEN_RULE,
                        "input": f"ceil(len(prompt) / 4) of RouteLLM's exact {GSM8K_NSHOT}-shot prompt (first "
                                 f"{GSM8K_NSHOT} GSM8K train examples + the question); chat template not counted",
                        "output": "ceil(len(response) / 4) of the published response"}}
    return queries, outcomes, extra


def _routellm_mmlu(src: Path):
    cm = _contaminated(src, "mmlu")
    raw_dir = src / "mmlu" / "responses"
    frames = []
    if raw_dir.is_dir():  # published layout: one CSV per subject
        files = sorted(raw_dir.glob("mmlu_*.csv*"))
        for f in files:
            df = read_csv(f, dtype={"prompt": str}, keep_default_na=False)
            subject = f.name[len("mmlu_"):].split(".csv")[0]
            df.insert(0, "subject", subject)
            df["_file"], df["_row"] = str(f), np.arange(len(df))
            frames.append(df)
    else:  # packaged layout: combined, with a subject column
        files = sorted((src / "mmlu").glob("mmlu_responses*.csv*"))
        for f in files:
            df = read_csv(f, dtype={"prompt": str, "subject": str}, keep_default_na=False)
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
    qf = find(src, "mt_bench/question.jsonl")
    jf = find(src, "mt_bench/judgements.jsonl")
    cm = _contaminated(src, "mt_bench")
    questions = read_jsonl(qf)
    judg = read_jsonl(jf)
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
    for q in questions:
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


def gsm8k_questions(split: str = "test", path: str | Path | None = None) -> pd.DataFrame:
    """GSM8K questions (RouteLLM's copy of the official test/train files) as a queries table.

    ``query_id`` follows ZeroEval's ids (``gsm8k-main-<split>-#<i>``, file order), so collected outcomes join the
    ZeroEval logs; ``gold`` is the final number after ``####``.
    """
    if split not in ("test", "train"):
        raise ValueError(f"GSM8K split must be 'test' or 'train', got {split!r}")
    file = Path(path) if path is not None else find(dataset_root("routellm") / "gsm8k", f"{split}.jsonl")
    rows = read_jsonl(file)
    out = []
    for i, r in enumerate(rows):
        if "question" not in r or "answer" not in r:
            raise DataValidationError("needs 'question' and 'answer'", file=str(file), row=i,
                                      field="question" if "question" not in r else "answer")
        gold = str(r["answer"]).split("####")[-1].strip().replace(",", "")
        out.append({"query_id": f"gsm8k-main-{split}-#{i}", "text": r["question"], "task": "gsm8k", "gold": gold})
    return pd.DataFrame(out)
