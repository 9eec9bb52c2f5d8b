"""Who may use the UI, and how a page proves an action came from it.

The model (docs/ui.md says it for users):

* **Binding.** The UI listens on 127.0.0.1 unless told otherwise. Any other address needs a
  token: ``check_bind`` refuses to start without one, naming the option.
* **Token.** With a token, every request must carry it: ``Authorization: Bearer <token>``,
  or a cookie the UI sets when a page is opened once with ``?token=<token>`` (the browser is
  then sent to the same URL without it, so it does not linger in the address bar). Anything
  else gets 401. The cookie holds a digest of the token, never the token.
* **Host.** Without a token the UI only answers requests addressed to a loopback name
  (``Host: 127.0.0.1``, ``localhost``, ``[::1]``): a web page whose domain was re-pointed at
  127.0.0.1 (DNS rebinding) cannot read the UI.
* **CSRF.** Every POST must carry the session's CSRF token (a hidden form field, or the
  ``X-CSRF-Token`` header htmx sends), an HMAC of the session cookie under a secret of this
  process; a POST whose ``Origin`` (or ``Sec-Fetch-Site``) shows another site is refused even
  with a token. Cookies ignore ports, so their names carry the port: two UIs on one machine
  keep separate sessions.
* **Headers.** A strict Content-Security-Policy (scripts and styles only from the UI itself,
  no inline script), ``nosniff``, no framing, no referrer.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Mapping
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidArgument

#: the shortest token accepted: a guessable one would make --token pointless
MIN_TOKEN_LENGTH = 16
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token, and refuse a weak token."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise InvalidArgument(
            f"the UI token must be at least {MIN_TOKEN_LENGTH} characters; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if token is None and not is_loopback(host):
        raise InvalidArgument(
            f"--host {host} makes the UI reachable from other machines, so it needs a token: "
            "pass --token TOKEN (or set $UNDYING_UI_TOKEN); clients then send "
            "'Authorization: Bearer TOKEN' or open the UI once with ?token=TOKEN"
        )


def csrf_token(secret: bytes, session: str) -> str:
    return hmac.new(secret, session.encode(), hashlib.sha256).hexdigest()


def _digest(token: str) -> str:
    return hmac.new(token.encode(), b"undying-ui-cookie", hashlib.sha256).hexdigest()


def _host_name(host_header: str) -> str:
    """The name in a Host header, without its port."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")].lower()
    return host_header.rsplit(":", 1)[0].lower() if ":" in host_header else host_header.lower()


class Guard:
    """ASGI middleware that applies the model above to every HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        secret: bytes,
        allowed_hosts: Iterable[str] | None = None,
    ) -> None:
        self.app = app
        self.token = token
        self.secret = secret
        self.cookie_digest = None if token is None else _digest(token)
        #: None: any Host (a token protects the UI); else the names a request may address
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        port = (scope.get("server") or ("", 0))[1]
        session_cookie, auth_cookie = f"undying_session_{port}", f"undying_auth_{port}"
        cookies = SimpleCookie()
        cookies.load(headers.get("cookie", ""))
        host = _host_name(headers.get("host", ""))
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            await _plain(send, 421, "this UI answers requests to 127.0.0.1 or localhost only")
            return
        set_cookies: list[str] = []
        if self.token is not None:
            verdict = self._authenticate(scope, headers, cookies, auth_cookie)
            if verdict == "refused":
                await _unauthorized(send)
                return
            if verdict == "query":  # remember it in a cookie, and drop it from the URL
                set_cookies.append(_cookie(auth_cookie, self.cookie_digest or ""))
                await _redirect(send, _without_token(scope), set_cookies)
                return
        session = cookies[session_cookie].value if session_cookie in cookies else ""
        if len(session) != 43:  # secrets.token_urlsafe(32)
            session = secrets.token_urlsafe(32)
            set_cookies.append(_cookie(session_cookie, session))
        scope.setdefault("state", {})["csrf_token"] = csrf_token(self.secret, session)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [*SECURITY_HEADERS]
                extra += [(b"set-cookie", c.encode()) for c in set_cookies]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _authenticate(
        self, scope: Scope, headers: Headers, cookies: SimpleCookie, auth_cookie: str
    ) -> str:
        """'ok' (a valid header or cookie), 'query' (a valid ?token=) or 'refused'."""
        assert self.token is not None and self.cookie_digest is not None
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and hmac.compare_digest(
            auth[7:].strip().encode(), self.token.encode()
        ):
            return "ok"
        if auth_cookie in cookies and hmac.compare_digest(
            cookies[auth_cookie].value.encode(), self.cookie_digest.encode()
        ):
            return "ok"
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        given = query.get("token")
        if given is not None and hmac.compare_digest(given.encode(), self.token.encode()):
            return "query" if scope["method"] == "GET" else "ok"
        return "refused"


def check_post(request: Request, form: Mapping[str, str]) -> str | None:
    """Why a POST must be refused (None: it came from a page of this UI)."""
    headers = request.headers
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"refused: the request came from another site (Sec-Fetch-Site: {site})"
    origin = headers.get("origin")
    if origin is not None:
        expected = f"{request.url.scheme}://{headers.get('host', '')}"
        if origin != expected:
            return f"refused: the request came from {origin}, not from this UI ({expected})"
    expected_token = str(request.scope.get("state", {}).get("csrf_token", ""))
    given = headers.get(CSRF_HEADER) or form.get(CSRF_FIELD) or ""
    if not given or not expected_token:
        return "refused: the form carries no CSRF token; reload the page and try again"
    if not hmac.compare_digest(given.encode(), expected_token.encode()):
        return "refused: the CSRF token does not match this session; reload the page"
    return None


def _cookie(name: str, value: str) -> str:
    return f"{name}={value}; Path=/; HttpOnly; SameSite=Lax"


def _without_token(scope: Scope) -> str:
    query = [
        (k, v)
        for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        if k != "token"
    ]
    path = str(scope.get("root_path", "")) + str(scope["path"])
    return path + ("?" + urlencode(query) if query else "")


async def _plain(
    send: Send, status: int, text: str, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = text.encode() + b"\n"
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _unauthorized(send: Send) -> None:
    await _plain(
        send,
        401,
        "401 Unauthorized: this undying UI needs its access token. Send "
        "'Authorization: Bearer <token>', or open the UI once with ?token=<token> "
        "(the token given to `undying ui --token` or $UNDYING_UI_TOKEN).",
        ((b"www-authenticate", b'Bearer realm="undying"'),),
    )


async def _redirect(send: Send, location: str, cookies: list[str]) -> None:
    headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0")]
    headers += [(b"set-cookie", c.encode()) for c in cookies]
    headers += SECURITY_HEADERS
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
