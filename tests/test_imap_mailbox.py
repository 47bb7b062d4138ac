"""The BAL applicative over IMAPS against a real dovecot that requires a client certificate."""

from __future__ import annotations

import asyncio

import pytest

from gateway.delivery.mssante.imap import ImapError, ImapMailbox
from gateway.delivery.mssante.tls import client_tls_context
from tests.conftest import wait_until
from tests.imap_server import Dovecot, make_pki, require_dovecot


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("imap-pki"), stranger=True)


@pytest.fixture(scope="module")
def dovecot(pki):
    require_dovecot()
    server = Dovecot(server_pem=pki / "server.pem", ca_pem=pki / "ca.pem")
    server.start()
    yield server
    server.stop()


def mailbox(
    dovecot: Dovecot, pki, *, cert: str | None = "client", folder: str = "INBOX", **kw
) -> ImapMailbox:
    ctx = client_tls_context(
        ca_file=pki / "ca.pem",
        cert_file=pki / f"{cert}.pem" if cert else None,
        key_file=pki / f"{cert}.key" if cert else None,
    )
    return ImapMailbox(
        "127.0.0.1",
        dovecot.port,
        username="bal",
        password="bal-secret",
        tls_context=ctx,
        folder=folder,
        timeout_s=5,
        **kw,
    )


def mail(n: int) -> bytes:
    return (
        f"From: a@test.mssante.fr\r\nTo: bal@test.mssante.fr\r\nSubject: n{n}\r\n"
        f"Message-ID: <m{n}@test>\r\n\r\nbody {n}\r\n"
    ).encode()


async def test_fetch_settle_by_delete_and_by_move(dovecot, pki):
    box = mailbox(dovecot, pki)
    await box.connect()
    try:
        assert box.connected
        assert await box.fetch_new() == []
        for n in (1, 2):
            await box.append(mail(n))
        got = await box.fetch_new()
        assert [m.raw for m in got] == [mail(1), mail(2)]
        assert "body" not in repr(got[0])  # a repr never shows the mail
        await box.settle(got[0].uid)
        assert [m.raw for m in await box.fetch_new()] == [mail(2)]
        await box.settle(got[1].uid)
        assert await box.fetch_new() == []
    finally:
        await box.aclose()

    moved = mailbox(dovecot, pki, processed_folder="Traites")
    await moved.connect()
    try:
        await moved.append(mail(3))
        (m3,) = await moved.fetch_new()
        await moved.settle(m3.uid)
        assert await moved.fetch_new() == []
    finally:
        await moved.aclose()
    archive = mailbox(dovecot, pki, folder="Traites")
    await archive.connect()
    try:
        assert [m.raw for m in await archive.fetch_new()] == [mail(3)]  # kept on the server for audit
    finally:
        await archive.aclose()


async def test_large_mail_is_cut_at_the_limit_so_the_reader_can_refuse_it(dovecot, pki):
    box = mailbox(dovecot, pki, max_mail_bytes=1000, folder="Big")
    setup = mailbox(dovecot, pki)
    await setup.connect()
    await setup._c().create("Big")
    await setup.append(mail(4) + b"x" * 5000 + b"\r\n", folder="Big")
    await setup.aclose()
    await box.connect()
    try:
        (big,) = await box.fetch_new()
        assert len(big.raw) == 1001  # one byte over: enough to know it is too large, no more in memory
        await box.settle(big.uid)
    finally:
        await box.aclose()


@pytest.mark.parametrize("cert", [None, "stranger"])
async def test_a_client_without_an_accepted_certificate_is_refused(dovecot, pki, cert):
    box = mailbox(dovecot, pki, cert=cert)
    with pytest.raises(ImapError):
        await box.connect()
    assert not box.connected


async def test_wrong_password_is_refused(pki):
    # A server of its own: dovecot delays every later login from an address that failed one (auth penalty).
    server = Dovecot(server_pem=pki / "server.pem", ca_pem=pki / "ca.pem")
    server.start()
    try:
        box = mailbox(server, pki)
        box._password = "nope"
        with pytest.raises(ImapError, match="LOGIN"):
            await box.connect()
    finally:
        server.stop()


async def test_idle_wakes_up_on_a_new_mail_before_the_poll_interval(dovecot, pki):
    box = mailbox(dovecot, pki, mode="idle", poll_interval_s=60, folder="Idle")
    feeder = mailbox(dovecot, pki)
    await feeder.connect()
    await feeder._c().create("Idle")
    await box.connect()
    try:
        waiter = asyncio.create_task(box.wait_for_mail())
        await asyncio.sleep(0.3)  # let IDLE start; the assertion below is bounded by wait_until, not this
        assert not waiter.done()
        await feeder.append(mail(5), folder="Idle")
        await wait_until(lambda: waiter.done(), timeout_s=10, what="the IDLE push")
        assert waiter.exception() is None
        assert [m.raw for m in await box.fetch_new()] == [mail(5)]
    finally:
        await feeder.aclose()
        await box.aclose()
