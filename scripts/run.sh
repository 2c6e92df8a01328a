#!/usr/bin/env bash
# THE run command: installs what serving DialGate needs (not the test extras) and starts
# it on embedded defaults (SQLite and local files under ./var), with demo creditors,
# users and cases. The demo users' tokens are printed and kept in var/demo-tokens.json
# (`.venv/bin/dialgate demo-token NAME` prints one); they stay valid across restarts.
# Extra arguments go to `dialgate serve`.
# Not a demo: as a systemd service, deploy/systemd/dialgate.service; in a container,
# Containerfile (README, "Operations").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dialgate serve --demo "$@"
