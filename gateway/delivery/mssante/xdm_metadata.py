"""XDM ``METADATA.XML``: an ebRS 3.0 ``lcm:SubmitObjectsRequest`` describing the documents of a submission.

One ``rim:RegistryPackage`` (the SubmissionSet) and one ``rim:ExtrinsicObject`` (DocumentEntry) per document,
with the XDS attributes of cisis-facts §4.1 / §4.2, the French HL7v2 datatype formats of §4.3 (XCN, XON, CX) and
the ``URI`` slot that XDM (ITI-32) adds to point at the file inside the subset folder [§8]. Classification and
identification schemes are the standard IHE XDS UUIDs (checked against the corpus, DRIM-M and IPF examples).

An element whose value is unknown is omitted, never emitted empty.

Assumption (cisis-facts §7.3, marked [B]): for a replacement or deletion mailed over MSSanté the volet asks for
an XDM "extra metadata" ``action`` = ``C`` / ``D`` but gives neither its name nor its syntax. IHE extra metadata
must be a slot whose name is a URN outside ``urn:ihe:``; this module writes it on every DocumentEntry as the slot
:data:`ACTION_SLOT` (``urn:asip:ci-sis:xdm:action``) with one value ``C`` or ``D``. Nothing is written for an
initial submission. Change the constant if ANS publishes the name.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from gateway.delivery.dmp import dsg
from gateway.delivery.dmp.payload import CONTENT_TYPE_BY_PATIENT_CLASS
from gateway.model import (
    Author,
    Code,
    Document,
    DocumentAction,
    DocumentSubmission,
    Organization,
    PatientIdentity,
    Person,
)

LCM_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RIM_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
_NSMAP = {"lcm": LCM_NS, "rim": RIM_NS}

#: The extra-metadata slot carrying the MSSanté action (assumed name, see the module docstring).
ACTION_SLOT = "urn:asip:ci-sis:xdm:action"
ACTION_VALUES = {DocumentAction.REPLACEMENT: "C", DocumentAction.DELETION: "D"}

# Standard IHE XDS UUIDs (ITI TF-3 4.2.5).
DOCUMENT_ENTRY_OBJECT_TYPE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
SUBMISSION_SET_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_CLASS_CODE = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_CONFIDENTIALITY_CODE = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_FACILITY_TYPE_CODE = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
DE_PRACTICE_SETTING_CODE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_TYPE_CODE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE_CODE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"

#: TRE_R209 "Type d'activité" (contentTypeCode) [§1, §4.2].
CONTENT_TYPE_SYSTEM = "1.2.250.1.213.2.2"
#: Assigning authorities of IdNat_PS and IdNat_Struct [§4.3].
IDNAT_PS_OID = "1.2.250.1.71.4.2.1"
IDNAT_STRUCT_OID = "1.2.250.1.71.4.2.2"


def _rim(tag: str) -> str:
    return f"{{{RIM_NS}}}{tag}"


def _join(*components: str | None) -> str:
    """HL7v2 components joined with ``^``, trailing empty components dropped."""
    return "^".join(c or "" for c in components).rstrip("^")


def patient_cx(ins: str | None, oid: str | None, id_type: str = "NH") -> str | None:
    """CX ``<id>^^^&<OID>&ISO^<type>`` [§4.3]; ``None`` when either part is missing."""
    return f"{ins}^^^&{oid}&ISO^{id_type}" if ins and oid else None


def xcn(person: Person | None) -> str | None:
    """XCN [§4.3]: ``<id>^<family>^<given>^^^<prefix>^^^&<OID>&ISO^D^^^<type>``."""
    if person is None or not (person.id or person.family):
        return None
    authority = f"&{person.id_authority or IDNAT_PS_OID}&ISO" if person.id else None
    id_type = (person.id_type or "IDNPS") if person.id else None
    return _join(
        person.id, person.family, person.given, None, None, person.prefix, None, None, authority, "D",
        None, None, id_type,
    )  # fmt: skip


def xon(org: Organization | None) -> str | None:
    """XON [§4.3]: ``<name>^^^^^&<OID>&ISO^<type>^^^<id>``."""
    if org is None or not (org.name or org.id):
        return None
    if not org.id:
        return org.name
    authority = f"&{org.id_authority or IDNAT_STRUCT_OID}&ISO"
    return _join(org.name, None, None, None, None, authority, org.id_type or "IDNST", None, None, org.id)


def _cwe(code: Code | None) -> str | None:
    return _join(code.code, code.display, code.code_system) if code and code.code else None


class _Builder:
    def __init__(self) -> None:
        self._counter = 0

    def next_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter:02d}"

    @staticmethod
    def slot(parent: etree._Element, name: str, values: Iterable[str | None]) -> None:
        kept = [v for v in values if v]
        if not kept:
            return
        slot = etree.SubElement(parent, _rim("Slot"), name=name)
        value_list = etree.SubElement(slot, _rim("ValueList"))
        for value in kept:
            etree.SubElement(value_list, _rim("Value")).text = value

    @staticmethod
    def name(parent: etree._Element, value: str | None, lang: str | None = None) -> None:
        if not value:
            return
        attrs = {"value": value}
        if lang:
            attrs["{http://www.w3.org/XML/1998/namespace}lang"] = lang
        etree.SubElement(etree.SubElement(parent, _rim("Name")), _rim("LocalizedString"), attrs)

    def classification(self, parent: etree._Element, scheme: str, owner: str, node: str) -> etree._Element:
        """An ebRIM Classification of ``owner`` under ``scheme`` (node "" for author-style classifications)."""
        return etree.SubElement(
            parent,
            _rim("Classification"),
            id=self.next_id("cl"),
            classificationScheme=scheme,
            classifiedObject=owner,
            nodeRepresentation=node,
        )

    def coded(self, parent: etree._Element, scheme: str, owner: str, code: Code | None) -> None:
        if code is None or not code.code:
            return
        cl = self.classification(parent, scheme, owner, code.code)
        self.slot(cl, "codingScheme", [code.code_system])
        self.name(cl, code.display)

    def author(
        self,
        parent: etree._Element,
        scheme: str,
        owner: str,
        person: Person | None,
        org: Organization | None,
        role: Code | None = None,
        specialty: Code | None = None,
    ) -> None:
        values = {
            "authorPerson": xcn(person),
            "authorInstitution": xon(org),
            "authorRole": _cwe(role),
            "authorSpecialty": _cwe(specialty),
        }
        if not any(values.values()):
            return
        cl = self.classification(parent, scheme, owner, "")
        for slot_name, value in values.items():
            self.slot(cl, slot_name, [value])

    def external_id(
        self, parent: etree._Element, scheme: str, owner: str, value: str | None, label: str
    ) -> None:
        if not value:
            return
        ei = etree.SubElement(
            parent,
            _rim("ExternalIdentifier"),
            id=self.next_id("ei"),
            registryObject=owner,
            identificationScheme=scheme,
            value=value,
        )
        self.name(ei, label)


def _patient_id(patient: PatientIdentity) -> str | None:
    if patient.ins_present:
        return patient_cx(patient.ins, patient.ins_oid)
    if patient.ipp and patient.ipp.extension:
        return patient_cx(patient.ipp.extension, patient.ipp.root, "PI")
    return None


def _source_patient_id(patient: PatientIdentity) -> str | None:
    if patient.ipp and patient.ipp.extension:
        return patient_cx(patient.ipp.extension, patient.ipp.root, "PI")
    return _patient_id(patient)


def _source_patient_info(patient: PatientIdentity) -> list[str | None]:
    """``PID-5|NOM^Prénom^^^^^L``, ``PID-7|YYYYMMDD``, ``PID-8|M``, ``PID-11|^^^^^^BDL^^<COG>`` [§4.1]."""
    name = patient.birth_family_name or patient.used_family_name
    return [
        f"PID-5|{_join(name, patient.first_given_name, None, None, None, None, 'L')}" if name else None,
        f"PID-7|{patient.birth_date}" if patient.birth_date else None,
        f"PID-8|{patient.sex}" if patient.sex else None,
        f"PID-11|^^^^^^BDL^^{patient.birthplace_cog}" if patient.birthplace_cog else None,
    ]


def _document_entry(
    b: _Builder,
    parent: etree._Element,
    sub: DocumentSubmission,
    doc: Document,
    entry_id: str,
    uri: str | None,
    *,
    mssante_action: bool,
) -> None:
    md = doc.metadata
    eo = etree.SubElement(
        parent,
        _rim("ExtrinsicObject"),
        id=entry_id,
        mimeType=md.mime_type or doc.content.media_type,
        objectType=DOCUMENT_ENTRY_OBJECT_TYPE,
    )
    b.slot(eo, "creationTime", [md.creation_time])
    b.slot(eo, "hash", [doc.content.sha1])
    b.slot(eo, "languageCode", [md.language_code])
    b.slot(eo, "legalAuthenticator", [xcn(md.legal_authenticator)])
    b.slot(eo, "serviceStartTime", [md.service_start])
    b.slot(eo, "serviceStopTime", [md.service_stop])
    b.slot(eo, "size", [str(doc.content.size)])
    b.slot(eo, "sourcePatientId", [_source_patient_id(sub.patient)])
    b.slot(eo, "sourcePatientInfo", _source_patient_info(sub.patient))
    b.slot(eo, "URI", [uri])
    if mssante_action:
        b.slot(eo, ACTION_SLOT, [ACTION_VALUES.get(sub.action)])
    b.name(eo, md.title, md.language_code)
    authors: list[Author] = md.authors
    for author in authors:
        b.author(
            eo, DE_AUTHOR, entry_id, author.person, author.organization, author.function, author.specialty
        )
    b.coded(eo, DE_CLASS_CODE, entry_id, md.class_code)
    for code in md.confidentiality:
        b.coded(eo, DE_CONFIDENTIALITY_CODE, entry_id, code)
    b.coded(eo, DE_FORMAT_CODE, entry_id, md.format_code)
    b.coded(eo, DE_FACILITY_TYPE_CODE, entry_id, md.healthcare_facility_type)
    b.coded(eo, DE_PRACTICE_SETTING_CODE, entry_id, md.practice_setting)
    b.coded(eo, DE_TYPE_CODE, entry_id, md.type_code or sub.type_code)
    b.external_id(eo, DE_PATIENT_ID, entry_id, _patient_id(sub.patient), "XDSDocumentEntry.patientId")
    b.external_id(eo, DE_UNIQUE_ID, entry_id, md.unique_id, "XDSDocumentEntry.uniqueId")


@dataclass(frozen=True, slots=True)
class SignatureEntry:
    """The DocumentEntry of the submission set's signature (IHE DSG, as in the DMP's DRIM-M request): the fixed
    codes come from IHE DSG; ``hash`` / ``size`` are those of the signature document itself."""

    hash: str
    size: int
    creation_time: str
    unique_id: str  # an OID of its own; DRIM-M uses the 2.25.<UUID as an integer> form (``oid_from_uuid``)
    entry_id: str = "Signature01"
    title: str = "Source"


# The DSG codes of the signature entry live with the signature (dmp/dsg.py).
SIGNATURE_CLASS = dsg.SIGNATURE_CLASS_CODE
SIGNATURE_TYPE = dsg.SIGNATURE_TYPE_CODE
SIGNATURE_FORMAT = dsg.SIGNATURE_FORMAT_CODE
SIGNATURE_EVENT = dsg.SIGNATURE_EVENT_CODE
DE_EVENT_CODE = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
SIGNS = dsg.SIGNS_ASSOCIATION
REPLACES = "urn:ihe:iti:2007:AssociationType:RPLC"


def oid_from_uuid(value: uuid.UUID | None = None) -> str:
    """An OID under the ITU-T 2.25 arc from a UUID (X.667), as the DMP's DRIM-M request names its signature."""
    return f"2.25.{(value or uuid.uuid4()).int}"


def _signature_entry(
    b: _Builder, parent: etree._Element, sub: DocumentSubmission, sig: SignatureEntry
) -> None:
    """Like the DRIM-M request: the signed documents' patient, confidentiality, facility and practice setting,
    the sender as author, the DSG codes."""
    first = sub.documents[0].metadata
    eo = etree.SubElement(
        parent,
        _rim("ExtrinsicObject"),
        id=sig.entry_id,
        mimeType="text/xml",
        objectType=DOCUMENT_ENTRY_OBJECT_TYPE,
    )
    b.slot(eo, "creationTime", [sig.creation_time])
    b.slot(eo, "hash", [sig.hash])
    b.slot(eo, "languageCode", [dsg.SIGNATURE_LANGUAGE_CODE])
    b.slot(eo, "legalAuthenticator", [xcn(first.legal_authenticator)])
    b.slot(eo, "serviceStartTime", [sig.creation_time])
    b.slot(eo, "serviceStopTime", [sig.creation_time])
    b.slot(eo, "size", [str(sig.size)])
    b.slot(eo, "sourcePatientId", [_source_patient_id(sub.patient)])
    b.name(eo, sig.title)
    if sub.sender is not None:
        b.author(eo, DE_AUTHOR, sig.entry_id, sub.sender.person, sub.sender.organization)
    b.coded(eo, DE_CLASS_CODE, sig.entry_id, SIGNATURE_CLASS)
    for code in first.confidentiality:
        b.coded(eo, DE_CONFIDENTIALITY_CODE, sig.entry_id, code)
    b.coded(eo, DE_EVENT_CODE, sig.entry_id, SIGNATURE_EVENT)
    b.coded(eo, DE_FORMAT_CODE, sig.entry_id, SIGNATURE_FORMAT)
    b.coded(eo, DE_FACILITY_TYPE_CODE, sig.entry_id, first.healthcare_facility_type)
    b.coded(eo, DE_PRACTICE_SETTING_CODE, sig.entry_id, first.practice_setting)
    b.coded(eo, DE_TYPE_CODE, sig.entry_id, SIGNATURE_TYPE)
    b.external_id(eo, DE_PATIENT_ID, sig.entry_id, _patient_id(sub.patient), "XDSDocumentEntry.patientId")
    b.external_id(eo, DE_UNIQUE_ID, sig.entry_id, sig.unique_id, "XDSDocumentEntry.uniqueId")


def build_submit_objects_request(
    sub: DocumentSubmission,
    *,
    submission_unique_id: str,
    source_id: str,
    submission_time: str,
    uris: list[str] | None = None,
    mssante_action: bool = False,
    replaced_entry_uuid: str | None = None,
    signature: SignatureEntry | None = None,
) -> tuple[etree._Element, list[str]]:
    """The ebRS ``lcm:SubmitObjectsRequest`` of ``sub`` and its DocumentEntry ids (``Document01``...), shared by
    XDM (ITI-32: ``uris`` gives each document's file name, the MSSanté ``action`` slot) and ITI-41 (no URI; an
    RPLC association to ``replaced_entry_uuid`` for a replacement; the DSG ``signature`` entry and its
    ``signs`` association). Transport-free: the caller wraps it (zip, SOAP)."""
    if uris is not None and len(uris) != len(sub.documents):
        raise ValueError(f"{len(uris)} URIs for {len(sub.documents)} documents")
    if not sub.documents:
        raise ValueError("a submission without documents has no XDS metadata")
    b = _Builder()
    root = etree.Element(f"{{{LCM_NS}}}SubmitObjectsRequest", nsmap=_NSMAP)
    objects = etree.SubElement(root, _rim("RegistryObjectList"))
    ss_id = "SubmissionSet01"
    entry_ids = [f"Document{i:02d}" for i in range(1, len(sub.documents) + 1)]

    package = etree.SubElement(objects, _rim("RegistryPackage"), id=ss_id)
    b.slot(package, "submissionTime", [submission_time])
    sender = sub.sender
    if sender is not None:
        b.author(package, SS_AUTHOR, ss_id, sender.person, sender.organization)
    content_type = CONTENT_TYPE_BY_PATIENT_CLASS.get((sub.patient_class or "").upper())
    if content_type:
        b.coded(
            package, SS_CONTENT_TYPE_CODE, ss_id, Code(code=content_type, code_system=CONTENT_TYPE_SYSTEM)
        )
    b.external_id(package, SS_UNIQUE_ID, ss_id, submission_unique_id, "XDSSubmissionSet.uniqueId")
    b.external_id(package, SS_SOURCE_ID, ss_id, source_id, "XDSSubmissionSet.sourceId")
    b.external_id(package, SS_PATIENT_ID, ss_id, _patient_id(sub.patient), "XDSSubmissionSet.patientId")
    etree.SubElement(
        objects,
        _rim("Classification"),
        id=b.next_id("cl"),
        classifiedObject=ss_id,
        classificationNode=SUBMISSION_SET_NODE,
    )

    for n, (doc, entry_id) in enumerate(zip(sub.documents, entry_ids, strict=True)):
        _document_entry(
            b,
            objects,
            sub,
            doc,
            entry_id,
            uris[n] if uris is not None else None,
            mssante_action=mssante_action,
        )
    if signature is not None:
        _signature_entry(b, objects, sub, signature)

    def associate(kind: str, source: str, target: str, status: str | None = None) -> None:
        assoc = etree.SubElement(
            objects, _rim("Association"), id=b.next_id("as"), associationType=kind, sourceObject=source,
            targetObject=target,
        )  # fmt: skip
        if status:
            b.slot(assoc, "SubmissionSetStatus", [status])

    for entry_id in entry_ids:
        associate(HAS_MEMBER, ss_id, entry_id, "Original")
    if replaced_entry_uuid is not None:
        associate(REPLACES, entry_ids[0], replaced_entry_uuid)
    if signature is not None:
        associate(HAS_MEMBER, ss_id, signature.entry_id, "Original")
        associate(SIGNS, signature.entry_id, ss_id)
    return root, entry_ids


def submit_objects_request(
    sub: DocumentSubmission,
    *,
    uris: list[str],
    submission_unique_id: str,
    source_id: str,
    submission_time: str,
) -> bytes:
    """The XDM ``METADATA.XML`` of ``sub``: ``uris[i]`` is the file name of ``sub.documents[i]`` in its subset."""
    root, _ = build_submit_objects_request(
        sub,
        submission_unique_id=submission_unique_id,
        source_id=source_id,
        submission_time=submission_time,
        uris=uris,
        mssante_action=True,
    )
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
