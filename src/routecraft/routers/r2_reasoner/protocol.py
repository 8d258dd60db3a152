"""R2-Reasoner's text protocol: the model ladder, the decomposer and allocator prompts and their parsers, and the
messages that execute subtasks on the pool (DoT's code, tsinghua-fib-lab/DoT @ 1d7c4fa, where the R2-Reasoner paper
gives no prompt; our choices are marked [D]).

* **Ladder**: the pool's models sorted cheapest first (output price, input price, size); rung 0 is the cheapest.
  ``groups`` splits it into contiguous difficulty groups (small / medium / large for G=3).
* **Decomposer** output: one step per line, ``Step k: <subtask>`` (DoT's ``"k. <subtask>"`` lines are accepted too).
  ``parse_decomposition`` raises ``FormatError`` (with the reason) when nothing parses, numbering is broken or the
  count is outside [min_steps, max_steps].
* **Allocator** output: a JSON-style list of ladder indices, one per subtask (``[0, 2, 1]``), or ``Step k: <index>``
  lines. ``parse_allocation`` raises ``FormatError`` on a wrong length or an index off the ladder.
* **Execution** (DoT): subtasks are answered in order; each sees the question and all earlier (sub-problem, answer)
  pairs; after the last one, one more turn asks for the final answer only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from routecraft.pool.config import Pool, PoolModel


class FormatError(ValueError):
    """A decomposer or allocator output that does not follow the protocol; the message says what was wrong."""


# ---------------------------------------------------------------------------------------------------- ladder

@dataclass(frozen=True)
class Ladder:
    """Pool models on a cost ladder, cheapest first, and their contiguous groups."""

    models: tuple[PoolModel, ...]
    n_groups: int

    @classmethod
    def from_pool(cls, pool: Pool, names: Optional[Sequence[str]] = None, groups: int = 3) -> "Ladder":
        ms = [pool.get(n) for n in names] if names is not None else list(pool.models)
        if not ms:
            raise ValueError("ladder: no models")
        if groups < 1:
            raise ValueError(f"ladder: groups must be ≥ 1, got {groups}")
        ms.sort(key=lambda m: (m.price_out_per_m, m.price_in_per_m, m.size_b or 0.0, m.name))
        return cls(tuple(ms), min(groups, len(ms)))

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def top(self) -> int:
        return len(self.models) - 1

    def __len__(self) -> int:
        return len(self.models)

    def group_ranges(self) -> list[range]:
        """Contiguous groups, as even as possible; the lower groups take the remainder (9/3 → 3,3,3; 4/3 → 2,1,1)."""
        n, g = len(self.models), self.n_groups
        size, extra = divmod(n, g)
        out, start = [], 0
        for i in range(g):
            k = size + (1 if i < extra else 0)
            out.append(range(start, start + k))
            start += k
        return out

    def group_of(self, rung: int) -> int:
        for g, r in enumerate(self.group_ranges()):
            if rung in r:
                return g
        raise ValueError(f"rung {rung} is not on the ladder (0..{self.top})")

    def group_top(self, group: int) -> int:
        return self.group_ranges()[group][-1]

    def describe(self) -> str:
        return "\n".join(f"{i}: {m.name}" + (f" ({m.size_b:g}B)" if m.size_b else "")
                         for i, m in enumerate(self.models))


# ---------------------------------------------------------------------------------------------------- decomposer

DECOMPOSE_INSTRUCTION = (
    "Break the math word problem into a few simple sub-questions that, answered in order, solve it. Write one "
    "sub-question per line as \"Step k: ...\". The last step asks for the final answer."
)

#: hand-written in-context examples (GSM8K style, not from the GSM8K splits)
EXAMPLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("A baker makes 24 muffins and packs them in boxes of 4. He sells each box for $3. How much money does he make "
     "if he sells all the boxes?",
     ("How many boxes of 4 muffins can be made from 24 muffins?",
      "How much money do all the boxes bring at $3 per box?")),
    ("Lena reads 12 pages on Monday and twice as many on Tuesday. Her book has 60 pages. How many pages are left?",
     ("How many pages does Lena read on Tuesday?",
      "How many pages does she read on Monday and Tuesday together?",
      "How many of the 60 pages are left?")),
    ("A shirt costs $20. It is on sale for 25% off. How much do 3 shirts cost on sale?",
     ("How many dollars is 25% of $20?",
      "What is the sale price of one shirt?",
      "How much do 3 shirts cost at the sale price?")),
)


def format_steps(steps: Sequence[str]) -> str:
    return "\n".join(f"Step {i + 1}: {s.strip()}" for i, s in enumerate(steps))


def decompose_prompt(question: str, examples: int = 3) -> str:
    if examples > len(EXAMPLES):
        raise ValueError(f"decomposer: {examples} in-context examples asked, routecraft ships {len(EXAMPLES)}")
    parts = [DECOMPOSE_INSTRUCTION, ""]
    for q, steps in EXAMPLES[:examples]:
        parts += [f"Question: {q}", format_steps(steps), ""]
    parts += [f"Question: {' '.join(question.split())}"]
    return "\n".join(parts)


_STEP = re.compile(r"""^\s*[\"'“(\[]?\s*(?:\*\*)?\s*(?:step|sub-?question|sub-?problem)\s*(\d+)\s*(?:\*\*)?\s*
                       [:.)\-]\s*(?:\*\*)?\s*(.*)$""", re.I | re.X)
_NUM = re.compile(r"""^\s*[\"'“]?\s*(\d+)\s*[.)]\s+(.*)$""")
_TRAIL = re.compile(r"""[\"'”,]+\s*$""")


def parse_decomposition(text: str, min_steps: int = 1, max_steps: int = 8) -> list[str]:
    """The subtasks of a decomposer output, in order.

    Accepts ``Step k: ...`` lines (any case, optional markdown bold, ':' '.' ')' or '-' after the number) and DoT's
    numbered lines (``"1. ...",``); text before the first step (a preamble, DoT's ``we need to know:``) is ignored,
    and the list ends at the first line that is neither a step nor blank once steps have begun, or at a restart
    of the numbering (a model that starts a new example). Raises ``FormatError`` saying why when there is no step,
    numbering skips (Step 1, Step 3), a step is empty, or the count is outside [min_steps, max_steps].
    """
    if text is None or not str(text).strip():
        raise FormatError("decomposition is empty")
    steps: list[str] = []
    for raw in str(text).splitlines():
        line = raw.strip()
        if not line:
            continue
        m = _STEP.match(line) or _NUM.match(line)
        if m is None:
            if steps:
                break  # the list ended (closing text, or the model went on with another "Question:")
            continue  # preamble
        k, body = int(m.group(1)), _TRAIL.sub("", m.group(2)).strip().strip("\"“”'").strip()
        if steps and k == 1:
            break  # numbering restarts: a new example
        if k != len(steps) + 1:
            raise FormatError(f"decomposition: step numbers must run 1, 2, 3, ...; got step {k} after "
                              f"{len(steps)} step(s)")
        if not body:
            raise FormatError(f"decomposition: step {k} is empty")
        steps.append(body)
    if not steps:
        first = str(text).strip().splitlines()[0][:80]
        raise FormatError(f"decomposition has no 'Step k: ...' or 'k. ...' line (starts with {first!r})")
    if len(steps) < min_steps:
        raise FormatError(f"decomposition has {len(steps)} step(s); at least {min_steps} needed")
    if len(steps) > max_steps:
        raise FormatError(f"decomposition has {len(steps)} steps; at most {max_steps} allowed")
    return steps


# ---------------------------------------------------------------------------------------------------- allocator

ALLOCATE_INSTRUCTION = (
    "Assign each step of the problem to a model of the list below, from 0 (cheapest, weakest) to {top} (most "
    "expensive, strongest): the cheapest model that still answers the step correctly. Reply with a list of model "
    "numbers, one per step, e.g. {example}."
)


def allocate_prompt(question: str, steps: Sequence[str], ladder: Ladder) -> str:
    example = json.dumps([min(i, ladder.top) for i in range(len(steps))]) if steps else "[0]"
    return "\n".join([ALLOCATE_INSTRUCTION.format(top=ladder.top, example=example), "", "Models:",
                      ladder.describe(), "", f"Question: {' '.join(question.split())}", format_steps(steps), "",
                      "Models per step:"])


def format_allocation(allocation: Sequence[int]) -> str:
    return json.dumps([int(a) for a in allocation])


_LIST = re.compile(r"\[([^\[\]]*)\]")
_ALLOC_LINE = re.compile(r"^\s*step\s*(\d+)\s*[:.)\-=]\s*(?:model\s*)?(-?\d+)\b", re.I)


def parse_allocation(text: str, n_steps: int, n_models: int) -> list[int]:
    """One ladder index per subtask from an allocator output: the first ``[...]`` list, else ``Step k: i`` lines.
    Raises ``FormatError`` on no list, a non-integer entry, the wrong length or an index outside 0..n_models-1."""
    if n_steps < 1:
        raise ValueError(f"allocation: n_steps must be ≥ 1, got {n_steps}")
    s = "" if text is None else str(text)
    m = _LIST.search(s)
    if m is not None:
        items = [x.strip() for x in m.group(1).split(",") if x.strip()]
        vals = []
        for x in items:
            if not re.fullmatch(r"-?\d+", x.strip("\"' ")):
                raise FormatError(f"allocation: {x!r} in {m.group(0)!r} is not a model number")
            vals.append(int(x.strip("\"' ")))
    else:
        lines = [_ALLOC_LINE.match(x) for x in s.splitlines()]
        hits = [(int(h.group(1)), int(h.group(2))) for h in lines if h]
        if not hits:
            raise FormatError(f"allocation has no [i, j, ...] list or 'Step k: i' lines (got {s.strip()[:80]!r})")
        if [k for k, _ in hits] != list(range(1, len(hits) + 1)):
            raise FormatError(f"allocation: step numbers must run 1, 2, ...; got {[k for k, _ in hits]}")
        vals = [v for _, v in hits]
    if len(vals) != n_steps:
        raise FormatError(f"allocation has {len(vals)} model number(s) for {n_steps} step(s)")
    bad = [v for v in vals if not 0 <= v < n_models]
    if bad:
        raise FormatError(f"allocation: model number(s) {bad} are off the ladder (0..{n_models - 1})")
    return vals


_OPS = re.compile(r"\d+(?:[.,]\d+)?|[%+\-*/×÷]|\b(?:times|twice|half|double|triple|percent|each|per|total|"
                  r"average|left|remaining|difference|sum|product)\b", re.I)


def heuristic_allocation(steps: Sequence[str], ladder: Ladder, thresholds: Sequence[int] = (2, 4)) -> list[int]:
    """The untrained allocator [D]: a subtask's difficulty = numbers + arithmetic operators/words in it; group g =
    how many thresholds it reaches; the group's top model. The last step (it produces the answer) gets at least
    the middle group."""
    out = []
    for i, s in enumerate(steps):
        n = len(_OPS.findall(s))
        g = min(sum(n >= t for t in thresholds), ladder.n_groups - 1)
        if i == len(steps) - 1:
            g = max(g, (ladder.n_groups - 1 + 1) // 2)
        out.append(ladder.group_top(g))
    return out


# ---------------------------------------------------------------------------------------------------- execution

_EXEC_INTRO = ("You are solving this problem:\n{question}\n\nIt has been split into sub-problems that you will get "
               "one at a time, with the answers to the earlier ones for reference. ")
# ``execution.subtask_prompt``: DoT asks for a concise, clear answer (``concise``); measured on the local pool,
# qwen2.5-coder-1.5b then replies with a bare number and solved 1 of 12 searched decompositions all-top, against
# 7 of the same 12 when asked to show the calculation first (``worked``, docs/r2_reasoner.md).
EXEC_SYSTEMS = {
    "concise": _EXEC_INTRO + "Answer only the current sub-problem, concisely and clearly, with the number it asks for.",
    "worked": _EXEC_INTRO + ("Solve only the current sub-problem: show the calculation in one or two short lines, "
                             "then end with the number it asks for."),
}
FINAL_PROMPT = "Now give the final answer to the original problem: only the number, no explanation."


def subtask_messages(question: str, steps: Sequence[str], answers: Sequence[str], k: int,
                     style: str = "concise") -> list[dict]:
    """The messages that ask for subtask ``k`` (0-based) given the answers to subtasks 0..k-1 (DoT's format);
    ``style`` picks the system prompt (``EXEC_SYSTEMS``)."""
    if style not in EXEC_SYSTEMS:
        raise ValueError(f"subtask prompt style must be one of {sorted(EXEC_SYSTEMS)}, got {style!r}")
    if len(answers) < k:
        raise ValueError(f"subtask {k + 1}: only {len(answers)} earlier answer(s)")
    lines = []
    if k:
        lines.append("Answers so far:")
        for i in range(k):
            lines.append(f"Sub-problem-Id: {i + 1}; Sub-problem: {steps[i]}; Answer: {' '.join(answers[i].split())}")
        lines.append("")
    lines.append(f"The sub-problem to solve now is: {steps[k]}")
    return [{"role": "system", "content": EXEC_SYSTEMS[style].format(question=" ".join(question.split()))},
            {"role": "user", "content": "\n".join(lines)}]


def final_messages(question: str, steps: Sequence[str], answers: Sequence[str],
                   style: str = "concise") -> list[dict]:
    """The last subtask's conversation plus one turn asking for the final answer only."""
    k = len(steps) - 1
    return subtask_messages(question, steps, answers, k, style) + [
        {"role": "assistant", "content": answers[k]}, {"role": "user", "content": FINAL_PROMPT}]
