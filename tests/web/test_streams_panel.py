"""The run page's stream panels: a run's streams, their items and their text, kept live by the
page's server-sent events as the run publishes more."""

from __future__ import annotations

from pathlib import Path

import web_agents
from starlette.testclient import TestClient
from web_helpers import run_async

from undying.testing import wait_for_status
from undying.web.routes import create_app
from undying.web.security import LOOPBACK_NAMES
from undying.web.server import app_backend


async def _start(db: str) -> None:
    app = web_agents.make_app(db)
    async with app:
        handle = await app.start("chat-answer", run_id="chat-1")
        await wait_for_status(handle, "waiting")  # released: it waits in the database


async def _more(db: str) -> None:
    app = web_agents.make_app(db)
    async with app:
        await app.send_event("chat-1", "more")
        assert await app.handle("chat-1").result(timeout=20) == "answered"


def test_the_run_page_shows_its_streams_live(tmp_path: Path) -> None:
    db = str(tmp_path / "ui.db")
    run_async(_start(db))
    app = create_app(app_backend(db), allowed_hosts=LOOPBACK_NAMES)
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        page = client.get("/runs/chat-1").text
        assert 'data-stream="answer"' in page and 'data-stream="progress"' in page
        # What a reader shows: the cut attempt's "Hel" dropped at the marker.
        assert '<pre class="stream-text">Hello</pre>' in page
        assert "runs again, attempt 2: its 1 value(s) before are void" in page
        assert "1 item · closed" in page and "4 items · open" in page
        updates: list[str] = []
        with client.stream("GET", "/runs/chat-1/stream") as events:
            block: list[str] = []
            for line in events.iter_lines():
                if line:
                    block.append(line)
                    continue
                text = "\n".join(block)
                block = []
                if text.startswith("event: update"):
                    updates.append(text)
                    if len(updates) == 1:  # the run publishes more, in another App
                        run_async(_more(db))
                if text.startswith("event: end"):
                    break
    last = updates[-1]
    assert "5 items · ended with the run" in last
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in last  # escaped, as any value
    assert "<script>window.__pwned" not in last
