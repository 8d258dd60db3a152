"""Reasoning strategies (the plain call `default`, direct, cot, cod, pal, sc), length budgets, answer extraction
and the PAL sandbox."""

from routecraft.strategies.answers import COMPARABLE_KINDS, extract_answer, task_kind
from routecraft.strategies.base import BUDGET_GRID, BUDGET_TEMPLATES, Extraction, Strategy, StrategyRun
from routecraft.strategies.builtin import (
                                           ChainOfDraft,
                                           ChainOfThought,
                                           Direct,
                                           ProgramAided,
                                           SelfConsistency,
                                           extract_code,
)
from routecraft.strategies.per_task import strategies_for
from routecraft.strategies.registry import (
    get_strategy,
    list_strategies,
    register_strategy,
    strategy_applies,
    strategy_from_config,
)
from routecraft.strategies.sandbox import SandboxResult, run_python

__all__ = [
    "BUDGET_GRID", "BUDGET_TEMPLATES", "COMPARABLE_KINDS", "ChainOfDraft", "ChainOfThought", "Direct", "Extraction",
    "ProgramAided", "SandboxResult", "SelfConsistency", "Strategy", "StrategyRun", "extract_answer", "extract_code",
    "get_strategy", "list_strategies", "register_strategy", "run_python", "strategies_for", "strategy_applies",
    "strategy_from_config", "task_kind",
]
