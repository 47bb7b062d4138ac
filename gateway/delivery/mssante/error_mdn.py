"""Error notifications of the reverse flow (volet LPSMSS, cisis-facts §8): when a mail of the BAL applicative
cannot be integrated (refused by the gateway, :class:`MailRefused`, or by the DPI in its ACK), its sender is told.

* :func:`build_error_mdn`: the RFC 8098 MDN the volet describes ("struct-msg-mdn"), for a mail that asked for one
  (``Disposition-Notification-To``): ``multipart/report; report-type=disposition-notification`` with
  (1) a French ``text/plain`` part carrying the code and the label, (2) ``message/disposition-notification``
  with ``Reporting-UA``, ``Original-Recipient``, ``Final-Recipient: rfc822; <BAL applicative>``,
  ``Original-Message-ID``, ``Disposition: automatic-action/MDN-sent-automatically; processed/Error:
  <code>^<libellé>`` and the RFC 8098 ``Error`` field, (3) the original mail as ``message/rfc822`` (required by
  the volet), then the original ``IHE_XDM.ZIP`` and PDF re-attached (the volet asks for it).
* :func:`build_error_mail`: the "courriel standard" of the volet ("struct-email-standard") for a mail that did
  not ask for an MDN: ``multipart/mixed`` with the same text, the original mail as ``message_original.eml`` and
  the re-attached ``IHE_XDM.ZIP``/PDF.
* :func:`build_error_notification` picks one of the two; :func:`refusal_error` turns a :class:`MailRefused` into
  the (code, libellé) pair to send.

Both carry the subject ``[KO Intégration système !][<code>] XDM/1.0/DDM+<rest of the original subject>``, go to
Disposition-Notification-To (MDN only), else Reply-To, else From, and are marked ``Auto-Submitted:
auto-replied`` (RFC 3834) so that auto-responders do not answer them. Their Message-ID derives from the original
Message-ID and the code: a redelivered refusal gives the same Message-ID.

Decisions:

* :func:`gateway.delivery.mssante.receipts.parse_receipt` (the gateway's own reader, which a PFI on the other
  side mirrors) reads the code and label back from the ``Disposition`` field. The machine-readable part is kept
  ASCII (accents folded: ``Auteur non autorisé`` -> ``Auteur non autorise``) because
  ``message/disposition-notification`` is an ASCII format (UTF-8 needs RFC 6533's global variant, which the
  MSSanté receivers are not known to read); the human part keeps the accents.
* ``Original-Recipient`` is the original mail's ``Original-Recipient`` when it has one, else the BAL applicative
  (the address the mail reached, as in the volet's example).
* The original mail is embedded (and its attachments re-attached) only up to ``max_original_bytes``; above that,
  or when only its headers are known (a mail refused as too large), part 3 is ``text/rfc822-headers``: RFC 6522
  allows it, and an error answer several times the size of the refused mail would be refused in turn.
* Gateway refusals use the volet's code ``906`` (Erreur Autre, table of the CONSOMMATEUR's application errors)
  with the gateway's rule code in the label: the sender's PFI knows 906, a person reading the mail gets the
  precise rule.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import format_datetime

from gateway.delivery.mssante.inbound_mail import IncomingMail, MailHeaders, MailRefused, read_headers

KO_PREFIX = "[KO Intégration système !]"
XDM_PREFIX = "XDM/1.0/DDM"
REPORTING_PRODUCT = "cisis-gateway"
#: Volet LPSMSS application error 906 "Erreur 'Autre'": what a gateway refusal is reported as.
REFUSAL_CODE = "906"
#: Above this size the original mail is not embedded nor its attachments re-attached (module docstring).
MAX_ORIGINAL_BYTES = 10 * 1024 * 1024
#: French labels of the gateway's refusal rules (prefix match, longest first).
REFUSAL_LABELS: tuple[tuple[str, str], ...] = (
    ("MSS-IN-REPLACEMENT-NO-PARENT", "Remplacement sans identifiant du document remplacé"),
    ("MSS-IN-PATIENT-MISMATCH", "Patient différent entre les métadonnées XDM et le document CDA"),
    ("MSS-IN-XDM-ACTION", "Action XDM inconnue (attendu C ou D)"),
    ("MSS-IN-SEVERAL-XDM", "Plusieurs pièces jointes IHE_XDM.ZIP"),
    ("MSS-IN-NO-XDM", "Pièce jointe IHE_XDM.ZIP absente"),
    ("MSS-IN-NO-CDA", "Aucun document CDA dans l'archive IHE_XDM.ZIP"),
    ("MSS-IN-XDM-", "Archive IHE_XDM.ZIP invalide"),
    ("MSS-IN-CDA-", "Document CDA illisible"),
    ("MSS-IN-TOO-LARGE", "Courriel trop volumineux"),
    ("MSS-IN-TOO-COMPLEX", "Structure MIME du courriel trop complexe"),
    ("MSS-IN-NO-FROM", "Adresse de l'expéditeur absente"),
)
_CODE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_SUBJECT_XDM = re.compile(r"^\s*XDM/1\.0/DDM[+\s]*", re.IGNORECASE)


def refusal_error(exc: MailRefused) -> tuple[str, str]:
    """(code, libellé) for an error notification about a mail the gateway refused: ``906`` and a French label
    naming the rule. The label carries no patient data (rules and messages never do)."""
    label = next((text for prefix, text in REFUSAL_LABELS if exc.rule.startswith(prefix)), "Erreur Autre")
    return REFUSAL_CODE, f"{label} ({exc.rule})"


def error_subject(original_subject: str, error_code: str) -> str:
    """``[KO Intégration système !][<code>] XDM/1.0/DDM+<original subject after its XDM prefix>``."""
    rest = _SUBJECT_XDM.sub("", " ".join(original_subject.split()), count=1)
    return f"{KO_PREFIX}[{_clean_code(error_code)}] {XDM_PREFIX}+{rest}"


def _clean_code(code: str) -> str:
    return _CODE_CHARS.sub("", code)[:40] or REFUSAL_CODE


def _ascii(text: str) -> str:
    """One ASCII line: accents folded, other non-ASCII characters dropped, line breaks and tabs made spaces."""
    folded = unicodedata.normalize("NFKD", " ".join(text.split()))
    return "".join(c for c in folded if c.isascii() and not unicodedata.combining(c))


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


#: What an error notification can be built from: the parsed mail, the headers of a refused one, or its bytes.
MailSource = IncomingMail | MailHeaders | bytes


def _parts(mail: MailSource, original: bytes | None) -> tuple[MailHeaders, bytes | None]:
    if isinstance(mail, IncomingMail):
        return mail.headers, original if original is not None else mail.raw
    if isinstance(mail, bytes | bytearray):
        headers = read_headers(bytes(mail))
        if headers is None:
            raise ValueError("no header section: nobody to notify")
        return headers, original if original is not None else bytes(mail)
    return mail, original


def _message_id(headers: MailHeaders, code: str, kind: str, domain: str) -> str:
    seed = f"{headers.message_id or headers.raw.hex()}|{code}|{kind}"
    return f"<{hashlib.sha256(seed.encode()).hexdigest()[:32]}.{kind}@{domain}>"


def _embeds(original: bytes | None, max_original_bytes: int) -> bool:
    return original is not None and len(original) <= max_original_bytes


def _human_text(error_code: str, error_text: str, headers: MailHeaders, *, embedded: bool) -> str:
    lines = [
        "Bonjour,",
        "",
        "Le message ci-dessous n'a pas pu être intégré automatiquement dans le DPI pour la raison suivante : "
        f"{_one_line(error_text)}",
        f"Code d'erreur : {_clean_code(error_code)}",
    ]
    if headers.message_id:
        lines.append(f"Courriel concerné : {headers.message_id}")
    lines.append("")
    if embedded:
        lines.append("Le courriel d'origine et ses pièces jointes sont joints à ce message.")
    else:
        lines.append(
            "Seul l'en-tête du courriel d'origine est joint à ce message (courriel trop volumineux)."
        )
    lines += [
        "Veuillez vérifier le document et le soumettre à nouveau après correction.",
        "",
        "Ce message a été envoyé automatiquement : merci de ne pas y répondre.",
    ]
    return "\n".join(lines) + "\n"


def _envelope(
    headers: MailHeaders, *, sender: str, to: str, subject: str, message_id: str, now: datetime | None
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = message_id
    if headers.message_id:
        msg["In-Reply-To"] = headers.message_id
        msg["References"] = headers.message_id
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834: no auto-response to this one
    return msg


def _original_parts(
    headers: MailHeaders,
    original: bytes | None,
    *,
    reattach: bool,
    max_original_bytes: int,
    as_attachment: bool,
) -> list[Message]:
    """Part 3 (the original mail, or its headers) and the re-attached IHE_XDM.ZIP / PDF."""
    if original is None or not _embeds(original, max_original_bytes):
        block = headers.raw or b"\r\n"
        part = EmailMessage()
        # Header sections are ASCII by RFC 5322; an 8-bit one (RFC 6532) travels base64-encoded.
        cte = "7bit" if block.isascii() else "base64"
        part.set_content(block, maintype="text", subtype="rfc822-headers", cte=cte)
        return [part]
    parsed = message_from_bytes(original, policy=policy.default)
    embedded = EmailMessage()
    embedded.set_content(parsed)  # message/rfc822
    if as_attachment:
        embedded.add_header("Content-Disposition", "attachment", filename="message_original.eml")
    parts: list[Message] = [embedded]
    if reattach and isinstance(parsed, EmailMessage):
        for att in parsed.iter_attachments():
            name = att.get_filename() or ""
            kind = att.get_content_type()
            if not (
                kind in ("application/zip", "application/pdf") or name.lower().endswith((".zip", ".pdf"))
            ):
                continue
            data = att.get_payload(decode=True)
            if not isinstance(data, bytes):
                continue
            copy = EmailMessage()
            maintype, _, subtype = kind.partition("/")
            copy.set_content(
                data, maintype=maintype, subtype=subtype, disposition="attachment", filename=name or None
            )
            parts.append(copy)
    return parts


def _notification(
    mail: MailSource,
    original: bytes | None,
    sender: str,
    error_code: str,
    error_text: str,
    domain: str | None,
    now: datetime | None,
    max_original_bytes: int,
    *,
    mdn: bool,
) -> tuple[MailHeaders, bytes | None, EmailMessage, str, str]:
    """What both notifications start with: the addressee, the envelope and the French text, as multipart/mixed.
    Raises ValueError when the mail gives nobody to answer."""
    headers, original = _parts(mail, original)
    to = headers.reply_address(mdn=mdn)
    if not to:
        asked = "Disposition-Notification-To, " if mdn else ""
        raise ValueError(f"the mail has neither {asked}Reply-To nor From: nobody to notify")
    domain = domain or sender.rsplit("@", 1)[-1]
    code = _clean_code(error_code)
    msg = _envelope(
        headers,
        sender=sender,
        to=to,
        subject=error_subject(headers.subject, code),
        message_id=_message_id(headers, code, "mdn" if mdn else "ko", domain),
        now=now,
    )
    msg.set_content(_human_text(code, error_text, headers, embedded=_embeds(original, max_original_bytes)))
    msg.make_mixed()
    return headers, original, msg, code, domain


def build_error_mdn(
    mail: MailSource,
    *,
    sender: str,
    error_code: str,
    error_text: str,
    domain: str | None = None,
    original: bytes | None = None,
    reattach: bool = True,
    now: datetime | None = None,
    max_original_bytes: int = MAX_ORIGINAL_BYTES,
) -> EmailMessage:
    """The negative MDN for ``mail``: an :class:`IncomingMail`, the :class:`MailHeaders` of a refused mail (with
    ``original`` its bytes when known), or the mail's bytes as fetched. ``sender`` is the BAL applicative (From, Final-Recipient);
    ``domain`` names the reporting host (Reporting-UA, Message-ID; default: the BAL's domain). Raises
    ValueError when the mail gives no address to answer."""
    headers, original, msg, code, domain = _notification(
        mail, original, sender, error_code, error_text, domain, now, max_original_bytes, mdn=True
    )
    label = _ascii(error_text)[:200] or "Erreur Autre"
    msg.set_type("multipart/report")
    msg.set_param("report-type", "disposition-notification")

    fields = [
        f"Reporting-UA: {_ascii(domain)}; {REPORTING_PRODUCT}",
        f"Original-Recipient: rfc822; {_ascii(headers.original_recipient or sender)}",
        f"Final-Recipient: rfc822; {_ascii(sender)}",
    ]
    if headers.message_id:
        fields.append(f"Original-Message-ID: {_ascii(headers.message_id)}")
    fields.append(f"Disposition: automatic-action/MDN-sent-automatically; processed/Error: {code}^{label}")
    fields.append(f"Error: {code}^{label}")  # RFC 8098 §3.2.7, for readers that ignore the modifier text
    notification = EmailMessage()
    notification["Content-Type"] = "message/disposition-notification"
    notification.set_payload("\r\n".join(fields) + "\r\n")
    msg.attach(notification)
    for part in _original_parts(
        headers, original, reattach=reattach, max_original_bytes=max_original_bytes, as_attachment=False
    ):
        msg.attach(part)
    return msg


def build_error_mail(
    mail: MailSource,
    *,
    sender: str,
    error_code: str,
    error_text: str,
    domain: str | None = None,
    original: bytes | None = None,
    reattach: bool = True,
    now: datetime | None = None,
    max_original_bytes: int = MAX_ORIGINAL_BYTES,
) -> EmailMessage:
    """The "courriel standard" error notification, for a mail that asked for no MDN: same subject, the French
    text, the original mail as ``message_original.eml`` and its ``IHE_XDM.ZIP``/PDF re-attached. Goes to
    Reply-To, else From. Raises ValueError when there is nobody to answer."""
    headers, original, msg, _code, _domain = _notification(
        mail, original, sender, error_code, error_text, domain, now, max_original_bytes, mdn=False
    )
    for part in _original_parts(
        headers, original, reattach=reattach, max_original_bytes=max_original_bytes, as_attachment=True
    ):
        msg.attach(part)
    return msg


def build_error_notification(
    mail: MailSource,
    *,
    sender: str,
    error_code: str,
    error_text: str,
    domain: str | None = None,
    original: bytes | None = None,
    now: datetime | None = None,
) -> EmailMessage:
    """An MDN when the mail asked for one (Disposition-Notification-To), else the standard error mail."""
    headers, _ = _parts(mail, original)
    build = build_error_mdn if headers.disposition_notification_to else build_error_mail
    return build(
        mail,
        sender=sender,
        error_code=error_code,
        error_text=error_text,
        domain=domain,
        original=original,
        now=now,
    )
