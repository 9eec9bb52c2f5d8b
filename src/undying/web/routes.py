"""The UI's pages, fragments, live streams and actions (a Starlette application).

Reads go through the store's ``ReadSide`` only. Actions (cancel, resume, fork, send an event)
go through the App client API, exactly as a program or the CLI would make them, so the UI has
no write path of its own. Every action is a POST checked by ``security.check_post`` and
answered with a redirect to the run's page (post/redirect/get: reloading the page does not
repeat the action); a refused or failed action shows the page again with the reason.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..codec import Codec
from ..errors import InvalidArgument, UndyingError
from ..store.base import ERROR, RUN_STATUSES, TERMINAL, ReadSide, RunRecord
from ..validation import check_run_ref
from . import views
from .live import ChangeFeed, stream_updates
from .security import CSRF_FIELD, LOOPBACK_NAMES, Guard, check_post
from .timeline import human_duration, human_size
from .values import MAX_SHOWN, Shown, load_entry_value, show_frame

#: the largest action form accepted (an event payload is at most 1 MiB encoded)
MAX_FORM_BYTES = 2 << 20
#: what a redirect's ?done= code says on the page (codes only: no text comes from the URL)
NOTICES = {
    "cancelled": "Cancellation requested: the run stops at its next journaled call.",
    "resumed": "Resumed: a worker replays the journal and continues where it failed.",
    "not-resumable": "Nothing to resume: only a failed or cancelled run can be resumed.",
    "forked": "Forked: this new run reuses the journal up to the chosen step; a worker runs "
    "the rest.",
    "sent": "Event delivered.",
    "duplicate": "Not delivered again: an event with that key was delivered already.",
}


class RunActions(Protocol):
    """The App client calls the action buttons make (``undying.App`` satisfies it)."""

    async def cancel(self, run_id: str) -> None: ...

    async def resume(self, run_id: str) -> bool: ...

    async def fork(self, run_id: str, *, from_step: int, new_run_id: str | None = None) -> Any: ...

    async def send_event(
        self, run_id: str, name: str, payload: Any = None, *, key: str | None = None
    ) -> bool: ...


@dataclass(slots=True)
class Backend:
    """What the pages run on: the store's read side, the App's actions, the app's codec."""

    reads: ReadSide
    actions: RunActions
    codec: Codec


#: opens the backend when the server starts and closes it when it stops (in the server's loop)
OpenBackend = Callable[[], contextlib.AbstractAsyncContextManager[Backend]]


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("undying.web", "templates"),
        autoescape=True,  # every template, whatever its name: stored text is always escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = human_duration
    env.filters["iso"] = views.when
    env.filters["size"] = human_size
    env.filters["q"] = lambda params: urlencode(params)
    env.filters["path"] = lambda text: quote(str(text), safe="")
    env.globals.update(
        statuses=RUN_STATUSES, ages=views.AGES, terminal=TERMINAL, page_size=views.PAGE_SIZE
    )
    return env


class UI:
    """The running UI: backend, live feed and templates, shared by every request."""

    def __init__(self, open_backend: OpenBackend) -> None:
        self._open_backend = open_backend
        self.templates = _templates()
        self._backend: Backend | None = None
        self._feed: ChangeFeed | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with self._open_backend() as backend:
            self._backend = backend
            self._feed = ChangeFeed(backend.reads)
            self._feed.start()
            try:
                yield
            finally:
                await self._feed.stop()
                self._backend = None

    @property
    def backend(self) -> Backend:
        assert self._backend is not None, "the UI's backend opens with the server"
        return self._backend

    def stop_streams(self) -> None:
        """End the live streams now (the server is shutting down); thread-safe."""
        if self._feed is not None:
            self._feed.close_threadsafe()

    @property
    def feed(self) -> ChangeFeed:
        assert self._feed is not None, "the UI's feed starts with the server"
        return self._feed

    # -- rendering ------------------------------------------------------------------------------
    def render(self, request: Request, name: str, **context: Any) -> str:
        csrf = request.scope.get("state", {}).get("csrf_token", "")
        return self.templates.get_template(name).render(
            request_path=request.url.path, csrf_token=csrf, csrf_field=CSRF_FIELD, **context
        )

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        return HTMLResponse(self.render(request, name, **context), status_code=status)

    def problem(self, request: Request, status: int, message: str) -> Response:
        return self.page(request, "problem.html", status, code=status, message=message)

    async def _run(self, request: Request) -> RunRecord | Response:
        """The run named in the path, or the page that says why there is none."""
        run_id = request.path_params["run_id"]
        try:
            check_run_ref(run_id)
        except InvalidArgument as exc:
            return self.problem(request, 404, str(exc))
        run = await self.backend.reads.get_run(run_id)
        if run is None:
            return self.problem(request, 404, f"no run with id {run_id!r}")
        return run

    # -- the run list -----------------------------------------------------------------------------
    async def runs_page(self, request: Request) -> Response:
        query = views.ListQuery.parse(request.query_params)
        data = await views.run_list(self.backend.reads, self.backend.codec, query)
        return self.page(request, "runs.html", data=data)

    async def runs_stream(self, request: Request) -> Response:
        query = views.ListQuery.parse(request.query_params)

        async def render() -> tuple[str, bool]:
            data = await views.run_list(self.backend.reads, self.backend.codec, query)
            return self.render(request, "_runs_live.html", data=data), False

        return _event_stream(stream_updates(self.feed, render))

    # -- one run ----------------------------------------------------------------------------------
    async def run_page(
        self, request: Request, *, status: int = 200, problem: str | None = None
    ) -> Response:
        found = await self._run(request)
        if not isinstance(found, RunRecord):
            return found
        view = await views.run_view(
            self.backend.reads, self.backend.codec, found, _int(request.query_params.get("page"))
        )
        selected = _int(request.query_params.get("entry"), None)
        detail = None if selected is None else await self._entry_detail(found, selected)
        notice = NOTICES.get(request.query_params.get("done", ""))
        return self.page(
            request,
            "run.html",
            status,
            v=view,
            detail=detail,
            notice=notice,
            problem=problem,
        )

    async def run_stream(self, request: Request) -> Response:
        found = await self._run(request)
        if not isinstance(found, RunRecord):
            return found
        run_id, page = found.run_id, _int(request.query_params.get("page"))

        async def render() -> tuple[str, bool]:
            run = await self.backend.reads.get_run(run_id)
            if run is None:
                return "", True
            view = await views.run_view(self.backend.reads, self.backend.codec, run, page)
            return self.render(request, "_run_live.html", v=view), view.finished

        return _event_stream(stream_updates(self.feed, render))

    async def _entry_detail(
        self, run: RunRecord, seq: int, limit: int | None = MAX_SHOWN
    ) -> dict[str, Any] | None:
        entries = await self.backend.reads.load_journal_meta(run.run_id)
        entry = next((e for e in entries if e.seq == seq), None)
        if entry is None:
            return None
        codec = self.backend.codec
        shown, frame = await load_entry_value(self.backend.reads, codec, run.run_id, entry, limit)
        error, error_value = (None, None)
        if entry.status == ERROR:
            error, error_value = views.decode_error(codec, frame)
        return {
            "run": run,
            "entry": entry,
            "value": shown,
            "error": error,
            "error_value": error_value,
        }

    async def entry_fragment(self, request: Request) -> Response:
        found = await self._run(request)
        if not isinstance(found, RunRecord):
            return found
        detail = await self._entry_detail(found, request.path_params["seq"])
        if detail is None:
            return self.problem(request, 404, f"run {found.run_id!r} has no journal entry there")
        return self.page(request, "_entry.html", d=detail)

    async def download(self, request: Request) -> Response:
        """A value whole (a page shows at most values.MAX_SHOWN characters of it)."""
        found = await self._run(request)
        if not isinstance(found, RunRecord):
            return found
        what: str = request.path_params["what"]
        shown: Shown | None = None
        if what.isdigit():
            detail = await self._entry_detail(found, int(what), limit=None)
            shown = None if detail is None else detail["value"]
        else:
            frames = {"input": found.input, "output": found.output}
            frames.update(status=found.status_value, error=found.error)
            frame = frames.get(what)
            shown = None if frame is None else show_frame(self.backend.codec, frame, limit=None)
        if shown is None or shown.missing:
            return self.problem(request, 404, f"run {found.run_id!r} has no value {what!r}")
        kind = "text/plain" if shown.is_text or shown.error else "application/json"
        name = f"{found.run_id}-{what}.{'txt' if kind == 'text/plain' else 'json'}"
        return Response(
            shown.text,
            media_type=f"{kind}; charset=utf-8",
            headers={"content-disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
        )

    # -- actions ----------------------------------------------------------------------------------
    async def act(self, request: Request) -> Response:
        try:
            form = await _read_form(request)
        except InvalidArgument as exc:
            return self._acted(request, 400, problem=str(exc))
        refused = check_post(request, form)
        if refused is not None:
            return self._acted(request, 403, problem=refused)
        found = await self._run(request)
        if not isinstance(found, RunRecord):
            return found
        action = request.path_params["action"]
        handler = {
            "cancel": self._cancel,
            "resume": self._resume,
            "fork": self._fork,
            "events": self._send,
        }.get(action)
        if handler is None:
            return self.problem(request, 404, f"no action {action!r}")
        try:
            target, done = await handler(found.run_id, form)
        except (UndyingError, ValueError) as exc:
            if _from_htmx(request):
                return self._acted(request, 400, problem=str(exc))
            return await self.run_page(request, status=400, problem=str(exc))
        self.feed.bump()  # this process's own writes do not wake its own store
        url = f"/runs/{quote(target, safe='')}?done={done}"
        if not _from_htmx(request):
            return RedirectResponse(url, status_code=303)
        if target != found.run_id:  # a fork: show the new run
            return Response(status_code=204, headers={"hx-redirect": url})
        return self._acted(request, 200, notice=NOTICES[done])

    def _acted(
        self,
        request: Request,
        status: int,
        *,
        notice: str | None = None,
        problem: str | None = None,
    ) -> Response:
        """What an action answers: the notice alone for htmx (the live stream shows the
        rest), a page otherwise."""
        if _from_htmx(request):
            return self.page(request, "_notice.html", status, notice=notice, problem=problem)
        return self.problem(request, status, problem or notice or "")

    async def _cancel(self, run_id: str, form: Mapping[str, str]) -> tuple[str, str]:
        await self.backend.actions.cancel(run_id)
        return run_id, "cancelled"

    async def _resume(self, run_id: str, form: Mapping[str, str]) -> tuple[str, str]:
        resumed = await self.backend.actions.resume(run_id)
        return run_id, "resumed" if resumed else "not-resumable"

    async def _fork(self, run_id: str, form: Mapping[str, str]) -> tuple[str, str]:
        try:
            from_step = int(form.get("from_step", ""))
        except ValueError:
            message = "fork: 'from step' must be a journal position (a number)"
            raise InvalidArgument(message) from None
        new_id = form.get("new_run_id", "").strip() or None
        handle = await self.backend.actions.fork(run_id, from_step=from_step, new_run_id=new_id)
        return str(handle.run_id), "forked"

    async def _send(self, run_id: str, form: Mapping[str, str]) -> tuple[str, str]:
        name = form.get("name", "").strip()
        text = form.get("payload", "").strip()
        try:
            payload = json.loads(text) if text else None
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"the event payload must be JSON: {exc}") from None
        key = form.get("key", "").strip() or None
        delivered = await self.backend.actions.send_event(run_id, name, payload, key=key)
        return run_id, "sent" if delivered else "duplicate"


def _int(text: str | None, default: int | None = 0) -> Any:
    """A number from the query string; a missing or malformed one is ``default``."""
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


async def _read_form(request: Request) -> dict[str, str]:
    """An action's form fields (the pages post url-encoded forms; nothing is uploaded)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise InvalidArgument(f"the form is over {MAX_FORM_BYTES >> 20} MiB")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and kind != "application/x-www-form-urlencoded":
        raise InvalidArgument(f"actions take url-encoded forms, not {kind or 'unlabelled data'}")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _from_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


def create_app(
    open_backend: OpenBackend,
    *,
    token: str | None = None,
    allowed_hosts: frozenset[str] | None = LOOPBACK_NAMES,
) -> Starlette:
    """The UI as an ASGI application. ``allowed_hosts`` None lets any Host through (for a UI
    that requires a token)."""
    ui = UI(open_backend)
    static = resources.files("undying.web").joinpath("static")

    routes = [
        Route("/", ui.runs_page),
        Route("/stream", ui.runs_stream),
        Route("/runs/{run_id}", ui.run_page),
        Route("/runs/{run_id}/stream", ui.run_stream),
        Route("/runs/{run_id}/entries/{seq:int}", ui.entry_fragment),
        Route("/runs/{run_id}/download/{what}", ui.download),
        Route("/runs/{run_id}/{action}", ui.act, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(static)), name="static"),
    ]
    middleware = [
        Middleware(Guard, token=token, secret=secrets.token_bytes(32), allowed_hosts=allowed_hosts)
    ]
    web = Starlette(routes=routes, middleware=middleware, lifespan=ui.lifespan)
    web.state.ui = ui
    return web
