"""The message journal: every message received, each step it goes through, and its deliveries.

Use :func:`open_journal` with a URL, then ``await journal.open()``::

    journal = open_journal("sqlite:///var/cisis/journal.db")
    await journal.open()

See :mod:`gateway.runtime.journal.base` for the statuses and the accounting invariant.
"""

from urllib.parse import unquote

from gateway.runtime.journal.base import (
    DeliveryRecord,
    DeliveryStatus,
    EventRecord,
    Journal,
    JournalError,
    MailRecord,
    MessageEntry,
    MessageRecord,
    MessageStatus,
    UnknownMessageError,
)
from gateway.runtime.journal.postgres import PostgresJournal
from gateway.runtime.journal.sqlite import MEMORY, SqliteJournal

__all__ = [
    "DeliveryRecord",
    "DeliveryStatus",
    "EventRecord",
    "Journal",
    "JournalError",
    "MailRecord",
    "MessageEntry",
    "MessageRecord",
    "MessageStatus",
    "PostgresJournal",
    "SqliteJournal",
    "UnknownMessageError",
    "open_journal",
]

_URL_HELP = (
    "use sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite://:memory: "
    "or postgresql://user@host:port/db"
)


def open_journal(url: str) -> Journal:
    """Build (without opening) the journal a URL designates.

    - ``sqlite:///relative/path.db`` (relative to the working directory), ``sqlite:////abs/path.db``;
      the parent folder is created by ``open()``;
    - ``sqlite://:memory:`` (tests: the data lives as long as the journal is open);
    - ``postgresql://user@host:port/db`` or ``postgres://...`` (any asyncpg DSN).

    Raises ValueError for anything else. The message never echoes the URL, which may hold a password.
    """
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator:
        raise ValueError(f"journal URL has no scheme; {_URL_HELP}")
    if scheme == "sqlite":
        if rest in (MEMORY, "/" + MEMORY):
            return SqliteJournal(MEMORY)
        path = unquote(rest[1:]) if rest.startswith("/") else ""
        if not path or path.endswith("/"):
            raise ValueError(f"SQLite journal URL needs a file path; {_URL_HELP}")
        return SqliteJournal(path)
    if scheme in ("postgresql", "postgres"):
        return PostgresJournal(url)
    raise ValueError(f"unsupported journal URL scheme {scheme!r}; {_URL_HELP}")
