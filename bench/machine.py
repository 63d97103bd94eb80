"""One line naming the machine a benchmark ran on, for its header: figures differ between hosts of one kind.

>>> "cores" in describe()
True
"""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_traits() -> str:
    """What tells apart hosts that share a model name: the clock and the widest vector unit (Linux), e.g.
    ``2445 MHz, AVX2``; empty elsewhere. Torch's kernels run about twice as fast with AVX-512."""
    mhz, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz") and not mhz:
                    mhz = f"{float(line.split(':', 1)[1]):.0f} MHz"
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except (OSError, ValueError):
        return ""
    vector = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags), "")
    return ", ".join(t for t in (mhz, vector) if t)


def describe() -> str:
    """``2026-11-28 18:30 UTC on AMD EPYC (x86_64; 2445 MHz, AVX2), 2 cores, Python 3.11.7, load average
    0.42``."""
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    traits = cpu_traits()
    arch = platform.machine() + (f"; {traits}" if traits else "")
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {cpu_model()} ({arch}), "
        f"{os.cpu_count()} cores, Python {platform.python_version()}{load}"
    )
