"""METADATA.XML of the XDM zip against the OASIS ebRS 3.0 schemas; an XDS.b ITI-41 request against IHE's.

The schemas are local copies in ``gateway/delivery/dmp/schemas`` (provenance in ``SOURCES.md``). They are loaded
with a parser that has no network access and a resolver that only hands out files of that folder, so an
import that is not a local relative path fails to load instead of reaching out.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import io
import re
import zipfile
from datetime import UTC, datetime

import pytest
from lxml import etree

from gateway.delivery.dmp.xml_schemas import SCHEMA_DIR, LocalFilesOnly, lcm_schema, load_schema, xdsb_schema
from gateway.delivery.mssante.xdm import build_xdm
from gateway.delivery.mssante.xdm_metadata import ACTION_SLOT, LCM_NS, RIM_NS
from gateway.model import DocumentAction, DocumentSubmission
from gateway.routing import load_routes
from gateway.runtime.pipeline import Envelope, Pipeline
from tests.conftest import PS_ONLY, ROOT, SAMPLES, ans_message, swap_document

SCHEMAS = SCHEMA_DIR
LCM_XSD = SCHEMAS / "ebrs30" / "lcm.xsd"
XDSB_XSD = SCHEMAS / "ihe" / "XDS.b_DocumentRepository.xsd"
XDSB_NS = "urn:ihe:iti:xds-b:2007"
R = f"{{{RIM_NS}}}"
IMG_N1 = "IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml"
BIO_N3 = "BIO-CR-BIO_2021.01_Microbiologie_V2.xml"

PIPELINE = Pipeline(load_routes(ROOT / "routes.yaml"), {}, "k")


def errors(schema: etree.XMLSchema, doc: etree._Element) -> list[str]:
    schema.validate(doc)
    return [f"line {e.line}: {e.message}" for e in schema.error_log]


def metadata_xml(sub: DocumentSubmission) -> bytes:
    with zipfile.ZipFile(io.BytesIO(build_xdm(sub, sender_label="CH TEST - PFI"))) as zf:
        return zf.read("IHE_XDM/SUBSET01/METADATA.XML")


def mssante_submissions(body: bytes, name: str) -> list[DocumentSubmission]:
    out = PIPELINE.process(Envelope(body=body, message_id=name, received_at=datetime(2026, 1, 2, tzinfo=UTC)))
    assert out.accepted, [f.rule for f in out.report.errors]
    subs = [j.submission for j in out.jobs if j.destination == "mssante"]
    assert subs
    return subs


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def ans(relative: str, cda: str) -> bytes:
    txa12 = "1.2.250.1.213.1.1.1.45.2024.2.1" if relative.startswith("MDM") else None
    return swap_document(ans_message(relative), cda, flags=PS_ONLY, txa12=txa12)


CASES = {
    "initial ORU, structured CDA (N3)": (
        lambda: sample("01_ORU_R01_initial_CR-BIO.hl7"), DocumentAction.INITIAL, "N3",
    ),
    "initial MDM, N1 CDA wrapping a PDF": (
        lambda: sample("04_MDM_T02_initial_CR-IMG_PS_only.hl7"), DocumentAction.INITIAL, "N1",
    ),
    "replacement ORU": (
        lambda: sample("02_ORU_R01_replacement_CR-BIO.hl7"), DocumentAction.REPLACEMENT, "N3",
    ),
    "deletion ORU": (lambda: sample("05_ORU_R01_deletion_CR-BIO.hl7"), DocumentAction.DELETION, "N3"),
    "ANS replacement ORU": (
        lambda: ans("ORU/Remplacement ORU/message_ORU_CR_Bio_RPLC_N3_SEGUR.hl7", BIO_N3),
        DocumentAction.REPLACEMENT, "N3",
    ),
    "ANS deletion ORU": (
        lambda: ans("ORU/Suppression ORU/message_ORU_CR_Bio_DEL_N3_SEGUR.hl7", BIO_N3),
        DocumentAction.DELETION, "N3",
    ),
    "ANS replacement MDM (T10), N1": (
        lambda: ans("MDM/Remplacement MDM/message_MDM_CR_Radio_RPLC_N1.er7", IMG_N1),
        DocumentAction.REPLACEMENT, "N1",
    ),
    "ANS deletion MDM (T04), N1": (
        lambda: ans("MDM/Suppression MDM/message_MDM_CR_Radio_DEL_N1.er7", IMG_N1),
        DocumentAction.DELETION, "N1",
    ),
}  # fmt: skip
ACTION_VALUE = {DocumentAction.INITIAL: [], DocumentAction.REPLACEMENT: ["C"], DocumentAction.DELETION: ["D"]}


@functools.cache
def valid_metadata() -> bytes:
    """A METADATA.XML known to be valid, for the negative tests to break."""
    return metadata_xml(mssante_submissions(sample("01_ORU_R01_initial_CR-BIO.hl7"), "valid")[0])


# ------------------------------------------------------------------------------------------- the schemas


def test_schemas_are_local_and_load_offline():
    for path, target in [(LCM_XSD, LCM_NS), (XDSB_XSD, XDSB_NS)]:
        schema, resolver = load_schema(path)
        assert resolver.refused == []
        assert etree.parse(str(path)).getroot().get("targetNamespace") == target
        assert isinstance(schema, etree.XMLSchema)
    # every import of every copied schema is a relative path to a file of the fixture folder
    for xsd in sorted(SCHEMAS.rglob("*.xsd")):
        for imp in etree.parse(str(xsd)).iterfind("{http://www.w3.org/2001/XMLSchema}import"):
            location = imp.get("schemaLocation")
            assert location and "://" not in location and ":" not in location, (xsd.name, location)
            assert (xsd.parent / location).resolve().is_file(), (xsd.name, location)


def test_fixture_schemas_are_the_recorded_copies():
    """The copies are verbatim but for their imports: SOURCES.md records their SHA-256 (and provenance)."""
    sources = (SCHEMAS / "SOURCES.md").read_text(encoding="utf-8")
    listed = re.findall(r"^([0-9a-f]{64})  (\S+/\S+\.xsd)$", sources, flags=re.MULTILINE)
    recorded = {name: digest for digest, name in listed}
    files = {str(p.relative_to(SCHEMAS)): p for p in SCHEMAS.rglob("*.xsd")}
    assert sorted(recorded) == sorted(files)
    for name, path in files.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded[name], name


def test_an_import_from_the_network_cannot_load(tmp_path):
    remote = tmp_path / "remote.xsd"
    remote.write_text(
        '<schema xmlns="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:x">'
        '<import namespace="http://www.w3.org/XML/1998/namespace"'
        ' schemaLocation="http://www.w3.org/2001/xml.xsd"/></schema>'
    )
    resolver = LocalFilesOnly(tmp_path)
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    parser.resolvers.add(resolver)
    with pytest.raises(etree.XMLSchemaParseError):
        etree.XMLSchema(etree.parse(str(remote), parser))
    assert resolver.refused == ["http://www.w3.org/2001/xml.xsd"]


# ------------------------------------------------------------------------------ METADATA.XML of real mails


@pytest.mark.parametrize("case", list(CASES))
def test_metadata_xml_of_real_submissions_validates(case):
    body, action, level = CASES[case]
    subs = mssante_submissions(body(), case)
    for sub in subs:  # PS mail and, where the flags ask for it, the patient's
        assert sub.action is action
        assert [d.metadata.level for d in sub.documents] == [level] * len(sub.documents)
        if level == "N1":
            assert sub.documents[0].metadata.body_media_type == "application/pdf"
        doc = etree.fromstring(metadata_xml(sub))
        assert errors(lcm_schema(), doc) == []
        entries = doc.findall(f"{R}RegistryObjectList/{R}ExtrinsicObject")
        assert len(entries) == len(sub.documents)
        for eo in entries:
            values = [v.text for v in eo.iterfind(f"{R}Slot[@name='{ACTION_SLOT}']/{R}ValueList/{R}Value")]
            assert values == ACTION_VALUE[action]


def test_metadata_xml_with_two_documents_validates():
    ps = mssante_submissions(sample("01_ORU_R01_initial_CR-BIO.hl7"), "two")[0]
    n1 = mssante_submissions(sample("04_MDM_T02_initial_CR-IMG_PS_only.hl7"), "n1")[0].documents[0]
    sub = ps.model_copy(update={"documents": [*ps.documents, n1]})
    doc = etree.fromstring(metadata_xml(sub))
    assert errors(lcm_schema(), doc) == []
    assert len(doc.findall(f"{R}RegistryObjectList/{R}ExtrinsicObject")) == 2
    assert len(doc.findall(f"{R}RegistryObjectList/{R}Association")) == 2


# ------------------------------------------------------------------------- the schema does reject bad XML


def _drop_value_list(root: etree._Element) -> str:
    slot = root.find(f".//{R}ExtrinsicObject/{R}Slot")
    slot.remove(slot.find(f"{R}ValueList"))
    return f"}}Slot': Missing child element(s). Expected is ( {R}ValueList )"


def _wrong_namespace(root: etree._Element) -> str:
    root.tag = "{urn:oasis:names:tc:ebxml-regrep:xsd:lcm:4.0}SubmitObjectsRequest"
    return "lcm:4.0}SubmitObjectsRequest': No matching global declaration"


def _value_too_long(root: etree._Element) -> str:
    root.find(f".//{R}ExtrinsicObject/{R}Slot/{R}ValueList/{R}Value").text = "x" * 257
    return "exceeds the allowed maximum length of '256'"


def _name_after_classification(root: etree._Element) -> str:
    eo = root.find(f".//{R}ExtrinsicObject")
    name = eo.find(f"{R}Name")
    eo.remove(name)
    eo.append(
        name
    )  # after the ExternalIdentifiers: ebRIM fixes Slot*, Name?, ..., Classification*, ExternalId*
    return "}Name': This element is not expected"


def _classification_without_classified_object(root: etree._Element) -> str:
    del root.find(f".//{R}ExtrinsicObject/{R}Classification").attrib["classifiedObject"]
    return "The attribute 'classifiedObject' is required but missing"


def _association_without_type(root: etree._Element) -> str:
    del root.find(f".//{R}Association").attrib["associationType"]
    return "The attribute 'associationType' is required but missing"


def _slot_in_the_wrong_namespace(root: etree._Element) -> str:
    slot = root.find(f".//{R}ExtrinsicObject/{R}Slot")
    slot.tag = "{urn:oasis:names:tc:ebxml-regrep:xsd:rim:2.1}Slot"
    return "rim:2.1}Slot': This element is not expected"


@pytest.mark.parametrize(
    "breaks",
    [
        _drop_value_list,
        _wrong_namespace,
        _value_too_long,
        _name_after_classification,
        _classification_without_classified_object,
        _association_without_type,
        _slot_in_the_wrong_namespace,
    ],
)
def test_broken_metadata_xml_is_rejected(breaks):
    root = etree.fromstring(valid_metadata())
    assert errors(lcm_schema(), root) == []
    expected = breaks(root)
    found = errors(lcm_schema(), root)
    assert found, "the schema accepted a broken METADATA.XML"
    assert any(expected in message for message in found), found


# --------------------------------------------------------------------------- XDS.b ITI-41 (issue 5 fixture)


def provide_and_register(metadata: bytes, documents: dict[str, bytes]) -> etree._Element:
    """An ``xdsb:ProvideAndRegisterDocumentSetRequest``: SubmitObjectsRequest, then a Document per entry."""
    request = etree.Element(f"{{{XDSB_NS}}}ProvideAndRegisterDocumentSetRequest", nsmap={"xdsb": XDSB_NS})
    request.append(etree.fromstring(metadata))
    for entry_id, data in documents.items():
        document = etree.SubElement(request, f"{{{XDSB_NS}}}Document", id=entry_id)
        document.text = base64.b64encode(data).decode("ascii")
    return request


def test_xds_b_provide_and_register_request_validates():
    sub = mssante_submissions(sample("04_MDM_T02_initial_CR-IMG_PS_only.hl7"), "iti41")[0]
    metadata = metadata_xml(sub)
    entry_id = etree.fromstring(metadata).find(f".//{R}ExtrinsicObject").get("id")
    request = provide_and_register(metadata, {entry_id: sub.documents[0].content.data})
    assert errors(xdsb_schema(), request) == []
    # the metadata inside is still ebRS 3.0 valid on its own
    assert errors(lcm_schema(), request[0]) == []


def test_xds_b_schema_rejects_a_bad_request():
    request = provide_and_register(valid_metadata(), {"Document01": b"<ClinicalDocument/>"})
    assert errors(xdsb_schema(), request) == []

    no_id = copy.deepcopy(request)
    del no_id[1].attrib["id"]
    assert any("'id' is required" in e for e in errors(xdsb_schema(), no_id))

    not_base64 = copy.deepcopy(request)
    not_base64[1].text = "not base64 !"
    assert any("base64Binary" in e for e in errors(xdsb_schema(), not_base64))

    documents_first = copy.deepcopy(request)
    documents_first.insert(0, documents_first[1])  # Document before the SubmitObjectsRequest
    assert errors(xdsb_schema(), documents_first)

    no_metadata = copy.deepcopy(request)
    no_metadata.remove(no_metadata[0])
    assert errors(xdsb_schema(), no_metadata)
