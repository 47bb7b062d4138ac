"""Rules for a CDA sent alone: structuration minimale, INS, and what each destination needs (the routing
hints come from AMQP headers, see gateway.formats.cda.standalone)."""

from __future__ import annotations

from gateway.formats.cda.standalone import SOURCE, CdaMessage
from gateway.model import ValidationReport
from gateway.terminology import Terminology, default_terminology
from gateway.validation.cda_header import validate_cda_header
from gateway.validation.ins import check_ins
from gateway.validation.submission import Where, check_destinations, check_documents

WHERE = Where(
    sender="x-cisis-sender-ps",
    patient="/ClinicalDocument/recordTarget/patientRole/id",
    recipients="x-cisis-recipients",
    patient_address="x-cisis-recipients",
    sender_hint="the headers x-cisis-sender-ps and x-cisis-sender-org",
    recipient_hint="at least one address in the header x-cisis-recipients",
    status_hint="the header x-cisis-identity-status QUAL or VALI",
)


def validate_cda_message(
    mapped: CdaMessage, *, terminology: Terminology | None = None, ins_production: bool = False
) -> ValidationReport:
    report = ValidationReport()
    if mapped.header is None or mapped.submission is None:
        return report
    terminology = terminology or default_terminology()
    if mapped.header.tree is not None:
        report.extend(validate_cda_header(mapped.header.tree, terminology=terminology))
    missing = [c for c in ("DESTDMP", "DESTMSSANTEPS", "DESTMSSANTEPAT") if c not in mapped.flag_codes]
    if missing:
        report.add(
            "CDA-HINT-FLAGS-MISSING",
            "x-cisis-flags",
            f"the routing flags {', '.join(missing)} are required (Y or N) for a CDA sent alone",
            condition=101,
            source=SOURCE,
        )
    sub = mapped.submission
    check_ins(report, sub.patient, where=WHERE.patient, ins_production=ins_production)
    check_destinations(report, sub, WHERE, source=SOURCE)
    check_documents(report, sub, terminology)
    return report
