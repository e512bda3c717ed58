"""Tables of the operational ledger and the ordered migrations that build them.

``TABLES`` describes the *current* schema; queries in :mod:`sync.ledger` use it.
``MIGRATIONS`` is the history: each step is frozen once released and defines its own
DDL (it never refers to ``TABLES``, whose shape moves on), so an old database walks
through exactly the same steps a fresh one does. To change the schema, append a step
and update ``TABLES`` to match; ``tests/test_ledger.py`` checks the two agree.

Version history::

    1  runs, pushed_state, cursors, locks
    2  failures, state_revisions (seeded from pushed_state)
    3  events (webhook queue)
    4  runs.owner (host:pid of the process running it, to tell killed runs apart)
    5  index on runs.status
    6  index on pushed_state (destination, customer_id): a webhook resync reads its customers' rows by key
    7  pushed_state.revision (the destination's revision that last wrote the row) and state_revisions.epoch (a
       random id per destination's revision counter): a plan reads only the rows changed since its cached copy
    8  lost_tags: per destination, the contacts a managed tag/list the ESP lost was forgotten for (until it is
       given back, or they leave its segment): the plan guards count adding it back as a change
    9  events.not_before: a released event is not claimed before this (a suspect's back-off, a destination's
       Retry-After)
    10 events.fails: the failures counted against the event (``fail_events``), not its claims: a worker killed
       mid-claim leaves ``attempts`` one higher but no failure (the worker resyncs apart only events that failed)
    11 state_tokens: a random token per destination's revision (the recent ones), written by the change that made
       it; a cached copy names its revision's token, so a ledger restored and saved again past the copy is found
       (seeded: one token for each counter's revision)
    12 kept_out: per destination, the operations a contact's own choice in the ESP keeps out (he unsubscribed, his
       address is blocked or in a compliance state): not failures, left out of the next plans
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
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Connection

from .coltypes import UTCDateTime  # re-exported: the ledger's tables and their migrations use it


# ---------------------------------------------------------------------------------------
# Current schema (what the code queries). Keep in step with MIGRATIONS.
# ---------------------------------------------------------------------------------------

metadata = MetaData()

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_at", UTCDateTime, nullable=False),
)

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(50), nullable=False),
    Column("destination", String(200)),
    Column("status", String(20), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("counts", Text, nullable=False),
    Column("error", Text),
    Column("owner", String(200)),
    Index("ix_runs_status", "status"),  # every run start looks for runs left "running" by killed processes
    sqlite_autoincrement=True,
)

pushed_state = Table(
    "pushed_state", metadata,
    Column("destination", String(200), primary_key=True),
    Column("key", String(320), primary_key=True),
    Column("customer_id", String(200)),
    Column("tags", Text, nullable=False),
    Column("fields", Text, nullable=False),
    Column("in_destination", Boolean, nullable=False),
    Column("pushed_at", UTCDateTime, nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL")),
    # the destination's revision (state_revisions) whose save wrote the row: rows changed since a revision
    Column("revision", Integer, nullable=False, server_default=text("0")),
    Index("ix_pushed_state_customer", "destination", "customer_id"),  # keyed reads of a webhook resync
)

cursors = Table(
    "cursors", metadata,
    Column("source", String(200), primary_key=True),
    Column("obj", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

locks = Table(
    "locks", metadata,
    Column("name", String(200), primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

failures = Table(
    "failures", metadata,
    Column("destination", String(200), primary_key=True),
    Column("key", String(320), primary_key=True),
    Column("op", String(300), primary_key=True),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("first_failed_at", UTCDateTime, nullable=False),
    Column("last_failed_at", UTCDateTime, nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL")),
)

state_revisions = Table(
    "state_revisions", metadata,
    Column("destination", String(200), primary_key=True),
    Column("revision", Integer, nullable=False),
    # random, set when the counter starts: a cached copy of the state names the counter it was read from
    Column("epoch", String(32)),
)

state_tokens = Table(
    "state_tokens", metadata,
    Column("destination", String(200), primary_key=True),
    Column("revision", Integer, primary_key=True, autoincrement=False),
    # random, written by the change that made the revision (the recent revisions' only): a cached copy of the state
    # at a revision names its token, which a ledger restored and written again to that revision does not hold
    Column("token", String(32), nullable=False),
)

lost_tags = Table(
    "lost_tags", metadata,
    Column("destination", String(200), primary_key=True),
    Column("key", String(320), primary_key=True),
    Column("tag", String(300), primary_key=True),
    # the destination's revision the forget made (state_revisions): a plan made at this revision or later knows
    Column("revision", Integer, nullable=False),
)

events = Table(
    "events", metadata,
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
    Column("not_before", UTCDateTime),
    Column("fails", Integer, nullable=False, server_default=text("0")),
    UniqueConstraint("source", "dedupe_key", name="uq_events_source_dedupe"),
    Index("ix_events_status_id", "status", "id"),
    sqlite_autoincrement=True,
)

kept_out = Table(
    "kept_out", metadata,
    Column("destination", String(200), primary_key=True),
    Column("key", String(320), primary_key=True),
    Column("op", String(300), primary_key=True),  # "upsert" (a create) or "tag+<name>"
    Column("reason", Text),  # the ESP's words, as the item's error
    Column("kept_at", UTCDateTime, nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL")),
)

TABLES = metadata


# ---------------------------------------------------------------------------------------
# Migrations: frozen history. Never edit a released step; append a new one.
# ---------------------------------------------------------------------------------------


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
