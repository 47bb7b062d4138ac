"""Message journal: models, the :class:`Journal` protocol and the SQL logic shared by both backends.

The journal keeps every message the gateway receives (raw payload included) and every step it goes
through, so that operations can answer "what happened to message X / document Y / patient Z".

Message statuses (exactly one per message):

- ``received``: recorded by begin(), nothing else known yet;
- ``accepted``: parsed, validated and routed, outbound jobs not yet confirmed by the broker;
- ``rejected``: refused (parse or validation error); no delivery will happen;
- ``queued``: every outbound job confirmed by the broker, deliveries outstanding;
- ``delivered``: every expected delivery done;
- ``dead_lettered``: every expected delivery ended, none delivered, at least one dead-lettered;
- ``partially_delivered``: every expected delivery ended, some delivered, some dead-lettered.

The last three are derived by the journal from the delivery counters (see record_delivery()), never
guessed. The accounting invariant ops rely on::

    received = delivered + rejected + dead_lettered + in-flight

where the left side is ``counts()["total"]``, ``in-flight`` is ``received + accepted + queued``, and
``partially_delivered`` is counted under ``dead_lettered`` (the message still needs a human).

Patient data: the journal never sees an identifier in clear. ``patient_hash`` must be the hex digest of
a keyed hash computed by the caller; anything else is refused. Payloads and patient data are never logged.

Backends (SQLite, PostgreSQL) only provide connections, transactions and the encoding of timestamps; the
SQL below is written once with ``$n`` placeholders (the SQLite backend rewrites them to ``?n``).
"""

import asyncio
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from types import TracebackType
from typing import (
    Annotated,
    Any,
    ClassVar,
    Final,
    Literal,
    Protocol,
    Self,
    TypeVar,
    get_args,
    runtime_checkable,
)

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Strict, field_validator

logger = logging.getLogger("cisis.journal")

SCHEMA_VERSION: Final = 1

MessageStatus = Literal[
    "received", "accepted", "rejected", "queued", "delivered", "partially_delivered", "dead_lettered"
]
DeliveryStatus = Literal["pending", "delivered", "failed", "dead_lettered"]
Action = Literal["initial", "replacement", "deletion"]

MESSAGE_STATUSES: Final[tuple[str, ...]] = get_args(MessageStatus)
DELIVERY_STATUSES: Final[tuple[str, ...]] = get_args(DeliveryStatus)
ACTIONS: Final[tuple[str, ...]] = get_args(Action)
#: Statuses a message has while the gateway still owes it some work.
IN_FLIGHT_STATUSES: Final = ("received", "accepted", "queued")
#: Statuses derived from the delivery counters once every expected delivery has ended.
DELIVERY_OUTCOMES: Final = ("delivered", "partially_delivered", "dead_lettered")

#: Message columns step() may set; anything else is a programming error (ValueError).
STEP_FIELDS: Final = frozenset(
    {
        "control_id",
        "message_type",
        "sending_application",
        "sending_facility",
        "document_id",
        "action",
        "patient_hash",
        "expected_deliveries",
        "report",
    }
)

#: Event step written by record_delivery() for each delivery status.
DELIVERY_EVENT_STEP: Final[dict[str, str]] = {
    "pending": "queued",
    "delivered": "delivered",
    "failed": "delivery_failed",
    "dead_lettered": "dead_lettered",
}

# A keyed hash in hex: HMAC-SHA256 gives 64 digits; accept 128-bit to 512-bit digests. An INS/NIR (15
# decimal digits) can never match, which is the point: the journal must not store one in clear.
_HEX_DIGEST = re.compile(r"[0-9a-f]{32,128}")


class JournalError(Exception):
    """Base class of the journal's own errors."""


class UnknownMessageError(JournalError, LookupError):
    """step() or record_delivery() was called for a message_id that begin() never recorded."""


# --------------------------------------------------------------------------------------------- models


class MessageEntry(BaseModel):
    """What the caller knows about a message at reception.

    ``received_at`` must be timezone-aware (a naive datetime is refused rather than guessed) and is
    normalised to UTC. ``payload`` must be ``bytes``: a ``str`` is refused instead of being silently
    re-encoded, since the journal must keep the bytes exactly as received.
    """

    model_config = ConfigDict(frozen=True)

    message_id: str = Field(min_length=1)
    received_at: AwareDatetime
    content_type: str
    payload: Annotated[bytes, Strict()]
    source: str = "amqp"
    reply_to: str | None = None
    correlation_id: str | None = None

    @field_validator("received_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


class MessageRecord(BaseModel):
    """A journal row as read back (without the payload: use :meth:`Journal.get_payload`)."""

    model_config = ConfigDict(frozen=True)

    message_id: str
    received_at: datetime
    updated_at: datetime
    status: MessageStatus
    content_type: str
    source: str
    reply_to: str | None
    correlation_id: str | None
    control_id: str | None
    message_type: str | None
    sending_application: str | None
    sending_facility: str | None
    document_id: str | None
    action: str | None
    patient_hash: str | None
    expected_deliveries: int
    delivered_count: int
    dead_lettered_count: int
    report: dict[str, Any] | None
    payload_size: int


class EventRecord(BaseModel):
    """One step in the life of a message; ``id`` grows with insertion order."""

    model_config = ConfigDict(frozen=True)

    id: int
    message_id: str
    at: datetime
    step: str
    destination: str | None
    detail: dict[str, Any] | None


class MailRecord(BaseModel):
    """An MSSanté mail the gateway sent: its Message-ID, the message it carried, and what a receipt needs to
    answer the creator (``detail``: which business acks were asked for, the MSH names for the ZAM)."""

    model_config = ConfigDict(frozen=True)

    mail_message_id: str
    message_id: str
    idempotency_key: str
    created_at: datetime
    detail: dict[str, Any] | None


class DeliveryRecord(BaseModel):
    """The state of one outbound delivery (one job for one destination/recipient)."""

    model_config = ConfigDict(frozen=True)

    idempotency_key: str
    message_id: str
    destination: str
    recipient: str | None
    status: DeliveryStatus
    attempts: int
    updated_at: datetime
    detail: dict[str, Any] | None


# ------------------------------------------------------------------------------------------- protocol


@runtime_checkable
class Journal(Protocol):
    """The message journal, as the rest of the gateway sees it.

    Every write method runs in one database transaction: either all its effects are stored or none.
    All methods may be called concurrently from many asyncio tasks; the PostgreSQL backend may also be
    shared by several processes. Times are tz-aware UTC. A write that has started is not interrupted by
    the cancellation of its caller: the caller waits for the transaction to end, then gets CancelledError.
    """

    async def open(self) -> None:
        """Connect and create the schema if needed (idempotent; safe on an existing journal)."""
        ...

    async def close(self) -> None:
        """Wait for running operations and release connections (idempotent)."""
        ...

    async def begin(self, entry: MessageEntry) -> MessageRecord | None:
        """Record a received message.

        New ``message_id``: stores the message (status ``received``), its payload and a ``received``
        event, and returns ``None``. Known ``message_id`` (broker redelivery after a crash): stores only a
        ``redelivered`` event and returns the existing record so the caller can skip work already done.
        Exactly one of several concurrent begin() calls for one id returns ``None``.
        """
        ...

    async def step(
        self,
        message_id: str,
        step: str,
        *,
        status: MessageStatus | None = None,
        destination: str | None = None,
        detail: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """Record a step: insert an event and update the message row (status, fields, updated_at).

        ``fields`` may be any of ``STEP_FIELDS``; an unknown name or an invalid value raises ValueError
        before anything is written. Once every expected delivery has ended, the status derived from the
        delivery counters wins over ``status`` (so a late ``queued`` never hides a completed delivery).
        Raises UnknownMessageError if begin() never recorded the message.
        """
        ...

    async def delivery(self, idempotency_key: str) -> DeliveryRecord | None:
        """The delivery with this key, or ``None``."""
        ...

    async def record_delivery(
        self,
        *,
        idempotency_key: str,
        message_id: str,
        destination: str,
        recipient: str | None,
        status: DeliveryStatus,
        detail: dict[str, Any] | None = None,
    ) -> DeliveryRecord:
        """Upsert a delivery, insert its event and keep the message's counters and status exact.

        An ended attempt (``delivered``, ``failed``, ``dead_lettered``) increments ``attempts``. Each
        delivery is counted at most once in ``delivered_count`` / ``dead_lettered_count``, whatever the
        number of duplicate reports or concurrent callers. When ``delivered_count + dead_lettered_count
        >= expected_deliveries > 0`` the message becomes ``delivered``, ``dead_lettered`` or
        ``partially_delivered``.
        """
        ...

    async def record_mail(
        self,
        mail_message_id: str,
        *,
        message_id: str,
        idempotency_key: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Remember an MSSanté mail by its Message-ID (idempotent: a retried send keeps the first row)."""
        ...

    async def mail(self, mail_message_id: str) -> MailRecord | None:
        """The mail sent with this Message-ID, or ``None``."""
        ...

    async def get(self, message_id: str) -> MessageRecord | None:
        """The message record (without payload), or ``None``."""
        ...

    async def get_payload(self, message_id: str) -> bytes | None:
        """The raw payload exactly as given to begin(), or ``None``."""
        ...

    async def events(self, message_id: str) -> list[EventRecord]:
        """The events of a message in the order they were recorded."""
        ...

    async def deliveries(self, message_id: str) -> list[DeliveryRecord]:
        """The deliveries of a message, oldest first."""
        ...

    async def search(
        self,
        *,
        message_id: str | None = None,
        document_id: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        patient_hash: str | None = None,
        control_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[MessageRecord]:
        """Messages matching every given filter, newest ``received_at`` first (payloads not loaded).

        ``since`` is inclusive and ``until`` exclusive, both on ``received_at``.
        """
        ...

    async def counts(self) -> dict[str, int]:
        """Number of messages per status (every status present, 0 if none) plus ``total``."""
        ...

    async def ping(self) -> bool:
        """True if the journal is open and a write transaction can be started (for readiness)."""
        ...


# ------------------------------------------------------------------------------ status and validation


def utcnow() -> datetime:
    return datetime.now(UTC)


def completion_status(delivered: int, dead_lettered: int) -> MessageStatus:
    """The final status of a message whose expected deliveries have all ended."""
    if dead_lettered == 0:
        return "delivered"
    if delivered == 0:
        return "dead_lettered"
    return "partially_delivered"


def settle_status(
    current: str, requested: str | None, expected: int, delivered: int, dead_lettered: int
) -> MessageStatus:
    """The status a message row must have, given the delivery counters.

    When deliveries are expected, the counters are the truth: once they are complete the derived outcome
    wins (a ``queued`` step arriving after the deliveries, which happens when the delivery worker is
    faster than the publisher confirm, must not put the message back in flight); while they are not, an
    outcome status is impossible and becomes ``queued`` (e.g. a dead-lettered job replayed by ops).
    """
    if expected > 0 and delivered + dead_lettered >= expected:
        return completion_status(delivered, dead_lettered)
    status = requested or current
    if expected > 0 and status in DELIVERY_OUTCOMES:
        return "queued"
    return status  # type: ignore[return-value]


def check_id(value: Any, what: str) -> str:
    """Keys are compared exactly, so they are refused (not repaired) if unusable in both databases."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters")
    return value


def clean_text(value: Any, what: str) -> str | None:
    """Free text from messages may hold a NUL byte, which PostgreSQL text cannot store: replace it so
    both backends store the same thing and a malformed message never makes the journal raise."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string or None, not {type(value).__name__}")
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def check_status(status: Any) -> MessageStatus:
    if status not in MESSAGE_STATUSES:
        raise ValueError(f"unknown message status {status!r}; expected one of {', '.join(MESSAGE_STATUSES)}")
    return status  # type: ignore[no-any-return]


def check_patient_hash(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _HEX_DIGEST.fullmatch(value.lower()):
        # Deliberately does not echo the value: it might be an identifier in clear.
        raise ValueError(
            "patient_hash must be the hex digest of a keyed hash (32 to 128 hex digits); "
            "never pass a patient identifier in clear"
        )
    return value.lower()


def check_aware(value: datetime | None, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def _strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, Mapping):
        return {_strip_nul(k): _strip_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strip_nul(v) for v in value]
    return value


def dump_json(value: Any, what: str) -> str | None:
    """Serialise a JSON object for a TEXT (SQLite) or JSONB (PostgreSQL) column.

    Refuses what JSONB would refuse (non-objects, NaN/Infinity) so that both backends behave alike;
    NUL characters, which JSONB cannot hold, are replaced. Non-JSON scalars (datetimes...) become str.
    """
    if value is None:
        return None
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a dict (a JSON object), not {type(value).__name__}")
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)
        if "\\u0000" in text:
            text = json.dumps(
                _strip_nul(value), ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False
            )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from None
    return text


def load_json(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes):
        return json.loads(value)  # type: ignore[no-any-return]
    return dict(value)


def clean_step_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Validate step() keyword fields and convert them to column values (ValueError on any problem)."""
    unknown = sorted(set(fields) - STEP_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown journal field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(STEP_FIELDS))}"
        )
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "expected_deliveries":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError("expected_deliveries must be an int >= 0")
        elif name == "report":
            value = dump_json(value, "report")
        elif name == "patient_hash":
            value = check_patient_hash(value)
        elif name == "action":
            if value is not None and value not in ACTIONS:
                raise ValueError(f"action must be one of {', '.join(ACTIONS)} or None, not {value!r}")
        else:
            value = clean_text(value, name)
        values[name] = value
    return values


# ------------------------------------------------------------------------------------- shared engine

_T = TypeVar("_T")


async def run_to_completion(awaitable: Awaitable[_T]) -> _T:
    """Await ``awaitable`` until it has finished even if the caller is cancelled meanwhile; the
    cancellation is re-raised afterwards (and the awaitable's own result or error is then dropped)."""
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
        except BaseException:
            break  # the awaitable failed: task.result() re-raises its error below
    if cancelled:
        if not task.cancelled():
            task.exception()  # mark it retrieved so asyncio does not warn about it
        raise asyncio.CancelledError
    return task.result()


class Executor(Protocol):
    """The little a backend connection must offer; SQL uses ``$1..$n`` placeholders."""

    async def execute(self, sql: str, *args: Any) -> None: ...

    async def fetchrow(self, sql: str, *args: Any) -> Mapping[str, Any] | None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Mapping[str, Any]]: ...


class _Rollback(Exception):
    """Raised inside a transaction to roll it back on purpose (ping)."""


MESSAGE_COLUMNS: Final = (
    "message_id, received_at, updated_at, status, content_type, source, reply_to, correlation_id, "
    "control_id, message_type, sending_application, sending_facility, document_id, action, patient_hash, "
    "expected_deliveries, delivered_count, dead_lettered_count, report, payload_size"
)
DELIVERY_COLUMNS: Final = (
    "idempotency_key, message_id, destination, recipient, status, attempts, updated_at, detail"
)
_COUNTERS: Final = "status, expected_deliveries, delivered_count, dead_lettered_count"


class SqlJournal(ABC):
    """The journal logic, written once for both SQL backends.

    A subclass supplies connections (:meth:`_transaction` for writes, :meth:`_reader` for reads), the
    DDL, the timestamp encoding and the row-locking clause. Concurrency relies on one rule: every
    write that reads-then-writes a message's counters first locks that message row (PostgreSQL:
    ``SELECT ... FOR UPDATE``; SQLite: writes are serialised), and always before any delivery row, so
    concurrent deliveries of one message are applied one after the other and cannot deadlock.
    """

    dialect: ClassVar[str]
    #: Appended to the SELECT that reads a message's counters before changing them.
    for_update: ClassVar[str] = ""
    #: CREATE ... IF NOT EXISTS statements, run in order in one transaction by open().
    ddl: ClassVar[tuple[str, ...]]
    #: Seconds ping() waits before declaring the journal unavailable.
    ping_timeout: float = 5.0

    def __init__(self) -> None:
        self._is_open = False

    # ---- backend hooks

    @abstractmethod
    async def _connect(self) -> None:
        """Create the connection(s)/pool."""

    @abstractmethod
    async def _disconnect(self) -> None:
        """Release the connection(s)/pool, after the operations in progress."""

    @abstractmethod
    def _transaction(self) -> AbstractAsyncContextManager[Executor]:
        """A write transaction: committed on normal exit, rolled back on any exception."""

    @abstractmethod
    def _reader(self) -> AbstractAsyncContextManager[Executor]:
        """A connection for reads that sees only committed data."""

    @abstractmethod
    def _ts_in(self, value: datetime) -> Any:
        """Encode a UTC datetime for a timestamp column or parameter."""

    @abstractmethod
    def _ts_out(self, value: Any) -> datetime:
        """Decode a timestamp column to a tz-aware UTC datetime."""

    async def _prepare_schema(self, ex: Executor) -> None:  # noqa: B027 - optional hook
        """Run in the schema transaction before the DDL (PostgreSQL serialises concurrent openers)."""

    # ---- lifecycle

    async def open(self) -> None:
        """Connect, create the schema idempotently and check its version (see :meth:`Journal.open`)."""
        if self._is_open:
            return
        await self._connect()
        try:
            async with self._transaction() as ex:
                await self._prepare_schema(ex)
                for statement in self.ddl:
                    await ex.execute(statement)
                await ex.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2) "
                    "ON CONFLICT (version) DO NOTHING",
                    SCHEMA_VERSION,
                    self._ts_in(utcnow()),
                )
                row = await ex.fetchrow("SELECT max(version) AS version FROM schema_version")
                found = int(row["version"]) if row and row["version"] is not None else SCHEMA_VERSION
                if found > SCHEMA_VERSION:
                    # Rolls back: an older gateway must not write into a journal it does not understand.
                    raise JournalError(
                        f"journal schema version {found} is newer than this gateway's ({SCHEMA_VERSION})"
                    )
        except BaseException:
            await self._disconnect()
            raise
        self._is_open = True

    async def close(self) -> None:
        """Release connections after the operations in progress (idempotent)."""
        if not self._is_open:
            return
        self._is_open = False
        await self._disconnect()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- row conversion

    def _message(self, row: Mapping[str, Any]) -> MessageRecord:
        data = dict(row)
        data["received_at"] = self._ts_out(data["received_at"])
        data["updated_at"] = self._ts_out(data["updated_at"])
        data["report"] = load_json(data["report"])
        return MessageRecord.model_validate(data)

    def _delivery(self, row: Mapping[str, Any]) -> DeliveryRecord:
        data = dict(row)
        data["updated_at"] = self._ts_out(data["updated_at"])
        data["detail"] = load_json(data["detail"])
        return DeliveryRecord.model_validate(data)

    def _event(self, row: Mapping[str, Any]) -> EventRecord:
        data = dict(row)
        data["at"] = self._ts_out(data["at"])
        data["detail"] = load_json(data["detail"])
        return EventRecord.model_validate(data)

    async def _add_event(
        self,
        ex: Executor,
        message_id: str,
        at: datetime,
        step: str,
        destination: str | None,
        detail_json: str | None,
    ) -> None:
        await ex.execute(
            "INSERT INTO events (message_id, at, step, destination, detail) VALUES ($1, $2, $3, $4, $5)",
            message_id,
            self._ts_in(at),
            step,
            destination,
            detail_json,
        )

    # ---- writes

    async def _write(self, body: Callable[[Executor], Awaitable[_T]]) -> _T:
        """Run ``body`` in one write transaction that the caller's cancellation does not interrupt.

        A consumer cancelled at shutdown then waits for the transaction to end (commit, or rollback on
        error; bounded by the backend's statement timeout) before CancelledError reaches it, instead of
        abandoning a statement in flight (which makes asyncpg drop the connection, and would leave the
        shared SQLite connection in an unknown state). The write may thus be committed although the caller
        was cancelled; all writes are safe to repeat (begin() and record_delivery() are idempotent, a
        repeated step() only adds an event).
        """

        async def run() -> _T:
            async with self._transaction() as ex:
                return await body(ex)

        return await run_to_completion(run())

    async def begin(self, entry: MessageEntry) -> MessageRecord | None:
        """See :meth:`Journal.begin`."""
        message_id = check_id(entry.message_id, "message_id")
        now = utcnow()

        async def tx(ex: Executor) -> MessageRecord | None:
            # ON CONFLICT DO NOTHING makes concurrent begin() calls safe: on PostgreSQL the loser waits
            # for the winner's commit on the primary key, then inserts nothing.
            inserted = await ex.fetchrow(
                "INSERT INTO messages (message_id, received_at, updated_at, status, content_type, source, "
                "reply_to, correlation_id, payload_size) VALUES ($1, $2, $3, 'received', $4, $5, $6, $7, $8) "
                "ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
                message_id,
                self._ts_in(entry.received_at),
                self._ts_in(now),
                clean_text(entry.content_type, "content_type"),
                clean_text(entry.source, "source"),
                clean_text(entry.reply_to, "reply_to"),
                clean_text(entry.correlation_id, "correlation_id"),
                len(entry.payload),
            )
            if inserted is not None:
                await ex.execute(
                    "INSERT INTO payloads (message_id, payload) VALUES ($1, $2)", message_id, entry.payload
                )
                detail = {"source": entry.source, "payload_size": len(entry.payload)}
                await self._add_event(ex, message_id, now, "received", None, dump_json(detail, "detail"))
                logger.debug("journal: message %s received", message_id)
                return None
            existing = await ex.fetchrow(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_id = $1", message_id
            )
            same = await ex.fetchrow(
                "SELECT payload = $2 AS same FROM payloads WHERE message_id = $1", message_id, entry.payload
            )
            # same_payload=false flags a message_id reused for different content (worth an ops look).
            detail = {"source": entry.source, "same_payload": bool(same and same["same"])}
            await self._add_event(ex, message_id, now, "redelivered", None, dump_json(detail, "detail"))
            logger.debug("journal: message %s redelivered", message_id)
            assert existing is not None  # the conflicting row exists and messages are never deleted here
            return self._message(existing)

        return await self._write(tx)

    async def step(
        self,
        message_id: str,
        step: str,
        *,
        status: MessageStatus | None = None,
        destination: str | None = None,
        detail: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """See :meth:`Journal.step`."""
        check_id(message_id, "message_id")
        check_id(step, "step")
        if status is not None:
            check_status(status)
        # Validate everything before opening the transaction: a bad call writes nothing.
        assignments = clean_step_fields(fields)
        detail_json = dump_json(detail, "detail")
        destination = clean_text(destination, "destination")
        now = utcnow()

        async def tx(ex: Executor) -> None:
            if status is not None or "expected_deliveries" in assignments:
                row = await ex.fetchrow(
                    f"SELECT {_COUNTERS} FROM messages WHERE message_id = $1{self.for_update}", message_id
                )
                if row is None:
                    raise UnknownMessageError(message_id)
                expected = assignments.get("expected_deliveries", row["expected_deliveries"])
                assignments["status"] = settle_status(
                    row["status"], status, expected, row["delivered_count"], row["dead_lettered_count"]
                )
            assignments["updated_at"] = self._ts_in(now)
            # Column names come from STEP_FIELDS (validated above), never from the caller verbatim.
            sets = ", ".join(f"{column} = ${i}" for i, column in enumerate(assignments, start=2))
            updated = await ex.fetchrow(
                f"UPDATE messages SET {sets} WHERE message_id = $1 RETURNING message_id",
                message_id,
                *assignments.values(),
            )
            if updated is None:
                raise UnknownMessageError(message_id)
            await self._add_event(ex, message_id, now, step, destination, detail_json)

        await self._write(tx)

    async def record_delivery(
        self,
        *,
        idempotency_key: str,
        message_id: str,
        destination: str,
        recipient: str | None,
        status: DeliveryStatus,
        detail: dict[str, Any] | None = None,
    ) -> DeliveryRecord:
        """See :meth:`Journal.record_delivery`.

        Transitions: ``delivered`` is final (a later report for the key is kept as an event, and counts as
        an attempt, but does not change the delivery's status); ``dead_lettered`` may be left again (ops
        replaying the dead-letter queue: ``pending`` then ``delivered``), which moves the counters and puts
        the message back to ``queued`` until its deliveries are complete again. Hence
        ``delivered_count`` and ``dead_lettered_count`` always equal the number of the message's delivery
        rows in those statuses. Raises UnknownMessageError for an unknown message and ValueError if the
        key already belongs to another message or destination.
        """
        check_id(idempotency_key, "idempotency_key")
        check_id(message_id, "message_id")
        check_id(destination, "destination")
        if status not in DELIVERY_STATUSES:
            raise ValueError(f"unknown delivery status {status!r}; expected one of {DELIVERY_STATUSES}")
        recipient = clean_text(recipient, "recipient")
        detail_json = dump_json(detail, "detail")  # validated before the transaction opens
        now = utcnow()

        async def tx(ex: Executor) -> DeliveryRecord:
            # Lock the message row first: every delivery of this message now waits for us, so the
            # read-modify-write of the counters below cannot race (nor double count a duplicate).
            msg = await ex.fetchrow(
                f"SELECT {_COUNTERS} FROM messages WHERE message_id = $1{self.for_update}", message_id
            )
            if msg is None:
                raise UnknownMessageError(message_id)
            old = await ex.fetchrow(
                "SELECT message_id, destination, status FROM deliveries WHERE idempotency_key = $1",
                idempotency_key,
            )
            if old is not None and (old["message_id"] != message_id or old["destination"] != destination):
                raise ValueError(
                    f"idempotency key {idempotency_key!r} already belongs to message {old['message_id']!r} "
                    f"destination {old['destination']!r}"
                )
            old_status = old["status"] if old is not None else None
            new_status = "delivered" if old_status == "delivered" else status
            row = await ex.fetchrow(
                "INSERT INTO deliveries (idempotency_key, message_id, destination, recipient, status, "
                "attempts, created_at, updated_at, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) "
                "ON CONFLICT (idempotency_key) DO UPDATE SET "
                "recipient = COALESCE(excluded.recipient, deliveries.recipient), status = excluded.status, "
                "attempts = deliveries.attempts + excluded.attempts, updated_at = excluded.updated_at, "
                f"detail = excluded.detail RETURNING {DELIVERY_COLUMNS}",
                idempotency_key,
                message_id,
                destination,
                recipient,
                new_status,
                0 if status == "pending" else 1,
                self._ts_in(now),
                detail_json,
            )
            delivered = msg["delivered_count"] + int(new_status == "delivered" and old_status != "delivered")
            dead_lettered = (
                msg["dead_lettered_count"]
                + int(new_status == "dead_lettered")
                - int(old_status == "dead_lettered")
            )
            message_status = settle_status(
                msg["status"], None, msg["expected_deliveries"], delivered, dead_lettered
            )
            await ex.execute(
                "UPDATE messages SET delivered_count = $2, dead_lettered_count = $3, status = $4, "
                "updated_at = $5 WHERE message_id = $1",
                message_id,
                delivered,
                dead_lettered,
                message_status,
                self._ts_in(now),
            )
            # The recipient stays out of the event: an MSSanté patient address embeds the INS.
            event_detail: dict[str, Any] = {**(detail or {}), "idempotency_key": idempotency_key}
            if old_status == "delivered":
                event_detail["already_delivered"] = True
            await self._add_event(
                ex,
                message_id,
                now,
                DELIVERY_EVENT_STEP[status],
                destination,
                dump_json(event_detail, "detail"),
            )
            assert row is not None
            return self._delivery(row)

        return await self._write(tx)

    async def record_mail(
        self,
        mail_message_id: str,
        *,
        message_id: str,
        idempotency_key: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """See :meth:`Journal.record_mail`."""
        check_id(mail_message_id, "mail_message_id")
        check_id(message_id, "message_id")
        check_id(idempotency_key, "idempotency_key")
        detail_json = dump_json(detail, "detail")
        now = self._ts_in(utcnow())

        async def tx(ex: Executor) -> None:
            if await ex.fetchrow("SELECT 1 AS one FROM messages WHERE message_id = $1", message_id) is None:
                raise UnknownMessageError(message_id)
            await ex.execute(
                "INSERT INTO mails (mail_message_id, message_id, idempotency_key, created_at, detail) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (mail_message_id) DO NOTHING",
                mail_message_id,
                message_id,
                idempotency_key,
                now,
                detail_json,
            )

        await self._write(tx)

    # ---- reads

    async def mail(self, mail_message_id: str) -> MailRecord | None:
        """See :meth:`Journal.mail`."""
        async with self._reader() as ex:
            row = await ex.fetchrow(
                "SELECT mail_message_id, message_id, idempotency_key, created_at, detail FROM mails "
                "WHERE mail_message_id = $1",
                mail_message_id,
            )
        if row is None:
            return None
        return MailRecord(
            mail_message_id=row["mail_message_id"],
            message_id=row["message_id"],
            idempotency_key=row["idempotency_key"],
            created_at=self._ts_out(row["created_at"]),
            detail=load_json(row["detail"]),
        )

    async def get(self, message_id: str) -> MessageRecord | None:
        """See :meth:`Journal.get`."""
        async with self._reader() as ex:
            row = await ex.fetchrow(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_id = $1", message_id
            )
        return self._message(row) if row is not None else None

    async def get_payload(self, message_id: str) -> bytes | None:
        """See :meth:`Journal.get_payload`."""
        async with self._reader() as ex:
            row = await ex.fetchrow("SELECT payload FROM payloads WHERE message_id = $1", message_id)
        return bytes(row["payload"]) if row is not None else None

    async def events(self, message_id: str) -> list[EventRecord]:
        """See :meth:`Journal.events`."""
        async with self._reader() as ex:
            rows = await ex.fetch(
                "SELECT id, message_id, at, step, destination, detail FROM events "
                "WHERE message_id = $1 ORDER BY id",
                message_id,
            )
        return [self._event(row) for row in rows]

    async def delivery(self, idempotency_key: str) -> DeliveryRecord | None:
        """See :meth:`Journal.delivery`."""
        async with self._reader() as ex:
            row = await ex.fetchrow(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE idempotency_key = $1", idempotency_key
            )
        return self._delivery(row) if row is not None else None

    async def deliveries(self, message_id: str) -> list[DeliveryRecord]:
        """See :meth:`Journal.deliveries`."""
        async with self._reader() as ex:
            rows = await ex.fetch(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message_id = $1 "
                "ORDER BY created_at, idempotency_key",
                message_id,
            )
        return [self._delivery(row) for row in rows]

    async def search(
        self,
        *,
        message_id: str | None = None,
        document_id: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        patient_hash: str | None = None,
        control_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[MessageRecord]:
        """See :meth:`Journal.search`. Raises ValueError for an unknown status, a naive datetime, a
        malformed patient_hash or a negative limit/offset."""
        if status is not None:
            check_status(status)
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        since = check_aware(since, "since")
        until = check_aware(until, "until")
        filters: list[tuple[str, Any]] = [
            ("message_id = {}", message_id),
            ("document_id = {}", document_id),
            ("status = {}", status),
            ("received_at >= {}", None if since is None else self._ts_in(since)),
            ("received_at < {}", None if until is None else self._ts_in(until)),
            ("patient_hash = {}", check_patient_hash(patient_hash)),
            ("control_id = {}", control_id),
        ]
        clauses: list[str] = []
        args: list[Any] = []
        for template, value in filters:
            if value is not None:
                args.append(value)
                clauses.append(template.format(f"${len(args)}"))
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        args += [limit, offset]
        sql = (
            f"SELECT {MESSAGE_COLUMNS} FROM messages {where}"
            f"ORDER BY received_at DESC, message_id DESC LIMIT ${len(args) - 1} OFFSET ${len(args)}"
        )
        async with self._reader() as ex:
            rows = await ex.fetch(sql, *args)
        return [self._message(row) for row in rows]

    async def counts(self) -> dict[str, int]:
        """See :meth:`Journal.counts`.

        Invariant for ops: ``total == delivered + rejected + dead_lettered + partially_delivered +
        received + accepted + queued`` (partially_delivered is counted with the dead letters).
        """
        async with self._reader() as ex:
            rows = await ex.fetch("SELECT status, count(*) AS n FROM messages GROUP BY status")
        result = dict.fromkeys(MESSAGE_STATUSES, 0)
        for row in rows:
            result[row["status"]] = int(row["n"])
        result["total"] = sum(result.values())
        return result

    async def ping(self) -> bool:
        """See :meth:`Journal.ping`: a rolled-back write, bounded by ``ping_timeout``; never raises."""
        if not self._is_open:
            return False
        try:
            async with asyncio.timeout(self.ping_timeout), self._transaction() as ex:
                await ex.execute(
                    "UPDATE schema_version SET applied_at = applied_at WHERE version = $1", SCHEMA_VERSION
                )
                raise _Rollback
        except _Rollback:
            return True
        except Exception as exc:
            logger.warning("journal: ping failed: %s", type(exc).__name__)
            return False
