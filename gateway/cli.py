"""``cisis-gateway``: run the gateway, send files to it, validate a file, check routes, read the journal."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gateway.config import DEV_PATIENT_HASH_KEY, Settings

app = typer.Typer(help="cisis-gateway: HL7v2 CI-SIS documents to the DMP and MSSanté.", no_args_is_help=True)
routes_app = typer.Typer(help="Routing rules (routes.yaml).", no_args_is_help=True)
journal_app = typer.Typer(help="The message journal.", no_args_is_help=True)
app.add_typer(routes_app, name="routes")
app.add_typer(journal_app, name="journal")
console = Console()
err = Console(stderr=True)

RoutesOpt = Annotated[
    Path | None, typer.Option("--routes", help="routes.yaml to use (default: CISIS_ROUTES_PATH).")
]
JournalOpt = Annotated[
    str | None, typer.Option("--journal", help="Journal URL (default: CISIS_JOURNAL_URL).")
]


def _settings(**overrides: object) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@app.command()
def run(
    routes: RoutesOpt = None,
    demo: Annotated[
        bool, typer.Option(help="Also start the demo mailbox and DMP sandbox and send the samples.")
    ] = False,
    exit_after_demo: Annotated[
        bool, typer.Option(help="With --demo: stop once the samples are handled.")
    ] = False,
) -> None:
    """Run the gateway until Ctrl-C (with --demo: local MSSanté mailbox, DMP sandbox and sample messages)."""
    from gateway.runtime.logs import setup_logging

    settings = _settings(routes_path=routes)
    setup_logging(settings.log_level)
    if settings.patient_hash_key.get_secret_value() == DEV_PATIENT_HASH_KEY and not demo:
        err.print(
            "[yellow]warning:[/] CISIS_PATIENT_HASH_KEY is the development key; set a secret in production"
        )
    if demo:
        from gateway.demo.runner import run_demo

        code = asyncio.run(run_demo(settings, console, stay=not exit_after_demo))
        raise typer.Exit(code)

    from gateway.runtime.service import GatewayService

    async def main() -> None:
        service = GatewayService(settings)
        await service.start()
        console.print(f"gateway running (inbox queue [bold]{settings.names.inbox}[/]); Ctrl-C to stop")
        try:
            await asyncio.Event().wait()
        finally:
            await service.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        console.print("stopped")


@app.command()
def send(
    files: Annotated[list[Path], typer.Argument(help="HL7v2 files (a file may hold several messages).")],
    wait: Annotated[bool, typer.Option(help="Wait for each message's ACK and print it.")] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: seconds to wait for all ACKs.")] = 60.0,
) -> None:
    """Publish files to the gateway's inbox (with publisher confirms)."""
    from gateway.demo.sender import publish_files

    settings = _settings()
    acks = asyncio.run(publish_files(settings, files, console=console, wait=wait, timeout_s=timeout))
    if wait:
        missing = [name for name, ack in acks.items() if ack is None]
        for name, ack in acks.items():
            console.print(
                f"{name}: {ack.code if ack else '[red]no ACK[/]'}"
                + (f" {', '.join(ack.rules)}" if ack and ack.rules else "")
            )
        if missing:
            raise typer.Exit(1)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="An HL7v2 message, a CDA or a FHIR PDSm file.")],
    routes: RoutesOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    official: Annotated[
        bool,
        typer.Option("--official", help="Also run the official ANS schematrons (CISIS_OFFICIAL_KIT_DIR)."),
    ] = False,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header", help="AMQP header for a CDA sent alone, e.g. 'x-cisis-flags=DESTDMP=Y;...'."
        ),
    ] = None,
) -> None:
    """Parse, validate and route FILE without a broker. Exit code 0 valid, 1 invalid."""
    from gateway.routing import RoutesFileError, load_routes
    from gateway.routing.transformers import load_transformers
    from gateway.runtime.pipeline import Envelope, Pipeline

    settings = _settings(routes_path=routes)
    try:
        table = load_routes(settings.routes_path)
    except RoutesFileError as exc:
        err.print(f"[red]routes file invalid:[/] {exc}")
        raise typer.Exit(2) from None
    pipeline = Pipeline(
        table,
        load_transformers(settings.transformers_dir),
        settings.patient_hash_key.get_secret_value(),
        settings.max_message_bytes,
        **settings.pipeline_options(),
    )
    headers = dict(h.split("=", 1) for h in header or [] if "=" in h)
    body = file.read_bytes()
    outcome = pipeline.process(
        Envelope(body=body, message_id=f"file:{file.name}", source="cli", headers=headers)
    )
    if official:
        if settings.official_kit_dir is None:
            err.print("--official needs CISIS_OFFICIAL_KIT_DIR (the ANS TestContenuCDA kit folder)")
            raise typer.Exit(2)
        from gateway.validation.official import OfficialValidator

        validator = OfficialValidator(settings.official_kit_dir, settings.official_cache_dir)
        documents = outcome.submission.documents if outcome.submission else []
        if not documents and outcome.submission is None and body.lstrip()[:1] == b"<":
            documents_bytes = [body]
        else:
            documents_bytes = [d.content.data for d in documents]
        for n, data in enumerate(documents_bytes, start=1):
            for f in validator.validate(data).findings:
                outcome.report.findings.append(
                    f.model_copy(update={"location": f"document {n} {f.location}"})
                )
        outcome.accepted = outcome.accepted and outcome.report.valid
    if as_json:
        print(
            json.dumps(
                {
                    "valid": outcome.accepted,
                    "ack": outcome.report.ack_code(),
                    "findings": outcome.report.model_dump(mode="json")["findings"],
                    "routes": outcome.decision.matched if outcome.decision else [],
                    "targets": [f"{j.destination}:{j.recipients_kind or '-'}" for j in outcome.jobs],
                },
                indent=2,
            )
        )
    else:
        _print_outcome(file, outcome)
    raise typer.Exit(0 if outcome.accepted else 1)


def _print_outcome(file: Path, outcome) -> None:  # type: ignore[no-untyped-def]
    sub = outcome.submission
    verdict = "[green]valid[/]" if outcome.accepted else "[red]invalid[/]"
    console.print(f"{file.name}: {verdict} (ACK {outcome.report.ack_code()})")
    if sub is not None:
        console.print(
            f"  {sub.provenance.message_type}  action={sub.action.value}  "
            f"document={sub.document_unique_id}  documents={len(sub.documents)}"
        )
    if outcome.decision is not None:
        console.print(f"  routes matched: {', '.join(outcome.decision.matched) or '-'}")
    for job in outcome.jobs:
        console.print(f"  -> {job.destination}{':' + job.recipients_kind if job.recipients_kind else ''}")
    if outcome.report.findings:
        table = Table("severity", "rule", "location", "message", show_lines=False)
        for f in outcome.report.findings:
            table.add_row(f.severity.value, f.rule, f.location, f.message)
        console.print(table)


@routes_app.command("check")
def routes_check(
    file: Annotated[Path | None, typer.Argument(help="Default: CISIS_ROUTES_PATH.")] = None,
) -> None:
    """Check a routes file; errors are reported with their line numbers. Exit code 0 valid, 1 invalid."""
    from gateway.routing import RoutesFileError, load_routes
    from gateway.routing.transformers import TransformerError, check_names, load_transformers

    settings = _settings()
    path = file or settings.routes_path
    try:
        table = load_routes(path)
    except RoutesFileError as exc:
        for e in exc.errors:
            err.print(f"{path}:{e.line or '?'}: {e.path + ': ' if e.path else ''}{e.message}")
        raise typer.Exit(1) from None
    try:
        missing = check_names(table.transformer_names(), load_transformers(settings.transformers_dir))
    except TransformerError as exc:
        err.print(f"{path}: {exc}")
        raise typer.Exit(1) from None
    if missing:
        err.print(f"{path}: unknown transformers: {', '.join(missing)} (not in {settings.transformers_dir})")
        raise typer.Exit(1)
    console.print(f"{path}: OK, {len(table.routes)} routes")


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1] in units and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def _with_journal(url: str | None, fn):  # type: ignore[no-untyped-def]
    from gateway.runtime.journal import open_journal

    journal = open_journal(url or _settings().journal_url)
    await journal.open()
    try:
        return await fn(journal)
    finally:
        await journal.close()


@journal_app.command("list")
def journal_list(
    status: Annotated[str | None, typer.Option(help="received, accepted, rejected, delivered, ...")] = None,
    document: Annotated[str | None, typer.Option(help="Document uniqueId.")] = None,
    patient: Annotated[
        str | None, typer.Option(help="INS matricule: searched by its keyed hash, never stored.")
    ] = None,
    control_id: Annotated[str | None, typer.Option(help="MSH-10.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time or a duration such as 30m, 2h, 7d.")] = None,
    limit: int = 50,
    journal: JournalOpt = None,
) -> None:
    """List journaled messages, newest first."""
    from gateway.privacy import patient_hash

    settings = _settings()
    hashed = patient_hash(settings.patient_hash_key.get_secret_value(), patient) if patient else None
    records = asyncio.run(
        _with_journal(
            journal,
            lambda j: j.search(
                status=status,
                document_id=document,
                patient_hash=hashed,
                control_id=control_id,
                since=_since(since),
                limit=limit,
            ),
        )
    )
    table = Table("received (UTC)", "MSH-10", "type", "action", "status", "deliveries")
    table.add_column("message id", overflow="fold")  # never shortened: it is what `journal show` takes
    for r in records:
        table.add_row(
            r.received_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.control_id or "",
            r.message_type or "",
            r.action or "",
            r.status,
            f"{r.delivered_count}/{r.expected_deliveries}" if r.expected_deliveries else "",
            r.message_id,
        )
    console.print(table)
    console.print(f"{len(records)} message(s)")


@journal_app.command("show")
def journal_show(
    message_id: Annotated[str, typer.Argument(help="Gateway message id.")],
    payload: Annotated[
        bool, typer.Option(help="Also print the raw payload (contains patient data).")
    ] = False,
    journal: JournalOpt = None,
) -> None:
    """Show one message: its steps, validation report and deliveries."""

    async def fetch(j):  # type: ignore[no-untyped-def]
        return (
            await j.get(message_id),
            await j.events(message_id),
            await j.deliveries(message_id),
            await j.get_payload(message_id) if payload else None,
        )

    record, events, deliveries, raw = asyncio.run(_with_journal(journal, fetch))
    if record is None:
        err.print(f"no message {message_id}")
        raise typer.Exit(1)
    console.print(
        f"[bold]{record.message_id}[/]  status={record.status}  type={record.message_type}  "
        f"MSH-10={record.control_id}  document={record.document_id}  action={record.action}"
    )
    steps = Table("time (UTC)", "step", "destination", "detail")
    for e in events:
        steps.add_row(
            e.at.strftime("%H:%M:%S.%f")[:-3],
            e.step,
            e.destination or "",
            json.dumps(e.detail, ensure_ascii=False) if e.detail else "",
        )
    console.print(steps)
    findings = (record.report or {}).get("findings", [])
    if findings:
        report = Table("severity", "rule", "location", "message")
        for f in findings:
            report.add_row(f["severity"], f["rule"], f["location"], f["message"])
        console.print(report)
    for d in deliveries:
        console.print(
            f"delivery {d.destination} {d.recipient or ''}: {d.status} after {d.attempts} attempt(s)"
        )
    if raw is not None:
        sys.stdout.write(raw.decode("utf-8", "replace").replace("\r", "\n") + "\n")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
