"""The README stays a complete user's guide: every command and option is documented, with help text."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from typer.main import get_command

from glcleanup.cli import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _commands() -> dict[str, object]:
    root = get_command(app)
    out: dict[str, object] = {}
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        subs = getattr(cmd, "commands", None)
        if subs:
            out.update({f"{name} {sub}": subcmd for sub, subcmd in subs.items()})
        else:
            out[name] = cmd
    return out


def test_every_command_has_help_and_is_in_the_readme() -> None:
    commands = _commands()
    assert {"scan", "stop-loop", "undo", "stub on", "stub off", "stub status", "logs", "doctor", "check", "demo",
            "lab up", "lab down"} <= set(commands)
    for name, cmd in commands.items():
        assert (getattr(cmd, "help", None) or "").strip(), f"{name} has no help text"
        if name in ("version",):
            continue
        assert f"glcleanup {name}" in README or f"`{name}`" in README, f"`glcleanup {name}` is not in README.md"


def test_every_option_of_the_main_commands_is_in_the_readme() -> None:
    commands = _commands()
    for name in ("scan", "stop-loop", "undo", "stub on", "stub off", "stub status", "logs", "doctor", "check"):
        for param in commands[name].params:  # type: ignore[attr-defined]
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt != "--help":
                    assert re.search(re.escape(opt) + r"\b", README), f"{name} {opt} is not documented"


def test_contract_exit_codes_are_documented() -> None:
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |"):
        assert code in README
    assert isinstance(app, typer.Typer)
