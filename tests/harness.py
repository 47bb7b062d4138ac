"""A real gateway on the real RabbitMQ, with a real SMTP mailbox (aiosmtpd) and a real HTTP DMP sandbox."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika

from gateway.config import Settings
from gateway.delivery.dmp.sandbox import DmpSandbox
from gateway.delivery.mssante.mailbox import LocalMailbox
from gateway.demo.sender import AckSummary, read_ack
from gateway.runtime.journal import Journal, open_journal
from gateway.runtime.service import GatewayService
from gateway.runtime.topology import declare, delete
from tests.conftest import AMQP_URL, ROOT


@dataclass
class Harness:
    settings: Settings
    mailbox: LocalMailbox
    sandbox: DmpSandbox
    journal: Journal
    acks: dict[str, AckSummary] = field(default_factory=dict)  # the HL7 ACK (or JSON reply) by correlation id
    zams: list[AckSummary] = field(default_factory=list)  # business acks (ZAM), in arrival order
    zam_raw: list[bytes] = field(default_factory=list)
    service: GatewayService | None = None
    _connection: aio_pika.abc.AbstractRobustConnection | None = None
    _channel: aio_pika.abc.AbstractChannel | None = None
    _reply_queue: str | None = None

    async def start_gateway(self) -> GatewayService:
        self.service = GatewayService(self.settings, journal=self.journal)
        await self.service.start()
        return self.service

    async def stop_gateway(self) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(self.settings.amqp_url)
        self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare(self._channel, self.settings.names, delivery_limit=self.settings.delivery_limit)
        queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        self._reply_queue = queue.name

        async def on_ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                if message.body.startswith(b"MSH") and b"|ZAM^" in message.body[:200]:
                    self.zams.append(read_ack(message.body))
                    self.zam_raw.append(message.body)
                else:
                    self.acks[message.correlation_id or ""] = read_ack(message.body)

        await queue.consume(on_ack)

    async def publish(
        self,
        body: bytes,
        *,
        correlation_id: str | None = None,
        message_id: str | None = None,
        content_type: str = "x-application/hl7-v2+er7",
    ) -> str:
        assert self._channel is not None
        correlation_id = correlation_id or uuid.uuid4().hex
        exchange = await self._channel.get_exchange(self.settings.names.inbound_exchange)
        await exchange.publish(
            aio_pika.Message(
                body=body,
                content_type=content_type,
                correlation_id=correlation_id,
                message_id=message_id or uuid.uuid4().hex,
                reply_to=self._reply_queue,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self.settings.names.inbox_routing_key,
            mandatory=True,
        )
        return correlation_id

    async def queue_depth(self, name: str) -> int:
        """Ready messages in a queue, read on a fresh channel (a robust channel answers a passive declare of a
        queue it declared itself from its cache, with a stale count)."""
        assert self._connection is not None
        channel = await self._connection.channel()
        try:
            q = await channel.declare_queue(name, passive=True)
            return q.declaration_result.message_count or 0
        finally:
            await channel.close()

    async def close(self) -> None:
        await self.stop_gateway()
        if self._channel is not None:
            await delete(self._channel, self.settings.names)
        if self._connection is not None:
            await self._connection.close()
        await self.journal.close()
        await self.sandbox.stop()
        self.mailbox.stop()


async def make_harness(
    prefix: str, tmp_path: Path, *, journal_url: str | None = None, **overrides
) -> Harness:
    mailbox = LocalMailbox()
    mailbox.start()
    sandbox = DmpSandbox()
    await sandbox.start()
    settings = Settings(
        amqp_url=AMQP_URL,
        broker_prefix=prefix,
        journal_url=journal_url or f"sqlite:///{tmp_path / 'journal.db'}",
        routes_path=ROOT / "routes.yaml",
        transformers_dir=None,
        dmp_url=sandbox.url,
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,
        retry_delay_s=0.05,
        **overrides,
    )
    journal = open_journal(settings.journal_url)
    await journal.open()
    harness = Harness(settings, mailbox, sandbox, journal)
    await harness.connect()
    return harness
