#!/usr/bin/env bash
# Set up (if needed), check lint, formatting, types and structure, run the test suite under a
# virtual screen, then check the wheel as users install it (skip with CHECK_WHEEL=0).
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== lint, format, types and structure"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python scripts/check_structure.py
echo "== tests"
set +e
.venv/bin/python -m pytest -q "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
if [ "$status" = 0 ] && [ "${CHECK_WHEEL:-1}" != 0 ]; then
  bash scripts/check_wheel.sh
fi
exit "$status"
