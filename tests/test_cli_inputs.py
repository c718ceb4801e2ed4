"""Every command with wrong inputs: wrong types, missing values, unknown hosts, malformed URLs, nonexistent
files, directories instead of files. Each must end with a documented exit code (design.md §5), at most one
line on stderr (no -v), never a traceback, and nothing changed in the lab's database or the stub's dir."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.testing
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.lab.lab import Lab

pytestmark = [
    pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry missing"),
    pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing"),
    pytest.mark.timeout(240),
]

NOFILE = "/nonexistent/glcleanup-test"
NOTURL = "127.0.0.1:1"            # no scheme
REFUSED = "http://127.0.0.1:1"    # nothing listens on port 1
BADHOST = "bad host!"
DEADSSH = "root@127.0.0.1:1"      # SSH connection refused


@functools.cache
def _built() -> object:
    from typer.main import get_command

    return get_command(app)


@pytest.fixture(autouse=True)
def _command_tree_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """typer rebuilds the click tree on every invoke (~0.1 s here); these tests invoke it ~900 times."""
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: _built())


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab(tmp_path_factory.mktemp("lab"), version="17.3.5") as running:
        yield running


@pytest.fixture(scope="module")
def stub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stub --dir with a recorded state that an `off` would act on: it must stay exactly as it is."""
    directory = tmp_path_factory.mktemp("stub")
    (directory / "last-state.json").write_text('{"mode": "respond"}\n')
    return directory


def _db(lab: Lab) -> str:
    conn = sqlite3.connect(f"file:{lab.db_path}?mode=ro", uri=True)
    try:
        rows = [repr(conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall())  # noqa: S608
                for table in ("container_repositories", "projects", "namespaces", "routes",
                              "container_expiration_policies")]
    finally:
        conn.close()
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(directory.rglob("*"))}


# (args, exit codes allowed; {2} = usage error, {3} = environment error). "{STUB}" is the stub dir,
# "{DIR}" a directory, "{LOG}" the lab's registry log, "{OTHER}" a repository id of another project.
CASES: list[tuple[list[str], set[int]]] = [
    # the root and unknown things
    (["nope"], {2}),
    (["scan", "extra-argument"], {2}),
    (["scan", "--nope"], {2}),
    # common connection options, on a command that uses each
    (["scan", "--url", NOTURL], {2}),
    (["scan", "--url", "http://"], {2}),
    (["scan", "--url", "https://x:99999"], {2}),
    (["scan", "--source", "api", "--url", REFUSED], {3}),
    (["scan", "--source", "api", "--url", "{REGISTRY}"], {3}),
    (["scan", "--source", "api", "--url", "http://nosuch.invalid"], {3}),
    (["scan", "--registry-url", "ftp://registry"], {2}),
    (["scan", "--rails-host", BADHOST, "--source", "rails"], {2}),
    (["scan", "--rails-host", DEADSSH, "--source", "rails"], {3}),
    (["scan", "--rails-host", "local", "--rails-runner", NOFILE, "--source", "rails"], {3}),
    (["scan", "--rails-host", "local", "--rails-runner", "{DIR}", "--source", "rails"], {3}),
    (["scan", "--rails-host", DEADSSH, "--ssh-key", NOFILE, "--source", "rails"], {3}),
    (["scan", "--rails-host", DEADSSH, "--ssh-key", "{DIR}", "--source", "rails"], {3}),
    (["scan", "--rails-host", DEADSSH, "--known-hosts", "{DIR}", "--source", "rails"], {3}),
    (["scan", "-c", NOFILE], {3}),
    (["scan", "-c", "{DIR}"], {3}),
    (["scan", "-g", "nosection"], {3}),
    (["scan", "-o", "yaml"], {2}),
    (["scan", "-o"], {2}),
    # scan
    (["scan", "--source", "nope"], {2}),
    (["scan", "--source"], {2}),
    (["scan", "--project", "../etc"], {2}),
    (["scan", "--project", "nope"], {2}),
    (["scan", "--project", "nope/nope", "--source", "api"], {3}),
    (["scan", "--project", "nope/nope", "--source", "rails"], {3}),
    (["scan", "--group", "nope", "--source", "api"], {3}),
    (["scan", "--group", "nope", "--source", "rails"], {3}),
    (["scan", "--group", "a/../b"], {2}),
    (["scan", "--since", "15", "--registry-log", "{LOG}"], {2}),
    (["scan", "--since", "-5m", "--registry-log", "{LOG}"], {2}),
    (["scan", "--registry-log", NOFILE, "--source", "rails"], {3}),
    (["scan", "--registry-log", "{DIR}", "--source", "rails"], {3}),
    (["scan", "--registry-log", "docker:bad!name", "--source", "rails"], {2}),
    (["scan", "--registry-log", "/etc/passwd", "--source", "rails"], {3}),
    # stop-loop
    (["stop-loop"], {2}),
    (["stop-loop", "--project"], {2}),
    (["stop-loop", "--project", "nope"], {2}),
    (["stop-loop", "--project", "acme/website", "--repository", "abc"], {2}),
    (["stop-loop", "--project", "acme/website", "--repository", "0"], {2}),
    (["stop-loop", "--project", "acme/website", "--repository", "{OTHER}", "--yes"], {2}),
    (["stop-loop", "--project", "acme/website", "--settle", "abc"], {2}),
    (["stop-loop", "--project", "acme/website", "--settle", "-1"], {2}),
    (["stop-loop", "--project", "acme/website", "--mode", "nope"], {2}),
    (["stop-loop", "--project", "nope/nope", "--yes"], {3}),
    (["stop-loop", "--project", "acme/website", "--rails-host", DEADSSH, "--yes"], {3}),
    (["stop-loop", "--project", "acme/website", "--url", NOTURL, "--yes"], {2}),
    # undo
    (["undo"], {3}),                                    # no journal at all
    (["undo", NOFILE], {3}),
    (["undo", "{DIR}"], {2}),  # not a regular file: refused as bad input
    (["undo", "/etc/passwd", "--yes"], {2, 3}),
    (["undo", "--list", "-o", "yaml"], {2}),
    # stub
    (["stub", "nope"], {2}),
    (["stub", "on", "--dir", "{STUB}"], {3}),             # the lab's registry holds the port: refused
    (["stub", "on", "--registry-host", BADHOST, "--dir", "{STUB}"], {2}),
    (["stub", "on", "--registry-host", "local", "--dir", "relative"], {2}),
    (["stub", "on", "--registry-host", "local", "--dir", "{STUB}", "--listen", "nope"], {2}),
    (["stub", "on", "--registry-host", "local", "--dir", "{STUB}", "--for", "soon"], {2}),
    (["stub", "on", "--registry-host", "local", "--dir", "{STUB}", "--for", "15"], {2}),
    (["stub", "on", "--registry-host", "local", "--dir", "{STUB}", "--quiet-minutes", "abc"], {2}),
    (["stub", "on", "--registry-host", "local", "--dir", "{STUB}", "--mode", "nope"], {2}),
    (["stub", "on", "--registry-host", "local", "--dir", "{STUB}", "--deploy", "nope"], {2}),
    (["stub", "on", "--registry-host", "local", "--dir", "{STUB}", "--http-port", "abc"], {2}),
    (["stub", "on", "--registry-host", "local", "--dir", "{STUB}", "--mode", "proxy"], {2}),  # no --upstream
    (["stub", "on", "--registry-host", "local", "--dir", "{STUB}", "--mode", "proxy", "--upstream", NOTURL], {2}),
    (["stub", "on", "--registry-host", "local", "--dir", "{STUB}", "--cert", NOFILE], {2}),   # --key missing
    (["stub", "on", "--registry-host", "local", "--dir", "{STUB}", "--cert", NOFILE, "--key", NOFILE,
      "--listen", "127.0.0.1:1"], {3}),
    (["stub", "on", "--registry-host", DEADSSH, "--dir", "{STUB}", "--yes"], {3}),
    (["stub", "off", "--registry-host", "local", "--dir", "/a b"], {2}),
    (["stub", "off", "--registry-host", DEADSSH, "--dir", "{STUB}", "--yes"], {3}),
    (["stub", "status", "--registry-host", "local", "--dir", "x"], {2}),
    (["stub", "status", "--registry-host", "local", "--dir", "{STUB}", "-o", "yaml"], {2}),
    # logs
    (["logs", NOFILE], {3}),
    (["logs", "{DIR}"], {3}),
    (["logs", "/etc/passwd"], {3}),
    (["logs", "{LOG}", "--since", "15"], {2}),
    (["logs", "{LOG}", "--since", "abc"], {2}),
    (["logs", "{LOG}", "--since"], {2}),
    (["logs", "docker:bad!name"], {2}),
    (["logs", "--registry-host", BADHOST, "{LOG}"], {2}),
    (["logs", "--registry-host", DEADSSH, "{LOG}"], {3}),
    (["logs", NOFILE, "--truncate", "--yes"], {3}),
    # doctor, config
    (["doctor", "--url", NOTURL], {2}),
    (["doctor", "--registry-url", "ftp://x"], {2}),
    (["doctor", "--url", REFUSED, "--rails-host", DEADSSH], {1}),
    (["config", "-c", NOFILE], {3}),
    (["config", "-o", "yaml"], {2}),
    # lab, demo, version
    (["lab", "up", "--time-scale", "abc"], {2}),
    (["lab", "up", "--time-scale", "0"], {2}),
    (["lab", "up", "--version", "nope", "--dir", "{DIR}/newlab"], {2}),
    (["lab", "up", "--dir", "/etc/passwd"], {3}),
    (["lab", "env", "--dir", NOFILE], {3}),
    (["lab", "status", "--dir", NOFILE, "-o", "yaml"], {2}),
    (["lab", "delete-image"], {2}),
    (["lab", "delete-image", "nope", "1"], {2}),
    (["lab", "delete-image", "acme/website", "abc"], {2}),
    (["lab", "delete-image", "--dir", NOFILE, "acme/website", "1"], {3}),
    (["demo", "--version", "nope"], {2}),
    (["version", "extra"], {2}),
]


def _fill(args: list[str], lab: Lab, stub_dir: Path, directory: Path) -> list[str]:
    other = next(r["id"] for r in lab.repositories() if r["path"] == "acme/platform/api")
    values = {"{STUB}": str(stub_dir), "{DIR}": str(directory), "{LOG}": str(lab.registry_log),
              "{OTHER}": str(other), "{REGISTRY}": lab.registry_url}
    out = []
    for arg in args:
        for key, value in values.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


@pytest.mark.parametrize(("args", "codes"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_wrong_input_is_one_clear_line_and_a_documented_exit_code(
        args: list[str], codes: set[int], lab: Lab, stub_dir: Path, tmp_path: Path) -> None:
    argv = _fill(args, lab, stub_dir, tmp_path)
    before_db, before_stub = _db(lab), _tree(stub_dir)
    result = CliRunner().invoke(app, argv, env=lab.settings_env())
    stderr = result.stderr
    assert result.exit_code in codes, (result.exit_code, stderr, result.stdout)
    assert result.exit_code in (0, 1, 2, 3)
    assert "Traceback" not in stderr + result.stdout
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    if result.exit_code in (2, 3):
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) <= 1, stderr
        assert lines
        assert lines[0].startswith("glcleanup: error: "), stderr
    assert _db(lab) == before_db
    assert _tree(stub_dir) == before_stub
    journals = Path.home() / ".local" / "state" / "glcleanup" / "journal"
    assert not journals.exists() or not list(journals.glob("*.json"))


@pytest.mark.parametrize("group", ["stub", "lab"])
def test_a_command_group_alone_shows_its_help(group: str) -> None:
    result = CliRunner().invoke(app, [group])
    assert result.exit_code == 2
    assert f"Usage: glcleanup {group}" in result.stdout + result.stderr


def test_stub_on_without_a_registry_host_is_exit_2() -> None:
    result = CliRunner().invoke(app, ["stub", "on"])
    assert result.exit_code == 2
    assert result.stderr == "glcleanup: error: --registry-host is required (local, or [ssh://][user@]host[:port])\n"


def test_verbose_shows_the_traceback_for_the_same_mistake(lab: Lab) -> None:
    result = CliRunner().invoke(app, ["scan", "--source", "api", "--url", REFUSED, "-v"], env=lab.settings_env())
    assert result.exit_code == 3
    assert "Traceback" in result.stderr


def test_an_unexpected_exception_is_one_line_and_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    from glcleanup.cli import cmd_config

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("something nobody planned for\nsecond line")

    monkeypatch.setattr(cmd_config, "emit_table", broken)
    result = CliRunner().invoke(app, ["config", "-o", "table"])
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1
    assert "error: unexpected RuntimeError: something nobody planned for second line" in result.stderr
    assert "Traceback" not in result.stderr


# --- every option of every command with hostile values (no lab: nothing to change, nothing to reach) -------
HOSTILE = ["", "\x00", "a" * 3000, "../../etc/passwd", "http://[::1", "☃", "$(id)"]
SKIP = {"lab up", "demo"}  # they would start a lab; their inputs are in CASES


def _leaf_commands() -> list[tuple[str, object]]:
    from typer.main import get_command

    found: list[tuple[str, object]] = []
    for name, cmd in get_command(app).commands.items():  # type: ignore[attr-defined]
        subs = getattr(cmd, "commands", None)
        found += [(f"{name} {sub}", c) for sub, c in subs.items()] if subs else [(name, cmd)]
    return [(name, cmd) for name, cmd in found if name not in SKIP]


def _value_options() -> list[tuple[str, str]]:
    out = []
    for name, cmd in _leaf_commands():
        for param in getattr(cmd, "params", []):
            if getattr(param, "is_flag", False) or not getattr(param, "opts", None):
                continue
            if param.param_type_name == "option":
                out.append((name, param.opts[-1]))
    return out


@pytest.mark.parametrize(("command", "option"), _value_options(), ids=[" ".join(x) for x in _value_options()])
def test_every_option_with_hostile_values(command: str, option: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for value in HOSTILE:
        result = runner.invoke(app, [*command.split(), option, value, "-o", "json"]
                               if command not in ("lab env", "lab down", "lab delete-image", "lab registry-url",
                                                  "version")
                               else [*command.split(), option, value])
        shown = result.stderr + result.stdout
        assert result.exit_code in (0, 1, 2, 3), (command, option, value, result.exit_code, shown[-500:])
        assert "Traceback" not in shown, (command, option, value)
        unknown = result.stdout.startswith("GLCLEANUP UNKNOWN - ") or '"state": "UNKNOWN"' in result.stdout
        if command == "check" and result.exit_code == 3 and unknown:
            continue  # a monitoring plugin: UNKNOWN is its status, on stdout
        if result.exit_code in (2, 3):
            assert len([ln for ln in result.stderr.splitlines() if ln.strip()]) == 1, (command, option, value,
                                                                                       result.stderr)
    created = {path.name for path in tmp_path.iterdir()}
    if (command, option) == ("check", "--prometheus"):  # it writes the file it is given, by that literal name
        assert created <= set(HOSTILE), created
        return
    assert not created, "a hostile value created files"


def test_the_lines_say_what_to_do(lab: Lab) -> None:
    def err(*args: str) -> str:
        result = CliRunner().invoke(app, list(args), env=lab.settings_env())
        assert result.exit_code in (2, 3)
        return result.stderr

    assert err("scan", "--url", "127.0.0.1:41905") == (
        "glcleanup: error: --url (GITLAB_URL) 127.0.0.1:41905: not an http(s) URL; add the scheme, e.g. "
        "https://127.0.0.1:41905\n")
    assert "is not a GitLab API (GET /api/v4/user answered 404): is --url GitLab's base URL, not the registry's?" \
        in err("scan", "--source", "api", "--url", lab.registry_url)
    assert "duration '15' has no unit: write 15s, 15m, 15h or 15d" in err("logs", str(lab.registry_log), "--since",
                                                                         "15")
    assert "no line of /etc/passwd on local looks like a registry log" in err("logs", "/etc/passwd")


def test_lab_up_when_up_and_lab_env_when_down(lab: Lab, tmp_path: Path) -> None:
    again = CliRunner().invoke(app, ["lab", "up", "--dir", str(lab.dir)])
    assert again.exit_code == 0, again.stderr
    assert "lab: already up in" in again.stderr
    assert 'eval "$(glcleanup lab env)"' in again.stderr
    assert f"export GITLAB_URL={lab.gitlab_url}\n" in again.stdout  # eval "$(glcleanup lab up)" twice is fine
    down = tmp_path / "down"
    down.mkdir()
    state = lab.state()
    (down / "lab.json").write_text(json.dumps({**state, "gitlab_pid": None, "registry_pid": None}))
    result = CliRunner().invoke(app, ["lab", "env", "--dir", str(down)])
    assert result.exit_code == 3
    assert result.stderr == f"glcleanup: error: the lab in {down} is down: start it with `glcleanup lab up`\n"
    assert result.stdout == ""
