"""How a decision is stored in the decision log: its feature values as a list, their names once per log.

A decision records the value of every feature its model read (158 in the default set). As a JSON object,
the names took about 4.2 KB of a decision's 5.7 KB, in every row (bench/bench_decision_log.py). The log
stores the values as a list (``feature_values``) and the names once, in its ``feature_layouts`` table,
under an id that is a hash of them (``feature_layout``). Reading a decision puts the object back, its
features in the same order; a row logged before this (its ``features`` an object) reads as it is. Since
the id is a hash of the names, a layout means the same names in every log and every process, and a process
keeps the ones it has met.

>>> text, layout = encode_decision({"risk_score": 7, "features": {"card.n_1h": 2.0, "ip.n_1d": None}})
>>> text
'{"risk_score":7,"feature_layout":"07c0dc524878344f","feature_values":[2.0,null]}'
>>> decode_decision(text, lambda lid: None)
{'risk_score': 7, 'features': {'card.n_1h': 2.0, 'ip.n_1d': None}}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

_orjson: Any
try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - an optional speed-up
    _orjson = None

LAYOUT = "feature_layout"  # a stored decision's key: the id of its features' names
VALUES = "feature_values"  # a stored decision's key: its features' values, in the layout's order

# Layouts this process has met (encoded, or read from a log): names by id and ids by names. Entries are
# only ever added (dict assignment is atomic), and few: one per feature set served.
_names: dict[str, tuple[str, ...]] = {}
_ids: dict[tuple[str, ...], str] = {}


def json_bytes(v: Any) -> bytes:
    """Compact JSON; orjson when installed (15x faster on a decision's 158 feature values), else the
    standard encoder (also for what orjson refuses: integers beyond 64 bits). Floats keep their shortest
    round-trip form either way, so a logged feature value reads back exactly."""
    if _orjson is not None:
        try:
            out: bytes = _orjson.dumps(v, default=str)
            return out
        except TypeError:
            pass
    return json.dumps(v, separators=(",", ":"), default=str).encode()


def dumps(v: Any) -> str:
    return json_bytes(v).decode()


def layout_id(names: tuple[str, ...]) -> str:
    """The id of a tuple of feature names: 16 hex digits of their SHA-256 (names hold no line break)."""
    lid = _ids.get(names)
    if lid is None:
        lid = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
        _names[lid], _ids[names] = names, lid
    return lid


def layout_names(lid: str) -> tuple[str, ...] | None:
    """The names of layout ``lid`` if this process has met it, else None (read it from the log)."""
    return _names.get(lid)


def remember(lid: str, names_json: str) -> tuple[str, ...]:
    """Layout ``lid`` as a log's ``feature_layouts`` row holds it (``names_json``: a JSON list), checked
    against its id: a row that does not hash to its id is refused, never read into the wrong names."""
    names = tuple(json.loads(names_json))
    if layout_id(names) != lid:
        raise ValueError(f"The decision log's feature layout '{lid}' does not match its names.")
    return names


def encode_decision(decision: dict[str, Any]) -> tuple[str, str | None]:
    """A decision as the log stores it (JSON) and the id of its feature layout (None: it has no features,
    e.g. one decided by rules alone, and is stored as it is)."""
    features = decision.get("features")
    if not isinstance(features, dict) or not features:
        return dumps(decision), None
    lid = layout_id(tuple(features))
    stored = {k: v for k, v in decision.items() if k != "features"}
    stored[LAYOUT] = lid
    stored[VALUES] = list(features.values())
    return dumps(stored), lid


def decode_decision(text: str, fetch: Callable[[str], str | None]) -> dict[str, Any]:
    """The decision a log's row holds, its ``features`` an object again. ``fetch(lid)`` reads layout
    ``lid``'s names (JSON) from the log when this process has not met it."""
    d: dict[str, Any] = json.loads(text)
    lid = d.pop(LAYOUT, None)
    if lid is None:  # no features, or a row logged before layouts
        return d
    names = layout_names(lid)
    if names is None:
        names_json = fetch(lid)
        if names_json is None:
            raise ValueError(f"The decision log holds no feature layout '{lid}' (the table feature_layouts).")
        names = remember(lid, names_json)
    d["features"] = dict(zip(names, d.pop(VALUES), strict=True))
    return d
