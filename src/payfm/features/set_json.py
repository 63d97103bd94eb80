"""A feature set as JSON (``payfm features define``, ``payfm features list --json``): reading one back from
:meth:`~payfm.features.definitions.FeatureSet.to_json`'s data, with errors that name the file, the feature
(by position and name) and the field at fault."""

from __future__ import annotations

import re
from datetime import timedelta

from payfm.errors import ConfigError
from payfm.features.definitions import (
    Aggregate,
    Derived,
    Feature,
    FeatureSet,
    RequestFeature,
    _got,
    _suggest,
)


def set_from_json(data: object, source: str = "feature set") -> FeatureSet:
    """A set from :meth:`FeatureSet.to_json`'s data (a ``version`` in it, if any, must be the one its
    definitions give); a ConfigError naming ``source``, the feature (by position and name) and the field at
    fault."""
    if not isinstance(data, dict) or not isinstance(data.get("features"), list) or not data["features"]:
        raise ConfigError(
            f"{source}: expected an object with 'name' and a 'features' list of at least one feature. "
            f"Got {_got(data)}."
        )
    unknown = sorted(set(data) - {"name", "version", "features"})
    if unknown:
        raise ConfigError(f"{source}: unknown field {unknown[0]!r}. Expected: name, version, features.")
    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name):
        raise ConfigError(
            f"{source}: 'name' must be a lower-case word of letters, digits and underscores (up to 64). "
            f"Got {_got(name)}."
        )
    feats = tuple(
        _feature_from_json(spec, f"{source}, feature {i + 1}") for i, spec in enumerate(data["features"])
    )
    try:
        fset = FeatureSet(name, feats)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    if data.get("version") is not None and data["version"] != fset.version:
        raise ConfigError(
            f"{source}: 'version' is {data['version']!r}, but its definitions give {fset.version!r} "
            "(edited since it was written, or written by another payfm). Remove 'version' to accept them."
        )
    return fset


_SPEC_KEYS = {
    "aggregate": {
        "kind",
        "name",
        "entity",
        "agg",
        "column",
        "window_s",
        "resolution_s",
        "offset_s",
        "source",
        "filter",
        "value",
    },
    "request": {"kind", "name", "type", "columns", "values"},
    "derived": {"kind", "name", "op", "inputs"},
}
_ARTICLE = {"aggregate": "an", "request": "a", "derived": "a"}


_TEN_YEARS_S = 10 * 365 * 86_400  # (beyond any window; keeps timedelta and the engines' integers in range)


def _seconds(spec: dict[str, object], key: str, who: str) -> timedelta | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= _TEN_YEARS_S:
        raise ConfigError(f"{who}: '{key}' must be seconds, from 0 to 10 years. Got {_got(value)}.")
    return timedelta(seconds=value)


def _feature_from_json(spec: object, who: str) -> Feature:
    """One feature from its :meth:`spec` data; its errors name ``who`` (the file and the position)."""
    try:
        return _feature_of(spec, who)
    except ConfigError as e:
        if str(e).startswith(who):
            raise
        raise ConfigError(f"{who}: {e}") from None


def _feature_of(spec: object, who: str) -> Feature:
    if not isinstance(spec, dict):
        raise ConfigError(f"{who}: expected an object (a feature's spec). Got {_got(spec)}.")
    kind = spec.get("kind")
    if kind not in _SPEC_KEYS:
        raise ConfigError(f"{who}: 'kind' must be one of {', '.join(_SPEC_KEYS)}. Got {_got(kind)}.")
    if isinstance(spec.get("name"), str):
        who = f"{who} ('{spec['name']}')"
    unknown = sorted(set(spec) - _SPEC_KEYS[kind])
    if unknown:
        raise ConfigError(
            f"{who}: unknown field {unknown[0]!r} for {_ARTICLE[kind]} {kind} feature. Expected: "
            f"{', '.join(sorted(_SPEC_KEYS[kind]))}." + _suggest(unknown[0], _SPEC_KEYS[kind])
        )
    if kind != "aggregate" and not isinstance(spec.get("name"), str):  # (an aggregate's is generated)
        raise ConfigError(f"{who}: a {kind} feature needs a 'name'. Got {_got(spec.get('name'))}.")
    if kind == "aggregate":
        offset = _seconds(spec, "offset_s", who)
        return Aggregate(
            entity=spec.get("entity", ""),  # (types checked by Aggregate)
            agg=spec.get("agg", ""),
            column=spec.get("column"),
            window=_seconds(spec, "window_s", who),
            source=spec.get("source", "charges"),
            filter=spec.get("filter"),
            offset=offset if offset is not None else timedelta(0),
            resolution=_seconds(spec, "resolution_s", who),
            name=spec.get("name") or "",
        )
    if kind == "request":
        columns, values = spec.get("columns", []), spec.get("values", [])
        if not isinstance(columns, list | tuple) or not isinstance(values, list | tuple):
            raise ConfigError(
                f"{who}: 'columns' and 'values' must be lists. Got {_got(columns)}, {_got(values)}."
            )
        return RequestFeature(spec.get("name", ""), spec.get("type", ""), tuple(columns), tuple(values))
    inputs = spec.get("inputs", [])
    if not isinstance(inputs, list | tuple):
        raise ConfigError(f"{who}: 'inputs' must be a list of feature names. Got {_got(inputs)}.")
    return Derived(spec.get("name", ""), spec.get("op", ""), tuple(inputs))
