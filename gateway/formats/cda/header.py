"""Reads the CDA R2 header into the canonical model (Volet "Structuration minimale", cisis-facts §2 and §4.1).

Only the header is read (no body walk), with XPath expressions compiled once at import: reading the header of a
30 KB CR-BIO costs well under a millisecond. The reader is lenient — a missing element yields ``None`` — because
*judging* the header is validation's job; it reports only what makes the document unusable (not XML, not a
ClinicalDocument, no id).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from gateway.formats.cda.xml_safety import DEFAULT_MAX_BYTES, UnsafeXMLError, parse_untrusted
from gateway.model import (
    INS_OIDS,
    Author,
    Code,
    DocumentMetadata,
    InstanceId,
    Organization,
    PatientIdentity,
    Person,
)
from gateway.terminology import default_terminology
from gateway.terminology.associations import class_code_for_type, format_code_for_templates

NS = {"hl7": "urn:hl7-org:v3"}
CDA_ROOT = "{urn:hl7-org:v3}ClinicalDocument"
#: IHE XDS-SD templateId: a non-structured ("niveau 1") CDA [§2.1, §2.4].
XDS_SD_TEMPLATE = "1.3.6.1.4.1.19376.1.2.20"


class CdaReadError(ValueError):
    """The bytes are not a readable CDA. ``rule`` and ``location`` (an XPath) say what and where."""

    def __init__(self, rule: str, location: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.location = location


def _x(path: str) -> etree.XPath:
    return etree.XPath(path, namespaces=NS)


_ID = _x("hl7:id")
_CODE = _x("hl7:code")
_TITLE = _x("string(hl7:title)")
_EFFECTIVE = _x("string(hl7:effectiveTime/@value)")
_CONF = _x("hl7:confidentialityCode")
_LANG = _x("string(hl7:languageCode/@code)")
_SET_ID = _x("hl7:setId")
_VERSION = _x("string(hl7:versionNumber/@value)")
_TEMPLATES = _x("hl7:templateId/@root")
_PATIENT_IDS = _x("hl7:recordTarget/hl7:patientRole/hl7:id")
_PATIENT = _x("hl7:recordTarget/hl7:patientRole/hl7:patient")
_AUTHORS = _x("hl7:author")
_LEGAL = _x("hl7:legalAuthenticator/hl7:assignedEntity")
_SERVICE_EVENT = _x("hl7:documentationOf/hl7:serviceEvent")
_FACILITY_CODE = _x("hl7:componentOf/hl7:encompassingEncounter/hl7:location/hl7:healthCareFacility/hl7:code")
_RPLC = _x("hl7:relatedDocument[@typeCode='RPLC']/hl7:parentDocument/hl7:id")
_NONXML_TEXT = _x("hl7:component/hl7:nonXMLBody/hl7:text")
_STRUCTURED = _x("hl7:component/hl7:structuredBody")


@dataclass(slots=True)
class CdaHeader:
    """What the header says: document metadata and the patient (recordTarget)."""

    metadata: DocumentMetadata
    patient: PatientIdentity
    warnings: list[tuple[str, str, str]] = field(default_factory=list)
    #: The parsed document, kept so that validation does not parse it a second time.
    tree: etree._ElementTree | None = None


def _text(el: etree._Element | None, path: str) -> str | None:
    if el is None:
        return None
    found = el.find(path, NS)
    if found is None or found.text is None:
        return None
    value = found.text.strip()
    return value or None


def _code(el: etree._Element | None) -> Code | None:
    if el is None or el.get("code") is None:
        return None
    return Code(code=el.get("code", ""), code_system=el.get("codeSystem"), display=el.get("displayName"))


def _ii(el: etree._Element | None) -> InstanceId | None:
    if el is None or not el.get("root"):
        return None
    return InstanceId(root=el.get("root", ""), extension=el.get("extension") or None)


def _first(items: list) -> etree._Element | None:
    return items[0] if items else None


def _person(entity: etree._Element | None) -> Person | None:
    if entity is None:
        return None
    ident = entity.find("hl7:id", NS)
    name = entity.find("hl7:assignedPerson/hl7:name", NS)
    return Person(
        id=ident.get("extension") if ident is not None else None,
        id_authority=ident.get("root") if ident is not None else None,
        family=_text(name, "hl7:family"),
        given=_text(name, "hl7:given"),
        prefix=_text(name, "hl7:prefix"),
    )


def _organization(el: etree._Element | None) -> Organization | None:
    if el is None:
        return None
    ident = el.find("hl7:id", NS)
    return Organization(
        name=_text(el, "hl7:name"),
        id=ident.get("extension") if ident is not None else None,
        id_authority=ident.get("root") if ident is not None else None,
    )


def _authors(root: etree._Element) -> list[Author]:
    authors: list[Author] = []
    for author in _AUTHORS(root):
        assigned = author.find("hl7:assignedAuthor", NS)
        time = author.find("hl7:time", NS)
        device = assigned.find("hl7:assignedAuthoringDevice", NS) if assigned is not None else None
        authors.append(
            Author(
                time=time.get("value") if time is not None else None,
                person=_person(assigned) if assigned is not None and device is None else None,
                device=_text(device, "hl7:softwareName") if device is not None else None,
                organization=_organization(
                    assigned.find("hl7:representedOrganization", NS) if assigned is not None else None
                ),
                specialty=_code(assigned.find("hl7:code", NS) if assigned is not None else None),
                function=_code(author.find("hl7:functionCode", NS)),
            )
        )
    return authors


def _patient(root: etree._Element) -> PatientIdentity:
    ins = ins_oid = None
    ipp: InstanceId | None = None
    for ident in _PATIENT_IDS(root):
        rid = ident.get("root", "")
        if rid in INS_OIDS and ins is None:
            ins, ins_oid = ident.get("extension"), rid
        elif ipp is None and rid:
            ipp = InstanceId(root=rid, extension=ident.get("extension"))
    patient = _first(_PATIENT(root))
    name = patient.find("hl7:name", NS) if patient is not None else None
    fields: dict[str, str | None] = {}
    if name is not None:
        for fam in name.findall("hl7:family", NS):
            key = {"BR": "birth_family_name", "CL": "used_family_name"}.get(fam.get("qualifier", ""))
            if key and fam.text:
                fields[key] = fam.text.strip()
        for giv in name.findall("hl7:given", NS):
            key = {"BR": "first_given_name", "": "given_names"}.get(giv.get("qualifier", ""))
            if key and giv.text:
                fields[key] = giv.text.strip()
    gender = patient.find("hl7:administrativeGenderCode", NS) if patient is not None else None
    birth = patient.find("hl7:birthTime", NS) if patient is not None else None
    return PatientIdentity(
        ins=ins,
        ins_oid=ins_oid,
        ipp=ipp,
        sex=gender.get("code") if gender is not None else None,
        birth_date=birth.get("value") if birth is not None else None,
        birthplace_cog=_text(patient, "hl7:birthplace/hl7:place/hl7:addr/hl7:county"),
        **fields,
    )


def _n1_format_code(media_type: str | None) -> Code | None:
    """XDS formatCode of a non-structured (N1) document, from its mediaType by ASS_A12 [§2.4]. N3 documents
    get theirs from their templateIds by ASS_A11 (:func:`_format_code`)."""
    found = default_terminology().format_code_for_media_type(media_type) if media_type else None
    return Code(code=found[0], code_system=found[1], display=found[2]) if found else None


def _format_code(level: str, templates: list[str], media_type: str | None) -> Code | None:
    """XDS formatCode [§4.1]: N1 by body mediaType (ASS_A12), N3 by the most specific model templateId
    (ASS_A11, :func:`gateway.terminology.associations.format_code_for_templates`)."""
    if level == "N1":
        return _n1_format_code(media_type)
    return format_code_for_templates(templates)


def _class_code(type_code: Code | None) -> Code | None:
    """XDS classCode [§4.1]: the document type (``ClinicalDocument/code``) by ASS_X04; ``None`` if unknown."""
    return class_code_for_type(type_code.code, type_code.code_system) if type_code is not None else None


def read_header(tree: etree._ElementTree) -> CdaHeader:
    """Read the header of an already parsed CDA."""
    root = tree.getroot()
    if root.tag != CDA_ROOT:
        raise CdaReadError("CDA-ROOT", "/", "the root element is not {urn:hl7-org:v3}ClinicalDocument")
    doc_id = _ii(_first(_ID(root)))
    if doc_id is None:
        raise CdaReadError("CDA-ID", "/ClinicalDocument/id", "ClinicalDocument/id/@root is missing")
    templates = [str(t) for t in _TEMPLATES(root)]
    nonxml = _first(_NONXML_TEXT(root))
    level = "N1" if nonxml is not None or XDS_SD_TEMPLATE in templates else "N3"
    event = _first(_SERVICE_EVENT(root))
    version = _VERSION(root)
    performer_org = (
        event.find("hl7:performer/hl7:assignedEntity/hl7:representedOrganization", NS)
        if event is not None
        else None
    )
    confidentiality = [c for c in (_code(el) for el in _CONF(root)) if c is not None]
    type_code = _code(_first(_CODE(root)))
    media_type = nonxml.get("mediaType") if nonxml is not None else None
    metadata = DocumentMetadata(
        unique_id=doc_id.xds_unique_id(),
        document_id=doc_id,
        set_id=_ii(_first(_SET_ID(root))),
        version_number=int(version) if version.isdigit() else None,
        type_code=type_code,
        class_code=_class_code(type_code),
        confidentiality=confidentiality,
        creation_time=_EFFECTIVE(root) or None,
        healthcare_facility_type=_code(_first(_FACILITY_CODE(root))),
        practice_setting=_code(
            performer_org.find("hl7:standardIndustryClassCode", NS) if performer_org is not None else None
        ),
        authors=_authors(root),
        legal_authenticator=_person(_first(_LEGAL(root))),
        service_start=(
            event.find("hl7:effectiveTime/hl7:low", NS).get("value")
            if event is not None and event.find("hl7:effectiveTime/hl7:low", NS) is not None
            else None
        ),
        service_stop=(
            event.find("hl7:effectiveTime/hl7:high", NS).get("value")
            if event is not None and event.find("hl7:effectiveTime/hl7:high", NS) is not None
            else None
        ),
        title=_TITLE(root).strip() or None,
        language_code=_LANG(root) or None,
        template_ids=templates,
        replaced_document_id=_ii(_first(_RPLC(root))),
        level=level,
        body_media_type=media_type,
        format_code=_format_code(level, templates, media_type),
    )
    warnings: list[tuple[str, str, str]] = []
    if nonxml is None and not _STRUCTURED(root):
        warnings.append(("CDA-BODY", "/ClinicalDocument/component", "neither structuredBody nor nonXMLBody"))
    return CdaHeader(metadata=metadata, patient=_patient(root), warnings=warnings, tree=tree)


def read_cda(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> CdaHeader:
    """Parse untrusted CDA bytes (hardened parser) and read the header."""
    try:
        tree = parse_untrusted(data, max_bytes=max_bytes)
    except UnsafeXMLError as exc:
        raise CdaReadError(exc.rule, exc.location, str(exc)) from None
    return read_header(tree)
