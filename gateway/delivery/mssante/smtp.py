"""Sends an MSSanté job through the operator's SMTP relay (aiosmtplib) and classifies the answer.

Connections are pooled: at most ``pool_size`` connections to the relay, each reused for many mails (one TLS
handshake, one EHLO, one AUTH for all of them). A connection the server has closed (idle timeout, 421) is
replaced on the next use; one idle for longer than ``idle_timeout_s`` or that carried
``max_mails_per_connection`` mails is closed and replaced. Each SMTP operation (connect, STARTTLS, each
command, the DATA transfer) is bounded by ``timeout_s``.

Classification: 2xx delivered; 4xx, connection errors and timeouts transient; 5xx permanent (the SMTP code is
kept in ``detail``). A TLS failure (handshake refused, certificate not trusted or not presented) is transient
with ``error: "tls"``: it is a configuration problem that ops must see, not a refusal of the content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass, field
from email.message import EmailMessage

import aiosmtplib

from gateway.delivery.jobs import DeliveryJob
from gateway.delivery.mssante.mail import build_mail, message_id_for
from gateway.delivery.result import DeliveryResult

log = logging.getLogger(__name__)

_TLS_WORDS = ("ssl", "tls", "certificate", "handshake")


@dataclass(eq=False)
class _Conn:
    smtp: aiosmtplib.SMTP
    mails: int = 0
    idle_since: float = field(default_factory=time.monotonic)


class SmtpClient:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        starttls: bool = False,
        implicit_tls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
        pool_size: int = 2,
        idle_timeout_s: float = 60.0,
        max_mails_per_connection: int = 1000,
    ) -> None:
        if starttls and implicit_tls:
            raise ValueError("starttls and implicit_tls are exclusive")
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.implicit_tls = starttls, implicit_tls
        self.username, self.password = username, password
        self.timeout_s = timeout_s
        self.tls_context = tls_context
        self.pool_size = pool_size
        self.idle_timeout_s = idle_timeout_s
        self.max_mails_per_connection = max_mails_per_connection
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[_Conn] = []
        self._busy: set[_Conn] = set()
        self._closed = False
        self.connections_opened = 0  # for metrics and tests

    # -- pool -------------------------------------------------------------------------------------------------

    def _usable(self, conn: _Conn) -> bool:
        if not conn.smtp.is_connected:
            return False
        if self.max_mails_per_connection and conn.mails >= self.max_mails_per_connection:
            return False
        return time.monotonic() - conn.idle_since < self.idle_timeout_s

    async def _connect(self) -> _Conn:
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            timeout=self.timeout_s,
            use_tls=self.implicit_tls,
            start_tls=self.starttls,
            tls_context=self.tls_context,
        )
        tls = self.starttls or self.implicit_tls
        try:
            await smtp.connect()
            if tls:  # the first command over TLS: a relay refusing our certificate hangs up here
                await smtp.ehlo()
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError) as exc:
            smtp.close()
            # With TLS 1.3 the server checks the client certificate after the client's side of the handshake
            # is done; asyncio then reports the server's alert as a bare EOF or "connection lost", worded
            # differently depending on timing. A hang-up before the first reply over TLS is that (or a relay
            # dropping TLS sessions it does not accept).
            hung_up = isinstance(exc, aiosmtplib.SMTPServerDisconnected) or "eof" in str(exc).lower()
            if tls and _tls_failure(exc) is None and hung_up:
                raise _TlsRefused("connection closed by the relay right after the TLS handshake") from exc
            raise
        except BaseException:
            smtp.close()
            raise
        self.connections_opened += 1
        return _Conn(smtp)

    async def _checkout(self) -> tuple[_Conn, bool]:
        """An open connection and whether it was reused. Called with a pool slot held."""
        while self._idle:
            conn = self._idle.pop()  # most recently used first: the likeliest to be alive
            if self._usable(conn):
                self._busy.add(conn)
                return conn, True
            await self._quit(conn)
        conn = await self._connect()
        self._busy.add(conn)
        return conn, False

    def _checkin(self, conn: _Conn) -> None:
        self._busy.discard(conn)
        if self._closed or not conn.smtp.is_connected:
            conn.smtp.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def _discard(self, conn: _Conn) -> None:
        self._busy.discard(conn)
        conn.smtp.close()

    async def _quit(self, conn: _Conn) -> None:
        if conn.smtp.is_connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.smtp.quit(), timeout=min(self.timeout_s, 5.0))
        conn.smtp.close()

    async def aclose(self) -> None:
        """QUIT and close the idle connections; connections in use are closed when their mail is done."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(c) for c in idle), return_exceptions=True)

    # -- delivery ---------------------------------------------------------------------------------------------

    def mail_message_id(self, job: DeliveryJob) -> str:
        """The Message-ID the job's mail carries (derived from its idempotency key: the same on every retry)."""
        return message_id_for(job, self.sender.rsplit("@", 1)[-1])

    async def deliver(self, job: DeliveryJob) -> DeliveryResult:
        return await self.send(build_mail(job, self.sender))

    async def send(self, message: EmailMessage) -> DeliveryResult:
        """Send one ready mail over a pooled connection (jobs, and the error MDNs of the reverse flow)."""
        if self._closed:
            return DeliveryResult.transient(error="closed")
        async with self._slots:
            # A reused connection may have been closed by the server since its last mail without us noticing
            # yet: that one attempt is repeated on a fresh connection. (The worker would retry a transient
            # failure anyway; the Message-ID is derived from the idempotency key, so a duplicate is
            # recognisable.)
            for attempt in (1, 2):
                try:
                    conn, reused = await self._checkout()
                except (aiosmtplib.SMTPException, OSError) as exc:
                    return _classify(exc)
                try:
                    errors, response = await conn.smtp.send_message(message)
                except aiosmtplib.SMTPServerDisconnected as exc:
                    self._discard(conn)
                    if not reused and (self.starttls or self.implicit_tls) and _tls_failure(exc) is None:
                        # a fresh TLS connection dropped before its first mail: the same late certificate
                        # refusal as in _connect, surfacing one command later
                        return _classify(
                            _TlsRefused("connection closed by the relay right after the TLS handshake")
                        )
                    if reused and attempt == 1:
                        log.info(
                            "SMTP connection to %s:%s was closed by the server; reconnecting",
                            self.host,
                            self.port,
                        )
                        continue
                    return _classify(exc)
                except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPResponseException) as exc:
                    # aiosmtplib has sent RSET: the connection stays usable unless the server dropped it.
                    conn.mails += 1
                    self._checkin(conn)
                    return _classify(exc)
                except BaseException as exc:  # timeouts, OSError, cancellation: the session state is unknown
                    self._discard(conn)
                    if isinstance(exc, aiosmtplib.SMTPException | OSError):
                        return _classify(exc)
                    raise
                conn.mails += 1
                self._checkin(conn)
                # Some recipients refused, others accepted: the mail is out; the refusals are recorded.
                if errors:
                    return DeliveryResult.delivered(
                        partial_refusals=sorted({r.code for r in errors.values()}),
                        mail_message_id=message["Message-ID"],
                    )
                return DeliveryResult.delivered(
                    smtp_response=response[:80], mail_message_id=message["Message-ID"]
                )
        raise AssertionError("unreachable")  # pragma: no cover


class _TlsRefused(aiosmtplib.SMTPConnectError):
    """The relay closed the connection right after the TLS handshake (client certificate refused?)."""

    reason = "closed after TLS handshake (client certificate refused?)"


def _tls_failure(exc: BaseException) -> ssl.SSLError | _TlsRefused | str | None:
    """The TLS error behind ``exc`` (an ``ssl.SSLError`` in its chain, or aiosmtplib's wrapped message)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLError | _TlsRefused):
            return cur
        cur = cur.__cause__ or cur.__context__
    text = str(exc).lower()
    if isinstance(exc, aiosmtplib.SMTPConnectError) and any(w in text for w in _TLS_WORDS):
        return str(exc)
    return None


def _classify(exc: BaseException) -> DeliveryResult:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = sorted({r.code for r in exc.recipients})
        permanent = all(500 <= c < 600 for c in codes)
        return DeliveryResult(False, permanent, {"smtp": codes, "error": "recipients refused"})
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code > 0:
        return DeliveryResult(False, 500 <= exc.code < 600, {"smtp": exc.code, "error": type(exc).__name__})
    tls = _tls_failure(exc)
    if tls is not None:
        reason = getattr(tls, "reason", None) or type(exc).__name__
        log.error("TLS failure with the SMTP relay: %s", tls)
        return DeliveryResult.transient(error="tls", reason=str(reason))
    return DeliveryResult.transient(error=type(exc).__name__)
