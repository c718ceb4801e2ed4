"""Settings: flags > environment > python-gitlab config file, and the token never shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.errors import ConfigError
from glcleanup.settings import resolve

CFG = """[global]
default = prod
ssl_verify = false

[prod]
url = https://gitlab.prod.example
private_token = glpat-from-config-prod
glcleanup_rails_host = root@gitlab.prod.example
glcleanup_rails_runner = docker exec -i gitlab gitlab-rails runner

[staging]
url = https://gitlab.staging.example
private_token = glpat-from-config-staging
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "python-gitlab.cfg"
    path.write_text(CFG)
    return path


def test_default_section_and_glcleanup_keys(cfg: Path) -> None:
    s = resolve(config_file=str(cfg), environ={})
    assert (s.url, s.token, s.token_source) == ("https://gitlab.prod.example", "glpat-from-config-prod",
                                                "config:private_token")
    assert s.ssl_verify is False
    assert s.rails_host == "root@gitlab.prod.example"
    assert s.rails_runner == "docker exec -i gitlab gitlab-rails runner"


def test_named_section_env_and_flags_take_precedence(cfg: Path) -> None:
    s = resolve(config_file=str(cfg), gitlab_section="staging",
                environ={"GITLAB_URL": "https://env.example", "GITLAB_TOKEN": "glpat-env"})
    assert (s.url, s.token, s.token_source) == ("https://env.example", "glpat-env", "env:GITLAB_TOKEN")
    s = resolve(config_file=str(cfg), url="https://flag.example",
                environ={"GITLAB_URL": "https://env.example", "GITLAB_PRIVATE_TOKEN": "glpat-private",
                         "GITLAB_TOKEN": "glpat-other"})
    assert (s.url, s.token) == ("https://flag.example", "glpat-private")


def test_python_gitlab_cfg_env_is_the_only_file_read(cfg: Path, monkeypatch: pytest.MonkeyPatch,
                                                     isolated_home: Path) -> None:
    (isolated_home / ".python-gitlab.cfg").write_text("[global]\ndefault = x\n[x]\nurl = https://home\n")
    monkeypatch.setenv("PYTHON_GITLAB_CFG", str(cfg))
    assert resolve().url == "https://gitlab.prod.example"
    monkeypatch.delenv("PYTHON_GITLAB_CFG")
    assert resolve().url == "https://home"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"config_file": "/nonexistent/cfg"}, "config file not found"),
    ({"gitlab_section": "nosuch"}, "section \\[nosuch\\] not found"),
])
def test_config_errors_are_clear(cfg: Path, kwargs: dict[str, str], message: str) -> None:
    kwargs = {"config_file": str(cfg), **kwargs}
    with pytest.raises(ConfigError, match=message):
        resolve(environ={}, **kwargs)


def test_helper_tokens_are_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "cfg"
    path.write_text("[global]\ndefault = a\n[a]\nurl = https://x\nprivate_token = helper: pass show gitlab\n")
    with pytest.raises(ConfigError, match="GITLAB_PRIVATE_TOKEN"):
        resolve(config_file=str(path), environ={})


def test_config_command_never_prints_the_token(cfg: Path) -> None:
    result = CliRunner().invoke(app, ["config", "-c", str(cfg), "-o", "json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["token"] == "set"
    assert doc["token_source"] == "config:private_token"
    assert "glpat-from-config-prod" not in result.output
    missing = CliRunner().invoke(app, ["config", "-c", str(cfg), "-g", "nosuch"])
    assert missing.exit_code == 3
    assert "section [nosuch] not found" in missing.stderr


def test_a_token_on_the_command_line_is_not_an_option() -> None:
    result = CliRunner().invoke(app, ["scan", "--token", "glpat-xyz"])
    assert result.exit_code == 2
    assert "glpat-xyz" not in result.stdout


def test_config_names_the_file_and_section_it_used(cfg: Path) -> None:
    default = CliRunner().invoke(app, ["config", "-c", str(cfg), "-o", "json"])
    assert json.loads(default.stdout)["config"] == f"{cfg} [prod]"
    named = CliRunner().invoke(app, ["config", "-c", str(cfg), "-g", "staging", "-o", "json"])
    assert json.loads(named.stdout)["config"] == f"{cfg} [staging]"
    assert "glpat-from-config" not in default.stdout + named.stdout
    none = CliRunner().invoke(app, ["config", "-o", "json"])
    assert json.loads(none.stdout)["config"] == "(no python-gitlab config section used)"
