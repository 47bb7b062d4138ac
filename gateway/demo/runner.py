"""`cisis-gateway run --demo` (what `make run` does): the gateway with a local MSSanté mailbox and a local DMP
sandbox, fed with the bundled CI-SIS sample messages, then a summary of what arrived where."""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from gateway.config import Settings
from gateway.delivery.dmp.xds_sandbox import XdsSandbox
from gateway.delivery.mssante.mailbox import LocalMailbox
from gateway.demo.pki import demo_pki
from gateway.demo.sender import publish_files
from gateway.runtime.service import GatewayService

FINAL = {"rejected", "delivered", "partially_delivered", "dead_lettered"}


def sample_files() -> list[Path]:
    folder = resources.files("gateway.demo") / "samples"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".hl7"))


async def run_demo(
    settings: Settings, console: Console, *, stay: bool = True, timeout_s: float = 60.0
) -> int:
    mailbox = LocalMailbox(port=settings.demo_smtp_port, out_dir=settings.demo_dir / "mailbox")
    mailbox.start()
    # The DMP sandbox speaks XDS.b over HTTPS with a client certificate, as the DMP does: the demo makes its
    # own throwaway PKI for it.
    pki = demo_pki(settings.demo_dir / "pki")
    sandbox = XdsSandbox(
        port=settings.demo_dmp_port,
        server_cert_pem=pki.server_cert,
        server_key_pem=pki.server_key,
        client_ca_pem=pki.ca,
        trust_ca_pem=pki.ca.read_bytes(),
        out_dir=settings.demo_dir / "dmp",
    )
    await sandbox.start()
    settings = settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": mailbox.port,
            "dmp_transport": "xds",
            "dmp_repository_url": sandbox.repository_url,
            "dmp_registry_url": sandbox.registry_url,
            "dmp_ca_file": pki.ca,
            "dmp_cert_file": pki.client_cert,
            "dmp_key_file": pki.client_key,
            "vihf_profession_role": settings.vihf_profession_role or "10^1.2.250.1.71.1.2.7",
            "vihf_lps_homologation_id": settings.vihf_lps_homologation_id or "DEMO",
        }
    )
    service = GatewayService(settings)
    try:
        await service.start()
        console.print(
            f"[bold]cisis-gateway demo[/]: mailbox smtp://127.0.0.1:{mailbox.port}, "
            f"DMP sandbox (XDS.b) {sandbox.repository_url}, journal {settings.journal_url}"
        )
        files = sample_files()
        acks = await publish_files(settings, files, console=console, wait=True, timeout_s=timeout_s)
        ack_table = Table("sample", "ACK", "MSH-10", "rules")
        for name, ack in acks.items():
            ack_table.add_row(
                name,
                ack.code if ack else "[red]none[/]",
                ack.control_id if ack else "",
                ", ".join(ack.rules) if ack else "",
            )
        console.print(ack_table)
        complete = await _wait_settled(service, [a.control_id for a in acks.values() if a], timeout_s)
        mail_table = Table("mail", "to", "subject", "X-MSS-CODECDA", "attachments")
        for n, mail in enumerate(mailbox.received, start=1):
            to = (
                "patient mailbox (<INS>@patient.mssante.fr)"
                if any(r.endswith("@patient.mssante.fr") for r in mail.rcpt_tos)
                else ", ".join(mail.rcpt_tos)
            )
            attachments = sum(1 for _ in mail.message.iter_attachments())
            mail_table.add_row(
                str(n), to, str(mail.message["Subject"]), str(mail.message["X-MSS-CODECDA"]), str(attachments)
            )
        console.print(mail_table)
        dmp_table = Table("sample", "DMP (XDS.b TD2.1 / TD3.3c)", "registry answer")
        for name, ack in acks.items():
            found = await service.journal.search(control_id=ack.control_id, limit=1) if ack else []
            deliveries = await service.journal.deliveries(found[0].message_id) if found else []
            dmp = next((d for d in deliveries if d.destination == "dmp"), None)
            if dmp is not None:
                detail = dmp.detail or {}
                answer = detail.get("error") or detail.get("registry") or ""
                dmp_table.add_row(name, dmp.status, f"{detail.get('step', '')} {answer}".strip())
        console.print(dmp_table)
        console.print(
            "samples 02 and 05 replace and delete the document their ANS example names, which was never sent to "
            "this DMP: the registry lookup (ITI-18) finds nothing and the DMP delivery ends refused, as it would "
            "on the real DMP"
        )
        console.print(
            f"mails written to {settings.demo_dir / 'mailbox'}, DMP submissions to "
            f"{settings.demo_dir / 'dmp'}"
        )
        console.print(
            "see every step: [bold].venv/bin/cisis-gateway journal list[/] then "
            "[bold].venv/bin/cisis-gateway journal show <message id>[/]"
        )
        ok = complete and all(a is not None for a in acks.values())
        if stay:
            console.print("gateway running; Ctrl-C to stop")
            await asyncio.Event().wait()
        return 0 if ok else 1
    finally:
        await service.stop()
        await sandbox.stop()
        mailbox.stop()


async def _wait_settled(service: GatewayService, control_ids: list[str], timeout_s: float) -> bool:
    """Wait until every sample's journal entry is final (rejected, or all deliveries done), bounded."""
    deadline = time.monotonic() + timeout_s
    journal = service.journal
    assert journal is not None
    while time.monotonic() < deadline:
        statuses = []
        for cid in control_ids:
            found = await journal.search(control_id=cid, limit=1)
            statuses.append(found[0].status if found else None)
        if all(s in FINAL for s in statuses):
            return True
        await asyncio.sleep(0.2)
    return False
