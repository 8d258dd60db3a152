"""A strategy on a conversation: the messages it sends when the request is more than one question.

Shared by the gateway (``routecraft serve``) and the offline executors (``routers.consult.PoolExecutor``), so that a
candidate is sent the same way in training rollouts and in serving.
"""

from __future__ import annotations

from typing import Any, Optional

from routecraft.strategies.registry import get_strategy


def single_question(messages: list[dict]) -> Optional[str]:
    """The question when the conversation is exactly one user turn (no system, no history), else None."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return None


def last_user_index(messages: list[dict]) -> int:
    return max(i for i, m in enumerate(messages) if m["role"] == "user" and m["content"].strip())


def strategy_messages(strategy: Any, messages: list[dict], task: str, budget: Optional[int]) -> list[dict]:
    """The messages that run ``strategy`` on a conversation.

    A single user turn gives exactly ``strategy.build_messages(question, task, budget)`` (the prompt routers were
    trained on). Otherwise the client's system messages replace the strategy's default system prompt (the length
    instruction is appended to it when the strategy puts it in the system message), the history is kept as it is, and
    the last user turn gets the strategy's instruction (and length instruction) appended, as in ``build_messages``.
    """
    q = single_question(messages)
    if q is not None:
        return strategy.build_messages(q, task, budget)
    btext = strategy.budget_text(budget)
    base = getattr(strategy, "base_strategy", strategy)  # self-consistency: the base strategy's prompt
    placement = base.placement() if hasattr(base, "placement") else "user"
    systems = [m["content"] for m in messages if m["role"] == "system" and m["content"].strip()]
    system = "\n\n".join(systems) if systems else (getattr(base, "system_prompt", None) or "")
    if btext and placement == "system":
        system = f"{system} {btext}".strip()
    out: list[dict] = [{"role": "system", "content": system}] if system else []
    li = last_user_index(messages)
    for i, m in enumerate(messages):
        if m["role"] == "system":
            continue
        if i == li:  # as build_messages: a blank line and the instruction (+ length instruction) when there is one
            tail = " ".join(x for x in (strategy.instruction(task), btext if placement == "user" else None) if x)
            user = m["content"].strip() + (f"\n\n{tail}" if tail else "")
            out.append({**m, "content": user})
        else:
            out.append(dict(m))
    return out


def plain_call(messages: list[dict], task: str, budget: Optional[int], max_tokens: Optional[int]
               ) -> tuple[list[dict], Optional[int]]:
    """The messages and output cap of a plain call (strategy ``default``) on a conversation: the conversation
    unchanged and ``max_tokens`` (the caller's cap) without a budget; with one, the length instruction after the last
    user turn and the cap budget + slack (the lower of it and ``max_tokens``), as plain-call cells are collected."""
    if budget is None:
        return messages, max_tokens
    strat = get_strategy("default")
    cap = strat.max_tokens(budget, task)
    return strategy_messages(strat, messages, task, budget), cap if max_tokens is None else min(max_tokens, cap)
