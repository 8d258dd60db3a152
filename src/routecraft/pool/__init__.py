"""The model pool: local model registry and install, pool YAML config, llama.cpp servers, and the async client.

Submodules are imported lazily so that ``import routecraft.pool`` stays cheap:

* ``routecraft.pool.models``  — REGISTRY, install(), model_path(), ChecksumError
* ``routecraft.pool.config``  — Pool, PoolModel, load_pool(), PoolConfigError
* ``routecraft.pool.server``  — up(), down(), status(), serve_local(), base_url_for()
* ``routecraft.pool.client``  — ChatClient, ChatResult, StreamChunk, BackendError
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "REGISTRY": "models", "LocalModel": "models", "install": "models", "model_path": "models",
    "ChecksumError": "models", "ModelInstallError": "models",
    "Pool": "config", "PoolModel": "config", "PoolConfigError": "config", "load_pool": "config",
    "up": "server", "down": "server", "status": "server", "serve_local": "server", "base_url_for": "server",
    "LocalServer": "server", "ServerError": "server",
    "ChatClient": "client", "ChatResult": "client", "StreamChunk": "client", "BackendError": "client",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'routecraft.pool' has no attribute {name!r}")
    return getattr(importlib.import_module(f"routecraft.pool.{mod}"), name)
