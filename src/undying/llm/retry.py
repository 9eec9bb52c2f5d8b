"""Which provider failures are worth another attempt, how long to wait, and how a final one is
journaled so that replay raises the same SDK exception.

There is one retry layer: the wrapped client runs with ``max_retries=0`` and the step policy
retries. What is retried follows the SDKs' own rules (both are generated from one template):
408, 409, 429 and 5xx responses and connection failures, a server's ``x-should-retry``
overriding the status; ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date) sets
the delay. Anything else fails at once.

A final failure leaves the step as :class:`ProviderError`, whose single argument is a plain
description of the SDK exception (class, status, headers, body, request), so the journal can
hold it and replay can rebuild the very class the SDK raised, with the same status code and
body, although the SDK's exceptions take a live HTTP response to construct.
"""

from __future__ import annotations

import email.utils
import importlib
import math
import time
from typing import Any

#: statuses the SDKs retry
RETRY_STATUSES = frozenset({408, 409, 429})
#: the SDKs ignore a Retry-After longer than this and do not retry; so do we
MAX_RETRY_AFTER = 60.0


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _headers(exc: BaseException) -> Any:
    response = getattr(exc, "response", None)
    return getattr(response, "headers", None)


def is_connection_error(exc: BaseException) -> bool:
    """The SDKs' connection errors (timeouts included), and a transport error of httpx
    raised while a stream is read (a connection dropped mid-stream)."""
    names = _names(exc)
    if "APIConnectionError" in names:
        return True
    return "TransportError" in names and type(exc).__module__.startswith("httpx")


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked to wait (``retry-after-ms``, then ``Retry-After``)."""
    headers = _headers(exc)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            if name == "retry-after":
                parsed = email.utils.parsedate_tz(value)
                if parsed is not None:
                    return max(0.0, email.utils.mktime_tz(parsed) - time.time())
            continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def is_retryable(exc: BaseException) -> bool:
    if is_connection_error(exc):
        return True
    status = status_of(exc)
    if status is None or "APIStatusError" not in _names(exc):
        return False
    headers = _headers(exc)
    should = headers.get("x-should-retry") if headers is not None else None
    if should in ("true", "false"):
        return bool(should == "true")
    asked = retry_after(exc)
    if asked is not None and asked > MAX_RETRY_AFTER:
        return False
    return status in RETRY_STATUSES or status >= 500


def delay_from(exc: BaseException) -> float | None:
    """The step policy's ``retry_delay_from``: the server's delay, else the backoff."""
    asked = retry_after(exc)
    return asked if asked is not None and asked > 0 else None


# -- final failures, journaled --------------------------------------------------------------
class ProviderError(Exception):
    """A model call's final failure, in a form the journal keeps (see the module doc).

    ``info`` is a plain dict: ``type`` (``module:qualname`` of the SDK exception), ``message``,
    and for an HTTP error ``status``, ``headers``, ``body``, ``method``, ``url``."""

    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__(info)
        self.info = info

    def __str__(self) -> str:
        info = self.info
        status = f" (HTTP {info['status']})" if info.get("status") else ""
        return f"{info.get('type', '?').replace(':', '.')}{status}: {info.get('message', '')}"


def describe(exc: BaseException) -> dict[str, Any]:
    cls = type(exc)
    info: dict[str, Any] = {
        "type": f"{cls.__module__}:{cls.__qualname__}",
        "message": str(getattr(exc, "message", None) or exc),
    }
    response = getattr(exc, "response", None)
    if status_of(exc) is not None and response is not None:
        info["status"] = status_of(exc)
        info["headers"] = dict(response.headers.items())
        body = getattr(exc, "body", None)
        info["body"] = body if _plain(body) else str(body)
    request = getattr(exc, "request", None)
    if request is not None:
        info["method"] = str(getattr(request, "method", "POST"))
        info["url"] = str(getattr(request, "url", ""))
    if not info.get("status"):
        args = [a for a in getattr(exc, "args", ()) if _plain(a)]
        info["args"] = args if len(args) == len(exc.args) else None
    return info


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def rebuild(info: dict[str, Any]) -> BaseException | None:
    """The SDK exception ``info`` describes, or None if its class cannot be rebuilt here."""
    module_name, _, qualname = str(info.get("type", "")).partition(":")
    try:
        cls: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError, ValueError):
        return None
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return None
    maker: Any = cls
    try:
        if "status" in info:
            return _rebuild_status_error(cls, info)
        if "url" in info and "APIConnectionError" in {c.__name__ for c in cls.__mro__}:
            request = _request(cls, info)
            if "APITimeoutError" in {c.__name__ for c in cls.__mro__}:
                exc: BaseException = maker(request=request)
            else:
                exc = maker(message=info.get("message", ""), request=request)
            return exc
        if info.get("args") is not None:
            rebuilt: BaseException = maker(*info["args"])
            return rebuilt
    except Exception:
        return None
    return None


def _httpx(cls: type) -> Any:
    """The httpx module the SDK that defines ``cls`` uses (httpx or httpx2)."""
    sdk = importlib.import_module(cls.__module__.split(".")[0])
    for name in ("httpx2", "httpx"):
        module = getattr(importlib.import_module(f"{sdk.__name__}._exceptions"), name, None)
        if module is not None:
            return module
    return importlib.import_module("httpx")


def _request(cls: type, info: dict[str, Any]) -> Any:
    httpx = _httpx(cls)
    return httpx.Request(info.get("method") or "POST", info.get("url") or "http://unknown/")


def _rebuild_status_error(cls: Any, info: dict[str, Any]) -> BaseException:
    httpx = _httpx(cls)
    response = httpx.Response(
        int(info["status"]),
        headers=info.get("headers") or {},
        json=info.get("body"),
        request=_request(cls, info),
    )
    try:
        exc: BaseException = cls(info.get("message", ""), response=response, body=info.get("body"))
    except TypeError:  # OAuthError and friends build their own message
        exc = cls(response=response, body=info.get("body"))
    return exc
