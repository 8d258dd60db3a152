"""Price table: public list prices in USD per 1M input and output tokens, per model.

The packaged table (``routecraft/configs/prices.yaml``) holds one entry per model name as it appears in the
published routing logs, each with the ``source`` (a pricing page or document) and the ``date`` the price applies
to. A model without an entry is never priced silently: :meth:`PriceTable.get` raises
:class:`MissingPriceError` unless the caller passes ``on_missing="zero"`` or an explicit :class:`PriceEntry`.

    >>> table = PriceTable.default()
    >>> table.get("gpt-4o-2024-08-06").cost(1000, 500)       # $ for 1000 input + 500 output tokens
    0.0075
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Literal, Sequence, Union

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_DATE = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")
PACKAGED_PRICES = "prices.yaml"


class MissingPriceError(LookupError):
    """A model has no entry in the price table (and no default was given)."""

    #: what the default message suggests (the Python API); the CLI asks :meth:`message` for its own remedy
    API_REMEDY = "pass on_missing='zero' or on_missing=PriceEntry(...) to price them explicitly"

    def __init__(self, models: list[str], table: "PriceTable | None" = None, where: str | None = None):
        self.models = list(models)
        self.where = where
        self.hints = []
        if table is not None:
            for m in self.models[:5]:
                names = list(table.models)
                close = [n for n in names if n.lower().startswith(m.lower()) or m.lower().startswith(n.lower())][:3]
                close += [n for n in difflib.get_close_matches(m, names, n=3, cutoff=0.6) if n not in close]
                if close:
                    self.hints.append(f"{m!r} ~ {', '.join(map(repr, close))}")
        super().__init__(self.message())

    def message(self, remedy: str | None = None) -> str:
        """One line: the models, where they were looked up, the remedy (default: the Python API's), similar names."""
        msg = (f"no price for model(s) {', '.join(map(repr, self.models))}"
               + (f" in {self.where}" if self.where else "")
               + ". Add an entry (input_per_1m, output_per_1m, source, date) to the price table, or "
               + (remedy or self.API_REMEDY) + ".")
        if self.hints:
            msg += " Similar names in the table: " + "; ".join(self.hints) + "."
        return msg

    def __str__(self) -> str:  # LookupError would repr() the message
        return self.args[0]


class PriceEntry(BaseModel):
    """List price of one model, USD per 1M tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_1m: float = Field(ge=0, description="USD per 1M input (prompt) tokens")
    output_per_1m: float = Field(ge=0, description="USD per 1M output (completion) tokens")
    source: str = Field(min_length=1, description="URL or document the price comes from")
    date: str = Field(description="date the price applies to, YYYY-MM or YYYY-MM-DD")
    provider: str | None = Field(default=None, description="who sells it at this price")
    note: str | None = None

    @field_validator("date")
    @classmethod
    def _check_date(cls, v: str) -> str:
        v = str(v)
        if not _DATE.match(v):
            raise ValueError(f"date must be YYYY-MM or YYYY-MM-DD, got {v!r}")
        return v

    def cost(self, input_tokens, output_tokens):
        """USD for the given token counts (scalars -> float, arrays -> array)."""
        if np.isscalar(input_tokens) and np.isscalar(output_tokens):
            return (float(input_tokens) * self.input_per_1m + float(output_tokens) * self.output_per_1m) / 1e6
        return (np.asarray(input_tokens, dtype="float64") * self.input_per_1m
                + np.asarray(output_tokens, dtype="float64") * self.output_per_1m) / 1e6


ZERO_PRICE = PriceEntry.model_construct(input_per_1m=0.0, output_per_1m=0.0,
                                        source="on_missing='zero': no price known, priced at 0 by the caller",
                                        date=None, provider=None, note=None)

OnMissing = Union[Literal["error", "zero"], PriceEntry]


class PriceTable(BaseModel):
    """Model name -> :class:`PriceEntry`. Validated; load with :meth:`from_yaml` or :meth:`default`."""

    model_config = ConfigDict(extra="forbid")

    currency: Literal["USD"] = "USD"
    unit: Literal["per 1M tokens"] = "per 1M tokens"
    description: str | None = None
    reference_date: str | None = None
    models: dict[str, PriceEntry]

    # ---- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> "PriceTable":
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"price table {path} not found") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"price table {path}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"price table {path}: expected a mapping with a 'models' key, got {type(raw).__name__}")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            errs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"price table {path}: {errs}") from None

    @classmethod
    def default(cls) -> "PriceTable":
        """The packaged table (routecraft/configs/prices.yaml)."""
        return cls.from_yaml(packaged_prices_path())

    @classmethod
    def coerce(cls, prices: "PriceTable | str | Path | Sequence[str | Path] | None") -> "PriceTable":
        """``None`` -> the packaged table; a path -> that YAML file (``"builtin"``: the packaged one); several paths
        (a list, or one string with commas) -> those tables merged, later ones overriding earlier ones for the same
        model (:meth:`merge`); a table -> itself."""
        if prices is None:
            return cls.default()
        if isinstance(prices, PriceTable):
            return prices
        sources = price_sources(prices)
        if not sources:
            raise ValueError("no price table given (an empty --prices list)")
        tables = [cls.default() if src == "builtin" else cls.from_yaml(src) for src in sources]
        return tables[0] if len(tables) == 1 else cls.merge(tables)

    @classmethod
    def merge(cls, tables: "Sequence[PriceTable]") -> "PriceTable":
        """One table holding every model of ``tables``; where several price a model, the last one wins. The
        description lists what was merged; the reference date is the latest one given."""
        tables = list(tables)
        models: dict[str, PriceEntry] = {}
        for t in tables:
            models.update(t.models)
        dates = [t.reference_date for t in tables if t.reference_date]
        descs = [t.description for t in tables if t.description]
        return cls(models=models, reference_date=max(dates) if dates else None,
                   description=("merged, later tables override earlier ones: " + " | ".join(descs)) if descs
                   else None)

    # ---- lookup ----------------------------------------------------------------------------------
    def __contains__(self, model: str) -> bool:
        return model in self.models

    def __len__(self) -> int:
        return len(self.models)

    def get(self, model: str, on_missing: OnMissing = "error") -> PriceEntry:
        """The entry for ``model``. Without one: raise :class:`MissingPriceError` (``"error"``), price it at 0
        (``"zero"``), or use the given :class:`PriceEntry`."""
        entry = self.models.get(model)
        if entry is not None:
            return entry
        return _missing([model], self, on_missing)[model]

    def require(self, models, on_missing: OnMissing = "error", where: str | None = None) -> dict[str, PriceEntry]:
        """Entries for all ``models``; with ``on_missing="error"`` one error lists every model without a price."""
        models = list(dict.fromkeys(models))
        out = {m: self.models[m] for m in models if m in self.models}
        missing = [m for m in models if m not in self.models]
        if missing:
            out.update(_missing(missing, self, on_missing, where))
        return out

    def cost(self, model: str, input_tokens, output_tokens, on_missing: OnMissing = "error"):
        return self.get(model, on_missing).cost(input_tokens, output_tokens)

    def to_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.model_dump(exclude_none=True), sort_keys=False, allow_unicode=True))
        return path


def _missing(models: list[str], table: PriceTable, on_missing: OnMissing, where: str | None = None):
    if isinstance(on_missing, PriceEntry):
        return {m: on_missing for m in models}
    if on_missing == "zero":
        return {m: ZERO_PRICE for m in models}
    if on_missing == "error":
        raise MissingPriceError(models, table, where)
    raise ValueError(f"on_missing must be 'error', 'zero' or a PriceEntry, got {on_missing!r}")


def price_sources(prices: "str | Path | Sequence[str | Path]") -> list[str]:
    """The price-table sources named by ``prices``: a path, ``"builtin"``, a comma-separated string of them, or a
    list of any of those, in order."""
    items = [prices] if isinstance(prices, (str, Path)) else list(prices)
    out: list[str] = []
    for item in items:
        if isinstance(item, Path):
            out.append(str(item))
        else:
            out += [part.strip() for part in str(item).split(",") if part.strip()]
    return out


def describe_prices(prices: "PriceTable | str | Path | Sequence[str | Path] | None") -> str:
    """The file(s) a price table comes from, for messages: the packaged file for None/``"builtin"``."""
    if isinstance(prices, PriceTable):
        return "the given price table"
    if prices is None:
        return str(packaged_prices_path())
    return ", ".join(str(packaged_prices_path()) if s == "builtin" else s for s in price_sources(prices))


def packaged_prices_path() -> Path:
    from importlib.resources import files

    return Path(str(files("routecraft") / "configs" / PACKAGED_PRICES))


def load_prices(path: "str | Path | Sequence[str | Path] | None" = None) -> PriceTable:
    """The price table at ``path`` (default: the packaged one); several paths are merged, later ones winning."""
    return PriceTable.coerce(path)
