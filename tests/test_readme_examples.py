"""Every example command in README.md runs against the lab and exits as the README documents.

An example is a `$ glcleanup ...` line in any code block, or a `glcleanup`/`eval "$(glcleanup` line in a
```sh block (synopses like `glcleanup scan [--source ...]` are not examples). Each one must be listed in
EXAMPLES below with its documented exit code, so a new README example without a test fails here.
Example hosts and paths are mapped onto the lab (SUBSTITUTIONS); only the write-up's Docker commands
cannot run on a machine without a Docker engine, and say so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry missing"),
    pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing"),
    pytest.mark.skipif(not (BIN / "glcleanup").exists(), reason="glcleanup is not installed in this venv"),
    pytest.mark.timeout(240),
]

NOT_HERE = "needs Docker and a real registry host (`docker stop registry`); the stub is tested in test_stub_live.py"
CHECK_LAB = "a transcript of one lab session with its own paths; the states are tested in test_check_lab.py"
FINISH_LAB = "needs a repository still queued in a lab of its own; tested in test_finish_lab.py"
# README example -> documented exit code (None: cannot run here, with the reason). Order = run order.
EXAMPLES: dict[str, int | str] = {
    'eval "$(glcleanup lab up)"': 0,
    "glcleanup lab delete-image acme/platform/api 1": 0,
    'glcleanup scan --registry-log "$GLCLEANUP_LAB_REGISTRY_LOG"': 1,  # stuck and looping
    "glcleanup scan --registry-log /var/lib/docker/containers/<id>/<id>-json.log "
    "--registry-host registry.example.com": 1,
    "glcleanup logs /tmp/rlab/registry.log --since 15m": 1,  # the loop is live
    "glcleanup stop-loop --project acme/platform/api --mode failed --yes": 0,
    "glcleanup stop-loop --project acme/platform/api --yes": 0,  # nothing left to stop: the plan is empty
    "glcleanup lab delete-image acme/website 4": 0,
    'glcleanup stub on --registry-host local --dir "$GLCLEANUP_LAB_DIR/stub" --listen 127.0.0.1:38443 --yes': 0,
    "glcleanup lab registry-url http://127.0.0.1:38443": 0,
    "glcleanup scan --project acme/website": 0,  # the stub answered GitLab's DELETE: the row is gone
    "glcleanup lab registry-url --reset": 0,
    'glcleanup stub off --registry-host local --dir "$GLCLEANUP_LAB_DIR/stub" --yes': 0,
    "glcleanup stub on --registry-host root@registry.example.com --cert "
    "/var/opt/docker/registry/certs/docker-registry.crt --key /var/opt/docker/registry/certs/docker-registry.key "
    '--stop-registry "docker stop registry" --start-registry "docker start registry" --quiet-minutes 10 --yes':
        NOT_HERE,
    "glcleanup stub off --registry-host root@registry.example.com --yes": NOT_HERE,
    "glcleanup lab down": 0,
    # the Monitoring section is a transcript of one lab session; tests/test_check_lab.py runs that story
    # (OK, CRITICAL with the loop, WARNING once parked) and tests/test_check.py the UNKNOWN usage line
    "glcleanup check --registry-log /tmp/wtc/lab/registry.log --no-probe": CHECK_LAB,
    "glcleanup lab delete-image acme/platform/api 2": CHECK_LAB,
    "glcleanup check --registry-log /tmp/wtc/lab/registry.log": CHECK_LAB,
    "glcleanup check --warn-rate 100 --crit-rate 10": CHECK_LAB,
    # "Finish the deletion": tests/test_finish_lab.py runs the plan and --yes against the real registry
    "glcleanup stop-loop --project acme/website --mode finish": FINISH_LAB,
    "glcleanup stop-loop --project acme/website --mode finish --yes": FINISH_LAB,
}
SUBSTITUTIONS = {
    "/var/lib/docker/containers/<id>/<id>-json.log": '"$GLCLEANUP_LAB_REGISTRY_LOG"',
    "--registry-host registry.example.com": "--registry-host local",
    "/tmp/rlab/registry.log": '"$GLCLEANUP_LAB_REGISTRY_LOG"',
}


def readme_examples() -> list[str]:
    """The example commands, continuation lines joined, comments dropped."""
    found: list[str] = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", README, flags=re.S | re.M):
        text = re.sub(r"\\\n\s*", " ", body)
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("$ glcleanup"):
                found.append(re.sub(r"\s+#.*$", "", line[2:]).strip())
            elif lang == "sh" and (line.startswith("glcleanup ") or line.startswith('eval "$(glcleanup')):
                found.append(re.sub(r"\s+#.*$", "", line).strip())
    return [" ".join(c.split()) for c in found]


def test_every_readme_example_is_listed_here() -> None:
    assert sorted(set(readme_examples())) == sorted(" ".join(c.split()) for c in EXAMPLES)  # a repeat is one entry


def test_readme_examples_exit_as_documented(tmp_path: Path) -> None:
    """One shell session, as an admin would paste the README: each command's exit code is checked."""
    lines = ["cd \"$WORK\""]
    runnable = [(cmd, code) for cmd, code in EXAMPLES.items() if isinstance(code, int)]
    for number, (command, _code) in enumerate(runnable):
        for old, new in SUBSTITUTIONS.items():
            command = command.replace(old, new)
        lines.append(f"{command} >out.{number} 2>err.{number}; echo \"rc $?\"")
        if command.startswith(("glcleanup lab delete-image acme/platform", "glcleanup lab registry-url http")):
            lines.append("sleep 2")  # let the worker make a pass, as the README says ("a moment later")
    home = tmp_path / "home"
    env = {"PATH": f"{BIN}:{os.environ['PATH']}", "HOME": str(home), "XDG_STATE_HOME": str(home / "state"),
           "WORK": str(tmp_path), "LANG": "C.UTF-8"}
    try:
        result = subprocess.run(["bash", "-c", "\n".join(lines)], capture_output=True, text=True, env=env,
                                timeout=200, check=False)
    finally:
        subprocess.run([str(BIN / "glcleanup"), "lab", "down"], env=env, capture_output=True, timeout=60,
                       check=False)
    codes = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("rc ")]
    assert len(codes) == len(runnable), result
    for number, ((command, expected), got) in enumerate(zip(runnable, codes, strict=True)):
        err = (tmp_path / f"err.{number}").read_text()
        assert got == expected, (command, got, err, (tmp_path / f"out.{number}").read_text())
        assert "Traceback" not in err
