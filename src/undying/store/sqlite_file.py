"""What can be wrong with an SQLite database file, said so a user can act on it.

SQLite reports an unusable file in its own terms ("unable to open database file", "attempt to
write a readonly database"), often only at the first write, and sometimes not at all: opened
read-only, a file reads fine and fails later. undying checks up front what it needs (a
writable file in a writable directory: SQLite's WAL and undying's lock files live next to the
database) and turns each failure into one ``StoreError`` line that names the file, what is
wrong and what to do.
"""

from __future__ import annotations

import os
import sqlite3
import time

from ..errors import StoreError

#: what to do about a damaged file (its page, or its migration ledger: see ``migrations``)
RECOVER = "restore it from a backup (`sqlite3 {path} .recover` can often salvage its rows)"


def read_only(path: str, what: str = "") -> StoreError:
    return StoreError(
        f"{what or repr(path)} is read-only: undying needs write access to the database file "
        "and its directory (WAL and lock files live next to it); fix the permissions or the "
        "mount, or copy the database somewhere writable"
    )


def check_writable(path: str) -> None:
    """Refuse, before SQLite opens it, a file undying could only read.

    SQLite silently opens a file it cannot write read-only; reads then succeed and the first
    write fails, deep inside a run. ``os.access`` sees what the kernel enforces, also for
    root: an immutable file (``chattr +i``) or a read-only mount."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StoreError(
            f"cannot open {path!r}: its directory {directory!r} does not exist; create it "
            "first (undying creates the database file, not its directory)"
        )
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise read_only(path)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise read_only(path, f"the directory of {path!r} ({directory!r})")


def enable_wal(db: sqlite3.Connection, busy_timeout: float) -> None:
    """Put the database in WAL mode, waiting up to ``busy_timeout`` for a lock to take it.

    Switching a new file to WAL needs an exclusive lock, and SQLite refuses it at once, busy
    timeout or not, while another connection holds the file (its busy handler is skipped
    there to avoid a deadlock). Workers started together on a file nobody created yet meet
    this: seen in 11 of 300 first opens by three processes at once. So retry here, with the
    busy timeout's own patience; an already-WAL file passes on the first try."""
    deadline = time.monotonic() + busy_timeout
    delay = 0.002
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
            if not busy or time.monotonic() >= deadline:
                raise
        time.sleep(delay)  # start-up only; SQLite's own busy handler sleeps the same way
        delay = min(delay * 2, 0.05)


def open_error(path: str, exc: sqlite3.Error | OSError, busy_timeout: float) -> StoreError:
    """The StoreError for a failure while opening or migrating ``path``."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_NOTADB"):
        return StoreError(
            f"{path!r} is not an SQLite database ({exc}): point the database URL at an undying "
            "database, or move this file out of the way and let undying create a new one"
        )
    if name.startswith("SQLITE_CORRUPT"):
        return StoreError(f"{path!r} is damaged ({exc}): " + RECOVER.format(path=path))
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM")) or isinstance(exc, PermissionError):
        return read_only(path)
    if name.startswith("SQLITE_FULL"):
        return StoreError(f"{path!r}: the disk is full ({exc}); free some space and retry")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreError(
            f"{path!r} stayed locked by another process for more than {busy_timeout:g} s "
            f"({exc}); retry when its long write is over"
        )
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return StoreError(f"cannot use SQLite database {path!r}: {detail}")
