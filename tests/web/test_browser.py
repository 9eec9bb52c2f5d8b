"""End to end in headless Chromium: a real worker process runs the agents, a real uvicorn
server serves the UI on loopback, and the browser does what an operator does.

The run page's screenshot is saved to tests/web/artifacts/ (git-ignored); its path is printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import web_agents
from playwright.sync_api import expect
from web_helpers import ARTIFACTS, TOKEN, run_async, serve, wait_for_status, worker_process

from undying.web.server import app_backend

LIVE_AND_NOT_RELOADED = """() => {
    const badge = document.querySelector('#live-header .badge');
    return badge && badge.textContent.trim() === 'completed' && window.__marker === 'same page';
}"""


async def start_runs(db: str) -> None:
    async with web_agents.make_app(db, worker=False) as client:
        await client.start("research-agent", "durable agents", run_id="trip-42")
        await client.start("hostile-output", run_id="xss")
    await wait_for_status(db, "trip-42", {"waiting"})
    await wait_for_status(db, "xss", {"completed"})


def test_an_operator_follows_a_run_and_approves_it_live(browser: Any, tmp_path: Path) -> None:
    db = str(tmp_path / "e2e.db")
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    with worker_process(db), serve(app_backend(db)) as url:
        run_async(start_runs(db))

        page.goto(url + "/")  # the list, with its counts
        run_row = page.locator("tr[data-href='/runs/trip-42']")
        expect(run_row).to_contain_text("waiting")
        expect(page.locator(".tab.status-waiting .count")).to_have_text("1")
        page.fill("input[name=q]", "trip")  # filtering by text in the run id (htmx)
        expect(page.locator("tr[data-href='/runs/xss']")).to_have_count(0)
        expect(run_row).to_have_count(1)
        page.get_by_role("link", name="trip-42", exact=True).click()

        expect(page.locator("#live-header .badge")).to_have_text("waiting")  # the run page
        rows = page.locator(".tl-row")
        assert rows.count() >= 16
        expect(rows.filter(has_text="web_agents:web_search")).to_have_count(3)
        expect(rows.filter(has_text="2 retries").first).to_be_visible()
        expect(rows.filter(has_text="approval")).to_contain_text("waiting")
        rows.nth(5).click()  # a page fetched as a large, offloaded dataclass
        expect(page.locator("#detail")).to_contain_text("offloaded in chunks")
        expect(page.locator("#detail pre.value")).to_contain_text("Paragraph 3 of")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "run-page.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"\nrun page screenshot: {shot}")

        page.evaluate("window.__marker = 'same page'")
        page.fill("textarea[name=payload]", '{"approved": true, "by": "ana"}')
        page.click("button:has-text('Send event')")
        expect(page.locator("#notices")).to_contain_text("Event delivered")
        page.wait_for_function(LIVE_AND_NOT_RELOADED, timeout=30_000)  # pushed, not reloaded
        expect(page.locator("#live-panels")).to_contain_text('"by": "ana"')
        expect(page.locator("#live-indicator")).to_contain_text("finished")
        page.screenshot(path=str(ARTIFACTS / "run-page-completed.png"), full_page=True)

        page.goto(url + "/runs/xss")  # hostile values are text, and nothing ran
        expect(page.locator("#live-panels pre.value").first).to_have_text(web_agents.HOSTILE)
        assert page.evaluate("window.__pwned") is None
        assert page.locator("img[src=x]").count() == 0
        status = page.evaluate(
            "fetch('/runs/trip-42/cancel', {method: 'POST'}).then(r => r.status)"
        )
        assert status == 403  # a POST without the page's CSRF token

    with serve(app_backend(db), token=TOKEN, allowed_hosts=None) as url:
        assert page.goto(url + "/").status == 401
        response = page.goto(url + f"/runs/trip-42?token={TOKEN}")
        assert response.status == 200 and page.url == url + "/runs/trip-42"
        expect(page.locator("#live-header .badge")).to_have_text("completed")
        stranger = browser.new_page()  # another browser profile has no cookie
        assert stranger.goto(url + "/runs/trip-42").status == 401
        stranger.close()
    page.close()
    assert errors == []
