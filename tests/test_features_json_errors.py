"""A feature set's JSON (`payfm features define`) is refused whole when a key does not apply, with one
statement of each duration's bounds, names that hold no None, and advice on windows that do not tile and
on generated names that collide: each error names the file, the feature, the key, what was expected and what
was received (exact texts)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.features.definitions import Aggregate, FeatureSet, format_duration
from payfm.features.set_json import set_from_json

F = "f.json"
WINDOW = "must be a whole number of seconds from 60 (1m) to 31536000 (365d), or null (all-time)"


def _count(**extra: object) -> dict[str, object]:
    return {"kind": "aggregate", "entity": "card", "agg": "count", **extra}


def _refused(*features: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as err:
        set_from_json({"name": "mine", "features": list(features)}, F)
    return str(err.value)


# --- 'value': only the marker Aggregate.spec writes of a feature reading an outcome's own amount ---


def test_a_value_on_an_aggregate_that_reads_no_outcome_amount_is_refused() -> None:
    assert _refused(_count(window_s=3600, value=3)) == (
        "f.json, feature 1: Feature 'card.count_charges_1h': 'value' is only for an aggregate of amount_usd "
        'over fraud_disputes or refunds, and only "outcome_amount" (each one\'s own amount; it may be left '
        "out). Got 3 (int) on source 'charges', column None: remove it."
    )


def test_a_value_other_than_outcome_amount_is_refused() -> None:
    refunds = {"entity": "merchant", "agg": "sum", "column": "amount_usd", "source": "refunds"}
    assert _refused({"kind": "aggregate", **refunds, "window_s": 86400, "value": "charge_amount"}) == (
        "f.json, feature 1: Feature 'merchant.sum_amount_usd_refunds_1d': 'value' must be \"outcome_amount\" "
        "(each refund's own amount) or left out. Got 'charge_amount'."
    )


def test_the_outcome_amount_marker_round_trips_and_may_be_left_out() -> None:
    f = Aggregate("merchant", "sum", "amount_usd", source="fraud_disputes", window=timedelta(days=7))
    fs = FeatureSet("mine", (f,))
    assert fs.to_json()["features"][0]["value"] == "outcome_amount"  # type: ignore[index]
    assert set_from_json(fs.to_json(), F).version == fs.version
    spec = {k: v for k, v in f.spec().items() if k != "value"}
    assert set_from_json({"name": "mine", "features": [spec]}, F).version == fs.version


# --- durations: one statement of the bounds; 0 is '0s' ---


@pytest.mark.parametrize(
    ("value", "got"),
    [
        (-60, "-60 (int)"),
        (0, "0 (int)"),
        (31_622_400, "31622400 (int)"),  # 366 days
        ("1h", "'1h' (a string; 1h is 3600)"),
        (float("inf"), "inf (float)"),
        (3600.5, "3600.5 (float)"),
        (True, "True (bool)"),
    ],
)
def test_a_window_out_of_its_bounds_is_refused_with_the_bounds(value: object, got: str) -> None:
    assert _refused(_count(window_s=value)) == f"f.json, feature 1: 'window_s' {WINDOW}. Got {got}."


def test_an_offset_and_a_resolution_out_of_their_bounds_are_refused_with_the_bounds() -> None:
    assert _refused(_count(window_s=3600, offset_s=-1)) == (
        "f.json, feature 1: 'offset_s' must be a whole number of seconds from 0 to 315360000 (3650d, "
        "10 years), a multiple of the resolution, or null (none). Got -1 (int)."
    )
    assert _refused(_count(window_s=3600, resolution_s=7200)) == (
        "f.json, feature 1: 'resolution_s' must be a whole number of seconds from 60 (1m) to the window, "
        "3600 (1h), or null (the default: 60 for a window up to 2h, 3600 beyond). Got 7200 (int)."
    )


def test_a_whole_float_is_seconds() -> None:
    assert set_from_json({"name": "mine", "features": [_count(window_s=3600.0)]}, F).names == [
        "card.count_charges_1h"
    ]


def test_the_dsl_states_the_same_bounds() -> None:
    with pytest.raises(ConfigError) as err:
        Aggregate("card", "count", window=timedelta(0))
    assert (
        str(err.value)
        == "Feature 'card.count': the window must be from 1m to 365d, or None (all-time). Got 0s."
    )
    with pytest.raises(ConfigError) as err:
        Aggregate("card", "count", window=timedelta(hours=1), offset=timedelta(seconds=-60))
    assert str(err.value) == (
        "Feature 'card.count': the offset must be from 0s to 3650d (10 years), a multiple of the resolution. "
        "Got -1m."
    )
    assert format_duration(timedelta(0)) == "0s" and format_duration(timedelta(seconds=90)) == "90s"


# --- names: parts not valid yet give '<entity>.<agg>', never a None ---


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        (
            {"agg": "mean", "window_s": 3600},
            "Feature 'card.mean': the aggregation 'mean' needs a column. Got none.",
        ),
        (
            {"agg": "distinct", "window_s": 3600},
            "Feature 'card.distinct': the aggregation 'distinct' needs a column. Got none.",
        ),
        (
            {"agg": "max", "column": "card_country"},
            "Feature 'card.max': 'max' needs the numeric column amount_usd. Got 'card_country'.",
        ),
        (
            {"agg": "count", "column": "amount_usd"},
            "Feature 'card.count': the aggregation 'count' takes no column. Got 'amount_usd'.",
        ),
    ],
)
def test_an_aggregate_with_an_invalid_part_is_named_as_given(spec: dict[str, object], said: str) -> None:
    assert _refused({"kind": "aggregate", "entity": "card", **spec}) == f"f.json, feature 1: {said}"


# --- windows that do not tile, and generated names that collide ---


def test_a_window_that_is_no_multiple_of_the_default_resolution_says_which_and_what_would_do() -> None:
    assert _refused(_count(window_s=9000)) == (
        "f.json, feature 1: Feature 'card.count_charges_150m': 'window_s' must be a multiple of the "
        "resolution, 3600 (1h, the default for a window over 2h). Got 9000 (150m). Set 'resolution_s' to one "
        "that divides it, e.g. 60 (1m) or 1800 (30m), or 'window_s' to a multiple of 3600, e.g. 7200 (2h) or "
        "10800 (3h)."
    )
    with pytest.raises(ConfigError) as err:  # the DSL says it in its own terms
        Aggregate("card", "count", window=timedelta(minutes=150))
    assert str(err.value) == (
        "Feature 'card.count_charges_150m': the window must be a multiple of the resolution, 1h (the default "
        "for a window over 2h). Got 150m. Set a resolution that divides it, e.g. 1m or 30m, or the window to "
        "a multiple of 1h, e.g. 2h or 3h."
    )


def test_a_short_window_and_an_offset_that_do_not_tile() -> None:
    assert _refused(_count(window_s=90)) == (
        "f.json, feature 1: Feature 'card.count_charges_90s': 'window_s' must be a multiple of the "
        "resolution, 60 (1m, the default for a window up to 2h). Got 90 (90s). Set 'resolution_s' to one "
        "that divides it, e.g. 90 (90s), or 'window_s' to a multiple of 60, e.g. 60 (1m) or 120 (2m)."
    )
    assert _refused(_count(window_s=86400, offset_s=5400)) == (
        "f.json, feature 1: Feature 'card.count_charges_1d_ending_90m_ago': 'offset_s' must be a multiple of "
        "the resolution, 3600 (1h, the default for a window over 2h). Got 5400 (90m). Set 'resolution_s' to "
        "one that divides both the window and the offset, e.g. 60 (1m) or 1800 (30m), or 'offset_s' to a "
        "multiple of 3600, e.g. 3600 (1h) or 7200 (2h)."
    )
    assert set_from_json(
        {"name": "mine", "features": [_count(window_s=9000, resolution_s=1800)]}, F
    ).names == ["card.count_charges_150m"]


def test_two_windows_that_differ_only_in_resolution_are_told_to_take_a_name() -> None:
    assert _refused(_count(window_s=3600), _count(window_s=3600, resolution_s=300)) == (
        "f.json: Feature 'card.count_charges_1h' is defined twice in feature set 'mine' (features 1 and 2), "
        "which differ only in resolution (1m and 5m), which generated names do not show: give one a 'name' "
        "of its own, e.g. 'card.count_charges_1h_5m_tiles'."
    )
    named = _count(window_s=3600, resolution_s=300, name="card.count_charges_1h_5m_tiles")
    fs = set_from_json({"name": "mine", "features": [_count(window_s=3600), named]}, F)
    assert fs.names == ["card.count_charges_1h", "card.count_charges_1h_5m_tiles"]
    assert _refused(_count(window_s=3600), _count(window_s=3600)) == (
        "f.json: Feature 'card.count_charges_1h' is defined twice in feature set 'mine' (features 1 and 2), "
        "with the same definition: remove one."
    )


# --- at the CLI: one line, exit 1, nothing written ---


def test_the_cli_refuses_a_window_that_does_not_tile_in_one_line(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "features": [_count(window_s=9000)]}))
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "features", "define", str(path)])
    assert r.exit_code == 1, r.output
    assert r.output.splitlines() == [
        f"Error: Feature set file '{path}', feature 1: Feature 'card.count_charges_150m': 'window_s' must "
        "be a multiple of the resolution, 3600 (1h, the default for a window over 2h). Got 9000 (150m). Set "
        "'resolution_s' to one that divides it, e.g. 60 (1m) or 1800 (30m), or 'window_s' to a multiple of "
        "3600, e.g. 7200 (2h) or 10800 (3h)."
    ]
    assert not (ws.root / "features" / "sets" / "mine.json").exists()


def test_two_features_of_one_name_that_differ_in_more_than_resolution_are_said_to_be_defined_twice() -> None:
    """Found by a review: the comparison built a copy with the other's resolution, which may not tile (a 2h
    window in 45m tiles): a tiling error about neither feature instead of 'defined twice'."""
    a = Aggregate(entity="card", agg="count", window=timedelta(hours=2), name="x")
    b = Aggregate(
        entity="card", agg="count", window=timedelta(minutes=90), resolution=timedelta(minutes=45), name="x"
    )
    with pytest.raises(ConfigError) as e:
        FeatureSet("s", (a, b))
    assert str(e.value) == (
        "Feature 'x' is defined twice in feature set 's' (features 1 and 2): give one a 'name' of its own."
    )


@pytest.mark.parametrize("kind", [["aggregate"], {"a": 1}])
def test_a_kind_that_is_a_list_or_an_object_is_refused_in_one_line(kind: object) -> None:
    """Found by a review: a ``kind`` that is no text was looked up in a dict (TypeError: unhashable)."""
    refused = _refused({"kind": kind, "entity": "card", "agg": "count"})
    assert refused.startswith("f.json, feature 1: 'kind' must be one of aggregate, request, derived. Got ")


def test_a_file_nested_deeper_than_the_parser_goes_is_refused_in_one_line(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "features", "define", str(path)])
    assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
    assert r.output.startswith(f"Error: Feature set file '{path}': expected JSON text. Got an error ("), (
        r.output
    )
