"""Throughput of the demo flow, next to a bare aio-pika relay measured in the same run on the same broker.

    .venv/bin/python bench/demo_throughput.py [--messages 200] [--relay-messages 2000] [--runs 3]

- relay: consume -> publish with confirm -> ack, nothing else (the ceiling any gateway here can reach),
  with the demo's own message (the CI-SIS ORU sample, ~82 KB) as the body;
- gateway (inbox): the demo flow up to the ACK: parse, validate, route, journal (SQLite), jobs confirmed;
- gateway (end to end): until every DMP submission and every mail (2 per message) is delivered and journaled.
Each figure is the median of --runs runs, with min and max; messages are pre-published, then the consumer is
started and the clock runs until the last one is done.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika

from gateway.config import Settings
from gateway.delivery.dmp.sandbox import DmpSandbox
from gateway.delivery.mssante.mailbox import LocalMailbox
from gateway.runtime.service import GatewayService
from gateway.runtime.topology import declare, delete

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "gateway/demo/samples/01_ORU_R01_initial_CR-BIO.hl7"
URL = "amqp://guest:guest@127.0.0.1:5672/"


def distinct(i: int) -> bytes:
    """The ORU sample with its own MSH-10 and CDA id, so no delivery is deduplicated."""
    segs = SAMPLE.read_bytes().decode("utf-8").split("\r")
    for n, seg in enumerate(segs):
        f = seg.split("|")
        if f[0] == "MSH":
            f[9] = f"B-{i}"
        elif f[0] == "OBX" and f[2] == "ED" and "MetaDMPMSS" not in f[3]:
            c = f[5].split("^")
            cda = base64.b64decode(c[4]).replace(
                b"1.2.250.1.213.1.1.1.55.2021.6.1", f"1.2.250.1.213.9.{i}".encode()
            )
            c[4] = base64.b64encode(cda).decode()
            f[5] = "^".join(c)
        segs[n] = "|".join(f)
    return "\r".join(segs).encode()


async def relay_run(n: int, body: bytes) -> float:
    conn = await aio_pika.connect_robust(URL)
    ch = await conn.channel(publisher_confirms=True)
    src = await ch.declare_queue(
        f"bench.src.{uuid.uuid4().hex[:6]}", durable=True, arguments={"x-queue-type": "quorum"}
    )
    dst = await ch.declare_queue(
        f"bench.dst.{uuid.uuid4().hex[:6]}", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await asyncio.gather(
        *(ch.default_exchange.publish(aio_pika.Message(body), routing_key=src.name) for _ in range(n))
    )
    cch = await conn.channel(publisher_confirms=True)
    await cch.set_qos(prefetch_count=32)
    q = await cch.get_queue(src.name)
    done = asyncio.Event()
    count = 0

    async def relay(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal count
        await cch.default_exchange.publish(aio_pika.Message(message.body), routing_key=dst.name)
        await message.ack()
        count += 1
        if count == n:
            done.set()

    start = time.perf_counter()
    tag = await q.consume(relay)
    await done.wait()
    elapsed = time.perf_counter() - start
    await q.cancel(tag)
    await ch.queue_delete(src.name)
    await ch.queue_delete(dst.name)
    await conn.close()
    return n / elapsed


async def gateway_run(n: int) -> tuple[float, float]:
    mailbox = LocalMailbox()
    mailbox.start()
    sandbox = DmpSandbox()
    await sandbox.start()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            amqp_url=URL,
            broker_prefix=f"bench{uuid.uuid4().hex[:6]}",
            journal_url=f"sqlite:///{tmp}/journal.db",
            routes_path=ROOT / "routes.yaml",
            transformers_dir=None,
            dmp_url=sandbox.url,
            smtp_port=mailbox.port,
        )
        conn = await aio_pika.connect_robust(URL)
        ch = await conn.channel(publisher_confirms=True)
        topo = await declare(ch, settings.names)
        bodies = [distinct(i) for i in range(n)]
        await asyncio.gather(
            *(
                topo.inbound.publish(
                    aio_pika.Message(b, message_id=uuid.uuid4().hex, content_type="x-application/hl7-v2+er7"),
                    routing_key="inbox",
                )
                for b in bodies
            )
        )
        service = GatewayService(settings)
        start = time.perf_counter()
        await service.start()
        journal = service.journal
        acked = None
        while True:
            counts = await journal.counts()
            if acked is None and await _acks(conn, settings) >= n:
                acked = time.perf_counter() - start
            if counts.get("delivered", 0) + counts.get("rejected", 0) >= n:
                break
            await asyncio.sleep(0.01)
        total = time.perf_counter() - start
        if acked is None:
            acked = total
        await service.stop()
        await delete(ch, settings.names)
        await conn.close()
    await sandbox.stop()
    mailbox.stop()
    assert len(sandbox.state.submissions) == n and len(mailbox.received) == 2 * n
    return n / acked, n / total


async def _acks(conn: aio_pika.abc.AbstractConnection, settings: Settings) -> int:
    probe = await conn.channel()
    try:
        q = await probe.declare_queue(settings.names.ack_queue, passive=True)
        return q.declaration_result.message_count or 0
    finally:
        await probe.close()


def summary(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--relay-messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    body = SAMPLE.read_bytes()
    relay, inbox, e2e = [], [], []
    for _ in range(args.runs):
        relay.append(await relay_run(args.relay_messages, body))
        a, b = await gateway_run(args.messages)
        inbox.append(a)
        e2e.append(b)
    result = {
        "message_bytes": len(body),
        "relay_msg_per_s": summary(relay),
        "gateway_inbox_to_ack_msg_per_s": summary(inbox),
        "gateway_end_to_end_msg_per_s": summary(e2e),
        "ratio_inbox_vs_relay": round(statistics.median(inbox) / statistics.median(relay), 3),
        "ratio_end_to_end_vs_relay": round(statistics.median(e2e) / statistics.median(relay), 3),
    }
    out = ROOT / "bench/results"
    out.mkdir(exist_ok=True)
    (out / "demo_throughput.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
