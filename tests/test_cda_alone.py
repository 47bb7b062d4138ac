"""A CDA published alone, with its routing hints in AMQP headers, goes through the same rules and routes."""

from __future__ import annotations

import json

import pytest

from gateway.routing import load_routes
from gateway.runtime.pipeline import Envelope, Pipeline
from tests.conftest import ANS_CDA, ROOT, require_shared, wait_until
from tests.harness import make_harness

PIPELINE = Pipeline(load_routes(ROOT / "routes.yaml"), {}, "k")
HINTS = {
    "x-cisis-flags": "DESTDMP=Y;DESTMSSANTEPS=Y;DESTMSSANTEPAT=N;INVISIBLE_PATIENT=Y",
    "x-cisis-recipients": "adam.hoda@test-ci-sis.mssante.fr",
    "x-cisis-identity-status": "QUAL",
    "x-cisis-sender-ps": "801234567866",
    "x-cisis-sender-org": "1120459876",
}


def cda(name: str = "BIO-TROD_2024.01_COVID-19.xml") -> bytes:
    require_shared()
    return (ANS_CDA / name).read_bytes()


def test_conforming_cda_with_hints_is_routed_like_its_hl7v2_twin():
    out = PIPELINE.process(Envelope(body=cda(), content_type="application/xml", headers=HINTS))
    assert out.accepted, out.report.rule_codes()
    assert [(j.destination, j.recipients_kind) for j in out.jobs] == [("dmp", None), ("mssante", "ps")]
    assert out.reply is None  # answered with JSON by the runtime, not with an HL7 ACK
    sub = out.submission
    assert sub.patient.ins == "279035121518989" and sub.patient.identity_status == "QUAL"
    assert sub.documents[0].content.data == cda()


@pytest.mark.parametrize(
    ("headers", "rule"),
    [
        ({}, "CDA-HINT-FLAGS-MISSING"),
        ({**HINTS, "x-cisis-identity-status": "PROV"}, "TRANS-DMP-INS"),
        ({**HINTS, "x-cisis-recipients": ""}, "TRANS-MSS-RECIPIENTS"),
        (
            {**HINTS, "x-cisis-flags": "DESTDMP=Y;DESTMSSANTEPS=Y;DESTMSSANTEPAT=Y;INVISIBLE_PATIENT=Y"},
            "TRANS-MSS-FLAGS",
        ),
        ({**HINTS, "x-cisis-flags": "DESTDMP=MAYBE"}, "CDA-HINT-FLAG"),
    ],
)
def test_missing_or_wrong_hints_are_named(headers, rule):
    out = PIPELINE.process(Envelope(body=cda(), content_type="application/xml", headers=headers))
    assert not out.accepted and rule in out.report.rule_codes()


def test_structuration_minimale_applies_to_a_cda_sent_alone():
    broken = cda().replace(b"<setId", b"<notSetId", 1).replace(b"</setId>", b"</notSetId>")
    out = PIPELINE.process(Envelope(body=broken, content_type="application/xml", headers=HINTS))
    assert "STRUCMIN-SETID" in out.report.rule_codes()
    bad_xml = PIPELINE.process(
        Envelope(body=b"<ClinicalDocument><oops>", content_type="text/xml", headers=HINTS)
    )
    assert bad_xml.report.rule_codes() == ["XML-NOT-WELL-FORMED"]


@pytest.mark.broker
async def test_cda_alone_through_the_broker_gets_a_json_reply_and_is_delivered(prefix, tmp_path):
    h = await make_harness(prefix, tmp_path)
    try:
        await h.start_gateway()
        import aio_pika

        exchange = await h._channel.get_exchange(h.settings.names.inbound_exchange)
        await exchange.publish(
            aio_pika.Message(
                body=cda(),
                content_type="application/xml",
                message_id="cda-1",
                correlation_id="c1",
                reply_to=h._reply_queue,
                headers=HINTS,
            ),
            routing_key=h.settings.names.inbox_routing_key,
        )
        await wait_until(lambda: "c1" in h.acks, what="the JSON reply")
        reply = json.loads(h.acks["c1"].raw)
        assert reply["ack"] == "AA" and reply["accepted"] is True and reply["messageId"] == "cda-1"
        await wait_until(
            lambda: len(h.sandbox.state.submissions) == 1 and len(h.mailbox.received) == 1,
            what="DMP submission and PS mail",
        )

        async def delivered() -> bool:
            return (await h.journal.get("cda-1")).status == "delivered"

        await wait_until(delivered, what="journal status delivered")
    finally:
        await h.close()
