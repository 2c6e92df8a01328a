#!/usr/bin/env bash
# Prepare this machine for DialGate: Python virtualenv with the project installed, and
# (with --services) the real components the integration tests run against.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

with_services=0
[ "${1:-}" = "--services" ] && with_services=1

need_apt=()
want() { dpkg -s "$1" >/dev/null 2>&1 || need_apt+=("$1"); }
want python3-venv
if [ "$with_services" = 1 ]; then
  # PostgreSQL (store), Mosquitto (event bus), Kamailio (SIP proxy/registrar),
  # sipp (SIP load generator: the edge-restart test), Chromium (console browser tests) and a
  # CJK font for its screenshots, faketime (the README tour test runs on another date),
  # SoftHSM2 (a PKCS#11 token for the recording-key tests).
  for p in postgresql mosquitto kamailio sip-tester chromium fonts-wqy-microhei faketime softhsm2; do want "$p"; done
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
# Serving needs the project alone; the test extras (pytest, Playwright, numpy, …) only
# with --services, the test command's mode.
target=. what=serve
[ "$with_services" = 1 ] && target='.[dev]' what=dev
stamp=.venv/.dialgate-installed-$what
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "==> installing DialGate ($what) into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e "$target"
  touch "$stamp"
fi
