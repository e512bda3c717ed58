"""The ledger's migrations: the frozen history of its schema (:mod:`sync.ledger.schema` holds the current tables and
the version list). Each step defines its own DDL and never refers to the current tables, so an old database walks
through exactly the same steps a fresh one does. Never edit a released step; append a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Connection

from .coltypes import UTCDateTime


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1(conn: Connection) -> None:
    md = MetaData()
    Table(
        "runs", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("kind", String(50), nullable=False),
        Column("destination", String(200)),
        Column("status", String(20), nullable=False),
        Column("started_at", UTCDateTime, nullable=False),
        Column("finished_at", UTCDateTime),
        Column("counts", Text, nullable=False),
        Column("error", Text),
        sqlite_autoincrement=True,
    )
    Table(
        "pushed_state", md,
        Column("destination", String(200), primary_key=True),
        Column("key", String(320), primary_key=True),
        Column("customer_id", String(200)),
        Column("tags", Text, nullable=False),
        Column("fields", Text, nullable=False),
        Column("in_destination", Boolean, nullable=False),
        Column("pushed_at", UTCDateTime, nullable=False),
        Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL")),
    )
    Table(
        "cursors", md,
        Column("source", String(200), primary_key=True),
        Column("obj", String(200), primary_key=True),
        Column("value", Text, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    )
    Table(
        "locks", md,
        Column("name", String(200), primary_key=True),
        Column("owner", String(200), nullable=False),
        Column("acquired_at", UTCDateTime, nullable=False),
        Column("expires_at", UTCDateTime, nullable=False),
    )
    md.create_all(conn)


def _v2(conn: Connection) -> None:
    md = MetaData()
    Table("runs", md, Column("id", Integer, primary_key=True))  # FK target only
    Table(
        "failures", md,
        Column("destination", String(200), primary_key=True),
        Column("key", String(320), primary_key=True),
        Column("op", String(300), primary_key=True),
        Column("attempts", Integer, nullable=False),
        Column("last_error", Text),
        Column("first_failed_at", UTCDateTime, nullable=False),
        Column("last_failed_at", UTCDateTime, nullable=False),
        Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL")),
    )
    Table(
        "state_revisions", md,
        Column("destination", String(200), primary_key=True),
        Column("revision", Integer, nullable=False),
    )
    md.tables["failures"].create(conn)
    md.tables["state_revisions"].create(conn)
    # Destinations that already hold pushed state start at revision 1.
    conn.execute(text(
        "INSERT INTO state_revisions (destination, revision) "
        "SELECT DISTINCT destination, 1 FROM pushed_state"
    ))


def _v3(conn: Connection) -> None:
    md = MetaData()
    t = Table(
        "events", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("source", String(200), nullable=False),
        Column("dedupe_key", String(500), nullable=False),
        Column("payload", Text, nullable=False),
        Column("status", String(20), nullable=False),
        Column("received_at", UTCDateTime, nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("locked_by", String(200)),
        Column("locked_at", UTCDateTime),
        Column("finished_at", UTCDateTime),
        Column("last_error", Text),
        UniqueConstraint("source", "dedupe_key", name="uq_events_source_dedupe"),
        Index("ix_events_status_id", "status", "id"),
        sqlite_autoincrement=True,
    )
    t.create(conn)


def _v4(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE runs ADD COLUMN owner VARCHAR(200)"))


def _v5(conn: Connection) -> None:
    conn.execute(text("CREATE INDEX ix_runs_status ON runs (status)"))


def _v6(conn: Connection) -> None:
    conn.execute(text("CREATE INDEX ix_pushed_state_customer ON pushed_state (destination, customer_id)"))


def _v7(conn: Connection) -> None:
    import uuid

    conn.execute(text("ALTER TABLE pushed_state ADD COLUMN revision INTEGER NOT NULL DEFAULT 0"))
    conn.execute(text("ALTER TABLE state_revisions ADD COLUMN epoch VARCHAR(32)"))
    for (destination,) in conn.execute(text("SELECT destination FROM state_revisions")).all():
        conn.execute(text("UPDATE state_revisions SET epoch = :e WHERE destination = :d"),
                     {"e": uuid.uuid4().hex, "d": destination})


def _v8(conn: Connection) -> None:
    md = MetaData()
    Table(
        "lost_tags", md,
        Column("destination", String(200), primary_key=True),
        Column("key", String(320), primary_key=True),
        Column("tag", String(300), primary_key=True),
        Column("revision", Integer, nullable=False),
    ).create(conn)


def _v9(conn: Connection) -> None:
    kind = UTCDateTime().compile(dialect=conn.dialect)  # timestamptz; SQLite: DATETIME (UTC text)
    conn.execute(text(f"ALTER TABLE events ADD COLUMN not_before {kind}"))


def _v10(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE events ADD COLUMN fails INTEGER NOT NULL DEFAULT 0"))


def _v11(conn: Connection) -> None:
    import uuid

    md = MetaData()
    Table(
        "state_tokens", md,
        Column("destination", String(200), primary_key=True),
        Column("revision", Integer, primary_key=True, autoincrement=False),
        Column("token", String(32), nullable=False),
    ).create(conn)
    for destination, revision in conn.execute(text("SELECT destination, revision FROM state_revisions")).all():
        conn.execute(text("INSERT INTO state_tokens (destination, revision, token) VALUES (:d, :r, :t)"),
                     {"d": destination, "r": revision, "t": uuid.uuid4().hex})


def _v12(conn: Connection) -> None:
    md = MetaData()
    Table("runs", md, Column("id", Integer, primary_key=True))  # FK target only
    Table(
        "kept_out", md,
        Column("destination", String(200), primary_key=True),
        Column("key", String(320), primary_key=True),
        Column("op", String(300), primary_key=True),
        Column("reason", Text),
        Column("kept_at", UTCDateTime, nullable=False),
        Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL")),
    )
    md.tables["kept_out"].create(conn)


def _v13(conn: Connection) -> None:
    md = MetaData()
    Table(
        "in_flight", md,
        Column("destination", String(200), primary_key=True),
        Column("run_id", Integer, primary_key=True, autoincrement=False),
        Column("ops", Integer, nullable=False),
        Column("pairs", LargeBinary, nullable=False),
    ).create(conn)


#: the keys an older rfmsync's intake gave an order's event (``order:<id>:<32 hex>``, LIKE; its contact inside)
OLDER_ORDER_KEYS = "order:%:" + "_" * 32
#: the partial index's condition, as :func:`sqlalchemy.text` takes it (a query must state it alike to use the index)
OLDER_ORDER_KEYS_SQL = "dedupe_key LIKE '" + OLDER_ORDER_KEYS.replace(":", "\\:") + "'"


def _v14(conn: Connection) -> None:
    # the events an older intake queued under an order's content key, by status and id (partial: few rows once an
    # upgrade is over), and on PostgreSQL the events' keys byte by byte, for a key range under any database
    # collation (SQLite's unique index compares bytes already): sync.ledger.content_keys
    conn.execute(text(f"CREATE INDEX ix_events_older_orders ON events (status, id) WHERE {OLDER_ORDER_KEYS_SQL}"))
    if conn.dialect.name == "postgresql":
        conn.execute(text('CREATE INDEX ix_events_source_key_c ON events (source, dedupe_key COLLATE "C")'))


def _v15(conn: Connection) -> None:
    md = MetaData()
    Table("runs", md, Column("id", Integer, primary_key=True))  # FK target only
    Table(
        "subscribed_by_us", md,
        Column("destination", String(200), primary_key=True),
        Column("key", String(320), primary_key=True),
        Column("subscribed_at", UTCDateTime, nullable=False),
        Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL")),
    )
    md.tables["subscribed_by_us"].create(conn)


def _v16(conn: Connection) -> None:
    # nullable, no default: SQLite and PostgreSQL add it without rewriting the table
    conn.execute(text("ALTER TABLE pushed_state ADD COLUMN subscribed INTEGER"))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "runs, pushed_state, cursors, locks", _v1),
    Migration(2, "failures, state_revisions", _v2),
    Migration(3, "events (webhook queue)", _v3),
    Migration(4, "runs.owner", _v4),
    Migration(5, "index on runs.status", _v5),
    Migration(6, "index on pushed_state (destination, customer_id)", _v6),
    Migration(7, "pushed_state.revision, state_revisions.epoch", _v7),
    Migration(8, "lost_tags (tags/lists the ESP lost, by contact)", _v8),
    Migration(9, "events.not_before (a released event waits its back-off)", _v9),
    Migration(10, "events.fails (failures counted, not claims)", _v10),
    Migration(11, "state_tokens (a token per recent revision of a destination)", _v11),
    Migration(12, "kept_out (operations a contact's own choice in the ESP keeps out)", _v12),
    Migration(13, "in_flight (the adds an apply is sending: a killed run's are in doubt)", _v13),
    Migration(14, "indexes on an older intake's order events, and (PostgreSQL) on event keys byte by byte", _v14),
    Migration(15, "subscribed_by_us (the contacts rfmsync created subscribed)", _v15),
    Migration(16, "pushed_state.subscribed (the record on the contact's row)", _v16),
)
LATEST_VERSION = MIGRATIONS[-1].version


def current_version(conn: Connection) -> int:
    """Highest applied version, 0 for an empty database."""
    if not conn.dialect.has_table(conn, "schema_version"):
        return 0
    value: Any = conn.execute(text("SELECT MAX(version) FROM schema_version")).scalar()
    return int(value or 0)


def create_version_table(conn: Connection) -> None:
    md = MetaData()
    Table(
        "schema_version", md,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("description", String(200), nullable=False),
        Column("applied_at", UTCDateTime, nullable=False),
    ).create(conn, checkfirst=True)
