"""Storage backends. ``store_from_url`` picks one from a URL and imports it lazily, so an app on
SQLite never pays for importing psycopg."""

from __future__ import annotations

import os

from ..errors import InvalidArgument
from .base import Store

DEFAULT_URL = "sqlite:///undying.db"


def store_from_url(url: str | None, *, durability: str = "normal") -> Store:
    """Build the store for ``url`` (default: $UNDYING_DATABASE_URL, else ./undying.db)."""
    url = url or os.environ.get("UNDYING_DATABASE_URL") or DEFAULT_URL
    if not isinstance(url, str):
        raise InvalidArgument(f"database URL must be a string, not {type(url).__name__}")
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        store: Store = PostgresStore(url, durability=durability)
        return store
    if url.startswith("memory://"):  # tests and demos: nothing survives the process
        from .memory import MemoryStore

        return MemoryStore(url, durability=durability)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
    elif url.startswith("sqlite://"):
        raise InvalidArgument(
            f"bad SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    elif "://" in url:
        raise InvalidArgument(
            f"unsupported database URL {url!r}: use sqlite:///path.db, a file path, "
            "postgresql://host/dbname, or memory:// (in this process only, for tests)"
        )
    else:
        path = url
    if not path or path == ":memory:":
        raise InvalidArgument(
            "undying needs a SQLite *file* (several processes share it and it must outlive "
            "the process); use a temporary file in tests (see undying.testing), or memory:// "
            "for a database in this process only"
        )
    from .sqlite import SQLiteStore

    return SQLiteStore(path, durability=durability)


__all__ = ["DEFAULT_URL", "Store", "store_from_url"]
