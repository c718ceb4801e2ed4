"""The lab's "GitLab" process: the REST API server and the deletion worker, until SIGTERM.

Started by `Lab.up()` as `python -m glcleanup.lab.daemon --dir DIR`; everything it needs (database,
port, token, clock) comes from DIR/lab.json, so no secret ever appears in argv.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from glcleanup.lab.worker import DeletionWorker


def serve(directory: Path) -> int:
    from glcleanup.lab.api import GitLabApiServer  # written alongside; imported late on purpose

    config: dict[str, Any] = json.loads((directory / "lab.json").read_text())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    api = GitLabApiServer(config["db"], token=config["token"], latency=float(config.get("api_latency", 0.0)),
                          host="127.0.0.1", port=int(config["api_port"]))
    worker = DeletionWorker(config["db"], time_scale=float(config["time_scale"]),
                            slow=float(config.get("worker_slow", 0.0)),
                            log_path=directory / "sidekiq.log")
    api.start()
    try:
        worker.start()
        try:
            print(f"lab gitlab daemon: api {api.url}, worker running", file=sys.stderr, flush=True)
            stop.wait()
        finally:
            worker.stop()
    finally:
        api.stop()
    print("lab gitlab daemon: stopped", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glcleanup.lab.daemon", description=__doc__)
    parser.add_argument("--dir", required=True, type=Path, help="the lab directory (holds lab.json)")
    args = parser.parse_args(argv)
    return serve(args.dir.resolve())


if __name__ == "__main__":
    sys.exit(main())
