"""``undying ui``: serve the web UI with uvicorn, after checking it may listen where asked.

The UI is a client of the database like the CLI: it opens ``App(url, worker=False)`` (it runs
no workflow) inside the server's event loop, reads through the App's store as a ``ReadSide``
and acts through the App's client calls.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from types import FrameType

from ..app import App
from ..errors import InvalidArgument
from .routes import Backend, OpenBackend, create_app
from .security import LOOPBACK_NAMES, check_bind, is_loopback

TOKEN_ENV = "UNDYING_UI_TOKEN"


def app_backend(database_url: str | None) -> OpenBackend:
    """Opens a client-only App on ``database_url`` for the UI's lifetime."""

    @contextlib.asynccontextmanager
    async def open_backend() -> AsyncIterator[Backend]:
        # allow_pickle stays off: unpickling what a database holds runs code in the UI
        async with App(database_url, worker=False) as client:
            yield Backend(reads=client.store, actions=client, codec=client.codec)

    return open_backend


def allowed_hosts(host: str, token: str | None) -> frozenset[str] | None:
    """The Host names the UI answers: loopback names (and the bound one) without a token,
    anything with one."""
    if token is not None:
        return None
    return LOOPBACK_NAMES | {host.strip("[]").lower()} if is_loopback(host) else LOOPBACK_NAMES


def serve(
    database_url: str | None,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    app_path: str | None = None,
) -> int:
    """Run the UI until interrupted. ``token`` defaults to ``$UNDYING_UI_TOKEN``;
    ``app_path`` (MODULE:APP) imports the application first, so payloads holding its
    classes decode, and supplies its database when ``database_url`` is None."""
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - depends on the installation
        raise InvalidArgument("the web UI needs its extra: pip install 'undying[ui]'") from None
    token = token or os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgument(f"--port must be 0-65535, not {port!r}")
    if app_path is not None:
        from ..cli import load_app

        user_app = load_app(app_path)
        database_url = database_url or user_app.database_url
    web = create_app(
        app_backend(database_url), token=token, allowed_hosts=allowed_hosts(host, token)
    )
    shown = f"[{host}]" if ":" in host else host
    print(f"undying UI on http://{shown}:{port}/" + (" (token required)" if token else ""))
    config = uvicorn.Config(
        web, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5
    )
    ui = web.state.ui

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            ui.stop_streams()  # live pages hold streams open: end them, or shutdown waits
            super().handle_exit(sig, frame)

    Server(config).run()
    return 0
