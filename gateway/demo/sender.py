"""Publishes HL7v2 files to the gateway's inbox (used by `cisis-gateway send` and the demo), and optionally
collects the ACKs on a private reply queue."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
from rich.console import Console
from rich.progress import Progress

from gateway.config import Settings
from gateway.formats.hl7v2.er7 import ER7Error, parse_message, split_messages
from gateway.runtime.topology import declare

ER7 = "x-application/hl7-v2+er7"


@dataclass
class AckSummary:
    code: str
    control_id: str
    rules: list[str] = field(default_factory=list)
    raw: bytes = b""


def read_ack(body: bytes) -> AckSummary:
    try:
        msg = parse_message(body)
    except ER7Error:
        return AckSummary("??", "", ["unreadable ACK"], body)
    msa = msg.segment("MSA")
    rules = [err.get(7) for err in msg.all("ERR") if err.get(4) == "E"]
    return AckSummary(msa.get(1) if msa else "??", msa.get(2) if msa else "", rules, body)


def messages_of(path: Path) -> list[bytes]:
    """The messages in a file; a file that cannot be split is sent whole so the gateway journals the error."""
    data = path.read_bytes()
    try:
        return split_messages(data) or [data]
    except ER7Error:
        return [data]


async def publish_files(
    settings: Settings,
    files: list[Path],
    *,
    console: Console | None = None,
    wait: bool = False,
    timeout_s: float = 60.0,
) -> dict[str, AckSummary | None]:
    items: list[tuple[str, bytes]] = []
    for path in files:
        bodies = messages_of(path)
        items.extend(
            (f"{path.name}#{i + 1}" if len(bodies) > 1 else path.name, b) for i, b in enumerate(bodies)
        )
    acks: dict[str, AckSummary | None] = {name: None for name, _ in items}
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        topology = await declare(channel, settings.names, delivery_limit=settings.delivery_limit)
        reply_queue = None
        by_correlation: dict[str, str] = {}
        done = asyncio.Event()
        if wait:
            reply_queue = await channel.declare_queue(exclusive=True, auto_delete=True)

            async def on_ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():
                    name = by_correlation.get(message.correlation_id or "")
                    if b"|ZAM^" in message.body[:200]:
                        return  # a business ack (ZAM) shares the correlation id; the ACK is what is awaited
                    if name is not None:
                        acks[name] = read_ack(message.body)
                        if all(a is not None for a in acks.values()):
                            done.set()

            await reply_queue.consume(on_ack)
        progress = Progress(console=console, transient=True) if console and len(items) > 10 else None
        task = progress.add_task("publishing", total=len(items)) if progress else None
        if progress:
            progress.start()
        try:
            for name, body in items:
                correlation = uuid.uuid4().hex
                by_correlation[correlation] = name
                await topology.inbound.publish(
                    aio_pika.Message(
                        body=body,
                        content_type=ER7,
                        message_id=uuid.uuid4().hex,
                        correlation_id=correlation,
                        reply_to=reply_queue.name if reply_queue else None,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=settings.names.inbox_routing_key,
                    mandatory=True,
                )
                if progress:
                    progress.advance(task)
        finally:
            if progress:
                progress.stop()
        if console:
            console.print(f"published {len(items)} message(s) to {settings.names.inbound_exchange}")
        if wait and items:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout_s)
    finally:
        await connection.close()
    return acks
