"""The running lab for the stop-loop tests: the registry's logged DELETEs, the rows, the CLI with the lab's
settings. `lab_factory` (tests/conftest.py) starts labs on PostgreSQL and on SQLite and stops them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from glcleanup.cli import app
from glcleanup.lab import schema
from glcleanup.lab.lab import Lab
from tests.support.net import wait_until

_DELETE = re.compile(r'time="([^"]+)".*http\.request\.method=DELETE .*vars\.name=(\S+)')


def deletes(log: Path, path: str) -> list[float]:
    """Epoch times of every DELETE the registry logged for `path` (logrus text lines)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        match = _DELETE.search(line)
        if match and match.group(2) == path:
            stamp = re.sub(r"(\.\d{6})\d*Z$", r"\1+00:00", match.group(1))
            out.append(datetime.fromisoformat(stamp).timestamp())
    return out


def wait_for(cond: Callable[[], object], timeout: float = 20.0) -> None:
    wait_until(cond, timeout)


def table(lab: Lab) -> dict[int, dict[str, Any]]:
    conn = schema.connect(lab.database)
    try:
        return {r["id"]: dict(r) for r in conn.execute("SELECT * FROM container_repositories")}
    finally:
        conn.close()


def row(lab: Lab, rid: int) -> dict[str, Any] | None:
    """One container_repositories row, or None once GitLab (or glcleanup) removed it."""
    conn = schema.connect(lab.database)
    try:
        found = conn.execute("SELECT * FROM container_repositories WHERE id = ?", (rid,)).fetchone()
        return dict(found) if found else None
    finally:
        conn.close()


def status(lab: Lab, rid: int) -> int | None:
    row = table(lab).get(rid)
    return None if row is None else row["status"]


def boots(lab: Lab) -> int:
    return lab.boot_log.read_text().count("\n") if lab.boot_log.exists() else 0


def stop_loop(lab: Lab, *args: str, settle: float = 2.0, extra_env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["stop-loop", *args, "--settle", str(settle), "--yes", "-o", "json"],
                              env={**lab.settings_env(), **(extra_env or {})})



def labs_for(tmp_path: Path, database: str | None) -> Iterator[Callable[..., Lab]]:
    """Labs on PostgreSQL (GitLab's database) or SQLite (the demo's), all stopped afterwards."""
    labs: list[Lab] = []

    def make(version: str, **kw: Any) -> Lab:
        lab = Lab(tmp_path / f"lab-{len(labs)}", version=version, database=database, **kw)
        labs.append(lab)
        lab.up(daemon=False)
        return lab

    yield make
    for lab in labs:
        lab.down()
