"""HL7 acknowledgement writer (cisis-facts §7.4): ``ACK^<event>^ACK`` with MSA and one ERR per finding.

MSA-2 is the original MSH-10; ERR-2 the location (ERL ``SEG^seq^field``), ERR-3 the HL7 table 0357 condition,
ERR-4 the severity, ERR-5 the application error (table 0533 code when the volet defines one, else the gateway's
rule code), ERR-7 the rule code and ERR-8 a message a person can act on. Messages never carry patient data
(the findings are written that way), so an ACK can be logged and journaled safely.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from gateway.formats.hl7v2.er7 import Delimiters, Message, escape
from gateway.model import Finding, Severity, ValidationReport

CONDITION_TEXT = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    198: "Non-conformant cardinality",
    199: "Other HL7 Error",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing",
    203: "Unsupported version",
    207: "Application error",
}
APPLICATION_TEXT = {
    "900": "Version du document incorrecte",
    "901": "Auteur non autorise",
    "902": "Identifiant patient inconnu",
    "903": "INS non present",
    "904": "INS ne correspond pas",
    "905": "INS incomplet",
    "906": "Erreur Autre",
}
_LOCATION = re.compile(r"^([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?(?:-(\d+))?")
MAX_ERR = 50  # an ACK listing hundreds of findings helps nobody; the journal keeps the full report
D = Delimiters()


def erl(location: str) -> str:
    """Finding location -> ERL: 'OBX[7]-5' -> 'OBX^7^5', 'MSH-12' -> 'MSH^1^12'; XPaths are not ERLs -> ''."""
    m = _LOCATION.match(location)
    if not m:
        return ""
    seg, seq, fld = m.groups()
    if fld is None:  # a finding about a segment as a whole (often a missing one): no sequence to point at
        return seg if seq is None else f"{seg}^{seq}"
    return f"{seg}^{seq or '1'}^{fld}"


def _err(f: Finding) -> str:
    sev = {Severity.ERROR: "E", Severity.WARNING: "W", Severity.INFO: "I"}[f.severity]
    cond = f"{f.condition}^{CONDITION_TEXT.get(f.condition, 'Application error')}^messageErrorCondition"
    if f.application_code:
        app = f"{f.application_code}^{APPLICATION_TEXT.get(f.application_code, '')}^applicationErrorCode"
    else:
        app = f"{escape(f.rule, D)}^^L"
    # 'OBX[1]-5 /ClinicalDocument/setId': ERR-2 carries the segment part, ERR-8 the element inside the CDA.
    xpath = f.location.split(" ", 1)[1] if " " in f.location else ""
    detail = escape((f.message[:240] + (f" (at {xpath[:200]})" if xpath else "")), D)
    location = erl(f.location)
    return f"ERR||{location}|{cond}|{sev}|{app}||{escape(f.rule, D)}|{detail}"


def msh_segment(
    *,
    sending: tuple[str, str],
    receiving: tuple[str, str],
    timestamp: str,
    message_type: str,
    control_id: str,
    processing: str = "P",
    version: str = "2.5",
    profile: str | None = None,
) -> str:
    """The MSH of a message the gateway writes (ACK, ZAM): standard delimiters, FRA, UNICODE UTF-8, and MSH-21
    when a profile is given. Application/facility values must already be escaped."""
    fields = [
        "MSH",
        "^~\\&",
        sending[0],
        sending[1],
        receiving[0],
        receiving[1],
        timestamp,
        "",
        message_type,
        control_id,
        processing,
        version,
        "",
        "",
        "",
        "",
        "FRA",
        "UNICODE UTF-8",
    ]
    if profile:
        fields += ["", "", profile]
    return "|".join(fields)


def _reencode(message: Message, n: int) -> str:
    return "^".join(escape(c, D) for c in message.msh.components(n))


def build_ack(
    original: Message | None,
    report: ValidationReport,
    *,
    control_id: str | None = None,
    now: datetime | None = None,
    ack_id: str | None = None,
) -> str:
    """Build the ACK for ``original`` (None when it could not be parsed at all: MSH fields then stay empty and
    MSA-2 is ``control_id`` if one could be recovered). Returns ER7 text with CR segment terminators."""
    now = now or datetime.now(UTC)
    ts = now.strftime("%Y%m%d%H%M%S")
    code = report.ack_code()
    if original is not None:
        msh = original.msh
        # Re-encoded with the standard delimiters: the sender may have used custom ones.
        sending = (_reencode(original, 3), _reencode(original, 4))
        receiving = (_reencode(original, 5), _reencode(original, 6))
        event = msh.get(9, 1, 2).strip() or ""
        processing = msh.get(11).strip() or "P"
        version = msh.get(12).strip() or "2.5"
        control_id = msh.get(10).strip()
    else:
        sending = receiving = ("", "")
        event, processing, version = "", "P", "2.5"
    msh_line = msh_segment(
        sending=receiving,  # the ACK goes back: our receiving side becomes its sender
        receiving=sending,
        timestamp=ts,
        message_type=f"ACK^{event}^ACK" if event else "ACK",
        control_id=ack_id or uuid.uuid4().hex[:20],
        processing=processing,
        version=version,
    )
    lines = [msh_line, f"MSA|{code}|{escape(control_id or '', D)}"]
    findings = report.errors + report.warnings if code != "AA" else report.warnings
    lines.extend(_err(f) for f in findings[:MAX_ERR])
    return "\r".join(lines) + "\r"
