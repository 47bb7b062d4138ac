"""Publishing with publisher confirms: a publish returns only once the broker has the message (or raises).

Jobs go to the outbound exchange with ``mandatory`` set, so a job that no queue would take is an error, not a
silent drop. Replies (ACKs) go to the sender's ``reply_to`` queue, or to the gateway's ack queue when there is
none or when the ``reply_to`` queue does not exist.
"""

from __future__ import annotations

import logging

import aio_pika
from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import DeliveryError, PublishError

from gateway.delivery.jobs import DeliveryJob
from gateway.runtime.topology import Topology

log = logging.getLogger("cisis.publisher")


class Publisher:
    def __init__(self, channel: AbstractChannel, topology: Topology) -> None:
        self.channel = channel
        self.topology = topology

    async def publish_job(self, job: DeliveryJob) -> None:
        message = aio_pika.Message(
            body=job.model_dump_json().encode("utf-8"),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=job.idempotency_key,
            headers={"x-cisis-message-id": job.message_id, "x-cisis-route": job.route},
        )
        await self.topology.outbound.publish(message, routing_key=job.destination, mandatory=True)

    async def publish_reply(
        self,
        body: bytes,
        *,
        content_type: str,
        reply_to: str | None,
        correlation_id: str | None,
        message_id: str,
    ) -> str:
        """Publish a reply; returns the queue it went to."""
        message = aio_pika.Message(
            body=body,
            content_type=content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=correlation_id or message_id,
            headers={"x-cisis-message-id": message_id},
        )
        if reply_to:
            try:
                await self.channel.default_exchange.publish(message, routing_key=reply_to, mandatory=True)
                return reply_to
            except (DeliveryError, PublishError):
                log.warning("reply_to queue unroutable, using the ack queue message_id=%s", message_id)
        await self.channel.default_exchange.publish(
            message, routing_key=self.topology.ack_queue.name, mandatory=True
        )
        return self.topology.ack_queue.name

    async def publish_lps(self, body: bytes, *, content_type: str, message_id: str, source_id: str) -> str:
        """Publish a message for the DPI (reverse flow) on the LPS queue; ``message_id`` is stable across a
        re-read of the same mail so that the DPI can drop a duplicate."""
        message = aio_pika.Message(
            body=body,
            content_type=content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            headers={"x-cisis-message-id": source_id},
        )
        queue = self.topology.lps_queue.name
        await self.channel.default_exchange.publish(message, routing_key=queue, mandatory=True)
        return queue
