"""Journal tests: the same suite runs against SQLite (a file in tmp_path) and PostgreSQL (a fresh database).

PostgreSQL cases skip when the server at 127.0.0.1:5432 is unreachable, and fail instead when the
environment variable CI is set (a CI run must not silently lose half of its coverage).
"""

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from pydantic import ValidationError

from gateway.runtime.journal import (
    Journal,
    MessageEntry,
    PostgresJournal,
    SqliteJournal,
    UnknownMessageError,
    open_journal,
)

PG_ADMIN_DSN = os.environ.get("CISIS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
HASH_A = "a" * 64
HASH_B = "0123456789abcdef" * 4


def entry(message_id: str, received_at: datetime = T0, payload: bytes = b"MSH|^~\\&|LAB\r") -> MessageEntry:
    return MessageEntry(
        message_id=message_id, received_at=received_at, content_type="application/hl7-v2", payload=payload
    )


async def _pg_admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        message = f"PostgreSQL unreachable at {PG_ADMIN_DSN} ({type(exc).__name__}: {exc})"
        if "CI" in os.environ:
            pytest.fail(f"{message}; CI is set, so the PostgreSQL journal tests must run")
        pytest.skip(message)


@asynccontextmanager
async def _fresh_pg_database() -> AsyncIterator[str]:
    admin = await _pg_admin()
    name = f"cisis_test_{secrets.token_hex(6)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'journal.db'}"  # tmp_path is absolute: sqlite:////tmp/...
    else:
        async with _fresh_pg_database() as url:
            yield url


@pytest.fixture
async def journal(journal_url: str) -> AsyncIterator[Journal]:
    j = open_journal(journal_url)
    await j.open()
    try:
        yield j
    finally:
        await j.close()


async def queued_message(journal: Journal, message_id: str, expected: int, **kw: object) -> None:
    """A message routed to ``expected`` deliveries whose jobs are all confirmed queued."""
    assert await journal.begin(entry(message_id, **kw)) is None  # type: ignore[arg-type]
    await journal.step(message_id, "parsed", status="accepted", control_id=f"CTRL-{message_id}")
    await journal.step(message_id, "routed", expected_deliveries=expected)
    await journal.step(message_id, "queued", status="queued")


async def deliver(journal: Journal, message_id: str, key: str, status: str = "delivered", **kw: object):
    return await journal.record_delivery(
        idempotency_key=key,
        message_id=message_id,
        destination=kw.pop("destination", "dmp"),  # type: ignore[arg-type]
        recipient=kw.pop("recipient", None),  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------------------------------ begin()


async def test_begin_is_idempotent(journal: Journal) -> None:
    assert await journal.begin(entry("m1")) is None
    again = await journal.begin(entry("m1"))
    assert again is not None
    assert again.message_id == "m1" and again.status == "received" and again.received_at == T0
    assert [e.step for e in await journal.events("m1")] == ["received", "redelivered"]
    assert (await journal.events("m1"))[1].detail == {"source": "amqp", "same_payload": True}
    assert (await journal.counts())["total"] == 1
    assert len(await journal.search(message_id="m1")) == 1


async def test_begin_flags_a_reused_id_with_other_content(journal: Journal) -> None:
    await journal.begin(entry("m1", payload=b"one"))
    await journal.begin(entry("m1", payload=b"two"))
    assert (await journal.events("m1"))[-1].detail == {"source": "amqp", "same_payload": False}
    assert await journal.get_payload("m1") == b"one"


async def test_concurrent_begin_inserts_once(journal: Journal) -> None:
    results = await asyncio.gather(*(journal.begin(entry("m1")) for _ in range(10)))
    assert sum(r is None for r in results) == 1
    steps = [e.step for e in await journal.events("m1")]
    assert steps.count("received") == 1 and steps.count("redelivered") == 9


def test_entry_requires_aware_datetime_and_bytes() -> None:
    with pytest.raises(ValidationError):
        MessageEntry(message_id="m", received_at=datetime(2025, 1, 1), content_type="x", payload=b"")
    with pytest.raises(ValidationError):
        MessageEntry(message_id="m", received_at=T0, content_type="x", payload="text")  # type: ignore[arg-type]
    paris = datetime(2025, 1, 1, 9, 0, tzinfo=UTC).astimezone(ZoneInfo("Europe/Paris"))
    e = MessageEntry(message_id="m", received_at=paris, content_type="x", payload=b"")
    assert e.received_at.tzinfo is UTC and e.received_at.hour == 9


# ------------------------------------------------------------------------------------------- step()


async def test_step_updates_fields(journal: Journal) -> None:
    await journal.begin(entry("m1"))
    report = {"valid": True, "issues": [{"code": "W1", "text": "Réf. é"}]}
    await journal.step(
        "m1",
        "parsed",
        status="accepted",
        detail={"segments": 12},
        control_id="MSG0001",
        message_type="ORU^R01^ORU_R01",
        sending_application="LAB",
        sending_facility="CHU",
        document_id="1.2.250.1.999.1",
        action="initial",
        patient_hash=HASH_B.upper(),
        expected_deliveries=2,
        report=report,
    )
    record = await journal.get("m1")
    assert record is not None
    assert record.status == "accepted"
    assert (record.control_id, record.message_type) == ("MSG0001", "ORU^R01^ORU_R01")
    assert (record.sending_application, record.sending_facility) == ("LAB", "CHU")
    assert (record.document_id, record.action) == ("1.2.250.1.999.1", "initial")
    assert record.patient_hash == HASH_B  # normalised to lower case
    assert record.expected_deliveries == 2 and record.report == report
    assert record.updated_at > record.received_at
    last = (await journal.events("m1"))[-1]
    assert (last.step, last.detail, last.destination) == ("parsed", {"segments": 12}, None)

    await journal.step("m1", "note", document_id=None)  # None clears; status untouched
    record = await journal.get("m1")
    assert record is not None and record.document_id is None and record.status == "accepted"


async def test_step_rejects_unknown_fields_and_bad_values(journal: Journal) -> None:
    await journal.begin(entry("m1"))
    with pytest.raises(ValueError, match="unknown journal field"):
        await journal.step("m1", "parsed", status="accepted", patient_ins="123456789012345")
    with pytest.raises(ValueError, match="patient_hash"):
        await journal.step("m1", "parsed", patient_hash="180017501234567")  # an INS in clear
    with pytest.raises(ValueError):
        await journal.step("m1", "parsed", status="done")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await journal.step("m1", "parsed", action="update")
    with pytest.raises(ValueError):
        await journal.step("m1", "parsed", expected_deliveries=-1)
    with pytest.raises(ValueError):
        await journal.step("m1", "parsed", detail={"x": float("nan")})
    # nothing of the refused calls was written
    assert [e.step for e in await journal.events("m1")] == ["received"]
    assert (await journal.get("m1")).status == "received"  # type: ignore[union-attr]
    with pytest.raises(UnknownMessageError):
        await journal.step("nope", "parsed", status="accepted")
    with pytest.raises(UnknownMessageError):
        await journal.step("nope", "note")


async def test_step_replaces_nul_in_text(journal: Journal) -> None:
    await journal.begin(entry("m1"))
    await journal.step("m1", "parsed", control_id="A\x00B", detail={"seg": "x\x00y"})
    assert (await journal.get("m1")).control_id == "A\ufffdB"  # type: ignore[union-attr]
    assert (await journal.events("m1"))[-1].detail == {"seg": "x\ufffdy"}


# -------------------------------------------------------------------------------------- deliveries


async def test_delivery_flow_two_destinations(journal: Journal) -> None:
    await queued_message(journal, "m1", expected=2)
    pending = await deliver(journal, "m1", "m1:dmp", "pending")
    assert (pending.status, pending.attempts) == ("pending", 0)
    failed = await deliver(journal, "m1", "m1:dmp", "failed", detail={"http": 503})
    assert (failed.status, failed.attempts, failed.detail) == ("failed", 1, {"http": 503})

    first = await deliver(journal, "m1", "m1:dmp", "delivered")
    assert (first.status, first.attempts) == ("delivered", 2)
    record = await journal.get("m1")
    assert record is not None
    # one of two delivered: counted, but the message is still in flight
    assert (record.status, record.delivered_count, record.dead_lettered_count) == ("queued", 1, 0)

    await deliver(journal, "m1", "m1:mss", "delivered", destination="mssante", recipient="dr@chu.mssante.fr")
    record = await journal.get("m1")
    assert record is not None and (record.status, record.delivered_count) == ("delivered", 2)

    assert await journal.delivery("m1:mss") is not None
    assert (await journal.delivery("m1:mss")).recipient == "dr@chu.mssante.fr"  # type: ignore[union-attr]
    assert await journal.delivery("nope") is None
    assert [d.idempotency_key for d in await journal.deliveries("m1")] == ["m1:dmp", "m1:mss"]
    events = await journal.events("m1")
    assert [e.step for e in events] == [
        "received",
        "parsed",
        "routed",
        "queued",
        "queued",
        "delivery_failed",
        "delivered",
        "delivered",
    ]
    assert events[-1].destination == "mssante" and events[-1].detail == {"idempotency_key": "m1:mss"}


async def test_duplicate_delivered_does_not_double_count(journal: Journal) -> None:
    await queued_message(journal, "m1", expected=2)
    await deliver(journal, "m1", "m1:dmp")
    again = await deliver(journal, "m1", "m1:dmp")
    assert again.attempts == 2 and again.status == "delivered"
    # delivered is final: a late failure report is kept as an event only
    late = await deliver(journal, "m1", "m1:dmp", "failed")
    assert late.status == "delivered"
    record = await journal.get("m1")
    assert record is not None and (record.status, record.delivered_count) == ("queued", 1)
    assert (await journal.events("m1"))[-1].detail == {"idempotency_key": "m1:dmp", "already_delivered": True}


async def test_dead_letter_accounting(journal: Journal) -> None:
    await queued_message(journal, "all-dead", expected=1)
    await deliver(journal, "all-dead", "k1", "failed")
    await deliver(journal, "all-dead", "k1", "dead_lettered", detail={"error": "SOAP fault"})
    await deliver(journal, "all-dead", "k1", "dead_lettered")  # duplicate: not counted twice
    record = await journal.get("all-dead")
    assert record is not None
    assert (record.status, record.delivered_count, record.dead_lettered_count) == ("dead_lettered", 0, 1)
    assert (await journal.delivery("k1")).attempts == 3  # type: ignore[union-attr]

    await queued_message(journal, "partial", expected=2)
    await deliver(journal, "partial", "p1", "dead_lettered")
    record = await journal.get("partial")
    assert record is not None and record.status == "queued"  # one still pending
    await deliver(journal, "partial", "p2", "delivered", destination="mssante")
    record = await journal.get("partial")
    assert record is not None
    assert (record.status, record.delivered_count, record.dead_lettered_count) == (
        "partially_delivered",
        1,
        1,
    )


async def test_dead_letter_replay_moves_counters(journal: Journal) -> None:
    await queued_message(journal, "m1", expected=1)
    await deliver(journal, "m1", "k1", "dead_lettered")
    assert (await journal.get("m1")).status == "dead_lettered"  # type: ignore[union-attr]
    await deliver(journal, "m1", "k1", "pending")  # ops replays the dead letter
    record = await journal.get("m1")
    assert record is not None and (record.status, record.dead_lettered_count) == ("queued", 0)
    await deliver(journal, "m1", "k1", "delivered")
    record = await journal.get("m1")
    assert record is not None
    assert (record.status, record.delivered_count, record.dead_lettered_count) == ("delivered", 1, 0)


async def test_late_steps_do_not_hide_completed_deliveries(journal: Journal) -> None:
    # The delivery worker may finish before the publisher records 'queued', or even before 'routed'.
    await journal.begin(entry("m1"))
    await journal.step("m1", "parsed", status="accepted")
    await deliver(journal, "m1", "k1")
    assert (await journal.get("m1")).status == "accepted"  # type: ignore[union-attr]  # expected unknown yet
    await journal.step("m1", "routed", expected_deliveries=1)
    assert (await journal.get("m1")).status == "delivered"  # type: ignore[union-attr]
    await journal.step("m1", "queued", status="queued")
    assert (await journal.get("m1")).status == "delivered"  # type: ignore[union-attr]


async def test_record_delivery_errors(journal: Journal) -> None:
    with pytest.raises(UnknownMessageError):
        await deliver(journal, "nope", "k1")
    await queued_message(journal, "m1", expected=1)
    await queued_message(journal, "m2", expected=1)
    await deliver(journal, "m1", "k1", "pending")
    with pytest.raises(ValueError, match="already belongs"):
        await deliver(journal, "m2", "k1")
    with pytest.raises(ValueError):
        await deliver(journal, "m1", "k2", "sent")
    assert (await journal.get("m2")).delivered_count == 0  # type: ignore[union-attr]


async def test_concurrent_deliveries(journal: Journal, journal_url: str) -> None:
    # A second journal object on the same database stands for a second consumer process.
    other = open_journal(journal_url)
    await other.open()
    try:
        ids = [f"m{i:02d}" for i in range(20)]
        for message_id in ids:
            await queued_message(journal, message_id, expected=2)
        calls = [
            deliver(j, message_id, f"{message_id}:{dest}", destination=dest)
            for message_id in ids
            for dest in ("dmp", "mssante")
            for j in (journal, other)  # every delivery reported twice, concurrently
        ]
        await asyncio.gather(*calls)
    finally:
        await other.close()
    for message_id in ids:
        record = await journal.get(message_id)
        assert record is not None
        assert (record.status, record.delivered_count, record.dead_lettered_count) == ("delivered", 2, 0)
        assert [d.attempts for d in await journal.deliveries(message_id)] == [2, 2]
    assert (await journal.counts())["delivered"] == 20


async def test_cancelled_writers_leave_the_journal_consistent(journal: Journal) -> None:
    # Consumers get cancelled at shutdown; a write must then be all or nothing, and the journal usable.
    async def cancel_progressively(coros: list) -> None:
        tasks = [asyncio.create_task(c) for c in coros]
        for task in tasks:
            await asyncio.sleep(0.0003)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    await cancel_progressively([journal.begin(entry(f"c{i}")) for i in range(30)])
    for i in range(30):
        record = await journal.get(f"c{i}")
        if record is not None:
            assert await journal.get_payload(f"c{i}") == entry("x").payload
            assert [e.step for e in await journal.events(f"c{i}")] == ["received"]

    await queued_message(journal, "m1", expected=30)
    keys = [f"m1:{i}" for i in range(30)]
    await cancel_progressively([deliver(journal, "m1", key) for key in keys])
    for key in keys:  # the broker redelivers whatever was not acknowledged
        await deliver(journal, "m1", key)
    record = await journal.get("m1")
    assert record is not None and (record.status, record.delivered_count) == ("delivered", 30)
    assert await journal.ping() is True


# -------------------------------------------------------------------------------------- reads


async def test_search_filters(journal: Journal) -> None:
    for i in range(5):
        message_id = f"m{i}"
        await journal.begin(entry(message_id, received_at=T0 + timedelta(hours=i)))
        await journal.step(
            message_id,
            "parsed",
            status="rejected" if i == 4 else "accepted",
            control_id=f"C{i}",
            document_id=f"1.2.3.{i % 2}",
            patient_hash=HASH_A if i < 2 else HASH_B,
        )

    def ids(records: list) -> list[str]:
        return [r.message_id for r in records]

    assert ids(await journal.search()) == ["m4", "m3", "m2", "m1", "m0"]  # newest first
    assert ids(await journal.search(message_id="m2")) == ["m2"]
    assert ids(await journal.search(document_id="1.2.3.1")) == ["m3", "m1"]
    assert ids(await journal.search(status="rejected")) == ["m4"]
    assert ids(await journal.search(patient_hash=HASH_A)) == ["m1", "m0"]
    assert ids(await journal.search(patient_hash=HASH_A.upper())) == ["m1", "m0"]
    assert ids(await journal.search(control_id="C3")) == ["m3"]
    assert ids(await journal.search(document_id="1.2.3.0", patient_hash=HASH_B)) == ["m4", "m2"]
    assert await journal.search(message_id="m0", status="rejected") == []
    # time window: since inclusive, until exclusive
    since, until = T0 + timedelta(hours=1), T0 + timedelta(hours=3)
    assert ids(await journal.search(since=since)) == ["m4", "m3", "m2", "m1"]
    assert ids(await journal.search(until=until)) == ["m2", "m1", "m0"]
    assert ids(await journal.search(since=since, until=until)) == ["m2", "m1"]
    other_tz = since.astimezone(ZoneInfo("America/New_York"))
    assert ids(await journal.search(since=other_tz, until=until)) == ["m2", "m1"]
    assert ids(await journal.search(limit=2)) == ["m4", "m3"]
    assert ids(await journal.search(limit=2, offset=3)) == ["m1", "m0"]
    assert not hasattr((await journal.search(limit=1))[0], "payload")
    with pytest.raises(ValueError):
        await journal.search(status="lost")
    with pytest.raises(ValueError):
        await journal.search(since=datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        await journal.search(patient_hash="180017501234567")


async def test_payload_round_trip(journal: Journal) -> None:
    payload = b"MSH|^~\\&|\x00\xff\xfe\x80" + bytes(range(256)) + "é".encode("latin-1")
    await journal.begin(entry("m1", payload=payload))
    assert await journal.get_payload("m1") == payload
    assert (await journal.get("m1")).payload_size == len(payload)  # type: ignore[union-attr]
    await journal.begin(entry("empty", payload=b""))
    assert await journal.get_payload("empty") == b""
    assert await journal.get_payload("nope") is None
    assert await journal.get("nope") is None
    assert await journal.events("nope") == []


async def test_counts(journal: Journal) -> None:
    assert await journal.counts() == {
        "received": 0,
        "accepted": 0,
        "rejected": 0,
        "queued": 0,
        "delivered": 0,
        "partially_delivered": 0,
        "dead_lettered": 0,
        "total": 0,
    }
    await journal.begin(entry("r"))
    await journal.begin(entry("x"))
    await journal.step("x", "rejected", status="rejected")
    await queued_message(journal, "q", expected=1)
    await queued_message(journal, "d", expected=1)
    await deliver(journal, "d", "d1")
    await queued_message(journal, "p", expected=2)
    await deliver(journal, "p", "p1")
    await deliver(journal, "p", "p2", "dead_lettered")
    counts = await journal.counts()
    assert counts["total"] == 5 == sum(v for k, v in counts.items() if k != "total")
    assert (counts["received"], counts["rejected"], counts["queued"]) == (1, 1, 1)
    assert (counts["delivered"], counts["partially_delivered"], counts["dead_lettered"]) == (1, 1, 0)
    in_flight = counts["received"] + counts["accepted"] + counts["queued"]
    finished = (
        counts["delivered"] + counts["rejected"] + counts["dead_lettered"] + counts["partially_delivered"]
    )
    assert counts["total"] == finished + in_flight


async def test_reopen_keeps_data(journal: Journal, journal_url: str) -> None:
    await queued_message(journal, "m1", expected=1)
    await deliver(journal, "m1", "k1")
    await journal.close()
    await journal.close()  # idempotent
    assert await journal.ping() is False
    for _ in range(2):  # schema creation is idempotent
        again = open_journal(journal_url)
        await again.open()
        await again.open()
        try:
            assert (await again.get("m1")).status == "delivered"  # type: ignore[union-attr]
            assert await again.get_payload("m1") == entry("m1").payload
            assert len(await again.events("m1")) == 5
            assert await again.ping() is True
        finally:
            await again.close()


async def test_use_before_open_fails_clearly(journal_url: str) -> None:
    j = open_journal(journal_url)
    with pytest.raises(RuntimeError, match="not open"):
        await j.get("m1")
    assert await j.ping() is False


# ---------------------------------------------------------------------------------- open_journal()


async def test_open_journal_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_journal("sqlite:///data/sub/journal.db")
    assert isinstance(relative, SqliteJournal) and relative.path == "data/sub/journal.db"
    assert not (tmp_path / "data").exists()  # not opened yet
    async with relative:
        assert await relative.ping()
    assert (tmp_path / "data" / "sub" / "journal.db").is_file()

    absolute = open_journal(f"sqlite:///{tmp_path}/abs/j.db")
    assert isinstance(absolute, SqliteJournal) and absolute.path == f"{tmp_path}/abs/j.db"

    memory = open_journal("sqlite://:memory:")
    async with memory:
        await memory.begin(entry("m1"))
        assert (await memory.get("m1")) is not None

    assert isinstance(open_journal("postgresql://postgres@127.0.0.1:5432/x"), PostgresJournal)
    assert isinstance(open_journal("postgres://u:secret@db/x"), PostgresJournal)
    for bad in ("mysql://u:secret@db/x", "journal.db", "sqlite://", "sqlite:///", "sqlite://relative.db"):
        with pytest.raises(ValueError) as info:
            open_journal(bad)
        assert "secret" not in str(info.value)


# ------------------------------------------------------------------------------------ mails (receipts)


async def test_mail_is_found_by_its_message_id_and_recorded_once(journal: Journal) -> None:
    await queued_message(journal, "m-mail", 1)
    assert await journal.mail("<abc@gw>") is None
    await journal.record_mail(
        "<abc@gw>", message_id="m-mail", idempotency_key="k1", detail={"ack_reception": True}
    )
    # a retried send records again: the first row stays
    await journal.record_mail("<abc@gw>", message_id="m-mail", idempotency_key="k1", detail={"other": 1})
    mail = await journal.mail("<abc@gw>")
    assert mail is not None
    assert (mail.message_id, mail.idempotency_key, mail.detail) == ("m-mail", "k1", {"ack_reception": True})
    assert mail.created_at.tzinfo is not None
    with pytest.raises(UnknownMessageError):
        await journal.record_mail("<x@gw>", message_id="nobody", idempotency_key="k2")
    with pytest.raises(ValueError):
        await journal.record_mail("", message_id="m-mail", idempotency_key="k3")
