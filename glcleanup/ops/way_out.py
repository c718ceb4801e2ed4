"""The way out for a stuck row, named the same way by scan and doctor.

- `finish`: the row is still in GitLab's queue (looping or backing off): `stop-loop --mode finish` deletes
  its tags through GitLab's third-party path and removes the row, in one boot.
- `requeue_after_proxy`: the row is parked (`delete_failed`, GitLab 17.6's cap or `stop-loop --mode failed`):
  nothing picks it up again; put the probe-fixing proxy in front (`stub on --mode proxy`), then `requeue`,
  and GitLab deletes by digest and finishes it itself.
- `failed`: the registry cannot delete at all (`storage.delete.enabled: false`, 405 UNSUPPORTED in the
  probe replay): neither finish nor the proxy can delete; park the rows (`stop-loop --mode failed`),
  enable deletes, then `requeue`.
"""

from __future__ import annotations

from typing import Any

from glcleanup.gitlab_facts import LOOPING_STATES, PARKED_STATE

FINISH, REQUEUE_AFTER_PROXY, FAILED = "finish", "requeue_after_proxy", "failed"


def registry_cannot_delete(verdict: dict[str, Any] | None) -> bool:
    """The probe replay's tag DELETE said deletes are disabled (405 UNSUPPORTED)."""
    delete = (verdict or {}).get("tag_delete") or {}
    return delete.get("status") == 405 or delete.get("error_code") == "UNSUPPORTED"


def way_out(row: dict[str, Any], verdict: dict[str, Any] | None = None) -> str | None:
    """`finish`, `requeue_after_proxy`, `failed`, or None for a row that is not stuck."""
    status = row.get("status")
    if status not in (*LOOPING_STATES, PARKED_STATE):
        return None
    if registry_cannot_delete(verdict):
        return FAILED if status in LOOPING_STATES else None
    return FINISH if status in LOOPING_STATES else REQUEUE_AFTER_PROXY


def command(way: str | None, project: str | None, repository_id: Any) -> str | None:
    """The command line that takes that way out for one row."""
    target = f"--project {project} --repository {repository_id}" if project else f"--repository {repository_id}"
    if way == FINISH:
        return f"glcleanup stop-loop {target} --mode finish"
    if way == REQUEUE_AFTER_PROXY:
        return f"glcleanup stub on --mode proxy --upstream <registry> --yes, then glcleanup requeue {target}"
    if way == FAILED:
        return f"glcleanup stop-loop {target} --mode failed (then enable storage.delete and requeue)"
    return None


def summary(verdict: dict[str, Any] | None) -> dict[str, str | None]:
    """Doctor's view: the way out for a queued and for a parked row against this registry."""
    return {"queued": way_out({"status": LOOPING_STATES[0]}, verdict),
            "parked": way_out({"status": PARKED_STATE}, verdict)}
