"""The MSSanté SMTP client against real aiosmtpd servers on loopback that require a client certificate.

A throwaway CA (trustme) signs the server certificate (127.0.0.1 / localhost) and the gateway's client
certificate; the servers refuse any client without a certificate from that CA.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from datetime import UTC, datetime

import pytest
import trustme
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization

from gateway.delivery.jobs import DeliveryJob
from gateway.delivery.mssante.smtp import SmtpClient
from gateway.delivery.mssante.tls import TlsConfigError, client_tls_context
from gateway.model import DocumentAction, DocumentSubmission, MetaFlags, PatientIdentity, Provenance

SENDER = "gateway@hopital.mssante.fr"


def job(n: int = 0) -> DeliveryJob:
    sub = DocumentSubmission(
        provenance=Provenance(
            message_id=f"m{n}",
            received_at=datetime.now(UTC),
            message_type="ORU^R01^ORU_R01",
            sending_application="SIL",
        ),
        patient=PatientIdentity(
            ins="279035121518989", ins_oid="1.2.250.1.213.1.4.10", identity_status="VALI"
        ),
        action=DocumentAction.INITIAL,
        flags=MetaFlags(modif_conf_code=False, destmssanteps=True),
    )
    return DeliveryJob(
        message_id=f"m{n}",
        idempotency_key=f"uid{n}|initial|mssante|ps",
        destination="mssante",
        recipients_kind="ps",
        addresses=["dr.house@hopital.mssante.fr"],
        route="test",
        submission=sub,
    )


# -- certificates ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("gateway.hopital.example")
    ca.cert_pem.write_to_path(d / "ca.pem")
    other_ca.cert_pem.write_to_path(d / "other-ca.pem")
    client.cert_chain_pems[0].write_to_path(d / "client.pem")
    client.private_key_pem.write_to_path(d / "client.key")
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    (d / "client-enc.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret-pass"),
        )
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    return {"dir": d, "server_ctx": server_ctx}


def mtls(pki) -> ssl.SSLContext:
    d = pki["dir"]
    return client_tls_context(ca_file=d / "ca.pem", cert_file=d / "client.pem", key_file=d / "client.key")


# -- servers --------------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self, reply: str = "250 OK queued", delay: float = 0.0) -> None:
        self.reply, self.delay = reply, delay
        self.messages: list[bytes] = []
        self.peers: set = set()
        self.active = self.max_active = 0

    async def handle_DATA(self, server, session, envelope):
        self.peers.add(session.peer)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
        if self.reply.startswith("250"):
            self.messages.append(envelope.content)
        return self.reply


class CountingController(Controller):
    """Counts the TCP connections the server accepted (the protocol factory runs once per connection)."""

    connections = 0

    def factory(self):
        self.connections += 1
        return super().factory()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["starttls", "implicit"])
def server(request, pki):
    """(mode, port, handler, controller) of a relay requiring a client certificate."""
    handler = Recorder()
    port = free_port()
    if request.param == "starttls":
        ctl = CountingController(
            handler, hostname="127.0.0.1", port=port, tls_context=pki["server_ctx"], require_starttls=True
        )
    else:
        ctl = CountingController(handler, hostname="127.0.0.1", port=port, ssl_context=pki["server_ctx"])
    ctl.start()
    ctl.connections = 0  # start() probes the listener once
    yield request.param, port, handler, ctl
    ctl.stop()


def client(mode: str, port: int, ctx: ssl.SSLContext | None, **kw) -> SmtpClient:
    return SmtpClient(
        "127.0.0.1",
        port,
        sender=SENDER,
        starttls=mode == "starttls",
        implicit_tls=mode == "implicit",
        tls_context=ctx,
        timeout_s=5.0,
        **kw,
    )


# -- tests ----------------------------------------------------------------------------------------------------


async def test_client_with_certificate_delivers(server, pki):
    mode, port, handler, _ = server
    c = client(mode, port, mtls(pki))
    try:
        result = await c.deliver(job())
    finally:
        await c.aclose()
    assert result.ok, result
    assert len(handler.messages) == 1
    assert b"dr.house@hopital.mssante.fr" in handler.messages[0]


async def test_client_without_certificate_is_refused_as_tls_transient(server, pki):
    mode, port, handler, _ = server
    c = client(mode, port, client_tls_context(ca_file=pki["dir"] / "ca.pem"))
    try:
        result = await c.deliver(job())
    finally:
        await c.aclose()
    assert not result.ok and not result.permanent
    assert result.detail["error"] == "tls", result
    assert handler.messages == []


async def test_untrusted_server_is_refused_as_tls_transient(server, pki):
    mode, port, handler, _ = server
    d = pki["dir"]
    ctx = client_tls_context(
        ca_file=d / "other-ca.pem", cert_file=d / "client.pem", key_file=d / "client.key"
    )
    c = client(mode, port, ctx)
    try:
        result = await c.deliver(job())
    finally:
        await c.aclose()
    assert not result.ok and not result.permanent
    assert result.detail["error"] == "tls"
    assert "CERTIFICATE_VERIFY_FAILED" in result.detail["reason"]
    assert handler.messages == []


async def test_many_mails_over_one_reused_connection(server, pki):
    mode, port, handler, ctl = server
    c = client(mode, port, mtls(pki), pool_size=2)
    try:
        results = [await c.deliver(job(n)) for n in range(10)]
    finally:
        await c.aclose()
    assert all(r.ok for r in results)
    assert len(handler.messages) == 10
    assert ctl.connections == 1 and c.connections_opened == 1
    assert len(handler.peers) == 1


async def test_pool_is_bounded(server, pki):
    mode, port, handler, ctl = server
    handler.delay = 0.2
    c = client(mode, port, mtls(pki), pool_size=2)
    try:
        t0 = time.monotonic()
        results = await asyncio.gather(*(c.deliver(job(n)) for n in range(6)))
        elapsed = time.monotonic() - t0
    finally:
        await c.aclose()
    assert all(r.ok for r in results)
    assert len(handler.messages) == 6
    assert ctl.connections == 2 and len(handler.peers) == 2
    assert handler.max_active == 2
    assert elapsed >= 3 * 0.2 * 0.9  # 6 mails, 2 at a time


@pytest.mark.parametrize(
    ("reply", "permanent"), [("451 4.3.0 try later", False), ("550 5.7.1 refused", True)]
)
async def test_server_replies_are_classified(server, pki, reply, permanent):
    mode, port, handler, ctl = server
    handler.reply = reply
    c = client(mode, port, mtls(pki))
    try:
        result = await c.deliver(job())
        handler.reply = "250 OK"
        after = await c.deliver(job(1))  # the connection survives a refusal (RSET) and is reused
    finally:
        await c.aclose()
    assert not result.ok and result.permanent is permanent
    assert result.detail["smtp"] == int(reply[:3])
    assert after.ok and ctl.connections == 1


async def test_recipient_refused_550_is_permanent(server, pki):
    mode, port, handler, _ = server

    async def handle_RCPT(server, session, envelope, address, rcpt_options):
        return "550 5.1.1 no such mailbox"

    handler.handle_RCPT = handle_RCPT
    c = client(mode, port, mtls(pki))
    try:
        result = await c.deliver(job())
    finally:
        await c.aclose()
    assert not result.ok and result.permanent
    assert result.detail["smtp"] == [550]


async def test_reconnects_when_the_server_closed_the_connection(pki):
    handler = Recorder()
    port = free_port()
    ctl = CountingController(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=pki["server_ctx"],
        require_starttls=True,
        timeout=0.3,
    )
    ctl.start()
    ctl.connections = 0
    c = client("starttls", port, mtls(pki))
    try:
        first = await c.deliver(job(0))
        await asyncio.sleep(0.8)  # the server's idle timeout closes the connection (421)
        second = await c.deliver(job(1))
    finally:
        await c.aclose()
        ctl.stop()
    assert first.ok and second.ok
    assert len(handler.messages) == 2 and ctl.connections == 2


async def test_connection_refused_is_transient():
    c = client("starttls", free_port(), None)
    result = await c.deliver(job())
    await c.aclose()
    assert not result.ok and not result.permanent and result.detail["error"] != "tls"


# -- tls.py ---------------------------------------------------------------------------------------------------


def test_context_defaults(pki):
    ctx = mtls(pki)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_encrypted_key_with_passphrase_loads(pki):
    d = pki["dir"]
    client_tls_context(cert_file=d / "client.pem", key_file=d / "client-enc.key", key_password="s3cret-pass")


def test_errors_name_the_file_never_the_passphrase(pki, tmp_path):
    d = pki["dir"]
    with pytest.raises(TlsConfigError, match=r"CA bundle not found: .*missing\.pem"):
        client_tls_context(ca_file=tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(TlsConfigError, match=r"junk\.pem"):
        client_tls_context(ca_file=tmp_path / "junk.pem")
    with pytest.raises(TlsConfigError, match=r"encrypted and no passphrase.*client-enc\.key"):
        client_tls_context(cert_file=d / "client.pem", key_file=d / "client-enc.key")
    with pytest.raises(TlsConfigError, match=r"client-enc\.key") as err:
        client_tls_context(
            cert_file=d / "client.pem", key_file=d / "client-enc.key", key_password="wrong-pw-123"
        )
    assert "wrong-pw-123" not in str(err.value)
    with pytest.raises(TlsConfigError, match=r"other-ca\.pem"):  # not a client certificate + key pair
        client_tls_context(cert_file=d / "client.pem", key_file=d / "other-ca.pem")
