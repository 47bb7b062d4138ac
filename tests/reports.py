"""What an MSSanté operator and a recipient's mail client send back: DSN (RFC 3464) and MDN (RFC 8098).

Built with the standard library from the mail the relay actually received, the way an MTA and a client would:
the tests append them to the BAL applicative over IMAP and the gateway reads them like any other mail.
"""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid


def _headers_of(original: bytes) -> bytes:
    return original.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0] + b"\n"


def make_dsn(
    original: bytes,
    recipient: str,
    *,
    action: str = "delivered",
    status: str = "2.0.0",
    diagnostic: str | None = None,
    reporting_mta: str = "mx.operateur.mssante.fr",
) -> bytes:
    head = message_from_bytes(original, policy=policy.default)
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"MAILER-DAEMON@{reporting_mta}"
    report["To"] = str(head["From"])
    report["Subject"] = "Delivery Status Notification"
    report["Date"] = formatdate()
    report["Message-ID"] = make_msgid(domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"
    report.attach(MIMEText(f"Your message was {action}.\n", "plain", "utf-8"))
    per_message, per_recipient = Message(), Message()
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    per_recipient["Final-Recipient"] = f"rfc822; {recipient}"
    per_recipient["Action"] = action
    per_recipient["Status"] = status
    if diagnostic:
        per_recipient["Diagnostic-Code"] = f"smtp; {diagnostic}"
    status_part = MIMEBase("message", "delivery-status")
    status_part.set_payload([per_message, per_recipient])  # the field blocks, as the generator expects
    report.attach(status_part)
    headers = MIMEBase("text", "rfc822-headers")
    headers.set_payload(_headers_of(original).decode("utf-8", "replace"))
    report.attach(headers)
    return report.as_bytes()


def make_mdn(
    original: bytes,
    reader: str,
    *,
    disposition: str = "manual-action/MDN-sent-manually; displayed",
) -> bytes:
    head: Message = message_from_bytes(original, policy=policy.default)
    report = MIMEMultipart("report", report_type="disposition-notification")
    report["From"] = reader
    report["To"] = str(head["Disposition-Notification-To"] or head["From"])
    report["Subject"] = f"Lu : {head['Subject']}"
    report["Date"] = formatdate()
    report["Message-ID"] = make_msgid(domain=reader.rsplit("@", 1)[-1])
    report.attach(MIMEText("Le message a été affiché.\n", "plain", "utf-8"))
    fields = MIMEBase("message", "disposition-notification")
    fields.set_payload(
        f"Reporting-UA: client.mssante.fr; Webmail\nOriginal-Recipient: rfc822; {reader}\n"
        f"Final-Recipient: rfc822; {reader}\nOriginal-Message-ID: {head['Message-ID']}\n"
        f"Disposition: {disposition}\n"
    )
    report.attach(fields)
    return report.as_bytes()


def plain_mail(sender: str, to: str, subject: str = "Bonjour", message_id: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = message_id or make_msgid(domain="test.mssante.fr")
    msg.set_content("Un courriel sans pièce jointe.")
    return msg.as_bytes()
