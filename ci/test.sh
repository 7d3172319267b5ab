#!/usr/bin/env bash
# The test command: install what is missing, then lint, type-check and run every
# test tier (unit, integration, e2e).  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./ci/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
# pytest exits 5 when it collected no test: that is a failure too (set -e).
exec .venv/bin/pytest --durations=30 "$@"
