"""Links the store learned (a guest's e-mail or phone → a customer id) survive a file source's full refresh: the
export read again does not split one person back into a guest and a customer."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.records import Consent, Contact, Order
from connectors.source import PullResult
from connectors.tables import create_tables, stage_records
from sync.config import load_config
from sync.ingest import segments_from_store
from sync.ledger import open_ledger
from sync.pipeline import Reading, store_path
from sync.settings import load_settings
from sync.store import merge_staged, open_store

from tests.profiles import examples

AS_OF = date(2025, 6, 30)
UTC = timezone.utc
CONFIG = """\
[source]
type = "file"
orders = "exports/*.csv"
phone_region = "UZ"

[source.columns]
order_id = "order_id"
email = "email"
phone = "phone"
ordered_at = "date"
amount = "amount"

[store]
orders = "rfmsync.duckdb"
"""
HEADER = "order_id,email,phone,date,amount"


def _shop(folder: Path, rows: list[str], name: str = "day1.csv"):
    """A shop whose export has no customer id: its guests are keyed by their e-mail or phone."""
    (folder / "exports").mkdir(parents=True, exist_ok=True)
    (folder / "rfmsync.toml").write_text(CONFIG, encoding="utf-8")
    (folder / "exports" / name).write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return load_config(folder / "rfmsync.toml")


def _ingest(cfg, reread: bool = False) -> list[tuple]:
    """Read the export into the store and segment it: each customer's scored row (the kept totals used)."""
    settings = load_settings()
    with open_ledger(cfg, settings) as ledger:
        run = segments_from_store(cfg, ledger, settings, as_of=AS_OF, reading=Reading(reread=reread))
        try:
            return sorted(run.con.execute(f"SELECT * FROM {run.result.table}").fetchall())
        finally:
            run.con.close()


def _webhook(cfg, orders: list[Order], contacts: list[Contact]) -> None:
    with open_store(store_path(cfg)) as con:
        stage_records(con, orders, contacts)
        merge_staged(con, PullResult(), origin="webhook")


def _owners(cfg) -> dict[str, str]:
    with open_store(store_path(cfg)) as con:
        return dict(con.execute("SELECT order_id, customer_id FROM orders").fetchall())


def _contacts(cfg) -> list[tuple]:
    with open_store(store_path(cfg)) as con:
        return con.execute("SELECT customer_id, email, phone FROM contacts ORDER BY customer_id").fetchall()


def _order(oid: str, cust: str, day: int) -> Order:
    return Order(order_id=oid, customer_id=cust, ordered_at=datetime(2025, 6, day, 12, tzinfo=UTC),
                 amount=Decimal("10"))


ANNA = ["g1,anna@x.com,,2025-05-01,100", "b1,bob@x.com,,2025-05-02,50"]


ANNA_WEBHOOK = ([_order("w1", "c1", 20)], [Contact("c1", email="anna@x.com", first_name="Anna")])


def test_a_guest_linked_by_a_webhook_stays_linked_when_the_export_is_read_again(tmp_path):
    """One person, one customer: the export read again (`--reread`, the nightly run) keys Anna's guest order by her
    e-mail again; the link the webhook made holds, and the segments (from the kept totals) are a fresh store's."""
    cfg = _shop(tmp_path / "a", ANNA)
    _ingest(cfg)
    assert _owners(cfg) == {"g1": "anna@x.com", "b1": "bob@x.com"}
    # the CRM's webhook: Anna's order under her customer id, her contact with the e-mail the guest order has
    _webhook(cfg, *ANNA_WEBHOOK)
    assert _owners(cfg) == {"g1": "c1", "b1": "bob@x.com", "w1": "c1"}
    linked = _ingest(cfg, reread=False)  # nothing changed: segments from the store, its kept totals built
    after = _ingest(cfg, reread=True)
    assert _owners(cfg) == {"g1": "c1", "b1": "bob@x.com", "w1": "c1"}
    assert _contacts(cfg) == [("bob@x.com", "bob@x.com", None), ("c1", "anna@x.com", None)]
    assert after == linked and len(after) == 2
    fresh = _shop(tmp_path / "b", ANNA)  # the same export and webhook, in a new store
    _ingest(fresh)
    _webhook(fresh, *ANNA_WEBHOOK)
    assert _ingest(fresh) == after


def test_the_export_catching_up_with_the_webhook_and_a_new_guest_order_stay_with_the_customer(tmp_path):
    """The export read after the webhook holds the webhook's order (keyed by the e-mail: the export has no customer
    ids), and a later file a new guest order of Anna's: both join her customer."""
    cfg = _shop(tmp_path, ANNA)
    _ingest(cfg)
    _webhook(cfg, *ANNA_WEBHOOK)
    (tmp_path / "exports" / "day2.csv").write_text(
        f"{HEADER}\nw1,anna@x.com,,2025-06-20,10\ng2,ANNA@x.com,,2025-06-25,30\n", encoding="utf-8")
    _ingest(cfg)
    assert _owners(cfg) == {"g1": "c1", "b1": "bob@x.com", "w1": "c1", "g2": "c1"}
    assert _contacts(cfg) == [("bob@x.com", "bob@x.com", None), ("c1", "anna@x.com", None)]


def test_a_store_linked_before_links_were_noted_keeps_its_links(tmp_path):
    """A store written by an earlier version holds its links only in its orders: the next full read notes them."""
    cfg = _shop(tmp_path, ANNA)
    _ingest(cfg)
    _webhook(cfg, *ANNA_WEBHOOK)
    with open_store(store_path(cfg)) as con:
        con.execute("DROP TABLE identity_links")
    _webhook(cfg, [_order("w2", "c2", 21)], [Contact("c2", email="carl@x.com")])  # the new version's first merge
    _ingest(cfg, reread=True)
    assert _owners(cfg) == {"g1": "c1", "b1": "bob@x.com", "w1": "c1", "w2": "c2"}
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT identifier, customer_id FROM identity_links").fetchall() == [("anna@x.com", "c1")]


# --------------------------------------------------------------------------- the merges alone (an in-memory store)

def _store() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_tables(con)
    return con


def _read(con, orders, contacts=(), **kw) -> None:
    """A file export's full refresh: its rows replace the store's (webhook records kept)."""
    stage_records(con, orders, contacts)
    merge_staged(con, PullResult(full_refresh=True), **kw)


def _hook(con, orders=(), contacts=(), **kw) -> PullResult:
    stage_records(con, orders, contacts)
    result = PullResult()
    merge_staged(con, result, origin="webhook", **kw)
    return result


def _state(con) -> tuple:
    return (sorted(con.execute("SELECT order_id, customer_id FROM orders").fetchall()),
            sorted(con.execute("SELECT customer_id, email, phone, first_name FROM contacts").fetchall()))


GUEST = ([_order("g1", "anna@x.com", 1), _order("p1", "+998900000001", 2)],
         [Contact("anna@x.com", email="anna@x.com"), Contact("+998900000001", phone="+998900000001")])


def _anna_moved_beth_has_her_old_address(**anna) -> duckdb.DuckDBPyConnection:
    """Anna (c1) is linked to the export's guest orders of x@x.com; she changes her e-mail (``anna``: her contact
    then), and Beth (c2) now carries x@x.com."""
    con = _store()
    _read(con, *X_GUEST)
    _hook(con, [_order("w1", "c1", 3)], [Contact("c1", email="x@x.com", first_name="Anna")])
    _hook(con, [], [Contact("c1", first_name="Anna", **(anna or {"email": "anna.new@x.com"}))])
    _hook(con, [_order("w2", "c2", 4)], [Contact("c2", email="x@x.com", first_name="Beth",
                                                  marketing_consent=Consent.NO)])
    return con


X_GUEST = ([_order("g1", "x@x.com", 1), _order("p1", "+998900000001", 2)],
           [Contact("x@x.com", email="x@x.com"), Contact("+998900000001", phone="+998900000001")])


def test_the_old_orders_stay_annas_and_a_new_order_of_her_old_address_goes_to_who_carries_it_now():
    """The links are kept by order, not by address: Anna's guest orders of her old e-mail stay hers whenever the
    export is read again; a new guest order of that e-mail (a webhook's, a CRM pull's, the export's) is Beth's,
    who carries it now (rule 2), and no full refresh moves Beth's orders to Anna."""
    con = _anna_moved_beth_has_her_old_address()
    _hook(con, [_order("w3", " X@x.com", 5)])  # a webhook's guest order (no customer id)
    stage_records(con, [_order("w4", "x@x.com", 6)], [])
    merge_staged(con, PullResult())  # a CRM pull's guest order
    assert {o: c for o, c in _state(con)[0] if o[0] == "w"} == {"w1": "c1", "w2": "c2", "w3": "c2", "w4": "c2"}
    _read(con, [*X_GUEST[0], _order("g2", "x@x.com", 7)], X_GUEST[1])  # the export now has Beth's g2 too
    # (w4, the pull's, is no webhook record: the file's full refresh replaces it, as any store row not a webhook's)
    expected = {"g1": "c1", "p1": "+998900000001", "g2": "c2", "w1": "c1", "w2": "c2", "w3": "c2"}
    assert dict(_state(con)[0]) == expected
    _read(con, [*X_GUEST[0], _order("g2", "x@x.com", 7)], X_GUEST[1])
    assert dict(_state(con)[0]) == expected


def test_a_guests_consent_fills_only_a_customer_who_carries_its_address():
    """The export's guest of x@x.com says yes: Beth, who carries x@x.com now and said no, keeps her no; Anna, whose
    old guest orders of x@x.com stay hers, gets neither that e-mail nor its yes (she has a phone only now, or
    another e-mail)."""
    yes = ([*X_GUEST[0], _order("g2", "x@x.com", 7)],
           [Contact("x@x.com", email="x@x.com", marketing_consent=Consent.YES), X_GUEST[1][1]])
    for anna in ({"phone": "+998900000009"}, {"email": "anna.new@x.com"}):
        con = _anna_moved_beth_has_her_old_address(**anna)
        _read(con, *yes)
        assert dict(_state(con)[0])["g1"] == "c1" and dict(_state(con)[0])["g2"] == "c2"
        assert con.execute("SELECT customer_id, email, marketing_consent FROM contacts WHERE customer_id IN "
                           "('c1', 'c2') ORDER BY 1").fetchall() == [
            ("c1", anna.get("email"), "unknown"), ("c2", "x@x.com", "no")]
    con = _store()  # nobody carries x@x.com now: Anna keeps her old orders and her contact, not the address's yes
    _read(con, *X_GUEST)
    _hook(con, [_order("w1", "c1", 3)], [Contact("c1", email="x@x.com")])
    _hook(con, [], [Contact("c1", email="anna.new@x.com")])
    _read(con, X_GUEST[0], yes[1])
    assert dict(_state(con)[0])["g1"] == "c1"
    assert con.execute("SELECT customer_id, email, marketing_consent FROM contacts WHERE customer_id IN "
                       "('c1', 'x@x.com')").fetchall() == [("c1", "anna.new@x.com", "unknown")]


def test_review_a_guest_order_of_the_address_now_someone_elses_joins_its_current_owner():
    """The review of links26: a remembered address link sent Beth's webhook guest order to Anna."""
    con = _anna_moved_beth_has_her_old_address()
    _hook(con, [_order("w3", "x@x.com", 5)])  # no customer id; only Beth's contact carries x@x.com
    assert con.execute("SELECT customer_id FROM orders WHERE order_id = 'w3'").fetchall() == [("c2",)]


def test_review_consent_given_for_one_address_is_not_carried_to_another():
    """The review of links26: the export's guest consent for x@x.com filled Anna's, who carries another e-mail."""
    con = _anna_moved_beth_has_her_old_address()
    _read(con, [_order("g1", "x@x.com", 1)], [Contact("x@x.com", email="x@x.com", marketing_consent=Consent.YES)])
    assert con.execute("SELECT marketing_consent FROM contacts WHERE customer_id = 'c1'").fetchall() == [("unknown",)]


def test_an_address_shared_since_the_link_links_nobody_on_the_next_read():
    """The rule for a shop's own phone holds for a learned link too: once more customers than max_identity_group
    carry the e-mail, the export's guest order keyed by it is the guest's again (as a fresh read keys it)."""
    con = _store()
    _read(con, *GUEST)
    _hook(con, [_order("w1", "c1", 3)], [Contact("c1", email="anna@x.com")], max_identity_group=1)
    assert dict(_state(con)[0])["g1"] == "c1"
    _hook(con, [_order("w2", "c2", 3)], [Contact("c2", email="anna@x.com")], max_identity_group=1)
    _read(con, *GUEST, max_identity_group=1)
    assert dict(_state(con)[0]) == {"g1": "anna@x.com", "p1": "+998900000001", "w1": "c1", "w2": "c2"}
    _read(con, *GUEST, max_identity_group=2)  # within the group again: the first link holds
    assert dict(_state(con)[0])["g1"] == "c1"


def test_a_link_to_a_customer_no_longer_in_the_store_links_nobody():
    con = _store()
    _read(con, [*GUEST[0], _order("f1", "c9", 1)], [*GUEST[1], Contact("c9", phone="+998900000001")])
    _hook(con, [_order("w1", "+998900000001", 3)])  # a webhook guest order: it joins the export's customer c9
    assert dict(_state(con)[0]) == {"g1": "anna@x.com", "p1": "c9", "f1": "c9", "w1": "c9"}
    _read(con, *GUEST)  # c9 left the export: nobody to join
    assert dict(_state(con)[0]) == {"g1": "anna@x.com", "p1": "+998900000001", "w1": "c9"}


def test_a_refresh_that_fails_before_its_commit_leaves_the_links_applied():
    """The rows' write and the links' application are one transaction: a failure in between (a crash, a refused
    merge) leaves the store as it was, linked. A guard: it passes without :func:`sync.store.links.apply_links` too
    (the failure rolls the whole refresh back); it fails if the links are ever applied in a transaction of their
    own, after the rows' commit."""
    con = _store()
    _read(con, *GUEST)
    _hook(con, [_order("w1", "c1", 3)], [Contact("c1", email="anna@x.com")])
    before = _state(con)

    def crash(con):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        _read(con, *GUEST, before_commit=crash)
    assert _state(con) == before and dict(before[0])["g1"] == "c1"


IDS = ["anna@x.com", "bob@x.com", "+998900000001", "+998900000002"]
steps = st.lists(st.tuples(st.sampled_from(["c1", "c2", "c3", *IDS]), st.sampled_from(IDS),
                           st.booleans()), min_size=1, max_size=6)
export = st.lists(st.tuples(st.sampled_from(IDS), st.integers(1, 9)), min_size=1, max_size=6)


def _contact(key: str, ident: str) -> Contact:
    return Contact(key, email=ident if "@" in ident else None, phone=None if "@" in ident else ident)


@pytest.mark.timeout(900)  # the thorough profile: 200 small stores, each read twice
@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=export, hooks=steps)
def test_reading_the_export_again_undoes_no_link(rows, hooks):
    """Any export of guests, then any webhooks (customers carrying their e-mails/phones, with an order or not,
    guest orders keyed by one): the export read again leaves every order with the customer it had, and a further
    read changes nothing at all."""
    orders = [_order(f"g{i}", ident, day) for i, (ident, day) in enumerate(rows)]
    contacts = [_contact(ident, ident) for ident in sorted({ident for ident, _ in rows})]
    con = _store()
    _read(con, orders, contacts)
    for n, (key, ident, with_order) in enumerate(hooks):
        # a customer with one of the guests' e-mails/phones, or a guest keyed by its own (a record without an id)
        contact = _contact(key, ident if key[0] == "c" else key)
        _hook(con, [_order(f"w{n}", key, 10 + n)] if with_order else [], [contact])
    linked = _state(con)
    _read(con, orders, contacts)
    again = _state(con)
    assert again[0] == linked[0]
    assert {c[0] for c in again[1]} == {c[0] for c in linked[1]}
    _read(con, orders, contacts)
    assert _state(con) == again
