"""Retention and garbage collection: delete old runs, then the chunks nobody refers to.

Chunks are shared across steps and runs, so deleting a run cannot delete its chunks directly.
Collection is mark and sweep: every chunk reference still in a journal marks the blobs it
needs; unmarked blobs are deleted, except those written in the last ``grace`` seconds, which
may belong to an entry being written right now (chunks are stored before their entry).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .errors import InvalidArgument
from .payloads import referenced_blobs
from .store.base import Maintenance


@dataclass(frozen=True, slots=True)
class GcReport:
    runs_deleted: int
    blobs_deleted: int
    blobs_kept: int


async def collect_garbage(
    store: Maintenance, *, older_than_days: float | None = None, grace: float = 3600.0
) -> GcReport:
    """Delete runs that ended more than ``older_than_days`` ago (if given), then every blob
    no remaining journal entry refers to."""
    if older_than_days is not None and older_than_days < 0:
        raise InvalidArgument(f"older_than_days must be >= 0, not {older_than_days!r}")
    runs_deleted = 0
    if older_than_days is not None:
        runs_deleted = await store.delete_finished_runs(time.time() - older_than_days * 86400)
    cutoff = time.time() - grace
    candidates = await store.blob_hashes(cutoff)
    if not candidates:
        return GcReport(runs_deleted, 0, 0)
    live = await referenced_blobs(store, await store.ref_payloads())
    dead = [h for h in candidates if h not in live]
    # A blob re-used after the mark phase has a newer written_at and survives the sweep.
    await store.delete_blobs(dead, cutoff)
    return GcReport(runs_deleted, len(dead), len(candidates) - len(dead))
