"""The operational ledger: pushed state, runs, failures, cursors, locks and the webhook queue.

One small module per concern, each with a small Protocol its callers can type against, and one facade,
:class:`Ledger`, that composes them (``ledger.cursors`` is the cursor part; ``ledger.get_cursor`` the same
method offered on the facade)::

    db.py        engine, URLs, transactions, SQLite/PostgreSQL specifics, LedgerDB (shared by every part)
    schema.py    the tables (migrations.py: the frozen, ordered migrations; coltypes.py: their column types)
    state.py     pushed state + revisions        StateReader, StateWriter
    runs.py      runs                            RunRecorder, RunHistory
    failures.py  per-item failures               FailureRecorder, PendingFailures
    kept_out.py  operations the contact's own choice in the ESP keeps out (not failures)  KeptOutRecorder
    subscribed.py  the contacts rfmsync created subscribed (a withdrawal in the source is named for them)
    inflight.py  an apply's adds in flight, durable before its first call: a killed run's are in doubt
    cursors.py   source cursors                  Cursors
    locks.py     named locks with a TTL          Locks
    queue.py     webhook events, leases, claims  EventIntake, EventClaims, EventOutcomes, QueueStats
    writer.py    group commit of the webhook intake (EventWriter)
    codec.py     the JSON form of records in a queued event
    owners.py    host:pid:token owner names, and whether their process is gone
    url.py       where the ledger is ([ledger] url, $RFMSYNC_LEDGER_URL), open_ledger()
    facade.py    Ledger
"""

from .cursors import Cursors
from .db import utcnow
from .facade import Ledger
from .failures import FailureRecorder, PendingFailures
from .locks import Locks
from .owners import default_owner, owner_process_gone, process_owner
from .queue import EVENT_STATUSES, Event, EventClaims, EventIntake, EventOutcomes, QueueStats
from .runs import RUN_STATUSES, RunHistory, RunRecorder
from .state import StateReader, StateWriter
from .url import ledger_url, open_ledger, state_cache_folder

__all__ = ["Ledger", "Event", "EVENT_STATUSES", "RUN_STATUSES", "default_owner", "owner_process_gone",
           "process_owner", "utcnow", "ledger_url", "open_ledger", "state_cache_folder",
           "Cursors", "EventClaims", "EventIntake", "EventOutcomes", "FailureRecorder", "Locks",
           "PendingFailures", "QueueStats", "RunHistory", "RunRecorder", "StateReader", "StateWriter"]
