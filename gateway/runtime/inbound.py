"""The inbox handler: one inbound message from reception to broker ack.

Ack policy (the promise the README writes down): the inbound message is acked only after (1) it is in the
journal, (2) every outbound job it produced is confirmed by the broker, and (3) the sender's ACK is confirmed by
the broker. Any failure before that leaves the message unacked; it is requeued (after a pause, so a journal or
broker outage does not spin) and handled again, and the quorum queue's delivery limit dead-letters it if it
keeps failing. A redelivered message is recognised by its id in the journal: its jobs may be published again
(the destination workers drop already-delivered idempotency keys) and its ACK is not sent twice.
"""

from __future__ import annotations

import asyncio
import logging

from aio_pika.abc import AbstractIncomingMessage

from gateway.runtime.journal import Journal, MessageEntry
from gateway.runtime.official import OfficialStep
from gateway.runtime.pipeline import Envelope, Outcome, Pipeline, json_reply
from gateway.runtime.publisher import Publisher

log = logging.getLogger("cisis.inbound")

#: Messages larger than this are processed in a worker thread so the event loop keeps serving others.
INLINE_LIMIT = 64 * 1024
DONE = {"delivered", "partially_delivered", "dead_lettered"}


class InboundHandler:
    def __init__(
        self,
        pipeline: Pipeline,
        journal: Journal,
        publisher: Publisher,
        *,
        retry_delay_s: float,
        official: OfficialStep | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.journal = journal
        self.publisher = publisher
        self.retry_delay_s = retry_delay_s
        self.official = official

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        env = Envelope(
            body=message.body,
            message_id=message.message_id,
            content_type=message.content_type,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            headers=dict(message.headers or {}),
        )
        try:
            await self.handle(env)
        except Exception as exc:
            log.error(
                "inbound handling failed, requeueing message_id=%s error=%s",
                env.gateway_id(),
                type(exc).__name__,
            )
            await asyncio.sleep(self.retry_delay_s)
            await message.nack(requeue=True)
            return
        await message.ack()

    async def process(self, env: Envelope) -> Outcome:
        if len(env.body) > INLINE_LIMIT:
            return await asyncio.to_thread(self.pipeline.process, env)
        return self.pipeline.process(env)

    async def handle(self, env: Envelope) -> Outcome:
        mid = env.gateway_id()
        existing = await self.journal.begin(
            MessageEntry(
                message_id=mid,
                received_at=env.received_at,
                content_type=env.content_type or "",
                payload=env.body,
                source=env.source,
                reply_to=env.reply_to,
                correlation_id=env.correlation_id,
            )
        )
        outcome = await self.process(env)
        if self.official is not None:
            await self.official.apply(outcome)
        ack_already_sent = False
        if existing is not None:
            ack_already_sent = any(e.step == "ack_sent" for e in await self.journal.events(mid))
        fields = {k: v for k, v in outcome.fields.items() if v is not None}
        report = outcome.report.model_dump(mode="json")
        if not outcome.accepted:
            if existing is None or existing.status == "received":
                await self.journal.step(
                    mid,
                    "rejected",
                    status="rejected",
                    report=report,
                    detail={"rules": outcome.report.rule_codes()},
                    **fields,
                )
            log.info("message rejected message_id=%s rules=%s", mid, ",".join(outcome.report.rule_codes()))
        elif existing is None or existing.status not in DONE:
            if existing is None or existing.status == "received":
                decision = outcome.decision
                await self.journal.step(
                    mid,
                    "routed",
                    status="accepted",
                    report=report,
                    expected_deliveries=len(outcome.jobs),
                    detail={
                        "routes": decision.matched if decision else [],
                        "targets": [f"{j.destination}:{j.recipients_kind or '-'}" for j in outcome.jobs],
                    },
                    **fields,
                )
            # Published even on a redelivery: we cannot know which confirms were lost in a crash, and the
            # workers drop jobs whose idempotency key is already delivered.
            await asyncio.gather(*(self.publisher.publish_job(job) for job in outcome.jobs))
            # One event for all the jobs (one journal write instead of one per destination).
            await self.journal.step(
                mid,
                "queued",
                detail={
                    "jobs": [
                        {
                            "destination": j.destination,
                            "recipients": j.recipient_label(),
                            "key": j.idempotency_key,
                        }
                        for j in outcome.jobs
                    ]
                },
            )
            log.info("message routed message_id=%s jobs=%d", mid, len(outcome.jobs))
        if not ack_already_sent:
            await self._reply(env, outcome)
        return outcome

    async def _reply(self, env: Envelope, outcome: Outcome) -> None:
        body = outcome.reply
        content_type = outcome.reply_content_type
        if body is None:  # not HL7: answer with the report as JSON
            body = json_reply(outcome)
            content_type = "application/json"
        queue = await self.publisher.publish_reply(
            body,
            content_type=content_type,
            reply_to=env.reply_to,
            correlation_id=env.correlation_id,
            message_id=outcome.message_id,
        )
        await self.journal.step(
            outcome.message_id, "ack_sent", detail={"code": outcome.report.ack_code(), "queue": queue}
        )
