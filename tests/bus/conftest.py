"""Fixtures of the bus tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from controllerbus.bus import Bus


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    async with Bus() as b:
        yield b
    # Closing the bus must leave nothing running.
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftover == []
