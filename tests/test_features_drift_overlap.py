"""`payfm features drift` warns when its two windows overlap (found by a review: `--from 2026-01-10
--reference-from 2026-01-05 --reference-to 2026-01-25` compared 15 shared days with themselves, silently)."""

from __future__ import annotations

import pytest

from payfm.cli.features import _overlap
from payfm.evaluation.drift import DriftReport


def _report(reference: tuple[str | None, str | None], current: tuple[str | None, str | None]) -> DriftReport:
    return DriftReport("default", reference, current, 10, 10, False, ())


@pytest.mark.parametrize(
    ("reference", "current", "shared"),
    [
        (
            ("2026-01-05T00:00:00+00:00", "2026-01-25T00:00:00+00:00"),
            ("2026-01-10T00:00:00+00:00", None),
            "2026-01-10 00:00 .. 2026-01-25 00:00",
        ),
        (
            (None, "2026-02-01T00:00:00+00:00"),
            (None, "2026-01-01T00:00:00+00:00"),
            "the log's start .. 2026-01-01 00:00",
        ),
        (
            ("2026-01-05T00:00:00+00:00", None),
            ("2026-01-01T00:00:00+00:00", None),
            "2026-01-05 00:00 .. the log's end",
        ),
        (
            ("2026-01-05T00:00:00+00:00", "2026-01-10T00:00:00+00:00"),
            ("2026-01-10T00:00:00+00:00", None),
            None,
        ),
        (
            (None, "2026-01-10T00:00:00+00:00"),
            ("2026-01-20T00:00:00+00:00", "2026-02-01T00:00:00+00:00"),
            None,
        ),
    ],
)
def test_the_span_two_windows_share(
    reference: tuple[str | None, str | None], current: tuple[str | None, str | None], shared: str | None
) -> None:
    assert _overlap(_report(reference, current)) == shared  # windows are [start, end): touching is apart
