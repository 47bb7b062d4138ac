"""The PDSm alternative to the DMP's XDS.b: an IHE MHD ITI-65 Provide Document Bundle written from the canonical
:class:`DocumentSubmission` (cisis-facts §4, §6), and the FHIRPath Patch that deletes a document (Flux 03).

Layout follows the PDSm 3.1.1 profiles and the PDSM4DMP examples (``Bundle-example-td2-1-remplacement``):

* ``Bundle`` (``pdsm-comprehensive-provide-document-bundle``, ``transaction``), every entry with a ``urn:uuid:``
  fullUrl and a ``request``: one ``List`` SubmissionSet, one ``DocumentReference`` + one ``Binary`` per document
  and, for a replacement, one ``Parameters`` FHIRPath Patch (slice ``UpdateDocumentRefs``, IHE.MHD.Patch.Parameters)
  setting the replaced DocumentReference to ``superseded`` as PDSM4DMP TD2.1 shows;
* the reverse of ``gateway.formats.fhir`` (the PDSm reader): anything the reader maps back is written where the
  reader looks for it, so that ``read_pdsm(build_iti65_bundle(sub))`` gives ``sub`` back (tests/test_pdsm_bundle.py).

Mapping decisions (where the reader, PDSm and PDSM4DMP disagree or say nothing):

* uniqueId -> ``masterIdentifier`` = ``urn:ietf:rfc:3986`` | ``urn:oid:<uniqueId>`` (``urn:uuid:`` for a UUID
  uniqueId, original case kept: the DMP compares uniqueIds as strings). A ``root^extension`` uniqueId is written
  ``urn:oid:root^extension`` because that is what the reader parses back; it is not a valid URI, but the DMP does
  not accept ``OID^extension`` uniqueIds anyway (cisis-facts §4.1).
* entryUUID -> ``identifier`` (use ``official``, ``urn:uuid:``) equal to the entry's fullUrl, as MHD does; PDSM4DMP
  maps entryUUID to ``DocumentReference.id``, which the registry assigns, so no ``id`` is sent.
* subject -> conditional reference ``Patient?identifier=urn:oid:<INS OID>|<INS>`` (PDSM4DMP, what the reader
  parses) plus the same INS as ``Reference.identifier`` for servers that resolve logical references.
* classCode (``category``) and formatCode (``content.format``) are required by PDSm but the canonical model often
  lacks them: ASS_X04 (typeCode -> classCode) and ASS_A11 (templateId -> formatCode) are not shipped (cisis-facts
  §11). The caller may pass ``class_code_for`` / ``format_code_for``; when a value is still missing the build fails
  with :class:`PdsmBuildError` rather than send a Bundle the registry must refuse.
* author -> contained resources within the targets the profile allows (as-practitioner, as-practitionerrole,
  Device, Patient): person + organisation -> ``PractitionerRole`` (practitioner, organization, specialty = author
  specialty, code = functionCode); person alone -> ``Practitioner``; organisation alone -> ``PractitionerRole``
  with only ``organization`` (Organization is not an allowed author target); device -> ``Device``.
* custodian (1..1, "sent in the VIHF in XDS") -> the VIHF's structure: the sender's organisation (PRT-8 of the SB
  PRT), else the first author's organisation.
* SubmissionSet ``source`` (1..1) -> the sender (PRT SB) as a contained PractitionerRole / Device / Patient, else
  the first author; ``ihe-designationType`` = contentTypeCode from PV1-2 (TRE_R209, the transmission volet's
  mapping, shared with the DMP payload); uniqueId = ``2.25.<uuid as integer>`` (ITU-T X.667 OID from a UUID).
* securityLabel -> the document's confidentiality codes then one label per masking flag set to Y (``MASQUE_PS``,
  ``INVISIBLE_PATIENT``, ``INVISIBLE_REPRESENTANTS_LEGAUX`` @TRE_A07), as the DMP payload does.
* dates: HL7 DTM -> FHIR; a time without a zone is read as Europe/Paris time (FHIR requires the zone once a time
  is given and the senders are French systems); ``date`` (an instant) of a day-only DTM gets 00:00:00.
* relatesTo (replacement) is written on the first document only: an ORU's N1 + N3 pair are two renderings of one
  document and the replaced uniqueId names one DocumentReference.
* deletion: see :func:`build_deletion_patch`.

The Bundle is validated with the fhir.resources **R4B** models (PDSm is FHIR 4.0.1 and fhir.resources 8 has no
R4 models for pydantic 2; the default package is R5, whose DocumentReference has no masterIdentifier).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from gateway.delivery.dmp.payload import CONTENT_TYPE_BY_PATIENT_CLASS
from gateway.delivery.mssante.xdm_metadata import CONTENT_TYPE_SYSTEM, IDNAT_PS_OID, IDNAT_STRUCT_OID
from gateway.formats.fhir.common import SYSTEM_OIDS
from gateway.formats.fhir.pdsm import DESIGNATION_URL, SOURCE_ID_URL
from gateway.model import (
    Author,
    Code,
    Document,
    DocumentAction,
    DocumentSubmission,
    Organization,
    Participant,
    PatientIdentity,
    Person,
)

PDSM = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
BUNDLE_PROFILE = PDSM + "pdsm-comprehensive-provide-document-bundle"
SUBMISSIONSET_PROFILE = PDSM + "pdsm-submissionset-comprehensive"
DOCREF_PROFILE = PDSM + "pdsm-comprehensive-document-reference"
#: Extension of the post-3.1.1 PDSm draft (st_maj.md "Suppression logique d'une fiche"), absent from 3.1.1.
IS_DELETED_URL = PDSM + "pdsm-ext-is-deleted"
MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
URI_SYSTEM = "urn:ietf:rfc:3986"
#: Masking codes (TRE_A07, J08) in their XDS spelling, and the MetaFlags field that sets each [§4.1].
MASKING_SYSTEM = "1.2.250.1.213.1.1.4.13"
MASKING_FLAGS = (
    ("MASQUE_PS", "masque_ps"),
    ("INVISIBLE_PATIENT", "invisible_patient"),
    ("INVISIBLE_REPRESENTANTS_LEGAUX", "invisible_rep_legaux"),
)
#: HL7 v2 table names seen in OBR-4 / TXA-2 codes -> FHIR systems.
HL7_TABLE_SYSTEMS = {"LN": "http://loinc.org", "SCT": "http://snomed.info/sct"}
#: OID -> the FHIR URI the PDSm examples use (inverse of the reader's table, so the reader maps it back).
URI_BY_OID = {oid: uri for uri, oid in SYSTEM_OIDS.items()}
PARIS = ZoneInfo("Europe/Paris")
GENDER = {"M": "male", "F": "female", "U": "unknown", "O": "other", "A": "other"}

_OID = re.compile(r"^[0-2](\.(0|[1-9]\d*))+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(?:(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,9}))?)?(Z|[+-]\d{4})?$")

CodeFor = Callable[[Document], Code | None]


class PdsmBuildError(ValueError):
    """The submission lacks what PDSm requires; ``problems`` lists each missing element (no patient data)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class DeletionStyle(StrEnum):
    """How a deletion is written (see :func:`build_deletion_patch`)."""

    #: PDSM4DMP TD3.3c: ``status`` = ``entered-in-error``.
    PDSM4DMP = "pdsm4dmp"
    #: PDSm draft after 3.1.1 (st_maj.md): ``status`` = ``superseded`` + extension ``pdsm-ext-is-deleted`` = true.
    PDSM_IS_DELETED = "pdsm-is-deleted"


# --------------------------------------------------------------------------------------------------- values


def fhir_system(code_system: str | None) -> str | None:
    """A FHIR system URI for a canonical code system (OID, URI or HL7 table name)."""
    if not code_system:
        return None
    if code_system in URI_BY_OID:
        return URI_BY_OID[code_system]
    if _OID.match(code_system):
        return f"urn:oid:{code_system}"
    return HL7_TABLE_SYSTEMS.get(code_system.upper(), code_system)


def coding(code: Code) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if system := fhir_system(code.code_system):
        out["system"] = system
    out["code"] = code.code
    if code.display:
        out["display"] = code.display
    return out


def concept(code: Code) -> dict[str, Any]:
    return {"coding": [coding(code)]}


def identifier_urn(value: str) -> str:
    """``urn:oid:`` / ``urn:uuid:`` form of an OID or UUID identifier (left alone when already a URN)."""
    if value.startswith("urn:"):
        return value
    return f"urn:uuid:{value}" if _UUID.match(value) else f"urn:oid:{value}"


def uri_identifier(value: str, use: str | None = None) -> dict[str, Any]:
    ident: dict[str, Any] = {"system": URI_SYSTEM, "value": identifier_urn(value)}
    return {"use": use, **ident} if use else ident


def fhir_datetime(dtm: str | None, *, instant: bool = False) -> str | None:
    """HL7 DTM (``20210104160527+0100``) -> FHIR dateTime/instant (``2021-01-04T16:05:27+01:00``).

    A time without a zone is Europe/Paris time; an instant needs a full time, so a bare day gets 00:00:00 there.
    A value that is not a DTM is returned unchanged (FHIR validation then says what is wrong with it)."""
    if not dtm:
        return None
    m = _DTM.match(dtm)
    if not m:
        return dtm
    year, month, day, hh, mm, ss, frac, tz = m.groups()
    if not hh and not instant:
        return "-".join(p for p in (year, month, day) if p)
    if not (month and day):
        return dtm  # a time on a partial date is not a DTM FHIR can carry
    naive = datetime(int(year), int(month), int(day), int(hh or 0), int(mm or 0), int(ss or 0))
    offset = {None: naive.replace(tzinfo=PARIS).strftime("%z"), "Z": "+0000"}.get(tz, tz)
    text = naive.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "")
    return f"{text}{offset[:3]}:{offset[3:]}"


def _sha1_base64(doc: Document) -> str:
    # Content.sha1 is the XDS hex form; FHIR Attachment.hash is base64 of the 20 bytes.
    return base64.b64encode(bytes.fromhex(doc.content.sha1)).decode("ascii")


# ------------------------------------------------------------------------------------- contained resources


def _practitioner(person: Person, rid: str) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Practitioner", "id": rid}
    if person.id:
        res["identifier"] = [{"system": f"urn:oid:{person.id_authority or IDNAT_PS_OID}", "value": person.id}]
    name: dict[str, Any] = {}
    if person.family:
        name["family"] = person.family
    if person.given:
        name["given"] = [person.given]
    if person.prefix:
        name["prefix"] = [person.prefix]
    if name:
        res["name"] = [name]
    return res


def _organization(org: Organization, rid: str) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Organization", "id": rid}
    if org.id:
        res["identifier"] = [{"system": f"urn:oid:{org.id_authority or IDNAT_STRUCT_OID}", "value": org.id}]
    if org.name:
        res["name"] = org.name
    return res


def _device(name: str, rid: str, owner: str | None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Device",
        "id": rid,
        "deviceName": [{"name": name, "type": "model-name"}],
    }
    if owner:
        res["owner"] = {"reference": f"#{owner}"}
    return res


def _ins_patient(patient: PatientIdentity, rid: str) -> dict[str, Any]:
    """A contained FR Core Patient: INS (and IPP) with the INS traits; the sourcePatientInfo of XDS [§4.1]."""
    res: dict[str, Any] = {"resourceType": "Patient", "id": rid, "identifier": []}
    if patient.ins_present:
        res["identifier"].append({"system": f"urn:oid:{patient.ins_oid}", "value": patient.ins})
    if patient.ipp and patient.ipp.extension:
        res["identifier"].append(
            {"use": "usual", "system": f"urn:oid:{patient.ipp.root}", "value": patient.ipp.extension}
        )
    family = patient.birth_family_name or patient.used_family_name
    given = (patient.given_names or "").split() or (
        [patient.first_given_name] if patient.first_given_name else []
    )
    if family or given:
        name: dict[str, Any] = {"use": "official"}
        if family:
            name["family"] = family
        if given:
            name["given"] = given
        res["name"] = [name]
    if patient.sex and patient.sex.upper() in GENDER:
        res["gender"] = GENDER[patient.sex.upper()]
    if patient.birth_date and len(patient.birth_date) >= 8:
        b = patient.birth_date
        res["birthDate"] = f"{b[:4]}-{b[4:6]}-{b[6:8]}"
    if not res["identifier"]:
        del res["identifier"]
    return res


class _Contained:
    """The ``contained`` list of one resource, with stable local ids (``#author-1``...)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, resource: dict[str, Any]) -> dict[str, str]:
        self.items.append(resource)
        return {"reference": f"#{resource['id']}"}

    def author(self, author: Author, rid: str) -> dict[str, str] | None:
        person, org = author.person, author.organization
        if author.device:
            owner = None
            if org is not None:
                owner = self.add(_organization(org, f"{rid}-organization"))["reference"][1:]
            return self.add(_device(author.device, rid, owner))
        if person is not None and org is None and author.specialty is None and author.function is None:
            return self.add(_practitioner(person, rid))
        if person is None and org is None:
            return None
        role: dict[str, Any] = {"resourceType": "PractitionerRole", "id": rid}
        if person is not None:
            role["practitioner"] = self.add(_practitioner(person, f"{rid}-practitioner"))
        if org is not None:
            role["organization"] = self.add(_organization(org, f"{rid}-organization"))
        if author.function is not None:
            role["code"] = [concept(author.function)]
        if author.specialty is not None:
            role["specialty"] = [concept(author.specialty)]
        return self.add(role)

    def participant(self, who: Participant, rid: str) -> dict[str, str] | None:
        """The SubmissionSet source: PractitionerRole, Device or Patient (the profile's allowed targets)."""
        if who.device and who.person is None:
            return self.author(Author(device=who.device, organization=who.organization), rid)
        if who.person is not None and (who.person.id_type or "").upper() == "INS":
            # A patient sending his own document: PRT-5.13 = INS carries his INS and its OID.
            patient = PatientIdentity(ins=who.person.id, ins_oid=who.person.id_authority)
            return self.add(_ins_patient(patient, rid))
        if who.person is None and who.organization is None:
            return None
        # Not a bare Practitioner: List.source does not allow as-practitioner.
        role: dict[str, Any] = {"resourceType": "PractitionerRole", "id": rid}
        if who.person is not None:
            role["practitioner"] = self.add(_practitioner(who.person, f"{rid}-practitioner"))
        if who.organization is not None:
            role["organization"] = self.add(_organization(who.organization, f"{rid}-organization"))
        return self.add(role)


# ------------------------------------------------------------------------------------------------ builders


def _patient_reference(patient: PatientIdentity) -> dict[str, Any]:
    return {
        "reference": f"Patient?identifier=urn:oid:{patient.ins_oid}|{patient.ins}",
        "type": "Patient",
        "identifier": {"system": f"urn:oid:{patient.ins_oid}", "value": patient.ins},
    }


def _security_labels(sub: DocumentSubmission, doc: Document) -> list[dict[str, Any]]:
    labels = [concept(c) for c in doc.metadata.confidentiality]
    present = {c.code for c in doc.metadata.confidentiality}
    for code, flag in MASKING_FLAGS:
        if getattr(sub.flags, flag) and code not in present:
            labels.append(concept(Code(code=code, code_system=MASKING_SYSTEM)))
    return labels


def _custodian(sub: DocumentSubmission, doc: Document) -> Organization | None:
    if sub.sender is not None and sub.sender.organization is not None:
        return sub.sender.organization
    return next((a.organization for a in doc.metadata.authors if a.organization is not None), None)


def _document_reference(
    sub: DocumentSubmission,
    doc: Document,
    index: int,
    entry_uuid: str,
    binary_url: str,
    class_code_for: CodeFor | None,
    format_code_for: CodeFor | None,
    problems: list[str],
) -> dict[str, Any]:
    md = doc.metadata
    where = f"documents[{index}]"
    contained = _Contained()
    authors = [ref for i, a in enumerate(md.authors, 1) if (ref := contained.author(a, f"author-{i}"))]
    if not authors:
        problems.append(f"{where}: no author (DocumentReference.author 1..*)")
    custodian_org = _custodian(sub, doc)
    custodian = contained.add(_organization(custodian_org, "custodian")) if custodian_org else None
    if custodian is None:
        problems.append(f"{where}: no custodian organisation (sender PRT-8 or author organisation)")
    authenticator = (
        contained.add(_practitioner(md.legal_authenticator, "legal-authenticator"))
        if md.legal_authenticator
        else None
    )
    source_patient = contained.add(_ins_patient(sub.patient, "source-patient"))

    type_code = md.type_code or sub.type_code
    class_code = md.class_code or (class_code_for(doc) if class_code_for else None)
    format_code = md.format_code or (format_code_for(doc) if format_code_for else None)
    for value, what in (
        (type_code, "typeCode (DocumentReference.type)"),
        (class_code, "classCode (DocumentReference.category; ASS_X04 not shipped: pass class_code_for)"),
        (format_code, "formatCode (content.format; ASS_A11 not shipped: pass format_code_for)"),
        (md.healthcare_facility_type, "healthcareFacilityTypeCode (context.facilityType)"),
        (md.practice_setting, "practiceSettingCode (context.practiceSetting)"),
        (md.service_start, "serviceStartTime (context.period.start)"),
        (md.creation_time, "creationTime (DocumentReference.date)"),
        (md.title, "title (content.attachment.title)"),
    ):
        if not value:
            problems.append(f"{where}: no {what}")

    content_type = md.mime_type or doc.content.media_type
    attachment: dict[str, Any] = {"contentType": content_type}
    if md.language_code:
        attachment["language"] = md.language_code
    attachment |= {"url": binary_url, "size": doc.content.size, "hash": _sha1_base64(doc)}
    if md.title:
        attachment["title"] = md.title
    if md.creation_time:
        attachment["creation"] = fhir_datetime(md.creation_time)
    content: dict[str, Any] = {"attachment": attachment}
    if format_code:
        content["format"] = coding(format_code)

    context: dict[str, Any] = {}
    if md.service_start:
        context["period"] = {"start": fhir_datetime(md.service_start)}
        if md.service_stop:
            context["period"]["end"] = fhir_datetime(md.service_stop)
    if md.healthcare_facility_type:
        context["facilityType"] = concept(md.healthcare_facility_type)
    if md.practice_setting:
        context["practiceSetting"] = concept(md.practice_setting)
    context["sourcePatientInfo"] = source_patient

    dr: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "meta": {"profile": [DOCREF_PROFILE]},
        "contained": contained.items,
        "masterIdentifier": uri_identifier(md.unique_id),
        "identifier": [uri_identifier(entry_uuid, "official")],
        "status": "current",
    }
    if type_code:
        dr["type"] = concept(type_code)
    if class_code:
        dr["category"] = [concept(class_code)]
    dr["subject"] = _patient_reference(sub.patient)
    if md.creation_time:
        dr["date"] = fhir_datetime(md.creation_time, instant=True)
    dr["author"] = authors
    if authenticator:
        dr["authenticator"] = authenticator
    if custodian:
        dr["custodian"] = custodian
    if index == 0 and sub.action is DocumentAction.REPLACEMENT:
        replaced = sub.replaced_document_id or (
            md.replaced_document_id.xds_unique_id() if md.replaced_document_id else None
        )
        if replaced:
            # Logical reference by business identifier: the registry's id (entryUUID) of X is unknown here.
            dr["relatesTo"] = [
                {
                    "code": "replaces",
                    "target": {"type": "DocumentReference", "identifier": uri_identifier(replaced)},
                }
            ]
        else:
            problems.append(f"{where}: a replacement without the replaced document's uniqueId")
    dr["securityLabel"] = _security_labels(sub, doc)
    dr["content"] = [content]
    dr["context"] = context
    return dr


def _submission_set(
    sub: DocumentSubmission,
    *,
    now: datetime,
    source_id: str,
    set_uuid: UUID,
    docref_urls: list[str],
    problems: list[str],
) -> dict[str, Any]:
    contained = _Contained()
    source = contained.participant(sub.sender, "sender") if sub.sender is not None else None
    if source is None:
        first = next((a for d in sub.documents for a in d.metadata.authors), None)
        source = contained.author(first, "sender") if first is not None else None
    if source is None:
        problems.append("submission set: no sender (PRT SB) nor document author for List.source")
    content_type = CONTENT_TYPE_BY_PATIENT_CLASS.get((sub.patient_class or "").upper())
    if content_type is None:
        problems.append("submission set: no contentTypeCode (PV1-2 unknown) for ihe-designationType")
    extensions: list[dict[str, Any]] = []
    if content_type:
        extensions.append(
            {
                "url": DESIGNATION_URL,
                "valueCodeableConcept": concept(Code(code=content_type, code_system=CONTENT_TYPE_SYSTEM)),
            }
        )
    extensions.append({"url": SOURCE_ID_URL, "valueIdentifier": uri_identifier(source_id)})
    ss: dict[str, Any] = {
        "resourceType": "List",
        "meta": {"profile": [SUBMISSIONSET_PROFILE]},
        "contained": contained.items,
        "extension": extensions,
        "identifier": [
            uri_identifier(f"2.25.{set_uuid.int}", "usual"),  # uniqueId: an OID derived from the UUID
            uri_identifier(str(set_uuid), "official"),  # entryUUID
        ],
        "status": "current",
        "mode": "working",
        "code": {"coding": [{"system": MHD_LIST_TYPES, "code": "submissionset"}]},
        "subject": _patient_reference(sub.patient),
        "date": now.isoformat(timespec="seconds"),
    }
    if source is not None:
        ss["source"] = source
    ss["entry"] = [{"item": {"reference": url}} for url in docref_urls]
    return ss


def replaced_patch(unique_id: str, status: str = "superseded") -> tuple[str, dict[str, Any]]:
    """Conditional PATCH of the DocumentReference whose business identifier is ``unique_id`` (Flux 03): the
    request url and its FHIRPath Patch ``Parameters`` setting ``status``."""
    url = f"DocumentReference?identifier={URI_SYSTEM}|{identifier_urn(unique_id)}"
    return url, {
        "resourceType": "Parameters",
        "parameter": [_replace_operation("DocumentReference.status", {"valueCode": status})],
    }


def _replace_operation(path: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "operation",
        "part": [
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": path},
            {"name": "value", **value},
        ],
    }


def build_iti65_bundle(
    sub: DocumentSubmission,
    *,
    now: datetime,
    source_id: str,
    id_factory: Callable[[], UUID] = uuid4,
    class_code_for: CodeFor | None = None,
    format_code_for: CodeFor | None = None,
    patch_replaced: bool = True,
    validate: bool = True,
) -> dict[str, Any]:
    """The ITI-65 transaction Bundle (JSON-ready dict) of an initial submission or a replacement.

    ``now``: submission time (timezone-aware). ``source_id``: the gateway's OID (XDS sourceId). ``id_factory``:
    UUIDs for fullUrls / entryUUIDs / SubmissionSet uniqueId, in the order SubmissionSet, then per document its
    DocumentReference and Binary, then the replacement patch. ``class_code_for`` / ``format_code_for``: used when
    the canonical document has no classCode / formatCode. ``patch_replaced``: add the PATCH entry setting the
    replaced document to ``superseded`` (PDSM4DMP TD2.1). Raises :class:`PdsmBuildError` when PDSm-required data
    is missing (the job cannot succeed as is: a permanent failure) and for a deletion (use
    :func:`build_deletion_patch`)."""
    if sub.action is DocumentAction.DELETION:
        raise PdsmBuildError(["a deletion is not an ITI-65 submission: use build_deletion_patch"])
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    problems: list[str] = []
    if not sub.documents:
        problems.append("no document")
    if not sub.patient.ins_present:
        problems.append("patient: no INS (DocumentReference.subject)")
    if problems:
        raise PdsmBuildError(problems)

    set_uuid = id_factory()
    ids = [(id_factory(), id_factory()) for _ in sub.documents]
    docrefs = [
        _document_reference(
            sub, doc, i, str(dr_id), f"urn:uuid:{bin_id}", class_code_for, format_code_for, problems
        )
        for i, (doc, (dr_id, bin_id)) in enumerate(zip(sub.documents, ids, strict=True))
    ]
    docref_urls = [f"urn:uuid:{dr_id}" for dr_id, _ in ids]
    ss = _submission_set(
        sub, now=now, source_id=source_id, set_uuid=set_uuid, docref_urls=docref_urls, problems=problems
    )
    if problems:
        raise PdsmBuildError(problems)

    entries: list[dict[str, Any]] = [
        {"fullUrl": f"urn:uuid:{set_uuid}", "resource": ss, "request": {"method": "POST", "url": "List"}}
    ]
    for doc, dr, (dr_id, bin_id) in zip(sub.documents, docrefs, ids, strict=True):
        entries.append(
            {
                "fullUrl": f"urn:uuid:{dr_id}",
                "resource": dr,
                "request": {"method": "POST", "url": "DocumentReference"},
            }
        )
        entries.append(
            {
                "fullUrl": f"urn:uuid:{bin_id}",
                "resource": {
                    "resourceType": "Binary",
                    "contentType": dr["content"][0]["attachment"]["contentType"],
                    "data": base64.b64encode(doc.content.data).decode("ascii"),
                },
                "request": {"method": "POST", "url": "Binary"},
            }
        )
    relates = docrefs[0].get("relatesTo")
    if relates and patch_replaced:
        url, params = replaced_patch(relates[0]["target"]["identifier"]["value"])
        entries.append(
            {
                "fullUrl": f"urn:uuid:{id_factory()}",
                "resource": params,
                "request": {"method": "PATCH", "url": url},
            }
        )
    bundle = {
        "resourceType": "Bundle",
        "meta": {"profile": [BUNDLE_PROFILE]},
        "type": "transaction",
        "entry": entries,
    }
    if validate:
        validate_resource(bundle)
    return bundle


def build_deletion_patch(
    sub: DocumentSubmission, *, style: DeletionStyle = DeletionStyle.PDSM4DMP
) -> tuple[str, dict[str, Any]]:
    """PDSm Flux 03 for a deletion: ``(url, Parameters)`` to send as ``PATCH [base]/<url>`` with
    ``Content-Type: application/fhir+json`` — a *conditional* patch on the business identifier (the uniqueId of
    the deleted document; the registry's id is unknown to the gateway), in FHIRPath Patch, the one format every
    PDSm registry must accept.

    What to set is not settled (checked 2026): PDSM4DMP TD3.3c writes ``status`` = ``entered-in-error`` (with JSON
    Patch) and flags it as an open question, because MHD forbids ``entered-in-error``; PDSm 3.1.1 restricts
    Flux 03 to ``status`` / ``securityLabel`` / ``isArchived`` and says nothing of deletion; the PDSm draft after
    3.1.1 (st_maj.md, extension ``pdsm-ext-is-deleted`` not in the 3.1.1 package) asks for ``superseded`` plus
    ``isDeleted`` = true (added with ``add``) and forbids ``entered-in-error``. The default is the PDSM4DMP
    reading, the one written for the DMP; :attr:`DeletionStyle.PDSM_IS_DELETED` writes the draft's."""
    unique_id = sub.replaced_document_id if sub.primary is None else sub.primary.metadata.unique_id
    if not unique_id:
        raise PdsmBuildError(["deletion: no uniqueId of the document to delete"])
    if style is DeletionStyle.PDSM4DMP:
        url, params = replaced_patch(unique_id, "entered-in-error")
    else:
        url, params = replaced_patch(unique_id, "superseded")
        params["parameter"].append(
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "add"},
                    {"name": "path", "valueString": "DocumentReference"},
                    {"name": "name", "valueString": "extension"},
                    {
                        "name": "value",
                        "part": [
                            {"name": "url", "valueUri": IS_DELETED_URL},
                            {"name": "valueBoolean", "valueBoolean": True},
                        ],
                    },
                ],
            }
        )
    validate_resource(params)
    return url, params


def validate_resource(resource: dict[str, Any]) -> None:
    """Validate with the fhir.resources R4B model of ``resourceType``; :class:`PdsmBuildError` on failure."""
    from fhir.resources.R4B import get_fhir_model_class

    model = get_fhir_model_class(resource["resourceType"])
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        problems = [
            f"FHIR R4 (R4B model) {'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors()[:20]
        ]
        raise PdsmBuildError(problems) from exc


__all__ = [
    "BUNDLE_PROFILE",
    "DOCREF_PROFILE",
    "SUBMISSIONSET_PROFILE",
    "DeletionStyle",
    "PdsmBuildError",
    "build_deletion_patch",
    "build_iti65_bundle",
    "fhir_datetime",
    "replaced_patch",
    "validate_resource",
]
