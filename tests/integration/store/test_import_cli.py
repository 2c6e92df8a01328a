"""`dialgate cases import FILE` as a user runs it: a process of its own, a real SQLite file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def run_cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = workdir / "config.toml"
    cfg.write_text(f'[paths]\ndata_dir = "{workdir / "var"}"\n[imports]\nbatch_rows = 2\n', encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "dialer.cli", "cases", "import", *args, "--config", str(cfg)],
        capture_output=True, text=True, timeout=120, cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
    )


def test_the_cli_imports_a_gbk_csv_in_batches_and_prints_the_summary(tmp_path: Path) -> None:
    rows = "".join(f"bank-a,G-{i},王小明,col-a,138000001{i:02d},self\n" for i in range(7))
    (tmp_path / "cases.csv").write_bytes(("creditor,case_id,debtor_name,assigned_agent,number,relation\n" + rows)
                                         .encode("gbk"))
    done = run_cli(tmp_path, "cases.csv")
    assert done.returncode == 0, done.stderr
    assert "done, 7 of 7 rows applied (created 7)" in done.stdout
    assert "encoding gb18030" in done.stdout
    assert "7/7" in done.stderr  # the progress bar's last state
    con = sqlite3.connect(tmp_path / "var" / "dialgate.db")
    assert con.execute("SELECT count(*), min(debtor_name) FROM cases").fetchone() == (7, "王小明")
    assert con.execute("SELECT state, rows_done, actor FROM import_jobs").fetchone()[:2] == ("done", 7)


def test_the_cli_lists_every_error_of_a_refused_file_and_exits_1_writing_no_case(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text(
        "creditor,case_id,debtor_name,number,relation\nbank-a,B-1,张三,12,self\nbank-a,B-2,李四,13800000001,boss\n",
        encoding="utf-8",
    )
    done = run_cli(tmp_path, "bad.csv")
    assert done.returncode == 1
    assert "refused" in done.stderr
    assert "row 2 contacts[0].number" in done.stderr
    assert "row 3 contacts[0].relation" in done.stderr
    con = sqlite3.connect(tmp_path / "var" / "dialgate.db")
    assert con.execute("SELECT count(*) FROM cases").fetchone() == (0,)
