"""Checks on what users hand to public entry points, with errors that say how to fix it."""

from __future__ import annotations

import datetime as dt
import math
import re

from .errors import InvalidArgument

_RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+=-]{0,199}")
_EVENT = re.compile(r"[^\x00-\x1f]{1,200}")
MAX_EVENT_BYTES = 1 << 20


def check_run_id(run_id: object) -> str:
    """Run ids appear in URLs, logs, idempotency keys and file names: keep them plain."""
    if not isinstance(run_id, str):
        raise InvalidArgument(f"a run id must be a string, not {type(run_id).__name__}")
    if not _RUN_ID.fullmatch(run_id):
        raise InvalidArgument(
            f"malformed run id {run_id!r}: use 1-200 characters from letters, digits and "
            "_ . : @ + = - (not starting with a punctuation mark)"
        )
    return run_id


def check_event_name(name: object) -> str:
    if not isinstance(name, str) or not _EVENT.fullmatch(name):
        raise InvalidArgument(
            f"malformed event name {name!r}: use a string of 1-200 printable characters"
        )
    return name


def check_event_payload(encoded: bytes, name: str) -> None:
    if len(encoded) > MAX_EVENT_BYTES:
        raise InvalidArgument(
            f"event {name!r} is {len(encoded)} bytes encoded, over the {MAX_EVENT_BYTES}-byte "
            "limit: store large data elsewhere (or in a step) and send a reference"
        )


def check_seconds(value: float | dt.timedelta, label: str) -> float:
    """Seconds from a number or a timedelta, for sleeps and timeouts."""
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidArgument(f"{label} takes seconds (a number) or a timedelta, not {value!r}")
    if math.isnan(seconds) or seconds < 0:
        raise InvalidArgument(f"{label} must not be negative, got {value!r}")
    return seconds
