"""Progress bars on stderr (rich), drawn by the CLI from the callbacks the core calls."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from glcleanup.gitlab.api import Progress


@contextmanager
def rich_progress(enabled: bool | None = None) -> Iterator[Progress | None]:
    """A rich progress bar on stderr (default: only when stderr is a terminal); yields the callback."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task("scanning GitLab", total=None)

    class Update:
        def __call__(self, done: int, planned: int | None) -> None:
            bar.update(task, completed=done, total=max(planned or 1, done, 1))

        def phase(self, text: str) -> None:
            bar.update(task, description=f"GitLab API: {text}")

    with bar:
        yield Update()
