"""A real Kamailio and two real pyVoIP phones (agent extension 1001, debtor 13800000001)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[3]))  # the repository, for tests.conftest

from pbx_kamailio import KamailioProcess, free_port_block, kamailio_available  # noqa: E402
from pbx_phones import AGENT_EXT, AGENT_HZ, DEBTOR, DEBTOR_HZ, TestPhone  # noqa: E402

from adapters.pbx.sip_ua import SipUaConfig, SipUserAgent  # noqa: E402
from tests.conftest import require_service  # noqa: E402

__all__ = ["AGENT_EXT", "AGENT_HZ", "DEBTOR", "DEBTOR_HZ"]


@pytest.fixture(scope="module")
def kamailio() -> Iterator[KamailioProcess]:
    require_service("kamailio", kamailio_available(), "apt-get install kamailio (/usr/sbin/kamailio)")
    with KamailioProcess() as k:
        yield k


@pytest.fixture(scope="module")
def port_block() -> int:
    return free_port_block(90)  # RTP of both phones and the UA, and their SIP ports


@pytest.fixture(scope="module")
def phones(kamailio: KamailioProcess, port_block: int) -> Iterator[tuple[TestPhone, TestPhone]]:
    agent = TestPhone(AGENT_EXT, kamailio.port, port_block + 80, port_block, port_block + 9, tone_hz=AGENT_HZ)
    debtor = TestPhone(DEBTOR, kamailio.port, port_block + 81, port_block + 10, port_block + 19, tone_hz=DEBTOR_HZ)
    agent.start()
    try:
        debtor.start()
    except Exception:
        agent.stop()
        raise
    yield agent, debtor
    agent.stop()
    debtor.stop()


@pytest.fixture
async def ua(kamailio: KamailioProcess, phones: tuple[TestPhone, TestPhone], port_block: int) -> AsyncIterator[SipUserAgent]:
    cfg = SipUaConfig(
        server="127.0.0.1", port=kamailio.port, username="dialgate", local_port=port_block + 82,
        rtp_port_low=port_block + 20, rtp_port_high=port_block + 79, register_timeout=3.0,
    )
    async with SipUserAgent(cfg) as agent_ua:
        yield agent_ua
