"""What a peer child process prints, and the crash marker every system's workload calls.

The driver (run.py) reads a child's stdout line by line:

* ``READY`` -- the crash marker was reached in ``prepare`` mode; the child now hangs in that
  step until the driver SIGKILLs it, so the run is interrupted *inside* a step, as a crash is.
* ``FIRST <time.time()> <seconds since the system began opening>`` -- in ``recover`` mode, the
  marker step ran again: the first step executed after the restart.
* ``RESULT <json>`` -- the child's measurement (seconds, counts); the last line it prints.

This module imports nothing but the standard library, so timing a child from the outside
measures interpreter start, the system's own imports and its recovery, not the harness.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

#: "prepare" (hang in the marker) or "recover" (report the marker); set by child.py
MODE = "measure"
_opened_at = [time.perf_counter()]


def opening() -> None:
    """Called just before a system opens its database / connects / launches."""
    _opened_at[0] = time.perf_counter()


def _first_line() -> str:
    return f"FIRST {time.time()!r} {time.perf_counter() - _opened_at[0]!r}"


def marker_sync() -> None:
    if MODE == "prepare":
        print("READY", flush=True)
        time.sleep(3600)  # the driver kills us here
    elif MODE == "recover":
        print(_first_line(), flush=True)


async def marker_async() -> None:
    if MODE == "prepare":
        print("READY", flush=True)
        await asyncio.sleep(3600)  # the driver kills us here
    elif MODE == "recover":
        print(_first_line(), flush=True)


def result(**fields: Any) -> None:
    fields["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(fields), flush=True)
    sys.stdout.flush()


def timed(start: float) -> float:
    return time.perf_counter() - start


def since_opening() -> float:
    return time.perf_counter() - _opened_at[0]
