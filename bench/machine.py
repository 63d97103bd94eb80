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


def describe() -> str:
    """``2026-11-28 18:30 UTC on AMD EPYC (x86_64), 2 cores, Python 3.11.7, load average 0.42``."""
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {cpu_model()} ({platform.machine()}), "
        f"{os.cpu_count()} cores, Python {platform.python_version()}{load}"
    )
