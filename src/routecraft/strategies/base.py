"""Strategy base: a prompt template, a length-budget instruction, a hard token cap and an answer extractor.

Prompts are short on purpose (tiny local models on CPU process prompts slowly): zero-shot chat messages by default,
one short exemplar for plain completion prompts (base models need it to learn the answer format). Chat messages put a
constant system prefix first and the question before the strategy's instruction, so all (strategy, budget) cells of
one question share the longest possible prompt prefix in llama.cpp's prompt cache.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal, Sequence

from pydantic import BaseModel, ConfigDict, field_validator

from routecraft.strategies.answers import extract_answer, format_choices, task_kind
from routecraft.strategies.exemplars import EXEMPLARS
from routecraft.strategies.sandbox import SandboxResult

#: The output-length budgets swept by default (None = no instruction, the strategy's default cap).
BUDGET_GRID: tuple[int | None, ...] = (32, 64, 128, 256, 512, None)

#: Length-instruction presets: name -> (template, where it goes): R2-Router's (Xue et al., arXiv 2602.02823) paper
#: wording "use at most k tokens", and the variants of its code (UCF-ML-Research/R2-Router: data collection
#: ``data_collection/prompt_template.py``, the released router ``r2_router/router.py``).
BUDGET_TEMPLATES: dict[str, tuple[str, str]] = {
    # R2-Router paper wording (default)
    "paper": ("Use at most {k} tokens.", "user"),
    # R2-Router released router / RouterArena sweep: a system message
    "r2_system": ("You MUST respond in {k} tokens or fewer. Directly give the answer follow the format WITHOUT ANY "
                  "explanation.", "system"),
    # R2-Router "concise" variant (paraphrased: the source text is elided in our notes)
    "r2_concise": ("Be concise, directly give the answer in {k} tokens or fewer.", "system"),
    # R2-Router data-collection code counts words (paraphrased wording)
    "r2_words": ("You have a strict budget of {k} words: your answer must be at most {k} words.", "user"),
}

DEFAULT_SYSTEM = "You are a helpful assistant."

#: The answer form each strategy asks for, per answer kind (the first four are unchanged since routecraft-gsm8k was
#: collected: its prompts depend on them).
ANSWER_FORM = {
    "numeric": '"The answer is N." where N is a number',
    "math": '"The answer is \\boxed{X}." with the final answer X in LaTeX',
    "choice": '"The answer is (X)." where X is the option letter',
    "qa": '"The answer is X." where X is a short answer',
    "code": "the complete Python function in a ```python block",
    "generation": '"Sentence: S" where S is one sentence that uses all of the given concepts',
    "chat": "your answer",
}


@dataclass
class Extraction:
    """What a strategy got out of one model output."""

    answer: str | None
    method: str                          # which rule matched: boxed, answer_is, hash, last_number, code, vote, none...
    code: str | None = None              # PAL: the program that was run
    sandbox: SandboxResult | None = None  # PAL: how the run went
    votes: dict[str, int] | None = None  # self-consistency: answer -> count

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StrategyRun:
    """One strategy applied to one question through one client."""

    strategy: str
    task: str
    budget: int | None
    answer: str | None
    text: str
    extraction: Extraction
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_s: float = 0.0          # wall clock of the whole run (model calls + PAL execution)
    model_latency_s: float = 0.0    # sum of the client's reported latencies
    finish_reason: str | None = None
    max_tokens: int | None = None
    samples: list["StrategyRun"] | None = None  # self-consistency: one run per sample
    logprob_mean: float | None = None  # of the output's token log-probabilities (asked with ``logprobs=True``)
    logprob_min: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _check_budget(budget: Any) -> int | None:
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise ValueError(f"budget must be a positive int (output tokens) or None, got {budget!r}")
    return budget


class Strategy(BaseModel):
    """A reasoning strategy. Subclasses set ``name``/``description`` defaults and implement ``instruction``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    system_prompt: str | None = DEFAULT_SYSTEM
    budget_instruction: str = "paper"
    """a preset name from BUDGET_TEMPLATES or a template containing "{k}"."""
    budget_placement: Literal["user", "system"] | None = None
    """where the length instruction goes; None = the preset's placement ("user" for a custom template)."""
    budget_slack: int = 10
    """hard cap = budget + slack (R2-Router collected data with k + 10)."""
    default_max_tokens: int | None = 512
    """the cap when no budget is given; None = no cap."""
    kind_max_tokens: ClassVar[dict[str, int]] = {}
    """answer kind -> the cap when no budget is given, for kinds whose answers are longer than the default (a whole
    program); the other kinds keep ``default_max_tokens``."""
    chat_exemplar: bool = False
    prompt_exemplar: bool = True
    temperature: float = 0.0

    kind_label: ClassVar[str] = "base"
    chat_only: ClassVar[bool] = False
    """True for a strategy that is always a chat request (the plain call): never a completion prompt, also for a
    base model (llama.cpp applies the model's chat template); self-consistency over it samples chat requests too."""

    @field_validator("budget_instruction")
    @classmethod
    def _check_template(cls, v: str) -> str:
        if v not in BUDGET_TEMPLATES and "{k}" not in v:
            raise ValueError(f"budget_instruction must be one of {sorted(BUDGET_TEMPLATES)} or a template containing "
                             f"'{{k}}', got {v!r}")
        return v

    @field_validator("budget_slack")
    @classmethod
    def _check_slack(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"budget_slack must be >= 0, got {v}")
        return v

    # ------------------------------------------------------------------------------------------- prompt pieces
    def instruction(self, task: str) -> str:
        """The strategy's instruction for ``task`` (says how to reason and what form the answer takes)."""
        raise NotImplementedError

    def applies_to(self, task: str) -> bool:
        """Whether this strategy can run on ``task`` at all (PAL cannot answer a code, generation or chat task):
        its instruction for the task exists."""
        try:
            self.instruction(task)
        except ValueError:
            return False
        return True

    def exemplar(self, task: str) -> tuple[str, str] | None:
        """(question, answer) of one short worked example, or None."""
        ex = EXEMPLARS.get(task_kind(task))
        if ex is None or self.exemplar_key not in ex["answers"]:
            return None
        return ex["question"], ex["answers"][self.exemplar_key]

    @property
    def exemplar_key(self) -> str:
        return self.name

    def budget_text(self, budget: int | None) -> str | None:
        """The length instruction for ``budget`` (None when there is no budget)."""
        budget = _check_budget(budget)
        if budget is None:
            return None
        tpl = BUDGET_TEMPLATES.get(self.budget_instruction, (self.budget_instruction, "user"))[0]
        return tpl.format(k=budget)

    def placement(self) -> str:
        """Where the length instruction goes: "user" (after the question) or "system"."""
        if self.budget_placement is not None:
            return self.budget_placement
        return BUDGET_TEMPLATES.get(self.budget_instruction, ("", "user"))[1]

    def max_tokens(self, budget: int | None = None, task: str | None = None) -> int | None:
        """Hard output cap: budget + slack, or without a budget ``default_max_tokens`` (``kind_max_tokens`` of the
        task's answer kind where it has one, unless ``default_max_tokens`` was set explicitly)."""
        budget = _check_budget(budget)
        if budget is not None:
            return budget + self.budget_slack
        if task is not None and self.kind_max_tokens and "default_max_tokens" not in self.model_fields_set:
            return self.kind_max_tokens.get(task_kind(task), self.default_max_tokens)
        return self.default_max_tokens

    def stop(self, mode: Literal["chat", "prompt"] = "chat") -> list[str] | None:
        """Stop sequences: completion prompts stop before a made-up next question."""
        return ["\nQuestion:", "\n\nQuestion"] if mode == "prompt" else None

    # ------------------------------------------------------------------------------------------- prompts
    def build_messages(self, question: str, task: str = "gsm8k", budget: int | None = None,
                       choices: Sequence[str] | None = None) -> list[dict]:
        """Chat messages: [system], [one exemplar turn], user = question + instruction (+ length instruction)."""
        _check_question(question)
        task_kind(task)
        btext = self.budget_text(budget)
        system = self.system_prompt or ""
        if btext and self.placement() == "system":
            system = f"{system} {btext}".strip()
        msgs: list[dict] = [{"role": "system", "content": system}] if system else []
        instr = self.instruction(task)
        if self.chat_exemplar:
            ex = self.exemplar(task)
            if ex:
                msgs += [{"role": "user", "content": f"{ex[0]}\n\n{instr}"}, {"role": "assistant", "content": ex[1]}]
        tail = " ".join(x for x in (instr, btext if self.placement() == "user" else None) if x)
        user = format_choices(question, choices).strip() + (f"\n\n{tail}" if tail else "")
        msgs.append({"role": "user", "content": user})
        return msgs

    def answer_prefix(self, task: str) -> str:
        """Text that ends a completion prompt after "Answer:"."""
        return ""

    def build_prompt(self, question: str, task: str = "gsm8k", budget: int | None = None,
                     choices: Sequence[str] | None = None) -> str:
        """A plain completion prompt for base models: instruction, one exemplar, then "Question: ...\\nAnswer:"."""
        _check_question(question)
        task_kind(task)
        btext = self.budget_text(budget)
        head = self.instruction(task) + (f" {btext}" if btext else "")
        parts = [head, ""]
        if self.prompt_exemplar:
            ex = self.exemplar(task)
            if ex:
                parts += [f"Question: {ex[0]}", f"Answer:{_sep(ex[1])}{ex[1]}", ""]
        parts += [f"Question: {format_choices(question, choices).strip()}", f"Answer:{self.answer_prefix(task)}"]
        return "\n".join(parts)

    # ------------------------------------------------------------------------------------------- answers
    def extract(self, text: str, task: str = "gsm8k", choices: Sequence[str] | None = None) -> Extraction:
        answer, method = extract_answer(text or "", task, choices)
        return Extraction(answer=answer, method=method)

    # ------------------------------------------------------------------------------------------- running
    async def run(self, client: Any, question: str, task: str = "gsm8k", budget: int | None = None, *,
                  choices: Sequence[str] | None = None, temperature: float | None = None, seed: int | None = None,
                  mode: Literal["auto", "chat", "prompt"] = "auto", **extra: Any) -> StrategyRun:
        """Ask ``client`` and extract the answer.

        ``mode="chat"`` sends ``build_messages`` through ``client.chat(messages, max_tokens, temperature, stop, seed,
        **extra)``; ``mode="prompt"`` sends ``build_prompt`` through ``client.complete(prompt, ...)`` (base models);
        ``"auto"`` picks "prompt" when ``client.model.instruct`` is False, else "chat".
        """
        t0 = time.perf_counter()
        one = await self.call_once(client, question, task, budget, choices=choices,
                                   temperature=self.temperature if temperature is None else temperature, seed=seed,
                                   mode=self.call_mode(client, mode), **extra)
        one.latency_s = time.perf_counter() - t0
        return one

    def call_mode(self, client: Any, mode: str) -> Literal["chat", "prompt"]:
        """The call's mode for ``client`` (module-level ``resolve_mode``); a ``chat_only`` strategy is always a chat
        request, and asking it for a completion prompt is an error."""
        resolved = resolve_mode(client, mode)  # checks the name
        if self.chat_only and mode == "prompt":
            raise ValueError(f"strategy {self.name!r} is a chat request (as the gateway sends it): "
                             "mode='prompt' does not apply")
        return "chat" if self.chat_only else resolved

    async def call_once(self, client: Any, question: str, task: str, budget: int | None, *,
                        choices: Sequence[str] | None, temperature: float, seed: int | None,
                        mode: Literal["chat", "prompt"] = "chat", **extra: Any) -> StrategyRun:
        """One model call of this strategy (``mode`` resolved), its answer extracted; ``run`` adds the timing and
        self-consistency calls it k times."""
        cap = self.max_tokens(budget, task)
        if mode == "prompt" and extra.get("logprobs") is True:  # the completions API takes a count
            extra["logprobs"] = 1
        if mode == "prompt":
            prompt = self.build_prompt(question, task, budget, choices)
            resp = await client.complete(prompt, max_tokens=cap, temperature=temperature, stop=self.stop("prompt"),
                                         seed=seed, **extra)
        else:
            messages = self.build_messages(question, task, budget, choices)
            resp = await client.chat(messages, max_tokens=cap, temperature=temperature, stop=self.stop("chat"),
                                     seed=seed, **extra)
        text = resp.text or ""
        ex = await self._extract_async(text, task, choices)
        lp_mean, lp_min = getattr(resp, "logprob_summary", (None, None))
        return StrategyRun(strategy=self.name, task=task, budget=budget, answer=ex.answer, text=text, extraction=ex,
                           input_tokens=int(resp.input_tokens or 0), output_tokens=int(resp.output_tokens or 0),
                           cost_usd=resp.cost_usd, model_latency_s=float(resp.latency_s or 0.0),
                           finish_reason=resp.finish_reason, max_tokens=cap, logprob_mean=lp_mean,
                           logprob_min=lp_min)

    async def _extract_async(self, text: str, task: str, choices: Sequence[str] | None) -> Extraction:
        return self.extract(text, task, choices)


def resolve_mode(client: Any, mode: str) -> Literal["chat", "prompt"]:
    if mode not in ("auto", "chat", "prompt"):
        raise ValueError(f"mode must be 'auto', 'chat' or 'prompt', got {mode!r}")
    if mode == "auto":
        instruct = getattr(getattr(client, "model", None), "instruct", True)
        return "chat" if instruct is not False else "prompt"
    return mode  # type: ignore[return-value]


def _check_question(question: Any) -> None:
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be a non-empty string, got {question!r}")


def _sep(answer: str) -> str:
    return "\n" if answer.startswith("```") else " "
