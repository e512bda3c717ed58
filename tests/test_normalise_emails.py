"""An older store's e-mails normalised once (sync.store.lookup.normalise_emails) before the exact e-mail index is
read: the plain-ASCII shortcut must not skip a punycode domain, which normalises to its Unicode form (the resync
looks up ``user@sub.рф``; a stored ``user@sub.xn--p1ai`` left as it was hid that card's "no")."""

import duckdb
import pytest

from connectors.email_phone import normalize_email
from sync.store.lookup import normalise_emails


def test_plain_ascii_is_skipped_but_a_punycode_domain_is_normalised():
    con = duckdb.connect()
    con.execute("CREATE TABLE contacts (email VARCHAR)")
    con.execute("INSERT INTO contacts VALUES ('user@sub.xn--p1ai'), ('plain@x.com'), (' FAM@Shop.UZ '), (NULL)")
    assert normalise_emails(con, "contacts", plain_skipped=True) == 2
    got = {e for (e,) in con.execute("SELECT email FROM contacts WHERE email IS NOT NULL").fetchall()}
    assert got == {normalize_email("user@sub.xn--p1ai"), "plain@x.com", "fam@shop.uz"}
    assert normalize_email("user@sub.xn--p1ai") != "user@sub.xn--p1ai"


@pytest.mark.parametrize("killed", [False, True])
def test_the_stores_emails_normalised_leave_no_stale_kept_rows(tmp_path, monkeypatch, killed):
    """A full refresh keeps each customer's rows (a count and a sum of row hashes, e-mails included) for the next
    one, valid while the store's generation stays; normalising the stored e-mails (an older rfmsync's webhook
    contact, its address as typed, when the lookup indexes are built) changes rows without moving it. The next full
    refresh then compared with the rows as they were before the normalisation and noted that customer as moved (a
    full sync reading in between left him out for nothing: its plan normalises addresses anyway). Now the kept rows
    go with the normalisation (before it: a process killed right after the update, with nothing left to normalise
    on the next run, left them), and that refresh notes nobody."""
    from datetime import datetime, timezone
    from decimal import Decimal

    from connectors.records import Consent, Contact, Order
    from connectors.source import PullResult
    from connectors.tables import stage_records
    from sync.store import connect_store, ensure_lookup_indexes, lookup
    from sync.store.generation import generation
    from sync.store.merge import merge_staged
    from sync.store.reads import take_read
    from sync.store.resynced import moved_since

    con = connect_store(tmp_path / "s.duckdb")
    take_read(con)  # a full sync's read is outstanding throughout: the refreshes compare
    stage_records(con, [], [Contact("W", email=" W@Shop.UZ ", marketing_consent=Consent.YES)])
    merge_staged(con, PullResult(), origin="webhook")  # as an older rfmsync stored it

    def refresh() -> None:  # the same export read again: it does not hold W, whose webhook contact it keeps
        stage_records(con, [Order(order_id="1", customer_id="A", amount=Decimal("5"),
                                  ordered_at=datetime(2025, 6, 29, tzinfo=timezone.utc))], [])
        merge_staged(con, PullResult(full_refresh=True), origin="pull")

    refresh()
    refresh()  # its rows are kept now
    if killed:  # the process dies right after the normalisation's update committed (its log line the next step)
        class Killed(BaseException):
            pass

        def die(*args, **kwargs):
            raise Killed

        monkeypatch.setattr(lookup.log, "info", die)
        with pytest.raises(Killed):
            ensure_lookup_indexes(con)
        monkeypatch.undo()
        ensure_lookup_indexes(con)  # the next run: nothing left to normalise
    else:
        ensure_lookup_indexes(con)  # the first webhook resync after it: the stored e-mails normalised
    assert con.execute("SELECT email FROM contacts WHERE customer_id = 'W'").fetchall() == [("w@shop.uz",)]
    seen = generation(con)  # a full sync reads here
    refresh()
    assert moved_since(con, seen) == (seen + 1, set())
