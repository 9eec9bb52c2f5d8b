"""Fixtures for the web UI tests: a database with real runs, and one headless Chromium."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from web_helpers import CHROMIUM, CHROMIUM_ARGS, populate, run_async


@pytest.fixture(scope="module")
def populated_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    db = str(tmp_path_factory.mktemp("ui") / "ui.db")
    run_async(populate(db))
    return db


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Debian Chromium for the browser tests (they live in one module, so this
    is one browser per session), driven by Playwright. Playwright's own browsers are never
    downloaded: the Makefile installs Debian's chromium. Each launch gets a fresh temporary
    profile (user data dir) that Playwright deletes afterwards.

    Module scope, not session: Playwright's sync API keeps an event loop running in the
    test thread while it is open, and tests after these ones call ``asyncio.run``."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"the browser tests need Debian's chromium at {CHROMIUM}: `make test` installs it "
            "(apt-get install chromium)",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
