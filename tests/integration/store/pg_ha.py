"""A private PostgreSQL primary with a synchronous streaming-replication standby, on
free loopback ports, made with the installed server's `initdb` and `pg_basebackup`
(deploy/postgresql/README.md is the same recipe for production). Everything lives in
one temporary directory; the shared cluster on 5432 is never touched.

Run as root, the server programs run as the `postgres` user (initdb refuses root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import require_service


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PgPair:
    """`primary_port`, `standby_port`; `kill_primary()` (SIGKILL to the postmaster),
    `promote()`; `close()` stops both and removes the directory."""

    def __init__(self, primary_port: int, standby_port: int) -> None:
        bindir = _bindir()
        require_service("PostgreSQL server programs", bindir is not None,
                        "apt-get install postgresql (scripts/setup.sh --services)")
        assert bindir is not None
        self.bin = bindir
        self.primary_port, self.standby_port = primary_port, standby_port
        self.root = Path(tempfile.mkdtemp(prefix="dialgate-ha-"))
        self.primary, self.standby = self.root / "primary", self.root / "standby"
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.root.chmod(0o700)

    def _run(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args[:2])} failed: {done.stdout[-1500:]} {done.stderr[-1500:]}")
        return done.stdout

    def start(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.primary), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
        with open(self.primary / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                f"port = {self.primary_port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\n"
                # An acknowledged commit is on the standby's disk too.
                "synchronous_standby_names = 'standby1'\nsynchronous_commit = on\n"
                "cluster_name = 'primary1'\n"
            )
        self._pg_ctl(self.primary, "start")
        self._run(str(self.bin / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary_port), "-U",
                  "postgres", "-D", str(self.standby), "-R", "-X", "stream", "--no-sync")
        with open(self.standby / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                f"port = {self.standby_port}\n"
                # The standby reports itself as standby1; once promoted it waits for no
                # standby of its own (none is attached yet), or every commit would hang.
                "cluster_name = 'standby1'\nsynchronous_standby_names = ''\n"
            )
        self._pg_ctl(self.standby, "start")
        self._wait_sync()

    def _pg_ctl(self, data: Path, action: str) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(data.parent / f"{data.name}.log"),
                  "-w", "-t", "60", action)

    def psql(self, port: int, sql: str, db: str = "postgres") -> str:
        return self._run(str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                         "-d", db, "-Atc", sql)

    def _wait_sync(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.psql(self.primary_port, "SELECT sync_state FROM pg_stat_replication "
                                                 "WHERE application_name = 'standby1'").strip()
            if state == "sync":
                return
            time.sleep(0.2)
        raise AssertionError("the standby never became synchronous")

    def kill_primary(self) -> None:
        pid = int((self.primary / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 9)

    def promote(self) -> None:
        self._pg_ctl(self.standby, "promote")

    def close(self) -> None:
        for data in (self.standby, self.primary):
            if (data / "postmaster.pid").exists():
                subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                                "stop"], capture_output=True, timeout=60, cwd=self.root)
        # A killed postmaster's children end once they notice it is gone.
        shutil.rmtree(self.root, ignore_errors=True)
