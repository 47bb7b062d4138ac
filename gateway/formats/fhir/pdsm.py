"""PDSm input (cisis-facts §6): an ITI-65 Provide Document Bundle or an ITI-105 simplified-publish
DocumentReference, in FHIR JSON or XML, read into a :class:`DocumentSubmission` with a validation report.

Checks run on the plain JSON structure (XML is converted first, see ``xml.py``), so that one broken element does
not hide the others; the whole resource is also validated with the fhir.resources R4B models and each
structural problem is reported as ``PDSM-FHIR-STRUCTURE``.

fhir.resources 8.3 / R4B vs FHIR R4 4.0.1 for the resources read here (checked in the models):
* there are no true R4 models for pydantic 2; ``fhir.resources.R4B`` (4.3.0) is used. Bundle, List,
  DocumentReference, Binary and Attachment have the same elements and cardinalities in R4 and R4B for what this
  module reads (``Attachment.size`` is unsignedInt and ``hash`` base64Binary in both: R5 made size integer64);
* R4B models declare ``DocumentReference.date`` as ``instant`` like R4, so a date without a time zone fails
  ``PDSM-FHIR-STRUCTURE`` as it would on an R4 server;
* fhir.resources' own XML reader (``model_validate_xml``) fails on comments before root-level elements
  (``id__ext``) and cannot return a partial result, hence the separate XML converter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gateway.formats.cda.xml_safety import DEFAULT_MAX_BYTES, UnsafeXMLError, parse_untrusted
from gateway.formats.fhir.common import codings, ins_identifier, organization_of, person_of
from gateway.formats.fhir.docref import DocRefResult, get, read_docref
from gateway.formats.fhir.xml import FhirXmlError, resource_to_json
from gateway.model import (
    DocumentAction,
    DocumentSubmission,
    MetaFlags,
    Participant,
    ParticipantRole,
    PatientIdentity,
    Person,
    Provenance,
)
from gateway.model.report import Severity, ValidationReport

SOURCE = "PDSm 3.1.1 pdsm-comprehensive-provide-document-bundle"
DESIGNATION_URL = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType"
SOURCE_ID_URL = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
AUTHOR_ORG_URL = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-authorOrg"
MAX_STRUCTURE_FINDINGS = 25


@dataclass
class FhirSubmission:
    #: None when the input cannot be understood.
    submission: DocumentSubmission | None
    #: Locations are FHIRPath-like: 'Bundle.entry[2].resource.content[0].attachment.hash'.
    report: ValidationReport


class _Bundle:
    """Reference resolution inside one input: contained (#id), Bundle fullUrl, or Type/id of an entry."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.by_url: dict[str, dict[str, Any]] = {}
        for entry in entries:
            resource = entry.get("resource")
            if not isinstance(resource, dict):
                continue
            if isinstance(entry.get("fullUrl"), str):
                self.by_url[entry["fullUrl"]] = resource
            if resource.get("id"):
                self.by_url.setdefault(f"{resource.get('resourceType')}/{resource['id']}", resource)

    def resolve(self, ref: Any, container: dict[str, Any]) -> dict[str, Any] | None:
        if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
            return None
        target = ref["reference"]
        if target.startswith("#"):
            for res in container.get("contained") or []:
                if isinstance(res, dict) and res.get("id") == target[1:]:
                    return res
            return None
        return self.by_url.get(target)


def _load(
    body: bytes, content_type: str | None, report: ValidationReport
) -> tuple[dict[str, Any], str] | None:
    """Parse JSON or XML into the JSON form; the root name is the start of every location."""
    if not body or not body.strip():
        report.add("PDSM-INPUT-EMPTY", "/", "empty body", condition=100)
        return None
    if len(body) > DEFAULT_MAX_BYTES:
        report.add("PDSM-INPUT-TOO-LARGE", "/", f"body of {len(body)} bytes exceeds the limit", condition=100)
        return None
    media = (content_type or "").split(";")[0].strip().lower()
    first = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    as_xml = first == b"<"
    declared_xml = media.endswith("xml")
    if media and declared_xml != as_xml:
        report.add(
            "PDSM-CONTENT-TYPE",
            "/",
            f"declared {media} but the body is {'XML' if as_xml else 'JSON'}; read as the body says",
            severity=Severity.WARNING,
        )
    if as_xml:
        try:
            tree = parse_untrusted(body)
        except UnsafeXMLError as exc:
            report.add("PDSM-XML-INVALID", exc.location, f"{exc.rule}: {exc}", condition=100)
            return None
        root_name = tree.getroot().tag.split("}")[-1] if isinstance(tree.getroot().tag, str) else "?"
        problems: list[tuple[str, str]] = []
        try:
            resource = resource_to_json(tree.getroot(), root_name, problems)
        except FhirXmlError as exc:
            report.add("PDSM-XML-INVALID", exc.location, str(exc), condition=100)
            return None
        for location, message in problems[:MAX_STRUCTURE_FINDINGS]:
            report.add("PDSM-FHIR-STRUCTURE", location, message, condition=102)
        return resource, root_name
    try:
        resource = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        report.add("PDSM-JSON-INVALID", "/", f"not valid UTF-8 JSON: {exc}", condition=100)
        return None
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        report.add(
            "PDSM-JSON-INVALID", "/", "the JSON is not a FHIR resource (no resourceType)", condition=100
        )
        return None
    return resource, resource["resourceType"]


def _check_structure(resource: dict[str, Any], root: str, report: ValidationReport) -> None:
    """Validate with the fhir.resources R4B model of the root resource (imported on demand)."""
    if root == "Bundle":
        from fhir.resources.R4B.bundle import Bundle as model
    else:
        from fhir.resources.R4B.documentreference import DocumentReference as model
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        for err in exc.errors()[:MAX_STRUCTURE_FINDINGS]:
            path = root
            for part in err["loc"]:
                path += f"[{part}]" if isinstance(part, int) else f".{part}"
            report.add("PDSM-FHIR-STRUCTURE", path, f"FHIR R4 (R4B model): {err['msg']}", condition=102)
    except (TypeError, ValueError) as exc:  # fhir.resources raises plain errors for some bad inputs
        report.add("PDSM-FHIR-STRUCTURE", root, f"FHIR R4 (R4B model): {exc}", condition=102)


def _is_submission_set(resource: dict[str, Any]) -> bool:
    if resource.get("resourceType") != "List":
        return False
    codes = {c["code"] for c in codings(resource.get("code"))}
    profiles = " ".join(p for p in get(resource, "meta.profile") or [] if isinstance(p, str)).lower()
    return "submissionset" in codes or ("submissionset" in profiles and "folder" not in codes)


def _sender(ss: dict[str, Any], bundle: _Bundle) -> Participant | None:
    source = ss.get("source")
    target = bundle.resolve(source, ss)
    org_ext = next(
        (
            e
            for e in (source or {}).get("extension") or []
            if isinstance(e, dict) and e.get("url") == AUTHOR_ORG_URL
        ),
        None,
    )
    org = bundle.resolve(org_ext.get("valueReference"), ss) if org_ext else None
    person = organization = device = None
    kind = (target or {}).get("resourceType")
    if kind == "PractitionerRole":
        practitioner = bundle.resolve(target.get("practitioner"), ss)
        person = person_of(practitioner) if practitioner else None
        org = org or bundle.resolve(target.get("organization"), ss)
    elif kind == "Practitioner":
        person = person_of(target)
    elif kind == "Organization":
        org = org or target
    elif kind == "Patient":
        found = ins_identifier(target.get("identifier"))
        person = Person(id=found[0], id_authority=found[1], id_type="INS") if found else None
    elif kind == "Device":
        names = target.get("deviceName") or [{}]
        device = names[0].get("name") if isinstance(names[0], dict) else None
    organization = organization_of(org) if org else None
    if person is None and organization is None and device is None:
        return None
    return Participant(role=ParticipantRole.SENDER, person=person, organization=organization, device=device)


def _check_submission_set(
    ss: dict[str, Any], path: str, docref_urls: list[str], report: ValidationReport
) -> None:
    if not ss.get("source"):
        report.add(
            "PDSM-SUBMISSIONSET-SOURCE", f"{path}.source", "List.source (author) is required", condition=101
        )
    urls = [e.get("url") for e in ss.get("extension") or [] if isinstance(e, dict)]
    for url, rule, what in (
        (DESIGNATION_URL, "PDSM-SUBMISSIONSET-DESIGNATION", "ihe-designationType (contentTypeCode)"),
        (SOURCE_ID_URL, "PDSM-SUBMISSIONSET-SOURCEID", "ihe-sourceId"),
    ):
        if url not in urls:
            report.add(
                rule, f"{path}.extension", f"extension {what} is required", condition=101, source=SOURCE
            )
    listed = {get(e, "item.reference") for e in ss.get("entry") or [] if isinstance(e, dict)}
    for url in docref_urls:
        if url not in listed:
            report.add(
                "PDSM-SUBMISSIONSET-ENTRY",
                f"{path}.entry",
                f"the SubmissionSet does not list the DocumentReference {url}",
                severity=Severity.WARNING,
            )


def _merge_patient(results: list[tuple[str, DocRefResult]], report: ValidationReport) -> PatientIdentity:
    patient: PatientIdentity | None = None
    for path, result in results:
        if result.patient is None or not result.patient.ins:
            report.add(
                "PDSM-PATIENT-INS", f"{path}.subject", "no INS for the patient of this DocumentReference"
            )
            continue
        if patient is None:
            patient = result.patient
        elif (patient.ins, patient.ins_oid) != (result.patient.ins, result.patient.ins_oid):
            report.add(
                "PDSM-PATIENT-MISMATCH", f"{path}.subject", "the DocumentReferences name different patients"
            )
    return patient or PatientIdentity()


def read_pdsm(body: bytes, content_type: str | None, provenance: Provenance) -> FhirSubmission:
    """Read and check a PDSm submission. Never raises on bad input: the report says what is wrong."""
    report = ValidationReport()
    loaded = _load(body, content_type, report)
    if loaded is None:
        report.unreadable = True
        return FhirSubmission(None, report)
    resource, root = loaded
    kind = resource.get("resourceType")
    if kind not in ("Bundle", "DocumentReference"):
        report.add(
            "PDSM-RESOURCE-TYPE",
            root,
            f"expected a transaction Bundle (ITI-65) or a DocumentReference (ITI-105), got {kind}",
            condition=200,
        )
        report.unreadable = True
        return FhirSubmission(None, report)
    _check_structure(resource, root, report)

    results: list[tuple[str, DocRefResult]] = []
    sender = None
    if kind == "DocumentReference":
        bundle = _Bundle([])
        results.append((root, read_docref(resource, root, bundle.resolve, report, simplified=True)))
    else:
        if resource.get("type") != "transaction":
            report.add(
                "PDSM-BUNDLE-TYPE", f"{root}.type", "an ITI-65 Provide Document Bundle is a transaction"
            )
        entries = [e for e in resource.get("entry") or [] if isinstance(e, dict)]
        bundle = _Bundle(entries)
        sets: list[tuple[str, dict[str, Any]]] = []
        docref_urls: list[str] = []
        binaries: list[tuple[str, str | None]] = []
        for i, entry in enumerate(resource.get("entry") or []):
            path = f"{root}.entry[{i}]"
            res = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(res, dict):
                report.add("PDSM-BUNDLE-ENTRY", path, "a transaction entry must carry a resource")
                continue
            if not isinstance(entry.get("fullUrl"), str):
                report.add("PDSM-BUNDLE-ENTRY", f"{path}.fullUrl", "fullUrl is required", condition=101)
            rpath = f"{path}.resource"
            if _is_submission_set(res):
                sets.append((rpath, res))
            elif res.get("resourceType") == "DocumentReference":
                docref_urls.append(entry.get("fullUrl") or "")
                results.append((rpath, read_docref(res, rpath, bundle.resolve, report, simplified=False)))
            elif res.get("resourceType") == "Binary":
                binaries.append((path, entry.get("fullUrl")))
        if len(sets) != 1:
            report.add(
                "PDSM-SUBMISSIONSET-COUNT",
                f"{root}.entry",
                f"exactly one List SubmissionSet is required, found {len(sets)}",
                condition=101,
                source=SOURCE,
            )
        for path, ss in sets[:1]:
            _check_submission_set(ss, path, docref_urls, report)
            sender = _sender(ss, bundle)
        if not results:
            report.add(
                "PDSM-DOCREF-COUNT",
                f"{root}.entry",
                "at least one DocumentReference is required",
                condition=101,
            )
        used = set().union(*(r.binary_urls for _, r in results)) if results else set()
        for path, url in binaries:
            if url not in used:
                report.add(
                    "PDSM-BINARY-UNUSED",
                    path,
                    "no DocumentReference refers to this Binary",
                    severity=Severity.WARNING,
                )

    patient = _merge_patient(results, report)
    documents = [r.document for _, r in results if r.document is not None]
    replaced = next((r.replaced_id for _, r in results if r.replaced_id), None)
    masking: set[str] = set().union(*(r.masking for _, r in results)) if results else set()
    flags = MetaFlags(
        destdmp=True,
        destmssanteps=False,
        destmssantepat=False,
        masque_ps="masque_ps" in masking,
        invisible_patient="invisible_patient" in masking,
        invisible_rep_legaux="invisible_rep_legaux" in masking,
    )
    primary = documents[0] if documents else None
    submission = DocumentSubmission(
        provenance=provenance,
        patient=patient,
        action=DocumentAction.REPLACEMENT if replaced else DocumentAction.INITIAL,
        documents=documents,
        replaced_document_id=replaced,
        flags=flags,
        sender=sender,
        type_code=primary.metadata.type_code if primary else None,
    )
    return FhirSubmission(submission, report)
