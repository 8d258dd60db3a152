"""Graders, golds and strategies of LLMRouter's 14 tasks, on real rows of its train file (the packaged copy of
``query_data/default_query_train.jsonl``, byte-identical to ../shared/data/llmrouter/example_data/query_data).

For each task: the gold answer (or a hand-written correct answer where the gold is not itself an answer: a function
for mbpp and HumanEval, a sentence for commongen) grades 1, and wrong answers grade 0 (partial coverage for a
sentence that misses concepts). Programs run in the real sandbox: a program that fails one assert, loops, writes
outside its temp dir or opens a socket grades 0, and the write and the connection are checked not to happen.
The GSM8K prompts are compared byte for byte with the ones routecraft-gsm8k was collected with."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import socket
import sys
import threading
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from routecraft.data.importers.common import dataset_root, find, read_jsonl
from routecraft.strategies import get_strategy, strategies_for, task_kind
from routecraft.strategies import sandbox as sandbox_mod
from routecraft.strategies.answers import extract_answer, extract_program, extract_sentence, format_choices
from routecraft.strategies.code_eval import CodeGold, build_program, parse_code_gold, run_tests
from routecraft.strategies.coverage import coverage, inflections
from routecraft.strategies.graders import LLMROUTER_METRICS, grade, grader_for
from routecraft.strategies.llmrouter_tasks import llmrouter_gold, llmrouter_text, parse_choices
from routecraft.strategies.sandbox import SandboxUnavailable, strong_isolation_available

ROWS = read_jsonl(find(dataset_root("llmrouter"), "query_data/default_query_train.jsonl"))
BY_TASK: dict[str, list[dict]] = defaultdict(list)
for _r in ROWS:
    BY_TASK[_r["task_name"]].append(_r)
TASKS = sorted(BY_TASK)
STRICT_OK, STRICT_WHY = strong_isolation_available()
needs_sandbox = pytest.mark.skipif(
    not STRICT_OK and os.environ.get("ROUTECRAFT_TEST_ALLOW_NO_STRICT_SANDBOX") == "1",
    reason=f"no strict sandbox here: {STRICT_WHY}")


def row(task: str, i: int = 0) -> dict:
    """The i-th row of ``task`` in the train file (its query_id is llmrouter-train-<task>-<i>)."""
    return BY_TASK[task][i]


def row_with(task: str, **fields) -> dict:
    hits = [r for r in BY_TASK[task] if all(r.get(k) == v for k, v in fields.items())]
    assert len(hits) == 1, (task, fields, len(hits))
    return hits[0]


def score(r: dict, answer, via: str = "metric") -> float:
    """Grade ``answer`` for row ``r`` the way a collected cell is graded: gold and choices from the row."""
    gold, choices = llmrouter_gold(r)
    metric = r["metric"] if via == "metric" else None
    return grade(r["task_name"], answer, gold, metric=metric, choices=choices)


def test_the_file_has_the_14_tasks_and_every_row_converts():
    assert len(ROWS) == 5616 and len(TASKS) == 14
    assert {r["metric"] for r in ROWS} == set(LLMROUTER_METRICS)
    for r in ROWS:
        gold, choices = llmrouter_gold(r)  # raises on a row it cannot read
        assert isinstance(gold, str) and gold
        grader_for(r["task_name"], r["metric"])
        task_kind(r["task_name"])
        assert (choices is not None) == (r["metric"] == "em_mc")
        if choices is not None:
            assert len(gold) == 1 and "A" <= gold < "ABCDEFGHIJ"[len(choices)]


# ------------------------------------------------------------------------------------------------ golds

def test_golds_of_real_rows():
    assert llmrouter_gold(row("gsm8k")) == ("20000", None)                      # "... #### 20,000"
    assert llmrouter_gold(row("math")) == ("494550", None)                      # the last \boxed{} of the solution
    assert llmrouter_gold(row("math", 11))[0] == "\\frac{36}{49}"
    assert llmrouter_gold(row("agentverse-mgsm")) == ("28", None)               # a plain number
    assert llmrouter_gold(row("mmlu")) == ("D", ["$100", "$150", "$200", "$250"])  # choices: a list literal
    assert llmrouter_gold(row("agentverse-logicgrid")) == ("C", ["1", "2", "3"])   # a dict with 'labels'
    assert llmrouter_gold(row("commonsense_qa"))[1][1] == "train station"          # a dict with 'label'
    arc = row("arc_challenge", 77)
    assert arc["ground_truth"] == "1" and parse_choices(arc["choices"])[1] == ["1", "2", "3", "4"]  # numeric labels
    assert llmrouter_gold(arc) == ("A", ["competition", "conservation", "decomposition", "pollution"])  # -> letters
    assert llmrouter_gold(row("natural_qa")) == ("Sammy Davis, Jr", None)
    assert llmrouter_gold(row("commongen"))[0].startswith("report, wheelbarrow, country")
    mbpp = parse_code_gold(llmrouter_gold(row_with("mbpp", task_id="617"))[0])
    assert mbpp == CodeGold(tests="assert min_Jumps(3,4,11)==3.5\nassert min_Jumps(3,4,0)==0\n"
                                  "assert min_Jumps(11,14,11)==1")
    he = parse_code_gold(llmrouter_gold(row_with("human_eval", task_id="HumanEval/0"))[0])
    assert he.entry_point == "has_close_elements" and "def check(candidate)" in he.tests
    assert he.prompt.startswith("from typing import List")
    assert parse_code_gold(llmrouter_gold(row_with("human_eval", task_id="HumanEval/121"))[0]).entry_point == \
        "solution"
    # the raw forms are read too: mbpp's literal list, a list of asserts, JSON
    raw = row_with("mbpp", task_id="617")["ground_truth"]
    assert parse_code_gold(raw) == parse_code_gold(ast.literal_eval(raw)) == mbpp
    assert parse_code_gold(mbpp.to_json()) == mbpp


def test_mbpp_question_names_the_function_the_tests_call():
    r = row_with("mbpp", task_id="617")
    assert "min_Jumps" not in r["query"]  # LLMRouter's query alone cannot be answered
    text = llmrouter_text(r)
    assert text.startswith(r["query"]) and "Your code should pass these tests:\nassert min_Jumps(3,4,11)==3.5" in text
    assert llmrouter_text(row("gsm8k")) == row("gsm8k")["query"]
    assert llmrouter_text(row_with("human_eval", task_id="HumanEval/0")).startswith("from typing import List")


# ------------------------------------------------------------------------------------------------ graders per task

CHOICE_CASES = [
    # task, row index, right answers (letters, option text), wrong answers
    ("agentverse-logicgrid", 0, ["C", "(C)", "c)", "3"], ["A", "B", "1"]),
    ("arc_challenge", 0, ["D", "1.496 x 10^8 km"], ["C", "149.6 x 10^6 km"]),
    ("commonsense_qa", 0, ["B", "train station"], ["A", "E", "taxi"]),
    ("gpqa", 0, ["C", "R-loops"], ["B", "antisense"]),
    ("mmlu", 0, ["D", "$250"], ["A", "$100"]),
    ("openbook_qa", 0, ["D", "wet sky falling"], ["C", "dryness"]),
]


@pytest.mark.parametrize("task,i,right,wrong", CHOICE_CASES, ids=[c[0] for c in CHOICE_CASES])
def test_multiple_choice(task, i, right, wrong):
    r = row(task, i)
    assert r["metric"] == "em_mc"
    for a in right:
        assert score(r, a) == 1.0, a
        assert score(r, a, via="task") == 1.0, a
    for a in wrong:
        assert score(r, a) == 0.0, a


def test_arc_numeric_labels_grade_by_position():
    r = row("arc_challenge", 77)  # labels 1-4, ground truth "1"
    assert score(r, "A") == score(r, "competition") == 1.0
    assert score(r, "B") == score(r, "pollution") == 0.0


NUMBER_CASES = [
    # task, row index, right, wrong
    ("gsm8k", 0, ["20000", "20,000", "$20,000", "20000.0"], ["60000", "30000", "2000", "no answer"]),
    ("agentverse-mgsm", 0, ["28", "28.0", "\\boxed{28}", "$28$"], ["27", "280", "2.8"]),
    ("agentverse-mgsm", 16, ["1400", "1,400", "1400.00"], ["1200", "140"]),
    ("math", 0, ["494550", "494,550", "\\boxed{494550}"], ["494500", "900"]),
    ("math", 11, ["\\frac{36}{49}", "36/49", "\\dfrac{36}{49}", "\\boxed{\\frac{36}{49}}"],
     ["\\frac{6}{7}", "\\frac{49}{36}", "36"]),
    ("math", 6, ["\\frac{25\\pi}{2}", "\\frac{25}{2}\\pi", "12.5\\pi"], ["25\\pi", "\\frac{25}{2}"]),
]


@pytest.mark.parametrize("task,i,right,wrong", NUMBER_CASES, ids=[f"{c[0]}-{c[1]}" for c in NUMBER_CASES])
def test_numbers_and_math(task, i, right, wrong):
    r = row(task, i)
    for a in right:
        assert score(r, a) == 1.0, a
    for a in wrong:
        assert score(r, a) == 0.0, a


def test_mgsm_is_graded_numerically_under_math():
    r = row("agentverse-mgsm", 16)
    assert r["metric"] == "MATH" and llmrouter_gold(r)[0] == "1400"
    # a thousands separator is a number here, not the tuple (1, 400) a LaTeX parser would read
    assert grade("agentverse-mgsm", "1,400", "1400", metric="MATH") == 1.0
    assert grade("agentverse-mgsm", "1,401", "1400", metric="MATH") == 0.0
    # the task's own kind (numeric) agrees
    assert grade("agentverse-mgsm", "1,400", "1400") == 1.0


def test_open_qa_f1():
    nq, tq = row("natural_qa"), row("trivia_qa")
    assert score(nq, nq["ground_truth"]) == 1.0
    assert score(nq, "Sammy Davis Jr.") == 1.0            # punctuation and case do not count
    assert score(nq, "Frank Sinatra") == 0.0
    assert score(tq, "bayreuth germany") == 1.0
    assert score(tq, "Bayreuth") == pytest.approx(2 / 3)  # token F1: one of the gold's two tokens
    assert score(tq, "Munich") == 0.0


# ------------------------------------------------------------------------------------------------ code

MIN_JUMPS = """def min_Jumps(a, b, d):
    temp = a
    a = min(a, b)
    b = max(temp, b)
    if d >= b:
        return (d + b - 1) / b
    if d == 0:
        return 0
    if d == a:
        return 1
    return 2
"""
HAS_CLOSE_BODY = """    for idx, elem in enumerate(numbers):
        for idx2, elem2 in enumerate(numbers):
            if idx != idx2:
                distance = abs(elem - elem2)
                if distance < threshold:
                    return True

    return False
"""
HAS_CLOSE_FULL = "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n" + HAS_CLOSE_BODY


@needs_sandbox
def test_mbpp_canonical_passes_and_one_failing_assert_fails():
    r = row_with("mbpp", task_id="617")
    assert score(r, MIN_JUMPS) == 1.0
    assert score(r, f"Here is the function:\n```python\n{MIN_JUMPS}```\nIt computes the jumps.") == 1.0
    # passes the first two asserts, fails the third (min_Jumps(11,14,11) == 1)
    two_of_three = MIN_JUMPS.replace("    if d == a:\n        return 1\n", "")
    run = run_tests(two_of_three, llmrouter_gold(r)[0])
    assert not run.passed and "AssertionError" in run.error
    assert score(r, two_of_three) == 0.0
    assert score(r, "def min_jumps(a, b, d):\n    return 0\n") == 0.0      # wrong name
    assert score(r, "def min_Jumps(a, b, d):\n    return (d + b - 1) / b\n") == 0.0
    assert score(r, "def min_Jumps(a, b, d)\n    return 1\n") == 0.0       # does not compile


@needs_sandbox
def test_mbpp_tests_get_the_imports_the_data_dropped():
    r = row_with("mbpp", task_id="596")  # asserts compare with sys.getsizeof, but the row has no test imports
    assert "sys.getsizeof" in r["ground_truth"]
    assert score(r, "def tuple_size(t):\n    import sys\n    return sys.getsizeof(t)\n") == 1.0
    assert score(r, "def tuple_size(t):\n    return len(t)\n") == 0.0


@needs_sandbox
def test_human_eval_whole_function_or_body():
    r = row_with("human_eval", task_id="HumanEval/0")
    gold = llmrouter_gold(r)[0]
    assert score(r, HAS_CLOSE_FULL) == 1.0                       # the whole function (List from the prompt)
    assert score(r, HAS_CLOSE_BODY) == 1.0                       # only the body, under the prompt's signature
    assert score(r, f"```python\n{HAS_CLOSE_FULL}```") == 1.0
    assert score(r, "```python\n" + HAS_CLOSE_BODY.replace("\n    ", "\n").lstrip() + "```") == 1.0  # unindented
    assert build_program(HAS_CLOSE_BODY, r["query"]).startswith(r["query"].rstrip() + "\n    for idx")
    adjacent_only = ("def has_close_elements(numbers, threshold):\n"
                     "    return any(abs(a - b) < threshold for a, b in zip(numbers, numbers[1:]))\n")
    run = run_tests(adjacent_only, gold)                         # fails check()'s third assert
    assert not run.passed and "AssertionError" in run.error
    assert score(r, adjacent_only) == 0.0
    assert score(r, "    return True\n") == 0.0


@needs_sandbox
def test_human_eval_whose_function_is_called_solution():
    r = row_with("human_eval", task_id="HumanEval/121")  # the sandbox calls solution(): the harness keeps them apart
    right = "    return sum(x for i, x in enumerate(lst) if i % 2 == 0 and x % 2 == 1)\n"
    assert score(r, right) == 1.0
    assert score(r, "def solution(lst):\n" + right) == 1.0
    assert score(r, "def solution(lst):\n    return sum(x for i, x in enumerate(lst) if i % 2 == 1 and x % 2)\n") \
        == 0.0


@needs_sandbox
def test_program_that_writes_outside_its_temp_dir_grades_zero_and_writes_nothing():
    r = row_with("mbpp", task_id="617")
    for target in (f"/tmp/routecraft-code-{uuid.uuid4().hex}",
                   os.path.join(os.path.expanduser("~"), f"routecraft-code-{uuid.uuid4().hex}")):
        at_import = f"open({target!r}, 'w').write('pwned')\n" + MIN_JUMPS
        in_call = MIN_JUMPS.replace("    temp = a\n", f"    open({target!r}, 'w').write('pwned')\n    temp = a\n")
        for program in (at_import, in_call):
            run = run_tests(program, llmrouter_gold(r)[0])
            assert not run.passed and run.result is not None and not run.result.ok, run.error
            assert score(r, program) == 0.0
            assert not os.path.exists(target), f"{target} was written"
    # control: writing inside its own temp dir is allowed, and the program still passes
    assert score(r, "open('scratch.txt', 'w').write('ok')\n" + MIN_JUMPS) == 1.0


@needs_sandbox
def test_program_that_opens_a_socket_grades_zero_and_connects_nowhere():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted: list = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except (socket.timeout, OSError):
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        r = row_with("mbpp", task_id="617")
        program = ("import socket\n"
                   f"socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n" + MIN_JUMPS)
        run = run_tests(program, llmrouter_gold(r)[0])
        assert not run.passed and not run.result.ok, run.error
        assert score(r, program) == 0.0
        # control: the listener does accept a connection from this (unsandboxed) process
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        for _ in range(50):
            if accepted:
                break
            threading.Event().wait(0.05)
    finally:
        stop.set()
        t.join(2)
        server.close()
    assert len(accepted) == 1, "the sandboxed program reached the loopback listener"


@needs_sandbox
def test_time_and_memory_limits_grade_zero():
    r = row_with("mbpp", task_id="617")
    gold = llmrouter_gold(r)[0]
    loop = MIN_JUMPS.replace("    temp = a\n", "    while True:\n        pass\n")
    run = run_tests(loop, gold, timeout_s=1)
    assert not run.passed and run.result.timed_out
    assert grade("mbpp", loop, gold, timeout_s=1) == 0.0
    hog = "blob = bytearray(4 * 1024 ** 3)\n" + MIN_JUMPS
    run = run_tests(hog, gold, memory_mb=256)
    assert not run.passed and "MemoryError" in (run.error or ""), run.error


def test_no_strict_sandbox_means_an_error_not_an_unsandboxed_run(monkeypatch, tmp_path):
    # a kernel without user namespaces, simulated as test_sandbox_escapes does: the probe's cached answer says so
    monkeypatch.setitem(sandbox_mod._probe_cache, sys.executable, (False, "simulated: no user namespaces"))
    monkeypatch.setattr(sandbox_mod, "_weak_allowed", False)
    monkeypatch.setattr(sandbox_mod, "_announced", set())
    marker = tmp_path / "ran.txt"
    program = f"open({str(marker)!r}, 'w').write('ran')\n" + MIN_JUMPS
    with pytest.raises(SandboxUnavailable, match="simulated: no user namespaces"):
        score(row_with("mbpp", task_id="617"), program)
    assert not marker.exists()  # nothing ran


# ------------------------------------------------------------------------------------------------ commongen

# every concept of the first commongen row, most of them inflected
COMMONGEN_SENTENCE = ("After a speech at the country base, the customer who drove a wheelbarrow of lumber and concrete "
                      "past the lake and the hedge reported that she sold roasted donuts in a dish, discussed gas "
                      "prices, removed a needle from the field and scored a skateboard.")


def test_commongen_full_and_partial_coverage():
    r = row("commongen")
    concepts = [c.strip() for c in r["ground_truth"].split(",")]
    assert len(concepts) == 22
    assert score(r, COMMONGEN_SENTENCE) == 1.0
    # half the concepts: 11 of 22
    half = ("The customer drove a wheelbarrow of lumber to the lake, sold a dish and discussed the gas needle in a "
            "field.")
    s, missing = coverage(half, r["ground_truth"])
    assert s == pytest.approx(11 / 22) and score(r, half) == pytest.approx(0.5)
    assert missing == ["report", "country", "remove", "donut", "concrete", "roast", "skateboard", "score", "hedge",
                       "speech", "base"]
    assert score(r, "The weather was nice.") == 0.0


def test_commongen_inflections_count_and_derivations_do_not():
    gold = "drive, sell, report, dish, skateboard"
    assert coverage("He drove.", gold)[0] == coverage("He was driving.", gold)[0] == coverage("It drives.", gold)[0] \
        == pytest.approx(1 / 5)
    assert coverage("The driver, the seller and the reporter skateboarded past the dishwasher.", gold)[1] == \
        ["drive", "sell", "report", "dish"]
    assert {"drove", "driven", "driving", "drives"} <= inflections("drive")
    assert {"sold", "selling"} <= inflections("sell") and "selled" not in inflections("sell")
    assert "seed" not in inflections("see") and "cared" not in inflections("car") and "bed" not in inflections("be")
    assert {"stopped", "stopping", "carried", "carries", "leaves", "knives", "lying", "children"} <= (
        inflections("stop") | inflections("carry") | inflections("leaf") | inflections("knife") | inflections("lie")
        | inflections("child"))


def test_commongen_echoing_the_concept_list_is_not_a_sentence():
    r = row("commongen")
    assert score(r, r["ground_truth"]) == 0.0
    assert score(r, r["ground_truth"].replace(", base", " and base")) == 0.0
    assert coverage(r["ground_truth"], r["ground_truth"], reject_lists=False)[0] == 1.0  # the rule is optional


# ------------------------------------------------------------------------------------------------ model text -> grade

MODEL_TEXT = {
    "agentverse-logicgrid": ("The bird keeper must be in the third house. The answer is (C).", 1.0),
    "arc_challenge": ("149,600,000 km = 1.496 x 10^8 km. The answer is (D).", 1.0),
    "commonsense_qa": ("The answer is (A).", 0.0),
    "gpqa": ("R-loops are not part of exon skipping. The answer is (C).", 1.0),
    "mmlu": ("The answer is (B).", 0.0),
    "openbook_qa": ("Deserts are dry. The answer is (C).", 0.0),
    "gsm8k": ("Half is $30,000, so the sale was $60,000 = 3x. x = 20,000. The answer is 20000.", 1.0),
    "agentverse-mgsm": ("Cindy 4, Marcia 6, Jan 18: 4 + 6 + 18 = 28. The answer is \\boxed{28}.", 1.0),
    "math": ("(100 + 999) / 2 * 900 = 494550. The answer is \\boxed{494550}.", 1.0),
    "natural_qa": ("The answer is Sammy Davis, Jr.", 1.0),
    "trivia_qa": ("The answer is Salzburg.", 0.0),
    "mbpp": (f"```python\n{MIN_JUMPS}```", 1.0),
    "human_eval": (f"Compare every pair.\n```python\nfrom typing import List\n\n{HAS_CLOSE_FULL}```", 1.0),
    "commongen": (f"Sure! Here is one.\nSentence: \"{COMMONGEN_SENTENCE}\"", 1.0),
}


@pytest.mark.parametrize("task", TASKS)
def test_model_text_is_extracted_and_graded_as_a_cell_is(task):
    assert set(MODEL_TEXT) == set(TASKS)
    text, expected = MODEL_TEXT[task]
    r = row(task) if task != "mbpp" else row_with("mbpp", task_id="617")
    if task == "human_eval":
        r = row_with("human_eval", task_id="HumanEval/0")
    gold, choices = llmrouter_gold(r)
    for name in strategies_for(task):
        if name == "pal":
            continue  # PAL's answer comes from running a program, not from this text
        ex = get_strategy(name).extract(text, task, choices)
        assert ex.answer is not None, (task, name, ex)
        assert grade(task, ex.answer, gold, metric=r["metric"], choices=choices) == pytest.approx(expected), ex


def test_code_and_sentence_extraction():
    assert extract_program("```python\ndef f(x):\n    return x\n```\nUsage:\n```python\nprint(f(1))\n```") == \
        ("def f(x):\n    return x\n", "fenced")
    assert extract_program("```python\ndef g():\n    return 1\n```\n```python\ndef f():\n    return g()\n```")[0] \
        == "def g():\n    return 1\n\ndef f():\n    return g()\n"       # helpers kept, in order
    assert extract_program("def f(x):\n    return x\n```\nThis returns x.") == ("def f(x):\n    return x\n",
                                                                              "before_fence")
    assert extract_program("Sure.\ndef f(x):\n    return x\n\nThis function returns x.") == \
        ("def f(x):\n    return x\n", "raw_code")
    assert extract_program("    return sorted(x)\n") == ("    return sorted(x)\n", "raw_body")
    assert extract_program("I cannot do that.") == (None, "none")
    assert extract_answer("```python\ndef f():\n    pass\n```", "mbpp")[1] == "fenced"
    assert extract_sentence("Here is a sentence:\n\nThe dog drove home.") == ("The dog drove home.", "last_line")
    assert extract_sentence('Sentence: "A dog ran. It was fast."') == ("A dog ran. It was fast.", "sentence")
    assert extract_sentence("**Sentence:** The boy throws a ball.\nQuestion: next") == \
        ("The boy throws a ball.", "sentence")


# ------------------------------------------------------------------------------------------------ strategies per kind

def test_strategies_for_each_task():
    expected = {"numeric": ["direct", "cot", "cod", "pal"], "math": ["direct", "cot", "cod", "pal"],
                "choice": ["direct", "cot", "cod"], "code": ["direct", "cot", "cod"],
                "qa": ["direct", "default", "cot"], "generation": ["direct", "default", "cot"]}
    for task in TASKS:
        assert strategies_for(task) == expected[task_kind(task)], task
    assert "pal" not in strategies_for("trivia_qa") and "pal" in strategies_for("gsm8k")
    assert strategies_for("general") == ["direct", "default", "cot"]
    with pytest.raises(ValueError, match="unknown task"):
        strategies_for("no-such-task")


FORMAT_WORDS = {"numeric": '"The answer is N."', "math": "\\boxed{X}", "choice": "option letter",
                "qa": "short answer", "code": "Python function in a ```python block",
                "generation": "one sentence that uses all of the given concepts"}


@pytest.mark.parametrize("task", TASKS)
def test_each_strategy_asks_for_the_tasks_answer_format(task):
    r = row(task)
    gold, choices = llmrouter_gold(r)
    for name in strategies_for(task):
        s = get_strategy(name)
        instr = s.instruction(task)
        if name == "default":  # the plain call: the question as sent, nothing added (test_the_plain_call_...)
            assert instr == "" and s.build_messages(llmrouter_text(r), task, None, choices) == [
                {"role": "user", "content": format_choices(llmrouter_text(r), choices)}]
            continue
        if name == "pal":
            assert "solution()" in instr
        else:
            assert FORMAT_WORDS[task_kind(task)] in instr, (name, instr)
        msgs = s.build_messages(llmrouter_text(r), task, None, choices)
        assert msgs[-1]["content"].endswith(instr)
        if choices:
            assert f"\n(A) {choices[0].strip()}\n" in msgs[-1]["content"]
        assert s.build_prompt(llmrouter_text(r), task, 64, choices).endswith("Answer:" + s.answer_prefix(task))


def test_the_plain_call_sends_the_question_as_a_user_would():
    """Strategy ``default`` as the gateway sends it: no system prompt, no instruction, no answer format; options
    shown; a budget is the only thing added; always a chat request; its answer read from the free text."""
    s = get_strategy("default")
    assert s.build_messages("who wrote hamlet", "trivia_qa") == [{"role": "user", "content": "who wrote hamlet"}]
    assert s.build_messages("Which is a metal?", "mmlu", None, ["iron", "wood"]) == [
        {"role": "user", "content": "Which is a metal?\n(A) iron\n(B) wood"}]
    assert s.build_messages("who wrote hamlet", "trivia_qa", 32)[-1]["content"] == \
        "who wrote hamlet\n\nUse at most 32 tokens."
    assert s.max_tokens(None, "trivia_qa") == 512 and s.applies_to("mbpp")
    with pytest.raises(ValueError, match="unknown task"):
        s.instruction("no-such-task")
    with pytest.raises(ValueError, match="chat request"):
        asyncio.run(s.run(None, "who wrote hamlet", "trivia_qa", mode="prompt"))
    ex = s.extract("Hamlet was written by William Shakespeare.\nIt is a tragedy.", "trivia_qa")
    assert ex.answer == "Hamlet was written by William Shakespeare" and ex.method == "first_line"


def test_self_consistency_over_the_plain_call_samples_chat_requests(pool):
    """sc-default on a base model (instruct False, where other strategies send a completion prompt) still sends
    chat requests, as the plain call does; asking for a completion prompt is an error. A real llama.cpp server, its
    client wrapped to record which endpoint each call used."""
    from routecraft.pool.client import ChatClient

    base_model = pool.models[0].model_copy(update={"instruct": False})

    class Recording(ChatClient):
        used: list[str] = []

        async def chat(self, *a, **kw):
            self.used.append("chat")
            return await super().chat(*a, **kw)

        async def complete(self, *a, **kw):
            self.used.append("complete")
            return await super().complete(*a, **kw)

    sc = get_strategy("sc-default", k=2)
    assert sc.base_strategy.chat_only and not get_strategy("sc").base_strategy.chat_only

    async def go():
        client = Recording(base_model)
        try:
            run = await sc.run(client, "who wrote hamlet", "trivia_qa", 8, seed=1)
            with pytest.raises(ValueError, match="chat request"):
                await sc.run(client, "who wrote hamlet", "trivia_qa", mode="prompt")
            direct = await get_strategy("direct").run(client, "who wrote hamlet", "trivia_qa", 8)
        finally:
            await client.aclose()
        return client.used, run, direct

    used, run, direct = asyncio.run(go())
    assert used == ["chat", "chat", "complete"]  # the two plain-call samples, then direct's completion prompt
    assert len(run.samples) == 2 and all(0 < x.output_tokens <= 18 for x in run.samples)  # budget 8 + slack 10


def test_pal_applies_to_numeric_and_math_only():
    for task in ("mbpp", "human_eval", "commongen", "general"):
        with pytest.raises(ValueError, match="'pal' does not apply"):
            get_strategy("pal").instruction(task)
    # a whole program needs room: code gets a larger default cap, GSM8K keeps its own
    assert get_strategy("direct").max_tokens(None, "mbpp") == 384 > get_strategy("direct").max_tokens(None, "gsm8k")
    assert get_strategy("direct", default_max_tokens=99).max_tokens(None, "mbpp") == 99  # an explicit cap wins


def test_default_chat_prompt():
    d = get_strategy("direct").build_messages("Tell me about Rome.", "general")
    assert d == [{"role": "system", "content": "You are a helpful assistant."},
                 {"role": "user", "content": "Tell me about Rome.\n\nAnswer directly and concisely."}]
    assert get_strategy("cot").instruction("general") == "Think step by step, then end with your answer."
    assert extract_answer("Rome is the capital of Italy.\nQuestion: more", "general") == \
        ("Rome is the capital of Italy.", "reply")


def test_gsm8k_prompts_are_byte_identical_to_the_collected_ones():
    doc = json.loads((Path(__file__).parent / "gsm8k_prompts.json").read_text(encoding="utf-8"))
    q = doc["question"]
    assert len(doc["cases"]) == 25
    for c in doc["cases"]:
        s, b = get_strategy(c["strategy"]), c["budget"]
        for task in ("gsm8k", "agentverse-mgsm"):  # agentverse-mgsm is a numeric task: the same prompts
            assert s.build_messages(q, task, b) == c["messages"], (c["strategy"], b, task)
            assert s.build_prompt(q, task, b) == c["prompt"], (c["strategy"], b, task)
            assert s.max_tokens(b, task) == s.max_tokens(b) == c["max_tokens"]
        assert s.stop("chat") == c["stop_chat"] and s.stop("prompt") == c["stop_prompt"]
    # and the fixture is what the datasheet of data/routecraft-gsm8k quotes
    cot = next(c for c in doc["cases"] if c["strategy"] == "cot" and c["budget"] is None)
    assert cot["messages"][-1]["content"] == (q + '\n\nThink step by step, then end with "The answer is N." where N '
                                              "is a number.")
