"""Bounded HTTP: every request glcleanup makes has a total deadline and a body size limit.

requests' `timeout` bounds each socket read, not the request: a server that sends one header byte
every few seconds, or an endless body, keeps a plain `requests` call alive for ever and its memory
growing. `BoundedAdapter` (mounted on every session glcleanup uses, python-gitlab's included):

* starts a watchdog per request that shuts the connection's socket down when the deadline passes, so
  a blocked read returns at once (connect, TLS handshake, headers and body alike);
* reads the body itself, in chunks, refusing more than `max_bytes` (Content-Length checked first);
* caps a 429's `Retry-After` (python-gitlab sleeps for whatever the server says).

A request that runs out of time raises `DeadlineExceeded` (a requests Timeout), one that is too big
`ResponseTooLarge` (a requests ConnectionError): callers' existing error handling maps them.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

DEADLINE = 60.0           # seconds for one whole request (connect, headers, body)
MAX_BODY = 64 * 1024 * 1024
MAX_RETRY_AFTER = 10      # seconds python-gitlab may sleep on a 429
_CHUNK = 64 * 1024


class DeadlineExceeded(requests.exceptions.Timeout):
    """No complete answer within the total deadline."""


class ResponseTooLarge(requests.exceptions.ConnectionError):
    """The body is larger than the limit for this kind of call."""


class _Guard:
    """The watchdog of one request: knows the connection in use and shuts its socket at the deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.conn: Any = None
        self.fired = False
        self.done = threading.Event()

    def watch(self) -> None:
        while not self.done.wait(max(0.0, min(0.05, self.deadline - time.monotonic()))):
            if time.monotonic() >= self.deadline:
                self.fired = True
                sock = getattr(self.conn, "sock", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)


_current = threading.local()


def _note(conn: Any) -> Any:
    guard = getattr(_current, "guard", None)
    if guard is not None:
        guard.conn = conn
    return conn


class _Pool(HTTPConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        return _note(super()._get_conn(timeout))


class _TLSPool(HTTPSConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        return _note(super()._get_conn(timeout))


class BoundedAdapter(HTTPAdapter):
    """An HTTPAdapter whose every `send` is bounded in time and size (see the module docstring)."""

    def __init__(self, *, deadline: float | None = None, max_bytes: int | None = None, **kwargs: Any) -> None:
        self.deadline = DEADLINE if deadline is None else deadline
        self.max_bytes = MAX_BODY if max_bytes is None else max_bytes
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}

    def send(self, request: requests.PreparedRequest, stream: bool = False,  # type: ignore[override]
             timeout: Any = None, verify: bool | str = True, cert: Any = None,
             proxies: Any = None) -> requests.Response:
        started = time.monotonic()
        guard = _Guard(started + self.deadline)
        watchdog = threading.Thread(target=guard.watch, name="glcleanup-http-deadline", daemon=True)
        watchdog.start()
        _current.guard = guard
        try:
            try:
                response = super().send(request, stream=True, timeout=timeout or self.deadline, verify=verify,
                                        cert=cert, proxies=proxies)
            finally:
                _current.guard = None
            if guard.fired:  # a shut socket reads as EOF: headers cut short must not pass for an answer
                raise requests.exceptions.ConnectionError("deadline", request=request)
            if not stream:
                self._read_body(response)
                if guard.fired:
                    raise requests.exceptions.ConnectionError("deadline", request=request)
            _cap_retry_after(response)
            return response
        except requests.RequestException as exc:
            if guard.fired and not isinstance(exc, ResponseTooLarge):
                raise DeadlineExceeded(f"timed out: no complete answer from {_where(request)} within "
                                       f"{self.deadline:g} s", request=request) from None
            raise
        finally:
            guard.done.set()

    def _read_body(self, response: requests.Response) -> None:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response.close()
            raise ResponseTooLarge(f"{_where(response.request)} answered {declared} bytes, more than the "
                                   f"{self.max_bytes} allowed", request=response.request)
        body = bytearray()
        try:
            for chunk in response.raw.stream(_CHUNK, decode_content=True):
                body += chunk
                if len(body) > self.max_bytes:
                    response.close()
                    raise ResponseTooLarge(f"{_where(response.request)} sent more than {self.max_bytes} bytes",
                                           request=response.request)
        except (OSError, ValueError) as exc:  # the socket was shut by the watchdog, or the body broke off
            response.close()
            raise requests.exceptions.ConnectionError(str(exc), request=response.request) from None
        except Exception as exc:  # urllib3's ProtocolError/ReadTimeoutError/DecodeError
            response.close()
            raise requests.exceptions.ConnectionError(f"{type(exc).__name__}: {exc}",
                                                      request=response.request) from None
        response._content = bytes(body)  # what requests' .content/.json()/.text read
        response._content_consumed = True  # type: ignore[attr-defined]


def _cap_retry_after(response: requests.Response) -> None:
    value = response.headers.get("Retry-After", "")
    if response.status_code == 429 and (not value.isdigit() or int(value) > MAX_RETRY_AFTER):
        response.headers["Retry-After"] = str(MAX_RETRY_AFTER)


def _where(request: requests.PreparedRequest | None) -> str:
    url = str(getattr(request, "url", "") or "")
    return url.split("?", 1)[0][:120] or "the server"


def mount(session: requests.Session, *, deadline: float | None = None, max_bytes: int | None = None,
          pool_maxsize: int = 10) -> requests.Session:
    """Put the bounded adapter on `session` for http:// and https://."""
    for prefix in ("http://", "https://"):
        session.mount(prefix, BoundedAdapter(deadline=deadline, max_bytes=max_bytes, pool_connections=10,
                                             pool_maxsize=pool_maxsize))
    return session


def bounded_session(*, deadline: float | None = None, max_bytes: int | None = None) -> requests.Session:
    """A requests Session whose every call is bounded."""
    return mount(requests.Session(), deadline=deadline, max_bytes=max_bytes)


__all__ = ["DEADLINE", "MAX_BODY", "BoundedAdapter", "DeadlineExceeded", "ResponseTooLarge", "bounded_session",
           "mount"]
