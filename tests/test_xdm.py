"""IHE XDM for MSSanté: METADATA.XML content, zip layout, round trip, corpus XDM files, hardening."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from gateway.delivery.mssante.xdm import XdmError, build_xdm, read_xdm
from gateway.delivery.mssante.xdm_metadata import ACTION_SLOT, RIM_NS, submit_objects_request
from gateway.formats.cda.header import read_cda
from gateway.model import (
    Content,
    Document,
    DocumentAction,
    DocumentSubmission,
    Organization,
    Participant,
    ParticipantRole,
    Person,
    Provenance,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CDA = SHARED / "cisis/testcontenucda-3.0/ExemplesCDA/BIO-CR-BIO_2024.01_TSH_1.xml"
XDM_CORPUS = SHARED / "corpus/xds/xdm"
MALFORMED = SHARED / "corpus/xds/malformed"
R = f"{{{RIM_NS}}}"


def need_shared() -> None:
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail("../shared is missing")
        pytest.skip("../shared not present")


def submission(action: DocumentAction = DocumentAction.INITIAL) -> DocumentSubmission:
    need_shared()
    cda = CDA.read_bytes()
    header = read_cda(cda)
    return DocumentSubmission(
        provenance=Provenance(message_id="m-1", received_at=datetime(2024, 3, 1, 10, 30, tzinfo=UTC)),
        patient=header.patient,
        action=action,
        documents=[Document(metadata=header.metadata, content=Content(data=cda))],
        sender=Participant(
            role=ParticipantRole.SENDER,
            person=Person(id="810000000001", family="DUPONT", given="Jean"),
            organization=Organization(name="CH TEST", id="1750000000", id_type="FINEG"),
        ),
        patient_class="O",
    )


def metadata_of(zip_bytes: bytes) -> etree._Element:
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
        return etree.fromstring(zf.read("IHE_XDM/SUBSET01/METADATA.XML"))


def slot(el: etree._Element, name: str) -> list[str]:
    return [v.text for v in el.iterfind(f"{R}Slot[@name='{name}']/{R}ValueList/{R}Value")]


def ext_id(el: etree._Element, scheme: str) -> str | None:
    found = el.find(f"{R}ExternalIdentifier[@identificationScheme='urn:uuid:{scheme}']")
    return found.get("value") if found is not None else None


def test_zip_layout_and_order():
    data = build_xdm(submission(), sender_label="CH TEST - PFI")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == [
            "README.TXT",
            "INDEX.HTM",
            "IHE_XDM/SUBSET01/METADATA.XML",
            "IHE_XDM/SUBSET01/DOC0001.XML",
        ]
        readme = zf.read("README.TXT").decode()
        index = zf.read("INDEX.HTM").decode()
    assert "CH TEST - PFI" in readme
    assert "IHE_XDM/SUBSET01/DOC0001.XML" in index
    sub = submission()
    for text in (readme, index):  # no patient data
        assert sub.patient.ins not in text
        assert (sub.patient.birth_family_name or "@@") not in text
    assert build_xdm(sub, sender_label="CH TEST - PFI") == data  # deterministic


def test_metadata_document_entry():
    sub = submission()
    doc = sub.documents[0]
    root = metadata_of(build_xdm(sub, sender_label="x"))
    assert root.tag == "{urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0}SubmitObjectsRequest"
    (eo,) = root.iter(f"{R}ExtrinsicObject")
    assert eo.get("objectType") == "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
    assert eo.get("mimeType") == "text/xml"
    assert ext_id(eo, "2e82c1f6-a085-4c72-9da3-8640a32e42ab") == doc.metadata.unique_id
    assert slot(eo, "hash") == [hashlib.sha1(doc.content.data).hexdigest()]
    assert slot(eo, "size") == [str(len(doc.content.data))]
    assert slot(eo, "URI") == ["DOC0001.XML"]
    cx = f"{sub.patient.ins}^^^&{sub.patient.ins_oid}&ISO^NH"
    assert ext_id(eo, "58a6f841-87b3-4a3e-92fd-a8ffeff98427") == cx
    assert slot(eo, "creationTime") == [doc.metadata.creation_time]
    assert slot(eo, "languageCode") == ["fr-FR"]
    assert slot(eo, ACTION_SLOT) == []  # initial submission: no action slot
    type_cl = eo.find(
        f"{R}Classification[@classificationScheme='urn:uuid:f0306f51-975f-434e-a61c-c59651d33983']"
    )
    assert type_cl.get("nodeRepresentation") == doc.metadata.type_code.code
    legal = slot(eo, "legalAuthenticator")
    assert legal and legal[0].endswith("&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS")
    # No empty element: every Value has text, every Slot has values.
    assert all((v.text or "").strip() for v in root.iter(f"{R}Value"))
    assert all(s.find(f"{R}ValueList/{R}Value") is not None for s in root.iter(f"{R}Slot"))


def test_metadata_submission_set():
    sub = submission()
    root = metadata_of(build_xdm(sub, sender_label="x"))
    (rp,) = root.iter(f"{R}RegistryPackage")
    assert (
        ext_id(rp, "6b5aea1a-874d-4603-a4bc-96a0a7b38446")
        == f"{sub.patient.ins}^^^&{sub.patient.ins_oid}&ISO^NH"
    )
    assert ext_id(rp, "96fdda7c-d067-4183-912e-bf5ee74998a8").startswith("2.25.")
    assert ext_id(rp, "554ac39e-e3fe-47fe-b233-965d2a147832").startswith("2.25.")
    assert slot(rp, "submissionTime") == ["20240301103000"]
    author = rp.find(
        f"{R}Classification[@classificationScheme='urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d']"
    )
    assert slot(author, "authorPerson") == ["810000000001^DUPONT^Jean^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"]
    assert slot(author, "authorInstitution") == ["CH TEST^^^^^&1.2.250.1.71.4.2.2&ISO^FINEG^^^1750000000"]
    content = rp.find(
        f"{R}Classification[@classificationScheme='urn:uuid:aa543740-bdda-424e-8c96-df4873be8500']"
    )
    assert content.get("nodeRepresentation") == "07"
    node = root.find(f"{R}RegistryObjectList/{R}Classification")
    assert node.get("classificationNode") == "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
    (assoc,) = root.iter(f"{R}Association")
    assert assoc.get("associationType") == "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
    assert (assoc.get("sourceObject"), assoc.get("targetObject")) == ("SubmissionSet01", "Document01")


@pytest.mark.parametrize(
    ("action", "value"), [(DocumentAction.REPLACEMENT, "C"), (DocumentAction.DELETION, "D")]
)
def test_action_slot(action, value):
    (eo,) = metadata_of(build_xdm(submission(action), sender_label="x")).iter(f"{R}ExtrinsicObject")
    assert slot(eo, ACTION_SLOT) == [value]


def test_uri_count_must_match():
    with pytest.raises(ValueError):
        submit_objects_request(
            submission(), uris=[], submission_unique_id="1.2", source_id="1.3", submission_time="2024"
        )


def test_round_trip():
    sub = submission()
    package = read_xdm(build_xdm(sub, sender_label="x"))
    assert package.subsets == ["SUBSET01"]
    assert package.documents == {"DOC0001.XML": sub.documents[0].content.data}
    assert package.unique_ids == [sub.documents[0].metadata.unique_id]
    assert package.patient_ids == [f"{sub.patient.ins}^^^&{sub.patient.ins_oid}&ISO^NH"]
    assert package.entries[0].patient_id == package.patient_ids[0]


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return out.getvalue()


def test_drim_m_subset_name_and_lowercase_paths():
    """DRIM-M: IHE_XDM/SS000001/ with URI relative to IHE_XDM; any case."""
    sub = submission()
    cda = sub.documents[0].content.data
    metadata = submit_objects_request(
        sub,
        uris=["SS000001/DOC.XML"],
        submission_unique_id="1.2.3",
        source_id="1.2.4",
        submission_time="2024",
    )
    package = read_xdm(_zip({"ihe_xdm/ss000001/metadata.xml": metadata, "IHE_XDM/SS000001/DOC.XML": cda}))
    assert package.subsets == ["ss000001"]
    assert package.documents == {"SS000001/DOC.XML": cda}


def test_hash_mismatch_refused():
    sub = submission()
    metadata = submit_objects_request(
        sub, uris=["DOC0001.XML"], submission_unique_id="1.2.3", source_id="1.2.4", submission_time="2024"
    )
    data = _zip({"IHE_XDM/SUBSET01/METADATA.XML": metadata, "IHE_XDM/SUBSET01/DOC0001.XML": b"<x/>"})
    with pytest.raises(XdmError) as err:
        read_xdm(data)
    assert err.value.rule in {"XDM-SIZE-MISMATCH", "XDM-HASH-MISMATCH"}


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("nist__XDM-Samples_Epic.zip", None),
        ("nist__Ccda_xdm.zip", None),
        ("nist__xdm_minimal.zip", None),
        ("nist__XDM-Samples_Siemens.zip", "XDM-NO-METADATA"),  # README/INDEX only
        ("nist__XDM-Samples_Medicity.zip", "XDM-NO-URI"),  # non-standard uri="" attribute, no URI slot
    ],
)
def test_corpus_xdm(name, rule):
    need_shared()
    data = (XDM_CORPUS / name).read_bytes()
    if rule is None:
        package = read_xdm(data)
        assert package.entries and package.unique_ids
        assert set(package.documents) == {e.uri for e in package.entries}
    else:
        with pytest.raises(XdmError) as err:
            read_xdm(data)
        assert err.value.rule == rule


def test_corpus_files_all_read_or_refused_cleanly():
    need_shared()
    files = sorted(XDM_CORPUS.glob("*.zip"))
    assert files
    for path in files:
        try:
            read_xdm(path.read_bytes())
        except XdmError as exc:  # refused cleanly: a stable rule code, nothing else escapes
            assert exc.rule.startswith(("XDM-", "XML-"))


def test_malformed_drim_m_metadata_refused():
    need_shared()
    metadata = (MALFORMED / "ansforge_drim__XDM_KA202401_METADATA_unbound_ns3_prefix.XML").read_bytes()
    with pytest.raises(XdmError) as err:
        read_xdm(_zip({"IHE_XDM/SS000001/METADATA.XML": metadata}))
    assert err.value.rule == "XML-NOT-WELL-FORMED"


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/passwd", "IHE_XDM/../../x", "C:/x", "a\\..\\b"])
def test_zip_slip_refused(name):
    with pytest.raises(XdmError) as err:
        read_xdm(_zip({name: b"x", "IHE_XDM/SUBSET01/METADATA.XML": b"<x/>"}))
    assert err.value.rule == "XDM-UNSAFE-PATH"


def test_uri_climbing_out_refused():
    sub = submission()
    metadata = submit_objects_request(
        sub, uris=["../../DOC.XML"], submission_unique_id="1.2.3", source_id="1.2.4", submission_time="2024"
    )
    with pytest.raises(XdmError) as err:
        read_xdm(_zip({"IHE_XDM/SUBSET01/METADATA.XML": metadata}))
    assert err.value.rule == "XDM-UNSAFE-PATH"


def test_zip_bomb_refused():
    bomb = _zip({"IHE_XDM/SUBSET01/METADATA.XML": b"<x/>", "IHE_XDM/SUBSET01/DOC0001.XML": b"\0" * 5_000_000})
    assert len(bomb) < 20_000
    with pytest.raises(XdmError) as err:
        read_xdm(bomb, max_entry_bytes=1_000_000)
    assert err.value.rule == "XDM-ENTRY-TOO-LARGE"
    with pytest.raises(XdmError) as err:
        read_xdm(bomb, max_total_bytes=1_000_000)
    assert err.value.rule == "XDM-TOO-LARGE"


def test_lying_declared_size_caught_while_decompressing():
    sub = submission()
    data = build_xdm(sub, sender_label="x")
    # Declared uncompressed size of the document patched down to 1 byte in the central directory.
    size = len(sub.documents[0].content.data).to_bytes(4, "little")
    central = data.rindex(b"PK\x01\x02")
    patched = data[:central] + data[central:].replace(size, (1).to_bytes(4, "little"))
    limit = len(etree.tostring(metadata_of(data))) + 100
    assert len(sub.documents[0].content.data) > limit
    with pytest.raises(XdmError) as err:
        read_xdm(patched, max_entry_bytes=limit)
    assert err.value.rule in {"XDM-ENTRY-TOO-LARGE", "XDM-BAD-ENTRY"}


def test_too_many_entries_and_not_a_zip():
    with pytest.raises(XdmError) as err:
        read_xdm(_zip({f"f{i}": b"" for i in range(20)}), max_entries=10)
    assert err.value.rule == "XDM-TOO-MANY-ENTRIES"
    with pytest.raises(XdmError) as err:
        read_xdm(b"not a zip")
    assert err.value.rule == "XDM-NOT-ZIP"
