#!/usr/bin/env bash
# Static types: mypy in strict mode (configured in pyproject.toml) on the modules held
# to it; the modules they import are read for their types, their errors not reported.
# Extra arguments go to mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
checked=(
  policy
  recordings
  dialer
  adapters
)
exec .venv/bin/python -m mypy "$@" "${checked[@]}"
