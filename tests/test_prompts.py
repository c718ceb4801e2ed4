"""Prompts as an admin at a terminal meets them: `y` and `yes` go ahead, anything else says "nothing changed"
once, without the plan shown twice; `undo` asks like `stop-loop`. Real pseudo-terminals, real runner."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.still_lab import RUNNER, dump, make_db
from tests.support.terminal import on_a_terminal

pytestmark = pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing")
ROOT = Path(__file__).resolve().parents[1]


def test_no_at_the_prompt_says_nothing_changed_once_then_yes_and_undo_ask(tmp_path: Path) -> None:
    db = tmp_path / "gitlab.sqlite3"
    make_db(db, "17.3.5")
    before = dump(db)
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home), "XDG_STATE_HOME": str(home / "state"), "GLCLEANUP_LAB_DB": str(db),
           "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    stop = ["stop-loop", "--project", "acme/web", "--settle", "0.1", "--rails-host", "local", "--rails-runner",
            RUNNER]
    rc, out = on_a_terminal(stop, b"Apply this plan? [y/N]", "n", env)
    assert rc == 0, out
    assert out.count("Plan (from -> to):") == 1, out
    assert out.count("nothing changed") == 1, out
    assert dump(db) == before

    rc, out = on_a_terminal(stop, b"Apply this plan? [y/N]", "yes", env)
    assert rc == 0, out
    assert "Applied; journal:" in out
    assert dump(db) != before

    undo = ["undo", "--rails-host", "local", "--rails-runner", RUNNER]
    rc, out = on_a_terminal(undo, b"Restore these rows? [y/N]", "n", env)
    assert rc == 0, out
    assert out.count("nothing changed") == 1, out
    assert "dry run" not in out
    assert dump(db) != before
    rc, out = on_a_terminal(undo, b"Restore these rows? [y/N]", "y", env)
    assert rc == 0, out
    assert "Restored exactly as journaled." in out
    assert dump(db) == before
