"""A webhook's version of a record against a file export's full refresh: the newer one stays."""

from __future__ import annotations

import os
import shutil
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from connectors.records import Consent, Contact, LineItem, Order, OrderStatus
from connectors.source import PullResult
from connectors.tables import stage_records
from sync.config import load_config
from sync.ingest import segments_from_store
from sync.ledger import open_ledger
from sync.pipeline import store_path
from sync.settings import load_settings
from sync.store import merge_staged, open_store, webhook_records

AS_OF = date(2025, 6, 30)


def _shop(folder: Path) -> Path:
    """The demo shop with its orders in a folder of daily exports (``exports/*.csv``)."""
    from sync.demodata import generate_shop

    cfg = generate_shop(folder, customers=60, seed=3, as_of=AS_OF)
    (folder / "exports").mkdir()
    shutil.move(folder / "orders.csv", folder / "exports" / "2025-06-29.csv")
    text = cfg.read_text(encoding="utf-8").replace('orders = "orders.csv"', 'orders = "exports/*.csv"')
    cfg.write_text(text, encoding="utf-8")
    return cfg


def _ingest(cfg) -> None:
    settings = load_settings()
    with open_ledger(cfg, settings) as ledger:
        segments_from_store(cfg, ledger, settings, as_of=AS_OF).con.close()


def _webhook(cfg, orders: list[Order], contacts: list[Contact], received_at: datetime | None = None) -> None:
    with open_store(store_path(cfg)) as con:
        stage_records(con, orders, contacts)
        merge_staged(con, PullResult(), origin="webhook", received_at=received_at)


def _state(cfg, order_id: str, customer_id: str) -> tuple:
    with open_store(store_path(cfg)) as con:
        return (con.execute("SELECT status, count(*) FROM orders WHERE order_id = ? GROUP BY 1", [order_id])
                .fetchall(),
                con.execute("SELECT marketing_consent FROM contacts WHERE customer_id = ?", [customer_id]).fetchall())


def _append_row(path: Path, row: str) -> None:
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(row + "\n")


def _ingested_shop(tmp_path):
    """The shop's exports ingested once; its config and its first completed order (id, customer, date, amount)."""
    cfg = load_config(_shop(tmp_path / "shop"))
    _ingest(cfg)
    with open_store(store_path(cfg)) as con:
        return cfg, con.execute("SELECT order_id, customer_id, ordered_at, amount FROM orders "
                                "WHERE status = 'completed' ORDER BY order_id LIMIT 1").fetchone()


def test_a_refund_and_a_withdrawn_consent_by_webhook_survive_a_refresh_by_files_read_before_them(tmp_path):
    """The export files a record is in were read before its webhook came: a new daily file (a full refresh of the
    store) must not bring back the old version (the order completed again, the consent given again). Once a file
    holding the record is read after the webhook, the export has caught up and its version wins, as before."""
    cfg, (oid, cid, at, amount) = _ingested_shop(tmp_path)
    with open_store(store_path(cfg)) as con:
        (other,) = con.execute("SELECT customer_id FROM contacts WHERE marketing_consent = 'yes' "
                               "ORDER BY customer_id LIMIT 1").fetchone()
    assert _state(cfg, oid, other)[1] == [("yes",)]
    refunded = Order(oid, cid, at, amount, status=OrderStatus.REFUNDED)
    _webhook(cfg, [refunded], [Contact(other, marketing_consent=Consent.NO)])
    assert _state(cfg, oid, other) == ([("refunded", 1)], [("no",)])

    day1 = tmp_path / "shop" / "exports" / "2025-06-29.csv"
    header, first = day1.read_text(encoding="utf-8-sig").splitlines()[:2]
    new_day = tmp_path / "shop" / "exports" / "2025-06-30.csv"
    new_day.write_text(header + "\n", encoding="utf-8-sig")
    _append_row(new_day, first.replace(first.split(";")[0], "NEW-1", 1))  # someone else's order, the next day
    _ingest(cfg)
    assert _state(cfg, oid, other) == ([("refunded", 1)], [("no",)])  # the files holding them are older
    with open_store(store_path(cfg)) as con:
        assert webhook_records(con) == {"order": {oid}, "contact": {other}}
        assert con.execute("SELECT count(*) FROM orders WHERE order_id = 'NEW-1'").fetchall() == [(1,)]

    _append_row(day1, first.replace(first.split(";")[0], "NEW-2", 1))  # the order's own file changes: read again
    clients = tmp_path / "shop" / "clients.csv"  # and the contacts file is exported again (the same bytes)
    os.utime(clients, ns=(clients.stat().st_atime_ns, clients.stat().st_mtime_ns + 10**9))
    _ingest(cfg)
    assert _state(cfg, oid, other) == ([("completed", 1)], [("yes",)])  # the export's versions, one copy
    with open_store(store_path(cfg)) as con:
        assert webhook_records(con) == {"order": set(), "contact": set()}


def test_a_batch_merged_again_after_a_newer_export_keeps_the_age_the_ledger_gave_it(tmp_path):
    """The worker released a batch (a destination busy) and re-claimed it after the 03:00 export, which holds a
    newer version of its order (refunded at 02:59, no webhook for that), was read. Merged again, the batch keeps
    the time the ledger accepted it (02:58), not the merge time: the next daily file's full refresh restores the
    export's version instead of keeping the stale webhook one for ever."""
    cfg, (oid, cid, at, amount) = _ingested_shop(tmp_path)
    accepted = datetime.now(timezone.utc)  # the ledger accepted the webhook: the order paid
    batch = [Order(oid, cid, at, amount, status=OrderStatus.COMPLETED)]
    _webhook(cfg, batch, [], received_at=accepted)
    _webhook(cfg, batch, [], received_at=accepted)  # merged twice before the export: its age does not move on
    _webhook(cfg, batch, [], received_at=accepted - timedelta(hours=1))  # nor back (an older batch of it)
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT received_at FROM webhook_records").fetchall() == [(accepted,)]
    day1 = tmp_path / "shop" / "exports" / "2025-06-29.csv"
    lines = day1.read_text(encoding="utf-8-sig").splitlines()
    lines = [row.rsplit(";", 1)[0] + ";Возврат" if row.startswith(oid + ";") else row for row in lines]
    day1.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")  # the export: refunded since
    _ingest(cfg)
    assert _state(cfg, oid, cid)[0] == [("refunded", 1)]
    _webhook(cfg, batch, [], received_at=accepted)  # the same batch, re-claimed and merged again
    # the export was read after the webhook came: its version is as new as that read, the batch's is left out
    # (before, the refresh dropped the note and the batch brought the paid order back until the next daily file)
    assert _state(cfg, oid, cid)[0] == [("refunded", 1)]
    _webhook(cfg, batch, [], received_at=accepted - timedelta(hours=1))  # an older batch of it: the same
    assert _state(cfg, oid, cid)[0] == [("refunded", 1)]
    new_day = tmp_path / "shop" / "exports" / "2025-06-30.csv"
    new_day.write_text(lines[0] + "\n" + lines[1].replace(lines[1].split(";")[0], "NEW-1", 1) + "\n",
                       encoding="utf-8-sig")  # the next daily file: someone else's order
    _ingest(cfg)
    assert _state(cfg, oid, cid)[0] == [("refunded", 1)]  # the export's version: read after the webhook came
    with open_store(store_path(cfg)) as con:
        assert webhook_records(con)["order"] == set()


def test_each_record_of_a_batch_keeps_the_age_of_the_event_it_came_in(tmp_path):
    """A batch re-claimed after the export (holding the order refunded) was read took a newer event of another
    order along: the waiting order keeps its own event's age (before the export), not the batch's newest, so the
    next daily file's refresh restores the export's version; the newer order keeps its webhook version."""
    cfg, (oid, cid, at, amount) = _ingested_shop(tmp_path)
    paid = datetime.now(timezone.utc) - timedelta(minutes=5)  # its event, accepted before the export was read
    day1 = tmp_path / "shop" / "exports" / "2025-06-29.csv"
    lines = day1.read_text(encoding="utf-8-sig").splitlines()
    lines = [row.rsplit(";", 1)[0] + ";Возврат" if row.startswith(oid + ";") else row for row in lines]
    day1.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")  # the export: refunded since
    _ingest(cfg)
    later = datetime.now(timezone.utc) + timedelta(minutes=1)  # another order's event, after the export's read
    batch = [Order(oid, cid, at, amount, status=OrderStatus.COMPLETED), Order("W-NEW", cid, at, amount)]
    _webhook(cfg, batch, [], received_at={("order", oid): paid, ("order", "W-NEW"): later})
    new_day = tmp_path / "shop" / "exports" / "2025-06-30.csv"
    new_day.write_text(lines[0] + "\n" + lines[1].replace(lines[1].split(";")[0], "NEW-1", 1) + "\n",
                       encoding="utf-8-sig")  # the next daily file: someone else's order
    _ingest(cfg)
    assert _state(cfg, oid, cid)[0] == [("refunded", 1)]  # the export's version: read after its event came
    assert _state(cfg, "W-NEW", cid)[0] == [("completed", 1)]  # newer than every file read: kept
    with open_store(store_path(cfg)) as con:
        assert webhook_records(con)["order"] == {"W-NEW"}


def test_a_contact_keyed_by_its_e_mail_keeps_its_own_events_age_once_linked_to_its_customer(tmp_path):
    """A webhook contact keyed by its e-mail is re-keyed to its customer when merged: its age is still its own
    event's (looked up under the id it came with), not the newest of the batch."""
    cfg, (oid, cid, at, amount) = _ingested_shop(tmp_path)
    with open_store(store_path(cfg)) as con:
        other, email = con.execute("SELECT customer_id, email FROM contacts WHERE email IS NOT NULL AND "
                                   "customer_id <> ? ORDER BY customer_id LIMIT 1", [cid]).fetchone()
    own = datetime.now(timezone.utc) - timedelta(hours=2)
    newest = datetime.now(timezone.utc)
    _webhook(cfg, [Order("W-NEW", cid, at, amount)], [Contact(email, email=email, marketing_consent=Consent.NO)],
             received_at={("contact", email): own, ("order", "W-NEW"): newest})
    with open_store(store_path(cfg)) as con:
        ages = {(k, i): t for k, i, t in con.execute("SELECT kind, id, received_at FROM webhook_records").fetchall()}
    assert ages == {("contact", other): own, ("order", "W-NEW"): newest}


def test_a_withdrawn_consent_by_webhook_survives_a_new_daily_contacts_file_without_that_customer(tmp_path):
    """Contacts exported in daily files (``clients*.csv``): the next day's file, read after the webhook but without
    its customer, makes the store re-stage every file, and the customer's row still comes from the old file: the
    webhook's "no" stays. A new file's row of that customer that gives no consent does not bring the old "yes"
    back either; one that says "yes" again, read after the webhook, is the export catching up: it wins."""
    folder = tmp_path / "shop"
    cfg_path = _shop(folder)
    cfg_path.write_text(cfg_path.read_text(encoding="utf-8").replace('contacts = "clients.csv"',
                                                                     'contacts = "clients*.csv"'), encoding="utf-8")
    cfg = load_config(cfg_path)
    _ingest(cfg)
    header, *rows = (folder / "clients.csv").read_text(encoding="utf-8-sig").splitlines()
    row = next(r for r in rows if r.split(";")[5] == "да")
    cid = row.split(";")[0]
    _webhook(cfg, [], [Contact(cid, marketing_consent=Consent.NO)])
    other = next(r for r in rows if not r.startswith(cid + ";"))

    def new_file(day: str, *lines: str) -> None:
        (folder / f"clients_{day}.csv").write_text("\n".join([header, *lines]) + "\n", encoding="utf-8-sig")
        _ingest(cfg)

    new_file("2025-06-30", other.replace(other.split(";")[0], "C09999", 1))  # tomorrow's new client only
    assert _state(cfg, "", cid)[1] == [("no",)]
    with open_store(store_path(cfg)) as con:
        assert webhook_records(con)["contact"] == {cid}
        assert con.execute("SELECT count(*) FROM contacts WHERE customer_id = 'C09999'").fetchall() == [(1,)]
    fields = row.split(";")
    fields[5] = ""
    new_file("2025-07-01", ";".join(fields))  # the customer again, a new city, nothing said about consent
    assert _state(cfg, "", cid)[1] == [("no",)]
    new_file("2025-07-02", row)  # the export has caught up: the customer says yes again, after the webhook
    assert _state(cfg, "", cid)[1] == [("yes",)]
    with open_store(store_path(cfg)) as con:
        assert webhook_records(con)["contact"] == set()


def test_an_older_webhook_version_merged_after_a_newer_one_does_not_replace_it(tmp_path):
    """Two workers, or a batch retried after a newer one went through: the batch of the order paid and the consent
    given (accepted first) is merged after the batch of the refund and the withdrawn consent. The store keeps the
    newer versions and their age; a version at least as new still replaces them. Per record: a batch's other,
    newer records are merged."""
    cfg, (oid, cid, at, amount) = _ingested_shop(tmp_path)
    with open_store(store_path(cfg)) as con:
        (other,) = con.execute("SELECT customer_id FROM contacts WHERE marketing_consent = 'yes' "
                               "ORDER BY customer_id LIMIT 1").fetchone()
    given = datetime.now(timezone.utc) - timedelta(minutes=10)
    withdrawn = given + timedelta(minutes=5)
    paid = ([Order(oid, cid, at, amount, status=OrderStatus.COMPLETED, items=(LineItem(sku="SKU-1", price=amount),)),
             Order("W-OTHER", cid, at, amount)], [Contact(other, marketing_consent=Consent.YES)])
    _webhook(cfg, [Order(oid, cid, at, amount, status=OrderStatus.REFUNDED)], [Contact(other,
             marketing_consent=Consent.NO)], received_at=withdrawn)
    _webhook(cfg, *paid, received_at=given)  # the older batch, merged last: one time for all
    _webhook(cfg, *paid, received_at={("order", oid): given, ("contact", other): given,
                                      ("order", "W-NEW"): withdrawn + timedelta(minutes=1)})  # each its own
    assert _state(cfg, oid, other) == ([("refunded", 1)], [("no",)])
    assert _state(cfg, "W-OTHER", cid)[0] == [("completed", 1)]  # not stored before: merged
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT count(*) FROM line_items WHERE order_id = ?", [oid]).fetchall() == [(0,)]
        assert set(con.execute("SELECT kind, id, received_at FROM webhook_records").fetchall()) == {
            ("order", oid, withdrawn), ("contact", other, withdrawn),
            ("order", "W-OTHER", withdrawn + timedelta(minutes=1))}  # no age of its own: the batch's newest
    newer = ([Order(oid, cid, at, amount, status=OrderStatus.COMPLETED), Order("W-NEW", cid, at, amount)],
             [Contact(other, marketing_consent=Consent.YES)])
    _webhook(cfg, *newer, received_at={("order", oid): withdrawn, ("contact", other): withdrawn + timedelta(1),
                                       ("order", "W-NEW"): given})  # as new, newer, and a record not stored yet
    assert _state(cfg, oid, other) == ([("completed", 1)], [("yes",)])
    assert _state(cfg, "W-NEW", cid)[0] == [("completed", 1)]


def test_a_webhook_batch_merged_again_after_a_crm_pull_does_not_undo_the_pulled_version():
    """A CRM shop: the webhook batch (consent given) is merged, then waits for the destination the scheduled sync
    holds; that sync's incremental pull brings the customer's newer version (consent withdrawn in the CRM). The
    batch, re-claimed after the sync, is older than the pull: the store keeps "no". Before, the pull dropped the
    webhook note and the old batch's "yes" won until the customer changed again in the CRM."""
    accepted = datetime.now(timezone.utc) - timedelta(minutes=5)
    given, withdrawn = (Contact("C1", email="a@example.com", marketing_consent=c) for c in (Consent.YES, Consent.NO))
    with open_store(None) as con:
        for contact, origin in ((given, "webhook"), (withdrawn, "pull"), (given, "webhook")):
            stage_records(con, [], [contact])
            merge_staged(con, PullResult(), origin=origin, received_at=accepted if origin == "webhook" else None)
        assert con.execute("SELECT marketing_consent FROM contacts").fetchall() == [("no",)]
        stage_records(con, [], [given])  # a webhook accepted after the pull: newer, it wins
        merge_staged(con, PullResult(), origin="webhook", received_at=datetime.now(timezone.utc) + timedelta(1))
        assert con.execute("SELECT marketing_consent FROM contacts").fetchall() == [("yes",)]


def test_a_webhook_accepted_while_a_crm_pull_runs_wins_over_the_pulls_version():
    """The scheduled sync pulls the CRM (it holds the store); a webhook (refund, consent withdrawn) is accepted
    while it reads, and merged after the pull's merge. The pull's records are as new as the pull's start (its
    cursor's bound), not its merge: the webhook is newer and wins. Before, it was left out and that sync pushed
    the consent 'yes' of the pull."""
    from sync.pipeline import pull_into

    at = datetime(2025, 6, 27, tzinfo=timezone.utc)
    paid, refunded = (Order("O1", "C1", at, Decimal("10"), status=s) for s in (OrderStatus.COMPLETED,
                                                                               OrderStatus.REFUNDED))
    given, withdrawn = (Contact("C1", email="a@example.com", marketing_consent=c) for c in (Consent.YES, Consent.NO))
    accepted: list[datetime] = []

    class Crm:
        """Reads O1 paid and C1's 'yes'; meanwhile the ledger accepts the webhook."""
        name, max_identity_group = "crm", 50

        def pull(self, con, cursor, progress=None):
            stage_records(con, [paid], [given])
            accepted.append(datetime.now(timezone.utc))
            return PullResult(orders=1, contacts=1, cursor="next")

    with open_store(None) as con:
        stage_records(con, [paid], [given])  # the order came by webhook before: noted
        merge_staged(con, PullResult(), origin="webhook", received_at=datetime.now(timezone.utc) - timedelta(hours=1))
        pull_into(con, Crm())
        stage_records(con, [refunded], [withdrawn])
        merge_staged(con, PullResult(), origin="webhook",
                     received_at={("order", "O1"): accepted[0], ("contact", "C1"): accepted[0]})
        assert con.execute("SELECT status FROM orders").fetchall() == [("refunded",)]
        assert con.execute("SELECT marketing_consent FROM contacts").fetchall() == [("no",)]


def test_a_webhook_accepted_while_the_export_is_read_wins_over_the_files_version(tmp_path):
    """The nightly export is read (the run holds the store) and meanwhile the ledger accepts a refund and a consent
    'no' by webhook; they are merged after the refresh. The files read are as new as the run's start, not its
    merge: the webhook is newer and wins. Before, the refresh noted its merge time, the webhook was left out and
    the same sync pushed the paid order and the 'yes'."""
    from sync.pipeline import configured_source, pull_into

    cfg, (oid, cid, at, amount) = _ingested_shop(tmp_path)
    with open_store(store_path(cfg)) as con:
        (other,) = con.execute("SELECT customer_id FROM contacts WHERE marketing_consent = 'yes' "
                               "ORDER BY customer_id LIMIT 1").fetchone()
    earlier = datetime.now(timezone.utc) - timedelta(hours=1)
    _webhook(cfg, [Order(oid, cid, at, amount, status=OrderStatus.COMPLETED)],
             [Contact(other, marketing_consent=Consent.YES)], received_at=earlier)  # noted by earlier webhooks
    for path in (tmp_path / "shop" / "exports" / "2025-06-29.csv", tmp_path / "shop" / "clients.csv"):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # exported again
    accepted: list[datetime] = []
    with open_store(store_path(cfg)) as con:
        pull_into(con, configured_source(cfg), before_merge=lambda pull: accepted.append(datetime.now(timezone.utc)))
        assert con.execute("SELECT read_at FROM ingest_files").fetchall() == [(con.execute(
            "SELECT min(read_at) FROM file_won_records").fetchall()[0][0],)] * 2  # the run's read start
    _webhook(cfg, [Order(oid, cid, at, amount, status=OrderStatus.REFUNDED)],
             [Contact(other, marketing_consent=Consent.NO)], received_at=accepted[0])
    assert _state(cfg, oid, other) == ([("refunded", 1)], [("no",)])


def test_a_consent_batch_merged_again_after_an_orders_only_export_does_not_undo_it(tmp_path):
    """No contacts file: the consent is a column of the order rows. A webhook 'yes' is merged, the export read
    after it says 'no', then the same batch is re-claimed and merged again: the export's 'no' stays (its contacts
    are as new as their orders' files). Before, the refresh dropped the webhook note without noting the file's
    read, and the batch brought the 'yes' back."""
    shop = tmp_path / "shop"
    (shop / "exports").mkdir(parents=True)
    (shop / "rfmsync.toml").write_text(
        '[source]\ntype = "file"\norders = "exports/*.csv"\n[source.columns]\norder_id = "id"\nordered_at = "at"\n'
        'customer_id = "cust"\nemail = "email"\namount = "amount"\nmarketing_consent = "consent"\n'
        '[[destinations]]\nname = "m"\ntype = "mailchimp"\naudience = "x"\n', encoding="utf-8")
    export = shop / "exports" / "day1.csv"

    def write(consent: str, ns: int = 0) -> None:
        export.write_text(f"id,at,cust,email,amount,consent\nO1,2025-06-01 10:00,C1,a@example.com,10,{consent}\n"
                          "O2,2025-06-02 10:00,C2,b@example.com,20,yes\n", encoding="utf-8")
        os.utime(export, ns=(export.stat().st_atime_ns, export.stat().st_mtime_ns + ns))

    cfg = load_config(shop / "rfmsync.toml")
    write("yes")
    _ingest(cfg)
    accepted = datetime.now(timezone.utc)
    batch = [Contact("C1", email="a@example.com", marketing_consent=Consent.YES)]
    _webhook(cfg, [], batch, received_at=accepted)
    write("no", ns=10**9)  # the export read after the webhook holds the withdrawal
    _ingest(cfg)
    assert _state(cfg, "O1", "C1")[1] == [("no",)]
    _webhook(cfg, [], batch, received_at=accepted)  # the same batch, re-claimed and merged again
    assert _state(cfg, "O1", "C1")[1] == [("no",)]
    _webhook(cfg, [], batch, received_at=accepted - timedelta(hours=1))  # an older batch of it: the same
    assert _state(cfg, "O1", "C1")[1] == [("no",)]


def test_a_refund_by_webhook_survives_every_file_read_again_with_the_same_bytes(tmp_path, monkeypatch):
    """A new release's store format (or ``--reread``, or a ``[source]`` edit) reads every file again: a file with
    the same bytes is as old as its first read, so the export from before the refund and the withdrawn consent
    must not win over them."""
    import sync.store.files as store_files

    cfg, (oid, cid, at, amount) = _ingested_shop(tmp_path)
    with open_store(store_path(cfg)) as con:
        (other,) = con.execute("SELECT customer_id FROM contacts WHERE marketing_consent = 'yes' "
                               "ORDER BY customer_id LIMIT 1").fetchone()
    _webhook(cfg, [Order(oid, cid, at, amount, status=OrderStatus.REFUNDED)],
             [Contact(other, marketing_consent=Consent.NO)])
    with open_store(store_path(cfg)) as con:
        (ids,) = con.execute(f"SELECT max(file_id) FROM {store_files.FILES_TABLE}").fetchone()
    monkeypatch.setattr(store_files, "FORMAT", store_files.FORMAT + 1)  # what upgrading to a release bumping it does
    _ingest(cfg)
    assert _state(cfg, oid, other) == ([("refunded", 1)], [("no",)])
    with open_store(store_path(cfg)) as con:  # (every file was read again: under new ids)
        assert con.execute(f"SELECT min(file_id) > {ids} FROM {store_files.FILES_TABLE}").fetchall() == [(True,)]


def test_a_file_changed_in_the_middle_seen_by_verify_is_read_now_and_wins_over_an_older_refund(tmp_path,
                                                                                              monkeypatch):
    """The other way round: a file read with ``--verify`` (its whole-file hash stored) whose middle is corrected
    later with size and mtime kept (``rsync -t``, ``cp -p``): ``--verify`` reads it again, and the corrected
    export, read after the webhook refund, wins (its bytes are known not to be the first read's). (A file read
    only without ``--verify`` before has no such hash: its first ``--verify`` keeps its first read time,
    :func:`sync.store.file_gone.alike`, tests/test_store_file_prints.py.)"""
    import connectors.file_paths as file_paths
    from sync.pipeline import Reading

    monkeypatch.setattr(file_paths, "CHUNK", 64)  # head and tail of a bigger export: the middle edit is unseen
    cfg, (oid, cid, at, amount) = _ingested_shop(tmp_path)
    settings = load_settings()
    with open_ledger(cfg, settings) as ledger:  # the whole-file hashes stored
        segments_from_store(cfg, ledger, settings, as_of=AS_OF, reading=Reading(verify=True)).con.close()
    _webhook(cfg, [Order(oid, cid, at, amount, status=OrderStatus.REFUNDED)], [])
    assert _state(cfg, oid, cid)[0] == [("refunded", 1)]
    export = next((tmp_path / "shop" / "exports").glob("*.csv"))
    st, lines = export.stat(), export.read_text(encoding="utf-8").splitlines(keepends=True)
    i = next(k for k, line in enumerate(lines) if line.startswith(oid + ";"))
    parts = lines[i].split(";")
    parts[5] = ("9" if parts[5][0] != "9" else "8") + parts[5][1:]  # the amount corrected, same length
    lines[i] = ";".join(parts)
    export.write_text("".join(lines), encoding="utf-8")
    os.utime(export, ns=(st.st_atime_ns, st.st_mtime_ns))
    with open_ledger(cfg, settings) as ledger:
        segments_from_store(cfg, ledger, settings, as_of=AS_OF, reading=Reading(verify=True)).con.close()
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT status FROM orders WHERE order_id = ?", [oid]).fetchall() == [("completed",)]
