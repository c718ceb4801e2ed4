"""Capture REAL Distribution 2.8 log output and wrap it the way log collectors do.

Runs Debian's `docker-registry serve` (through the lab's RegistryProcess) on loopback, sends the
DELETE cases GitLab sends (tag -> 400, digest -> 202, unknown -> 404, delete disabled -> 405) with
`User-Agent: GitLab/17.3.5`, then writes the captured lines as: raw logrus text (= `journalctl -o
cat`), logrus JSON, the access log, docker json-file, and svlogd `current` (TAI64N and ISO labels).

    python -m tests.data.logs.capture tests/data/logs   # refresh the committed fixtures
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import requests

from glcleanup.lab.registry import RegistryProcess, push_image

UA = "GitLab/17.3.5"
_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def _delete(url: str, ref: str, repo: str = "user/repo") -> int:
    resp = requests.delete(f"{url}/v2/{repo}/manifests/{ref}", headers={"User-Agent": UA}, timeout=10)
    return resp.status_code


def _run_registry(root: Path, log_format: str, delete_enabled: bool) -> list[str]:
    """Start a real registry, replay GitLab's requests, return its log lines (stderr+stdout)."""
    reg = RegistryProcess(root, delete_enabled=delete_enabled, log_format=log_format)
    with reg:
        digest = push_image(reg.url, "user/repo", "latest", with_history=False)
        requests.options(f"{reg.url}/v2/name/manifests/tag", headers={"User-Agent": UA}, timeout=10)
        codes = [_delete(reg.url, "latest") for _ in range(3)]
        codes.append(_delete(reg.url, digest))
        codes.append(_delete(reg.url, digest))
        codes.append(_delete(reg.url, "latest", "nosuch/repo"))
    expected = [400, 400, 400, 202, 404, 400] if delete_enabled else [405] * 5 + [405]
    if codes != expected:
        raise RuntimeError(f"registry answered {codes}, expected {expected}")
    return [ln for ln in reg.log_path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _is_access(line: str) -> bool:
    return line[:1].isdigit() and " - - [" in line[:64]


def _line_time(line: str, fallback: datetime) -> datetime:
    """The capture time docker/svlogd would stamp: the app's own time, else the previous one."""
    marker = 'time="' if 'time="' in line else '"time":"'
    if marker in line:
        text = line.split(marker, 1)[1].split('"', 1)[0]
        head, _, frac = text.rstrip("Z").partition(".")
        return datetime.fromisoformat(head).replace(tzinfo=UTC).replace(microsecond=int((frac + "000000")[:6]))
    return fallback


def docker_json(lines: list[str]) -> str:
    """docker's json-file driver: one JSON object per line, `log` keeps the newline, HTML escaped."""
    out, when = [], datetime(2026, 1, 1, tzinfo=UTC)
    for line in lines:
        when = _line_time(line, when)
        stream = "stdout" if _is_access(line) else "stderr"
        log = json.dumps(line + "\n", ensure_ascii=False)
        for ch, esc in _HTML.items():
            log = log.replace(ch, esc)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
        out.append(f'{{"log":{log},"stream":"{stream}","time":"{stamp}"}}')
    return "\n".join(out) + "\n"


def tai64n(when: datetime) -> str:
    secs = int(when.timestamp())
    return "@%016x%08x" % (2**62 + 10 + secs, when.microsecond * 1000)  # noqa: UP031


def svlogd(lines: list[str], iso: bool) -> str:
    """runit's svlogd `current`: a TAI64N label (-t) or a UTC `YYYY-MM-DD_HH:MM:SS.fffff` (-tt)."""
    out, when = [], datetime(2026, 1, 1, tzinfo=UTC)
    for line in lines:
        when = _line_time(line, when)
        label = when.strftime("%Y-%m-%d_%H:%M:%S.%f")[:-1] if iso else tai64n(when)
        out.append(f"{label} {line}")
    return "\n".join(out) + "\n"


def capture(dest: Path) -> dict[str, Path]:
    """Write every fixture into `dest`; return name -> path."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="glc-capture-") as tmp:
        text = _run_registry(Path(tmp) / "text", "text", True)
        js = _run_registry(Path(tmp) / "json", "json", True)
        disabled = _run_registry(Path(tmp) / "off", "text", False)
    files = {
        "registry-text.log": "\n".join(ln for ln in text if not _is_access(ln)) + "\n",
        "journalctl-cat.log": "\n".join(text) + "\n",
        "registry-json.log": "\n".join(js) + "\n",
        "access.log": "\n".join(ln for ln in text if _is_access(ln)) + "\n",
        "docker-json.log": docker_json(text),
        "docker-json-jsonfmt.log": docker_json(js),
        "svlogd-tai64n.current": svlogd(text, iso=False),
        "svlogd-iso.current": svlogd(text, iso=True),
        "delete-disabled.log": "\n".join(disabled) + "\n",
    }
    paths = {}
    for name, body in files.items():
        path = dest / name
        path.write_text(body, encoding="utf-8")
        paths[name] = path
    return paths


if __name__ == "__main__":
    for name, path in capture(Path(sys.argv[1] if len(sys.argv) > 1 else ".")).items():
        print(f"{name}: {path.stat().st_size} bytes")
