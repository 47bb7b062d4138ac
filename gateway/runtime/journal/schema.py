"""Journal DDL, written once for both backends; only the column types differ.

Tables:

- ``schema_version``: one row per applied schema version.
- ``messages``: one row per received message (no payload, so searches scan small rows).
- ``payloads``: the raw bytes, one row per message, read only by ``get_payload()``.
- ``events``: the history of each message, ordered by ``id``.
- ``deliveries``: one row per outbound delivery, keyed by its idempotency key.
- ``mails``: one row per MSSanté mail sent, keyed by its Message-ID, so that a DSN or an MDN read back from the
  applicative mailbox finds the message (and the business acks) it answers.

Every statement is ``CREATE ... IF NOT EXISTS`` so that ``open()`` is idempotent.
"""

from typing import Final

from gateway.runtime.journal.base import ACTIONS, DELIVERY_STATUSES, MESSAGE_STATUSES

_TYPES: Final[dict[str, dict[str, str]]] = {
    # SQLite: ISO-8601 text with microseconds in UTC sorts like the instants it denotes.
    "sqlite": {"ts": "TEXT", "json": "TEXT", "blob": "BLOB", "id_pk": "INTEGER PRIMARY KEY"},
    "postgresql": {
        "ts": "TIMESTAMPTZ",
        "json": "JSONB",
        "blob": "BYTEA",
        "id_pk": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    },
}


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


_TEMPLATES: Final = (
    """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at {ts} NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS messages (
    message_id TEXT PRIMARY KEY,
    received_at {ts} NOT NULL,
    updated_at {ts} NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({message_statuses})),
    content_type TEXT NOT NULL,
    source TEXT NOT NULL,
    reply_to TEXT,
    correlation_id TEXT,
    control_id TEXT,
    message_type TEXT,
    sending_application TEXT,
    sending_facility TEXT,
    document_id TEXT,
    action TEXT CHECK (action IN ({actions})),
    patient_hash TEXT,
    expected_deliveries INTEGER NOT NULL DEFAULT 0 CHECK (expected_deliveries >= 0),
    delivered_count INTEGER NOT NULL DEFAULT 0 CHECK (delivered_count >= 0),
    dead_lettered_count INTEGER NOT NULL DEFAULT 0 CHECK (dead_lettered_count >= 0),
    report {json},
    payload_size INTEGER NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS payloads (
    message_id TEXT PRIMARY KEY REFERENCES messages (message_id) ON DELETE CASCADE,
    payload {blob} NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS events (
    id {id_pk},
    message_id TEXT NOT NULL REFERENCES messages (message_id) ON DELETE CASCADE,
    at {ts} NOT NULL,
    step TEXT NOT NULL,
    destination TEXT,
    detail {json}
)""",
    """CREATE TABLE IF NOT EXISTS deliveries (
    idempotency_key TEXT PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages (message_id) ON DELETE CASCADE,
    destination TEXT NOT NULL,
    recipient TEXT,
    status TEXT NOT NULL CHECK (status IN ({delivery_statuses})),
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at {ts} NOT NULL,
    updated_at {ts} NOT NULL,
    detail {json}
)""",
    """CREATE TABLE IF NOT EXISTS mails (
    mail_message_id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages (message_id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    created_at {ts} NOT NULL,
    detail {json}
)""",
    # search() orders by received_at DESC; the composite indexes serve "filter + newest first".
    "CREATE INDEX IF NOT EXISTS ix_messages_received_at ON messages (received_at)",
    "CREATE INDEX IF NOT EXISTS ix_messages_status ON messages (status, received_at)",
    "CREATE INDEX IF NOT EXISTS ix_messages_document_id ON messages (document_id)",
    "CREATE INDEX IF NOT EXISTS ix_messages_patient_hash ON messages (patient_hash, received_at)",
    "CREATE INDEX IF NOT EXISTS ix_messages_control_id ON messages (control_id)",
    "CREATE INDEX IF NOT EXISTS ix_events_message_id ON events (message_id, id)",
    "CREATE INDEX IF NOT EXISTS ix_deliveries_message_id ON deliveries (message_id)",
    "CREATE INDEX IF NOT EXISTS ix_mails_message_id ON mails (message_id)",
)


def statements(dialect: str) -> tuple[str, ...]:
    """The DDL for ``dialect`` ('sqlite' or 'postgresql'), in execution order."""
    values = {
        **_TYPES[dialect],
        "message_statuses": _sql_list(MESSAGE_STATUSES),
        "delivery_statuses": _sql_list(DELIVERY_STATUSES),
        "actions": _sql_list(ACTIONS),
    }
    return tuple(template.format(**values) for template in _TEMPLATES)
