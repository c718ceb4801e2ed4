"""scan and doctor name one way out per row, from the row's state and (doctor) the probe replay."""

from __future__ import annotations

import pytest

from glcleanup.ops import way_out

LOOPING = {"tag_delete": {"status": 400, "error_code": "DIGEST_INVALID"}, "loop_risk": True}
NO_DELETE = {"tag_delete": {"status": 405, "error_code": "UNSUPPORTED"}, "loop_risk": True}


@pytest.mark.parametrize(("status", "verdict", "way"), [
    ("delete_scheduled", None, "finish"), ("delete_ongoing", LOOPING, "finish"),
    ("delete_failed", None, "requeue_after_proxy"), ("delete_failed", LOOPING, "requeue_after_proxy"),
    ("delete_scheduled", NO_DELETE, "failed"), ("delete_failed", NO_DELETE, None), (None, None, None),
    ("unknown", None, None),
])
def test_way_out_per_row(status: str | None, verdict: dict[str, object] | None, way: str | None) -> None:
    assert way_out.way_out({"status": status}, verdict) == way


def test_the_command_names_the_row_and_never_more() -> None:
    finish = "glcleanup stop-loop --project acme/web --repository 4 --mode finish"
    assert way_out.command("finish", "acme/web", 4) == finish
    assert "glcleanup requeue --project acme/web --repository 4" in str(way_out.command("requeue_after_proxy",
                                                                                          "acme/web", 4))
    assert way_out.command(None, "acme/web", 4) is None
    assert way_out.summary(LOOPING) == {"queued": "finish", "parked": "requeue_after_proxy"}
