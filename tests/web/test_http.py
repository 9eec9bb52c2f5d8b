"""The UI's HTTP layer through Starlette's TestClient (httpx), on a real SQLite database with
real runs: access rules, CSRF, escaping, the pages' contents, actions and live streams."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import web_agents
from starlette.testclient import TestClient
from web_helpers import TOKEN, get_run, populate, run_async

from undying.errors import InvalidArgument
from undying.store.base import ReadSide
from undying.web.routes import Backend, OpenBackend, create_app
from undying.web.security import LOOPBACK_NAMES, check_bind
from undying.web.server import app_backend

HOSTILE_RAW = ("<script>window.__pwned", "<img src=x onerror")


@contextlib.contextmanager
def client_for(open_backend: OpenBackend, *, token: str | None = None) -> Iterator[TestClient]:
    """A client of the UI as ``undying ui`` builds it (any Host with a token, loopback
    names only without)."""
    hosts = None if token else LOOPBACK_NAMES
    app = create_app(open_backend, token=token, allowed_hosts=hosts)
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        yield client


@pytest.fixture
def fresh_db(tmp_path: Path) -> str:
    """A database of its own, for a test that changes runs."""
    db = str(tmp_path / "ui.db")
    run_async(populate(db))
    return db


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


# -- escaping ------------------------------------------------------------------------------------
def test_hostile_values_show_as_text_on_every_page(populated_db: str) -> None:
    with client_for(app_backend(populated_db)) as client:
        pages = [client.get("/"), client.get("/runs/xss"), client.get("/runs/xss/download/output")]
        with client.stream("GET", "/runs/xss/stream") as stream:  # ended run: one update, end
            pages.append(stream)
            sse = "".join(stream.iter_text())
    for response in pages:
        assert response.status_code == 200
    for html in (pages[0].text, pages[1].text, sse):
        for raw in HOSTILE_RAW:
            assert raw not in html
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in pages[1].text
    assert "event: update" in sse and "event: end" in sse
    assert pages[2].text.startswith("<script>")  # a download is the value itself, as text
    assert pages[2].headers["content-type"].startswith("text/plain")
    assert pages[2].headers["x-content-type-options"] == "nosniff"


def test_pages_forbid_inline_scripts_and_framing(populated_db: str) -> None:
    with client_for(app_backend(populated_db)) as client:
        response = client.get("/runs/xss")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY"


# -- tokens --------------------------------------------------------------------------------------
def test_with_a_token_every_request_without_it_gets_401(populated_db: str) -> None:
    with client_for(app_backend(populated_db), token=TOKEN) as client:
        for method, path in [
            ("GET", "/"),
            ("GET", "/runs/trip-42"),
            ("GET", "/stream"),
            ("GET", "/static/app.js"),
            ("GET", "/no/such/page"),
            ("POST", "/runs/trip-42/cancel"),
        ]:
            response = client.request(method, path)
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"].startswith("Bearer")
        wrong = client.get("/", headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"})
        assert wrong.status_code == 401
        assert client.get("/?token=nope").status_code == 401
        bearer = client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200 and "trip-42" in bearer.text
    assert get_run(populated_db, "trip-42").status == "waiting"  # the refused POST did nothing


def test_a_token_in_the_url_once_becomes_a_cookie_and_leaves_the_url(populated_db: str) -> None:
    with client_for(app_backend(populated_db), token=TOKEN) as client:
        first = client.get(f"/?status=failed&token={TOKEN}", follow_redirects=False)
        assert first.status_code == 303
        assert first.headers["location"] == "/?status=failed"
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and TOKEN not in cookie
        after = client.get(first.headers["location"])
        assert after.status_code == 200 and "digest" in after.text
        assert client.get("/static/style.css").status_code == 200
    with client_for(app_backend(populated_db), token=TOKEN) as other:  # a new browser
        assert other.get("/").status_code == 401


def test_start_up_refuses_other_addresses_without_a_token() -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10", "ui.example.com"):
        with pytest.raises(InvalidArgument, match="--token"):
            check_bind(host, None)
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        check_bind(host, None)
    with pytest.raises(InvalidArgument, match="at least 16"):
        check_bind("0.0.0.0", "short")
    check_bind("0.0.0.0", TOKEN)


def test_the_ui_command_names_the_option_it_needs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "undying", "--db", "ui.db", "ui", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1
    assert "--token" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_without_a_token_only_loopback_host_names_are_answered(populated_db: str) -> None:
    """A site whose name was re-pointed at 127.0.0.1 (DNS rebinding) reads nothing."""
    with client_for(app_backend(populated_db)) as client:
        assert client.get("/", headers={"Host": "attacker.example"}).status_code == 421
        assert client.get("/", headers={"Host": "attacker.example:8765"}).status_code == 421
        assert client.get("/", headers={"Host": "localhost:8765"}).status_code == 200
        assert client.get("/", headers={"Host": "[::1]:8765"}).status_code == 200


# -- CSRF ----------------------------------------------------------------------------------------
def test_a_post_without_the_sessions_csrf_token_is_refused(populated_db: str) -> None:
    with (
        client_for(app_backend(populated_db)) as client,
        client_for(app_backend(populated_db)) as other,
    ):
        token = csrf_of(client.get("/runs/trip-42").text)
        other_token = csrf_of(other.get("/runs/trip-42").text)
        refused = [
            client.post("/runs/trip-42/cancel"),
            client.post("/runs/trip-42/cancel", data={"csrf_token": "0" * 64}),
            client.post("/runs/trip-42/cancel", data={"csrf_token": other_token}),
            client.post(
                "/runs/trip-42/cancel",
                data={"csrf_token": token},
                headers={"Origin": "http://127.0.0.1:3000"},
            ),
            client.post(
                "/runs/trip-42/cancel",
                data={"csrf_token": token},
                headers={"Sec-Fetch-Site": "cross-site"},
            ),
        ]
        for response in refused:
            assert response.status_code == 403
            assert "refused" in response.text
        assert get_run(populated_db, "trip-42").status == "waiting"
        bad_json = client.post(
            "/runs/trip-42/events",
            data={"csrf_token": token, "name": "approval", "payload": "{not json"},
            headers={"Origin": "http://127.0.0.1:8765"},
        )
        assert bad_json.status_code == 400 and "must be JSON" in bad_json.text
        htmx = client.post(
            "/runs/trip-42/events",
            data={"name": "note", "payload": '{"from": "a test"}'},
            headers={"X-CSRF-Token": token, "HX-Request": "true"},
        )
        assert htmx.status_code == 200 and "Event delivered" in htmx.text
        assert "<html" not in htmx.text  # htmx gets the notice alone


def test_actions_go_through_the_app_and_redirect(fresh_db: str) -> None:
    populated_db = fresh_db
    with client_for(app_backend(populated_db)) as client:
        token = csrf_of(client.get("/runs/digest").text)
        resumed = client.post(
            "/runs/digest/resume", data={"csrf_token": token}, follow_redirects=False
        )
        assert resumed.status_code == 303
        assert resumed.headers["location"] == "/runs/digest?done=resumed"
        assert get_run(populated_db, "digest").status == "pending"  # no worker: it waits
        again = client.post("/runs/xss/resume", data={"csrf_token": token})
        assert "Nothing to resume" in again.text
        forked = client.post(
            "/runs/digest/fork",
            data={"csrf_token": token, "from_step": "1", "new_run_id": "digest-again"},
            follow_redirects=False,
        )
        assert forked.headers["location"] == "/runs/digest-again?done=forked"
        page = client.get(forked.headers["location"])
        assert "Forked" in page.text and "format_citation" in page.text
        bad = client.post("/runs/digest/fork", data={"csrf_token": token, "from_step": "x"})
        assert bad.status_code == 400 and "journal position" in bad.text


# -- what the pages show -------------------------------------------------------------------------
def test_the_list_filters_counts_and_pages(populated_db: str) -> None:
    with client_for(app_backend(populated_db)) as client:
        everything = client.get("/").text
        failed = client.get("/?status=failed").text
        text = client.get("/?q=trip").text
        nothing = client.get("/?age=15m&workflow=no-such-workflow").text
        junk = client.get("/?status=bogus&offset=-3&age=forever")
    assert all(rid in everything for rid in ("trip-42", "xss", "digest"))
    assert ">digest<" in failed and ">xss<" not in failed
    assert ">trip-42<" in text and ">xss<" not in text
    assert "No runs match" in nothing
    assert junk.status_code == 200  # bad filters fall back to "all"
    assert re.search(r"Waiting <span class=\"count\">\d+</span>", everything)


def test_the_run_page_shows_steps_retries_failures_and_waits(populated_db: str) -> None:
    with client_for(app_backend(populated_db)) as client:
        page = client.get("/runs/trip-42").text
        failed = client.get("/runs/trip-42/entries/8").text
        missing = client.get("/runs/no-such-run")
        malformed = client.get("/runs/%3Cx%3E")
    assert page.count('class="tl-row') >= 16
    assert "web_agents:web_search" in page and "2 retries" in page
    assert "failed" in page and "event approval" in page
    assert "builtins.PermissionError" in failed and "Traceback" in failed
    assert "403 Forbidden" in failed
    assert missing.status_code == 404 and "no run with id" in missing.text
    assert malformed.status_code == 404 and "malformed run id" in malformed.text


def test_large_offloaded_payloads_are_readable(populated_db: str) -> None:
    with client_for(app_backend(populated_db)) as client:
        fragment = client.get("/runs/trip-42/entries/5").text
        whole = client.get("/runs/trip-42/download/5")
    assert "offloaded in chunks" in fragment
    assert "web_agents.Page" in fragment and "Paragraph 3 of" in fragment
    assert whole.headers["content-type"].startswith("application/json")
    assert '"__type__": "web_agents.Page"' in whole.text
    assert "Paragraph 399 of" in whole.text  # the download holds all of it


class ReadOnly(ReadSide):
    """Only the read side of a store: any other call the UI made would fail."""

    def __init__(self, store: ReadSide) -> None:
        self._store = store
        self.url = store.url

    async def get_run(self, run_id: str) -> Any:
        return await self._store.get_run(run_id)

    async def list_runs(self, flt: Any) -> Any:
        return await self._store.list_runs(flt)

    async def count_runs_by_status(self, flt: Any) -> Any:
        return await self._store.count_runs_by_status(flt)

    async def list_workflows(self) -> Any:
        return await self._store.list_workflows()

    async def load_journal_meta(self, run_id: str) -> Any:
        return await self._store.load_journal_meta(run_id)

    async def load_payloads(self, run_id: str, seqs: Sequence[int]) -> Any:
        return await self._store.load_payloads(run_id, seqs)

    async def get_blobs(self, hashes: Sequence[bytes]) -> Any:
        return await self._store.get_blobs(hashes)

    async def list_events(self, run_id: str, limit: int = 1000) -> Any:
        return await self._store.list_events(run_id, limit)

    async def wait_for_change(self, timeout: float) -> bool:
        return await self._store.wait_for_change(timeout)

    async def load_usage(self, run_id: str) -> Any:
        return await self._store.load_usage(run_id)

    async def read_stream(self, run_id: str, stream: str, offset: int, limit: int) -> Any:
        return await self._store.read_stream(run_id, stream, offset, limit)

    async def list_streams(self, run_id: str) -> Any:
        return await self._store.list_streams(run_id)

    async def wait_for_activity(self, timeout: float) -> bool:
        return await self._store.wait_for_activity(timeout)

    async def list_schedules(self) -> Any:
        return await self._store.list_schedules()


def reading_through(db: str, wrapper: type[ReadOnly]) -> OpenBackend:
    """The UI's backend on ``db`` with its store seen through ``wrapper``."""
    plain = app_backend(db)

    @contextlib.asynccontextmanager
    async def open_backend() -> AsyncIterator[Backend]:
        async with plain() as backend:
            yield Backend(wrapper(backend.reads), backend.actions, backend.codec)

    return open_backend


def test_the_pages_need_nothing_but_the_read_side(populated_db: str) -> None:
    with client_for(reading_through(populated_db, ReadOnly)) as client:
        for path in ["/", "/?status=waiting&q=t", "/runs/trip-42", "/runs/trip-42/entries/5"]:
            assert client.get(path).status_code == 200, path
        assert client.get("/runs/trip-42/download/5").status_code == 200
        with client.stream("GET", "/runs/xss/stream") as stream:
            assert "event: end" in "".join(stream.iter_text())


def test_token_totals_show_when_the_store_records_them(populated_db: str) -> None:
    """Stores that keep LLM token accounting answer ``load_usage``; the run page sums it."""

    class Total:
        def __init__(self, kind: str, model: str, calls: int, tokens: int) -> None:
            self.kind, self.outcome, self.provider, self.model = kind, "ok", "openai", model
            self.calls, self.input_tokens, self.output_tokens = calls, tokens, tokens // 10
            self.cached_tokens = 0

    class WithUsage(ReadOnly):
        async def load_usage(self, run_id: str) -> list[Total]:
            if run_id != "trip-42":
                return []
            return [Total("spent", "gpt-4o", 3, 12000), Total("saved", "gpt-4o", 2, 8000)]

    with client_for(reading_through(populated_db, WithUsage)) as client:
        page = client.get("/runs/trip-42").text
        none = client.get("/runs/xss").text
    assert "13,200" in page and "saved by replay" in page and "openai gpt-4o" in page
    assert "Tokens" not in none
    with client_for(app_backend(populated_db)) as client:  # a store without load_usage
        assert "Tokens" not in client.get("/runs/trip-42").text


def test_an_event_sent_from_the_page_reaches_the_run(fresh_db: str) -> None:
    populated_db = fresh_db

    async def events() -> list[str]:
        from web_agents import make_app

        async with make_app(populated_db, worker=False) as client:
            return [e.name for e in await client.store.list_events("digest-again")]

    with client_for(app_backend(populated_db)) as client:
        token = csrf_of(client.get("/runs/digest").text)
        fork = {"csrf_token": token, "from_step": "0", "new_run_id": "digest-again"}
        client.post("/runs/digest/fork", data=fork)
        sent = client.post(
            "/runs/digest-again/events",
            data={"csrf_token": token, "name": "poke", "payload": "[1, 2]", "key": "k"},
            follow_redirects=False,
        )
        repeat = client.post(
            "/runs/digest-again/events",
            data={"csrf_token": token, "name": "poke", "payload": "[1, 2]", "key": "k"},
        )
    assert sent.headers["location"] == "/runs/digest-again?done=sent"
    assert "delivered already" in repeat.text
    assert run_async(events()) == ["poke"]


def test_a_long_journal_is_drawn_a_page_at_a_time(tmp_path: Path) -> None:
    db = str(tmp_path / "long.db")

    async def long_run() -> None:
        async with web_agents.make_app(db) as app:
            await (await app.start("many-calls", 1200, run_id="long")).result()

    run_async(long_run())
    with client_for(app_backend(db)) as client:
        first = client.get("/runs/long").text
        last = client.get("/runs/long?page=2").text
        beyond = client.get("/runs/long?page=99").text
    assert first.count('class="tl-row') == 500 and "page 1 of 3" in first
    assert last.count('class="tl-row') == 200 and "page 3 of 3" in last
    assert 'data-seq="1199"' in last and 'data-seq="1199"' not in first
    assert "page 3 of 3" in beyond  # past the end: the last page
