"""The BAL applicative end to end: the real gateway on RabbitMQ sends mails to the relay (aiosmtpd), the operator's
DSN and the reader's MDN arrive in a real dovecot over IMAPS with a client certificate, and the creator gets its
ZAM^Z02 / ZAM^Z03; a mail with IHE_XDM.ZIP becomes an MDM for the DPI, a refused one gets an error MDN."""

from __future__ import annotations

import base64
from email import message_from_bytes, policy

import aio_pika
import pytest

from gateway.delivery.mssante.imap import ImapMailbox
from gateway.delivery.mssante.receipts import parse_receipt
from gateway.delivery.mssante.tls import client_tls_context
from gateway.delivery.mssante.xdm import read_xdm
from gateway.formats.hl7v2.er7 import parse_message
from gateway.runtime.bal_reader import mail_journal_id
from tests.conftest import SAMPLES, wait_until
from tests.harness import make_harness
from tests.imap_server import Dovecot, make_pki, require_dovecot
from tests.reports import make_dsn, make_mdn, plain_mail

pytestmark = pytest.mark.broker

BAL = "gateway@demo.mssante.fr"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("bal-pki"))


@pytest.fixture
def dovecot(pki):
    require_dovecot()
    server = Dovecot(server_pem=pki / "server.pem", ca_pem=pki / "ca.pem", users={BAL: "bal-secret"})
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def h(prefix, tmp_path, dovecot, pki):
    harness = await make_harness(
        prefix,
        tmp_path,
        imap_host="127.0.0.1",
        imap_port=dovecot.port,
        imap_password="bal-secret",
        imap_ca_file=pki / "ca.pem",
        imap_cert_file=pki / "client.pem",
        imap_key_file=pki / "client.key",
        imap_poll_interval_s=2,
        mss_sender=BAL,
    )
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
async def operator(dovecot, pki):
    """Puts mails in the BAL the way the operator's MTA would deliver them."""
    box = ImapMailbox(
        "127.0.0.1",
        dovecot.port,
        username=BAL,
        password="bal-secret",
        tls_context=client_tls_context(
            ca_file=pki / "ca.pem", cert_file=pki / "client.pem", key_file=pki / "client.key"
        ),
        timeout_s=5,
    )
    await box.connect()
    yield box
    await box.aclose()


def zams(h, kind: str):
    return [parse_message(raw) for raw in h.zam_raw if parse_message(raw).msh.get(9, 1, 2) == kind]


async def sent_mails(h, count: int):
    await wait_until(lambda: len(h.mailbox.received) >= count, what=f"{count} mails at the relay")
    return h.mailbox.received


async def test_dsn_and_mdn_in_the_bal_become_zam_z02_and_z03_for_the_creator(h, operator):
    await h.start_gateway()
    await h.publish((SAMPLES / "01_ORU_R01_initial_CR-BIO.hl7").read_bytes(), message_id="m-receipts")
    received = await sent_mails(
        h, 2
    )  # the PS mail and the patient mail (sample 01: ACK_RECEPTION=Y and MSS=Y)
    for mail in received:
        await operator.append(make_dsn(mail.message.as_bytes(), mail.rcpt_tos[0]))
    await wait_until(lambda: len(zams(h, "Z02")) == 2, what="two ZAM^Z02")
    for zam in zams(h, "Z02"):
        obx = zam.segment("OBX")
        assert (obx.get(3), obx.get(4), obx.get(5)) == ("ACK_RECEPTION_MSS", "DEMO-0001", "Y")
        assert zam.segment("ERR") is None
    addresses = {zam.all("OBX")[1].get(5, 1, 4) for zam in zams(h, "Z02")}
    assert addresses == {m.rcpt_tos[0] for m in received}

    ps_mail = next(m for m in received if "patient.mssante.fr" not in m.rcpt_tos[0])
    await operator.append(make_mdn(ps_mail.message.as_bytes(), ps_mail.rcpt_tos[0]))
    await wait_until(lambda: len(zams(h, "Z03")) == 1, what="a ZAM^Z03")
    (z03,) = zams(h, "Z03")
    assert (z03.segment("OBX").get(3), z03.segment("OBX").get(5)) == ("ACK_LECTURE_MSS", "Y")

    # journal: the original message knows its receipts; each receipt is a message of its own, settled
    await wait_until(lambda: bal_empty(operator), what="the BAL emptied")  # settled = journaled first
    original = (await h.journal.search(control_id="DEMO-0001"))[0]
    steps = [e.step for e in await h.journal.events(original.message_id)]
    assert steps.count("mss_dsn") == 2 and steps.count("mss_mdn") == 1
    receipts = [r for r in await h.journal.search(limit=50) if r.source == "imap"]
    assert len(receipts) == 3 and {r.status for r in receipts} == {"delivered"}


async def _is(value, expected) -> bool:
    return await value == expected


async def bal_empty(operator) -> bool:
    return not await operator.fetch_new()


async def test_failed_dsn_gives_z02_n_with_the_smtp_code(h, operator):
    await h.start_gateway()
    await h.publish((SAMPLES / "01_ORU_R01_initial_CR-BIO.hl7").read_bytes(), message_id="m-bounce")
    (first, *_) = await sent_mails(h, 2)
    bounce = make_dsn(
        first.message.as_bytes(),
        first.rcpt_tos[0],
        action="failed",
        status="5.1.1",
        diagnostic="550 5.1.1 <destinataire> boite inconnue",
    )
    await operator.append(bounce)
    await wait_until(lambda: len(zams(h, "Z02")) == 1, what="a ZAM^Z02")
    (z02,) = zams(h, "Z02")
    assert z02.segment("OBX").get(5) == "N"
    assert z02.segment("ERR").get(5) == "550" and z02.segment("ERR").get(5, 1, 3) == "SMTPERRORCODE"
    # the same bounce read again (a crash before the mail left the folder) changes nothing
    await operator.append(bounce)
    await wait_until(lambda: bal_empty(operator), what="the BAL emptied")
    record = await h.journal.get(mail_journal_id(bounce))
    assert record is not None and record.status == "delivered"
    assert [e.step for e in await h.journal.events(record.message_id)].count("redelivered") == 1
    assert len(zams(h, "Z02")) == 1


async def test_uncorrelated_receipts_and_stray_mails_are_journaled_rejected_never_answered(h, operator):
    await h.start_gateway()
    stranger = plain_mail("dr.x@autre.mssante.fr", BAL, message_id="<not-ours@autre.mssante.fr>")
    unknown_dsn = make_dsn(stranger, "someone@autre.mssante.fr")  # about a mail the gateway never sent
    for raw in (unknown_dsn, stranger):
        await operator.append(raw)
    await wait_until(lambda: bal_empty(operator), what="the BAL emptied")
    got = {raw: await h.journal.get(mail_journal_id(raw)) for raw in (unknown_dsn, stranger)}
    assert got[unknown_dsn].status == "rejected"
    assert got[unknown_dsn].report["findings"][0]["rule"] == "MSS-RECEIPT-UNCORRELATED"
    assert got[stranger].status == "rejected"
    kept = await h.journal.get_payload(mail_journal_id(stranger))  # kept as read (IMAP hands out CRLF)
    assert kept is not None and kept.replace(b"\r\n", b"\n") == stranger.replace(b"\r\n", b"\n")
    assert h.zam_raw == [] and h.mailbox.received == []  # nobody answered
    counts = await h.journal.counts()
    assert counts["total"] == counts["rejected"] == 2


async def test_a_mail_with_xdm_becomes_an_mdm_for_the_dpi_and_a_refused_one_gets_an_error_mdn(h, operator):
    """The mails the gateway itself builds (sample 04, an N1 PDF, PS only) are the realistic input."""
    await h.start_gateway()
    await h.publish((SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7").read_bytes(), message_id="m-xdm")
    (mail,) = await sent_mails(h, 1)
    incoming = mail.message.as_bytes()

    lps: list[bytes] = []
    channel = await h._connection.channel()
    queue = await channel.get_queue(h.settings.names.lps_queue)

    async def on_lps(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            lps.append(message.body)

    await queue.consume(on_lps)
    await operator.append(incoming)
    await wait_until(lambda: len(lps) == 1, what="the MDM on the LPS queue")
    mdm = parse_message(lps[0])
    assert mdm.msh.get(9) == "MDM" and mdm.msh.get(9, 1, 2) == "T02" and mdm.msh.get(12) == "2.6"
    assert mdm.msh.get(21) == "1.1" and mdm.msh.get(21, 1, 2) == "CISIS_CDA_HL7_LPS"
    assert mdm.segment("PV1").get(2) == "N"
    cda = base64.b64decode(mdm.segment("OBX").get(5, 1, 5))
    zip_part = next(
        p
        for p in message_from_bytes(incoming, policy=policy.default).iter_attachments()
        if p.get_filename() == "IHE_XDM.ZIP"
    )
    assert cda == read_xdm(zip_part.get_payload(decode=True)).documents["DOC0001.XML"]  # the exact CDA bytes
    assert mdm.segment("PID").get(3, 1, 1) == "279035121518989"  # the CDA's INS
    assert mdm.all("OBX")[1].get(3) == str(mail.message["Message-ID"])  # the mail OBX: OBX-3.1 = Message-ID
    record = await h.journal.get(mail_journal_id(incoming))
    assert record.status == "delivered"

    # the same mail with its zip broken, asking for an MDN: refused, an error MDN goes back to the sender
    broken = message_from_bytes(incoming, policy=policy.default)
    for part in broken.iter_attachments():
        if part.get_filename() == "IHE_XDM.ZIP":
            part.set_content(
                b"PK\x03\x04 not really a zip", maintype="application", subtype="zip", filename="IHE_XDM.ZIP"
            )
    del broken["Message-ID"]
    broken["Message-ID"] = "<broken-xdm@autre.mssante.fr>"
    broken["Disposition-Notification-To"] = "dr.sender@autre.mssante.fr"
    del broken["From"]
    broken["From"] = "dr.sender@autre.mssante.fr"
    await operator.append(broken.as_bytes())
    await wait_until(lambda: len(h.mailbox.received) == 2, what="the error MDN at the relay")
    answer = h.mailbox.received[1]
    assert answer.rcpt_tos == ["dr.sender@autre.mssante.fr"]
    assert str(answer.message["Subject"]).startswith("[KO Intégration système !][906]")
    receipt = parse_receipt(answer.message.as_bytes())
    assert receipt is not None and receipt.kind == "mdn"
    assert receipt.original_message_id == "<broken-xdm@autre.mssante.fr>" and receipt.error_code == "906"
    refused_id = mail_journal_id(broken.as_bytes())

    async def refused_status() -> str | None:
        record = await h.journal.get(refused_id)
        return record.status if record else None

    # the answer leaves before the refusal is journaled: wait for the journal, bounded
    await wait_until(lambda: _is(refused_status(), "rejected"), what="the refusal journaled")
    refused = await h.journal.get(refused_id)
    finding = refused.report["findings"][0]
    assert (finding["rule"], finding["location"]) == ("MSS-IN-XDM-NOT-ZIP", "IHE_XDM.ZIP > /")
    assert len(lps) == 1  # nothing went to the DPI for the refused mail
