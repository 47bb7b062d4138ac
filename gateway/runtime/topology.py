"""Declares the RabbitMQ topology, idempotently, every time the gateway starts.

    producers --(routing key "inbox")--> <p>.inbound (direct) --> <p>.inbox (quorum)
    router --(routing key = destination)--> <p>.outbound (direct) --> <p>.out.dmp, <p>.out.mssante (quorum)
    rejected/expired jobs and poison messages --> <p>.dlx (fanout) --> <p>.dead (quorum)
    ACKs without reply_to --> <p>.acks (quorum)
    MDM built from mails of the BAL applicative (reverse flow) --> <p>.lps (quorum), read by the DPI

Quorum queues replicate on a cluster and count deliveries (``x-delivery-count``); their ``x-delivery-limit``
moves a message that keeps crashing its consumer to the dead-letter exchange instead of looping forever.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from gateway.config import BrokerNames

DESTINATIONS = ("dmp", "mssante")


@dataclass(slots=True)
class Topology:
    inbound: AbstractExchange
    outbound: AbstractExchange
    dead_letter: AbstractExchange
    inbox: AbstractQueue
    outbound_queues: dict[str, AbstractQueue]
    dead_letter_queue: AbstractQueue
    ack_queue: AbstractQueue
    lps_queue: AbstractQueue


def _quorum(names: BrokerNames, delivery_limit: int) -> dict:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": names.dead_letter_exchange,
    }


async def declare(channel: AbstractChannel, names: BrokerNames, *, delivery_limit: int = 20) -> Topology:
    durable = {"durable": True}
    inbound = await channel.declare_exchange(names.inbound_exchange, aio_pika.ExchangeType.DIRECT, **durable)
    outbound = await channel.declare_exchange(
        names.outbound_exchange, aio_pika.ExchangeType.DIRECT, **durable
    )
    dlx = await channel.declare_exchange(names.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, **durable)

    dead = await channel.declare_queue(
        names.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(dlx, routing_key="")
    inbox = await channel.declare_queue(names.inbox, durable=True, arguments=_quorum(names, delivery_limit))
    await inbox.bind(inbound, routing_key=names.inbox_routing_key)
    queues = {}
    for dest in DESTINATIONS:
        q = await channel.declare_queue(
            names.outbound_queue(dest), durable=True, arguments=_quorum(names, delivery_limit)
        )
        await q.bind(outbound, routing_key=dest)
        queues[dest] = q
    acks = await channel.declare_queue(names.ack_queue, durable=True, arguments={"x-queue-type": "quorum"})
    lps = await channel.declare_queue(names.lps_queue, durable=True, arguments={"x-queue-type": "quorum"})
    return Topology(inbound, outbound, dlx, inbox, queues, dead, acks, lps)


async def delete(channel: AbstractChannel, names: BrokerNames) -> None:
    """Remove everything :func:`declare` made (tests and `cisis-gateway` maintenance only)."""
    for q in [
        names.inbox,
        names.dead_letter_queue,
        names.ack_queue,
        names.lps_queue,
        *(names.outbound_queue(d) for d in DESTINATIONS),
    ]:
        await channel.queue_delete(q)
    for x in (names.inbound_exchange, names.outbound_exchange, names.dead_letter_exchange):
        await channel.exchange_delete(x)
