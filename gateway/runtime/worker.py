"""A destination worker: consumes one outbound queue and delivers each job, with an explicit ack policy.

- delivered (or already delivered under the same idempotency key) -> journal, then ack;
- transient failure -> journal 'delivery_failed', pause, nack with requeue (the next attempt);
- refused by the destination, or out of attempts -> journal 'dead_lettered', reject without requeue, so the
  quorum queue moves it to the dead-letter exchange.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, runtime_checkable

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from gateway.delivery.jobs import DeliveryJob
from gateway.delivery.result import DeliveryResult
from gateway.runtime.business_acks import BusinessAcks
from gateway.runtime.journal import Journal

log = logging.getLogger("cisis.worker")


class Destination(Protocol):
    async def deliver(self, job: DeliveryJob) -> DeliveryResult: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class MailDestination(Destination, Protocol):
    """A destination whose deliveries are mails answered later by receipts (MSSanté)."""

    def mail_message_id(self, job: DeliveryJob) -> str: ...


class DeliveryWorker:
    def __init__(
        self,
        name: str,
        destination: Destination,
        journal: Journal,
        *,
        max_attempts: int,
        retry_delay_s: float,
        business_acks: BusinessAcks | None = None,
    ) -> None:
        self.name = name
        self.destination = destination
        self.journal = journal
        self.max_attempts = max_attempts
        self.retry_delay_s = retry_delay_s
        self.business_acks = business_acks

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        try:
            job = DeliveryJob.model_validate_json(message.body)
        except ValidationError:
            log.error(
                "unreadable job dead-lettered destination=%s broker_id=%s", self.name, message.message_id
            )
            await message.reject(requeue=False)
            return
        try:
            await self.handle(job, message)
        except Exception as exc:
            log.error(
                "delivery handling failed, requeueing message_id=%s destination=%s error=%s",
                job.message_id,
                self.name,
                type(exc).__name__,
            )
            await asyncio.sleep(self.retry_delay_s)
            await message.nack(requeue=True)

    async def _already_delivered(self, job: DeliveryJob, first_message_id: str) -> None:
        """The document is already at the destination (a broker redelivery, or the sender resent it in a new
        message): nothing is sent again, and this message's own accounting still settles."""
        detail = {"key": job.idempotency_key, "first_message_id": first_message_id}
        await self.journal.step(job.message_id, "duplicate_suppressed", destination=self.name, detail=detail)
        if first_message_id != job.message_id:
            await self.journal.record_delivery(
                idempotency_key=f"{job.idempotency_key}#dup:{job.message_id}",
                message_id=job.message_id,
                destination=self.name,
                recipient=job.recipient_label(),
                status="delivered",
                detail={"duplicate_of": first_message_id},
            )

    async def handle(self, job: DeliveryJob, message: AbstractIncomingMessage) -> None:
        key = job.idempotency_key
        previous = await self.journal.delivery(key)
        if previous is not None and previous.status == "delivered":
            await self._already_delivered(job, previous.message_id)
            await message.ack()
            return
        if self.business_acks is not None and isinstance(self.destination, MailDestination):
            await self.business_acks.before_delivery(job, self.destination.mail_message_id(job))
        result = await self.destination.deliver(job)
        broker_count = int((message.headers or {}).get("x-delivery-count", 0) or 0)
        attempt = max(broker_count, previous.attempts if previous else 0) + 1
        common = {
            "idempotency_key": key,
            "message_id": job.message_id,
            "destination": self.name,
            "recipient": job.recipient_label(),
        }
        detail = {**result.detail, "attempt": attempt}
        if result.ok:
            await self.journal.record_delivery(status="delivered", detail=detail, **common)
            log.info("delivered message_id=%s destination=%s attempt=%d", job.message_id, self.name, attempt)
            if self.business_acks is not None:
                await self.business_acks.after_delivery(job, result, final=True)
            await message.ack()
        elif result.permanent or attempt >= self.max_attempts:
            detail["reason"] = "refused" if result.permanent else "attempts exhausted"
            await self.journal.record_delivery(status="dead_lettered", detail=detail, **common)
            log.warning(
                "dead-lettered message_id=%s destination=%s reason=%s",
                job.message_id,
                self.name,
                detail["reason"],
            )
            if self.business_acks is not None:
                await self.business_acks.after_delivery(job, result, final=True)
            await message.reject(requeue=False)
        else:
            await self.journal.record_delivery(status="failed", detail=detail, **common)
            log.info(
                "delivery failed, will retry message_id=%s destination=%s attempt=%d",
                job.message_id,
                self.name,
                attempt,
            )
            await asyncio.sleep(self.retry_delay_s)
            await message.nack(requeue=True)
