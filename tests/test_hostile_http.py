"""Hostile class "http": every HTTP call has a total deadline and a body size limit (issue 13 §4, §5).

Real servers on loopback that answer one header every 0.3 s for ever, send an endless body, declare a
huge body, answer 200 like any web server, or answer an HTML error page: doctor (registry probes and
the API through python-gitlab) and scan must come back within the deadline asserted here, with one line.
Every server stops by itself after a few seconds, whatever the client does.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from glcleanup import http
from glcleanup.cli import app
from glcleanup.gitlab import api
from glcleanup.ops import probe

SERVER_LIFETIME = 8.0  # no server outlives this, whatever the client does
Behaviour = Callable[[socket.socket, bytes], None]


def _slow_headers(conn: socket.socket, _request: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for i in range(1000):
        conn.sendall(b"X-Drip-%d: 1\r\n" % i)
        time.sleep(0.3)


def _endless_body(conn: socket.socket, _request: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nDocker-Distribution-Api-Version: registry/2.0\r\nConnection: close\r\n\r\n")
    chunk = b"A" * 65536
    while True:
        conn.sendall(chunk)


def _huge_declared(conn: socket.socket, _request: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\nDocker-Distribution-Api-Version: registry/2.0"
                 b"\r\n\r\n{")
    time.sleep(SERVER_LIFETIME)


def _plain_web_server(conn: socket.socket, _request: bytes) -> None:
    body = b"<html><body>It works!</body></html>"
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\nAllow: GET, DELETE\r\n"
                 b"Connection: close\r\n\r\n%s" % (len(body), body))


def _html_error(conn: socket.socket, _request: bytes) -> None:
    body = (b"<html>\r\n<head><title>414 Request-URI Too Large</title></head>\r\n<body>\r\n<center><h1>414 "
            b"Request-URI Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n" * 20)
    conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (len(body), body))


@pytest.fixture
def serve() -> Iterator[Callable[[Behaviour], str]]:
    """A raw TCP server on loopback; each connection gets `behaviour`, cut off at SERVER_LIFETIME."""
    listeners: list[socket.socket] = []
    stop = threading.Event()

    def start(behaviour: Behaviour) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.2)
        listeners.append(listener)
        born = time.monotonic()

        def one(conn: socket.socket) -> None:
            conn.settimeout(SERVER_LIFETIME)
            try:
                request = conn.recv(65536)
                timer = threading.Timer(SERVER_LIFETIME, lambda: _close(conn))
                timer.daemon = True
                timer.start()
                behaviour(conn, request)
            except OSError:
                pass
            finally:
                _close(conn)

        def accept() -> None:
            while not stop.is_set() and time.monotonic() - born < SERVER_LIFETIME:
                try:
                    conn, _ = listener.accept()
                except (TimeoutError, OSError):
                    continue
                threading.Thread(target=one, args=(conn,), daemon=True).start()
            listener.close()

        threading.Thread(target=accept, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield start
    stop.set()
    for listener in listeners:
        _close(listener)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(probe, "TIMEOUT", 1.0)
    monkeypatch.setattr(probe, "MAX_BODY", 1 << 20)
    monkeypatch.setattr(api, "API_DEADLINE", 1.0)
    monkeypatch.setattr(http, "MAX_BODY", 4 << 20)
    return 1.0


def _doctor(*args: str, env: dict[str, str] | None = None) -> tuple[Any, float]:
    started = time.monotonic()
    result = CliRunner().invoke(app, ["doctor", *args, "-o", "json"], env=env)
    return result, time.monotonic() - started


def _check(result: Any, name: str) -> dict[str, Any]:
    import json

    return next(c for c in json.loads(result.stdout)["checks"] if c["name"] == name)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("behaviour", "text"), [(_slow_headers, "timed out"), (_endless_body, "more than"),
                                                 (_huge_declared, "more than")],
                         ids=["one-header-every-0.3s", "endless-body", "huge-content-length"])
def test_doctor_registry_probe_is_bounded(serve: Callable[[Behaviour], str], short_deadlines: float,
                                          behaviour: Behaviour, text: str) -> None:
    """class http/registry: the registry check ends within its deadline, memory within the size limit."""
    result, elapsed = _doctor("--registry-url", serve(behaviour))
    assert elapsed < short_deadlines * 2 + 1.5, f"doctor took {elapsed:.1f} s"
    assert result.exit_code == 1, result.output
    assert text in _check(result, "registry_url")["detail"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("behaviour", [_slow_headers, _endless_body], ids=["slow-headers", "endless-body"])
@pytest.mark.parametrize("command", ["doctor", "scan"])
def test_the_gitlab_api_through_python_gitlab_is_bounded(serve: Callable[[Behaviour], str], short_deadlines: float,
                                                         behaviour: Behaviour, command: str) -> None:
    """class http/api: python-gitlab's session carries the same bounds (doctor's API check, scan)."""
    url = serve(behaviour)
    started = time.monotonic()
    args = ["doctor"] if command == "doctor" else ["scan", "--source", "api"]
    result = CliRunner().invoke(app, [*args, "--url", url, "-o", "json"], env={"GITLAB_PRIVATE_TOKEN": "glpat-x1"})
    elapsed = time.monotonic() - started
    assert elapsed < short_deadlines * 2 + 1.5, f"{command} took {elapsed:.1f} s"
    if command == "doctor":
        assert result.exit_code == 1
        assert _check(result, "gitlab_api")["ok"] is False
    else:
        assert result.exit_code == 3, result.output
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.timeout(30)
def test_an_html_error_page_is_trimmed_to_one_line(serve: Callable[[Behaviour], str], short_deadlines: float) -> None:
    """class http/error-body: a proxy's HTML page becomes one short line, not 20 pages of markup."""
    result = CliRunner().invoke(app, ["scan", "--source", "api", "--url", serve(_html_error), "-o", "json"],
                                env={"GITLAB_PRIVATE_TOKEN": "glpat-x1"})
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert len(lines[0]) < 400
    assert "<" not in lines[0]


@pytest.mark.timeout(30)
def test_doctor_calls_a_registry_only_what_answers_like_one(serve: Callable[[Behaviour], str],
                                                            short_deadlines: float) -> None:
    """class http/not-a-registry: a web server answering 200 to everything is not a healthy registry."""
    result, _elapsed = _doctor("--registry-url", serve(_plain_web_server))
    assert result.exit_code == 1
    check = _check(result, "registry_url")
    assert check["ok"] is False
    assert "Docker-Distribution-Api-Version" in check["detail"]


def test_retry_after_from_a_server_is_capped() -> None:
    """class http/retry-after: python-gitlab sleeps for a 429's Retry-After; a hostile one is capped."""
    import requests

    response = requests.Response()
    response.status_code = 429
    response.headers["Retry-After"] = "86400"
    http._cap_retry_after(response)
    assert response.headers["Retry-After"] == str(http.MAX_RETRY_AFTER)
