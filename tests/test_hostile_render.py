"""Hostile class "render": nothing a user types or a file holds becomes config or code (issue 13 §3).

Every value that reaches nginx.conf, the compose .env, a shell argv or state.json is checked against a
strict grammar (exit 2, one line, nothing written); the rendered nginx config is proven to hold exactly
the template's statements, with the real nginx showing why the check is needed; `stub off` trusts a
state.json only when it is the user's own; terminal controls from outside are escaped in tables;
host user parts cannot become ssh options.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from glcleanup.cli import app
from glcleanup.cli.output import emit_table, info, printable
from glcleanup.errors import UsageError
from glcleanup.stub import render
from glcleanup.stub.render import build_config, nginx_statements, render_env, render_nginx
from glcleanup.transport import parse_host

INJECTED_UPSTREAMS = [
    "http://[fe80::1%eth0]:5000",
    "http://[fe80::1%25x;}location /t{alias /root/.token;}]:5000",
    "http://[fe80::1%x;\n}]:5000",
    "http://[::1",
    "http://[::1]]:5000",
    "http://[::g]:5000",
    "http://[::1]:99999",
    "http://registry;return 200:5000",
    "http://registry:5000/;location",
    "http://user@registry:5000",
    "http://registry:5000?x=1",
    "http://registry:5000#x",
    "http://registry:5000\nlocation",
    "http://reg istry:5000",
    "http://reg$host:5000",
    "http://1.2.3:5000",
    "unix:/var/run/registry.sock",
    "http://-registry:5000",
    "http://" + "a" * 300 + ":5000",
]


def stub_cli(*args: str) -> Result:
    return CliRunner().invoke(app, ["stub", *args, "--registry-host", "local", "-o", "json"])


def one_line_exit_2(result: Result) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("glcleanup: error:")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("upstream", INJECTED_UPSTREAMS)
def test_hostile_upstreams_are_refused_before_anything_is_written(upstream: str, tmp_path: Path) -> None:
    """class render/upstream: scheme://host[:port] only; IPv6 zones and malformed brackets are exit 2."""
    directory = tmp_path / "stub"
    result = stub_cli("on", "--mode", "proxy", "--upstream", upstream, "--listen", "127.0.0.1:5999",
                      "--dir", str(directory), "--yes")
    one_line_exit_2(result)
    assert not directory.exists()


@pytest.mark.parametrize(("field", "value"), [
    ("upstream", "http://u;\n        location /t { return 200 pwned; }"),
    ("upstream", "http://u; include /etc/passwd"),
    ("dir", "/srv/stub;\nerror_log /tmp/x"),
    ("cert", "/c.pem; ssl_certificate /etc/shadow"),
    ("upstream", "http://u#"),
    ("dir", "/srv/$host"),
])
def test_a_value_that_slipped_past_validation_never_renders(field: str, value: str, tmp_path: Path) -> None:
    """class render/nginx: the rendered config holds exactly the template's statements. Real nginx accepts
    the injected config (so `nginx -t` alone would not catch it); render_nginx refuses it."""
    base = build_config(mode="proxy", upstream="http://127.0.0.1:5001", listen="127.0.0.1:5998",
                        cert="/c.pem", key="/k.pem", dir=str(tmp_path / "stub"))
    hostile = dataclasses.replace(base, **{field: value})
    with pytest.raises(UsageError, match=r"nginx\.conf"):
        render_nginx(hostile)
    good = render_nginx(base)
    raw = render._render_template(hostile, {"@DIR@": hostile.dir, "@LISTEN@": hostile.listen.nginx, "@SSL@": " ssl",
                                            "@CERT@": hostile.cert or "", "@KEY@": hostile.key or "",
                                            "@UPSTREAM@": hostile.upstream or "", "@HTTP_LISTEN@": "",
                                            "@TLS_PORT_SUFFIX@": ":5998"})
    if any(c in value for c in ";\n#"):  # a statement more, or one cut short: the structure itself differs
        assert nginx_statements(raw) != nginx_statements(good) or raw.count("\n") != good.count("\n")


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx missing")
def test_real_nginx_would_accept_the_injection_the_check_refuses(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """class render/nginx: the write-up's case, with the real nginx binary: injected directives pass
    `nginx -t`, which is why glcleanup compares statements itself; the checked config passes too."""
    directory = tmp_path / "stub"
    (directory / "tmp").mkdir(parents=True)
    base = build_config(mode="proxy", upstream="http://127.0.0.1:5001", listen="127.0.0.1:5997",
                        dir=str(directory))
    hostile = dataclasses.replace(base, upstream="http://127.0.0.1:5001; return 200 pwned")
    values = {"@DIR@": str(directory), "@LISTEN@": base.listen.nginx, "@SSL@": "", "@CERT@": "", "@KEY@": "",
              "@UPSTREAM@": hostile.upstream or "", "@HTTP_LISTEN@": "", "@TLS_PORT_SUFFIX@": ":5997"}
    injected = render._render_template(hostile, values)
    assert nginx_statements(injected) != nginx_statements(render_nginx(base))  # the structural check sees it
    for text in (injected, render_nginx(base)):
        conf = directory / "nginx.conf"
        conf.write_text(text)
        checked = subprocess.run(["nginx", "-t", "-q", "-p", f"{directory}/", "-c", str(conf), "-g",
                                  f"error_log {directory}/t.log;"], capture_output=True, text=True, check=False,
                                 timeout=20)
        assert checked.returncode == 0, checked.stderr
    with pytest.raises(UsageError, match=r"nginx\.conf"):
        render_nginx(hostile)
    # with the word check out of the way, the statement comparison alone refuses it
    monkeypatch.setattr(render, "_WORD", re.compile(r".*", re.S))
    with pytest.raises(UsageError, match="exactly the template's directives"):
        render_nginx(hostile)


@pytest.mark.parametrize(("field", "value"), [("image", "nginx:1\nSTUB_DIR=/"), ("image", "nginx:${HOME}"),
                                              ("dir", "/srv/x y"), ("cert", "/c\"x")])
def test_compose_env_values_are_single_safe_words(field: str, value: str) -> None:
    """class render/compose: the .env gets one safe word per variable, never a second line or `${}`."""
    hostile = dataclasses.replace(build_config(deploy="compose", cert="/c", key="/k"), **{field: value})
    with pytest.raises(UsageError, match=r"\.env"):
        render_env(hostile)


# --- state.json -----------------------------------------------------------------------------------------

def _state_dir(tmp_path: Path, start: object, mode: int = 0o600) -> tuple[Path, Path]:
    directory = tmp_path / "stub"
    directory.mkdir(mode=0o755)
    marker = tmp_path / "PWNED"
    state = {"version": 1, "mode": "respond", "listen": "127.0.0.1:5996", "scheme": "http", "deploy": "nginx",
             "stubctl_deploy": "nginx", "compose_project": "glcleanup-stub-0123abcd", "dir": str(directory),
             "start_registry": start if start is not None else ["touch", str(marker)]}
    path = directory / "state.json"
    path.write_text(json.dumps(state))
    path.chmod(mode)
    return directory, marker


@pytest.mark.parametrize("variant", ["world-writable", "group-writable", "other-owner", "dir-writable",
                                     "symlink", "start-as-string", "foreign-dir"])
def test_stub_off_refuses_a_state_file_it_cannot_trust(variant: str, tmp_path: Path) -> None:
    """class render/state: a state.json someone else could have written never runs its start command."""
    start: object = "sh -c 'touch x'" if variant == "start-as-string" else None
    modes = {"world-writable": 0o666, "group-writable": 0o620}
    directory, marker = _state_dir(tmp_path, start, modes.get(variant, 0o600))
    state = directory / "state.json"
    if variant == "other-owner":
        if os.geteuid() != 0:
            pytest.skip("needs root to chown")
        os.chown(state, 65534, 65534)
    elif variant == "dir-writable":
        directory.chmod(0o777)
    elif variant == "symlink":
        real = tmp_path / "elsewhere.json"
        state.rename(real)
        state.symlink_to(real)
    elif variant == "foreign-dir":
        doc = json.loads(state.read_text())
        doc["dir"] = "/etc"
        state.write_text(json.dumps(doc))
    before = sorted(p.name for p in directory.iterdir())
    result = stub_cli("off", "--dir", str(directory), "--yes")
    one_line_exit_2(result)
    assert not marker.exists()
    assert sorted(p.name for p in directory.iterdir()) == before


def test_stub_off_without_yes_shows_the_recorded_command_and_runs_nothing(tmp_path: Path) -> None:
    """class render/state: the start command a state file records is shown before it could run."""
    directory, marker = _state_dir(tmp_path, None)
    result = CliRunner().invoke(app, ["stub", "off", "--registry-host", "local", "--dir", str(directory),
                                      "-o", "table"])
    assert result.exit_code == 0, result.output
    assert f"start the registry: touch {marker}" in result.stderr
    assert not marker.exists()


# --- terminal output, host user parts, bounded values ---------------------------------------------------

@pytest.mark.parametrize("evil", ["\x1b[2J\x1b[H", "\x1b]0;owned\x07", "ok\rFAKE", "\x9b31m", "a\u202eb",
                                  "line\nbreak"])
def test_terminal_controls_from_outside_are_escaped(evil: str, capsys: pytest.CaptureFixture[str]) -> None:
    """class render/terminal: table cells, progress lines and errors never carry a live control."""
    emit_table([{"path": f"acme/{evil}", "user_agent": evil}], ["path", "user_agent"])
    info(f"warning: {evil}")
    captured = capsys.readouterr()
    for text in (captured.out, captured.err):
        assert not any(c in text for c in "\x1b\x07\r\x9b\u202e")
    assert "\\x1b" in printable("\x1b")
    assert "\n" not in captured.out.strip().splitlines()[-1]


@pytest.mark.parametrize("spec", ["-oProxyCommand=touch /tmp/x@host", "-l@host", "ssh://-root@host",
                                  "--@host:22", "-@[::1]"])
def test_a_user_part_starting_with_dash_is_refused(spec: str) -> None:
    """class render/host: `-root@host` would be read as an ssh option by anything that execs ssh."""
    with pytest.raises(UsageError, match="not starting with -"):
        parse_host(spec)
    result = CliRunner().invoke(app, ["scan", "--source", "rails", "--rails-host", spec, "-o", "json"])
    one_line_exit_2(result)


@pytest.mark.parametrize("args", [
    ["logs", "/nonexistent", "--since", "1000000000d"],
    ["logs", "/nonexistent", "--since", "99999999999999999999999s"],
    ["logs", "/nonexistent", "--since", "1" * 5000 + "m"],
    ["scan", "--source", "rails", "--group", "g" * 120_000],
    ["scan", "--source", "rails", "--group", "g" * 256],
    ["stub", "on", "--for", "1000000000d", "--listen", "127.0.0.1:5995"],
    ["stub", "on", "--quiet-minutes", "inf", "--listen", "127.0.0.1:5995"],
    ["stub", "on", "--quiet-minutes", "nan", "--listen", "127.0.0.1:5995"],
    ["stub", "on", "--quiet-minutes", "1e308", "--listen", "127.0.0.1:5995"],
    ["stub", "on", "--mode", "proxy", "--upstream", "http://[fe80::1", "--listen", "127.0.0.1:5995"],
], ids=["since-1e9d", "since-huge-s", "since-long", "group-120k", "group-256", "for-1e9d", "quiet-inf",
        "quiet-nan", "quiet-1e308", "upstream-v6-open"])
def test_unbounded_values_are_exit_2_in_one_line(args: list[str], tmp_path: Path) -> None:
    """class render/bounds: durations, a 120,000-character --group, a malformed IPv6 upstream."""
    extra = ["--registry-host", "local", "--dir", str(tmp_path / "stub")] if args[0] == "stub" else []
    if args[0] == "scan":
        extra = ["--rails-host", "local", "--rails-runner", f"touch {tmp_path / 'ran'}"]
    result = CliRunner().invoke(app, [*args, *extra, "-o", "json"])
    one_line_exit_2(result)
    assert len(result.stderr) < 400
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "stub").exists()


@pytest.mark.parametrize("url", ["-o/tmp/pwned", "--config=/etc/shadow", "file:///etc/shadow", "http://x y"])
def test_a_state_files_registry_url_never_reaches_curl_as_an_option(url: str, tmp_path: Path) -> None:
    """class render/state: the URL `off` checks the registry at is data of a strict shape."""
    directory, marker = _state_dir(tmp_path, None)
    state = directory / "state.json"
    doc = json.loads(state.read_text())
    doc["registry_url"] = url
    state.write_text(json.dumps(doc))
    result = stub_cli("off", "--dir", str(directory), "--yes")
    one_line_exit_2(result)
    assert "registry_url" in result.stderr
    assert not marker.exists()
    assert not Path("/tmp/pwned").exists()
