"""Checks on what users hand to public entry points, with errors that say how to fix it."""

from __future__ import annotations

import datetime as dt
import math
import re
import time

from .errors import InvalidArgument

# Ids users choose never contain '~'; every id undying generates does, after the id it derives
# from: "parent~seq", "parent~gen.seq" (children), "source~fork-<8 hex>" (forks) and
# "schedule~tick-<UTC time to the second>" (a schedule's runs). The text after the last '~'
# tells them apart, so generated ids can neither collide with a user's id nor with each other.
# Idempotency keys add '#', which no run id contains (steps.py).
_RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+=-]{0,199}")
# A reference names an existing run: a plain head (long ones are children recorded before
# generated ids took '~': "parent.0" of a 200-character parent) and any generated suffixes.
_RUN_REF = re.compile(
    r"[A-Za-z0-9_][A-Za-z0-9_.:@+=-]*(?:~(?:\d+(?:\.\d+)?|fork-[0-9a-f]{8}|tick-\d{8}T\d{6}Z))*"
)
MAX_RUN_ID = 200
MAX_RUN_REF = 1000
_EVENT = re.compile(r"[^\x00-\x1f]{1,200}")
MAX_EVENT_BYTES = 1 << 20
#: stream values are stored inline, never chunked: a cap keeps rows (and readers) small
MAX_STREAM_VALUE_BYTES = 256 << 10


def check_run_id(run_id: object) -> str:
    """A new run's id, chosen by the user (``start(run_id=)``, ``fork(new_run_id=)``).

    Run ids appear in URLs, logs, idempotency keys and file names: keep them plain."""
    if not isinstance(run_id, str):
        raise InvalidArgument(f"a run id must be a string, not {type(run_id).__name__}")
    if not _RUN_ID.fullmatch(run_id):
        reserved = (
            " ('~' is reserved for the ids undying gives child and forked runs)"
            if "~" in run_id
            else ""
        )
        raise InvalidArgument(
            f"malformed run id {run_id!r}: use 1-{MAX_RUN_ID} characters from letters, digits "
            f"and _ . : @ + = - (not starting with a punctuation mark){reserved}"
        )
    return run_id


def check_run_ref(run_id: object) -> str:
    """The id of an existing run (handle, show, cancel, send_event, resume, fork source):
    a user's id or one undying generated for a child or a fork."""
    if not isinstance(run_id, str):
        raise InvalidArgument(f"a run id must be a string, not {type(run_id).__name__}")
    if len(run_id) > MAX_RUN_REF or not _RUN_REF.fullmatch(run_id):
        raise InvalidArgument(
            f"malformed run id {run_id!r}: a run id is 1-{MAX_RUN_ID} characters from letters, "
            "digits and _ . : @ + = - (not starting with a punctuation mark), followed for "
            "child, forked and scheduled runs by what undying adds (~3, ~1.3, "
            "~fork-1a2b3c4d, ~tick-20261202T160500Z), "
            f"{MAX_RUN_REF} characters in all"
        )
    return run_id


def child_run_id(parent_id: str, generation: int, seq: int) -> str:
    """The id of the child started at position ``seq`` of ``parent_id``'s ``generation``.

    Fixed by the code, so a replayed parent finds the child it started before; positions
    restart at 0 after ``continue_as_new``, so later generations put theirs in the id."""
    child_id = f"{parent_id}~{generation}.{seq}" if generation else f"{parent_id}~{seq}"
    if len(child_id) > MAX_RUN_REF:
        raise InvalidArgument(
            f"the child run of {parent_id[:40]!r}... at position {seq} would get a "
            f"{len(child_id)}-character id, over the {MAX_RUN_REF}-character limit: child "
            "workflows are nested too deep (each level adds to the id): nest fewer levels "
            "(a parent can start many children side by side) or give the top run a shorter id"
        )
    return child_id


def fork_run_id(source_id: str, tag: str) -> str:
    """The default id of a fork of ``source_id``; ``tag`` is 8 random hex digits."""
    fork_id = f"{source_id}~fork-{tag}"
    if len(fork_id) > MAX_RUN_REF:
        raise InvalidArgument(
            f"a fork of {source_id[:40]!r}... would get a {len(fork_id)}-character id, over "
            f"the {MAX_RUN_REF}-character limit: pass new_run_id= (or --new-id)"
        )
    return fork_id


def tick_run_id(schedule: str, tick: float) -> str:
    """The id of the run of ``schedule``'s tick at ``tick`` (epoch seconds, whole): fixed by
    the name and the time, so every worker that fires the tick names the same run."""
    return f"{schedule}~tick-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(int(tick)))}"


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


def check_stream_name(name: object) -> str:
    """A stream's name (``ctx.publish``, ``app.read_stream``): like an event's."""
    if not isinstance(name, str) or not _EVENT.fullmatch(name):
        raise InvalidArgument(
            f"malformed stream name {name!r}: use a string of 1-200 printable characters"
        )
    return name


def check_stream_value(encoded: bytes, name: str) -> None:
    if len(encoded) > MAX_STREAM_VALUE_BYTES:
        raise InvalidArgument(
            f"a value published to stream {name!r} is {len(encoded)} bytes encoded, over the "
            f"{MAX_STREAM_VALUE_BYTES}-byte limit: streams carry small increments (tokens, "
            "progress); keep large data in a step's result or ctx.state and publish a "
            "reference to it"
        )


def check_offset(offset: object) -> int:
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise InvalidArgument(
            f"a stream offset is a whole number >= 0 (0 reads from the start), not {offset!r}"
        )
    return offset


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


def check_dedup(key: object, window: object) -> float | None:
    """A start's ``dedup_key`` and ``dedup_window``: both or neither; the window in seconds."""
    if key is None and window is None:
        return None
    if key is None or window is None:
        given, missing = ("dedup_key", "dedup_window") if window is None else (
            "dedup_window",
            "dedup_key",
        )
        raise InvalidArgument(
            f"{given} needs {missing}: a start with a dedup key returns the run that holds "
            "the key if one was started with it within the window, so pass both, e.g. "
            "dedup_key=delivery_id, dedup_window=timedelta(hours=1)"
        )
    if not isinstance(key, str) or not key or len(key) > 200:
        raise InvalidArgument(f"dedup_key must be a string of 1-200 characters, not {key!r}")
    seconds = check_seconds(window, "dedup_window")  # type: ignore[arg-type]
    if seconds == 0 or math.isinf(seconds):
        raise InvalidArgument(
            f"dedup_window must be a positive, finite duration (seconds or a timedelta), "
            f"not {window!r}"
        )
    return seconds
