"""The built-in strategies: the plain call (``default``), direct, chain-of-thought, chain-of-draft, program-aided (PAL)
and self-consistency."""

from __future__ import annotations

import ast
import asyncio
import re
import time
from typing import Any, ClassVar, Literal, Sequence

from pydantic import Field, PrivateAttr, field_validator

from routecraft.strategies.answers import answer_from_value, extract_answer, majority, task_kind, vote_key
from routecraft.strategies.base import ANSWER_FORM, Extraction, Strategy, StrategyRun
from routecraft.strategies.registry import get_strategy, register_strategy
from routecraft.strategies.sandbox import run_python


@register_strategy("default")
class PlainCall(Strategy):
    """The plain call: the question as a user would send it (with its options, if any), no system prompt, no
    instruction and no answer format — what ``routecraft serve`` sends for strategy ``default`` (the conversation
    unchanged). Always a chat request, as the gateway makes it, also to a base model (llama.cpp applies the model's
    chat template). Its answer is read from the free text by the task's extractor (an open question: the first
    line). A length budget, when given, is the only thing added."""

    name: str = "default"
    description: str = ("Default prompting: the question exactly as given, with no added reasoning instruction and "
                        "no answer format; what a chat client sends.")
    system_prompt: str | None = None
    default_max_tokens: int | None = 512
    chat_only: ClassVar[bool] = True

    def instruction(self, task: str) -> str:
        task_kind(task)  # an unknown task is an error, as for every strategy
        return ""


@register_strategy("direct")
class Direct(Strategy):
    name: str = "direct"
    description: str = ("Direct answering: the model states the final answer at once with no reasoning; the cheapest "
                        "strategy, good for recall and easy questions.")
    default_max_tokens: int | None = 128
    kind_max_tokens: ClassVar[dict[str, int]] = {"code": 384}

    def instruction(self, task: str) -> str:
        kind = task_kind(task)
        if kind == "chat":  # a general request: no answer format to impose, and an explanation may be the answer
            return "Answer directly and concisely."
        return f"Reply only with {ANSWER_FORM[kind]}, no explanation."


@register_strategy("cot")
class ChainOfThought(Strategy):
    name: str = "cot"
    description: str = ("Chain-of-thought: the model reasons step by step before answering; the longest outputs, best "
                        "on multi-step math and logic.")
    default_max_tokens: int | None = 512
    kind_max_tokens: ClassVar[dict[str, int]] = {"code": 768}

    def instruction(self, task: str) -> str:
        return f"Think step by step, then end with {ANSWER_FORM[task_kind(task)]}."


@register_strategy("cod")
class ChainOfDraft(Strategy):
    name: str = "cod"
    description: str = ("Chain-of-draft: step-by-step reasoning written as minimal drafts of a few words per step; far "
                        "shorter than chain-of-thought with similar accuracy on arithmetic.")
    default_max_tokens: int | None = 256
    kind_max_tokens: ClassVar[dict[str, int]] = {"code": 512}

    def instruction(self, task: str) -> str:
        # wording after Xu et al. 2025, "Chain of Draft: Thinking Faster by Writing Less"
        return (f"Think step by step, but only keep a minimum draft for each thinking step, with 5 words at most. "
                f"End with {ANSWER_FORM[task_kind(task)]}.")


_PAL_RETURNS = {
    "numeric": "returns the answer as a number",
    "math": "returns the final answer (a number, or a string with the LaTeX answer)",
    # kept so that existing configs still run; strategies_for() plans PAL for numeric and math only
    "choice": "returns the letter of the correct option",
    "qa": "returns the short answer as a string",
}


def extract_code(text: str) -> str | None:
    """The Python program in a model output: a ```python block (the last one defining ``solution``), code before a
    closing fence (completion prompts end with an opening fence), or bare code starting at ``import``/``def``.
    Trailing lines that stop the program compiling (prose after unfenced code) are dropped."""
    if not text or not text.strip():
        return None
    stripped = text.lstrip()
    if not stripped.startswith("```") and "```" in text:
        head = text.split("```", 1)[0]
        if "def solution" in head or re.search(r"^\s*return\b", head, re.M):
            return head.strip("\n").rstrip() + "\n"
    blocks = [b for b in re.findall(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n(.*?)(?:```|\Z)", text, re.S) if b.strip()]
    if blocks:
        with_sol = [b for b in blocks if "def solution" in b]
        return (with_sol or blocks)[-1].strip("\n").rstrip() + "\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if re.match(r"(import |from \w|def |class |[A-Za-z_]\w*\s*=)", line)), None)
    if start is None:
        return None
    code_lines = lines[start:]
    while code_lines:
        code = "\n".join(code_lines).rstrip() + "\n"
        try:
            compile(code, "program.py", "exec")
            return code
        except SyntaxError:
            code_lines = code_lines[:-1]
        except (ValueError, OverflowError, RecursionError, MemoryError):  # pragma: no cover - pathological input
            return None
    return None


def _compilable_prefix(code: str) -> str | None:
    """``code`` minus as few trailing lines as needed to compile (a broken "example usage" line, cut-off prose)."""
    lines = code.rstrip().splitlines()
    while lines:
        candidate = "\n".join(lines).rstrip() + "\n"
        try:
            compile(candidate, "program.py", "exec")
            return candidate
        except SyntaxError:
            lines = lines[:-1]
        except (ValueError, OverflowError, RecursionError, MemoryError):  # pragma: no cover - pathological input
            return None
    return None


def _zero_arg(f: ast.FunctionDef) -> bool:
    a = f.args
    return (len(a.posonlyargs) + len(a.args) == len(a.defaults)
            and all(d is not None for d in a.kw_defaults))


def _returns_value(f: ast.FunctionDef) -> bool:
    return any(isinstance(n, ast.Return) and n.value is not None for n in ast.walk(f))


def _has_assert(f: ast.FunctionDef) -> bool:
    return any(isinstance(n, ast.Assert) for n in ast.walk(f))


def _is_main_guard(n: ast.stmt) -> bool:
    return isinstance(n, ast.If) and "__name__" in ast.unparse(n.test)


def prepare_program(code: str) -> str:
    """Make a small model's program runnable the way PAL intends: ``solution()`` returns the answer.

    Small models name the function differently and add "example usage" (prints, asserts with wrong expected values,
    a ``main()`` call, sometimes a broken last line). When the program defines ``solution()`` or exactly one other
    zero-argument function that returns a value (and asserts nothing), the top-level expression statements, asserts
    and ``if __name__ == "__main__"`` blocks are dropped and that function is called as ``solution``. Otherwise the
    program is run as written (the sandbox then falls back to a ``result`` variable or the last printed line).
    """
    fixed = _compilable_prefix(code)
    if fixed is None:
        return code
    tree = ast.parse(fixed)
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    target = next((f.name for f in funcs if f.name == "solution" and _zero_arg(f)), None)
    if target is None:
        cands = [f for f in funcs if _zero_arg(f) and _returns_value(f) and not _has_assert(f)]
        target = cands[0].name if len(cands) == 1 else None
    if target is None:
        return fixed
    drop: set[int] = set()
    for n in tree.body:
        if isinstance(n, (ast.Expr, ast.Assert)) or _is_main_guard(n):
            drop.update(range(n.lineno, (n.end_lineno or n.lineno) + 1))
    lines = [line for i, line in enumerate(fixed.splitlines(), start=1) if i not in drop]
    out = "\n".join(lines).rstrip() + "\n"
    if target != "solution":
        out += f"\nsolution = {target}\n"
    return out


@register_strategy("pal")
class ProgramAided(Strategy):
    name: str = "pal"
    description: str = ("Program-aided: the model writes a Python function whose result, executed in a sandbox, is the "
                        "answer; reliable on arithmetic and symbolic problems, weak on commonsense and knowledge.")
    default_max_tokens: int | None = 384
    timeout_s: float = Field(5.0, gt=0)
    memory_mb: int = Field(256, ge=32)
    isolation: Literal["auto", "strict", "namespaces", "audit"] = "auto"
    """sandbox isolation: "auto" = "strict" (kernel-enforced; alias "namespaces"), raising SandboxUnavailable where
    that is unavailable unless the operator called allow_weak_isolation(True); "audit" = the weak audit-hook mode."""
    fallback_to_text: bool = False
    """when no code runs, take the answer from the text instead (off: a failed program is a wrong answer)."""

    def instruction(self, task: str) -> str:
        kind = task_kind(task)
        if kind not in _PAL_RETURNS:
            raise ValueError(f"strategy 'pal' does not apply to {kind} tasks ({task!r}): a program computes a "
                             f"number or a short answer (numeric, math; also choice, qa), not a {kind} answer")
        return (f"Write a Python function solution() that computes and {_PAL_RETURNS[kind]}. "
                f"Reply with only the code in a ```python block.")

    def answer_prefix(self, task: str) -> str:
        return "\n```python\n"

    def stop(self, mode: Literal["chat", "prompt"] = "chat") -> list[str] | None:
        return ["```", "\nQuestion:"] if mode == "prompt" else None

    def extract(self, text: str, task: str = "gsm8k", choices: Sequence[str] | None = None) -> Extraction:
        task_kind(task)
        code = extract_code(text or "")
        if code is None:
            return self._fallback(text, task, choices, Extraction(answer=None, method="no_code"))
        code = prepare_program(code)
        res = run_python(code, timeout_s=self.timeout_s, memory_mb=self.memory_mb, isolation=self.isolation)
        ans = answer_from_value(res.value, task, choices) if res.ok else None
        ex = Extraction(answer=ans, method="code" if res.ok else "code_error", code=code, sandbox=res)
        return ex if ans is not None else self._fallback(text, task, choices, ex)

    def _fallback(self, text: str, task: str, choices: Sequence[str] | None, ex: Extraction) -> Extraction:
        if not self.fallback_to_text:
            return ex
        ans, method = extract_answer(text or "", task, choices)
        if ans is None:
            return ex
        ex.answer, ex.method = ans, f"text_fallback:{method}"
        return ex

    async def _extract_async(self, text: str, task: str, choices: Sequence[str] | None) -> Extraction:
        return await asyncio.to_thread(self.extract, text, task, choices)


@register_strategy("sc")
class SelfConsistency(Strategy):
    """k samples of a base strategy at temperature > 0; the answer is the majority vote of the extracted answers.

    Options set on this strategy (system_prompt, budget_instruction, budget_slack, ...) are passed on to the base
    strategy together with ``base_options``.
    """

    name: str = "sc"
    description: str = ("Self-consistency: several chain-of-thought samples at temperature 0.7 with a majority vote "
                        "over their answers; more accurate than one sample at k times the cost.")
    base: str = "cot"
    k: int = Field(5, ge=1, le=64)
    temperature: float = Field(0.7, ge=0.0)
    concurrent: bool = True
    """send the k requests at once (hosted APIs); a one-slot local server just queues them."""
    base_options: dict[str, Any] = Field(default_factory=dict)

    _base_cache: Strategy | None = PrivateAttr(default=None)

    @field_validator("base")
    @classmethod
    def _no_nesting(cls, v: str) -> str:
        if v == "sc" or v.startswith("sc-"):
            raise ValueError("self-consistency cannot wrap itself")
        return v

    @property
    def base_strategy(self) -> Strategy:
        if self._base_cache is None:
            passed = {f: getattr(self, f) for f in self.model_fields_set & set(Strategy.model_fields)
                      if f not in ("name", "description", "temperature")}
            self._base_cache = get_strategy(self.base, **{**passed, **self.base_options})
        return self._base_cache

    @property
    def exemplar_key(self) -> str:
        return self.base_strategy.exemplar_key

    def instruction(self, task: str) -> str:
        return self.base_strategy.instruction(task)

    def budget_text(self, budget: int | None) -> str | None:
        return self.base_strategy.budget_text(budget)

    def build_messages(self, question, task="gsm8k", budget=None, choices=None) -> list[dict]:
        return self.base_strategy.build_messages(question, task, budget, choices)

    def build_prompt(self, question, task="gsm8k", budget=None, choices=None) -> str:
        return self.base_strategy.build_prompt(question, task, budget, choices)

    def max_tokens(self, budget: int | None = None, task: str | None = None) -> int | None:
        return self.base_strategy.max_tokens(budget, task)

    def stop(self, mode="chat"):
        return self.base_strategy.stop(mode)

    def extract(self, text: str, task: str = "gsm8k", choices: Sequence[str] | None = None) -> Extraction:
        """One sample's extraction (use ``aggregate`` for the vote)."""
        return self.base_strategy.extract(text, task, choices)

    def aggregate(self, extractions: Sequence[Extraction], task: str = "gsm8k") -> Extraction:
        """Majority vote over the samples' answers (equal numbers/LaTeX/letters/normalised text count together;
        ties go to the answer seen first; samples without an answer do not vote)."""
        keys = [vote_key(e.answer, task) for e in extractions]
        winner, counts = majority(keys)
        if winner is None:
            return Extraction(answer=None, method="vote", votes={})
        first = next(e for e, k in zip(extractions, keys) if k == winner)
        return Extraction(answer=first.answer, method="vote", votes=counts, code=first.code, sandbox=first.sandbox)

    async def run(self, client: Any, question: str, task: str = "gsm8k", budget: int | None = None, *,
                  choices: Sequence[str] | None = None, temperature: float | None = None, seed: int | None = None,
                  mode: Literal["auto", "chat", "prompt"] = "auto", **extra: Any) -> StrategyRun:
        """k calls of the base strategy (seeds seed, seed+1, ... when a seed is given), then the vote."""
        t0 = time.perf_counter()
        temp = self.temperature if temperature is None else temperature
        base = self.base_strategy
        resolved = base.call_mode(client, mode)

        def one(i: int):
            return base.call_once(client, question, task, budget, choices=choices, temperature=temp,
                                  seed=None if seed is None else seed + i, mode=resolved, **extra)

        if self.concurrent:
            samples = list(await asyncio.gather(*(one(i) for i in range(self.k))))
        else:
            samples = [await one(i) for i in range(self.k)]
        agg = self.aggregate([s.extraction for s in samples], task)
        key = vote_key(agg.answer, task)
        rep = next((s for s in samples if key is not None and vote_key(s.answer, task) == key), samples[0])
        costs = [s.cost_usd for s in samples if s.cost_usd is not None]
        return StrategyRun(strategy=self.name, task=task, budget=budget, answer=agg.answer, text=rep.text,
                           extraction=agg, input_tokens=sum(s.input_tokens for s in samples),
                           output_tokens=sum(s.output_tokens for s in samples),
                           cost_usd=sum(costs) if costs else None,
                           latency_s=time.perf_counter() - t0,
                           model_latency_s=sum(s.model_latency_s for s in samples),
                           finish_reason=rep.finish_reason, max_tokens=rep.max_tokens, samples=samples,
                           logprob_mean=rep.logprob_mean, logprob_min=rep.logprob_min)
