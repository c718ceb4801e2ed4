"""The stub's inputs, validated, and the files rendered from them (pure functions, no I/O on hosts).

Values end up inside nginx.conf, a compose `.env` and argv lists, so everything is checked against
a strict grammar first (exit 2): paths from a safe character set, listen addresses as IP literals,
an upstream as scheme://host[:port] only. Rendering is placeholder replacement on the bundled
templates in `stub/` (installed as `glcleanup/stub/files/`); nothing else is substituted.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from urllib.parse import urlsplit

from glcleanup.errors import UsageError

MODES = ("respond", "proxy")
DEPLOYS = ("nginx", "compose")
DEFAULT_DIR = "/var/lib/glcleanup-stub"
DEFAULT_IMAGE = "nginx:1.26"
VERIFY_AGENT = "glcleanup-verify/1"
# Absolute paths that can stand unquoted in nginx.conf and .env: no spaces, quotes, `;`, `$`, `{}`.
_SAFE_PATH = re.compile(r"\A/[A-Za-z0-9._@+/-]*\Z")
_HOSTNAME = re.compile(r"\A(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
_PLACEHOLDER = re.compile(r"@[A-Z_]+@")


def stub_files() -> Traversable:
    """The bundled stub folder: `glcleanup/stub/files/` in a wheel (setuptools maps the top-level
    `stub/` there), the top-level `stub/` itself in a source checkout or an editable install."""
    try:
        return resources.files("glcleanup.stub.files")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "stub"


def stub_file(name: str) -> str:
    """A bundled stub file's text."""
    return stub_files().joinpath(name).read_text(encoding="utf-8")


def safe_path(value: str, what: str) -> str:
    """An absolute path usable unquoted in nginx.conf; anything else is a usage error."""
    text = value.strip()
    if len(text) > 4096 or not _SAFE_PATH.match(text) or text.rstrip("/") == "":
        raise UsageError(f"{what} must be an absolute path of letters, digits and ._@+/- "
                         f"(symlink anything else), got {value[:80]!r}")
    parts = text.split("/")
    if ".." in parts or "." in parts:
        raise UsageError(f"{what} must not contain '.' or '..' components: {value[:80]!r}")
    return text.rstrip("/") or "/"


def port_number(value: str | int, what: str) -> int:
    text = str(value).strip()
    if not text.isdigit() or not text.isascii() or not 0 < int(text) < 65536:
        raise UsageError(f"{what} must be a port number 1-65535, got {str(value)[:40]!r}")
    return int(text)


@dataclass(frozen=True)
class Listen:
    """Where the stub binds: an IP literal (or all addresses) and a port."""

    address: str   # "0.0.0.0", "127.0.0.1", "::", "::1" ...
    port: int

    @property
    def nginx(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    def with_port(self, port: int) -> Listen:
        return Listen(self.address, port)

    @property
    def wildcard(self) -> bool:
        return ipaddress.ip_address(self.address).is_unspecified

    @property
    def connect_host(self) -> str:
        """Where a client on the same host reaches it (loopback for wildcard binds), URL-ready."""
        ip = ipaddress.ip_address(self.address)
        if ip.is_unspecified:
            return "[::1]" if ip.version == 6 else "127.0.0.1"
        return f"[{ip}]" if ip.version == 6 else str(ip)

    def __str__(self) -> str:
        return self.nginx


def parse_listen(value: str) -> Listen:
    """`ADDR:PORT`, `[V6]:PORT`, `*:PORT` or a bare `PORT` (all addresses)."""
    text = value.strip()
    if text.isdigit():
        return Listen("0.0.0.0", port_number(text, "--listen port"))
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([0-9.]+|\*):(\d{1,5})", text)
    if not m:
        raise UsageError(f"--listen must be ADDR:PORT, [IPV6]:PORT, *:PORT or PORT, got {value[:80]!r}")
    address, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if address == "*":
        address = "0.0.0.0"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError as exc:
        raise UsageError(f"--listen address is not an IP address: {address[:60]!r}") from exc
    return Listen(str(ip), port_number(port, "--listen port"))


def parse_upstream(value: str) -> str:
    """The real registry for proxy mode: `http(s)://host[:port]`, no path, user or query."""
    text = value.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--upstream must be an http:// or https:// URL, got {value[:80]!r}")
    if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
        raise UsageError(f"--upstream must be scheme://host[:port] only (no user, path or query): {value[:80]!r}")
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"--upstream has an invalid port: {value[:80]!r}") from exc
    try:
        ip = ipaddress.ip_address(host)
        shown = f"[{ip}]" if ip.version == 6 else str(ip)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise UsageError(f"--upstream host is not a valid host name: {host[:80]!r}") from None
        shown = host.lower()
    return f"{parts.scheme}://{shown}" + (f":{port}" if port else "")


def parse_command(value: str | None, what: str) -> list[str] | None:
    """The admin's own stop/start command, split like a shell would, run as an argv (no shell)."""
    if value is None:
        return None
    if "\n" in value or "\r" in value or "\0" in value:
        raise UsageError(f"{what} must be one line")
    try:
        argv = shlex.split(value)
    except ValueError as exc:
        raise UsageError(f"{what} cannot be split into words: {exc}") from exc
    if not argv:
        raise UsageError(f"{what} is empty")
    return argv


@dataclass(frozen=True)
class StubConfig:
    """Everything `stub on` was asked for, validated."""

    mode: str = "respond"
    listen: Listen = field(default_factory=lambda: Listen("0.0.0.0", 443))
    http_port: int | None = None
    cert: str | None = None
    key: str | None = None
    upstream: str | None = None
    deploy: str = "nginx"
    dir: str = DEFAULT_DIR
    stop_registry: list[str] | None = None
    start_registry: list[str] | None = None
    for_seconds: int = 0
    quiet_seconds: int = 0
    image: str = DEFAULT_IMAGE

    @property
    def tls(self) -> bool:
        return self.cert is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        """The stub's URL as seen from the registry host (used for verification)."""
        return f"{self.scheme}://{self.listen.connect_host}:{self.listen.port}"

    @property
    def compose_project(self) -> str:
        return "glcleanup-stub-" + hashlib.sha256(self.dir.encode()).hexdigest()[:8]


def build_config(*, mode: str = "respond", listen: str | None = None, http_port: str | None = None,
                 cert: str | None = None, key: str | None = None, upstream: str | None = None,
                 deploy: str = "nginx", dir: str | None = None, stop_registry: str | None = None,
                 start_registry: str | None = None, for_duration: timedelta | None = None,
                 quiet_minutes: float | None = None, registry_url: str | None = None,
                 image: str | None = None) -> StubConfig:
    """Validate raw option values into a StubConfig (UsageError, exit 2, on anything wrong)."""
    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if deploy not in DEPLOYS:
        raise UsageError(f"--deploy must be one of {', '.join(DEPLOYS)}, got {deploy!r}")
    if (cert is None) != (key is None):
        raise UsageError("--cert and --key go together (the registry's own certificate and key)")
    the_listen = parse_listen(listen) if listen else _default_listen(registry_url, cert is not None)
    port: int | None = None
    if http_port is not None and http_port.strip().lower() != "none":
        port = port_number(http_port, "--http-port")
        if cert is None:
            raise UsageError("--http-port redirects to TLS: it needs --cert and --key")
        if port == the_listen.port:
            raise UsageError("--http-port must differ from the --listen port")
    the_upstream = None
    if mode == "proxy":
        if not upstream:
            raise UsageError("--mode proxy needs --upstream URL (where the real registry answers now)")
        the_upstream = parse_upstream(upstream)
        up = urlsplit(the_upstream)
        up_port = up.port or (443 if up.scheme == "https" else 80)
        if up_port == the_listen.port and (up.hostname in ("127.0.0.1", "localhost", "::1")
                                          or up.hostname == the_listen.address or the_listen.wildcard):
            raise UsageError("--upstream points at the stub's own --listen address: the real registry "
                             "must answer somewhere else while the proxy is up")
    elif upstream:
        raise UsageError("--upstream only applies to --mode proxy")
    the_image = image or DEFAULT_IMAGE
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,200}", the_image):
        raise UsageError(f"invalid image name {the_image[:80]!r}")
    quiet = 0
    if quiet_minutes is not None:
        if not quiet_minutes > 0:
            raise UsageError("--quiet-minutes must be positive")
        quiet = max(1, round(quiet_minutes * 60))
    return StubConfig(
        mode=mode, listen=the_listen, http_port=port,
        cert=safe_path(cert, "--cert") if cert else None, key=safe_path(key, "--key") if key else None,
        upstream=the_upstream, deploy=deploy, dir=safe_path(dir or DEFAULT_DIR, "--dir"),
        stop_registry=parse_command(stop_registry, "--stop-registry"),
        start_registry=parse_command(start_registry, "--start-registry"),
        for_seconds=int(for_duration.total_seconds()) if for_duration else 0,
        quiet_seconds=quiet, image=the_image,
    )


def _default_listen(registry_url: str | None, tls: bool) -> Listen:
    """All addresses, on the port GitLab calls (from --registry-url), else 443 / 80."""
    port = 443 if tls else 80
    if registry_url:
        parts = urlsplit(registry_url)
        with contextlib.suppress(ValueError):
            port = parts.port or (443 if parts.scheme == "https" else 80)
    return Listen("0.0.0.0", port)


# --- rendering -------------------------------------------------------------------------------------

def render_nginx(config: StubConfig) -> str:
    """nginx.conf for the chosen mode: placeholders replaced, conditional lines kept or dropped."""
    template = stub_file(f"nginx-{config.mode}.conf.in")
    lines: list[str] = []
    for line in template.splitlines():
        if line.startswith("@TLS@"):
            if not config.tls:
                continue
            line = line[len("@TLS@"):]
        elif line.startswith("@HTTP@"):
            if config.http_port is None:
                continue
            line = line[len("@HTTP@"):]
        lines.append(line)
    values = {
        "@DIR@": config.dir,
        "@LISTEN@": config.listen.nginx,
        "@SSL@": " ssl" if config.tls else "",
        "@CERT@": config.cert or "",
        "@KEY@": config.key or "",
        "@UPSTREAM@": config.upstream or "",
        "@HTTP_LISTEN@": config.listen.with_port(config.http_port).nginx if config.http_port else "",
        "@TLS_PORT_SUFFIX@": "" if config.listen.port == 443 else f":{config.listen.port}",
    }
    text = "\n".join(lines) + "\n"
    text = _PLACEHOLDER.sub(lambda m: values.get(m.group(0), m.group(0)), text)
    left = [m for line in text.splitlines() if not line.lstrip().startswith("#")
            for m in _PLACEHOLDER.findall(line)]
    if left:
        raise AssertionError(f"unrendered placeholders in nginx-{config.mode}.conf.in: {left}")
    return text


NO_TLS_PLACEHOLDERS = ("no-tls-cert.placeholder", "no-tls-key.placeholder")


def render_env(config: StubConfig) -> str:
    """The compose `.env`: the values docker-compose.yml interpolates (all from the safe set)."""
    # Without TLS both mounts still need a source; two distinct files, because compose refuses a
    # volume list with the same entry twice ("services.stub.volumes ... has non-unique elements").
    cert = config.cert or f"{config.dir}/{NO_TLS_PLACEHOLDERS[0]}"
    key = config.key or f"{config.dir}/{NO_TLS_PLACEHOLDERS[1]}"
    return (f"STUB_DIR={config.dir}\nSTUB_CERT={cert}\nSTUB_KEY={key}\nSTUB_IMAGE={config.image}\n"
            f"COMPOSE_PROJECT_NAME={config.compose_project}\n")


__all__ = [
    "DEFAULT_DIR", "DEPLOYS", "MODES", "NO_TLS_PLACEHOLDERS",
    "VERIFY_AGENT", "Listen", "StubConfig", "build_config", "parse_command",
    "parse_listen", "parse_upstream", "render_env", "render_nginx", "safe_path", "stub_file",
]
