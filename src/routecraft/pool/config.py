"""Pool configuration: the models a deployment can call, with endpoint, price and description.

A pool is a YAML file::

    name: local
    models:
      - name: smollm2-135m
        local: smollm2-135m          # a routecraft.pool.models registry name, served by `routecraft pool up`
        price_in_per_m: 0.0029       # USD per 1M input tokens
        price_out_per_m: 0.0218      # USD per 1M output tokens
        price_source: "..."
        description: "..."
        size_b: 0.135
      - name: gpt-4o-mini
        endpoint: https://api.openai.com/v1   # any OpenAI-compatible base_url
        model_id: gpt-4o-mini
        api_key_env: OPENAI_API_KEY
        ...

Exactly one of ``endpoint`` and ``local`` is given per model. Errors name the file, the model and the field.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_POOL = "local"


class PoolConfigError(ValueError):
    """A pool file or pool entry is invalid; the message names the file and the field."""


class PoolModel(BaseModel):
    """One model of a pool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Name used by routers and in outcomes tables.")
    endpoint: Optional[str] = Field(None, description="OpenAI-compatible base_url, e.g. http://host:8000/v1.")
    local: Optional[str] = Field(None, description="Registry name of a built-in local model (routecraft pool up).")
    model_id: Optional[str] = Field(None, description="Model id sent to the endpoint (default: name).")
    price_in_per_m: float = Field(ge=0, description="USD per 1M input tokens.")
    price_out_per_m: float = Field(ge=0, description="USD per 1M output tokens.")
    description: str = Field(min_length=1, description="Short description used by description-aware routers.")
    size_b: Optional[float] = Field(None, gt=0, description="Parameters, in billions.")
    instruct: bool = Field(True, description="Instruction-tuned (chat) model; False for base models.")
    context: int = Field(4096, gt=0, description="Context window in tokens the deployment serves.")
    price_source: Optional[str] = Field(None, description="Where the price comes from (source and date).")
    api_key_env: Optional[str] = Field(None, description="Environment variable holding the API key, if any.")

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError(f"endpoint must be an http(s) URL, got {v!r}")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _one_target(self) -> "PoolModel":
        if (self.endpoint is None) == (self.local is None):
            raise ValueError("give exactly one of 'endpoint' (a base_url) or 'local' (a local registry name)")
        if self.local is not None:
            from routecraft.pool.models import REGISTRY

            if self.local not in REGISTRY:
                raise ValueError(f"local model {self.local!r} is not in the registry "
                                 f"(known: {', '.join(sorted(REGISTRY))})")
        return self

    @property
    def api_model_id(self) -> str:
        """The model id to send in requests."""
        return self.model_id or self.name

    def api_key(self) -> str:
        """The API key from ``api_key_env`` ("none" for keyless endpoints such as local servers)."""
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise PoolConfigError(f"model {self.name!r}: environment variable {self.api_key_env} is not set")
            return key
        return "none"

    def cost(self, input_tokens: int | None, output_tokens: int | None) -> float:
        """Cost in USD of one call with these token counts (None counts as 0)."""
        return ((input_tokens or 0) * self.price_in_per_m + (output_tokens or 0) * self.price_out_per_m) / 1e6


class Pool(BaseModel):
    """A named set of models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: Optional[str] = None
    models: list[PoolModel] = Field(min_length=1)

    @field_validator("models")
    @classmethod
    def _unique(cls, v: list[PoolModel]) -> list[PoolModel]:
        seen: set[str] = set()
        for m in v:
            if m.name in seen:
                raise ValueError(f"duplicate model name {m.name!r}")
            seen.add(m.name)
        return v

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def get(self, name: str) -> PoolModel:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"model {name!r} is not in pool {self.name!r} (models: {', '.join(self.names)})")

    def __contains__(self, name: object) -> bool:
        return any(m.name == name for m in self.models)

    def subset(self, names: list[str]) -> "Pool":
        """A pool with only ``names`` (each must exist), in the given order."""
        return Pool(name=self.name, description=self.description, models=[self.get(n) for n in names])

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "Pool":
        if not isinstance(data, dict):
            raise PoolConfigError(f"{source}: a pool must be a mapping with 'name' and 'models', "
                                  f"got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise PoolConfigError(_format_errors(exc, data, source)) from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "Pool":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise PoolConfigError(f"cannot read pool file {path}: {exc.strerror or exc}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PoolConfigError(f"{path}: invalid YAML: {exc}") from None
        return cls.from_dict(data, str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(exclude_none=True), sort_keys=False, allow_unicode=True)


def _format_errors(exc: ValidationError, data: dict, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = []
        if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
            idx = loc[1]
            models = data.get("models") or []
            mname = models[idx].get("name") if idx < len(models) and isinstance(models[idx], dict) else None
            where.append(f"models[{idx}]" + (f" ({mname})" if mname else ""))
            rest = loc[2:]
        else:
            rest = loc
        field = ".".join(str(x) for x in rest)
        if field:
            where.append(f"field '{field}'")
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {', '.join(where) or 'pool'}: {msg}")
    return "\n".join(lines)


def builtin_pool_path(name: str = DEFAULT_POOL) -> Path:
    """Path of a pool YAML shipped in routecraft/configs (``<name>-pool.yaml``)."""
    p = resources.files("routecraft") / "configs" / f"{name}-pool.yaml"
    return Path(str(p))


def load_pool(spec: str | os.PathLike | None = None) -> Pool:
    """Load a pool: None or "local" → the built-in local pool; else a built-in name or a YAML path."""
    if spec is None:
        spec = DEFAULT_POOL
    p = Path(spec)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return Pool.from_yaml(p)
    builtin = builtin_pool_path(str(spec))
    if builtin.is_file():
        return Pool.from_yaml(builtin)
    raise PoolConfigError(f"pool {spec!r} is neither a YAML file nor a built-in pool (built-in: {DEFAULT_POOL})")
