"""The price table: packaged YAML, validation, missing-price behaviour."""

from __future__ import annotations

import gzip
import json
import re

import numpy as np
import pandas as pd
import pytest

from routecraft.data.importers import ROUTELLM_MODELS, dataset_root
from routecraft.data.prices import ZERO_PRICE, MissingPriceError, PriceEntry, PriceTable


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.default()


def test_every_zeroeval_and_routellm_model_has_a_sourced_dated_price(table):
    m = pd.read_csv(dataset_root("zeroeval") / "gsm8k_matrix.csv.gz", usecols=["model"])
    models = set(m["model"]) | set(ROUTELLM_MODELS)
    assert len(models) == 44
    for name in models:
        e = table.get(name)
        assert e.source and re.match(r"^\d{4}-\d{2}(-\d{2})?$", e.date), name
        assert 0 <= e.input_per_1m <= 100 and 0 <= e.output_per_1m <= 100, name


def test_known_list_prices(table):
    assert (table.get("gpt-4o-2024-08-06").input_per_1m, table.get("gpt-4o-2024-08-06").output_per_1m) == (2.5, 10.0)
    assert table.get("claude-3-opus-20240229").output_per_1m == 75.0
    assert table.get("gpt-4-1106-preview").output_per_1m == 30.0
    assert table.get("gpt-4o-2024-08-06").cost(1000, 500) == pytest.approx(0.0075)
    arr = table.get("claude-3-haiku-20240307").cost(np.array([1e6, 0]), np.array([0, 1e6]))
    assert np.allclose(arr, [0.25, 1.25])


def test_llmrouter_entries_equal_the_candidate_file_fields(table):
    with gzip.open(dataset_root("llmrouter") / "llm_candidates" / "default_llm.json.gz", "rt") as f:
        cands = json.load(f)
    for name, c in cands.items():
        e = table.get(c["model"])
        assert (e.input_per_1m, e.output_per_1m) == (c["input_price"], c["output_price"]), name


def test_missing_price(table):
    with pytest.raises(MissingPriceError) as e:
        table.get("gpt-5-imaginary")
    assert "gpt-5-imaginary" in str(e.value) and "on_missing" in str(e.value)
    assert table.get("gpt-5-imaginary", on_missing="zero") is ZERO_PRICE
    own = PriceEntry(input_per_1m=1, output_per_1m=2, source="mine", date="2025-01")
    assert table.get("gpt-5-imaginary", on_missing=own) == own
    with pytest.raises(MissingPriceError) as e:
        table.require(["a-model", "gpt-4o-2024-08-06", "b-model"])
    assert e.value.models == ["a-model", "b-model"]
    with pytest.raises(ValueError, match="on_missing"):
        table.get("x", on_missing="guess")


def test_yaml_validation_errors_name_the_entry(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("models:\n  m1: {input_per_1m: 1, output_per_1m: 2, source: s, date: '2024-01'}\n"
                 "  m2: {input_per_1m: -1, output_per_1m: 2, source: s, date: '2024-01'}\n")
    with pytest.raises(ValueError, match=r"models\.m2\.input_per_1m"):
        PriceTable.from_yaml(p)
    p.write_text("models:\n  m1: {input_per_1m: 1, output_per_1m: 2, source: s}\n")
    with pytest.raises(ValueError, match=r"models\.m1\.date"):
        PriceTable.from_yaml(p)
    p.write_text("models:\n  m1: {input_per_1m: 1, output_per_1m: 2, source: s, date: 'last year'}\n")
    with pytest.raises(ValueError, match="YYYY-MM"):
        PriceTable.from_yaml(p)


def test_roundtrip_yaml(table, tmp_path):
    p = table.to_yaml(tmp_path / "copy.yaml")
    again = PriceTable.from_yaml(p)
    assert again.models == table.models
