"""Pool YAML config: the built-in local pool, costs, and validation errors that name the file and the field."""

from __future__ import annotations

import re
import textwrap

import pytest
import yaml

from routecraft.pool.config import Pool, PoolConfigError, PoolModel, builtin_pool_path, load_pool
from routecraft.pool.models import REGISTRY


def _write(tmp_path, text: str):
    p = tmp_path / "pool.yaml"
    p.write_text(textwrap.dedent(text))
    return p


GOOD_MODEL = """\
      - name: m1
        endpoint: http://127.0.0.1:9999/v1
        price_in_per_m: 0.1
        price_out_per_m: 0.2
        description: a test model
"""


def test_builtin_local_pool_is_complete_and_priced_by_size():
    pool = load_pool()
    assert pool.name == "local"
    assert builtin_pool_path().is_file()
    assert pool.names == ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    for m in pool.models:
        assert m.local in REGISTRY and m.endpoint is None
        assert m.price_source and "read 20" in m.price_source  # source + date recorded
        assert len(m.description) > 40
        assert m.size_b == pytest.approx(REGISTRY[m.local].params_b)
        assert m.instruct == REGISTRY[m.local].instruct
    by_size = sorted(pool.models, key=lambda m: m.size_b)
    assert [m.price_in_per_m for m in by_size] == sorted(m.price_in_per_m for m in pool.models)
    assert [m.price_out_per_m for m in by_size] == sorted(m.price_out_per_m for m in pool.models)
    assert len({m.price_out_per_m for m in pool.models}) == 4  # strictly ordered, no ties
    assert not pool.get("gemma3-270m").instruct


def test_cost_from_price_table():
    m = PoolModel(name="x", endpoint="https://api.example.com/v1", price_in_per_m=0.5, price_out_per_m=1.5,
                  description="d")
    assert m.cost(1_000_000, 0) == pytest.approx(0.5)
    assert m.cost(2000, 1000) == pytest.approx((2000 * 0.5 + 1000 * 1.5) / 1e6)
    assert m.cost(None, None) == 0.0
    assert m.api_model_id == "x"
    assert m.api_key() == "none"


def test_from_yaml_roundtrip_and_get(tmp_path):
    p = _write(tmp_path, "name: t\nmodels:\n" + GOOD_MODEL)
    pool = Pool.from_yaml(p)
    assert pool.get("m1").endpoint == "http://127.0.0.1:9999/v1"
    with pytest.raises(KeyError, match="m2.*m1"):
        pool.get("m2")
    again = Pool.from_dict(yaml.safe_load(pool.to_yaml()))
    assert again == pool


@pytest.mark.parametrize("body, expected", [
    # missing price: the message names the file, the model index and name, and the field
    ("""\
      - name: cheap
        endpoint: http://h/v1
        price_out_per_m: 0.2
        description: d
    """, r"models\[1\] \(cheap\), field 'price_in_per_m': Field required"),
    ("""\
      - name: both
        endpoint: http://h/v1
        local: smollm2-135m
        price_in_per_m: 0.1
        price_out_per_m: 0.2
        description: d
    """, r"models\[1\] \(both\).*exactly one of 'endpoint'"),
    ("""\
      - name: neither
        price_in_per_m: 0.1
        price_out_per_m: 0.2
        description: d
    """, r"models\[1\] \(neither\).*exactly one of 'endpoint'"),
    ("""\
      - name: ghost
        local: llama-9000b
        price_in_per_m: 0.1
        price_out_per_m: 0.2
        description: d
    """, r"ghost.*'llama-9000b' is not in the registry"),
    ("""\
      - name: neg
        endpoint: http://h/v1
        price_in_per_m: -1
        price_out_per_m: 0.2
        description: d
    """, r"models\[1\] \(neg\), field 'price_in_per_m': Input should be greater than or equal to 0"),
    ("""\
      - name: typo
        endpoint: http://h/v1
        price_in_per_m: 0.1
        price_out_per_m: 0.2
        descripton: d
    """, r"field 'descripton': Extra inputs are not permitted"),
    ("""\
      - name: url
        endpoint: localhost:8000
        price_in_per_m: 0.1
        price_out_per_m: 0.2
        description: d
    """, r"field 'endpoint': endpoint must be an http\(s\) URL"),
])
def test_model_errors_name_file_model_and_field(tmp_path, body, expected):
    p = _write(tmp_path, "name: t\nmodels:\n" + GOOD_MODEL + body)  # the bad model is models[1]
    with pytest.raises(PoolConfigError) as err:
        Pool.from_yaml(p)
    msg = str(err.value)
    assert str(p) in msg
    assert re.search(expected, msg), msg


def test_pool_level_errors(tmp_path):
    p = _write(tmp_path, "name: t\nmodels:\n" + GOOD_MODEL + GOOD_MODEL)
    with pytest.raises(PoolConfigError, match=r"pool.yaml: field 'models': .*duplicate model name 'm1'"):
        Pool.from_yaml(p)
    p = _write(tmp_path, "name: t\nmodels: []\n")
    with pytest.raises(PoolConfigError, match=r"field 'models'"):
        Pool.from_yaml(p)
    p = _write(tmp_path, "- just\n- a list\n")
    with pytest.raises(PoolConfigError, match=r"pool.yaml: a pool must be a mapping"):
        Pool.from_yaml(p)
    p = _write(tmp_path, "name: t\nmodels: [unclosed\n")
    with pytest.raises(PoolConfigError, match=r"pool.yaml: invalid YAML"):
        Pool.from_yaml(p)
    with pytest.raises(PoolConfigError, match=r"cannot read pool file .*nope.yaml"):
        Pool.from_yaml(tmp_path / "nope.yaml")
    with pytest.raises(PoolConfigError, match=r"neither a YAML file nor a built-in pool"):
        load_pool("no-such-pool")
