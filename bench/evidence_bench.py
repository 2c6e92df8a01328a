"""What keying the evidence chains costs a decision.

Each decision's record (canonical JSON, ~4 KB with its checks and inputs) is linked to
its chain: before the evidence key by SHA-256(prev_hash + "\\n" + record), now by
HMAC-SHA-256 under the key, plus an HMAC over the chain head (seq, hash, keyed_from).
Printed side by side in one run, per decision, best of five `timeit` repeats:

* anchor  — today's unkeyed link: SHA-256 over the previous hash and the record;
* keyed   — `EvidenceKey.link` over the same bytes;
* head    — `EvidenceKey.head_mac` for the chain head;
* keyed + head, and its excess over the anchor: the CPU a decision pays for the key.

Run: `.venv/bin/python bench/evidence_bench.py`. Prints the load average too: the
machine may be shared.
"""

from __future__ import annotations

import hashlib
import os
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dialer.evidence import EvidenceKey  # noqa: E402

RECORD_BYTES = 4096
NUMBER = 20_000


def _best_us(stmt, number: int = NUMBER) -> float:  # type: ignore[no-untyped-def]
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e6


def main() -> None:
    key = EvidenceKey(os.urandom(32), "bench")
    prev = "ab" * 32
    record = (b'{"checks":[' + b'{"rule_id":"cap.number_daily","passed":true},' * 90)[:RECORD_BYTES]

    def unkeyed() -> str:
        digest = hashlib.sha256((prev + "\n").encode("utf-8"))
        digest.update(record)
        return digest.hexdigest()

    anchor = _best_us(unkeyed)
    keyed = _best_us(lambda: key.link(prev, record))
    head = _best_us(lambda: key.head_mac("bank-a", 123456, prev, 1))
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"load average {' '.join(load)} (shared machine: figures are pessimistic)")
    print(f"record {len(record)} bytes, best of 5 x {NUMBER:,}")
    print(f"anchor: SHA-256 link (unkeyed, before)   {anchor:6.2f} us")
    print(f"keyed:  HMAC-SHA-256 link                {keyed:6.2f} us")
    print(f"head:   HMAC-SHA-256 head MAC            {head:6.2f} us")
    print(f"keyed + head                             {keyed + head:6.2f} us  "
          f"(+{keyed + head - anchor:.2f} us per decision over the anchor)")


if __name__ == "__main__":
    main()
