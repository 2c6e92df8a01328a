#!/usr/bin/env bash
# Static types: mypy in strict mode (configured in pyproject.toml) on the modules held
# to it; the modules they import are read for their types, their errors not reported.
# Extra arguments go to mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
checked=(
  policy
  recordings
  adapters/storage/filesystem.py
  dialer/__init__.py
  dialer/app.py
  dialer/attempt_state.py
  dialer/bootstrap.py
  dialer/case_actions.py
  dialer/case_merge.py
  dialer/chain.py
  dialer/cli.py
  dialer/cli_common.py
  dialer/clock.py
  dialer/commands.py
  dialer/console
  dialer/csv_cells.py
  dialer/demo.py
  dialer/dial_resolution.py
  dialer/errors.py
  dialer/evidence.py
  dialer/holidays_cli.py
  dialer/http
  dialer/ids.py
  dialer/import_worker.py
  dialer/leadership.py
  dialer/masking.py
  dialer/model.py
  dialer/outbox.py
  dialer/policy_cli.py
  dialer/ports.py
  dialer/replay.py
  dialer/replay_cli.py
  dialer/services.py
  dialer/simulate.py
  dialer/usecases
  dialer/workers.py
  dialer/worklist.py
)
exec .venv/bin/python -m mypy "$@" "${checked[@]}"
