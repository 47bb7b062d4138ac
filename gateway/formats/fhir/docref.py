"""One PDSm DocumentReference: its profile checks, its content (inline or a Bundle Binary), the CDA it may carry,
and its mapping to a canonical :class:`Document` (cisis-facts §6, PDSm_ComprehensiveDocumentReference)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.formats.cda.header import CdaHeader, CdaReadError, read_cda
from gateway.formats.fhir.common import (
    MASKING_CODES,
    codings,
    hl7_dtm,
    ins_identifier,
    organization_of,
    parse_conditional_ins,
    person_of,
    strip_urn,
    system_oid,
    to_code,
)
from gateway.model import (
    Author,
    Content,
    Document,
    DocumentMetadata,
    InstanceId,
    PatientIdentity,
)
from gateway.model.report import Severity, ValidationReport
from gateway.terminology import default_terminology

SOURCE = "PDSm 3.1.1 PDSm_ComprehensiveDocumentReference"
#: Attachment content types read as a CDA R2 document.
XML_TYPES = frozenset({"text/xml", "application/xml", "application/hl7-cda+xml", "application/xslt+xml"})
#: (path under the DocumentReference, JDV key, DMP JDV key, rule suffix) of the coded metadata.
CODED = (
    ("type", "J07", "J66", "TYPE"),
    ("category[0]", "J06", "J57", "CATEGORY"),
    ("content[0].format", "J10", "J60", "FORMAT"),
    ("context.facilityType", "J02", "J61", "FACILITY"),
    ("context.practiceSetting", "J04", None, "PRACTICE"),
)

Resolver = Callable[[Any, dict[str, Any]], dict[str, Any] | None]


@dataclass
class DocRefResult:
    document: Document | None = None
    patient: PatientIdentity | None = None
    replaced_id: str | None = None
    masking: set[str] = field(default_factory=set)
    binary_urls: set[str] = field(default_factory=set)


def get(obj: Any, dotted: str) -> Any:
    """``get(dr, 'content[0].attachment.size')``: None as soon as a step is missing."""
    for step in dotted.split("."):
        name, _, index = step.partition("[")
        if not isinstance(obj, dict):
            return None
        obj = obj.get(name)
        if index:
            i = int(index.rstrip("]"))
            obj = obj[i] if isinstance(obj, list) and len(obj) > i else None
    return obj


def _present(value: Any) -> bool:
    return value not in (None, "", [], {})


def _decode_b64(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def resolve_patient(subject: Any, dr: dict[str, Any], resolve: Resolver) -> PatientIdentity | None:
    """The patient of ``subject``: a contained or Bundle Patient, a conditional reference, or an identifier."""
    if not isinstance(subject, dict):
        return None
    found = None
    patient: dict[str, Any] = {}
    ref = subject.get("reference")
    if isinstance(ref, str):
        found = parse_conditional_ins(ref)
        target = resolve(subject, dr)
        if target and target.get("resourceType") == "Patient":
            patient = target
            found = found or ins_identifier(target.get("identifier"))
    if found is None and isinstance(subject.get("identifier"), dict):
        found = ins_identifier([subject["identifier"]])
    names = patient.get("name") or [{}]
    name = names[0] if isinstance(names[0], dict) else {}
    given = name.get("given") or []
    birth = patient.get("birthDate")
    return PatientIdentity(
        ins=found[0] if found else None,
        ins_oid=found[1] if found else None,
        birth_family_name=name.get("family"),
        first_given_name=given[0] if given else None,
        given_names=" ".join(given) or None,
        birth_date=birth.replace("-", "") if isinstance(birth, str) else None,
        sex={"male": "M", "female": "F", "other": "U", "unknown": "U"}.get(patient.get("gender") or ""),
    )


def _authors(dr: dict[str, Any], resolve: Resolver) -> list[Author]:
    out: list[Author] = []
    for ref in dr.get("author") or []:
        target = resolve(ref, dr) or {}
        kind = target.get("resourceType")
        if kind == "PractitionerRole":
            person = resolve(target.get("practitioner"), dr)
            org = resolve(target.get("organization"), dr)
            specialty = (target.get("specialty") or [None])[0]
            out.append(
                Author(
                    person=person_of(person) if person else None,
                    organization=organization_of(org) if org else None,
                    specialty=to_code(specialty),
                )
            )
        elif kind == "Practitioner":
            out.append(Author(person=person_of(target)))
        elif kind == "Organization":
            out.append(Author(organization=organization_of(target)))
        elif kind == "Device":
            names = target.get("deviceName") or [{}]
            out.append(Author(device=names[0].get("name") if isinstance(names[0], dict) else None))
        else:
            out.append(Author())
    return out


def _unique_id(dr: dict[str, Any]) -> tuple[str, InstanceId] | None:
    value = get(dr, "masterIdentifier.value")
    if not isinstance(value, str) or not value:
        return None
    unique = strip_urn(value) or value
    root, _, ext = unique.partition("^")
    return unique, InstanceId(root=root, extension=ext or None)


def _check_required(dr: dict[str, Any], path: str, simplified: bool, report: ValidationReport) -> None:
    required = [
        "masterIdentifier",
        "status",
        "type",
        "category",
        "subject",
        "date",
        "author",
        "custodian",
        "securityLabel",
        "content",
        "content[0].attachment.contentType",
        "content[0].attachment.title",
        "content[0].format",
        "context.period.start",
        "context.facilityType",
        "context.practiceSetting",
    ]
    if simplified:
        # ITI-105 (pdsm-simplified-publish): no period, the data travels inline; size/hash may be computed.
        required = [r for r in required if r != "context.period.start"] + ["content[0].attachment.data"]
    else:
        required += ["content[0].attachment.size", "content[0].attachment.hash"]
    for element in required:
        if not _present(get(dr, element)):
            report.add(
                "PDSM-DOCREF-REQUIRED",
                f"{path}.{element}",
                f"DocumentReference.{element} is required by the PDSm profile",
                condition=101,
                source=SOURCE,
            )


def _check_codes(dr: dict[str, Any], path: str, report: ValidationReport) -> None:
    terminology = default_terminology()
    for element, jdv, dmp_jdv, suffix in CODED:
        concept = get(dr, element)
        for coding in codings(concept):
            system = system_oid(coding.get("system"))
            for key, rule in ((jdv, f"PDSM-VS-{suffix}"), (dmp_jdv, f"PDSM-DMP-VS-{suffix}")):
                if key is None:
                    continue
                member = terminology.contains(key, coding["code"], system)
                if member is False:  # None: the value set is not shipped, so it cannot be judged
                    report.add(
                        rule,
                        f"{path}.{element}",
                        f"code {coding['code']!r} is not in {key} (binding: preferred; the DMP checks {key})",
                        severity=Severity.WARNING,
                        source=SOURCE,
                    )
    for i, label in enumerate(dr.get("securityLabel") or []):
        for coding in codings(label):
            member = terminology.contains("J08", coding["code"], system_oid(coding.get("system")))
            if member is False:
                report.add(
                    "PDSM-VS-SECURITY",
                    f"{path}.securityLabel[{i}]",
                    f"securityLabel {coding['code']!r} is not in J08 (binding: extensible)",
                    severity=Severity.WARNING,
                    source=SOURCE,
                )


def _content_bytes(
    dr: dict[str, Any], path: str, resolve: Resolver, result: DocRefResult, report: ValidationReport
) -> tuple[bytes, str | None] | None:
    attachment = get(dr, "content[0].attachment") or {}
    apath = f"{path}.content[0].attachment"
    content_type = attachment.get("contentType")
    if attachment.get("data") is not None:
        data = _decode_b64(attachment.get("data"))
        if data is None:
            report.add("PDSM-ATTACHMENT-DATA", f"{apath}.data", "attachment.data is not valid base64")
        return (data, content_type) if data is not None else None
    url = attachment.get("url")
    if not isinstance(url, str) or not url:
        report.add("PDSM-ATTACHMENT-DATA", apath, "the attachment has neither data nor url", condition=101)
        return None
    binary = resolve({"reference": url}, dr)
    if binary is None or binary.get("resourceType") != "Binary":
        report.add(
            "PDSM-ATTACHMENT-URL",
            f"{apath}.url",
            "attachment.url does not resolve to a Binary entry of the Bundle (fullUrl)",
        )
        return None
    result.binary_urls.add(url)
    data = _decode_b64(binary.get("data"))
    if data is None:
        report.add("PDSM-ATTACHMENT-DATA", f"{apath}.url", "the referenced Binary has no valid base64 data")
        return None
    if content_type and binary.get("contentType") and binary["contentType"] != content_type:
        report.add(
            "PDSM-ATTACHMENT-CONTENTTYPE",
            f"{apath}.contentType",
            "attachment.contentType differs from the Binary contentType",
            severity=Severity.WARNING,
        )
    return data, content_type or binary.get("contentType")


def _check_integrity(dr: dict[str, Any], path: str, data: bytes, report: ValidationReport) -> None:
    apath = f"{path}.content[0].attachment"
    size = get(dr, "content[0].attachment.size")
    if size is not None and size != len(data):
        report.add("PDSM-ATTACHMENT-SIZE", f"{apath}.size", f"size {size} but the data has {len(data)} bytes")
    hash_value = get(dr, "content[0].attachment.hash")
    if hash_value is not None:
        declared = _decode_b64(hash_value)
        actual = hashlib.sha1(data, usedforsecurity=False).digest()
        if declared != actual:
            hint = (
                " (it looks like a hex digest: FHIR wants base64 of the 20 bytes)"
                if isinstance(hash_value, str) and len(hash_value) == 40
                else ""
            )
            report.add("PDSM-ATTACHMENT-HASH", f"{apath}.hash", f"hash is not the SHA-1 of the data{hint}")


def _read_cda(data: bytes, content_type: str | None, path: str, report: ValidationReport) -> CdaHeader | None:
    looks_xml = data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")
    if (content_type or "").split(";")[0].strip().lower() not in XML_TYPES and not (
        content_type is None and looks_xml
    ):
        return None
    try:
        return read_cda(data)
    except CdaReadError as exc:
        if exc.rule == "CDA-ROOT" and content_type != "application/hl7-cda+xml":
            report.add(
                "PDSM-CDA-NOT-CDA",
                f"{path}.content[0].attachment",
                "the XML document is not a CDA R2 ClinicalDocument; its metadata is not cross-checked",
                severity=Severity.INFO,
            )
            return None
        report.add(
            "PDSM-CDA-READ",
            f"{path}.content[0].attachment",
            f"the CDA document cannot be read ({exc.rule} at {exc.location}): {exc}",
        )
        return None


def _check_against_cda(
    meta: DocumentMetadata,
    patient: PatientIdentity | None,
    cda: CdaHeader,
    path: str,
    report: ValidationReport,
) -> None:
    if meta.unique_id and meta.unique_id != cda.metadata.unique_id:
        report.add(
            "PDSM-CDA-UNIQUEID",
            f"{path}.masterIdentifier",
            "masterIdentifier differs from the CDA ClinicalDocument/id (XDS uniqueId)",
        )
    cda_type = cda.metadata.type_code
    if meta.type_code and cda_type and meta.type_code.code != cda_type.code:
        report.add("PDSM-CDA-TYPE", f"{path}.type", "DocumentReference.type differs from the CDA code")
    cda_ins = (cda.patient.ins, cda.patient.ins_oid)
    if patient and patient.ins and cda.patient.ins and (patient.ins, patient.ins_oid) != cda_ins:
        report.add("PDSM-CDA-INS", f"{path}.subject", "the patient INS differs from the CDA recordTarget INS")


def read_docref(
    dr: dict[str, Any], path: str, resolve: Resolver, report: ValidationReport, *, simplified: bool
) -> DocRefResult:
    """Check one DocumentReference and map it. Metadata: the DocumentReference's, except that when the content
    is a readable CDA its header wins for what the header carries (the XDS mapping derives those from the CDA,
    cisis-facts §4.1); disagreements are reported. classCode, formatCode and the masking labels always come from
    the DocumentReference (the CDA does not carry them)."""
    result = DocRefResult()
    _check_required(dr, path, simplified, report)
    _check_codes(dr, path, report)
    result.patient = resolve_patient(dr.get("subject"), dr, resolve)
    for i, rel in enumerate(dr.get("relatesTo") or []):
        if not isinstance(rel, dict):
            continue
        if rel.get("code") != "replaces":
            report.add(
                "PDSM-RELATESTO",
                f"{path}.relatesTo[{i}].code",
                "PDSm only uses relatesTo.code = replaces",
                severity=Severity.WARNING,
            )
            continue
        target = rel.get("target") or {}
        ident = target.get("identifier") if isinstance(target, dict) else None
        replaced = (ident or {}).get("value") if isinstance(ident, dict) else None
        replaced = strip_urn(replaced) or (target.get("reference") if isinstance(target, dict) else None)
        if not replaced:
            report.add("PDSM-RELATESTO", f"{path}.relatesTo[{i}].target", "relatesTo.target is missing")
        result.replaced_id = replaced
    for label in dr.get("securityLabel") or []:
        result.masking.update(MASKING_CODES[c["code"]] for c in codings(label) if c["code"] in MASKING_CODES)

    unique = _unique_id(dr)
    got = _content_bytes(dr, path, resolve, result, report)
    if got is None or unique is None:
        return result
    data, content_type = got
    _check_integrity(dr, path, data, report)
    attachment = get(dr, "content[0].attachment") or {}
    confidentiality = [c for c in (to_code(label) for label in dr.get("securityLabel") or []) if c]
    meta = DocumentMetadata(
        unique_id=unique[0],
        document_id=unique[1],
        type_code=to_code(dr.get("type")),
        class_code=to_code(get(dr, "category[0]")),
        confidentiality=confidentiality,
        creation_time=hl7_dtm(dr.get("date")),
        format_code=to_code(get(dr, "content[0].format")),
        healthcare_facility_type=to_code(get(dr, "context.facilityType")),
        practice_setting=to_code(get(dr, "context.practiceSetting")),
        authors=_authors(dr, resolve),
        service_start=hl7_dtm(get(dr, "context.period.start")),
        service_stop=hl7_dtm(get(dr, "context.period.end")),
        title=attachment.get("title"),
        mime_type=content_type or "application/octet-stream",
        language_code=attachment.get("language"),
        level="N1" if content_type and content_type not in XML_TYPES else "N3",
        body_media_type=content_type if content_type and content_type not in XML_TYPES else None,
    )
    cda = _read_cda(data, content_type, path, report)
    if cda is not None:
        _check_against_cda(meta, result.patient, cda, path, report)
        header = cda.metadata
        extra = [c for c in meta.confidentiality if all(c.code != h.code for h in header.confidentiality)]
        meta = header.model_copy(
            update={
                "class_code": meta.class_code,
                "format_code": meta.format_code,
                "confidentiality": [*header.confidentiality, *extra],
                "healthcare_facility_type": header.healthcare_facility_type or meta.healthcare_facility_type,
                "practice_setting": header.practice_setting or meta.practice_setting,
                "authors": header.authors or meta.authors,
                "title": header.title or meta.title,
                "mime_type": meta.mime_type if meta.mime_type in XML_TYPES else "text/xml",
            }
        )
        ins_from_dr = result.patient
        result.patient = cda.patient
        if cda.patient.ins is None and ins_from_dr is not None:
            result.patient = cda.patient.model_copy(
                update={"ins": ins_from_dr.ins, "ins_oid": ins_from_dr.ins_oid}
            )
    result.document = Document(metadata=meta, content=Content(data=data, media_type=meta.mime_type))
    return result
