"""PDSm (ITI-65 / ITI-105) reader: IG examples, a Bundle built around an ANS CDA, mutations, malformed input."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.formats.cda.header import read_cda
from gateway.formats.fhir import operation_outcome, read_pdsm
from gateway.model import DocumentAction, Provenance

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PDSM = SHARED / "cisis" / "pdsm" / "ig-build-json"
PDSM4DMP = SHARED / "cisis" / "pdsm4dmp-eeds" / "ig-build-json"
CDA = SHARED / "cisis" / "testcontenucda-3.0" / "ExemplesCDA" / "BIO-CR-BIO_2024.01_TSH_1.xml"
MALFORMED = SHARED / "corpus" / "fhir" / "malformed"


@pytest.fixture(autouse=True)
def _need_shared() -> None:
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail("../shared is missing: CI must have the shared reference folder beside the clone")
        pytest.skip("../shared is missing")


def _prov() -> Provenance:
    return Provenance(message_id="test", received_at=datetime(2026, 1, 1, tzinfo=UTC))


def _errors(body: bytes, content_type: str | None = "application/fhir+json") -> set[str]:
    return set(read_pdsm(body, content_type, _prov()).report.rule_codes())


# What each IG example yields (error rule ids). None of them is a complete, conforming ITI-65 input:
EXAMPLES: dict[str, tuple[Path, set[str]]] = {
    # transaction-response: not a request at all.
    "pdsm-response": (
        PDSM / "Bundle-a9c10f8a-882d-4000-a280-7150e0aeb478.json",
        {"PDSM-BUNDLE-TYPE", "PDSM-BUNDLE-ENTRY", "PDSM-DOCREF-COUNT", "PDSM-SUBMISSIONSET-COUNT"},
    ),
    # ITI-105 example: its data is "Hello World"-like text whose declared size/hash are placeholders; no custodian/
    # securityLabel/format/context codes, and its subject is a plain Patient reference without an INS.
    "pdsm-simplified": (
        PDSM / "DocumentReference-PDSmSimplifiedExample.json",
        {"PDSM-ATTACHMENT-HASH", "PDSM-ATTACHMENT-SIZE", "PDSM-DOCREF-REQUIRED", "PDSM-PATIENT-INS"},
    ),
    # a comprehensive DocumentReference on its own: its attachment.url points at a Binary we do not have.
    "pdsm-docref": (
        PDSM / "DocumentReference-exemple-pdsm-documentreference.json",
        {"PDSM-ATTACHMENT-URL", "PDSM-DOCREF-REQUIRED", "PDSM-PATIENT-INS"},
    ),
    # PDSM4DMP TD2 / TD2.1: the Binary is a stub "<ClinicalDocument xmlns='urn:hl7-org:v3'/>" (no id:
    # CDA-ID) and the DocumentReference has no custodian.
    "td2": (
        PDSM4DMP / "Bundle-example-td2-iti65-lot-soumission.json",
        {"PDSM-CDA-READ", "PDSM-DOCREF-REQUIRED"},
    ),
    "td2.1": (PDSM4DMP / "Bundle-example-td2-1-remplacement.json", {"PDSM-CDA-READ", "PDSM-DOCREF-REQUIRED"}),
    "iti105": (
        PDSM4DMP / "DocumentReference-example-td2-iti105-publication-simplifiee.json",
        {"PDSM-CDA-READ", "PDSM-DOCREF-REQUIRED"},
    ),
    # a FHIR document Bundle, not a transaction.
    "annexe-fhir-document": (
        PDSM4DMP / "Bundle-example-annexe-fhir-document.json",
        {"PDSM-BUNDLE-TYPE", "PDSM-DOCREF-COUNT", "PDSM-SUBMISSIONSET-COUNT"},
    ),
    # the PDSm replacement example (XML): its hash is an example value, the patient has no INS identifier.
    "pdsm-replace-xml": (
        SHARED / "corpus" / "fhir" / "pdsm__Bundle-bundle-exemple-comprehensiveprovidedocument-replace.xml",
        {"PDSM-ATTACHMENT-HASH", "PDSM-DOCREF-REQUIRED", "PDSM-PATIENT-INS"},
    ),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_ig_examples(name: str) -> None:
    path, expected = EXAMPLES[name]
    result = read_pdsm(path.read_bytes(), None, _prov())
    assert set(result.report.rule_codes()) == expected
    assert result.submission is not None
    assert result.submission.flags.destdmp is True


def test_td2_examples_map() -> None:
    sub = read_pdsm(EXAMPLES["td2.1"][0].read_bytes(), None, _prov()).submission
    assert sub is not None
    assert sub.action is DocumentAction.REPLACEMENT
    assert sub.replaced_document_id == "DocumentReference/doc-x-id"
    assert sub.patient.ins == "123456789012345" and sub.patient.ins_oid == "1.2.250.1.213.1.4.8"
    assert sub.document_unique_id == "1.2.250.1.213.1.4.8.99999.3"
    assert sub.sender is not None and sub.sender.person is not None
    assert sub.sender.person.id == "899700218896"


def _bundle(cda: bytes) -> dict:
    header = read_cda(cda)
    meta, patient = header.metadata, header.patient
    binary_url = "urn:uuid:00000000-0000-4000-8000-000000000003"
    docref_url = "urn:uuid:00000000-0000-4000-8000-000000000002"
    ins = f"urn:oid:{patient.ins_oid}|{patient.ins}"

    def cc(system: str, code: str) -> dict:
        return {"coding": [{"system": system, "code": code}]}

    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000001",
                "resource": {
                    "resourceType": "List",
                    "contained": [
                        {
                            "resourceType": "Practitioner",
                            "id": "author",
                            "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810101201234"}],
                        }
                    ],
                    "extension": [
                        {
                            "url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType",
                            "valueCodeableConcept": cc("urn:oid:1.2.250.1.213.1.1.4.2.2", "04"),
                        },
                        {
                            "url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId",
                            "valueIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3.4"},
                        },
                    ],
                    "status": "current",
                    "mode": "working",
                    "code": cc("https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "submissionset"),
                    "subject": {"reference": f"Patient?identifier={ins}"},
                    "date": "2026-01-01T10:00:00+01:00",
                    "source": {"reference": "#author"},
                    "entry": [{"item": {"reference": docref_url}}],
                },
                "request": {"method": "POST", "url": "List"},
            },
            {
                "fullUrl": docref_url,
                "resource": {
                    "resourceType": "DocumentReference",
                    "contained": [
                        {
                            "resourceType": "Practitioner",
                            "id": "author",
                            "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810101201234"}],
                        },
                        {
                            "resourceType": "Organization",
                            "id": "custodian",
                            "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1750000000"}],
                        },
                    ],
                    "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{meta.unique_id}"},
                    "status": "current",
                    "type": cc("http://loinc.org", meta.type_code.code),
                    "category": [cc("urn:oid:1.2.250.1.213.1.1.4.1", "10")],
                    "subject": {"reference": f"Patient?identifier={ins}"},
                    "date": "2026-01-01T10:00:00+01:00",
                    "author": [{"reference": "#author"}],
                    "custodian": {"reference": "#custodian"},
                    "securityLabel": [
                        cc("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "N"),
                        cc("urn:oid:1.2.250.1.213.1.1.4.13", "MASQUE_PS"),
                    ],
                    "content": [
                        {
                            "attachment": {
                                "contentType": "text/xml",
                                "url": binary_url,
                                "size": len(cda),
                                "hash": base64.b64encode(hashlib.sha1(cda).digest()).decode(),
                                "title": "CR de biologie",
                            },
                            "format": {
                                "system": "urn:oid:1.2.250.1.213.1.1.4.2.282",
                                "code": "urn:ihe:lab:xd-lab:2008",
                            },
                        }
                    ],
                    "context": {
                        "period": {"start": "2024-01-01T08:00:00+01:00"},
                        "facilityType": cc("urn:oid:1.2.250.1.71.4.2.4", "SA25"),
                        "practiceSetting": cc("urn:oid:1.2.250.1.213.1.1.4.9", "AMBULATOIRE"),
                    },
                },
                "request": {"method": "POST", "url": "DocumentReference"},
            },
            {
                "fullUrl": binary_url,
                "resource": {
                    "resourceType": "Binary",
                    "contentType": "text/xml",
                    "data": base64.b64encode(cda).decode(),
                },
                "request": {"method": "POST", "url": "Binary"},
            },
        ],
    }


@pytest.fixture(scope="module")
def cda_bytes() -> bytes:
    if not CDA.is_file():
        pytest.skip("ANS CDA example missing")
    return CDA.read_bytes()


def _check_conforming(body: bytes, content_type: str, cda: bytes) -> None:
    result = read_pdsm(body, content_type, _prov())
    assert result.report.valid, [(f.rule, f.location, f.message) for f in result.report.errors]
    sub = result.submission
    header = read_cda(cda)
    assert sub is not None and sub.primary is not None
    assert sub.primary.metadata.unique_id == header.metadata.unique_id
    assert sub.primary.metadata.type_code == header.metadata.type_code
    assert sub.patient.ins == header.patient.ins and sub.patient.ins_oid == header.patient.ins_oid
    assert sub.primary.content.data == cda
    assert sub.action is DocumentAction.INITIAL
    assert sub.flags.destdmp and sub.flags.masque_ps and sub.flags.invisible_patient is False
    assert sub.sender is not None and sub.sender.person is not None and sub.sender.person.id == "810101201234"


def test_conforming_bundle_json(cda_bytes: bytes) -> None:
    _check_conforming(json.dumps(_bundle(cda_bytes)).encode(), "application/fhir+json", cda_bytes)


def test_conforming_bundle_xml(cda_bytes: bytes) -> None:
    from fhir.resources.R4B.bundle import Bundle

    xml = Bundle.model_validate(_bundle(cda_bytes)).model_dump_xml()
    body = xml.encode() if isinstance(xml, str) else xml
    assert body.lstrip().startswith(b"<")
    _check_conforming(body, "application/fhir+xml", cda_bytes)


def _mutate(bundle: dict, how: str) -> dict:
    b = copy.deepcopy(bundle)
    dr = b["entry"][1]["resource"]
    att = dr["content"][0]["attachment"]
    if how == "hash":
        att["hash"] = base64.b64encode(b"\0" * 20).decode()
    elif how == "size":
        att["size"] += 1
    elif how == "author":
        del dr["author"]
    elif how == "list":
        del b["entry"][0]
    elif how == "batch":
        b["type"] = "batch"
    elif how == "url":
        att["url"] = "urn:uuid:00000000-0000-4000-8000-0000000000ff"
    elif how == "ins":
        ref = "Patient?identifier=urn:oid:1.2.250.1.213.1.4.10|146026322000196"
        dr["subject"] = {"reference": ref}
    return b


@pytest.mark.parametrize(
    ("how", "rules"),
    [
        ("hash", {"PDSM-ATTACHMENT-HASH"}),
        ("size", {"PDSM-ATTACHMENT-SIZE"}),
        ("author", {"PDSM-DOCREF-REQUIRED"}),
        ("list", {"PDSM-SUBMISSIONSET-COUNT"}),
        ("batch", {"PDSM-BUNDLE-TYPE"}),
        # the Binary is then referenced by nothing: a warning (PDSM-BINARY-UNUSED), not an error
        ("url", {"PDSM-ATTACHMENT-URL"}),
        ("ins", {"PDSM-CDA-INS"}),
    ],
)
def test_mutations(cda_bytes: bytes, how: str, rules: set[str]) -> None:
    body = json.dumps(_mutate(_bundle(cda_bytes), how)).encode()
    result = read_pdsm(body, "application/fhir+json", _prov())
    assert set(result.report.rule_codes()) == rules
    if how == "author":
        assert any(f.location == "Bundle.entry[1].resource.author" for f in result.report.errors)
    if how == "hash":
        assert result.report.errors[0].location == "Bundle.entry[1].resource.content[0].attachment.hash"


SYNTHETIC_MALFORMED: dict[str, bytes] = {
    "empty": b"",
    "not-json": b"{resourceType: Bundle",
    "json-array": b"[1, 2]",
    "not-utf8": b'{"resourceType": "Bundle", "id": "\xff"}',
    "xml-doctype": b'<!DOCTYPE x [<!ENTITY a "b">]><Bundle xmlns="http://hl7.org/fhir"/>',
    "xml-broken": b'<Bundle xmlns="http://hl7.org/fhir"><type value="transaction"></Bundle>',
    "xml-no-ns": b'<Bundle><type value="transaction"/></Bundle>',
    "patient": b'{"resourceType": "Patient"}',
    "bundle-garbage": b'{"resourceType": "Bundle", "type": 3, "entry": [1, {"resource": "x"}]}',
    "docref-garbage": b'{"resourceType": "DocumentReference", "content": [{"attachment": {"data": "@@"}}]}',
}


def _malformed_inputs() -> list[tuple[str, bytes]]:
    found = [(p.name, p.read_bytes()) for p in sorted(MALFORMED.glob("*")) if p.is_file()]
    return found + sorted(SYNTHETIC_MALFORMED.items())


@pytest.mark.parametrize("name", [n for n, _ in _malformed_inputs()] or ["none"])
def test_malformed(name: str) -> None:
    from fhir.resources.R4B.operationoutcome import OperationOutcome

    body = dict(_malformed_inputs())[name]
    result = read_pdsm(body, None, _prov())
    assert not result.report.valid
    outcome = operation_outcome(result.report)
    OperationOutcome.model_validate(outcome)
    assert {i["details"]["coding"][0]["code"] for i in outcome["issue"]} >= set(result.report.rule_codes())


def test_operation_outcome_of_valid_report() -> None:
    from fhir.resources.R4B.operationoutcome import OperationOutcome

    from gateway.model.report import ValidationReport

    OperationOutcome.model_validate(operation_outcome(ValidationReport()))
