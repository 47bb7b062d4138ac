"""Every real-world CDA and FHIR file through the pipeline: a named decision, never an exception."""

from __future__ import annotations

import pytest

from gateway.routing import load_routes
from gateway.runtime.pipeline import Envelope, Pipeline
from tests.conftest import ROOT, SHARED

PIPELINE = Pipeline(load_routes(ROOT / "routes.yaml"), {}, "k")
HINTS = {
    "x-cisis-flags": "DESTDMP=Y;DESTMSSANTEPS=N;DESTMSSANTEPAT=N",
    "x-cisis-identity-status": "QUAL",
    "x-cisis-sender-ps": "801234567866",
    "x-cisis-sender-org": "1120459876",
}


def files(folder: str) -> list:
    path = SHARED / "corpus" / folder
    return sorted(p for p in path.glob("*") if p.is_file()) if path.is_dir() else []


@pytest.mark.parametrize("path", files("cda") + files("cda/malformed"), ids=lambda p: p.name)
def test_cda_corpus_files_get_a_decision(path):
    out = PIPELINE.process(Envelope(body=path.read_bytes(), content_type="application/xml", headers=HINTS))
    if not out.accepted:
        assert out.report.errors and all(f.rule for f in out.report.errors)


@pytest.mark.parametrize("path", files("cda/malformed"), ids=lambda p: p.name)
def test_malformed_cda_files_are_rejected(path):
    out = PIPELINE.process(Envelope(body=path.read_bytes(), content_type="application/xml", headers=HINTS))
    assert not out.accepted and out.report.errors


@pytest.mark.parametrize("path", files("fhir"), ids=lambda p: p.name)
def test_fhir_corpus_files_get_a_decision_and_an_operation_outcome(path):
    content_type = "application/fhir+xml" if path.suffix == ".xml" else "application/fhir+json"
    out = PIPELINE.process(Envelope(body=path.read_bytes(), content_type=content_type))
    assert out.reply is not None and b'"OperationOutcome"' in out.reply
    if not out.accepted:
        assert out.report.errors
