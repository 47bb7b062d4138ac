"""Sends an MSSanté job through the operator's SMTP relay (aiosmtplib) and classifies the answer."""

from __future__ import annotations

import ssl

import aiosmtplib

from gateway.delivery.jobs import DeliveryJob
from gateway.delivery.mssante.mail import build_mail
from gateway.delivery.result import DeliveryResult


class SmtpClient:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        starttls: bool = False,
        implicit_tls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.implicit_tls = starttls, implicit_tls
        self.username, self.password = username, password
        self.timeout_s = timeout_s
        self.tls_context = tls_context

    async def aclose(self) -> None:
        return None

    async def deliver(self, job: DeliveryJob) -> DeliveryResult:
        message = build_mail(job, self.sender)
        try:
            errors, response = await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                start_tls=self.starttls,
                use_tls=self.implicit_tls,
                username=self.username,
                password=self.password,
                timeout=self.timeout_s,
                tls_context=self.tls_context,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = sorted({r.code for r in exc.recipients})
            permanent = all(500 <= c < 600 for c in codes)
            return DeliveryResult(False, permanent, {"smtp": codes, "error": "recipients refused"})
        except aiosmtplib.SMTPResponseException as exc:
            return DeliveryResult(
                False, 500 <= exc.code < 600, {"smtp": exc.code, "error": type(exc).__name__}
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            return DeliveryResult.transient(error=type(exc).__name__)
        if errors:  # some recipients refused, others accepted: the mail is out; the refusals are recorded
            return DeliveryResult.delivered(partial_refusals=sorted({r.code for r in errors.values()}))
        return DeliveryResult.delivered(smtp_response=response[:80], message_id=message["Message-ID"])
