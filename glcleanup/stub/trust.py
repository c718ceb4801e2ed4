"""`stub off` acts on `--dir/state.json`, a file on the registry host: trust it only when nobody else could
have written it, and only in the shape `stub on` writes.

The file (and its directory) must belong to the user glcleanup logs in as and not be group- or
world-writable; its fields are checked against the same grammar `stub on` validated them with, so a
state file cannot name a command, deploy word or project that `on` would not have recorded.
"""

from __future__ import annotations

import re
from typing import Any

from glcleanup.errors import UsageError
from glcleanup.transport import Host
from glcleanup.transport.sh import run_script

# Fixed script: $1 is the directory. Prints "FILE_UID FILE_MODE DIR_UID DIR_MODE MY_UID", or "absent"/"odd".
OWNERSHIP = """
f="$1/state.json"
[ -e "$f" ] || [ -L "$f" ] || { echo absent; exit 0; }
{ [ -f "$f" ] && [ ! -L "$f" ]; } || { echo odd; exit 0; }
printf '%s %s %s\\n' "$(stat -c '%u %a' -- "$f")" "$(stat -c '%u %a' -- "$1")" "$(id -u)"
"""
_DEPLOYS = ("nginx", "compose", "compose-v1")
_PROJECT = re.compile(r"\Aglcleanup-stub-[0-9a-f]{8}\Z")
_URL = re.compile(r"\Ahttps?://[A-Za-z0-9.\-\[\]:]{1,300}(?:/[A-Za-z0-9._~/\-]*)?\Z")  # reaches curl as a word


def check_owner(host: Host, directory: str) -> None:
    """Refuse (exit 2) a state.json that someone else owns or may write, before it is read for real."""
    result = run_script(host, OWNERSHIP, directory, name="glcleanup-state", timeout=60)
    words = result.text.split()
    if result.exit_code != 0 or not words:
        raise UsageError(f"cannot check who owns {directory}/state.json on {host.name}: refused, nothing changed")
    if words == ["absent"]:
        return
    where = f"{directory}/state.json on {host.name}"
    if words == ["odd"] or len(words) != 5 or not all(w.isdigit() for w in words):
        raise UsageError(f"{where} is not a regular file (a symlink?): refused, nothing changed")
    file_uid, file_mode, dir_uid, dir_mode, me = words
    for what, uid, mode in (("state.json", file_uid, file_mode), (directory, dir_uid, dir_mode)):
        if uid != me:
            raise UsageError(f"{where}: {what} belongs to uid {uid}, not to you (uid {me}): refused, nothing "
                             "changed; `stub off` runs only what you recorded yourself")
        if int(mode, 8) & 0o022:
            raise UsageError(f"{where}: {what} is group- or world-writable (mode {mode}): anyone could have "
                             "changed the commands it records; refused, nothing changed")


def _words(value: Any) -> bool:
    return value is None or (isinstance(value, list) and len(value) <= 64 and all(
        isinstance(w, str) and w and len(w) <= 4096 and not any(c in w for c in "\n\r\0") for w in value))


def check_state(state: dict[str, Any], directory: str) -> None:
    """The fields `off` acts on, in the shape `on` wrote them; anything else refuses the file (exit 2)."""
    problems = []
    if state.get("dir") not in (None, directory):
        problems.append("it names another --dir")
    if state.get("stubctl_deploy") not in _DEPLOYS:
        problems.append("unknown deploy")
    if not isinstance(state.get("compose_project"), str) or not _PROJECT.match(state["compose_project"]):
        problems.append("odd compose project")
    url = state.get("registry_url")
    if url is not None and (not isinstance(url, str) or not _URL.match(url)):
        problems.append("registry_url is not an http(s) URL")
    for key in ("start_registry", "stop_registry"):
        if not _words(state.get(key)):
            problems.append(f"{key} is not a list of one-line words")
    if problems:
        raise UsageError(f"{directory}/state.json is not what `stub on` writes ({'; '.join(problems)}): refused, "
                         "nothing changed")


__all__ = ["check_owner", "check_state"]
