"""Importers: published routing logs (and any CSV/Parquet of your own) -> :class:`RoutingData`.

Built-in sources (copies ship in ``routecraft/datasets``; pass ``root`` to read a checkout of the raw data
instead, in its published layout or in the packaged one, files plain or gzipped):

=====================  ==========================================================================================
name                   loader
=====================  ==========================================================================================
``zeroeval-gsm8k``     :func:`import_zeroeval_gsm8k`: GSM8K test, 1,319 questions x 42 models (ZeroEval, re-scored)
``llmrouter-dcrouter`` :func:`import_llmrouter_dcrouter`: 14 tasks, 9 models (LLMRouter's dcrouter split, de-duplicated)
``routellm-gsm8k``     :func:`import_routellm` ("gsm8k"): 2 models, with full responses
``routellm-mmlu``      :func:`import_routellm` ("mmlu"): 57 subjects, 2 models
``routellm-mtbench``   :func:`import_routellm` ("mt-bench"): 80 two-turn questions, GPT-4 judge scores
=====================  ==========================================================================================

One module per source, as ``routecraft/datasets/`` holds one folder per source: ``zeroeval``, ``llmrouter``,
``routellm`` (which also reads GSM8K's questions, :func:`gsm8k_questions`); ``generic`` for your own files; ``common``
for what they share (:func:`~routecraft.data.importers.common.find` and
:func:`~routecraft.data.importers.common.read_jsonl` find and read a source file, plain or gzipped). This module is
the registry of built-in names.

None of these logs has real token counts. Where tokens are derived, the rule is OpenAI's rule of thumb
"one token is about 4 characters of English text" (https://help.openai.com/en/articles/4936856): ``tokens =
ceil(chars / 4)``, see :func:`estimate_tokens`; such rows carry ``tokens_estimated=True`` and ``meta["tokens"]``
says exactly what was counted. Costs are ``input_tokens * input_price + output_tokens * output_price`` with
prices from the price table (:mod:`routecraft.data.prices`) or, for LLMRouter, from its own candidate file.
"""

from __future__ import annotations

from typing import Callable

from routecraft.data.importers.common import CHARS_PER_TOKEN, TOKEN_RULE, dataset_root, estimate_tokens
from routecraft.data.importers.generic import GenericImportConfig, import_generic
from routecraft.data.importers.llmrouter import DCROUTER_OUTPUT_TOKENS, LLMROUTER, import_llmrouter_dcrouter
from routecraft.data.importers.routellm import (
    MMLU_FEWSHOT_TOKEN_CAP,
    MMLU_NTRAIN,
    ROUTELLM,
    ROUTELLM_BENCHMARKS,
    ROUTELLM_MODELS,
    ROUTELLM_STRONG,
    ROUTELLM_WEAK,
    gsm8k_questions,
    import_routellm,
)
from routecraft.data.importers.zeroeval import (
    ZEROEVAL,
    ZEROEVAL_OEQA_TEMPLATE,
    import_zeroeval_gsm8k,
    zeroeval_rescoring_check,
)
from routecraft.data.schema import RoutingData

__all__ = [
    "BUILTIN", "CHARS_PER_TOKEN", "DCROUTER_OUTPUT_TOKENS", "LLMROUTER", "MMLU_FEWSHOT_TOKEN_CAP", "MMLU_NTRAIN",
    "ROUTELLM", "ROUTELLM_BENCHMARKS", "ROUTELLM_MODELS", "ROUTELLM_STRONG", "ROUTELLM_WEAK", "TOKEN_RULE",
    "ZEROEVAL", "ZEROEVAL_OEQA_TEMPLATE", "GenericImportConfig", "UnknownDatasetError", "builtin_names",
    "dataset_root", "estimate_tokens", "gsm8k_questions", "import_generic", "import_llmrouter_dcrouter",
    "import_routellm", "import_zeroeval_gsm8k", "load_builtin", "zeroeval_rescoring_check",
]

BUILTIN: dict[str, Callable[..., RoutingData]] = {
    "zeroeval-gsm8k": import_zeroeval_gsm8k,
    "llmrouter-dcrouter": import_llmrouter_dcrouter,
    "routellm-gsm8k": lambda **kw: import_routellm("gsm8k", **kw),
    "routellm-mmlu": lambda **kw: import_routellm("mmlu", **kw),
    "routellm-mtbench": lambda **kw: import_routellm("mt-bench", **kw),
}


def builtin_names() -> list[str]:
    return sorted(BUILTIN)


def load_builtin(name: str, **kwargs) -> RoutingData:
    """Load a built-in dataset by name (see :data:`BUILTIN`); keyword arguments go to its importer."""
    try:
        loader = BUILTIN[name]
    except KeyError:
        raise UnknownDatasetError(f"unknown built-in dataset {name!r}; built-in datasets: "
                                  f"{', '.join(builtin_names())}") from None
    return loader(**kwargs)


class UnknownDatasetError(KeyError):
    """No built-in dataset of that name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]
