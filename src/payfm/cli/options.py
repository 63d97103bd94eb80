"""Click types shared by commands: numbers of days and shares that refuse NaN and the infinities.

click's ``FloatRange`` passes ``nan`` (NaN compares false with both bounds) and ``inf`` where it has no upper
bound; either ended in a ValueError or OverflowError traceback once the value reached a ``timedelta`` or a
cut of the timeline, or was stored as is (``--downsample nan``: a registry entry that is no longer JSON).
"""

from __future__ import annotations

import math
from typing import Any

import click

from payfm.training.splits import MAX_DAYS


class FiniteFloatRange(click.FloatRange):
    """A float option within a range, and finite: ``nan``, ``inf`` and ``-inf`` are refused naming the option.

    Example:
        >>> FiniteFloatRange(0.0, 1.0, min_open=True).convert("0.5", None, None)
        0.5
    """

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(
                f"expected a finite number in the range {self._describe_range()}. Got {value!r}.", param, ctx
            )
        return super().convert(number, param, ctx)


# A period or a label horizon, in days: > 0 (up to a century: past any of them, where timedelta and the
# microsecond timeline are far from overflowing)
DAYS = FiniteFloatRange(0.0, MAX_DAYS, min_open=True)
# A gap, in days: >= 0
GAP_DAYS = FiniteFloatRange(0.0, MAX_DAYS)
# A share of rows kept: in (0, 1]
SHARE = FiniteFloatRange(0.0, 1.0, min_open=True)
