"""Attribute values from NumPy (a backfill read into pandas, a feature matrix's row) are numbers to every rule
shape, as Python's are: a rule compared a ``numpy.float64`` as missing before, and a ``float32`` or an
``int64`` under every shape, so such charges silently matched nothing."""

from __future__ import annotations

import numpy as np
import pytest

from payfm.rules import rulesets

TEXT = """a: block if :card.count_declined_1h: >= 3
b: review if :card.count_declined_1h: + 0 >= 3
c: request_3ds if :card.count_declined_1h: in (3, 4)
d: allow if :amount_usd: < :card.count_declined_1h:
"""


@pytest.mark.parametrize("kind", [float, int, np.float64, np.float32, np.int64, np.int32, np.uint8])
def test_every_rule_shape_reads_a_numpy_number(kind: type) -> None:
    rs = rulesets.compile_text(None, TEXT)
    values = {"card.count_declined_1h": kind(3), "amount_usd": kind(2)}
    assert rs.matches(values) == ["a", "b", "c", "d"]
    assert rs.decide(values).rule == "c"  # request_3ds acts first
    assert rs.matches({"card.count_declined_1h": kind(2), "amount_usd": kind(2)}) == []


@pytest.mark.parametrize("nan", [float("nan"), np.float64("nan"), np.float32("nan")])
def test_a_nan_of_any_kind_is_missing(nan: object) -> None:
    rs = rulesets.compile_text(None, TEXT + "e: review if :card.count_declined_1h: is missing\n")
    assert rs.matches({"card.count_declined_1h": nan, "amount_usd": 1.0}) == ["e"]
