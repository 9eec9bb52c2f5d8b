"""How undying's PostgreSQL sessions are set up and checked: timeouts, keepalives, session
options, spotting a connection the server ended, and keeping passwords out of messages.

Kept apart from the store so the store reads as what it stores, not how it stays connected.
"""

from __future__ import annotations

import re
import select
from typing import Any

import psycopg

CONNECT_TIMEOUT = 10.0
RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
#: TCP keepalives on the lifeline, so a silently dropped network is noticed within ~30 s
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}

#: A worker frozen inside ctx.transaction (SIGSTOP, GC pause) holds its run's row lock, which
#: keeps other workers from taking the run over; the server ends such a session after this
#: long idle in its transaction (which also frees its liveness lock, so the take-over is
#: immediate). fn's own statements are not idle time.
IDLE_IN_TRANSACTION_MS = 10_000
SESSION_OPTIONS = f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"


def is_stale(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether the server has ended this idle connection, found without a round trip.

    An idle pooled connection receives nothing unless the server ended it (a restart, an
    admin's ``pg_terminate_backend``): then its socket turns readable (the goodbye message,
    then end of file).
    """
    if conn.closed or conn.broken:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


def redact(url: str) -> str:
    """The URL without its password, for error messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)
