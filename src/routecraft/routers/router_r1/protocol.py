"""Router-R1's tag protocol: the prompt, the per-turn action parser and the format rules.

The policy writes ``<think> … </think>``, consults a pool model with ``<search> Model-Name: query </search>``, gets the
reply back as ``<information> … </information>`` and ends with ``<answer> … </answer>`` (the paper's prompt and
rollout; the authors' code, ulab-uiuc/Router-R1 @ 801a240: ``data_process/prompt_pool.py``,
``router_r1/llm_agent/generation.py``).

Three pure functions carry the protocol; everything else (rollouts, rewards) builds on them:

* ``truncate_turn(text)``: a turn ends after the first ``</search>``, else after the first ``</answer>``;
* ``parse_action(text, names)``: the first ``<search>``/``<answer>`` block of a turn, checked like the paper
  (placeholders, a missing ``:``, an empty query make a search invalid; a name not in the pool is an *unknown model*);
* ``format_violations(response, names)``: every format rule of the authors' reward
  (``verl/utils/reward_score/qa_em.py``) that the whole response (turns plus the inserted ``<information>`` blocks)
  breaks; the format score is −1 when the list is not empty.

Model names are matched like the paper's ``check_llm_name``: case-insensitive, and a pool name that occurs inside the
written name counts (``Qwen2.5-Coder-1.5B-Instruct`` → ``qwen2.5-coder-1.5b``) when exactly one pool name does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

TAGS = ("think", "search", "answer", "information")
TAG_RE = re.compile(r"<(/?)(think|search|answer|information)>")
ACTION_RE = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
SEARCH_RE = re.compile(r"<search>(.*?)</search>", re.DOTALL)
THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
#: the placeholder words of the prompt; a query that still contains them was copied, not written (paper rule)
PLACEHOLDERS = ("llm-name", "your-query")
#: the stop strings a policy turn ends at
STOP_STRINGS = ("</search>", "</answer>")


# ------------------------------------------------------------------------------------------------------ prompt

@dataclass(frozen=True)
class ModelCard:
    """What the policy is told about one pool model."""

    name: str
    description: str
    price_out_per_m: float
    price_in_per_m: float = 0.0
    size_b: float | None = None


INSTRUCTIONS = (
    "Answer the question below. Every time you receive new information, first reason inside <think> and </think>.\n"
    "If you lack knowledge or need help, you can consult a specialised language model by writing "
    "<search> LLM-Name: Your-Query </search>. Its reply comes back between <information> and </information>.\n"
    "Rules for a consultation:\n"
    "- LLM-Name must be exactly one of: {names}.\n"
    "- Your-Query must be a concrete question, not a copy of the model descriptions; never write the words "
    "LLM-Name or Your-Query themselves.\n"
    "Before each consultation, reason inside <think> about why you need outside help and which model fits best. "
    "You may consult several models, and the same model more than once; each reply costs its output tokens at the "
    "model's price.\n"
    "When you need nothing more, give the final answer inside <answer> and </answer>, with no explanation, "
    "for example <answer> {example} </answer>.\n"
    "\n"
    "The models you can consult:\n"
    "{cards}"
)


def format_price(p: float) -> str:
    return f"${p:.4g}"


COMPACT_INSTRUCTIONS = (
    "Answer the question. Think inside <think> </think> first. To consult a model, write "
    "<search> LLM-Name: Your-Query </search> with LLM-Name one of: {names}; its reply comes back inside "
    "<information> </information>. Replies cost their output tokens at the model's price. End with the final answer "
    "alone inside <answer> </answer>, for example <answer> {example} </answer>.\n"
    "Models (parameters, $ per 1M output tokens):\n"
    "{cards}"
)

PROMPT_STYLES = ("full", "compact")


def system_prompt(cards: Sequence[ModelCard], answer_example: str = "Beijing", style: str = "full") -> str:
    """The policy's system prompt: the protocol, then one line per pool model.

    ``full`` (the paper's): name, output price and the pool's description of each model. ``compact`` (our CPU
    variant, about a third of the tokens): the protocol in four sentences and name, size and price per model.
    """
    if not cards:
        raise ValueError("Router-R1 needs at least one pool model to describe in the prompt")
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style must be one of {', '.join(PROMPT_STYLES)}, got {style!r}")
    names = ", ".join(c.name for c in cards)
    if style == "compact":
        lines = [f"- {c.name}: {_size(c)}{format_price(c.price_out_per_m)}" for c in cards]
        return COMPACT_INSTRUCTIONS.format(names=names, example=answer_example, cards="\n".join(lines))
    lines = [f"- {c.name} ({format_price(c.price_out_per_m)} per 1M output tokens): {' '.join(c.description.split())}"
             for c in cards]
    return INSTRUCTIONS.format(names=names, example=answer_example, cards="\n".join(lines))


def _size(c: ModelCard) -> str:
    return f"{c.size_b:g}B, " if c.size_b else ""


def user_prompt(question: str) -> str:
    """``Question: …`` with a question mark appended when the question has none (as the paper does)."""
    q = " ".join(str(question).split())
    if not q:
        raise ValueError("empty question")
    if not q.endswith("?"):
        q += "?"
    return f"Question: {q}"


def messages(question: str, cards: Sequence[ModelCard], answer_example: str = "Beijing",
             style: str = "full") -> list[dict]:
    return [{"role": "system", "content": system_prompt(cards, answer_example, style)},
            {"role": "user", "content": user_prompt(question)}]


# ------------------------------------------------------------------------------------------------------ model names

def _norm_name(s: str) -> str:
    return re.sub(r"\s+", "-", s.strip().lower())


def resolve_model(written: str, names: Iterable[str]) -> str | None:
    """The pool model ``written`` refers to, or None (unknown or ambiguous)."""
    names = list(names)
    w = _norm_name(written)
    if not w:
        return None
    for n in names:
        if _norm_name(n) == w:
            return n
    hits = [n for n in names if _norm_name(n) in w]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:  # the longest name wins when one contains the others (e.g. "gpt-4o" vs "gpt-4o-mini")
        hits.sort(key=len, reverse=True)
        if all(_norm_name(h) in _norm_name(hits[0]) for h in hits[1:]):
            return hits[0]
    return None


# ------------------------------------------------------------------------------------------------------ turns

def truncate_turn(text: str) -> str:
    """Cut a generated turn after the first ``</search>``, else after the first ``</answer>`` (the authors' rollout
    loop, ``router_r1/llm_agent/generation.py``)."""
    for stop in STOP_STRINGS:
        i = text.find(stop)
        if i >= 0:
            return text[: i + len(stop)]
    return text


@dataclass
class Action:
    """What one turn asks for.

    ``kind``: "search" (a consultation that will be routed), "answer", or "none" (no complete block, or an invalid
    search: the paper gives no observation and lets the model continue). ``error`` says why a search is invalid or
    will fail (``unknown model``); a search to an unknown model is still ``kind="search"`` with ``model=None``: it gets
    ``<information>None</information>`` and counts as an invalid action.
    """

    kind: str
    content: str = ""
    model: str | None = None
    written_model: str | None = None
    query: str | None = None
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.kind == "answer" or (self.kind == "search" and self.model is not None)


def parse_search(content: str, names: Iterable[str]) -> Action:
    """Check the inside of a ``<search>`` block. Invalid (kind "none") if it holds a placeholder, has no ``:`` or an
    empty query; a name that is not in the pool gives kind "search" with ``model=None``."""
    low = content.lower()
    for ph in PLACEHOLDERS:
        if ph in low:
            return Action("none", content, error=f"placeholder {ph!r} in the search")
    if ":" not in content:
        return Action("none", content, error="search has no ':' between model name and query")
    written, query = content.split(":", 1)
    written, query = written.strip(), query.strip()
    if not query:
        return Action("none", content, written_model=written, error="empty query")
    model = resolve_model(written, names)
    if model is None:
        return Action("search", content, None, written, query, error=f"unknown model {written!r}")
    return Action("search", content, model, written, query)


def parse_action(text: str, names: Iterable[str]) -> Action:
    """The first ``<search>``/``<answer>`` block of a (truncated) turn."""
    m = ACTION_RE.search(text)
    if m is None:
        return Action("none", error="no complete <search> or <answer> block")
    tag, content = m.group(1), m.group(2)
    if tag == "answer":
        return Action("answer", content.strip())
    return parse_search(content, names)


def parse_pending(pending: str, new_from: int, names: Iterable[str]) -> Action:
    """The action of a turn whose text is ``pending[new_from:]``, where ``pending`` is everything the policy wrote
    since the last observation: the first block that *closes* in this turn, even if it opened in an earlier turn
    that ran out of tokens (our rule: with a small per-turn cap a long ``<search>`` would otherwise be split and never
    routed; with the paper's 1024-token turns the two rules agree). Blocks closed in earlier turns were already
    acted on and are skipped."""
    for m in ACTION_RE.finditer(pending):
        if m.end() > new_from:
            tag, content = m.group(1), m.group(2)
            return Action("answer", content.strip()) if tag == "answer" else parse_search(content, names)
    return Action("none", error="no complete <search> or <answer> block")


def information_block(response: str | None) -> str:
    """The observation inserted after a routed search (paper: two newlines on each side)."""
    body = "None" if response is None else sanitize_information(response).strip()
    return f"\n\n<information>{body}</information>\n\n"


def sanitize_information(text: str) -> str:
    """Remove protocol tags from a called model's reply, so a reply can never open or close a block of the policy's
    response (our choice: the paper inserts replies verbatim; a stray ``<answer>`` in a reply would break the
    format rules through no fault of the policy)."""
    return TAG_RE.sub("", text)


# ------------------------------------------------------------------------------------------------------ format rules

def extract_answer(response: str) -> str | None:
    """The last ``<answer>`` block's content (stripped), or None."""
    found = ANSWER_RE.findall(response)
    return found[-1].strip() if found else None


@dataclass
class FormatReport:
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def score(self) -> float:
        """The paper's format score F: 0 when the response follows every rule, −1 otherwise."""
        return 0.0 if self.ok else -1.0


def _nesting(text: str) -> list[str]:
    """Tags opened inside another block, and close tags that do not close the open block."""
    out: list[str] = []
    open_tag: str | None = None
    for m in TAG_RE.finditer(text):
        closing, tag = m.group(1) == "/", m.group(2)
        if not closing:
            if open_tag is not None:
                out.append(f"<{tag}> nested inside <{open_tag}>")
            else:
                open_tag = tag
        else:
            if open_tag is None:
                out.append(f"</{tag}> closes no open block")
            elif tag != open_tag:
                out.append(f"</{tag}> inside <{open_tag}>")
            else:
                open_tag = None
    return out


def format_violations(response: str, names: Iterable[str]) -> list[str]:
    """Every format rule of Router-R1's reward (``verl/utils/reward_score/qa_em.py``) that ``response`` breaks (empty
    list: the format is valid).

    ``response`` is the policy's whole response: its turns plus the inserted ``<information>`` blocks.
    """
    names = list(names)
    v: list[str] = []
    text = response.strip()
    counts = {t: (text.count(f"<{t}>"), text.count(f"</{t}>")) for t in TAGS}
    if not any(o or c for o, c in counts.values()):
        return ["no tagged block"]
    for t, (o, c) in counts.items():
        if o != c:
            v.append(f"unbalanced <{t}>: {o} opened, {c} closed")
    nested = _nesting(text)
    if nested:
        v.append("nested tags: " + "; ".join(nested[:3]))
    thinks = THINK_RE.findall(text)
    if not thinks:
        v.append("no <think> block")
    for i, th in enumerate(thinks):
        if th.strip() in ("", "..."):
            v.append(f"<think> block {i + 1} is empty")
    n_answer = len(ANSWER_RE.findall(text))
    if n_answer != 1:
        v.append(f"{n_answer} <answer> blocks (exactly one required)")
    if counts["search"][0] != counts["information"][0]:
        v.append(f"{counts['search'][0]} <search> but {counts['information'][0]} <information> blocks")
    if not text.startswith("<think>"):
        v.append("does not start with <think>")
    if not text.endswith("</answer>"):
        v.append("does not end with </answer>")
    for i, content in enumerate(SEARCH_RE.findall(text)):
        where = f"search {i + 1}"
        low = content.lower()
        if content.count(":") != 1:
            v.append(f"{where}: {content.count(':')} ':' (exactly one required)")
        written, _, query = content.partition(":")
        if not query.strip():
            v.append(f"{where}: empty query")
        for ph in PLACEHOLDERS:
            if ph in low:
                v.append(f"{where}: placeholder {ph!r}")
        w = written.strip()
        if w and w.lower() in query.lower():
            v.append(f"{where}: the model name appears in the query")
        if resolve_model(w, names) is None:
            v.append(f"{where}: unknown model {w!r}")
    return v


def check_format(response: str, names: Iterable[str]) -> FormatReport:
    return FormatReport(format_violations(response, names))
