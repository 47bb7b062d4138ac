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

from gateway.runtime.loop_lag import measure_loop_lag
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
    result: dict = {}
    with tempfile.TemporaryDirectory() as cache:
        # The first call starts the worker process and compiles StrucMin there (seconds); the gateway does it
        # at start-up (OfficialStep.warm). Its own loop stall is reported apart from the steady state.
        async with measure_loop_lag() as first_lag:
            start = time.perf_counter()
            first = (args.kit / "ExemplesCDA" / DOCS["35 KB BIO-TROD"]).read_bytes()
            await validate_official(pool, args.kit, cache, first)
            result["first_call_incl_compile_s"] = round(time.perf_counter() - start, 2)
        result["event_loop_longest_stall_during_first_call_ms"] = round(first_lag.max_ms, 2)
        async with measure_loop_lag() as lag:
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
    result["event_loop_longest_stall_ms"] = round(lag.max_ms, 2)
    pool.shutdown()
    print(json.dumps(result, indent=2))
    (ROOT / "bench/results").mkdir(exist_ok=True)
    (ROOT / "bench/results/official_speed.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
