"""The layers hold: the core never imports the CLI or the lab, never prints, never draws.

"Core" is every module of the package outside `cli/` and `lab/` (see docs/architecture.md). The
CLI renders and the lab imitates GitLab; everything else decides and returns reports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "glcleanup"
# logs/reader.py is a stand-alone program piped to `python3 -` on the registry host: stdout is its protocol.
PROGRAMS = {"logs/reader.py"}
RENDERING_LIBRARIES = {"typer", "rich", "tabulate", "click"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _core_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if p.relative_to(PACKAGE).parts[0] not in ("cli", "lab", "__main__.py"))


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("path", _core_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_module_imports_neither_cli_nor_lab_nor_a_renderer(path: Path) -> None:
    imported = _imports(ast.parse(path.read_text()))
    assert not {m for m in imported if m.startswith(("glcleanup.cli", "glcleanup.lab"))}
    assert not {m for m in imported if m.split(".")[0] in RENDERING_LIBRARIES}


@pytest.mark.parametrize("path", _core_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_module_never_prints(path: Path) -> None:
    if str(path.relative_to(PACKAGE)) in PROGRAMS:
        pytest.skip("a program shipped to the registry host, not a library module")
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        assert func != "print", f"{path}:{node.lineno}"
        assert not func.startswith(("sys.stdout.", "sys.stderr.")), f"{path}:{node.lineno}: {func}"


def test_the_lab_is_used_only_by_cli_lab_and_tests() -> None:
    users = {_module_name(p) for p in PACKAGE.rglob("*.py")
             if any(m.startswith("glcleanup.lab") for m in _imports(ast.parse(p.read_text())))}
    assert users, "the lab is imported somewhere (cmd_lab, cmd_demo)"
    assert all(u.startswith(("glcleanup.lab", "glcleanup.cli")) for u in users), sorted(users)


def test_the_cli_registers_an_explicit_command_list() -> None:
    from glcleanup.cli.app import COMMANDS

    modules = {p.stem for p in (PACKAGE / "cli").glob("cmd_*.py")}
    assert {m.__name__.rsplit(".", 1)[1] for m in COMMANDS} == modules
