"""The same end-to-end flow with the journal on PostgreSQL (127.0.0.1:5432)."""

from __future__ import annotations

import os
import uuid

import asyncpg
import pytest

from tests.conftest import PG_ADMIN_DSN, SAMPLES, wait_until
from tests.harness import make_harness

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


@pytest.fixture
async def pg_url():
    name = f"cisis_e2e_{uuid.uuid4().hex[:10]}"
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.close()


async def test_initial_and_rejected_messages_with_a_postgresql_journal(prefix, tmp_path, pg_url):
    h = await make_harness(prefix, tmp_path, journal_url=pg_url)
    try:
        await h.start_gateway()
        ok = await h.publish((SAMPLES / "01_ORU_R01_initial_CR-BIO.hl7").read_bytes(), message_id="pg-ok")
        bad = await h.publish(
            (SAMPLES / "03_MDM_T02_initial_CR-IMG_illegal_flags.hl7").read_bytes(), message_id="pg-bad"
        )
        await wait_until(lambda: ok in h.acks and bad in h.acks, what="both ACKs")
        assert h.acks[ok].code == "AA" and h.acks[bad].code == "AE"

        async def settled() -> bool:
            counts = await h.journal.counts()
            return counts.get("delivered") == 1 and counts.get("rejected") == 1

        await wait_until(settled, what="journal settled on PostgreSQL")
        assert len(h.sandbox.state.submissions) == 1 and len(h.mailbox.received) == 2
        found = await h.journal.search(document_id="1.2.250.1.213.1.1.1.55.2021.6.1")
        assert [r.message_id for r in found] == ["pg-ok"]
        assert (await h.journal.get("pg-bad")).report["findings"][0]["rule"] == "TRANS-MSS-FLAGS"
    finally:
        await h.close()
