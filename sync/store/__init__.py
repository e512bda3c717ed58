"""The local order store: one DuckDB file holding the canonical orders, contacts and line items.

``connection.py`` opens the file (waiting for another writer), ``merge.py`` moves staged rows in,
``webhooks.py`` keeps track of the records that came by webhook, ``lookup.py`` holds the indexes that let a
webhook resync read only the affected customers' rows.

Every source lands here: file sources replace their history each run (``full_refresh``); API sources and
webhooks upsert by order id / customer id (latest version wins). Segmentation reads one place.

Webhook records survive a full refresh. A webhook order is usually newer than the last export, so a file
pull that replaced everything would drop it (and move its customer back) until a later export contains it.
``merge_staged(..., origin="webhook")`` therefore notes the ids it merged in ``webhook_records``; a full
refresh keeps those orders (with their line items) and those customers' contacts *unless a file read after the
webhook record was merged has the same order_id / customer_id*: then the file's version wins and the note is
dropped (``file_won_records`` keeps when that file was read, the start of the run that read it: the same or an
older webhook batch merged again later is left out; a webhook accepted during the read wins). A file read before it (unchanged since) is older than the webhook: its version of a refunded order or of a
withdrawn consent must not come back because another file changed (:class:`~.merge.FileReads`; an order's file is
the one its row is in; a contact's is the file of its staged row with contacts files, else the files of its
orders). So the store
holds one copy of each order, and an order is never lost between its webhook and the export that catches up.
Between webhooks, the record's age (when the ledger accepted its event) decides: a webhook version older than the
one stored is left out (a batch merged after a newer one); when both versions carry the vendor's modification time
(``updated_at``), that time decides instead (a delivery the vendor retried after a newer one is left out). A
Shopify or amoCRM pull notes the vendor's time of each record it read (``pulled.py``): a delivery older than the
pulled version is left out the same way, and a pulled version older than the webhook version held is left out of
the pull. An order the vendor deleted for good (a Shopify order, ``deletes.py``) keeps its delete: no later version
of it is merged.

Links are kept too. An incremental merge that joins a guest's e-mail/phone key to a customer notes the orders it
re-keyed (``links.py``, ``identity_links``); a full refresh applies the noted links to the export's rows in its own
transaction, so one person is never split back into a guest and a customer by the export read again.

DuckDB allows one writing process per file. When a cron ``rfmsync sync`` and ``rfmsync serve`` meet, the second
waits up to ``wait_seconds`` for the file, then stops with :class:`~sync.errors.LockBusyError` (exit 75). Every
merge runs in one transaction, so a crash never leaves a half-merged store.
"""

from .connection import STORE_LOCK, connect_store, open_store
from .lookup import drop_lookup_indexes, ensure_lookup_indexes, lookup_by_key
from .merge import KEYS, merge_staged
from .webhooks import WEBHOOK_TABLE, webhook_records

__all__ = ["KEYS", "STORE_LOCK", "WEBHOOK_TABLE", "connect_store", "drop_lookup_indexes", "ensure_lookup_indexes",
           "lookup_by_key", "merge_staged", "open_store", "webhook_records"]
