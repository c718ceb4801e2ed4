"""What every runner-backed command's report reads from the Ruby script's result document."""

from __future__ import annotations

from typing import Any


class RunnerResult:
    """Mixin for dataclasses with a `result` field: the plan, and whether it was applied and verified."""

    result: dict[str, Any]

    @property
    def plan(self) -> list[dict[str, Any]]:
        return list(self.result.get("plan", []))

    @property
    def applied(self) -> bool:
        return bool(self.result.get("applied"))

    @property
    def verified(self) -> bool:
        return bool(self.result.get("verified"))
