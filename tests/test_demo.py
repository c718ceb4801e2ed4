"""`glcleanup demo` runs the whole story to the end, and what it shows is true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from glcleanup.lab.demo import run_demo


def test_demo_story_facts(tmp_path: Path) -> None:
    lines: list[str] = []
    facts = run_demo(lines.append)
    text = "\n".join(lines)
    scan = facts["scan"]
    assert [r["path"] for r in scan["repositories"]] == ["acme/platform/api"]
    assert scan["repositories"][0]["sources"] == ["api", "rails"]
    assert scan["loops"][0]["user_agent"] == "GitLab/17.3.5"
    assert facts["deletes_before_stop"] >= 6
    # the monitoring check: CRITICAL while the loop runs, naming the command; OK after stop-loop
    assert facts["check_loop"]["state"] == "CRITICAL"
    assert "run glcleanup stop-loop --project acme/platform/api" in facts["check_loop"]["summary"]
    assert facts["check_after"]["state"] == "OK"
    assert "GLCLEANUP CRITICAL - loop on acme/platform/api" in text
    # stop-loop: verified, journaled, quiet afterwards, leftovers listed with digests
    assert facts["stop_loop"]["verified"] is True
    assert facts["stop_loop"]["deletes_after"] == 0
    assert {t["tag"] for t in facts["stop_loop"]["left_in_registry"][0]["tags"]} == {"latest", "v1.4.2"}
    # respond: the row goes, the data stays (orphaned); proxy: the tags are really deleted
    assert facts["respond"]["destroyed"] is True
    assert sorted(facts["respond"]["tags_left"]) == ["2026-11-28", "latest"]
    assert facts["proxy"]["destroyed"] is True
    assert facts["proxy"]["tags_left"] == []
    assert "== 6." in text
    # the demo ends with stop-loop --mode finish: the image is gone from the real registry, and the row too
    assert facts["finish"]["verified"] is True
    assert facts["finish"]["tags_before"] == ["latest"]
    assert facts["finish"]["tags_left"] == []
    assert facts["finish"]["row_gone"] is True
    assert facts["finish"]["deletes_after"] == 0
    assert "== 7." in text
    # the demo's journal does not leak into the admin's state directory
    assert not (Path.home() / ".local" / "state" / "glcleanup" / "journal").exists()


def test_demo_cli_exits_zero_and_leaves_nothing_running(tmp_path: Path) -> None:
    before = _our_processes()
    result = subprocess.run([sys.executable, "-m", "glcleanup", "demo"], capture_output=True, text=True,
                            timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "verified after a 3 s settle period: True" in result.stdout
    assert _our_processes() <= before


def _our_processes() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "glcleanup-demo-"], capture_output=True, text=True, check=False).stdout
    return {int(p) for p in out.split()}
