"""Forwarding proxies for lab tests: the real registry behind them, one request kind answered here.

`ProbeFixingProxy` is the `stub proxy` idea in miniature (the tag-delete probe answered 404), so worker
tests can prove GitLab's ThirdParty path really deletes on Distribution 2.8; `FailingPutProxy` is a
registry that breaks half-way. Not imported by the product.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


class ForwardingProxy:
    """Forwards every request to `upstream` unless `answer(method, path)` returns a status to send instead.

    `seen` keeps (method, path, headers, body) of every request, in order.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.seen.append((self.command, self.path, dict(self.headers.items()), body))
                status = proxy.answer(self.command, self.path)
                if status is not None:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_HEADERS:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, method: str, path: str) -> int | None:
        """The status to answer here instead of forwarding (None: forward)."""
        return None

    @property
    def requests(self) -> list[str]:
        return [f"{method} {path}" for method, path, _, _ in self.seen]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> ForwardingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class ProbeFixingProxy(ForwardingProxy):
    """GitLab's tag-delete probe (`OPTIONS /v2/<name>/manifests/<tag>`) answered 404: it deletes by digest."""

    def answer(self, method: str, path: str) -> int | None:
        return 404 if method == "OPTIONS" and "/manifests/" in path else None


class FailingPutProxy(ForwardingProxy):
    """The `fail_at`-th manifest PUT answered 500 (a registry that breaks half-way): what GitLab's put_tag
    sees as a nil digest."""

    def __init__(self, upstream: str, fail_at: int) -> None:
        super().__init__(upstream)
        self.fail_at = fail_at
        self.puts = 0

    def answer(self, method: str, path: str) -> int | None:
        if method == "PUT" and "/manifests/" in path:
            self.puts += 1
            if self.puts == self.fail_at:
                return 500
        return None
