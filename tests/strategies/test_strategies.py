"""Strategies: prompts, length budgets, answer extraction on messy small-model outputs, PAL, self-consistency.

``run`` is tested here against a tiny scripted client (``ScriptedClient``) for the orchestration logic only (which
messages, caps, temperatures and seeds are sent; how tokens, costs and votes add up). Runs against a real llama.cpp /
OpenAI-compatible server are tested elsewhere, with the client module.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from routecraft.strategies import (
    BUDGET_GRID,
    Extraction,
    Strategy,
    extract_answer,
    extract_code,
    get_strategy,
    list_strategies,
    strategy_from_config,
)
from routecraft.strategies.answers import canonical_number, parse_number, task_kind

Q = "Janet's ducks lay 16 eggs per day. She eats three for breakfast and bakes muffins with four. She sells the rest " \
    "at $2 per egg. How much does she make every day?"


# ------------------------------------------------------------------------------------------------ registry/config

def test_registry_names_and_descriptions():
    assert list_strategies() == ["cod", "cot", "default", "direct", "pal", "sc"]
    for name in list_strategies():
        s = get_strategy(name)
        assert isinstance(s, Strategy) and s.name == name
        assert s.description.count(". ") == 0 and s.description.endswith(".")  # one sentence, used as router text
    sc = get_strategy("sc-pal", k=3)
    assert sc.name == "sc-pal" and sc.base == "pal" and sc.k == 3 and sc.base_strategy.name == "pal"


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown strategy 'tot'.*cod, cot, default, direct, pal, sc"):
        get_strategy("tot")
    with pytest.raises(ValueError, match="strategy 'cot'.*temprature"):
        get_strategy("cot", temprature=0.5)
    with pytest.raises(ValueError, match="budget_instruction"):
        get_strategy("cot", budget_instruction="no placeholder here")
    with pytest.raises(ValueError, match="k"):
        get_strategy("sc", k=0)
    with pytest.raises(ValueError, match="sc-<base>"):
        get_strategy("sc-sc")
    with pytest.raises(ValueError, match="unknown task 'gsm9k'"):
        get_strategy("cot").build_messages(Q, task="gsm9k")
    with pytest.raises(ValueError, match="question"):
        get_strategy("cot").build_messages("  ")


def test_config_entry():
    s = strategy_from_config({"name": "cod", "budget_instruction": "r2_words", "budget_slack": 0})
    assert s.name == "cod" and s.max_tokens(50) == 50
    assert "strict budget of 50 words" in s.build_messages(Q, budget=50)[-1]["content"]
    with pytest.raises(ValueError, match="no 'name'"):
        strategy_from_config({"budget_slack": 3})


# ------------------------------------------------------------------------------------------------ budgets

def test_budget_instruction_default_and_cap():
    assert BUDGET_GRID == (32, 64, 128, 256, 512, None)
    for name, default_cap in [("direct", 128), ("cot", 512), ("cod", 256), ("pal", 384), ("sc", 512)]:
        s = get_strategy(name)
        user = s.build_messages(Q, "gsm8k", budget=64)[-1]["content"]
        assert user.endswith("Use at most 64 tokens."), user
        assert s.max_tokens(64) == 74                       # budget + 10 slack, the R2-Router collection cap
        assert s.max_tokens(None) == default_cap
        assert "tokens" not in s.build_messages(Q, "gsm8k", budget=None)[-1]["content"]
    assert get_strategy("cot", default_max_tokens=None).max_tokens(None) is None
    assert get_strategy("cot", budget_slack=0).max_tokens(32) == 32


@pytest.mark.parametrize("bad", [0, -5, 12.5, "64", True])
def test_bad_budget_is_refused(bad):
    with pytest.raises(ValueError, match="budget"):
        get_strategy("cot").max_tokens(bad)
    with pytest.raises(ValueError, match="budget"):
        get_strategy("cot").build_messages(Q, budget=bad)


def test_budget_presets_and_placement():
    s = get_strategy("direct", budget_instruction="r2_system")
    msgs = s.build_messages(Q, budget=32)
    assert msgs[0]["role"] == "system" and "You MUST respond in 32 tokens or fewer." in msgs[0]["content"]
    assert "32" not in msgs[-1]["content"]
    s = get_strategy("cot", budget_instruction="Answer within {k} tokens.", budget_placement="system")
    assert s.build_messages(Q, budget=128)[0]["content"].endswith("Answer within 128 tokens.")
    # self-consistency passes its budget options on to its base strategy
    sc = get_strategy("sc", budget_instruction="Keep it under {k} tokens.", budget_slack=2)
    assert sc.build_messages(Q, budget=100)[-1]["content"].endswith("Keep it under 100 tokens.")
    assert sc.max_tokens(100) == 102


# ------------------------------------------------------------------------------------------------ prompts

def test_chat_messages_share_the_longest_prefix():
    # (the plain call sends the question alone: test_task_graders.test_the_plain_call_sends_the_question_as_...)
    msgs = {(n, b): get_strategy(n).build_messages(Q, "gsm8k", b) for n in list_strategies() if n != "default"
            for b in (32, None)}
    systems = {m[0]["content"] for m in msgs.values()}
    assert systems == {"You are a helpful assistant."}
    for m in msgs.values():  # question first, then the strategy instruction: one question's cells share a prefix
        assert len(m) == 2 and m[-1]["content"].startswith(Q + "\n\n")
    assert len(msgs[("pal", None)][-1]["content"]) < len(Q) + 200  # zero-shot chat prompts stay short


def test_instructions_per_task_kind():
    cot = get_strategy("cot")
    assert '"The answer is N."' in cot.instruction("gsm8k")
    assert "\\boxed{X}" in cot.instruction("math")
    assert "option letter" in cot.instruction("mmlu")
    assert "short answer" in cot.instruction("trivia_qa")
    assert "5 words at most" in get_strategy("cod").instruction("gsm8k")
    assert "solution()" in get_strategy("pal").instruction("gsm8k")


def test_choices_are_listed():
    user = get_strategy("direct").build_messages("Which is largest?", "mmlu", choices=["1", "22", "3"])[-1]["content"]
    assert user.startswith("Which is largest?\n(A) 1\n(B) 22\n(C) 3\n\n")


def test_completion_prompt_for_base_models():
    p = get_strategy("cot").build_prompt(Q, "gsm8k", budget=64)
    assert p.startswith('Think step by step, then end with "The answer is N." where N is a number. Use at most 64')
    assert "Question: Tom has 3 boxes" in p and "The answer is 10." in p           # one short exemplar
    assert p.endswith(f"Question: {Q}\nAnswer:")
    assert get_strategy("cot").stop("prompt") == ["\nQuestion:", "\n\nQuestion"]
    pal = get_strategy("pal")
    assert pal.build_prompt(Q).endswith("Answer:\n```python\n") and "```" in pal.stop("prompt")
    assert "Question: Tom" not in get_strategy("cot", prompt_exemplar=False).build_prompt(Q)
    chat = get_strategy("cod", chat_exemplar=True).build_messages(Q)
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]
    assert chat[2]["content"] == "3*4=12; 12-2=10. The answer is 10."


# ------------------------------------------------------------------------------------------------ extraction

# Hand-written in the style of SmolLM2-135M / Gemma-3-270m / Qwen2.5-0.5B outputs: markdown, $ and commas, repeated
# answers, made-up follow-up questions, truncation, the instruction's placeholder echoed back.
NUMERIC_CASES = [
    ("Janet has 16 - 3 - 4 = 9 eggs left.\nShe makes 9 * $2 = $18.\nThe answer is 18.", "18", "answer_is"),
    ("**Step 1:** 16-3-4 = 9\n**Step 2:** 9 x 2 = 18\n\n**The answer is: $18.00**", "18", "answer_is"),
    ("The answer is 18.\n\nQuestion: Tom has 5 apples and buys 3 more. How many?\nAnswer: The answer is 8.", "18",
     "answer_is"),
    ("16 eggs - 3 eggs - 4 eggs = 9 eggs\n9 eggs * 2 dollars = 18 dollars\n#### 18", "18", "hash"),
    ("So the final answer is \\boxed{18}.", "18", "boxed"),
    ("The answer is N. Janet makes 18 dollars.", "18", "answer_is"),   # the placeholder echoed back
    ("The answer is N.\nJanet makes 9 * 2 = 18 dollars.", "18", "last_number"),
    ("First she eats 3 eggs. Then she bakes with 4. So she has 16 - 3 - 4 = 9 eggs. She sells them for 2 dollars "
     "each so 9 *", "9", "last_number"),                                                    # cut off by max_tokens
    ("The answer is 1,200 dollars.", "1200", "answer_is"),
    ("Answer: 0.5", "0.5", "answer_colon"),
    ("The temperature dropped to -4 degrees, so the answer is -4.", "-4", "answer_is"),
    ("The answer is 18. The answer is 18. The answer is 18. The answer is", "18", "answer_is"),
    ("I don't know.", None, "none"),
]


@pytest.mark.parametrize("text,answer,method", NUMERIC_CASES)
def test_numeric_extraction(text, answer, method):
    ex = get_strategy("cot").extract(text, "gsm8k")
    assert (ex.answer, ex.method) == (answer, method)


@pytest.mark.parametrize("text,answer", [
    ("We have $x^2 = 4$, so $x = 2$. The answer is \\boxed{2}.", "2"),
    ("The sum is $\\frac{3}{4}$.\nThe answer is \\boxed{\\frac{3}{4}}.", "\\frac{3}{4}"),
    ("Final Answer: The final answer is $\\sqrt{2}$. I hope it is correct.", "\\sqrt{2}"),
    ("The answer is $\\left( 3, \\frac{\\pi}{2} \\right)$.", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("so x = 5", "5"),
])
def test_math_extraction(text, answer):
    assert extract_answer(text, "math")[0] == answer


@pytest.mark.parametrize("text,answer", [
    ("The answer is (B).", "B"),
    ("B) Carbon dioxide", "B"),
    ("**C**", "C"),
    ("Plants need CO2 for photosynthesis. Therefore, the correct option is D.", "D"),
    ("Answer: (a)", "A"),
    ("The answer is c", "C"),
    ("The answer is Cambodia.", "C"),            # the option text, matched against the given options
    ("A temple in Cambodia is the largest; so (C).", "C"),
    ("The answer is a big temple.", None),       # "a" is an article here, not an option
])
def test_choice_extraction(text, answer):
    choices = ["Calcutta.", "Bombay.", "Cambodia.", "Bali."]
    assert get_strategy("direct").extract(text, "mmlu", choices=choices).answer == answer


@pytest.mark.parametrize("text,answer", [
    ("Paris", "Paris"),
    ("The answer is Paris. It is the capital of France.", "Paris"),
    ("Answer: George Washington\nHe was the first president.", "George Washington"),
    ("  **The answer is \"seats\".**", "\"seats\""),
])
def test_qa_extraction(text, answer):
    assert get_strategy("direct").extract(text, "trivia_qa").answer == answer


def test_number_helpers():
    assert parse_number("$1,234.50") == 1234.5 and parse_number("\\frac{3}{4}") == 0.75
    assert parse_number("5 + 3 = 8") == 8 and parse_number("50%") == 50 and parse_number("nothing") is None
    assert canonical_number(18.0) == "18" and canonical_number(0.1 + 0.2) == "0.3"
    assert task_kind("GSM8K") == "numeric" and task_kind("arc_challenge") == "choice"


# ------------------------------------------------------------------------------------------------ PAL

PAL_FENCED = ("Here is the code:\n```python\ndef solution():\n    eggs = 16 - 3 - 4\n    return eggs * 2\n```\n"
              "This returns 18.")
PAL_BARE = ("def solution():\n    eggs_left = 16 - 3 - 4\n    money = eggs_left * 2\n    return money\n\n"
            "The function returns the money Janet makes.")
PAL_CONTINUATION = "def solution():\n    return (16 - 3 - 4) * 2\n```\n"   # the prompt ended with ```python


# Verbatim Qwen2.5-Coder-0.5B-Instruct (Q4) replies to the PAL chat prompt on GSM8K test items 0 and 1: the function
# is not called solution(), and the "example usage" asserts a wrong value / has a syntax error.
QWEN_PAL_ASSERT = (
    "```python\ndef calculate_daily_sales():\n    eggs_per_duck_per_day = 16\n    breakfast_eaten_per_day = 3\n"
    "    muffins_baked_per_day = 4\n    eggs_sold_per_duck_per_day = eggs_per_duck_per_day - breakfast_eaten_per_day"
    " - muffins_baked_per_day\n    daily_sales = eggs_sold_per_duck_per_day * 2\n    return daily_sales\n\n"
    "# Check function to verify the correctness of the solution\ndef check_solution():\n"
    "    assert calculate_daily_sales() == 128, \"The solution should be 128\"\n"
    "    print(\"The solution is correct.\")\n\ncheck_solution()\n```")
QWEN_PAL_BROKEN_USAGE = (
    "```python\ndef robe_bolts():\n    # Calculate the number of bolts of blue fiber\n    blue_bolts = 2\n    \n"
    "    # Calculate the number of bolts of white fiber\n    white_bolts = blue_bolts / 2\n    \n"
    "    # Calculate the total number of bolts\n    total_bolts = blue_bolts + white_bolts\n    \n"
    "    return total_bolts\n\n# Example usage\nprintrobe_bolts())\n```")
# SmolLM2-135M-Instruct style: no function returns anything, the answer is printed
SMOL_PAL_PRINTS = ("```python\ndef calculate_total_meters(meters):\n    return sum(meters * 3 for m in meters)\n\n"
                   "def main():\n    print(f\"James runs 3 sprints a week and runs {3 * 3 * 60} total meters.\")\n\n"
                   "main()\n```\n\nThis code defines a function")


@pytest.mark.parametrize("text,answer", [(QWEN_PAL_ASSERT, "18"), (QWEN_PAL_BROKEN_USAGE, "3"),
                                         (SMOL_PAL_PRINTS, "540")])
def test_pal_on_real_small_model_programs(text, answer):
    ex = get_strategy("pal").extract(text, "gsm8k")
    assert ex.answer == answer, (ex.code, ex.sandbox)


def test_prepare_program():
    from routecraft.strategies.builtin import prepare_program

    prog = prepare_program(extract_code(QWEN_PAL_ASSERT))
    assert "check_solution()" not in prog.splitlines() and prog.endswith("solution = calculate_daily_sales\n")
    # solution() already there: only the example usage goes
    assert prepare_program("def solution():\n    return 2\nprint(solution())\nassert solution() == 3\n") == \
        "def solution():\n    return 2\n"
    # two candidate functions: ambiguous, run as written
    two = "def a():\n    return 1\ndef b():\n    return 2\nresult = b()\n"
    assert prepare_program(two) == two


def test_extract_code_variants():
    assert extract_code(PAL_FENCED) == "def solution():\n    eggs = 16 - 3 - 4\n    return eggs * 2\n"
    assert extract_code(PAL_BARE).endswith("return money\n")          # prose after the code dropped
    assert extract_code(PAL_CONTINUATION) == "def solution():\n    return (16 - 3 - 4) * 2\n"
    two = "```python\nx = 1\n```\nBetter:\n```python\ndef solution():\n    return 2\n```"
    assert "return 2" in extract_code(two)
    assert extract_code("The answer is 18.") is None and extract_code("") is None


@pytest.mark.parametrize("text", [PAL_FENCED, PAL_BARE, PAL_CONTINUATION])
def test_pal_runs_the_program(text):
    ex = get_strategy("pal").extract(text, "gsm8k")
    assert ex.answer == "18" and ex.method == "code" and ex.sandbox.ok and ex.sandbox.value == 18


def test_pal_failures_and_fallback():
    pal = get_strategy("pal", timeout_s=1)
    ex = pal.extract("```python\ndef solution():\n    return 18 / 0\n```\nThe answer is 18.", "gsm8k")
    assert ex.answer is None and ex.method == "code_error" and ex.sandbox.error.startswith("ZeroDivisionError")
    assert pal.extract("The answer is 18.", "gsm8k").method == "no_code"
    fb = get_strategy("pal", fallback_to_text=True).extract("I cannot write code. The answer is 18.", "gsm8k")
    assert (fb.answer, fb.method) == ("18", "text_fallback:answer_is")
    # a choice task: the program returns a letter; a math task: a fraction string
    assert pal.extract("```python\ndef solution():\n    return 'c'\n```", "mmlu").answer == "C"
    math_ex = pal.extract("```python\nfrom fractions import Fraction\ndef solution():\n    return Fraction(6, 8)\n```",
                          "math")
    assert math_ex.answer == "3/4"


# ------------------------------------------------------------------------------------------------ self-consistency

def test_sc_vote_groups_equal_answers():
    sc = get_strategy("sc")
    exs = [Extraction("18", "answer_is"), Extraction("$18.00", "answer_is"), Extraction("20", "answer_is"),
           Extraction(None, "none"), Extraction("20", "last_number"), Extraction("18.0", "boxed")]
    agg = sc.aggregate(exs, "gsm8k")
    assert agg.answer == "18" and agg.method == "vote" and agg.votes == {"18": 3, "20": 2}


def test_sc_vote_ties_and_empty():
    sc = get_strategy("sc")
    assert sc.aggregate([Extraction("B", "x"), Extraction("A", "x"), Extraction("A", "x"), Extraction("B", "x")],
                        "mmlu").answer == "B"                      # tie: first seen wins
    assert sc.aggregate([Extraction(None, "none")] * 3, "gsm8k").answer is None
    agg = sc.aggregate([Extraction("\\dfrac{1}{2}", "boxed"), Extraction("\\frac12", "boxed"),
                        Extraction("2", "boxed")], "math")
    assert agg.answer == "\\dfrac{1}{2}" and max(agg.votes.values()) == 2
    agg = sc.aggregate([Extraction("The Beatles", "x"), Extraction("beatles", "x"), Extraction("Queen", "x")], "qa")
    assert agg.answer == "The Beatles"


# ------------------------------------------------------------------------------------------------ run()

@dataclass
class Reply:
    text: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    cost_usd: float | None
    finish_reason: str


class ScriptedClient:
    """Answers chat calls with scripted texts, in order, and records each call."""

    def __init__(self, texts):
        self.texts = list(texts)
        self.calls = []

    async def chat(self, messages, max_tokens=None, temperature=0.0, stop=None, seed=None, **extra):
        text = self.texts[len(self.calls)]
        self.calls.append({"messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                           "stop": stop, "seed": seed, **extra})
        await asyncio.sleep(0)  # let concurrent calls interleave
        return Reply(text, input_tokens=50, output_tokens=len(text.split()), latency_s=0.25, cost_usd=0.001,
                     finish_reason="stop")


class ScriptedBaseModelClient(ScriptedClient):
    """A base (not instruction-tuned) model: only plain completions."""

    class model:  # noqa: N801 - mimics the pool client's ``.model`` attribute
        instruct = False

    async def chat(self, *a, **k):
        raise AssertionError("a base model must get a completion prompt")

    async def complete(self, prompt, max_tokens=None, temperature=0.0, stop=None, seed=None, **extra):
        return await ScriptedClient.chat(self, prompt, max_tokens, temperature, stop, seed, **extra)


def test_run_prompt_mode_for_base_models():
    client = ScriptedBaseModelClient(["def solution():\n    return (16 - 3 - 4) * 2\n"])  # stopped at ```
    r = asyncio.run(get_strategy("pal").run(client, Q, "gsm8k", budget=64))
    call = client.calls[0]
    assert call["messages"] == get_strategy("pal").build_prompt(Q, "gsm8k", 64)   # the prompt, auto-detected
    assert call["stop"] == ["```", "\nQuestion:"] and call["max_tokens"] == 74
    assert r.answer == "18"
    client = ScriptedClient(["The answer is 18."])
    asyncio.run(get_strategy("cot").run(client, Q, mode="chat"))
    assert isinstance(client.calls[0]["messages"], list)
    with pytest.raises(ValueError, match="mode"):
        asyncio.run(get_strategy("cot").run(client, Q, mode="completion"))


def test_run_direct():
    client = ScriptedClient(["The answer is $18."])
    r = asyncio.run(get_strategy("direct").run(client, Q, "gsm8k", budget=32, top_p=0.9))
    call = client.calls[0]
    assert call["max_tokens"] == 42 and call["temperature"] == 0.0 and call["top_p"] == 0.9
    assert call["messages"] == get_strategy("direct").build_messages(Q, "gsm8k", 32)
    assert (r.answer, r.strategy, r.budget, r.max_tokens) == ("18", "direct", 32, 42)
    assert (r.input_tokens, r.output_tokens, r.cost_usd, r.model_latency_s) == (50, 4, 0.001, 0.25)
    assert r.finish_reason == "stop" and r.samples is None and r.latency_s >= 0


def test_run_pal_executes_the_code():
    client = ScriptedClient([PAL_FENCED])
    r = asyncio.run(get_strategy("pal").run(client, Q, "gsm8k"))
    assert client.calls[0]["max_tokens"] == 384
    assert r.answer == "18" and r.extraction.code.startswith("def solution") and r.extraction.sandbox.ok
    assert r.latency_s >= r.extraction.sandbox.duration_s  # wall clock includes running the program


def test_run_self_consistency():
    texts = ["... The answer is 18.", "... The answer is 20.", "... so the answer is $18.00", "I give up.",
             "\\boxed{18}"]
    client = ScriptedClient(texts)
    r = asyncio.run(get_strategy("sc", k=5).run(client, Q, "gsm8k", budget=128, seed=7))
    assert len(client.calls) == 5
    assert {c["temperature"] for c in client.calls} == {0.7}
    assert sorted(c["seed"] for c in client.calls) == [7, 8, 9, 10, 11]
    assert {c["max_tokens"] for c in client.calls} == {138}
    assert r.answer == "18" and r.extraction.votes == {"18": 3, "20": 1}
    assert r.input_tokens == 250 and r.output_tokens == sum(len(t.split()) for t in texts)
    assert r.cost_usd == pytest.approx(0.005) and r.model_latency_s == pytest.approx(1.25)
    assert len(r.samples) == 5 and r.text == texts[0]
    # sequential mode sends the same calls one after another
    client2 = ScriptedClient(texts)
    r2 = asyncio.run(get_strategy("sc", k=5, concurrent=False).run(client2, Q, "gsm8k", temperature=1.0))
    assert [c["temperature"] for c in client2.calls] == [1.0] * 5 and r2.answer == "18"
