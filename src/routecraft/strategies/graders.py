"""Graders: score an extracted answer against the gold answer, in [0, 1].

``grade(task, prediction, gold)`` picks the grader for the task's answer kind (see
``routecraft.strategies.answers.TASK_KINDS``): numeric -> ``gsm8k_match``, math -> ``math_equiv``, choice ->
``choice_match``, qa -> ``f1``, code -> ``code_exec`` (the program and its tests in the PAL sandbox;
``routecraft.strategies.code_eval``), generation -> ``commongen_coverage`` (``routecraft.strategies.coverage``),
chat -> ``f1``. A ``None`` prediction scores 0.

``grade(task, prediction, gold, metric=...)`` names the grader instead: a name in ``GRADERS`` or one of LLMRouter's
metric names (``LLMROUTER_METRICS``: em_mc, MATH, GSM8K, f1_score, code_eval, commongen_coverage). LLMRouter's
"MATH" covers agentverse-mgsm, whose golds are plain numbers: ``math_answer`` compares those numerically and the rest
by ``math_equiv``. ``choices`` (the options of a multiple-choice question) reach the graders that take them.

``math_equiv`` uses the ``math-verify`` package (HuggingFace, parses LaTeX with sympy) when it is installed, else a
string normal form plus a numeric comparison (``MATH_BACKEND`` says which).
"""

from __future__ import annotations

import inspect
import math
import re
import threading
from collections import Counter
from typing import Any, Callable, Sequence

from routecraft.strategies.answers import (
    LETTERS,
    canonical_number,
    extract_choice,
    find_boxed,
    normalize_latex,
    normalize_text,
    numbers_equal,
    parse_number,
    task_kind,
)
from routecraft.strategies.code_eval import code_exec
from routecraft.strategies.coverage import commongen_coverage

Grader = Callable[[Any, Any], float]

try:  # optional dependency: pip install 'math-verify>=0.7'
    from math_verify import parse as _mv_parse
    from math_verify import verify as _mv_verify

    MATH_BACKEND = "math-verify"
except ImportError:  # pragma: no cover - exercised only without the package
    _mv_parse = _mv_verify = None
    MATH_BACKEND = "string"


def _is_none(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


# ------------------------------------------------------------------------------------------------------ numeric

def extract_gsm8k_gold(answer_field: str) -> str:
    """The final answer of a GSM8K ``answer`` field ("... #### 1,200" -> "1200"); a plain answer is returned cleaned."""
    if _is_none(answer_field):
        raise ValueError("GSM8K gold answer is missing (None)")
    s = str(answer_field)
    if "####" in s:
        s = s.rsplit("####", 1)[1]
    s = s.strip()
    v = parse_number(s)
    if v is None:
        raise ValueError(f"GSM8K gold answer has no number: {answer_field!r}")
    return canonical_number(v)


def gsm8k_match(prediction: Any, gold: Any, rel_tol: float = 1e-6, abs_tol: float = 1e-6) -> float:
    """1.0 if the numbers agree (commas, $, units, "#### " and trailing periods ignored), else 0.0."""
    if _is_none(prediction):
        return 0.0
    g = parse_number(extract_gsm8k_gold(gold) if isinstance(gold, str) else gold)
    if g is None:
        raise ValueError(f"gold answer has no number: {gold!r}")
    p = parse_number(prediction)
    return float(p is not None and numbers_equal(p, g, rel_tol, abs_tol))


# ------------------------------------------------------------------------------------------------------ math

def math_gold(solution_or_answer: str) -> str:
    """The gold answer of a MATH item: the last ``\\boxed{}`` of a solution, or the string itself."""
    if _is_none(solution_or_answer):
        raise ValueError("MATH gold answer is missing (None)")
    s = str(solution_or_answer)
    boxed = find_boxed(s)
    return boxed[-1][1] if boxed else s.strip()


def _as_latex(s: str) -> str:
    s = s.strip()
    if "\\boxed" in s or "$" in s:
        return s
    return f"${s}$"


def math_equiv(prediction: Any, gold: Any) -> float:
    """1.0 if the predicted answer is mathematically equal to the gold answer (boxed answers compared)."""
    if _is_none(prediction):
        return 0.0
    g = math_gold(gold)
    p = str(prediction).strip()
    boxed = find_boxed(p)
    if boxed:
        p = boxed[-1][1]
    if not p:
        return 0.0
    if normalize_latex(p) == normalize_latex(g):
        return 1.0
    if _mv_parse is not None:
        # math-verify's time limit uses SIGALRM, which only works in the main thread
        t = 5 if threading.current_thread() is threading.main_thread() else None
        try:
            gp = _mv_parse(_as_latex(g), parsing_timeout=t)
            pp = _mv_parse(_as_latex(p), parsing_timeout=t)
            if gp and pp and _mv_verify(gp, pp, timeout_seconds=t):
                return 1.0
        except Exception:  # math-verify raises on pathological input; that is a mismatch, not a crash
            pass
        return 0.0
    pv, gv = _latex_number(p), _latex_number(g)
    return float(pv is not None and gv is not None and numbers_equal(pv, gv, 1e-9, 1e-9))


def math_answer(prediction: Any, gold: Any) -> float:
    """LLMRouter's "MATH" metric: a gold that is a plain number (agentverse-mgsm: "28", "1,596") is compared
    numerically with a numeric prediction ("28.0", "\\boxed{28}", "$1,596$", "\\frac{56}{2}"); anything else, and a
    numeric mismatch, goes to ``math_equiv``."""
    if _is_none(prediction):
        return 0.0
    g = math_gold(gold)
    gv = _latex_number(g)
    if gv is not None:
        p = str(prediction).strip()
        boxed = find_boxed(p)
        if boxed:
            p = boxed[-1][1]
        pv = _latex_number(p)
        if pv is not None and numbers_equal(pv, gv, 1e-9, 1e-9):
            return 1.0
        if pv is not None:
            return 0.0
    return math_equiv(prediction, gold)


def _latex_number(s: str) -> float | None:
    t = normalize_latex(s)
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", t)
    if m:
        den = float(m.group(3))
        return None if den == 0 else (-1 if m.group(1) else 1) * float(m.group(2)) / den
    if re.fullmatch(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?", t):
        return float(t.replace(",", ""))
    return None


# ------------------------------------------------------------------------------------------------------ choice

def _gold_letter(gold: Any, choices: Sequence[str] | None = None) -> str:
    if isinstance(gold, bool) or _is_none(gold):
        raise ValueError(f"multiple-choice gold answer is missing or not a letter/index: {gold!r}")
    if isinstance(gold, int):
        if not 0 <= gold < len(LETTERS):
            raise ValueError(f"multiple-choice gold index {gold} out of range 0..{len(LETTERS) - 1}")
        return LETTERS[gold]
    s = str(gold).strip()
    if re.fullmatch(r"\(?[A-Ja-j]\)?\.?", s):
        return s.strip("().").upper()
    letter, _ = extract_choice(s, choices)
    if letter is None:
        raise ValueError(f"multiple-choice gold answer is not a letter A-J or a 0-based index: {gold!r}")
    return letter


def choice_match(prediction: Any, gold: Any, choices: Sequence[str] | None = None) -> float:
    """1.0 if the predicted option letter equals the gold letter. Gold: "B", "(B)" or a 0-based index (1 -> "B")."""
    if _is_none(prediction):
        return 0.0
    g = _gold_letter(gold, choices)
    p = str(prediction).strip()
    if re.fullmatch(r"\(?[A-Ja-j]\)?\.?", p):
        letter = p.strip("().").upper()
    else:
        letter, _ = extract_choice(p, choices)
    return float(letter == g)


# ------------------------------------------------------------------------------------------------------ QA

def _golds(gold: Any) -> list[str]:
    if _is_none(gold):
        raise ValueError("QA gold answer is missing (None)")
    if isinstance(gold, (list, tuple, set)):
        out = [str(g) for g in gold if not _is_none(g)]
        if not out:
            raise ValueError("QA gold answer list is empty")
        return out
    return [str(gold)]


def exact_match(prediction: Any, gold: Any) -> float:
    """SQuAD exact match after normalisation (lowercase, no punctuation or articles); gold may list aliases."""
    if _is_none(prediction):
        return 0.0
    p = normalize_text(prediction)
    return float(any(p == normalize_text(g) for g in _golds(gold)))


def _f1(pred: str, gold: str) -> float:
    pt, gt = normalize_text(pred).split(), normalize_text(gold).split()
    if not pt or not gt:
        return float(pt == gt)
    common = Counter(pt) & Counter(gt)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pt), same / len(gt)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: Any, gold: Any) -> float:
    """SQuAD token F1 (best over gold aliases)."""
    if _is_none(prediction):
        return 0.0
    return max(_f1(str(prediction), g) for g in _golds(gold))


# ------------------------------------------------------------------------------------------------------ registry

GRADERS: dict[str, Grader] = {
    "gsm8k_match": gsm8k_match,
    "math_equiv": math_equiv,
    "math_answer": math_answer,
    "choice_match": choice_match,
    "exact_match": exact_match,
    "f1": f1,
    "code_exec": code_exec,
    "commongen_coverage": commongen_coverage,
}
KIND_GRADER = {"numeric": "gsm8k_match", "math": "math_equiv", "choice": "choice_match", "qa": "f1",
               "code": "code_exec", "generation": "commongen_coverage", "chat": "f1"}
#: LLMRouter's metric names (the ``metric`` column of its query_data files) -> routecraft graders
LLMROUTER_METRICS: dict[str, str] = {
    "em_mc": "choice_match",
    "MATH": "math_answer",
    "GSM8K": "gsm8k_match",
    "f1_score": "f1",
    "code_eval": "code_exec",
    "commongen_coverage": "commongen_coverage",
}
_TASK_GRADER: dict[str, str] = {}


def register_grader(task: str, grader: str | Grader) -> None:
    """Use ``grader`` (a name in GRADERS or a function (prediction, gold) -> float) for ``task``."""
    if callable(grader):
        name = getattr(grader, "__name__", f"custom:{task}")
        GRADERS.setdefault(name, grader)
        grader = name
    if grader not in GRADERS:
        raise ValueError(f"unknown grader {grader!r}: known graders are {', '.join(sorted(GRADERS))}")
    _TASK_GRADER[task.strip().lower()] = grader


def grader_for(task: str, metric: str | None = None) -> Grader:
    """The grader of ``task``, or the one ``metric`` names (a name in GRADERS or an LLMRouter metric name)."""
    if metric is not None:
        name = metric if metric in GRADERS else LLMROUTER_METRICS.get(metric)
        if name is None:
            raise ValueError(f"unknown grader {metric!r}: known graders are {', '.join(sorted(GRADERS))} "
                             f"(and LLMRouter's metrics {', '.join(LLMROUTER_METRICS)})")
        return GRADERS[name]
    name = _TASK_GRADER.get(task.strip().lower()) if isinstance(task, str) else None
    if name is None:
        try:
            name = KIND_GRADER[task_kind(task)]
        except ValueError as e:
            raise ValueError(f"no grader for task {task!r}: {e}") from None
    return GRADERS[name]


def _takes_choices(fn: Grader) -> bool:
    try:
        return "choices" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def grade(task: str, prediction: Any, gold: Any, metric: str | None = None, *,
          choices: Sequence[str] | None = None, **kwargs: Any) -> float:
    """Score ``prediction`` against ``gold`` for ``task`` (or with the grader named ``metric``, a GRADERS name or an
    LLMRouter metric name); None scores 0. ``choices`` go to the graders that take them (``choice_match``) and are
    ignored by the others; other keyword arguments go to the grader as they are."""
    fn = grader_for(task, metric)
    if _is_none(prediction):
        return 0.0
    if choices is not None and _takes_choices(fn):
        kwargs["choices"] = list(choices)
    score = fn(prediction, gold, **kwargs)
    return float(score)
