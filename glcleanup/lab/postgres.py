"""A private PostgreSQL cluster for the lab: initdb in its own directory, a unix socket there, no TCP.

GitLab runs on PostgreSQL; row locks, `FOR UPDATE SKIP LOCKED`, `ON CONFLICT` and the column types only
behave as on GitLab on the real database. The cluster is Debian's `postgresql` 15 binaries
(`/usr/lib/postgresql/<v>/bin`), started as an unprivileged user when we are root (initdb refuses root),
with `setpriv --pdeathsig`, so the postmaster stops by itself if the process that started it dies.
Cheap per-test databases come from `create_database()` (CREATE DATABASE ... TEMPLATE template0).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from glcleanup.errors import GlcleanupError

PG_ROOTS = ("/usr/lib/postgresql",)
SUPERUSER = "postgres"
UNPRIVILEGED = ("postgres", "nobody")


class PostgresError(GlcleanupError):
    """The lab's PostgreSQL cluster could not be created, started or used."""


def pg_bindir() -> Path | None:
    """The newest installed server's bin directory (Debian keeps them out of PATH)."""
    for root in PG_ROOTS:
        versions = sorted((p for p in Path(root).glob("*/bin") if (p / "postgres").exists()),
                          key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
        if versions:
            return versions[-1]
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def available() -> bool:
    """Server binaries, and psycopg for the Python side of the lab."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return pg_bindir() is not None


def _run_as() -> pwd.struct_passwd | None:
    """Root cannot run initdb/postgres: pick an unprivileged account; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresError("running as root, and neither the postgres nor the nobody account exists")


class PostgresCluster:
    """initdb + postgres in `directory` (created if missing); `dsn()` names a database in it."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.temporary = directory is None
        if directory is None:
            # Outside any root-only (0700) test directory, so the unprivileged server can reach it.
            directory = tempfile.mkdtemp(prefix="glcleanup-pg-")
        self.dir = Path(directory).resolve()
        self.data = self.dir / "data"
        self.socket_dir = self.dir / "run"
        self.log = self.dir / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.bindir = pg_bindir()

    def _prefix(self) -> list[str]:
        account = _run_as()
        base = ["setpriv", "--pdeathsig", "INT"]
        if account is None:
            return base
        return [*base, f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups"]

    def _own(self, *paths: Path) -> None:
        account = _run_as()
        if account is None:
            return
        for path in paths:
            os.chown(path, account.pw_uid, account.pw_gid)

    def start(self, timeout: float = 30.0) -> PostgresCluster:
        if self.bindir is None:
            raise PostgresError("PostgreSQL server binaries not found (apt install postgresql)")
        if shutil.which("setpriv") is None:
            raise PostgresError("setpriv not found (util-linux)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self.dir.chmod(0o755)
        self._own(self.dir, self.socket_dir)
        if not (self.data / "PG_VERSION").exists():
            subprocess.run([*self._prefix(), str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                            "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
                           check=True, capture_output=True, timeout=120, cwd=self.dir)
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        try:
            # Socket only (listen_addresses ''): nothing listens on any network address.
            self.proc = subprocess.Popen(
                [*self._prefix(), str(self.bindir / "postgres"), "-D", str(self.data), "-k", str(self.socket_dir),
                 "-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "TimeZone=UTC"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
                start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PostgresError(f"postgres exited: {self.log.read_text(errors='replace')[-800:]}")
            if self._ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise PostgresError(f"postgres did not accept connections in {timeout:.0f} s")

    def _ready(self) -> bool:
        try:
            import psycopg

            with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                return True
        except Exception:
            return False

    def dsn(self, database: str) -> str:
        return f"postgresql:///{database}?host={self.socket_dir}&user={SUPERUSER}"

    def create_database(self, name: str | None = None) -> str:
        """A fresh, empty database; returns its DSN."""
        import psycopg

        name = name or "lab_" + secrets.token_hex(6)
        if not name.replace("_", "").isalnum():
            raise PostgresError(f"not a database name: {name!r}")
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.dsn(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then SIGKILL; removes a temporary directory we created."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.temporary:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
