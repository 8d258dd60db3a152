"""Answer extraction and normalisation shared by the strategies and the graders.

Small local models write messy answers: "The answer is: **$1,200**.", "#### 18", "\\boxed{\\frac{1}{2}}", a bare "B)",
or they trail off without any marker. The extractors here try, in order:

1. an explicit final-answer marker — ``\\boxed{...}``, "The (final) answer is ...", "#### ..." (the last one wins);
2. a weaker "Answer: ..." line;
3. a kind-specific fallback — the last number (numeric and math), the leading option letter (choice), the first line
   (QA).

Text after a hallucinated next turn ("\\nQuestion:", "\\nHuman:", ...) is cut off before extracting.

Three kinds do not follow that scheme: ``code`` (mbpp, human_eval; :func:`extract_program`: the program from the fenced
blocks, else the code in the raw text), ``generation`` (commongen; :func:`extract_sentence`: the sentence after
"Sentence:", else the reply's own line) and ``chat`` (general requests without a gold format; :func:`extract_reply`:
the reply itself).
"""

from __future__ import annotations

import math
import re
import textwrap
from fractions import Fraction
from typing import Any, Iterable, Sequence

# --------------------------------------------------------------------------------------------------- task kinds

KINDS = ("numeric", "math", "choice", "qa", "code", "generation", "chat")
#: the kinds whose answers can be compared across models (a number, a formula, an option letter): where
#: consulting several candidates and looking at their agreement means something
COMPARABLE_KINDS = ("numeric", "math", "choice")

#: task name -> answer kind. The kind decides the answer format asked for, the extractor and the default grader.
TASK_KINDS: dict[str, str] = {
    # numeric answers
    "gsm8k": "numeric", "gsm": "numeric", "svamp": "numeric", "asdiv": "numeric", "mawps": "numeric",
    "agentverse-mgsm": "numeric", "mgsm": "numeric", "numeric": "numeric",
    # LaTeX answers, graded by equivalence
    "math": "math", "math500": "math", "math-500": "math", "olympiadbench": "math", "aime": "math", "amc": "math",
    # multiple choice
    "mmlu": "choice", "mmlu_stem": "choice", "mmlu-stem": "choice", "mmlu_pro": "choice", "mmlu-pro": "choice",
    "gpqa": "choice", "arc": "choice", "arc_challenge": "choice", "arc_easy": "choice", "commonsense_qa": "choice",
    "openbook_qa": "choice", "agentverse-logicgrid": "choice", "choice": "choice",
    # short-answer QA
    "qa": "qa", "natural_qa": "qa", "nq": "qa", "trivia_qa": "qa", "triviaqa": "qa", "squad": "qa",
    "hotpotqa": "qa", "hotpot_qa": "qa", "popqa": "qa", "2wikimultihopqa": "qa",
    # programs graded by running tests (routecraft.strategies.code_eval)
    "mbpp": "code", "human_eval": "code", "humaneval": "code", "code": "code",
    # constrained generation graded by concept coverage (routecraft.strategies.coverage)
    "commongen": "generation", "common_gen": "generation", "generation": "generation",
    # general requests: no answer format is imposed
    "general": "chat", "chat": "chat",
}


def task_kind(task: str) -> str:
    """The answer kind of ``task`` (one of ``KINDS``: "numeric", "math", "choice", "qa", "code", "generation",
    "chat"); a kind name is accepted as a task."""
    if not isinstance(task, str):
        raise TypeError(f"task must be a string, got {type(task).__name__}")
    kind = TASK_KINDS.get(task.strip().lower())
    if kind is None:
        raise ValueError(f"unknown task {task!r}: known tasks are {', '.join(sorted(TASK_KINDS))} "
                         f"(or use an answer kind directly: {', '.join(KINDS)})")
    return kind


LETTERS = "ABCDEFGHIJ"


def choice_letters(n: int | None) -> str:
    if n is None:
        return LETTERS
    if not 2 <= n <= len(LETTERS):
        raise ValueError(f"choices: need 2..{len(LETTERS)} options, got {n}")
    return LETTERS[:n]


def format_choices(question: str, choices: Sequence[str] | None) -> str:
    """Append "(A) ... (B) ..." options to a question (one per line); unchanged when ``choices`` is None."""
    if not choices:
        return question
    letters = choice_letters(len(choices))
    opts = "\n".join(f"({letter}) {str(c).strip()}" for letter, c in zip(letters, choices))
    return f"{question.rstrip()}\n{opts}"


# --------------------------------------------------------------------------------------------------- cleaning

_TURN_MARKERS = re.compile(
    r"\n\s*(?:Question:|Q:|Human:|User:|### (?:Instruction|Question)|Problem:)|<\|im_start\|>|<\|im_end\|>|"
    r"<\|endoftext\|>|<end_of_turn>|<start_of_turn>|<\|eot_id\|>|</s>")


def cut_continuation(text: str) -> str:
    """Drop everything from the first hallucinated next turn (small models keep writing new questions)."""
    m = _TURN_MARKERS.search(text)
    return text[: m.start()] if m else text


def _strip_markup(s: str) -> str:
    s = s.replace("**", "").replace("__", "")
    s = re.sub(r"\\\(|\\\)|\\\[|\\\]", "", s)
    s = s.strip().strip("`").strip()
    return s


# --------------------------------------------------------------------------------------------------- numbers

_NUM_RE = re.compile(
    r"(?<![\w.])"                      # not glued to a word or a preceding dot
    r"(?P<sign>(?<![\d)\]])[-−–])?"    # a minus that is not a binary minus after a number or bracket
    r"\s?\$?\s?"
    r"(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:\s?/\s?(?P<den>\d+)(?![\d.]))?")


def _to_float(sign: str | None, num: str, den: str | None) -> float | None:
    try:
        v = float(num.replace(",", ""))
        if den is not None:
            d = float(den)
            if d == 0:
                return None
            v = v / d
    except ValueError:
        return None
    return -v if sign else v


def numbers_in(text: str) -> list[float]:
    """All numbers in ``text`` in order (commas, $ and simple fractions handled)."""
    text = text.replace("\\!", "").replace("{,}", ",")
    out = []
    for m in _NUM_RE.finditer(text):
        v = _to_float(m.group("sign"), m.group("num"), m.group("den"))
        if v is not None:
            out.append(v)
    return out


_LATEX_FRAC = re.compile(r"\\[dt]?frac\{\s*(-?\d+(?:\.\d+)?)\s*\}\{\s*(-?\d+(?:\.\d+)?)\s*\}")


def parse_number(s: Any) -> float | None:
    """A number from a short answer string: "$1,200", "18 dollars", "-3.5", "3/4", "\\frac{3}{4}", "50%", "18."

    Returns None if there is no number. When the string holds an equation ("5 + 3 = 8") the part after the last "="
    is used; otherwise the first number.
    """
    if s is None:
        return None
    if isinstance(s, bool):
        return float(s)
    if isinstance(s, (int, float)):
        return float(s) if math.isfinite(float(s)) else None
    if isinstance(s, Fraction):
        return float(s)
    s = _strip_markup(str(s))
    if not s:
        return None
    s = _LATEX_FRAC.sub(lambda m: f"{m.group(1)}/{m.group(2)}", s)
    s = s.replace("\\$", "$").replace("\\%", "%").replace("−", "-")
    if "=" in s:
        s = s.rsplit("=", 1)[1]
    nums = numbers_in(s)
    return nums[0] if nums else None


def canonical_number(v: float) -> str:
    """18.0 -> "18", 0.5 -> "0.5", 1e-7 -> "1e-07"; round-off like 0.30000000000000004 -> "0.3"."""
    if not math.isfinite(v):
        return str(v)
    r = round(v)
    if abs(v - r) < 1e-9 * max(1.0, abs(v)):
        return str(int(r))
    return f"{v:.10g}"


def numbers_equal(a: float, b: float, rel_tol: float = 1e-6, abs_tol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


# --------------------------------------------------------------------------------------------------- markers

def find_boxed(text: str) -> list[tuple[int, str]]:
    """(position, content) of every ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces) and ``\\boxed 5``."""
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*(\{)?", text):
        if m.group(1) is None:  # \boxed 5
            m2 = re.match(r"\s*([^\s$.,;]+)", text[m.end():])
            if m2:
                out.append((m.start(), m2.group(1)))
            continue
        depth, i = 1, m.end()
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth == 0:
            out.append((m.start(), text[m.end(): i - 1].strip()))
    return out


_ANSWER_IS = re.compile(
    r"(?:final\s+answer|answer|correct\s+(?:option|choice)|answer\s+choice)\s*(?:is|would\s+be|will\s+be|=)\s*:?\s*"
    r"(?P<rest>[^\n]*)", re.I)
_FINAL_ANSWER_COLON = re.compile(r"final\s+answer\s*:\s*(?P<rest>[^\n]*)", re.I)
_HASH = re.compile(r"####\s*(?P<rest>[^\n]*)")
_ANSWER_COLON = re.compile(r"(?:^|\n)\s*(?:\**\s*)?answer\s*(?:\**\s*)?[:：]\s*(?P<rest>[^\n]*)", re.I)


def _last(pattern: re.Pattern, text: str) -> tuple[int, str] | None:
    found = None
    for m in pattern.finditer(text):
        rest = m.group("rest").strip()
        if rest:
            found = (m.start(), rest)
    return found


def _strong_marker(text: str) -> tuple[str, str] | None:
    """The last explicit final-answer marker: (method, raw answer text)."""
    cands: list[tuple[int, str, str]] = []
    boxed = find_boxed(text)
    if boxed:
        cands.append((boxed[-1][0], "boxed", boxed[-1][1]))
    for method, pat in (("answer_is", _ANSWER_IS), ("final_answer", _FINAL_ANSWER_COLON), ("hash", _HASH)):
        hit = _last(pat, text)
        if hit:
            cands.append((hit[0], method, hit[1]))
    if not cands:
        return None
    pos, method, raw = max(cands, key=lambda c: c[0])
    if method != "boxed":  # "The answer is \boxed{5}." -> prefer the boxed content
        inner = find_boxed(raw)
        if inner:
            return "boxed", inner[-1][1]
    return method, raw


def _weak_marker(text: str) -> tuple[str, str] | None:
    hit = _last(_ANSWER_COLON, text)
    return ("answer_colon", hit[1]) if hit else None


def _clean_segment(raw: str) -> str:
    """Trim an answer segment: markup, surrounding $...$, a trailing sentence after the first period-space."""
    s = _strip_markup(raw)
    s = re.sub(r"^\$+|\$+$", "", s).strip()
    s = re.sub(r"(?<=[^\d\s])\.\s+[A-Z].*$", "", s)  # "Paris. It is ..." -> "Paris"
    s = s.rstrip(" .;,!")
    return s.strip()


# --------------------------------------------------------------------------------------------------- extractors

def extract_numeric(text: str) -> tuple[str | None, str]:
    """(canonical number string or None, method)."""
    text = cut_continuation(text or "")
    for finder in (_strong_marker, _weak_marker):
        hit = finder(text)
        if hit:
            method, raw = hit
            v = parse_number(raw)
            if v is not None:
                return canonical_number(v), method
    nums = numbers_in(text)
    if nums:
        return canonical_number(nums[-1]), "last_number"
    return None, "none"


def extract_math(text: str) -> tuple[str | None, str]:
    """(LaTeX answer string or None, method). Equivalence is the grader's job."""
    text = cut_continuation(text or "")
    for finder in (_strong_marker, _weak_marker):
        hit = finder(text)
        if hit:
            method, raw = hit
            ans = raw if method == "boxed" else _clean_math_segment(raw)
            if ans:
                return ans, method
    dollars = re.findall(r"\$([^$]+)\$", text)
    if dollars:
        return _clean_math_segment(dollars[-1]), "last_math"
    nums = numbers_in(text)
    if nums:
        return canonical_number(nums[-1]), "last_number"
    return None, "none"


def _clean_math_segment(raw: str) -> str:
    s = _strip_markup(raw)
    m = re.search(r"\$([^$]+)\$", s)
    if m:
        s = m.group(1)
    s = s.strip().rstrip(" .;,!").strip()
    if "=" in s and not re.search(r"[<>]", s):  # "x = 4" -> "4"
        s = s.rsplit("=", 1)[1].strip()
    return s


def _letter_after(raw: str, letters: str) -> str | None:
    m = re.match(rf"^\s*[\(\[{{]?\s*\**\s*\(?([{letters}])\)?(?![A-Za-z])", raw)
    if m:
        return m.group(1)
    # lower-case only when unambiguous: "(c)", "c)", or the letter alone ("a" could be the article)
    low = letters.lower()
    m = re.match(rf"^\s*\**\s*(?:\(([{low}])\)|([{low}])\)|([{low}])\s*\**\s*\.?\s*$)", raw)
    if m:
        return next(g for g in m.groups() if g).upper()
    return None


def _option_text(c: Any) -> str:
    """An option's text as an answer segment is cleaned (markup, surrounding $ and end punctuation off: "$250")."""
    s = re.sub(r"^\$+|\$+$", "", _strip_markup(str(c))).strip()
    return s.rstrip(" .;,!").strip().lower()


def _match_choice_text(raw: str, choices: Sequence[str] | None, letters: str) -> str | None:
    if not choices:
        return None
    seg = _clean_segment(raw).lower()
    if not seg:
        return None
    opts = [(letter, str(c).strip().rstrip(".").lower(), _option_text(c)) for letter, c in zip(letters, choices)]
    exact = [letter for letter, plain, clean in opts if seg in (plain, clean)]
    if len(exact) == 1:
        return exact[0]
    contained = [letter for letter, plain, clean in opts if plain in seg or (clean and clean in seg)]
    return contained[0] if len(contained) == 1 else None


def extract_choice(text: str, choices: Sequence[str] | None = None) -> tuple[str | None, str]:
    """(option letter or None, method). Letters A-J, or A..(len(choices)) when the options are given."""
    text = cut_continuation(text or "")
    letters = choice_letters(len(choices) if choices else None)
    for finder in (_strong_marker, _weak_marker):
        hit = finder(text)
        if hit:
            method, raw = hit
            letter = _letter_after(raw, letters) or _match_choice_text(raw, choices, letters)
            if letter:
                return letter, method
    m = re.search(rf"(?:option|choice)\s*\(?([{letters}])\)?(?![A-Za-z])", text, re.I)
    if m:
        return m.group(1).upper(), "option"
    start = text.strip()
    m = re.match(rf"^\**\s*\(?([{letters}])(?:\)|\.|:|\*\*|$|\s*$|\s+-)", start)
    if m:
        return m.group(1), "leading_letter"
    parens = re.findall(rf"\(([{letters}])\)", text)
    if parens:
        return parens[-1], "last_paren_letter"
    letter = _match_choice_text(start.split("\n", 1)[0], choices, letters)
    if letter:
        return letter, "option_text"
    return None, "none"


def extract_qa(text: str) -> tuple[str | None, str]:
    """(short answer or None, method)."""
    text = cut_continuation(text or "")
    for finder in (_strong_marker, _weak_marker):
        hit = finder(text)
        if hit:
            ans = _clean_segment(hit[1])
            if ans:
                return ans, hit[0]
    for line in text.splitlines():
        ans = _clean_segment(line)
        if ans:
            return ans, "first_line"
    return None, "none"


# ----------------------------------------------------------------------------------------- code, generation, chat

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)
_CODE_START = re.compile(r"(?:import |from [\w.]+ import |def |async def |class |@\w)")


def _compiles(code: str) -> bool:
    try:
        compile(code, "program.py", "exec")
        return True
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
        return False


def _is_code(code: str) -> bool:
    """Compiles as a module, or as the body of a function (a human_eval completion may be only the body)."""
    body = textwrap.dedent(code)
    return _compiles(body) or _compiles("def _body():\n" + textwrap.indent(body, "    ", lambda line: True))


def _compilable_head(lines: list[str]) -> str | None:
    """The longest prefix of ``lines`` that compiles (prose after unfenced code is dropped)."""
    while lines:
        code = "\n".join(lines).rstrip() + "\n"
        if _compiles(code):
            return code
        lines = lines[:-1]
    return None


def extract_program(text: str) -> tuple[str | None, str]:
    """(program or None, method) from a code answer.

    * Fenced blocks (```python ... ```; an unclosed last fence runs to the end): the blocks that define a function or
      class, joined in order (a later definition replaces an earlier one when run, and helpers are kept); blocks of
      "example usage" without a definition are left out. No block defines anything (a function body alone): the
      last non-empty block. Method ``fenced``.
    * No fence, but code before a closing fence (completion prompts end with an opening fence): that code
      (``before_fence``).
    * Neither: the raw text from its first line that starts code (``import``/``from``/``def``/``class``/a decorator)
      to the longest end that compiles (``raw_code``); failing that, the raw text itself when it compiles as
      statements or as a function body (``raw_body``).

    Nothing is cut at a hallucinated next turn inside a block (programs may contain such words); the raw text is.
    For human_eval the answer may be the whole function or only its body: ``code_eval.build_program`` puts a body
    under the prompt's signature.
    """
    if not text or not text.strip():
        return None, "none"
    stripped = text.lstrip()
    if not stripped.startswith("```") and "```" in text:
        head = text.split("```", 1)[0]
        if re.search(r"^\s*(?:def |return\b|import |from [\w.]+ import )", head, re.M) and _is_code(head):
            return head.strip("\n").rstrip() + "\n", "before_fence"
    blocks = [b.strip("\n").rstrip() for _lang, b in _FENCE.findall(text) if b.strip()]
    if blocks:
        defining = [b for b in blocks if re.search(r"^\s*(?:async\s+)?(?:def|class)\s+\w", b, re.M)]
        code = "\n\n".join(defining) if defining else blocks[-1]
        return code + "\n", "fenced"
    raw = cut_continuation(text)
    lines = raw.splitlines()
    start = next((i for i, line in enumerate(lines) if _CODE_START.match(line)), None)
    if start is not None:
        code = _compilable_head(lines[start:])
        if code is not None:
            return code, "raw_code"
    body = raw.strip("\n").rstrip()
    if body and _is_code(body):
        return body + "\n", "raw_body"
    return None, "none"


_SENTENCE_MARK = re.compile(r"(?:^|\n)\s*\**\s*sentence\s*\**\s*[:：]\s*\**\s*(?P<rest>[^\n]*)", re.I)


def _clean_sentence(s: str) -> str:
    s = _strip_markup(s).strip()
    if len(s) >= 2 and s[0] in "\"'“‘" and s[-1] in "\"'”’":
        s = s[1:-1].strip()
    return s


def extract_sentence(text: str) -> tuple[str | None, str]:
    """(sentence or None, method) from a generation answer (commongen): the text after the last "Sentence:" marker
    (``sentence``) or after "The answer is" (``answer_is``); else the reply's last line that is not a preamble
    ending in ":" (``last_line``): a reasoning strategy reasons first and ends with its sentence, a direct answer is
    one line. Quotes and markdown around the sentence are removed; the whole line is kept (a period inside it does
    not end it)."""
    text = cut_continuation(text or "")
    hit = _last(_SENTENCE_MARK, text)
    if hit:
        s = _clean_sentence(hit[1])
        if s:
            return s, "sentence"
    hit = _last(_ANSWER_IS, text)
    if hit:
        s = _clean_sentence(hit[1])
        if s:
            return s, "answer_is"
    lines = [_clean_sentence(line) for line in text.splitlines()]
    lines = [line for line in lines if line and not line.endswith(":")]
    if lines:
        return lines[-1], "last_line"
    return None, "none"


def extract_reply(text: str) -> tuple[str | None, str]:
    """(reply or None, method) for general requests (``chat``): the whole reply, cut at a hallucinated next turn."""
    s = cut_continuation(text or "").strip()
    return (s, "reply") if s else (None, "none")


def extract_answer(text: str, task: str = "gsm8k", choices: Sequence[str] | None = None) -> tuple[str | None, str]:
    """(answer string or None, method) from a model's free-text output for ``task``."""
    kind = task_kind(task)
    if kind == "numeric":
        return extract_numeric(text)
    if kind == "math":
        return extract_math(text)
    if kind == "choice":
        return extract_choice(text, choices)
    if kind == "code":
        return extract_program(text)
    if kind == "generation":
        return extract_sentence(text)
    if kind == "chat":
        return extract_reply(text)
    return extract_qa(text)


def answer_from_value(value: Any, task: str = "gsm8k", choices: Sequence[str] | None = None) -> str | None:
    """Turn a PAL program's return value into an answer string for ``task``."""
    if value is None:
        return None
    kind = task_kind(task)
    if kind == "numeric":
        if isinstance(value, (list, tuple)) and len(value) == 1:
            value = value[0]
        if isinstance(value, (int, float)):
            v = float(value)
            return canonical_number(v) if math.isfinite(v) else None
        return extract_numeric(str(value))[0]  # a string or printed line: markers, else its last number
    if kind == "math":
        if isinstance(value, bool):
            return str(value)
        if isinstance(value, (int, float)):
            return canonical_number(float(value))
        if isinstance(value, (list, tuple)):
            return ", ".join(answer_from_value(v, task) or "" for v in value)
        return str(value).strip() or None
    if kind == "choice":
        if isinstance(value, int) and not isinstance(value, bool) and choices and 0 <= value < len(choices):
            return LETTERS[value]
        s = str(value).strip()
        if re.fullmatch(r"\(?[A-Ja-j]\)?\.?", s):
            return s.strip("().").upper()
        return extract_choice(s, choices)[0]
    s = str(value).strip()
    return s or None


def vote_key(answer: str | None, task: str = "gsm8k") -> str | None:
    """A normalised key under which equal answers fall together for majority voting."""
    if answer is None:
        return None
    kind = task_kind(task)
    if kind == "numeric":
        v = parse_number(answer)
        return canonical_number(v) if v is not None else answer.strip()
    if kind == "math":
        return normalize_latex(answer)
    if kind == "choice":
        return answer.strip().upper()
    if kind == "code":  # equal programs up to blank lines and trailing spaces
        return "\n".join(line.rstrip() for line in answer.strip().splitlines() if line.strip())
    return normalize_text(answer)


def normalize_latex(s: str) -> str:
    """A cheap string normal form of a LaTeX answer (used for votes and as the no-math-verify fallback)."""
    s = _strip_markup(s)
    s = re.sub(r"^\$+|\$+$", "", s)
    s = re.sub(r"\\(?:left|right|displaystyle|!|,|;|:)", "", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\mathrm\{\s*([^{}]*)\}", r"\1", s)
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\%", "").replace("%", "")
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt(\d+)", r"\\sqrt{\1}", s)
    return s


def normalize_text(s: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and the articles a/an/the, squeeze whitespace."""
    import string

    s = str(s).lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def majority(keys: Iterable[str | None]) -> tuple[str | None, dict[str, int]]:
    """Most frequent non-None key (ties: the one seen first) and the vote counts."""
    counts: dict[str, int] = {}
    for k in keys:
        if k is not None:
            counts[k] = counts.get(k, 0) + 1
    if not counts:
        return None, {}
    best = max(counts.values())
    for k in counts:  # dicts keep insertion order -> first seen wins ties
        if counts[k] == best:
            return k, counts
    raise AssertionError("unreachable")
