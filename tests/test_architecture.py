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


def test_no_import_cycles_between_modules() -> None:
    """Module-level and function-level imports both count; `if TYPE_CHECKING:` imports (types only) do not."""
    graph: dict[str, set[str]] = {}
    names = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and ast.unparse(block.test).endswith("TYPE_CHECKING") for n in ast.walk(block)}
        found: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                candidates = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                candidates = {a.name for a in node.names}
            else:
                continue
            found |= {c for c in candidates if c in names}
        me = _module_name(path)
        graph[me] = {m for m in found if m != me and not me.startswith(m + ".")}  # a package's own __init__

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for nxt in graph.get(node, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted((a, b) for a, deps in graph.items() for b in deps if a < b and reaches(b, a))
    assert not cycles


def test_no_test_file_imports_another() -> None:
    """Shared test helpers live in tests/support/ (or tests/lab_proxy.py): a test file is never a library."""
    offenders = []
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests.test_"):
                offenders.append(f"{path.name} imports {node.module}")
    assert offenders == []
