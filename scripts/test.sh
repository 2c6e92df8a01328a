#!/usr/bin/env bash
# THE test command: installs what the suite needs on a fresh Debian machine, starts the
# real services, and runs the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --services
# Types first: a strict-mode error fails the run before any service starts.
bash scripts/typecheck.sh
eval "$(bash scripts/services.sh)"
mkdir -p test-artifacts
set +e
# One worker per core; a test file stays on one worker (--dist loadfile), so files that
# share a fixture or a database name within themselves never race each other.
.venv/bin/python -m pytest -n "${DIALGATE_TEST_WORKERS:-auto}" --dist loadfile "$@"
rc=$?
set -e
# pytest exits 5 when it collected no test: that is a failure, not a pass.
[ "$rc" = 5 ] && echo "no tests were collected" >&2
exit "$rc"
