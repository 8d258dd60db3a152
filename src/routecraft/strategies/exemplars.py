"""One short worked example per answer kind and strategy (written for this project; kept tiny for slow CPUs).

Styles follow Route-To-Reason's exemplars (goodmanpzh/Route-To-Reason ``data/examples.py``): CoT ends "The answer is
X", CoD writes minimal
equations then "The answer is X", PAL is a ``def solution(): ... return result`` program.
"""

from __future__ import annotations

EXEMPLARS: dict[str, dict] = {
    "numeric": {
        "question": "Tom has 3 boxes with 4 apples each. He eats 2 apples. How many apples are left?",
        "answers": {
            "direct": "The answer is 10.",
            "cot": "Tom has 3 * 4 = 12 apples. After eating 2, he has 12 - 2 = 10. The answer is 10.",
            "cod": "3*4=12; 12-2=10. The answer is 10.",
            "pal": "```python\ndef solution():\n    apples = 3 * 4\n    result = apples - 2\n    return result\n```",
        },
    },
    "math": {
        "question": "Solve for $x$: $2x + 3 = 11$.",
        "answers": {
            "direct": "The answer is \\boxed{4}.",
            "cot": "Subtract 3 from both sides: $2x = 8$. Divide by 2: $x = 4$. The answer is \\boxed{4}.",
            "cod": "2x=8; x=4. The answer is \\boxed{4}.",
            "pal": "```python\ndef solution():\n    x = (11 - 3) / 2\n    return x\n```",
        },
    },
    "choice": {
        "question": ("Which gas do plants absorb from the air?\n(A) Oxygen\n(B) Carbon dioxide\n(C) Nitrogen\n"
                     "(D) Helium"),
        "answers": {
            "direct": "The answer is (B).",
            "cot": "Plants take in carbon dioxide for photosynthesis. The answer is (B).",
            "cod": "Photosynthesis uses CO2. The answer is (B).",
            "pal": "```python\ndef solution():\n    # photosynthesis takes in carbon dioxide\n    return 'B'\n```",
        },
    },
    "qa": {
        "question": "What is the capital of France?",
        "answers": {
            "direct": "The answer is Paris.",
            "cot": "France's capital city is Paris. The answer is Paris.",
            "cod": "France capital: Paris. The answer is Paris.",
            "pal": "```python\ndef solution():\n    return 'Paris'\n```",
        },
    },
    "code": {
        "question": "Write a function is_even(n) that returns True when the integer n is even.",
        "answers": {
            "direct": "```python\ndef is_even(n):\n    return n % 2 == 0\n```",
            "cot": ("A number is even when dividing it by 2 leaves no remainder.\n"
                    "```python\ndef is_even(n):\n    return n % 2 == 0\n```"),
            "cod": "even: n % 2 == 0.\n```python\ndef is_even(n):\n    return n % 2 == 0\n```",
        },
    },
    "generation": {
        "question": "dog, ball, throw",
        "answers": {
            "direct": "Sentence: The boy throws a ball for his dog.",
            "cot": "Someone throws a ball and a dog fetches it. Sentence: The boy throws a ball for his dog.",
            "cod": "throw ball; dog fetches. Sentence: The boy throws a ball for his dog.",
        },
    },
    "chat": {
        "question": "Name one primary colour.",
        "answers": {
            "direct": "Red.",
            "cot": "The primary colours of paint are red, yellow and blue, so red is one. Red.",
            "cod": "primaries: red, yellow, blue. Red.",
        },
    },
}
