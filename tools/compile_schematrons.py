"""Precompile every top-level ANS schematron of the CI-SIS kit into the XSLT cache, then Saxon-compile it.

    python tools/compile_schematrons.py [--kit DIR] [--cache DIR]

Prints, per schematron, the XSLT generation time (0 when already cached) and the Saxon compile time, then the
list of schematrons that failed and why. Exit code 1 when any failed other than the known-broken upstream ones.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.validation.official.compiler import SchematronCompileError, compiled_xslt
from gateway.validation.official.validator import BROKEN_UPSTREAM, STRUCMIN


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kit", type=Path, default=Path(os.environ.get("CISIS_KIT_DIR", "testcontenucda-3.0"))
    )
    parser.add_argument(
        "--cache", type=Path, default=Path(os.environ.get("CISIS_SCH_CACHE", "var/schematron-cache"))
    )
    args = parser.parse_args(argv)
    kit: Path = args.kit
    if not (kit / STRUCMIN).exists():
        parser.error(f"no CI-SIS kit at {kit} (expected {STRUCMIN})")
    from saxonche import PySaxonProcessor

    xslt = PySaxonProcessor(license=False).new_xslt30_processor()
    targets = [kit / STRUCMIN, *sorted((kit / "schematrons").glob("CI-SIS_*.sch"))]
    failed: list[tuple[str, str]] = []
    total = time.perf_counter()
    for sch in targets:
        try:
            compiled = compiled_xslt(sch, args.cache)
            start = time.perf_counter()
            xslt.compile_stylesheet(stylesheet_file=str(compiled.xslt_path))
            saxon = time.perf_counter() - start
            print(f"ok    {sch.name:50} generate {compiled.compile_seconds:6.2f}s  saxon {saxon:6.2f}s")
        except SchematronCompileError as exc:
            failed.append((sch.name, str(exc)))
            print(f"FAIL  {sch.name:50} {exc}")
        except Exception as exc:  # Saxon static error
            failed.append((sch.name, " ".join(str(exc).split())[:300]))
            print(f"FAIL  {sch.name:50} saxon: {' '.join(str(exc).split())[:200]}")
    print(f"\n{len(targets)} schematrons in {time.perf_counter() - total:.1f}s, {len(failed)} failed")
    unexpected = 0
    for name, reason in failed:
        known = BROKEN_UPSTREAM.get(name)
        unexpected += known is None
        print(f"  {name}: {known or reason}" + (" (known upstream breakage)" if known else ""))
    return 1 if unexpected else 0


if __name__ == "__main__":
    raise SystemExit(main())
