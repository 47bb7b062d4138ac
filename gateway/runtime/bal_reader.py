"""The BAL applicative (applicative mailbox) reader: every mail that arrives there is journaled and answered.

Three kinds of mail arrive in the gateway's mailbox:

- a **DSN** (RFC 3464) or an **MDN** (RFC 8098) about a mail the gateway sent: it is correlated by the original
  Message-ID with the journaled mail (``Journal.mail``), recorded as a step of the original message
  (``mss_dsn`` / ``mss_mdn``) and, when the creator asked for it (ACK_RECEPTION / ACK_LECTURE_MSS), turned into
  ``ZAM^Z02`` / ``ZAM^Z03`` published where the creator's ACK went;
- a mail carrying an **IHE_XDM.ZIP** (volet "Transmission au LPS d'un document CDA provenant d'un courriel
  MSSanté"): each document becomes an ``MDM^T02/T10/T04`` v2.6 (MSH-21 ``1.1^CISIS_CDA_HL7_LPS``) published to
  the LPS queue for the DPI; a refused one gets an error MDN back (or a standard error mail when the sender asked
  for no MDN), subject ``[KO Intégration système !][<code>] XDM/1.0/DDM+...``;
- anything else (a receipt that matches no mail of ours, a mail without XDM): journaled as ``rejected`` with
  its rule, never dropped, never answered (answering unknown mail is how mail loops start).

Each mail is a journal message of its own (source ``imap``, content type ``message/rfc822``, id derived from its
bytes), so ``received = delivered + rejected + dead-lettered`` covers the mailbox too: a handled receipt or
integrated mail ends ``delivered``, a refused one ``rejected``. A mail is taken out of the IMAP folder only after
that; if the gateway stops in between, the mail is read again, recognised by the journal, and finished.
Logs carry journal ids and rule codes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Literal, Protocol

from gateway.delivery.mssante.error_mdn import build_error_notification, refusal_error
from gateway.delivery.mssante.imap import FetchedMail, ImapError
from gateway.delivery.mssante.inbound_mail import MailRefused, read_incoming_mail
from gateway.delivery.mssante.receipts import Receipt, parse_receipt, zams_for
from gateway.delivery.result import DeliveryResult
from gateway.formats.hl7v2.mdm_lps import build_lps_mdms
from gateway.model import ValidationReport
from gateway.runtime.journal import Journal, MessageEntry
from gateway.runtime.publisher import Publisher

log = logging.getLogger("cisis.bal")

ER7 = "x-application/hl7-v2+er7"
SOURCE = "imap"
DONE = {"delivered", "rejected", "partially_delivered", "dead_lettered"}
POISON_ATTEMPTS = 5
#: Refusals never answered: not a document mail (no XDM), or not a mail at all.
UNANSWERED = frozenset({"MSS-IN-NOT-MIME", "MSS-IN-REPORT", "MSS-IN-NO-XDM", "MSS-IN-NO-FROM"})


class Mailbox(Protocol):
    async def connect(self) -> None: ...

    async def aclose(self) -> None: ...

    async def fetch_new(self) -> list[FetchedMail]: ...

    async def settle(self, uid: int) -> None: ...

    async def wait_for_mail(self) -> None: ...


class MailSender(Protocol):
    async def send(self, message: EmailMessage) -> DeliveryResult: ...


@dataclass(frozen=True, slots=True)
class LpsSettings:
    """MSH names and options of what the reverse flow sends to the DPI."""

    sending_app: str = "CISIS-GATEWAY"
    sending_facility: str = ""
    receiving_app: str = "DPI"
    receiving_facility: str = ""
    mail_obx: Literal["body", "rfc822"] = "body"
    #: Without an XDM action slot the volet's reading is "initial" (the slot is how a GESTIONNAIRE signals C/D);
    #: a PFI that signals replacements by the CDA alone needs True.
    replacement_from_cda: bool = False


def mail_journal_id(raw: bytes) -> str:
    """The journal id of a mail read from the BAL: its bytes decide it, so a re-read mail is recognised (line
    endings aside: IMAP servers hand out CRLF whatever the mail was stored with)."""
    return "mss-in-" + hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()[:32]


def _stable_id(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def _auto_submitted(raw: bytes) -> bool:
    """RFC 3834: never answer an automatic mail (reports, auto-replies, mailing-list robots)."""
    try:
        head = message_from_bytes(
            raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0] + b"\n\n", policy=policy.default
        )
    except Exception:
        return True
    value = str(head.get("Auto-Submitted", "no")).strip().lower()
    return value != "no" or head.get_content_type() == "multipart/report"


class BalReader:
    def __init__(
        self,
        mailbox: Mailbox,
        journal: Journal,
        publisher: Publisher,
        *,
        sender: str,
        smtp: MailSender | None = None,
        lps: LpsSettings | None = None,
        max_mail_bytes: int = 25 * 1024 * 1024,
        reconnect_delay_s: float = 5.0,
    ) -> None:
        self.mailbox = mailbox
        self.journal = journal
        self.publisher = publisher
        self.sender = sender
        self.smtp = smtp
        self.lps = lps or LpsSettings()
        self.max_mail_bytes = max_mail_bytes
        self.reconnect_delay_s = reconnect_delay_s
        self.handled = 0  # mails settled since start (tests, metrics)
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self._busy = False

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="bal-reader")

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Stop reading: a mail being handled is finished first (bounded by ``timeout_s``), a wait is cut."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            if not self._busy:
                task.cancel()
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
            if not done:
                task.cancel()
                await asyncio.wait({task})
        await self.mailbox.aclose()

    async def run(self) -> None:
        """Read the mailbox until stopped; a lost connection is re-opened after a pause, never fatal."""
        while not self._stopping.is_set():
            try:
                await self.mailbox.connect()
                while not self._stopping.is_set():
                    await self.drain()
                    await self.mailbox.wait_for_mail()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("BAL applicative unavailable, retrying error=%s", type(exc).__name__)
                await self.mailbox.aclose()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.reconnect_delay_s)

    async def drain(self) -> int:
        """Handle every mail now in the folder; returns how many were settled."""
        count = 0
        while True:
            mails = await self.mailbox.fetch_new()
            if not mails:
                return count
            for mail in mails:
                if self._stopping.is_set():
                    return count
                self._busy = True
                try:
                    await self.handle(mail.raw)
                    await self.mailbox.settle(mail.uid)
                finally:
                    self._busy = False
                self.handled += 1
                count += 1

    # -- one mail ---------------------------------------------------------------------------------------------

    async def handle(self, raw: bytes) -> str:
        """Journal one mail and do what it calls for; returns its journal id. Safe to call again for the same
        mail (a re-read after a crash): finished work is not redone."""
        mid = mail_journal_id(raw)
        existing = await self.journal.begin(
            MessageEntry(
                message_id=mid,
                received_at=datetime.now(UTC),
                content_type="message/rfc822",
                payload=raw,
                source=SOURCE,
            )
        )
        if existing is not None and existing.status in DONE:
            log.info("mail already handled message_id=%s", mid)
            return mid
        if existing is not None:
            # A mail whose handling keeps failing (the reader stopped, or crashed, before settling it) is given
            # up after POISON_ATTEMPTS reads instead of blocking the mailbox forever.
            reads = sum(1 for e in await self.journal.events(mid) if e.step == "redelivered")
            if reads >= POISON_ATTEMPTS:
                await self._reject(mid, "MSS-IN-POISON", "/", f"handling failed {reads} times; set aside")
                return mid
        if len(raw) > self.max_mail_bytes:
            await self._reject(mid, "MSS-IN-TOO-LARGE", "/", f"mail larger than {self.max_mail_bytes} bytes")
            return mid
        receipt = parse_receipt(raw)
        if receipt is not None:
            await self._on_receipt(mid, receipt)
        else:
            await self._on_mail(mid, raw)
        return mid

    async def _reject(self, mid: str, rule: str, location: str, message: str, **detail: object) -> None:
        report = ValidationReport()
        report.add(rule, location, message, source="Volet Echange de documents de santé (MSSanté)")
        await self.journal.step(
            mid,
            "rejected",
            status="rejected",
            report=report.model_dump(mode="json"),
            detail={"rules": [rule], **detail},
            message_type="MAIL",
        )
        log.info("mail rejected message_id=%s rule=%s", mid, rule)

    async def _on_receipt(self, mid: str, receipt: Receipt) -> None:
        original = receipt.original_message_id
        record = await self.journal.mail(original) if original else None
        if record is None:
            await self._reject(
                mid,
                "MSS-RECEIPT-UNCORRELATED",
                "Original-Message-ID" if receipt.kind == "mdn" else "text/rfc822-headers/Message-ID",
                f"{receipt.kind.upper()} for a mail this gateway has no record of",
                kind=receipt.kind,
            )
            return
        ctx = record.detail or {}
        wanted = bool(ctx.get("ack_reception") if receipt.kind == "dsn" else ctx.get("ack_lecture"))
        control_id = ctx.get("control_id")
        zams: list[str] = []
        if wanted and control_id:
            zams = zams_for(
                receipt,
                original_control_id=str(control_id),
                sending_app=str(ctx.get("sending_app") or "CISIS-GATEWAY"),
                sending_facility=str(ctx.get("sending_facility") or ""),
                receiving_app=str(ctx.get("receiving_app") or ""),
                receiving_facility=str(ctx.get("receiving_facility") or ""),
                control_ids=[_stable_id(mid, str(n)) for n in range(len(receipt.recipients))],
            )
        outcome = {
            "kind": receipt.kind,
            "ok": [r.ok for r in receipt.recipients],
            "final": [r.final for r in receipt.recipients],
            "codes": [r.smtp_code or r.status for r in receipt.recipients if not r.ok],
            "receipt": mid,
            "zams": len(zams),
        }
        # The original message learns of its receipt whether or not a ZAM was asked for.
        await self.journal.step(
            record.message_id, f"mss_{receipt.kind}", destination="mssante", detail=outcome
        )
        queue = None
        for zam in zams:
            queue = await self.publisher.publish_reply(
                zam.encode("utf-8"),
                content_type=ER7,
                reply_to=ctx.get("reply_to"),  # type: ignore[arg-type]
                correlation_id=ctx.get("correlation_id"),  # type: ignore[arg-type]
                message_id=record.message_id,
            )
        await self.journal.step(
            mid,
            "receipt_correlated",
            status="delivered",
            message_type=f"{receipt.kind.upper()}",
            detail={"original": record.message_id, "zams": len(zams), "queue": queue},
        )
        log.info(
            "receipt correlated message_id=%s original=%s kind=%s zams=%d",
            mid,
            record.message_id,
            receipt.kind,
            len(zams),
        )

    async def _on_mail(self, mid: str, raw: bytes) -> None:
        try:
            mail = read_incoming_mail(
                raw, max_bytes=self.max_mail_bytes, replacement_from_cda=self.lps.replacement_from_cda
            )
        except MailRefused as exc:
            answered = await self._answer_refusal(mid, raw, exc)
            await self._reject(mid, exc.rule, exc.location, str(exc), error_answer=answered)
            return
        mdms = build_lps_mdms(
            mail,
            sending_app=self.lps.sending_app,
            sending_facility=self.lps.sending_facility,
            receiving_app=self.lps.receiving_app,
            receiving_facility=self.lps.receiving_facility,
            recipients=[self.sender],  # PRT RCT: the BAL applicative the mail was read from
            mail_obx=self.lps.mail_obx,
        )
        await self.journal.step(
            mid,
            "integrated",
            status="accepted",
            expected_deliveries=len(mdms),
            message_type="MDM",
            action=mail.documents[0].action.value if len(mail.documents) == 1 else None,
            detail={"documents": len(mdms), "warnings": [w.rule for w in mail.warnings]},
        )
        for n, mdm in enumerate(mdms):
            queue = await self.publisher.publish_lps(
                mdm.encode("utf-8"),
                content_type=ER7,
                message_id=_stable_id(mid, "mdm", str(n)),
                source_id=mid,
            )
            await self.journal.record_delivery(
                idempotency_key=f"{mid}|lps|{n}",
                message_id=mid,
                destination="lps",
                recipient=queue,
                status="delivered",
                detail={"queue": queue},
            )
        log.info("mail integrated message_id=%s documents=%d", mid, len(mdms))

    async def _answer_refusal(self, mid: str, raw: bytes, exc: MailRefused) -> str | None:
        """Tell the sender its document was refused: an error MDN when it asked for one, else the volet's
        standard error mail. Not for a mail that is automatic, unreadable, without an address to answer, or
        not a document mail at all (no IHE_XDM.ZIP): answering strangers' mail is how loops and backscatter
        start. Returns what was sent ("mdn" / "mail"), or None."""
        if self.smtp is None or not exc.notifiable or exc.rule in UNANSWERED or _auto_submitted(raw):
            return None
        code, text = refusal_error(exc)
        assert exc.headers is not None  # notifiable
        message = build_error_notification(
            exc.headers, sender=self.sender, error_code=code, error_text=text, original=raw
        )
        kind = "mdn" if exc.headers.disposition_notification_to else "mail"
        result = await self.smtp.send(message)
        if not result.ok:
            # The refusal is journaled either way; an error answer that the relay refuses is not retried.
            log.warning("error answer not sent message_id=%s smtp=%s", mid, result.detail.get("smtp"))
            return None
        log.info("error answer sent message_id=%s kind=%s code=%s", mid, kind, code)
        return kind


__all__ = ["BalReader", "ImapError", "LpsSettings", "mail_journal_id"]
