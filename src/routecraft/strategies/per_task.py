"""Which strategies apply to which task: ``strategies_for(task)``.

By answer kind (``answers.TASK_KINDS``):

| kind | tasks (e.g.) | strategies |
|---|---|---|
| numeric | gsm8k, agentverse-mgsm | direct, cot, cod, pal |
| math | math | direct, cot, cod, pal |
| choice | mmlu, gpqa, arc_challenge, commonsense_qa, openbook_qa, agentverse-logicgrid | direct, cot, cod |
| code | mbpp, human_eval | direct, cot, cod |
| qa | natural_qa, trivia_qa | direct, default, cot |
| generation | commongen | direct, default, cot |
| chat | general requests | direct, default, cot |

Direct and chain-of-thought apply everywhere. The plain call (``default``: the question as a user sends it, no
instruction, no answer format — what the gateway sends for an open request) is planned where the answer has no fixed
form (open questions, a sentence, a chat reply): there it is what a chat client gets, and what the gateway's
shipped default leaves open requests to; a question with a fixed answer form (a number, a letter, a program) is
collected with the strategies that ask for that form. Chain-of-draft is for the kinds that reason in steps (arithmetic,
math, multiple-choice reasoning such as logic grids and science questions, writing a program); a recall question
(QA) has no steps to draft, and a sentence (generation) or a chat reply is its own draft. PAL (a program whose
return value is the answer) is for numeric and math answers only: the answer of a code task already is a program,
and a program cannot compute a fact, an option of a reading question or a sentence. Self-consistency (``sc``,
``sc-<base>``) is never planned by default (k calls per cell); it votes over answers, which is meaningful for
numbers, letters and short answers only, and can be named explicitly for those.
"""

from __future__ import annotations

from routecraft.strategies.answers import KINDS, task_kind

STRATEGIES_BY_KIND: dict[str, tuple[str, ...]] = {
    "numeric": ("direct", "cot", "cod", "pal"),
    "math": ("direct", "cot", "cod", "pal"),
    "choice": ("direct", "cot", "cod"),
    "code": ("direct", "cot", "cod"),
    "qa": ("direct", "default", "cot"),
    "generation": ("direct", "default", "cot"),
    "chat": ("direct", "default", "cot"),
}
assert set(STRATEGIES_BY_KIND) == set(KINDS)


def strategies_for(task: str) -> list[str]:
    """The strategies that apply to ``task`` (a task name or an answer kind), cheapest first."""
    return list(STRATEGIES_BY_KIND[task_kind(task)])
