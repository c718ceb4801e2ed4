"""GitLab's behaviour per version lives in gitlab_facts only, and every command speaks its vocabulary."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from glcleanup import gitlab_facts
from glcleanup.gitlab_facts import RetryCap, retry_cap
from glcleanup.ops import probe

PACKAGE = Path(gitlab_facts.__file__).parent


@pytest.mark.parametrize(("version", "flag", "cap"), [
    ("17.3.5-ee", None, RetryCap.NONE), ("16.6.1", True, RetryCap.NONE), ("17.5.0", None, RetryCap.UNKNOWN),
    ("17.5.0", True, RetryCap.FEATURE_FLAG), ("17.5.3-ee", False, RetryCap.NONE), ("17.6.0-ee", None, RetryCap.NATIVE),
    ("18.1.2", False, RetryCap.NATIVE), ("weird", None, RetryCap.UNKNOWN), (None, None, RetryCap.UNKNOWN),
])
def test_retry_cap_by_version_and_flag(version: str | None, flag: bool | None, cap: RetryCap) -> None:
    assert retry_cap(version, flag) == cap


@pytest.mark.parametrize(("status", "success"), [(200, True), (202, True), (299, True), (404, True),
                                                 (400, False), (401, False), (405, False), (500, False)])
def test_what_gitlab_counts_as_a_successful_delete(status: int, success: bool) -> None:
    assert gitlab_facts.delete_counts_as_success(status) is success


def test_no_upgrade_advice_where_gitlab_already_caps() -> None:
    assert probe.UPGRADE_FIX in probe.fixes(RetryCap.NONE)
    assert probe.UPGRADE_FIX in probe.fixes(RetryCap.UNKNOWN)
    assert probe.UPGRADE_FIX not in probe.fixes(RetryCap.NATIVE)
    assert probe.fixes(RetryCap.NATIVE) == probe.FIXES[1:]


def test_ruby_scripts_get_every_state_list_as_data() -> None:
    """No Ruby script spells a status list or a version rule of its own."""
    facts = gitlab_facts.for_ruby()
    assert facts["looping_states"] == ["delete_scheduled", "delete_ongoing"]
    for script in (PACKAGE / "gitlab" / "ruby").glob("*.rb"):
        text = script.read_text()
        assert not re.search(r"%[wi]\[[^\]]*delete_(scheduled|ongoing|failed)", text), script.name
        assert not re.search(r"%[wi]\[[^\]]*cleanup_(scheduled|unfinished|ongoing)", text), script.name
        assert "minor >= 6" not in text, script.name
        assert "set_delete_failed_container_repository" not in text, script.name


def test_each_fact_has_one_home_in_python() -> None:
    """The tuples of looping states, the success rule and the 17.6 rule appear only in gitlab_facts.py."""
    patterns = [r'\(\s*"delete_scheduled",\s*"delete_ongoing"', r"status == 404", r"\(17,\s*6\)",
                r'"set_delete_failed_container_repository"']
    for module in PACKAGE.rglob("*.py"):
        if module.name == "gitlab_facts.py" or "lab" in module.relative_to(PACKAGE).parts:
            continue  # the lab simulates GitLab itself, per version
        text = module.read_text()
        for pattern in patterns:
            assert not re.search(pattern, text), f"{module}: {pattern}"
