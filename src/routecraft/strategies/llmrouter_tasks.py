"""LLMRouter's query rows (``query_data/default_query_{train,test}.jsonl``) as routecraft queries and golds.

A row has ``task_name``, ``query``, ``ground_truth``, ``metric``, ``choices`` and ``task_id``. :func:`llmrouter_gold`
turns it into the (gold, choices) the graders take, by its metric:

* ``em_mc`` (mmlu, gpqa, arc_challenge, commonsense_qa, openbook_qa, agentverse-logicgrid): ``choices`` is the
  Python-literal text of a list of option texts, or of ``{'text': [...], 'label' | 'labels': [...]}``; the options
  become a list of texts in their order (shown as (A), (B), ... by the strategies) and the gold the letter of the
  gold's position: "C" stays "C", and arc_challenge's numeric labels map by position ("3" of labels 1-4 -> "C").
* ``MATH``: the last ``\\boxed{}`` of the solution (math), or the plain number (agentverse-mgsm).
* ``GSM8K``: the number after "####" of the solution.
* ``f1_score``: the answer text as it is.
* ``code_eval``: a :class:`~routecraft.strategies.code_eval.CodeGold` as JSON: mbpp's asserts (shipped as the
  Python-literal text of a list, in both ``ground_truth`` and ``choices``), or human_eval's ``def
  check(candidate)`` block with the entry point (the function the prompt defines last) and the prompt (for answers
  that complete only the body).
* ``commongen_coverage``: the comma-separated concept list.

:func:`llmrouter_text` is the question a model is asked: the query, except for mbpp, whose query does not name the
function the tests call ("Write a function to ..."): it gets MBPP's usual "Your code should pass these tests:" and
the asserts (the prompt of the MBPP paper, Austin et al. 2021), without which no answer could pass.
"""

from __future__ import annotations

import ast
import math
from typing import Any, Mapping

from routecraft.strategies.answers import LETTERS, choice_letters
from routecraft.strategies.code_eval import CodeGold, prompt_entry_point
from routecraft.strategies.graders import LLMROUTER_METRICS, extract_gsm8k_gold, math_gold


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def parse_choices(raw: Any) -> tuple[list[str] | None, list[str] | None]:
    """(option texts, their labels or None) from LLMRouter's ``choices``: a list, a dict with ``text`` and
    ``label``/``labels``, or the Python-literal text of either; (None, None) when there are none."""
    if _missing(raw):
        return None, None
    v = raw
    if isinstance(raw, str):
        try:
            v = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f"choices are not a Python literal list or dict: {raw[:200]!r}") from None
    if isinstance(v, Mapping):
        texts = v.get("text")
        labels = v.get("label", v.get("labels"))
        if not isinstance(texts, (list, tuple)):
            raise ValueError(f"choices dict has no 'text' list: {str(raw)[:200]!r}")
        if labels is not None and (not isinstance(labels, (list, tuple)) or len(labels) != len(texts)):
            raise ValueError(f"choices dict: 'label(s)' do not match 'text': {str(raw)[:200]!r}")
        out = [str(t) for t in texts]
        choice_letters(len(out))  # 2..10 options
        return out, None if labels is None else [str(x).strip() for x in labels]
    if isinstance(v, (list, tuple)):
        out = [str(t) for t in v]
        choice_letters(len(out))
        return out, None
    raise ValueError(f"choices are neither a list nor a dict: {str(raw)[:200]!r}")


def choice_gold(ground_truth: Any, texts: list[str], labels: list[str] | None) -> str:
    """The letter of the gold option (by position among the options)."""
    if _missing(ground_truth):
        raise ValueError("multiple-choice ground truth is missing")
    g = str(ground_truth).strip()
    if labels is not None and g in labels:
        return LETTERS[labels.index(g)]
    letters = choice_letters(len(texts))
    if len(g) == 1 and g.upper() in letters:
        return g.upper()
    hits = [letters[i] for i, t in enumerate(texts) if t.strip().lower() == g.lower()]
    if len(hits) == 1:
        return hits[0]
    raise ValueError(f"multiple-choice ground truth {g!r} is neither a label ({labels or list(letters)}) nor "
                     "one option's text")


def _asserts(raw: Any) -> list[str]:
    v = raw
    if isinstance(raw, str):
        try:
            v = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f"mbpp tests are not a Python literal list: {raw[:200]!r}") from None
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(a, str) for a in v):
        raise ValueError(f"mbpp tests must be a non-empty list of assert strings: {str(raw)[:200]!r}")
    return [a.strip() for a in v if a.strip()]


def llmrouter_gold(row: Mapping[str, Any]) -> tuple[str, list[str] | None]:
    """(gold, choices) of one LLMRouter query row, in the form the graders take (see the module docstring)."""
    metric, task = row.get("metric"), str(row.get("task_name") or "")
    gt = row.get("ground_truth")
    if metric not in LLMROUTER_METRICS:
        raise ValueError(f"task {task!r}: unknown LLMRouter metric {metric!r} (known: {', '.join(LLMROUTER_METRICS)})")
    if _missing(gt):
        raise ValueError(f"task {task!r}: ground_truth is missing")
    if metric == "em_mc":
        texts, labels = parse_choices(row.get("choices"))
        if texts is None:
            raise ValueError(f"task {task!r}: a multiple-choice row without choices")
        return choice_gold(gt, texts, labels), texts
    if metric == "MATH":
        return math_gold(str(gt)), None
    if metric == "GSM8K":
        return extract_gsm8k_gold(str(gt)), None
    if metric == "code_eval":
        tests = str(gt)
        if "def check(" in tests:  # human_eval: the check block + the function the prompt asks for
            prompt = str(row.get("query") or "")
            ep = prompt_entry_point(prompt)
            if ep is None:
                raise ValueError(f"task {task!r} ({row.get('task_id')}): no function in the prompt")
            return CodeGold(tests=tests, entry_point=ep, prompt=prompt).to_json(), None
        return CodeGold(tests="\n".join(_asserts(gt))).to_json(), None
    return str(gt).strip(), None  # f1_score: the answer; commongen_coverage: the concept list


def llmrouter_text(row: Mapping[str, Any]) -> str:
    """The question to ask for one LLMRouter row (the query; mbpp: plus its tests, see the module docstring)."""
    q = str(row.get("query") or "")
    if row.get("metric") == "code_eval" and "def check(" not in str(row.get("ground_truth") or ""):
        tests = "\n".join(_asserts(row.get("ground_truth")))
        return f"{q.strip()}\nYour code should pass these tests:\n{tests}"
    return q
