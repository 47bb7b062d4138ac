"""Structure and field rules of the transmission volet (cisis-facts §7.2, §7.3) beyond the core ones.

The segment structure is checked with one regular expression per message structure over the string of
segment ids (a few microseconds per message), the field rules with direct reads of the fields they name.
"""

from __future__ import annotations

import re

from gateway.formats.hl7v2.er7 import Message, Segment
from gateway.formats.hl7v2.transmission import SOURCE, TransmissionMessage
from gateway.model import DocumentAction, Severity, ValidationReport

#: §7.2. ORU_R01: MSH, PID, [PV1], {ORC, OBR, [{NTE}], [{TQ1}], {OBX, [{PRT}], [{NTE}]}}
#: MDM_T02: MSH, EVN, PID, PV1, ORC, [{TQ1, [{TQ2}]}], OBR, [{NTE}], TXA, {OBX, [{PRT}], [{NTE}]}
STRUCTURES = {
    "ORU": re.compile(r"MSH PID( PV1)?( ORC OBR( NTE)*( TQ1)*( OBX( PRT)*( NTE)*)+)+"),
    "MDM": re.compile(r"MSH EVN PID PV1 ORC( TQ1( TQ2)*)* OBR( NTE)* TXA( OBX( PRT)*( NTE)*)+"),
}
ALLOWED = {
    "ORU": {"MSH", "PID", "PV1", "ORC", "OBR", "NTE", "TQ1", "OBX", "PRT"},
    "MDM": {"MSH", "EVN", "PID", "PV1", "ORC", "TQ1", "TQ2", "OBR", "NTE", "TXA", "OBX", "PRT"},
}
STRUCTURE_TEXT = {
    "ORU": "MSH, PID, [PV1], {ORC, OBR, [{NTE}], [{TQ1}], {OBX, [{PRT}], [{NTE}]}}",
    "MDM": "MSH, EVN, PID, PV1, ORC, [{TQ1, [{TQ2}]}], OBR, [{NTE}], TXA, {OBX, [{PRT}], [{NTE}]}",
}
CHARSETS = {"UNICODE UTF-8", "8859/15"}
#: PV1-19 (visit number) is required for these patient classes, RE for N (§7.3).
VISIT_REQUIRED = {"E", "I", "O", "R"}


def check_structure(report: ValidationReport, message: Message, msg_code: str) -> None:
    ids = [s.id for s in message.segments]
    if STRUCTURES[msg_code].fullmatch(" ".join(ids)):
        return
    stray = next((n for n, sid in enumerate(ids) if sid not in ALLOWED[msg_code]), None)
    where = f"{ids[stray]}[{ids[: stray + 1].count(ids[stray])}]" if stray is not None else "MSH"
    report.add(
        "TRANS-STRUCTURE",
        where,
        f"segments do not follow the {msg_code} structure of the volet: {STRUCTURE_TEXT[msg_code]}",
        condition=100,
        source=SOURCE,
    )


def _coded_without_system(seg: Segment, n: int) -> bool:
    """CE/CWE: the code system (.3) must be filled when the code (.1) is (v2.7 rule pre-adopted, §7.1)."""
    return bool(seg.get(n).strip()) and not seg.get(n, 1, 3).strip()


def check_fields(
    report: ValidationReport, message: Message, mapped: TransmissionMessage, msg_code: str
) -> None:
    msh = message.msh
    add = report.add
    if msh.get(11).strip().upper() not in ("P", "T", "D"):
        add("TRANS-MSH11", "MSH-11", "processing id must be P, T or D", condition=202, source=SOURCE)
    if msh.get(17).strip().upper() != "FRA":
        add(
            "TRANS-MSH17",
            "MSH-17",
            "country code should be FRA",
            severity=Severity.WARNING,
            condition=103,
            source=SOURCE,
        )
    charset = msh.get(18).strip().upper()
    if charset and charset not in CHARSETS:
        add(
            "TRANS-MSH18",
            "MSH-18",
            "the volet's character sets are UNICODE UTF-8 and 8859/15",
            severity=Severity.WARNING,
            condition=103,
            source=SOURCE,
        )

    pid = message.segment("PID")
    if pid is not None:
        if not pid.get(3).strip():
            add("TRANS-PID3", "PID-3", "patient identifiers are required", condition=101, source=SOURCE)
        if not pid.get(5).strip():
            add("TRANS-PID5", "PID-5", "patient name is required", condition=101, source=SOURCE)
    pv1 = message.segment("PV1")
    if pv1 is not None:
        patient_class = pv1.get(2).strip().upper()
        if not patient_class:
            add("TRANS-PV1-2", "PV1-2", "patient class is required", condition=101, source=SOURCE)
        elif patient_class in VISIT_REQUIRED and not pv1.get(19).strip():
            add(
                "TRANS-PV1-19",
                "PV1-19",
                f"visit number is required when PV1-2 is {patient_class}",
                condition=101,
                source=SOURCE,
            )

    obr = message.segment("OBR")
    if obr is not None and _coded_without_system(obr, 4):
        add(
            "TRANS-CODE-SYSTEM",
            "OBR-4",
            "OBR-4.3 (coding system) must be filled when OBR-4.1 is",
            condition=101,
            source=SOURCE,
        )
    meta_type = "CE" if msg_code == "ORU" else "CWE"
    for occ, seg in enumerate(message.all("OBX"), start=1):
        value_type = seg.get(2).strip().upper()
        system = seg.get(3, 1, 3).strip().upper().replace(" ", "")
        if seg.index in mapped.document_obx:
            if _coded_without_system(seg, 3):
                add(
                    "TRANS-CODE-SYSTEM",
                    f"OBX[{occ}]-3",
                    "OBX-3.3 (coding system) must be filled",
                    condition=101,
                    source=SOURCE,
                )
            if seg.get(5, 1, 3).strip().upper() != "XML":
                add(
                    "TRANS-ED-SUBTYPE",
                    f"OBX[{occ}]-5",
                    "document OBX-5.3 (ED subtype) must be XML",
                    condition=102,
                    source=SOURCE,
                )
            if obr is not None and obr.get(4).strip() and seg.get(3).strip() != obr.get(4).strip():
                add(
                    "TRANS-OBX3-OBR4",
                    f"OBX[{occ}]-3",
                    "the document OBX-3 must equal OBR-4",
                    condition=207,
                    source=SOURCE,
                )
        elif system == "METADMPMSS" and value_type not in (meta_type, "ED"):
            add(
                "TRANS-META-TYPE",
                f"OBX[{occ}]-2",
                f"MetaDMPMSS OBX-2 is {meta_type} in {msg_code} messages",
                severity=Severity.WARNING,
                condition=102,
                source=SOURCE,
            )

    if msg_code == "MDM":
        _check_txa(report, message, mapped)
    _check_participants(report, message, mapped)


def _check_txa(report: ValidationReport, message: Message, mapped: TransmissionMessage) -> None:
    txa = message.segment("TXA")
    if txa is None:
        return
    add = report.add
    if txa.get(1).strip() != "1":
        add("TRANS-TXA1", "TXA-1", "TXA-1 (set id) must be 1", condition=102, source=SOURCE)
    if not txa.get(2).strip():
        add("TRANS-TXA2", "TXA-2", "TXA-2 (document type, JDV J07) is required", condition=101, source=SOURCE)
    if txa.get(3).strip().upper() != "TEXT":
        add("TRANS-TXA3", "TXA-3", "TXA-3 (content presentation) must be TEXT", condition=103, source=SOURCE)
    if txa.get(17).strip().upper() != "AU":
        add("TRANS-TXA17", "TXA-17", "TXA-17 (completion status) must be AU", condition=103, source=SOURCE)
    entity, universal = txa.get(12, 1, 1).strip(), txa.get(12, 1, 3).strip()
    if not entity:
        add(
            "TRANS-TXA12",
            "TXA-12",
            "TXA-12 (unique document number) is required",
            condition=101,
            source=SOURCE,
        )
    elif mapped.cda_headers:
        doc_id = mapped.cda_headers[0].metadata.document_id
        # §7.3: ext^^root^ISO when the CDA id has an extension, else the full OID in TXA-12.1.
        matches = (
            (entity == doc_id.extension and universal == doc_id.root)
            if doc_id.extension
            else (entity == doc_id.root)
        )
        if not matches:
            add(
                "TRANS-TXA12",
                "TXA-12",
                "TXA-12 must identify the CDA ClinicalDocument/id (ext^^root^ISO, or the "
                "root OID when there is no extension)",
                condition=207,
                source=SOURCE,
            )
    if (
        mapped.submission is not None
        and mapped.submission.action is DocumentAction.REPLACEMENT
        and not txa.get(13).strip()
    ):
        add(
            "TRANS-TXA13",
            "TXA-13",
            "TXA-13 (parent document) is required for a replacement (T10)",
            condition=101,
            source=SOURCE,
        )


def _check_participants(report: ValidationReport, message: Message, mapped: TransmissionMessage) -> None:
    sub = mapped.submission
    if sub is None:
        return
    sender = sub.sender
    # SC.DMP/CONF.12: the VIHF and the SubmissionSet author need the structure (PRT-8) and a PS or device id.
    if sub.flags.destdmp and sender is not None:
        if not (sender.organization and sender.organization.id):
            report.add(
                "TRANS-DMP-SENDER-ORG",
                "PRT-8",
                "the sender PRT (SB) must name its structure (PRT-8 XON "
                "with PRT-8.10, e.g. FINESS géographique)",
                condition=101,
                source=SOURCE,
            )
        if not ((sender.person and sender.person.id and sender.person.id_authority) or sender.device):
            report.add(
                "TRANS-DMP-SENDER-ID",
                "PRT-5",
                "the sender PRT (SB) must carry a PS identifier with its "
                "assigning authority (PRT-5.1, PRT-5.9) or a device id (PRT-10)",
                condition=101,
                source=SOURCE,
            )
    for n, recipient in enumerate(sub.recipients, start=1):
        if not recipient.address:
            report.add(
                "TRANS-RCT-ADDRESS",
                f"PRT-15 (recipient {n})",
                "a recipient PRT (RCT) has no MSSanté address (PRT-15.3 = X.400, PRT-15.4)",
                severity=Severity.WARNING,
                condition=101,
                source=SOURCE,
            )
