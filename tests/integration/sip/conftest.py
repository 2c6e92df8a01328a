"""Fixtures for the SIP gate's integration tests: a real listener on a free loopback port."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator, Callable

import pytest

from adapters.sip.config import load_sip_config
from adapters.sip.server import SipServer
from sipclient import GATE_CONFIG



@pytest.fixture
def start_gate() -> Callable[..., contextlib.AbstractAsyncContextManager[SipServer]]:
    """``async with start_gate(authorizer, **server_kwargs) as server:`` on a free port."""

    @contextlib.asynccontextmanager
    async def _start(authorizer, **kwargs) -> AsyncIterator[SipServer]:
        config = load_sip_config(GATE_CONFIG)
        async with SipServer(authorizer, config, port=0, **kwargs) as server:
            yield server

    return _start
