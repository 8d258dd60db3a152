"""Turn a ``--data`` argument into a RoutingData: a built-in dataset name or a routecraft data folder."""

from __future__ import annotations

from pathlib import Path

from routecraft.data.importers import BUILTIN, load_builtin
from routecraft.data.schema import DataValidationError, RoutingData


def builtin_names() -> list[str]:
    return sorted(BUILTIN)


def resolve_data(spec: str) -> tuple[str, RoutingData]:
    """(display name, data) for a built-in name or a folder with queries.parquet + outcomes.parquet."""
    if spec in BUILTIN:
        return spec, load_builtin(spec)
    path = Path(spec)
    if path.is_dir():
        return path.name, RoutingData.load(path)
    raise DataValidationError(
        f"--data {spec!r} is neither a built-in dataset ({', '.join(sorted(BUILTIN))}) nor a routecraft data folder "
        "(a folder with queries.parquet and outcomes.parquet; make one with `routecraft import`)")
