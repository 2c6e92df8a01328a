#!/usr/bin/env bash
# Static types: mypy in strict mode (configured in pyproject.toml) on the modules held
# to it. Extra arguments go to mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
checked=(
  policy
  recordings/__init__.py
  recordings/config.py
  recordings/errors.py
  recordings/events.py
  recordings/keywrap.py
  recordings/model.py
  recordings/ports.py
  recordings/register.py
  recordings/retention.py
  recordings/testing.py
  recordings/verify_plan.py
)
exec .venv/bin/python -m mypy "$@" "${checked[@]}"
