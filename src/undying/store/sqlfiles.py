"""Loading SQL from the package's ``.sql`` files: numbered migrations and named queries.

SQL lives in files, not in Python strings, so the schema can be read, diffed and reviewed as
SQL, and ``undying migrate`` applies exactly what is shipped.

The files are read with plain ``open`` when the package sits in a directory (the usual case):
``importlib.resources`` costs about 3 ms of imports (zipfile, tempfile, shutil, bz2, lzma)
on the way to a worker's first step. It is still used when the package is not on the file
system (a zip import), where only it can read the files.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_SQL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sql")


def queries(dialect: str) -> dict[str, str]:
    """Named blocks of ``sql/<dialect>/queries.sql`` (``-- name: x`` starts block x)."""
    text = _read(dialect, "queries.sql")
    parts = _NAME.split(text)
    out: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        out[name] = "\n".join(lines).strip()
    return out


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every ``NNN_*.sql`` migration, in order."""
    found: list[tuple[int, str, str]] = []
    for name in _names(dialect):
        match = re.match(r"^(\d+)_\w+\.sql$", name)
        if match:
            found.append((int(match.group(1)), name, _read(dialect, name)))
    return sorted(found)


def _names(dialect: str) -> list[str]:
    folder = os.path.join(_SQL_DIR, dialect)
    if os.path.isdir(folder):
        return os.listdir(folder)
    return [item.name for item in _packaged(dialect).iterdir()]


def _read(dialect: str, name: str) -> str:
    folder = os.path.join(_SQL_DIR, dialect)
    if os.path.isdir(folder):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            return f.read()
    return _packaged(dialect).joinpath(name).read_text(encoding="utf-8")


def _packaged(dialect: str) -> Traversable:
    from importlib import resources

    return resources.files("undying.store").joinpath("sql", dialect)
