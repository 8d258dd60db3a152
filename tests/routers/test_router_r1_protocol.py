"""Router-R1's tag protocol: turn truncation, the action parser, model-name matching and the format rules of the
authors' reward (``verl/utils/reward_score/qa_em.py``), one by one, on hand-written responses."""

from __future__ import annotations

import pytest

from routecraft.routers.router_r1.protocol import (
    ModelCard,
    check_format,
    extract_answer,
    format_violations,
    information_block,
    messages,
    parse_action,
    parse_pending,
    resolve_model,
    sanitize_information,
    system_prompt,
    truncate_turn,
    user_prompt,
)

NAMES = ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
CARDS = [ModelCard("smollm2-135m", "Tiny chat model.", 0.0218, 0.00294, 0.135),
         ModelCard("qwen2.5-coder-1.5b", "Strongest local model; math.", 0.2484, 0.0335, 1.54)]

GOOD = ("<think> I need help with the sum. </think>\n<search> qwen2.5-coder-1.5b: What is 12 + 30? </search>"
        "\n\n<information>12 + 30 = 42</information>\n\n<think> The reply says 42. </think>\n<answer> 42 </answer>")


def violations(text: str) -> list[str]:
    return format_violations(text, NAMES)


# ---------------------------------------------------------------------------------------------- prompt

def test_system_prompt_lists_every_model_with_price_and_description():
    p = system_prompt(CARDS, answer_example="42")
    assert "smollm2-135m ($0.0218 per 1M output tokens): Tiny chat model." in p
    assert "qwen2.5-coder-1.5b ($0.2484 per 1M output tokens)" in p
    assert "exactly one of: smollm2-135m, qwen2.5-coder-1.5b" in p
    assert "<answer> 42 </answer>" in p
    for tag in ("<think>", "<search>", "<information>", "<answer>"):
        assert tag in p


def test_compact_prompt_is_shorter_and_keeps_names_sizes_prices():
    full, compact = system_prompt(CARDS), system_prompt(CARDS, style="compact")
    assert len(compact) < len(full) / 1.5
    assert "- qwen2.5-coder-1.5b: 1.54B, $0.2484" in compact
    assert "Tiny chat model" not in compact
    with pytest.raises(ValueError, match="prompt style"):
        system_prompt(CARDS, style="long")
    with pytest.raises(ValueError, match="at least one"):
        system_prompt([])


def test_user_prompt_appends_question_mark_and_rejects_empty():
    assert user_prompt("How many apples") == "Question: How many apples?"
    assert user_prompt("  How   many?  ") == "Question: How many?"
    with pytest.raises(ValueError, match="empty question"):
        user_prompt("   ")
    m = messages("Why", CARDS)
    assert [x["role"] for x in m] == ["system", "user"] and m[1]["content"] == "Question: Why?"


# ---------------------------------------------------------------------------------------------- turns

@pytest.mark.parametrize("raw,cut", [
    ("<think>a</think><search> m: q </search> trailing <answer>x</answer>", "<think>a</think><search> m: q </search>"),
    ("<think>a</think><answer> 3 </answer>\nmore text", "<think>a</think><answer> 3 </answer>"),
    ("<answer>1</answer><search> m: q </search>", "<answer>1</answer><search> m: q </search>"),  # search first
    ("no tags at all", "no tags at all"),
    ("<search> unterminated", "<search> unterminated"),
])
def test_truncate_turn(raw, cut):
    assert truncate_turn(raw) == cut


def test_parse_valid_search_and_answer():
    a = parse_action("<think>x</think>\n<search> qwen2.5-coder-1.5b: What is 6*7? </search>", NAMES)
    assert (a.kind, a.model, a.query, a.valid) == ("search", "qwen2.5-coder-1.5b", "What is 6*7?", True)
    b = parse_action("<think>x</think><answer>  42 </answer>", NAMES)
    assert (b.kind, b.content, b.valid) == ("answer", "42", True)


def test_parse_takes_the_first_block():
    a = parse_action("<answer> 1 </answer><search> smollm2-135m: q </search>", NAMES)
    assert a.kind == "answer" and a.content == "1"


@pytest.mark.parametrize("content,error", [
    ("LLM-Name: Your-Query", "placeholder"),
    ("qwen2.5-coder-1.5b: your-query", "placeholder"),
    ("qwen2.5-coder-1.5b what is 6*7", "no ':'"),
    ("qwen2.5-coder-1.5b:   ", "empty query"),
])
def test_parse_invalid_search_gives_no_action(content, error):
    a = parse_action(f"<search>{content}</search>", NAMES)
    assert a.kind == "none" and not a.valid and error in a.error


def test_parse_unknown_model_is_a_failed_search():
    a = parse_action("<search> gpt-5: what is 6*7? </search>", NAMES)
    assert a.kind == "search" and a.model is None and not a.valid
    assert a.written_model == "gpt-5" and "unknown model" in a.error


def test_parse_missing_or_unclosed_block():
    assert parse_action("<think> thinking </think>", NAMES).kind == "none"
    assert parse_action("<search> smollm2-135m: q", NAMES).kind == "none"
    assert parse_action("", NAMES).error.startswith("no complete")


def test_nested_search_inside_answer_parses_the_outer_answer():
    a = parse_action("<answer> <search> smollm2-135m: q </search> </answer>", NAMES)
    assert a.kind == "answer"


def test_query_may_contain_a_colon_in_parsing():
    a = parse_action("<search> smollm2-135m: time 3:00? </search>", NAMES)
    assert a.kind == "search" and a.query == "time 3:00?"


@pytest.mark.parametrize("written,expected", [
    ("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b"),
    ("Qwen2.5-Coder-1.5B", "qwen2.5-coder-1.5b"),
    ("  SmolLM2-135M ", "smollm2-135m"),
    ("Qwen2.5-Coder-1.5B-Instruct", "qwen2.5-coder-1.5b"),  # the paper's substring match
    ("qwen2.5-coder", None),  # ambiguous prefix: matches no full name
    ("qwen", None),
    ("gpt-4o", None),
    ("", None),
])
def test_resolve_model(written, expected):
    assert resolve_model(written, NAMES) == expected


def test_resolve_prefers_the_longer_contained_name():
    assert resolve_model("gpt-4o-mini", ["gpt-4o", "gpt-4o-mini"]) == "gpt-4o-mini"
    assert resolve_model("gpt-4o", ["gpt-4o", "gpt-4o-mini"]) == "gpt-4o"


def test_information_block_and_sanitising():
    assert information_block(" 42 ") == "\n\n<information>42</information>\n\n"
    assert information_block(None) == "\n\n<information>None</information>\n\n"
    assert sanitize_information("x <answer> 5 </answer> y </information>") == "x  5  y "
    assert "<answer>" not in information_block("<answer>5</answer>")


# ---------------------------------------------------------------------------------------------- format rules

def test_good_response_has_no_violation():
    assert violations(GOOD) == []
    rep = check_format(GOOD, NAMES)
    assert rep.ok and rep.score == 0.0
    assert violations("<think> easy </think>\n<answer> 7 </answer>") == []  # no call is fine
    assert violations("  " + GOOD + "\n") == []  # surrounding whitespace is ignored


def test_two_rounds_are_fine():
    two = GOOD.replace("<answer> 42 </answer>",
                       "<search> smollm2-135m: Is 42 right? </search>\n<information>yes</information>\n"
                       "<think> ok </think>\n<answer> 42 </answer>")
    assert violations(two) == []


@pytest.mark.parametrize("text,needle", [
    ("plain text, no tags", "no tagged block"),
    ("<think> a </think><think> b <answer> 1 </answer>", "unbalanced <think>"),
    ("<think> a </think><search> smollm2-135m: q <information>x</information><answer> 1 </answer>",
     "unbalanced <search>"),
    ("<think> a <search> smollm2-135m: q </search> </think><information>x</information><answer> 1 </answer>",
     "nested"),
    ("<think> a </think><answer> 1 <think> b </think> </answer>", "nested"),
    ("<think>   </think><answer> 1 </answer>", "empty"),
    ("<think> ... </think><answer> 1 </answer>", "empty"),
    ("<think> a </think>", "0 <answer> blocks"),
    ("<think> a </think><answer> 1 </answer><think> b </think><answer> 2 </answer>", "2 <answer> blocks"),
    ("<answer> 1 </answer>", "no <think> block"),
    ("<think> a </think><search> smollm2-135m: q </search><answer> 1 </answer>", "1 <search> but 0 <information>"),
    ("<think> a </think><information>x</information><answer> 1 </answer>", "0 <search> but 1 <information>"),
    ("I think <think> a </think><answer> 1 </answer>", "does not start with <think>"),
    ("<think> a </think><answer> 1 </answer> done", "does not end with </answer>"),
    ("<think> a </think><search> smollm2-135m: time 3:00? </search><information>x</information>"
     "<answer> 1 </answer>", "2 ':'"),
    ("<think> a </think><search> smollm2-135m:   </search><information>x</information><answer> 1 </answer>",
     "empty query"),
    ("<think> a </think><search> LLM-Name: Your-Query </search><information>x</information><answer> 1 </answer>",
     "placeholder"),
    ("<think> a </think><search> smollm2-135m: ask smollm2-135m please </search><information>x</information>"
     "<answer> 1 </answer>", "model name appears in the query"),
    ("<think> a </think><search> gpt-5: what? </search><information>None</information><answer> 1 </answer>",
     "unknown model"),
])
def test_each_format_rule(text, needle):
    v = violations(text)
    assert any(needle in x for x in v), v
    assert check_format(text, NAMES).score == -1.0


def test_extract_answer_takes_the_last():
    assert extract_answer("<answer> 1 </answer> x <answer>\n 2 \n</answer>") == "2"
    assert extract_answer("<answer> unterminated") is None
    assert extract_answer(GOOD) == "42"


def test_pending_parse_finds_a_search_split_across_turns():
    first = "<think> a </think>\n<search> smollm2-135m: What is"
    pending = first + " 2+2? </search>"
    a = parse_pending(pending, len(first), NAMES)
    assert a.kind == "search" and a.model == "smollm2-135m" and a.query == "What is 2+2?"
    assert parse_action(pending[len(first):], NAMES).kind == "none"  # the turn alone has no complete block


def test_pending_parse_skips_blocks_closed_in_earlier_turns():
    earlier = "<think> a </think><search> smollm2-135m no colon </search>"
    pending = earlier + "<think> again </think><answer> 4 </answer>"
    a = parse_pending(pending, len(earlier), NAMES)
    assert a.kind == "answer" and a.content == "4"
    assert parse_pending(earlier + " more thinking", len(earlier), NAMES).kind == "none"
