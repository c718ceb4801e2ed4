"""Disk relief: empty a runaway registry log the way the write-up did, without losing the evidence.

Order matters: the evidence summary is written BEFORE anything is truncated; the file's writers
are inspected first (`/proc/PID/fdinfo` flags) because `truncate -s 0` only stays clean for
writers that opened the file with O_APPEND (docker's json-file logger does). A writer that keeps
its own offset (a plain `>` redirect) writes its next line at the old offset, leaving a sparse
NUL-filled hole: the disk blocks are freed, but `ls -l` shows the old size and grep says
"binary file matches". glcleanup's reader skips such holes; the report says which case happened.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from glcleanup.errors import ConnectError, GlcleanupError
from glcleanup.paths import evidence_dir
from glcleanup.transport import Host
from glcleanup.transport.sh import file_size, run_script

O_ACCMODE, O_APPEND = 0o3, 0o2000

WRITERS_SH = r"""
target=$(readlink -f -- "$1") || exit 2
for fd in /proc/[0-9]*/fd/*; do
  [ "$(readlink "$fd" 2>/dev/null)" = "$target" ] || continue
  rest=${fd#/proc/}; pid=${rest%%/*}; n=${fd##*/}
  flags=$(sed -n 's/^flags:[[:space:]]*//p' "/proc/$pid/fdinfo/$n" 2>/dev/null)
  comm=$(cat "/proc/$pid/comm" 2>/dev/null)
  printf '%s %s %s %s\n' "$pid" "$n" "${flags:-0}" "$comm"
done
exit 0
"""
HEAD_SH = 'head -c "$2" -- "$1"'

LOG_OPTS_FIX = """\
Stop the log from filling the disk again (docker json-file rotation):
  /etc/docker/daemon.json (new containers; restart dockerd, then recreate the registry container):
    {"log-driver": "json-file", "log-opts": {"max-size": "100m", "max-file": "3"}}
  docker-compose.yml, in the registry service (then `docker compose up -d` recreates it):
    logging:
      driver: json-file
      options:
        max-size: "100m"
        max-file: "3"
  docker run: --log-opt max-size=100m --log-opt max-file=3
The real cure is ending the DELETE loop: `glcleanup stop-loop`, or `glcleanup stub on`."""

NUL_EXPLANATION = (
    "a writer without O_APPEND keeps its file offset: after `truncate -s 0` its next write lands at "
    "the old offset, so the file becomes a sparse NUL-filled hole followed by new lines. The disk "
    "blocks ARE freed (the hole takes no space), but `ls -l` shows the old size and grep says "
    "'binary file matches'; glcleanup reads past the NULs. Restart that writer (or have it reopen "
    "the file in append mode) to get a clean file."
)


@dataclass
class Writer:
    """A process holding the log open for writing, and whether it appends."""

    pid: int
    fd: int
    append: bool
    command: str

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "fd": self.fd, "append": self.append, "command": self.command}


@dataclass
class TruncateTarget:
    source: str
    path: str
    bytes: int
    writers: list[Writer] = field(default_factory=list)

    @property
    def nul_risk(self) -> bool:
        return any(not w.append for w in self.writers)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "path": self.path, "bytes": self.bytes, "nul_risk": self.nul_risk,
                "writers": [w.to_json() for w in self.writers]}


def find_writers(host: Host, path: str) -> list[Writer]:
    """Processes with `path` open for writing (own processes only unless run as root)."""
    result = run_script(host, WRITERS_SH, path, timeout=120)
    writers = []
    for line in result.text.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        flags = int(parts[2], 8) if parts[2].isdigit() else 0
        if flags & O_ACCMODE == 0:  # read-only (e.g. a `tail -f`)
            continue
        writers.append(Writer(int(parts[0]), int(parts[1]), bool(flags & O_APPEND),
                              parts[3] if len(parts) > 3 else "?"))
    return writers


def plan(host: Host, sources: list[dict[str, Any]]) -> list[TruncateTarget]:
    """What `--truncate` would empty, and who writes to it."""
    return [TruncateTarget(s["source"], s["path"], int(s["bytes"]), find_writers(host, s["path"]))
            for s in sources if s.get("path")]


def save_evidence(report: dict[str, Any], targets: list[TruncateTarget], host_name: str) -> Path:
    """Keep the evidence summary next to glcleanup's state before anything is emptied."""
    folder = evidence_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"logs-{stamp}.json"
    document = {"saved_at": stamp, "registry_host": host_name, "report": report,
                "truncated": [t.to_json() for t in targets]}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


def _size(host: Host, path: str) -> int:
    size = file_size(host, path)
    return -1 if size is None else size


def truncate(host: Host, target: TruncateTarget, settle: float = 1.0) -> dict[str, Any]:
    """`truncate -s 0`, then look at the file again to tell a clean result from a NUL-filled one."""
    result = host.run(["truncate", "-s", "0", "--", target.path], timeout=60)
    if result.exit_code != 0:
        raise GlcleanupError(f"truncate {target.path} on {host.name} failed: {result.error_text.strip()}")
    time.sleep(settle)
    head = run_script(host, HEAD_SH, target.path, "4096", timeout=60)
    if head.exit_code != 0:
        raise ConnectError(f"cannot re-read {target.path} on {host.name}: {head.error_text.strip()}")
    nul_fill = head.stdout[:1] == b"\x00"
    outcome: dict[str, Any] = {
        "source": target.source, "path": target.path, "bytes_before": target.bytes,
        "bytes_after": _size(host, target.path), "nul_fill": nul_fill,
        "writers": [w.to_json() for w in target.writers],
    }
    if nul_fill or target.nul_risk:
        culprits = ", ".join(f"pid {w.pid} ({w.command})" for w in target.writers if not w.append)
        outcome["explanation"] = (f"{culprits or 'a writer'}: " if culprits or nul_fill else "") + NUL_EXPLANATION
    else:
        outcome["explanation"] = ("clean: every writer appends (O_APPEND), so new lines start at offset 0"
                                  if target.writers else "clean: no process had the file open for writing")
    return outcome




def relieve(host: Host, report: dict[str, Any], approve: Callable[[list[TruncateTarget]], bool]
            ) -> dict[str, Any]:
    """Plan, ask, keep the evidence, then truncate: the whole `--truncate` flow in one place."""
    targets = plan(host, report.get("sources", []))
    if not targets or not approve(targets):
        return {"applied": False, "plan": [t.to_json() for t in targets], "evidence": None, "results": []}
    evidence = save_evidence(report, targets, host.name)
    results = [truncate(host, target) for target in targets]
    return {"applied": True, "plan": [t.to_json() for t in targets], "evidence": str(evidence),
            "results": results}


__all__ = ["LOG_OPTS_FIX", "NUL_EXPLANATION", "TruncateTarget", "Writer", "find_writers", "plan", "relieve",
           "save_evidence", "truncate"]
