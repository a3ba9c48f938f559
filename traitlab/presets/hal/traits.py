"""HAL's trait sets and released weights: HAL32Q (``traits_hal32.json``) and the HL16 classifier."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from traitlab.data import DataError, load_trait_set
from traitlab.judges.aggregate import Aggregator
from traitlab.types import TraitSet


def hal32(data_dir: str | Path) -> TraitSet:
    """HAL's 32 trait statements (stored as a bare list, so named here)."""
    return load_trait_set(Path(data_dir) / "hal_turing" / "traits_hal32.json", name="hal32")


def aggregator_from_hl16(path: str | Path, trait_set: TraitSet | None = None) -> Aggregator:
    """HAL's released HL16 classifier (``hl16_weights.json``: bias + weights keyed by trait id) on raw
    1-5 HAL32Q ratings. With ``trait_set`` its ids are checked and its hash recorded."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, getattr(e, "lineno", None), None, f"not a readable JSON weights file: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("weights"), dict):
        raise DataError(path, None, "weights", "missing {trait_id: weight} object (positional lists are refused)")
    if not isinstance(data.get("bias"), int | float):
        raise DataError(path, None, "bias", f"must be a number, got {data.get('bias')!r}")
    if trait_set is not None:
        unknown = sorted(set(data["weights"]) - set(trait_set.ids))
        if unknown:
            raise DataError(path, None, "weights", f"trait ids {unknown} are not in trait set {trait_set.name!r}")
    try:
        return Aggregator(name="hl16", weights=data["weights"], bias=data["bias"],
                          trait_set_hash=trait_set.hash if trait_set else None, meta={"source": str(path)})
    except ValidationError as e:
        err = e.errors()[0]
        raise DataError(path, None, ".".join(map(str, err["loc"])), err["msg"]) from None

