"""Builds gateway/terminology/data/terminology.json.gz from the ANS value sets in ../shared.

The gateway must not read ../shared at run time, so the JDV SVS files of TestContenuCDA and the DMP CSV lists
(nos-jdv-derived, incl. ASS_A12) are compiled once into the shipped file. Run from anywhere:

    .venv/bin/python tools/build_terminology.py [--jdv DIR] [--nos DIR] [--out FILE]

Re-run it whenever the ANS kit in ../shared is updated; tests/test_terminology.py fails while the shipped file
differs from a fresh build.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.terminology.build import compile_terminology  # noqa: E402
from gateway.terminology.jdv import shipped_path  # noqa: E402

SHARED = ROOT.parent / "shared" / "cisis"
DEFAULT_JDV = SHARED / "testcontenucda-3.0" / "jeuxDeValeurs"
DEFAULT_NOS = SHARED / "nos-jdv-derived"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jdv", type=Path, default=DEFAULT_JDV, help="folder of JDV_*.xml SVS files")
    parser.add_argument(
        "--nos", type=Path, default=DEFAULT_NOS, help="folder of JDV_*.csv / ASS_A12*.csv ('' to skip)"
    )
    parser.add_argument("--out", type=Path, default=shipped_path(), help="compiled file to write")
    args = parser.parse_args(argv)
    nos = args.nos if str(args.nos) not in ("", ".") else None
    if not args.jdv.is_dir():
        parser.error(f"JDV folder not found: {args.jdv}")
    summary = compile_terminology(args.jdv, nos, args.out)
    print(f"wrote {args.out}")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
