"""End to end on the real RabbitMQ: inbox -> parse -> validate -> route -> DMP sandbox (HTTP) and mailbox (SMTP),
with the HL7 ACK back on reply_to and every step in the journal."""

from __future__ import annotations

import base64

import pytest

from gateway.delivery.mssante.xdm import read_xdm
from tests.conftest import ANS_CDA, PS_ONLY, SAMPLES, ans_message, swap_document, wait_until
from tests.harness import make_harness

pytestmark = pytest.mark.broker

FINAL = {"rejected", "delivered", "partially_delivered", "dead_lettered"}


@pytest.fixture
async def h(prefix, tmp_path):
    harness = await make_harness(prefix, tmp_path)
    try:
        yield harness
    finally:
        await harness.close()


async def test_initial_oru_reaches_dmp_and_both_mailboxes_with_aa(h):
    await h.start_gateway()
    body = (SAMPLES / "01_ORU_R01_initial_CR-BIO.hl7").read_bytes()
    cda = (ANS_CDA / "BIO-CR-BIO_2021.01_Microbiologie_V1.xml").read_bytes()
    cid = await h.publish(body, message_id="m-initial")
    await wait_until(lambda: cid in h.acks, what="the ACK")
    ack = h.acks[cid]
    assert ack.code == "AA"
    assert ack.control_id == "DEMO-0001"  # MSA-2 = the original MSH-10
    await wait_until(
        lambda: len(h.sandbox.state.submissions) == 1 and len(h.mailbox.received) == 2,
        what="DMP submission and two mails",
    )
    sub = h.sandbox.state.submissions[0]
    assert sub["action"] == "initial"
    assert sub["documents"][0]["uniqueId"] == "1.2.250.1.213.1.1.1.55.2021.6.1"
    assert base64.b64decode(sub["documents"][0]["data"]) == cda
    assert sub["submissionSet"]["patientId"] == "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"
    recipients = sorted(r for m in h.mailbox.received for r in m.rcpt_tos)
    assert recipients == ["279035121518989@patient.mssante.fr", "adam.hoda@test-ci-sis.mssante.fr"]
    for mail in h.mailbox.received:
        assert mail.message["From"] == h.settings.mss_sender
        assert mail.message["X-MSS-CODECDA"] == "11502-2"
        assert mail.message["X-MSS-INS"] == "O"
        attachment = next(mail.message.iter_attachments())
        assert attachment.get_filename() == "IHE_XDM.ZIP"
        package = read_xdm(attachment.get_payload(decode=True))
        assert list(package.documents.values()) == [cda]  # the document, byte for byte, inside IHE_XDM.ZIP
        assert package.unique_ids == ["1.2.250.1.213.1.1.1.55.2021.6.1"]
    await wait_until(lambda: _status(h, "m-initial", "delivered"), what="journal status delivered")
    steps = [e.step for e in await h.journal.events("m-initial")]
    for step in ("received", "routed", "queued", "delivered", "ack_sent"):
        assert step in steps
    record = await h.journal.get("m-initial")
    assert record.document_id == "1.2.250.1.213.1.1.1.55.2021.6.1"
    assert record.patient_hash and "279035121518989" not in record.patient_hash


async def _status(h, message_id: str, status: str) -> bool:
    record = await h.journal.get(message_id)
    return record is not None and record.status == status


@pytest.mark.parametrize(
    ("relative", "action"),
    [
        ("MDM/Transmission initiale MDM/message_MDM_CR_Radio_INIT_N1_Base64.er7", "initial"),
        ("MDM/Remplacement MDM/message_MDM_CR_Radio_RPLC_N1.er7", "replacement"),
        ("MDM/Suppression MDM/message_MDM_CR_Radio_DEL_N1.er7", "deletion"),
    ],
)
async def test_mdm_t02_t10_t04_are_initial_replacement_deletion(h, relative, action):
    await h.start_gateway()
    body = swap_document(
        ans_message(relative),
        "IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml",
        flags=PS_ONLY,
        txa12="1.2.250.1.213.1.1.1.45.2024.2.1",
    )
    cid = await h.publish(body, message_id=f"m-{action}")
    await wait_until(lambda: cid in h.acks, what="the ACK")
    assert h.acks[cid].code == "AA", h.acks[cid].rules
    await wait_until(lambda: len(h.sandbox.state.submissions) == 1, what="the DMP submission")
    assert h.sandbox.state.submissions[0]["action"] == action
    record = await h.journal.get(f"m-{action}")
    assert record.action == action
    if action == "replacement":  # TXA-13 names the replaced document
        assert (
            h.sandbox.state.submissions[0]["replacedDocumentId"] == "1.2.250.1.71.4.2.2.120456789.71024000081"
        )


async def test_ans_mdm_flags_as_published_are_rejected_with_the_rule_named(h):
    await h.start_gateway()
    body = (SAMPLES / "03_MDM_T02_initial_CR-IMG_illegal_flags.hl7").read_bytes()
    cid = await h.publish(body, message_id="m-illegal")
    await wait_until(lambda: cid in h.acks, what="the ACK")
    assert h.acks[cid].code == "AE"
    assert h.acks[cid].rules == ["TRANS-MSS-FLAGS"]
    assert b"ERR||" in h.acks[cid].raw and b"207^Application error" in h.acks[cid].raw
    await wait_until(lambda: _status(h, "m-illegal", "rejected"), what="journal status rejected")
    record = await h.journal.get("m-illegal")
    assert [f["rule"] for f in record.report["findings"]] == ["TRANS-MSS-FLAGS"]
    assert await h.journal.get_payload("m-illegal") == body  # the message is kept
    assert h.sandbox.state.submissions == [] and h.mailbox.received == []


@pytest.mark.parametrize(
    ("body", "code", "rule"),
    [
        (b"PID|||123\rPV1|1|I\r", "AR", "ER7-NO-MSH"),
        (b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X1|P|2.5\rPID|||1^^^X^PI\r", "AR", "TRANS-MSG-TYPE"),
        (b"", "AR", "ER7-EMPTY"),
    ],
)
async def test_malformed_messages_get_a_negative_ack_and_are_journaled_not_lost(h, body, code, rule):
    await h.start_gateway()
    cid = await h.publish(body, message_id="m-bad")
    await wait_until(lambda: cid in h.acks, what="the ACK")
    assert h.acks[cid].code == code
    assert rule in h.acks[cid].rules
    await wait_until(lambda: _status(h, "m-bad", "rejected"), what="journal status rejected")
    assert await h.journal.get_payload("m-bad") == body
    assert await h.queue_depth(h.settings.names.inbox) == 0


async def test_corrupt_mail_body_in_ans_oru_is_named_by_segment_and_field(h):
    await h.start_gateway()
    # The ANS ORU as published (conforming CDA swapped in): its CORPSMAIL_PS Base64 is cut short.
    text = ans_message("ORU/Transmission initiale ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7")
    cid = await h.publish(text, message_id="m-corps")
    await wait_until(lambda: cid in h.acks, what="the ACK")
    assert h.acks[cid].code == "AE"
    assert "TRANS-CORPSMAIL" in h.acks[cid].rules
    assert b"ERR||OBX^12^5|102^Data type error" in h.acks[cid].raw


async def test_transient_dmp_failure_is_retried_and_permanent_refusal_is_dead_lettered(h):
    await h.start_gateway()
    h.sandbox.state.fail_next, h.sandbox.state.fail_status = 2, 503
    body = (SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes()
    await h.publish(body, message_id="m-retry")
    await wait_until(lambda: _status(h, "m-retry", "delivered"), what="delivery after retries")
    dmp = next(d for d in await h.journal.deliveries("m-retry") if d.destination == "dmp")
    assert dmp.status == "delivered" and dmp.attempts == 3

    h.sandbox.state.fail_next, h.sandbox.state.fail_status = 1, 422
    await h.publish(distinct_document(1), message_id="m-refused")
    await wait_until(lambda: _status(h, "m-refused", "partially_delivered"), what="dead-lettered DMP job")
    dmp = next(d for d in await h.journal.deliveries("m-refused") if d.destination == "dmp")
    assert dmp.status == "dead_lettered" and dmp.detail["reason"] == "refused"
    await wait_until(lambda: _depth_is(h, h.settings.names.dead_letter_queue, 1), what="job in the DLQ")


async def test_a_4xx_from_the_mssante_relay_is_retried_and_the_mail_delivered_once(h):
    await h.start_gateway()
    h.mailbox.refuse_next(2)  # "451 4.3.0": transient
    body = (SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes()
    await h.publish(body, message_id="m-451")
    await wait_until(lambda: _status(h, "m-451", "delivered"), what="delivery after two 451")
    mail = next(d for d in await h.journal.deliveries("m-451") if d.destination == "mssante")
    assert mail.status == "delivered" and mail.attempts == 3
    steps = [e.step for e in await h.journal.events("m-451") if e.destination == "mssante"]
    assert steps.count("delivery_failed") == 2
    assert len(h.mailbox.received) == 1  # delivered once
    # the mail was journaled by its Message-ID before it left: a DSN will find its message
    record = await h.journal.mail(str(h.mailbox.received[0].message["Message-ID"]))
    assert record is not None and record.message_id == "m-451"


async def test_a_document_sent_twice_is_delivered_once_and_both_messages_settle(h):
    await h.start_gateway()
    body = distinct_document(7)
    await h.publish(body, message_id="m-first")
    await wait_until(lambda: _status(h, "m-first", "delivered"), what="first message delivered")
    await h.publish(body, message_id="m-resent")  # the sender resends the same document
    await wait_until(lambda: _status(h, "m-resent", "delivered"), what="resent message settled")
    assert len(h.sandbox.state.submissions) == 1
    assert len(h.mailbox.received) == 1
    steps = [e.step for e in await h.journal.events("m-resent")]
    assert steps.count("duplicate_suppressed") == 2


async def _depth_is(h, queue: str, n: int) -> bool:
    return await h.queue_depth(queue) == n


def distinct_document(i: int) -> bytes:
    """Sample 04 (MDM, PS-only flags) carrying its own document: the CDA id and MSH-10 made unique."""
    text = (SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes().decode("utf-8")
    segs = text.split("\r")
    for n, seg in enumerate(segs):
        f = seg.split("|")
        if f[0] == "MSH":
            f[9] = f"RS-{i:04d}"
        elif f[0] == "TXA":
            f[12] = f"1.2.250.1.213.1.1.1.45.2024.2.1.{i}"
        elif f[0] == "OBX" and f[2] == "ED" and "MetaDMPMSS" not in f[3]:
            c = f[5].split("^")
            cda = base64.b64decode(c[4]).replace(
                b'<id root="1.2.250.1.213.1.1.1.45.2024.2.1"/>',
                f'<id root="1.2.250.1.213.1.1.1.45.2024.2.1.{i}"/>'.encode(),
                1,
            )
            c[4] = base64.b64encode(cda).decode()
            f[5] = "^".join(c)
        segs[n] = "|".join(f)
    return "\r".join(segs).encode("utf-8")


async def test_stop_mid_stream_and_restart_loses_nothing_and_delivers_nothing_twice(h):
    n = 40
    for i in range(n):
        await h.publish(distinct_document(i), message_id=f"rs-{i}")
    await h.start_gateway()
    await wait_until(lambda: len(h.sandbox.state.submissions) >= 3, what="the first deliveries")
    await h.stop_gateway()  # mid-stream: messages in flight finish or go back to the queue
    await h.start_gateway()

    async def all_delivered() -> bool:
        return (await h.journal.counts()).get("delivered", 0) == n

    await wait_until(all_delivered, timeout_s=90, what="all messages delivered after the restart")
    unique_ids = [d["uniqueId"] for s in h.sandbox.state.submissions for d in s["documents"]]
    assert sorted(unique_ids) == sorted(f"1.2.250.1.213.1.1.1.45.2024.2.1.{i}" for i in range(n))
    assert len(h.mailbox.received) == n  # one PS mail per document, none twice
    assert len({m.message["Message-ID"] for m in h.mailbox.received}) == n
    counts = await h.journal.counts()
    assert counts["total"] == n
    acked = [cid for cid, ack in h.acks.items() if ack.code == "AA"]
    assert len(acked) == n


async def test_business_acks_z01_after_the_dmp_and_z02_when_the_relay_refuses_a_mail(h):
    """Sample 01 asks for reception acks (ACK_RECEPTION=Y): a ZAM^Z01 follows the DMP's answer; a mail the
    relay refuses for good (550) produces a ZAM^Z02 N with the SMTP code."""
    from gateway.formats.hl7v2.er7 import parse_message

    await h.start_gateway()
    h.mailbox.handler.refuse_status = "550 5.1.1 user unknown"
    body = (SAMPLES / "01_ORU_R01_initial_CR-BIO.hl7").read_bytes()
    await h.publish(body, message_id="m-zam")

    def kinds() -> list[str]:
        return sorted(parse_message(raw).msh.get(9, 1, 2) for raw in h.zam_raw)

    await wait_until(lambda: kinds() == ["Z01", "Z02", "Z02"], what="one Z01 and two Z02")
    for raw in h.zam_raw:
        zam = parse_message(raw)
        obx = zam.segment("OBX")
        assert obx.get(4) == "DEMO-0001"  # OBX-4 = the original MSH-10
        if zam.msh.get(9, 1, 2) == "Z01":
            assert obx.get(5) == "Y" and obx.get(3) == "ACK_RECEPTION_DMP"
        else:
            assert obx.get(5) == "N" and zam.segment("ERR").get(5) == "550"


def with_flag(body: bytes, code: str, value: str) -> bytes:
    segs = body.decode("utf-8").split("\r")
    for n, seg in enumerate(segs):
        f = seg.split("|")
        if f[0] == "OBX" and f[3].split("^")[0] == code:
            f[5] = f"{value}^^expandedYes-NoIndicator"
            segs[n] = "|".join(f)
    return "\r".join(segs).encode("utf-8")


async def test_a_document_invisible_to_the_patient_never_reaches_the_patient_mailbox(h):
    await h.start_gateway()
    # PS-only document (INVISIBLE_PATIENT=Y): the PS mail only
    await h.publish((SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes(), message_id="m-ps")
    await wait_until(lambda: _status(h, "m-ps", "delivered"), what="the PS-only document delivered")
    # the same flags asking for the patient mail as well: refused as a whole, nothing mailed
    sample = (SAMPLES / "01_ORU_R01_initial_CR-BIO.hl7").read_bytes()
    cid = await h.publish(with_flag(sample, "INVISIBLE_PATIENT", "Y"), message_id="m-invisible")
    await wait_until(lambda: cid in h.acks, what="the ACK of the invisible document")
    assert h.acks[cid].code in {"AE", "AR"}
    record = await h.journal.get("m-invisible")
    assert record.status == "rejected"
    assert any(f["rule"].startswith(("TRANS-MSS", "MSS-")) for f in record.report["findings"])
    assert [m.rcpt_tos for m in h.mailbox.received] == [h.mailbox.received[0].rcpt_tos]
    assert not any(r.endswith("@patient.mssante.fr") for m in h.mailbox.received for r in m.rcpt_tos)
