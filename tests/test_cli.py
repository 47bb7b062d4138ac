"""The command line, as a user runs it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.privacy import patient_hash
from gateway.runtime.journal import MessageEntry, open_journal
from tests.conftest import AMQP_URL, ROOT, SAMPLES

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [[], ["run"], ["send"], ["validate"], ["routes", "check"], ["journal", "list"], ["journal", "show"]],
)
def test_help_on_every_command(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_validate_exit_codes_and_json():
    ok = runner.invoke(
        app,
        [
            "validate",
            str(SAMPLES / "04_MDM_T02_initial_CR-IMG_PS_only.hl7"),
            "--routes",
            str(ROOT / "routes.yaml"),
        ],
    )
    assert ok.exit_code == 0 and "valid" in ok.output
    bad = runner.invoke(
        app,
        [
            "validate",
            str(SAMPLES / "03_MDM_T02_initial_CR-IMG_illegal_flags.hl7"),
            "--json",
            "--routes",
            str(ROOT / "routes.yaml"),
        ],
    )
    assert bad.exit_code == 1
    assert '"rule": "TRANS-MSS-FLAGS"' in bad.output and '"ack": "AE"' in bad.output


def test_routes_check_ok_and_with_line_numbers(tmp_path):
    ok = runner.invoke(app, ["routes", "check", str(ROOT / "routes.yaml")])
    assert ok.exit_code == 0 and "OK, 5 routes" in ok.output
    bad = tmp_path / "routes.yaml"
    bad.write_text("routes:\n  - name: x\n    when: {flags: {DESTDMP: maybe}}\n    send: [{to: dmp}]\n")
    result = runner.invoke(app, ["routes", "check", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3:" in result.output and "Y or N" in result.output


def test_routes_check_names_missing_transformers(tmp_path, monkeypatch):
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - name: x\n    transform: [nope]\n    send: [{to: dmp}]\n")
    monkeypatch.setenv("CISIS_TRANSFORMERS_DIR", str(tmp_path))
    result = runner.invoke(app, ["routes", "check", str(routes)])
    assert result.exit_code == 1 and "unknown transformers: nope" in result.output


def test_journal_list_and_show_search_by_patient_hash(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'j.db'}"
    monkeypatch.setenv("CISIS_PATIENT_HASH_KEY", "k1")

    async def fill() -> None:
        j = open_journal(url)
        await j.open()
        await j.begin(
            MessageEntry(
                message_id="msg-1", received_at=datetime.now(UTC), content_type="x", payload=b"MSH|..."
            )
        )
        await j.step(
            "msg-1",
            "rejected",
            status="rejected",
            control_id="C-1",
            patient_hash=patient_hash("k1", "279035121518989"),
            report={"findings": [{"severity": "error", "rule": "R-1", "location": "PID-3", "message": "m"}]},
        )
        await j.close()

    asyncio.run(fill())
    listed = runner.invoke(app, ["journal", "list", "--journal", url, "--patient", "279035121518989"])
    assert listed.exit_code == 0 and "msg-1" in listed.output and "1 message(s)" in listed.output
    other = runner.invoke(app, ["journal", "list", "--journal", url, "--patient", "162018885045327"])
    assert "0 message(s)" in other.output
    shown = runner.invoke(app, ["journal", "show", "msg-1", "--journal", url], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "R-1" in shown.output and "rejected" in shown.output
    assert runner.invoke(app, ["journal", "show", "nope", "--journal", url]).exit_code == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.broker
def test_make_run_demo_path_delivers_the_samples_and_the_journal_lists_them(tmp_path, prefix):
    """What `make run` does, bounded: the demo with its mailbox and sandbox, then `journal list`."""
    env = {
        **os.environ,
        "CISIS_AMQP_URL": AMQP_URL,
        "CISIS_BROKER_PREFIX": prefix,
        "CISIS_JOURNAL_URL": f"sqlite:///{tmp_path / 'journal.db'}",
        "CISIS_DEMO_DIR": str(tmp_path / "demo"),
        "CISIS_DEMO_SMTP_PORT": str(_free_port()),
        "CISIS_DEMO_DMP_PORT": str(_free_port()),
        "COLUMNS": "200",
    }
    exe = [sys.executable, "-m", "gateway.cli"]
    try:
        run = subprocess.run(
            [*exe, "run", "--demo", "--exit-after-demo"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert run.stdout.count(" AA ") == 4 and "TRANS-MSS-FLAGS" in run.stdout
        assert len(list((tmp_path / "demo/mailbox").glob("*.eml"))) == 7
        # the XDS sandbox keeps one summary per ITI-41: samples 01 and 04 (02 replaces, and 05 deletes, a
        # document the ANS example never sent: refused after the ITI-18 lookup, no ITI-41)
        assert len(list((tmp_path / "demo/dmp").glob("*.json"))) == 2
        assert "XDSDocumentUniqueIdError" in run.stdout
        listed = subprocess.run(
            [*exe, "journal", "list"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert "5 message(s)" in listed.stdout
        assert listed.stdout.count("delivered") == 4 and listed.stdout.count("rejected") == 1
        assert "279035121518989" not in run.stdout + run.stderr + listed.stdout  # no INS on screen or in logs
    finally:
        asyncio.run(_cleanup(prefix))


async def _cleanup(prefix: str) -> None:
    import aio_pika

    from gateway.config import BrokerNames
    from gateway.runtime.topology import delete

    conn = await aio_pika.connect_robust(AMQP_URL)
    async with conn:
        await delete(await conn.channel(), BrokerNames(prefix))
