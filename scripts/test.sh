#!/usr/bin/env bash
# README command 2: install what is needed, then lint, type-check and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check glcleanup tests scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
