"""The Router-R1 rollout engine (the authors' turn loop, ulab-uiuc/Router-R1 ``router_r1/llm_agent/generation.py``),
batched, in token space.

For a batch of questions, each trajectory keeps a rolling context (prompt ids + response ids so far). Each turn:

1. the policy generates up to ``max_turn_tokens`` for every active trajectory at once (stop strings ``</search>``,
   ``</answer>``);
2. the text is cut after the first ``</search>``, else the first ``</answer>``;
3. the first ``<search>``/``<answer>`` block is parsed (``protocol.parse_action``);
4. an answer ends the trajectory; a valid search is routed, and all the searches of the batch go to the pool
   concurrently; the reply comes back as ``\\n\\n<information>…</information>\\n\\n`` (at most ``max_obs_tokens``; an
   unknown model or a failed call gives ``<information>None</information>``); anything else gets no observation and
   the model simply continues next turn.

After ``max_turns`` routed turns, trajectories still active get one final turn with routing disabled. A trajectory
also stops when its response reaches ``max_response_tokens``. The policy sees at most the last
``max_context_tokens`` tokens of its context.

The response is kept as segments (token ids, trainable): the policy's turns are trainable, the ``<information>``
blocks are not; ``Trajectory.completion_ids``/``loss_mask`` are what the trainer consumes.

Policies implement ``generate(contexts, max_new_tokens, keys) -> list[list[int]]`` (new ids per context, without
padding); ``HFPolicy`` wraps a transformers model, ``ScriptedPolicy`` replays fixed text (tests, debugging).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

from routecraft.routers.router_r1.backends import Call, PoolCaller
from routecraft.routers.router_r1.protocol import (
    STOP_STRINGS,
    ModelCard,
    extract_answer,
    information_block,
    messages,
    parse_pending,
    sanitize_information,
    truncate_turn,
)
from routecraft.train.masking import flatten

# ------------------------------------------------------------------------------------------------------ records

@dataclass
class Turn:
    index: int
    text: str
    action: str  # search / answer / none
    routed: bool = False
    call: Optional[int] = None  # index into Trajectory.calls
    error: Optional[str] = None
    tokens: int = 0
    info_tokens: int = 0
    final: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Trajectory:
    question: str
    prompt_ids: list[int] = field(default_factory=list)
    segments: list[tuple[list[int], bool]] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    response: str = ""
    stop_reason: Optional[str] = None  # answer / max_turns / max_tokens
    valid_actions: int = 0
    pending: str = ""  # what the policy wrote since the last observation (actions may span turns)

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    @property
    def answer(self) -> Optional[str]:
        return extract_answer(self.response)

    @property
    def response_ids(self) -> list[int]:
        return flatten(self.segments)[0]

    @property
    def completion_ids(self) -> list[int]:
        return self.response_ids

    @property
    def loss_mask(self) -> list[int]:
        return flatten(self.segments)[1]

    @property
    def n_tokens(self) -> int:
        return sum(len(s) for s, _ in self.segments)

    @property
    def n_calls(self) -> int:
        """Routed calls (including those to unknown models and failed ones)."""
        return len(self.calls)

    @property
    def cost_raw(self) -> float:
        """c_raw of the reward: Σ completion tokens × $/1M over the calls."""
        return sum(c.raw_cost for c in self.calls)

    @property
    def cost_usd(self) -> float:
        """The calls' bill at the pool's prices (input and output tokens)."""
        return sum(c.cost_usd for c in self.calls)

    def models_called(self) -> list[str]:
        return [c.model for c in self.calls if c.model is not None]

    def candidates_called(self) -> list[str]:
        """The candidate ids consulted (candidate targets only)."""
        return [c.candidate for c in self.calls if c.candidate is not None]

    def summary(self) -> dict:
        """A JSON-ready record (no token ids) for logs, plans and the CLI."""
        return {"question": self.question, "answer": self.answer, "stop_reason": self.stop_reason,
                "turns": [t.to_dict() for t in self.turns], "calls": [c.to_dict() for c in self.calls],
                "consultations": [c.consultation for c in self.calls if c.consultation is not None],
                "n_calls": self.n_calls, "valid_actions": self.valid_actions, "cost_usd": self.cost_usd,
                "cost_raw": self.cost_raw, "response_tokens": self.n_tokens,
                "policy_tokens": sum(self.loss_mask), "response": self.response}


# ------------------------------------------------------------------------------------------------------ policies

class TurnPolicy(Protocol):
    tokenizer: Any

    def generate(self, contexts: Sequence[Sequence[int]], max_new_tokens: int,
                 keys: Sequence[int]) -> list[list[int]]: ...


class HFPolicy:
    """A transformers causal LM as a turn policy: batched, left-padded sampling with the protocol's stop strings."""

    def __init__(self, model: Any, tokenizer: Any, temperature: float = 1.0, top_p: float = 1.0,
                 stop_strings: Sequence[str] = STOP_STRINGS) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.temperature = temperature
        self.top_p = top_p
        self.stop_strings = list(stop_strings)

    def generate(self, contexts: Sequence[Sequence[int]], max_new_tokens: int,
                 keys: Sequence[int] = ()) -> list[list[int]]:
        import torch

        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        width = max(len(c) for c in contexts)
        ids = torch.full((len(contexts), width), pad, dtype=torch.long)
        att = torch.zeros((len(contexts), width), dtype=torch.long)
        for i, c in enumerate(contexts):
            ids[i, width - len(c):] = torch.tensor(list(c), dtype=torch.long)
            att[i, width - len(c):] = 1
        device = next(self.model.parameters()).device
        sample = self.temperature > 0
        kw: dict = dict(max_new_tokens=max_new_tokens, do_sample=sample, pad_token_id=pad, use_cache=True,
                        stop_strings=self.stop_strings, tokenizer=tok)
        if sample:
            kw.update(temperature=self.temperature, top_p=self.top_p, top_k=0)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids.to(device), attention_mask=att.to(device), **kw)
        new = out[:, width:].tolist()
        eos = set(_eos_ids(tok, self.model))
        result = []
        for row in new:
            cut = len(row)
            for j, t in enumerate(row):
                if t in eos or t == pad:
                    cut = j
                    break
            result.append(row[:cut])
        return result


def _eos_ids(tok: Any, model: Any = None) -> list[int]:
    ids = set()
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    gen = getattr(model, "generation_config", None)
    e = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(e, int):
        ids.add(e)
    elif isinstance(e, (list, tuple)):
        ids.update(int(x) for x in e)
    return sorted(ids)


class ScriptedPolicy:
    """Replays fixed text: ``script[key][turn]`` (a list of turn texts per trajectory key, the last one repeating),
    or ``script(key, turn, context_text) -> str``. For tests of the engine with real backends; the real policy is
    exercised by the trainer."""

    def __init__(self, tokenizer: Any, script: Sequence[Sequence[str]] | Callable[[int, int, str], str]) -> None:
        self.tokenizer = tokenizer
        self.script = script
        self._turn: dict[int, int] = {}

    def generate(self, contexts: Sequence[Sequence[int]], max_new_tokens: int,
                 keys: Sequence[int] = ()) -> list[list[int]]:
        out = []
        keys = list(keys) or list(range(len(contexts)))
        for ctx, key in zip(contexts, keys):
            turn = self._turn.get(key, 0)
            self._turn[key] = turn + 1
            if callable(self.script):
                text = self.script(key, turn, self.tokenizer.decode(list(ctx)))
            else:
                texts = self.script[key]
                text = texts[min(turn, len(texts) - 1)]
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            out.append(ids[:max_new_tokens])
        return out


# ------------------------------------------------------------------------------------------------------ engine

@dataclass
class RolloutSettings:
    max_turns: int = 4
    max_turn_tokens: int = 1024
    max_obs_tokens: int = 600
    obs_keep: str = "head"
    max_response_tokens: int = 4096
    max_context_tokens: int = 4096
    answer_example: str = "Beijing"
    prompt: str = "full"
    response_prefix: str = ""

    @classmethod
    def from_config(cls, pc: Any) -> "RolloutSettings":
        return cls(max_turns=pc.max_turns, max_turn_tokens=pc.max_turn_tokens, max_obs_tokens=pc.max_obs_tokens,
                   obs_keep=pc.obs_keep,
                   max_response_tokens=pc.max_response_tokens, max_context_tokens=pc.max_context_tokens,
                   answer_example=pc.answer_example, prompt=pc.prompt, response_prefix=pc.response_prefix)


class RolloutEngine:
    """Runs batches of Router-R1 trajectories: a turn policy, a pool caller, the protocol settings."""

    def __init__(self, policy: TurnPolicy, caller: PoolCaller, settings: RolloutSettings | None = None,
                 cards: Sequence[ModelCard] | None = None) -> None:
        self.policy = policy
        self.caller = caller
        self.settings = settings or RolloutSettings()
        self._cards = list(cards) if cards is not None else None

    @property
    def tokenizer(self) -> Any:
        return self.policy.tokenizer

    @property
    def cards(self) -> list[ModelCard]:
        if self._cards is None:
            self._cards = self.caller.cards()
        return self._cards

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cards]

    def prompt_messages(self, question: str) -> list[dict]:
        return messages(question, self.cards, self.settings.answer_example, self.settings.prompt)

    def prompt_ids(self, question: str) -> list[int]:
        ids = self.tokenizer.apply_chat_template(self.prompt_messages(question), add_generation_prompt=True,
                                                 tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _turn_ids(self, gen_ids: list[int]) -> tuple[str, list[int]]:
        """The turn's text cut after the first stop tag, and the ids that spell it (the sampled ids when the cut
        falls on a token boundary, a re-encoding otherwise)."""
        tok = self.tokenizer
        raw = tok.decode(gen_ids, skip_special_tokens=True)
        text = truncate_turn(raw)
        if text == raw:
            return text, list(gen_ids)
        # shortest prefix of the sampled ids whose text is exactly the cut text
        for k in range(1, len(gen_ids) + 1):
            if tok.decode(gen_ids[:k], skip_special_tokens=True) == text:
                return text, list(gen_ids[:k])
        return text, self._encode(text)

    def observation(self, call: Call) -> tuple[str, list[int]]:
        """The ``<information>`` block of a call and its ids, cut to ``max_obs_tokens`` (the reply is shortened from
        its end, or from its start with ``obs_keep="tail"``; the tags are kept)."""
        block = information_block(call.response if call.ok else None)
        ids = self._encode(block)
        limit = self.settings.max_obs_tokens
        if len(ids) <= limit:
            return block, ids
        body_ids = self._encode(sanitize_information(call.response or "").strip())
        overhead = len(self._encode(information_block(""))) + 2
        keep = max(0, limit - overhead)
        while True:
            kept = body_ids[len(body_ids) - keep:] if self.settings.obs_keep == "tail" and keep else body_ids[:keep]
            body = self.tokenizer.decode(kept, skip_special_tokens=True)
            block = information_block(body)
            ids = self._encode(block)
            if len(ids) <= limit or keep == 0:
                return block, ids[:limit]
            keep -= max(1, len(ids) - limit)

    def run(self, questions: Sequence[str]) -> list[Trajectory]:
        s = self.settings
        names = self.names
        trajs = [Trajectory(question=q, prompt_ids=self.prompt_ids(q)) for q in questions]
        if s.response_prefix:  # forced, not sampled: in the context and the response, out of the loss
            pre = self._encode(s.response_prefix)
            for tr in trajs:
                tr.segments.append((list(pre), False))
                tr.response += s.response_prefix
                tr.pending = s.response_prefix
        for turn in range(s.max_turns + 1):
            final = turn == s.max_turns
            active = [i for i, t in enumerate(trajs) if not t.finished]
            if not active:
                break
            budgets = {i: min(s.max_turn_tokens, s.max_response_tokens - trajs[i].n_tokens) for i in active}
            contexts = [(trajs[i].prompt_ids + trajs[i].response_ids)[-s.max_context_tokens:] for i in active]
            outs = self.policy.generate(contexts, max(budgets.values()), active)
            pending: list[tuple[int, Call]] = []
            for i, gen in zip(active, outs):
                tr = trajs[i]
                text, ids = self._turn_ids(list(gen)[: budgets[i]])
                tr.segments.append((ids, True))
                tr.response += text
                start = len(tr.pending)
                tr.pending += text
                act = parse_pending(tr.pending, start, names)
                rec = Turn(index=turn, text=text, action=act.kind, error=act.error, tokens=len(ids), final=final)
                tr.turns.append(rec)
                if act.kind == "answer":
                    tr.valid_actions += 1
                    tr.stop_reason = "answer"
                elif final:
                    tr.stop_reason = "max_turns"
                elif tr.n_tokens >= s.max_response_tokens:
                    tr.stop_reason = "max_tokens"
                elif act.kind == "search":
                    call = Call(model=act.model, written_model=act.written_model, query=act.query or "",
                                response=None, error=act.error, turn=turn)
                    rec.routed = True
                    pending.append((i, call))
            self.caller.call_many([c for _, c in pending])
            for i, call in pending:
                tr = trajs[i]
                block, ids = self.observation(call)
                tr.calls.append(call)
                rec = tr.turns[-1]
                rec.call = len(tr.calls) - 1
                rec.info_tokens = len(ids)
                if call.ok:
                    tr.valid_actions += 1
                elif rec.error is None:
                    rec.error = call.error
                tr.segments.append((ids, False))
                tr.response += block
                tr.pending = ""
                if tr.n_tokens >= s.max_response_tokens:
                    tr.stop_reason = "max_tokens"
        return trajs
