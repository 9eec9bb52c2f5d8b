"""Shared fixtures: every test gets its own SQLite file and a strict app."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from undying.testing import temp_app


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "undying.db")


@pytest.fixture
def app(db_path: str):  # type: ignore[no-untyped-def]
    return temp_app(db_path)


@pytest.fixture
def run() -> Iterator[object]:
    """Run a coroutine to completion on a fresh event loop."""

    def runner(coro):  # type: ignore[no-untyped-def]
        return asyncio.run(coro)

    yield runner
