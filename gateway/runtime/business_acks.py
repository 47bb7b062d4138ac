"""Business acknowledgements (ZAM, cisis-facts §7.4) sent to the document's creator when it asked for them
(MetaDMPMSS ACK_RECEPTION=Y): ``ZAM^Z01`` once the DMP answered (the sandbox today, ITI-41 later), and
``ZAM^Z02`` with the SMTP code when the MSSanté relay refused a mail for good. Z02 for delivered mails and Z03
come from the DSN / MDN read in the applicative mailbox (``runtime/bal_reader.py``): so that a receipt finds its
way back, every mail is journaled by its Message-ID *before* it is sent (:meth:`BusinessAcks.before_delivery`),
with what its ZAMs will need (``receipt_context``). ZAMs go where the creator's ACK went: its ``reply_to``
queue, or the gateway's ack queue.
"""

from __future__ import annotations

import logging

from gateway.delivery.jobs import DeliveryJob
from gateway.delivery.result import DeliveryResult
from gateway.formats.hl7v2.zam import build_zam
from gateway.runtime.journal import Journal
from gateway.runtime.publisher import Publisher

log = logging.getLogger("cisis.business_acks")
ER7 = "x-application/hl7-v2+er7"


def receipt_context(job: DeliveryJob) -> dict[str, object]:
    """What a later DSN/MDN of this job's mail needs to answer the creator. No patient data: flags, MSH names
    and the AMQP reply address."""
    sub = job.submission
    prov = sub.provenance
    return {
        "ack_reception": sub.flags.ack_reception,
        "ack_lecture": sub.flags.ack_lecture_mss,
        "control_id": prov.control_id,
        "reply_to": prov.reply_to,
        "correlation_id": prov.correlation_id,
        # the ZAM goes back: the gateway (the original receiver) is its sender
        "sending_app": prov.receiving_application or "CISIS-GATEWAY",
        "sending_facility": prov.receiving_facility or "",
        "receiving_app": prov.sending_application or "",
        "receiving_facility": prov.sending_facility or "",
        "recipients": job.recipients_kind,
    }


class BusinessAcks:
    def __init__(self, publisher: Publisher, journal: Journal | None = None) -> None:
        self.publisher = publisher
        self.journal = journal

    async def before_delivery(self, job: DeliveryJob, mail_message_id: str | None) -> None:
        """Journal the mail's Message-ID before it leaves, so that its receipts can never outrun the record."""
        if self.journal is None or mail_message_id is None:
            return
        await self.journal.record_mail(
            mail_message_id,
            message_id=job.message_id,
            idempotency_key=job.idempotency_key,
            detail=receipt_context(job),
        )

    async def after_delivery(self, job: DeliveryJob, result: DeliveryResult, *, final: bool) -> None:
        """Called by a destination worker once a delivery has ended (``final``: delivered, or given up)."""
        sub = job.submission
        prov = sub.provenance
        if not (final and sub.flags.ack_reception and prov.control_id):
            return
        code = result.detail.get("smtp") or result.detail.get("status") or result.detail.get("error")
        common = {
            "original_control_id": prov.control_id,
            "ok": result.ok,
            # the ZAM goes back: the gateway (the original receiver) is its sender
            "sending_app": prov.receiving_application or "CISIS-GATEWAY",
            "sending_facility": prov.receiving_facility or "",
            "receiving_app": prov.sending_application or "",
            "receiving_facility": prov.sending_facility or "",
            "error_code": None if result.ok else str(code) if code else None,
            "error_text": None if result.ok else str(result.detail.get("error") or "refused"),
        }
        if job.destination == "dmp":
            zams = [build_zam("Z01", **common)]
        elif job.destination == "mssante" and not result.ok:
            zams = [build_zam("Z02", address=address, **common) for address in job.addresses]
        else:
            return  # a delivered mail's Z02 comes from its DSN
        for zam in zams:
            await self.publisher.publish_reply(
                zam.encode("utf-8"),
                content_type=ER7,
                reply_to=prov.reply_to,
                correlation_id=prov.correlation_id,
                message_id=job.message_id,
            )
        log.info(
            "business ack sent message_id=%s destination=%s ok=%s", job.message_id, job.destination, result.ok
        )
