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
    13 in_flight: per destination and run, the adds and creating upserts an apply is sending (written before its
       first ESP call, deleted when it ends): a killed run's are in doubt (:mod:`sync.ledger.inflight`)
    14 a partial index on the events an older intake queued under an order's content key (status, id), and on
       PostgreSQL one on events (source, dedupe_key COLLATE "C"): an older intake's events of a record read by a key
       range (:mod:`sync.ledger.content_keys`); SQLite's unique index on them serves already
    15 subscribed_by_us: per destination, the contacts an apply created with the status ``subscribed`` (the source
       said yes then): a withdrawal in the source is named for them (:mod:`sync.ledger.subscribed`)
    16 pushed_state.subscribed: the same record kept on the contact's own row (1), written with it by the apply (no
       second table's insert per contact); ``subscribed_by_us`` keeps the records without a row and a mark that the
       destination's rows hold some (:mod:`sync.ledger.subscribed`)

The migrations themselves are in :mod:`sync.ledger.migrations` (re-exported here).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    LargeBinary,
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
from .coltypes import UTCDateTime  # re-exported: the ledger's tables and their migrations use it
# the frozen history, re-exported: callers import it from here
from .migrations import LATEST_VERSION, MIGRATIONS, Migration, create_version_table, current_version  # noqa: F401


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
    # 1: an apply created him ``subscribed`` here (sync.ledger.subscribed; NULL: not by rfmsync, or not known)
    Column("subscribed", Integer),
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

#: an event's ``status``
EVENT_STATUSES = ("queued", "processing", "done", "failed")

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

in_flight = Table(
    "in_flight", metadata,
    Column("destination", String(200), primary_key=True),
    Column("run_id", Integer, primary_key=True, autoincrement=False),  # the run sending them (runs.id)
    Column("ops", Integer, nullable=False),  # how many operations ``pairs`` holds
    # the (key, op) pairs, compressed (sync.ledger.inflight._pack): one row per run
    Column("pairs", LargeBinary, nullable=False),
)

subscribed_by_us = Table(
    "subscribed_by_us", metadata,
    Column("destination", String(200), primary_key=True),
    Column("key", String(320), primary_key=True),
    Column("subscribed_at", UTCDateTime, nullable=False),  # when the apply's create succeeded
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL")),
)

TABLES = metadata
