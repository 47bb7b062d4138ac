"""Incoming delivery receipts: DSN (RFC 3464) and MDN (RFC 8098) -> ``Receipt``, and ``Receipt`` -> ZAMs.

``parse_receipt`` reads a mail as received from the mailbox and returns a ``Receipt`` for a
``multipart/report; report-type=delivery-status`` (DSN) or ``report-type=disposition-notification`` (MDN);
anything else (ordinary mail, other reports, unreadable MIME) gives None. Only the machine-readable report
fields and the original message's headers are read: bodies are never returned, logged or stored.

The original message is identified by its Message-ID (MDN ``Original-Message-ID``; for a DSN the Message-ID of
the returned ``text/rfc822-headers`` or ``message/rfc822`` part), kept with its angle brackets as
``mail.message_id_for`` writes it; a DSN's ``Original-Envelope-Id`` (ENVID) is kept as well.

Mapping to ZAM (cisis-facts §7.4): a DSN gives one ``ZAM^Z02`` per recipient with a final status
(delivered/relayed/expanded -> Y; failed -> N with the SMTP reply code in ERR-5); delayed (4.x.x) recipients
give nothing yet. An MDN gives one ``ZAM^Z03``: Y for displayed/processed/dispatched without an error,
N otherwise, the volet's ``processed/Error: <code>^<libellé>`` code in ERR-5.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from email import errors as email_errors
from email import message_from_bytes, message_from_string, policy
from email.message import Message
from typing import Literal, NamedTuple

from gateway.formats.hl7v2.zam import build_zam

MAX_BYTES = 25 * 1024 * 1024
_SMTP_CODE = re.compile(r"^\s*([245]\d\d)\b")
_STATUS = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
_OK_DSN_ACTIONS = frozenset({"delivered", "relayed", "expanded"})
_OK_MDN_TYPES = frozenset({"displayed", "processed", "dispatched"})


class RecipientResult(NamedTuple):
    address: str
    ok: bool
    smtp_code: str | None  # basic SMTP reply code ('550') from a Diagnostic-Code of type smtp
    status: str | None  # enhanced status code ('5.1.1'); None for an MDN

    @property
    def final(self) -> bool:
        """False for a transient result (DSN action delayed, status 4.x.x): another DSN may follow."""
        return not (self.status or "").startswith("4.")


@dataclass
class Receipt:
    kind: Literal["dsn", "mdn"]
    original_message_id: str | None
    recipients: list[RecipientResult] = field(default_factory=list)
    disposition: str | None = None  # MDN: 'automatic-action/MDN-sent-automatically; processed/error'
    error_code: str | None = None
    error_text: str | None = None
    envelope_id: str | None = None  # DSN Original-Envelope-Id

    def __repr__(self) -> str:  # reprs end up in logs: no addresses, no diagnostics
        return f"Receipt(kind={self.kind!r}, recipients={len(self.recipients)})"


def _clean(value: object) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _msgid(value: object) -> str | None:
    text = _clean(value)
    if not text:
        return None
    text = text.split()[0]
    return text if text.startswith("<") else f"<{text.strip('<>')}>"


def _typed(value: object) -> tuple[str, str]:
    """'rfc822; user@x' -> ('rfc822', 'user@x'); a value without a type -> ('', value)."""
    text = _clean(value)
    kind, sep, rest = text.partition(";")
    return (kind.strip().lower(), rest.strip()) if sep else ("", text)


def _blocks(part: Message) -> list[Message]:
    """The field blocks of a message/delivery-status or message/disposition-notification part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = [p for p in payload if isinstance(p, Message)]
        if blocks:
            return blocks
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload or "")
    chunks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    return [message_from_string(c.strip() + "\n\n", policy=policy.default) for c in chunks if c.strip()]


def _original_headers(report: Message) -> Message | None:
    for part in report.iter_parts():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0]
        elif ctype == "text/rfc822-headers":
            raw = part.get_payload(decode=True) or b""
            return message_from_bytes(raw.split(b"\n\n", 1)[0] + b"\n\n", policy=policy.default)
    return None


def _parse_dsn(report: Message, status_part: Message) -> Receipt:
    blocks = _blocks(status_part)
    per_message, per_recipient = (blocks[0], blocks[1:]) if blocks else (None, [])
    envid = _clean(per_message.get("Original-Envelope-Id")) if per_message is not None else ""
    recipients: list[RecipientResult] = []
    error_code = error_text = None
    for block in per_recipient:
        _, address = _typed(block.get("Final-Recipient") or block.get("Original-Recipient"))
        action = _clean(block.get("Action")).lower()
        if not address or not action:
            continue
        m = _STATUS.match(_clean(block.get("Status")))
        status = m.group(1) if m else {"failed": "5.0.0", "delayed": "4.0.0"}.get(action, "2.0.0")
        diag_type, diag = _typed(block.get("Diagnostic-Code"))
        code_m = _SMTP_CODE.match(diag) if diag_type == "smtp" else None
        smtp_code = code_m.group(1) if code_m else None
        ok = action in _OK_DSN_ACTIONS and not status.startswith(("4.", "5."))
        if action == "delayed":
            status = status if status.startswith("4.") else "4.0.0"  # keeps RecipientResult.final False
        recipients.append(RecipientResult(address, ok, smtp_code, status))
        if action == "failed" and error_code is None:
            error_code = smtp_code or status
            error_text = (diag or status)[:200]
    original = _original_headers(report)
    return Receipt(
        kind="dsn",
        original_message_id=_msgid(original.get("Message-ID")) if original is not None else None,
        recipients=recipients,
        error_code=error_code,
        error_text=error_text,
        envelope_id=envid or None,
    )


def _parse_mdn(status_part: Message) -> Receipt | None:
    blocks = _blocks(status_part)
    if not blocks:
        return None
    fields = blocks[0]
    disposition = _clean(fields.get("Disposition"))
    if not disposition:
        return None
    # 'automatic-action/MDN-sent-automatically; processed/Error: 906^Erreur Autre'
    _, _, dtype = disposition.partition(";")
    dtype, _, modifier = dtype.strip().partition("/")
    modifier, _, detail = modifier.partition(":")
    dtype, modifier, detail = dtype.strip().lower(), modifier.strip().lower(), detail.strip()
    error_code = error_text = None
    failed = bool(modifier) and modifier in {"error", "failed", "failure"}
    extra_error = _clean(fields.get("Error"))  # RFC 3798 Error field
    if failed or extra_error:
        text = detail or extra_error
        code, sep, label = text.partition("^")
        if sep:
            error_code, error_text = code.strip() or None, label.strip()[:200] or None
        else:
            error_text = text[:200] or None
    ok = dtype in _OK_MDN_TYPES and not failed and not extra_error
    _, address = _typed(fields.get("Final-Recipient") or fields.get("Original-Recipient"))
    return Receipt(
        kind="mdn",
        original_message_id=_msgid(fields.get("Original-Message-ID")),
        recipients=[RecipientResult(address, ok, None, None)] if address else [],
        disposition=disposition,
        error_code=error_code,
        error_text=error_text,
    )


def parse_receipt(raw: bytes, *, max_bytes: int = MAX_BYTES) -> Receipt | None:
    """A DSN or MDN as received (full RFC 5322 bytes) -> Receipt; anything else -> None."""
    if not raw or len(raw) > max_bytes:
        return None
    try:
        msg = message_from_bytes(raw, policy=policy.default)
        if msg.get_content_type() != "multipart/report":
            return None
        report_type = (msg.get_param("report-type") or "").lower()
        wanted = {
            "delivery-status": ("message/delivery-status", "message/global-delivery-status"),
            "disposition-notification": (
                "message/disposition-notification",
                "message/global-disposition-notification",
            ),
        }.get(report_type)
        if wanted is None:
            return None
        status_part = next((p for p in msg.iter_parts() if p.get_content_type() in wanted), None)
        if status_part is None:
            return None
        if report_type == "delivery-status":
            return _parse_dsn(msg, status_part)
        return _parse_mdn(status_part)
    except (email_errors.MessageError, ValueError, LookupError, TypeError, AttributeError):
        return None


def zams_for(
    receipt: Receipt,
    *,
    original_control_id: str,
    sending_app: str,
    sending_facility: str,
    receiving_app: str,
    receiving_facility: str,
    now: datetime | None = None,
    control_ids: list[str] | None = None,
) -> list[str]:
    """The ZAMs a receipt calls for: one Z02 per recipient with a final DSN status, one Z03 per MDN.

    ``control_ids`` (one per recipient of the receipt) fixes each ZAM's MSH-10, so that a receipt handled twice
    (a re-read after a crash) gives the same ZAMs and the creator can drop the duplicate."""
    header: dict = dict(
        original_control_id=original_control_id,
        sending_app=sending_app,
        sending_facility=sending_facility,
        receiving_app=receiving_app,
        receiving_facility=receiving_facility,
        now=now,
    )
    out: list[str] = []
    for n, r in enumerate(receipt.recipients):
        header["control_id"] = control_ids[n] if control_ids and n < len(control_ids) else None
        if receipt.kind == "dsn":
            if not r.final:
                continue
            code = None if r.ok else (r.smtp_code or r.status)
            text = None if r.ok else (receipt.error_text if code == receipt.error_code else r.status)
            out.append(
                build_zam("Z02", ok=r.ok, address=r.address, error_code=code, error_text=text, **header)
            )
        else:
            out.append(
                build_zam(
                    "Z03",
                    ok=r.ok,
                    address=r.address,
                    error_code=None if r.ok else receipt.error_code,
                    error_text=None if r.ok else (receipt.error_text or receipt.disposition),
                    **header,
                )
            )
    return out
