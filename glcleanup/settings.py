"""Where connection settings come from: flags > environment > python-gitlab config file.

Secrets never come from flags (they would show in `ps` and shell history); the token is
read from `GITLAB_PRIVATE_TOKEN`/`GITLAB_TOKEN` or the config file and is redacted from
every message.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from glcleanup import validate
from glcleanup.errors import ConfigError
from glcleanup.redaction import SECRET_ENV_VARS, TOKEN_ENV_VARS, check_token, child_environment, redact, secret_forms
from glcleanup.transport import SSHOptions

DEFAULT_RUNNER = "gitlab-rails runner"


@dataclass(frozen=True)
class Settings:
    """Everything a command may need to reach GitLab, its runner and its registry."""

    url: str | None = None
    token: str | None = field(default=None, repr=False)
    token_source: str | None = None
    ssl_verify: bool | str = True
    gitlab_section: str | None = None
    config_file: str | None = None
    config_source: str | None = None  # "FILE [SECTION]" actually read, for `config`
    rails_host: str | None = None
    rails_runner: str = DEFAULT_RUNNER
    registry_host: str | None = None
    registry_url: str | None = None
    registry_ca: str | None = None
    ssh_key: str | None = None
    known_hosts: str | None = None
    output: str | None = None
    verbose: bool = False

    @property
    def registry_verify(self) -> bool | str:
        """How the registry's TLS is checked: --registry-ca, else the GitLab setting (GITLAB_SSL_VERIFY)."""
        return self.registry_ca or self.ssl_verify

    @property
    def ssh_options(self) -> SSHOptions:
        return SSHOptions(key_file=self.ssh_key, known_hosts=self.known_hosts)

    def require_api(self) -> tuple[str, str]:
        """URL and token for the REST API, or a clear ConfigError (exit 3)."""
        if not self.url:
            raise ConfigError("no GitLab URL: pass --url, set GITLAB_URL, or use -g SECTION with a config file")
        if not self.token:
            raise ConfigError(
                "no GitLab token: set GITLAB_PRIVATE_TOKEN (or GITLAB_TOKEN), or put private_token in the "
                "python-gitlab config section (tokens are never taken from the command line)"
            )
        return self.url, self.token

    def redact(self, text: str) -> str:
        """Remove the token from any text before it is shown or written."""
        return redact(text, self.token)


def _config_files(config_file: str | None) -> list[str]:
    """python-gitlab's rule: -c wins, else PYTHON_GITLAB_CFG (only that file), else the defaults."""
    if config_file:
        if not Path(config_file).expanduser().is_file():
            raise ConfigError(f"config file not found: {config_file}")
        return [str(Path(config_file).expanduser())]
    env_file = os.environ.get("PYTHON_GITLAB_CFG")
    if env_file:
        if not Path(env_file).expanduser().is_file():
            raise ConfigError(f"PYTHON_GITLAB_CFG points to a missing file: {env_file}")
        return [str(Path(env_file).expanduser())]
    return [p for p in (str(Path("~/.python-gitlab.cfg").expanduser()), "/etc/python-gitlab.cfg")
            if Path(p).is_file()]


_SECTION_KEY = "the section"


def _read_section(files: list[str], section: str | None) -> dict[str, str]:
    """One section of the python-gitlab INI files (the `[global] default` one when unnamed)."""
    if not files:
        if section:
            raise ConfigError(f"-g {section}: no python-gitlab config file found")
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(files)
    except configparser.Error as exc:
        raise ConfigError(f"cannot parse python-gitlab config {files[0]}: {exc}") from exc
    name = section or parser.get("global", "default", fallback=None)
    if not name:
        return {}
    if not parser.has_section(name):
        if section:
            raise ConfigError(f"section [{name}] not found in {', '.join(files)}")
        return {}
    values = dict(parser.items(name))
    for key in ("ssl_verify",):
        if key not in values and parser.has_option("global", key):
            values[key] = parser.get("global", key)
    values[_SECTION_KEY] = name  # not an INI key (configparser lowercases keys and allows no spaces)
    return values


def _ssl_verify(value: str | None) -> bool | str:
    if value is None:
        return True
    low = value.strip().lower()
    if low in ("false", "0", "no", "off"):
        return False
    if low in ("true", "1", "yes", "on"):
        return True
    return value  # a CA bundle path, as python-gitlab accepts


def resolve(
    *,
    url: str | None = None,
    gitlab_section: str | None = None,
    config_file: str | None = None,
    rails_host: str | None = None,
    rails_runner: str | None = None,
    registry_host: str | None = None,
    registry_url: str | None = None,
    registry_ca: str | None = None,
    ssh_key: str | None = None,
    known_hosts: str | None = None,
    output: str | None = None,
    verbose: bool = False,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Merge flags (already merged with their env vars by the CLI) with the config file."""
    env = os.environ if environ is None else environ
    files = _config_files(config_file)
    section = _read_section(files, gitlab_section)
    section_name = section.pop(_SECTION_KEY, None)
    token, token_source = None, None
    for var in TOKEN_ENV_VARS:
        if env.get(var):
            token, token_source = env[var], f"env:{var}"
            break
    if token is None:
        for key in ("private_token", "oauth_token", "job_token"):
            if section.get(key):
                token, token_source = section[key], f"config:{key}"
                break
    if token and token.startswith("helper:"):
        raise ConfigError("python-gitlab 'helper:' tokens are not supported yet; export GITLAB_PRIVATE_TOKEN")
    if token:
        check_token(token, str(token_source))
    the_url = url or env.get("GITLAB_URL") or section.get("url") or None
    the_registry_url = registry_url or section.get("glcleanup_registry_url") or None
    if the_url:
        validate.http_url(the_url, "--url (GITLAB_URL)")
    if the_registry_url:
        validate.http_url(the_registry_url, "--registry-url (GLCLEANUP_REGISTRY_URL)")
    the_registry_ca = registry_ca or section.get("glcleanup_registry_ca") or None
    if the_registry_ca and not Path(the_registry_ca).expanduser().is_file():
        raise ConfigError(f"--registry-ca (GLCLEANUP_REGISTRY_CA) {the_registry_ca}: no such file (a PEM CA bundle)")
    return Settings(
        url=the_url,
        token=token,
        token_source=token_source,
        ssl_verify=_ssl_verify(env.get("GITLAB_SSL_VERIFY") or section.get("ssl_verify")),
        gitlab_section=gitlab_section,
        config_file=config_file,
        config_source=f"{', '.join(files)} [{section_name}]" if section_name else None,
        rails_host=rails_host or section.get("glcleanup_rails_host") or None,
        rails_runner=rails_runner or section.get("glcleanup_rails_runner") or DEFAULT_RUNNER,
        registry_host=registry_host or section.get("glcleanup_registry_host") or None,
        registry_url=the_registry_url,
        registry_ca=str(Path(the_registry_ca).expanduser()) if the_registry_ca else None,
        ssh_key=ssh_key or section.get("glcleanup_ssh_key") or None,
        known_hosts=known_hosts or section.get("glcleanup_known_hosts") or None,
        output=output,
        verbose=verbose,
    )


__all__ = ["DEFAULT_RUNNER", "SECRET_ENV_VARS", "Settings", "check_token", "child_environment", "redact", "replace",
           "resolve", "secret_forms"]
