"""The ebRIM binding for ITI-41 (DMP TD2.1): no XDM URI, the DSG signature entry with its ``signs``
association, the RPLC association of a replacement; schema-valid, and shaped like the DMP's DRIM-M request."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from lxml import etree

from gateway.delivery.mssante.xdm_metadata import (
    ACTION_SLOT,
    REPLACES,
    RIM_NS,
    SIGNS,
    SignatureEntry,
    build_submit_objects_request,
    oid_from_uuid,
)
from gateway.model import DocumentSubmission
from gateway.runtime.pipeline import Envelope
from tests.conftest import SHARED, require_shared
from tests.test_xdm_schema import PIPELINE, errors, lcm_schema, sample

R = f"{{{RIM_NS}}}"
DRIMM = SHARED / "cisis/dmp-xds/drimm-DMP-ITI41-ProvideAndRegister-KOS-with-VIHF.mime.txt"


def dmp_submission(name: str) -> DocumentSubmission:
    out = PIPELINE.process(
        Envelope(body=sample(name), message_id=name, received_at=datetime(2026, 1, 2, tzinfo=UTC))
    )
    assert out.accepted
    return next(j.submission for j in out.jobs if j.destination == "dmp")


def request(sub: DocumentSubmission, **kw) -> etree._Element:
    root, _ = build_submit_objects_request(
        sub,
        submission_unique_id="1.2.250.1.999.1.1.8121.5.7122",
        source_id="1.2.250.1.999.1.1.8121",
        submission_time="20260102120000",
        **kw,
    )
    return root


SIG = SignatureEntry(hash="bc9498379c2ef8da40b372fe38f2f14a3e058cf8", size=6102, creation_time="20260102120000",
                     unique_id=oid_from_uuid())  # fmt: skip


def slot_names(entry: etree._Element) -> set[str]:
    return {s.get("name") for s in entry.findall(f"{R}Slot")}


def test_iti41_request_is_schema_valid_with_signature_and_no_xdm_slots():
    root = request(dmp_submission("01_ORU_R01_initial_CR-BIO.hl7"), signature=SIG)
    assert errors(lcm_schema(), root) == []
    entries = {e.get("id"): e for e in root.iter(f"{R}ExtrinsicObject")}
    assert set(entries) == {"Document01", "Signature01"}
    assert not {"URI", ACTION_SLOT} & slot_names(entries["Document01"])  # XDM-only slots
    assocs = [
        (a.get("associationType"), a.get("sourceObject"), a.get("targetObject"))
        for a in root.iter(f"{R}Association")
    ]
    assert (SIGNS, "Signature01", "SubmissionSet01") in assocs
    assert sum(1 for t, s, _ in assocs if t.endswith("HasMember") and s == "SubmissionSet01") == 2
    assert re.fullmatch(r"2\.25\.\d+", SIG.unique_id)


def test_replacement_carries_an_rplc_association_to_the_replaced_entry_uuid():
    sub = dmp_submission("01_ORU_R01_initial_CR-BIO.hl7")
    root = request(sub, replaced_entry_uuid="urn:uuid:0f9b1a36-7c33-4b0a-8a57-1f2d5d3b9a10")
    assert errors(lcm_schema(), root) == []
    (rplc,) = [a for a in root.iter(f"{R}Association") if a.get("associationType") == REPLACES]
    assert (rplc.get("sourceObject"), rplc.get("targetObject")) == (
        "Document01",
        "urn:uuid:0f9b1a36-7c33-4b0a-8a57-1f2d5d3b9a10",
    )


def test_signature_entry_has_the_slots_and_codes_of_the_drimm_request():
    require_shared()
    text = DRIMM.read_text(encoding="utf-8", errors="replace")
    start = text.index('<ExtrinsicObject id="Signature01"')
    end = text.index("</ExtrinsicObject>", start) + len("</ExtrinsicObject>")
    theirs = etree.fromstring(
        text[start:end].replace("<ExtrinsicObject ", f'<ExtrinsicObject xmlns="{RIM_NS}" ', 1)
    )
    ours = next(
        e
        for e in request(dmp_submission("01_ORU_R01_initial_CR-BIO.hl7"), signature=SIG).iter(
            f"{R}ExtrinsicObject"
        )
        if e.get("id") == "Signature01"
    )

    def codes(entry: etree._Element) -> set[tuple[str, str]]:
        return {(c.get("classificationScheme"), c.get("nodeRepresentation")) for c in entry.findall(f"{R}Classification")
                if c.get("nodeRepresentation") not in (None, "")}  # fmt: skip

    fixed = {"urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a", "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
             "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d", "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"}  # fmt: skip
    assert {c for c in codes(theirs) if c[0] in fixed} == {c for c in codes(ours) if c[0] in fixed}
    # DRIM-M also writes submissionTime on the entry (not a DocumentEntry attribute in ITI TF-3) and copies the
    # KOS's study reference (referenceIdList), which a CDA report does not have; everything else matches
    assert slot_names(theirs) - {"submissionTime", "urn:ihe:iti:xds:2013:referenceIdList"} == slot_names(ours)
    assert ours.get("mimeType") == theirs.get("mimeType") == "text/xml"
