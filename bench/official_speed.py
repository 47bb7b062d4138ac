"""The official ANS schematrons (Saxon, in a spawn process pool), per document, and the event loop's longest
stall while they run, measured by a 1 ms ticker task.

    .venv/bin/python bench/official_speed.py [--kit ../shared/cisis/testcontenucda-3.0] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from gateway.validation.official import validate_official

ROOT = Path(__file__).resolve().parents[1]
DOCS = {
    "35 KB BIO-TROD": "BIO-TROD_2024.01_COVID-19_Grippe-A_Grippe-B.xml",
    "343 KB IMG CR": "IMG_CR_IMG_2024.01.xml",
}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kit", type=Path, default=ROOT.parent / "shared/cisis/testcontenucda-3.0")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    stalls: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            stalls.append(now - last - 0.001)
            last = now

    result: dict = {}
    with tempfile.TemporaryDirectory() as cache:
        tick = asyncio.create_task(ticker())
        start = time.perf_counter()
        await validate_official(
            pool, args.kit, cache, (args.kit / "ExemplesCDA" / DOCS["35 KB BIO-TROD"]).read_bytes()
        )
        result["first_call_incl_compile_s"] = round(time.perf_counter() - start, 2)
        for label, name in DOCS.items():
            data = (args.kit / "ExemplesCDA" / name).read_bytes()
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                report = await validate_official(pool, args.kit, cache, data)
                times.append((time.perf_counter() - t) * 1000)
            result[label] = {
                "ms_per_document_median": round(statistics.median(times), 1),
                "min": round(min(times), 1),
                "max": round(max(times), 1),
                "valid": report.valid,
            }
        stop.set()
        await tick
    result["event_loop_longest_stall_ms"] = round(max(stalls) * 1000, 2)
    pool.shutdown()
    print(json.dumps(result, indent=2))
    (ROOT / "bench/results").mkdir(exist_ok=True)
    (ROOT / "bench/results/official_speed.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
