"""Every test runs in its own world: HOME, XDG dirs and GitLab env vars are per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from glcleanup.lab import postgres
from glcleanup.lab.lab import Lab
from glcleanup.lab.postgres import PostgresCluster
from tests.support import running_lab, still_lab

_ENV_TO_CLEAR = (
    "GITLAB_URL", "GITLAB_PRIVATE_TOKEN", "GITLAB_TOKEN", "PYTHON_GITLAB_CFG", "GITLAB_SSL_VERIFY",
    "GLCLEANUP_RAILS_HOST", "GLCLEANUP_RAILS_RUNNER", "GLCLEANUP_REGISTRY_HOST", "GLCLEANUP_REGISTRY_URL",
    "GLCLEANUP_REGISTRY_CA",
    "GLCLEANUP_SSH_KEY", "GLCLEANUP_KNOWN_HOSTS", "SSH_AUTH_SOCK", "GLCLEANUP_STUB_DIR",
    "COLUMNS",  # tables wrap to $COLUMNS: the tests read whole lines
)


CAPTURED_AT = 1_796_000_000  # 2026-11-29: the saved logs in tests/data/logs are captures, old files


@pytest.fixture(scope="session", autouse=True)
def fixture_logs_are_captures() -> None:
    """A checkout gives every file a fresh mtime; a saved registry log is an old file (logs judges a
    capture as of its newest entry, a live log against the clock)."""
    import os

    for path in (Path(__file__).parent / "data" / "logs").iterdir():
        if path.is_file() and not path.name.endswith(".py"):
            os.utime(path, (CAPTURED_AT, CAPTURED_AT))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for var in _ENV_TO_CLEAR:
        monkeypatch.delenv(var, raising=False)
    return home


# --- databases: the lab runs on PostgreSQL (GitLab's database) and on SQLite (the demo's) ---------------
@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One private PostgreSQL cluster per test session (socket only); each test gets its own database."""
    if not postgres.available():
        pytest.skip("PostgreSQL server binaries or psycopg missing (scripts/setup.sh installs them)")
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["postgresql", "sqlite"])
def database(request: pytest.FixtureRequest) -> str | None:
    """A fresh PostgreSQL database DSN, or None for the lab's SQLite file."""
    if request.param == "sqlite":
        return None
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database()


@pytest.fixture
def pg_database(pg_cluster: PostgresCluster) -> str:
    return pg_cluster.create_database()


@pytest.fixture(params=still_lab.LAB_DB_PARAMS, ids=still_lab.lab_db_id)
def lab_db(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> tuple[Path, str, dict[str, int]]:
    """A still lab database per version, on PostgreSQL (GitLab's) and on SQLite (tests/support/still_lab.py)."""
    return still_lab.make_lab_db(request, tmp_path, monkeypatch)


@pytest.fixture
def lab_factory(tmp_path: Path, database: str | None) -> Iterator[Callable[..., Lab]]:
    """Running labs on PostgreSQL (GitLab's database) and on SQLite (the demo's): every test runs on both."""
    yield from running_lab.labs_for(tmp_path, database)
