"""PDSm writer: the ITI-65 Bundle built from the demo samples, read back by the project's own PDSm reader (round
trip), compared with the PDSM4DMP examples; the deletion PATCH; the registry's answers."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from datetime import UTC, datetime
from uuid import UUID

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.parameters import Parameters

from gateway.delivery.pdsm import (
    DeletionStyle,
    PdsmBuildError,
    build_deletion_patch,
    build_iti65_bundle,
    read_response,
)
from gateway.delivery.pdsm.bundle import (
    BUNDLE_PROFILE,
    DOCREF_PROFILE,
    IS_DELETED_URL,
    SUBMISSIONSET_PROFILE,
    fhir_datetime,
)
from gateway.formats.fhir import read_pdsm
from gateway.model import Code, DocumentAction, DocumentSubmission, Provenance
from gateway.routing import load_routes
from gateway.runtime.pipeline import Envelope, Pipeline
from tests.conftest import ROOT, SAMPLES, SHARED

PIPELINE = Pipeline(load_routes(ROOT / "routes.yaml"), {}, "k")
NOW = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
SOURCE_ID = "1.2.250.1.999.1"
# Test stand-ins for ASS_X04 / ASS_A11 (not shipped, cisis-facts §11): a CR de biologie is class 10
# "Compte rendu" and its N3 volet CR-BIO has the XD-LAB format code.
CLASS_10 = Code(code="10", code_system="1.2.250.1.213.1.1.4.1", display="Compte rendu")
XD_LAB = Code(code="urn:ihe:lab:xd-lab:2008", code_system="1.3.6.1.4.1.19376.1.2.3")
PDSM4DMP = SHARED / "cisis" / "pdsm4dmp-eeds" / "ig-build-json"
PDSM = SHARED / "cisis" / "pdsm" / "ig-build-json"
XML_DOC_TYPES = ("text/xml", "application/xml")


def submission(name: str) -> DocumentSubmission:
    out = PIPELINE.process(
        Envelope(
            body=(SAMPLES / name).read_bytes(), message_id=name, received_at=datetime(2026, 1, 2, tzinfo=UTC)
        )
    )
    assert out.accepted
    (job,) = [j for j in out.jobs if j.destination == "dmp"]
    return job.submission


def counter():
    n = 0

    def next_uuid() -> UUID:
        nonlocal n
        n += 1
        return UUID(int=n)

    return next_uuid


def build(sub: DocumentSubmission, **kw) -> dict:
    kw.setdefault("class_code_for", lambda doc: CLASS_10)
    kw.setdefault("format_code_for", lambda doc: XD_LAB)
    return build_iti65_bundle(sub, now=NOW, source_id=SOURCE_ID, id_factory=counter(), **kw)


def read_back(bundle: dict):
    result = read_pdsm(
        json.dumps(bundle).encode(),
        "application/fhir+json",
        Provenance(message_id="rt", received_at=datetime(2026, 1, 1, tzinfo=UTC)),
    )
    assert result.report.findings == [], [(f.rule, f.location, f.message) for f in result.report.findings]
    assert result.submission is not None
    return result.submission


def resources(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def codes(concepts) -> list[str]:
    return [c.code for c in concepts]


def assert_round_trip(sub: DocumentSubmission, back: DocumentSubmission) -> None:
    """The canonical fields the Bundle carries come back equal."""
    assert back.action is sub.action
    assert (back.patient.ins, back.patient.ins_oid) == (sub.patient.ins, sub.patient.ins_oid)
    assert len(back.documents) == len(sub.documents)
    for mine, theirs in zip(sub.documents, back.documents, strict=True):
        m, t = mine.metadata, theirs.metadata
        assert t.unique_id == m.unique_id and t.document_id == m.document_id
        assert t.type_code == m.type_code
        assert t.class_code == (m.class_code or CLASS_10)
        assert t.format_code == (m.format_code or XD_LAB)
        # confidentiality: the CDA code(s), then the masking labels the flags added
        masking = [
            c
            for c, on in (
                ("MASQUE_PS", sub.flags.masque_ps),
                ("INVISIBLE_PATIENT", sub.flags.invisible_patient),
            )
            if on
        ]
        assert codes(t.confidentiality) == codes(m.confidentiality) + masking
        assert theirs.content.data == mine.content.data
        assert (theirs.content.sha1, theirs.content.size) == (mine.content.sha1, mine.content.size)
        assert [a.person.id for a in t.authors] == [a.person.id for a in m.authors]
        assert [a.organization.id for a in t.authors] == [a.organization.id for a in m.authors]
        assert (t.creation_time, t.service_start, t.service_stop) == (
            m.creation_time,
            m.service_start,
            m.service_stop,
        )
        assert (t.level, t.mime_type, t.title) == (m.level, m.mime_type, m.title)
    for flag in ("masque_ps", "invisible_patient", "invisible_rep_legaux"):
        assert bool(getattr(back.flags, flag)) == bool(getattr(sub.flags, flag))
    assert back.sender is not None and sub.sender is not None
    assert back.sender.person.id == sub.sender.person.id
    assert back.sender.organization.id == sub.sender.organization.id


def assert_structure(bundle: dict) -> None:
    Bundle.model_validate(bundle)
    assert bundle["type"] == "transaction" and bundle["meta"]["profile"] == [BUNDLE_PROFILE]
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert all(u.startswith("urn:uuid:") for u in urls) and len(set(urls)) == len(urls)
    for entry in bundle["entry"]:
        kind = entry["resource"]["resourceType"]
        expected = ("PATCH", None) if kind == "Parameters" else ("POST", kind)
        assert entry["request"]["method"] == expected[0]
        if expected[1]:
            assert entry["request"]["url"] == expected[1]
    (ss,) = resources(bundle, "List")
    assert ss["meta"]["profile"] == [SUBMISSIONSET_PROFILE]
    docrefs = resources(bundle, "DocumentReference")
    assert [e["item"]["reference"] for e in ss["entry"]] == [
        e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DocumentReference"
    ]
    binaries = {
        e["fullUrl"]: e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Binary"
    }
    for dr in docrefs:
        assert dr["meta"]["profile"] == [DOCREF_PROFILE]
        att = dr["content"][0]["attachment"]
        data = base64.b64decode(binaries[att["url"]]["data"])
        assert att["size"] == len(data)
        assert att["hash"] == base64.b64encode(hashlib.sha1(data).digest()).decode()
        assert dr["masterIdentifier"]["value"].startswith("urn:oid:")


# ------------------------------------------------------------------------------------------------ initial


def test_initial_structured_cda_round_trips() -> None:
    sub = submission("01_ORU_R01_initial_CR-BIO.hl7")
    bundle = build(sub)
    assert_structure(bundle)
    assert [r["resourceType"] for r in (e["resource"] for e in bundle["entry"])] == [
        "List",
        "DocumentReference",
        "Binary",
    ]
    (ss,) = resources(bundle, "List")
    (dr,) = resources(bundle, "DocumentReference")
    (binary,) = resources(bundle, "Binary")
    assert base64.b64decode(binary["data"]) == sub.documents[0].content.data  # the exact bytes
    assert binary["contentType"] == "text/xml"
    # submission set: uniqueId + entryUUID, contentTypeCode from PV1-2 = I, sourceId, submission time
    assert [i["use"] for i in ss["identifier"]] == ["usual", "official"]
    assert ss["identifier"][1]["value"] == bundle["entry"][0]["fullUrl"]
    ext = {e["url"].rsplit("/", 1)[1]: e for e in ss["extension"]}
    assert ext["ihe-designationType"]["valueCodeableConcept"]["coding"][0]["code"] == "03"
    assert ext["ihe-sourceId"]["valueIdentifier"]["value"] == f"urn:oid:{SOURCE_ID}"
    assert ss["date"] == "2026-01-02T10:00:00+00:00"
    # document reference: identifiers, subject INS, dates, custodian = the sender's structure
    assert dr["masterIdentifier"]["value"] == f"urn:oid:{sub.documents[0].metadata.unique_id}"
    assert dr["identifier"][0]["value"] == bundle["entry"][1]["fullUrl"]
    assert dr["subject"]["identifier"] == {"system": "urn:oid:1.2.250.1.213.1.4.10", "value": sub.patient.ins}
    assert dr["date"] == "2021-01-04T16:05:27+01:00"
    assert dr["context"]["period"] == {
        "start": "2021-01-04T09:22:00+01:00",
        "end": "2021-01-04T16:05:00+01:00",
    }
    contained = {r["id"]: r for r in dr["contained"]}
    assert contained["custodian"]["identifier"][0]["value"] == sub.sender.organization.id
    assert contained["source-patient"]["birthDate"] == "1979-03-28"
    assert "relatesTo" not in dr
    assert_round_trip(sub, read_back(bundle))


def test_n1_pdf_keeps_its_format_code_and_masking_label() -> None:
    sub = submission("04_MDM_T02_initial_CR-IMG_PS_only.hl7")
    assert sub.documents[0].metadata.level == "N1" and sub.flags.invisible_patient
    # formatCode comes from the model (ASS_A12 by mediaType): format_code_for must not be consulted
    bundle = build(sub, format_code_for=lambda doc: pytest.fail("formatCode already known"))
    assert_structure(bundle)
    (dr,) = resources(bundle, "DocumentReference")
    assert dr["content"][0]["format"]["code"] == "urn:ihe:iti:xds-sd:pdf:2008"
    labels = [label["coding"][0]["code"] for label in dr["securityLabel"]]
    assert labels == ["N", "INVISIBLE_PATIENT"]
    (binary,) = resources(bundle, "Binary")
    assert base64.b64decode(binary["data"]) == sub.documents[0].content.data
    # function code (J47) travels as PractitionerRole.code
    role = next(r for r in dr["contained"] if r["id"] == "author-1")
    assert role["code"][0]["coding"][0]["code"] == "ATTPHYS"
    back = read_back(bundle)
    assert_round_trip(sub, back)
    assert back.primary.metadata.body_media_type == "application/pdf"


def test_document_reference_metadata_round_trips_without_the_cda_header() -> None:
    """The reader prefers the CDA header when it can read the content; declaring the content opaque makes it
    map the DocumentReference alone, which checks the writer's own metadata (authors, codes, dates)."""
    sub = submission("01_ORU_R01_initial_CR-BIO.hl7")
    bundle = build(sub)
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Binary":
            res["contentType"] = "application/octet-stream"
        elif res["resourceType"] == "DocumentReference":
            res["content"][0]["attachment"]["contentType"] = "application/octet-stream"
    back = read_back(bundle)
    m, t = sub.documents[0].metadata, back.documents[0].metadata
    for name in (
        "unique_id",
        "type_code",
        "healthcare_facility_type",
        "practice_setting",
        "creation_time",
        "service_start",
        "service_stop",
        "title",
        "language_code",
        "confidentiality",
    ):
        assert getattr(t, name) == getattr(m, name), name
    assert (t.class_code, t.format_code) == (CLASS_10, XD_LAB)
    assert len(t.authors) == 1
    mine, theirs = m.authors[0], t.authors[0]
    assert theirs.person.model_dump(exclude={"id_type"}) == mine.person.model_dump(exclude={"id_type"})
    assert theirs.organization == mine.organization
    assert theirs.specialty == mine.specialty
    assert back.patient.ins == sub.patient.ins


# --------------------------------------------------------------------------------------------- replacement


def test_replacement_relates_to_the_replaced_unique_id_and_patches_it() -> None:
    sub = submission("02_ORU_R01_replacement_CR-BIO.hl7")
    assert sub.action is DocumentAction.REPLACEMENT
    bundle = build(sub)
    assert_structure(bundle)
    (dr,) = resources(bundle, "DocumentReference")
    target = f"urn:oid:{sub.replaced_document_id}"
    assert dr["relatesTo"] == [
        {
            "code": "replaces",
            "target": {
                "type": "DocumentReference",
                "identifier": {"system": "urn:ietf:rfc:3986", "value": target},
            },
        }
    ]
    patch = bundle["entry"][-1]
    assert patch["request"] == {
        "method": "PATCH",
        "url": f"DocumentReference?identifier=urn:ietf:rfc:3986|{target}",
    }
    Parameters.model_validate(patch["resource"])
    parts = {p["name"]: p for p in patch["resource"]["parameter"][0]["part"]}
    assert parts["path"]["valueString"] == "DocumentReference.status"
    assert parts["value"]["valueCode"] == "superseded"
    back = read_back(bundle)
    assert_round_trip(sub, back)
    assert back.replaced_document_id == sub.replaced_document_id

    without = build(sub, patch_replaced=False)
    assert [e["resource"]["resourceType"] for e in without["entry"]] == [
        "List",
        "DocumentReference",
        "Binary",
    ]


# ------------------------------------------------------------------------------------------------ deletion


def test_deletion_is_a_conditional_fhirpath_patch() -> None:
    sub = submission("05_ORU_R01_deletion_CR-BIO.hl7")
    assert sub.action is DocumentAction.DELETION
    with pytest.raises(PdsmBuildError):
        build(sub)
    unique = sub.documents[0].metadata.unique_id
    url, params = build_deletion_patch(sub)
    assert url == f"DocumentReference?identifier=urn:ietf:rfc:3986|urn:oid:{unique}"
    Parameters.model_validate(params)
    (op,) = params["parameter"]
    parts = {p["name"]: p for p in op["part"]}
    assert (parts["type"]["valueCode"], parts["path"]["valueString"]) == (
        "replace",
        "DocumentReference.status",
    )
    assert parts["value"]["valueCode"] == "entered-in-error"  # PDSM4DMP TD3.3c

    url2, draft = build_deletion_patch(sub, style=DeletionStyle.PDSM_IS_DELETED)
    assert url2 == url
    Parameters.model_validate(draft)
    status_op, add_op = draft["parameter"]
    assert status_op["part"][2]["valueCode"] == "superseded"
    add = {p["name"]: p for p in add_op["part"]}
    assert add["type"]["valueCode"] == "add" and add["name"]["valueString"] == "extension"
    assert add["value"]["part"][0]["valueUri"] == IS_DELETED_URL


# ------------------------------------------------------------------------------------- missing / bad input


def test_missing_required_metadata_fails_with_every_problem_listed() -> None:
    sub = submission("01_ORU_R01_initial_CR-BIO.hl7")
    # without the codes the NOS tables (ASS_X04 / ASS_A11) give
    doc = sub.documents[0]
    bare = doc.model_copy(
        update={"metadata": doc.metadata.model_copy(update={"class_code": None, "format_code": None})}
    )
    with pytest.raises(PdsmBuildError) as exc:
        build_iti65_bundle(sub.model_copy(update={"documents": [bare]}), now=NOW, source_id=SOURCE_ID)
    text = " ".join(exc.value.problems)
    assert "classCode" in text and "formatCode" in text
    no_ins = sub.model_copy(update={"patient": sub.patient.model_copy(update={"ins": None})})
    with pytest.raises(PdsmBuildError, match="INS"):
        build(no_ins)
    with pytest.raises(ValueError, match="timezone"):
        build_iti65_bundle(sub, now=datetime(2026, 1, 1), source_id=SOURCE_ID)


def test_hl7_dates_become_fhir_dates() -> None:
    assert fhir_datetime("20210104160527+0100") == "2021-01-04T16:05:27+01:00"
    assert fhir_datetime("202107041605") == "2021-07-04T16:05:00+02:00"  # no zone: Paris, summer time
    assert fhir_datetime("20210104") == "2021-01-04"
    assert fhir_datetime("20210104", instant=True) == "2021-01-04T00:00:00+01:00"
    assert fhir_datetime("20210104160527.123Z") == "2021-01-04T16:05:27.123+00:00"


# ------------------------------------------------------------------------------------ against IG examples


@pytest.mark.parametrize(
    "example", ["Bundle-example-td2-iti65-lot-soumission.json", "Bundle-example-td2-1-remplacement.json"]
)
def test_layout_matches_the_pdsm4dmp_examples(example: str) -> None:
    path = PDSM4DMP / example
    if not path.is_file():
        pytest.skip("../shared PDSM4DMP examples missing")
    ig = json.loads(path.read_bytes())
    name = (
        "02_ORU_R01_replacement_CR-BIO.hl7" if "remplacement" in example else "01_ORU_R01_initial_CR-BIO.hl7"
    )
    ours = build(submission(name))

    def shape(bundle: dict) -> list[tuple]:
        return sorted(
            (
                e["resource"]["resourceType"],
                tuple(e["resource"].get("meta", {}).get("profile", [])),
                e["request"]["method"],
            )
            for e in bundle["entry"]
        )

    assert ours["meta"]["profile"] == ig["meta"]["profile"]
    assert ours["type"] == ig["type"]
    assert shape(ours) == shape(ig)
    # every element the IG example fills in the List and the DocumentReference, ours fills too
    for kind in ("List", "DocumentReference"):
        (mine,) = resources(ours, kind)
        (theirs,) = resources(ig, kind)
        assert set(theirs) - {"id", "text"} <= set(mine), kind
    (ig_dr,) = resources(ig, "DocumentReference")
    (our_dr,) = resources(ours, "DocumentReference")
    assert set(ig_dr["content"][0]["attachment"]) <= set(our_dr["content"][0]["attachment"])
    assert set(ig_dr["context"]) <= set(our_dr["context"])


# ------------------------------------------------------------------------------------------------ responses


def test_success_transaction_response() -> None:
    body = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {"response": {"status": "201 Created", "location": "List/1/_history/1"}},
            {"response": {"status": "201 Created", "location": "DocumentReference/7/_history/1"}},
            {"response": {"status": "201", "location": "Binary/9"}},
        ],
    }
    result = read_response(200, json.dumps(body).encode(), expected_entries=3)
    assert result.ok and not result.permanent
    assert result.locations[1] == "DocumentReference/7/_history/1"
    delivery = result.to_delivery_result()
    assert delivery.ok and delivery.detail["entries"] == ["201 Created", "201 Created", "201"]


def test_ig_example_response_is_a_success() -> None:
    path = PDSM / "Bundle-a9c10f8a-882d-4000-a280-7150e0aeb478.json"
    if not path.is_file():
        pytest.skip("../shared PDSm example missing")
    result = read_response(200, path.read_bytes(), expected_entries=3)
    assert result.ok and result.locations == ("List/1", "DocumentReference/1", "Binary/1")


def test_422_operation_outcome_is_permanent_with_its_issues() -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "business-rule",
                "details": {
                    "coding": [{"system": "urn:dmp:error", "code": "DMPClosed"}],
                    "text": "DMP fermé",
                },
                "diagnostics": "Le DMP du patient DUPONT est fermé",
                "expression": ["Bundle.entry[1].resource.subject"],
            },
            {"severity": "warning", "code": "code-invalid", "location": ["Bundle.entry[1].resource.type"]},
        ],
    }
    result = read_response(422, json.dumps(outcome))
    assert not result.ok and result.permanent
    first, second = result.issues
    assert (first.severity, first.code, first.details) == ("error", "business-rule", ("DMPClosed",))
    assert first.diagnostics.startswith("Le DMP") and first.expression == (
        "Bundle.entry[1].resource.subject",
    )
    assert second.expression == ("Bundle.entry[1].resource.type",)  # R4's deprecated location, read too
    assert result.errors == (first,)
    delivery = result.to_delivery_result()
    assert not delivery.ok and delivery.permanent
    assert "DUPONT" not in json.dumps(delivery.detail)  # diagnostics stay out of the journal


@pytest.mark.parametrize("status", [503, 429, 408, 500])
def test_transient_statuses(status: int) -> None:
    body = {"resourceType": "OperationOutcome", "issue": [{"severity": "fatal", "code": "transient"}]}
    for payload in (json.dumps(body).encode(), b"", b"<html>Service Unavailable</html>"):
        result = read_response(status, payload)
        assert not result.ok and not result.permanent
        assert not result.to_delivery_result().permanent


def test_failed_entry_and_unreadable_success() -> None:
    body = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {"response": {"status": "201"}},
            {
                "response": {
                    "status": "404 Not Found",
                    "outcome": {
                        "resourceType": "OperationOutcome",
                        "issue": [{"severity": "error", "code": "not-found"}],
                    },
                }
            },
        ],
    }
    result = read_response(200, body)
    assert not result.ok and result.permanent and result.issues[0].entry == 1
    short = copy.deepcopy(body)
    short["entry"] = short["entry"][:1]
    assert not read_response(200, short, expected_entries=3).ok
    garbage = read_response(200, b"not json")
    assert not garbage.ok and not garbage.permanent and garbage.problem
    patched = read_response(200, {"resourceType": "DocumentReference", "status": "entered-in-error"})
    assert patched.ok  # a Flux 04 answer: the patched DocumentReference
