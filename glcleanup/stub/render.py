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
MAX_QUIET_MINUTES = 7 * 24 * 60
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


# scheme://host[:port] and nothing else: a bracketed IPv6 literal (no zone: `%` would let anything in),
# an IPv4 literal or a DNS name. Checked as a whole before any URL parser sees it.
_UPSTREAM = re.compile(r"\A((?i:https?))://(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,253})(?::([0-9]{1,5}))?/?\Z")


def parse_upstream(value: str) -> str:
    """The real registry for proxy mode: `http(s)://host[:port]`, no path, user, query or IPv6 zone."""
    text = value.strip()
    shown = value.encode("unicode_escape").decode("ascii")[:80]
    m = _UPSTREAM.match(text)
    if not m:
        raise UsageError(f"--upstream must be scheme://host[:port] only, http or https (an IP literal or a DNS name; "
                         f"no user, path, query or IPv6 zone), got {shown!r}")
    scheme, host, port_text = m.group(1), m.group(2), m.group(3)
    if host.startswith("["):
        try:
            shown_host = f"[{ipaddress.IPv6Address(host[1:-1])}]"
        except ValueError:
            raise UsageError(f"--upstream has a malformed IPv6 address: {shown!r}") from None
    else:
        try:
            shown_host = str(ipaddress.IPv4Address(host))
        except ValueError:
            if not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
                raise UsageError(f"--upstream host is not a valid host name or IPv4 address: {shown!r}") from None
            shown_host = host.lower()
    port = port_number(port_text, "--upstream port") if port_text is not None else None
    return f"{scheme.lower()}://{shown_host}" + (f":{port}" if port else "")


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
        if not 0 < quiet_minutes <= MAX_QUIET_MINUTES:  # also refuses nan and inf
            raise UsageError(f"--quiet-minutes must be positive, at most {MAX_QUIET_MINUTES} (a week)")
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

# Every substituted value is one nginx word from this set: no space, quote, `;`, `{`, `}`, `#`, `$`, `\`.
_WORD = re.compile(r"\A[A-Za-z0-9._@+/:\[\]-]*\Z")
# Values of the same shape that cannot be anything but data: the rendered config must have exactly
# the statements the template renders with these.
_DUMMY = {"@DIR@": "/d", "@LISTEN@": "127.0.0.9:9", "@CERT@": "/c", "@KEY@": "/k", "@UPSTREAM@": "http://u",
          "@HTTP_LISTEN@": "127.0.0.9:8", "@TLS_PORT_SUFFIX@": ":9"}


def _render_template(config: StubConfig, values: dict[str, str]) -> str:
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
    text = "\n".join(lines) + "\n"
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(0), m.group(0)), text)


def nginx_statements(text: str) -> list[tuple[str, int, str]]:
    """nginx's own tokenization, reduced: each statement as (directive, number of words, `;` `{` or `}`)."""
    out: list[tuple[str, int, str]] = []
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif ch in ";{}":
            out.append((words[0] if words else "", len(words), ch))
            words = []
            i += 1
        elif ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            words.append(text[i:j + 1])
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in ";{}\"'#":
                j += 2 if text[j] == "\\" else 1
            words.append(text[i:j])
            i = j
    if words:
        out.append((words[0], len(words), ""))
    return out


def render_nginx(config: StubConfig) -> str:
    """nginx.conf for the chosen mode: placeholders replaced, conditional lines kept or dropped, and the
    result proven to hold exactly the template's statements (a value can never become a directive)."""
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
    for name, value in values.items():
        if name != "@SSL@" and not _WORD.match(value):
            raise UsageError(f"refusing to render {name.strip('@').lower()} {value[:80]!r} into nginx.conf: "
                             "not a single safe word")
    text = _render_template(config, values)
    left = [m for line in text.splitlines() if not line.lstrip().startswith("#")
            for m in _PLACEHOLDER.findall(line)]
    if left:
        raise AssertionError(f"unrendered placeholders in nginx-{config.mode}.conf.in: {left}")
    reference = _render_template(config, {**values, **{k: v for k, v in _DUMMY.items() if values.get(k)}})
    if nginx_statements(text) != nginx_statements(reference) or text.count("\n") != reference.count("\n"):
        raise UsageError("refusing the rendered nginx.conf: it does not hold exactly the template's directives "
                         "(a value would have become config)")
    return text


NO_TLS_PLACEHOLDERS = ("no-tls-cert.placeholder", "no-tls-key.placeholder")


def render_env(config: StubConfig) -> str:
    """The compose `.env`: the values docker-compose.yml interpolates (all from the safe set)."""
    # Without TLS both mounts still need a source; two distinct files, because compose refuses a
    # volume list with the same entry twice ("services.stub.volumes ... has non-unique elements").
    cert = config.cert or f"{config.dir}/{NO_TLS_PLACEHOLDERS[0]}"
    key = config.key or f"{config.dir}/{NO_TLS_PLACEHOLDERS[1]}"
    values = {"STUB_DIR": config.dir, "STUB_CERT": cert, "STUB_KEY": key, "STUB_IMAGE": config.image,
              "COMPOSE_PROJECT_NAME": config.compose_project}
    for name, value in values.items():  # compose interpolates `$` and quotes; a newline would add a variable
        if not _WORD.match(value) or not value:
            raise UsageError(f"refusing to render {name} {value[:80]!r} into .env: not a single safe word")
    return "".join(f"{name}={value}\n" for name, value in values.items())


__all__ = [
    "DEFAULT_DIR", "DEPLOYS", "MODES", "NO_TLS_PLACEHOLDERS",
    "VERIFY_AGENT", "Listen", "StubConfig", "build_config", "parse_command",
    "parse_listen", "parse_upstream", "render_env", "render_nginx", "safe_path", "stub_file",
]
