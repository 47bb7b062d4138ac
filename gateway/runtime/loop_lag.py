"""Event-loop lag: how long the loop went without running a 1 ms ticker. The promise "CPU work never blocks the
loop for more than a few ms" is checked with it (tests, benchmarks; an ops metric later)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class LoopLag:
    gaps: list[float] = field(default_factory=list)  # seconds beyond the 1 ms tick

    @property
    def max_ms(self) -> float:
        return max(self.gaps, default=0.0) * 1000


@asynccontextmanager
async def measure_loop_lag(tick_s: float = 0.001) -> AsyncIterator[LoopLag]:
    lag = LoopLag()
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(tick_s)
            now = time.perf_counter()
            lag.gaps.append(max(0.0, now - last - tick_s))
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(tick_s * 5)
    try:
        yield lag
    finally:
        stop.set()
        await task
