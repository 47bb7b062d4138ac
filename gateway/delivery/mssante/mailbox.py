"""A local mailbox (aiosmtpd) standing in for the MSSanté operator in the demo and the tests.

It accepts every mail over SMTP on loopback, keeps it in memory and, if asked, writes it to a Maildir-like
folder (one ``.eml`` file per mail) so a person running the demo can open what the gateway sent.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope as SmtpEnvelope


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class _Handler:
    out_dir: Path | None
    received: list[ReceivedMail] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    refuse_next: int = 0
    refuse_status: str | None = None  # e.g. "550 5.1.1 user unknown": every mail refused with it

    async def handle_DATA(self, server, session, envelope: SmtpEnvelope) -> str:
        with self.lock:
            if self.refuse_status:
                return self.refuse_status
            if self.refuse_next > 0:
                self.refuse_next -= 1
                return "451 4.3.0 injected temporary failure"
            mail = message_from_bytes(envelope.content, policy=policy.default)
            self.received.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), mail))
            if self.out_dir is not None:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                (self.out_dir / f"{len(self.received):05d}.eml").write_bytes(envelope.content)
        return "250 2.0.0 OK: queued"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalMailbox:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, out_dir: Path | None = None) -> None:
        self.handler = _Handler(out_dir)
        # aiosmtpd's Controller connects to its own port to know it is up, so it needs a real port number.
        self.port = port or _free_port(host)
        self._controller = Controller(self.handler, hostname=host, port=self.port)
        self.host = host

    @property
    def received(self) -> list[ReceivedMail]:
        with self.handler.lock:
            return list(self.handler.received)

    def refuse_next(self, count: int) -> None:
        with self.handler.lock:
            self.handler.refuse_next = count

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()
