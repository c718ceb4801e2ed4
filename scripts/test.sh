#!/usr/bin/env bash
# README command 2: install what is needed, then lint, type-check and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check glcleanup tests scripts
.venv/bin/mypy
# Most tests wait on real servers (registry, nginx, sshd, PostgreSQL, runner boots), not on the CPU: four
# workers on two cores, each test file in one worker (its module-scoped lab is started once).
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${GLCLEANUP_TEST_WORKERS:-4}" --dist loadfile "$@"
