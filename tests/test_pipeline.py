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


def test_unsupported_content_is_refused_with_a_json_reply():
    outcome = PIPELINE.process(Envelope(body=b"%PDF-1.7 ...", content_type="application/pdf"))
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


def _with_type_code(body: bytes, code: str) -> bytes:
    """Sample 04 with its OBR-4, TXA-2 and OBX-3 type code changed (the CDA keeps its own code)."""
    return body.replace(b"18748-4^CR d'imagerie m\xc3\xa9dicale^LN", f"{code}^X^LN".encode()).replace(
        b"TXA|1|18748-4|", f"TXA|1|{code}|".encode()
    )


def test_type_code_outside_j07_and_outside_j66_for_the_dmp():
    body = (SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes()
    out = PIPELINE.process(Envelope(body=_with_type_code(body, "99999-9"), message_id="m"))
    assert "TRANS-TYPECODE-J07" in out.report.rule_codes()
    # A CDA whose code is in J07 but not in J66 (TypeCode-DMP) may be mailed but not sent to the DMP.
    cda = (
        SHARED / "cisis/testcontenucda-3.0/ExemplesCDA/IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml"
    ).read_bytes()
    import base64

    swapped = cda.replace(b'<code code="18748-4"', b'<code code="34120-6"', 1)
    text = body.decode("utf-8")
    old = text.split("^Base64^", 1)[1].split("|", 1)[0]
    body = text.replace(old, base64.b64encode(swapped).decode(), 1).encode("utf-8")
    out = PIPELINE.process(Envelope(body=_with_type_code(body, "34120-6"), message_id="m"))
    assert out.report.rule_codes() == ["TRANS-TYPECODE-J66"]


def test_test_ins_is_refused_in_production_mode():
    body = (SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes()
    production = Pipeline(load_routes(ROOT / "routes.yaml"), {}, "k", ins_production=True)
    out = production.process(Envelope(body=body, message_id="m"))
    assert "INS-TEST-IN-PRODUCTION" in out.report.rule_codes() and not out.accepted
    assert PIPELINE.process(Envelope(body=body, message_id="m")).accepted


def test_structuration_minimale_errors_reach_the_ack_with_segment_and_xpath():
    from tests.conftest import ans_message

    body = ans_message("MDM/Remplacement MDM/message_MDM_CR_Radio_RPLC_N1.er7")  # 2021-era CDA as published
    out = PIPELINE.process(Envelope(body=body, message_id="m", content_type=ER7))
    assert {"STRUCMIN-SETID", "STRUCMIN-NAME-QUALIFIER"} <= set(out.report.rule_codes())
    ack = parse_message(out.reply)
    err = next(e for e in ack.all("ERR") if e.get(7) == "STRUCMIN-SETID")
    assert err.field(2) == "OBX^1^5" and "(at /ClinicalDocument/setId)" in err.get(8)


def test_n1_document_with_a_media_type_outside_ass_a12_is_refused():
    body = (SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes()
    text = body.decode("utf-8")
    import base64

    old = text.split("^Base64^", 1)[1].split("|", 1)[0]
    cda = base64.b64decode(old).replace(b'mediaType="application/pdf"', b'mediaType="application/zip"', 1)
    out = PIPELINE.process(Envelope(body=text.replace(old, base64.b64encode(cda).decode(), 1).encode()))
    assert "CDA-N1-MEDIATYPE" in out.report.rule_codes()
