"""Durations in feature definitions: the bounds of windows, offsets and resolutions, how they are written
(``format_duration``, ``parse_duration``) and what is wrong when a window or offset does not tile
(``tiling_problem``)."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from payfm.errors import ConfigError

MIN_WINDOW = timedelta(minutes=1)
MAX_WINDOW = timedelta(days=365)
MAX_OFFSET = timedelta(days=3650)  # 10 years (keeps timedelta and the engines' integers in range)


def default_resolution(window: timedelta) -> timedelta:
    """Tile size for a window: 1 minute up to 2 hours, 1 hour beyond.

    Tiles are sparse (only tiles with events are kept) and cumulative, so a finer resolution costs memory only
    on hot keys (at most window / resolution tiles) and no time; two resolutions let the windows of an entity
    share state.
    """
    if window <= timedelta(hours=2):
        return timedelta(minutes=1)
    return timedelta(hours=1)


def format_duration(d: timedelta) -> str:
    """Shortest exact unit: 90s -> '90s', 3600s -> '1h', 86400s -> '1d', 5 min -> '5m', 0 -> '0s'.

    A duration with a fraction of a second (never valid in a definition) is shown exactly, so that an error
    message shows the value received: 1 min + 5 us -> '60.000005s'.
    """
    if d.microseconds:
        return f"{d.total_seconds():f}".rstrip("0") + "s"
    s = int(d.total_seconds())
    if s == 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


class TilingError(ConfigError):
    """A window or offset that is not a multiple of its resolution (:func:`tiling_problem`). ``str()`` says it
    in the DSL's terms, ``in_json`` in the JSON's keys (``window_s``, ``resolution_s``, ``offset_s``)."""

    def __init__(self, text: str, in_json: str) -> None:
        super().__init__(text)
        self.in_json = in_json


def tiling_problem(window: timedelta, offset: timedelta, res: timedelta, in_json: bool = True) -> str | None:
    """What is wrong with a window and an offset (in range) that are not multiples of the resolution ``res``,
    and resolutions and values that would do: in seconds and the JSON's keys if ``in_json``, else in the
    DSL's terms. None when they are multiples.

    >>> print(tiling_problem(timedelta(minutes=150), timedelta(0), timedelta(hours=1), in_json=False))
    the window must be a multiple of the resolution, 1h (the default for a window over 2h). Got 150m. \
Set a resolution that divides it, e.g. 1m or 30m, or the window to a multiple of 1h, e.g. 2h or 3h.
    """
    w, o, r = (int(d.total_seconds()) for d in (window, offset, res))
    bad = [(part, v) for part, v in (("window", w), ("offset", o)) if v % r]
    if not bad:
        return None

    def say(s: int) -> str:
        text = format_duration(timedelta(seconds=s))
        return f"{s} ({text})" if in_json else text

    def key(part: str) -> str:
        return f"'{part}_s'" if in_json else f"the {part}"

    resolution = say(r)
    if res == default_resolution(window):
        why = f"the default for a window {'up to' if w <= 7200 else 'over'} 2h"
        resolution = f"{r} ({format_duration(res)}, {why})" if in_json else f"{resolution} ({why})"
    subject = " and ".join(key(part) for part, _ in bad)
    text = (
        f"{subject} must be {'a multiple' if len(bad) == 1 else 'multiples'} of the resolution, "
        f"{resolution}. Got {' and '.join(say(v) for _, v in bad)}."
    )
    g = math.gcd(w, o)  # (the window when there is no offset)
    # resolutions that divide both, preferring those that tile an hour (1m, 5m, 30m...)
    fits = [d for d in range(60, min(w, 3600) + 1) if g % d == 0] or ([g] if 60 <= g <= w else [])
    fits = [d for d in fits if 3600 % d == 0] or fits
    tips = []
    if fits:
        them = "both the window and the offset" if o else "it"
        options = " or ".join(say(d) for d in sorted({fits[0], fits[-1]}))
        what = "'resolution_s' to one" if in_json else "a resolution"
        tips.append(f"{what} that divides {them}, e.g. {options}")
    step = str(r) if in_json else format_duration(res)
    if len(bad) == 1:
        part, v = bad[0]
        top = int((MAX_WINDOW if part == "window" else MAX_OFFSET).total_seconds())
        low = max(v // r * r, r if part == "window" else 0)
        near = " or ".join(say(m) for m in sorted({low, low + r}) if m <= top)
        tips.append(f"{key(part)} to a multiple of {step}, e.g. {near}")
    else:
        tips.append(f"{subject} to multiples of {step}")
    return f"{text} Set {', or '.join(tips)}."


_DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_duration(text: str, who: str) -> timedelta:
    """'15m', '1h', '7d' -> timedelta; a ConfigError naming ``who`` otherwise."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ConfigError(f"The {who} must be a duration like 15m, 1h or 30d. Got {text!r}.")
    n, unit = int(m.group(1)), m.group(2)
    return timedelta(seconds=n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])
