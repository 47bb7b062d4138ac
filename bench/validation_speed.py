"""Validation speed, one core, in one run: the native CDA header (structuration minimale) rules and the HL7v2
transmission checks, each next to the parse it needs as a baseline.

    .venv/bin/python bench/validation_speed.py [--seconds 2] [--runs 3]

Figures are documents (or messages) per second, median of --runs runs with min and max.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gateway.formats.cda.xml_safety import parse_untrusted
from gateway.formats.hl7v2.er7 import parse_message
from gateway.formats.hl7v2.transmission import map_transmission, provenance_from_msh
from gateway.model import Provenance
from gateway.terminology import default_terminology
from gateway.validation.cda_header import validate_cda_header
from gateway.validation.transmission import validate_transmission

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT.parent / "shared/cisis/testcontenucda-3.0/ExemplesCDA"
SAMPLE = ROOT / "gateway/demo/samples/04_MDM_T02_initial_CR-IMG_PS_only.hl7"


def rate(fn: Callable[[], object], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values)), "min": round(min(values)), "max": round(max(values))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    terminology = default_terminology()
    cda = (KIT / "OBP-SCM_2024.01.xml").read_bytes()  # 30 KB, the size the validation target names
    tree = parse_untrusted(cda)
    body = SAMPLE.read_bytes()
    message = parse_message(body)
    prov = Provenance(message_id="b", received_at=datetime.now(UTC))
    mapped = map_transmission(message, provenance_from_msh(message, prov))
    # the same message with its CDA header rules left out, to see the HL7v2 rules alone
    without_cda = dataclasses.replace(
        mapped, cda_headers=[dataclasses.replace(h, tree=None) for h in mapped.cda_headers]
    )

    cases: dict[str, Callable[[], object]] = {
        "cda_parse_only_docs_per_s": lambda: parse_untrusted(cda),
        "cda_header_rules_on_parsed_docs_per_s": lambda: validate_cda_header(tree, terminology=terminology),
        "cda_parse_plus_header_rules_docs_per_s": lambda: validate_cda_header(
            parse_untrusted(cda), terminology=terminology
        ),
        "hl7v2_parse_only_msgs_per_s": lambda: parse_message(body),
        "hl7v2_transmission_checks_alone_msgs_per_s": lambda: validate_transmission(
            message, without_cda, terminology=terminology
        ),
        "hl7v2_transmission_checks_incl_embedded_cda_msgs_per_s": lambda: validate_transmission(
            message, mapped, terminology=terminology
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, fn in cases.items():
            results[name].append(rate(fn, args.seconds))
    out = {"cda_bytes": len(cda), "hl7v2_bytes": len(body), **{k: summary(v) for k, v in results.items()}}
    print(json.dumps(out, indent=2))
    (ROOT / "bench/results").mkdir(exist_ok=True)
    (ROOT / "bench/results/validation_speed.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
