"""The pure pipeline on every real-world HL7v2 file: never an exception, always a decision and an ACK."""

from __future__ import annotations

import pytest

from gateway.formats.hl7v2.er7 import ER7Error, parse_message, split_messages
from gateway.routing import load_routes
from gateway.routing.transformers import load_transformers
from gateway.runtime.pipeline import Envelope, Pipeline
from tests.conftest import ROOT, SAMPLES, SHARED

CORPUS = SHARED / "corpus/hl7v2"
PIPELINE = Pipeline(load_routes(ROOT / "routes.yaml"), {}, "test-key")
ER7 = "x-application/hl7-v2+er7"  # what a producer declares (as `cisis-gateway send` does)


def corpus_files(malformed: bool) -> list:
    folder = CORPUS / "malformed" if malformed else CORPUS
    return sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []


def bodies(path) -> list[bytes]:
    data = path.read_bytes()
    try:
        return split_messages(data) or [data]
    except ER7Error:
        return [data]


@pytest.mark.parametrize("path", corpus_files(False) + corpus_files(True), ids=lambda p: p.name)
def test_every_corpus_file_gets_a_decision_and_a_parsable_ack(path):
    for body in bodies(path):
        outcome = PIPELINE.process(Envelope(body=body, message_id="m", content_type=ER7))
        assert outcome.reply is not None
        ack = parse_message(outcome.reply)
        assert ack.segment("MSA").get(1) == outcome.report.ack_code()
        if not outcome.accepted:
            assert outcome.report.errors, "a refusal always names a rule"
            assert outcome.report.ack_code() in ("AE", "AR")


@pytest.mark.parametrize("path", corpus_files(True), ids=lambda p: p.name)
def test_malformed_files_are_never_accepted(path):
    assert not any(
        PIPELINE.process(Envelope(body=b, message_id="m", content_type=ER7)).accepted for b in bodies(path)
    )


def test_samples_decisions():
    outcomes = {
        p.name: PIPELINE.process(Envelope(body=p.read_bytes(), message_id=p.name))
        for p in sorted(SAMPLES.glob("*.hl7"))
    }
    accepted = {name for name, o in outcomes.items() if o.accepted}
    assert accepted == {
        "01_ORU_R01_initial_CR-BIO.hl7",
        "02_ORU_R01_replacement_CR-BIO.hl7",
        "04_MDM_T02_initial_CR-IMG_PS_only.hl7",
        "05_ORU_R01_deletion_CR-BIO.hl7",
    }
    assert outcomes["03_MDM_T02_initial_CR-IMG_illegal_flags.hl7"].report.rule_codes() == ["TRANS-MSS-FLAGS"]
    jobs = outcomes["01_ORU_R01_initial_CR-BIO.hl7"].jobs
    assert [(j.destination, j.recipients_kind) for j in jobs] == [
        ("dmp", None),
        ("mssante", "ps"),
        ("mssante", "patient"),
    ]
    assert len({j.idempotency_key for j in jobs}) == 3


def test_non_hl7_content_is_refused_with_a_json_reply():
    outcome = PIPELINE.process(
        Envelope(body=b'{"resourceType": "Bundle"}', content_type="application/fhir+json")
    )
    assert not outcome.accepted and outcome.reply is None
    assert outcome.report.rule_codes() == ["INGEST-CONTENT-TYPE"]


def test_transformer_plugins_are_loaded_by_path_and_applied(tmp_path):
    (tmp_path / "retitle.py").write_text(
        "def transform(sub):\n    for d in sub.documents:\n        d.metadata.title = 'Retitled'\n    return sub\n"
    )
    (tmp_path / "boom.py").write_text("def transform(sub):\n    raise RuntimeError('x')\n")
    (tmp_path / "_helper.py").write_text("raise SystemExit('must not be imported')\n")
    plugins = load_transformers(tmp_path)
    assert set(plugins) == {"retitle", "boom"}
    routes_text = (
        (ROOT / "routes.yaml")
        .read_text()
        .replace("      - to: dmp\n", "      - to: dmp\n    transform: [retitle]\n", 1)
    )
    from gateway.routing import parse_routes

    pipeline = Pipeline(parse_routes(routes_text), plugins, "k")
    out = pipeline.process(Envelope(body=(SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes()))
    assert out.accepted and out.jobs[0].submission.documents[0].metadata.title == "Retitled"
    broken = Pipeline(parse_routes(routes_text.replace("[retitle]", "[boom]")), plugins, "k")
    out = broken.process(Envelope(body=(SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes()))
    assert not out.accepted and "ROUTE-TRANSFORMER-FAILED" in out.report.rule_codes()
