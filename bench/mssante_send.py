"""MSSanté mails built and sent per second over TLS on one reused connection, next to a bare aiosmtplib send
of the same mail measured in the same run against the same relay.

    .venv/bin/python bench/mssante_send.py [--rounds 5] [--n 200] [--tls starttls|implicit]

The relay is aiosmtpd on 127.0.0.1 in this process (its own thread and event loop, as in
tests/test_smtp_tls.py): TLS with a throwaway CA (trustme), a client certificate required, STARTTLS by
default. Its handler only counts the mail and answers 250 (no parsing, no file), so the figures are the
client side's. It shares the process and the GIL with the client, so the relay's own work (TLS, DATA
reading) slows every networked row by the same amount per mail: read the ratios, not the absolute rates.

- bare send (baseline): one ``aiosmtplib.SMTP`` connected once, ``send_message`` of one EmailMessage built
  once, N times (aiosmtplib flattens it on each call, as it does for the gateway);
- gateway deliver: ``SmtpClient.deliver(job)`` N times on its pooled connection (pool of 1, one connection for
  the whole run): ``build_mail`` with its IHE_XDM.ZIP each time, then the same send;
- build only: ``build_mail(job, sender).as_bytes()`` N times, no network.

The job: the ANS ORU initial example (CR de biologie, N3) with a conforming ANS example CDA swapped in (the
recipe of tests/conftest.py ``swap_document``, "PS only" flags), routed by routes.yaml; its PS mail. Reads
../shared like the tests. Each figure is the median of --rounds rounds of --n mails, after a warm-up round; the
three cases are interleaved in each round. The goal: build share (build time per mail / bare send time per
mail) < 1. The event loop's longest stall (gateway/runtime/loop_lag.py) is measured during the networked
rounds, with the same 1 ms ticker running in both so they pay the same overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import socket
import ssl
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import trustme
from aiosmtpd.controller import Controller

from gateway.delivery.jobs import DeliveryJob
from gateway.delivery.mssante.mail import build_mail
from gateway.delivery.mssante.smtp import SmtpClient
from gateway.delivery.mssante.tls import client_tls_context
from gateway.routing import load_routes
from gateway.runtime.loop_lag import measure_loop_lag
from gateway.runtime.pipeline import Envelope, Pipeline

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ANS_TRANS = (
    SHARED
    / "cisis/hl7v2/ansforge-hl7V2-exemples/Vague 2/Trans_Doc-CDA-HL7V2/TRANSMISSION_DOCS_CDA_EN_HL7V2_V2.1"
)
ORU = ANS_TRANS / "ORU/Transmission initiale ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7"
CDA = SHARED / "cisis/testcontenucda-3.0/ExemplesCDA/BIO-CR-BIO_2021.01_Microbiologie_V2.xml"  # 60 KB
#: tests/conftest.py PS_ONLY: the volet's "PS only" combination (DMP + one mail to the PS recipients).
PS_ONLY = {
    "MASQUE_PS": "N",
    "INVISIBLE_PATIENT": "Y",
    "INVISIBLE_REP_LEGAUX": "N",
    "CONNEXION_SECRETE": "N",
    "DESTMSSANTEPS": "Y",
    "DESTMSSANTEPAT": "N",
    "DESTDMP": "Y",
}
SENDER = "gateway@hopital.mssante.fr"
HOST = "127.0.0.1"


def ps_job() -> DeliveryJob:
    """The PS mail job of the ANS ORU with a conforming CDA, as the pipeline makes it."""
    for path in (ORU, CDA):
        if not path.is_file():
            raise SystemExit(f"missing {path}: this benchmark needs the shared ANS material in {SHARED}")
    if str(ROOT) not in sys.path:  # tools/ is not installed; run as bench/mssante_send.py from anywhere
        sys.path.insert(0, str(ROOT))
    from tools.build_samples import segments, with_document

    body = with_document(segments(ORU), CDA, "BENCH-0001", flags=PS_ONLY).encode("utf-8")
    pipeline = Pipeline(load_routes(ROOT / "routes.yaml"), {}, "bench")
    out = pipeline.process(Envelope(body=body, message_id="bench", received_at=datetime.now(UTC)))
    if not out.accepted:
        raise SystemExit(f"the bench message was not accepted: {[f.rule for f in out.report.errors]}")
    jobs = [j for j in out.jobs if j.destination == "mssante" and j.recipients_kind == "ps"]
    if len(jobs) != 1:
        raise SystemExit(
            f"expected one PS mail job, got {[(j.destination, j.recipients_kind) for j in out.jobs]}"
        )
    return jobs[0]


# -- relay ----------------------------------------------------------------------------------------------------


class CountingHandler:
    """Accepts every mail; keeps a count and the size of the last one, nothing else."""

    def __init__(self) -> None:
        self.mails = 0
        self.last_size = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        self.mails += 1
        self.last_size = len(envelope.content)
        return "250 2.0.0 OK"


class CountingController(Controller):
    connections = 0

    def factory(self):
        self.connections += 1
        return super().factory()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pki(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context requiring a client certificate, the gateway's client context), from a throwaway CA."""
    ca = trustme.CA()
    server = ca.issue_cert(HOST, "localhost")
    client = ca.issue_cert("gateway.hopital.example")
    ca.cert_pem.write_to_path(directory / "ca.pem")
    client.cert_chain_pems[0].write_to_path(directory / "client.pem")
    client.private_key_pem.write_to_path(directory / "client.key")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = client_tls_context(
        ca_file=directory / "ca.pem", cert_file=directory / "client.pem", key_file=directory / "client.key"
    )
    return server_ctx, client_ctx


# -- cases ----------------------------------------------------------------------------------------------------


async def bare_round(smtp: aiosmtplib.SMTP, message: EmailMessage, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        errors, _ = await smtp.send_message(message)
        if errors:
            raise RuntimeError(f"bare send refused: {errors}")
    return time.perf_counter() - start


async def deliver_round(client: SmtpClient, job: DeliveryJob, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        result = await client.deliver(job)
        if not result.ok:
            raise RuntimeError(f"deliver failed: {result}")
    return time.perf_counter() - start


def build_round(job: DeliveryJob, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        build_mail(job, SENDER).as_bytes()
    return time.perf_counter() - start


async def run(rounds: int, n: int, mode: str) -> None:
    job = ps_job()
    # as GatewayService.start() does once everything is loaded: long-lived objects out of the GC's scans
    gc.collect()
    gc.freeze()
    cda_bytes = len(job.submission.documents[0].content.data)
    with tempfile.TemporaryDirectory() as tmp:
        server_ctx, client_ctx = pki(Path(tmp))
    # aiosmtpd warns that a required client certificate "might cause client connection problems": on purpose here
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    handler = CountingHandler()
    port = free_port()
    if mode == "starttls":
        ctl = CountingController(
            handler, hostname=HOST, port=port, tls_context=server_ctx, require_starttls=True
        )
    else:
        ctl = CountingController(handler, hostname=HOST, port=port, ssl_context=server_ctx)
    ctl.start()
    ctl.connections = 0  # start() probes the listener once
    starttls = mode == "starttls"
    smtp = aiosmtplib.SMTP(
        hostname=HOST,
        port=port,
        use_tls=not starttls,
        start_tls=starttls,
        tls_context=client_ctx,
        timeout=30,
    )
    client = SmtpClient(
        HOST,
        port,
        sender=SENDER,
        starttls=starttls,
        implicit_tls=not starttls,
        tls_context=client_ctx,
        timeout_s=30,
        pool_size=1,
        max_mails_per_connection=0,  # no recycling: one connection for the whole run
        idle_timeout_s=3600,
    )
    times: dict[str, list[float]] = {"bare": [], "deliver": [], "build": []}
    stall_ms: dict[str, float] = {"bare": 0.0, "deliver": 0.0}
    try:
        await smtp.connect()
        await smtp.ehlo()
        message = build_mail(job, SENDER)  # built once, sent N times
        mail_bytes = len(message.as_bytes())
        # warm-up: opens the gateway's connection, fills caches; not counted
        await bare_round(smtp, message, n)
        await deliver_round(client, job, n)
        build_round(job, n)
        for _ in range(rounds):
            async with measure_loop_lag() as lag:
                times["bare"].append(await bare_round(smtp, message, n))
            stall_ms["bare"] = max(stall_ms["bare"], lag.max_ms)
            async with measure_loop_lag() as lag:
                times["deliver"].append(await deliver_round(client, job, n))
            stall_ms["deliver"] = max(stall_ms["deliver"], lag.max_ms)
            times["build"].append(build_round(job, n))
        await smtp.quit()
        await client.aclose()
    finally:
        smtp.close()
        ctl.stop()
    expected = 2 * n * (rounds + 1)
    if handler.mails != expected or client.connections_opened != 1 or ctl.connections != 2:
        raise SystemExit(
            f"unexpected run: {handler.mails} mails (expected {expected}), gateway connections "
            f"{client.connections_opened}, relay connections {ctl.connections} (expected 1 + 1)"
        )

    per_mail = {k: statistics.median(v) / n for k, v in times.items()}
    print(
        f"MSSanté send over {mode.upper() if starttls else 'implicit TLS'} + client certificate, one reused "
        f"connection, loopback aiosmtpd relay in-process"
    )
    print(
        f"mail {mail_bytes / 1024:.0f} KB (CDA {cda_bytes / 1024:.0f} KB in IHE_XDM.ZIP), median of "
        f"{rounds} rounds x {n} mails, warm-up round first"
    )
    print()
    print(f"{'case':<36}{'mails/s':>10}{'ms/mail':>10}{'max loop stall':>16}")
    rows = [
        ("a) bare aiosmtplib send_message", "bare"),
        ("b) gateway SmtpClient.deliver", "deliver"),
        ("c) build_mail + as_bytes (no send)", "build"),
    ]
    for label, key in rows:
        stall = f"{stall_ms[key]:.1f} ms" if key in stall_ms else "-"
        print(f"{label:<36}{1 / per_mail[key]:>10.0f}{per_mail[key] * 1000:>10.2f}{stall:>16}")
    print()
    print(f"deliver / bare send (b/a, mails/s):  {per_mail['bare'] / per_mail['deliver']:.2f}")
    share = per_mail["build"] / per_mail["bare"]
    verdict = "met" if share < 1 else "NOT met"
    print(f"build share (c time / a time):       {share:.2f}  (goal < 1: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=200, help="mails per round and case")
    parser.add_argument("--tls", choices=["starttls", "implicit"], default="starttls")
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.n, args.tls))


if __name__ == "__main__":
    main()
