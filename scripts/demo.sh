#!/usr/bin/env bash
# README command 1: install what is needed, then run `glcleanup demo` in the local lab.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/glcleanup demo "$@"
