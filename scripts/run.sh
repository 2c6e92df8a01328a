#!/usr/bin/env bash
# THE run command: installs what DialGate needs and starts it on embedded defaults
# (SQLite and local files under ./var), with demo creditors, users and cases; the demo
# users' tokens are printed. Extra arguments go to `dialgate serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dialgate serve --demo "$@"
