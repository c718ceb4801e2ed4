"""Hostile class "secret": no token is ever printed, in any form, and no child inherits one (issue 13 §2).

Tokens with control characters are refused when loaded, with one line that does not show them; every
form of a token (raw, stripped, repr, URL-encoded) is redacted on every error path, the unexpected one
included; the runner and the admin's stub commands run without the GitLab token variables.
"""

from __future__ import annotations

import shutil
import urllib.parse
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.cli.output import handle_errors
from glcleanup.errors import ApiError
from glcleanup.redaction import SECRET_ENV_VARS, child_environment, redact
from glcleanup.transport import LocalHost

BASE = "glpat-Sup3rS3cret_value"
HOSTILE_TOKENS = [BASE + "\r", BASE + "\n", BASE + " ", " " + BASE, BASE + "\x1b[2J", BASE + "\x0b", BASE + "\t",
                  "glpat-a b", BASE + "\u2028", BASE + "\x7f"]


def _no_secret(text: str, token: str) -> None:
    for form in (token, token.strip(), BASE, repr(token)[1:-1], urllib.parse.quote(token, safe="")):
        assert form not in text, f"secret form {form!r} printed"


@pytest.mark.parametrize("token", HOSTILE_TOKENS, ids=[repr(t[-3:]) for t in HOSTILE_TOKENS])
@pytest.mark.parametrize("command", [["doctor"], ["scan", "--source", "api"], ["doctor", "-v"]])
def test_token_with_control_characters_is_refused_in_one_line(token: str, command: list[str]) -> None:
    """class secret/control-chars: env token with CR, LF, space, ESC, NUL, TAB, DEL, U+2028."""
    result = CliRunner().invoke(app, [*command, "--url", "http://127.0.0.1:9", "-o", "json"],
                                env={"GITLAB_PRIVATE_TOKEN": token})
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1:] == [
        "glcleanup: error: the token contains whitespace or control characters (from env:GITLAB_PRIVATE_TOKEN); "
        "remove them (e.g. a trailing CR from a Windows file)"]
    assert len(lines) == 1 or "-v" in command  # -v adds the (redacted) traceback
    _no_secret(result.output, token)


def test_config_file_token_with_control_characters_is_refused(tmp_path: Path) -> None:
    """class secret/control-chars: the python-gitlab config file is a source like any other."""
    cfg = tmp_path / "cfg"
    cfg.write_bytes(b"[global]\ndefault = x\n[x]\nurl = http://127.0.0.1:9\nprivate_token = glpat-Sup3r\x1bS3cret\r\n")
    result = CliRunner().invoke(app, ["doctor", "-c", str(cfg), "-o", "json"])
    assert result.exit_code == 2, result.output
    assert "from config:private_token" in result.stderr
    assert "S3cret" not in result.output


@pytest.mark.parametrize("token", ["glpat-a/b+c=d&e%f", "glpat-plain-0123456789", "glpat-ü-unicode"])
def test_every_form_of_the_token_is_redacted(token: str) -> None:
    """class secret/forms: raw, stripped, repr (str and bytes), URL-encoded (quote and quote_plus)."""
    forms = [token, repr(token), repr(token.encode()), urllib.parse.quote(token, safe=""),
             urllib.parse.quote_plus(token), f"Authorization: Bearer {token}"]
    for form in forms:
        text = redact(f"before {form} after", token + "\r")
        assert token not in text, (form, text)
        assert "[REDACTED]" in text, (form, text)
        assert urllib.parse.quote(token, safe="") not in text


@pytest.mark.parametrize("form", ["raw", "repr", "bytes", "quoted"])
def test_an_unexpected_exception_is_one_redacted_line(form: str, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """class secret/error-path: a bug's message (e.g. requests' `Invalid header value b'...'`) is redacted."""
    token = "glpat-Sup3rS3cret_value"
    monkeypatch.setenv("GITLAB_TOKEN", token)
    shown = {"raw": token, "repr": repr(token), "bytes": repr(token.encode()),
             "quoted": urllib.parse.quote(token + "/x", safe="")}[form]
    for verbose in (False, True):
        with pytest.raises(typer.Exit) as exit_info, handle_errors(verbose, [token]):
            raise ValueError(f"Invalid header value {shown}\nsecond line {shown}")
        assert exit_info.value.exit_code == 3
        err = capsys.readouterr().err
        assert "S3cret" not in err
        assert err.strip().splitlines()[-1].startswith("glcleanup: error: unexpected ValueError: Invalid header")
    with pytest.raises(typer.Exit), handle_errors(False, []):
        raise ApiError(f"GitLab answered 500: token={urllib.parse.quote(token)}")
    assert "S3cret" not in capsys.readouterr().err


def test_children_do_not_inherit_token_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """class secret/inherit: LocalHost (runner, --stop-registry/--start-registry, stubctl) drops them."""
    for name in SECRET_ENV_VARS:
        monkeypatch.setenv(name, f"glpat-inherited-{name}")
    monkeypatch.setenv("GLCLEANUP_KEEP_ME", "yes")
    host = LocalHost()
    for streaming in (None, lambda _chunk: None):
        out = host.run(["env"], on_stdout=streaming).text
        assert "glpat-inherited" not in out
        assert "GLCLEANUP_KEEP_ME=yes" in out
    assert not set(SECRET_ENV_VARS) & set(child_environment())


@pytest.mark.skipif(shutil.which("sh") is None, reason="sh missing")
def test_the_rails_runner_never_sees_the_token(tmp_path: Path) -> None:
    """class secret/inherit: through the CLI, the runner command's environment has no token."""
    seen = tmp_path / "env.txt"
    runner = f"sh -c 'env > {seen}; exit 1' sh"
    result = CliRunner().invoke(app, ["scan", "--source", "rails", "--rails-host", "local", "--rails-runner", runner,
                                      "-o", "json"],
                                env={"GITLAB_PRIVATE_TOKEN": "glpat-Sup3rS3cret_value",
                                     "GITLAB_OAUTH_TOKEN": "oauth-S3cret"})
    assert result.exit_code == 3, result.output
    assert seen.exists()
    assert "S3cret" not in seen.read_text()
    assert "S3cret" not in result.output
