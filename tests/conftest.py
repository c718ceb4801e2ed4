"""Every test runs in its own world: HOME, XDG dirs and GitLab env vars are per test."""

from __future__ import annotations

from pathlib import Path

import pytest

_ENV_TO_CLEAR = (
    "GITLAB_URL", "GITLAB_PRIVATE_TOKEN", "GITLAB_TOKEN", "PYTHON_GITLAB_CFG", "GITLAB_SSL_VERIFY",
    "GLCLEANUP_RAILS_HOST", "GLCLEANUP_RAILS_RUNNER", "GLCLEANUP_REGISTRY_HOST", "GLCLEANUP_REGISTRY_URL",
    "GLCLEANUP_REGISTRY_CA",
    "GLCLEANUP_SSH_KEY", "GLCLEANUP_KNOWN_HOSTS", "SSH_AUTH_SOCK", "GLCLEANUP_STUB_DIR",
    "COLUMNS",  # tables wrap to $COLUMNS: the tests read whole lines
)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for var in _ENV_TO_CLEAR:
        monkeypatch.delenv(var, raising=False)
    return home
