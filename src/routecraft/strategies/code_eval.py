"""Grading programs by running their tests in the PAL sandbox (the ``code_exec`` grader: mbpp, human_eval).

A code gold says how to test a program (:class:`CodeGold`): ``tests`` (Python run after the program: MBPP's asserts,
or HumanEval's ``def check(candidate)`` block), ``entry_point`` (HumanEval: the function to hand to
``check``) and ``prompt`` (HumanEval: the signature and docstring the answer completes). In a queries table it is
stored as the JSON text of that object (:meth:`CodeGold.to_json`); :func:`parse_code_gold` also reads a list of
assert strings, the Python-literal list LLMRouter ships for mbpp, and plain test code.

What runs (:func:`run_tests`), in one sandboxed process (``sandbox.run_python``: its time limit, memory limit,
no network, no writes outside its temp dir, and its isolation rule: strict where the kernel allows, else
:class:`~routecraft.strategies.sandbox.SandboxUnavailable` unless the operator opted in to the weak mode; never
unsandboxed)::

    <the program: build_program(answer, prompt, entry_point)>
    <imports the tests use but the shipped data dropped (MBPP's test_imports): sys, math, re, ... by name>
    <the tests: the asserts, or the check block followed by check(<entry_point>)>
    def solution():            # called by the sandbox once everything above ran without an exception
        return "<nonce>"

The score is 1 only if the sandbox run ends normally and returns the nonce: every assert passed, nothing raised,
nothing exited, timed out or ran out of memory. The entry point is bound before the harness's ``solution`` is
defined, so a task whose own function is called ``solution`` (HumanEval/121) is tested on the candidate's function.
The nonce guards against accidents (a program that exits early, prints, or defines its own ``solution``); it is not
a defence against a program written to fake its result (the program could read its own source), which the
sandbox's confinement, not the grader, limits to its temp dir.
"""

from __future__ import annotations

import ast
import json
import re
import secrets
import textwrap
from dataclasses import asdict, dataclass
from typing import Any

from routecraft.strategies.answers import extract_program
from routecraft.strategies.sandbox import Isolation, SandboxResult, run_python

#: standard-library modules put in front of the tests when a test uses ``name.attr`` without importing it: LLMRouter
#: ships MBPP's asserts without MBPP's ``test_imports`` (3 train asserts use ``sys.maxsize``)
TEST_IMPORTS = ("sys", "math", "re", "collections", "itertools", "heapq", "functools", "string", "cmath",
                "operator", "bisect", "copy", "random", "statistics", "decimal", "fractions")

CODE_TIMEOUT_S = 10.0
CODE_MEMORY_MB = 512


@dataclass(frozen=True)
class CodeGold:
    """How to test a program: ``tests`` run after it; ``check(<entry_point>)`` is called when ``entry_point`` is set;
    ``prompt`` is what a body-only answer completes (HumanEval)."""

    tests: str
    entry_point: str | None = None
    prompt: str | None = None

    def to_json(self) -> str:
        return json.dumps({"kind": "code_tests", **asdict(self)}, ensure_ascii=False)


@dataclass
class CodeRun:
    """The outcome of testing one program."""

    passed: bool
    program: str          # the program that was tested (built from the answer)
    harness: str          # everything that ran
    result: SandboxResult | None

    @property
    def error(self) -> str | None:
        return None if self.result is None else self.result.error


def _assert_list(v: Any) -> list[str] | None:
    if isinstance(v, (list, tuple)) and v and all(isinstance(a, str) for a in v):
        return [a.strip() for a in v if a.strip()]
    return None


def parse_code_gold(gold: Any) -> CodeGold:
    """A :class:`CodeGold` from a CodeGold, a mapping with ``tests`` (or ``test``), its JSON text, a list of assert
    strings, the Python-literal text of such a list (LLMRouter's mbpp ``ground_truth``), or plain test code."""
    if isinstance(gold, CodeGold):
        return gold
    if isinstance(gold, dict):
        tests = gold.get("tests", gold.get("test"))
        asserts = _assert_list(tests)
        if asserts is not None:
            tests = "\n".join(asserts)
        if not isinstance(tests, str) or not tests.strip():
            raise ValueError(f"code gold has no tests: {str(gold)[:200]!r}")
        ep, prompt = gold.get("entry_point"), gold.get("prompt")
        return CodeGold(tests=tests, entry_point=ep or None, prompt=prompt or None)
    asserts = _assert_list(gold)
    if asserts is not None:
        return CodeGold(tests="\n".join(asserts))
    if not isinstance(gold, str) or not gold.strip():
        raise ValueError(f"code gold is missing or empty: {gold!r}")
    s = gold.strip()
    if s.startswith("{"):
        try:
            return parse_code_gold(json.loads(s))
        except json.JSONDecodeError:
            pass
    if s.startswith("["):
        try:
            v = ast.literal_eval(s)
        except (ValueError, SyntaxError):
            v = None
        asserts = _assert_list(v)
        if asserts is not None:
            return CodeGold(tests="\n".join(asserts))
    return CodeGold(tests=gold)


def prompt_entry_point(prompt: str) -> str | None:
    """The function a HumanEval prompt asks for: the last top-level ``def`` of the prompt (helpers come first)."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        names = re.findall(r"^def\s+([A-Za-z_]\w*)\s*\(", prompt, re.M)
        return names[-1] if names else None
    names = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return names[-1] if names else None


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) is not None


def build_program(answer: str, prompt: str | None = None, entry_point: str | None = None) -> str:
    """The program to test for an answer.

    Without a prompt the answer is the program. With one (HumanEval): an answer that defines the entry point (the
    whole function) is put after the prompt, so the prompt's imports and helper functions are there and the answer's
    definition replaces the prompt's stub; an answer that does not (a completion of the body) is indented under the
    prompt's signature, as HumanEval's own harness does (prompt + completion).
    """
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a string, got {type(answer).__name__}")
    code = answer.strip("\n").rstrip() + "\n"
    if not prompt:
        return code
    ep = entry_point or prompt_entry_point(prompt)
    head = prompt.rstrip() + "\n"
    if ep is not None and _defines(code, ep):
        return f"{head}\n\n{code}"
    body = textwrap.dedent(code)
    return head + textwrap.indent(body, "    ", lambda line: bool(line.strip()))


def _test_imports(tests: str) -> list[str]:
    """The TEST_IMPORTS modules the tests use as ``module.attr`` (imported again even when the program imported them:
    the program may have done so inside a function, and a second import is harmless)."""
    return [mod for mod in TEST_IMPORTS if re.search(rf"(?<![\w.'\"]){mod}\.\w", tests)]


def harness_for(program: str, gold: CodeGold, nonce: str) -> str:
    """The whole file the sandbox runs (see the module docstring)."""
    parts = [program.rstrip(), ""]
    imports = _test_imports(gold.tests)
    if imports:
        parts += [f"import {m}" for m in imports] + [""]
    if gold.entry_point:
        # bind the candidate before the test code and the harness can shadow its name
        parts += [f"__routecraft_candidate__ = {gold.entry_point}", ""]
    parts += [textwrap.dedent(gold.tests).strip("\n"), ""]
    if gold.entry_point:
        parts += ["check(__routecraft_candidate__)", ""]
    parts += ["", "def solution():", f"    return {nonce!r}", ""]
    return "\n".join(parts)


def run_tests(answer: Any, gold: Any, *, timeout_s: float = CODE_TIMEOUT_S, memory_mb: int = CODE_MEMORY_MB,
                 isolation: Isolation = "auto") -> CodeRun:
    """Run ``answer`` (a program, or a HumanEval body) with the tests of ``gold`` in the sandbox.

    Raises :class:`~routecraft.strategies.sandbox.SandboxUnavailable` where the sandbox's rule forbids running
    (``isolation="auto"`` without strict isolation and without the operator's weak-mode opt-in): a program is never
    run unconfined, and an unrunnable grade is an error, not a 0. A whole reply with fenced code is accepted too (its
    program is taken out with ``answers.extract_program``)."""
    g = parse_code_gold(gold)
    code = "" if answer is None else str(answer)
    if "```" in code:  # a whole model reply rather than an extracted program
        code = extract_program(code)[0] or ""
    if not code.strip():
        return CodeRun(passed=False, program="", harness="", result=None)
    program = build_program(code, g.prompt, g.entry_point)
    nonce = "routecraft-tests-passed-" + secrets.token_hex(8)
    harness = harness_for(program, g, nonce)
    res = run_python(harness, timeout_s=timeout_s, memory_mb=memory_mb, isolation=isolation)
    return CodeRun(passed=bool(res.ok and res.value == nonce), program=program, harness=harness, result=res)


def code_exec(prediction: Any, gold: Any, *, timeout_s: float = CODE_TIMEOUT_S, memory_mb: int = CODE_MEMORY_MB,
              isolation: Isolation = "auto") -> float:
    """1.0 if the program passes every test of ``gold`` in the sandbox, else 0.0 (see :func:`run_tests`)."""
    return float(run_tests(prediction, gold, timeout_s=timeout_s, memory_mb=memory_mb,
                              isolation=isolation).passed)
