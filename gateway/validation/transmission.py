"""Rules of the HL7v2 transmission volet that the spine enforces (cisis-facts §7.3, §7.4, §9).

This is the core set every message goes through in line: message header, the document OBX, action
consistency, the required MetaDMPMSS flags, what each destination needs (sender for the DMP, recipients for
MSSanté, a usable INS), and INS coherence between PID-3 and the CDA. The complete volet, the CDA header rules
and the official schematrons are separate rule packs (issue 3); each rule here has a stable code so an ERR
segment, a journal entry and the README can name it.

The legal MSSanté flag combinations (§7.3 matrix) are deliberately *not* here: they are written in
``routes.yaml`` where an integration team can read them.
"""

from __future__ import annotations

from gateway.formats.hl7v2.er7 import Message
from gateway.formats.hl7v2.transmission import (
    MDM_EVENTS,
    OBX11_ACTIONS,
    ORC1_ACTIONS,
    PROFILE_ID,
    SOURCE,
    TransmissionMessage,
)
from gateway.model import DocumentAction, MetaFlags, ValidationReport
from gateway.terminology import Terminology, default_terminology
from gateway.validation.cda_header import validate_cda_header
from gateway.validation.ins import check_ins
from gateway.validation.submission import Where, check_destinations, check_documents
from gateway.validation.transmission_fields import STRUCTURES, check_fields, check_structure

EXPECTED_VERSION = {"ORU": "2.5", "MDM": "2.6"}
#: NIR-based INS OIDs whose key can be checked (production, test, démo); NIA keys are not verified [§9].
#: Where the facts checked by check_destinations sit in an HL7v2 message of the volet.
WHERE = Where(
    sender="PRT",
    patient="PID-3",
    recipients="PRT",
    patient_address="PRT-15",
    sender_hint="the sender PRT (PRT-4 = SB)",
    recipient_hint="a PRT RCT with an MSSanté address (PRT-15.3 = X.400, PRT-15.4)",
    status_hint="PID-3 INS and PID-32 QUAL or VALI",
)


def validate_transmission(
    message: Message,
    mapped: TransmissionMessage,
    *,
    terminology: Terminology | None = None,
    ins_production: bool = False,
) -> ValidationReport:
    """Apply the core transmission rules; returns a new report (the mapping's own findings are not copied)."""
    report = ValidationReport()
    sub = mapped.submission
    msh = message.msh
    msg_code = msh.get(9, 1, 1).strip().upper()

    version = msh.get(12).strip()
    expected = EXPECTED_VERSION.get(msg_code)
    if expected and version != expected:
        report.add(
            "TRANS-VERSION",
            "MSH-12",
            f"{msg_code} messages of the volet are HL7 v{expected}, not {version[:10] or '(empty)'}",
            condition=203,
            source=SOURCE,
        )
    profiles = [msh.get(21, rep, 2).strip().upper() for rep in range(1, len(msh.repetitions(21)) + 1)]
    if PROFILE_ID not in profiles:
        report.add(
            "TRANS-PROFILE",
            "MSH-21",
            f"MSH-21 must declare the profile 2.1^{PROFILE_ID}",
            condition=101,
            source=SOURCE,
        )
    if msg_code in STRUCTURES:
        check_structure(report, message, msg_code)
        check_fields(report, message, mapped, msg_code)
    if sub is None:
        return report

    if not mapped.document_obx:
        report.add(
            "TRANS-DOC-MISSING",
            "OBX",
            "no OBX of type ED carries a CDA document",
            condition=101,
            source=SOURCE,
        )
    elif len(mapped.document_obx) > (2 if msg_code == "ORU" else 1):
        report.add(
            "TRANS-DOC-COUNT",
            "OBX",
            f"{msg_code} carries at most {2 if msg_code == 'ORU' else 1} CDA document(s)",
            condition=198,
            source=SOURCE,
        )

    _check_action(report, msg_code, mapped)
    _check_flags(report, sub.flags)

    patient = sub.patient
    terminology = terminology or default_terminology()
    code = sub.type_code
    if code is not None and terminology.contains("J07", code.code) is False:
        where = "TXA-2" if msg_code == "MDM" else "OBR-4"
        report.add(
            "TRANS-TYPECODE-J07",
            where,
            f"type code {code.code[:20]} is not in JDV J07 (XdsTypeCode CI-SIS)",
            condition=103,
            source=SOURCE,
        )
    check_ins(report, patient, where="PID-3", ins_production=ins_production)
    for header, where in zip(mapped.cda_headers, mapped.cda_locations, strict=True):
        if header.tree is not None:
            # Structuration minimale (CDA header) on the embedded document: its XPath locations are prefixed
            # with the OBX that carries it, so the ACK's ERR-2 points at the segment and ERR-8 at the element.
            for f in validate_cda_header(header.tree, terminology=terminology).findings:
                report.findings.append(f.model_copy(update={"location": f"{where} {f.location}"}))
        cda_ins = header.patient.ins
        if patient.ins and cda_ins and cda_ins != patient.ins:
            report.add(
                "TRANS-INS-MISMATCH",
                "PID-3",
                "the INS in PID-3 differs from the INS in the CDA recordTarget/patientRole/id",
                condition=207,
                application_code="904",
                source=SOURCE,
            )
        if mapped.obr4 and header.metadata.type_code and mapped.obr4.code != header.metadata.type_code.code:
            report.add(
                "TRANS-TYPECODE-MISMATCH",
                "OBR-4",
                "OBR-4 must equal the document type code (CDA ClinicalDocument/code)",
                condition=207,
                source=SOURCE,
            )

    check_destinations(report, sub, WHERE, source=SOURCE)
    check_documents(report, sub, terminology)
    if sub.action is DocumentAction.REPLACEMENT and not sub.replaced_document_id:
        where = "TXA-13" if msg_code == "MDM" else "OBX-5"
        report.add(
            "TRANS-REPLACED-ID",
            where,
            "a replacement must name the replaced document (TXA-13 or CDA relatedDocument[@typeCode='RPLC'])",
            condition=101,
            source=SOURCE,
        )
    return report


def _check_action(report: ValidationReport, msg_code: str, mapped: TransmissionMessage) -> None:
    """OBX-11, ORC-1 and the MDM event must agree [§7.1]; otherwise the PFI rejects the message."""
    actions = {}
    if mapped.obx11:
        if mapped.obx11 not in OBX11_ACTIONS:
            report.add(
                "TRANS-OBX11", "OBX-11", "document OBX-11 must be F, C or D", condition=103, source=SOURCE
            )
        else:
            actions["OBX-11"] = OBX11_ACTIONS[mapped.obx11]
    if mapped.orc1:
        if mapped.orc1 not in ORC1_ACTIONS:
            report.add("TRANS-ORC1", "ORC-1", "ORC-1 must be NW, RO or CA", condition=103, source=SOURCE)
        else:
            actions["ORC-1"] = ORC1_ACTIONS[mapped.orc1]
    if msg_code == "MDM" and mapped.event in MDM_EVENTS:
        actions["MSH-9"] = MDM_EVENTS[mapped.event]
    if len(set(actions.values())) > 1:
        detail = ", ".join(f"{where} says {action.value}" for where, action in actions.items())
        report.add(
            "TRANS-ACTION-CONSISTENCY",
            next(iter(actions)),
            f"inconsistent action: {detail}",
            condition=207,
            source=SOURCE,
        )


def _check_flags(report: ValidationReport, flags: MetaFlags) -> None:
    for code in MetaFlags.REQUIRED:
        if flags.by_code(code) is None:
            report.add(
                "TRANS-META-MISSING",
                "OBX",
                f"required MetaDMPMSS OBX {code} is missing or not Y/N",
                condition=101,
                source=SOURCE,
            )
