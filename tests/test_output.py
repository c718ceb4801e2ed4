"""Tables fit the terminal (long cells wrap in their column); pipes and JSON are never wrapped."""

from __future__ import annotations

import pytest

from glcleanup.cli.output import emit_table, fit_widths

ROWS = [{"check": "registry_tag_delete", "ok": "FAIL", "detail": "the probe says yes (Allow: DELETE) but " * 6},
        {"check": "gitlab_api", "ok": "ok", "detail": "root (admin) on GitLab 17.3.5"}]


def test_a_wide_table_fits_the_terminal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    emit_table(ROWS, ["check", "ok", "detail"])
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "registry_tag_delete" in out  # narrow columns are left whole
    assert "".join(out.split()).count("theprobesaysyes") == 6  # nothing lost in the wrap


def test_a_pipe_gets_the_whole_lines(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    emit_table(ROWS, ["check", "ok", "detail"])
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) > 200


def test_fit_widths_gives_way_from_the_widest_column() -> None:
    table = [["a", "b" * 50, "c" * 100]]
    widths = fit_widths(table, 80)
    assert widths is not None
    assert widths[0] is None
    assert sum(w or 1 for w in widths) + 4 <= 80
    assert fit_widths(table, 200) is None
