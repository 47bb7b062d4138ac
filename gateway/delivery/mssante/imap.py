"""The applicative mailbox (BAL applicative) read over IMAP with TLS: fetch new mails, settle them, wait for more.

Transport only: what a mail means (receipt, XDM to integrate, something else) is decided by
``gateway.runtime.bal_reader``. The mailbox is read over implicit TLS (IMAPS, port 993 — the only TLS mode
aioimaplib offers), the server's certificate checked against the operator's CA bundle, with the structure's
client certificate when the operator asks for one; LOGIN then goes over the encrypted channel.

A mail is *settled* once the gateway has journaled it and done what it calls for: it is then moved to the
``processed_folder`` when one is configured (kept for audit on the server) or flagged ``\\Deleted`` and expunged.
Until then it stays in the folder, so a crash between the two means the mail is read again; the reader
recognises it in the journal (at-least-once, made effectively-once by the journal).

New mails are waited for with IDLE (RFC 2177) when the server offers it and ``mode="idle"``, else by polling;
IDLE is re-armed every ``idle_renew_s`` (servers drop an IDLE after 30 minutes), and polling is the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from dataclasses import dataclass
from typing import Literal

import aioimaplib

log = logging.getLogger("cisis.imap")

_FETCH_HEAD = re.compile(rb"^\d+ FETCH \(.*UID (\d+)", re.IGNORECASE)


class ImapError(RuntimeError):
    """The mailbox cannot be read (connection, TLS, login, select or a command refused)."""


@dataclass(frozen=True, slots=True)
class FetchedMail:
    uid: int
    raw: bytes

    def __repr__(self) -> str:  # mails carry patient data: a repr is their uid and size only
        return f"FetchedMail(uid={self.uid}, size={len(self.raw)})"


def _ok(response: aioimaplib.Response, what: str) -> aioimaplib.Response:
    if response.result != "OK":
        detail = b" ".join(line for line in response.lines if isinstance(line, bytes))[:200]
        raise ImapError(f"IMAP {what} refused: {response.result} {detail.decode('ascii', 'replace')}")
    return response


class ImapMailbox:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str,
        password: str,
        tls_context: ssl.SSLContext,
        folder: str = "INBOX",
        processed_folder: str | None = None,
        mode: Literal["idle", "poll"] = "idle",
        poll_interval_s: float = 30.0,
        idle_renew_s: float = 25 * 60,
        timeout_s: float = 30.0,
        batch: int = 50,
        max_mail_bytes: int = 25 * 1024 * 1024,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.tls_context = tls_context
        self.folder = folder
        self.processed_folder = processed_folder
        self.mode = mode
        self.poll_interval_s = poll_interval_s
        self.idle_renew_s = idle_renew_s
        self.timeout_s = timeout_s
        self.batch = batch
        self.max_mail_bytes = max_mail_bytes
        self._client: aioimaplib.IMAP4_SSL | None = None
        self._can_move = False
        self._can_idle = False

    # -- connection ---------------------------------------------------------------------------------------

    async def connect(self) -> None:
        client = aioimaplib.IMAP4_SSL(
            host=self.host, port=self.port, ssl_context=self.tls_context, timeout=self.timeout_s
        )
        try:
            await client.wait_hello_from_server()
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise ImapError(
                f"cannot connect to {self.host}:{self.port} over TLS ({type(exc).__name__})"
            ) from exc
        try:
            _ok(await client.login(self.username, self._password), "LOGIN")
            _ok(await client.select(self.folder), f"SELECT {self.folder}")
            if self.processed_folder:
                # CREATE fails when the folder exists: that is fine, SELECT/MOVE will tell if it is not usable.
                await client.create(self.processed_folder)
        except (TimeoutError, ImapError, aioimaplib.Abort, aioimaplib.CommandTimeout) as exc:
            with contextlib.suppress(Exception):
                await client.logout()
            raise ImapError(str(exc) or type(exc).__name__) from exc
        self._client = client
        self._can_move = client.has_capability("MOVE")
        self._can_idle = client.has_capability("IDLE")
        log.info(
            "BAL applicative connected host=%s folder=%s idle=%s", self.host, self.folder, self._can_idle
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                if client.has_pending_idle():
                    client.idle_done()
                await asyncio.wait_for(client.logout(), 5)

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.get_state() == "SELECTED"

    def _c(self) -> aioimaplib.IMAP4_SSL:
        if self._client is None:
            raise ImapError("not connected")
        return self._client

    # -- reading ------------------------------------------------------------------------------------------

    async def fetch_new(self) -> list[FetchedMail]:
        """Up to ``batch`` mails of the folder not yet settled, oldest first. Mails larger than
        ``max_mail_bytes`` are returned with their first ``max_mail_bytes`` only (the reader refuses them)."""
        client = self._c()
        found = _ok(await client.uid_search("UNDELETED"), "UID SEARCH")
        uids = sorted(int(u) for line in found.lines[:1] for u in line.split() if u.isdigit())
        mails: list[FetchedMail] = []
        for uid in uids[: self.batch]:
            response = _ok(
                await client.uid("fetch", str(uid), f"(UID BODY.PEEK[]<0.{self.max_mail_bytes + 1}>)"),
                "UID FETCH",
            )
            raw = next((bytes(line) for line in response.lines if isinstance(line, bytearray)), None)
            if raw is not None:
                mails.append(FetchedMail(uid, raw))
        return mails

    async def settle(self, uid: int) -> None:
        """Take a handled mail out of the folder (moved to ``processed_folder``, or deleted)."""
        client = self._c()
        if self.processed_folder:
            if self._can_move:
                _ok(await client.uid("move", str(uid), self.processed_folder), "UID MOVE")
                return
            _ok(await client.uid("copy", str(uid), self.processed_folder), "UID COPY")
        _ok(await client.uid("store", str(uid), "+FLAGS.SILENT", r"(\Deleted)"), "UID STORE")
        _ok(await client.expunge(), "EXPUNGE")

    async def wait_for_mail(self) -> None:
        """Return when new mail may have arrived: on an IDLE push, or after the poll interval."""
        client = self._c()
        if self.mode != "idle" or not self._can_idle:
            await asyncio.sleep(self.poll_interval_s)
            return
        idle = await client.idle_start(timeout=self.idle_renew_s)
        try:
            # wait_server_push returns on the first untagged line (EXISTS, EXPUNGE...) or when the renew timer
            # stops the IDLE; a poll interval bounds it too, so a lost push costs one interval at most.
            with contextlib.suppress(TimeoutError):
                await client.wait_server_push(timeout=max(self.poll_interval_s, 1.0))
        finally:
            client.idle_done()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle, self.timeout_s)

    async def append(self, raw: bytes, folder: str | None = None) -> None:
        """Put a mail in a folder (tests and the demo feed the mailbox this way)."""
        _ok(await self._c().append(raw, mailbox=folder or self.folder), "APPEND")
