"""What each destination needs from a submission, whatever format it came in (cisis-facts §5, §7.3, §8)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.model import DocumentSubmission, Severity, ValidationReport
from gateway.terminology import Terminology


@dataclass(frozen=True, slots=True)
class Where:
    """Where the input format carries each fact, for the finding locations and messages."""

    sender: str
    patient: str
    recipients: str
    patient_address: str
    sender_hint: str
    recipient_hint: str
    status_hint: str


def check_documents(report: ValidationReport, sub: DocumentSubmission, terminology: Terminology) -> None:
    """A non-structured (N1) document's mediaType must have an XDS formatCode (ASS_A12 / TRE_R222): the DMP and
    the XDM metadata need one."""
    for n, doc in enumerate(sub.documents, start=1):
        meta = doc.metadata
        if (
            meta.level == "N1"
            and meta.body_media_type
            and terminology.format_code_for_media_type(meta.body_media_type) is None
        ):
            report.add(
                "CDA-N1-MEDIATYPE",
                f"document {n} /ClinicalDocument/component/nonXMLBody/text/@mediaType",
                f"mediaType {meta.body_media_type[:40]} has no XDS formatCode (ASS_A12: application/pdf, "
                "text/plain, text/rtf, image/jpeg, image/tiff)",
                condition=103,
                source="CI-SIS ASS_A12",
            )


def check_destinations(
    report: ValidationReport, sub: DocumentSubmission, where: Where, *, source: str
) -> None:
    flags, patient = sub.flags, sub.patient
    if flags.destdmp:
        if sub.sender is None:
            report.add(
                "TRANS-DMP-SENDER",
                where.sender,
                f"DESTDMP=Y requires {where.sender_hint}",
                condition=101,
                source=source,
            )
        if not patient.ins_qualified:
            report.add(
                "TRANS-DMP-INS",
                where.patient,
                f"DESTDMP=Y requires an INS with a qualified identity ({where.status_hint})",
                condition=207,
                application_code="903",
                source=source,
            )
    if flags.destmssanteps and not any(r.address and not r.is_patient for r in sub.recipients):
        report.add(
            "TRANS-MSS-RECIPIENTS",
            where.recipients,
            f"DESTMSSANTEPS=Y requires {where.recipient_hint}",
            condition=101,
            source=source,
        )
    if flags.destmssantepat:
        if not patient.ins_present:
            report.add(
                "TRANS-MSS-PATIENT-INS",
                where.patient,
                "DESTMSSANTEPAT=Y requires the patient's INS (the "
                "patient mailbox is <INS>@patient.mssante.fr)",
                condition=101,
                source=source,
            )
            return
        expected_box = f"{patient.ins}@patient.mssante.fr"
        for r in sub.recipients:
            if r.is_patient and r.address and r.address.lower() != expected_box:
                report.add(
                    "TRANS-MSS-PATIENT-ADDRESS",
                    where.patient_address,
                    "a patient recipient address "
                    "differs from <INS>@patient.mssante.fr; the gateway mails the INS-derived address",
                    severity=Severity.WARNING,
                    condition=207,
                    source=source,
                )
