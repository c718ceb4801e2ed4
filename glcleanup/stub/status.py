"""What `stub status` reports: liveness, the recorded state and the stub's own logs, in one round trip."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from glcleanup.errors import StubError
from glcleanup.stub.control import parse_status_lines, stubctl, tail_text
from glcleanup.transport import Host

_ACCESS_LINE = re.compile(r'^(\S+) \S+ \S+ \[([^\]]+)\] "(\S+) (\S+)[^"]*" (\d{3}) \S+ "[^"]*" "([^"]*)"')


def iso(moment: datetime) -> str:
    """UTC, seconds, with a Z: how every timestamp in state and status is written."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class StubStatus:
    """What `stub status` reports, read from --dir on the registry host."""

    dir: str
    state_file: bool = False
    running: bool = False
    state: dict[str, Any] | None = None
    last_state: dict[str, Any] | None = None
    values: dict[str, str] = field(default_factory=dict)

    @property
    def on(self) -> bool:
        return self.state_file and self.running

    @property
    def confirmed(self) -> bool:
        return "confirmed_since" in self.values

    def to_json(self) -> dict[str, Any]:
        state = self.state or {}
        source = state or self.last_state or {}
        since = self.values.get("confirmed_since") or state.get("since") or None
        until = self.values.get("confirmed_until") or None
        until = None if until == "-" else until
        pid = self.values.get("pid") or self.values.get("confirmed_pid") or None
        doc: dict[str, Any] = {
            "state": "on" if self.on else "off",
            "mode": source.get("mode"),
            "listen": source.get("listen"),
            "since": since if self.state_file else None,
            "until": until if self.state_file else None,
            "deploy": source.get("deploy"),
            "dir": self.dir,
            "pid": int(pid) if pid and pid.isdigit() and self.on else None,
            "confirmed": self.confirmed,
            "upstream": source.get("upstream"),
            "http_port": source.get("http_port"),
            "quiet_minutes": (source.get("quiet_seconds") or 0) / 60 or None,
            "for_seconds": source.get("for_seconds") or None,
            "requests": int(self.values["requests"]) if self.values.get("requests", "").isdigit() else 0,
            "deletes": int(self.values["deletes"]) if self.values.get("deletes", "").isdigit() else 0,
            "last_delete": parse_access_line(self.values.get("last_delete", "")),
            "watcher_pid": int(self.values["watcher"]) if self.values.get("watcher", "").isdigit() else None,
            "start_registry": source.get("start_registry"),
        }
        if self.state_file and not self.running:
            doc["stale"] = True
        if self.values.get("restore_failed"):
            doc["restore_failed"] = int(self.values["restore_failed"]) if self.values["restore_failed"].isdigit() \
                else self.values["restore_failed"]
        if self.values.get("last_off_reason") and not self.state_file:
            doc["last_off"] = {"reason": self.values["last_off_reason"], "at": self.values.get("last_off_at")}
        return doc


def parse_access_line(line: str) -> dict[str, Any] | None:
    """One nginx `combined` line as {time, method, path, status, user_agent, client}."""
    m = _ACCESS_LINE.match(line.strip())
    if not m:
        return None
    when = m.group(2)
    with contextlib.suppress(ValueError):
        when = iso(datetime.strptime(when, "%d/%b/%Y:%H:%M:%S %z").astimezone(UTC))
    return {"time": when, "method": m.group(3), "path": m.group(4), "status": int(m.group(5)),
            "user_agent": m.group(6), "client": m.group(1)}


def read_status(host: Host, directory: str) -> StubStatus:
    """One round trip: stubctl status prints liveness, log counts and the state file."""
    result = stubctl(host, "status", directory, timeout=60)
    if result.exit_code != 0:
        raise StubError(f"cannot read the stub's state in {directory} on {host.name}: {tail_text(result)}")
    values, state, which = parse_status_lines(result.text)
    status = StubStatus(directory, values=values)
    status.state_file = values.get("state_file") == "present"
    status.running = values.get("running") == "yes"
    if which == "state":
        status.state = state
    elif which == "last-state":
        status.last_state = state
    if status.state_file and state is None:
        raise StubError(f"{directory}/state.json on {host.name} is unreadable; inspect it before going on")
    return status


__all__ = ["StubStatus", "iso", "parse_access_line", "read_status"]
