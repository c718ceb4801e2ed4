"""`stop-loop --mode finish`: what Python adds around finish.rb (journal events, progress, the report).

finish.rb deletes the tags through GitLab's own ThirdParty::DeleteTagsService and removes the rows,
in the same single boot as the plan. The registry part cannot be rolled back, so the journal is
written from the script's `registry_journal` event (every target row and every tag -> digest)
before the first registry write; each row's removal adds its fresh row and change to that journal
from inside the removing transaction, as stop-loop's journal does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from glcleanup.errors import JournalError
from glcleanup.journal.store import Journal

FinishProgress = Callable[[dict[str, Any]], None]
DEFAULT_BATCH = 100  # tags per DeleteTagsService call (one dummy blob upload, N PUTs, one DELETE)
MAX_BATCH = 1000
NOT_UNDOABLE = ("registry data cannot be undone: the tags are deleted in the registry for good; the journal "
                "keeps every tag -> digest, and `glcleanup undo` restores only the GitLab rows")


def handle_event(sink: Any, event: dict[str, Any], on_progress: FinishProgress | None) -> bool:
    """finish.rb's own events; True when handled here (the rest go to stop-loop's journal sink)."""
    if "progress" in event:
        if on_progress is not None:
            on_progress(dict(event["progress"]))
        return True
    if "registry_journal" in event:
        journal = Journal.new("stop-loop", sink.project, {**sink.meta, **event["registry_journal"]})
        try:
            journal.save()
        except JournalError:
            sink.unsaved = json.dumps(journal.data)
            raise
        sink.journal = journal
        return True
    if "journal" in event and sink.journal is not None:
        body = event["journal"]
        sink.journal.merge_rows("rows", list(body.get("rows", [])))
        sink.journal.data.setdefault("changes", []).extend(body.get("changes", []))
        sink.journal.save()
        return True
    return False


def finish_warnings(result: dict[str, Any]) -> list[str]:
    """What the admin must know after a finish run: tags left (row untouched), the irreversible part."""
    out = []
    for entry in result.get("registry", []):
        if entry.get("error"):
            left = entry.get("left")
            named = _name_tags(left) if isinstance(left, list) else "unknown (tags/list did not answer)"
            out.append(f"repository {entry['id']} {entry['path']}: {entry['error']}; row left untouched; "
                       f"tags left in the registry: {named}")
    if result.get("registry") and any(e.get("deleted") for e in result["registry"]):
        out.append(NOT_UNDOABLE)
    return out


def _name_tags(tags: list[str], most: int = 20) -> str:
    """Every tag left, up to `most` named (the JSON document has them all)."""
    if not tags:
        return "none"
    more = f" (+{len(tags) - most} more, all in the JSON result)" if len(tags) > most else ""
    return ", ".join(tags[:most]) + more
