"""ZAM business acknowledgement writer (cisis-facts §7.4): ``ZAM^Z01|Z02|Z03^ZAM_Z01``, HL7 v2.6.

Sent by the gateway to the document's creator (DPI/RIS/SIL): Z01 DMP reception (from the ITI-41 response),
Z02 MSSanté reception (from a DSN), Z03 MSSanté read/processing (from an MDN). Layout, as in the ANS examples
(TRANS_DOC_CDA_HL7V2 V2.1 "Message metier ..."):

    MSH|^~\\&|<app>|<fac>|<app>|<fac>|<ts>||ZAM^Z02^ZAM_Z01|<id>|P|2.6|||||FRA|UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2
    EVN||<ts>
    OBX|1|CWE|ACK_RECEPTION_MSS^Accusé de réception MSSanté^AckMetierZAM|<original MSH-10>|Y^^expandedYes-NoIndicator||||||F
    OBX|2|XTN|DESTINATAIRE_MSS^Destinataire MSSanté^AckMetierZAM|<recipient id>|^^X.400^<address>||||||F
    ERR|||207^Application error^messageErrorCondition|E|<code>^<text>^SMTPERRORCODE       (only when N)

The status OBX-4 is the original ORU/MDM MSH-10 (how the DPI matches the ack to its message). The ANS examples
put the recipient's national PS identifier (PRT-4.1 of the RCT participant) in the address OBX-4; callers that
know it pass ``recipient_id``, otherwise the original MSH-10 is repeated so the two OBX stay grouped.
Nothing here carries patient data: a ZAM can be logged.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from gateway.formats.hl7v2.ack import msh_segment
from gateway.formats.hl7v2.er7 import Delimiters, escape

ZamKind = Literal["Z01", "Z02", "Z03"]
VERSION = "2.6"
PROFILE = "2.1^CISIS_CDA_HL7_V2"
CODE_SYSTEM = "AckMetierZAM"
YES_NO_SYSTEM = "expandedYes-NoIndicator"
# kind -> (status code, label, address code, address label, ERR-5 coding system)
LAYOUT: dict[str, tuple[str, str, str | None, str | None, str]] = {
    "Z01": ("ACK_RECEPTION_DMP", "Accusé de réception DMP", None, None, "DMP_ERROR_CODE"),
    "Z02": (
        "ACK_RECEPTION_MSS",
        "Accusé de réception MSSanté",
        "DESTINATAIRE_MSS",
        "Destinataire MSSanté",
        "SMTPERRORCODE",
    ),
    "Z03": (
        "ACK_LECTURE_MSS",
        "Accusé de lecture",
        "LECTEUR_MSS",
        "Lecteur du courriel MSSanté",
        "applicationErrorCode",
    ),
}
D = Delimiters()


def _e(value: str | None) -> str:
    # CR/LF would end the segment: a ZAM field is one line whatever the source (an SMTP diagnostic can fold).
    return escape(" ".join((value or "").split()), D)


def build_zam(
    kind: ZamKind,
    *,
    original_control_id: str,
    ok: bool,
    sending_app: str,
    sending_facility: str,
    receiving_app: str,
    receiving_facility: str,
    address: str | None = None,
    error_code: str | None = None,
    error_text: str | None = None,
    now: datetime | None = None,
    control_id: str | None = None,
    recipient_id: str | None = None,
) -> str:
    """Build one ZAM (ER7 text, CR segment terminators, MSH-18 ``UNICODE UTF-8``: encode it as UTF-8).

    ``address`` (Z02/Z03 only) adds the XTN OBX; ``error_code``/``error_text`` fill ERR-5 when ``ok`` is
    False (ERR-5 system: DMP_ERROR_CODE for Z01, SMTPERRORCODE for Z02, applicationErrorCode for Z03)."""
    if kind not in LAYOUT:
        raise ValueError(f"unknown ZAM kind {kind!r}")
    if not original_control_id.strip():
        raise ValueError("original_control_id is required (OBX-4 links the ZAM to the original message)")
    status_code, status_label, addr_code, addr_label, err_system = LAYOUT[kind]
    if address is not None and addr_code is None:
        raise ValueError(f"ZAM {kind} has no address OBX")
    ts = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    original = _e(original_control_id)
    msh = msh_segment(
        sending=(_e(sending_app), _e(sending_facility)),
        receiving=(_e(receiving_app), _e(receiving_facility)),
        timestamp=ts,
        message_type=f"ZAM^{kind}^ZAM_Z01",
        control_id=_e(control_id) or uuid.uuid4().hex[:20],
        version=VERSION,
        profile=PROFILE,
    )
    yes_no = "Y" if ok else "N"
    lines = [
        msh,
        f"EVN||{ts}",
        f"OBX|1|CWE|{status_code}^{status_label}^{CODE_SYSTEM}|{original}|{yes_no}^^{YES_NO_SYSTEM}||||||F",
    ]
    if address is not None:
        sub_id = _e(recipient_id) or original
        lines.append(
            f"OBX|2|XTN|{addr_code}^{addr_label}^{CODE_SYSTEM}|{sub_id}|^^X.400^{_e(address)}||||||F"
        )
    if not ok:
        err = "ERR|||207^Application error^messageErrorCondition|E"
        if error_code or error_text:
            err += f"|{_e(error_code)}^{_e((error_text or '')[:200])}^{err_system}"
        lines.append(err)
    return "\r".join(lines) + "\r"
