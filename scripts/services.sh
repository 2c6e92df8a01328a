#!/usr/bin/env bash
# Start the real services the integration tests use and print the environment that
# points the tests at them (eval "$(scripts/services.sh)").
#  - PostgreSQL: Debian's cluster, a `dialgate` role with a password generated now
#    (never stored in the repository) and a fresh `dialgate_test` database.
#  - Mosquitto, Kamailio, Chromium: the tests start their own instances on free
#    loopback ports; here we only check the binaries are present.
set -euo pipefail

ver=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
if [ -n "$ver" ]; then
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $2}' | grep -qx main; then
    pg_createcluster "$ver" main >/dev/null 2>&1
  fi
  pg_ctlcluster "$ver" main start >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 0.5
  done
  # The role's password is generated on this machine, kept outside the repository (mode
  # 0600) and reused, so parallel runs on one machine keep working.
  pwfile=/var/lib/postgresql/.dialgate-test-password
  if [ ! -s "$pwfile" ]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$pwfile")
  fi
  pw=$(cat "$pwfile")
  su postgres -c "psql -q -v ON_ERROR_STOP=1" >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dialgate') THEN
    CREATE ROLE dialgate LOGIN CREATEDB;
  END IF;
END \$\$;
ALTER ROLE dialgate CREATEDB PASSWORD '$pw';
-- DROP DATABASE … WITH (FORCE) in test teardown may need to end leftover sessions.
GRANT pg_signal_backend TO dialgate;
DROP DATABASE IF EXISTS dialgate_test WITH (FORCE);
CREATE DATABASE dialgate_test OWNER dialgate;
SQL
  echo "export DIALGATE_TEST_PG_URL='postgresql+asyncpg://dialgate:$pw@127.0.0.1:5432/dialgate_test'"
  echo "export DIALGATE_TEST_PG_ADMIN='postgresql+asyncpg://dialgate:$pw@127.0.0.1:5432/postgres'"
else
  echo "echo 'PostgreSQL is not installed' >&2"
fi
