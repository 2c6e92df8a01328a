"""Console end-to-end fixtures: the real gate service (SQLite file, fixed clock) with the
console included, seeded through the service's own import and dial APIs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from console_seed import Seeded, seed_service


@pytest.fixture
async def service(tmp_path: Any) -> AsyncIterator[Seeded]:
    async with seed_service(tmp_path) as seeded:
        yield seeded
