"""Rules for a PDSm (FHIR) submission beyond the PDSm profile checks of the reader: each CDA it carries goes
through structuration minimale, and the INS and destination rules apply as for HL7v2 (issue items 2–5)."""

from __future__ import annotations

from gateway.formats.cda.xml_safety import UnsafeXMLError, parse_untrusted
from gateway.formats.fhir import FhirSubmission
from gateway.model import Participant, ParticipantRole, ValidationReport
from gateway.terminology import Terminology, default_terminology
from gateway.validation.cda_header import validate_cda_header
from gateway.validation.ins import check_ins
from gateway.validation.submission import Where, check_destinations, check_documents

SOURCE = "PDSm 3.1.1"
WHERE = Where(
    sender="List.source",
    patient="DocumentReference.subject",
    recipients="-",
    patient_address="-",
    sender_hint="the SubmissionSet source (List.source) or a DocumentReference author",
    recipient_hint="recipients (not carried by PDSm)",
    status_hint="an INS identifier (FR Core)",
)


def normalise_fhir(mapped: FhirSubmission) -> None:
    """Fill what PDSm says implicitly, in place.

    - FR Core: "le matricule INS ne peut être véhiculé que dans le cas d'une identité qualifiée" — an INS in a
      PDSm submission is a qualified identity, so its status is QUAL when the resource does not say otherwise.
    - ITI-105 has no SubmissionSet: the sender is the first DocumentReference author.
    """
    sub = mapped.submission
    if sub is None:
        return
    if sub.patient.ins_present and not sub.patient.identity_status:
        sub.patient = sub.patient.model_copy(update={"identity_status": "QUAL"})
    if sub.sender is None and sub.primary and sub.primary.metadata.authors:
        author = sub.primary.metadata.authors[0]
        if author.person or author.organization:
            sub.sender = Participant(
                role=ParticipantRole.SENDER,
                person=author.person,
                organization=author.organization,
                device=author.device,
            )


def validate_fhir_submission(
    mapped: FhirSubmission, *, terminology: Terminology | None = None, ins_production: bool = False
) -> ValidationReport:
    report = ValidationReport()
    sub = mapped.submission
    if sub is None:
        return report
    terminology = terminology or default_terminology()
    for n, doc in enumerate(sub.documents):
        if (
            doc.metadata.mime_type not in ("text/xml", "application/xml")
            and doc.content.data.lstrip()[:1] != b"<"
        ):
            continue
        try:
            tree = parse_untrusted(doc.content.data)
        except UnsafeXMLError:
            continue  # the reader already reported an unreadable CDA (PDSM-CDA-READ)
        if tree.getroot().tag != "{urn:hl7-org:v3}ClinicalDocument":
            continue
        for f in validate_cda_header(tree, terminology=terminology).findings:
            report.findings.append(f.model_copy(update={"location": f"document[{n}] {f.location}"}))
    check_ins(report, sub.patient, where=WHERE.patient, ins_production=ins_production)
    check_destinations(report, sub, WHERE, source=SOURCE)
    check_documents(report, sub, terminology)
    return report
