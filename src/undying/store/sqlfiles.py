"""Loading SQL from the package's ``.sql`` files: numbered migrations and named queries.

SQL lives in files, not in Python strings, so the schema can be read, diffed and reviewed as
SQL, and ``undying migrate`` applies exactly what is shipped.
"""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def queries(dialect: str) -> dict[str, str]:
    """Named blocks of ``sql/<dialect>/queries.sql`` (``-- name: x`` starts block x)."""
    text = resources.files("undying.store").joinpath("sql", dialect, "queries.sql").read_text()
    parts = _NAME.split(text)
    out: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        out[name] = "\n".join(lines).strip()
    return out


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every ``NNN_*.sql`` migration, in order."""
    folder = resources.files("undying.store").joinpath("sql", dialect)
    found: list[tuple[int, str, str]] = []
    for item in folder.iterdir():
        match = re.match(r"^(\d+)_\w+\.sql$", item.name)
        if match:
            found.append((int(match.group(1)), item.name, item.read_text()))
    return sorted(found)
