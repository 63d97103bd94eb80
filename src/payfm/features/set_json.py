"""A feature set as JSON (``payfm features define``, ``payfm features list --json``): reading one back from
:meth:`~payfm.features.definitions.FeatureSet.to_json`'s data, with errors that name the file, the feature
(by position and name) and the field at fault."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from payfm.errors import ConfigError
from payfm.features.definitions import (
    SET_NAME,
    Aggregate,
    Derived,
    Feature,
    FeatureSet,
    RequestFeature,
    _got,
    _suggest,
)
from payfm.features.durations import MAX_OFFSET, MAX_WINDOW, TilingError, format_duration, parse_duration


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
    if not isinstance(name, str) or not SET_NAME.fullmatch(name):
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


_MAX_WINDOW_S = int(MAX_WINDOW.total_seconds())
_MAX_OFFSET_S = int(MAX_OFFSET.total_seconds())
_WINDOW = f"from 60 (1m) to {_MAX_WINDOW_S} (365d), or null (all-time)"
_OFFSET = f"from 0 to {_MAX_OFFSET_S} (3650d, 10 years), a multiple of the resolution, or null (none)"
_DEFAULT = "or null (the default: 60 for a window up to 2h, 3600 beyond)"


def _seconds(spec: dict[str, object], key: str, who: str, bounds: str, lo: int, hi: int) -> timedelta | None:
    """``spec[key]``, a whole number of seconds from ``lo`` to ``hi`` (``bounds`` says so) or null."""
    value = spec.get(key)
    if value is None:
        return None
    seconds = None
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, float) and value.is_integer():  # (3600.0 is 3600; inf and NaN are not whole)
        seconds = int(value)
    if seconds is None or not lo <= seconds <= hi:
        hint = ""
        if isinstance(value, str):
            with contextlib.suppress(ConfigError):
                hint = f" (a string; {value.strip()} is {int(parse_duration(value, key).total_seconds())})"
        raise ConfigError(
            f"{who}: '{key}' must be a whole number of seconds {bounds}. Got {_got(value)}{hint}."
        )
    return timedelta(seconds=seconds)


def _durations(spec: dict[str, object], who: str) -> tuple[timedelta | None, timedelta, timedelta | None]:
    """The window, offset and resolution of an aggregate's spec, each in its bounds."""
    window = _seconds(spec, "window_s", who, _WINDOW, 60, _MAX_WINDOW_S)
    offset = _seconds(spec, "offset_s", who, _OFFSET, 0, _MAX_OFFSET_S)
    w = _MAX_WINDOW_S if window is None else int(window.total_seconds())
    within = "to the window" if window is None else f"to the window, {w} ({format_duration(window)})"
    resolution = _seconds(spec, "resolution_s", who, f"from 60 (1m) {within}, {_DEFAULT}", 60, w)
    return window, offset or timedelta(0), resolution


_EVENT = {"fraud_disputes": "dispute", "refunds": "refund"}


def _check_value(spec: dict[str, object], feature: Aggregate, who: str) -> None:
    """``value`` (what :meth:`Aggregate.spec` writes of one reading an outcome's own amount) is that or
    absent."""
    value = spec.get("value")
    if value is None or (value == "outcome_amount" and feature.reads_outcome_amount):
        return
    who = f"{who}: Feature '{feature.name}'"
    if feature.reads_outcome_amount:
        raise ConfigError(
            f"{who}: 'value' must be \"outcome_amount\" (each {_EVENT[feature.source]}'s own amount) or left "
            f"out. Got {_got(value)}."
        )
    raise ConfigError(
        f"{who}: 'value' is only for an aggregate of amount_usd over fraud_disputes or refunds, and only "
        f'"outcome_amount" (each one\'s own amount; it may be left out). Got {_got(value)} on source '
        f"{feature.source!r}, column {_got(feature.column)}: remove it."
    )


def _feature_from_json(spec: object, who: str) -> Feature:
    """One feature from its :meth:`spec` data; its errors name ``who`` (the file and the position)."""
    try:
        return _feature_of(spec, who)
    except TilingError as e:  # (said in the JSON's keys: 'window_s', 'resolution_s', 'offset_s')
        raise ConfigError(f"{who}: {e.in_json}") from None
    except ConfigError as e:
        if str(e).startswith(who):
            raise
        raise ConfigError(f"{who}: {e}") from None


def _feature_of(spec: object, who: str) -> Feature:
    if not isinstance(spec, dict):
        raise ConfigError(f"{who}: expected an object (a feature's spec). Got {_got(spec)}.")
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in _SPEC_KEYS:  # (a list or an object is no key of a dict)
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
        window, offset, resolution = _durations(spec, who)
        feature = Aggregate(
            entity=spec.get("entity", ""),  # (types checked by Aggregate)
            agg=spec.get("agg", ""),
            column=spec.get("column"),
            window=window,
            source=spec.get("source", "charges"),
            filter=spec.get("filter"),
            offset=offset,
            resolution=resolution,
            name=spec.get("name") or "",
        )
        _check_value(spec, feature, who)
        return feature
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
