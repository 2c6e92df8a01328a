"""`dialgate serve` takes what start-up built out of the garbage collector's walks."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI

from dialer.app import frozen_after_startup


async def test_objects_alive_after_start_up_are_frozen_once_the_app_has_started() -> None:
    seen: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        seen["during_startup"] = gc.get_freeze_count()
        app.state.built = [object() for _ in range(10)]  # what start-up builds
        yield

    app = frozen_after_startup(FastAPI(lifespan=lifespan))
    threshold = gc.get_threshold()
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > seen["during_startup"]
            assert gc.get_threshold()[0] > threshold[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
