"""R2-Reasoner without a server: ladder and groups, the decomposer/allocator parsers (well-formed, tolerated and
malformed outputs, with the error naming what is wrong), the heuristic allocator, the config's errors, and the grouped
search algorithm against a known correctness rule (the search is a pure function of ``evaluate``; the real pool run
is in test_r2_reasoner_pool.py)."""

from __future__ import annotations

import pytest

from routecraft.pool.config import Pool, PoolModel
from routecraft.routers.r2_reasoner.config import ConfigError, load_config
from routecraft.routers.r2_reasoner.protocol import (
    FormatError,
    Ladder,
    allocate_prompt,
    decompose_prompt,
    final_messages,
    format_allocation,
    format_steps,
    heuristic_allocation,
    parse_allocation,
    parse_decomposition,
    subtask_messages,
)
from routecraft.routers.r2_reasoner.search import grouped_search, label_summary, sft_examples


def ladder(n: int = 9, groups: int = 3) -> Ladder:
    ms = [PoolModel(name=f"m{i}", endpoint="http://127.0.0.1:9/v1", price_in_per_m=float(i + 1) / 10,
                    price_out_per_m=float(i + 1), description="d", size_b=float(i + 1)) for i in range(n)]
    return Ladder.from_pool(Pool(name="p", models=list(reversed(ms))), groups=groups)


# ---------------------------------------------------------------------------------------------------- ladder

def test_ladder_sorts_by_price_and_groups_contiguously():
    lad = ladder(9)
    assert lad.names == [f"m{i}" for i in range(9)]  # given in reverse, sorted cheapest first
    assert [list(r) for r in lad.group_ranges()] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert [list(r) for r in ladder(4).group_ranges()] == [[0, 1], [2], [3]]
    assert ladder(2, 3).n_groups == 2 and ladder(2, 3).group_top(0) == 0
    assert lad.group_of(4) == 1 and lad.group_top(1) == 5
    with pytest.raises(ValueError, match="rung 9 is not on the ladder"):
        lad.group_of(9)


# ---------------------------------------------------------------------------------------------------- decomposer

def test_parse_step_lines_and_dot_style():
    assert parse_decomposition("Step 1: How many boxes?\nStep 2: How much money?") == ["How many boxes?",
                                                                                       "How much money?"]
    dot = 'To solve the question "x", we need to know:\n"1. first step",\n"2. second step",\n'
    assert parse_decomposition(dot) == ["first step", "second step"]
    md = "Sure! Here are the steps:\n\n**Step 1:** add 3 and 4\n**Step 2.** double it\n"
    assert parse_decomposition(md) == ["add 3 and 4", "double it"]


def test_parse_stops_at_a_new_example_or_restarted_numbering():
    text = "Step 1: a\nStep 2: b\n\nQuestion: another one\nStep 1: c"
    assert parse_decomposition(text) == ["a", "b"]
    assert parse_decomposition("Step 1: a\nStep 2: b\nStep 1: c") == ["a", "b"]
    assert parse_decomposition("1) a\n2) b\nThat is all.\n3) c") == ["a", "b"]


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("I think the answer is 7.", "no 'Step k"),
    ("Step 1: a\nStep 3: c", "must run 1, 2, 3"),
    ("Step 2: b", "got step 2 after 0"),
    ("Step 1: a\nStep 2:   ", "step 2 is empty"),
])
def test_parse_decomposition_errors_say_why(text, match):
    with pytest.raises(FormatError, match=match):
        parse_decomposition(text)


def test_parse_decomposition_step_count_limits():
    many = "\n".join(f"Step {i}: s{i}" for i in range(1, 10))
    with pytest.raises(FormatError, match="9 steps; at most 8"):
        parse_decomposition(many, max_steps=8)
    with pytest.raises(FormatError, match="at least 2"):
        parse_decomposition("Step 1: only", min_steps=2)
    assert len(parse_decomposition(many, max_steps=9)) == 9


def test_decompose_prompt_and_round_trip():
    p = decompose_prompt("Tom has  3\napples.", examples=2)
    assert p.count("Question:") == 3 and p.endswith("Question: Tom has 3 apples.")
    assert parse_decomposition(format_steps(["x", "y"])) == ["x", "y"]
    with pytest.raises(ValueError, match="ships 3"):
        decompose_prompt("q", examples=4)


# ---------------------------------------------------------------------------------------------------- allocator

def test_parse_allocation_formats():
    assert parse_allocation("[0, 2, 1]", 3, 3) == [0, 2, 1]
    assert parse_allocation("Models per step: [2,0] because ...", 2, 3) == [2, 0]
    assert parse_allocation("Step 1: 2\nStep 2: model 0", 2, 3) == [2, 0]
    assert parse_allocation(format_allocation([1, 1]), 2, 2) == [1, 1]


@pytest.mark.parametrize("text, match", [
    ("use the big one", "no \\[i, j, ...\\] list"),
    ("[0, 1]", "2 model number\\(s\\) for 3 step"),
    ("[0, 5, 1]", "\\[5\\] are off the ladder \\(0..2\\)"),
    ("[0, -1, 1]", "\\[-1\\] are off the ladder"),
    ("[0, big, 1]", "'big' in '\\[0, big, 1\\]' is not a model number"),
    ("Step 2: 1\nStep 1: 0\nStep 3: 0", "must run 1, 2"),
])
def test_parse_allocation_errors_say_why(text, match):
    with pytest.raises(FormatError, match=match):
        parse_allocation(text, 3, 3)


def test_allocate_prompt_lists_the_ladder_and_steps():
    lad = ladder(3, 3)
    p = allocate_prompt("Q?", ["a", "b"], lad)
    assert "0: m0" in p and "2: m2" in p and "Step 2: b" in p and "e.g. [0, 1]" in p


def test_heuristic_allocation_by_numbers_and_operators():
    lad = ladder(9)
    steps = ["What is the name of the dog?", "What is 3 + 4?", "What is 12 * 3 - 5 / 2 per day?"]
    # 0 operators -> group 0 (top m2); 3 tokens -> group 1 (m5); many -> group 2 (m8)
    assert heuristic_allocation(steps, lad) == [2, 5, 8]
    assert heuristic_allocation(["name the dog"], lad) == [5]  # the last step gets at least the middle group


def test_execution_messages_carry_earlier_answers():
    m = subtask_messages("Q  text", ["s1", "s2"], ["a1"], 1)
    assert "Q text" in m[0]["content"] and "Sub-problem-Id: 1; Sub-problem: s1; Answer: a1" in m[1]["content"]
    assert m[1]["content"].endswith("The sub-problem to solve now is: s2")
    f = final_messages("Q", ["s1"], ["a1"])
    assert [x["role"] for x in f] == ["system", "user", "assistant", "user"] and f[2]["content"] == "a1"
    with pytest.raises(ValueError, match="only 0 earlier"):
        subtask_messages("Q", ["s1", "s2"], [], 1)


def test_subtask_prompt_styles():
    concise = subtask_messages("Q", ["s1"], [], 0)[0]["content"]
    worked = subtask_messages("Q", ["s1"], [], 0, "worked")[0]["content"]
    assert "concisely" in concise and "show the calculation" in worked and worked.startswith("You are solving")
    assert final_messages("Q", ["s1"], ["a1"], "worked")[0]["content"] == worked
    with pytest.raises(ValueError, match="subtask prompt style must be one of"):
        subtask_messages("Q", ["s1"], [], 0, "verbose")


# ---------------------------------------------------------------------------------------------------- config

def test_builtin_config_and_errors(tmp_path):
    cfg = load_config()
    assert cfg.reward.beta == 0.5 and cfg.search.confidence_alpha == 0.4
    assert cfg.execution.subtask_prompt == "worked"  # the CPU config; the field's default is DoT's "concise"
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  groups: 0\n")
    with pytest.raises(ConfigError, match="field 'search.groups'"):
        load_config(bad)
    bad.write_text("decomposer:\n  min_steps: 5\n  max_steps: 2\n")
    with pytest.raises(ConfigError, match="min_steps \\(5\\) > max_steps \\(2\\)"):
        load_config(bad)
    bad.write_text("serch: {}\n")
    with pytest.raises(ConfigError, match="field 'serch'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="not in pool"):
        load_config(None, {"models": ["gpt-9"]}).resolve_pool()


# ---------------------------------------------------------------------------------------------------- search

class Rule:
    """Correct iff subtask i is on a rung ≥ need[i]; cost = Σ (rung + 1) (cheaper rungs are cheaper)."""

    def __init__(self, need):
        self.need = need
        self.calls = []

    def __call__(self, alloc):
        self.calls.append(alloc)
        return all(a >= n for a, n in zip(alloc, self.need)), float(sum(a + 1 for a in alloc))


def test_grouped_search_finds_the_cheapest_correct_allocation():
    lad = ladder(9)
    rule = Rule([0, 4, 8])
    o = grouped_search(3, lad, rule, max_evaluations=50)
    assert o.label == [0, 4, 8] and o.label_correct and o.all_top_correct
    assert o.label_cost == 15.0 and o.all_top_cost == 27.0
    assert len(set(rule.calls)) == len(rule.calls) == o.evaluations  # nothing executed twice
    stages = [t["stage"] for t in o.trace]
    assert stages[:2] == ["probe", "all_top"] and "group" in stages and "within" in stages


def test_grouped_search_follows_confidence_order():
    lad = ladder(3, 3)
    rule = Rule([0, 0])
    o = grouped_search(2, lad, rule, confidences=lambda: [0.2, 0.9], max_evaluations=50, probe=False)
    assert o.order == [1, 0]
    assert o.trace[1]["allocation"] == [2, 1]  # the most confident subtask (index 1) is downgraded first
    o = grouped_search(2, lad, Rule([0, 0]), confidences=lambda: [0.2, 0.9], order="position", probe=False)
    assert o.order == [0, 1] and o.trace[1]["allocation"] == [1, 2]


def test_grouped_search_probe_success_and_unsolved():
    lad = ladder(9)
    o = grouped_search(2, lad, Rule([0, 0]))
    assert o.label == [0, 0] and o.evaluations == 2  # probe correct: only all-top runs, as the cost reference
    never = lambda a: (False, 1.0)  # noqa: E731
    o = grouped_search(2, lad, never)
    assert o.label is None and not o.label_correct and o.all_top_correct is False
    o = grouped_search(2, lad, never, unsolved="all_top")
    assert o.label == [8, 8] and not o.label_correct


def test_grouped_search_respects_the_budget():
    rule = Rule([0, 4, 8])
    o = grouped_search(3, ladder(9), rule, max_evaluations=3)
    assert o.budget_exhausted and o.evaluations == 3 and len(rule.calls) == 3
    assert o.label_correct and o.label != [8, 8, 8]  # the best found within the budget
    with pytest.raises(ValueError, match="n_steps"):
        grouped_search(0, ladder(3), rule)


def test_label_summary_and_sft_examples():
    recs = [{"question": "q1", "decompositions": [
        {"sample": 0, "steps": ["a", "b"], "label": [2, 2], "label_correct": True, "label_cost": 4.0,
         "all_top_cost": 4.0, "label_models": ["m2", "m2"]},
        {"sample": 1, "steps": ["c"], "label": [0], "label_correct": True, "label_cost": 1.0, "all_top_cost": 3.0,
         "label_models": ["m0"]}]},
        {"question": "q2", "decompositions": [{"sample": 0, "steps": ["x"], "label": None, "label_correct": False,
                                               "label_cost": None, "all_top_cost": 3.0, "label_models": None}]}]
    s = label_summary(recs, ladder(3))
    assert s["labelled"] == 2 and s["decompositions"] == 3 and s["queries_with_label"] == 1
    assert s["label_cost_saving"] == pytest.approx(1 - 5.0 / 7.0) and s["label_models"] == {"m2": 2, "m0": 1}
    dec, alloc = sft_examples(recs)
    assert dec == [("q1", ["c"])]  # the cheapest correct decomposition
    assert alloc == [("q1", ["a", "b"], [2, 2]), ("q1", ["c"], [0])]
