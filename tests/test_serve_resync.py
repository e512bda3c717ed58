"""A webhook resync does work proportional to the customers it touches, and gives them the segments a full run
with the same (frozen) cut points would give them."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.records import Order
from segmentation import run_segmentation
from sync.config import load_config
from sync.errors import GuardRefusedError
from sync.ingest import load_cut_points
from sync.ledger import open_ledger
from sync.api import run_sync
from sync.pipeline import Reading, store_path
from sync.serve.resync import resync
from sync.serve.scheduler import run_full_sync
from sync.settings import load_settings
from sync.store import open_store

from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_worker import make_shop

AS_OF = date(2025, 6, 30)
DEST = "mailchimp-demo"


def synced_shop(folder: Path, fake, monkeypatch, customers: int) -> Path:
    path = make_shop(folder, fake, monkeypatch, customers=customers)
    cfg, settings = load_config(path), load_settings()
    with open_ledger(cfg, settings) as ledger:
        run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")  # the full run: saves the cut points
    return path


def orders_for(customer_ids: list[str], tag: str, amount: str = "990000") -> list[Order]:
    return [Order(order_id=f"{tag}-{n}", customer_id=cid, amount=Decimal(amount),
                  ordered_at=datetime(2025, 6, 29, 12, tzinfo=timezone.utc)) for n, cid in enumerate(customer_ids)]


def customers_by_tag(ledger) -> dict[str, list[str]]:
    """Synced customer ids by their managed tag set (as text), in key order."""
    out: dict[str, list[str]] = {}
    for _, s in sorted(ledger.load_state(DEST).items()):
        if s.customer_id:
            out.setdefault(",".join(sorted(s.tags)) or "-", []).append(s.customer_id)
    return out


def test_resynced_customers_get_the_segments_of_a_full_run_with_the_same_quantile_cut_points(
        tmp_path, mailchimp_fake, monkeypatch):
    path = synced_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=250)
    cfg, settings = load_config(path), load_settings()
    assert cfg.segmentation.method == "quantile"
    with open_ledger(cfg, settings) as ledger:
        groups = customers_by_tag(ledger)
        picked = [cid for ids in groups.values() for cid in ids[:3]]  # a few from every segment
        with open_store(store_path(cfg)) as con:
            frozen = load_cut_points(con)
        report = resync(cfg, ledger, settings, orders_for(picked, "Q"), as_of=AS_OF)
        assert report.customers == len(picked) and not report.full_segmentation
        state = {s.customer_id: s for s in ledger.load_state(DEST).values()}
    with open_store(store_path(cfg)) as con:
        assert load_cut_points(con) == frozen  # a resync never moves the cut points
        run_segmentation(con, cfg.segmentation, AS_OF, cfg.timezone, cut_points=frozen)  # everyone, same cuts
        full = dict(con.execute("SELECT customer_id, segment || '/' || rfm FROM customer_segments").fetchall())
    got = {cid: f"{state[cid].fields['RFM_SEG']}/{state[cid].fields['RFM_CODE']}" for cid in picked}
    assert got == {cid: full[cid] for cid in picked}
    moved = sum(1 for ids in groups.values() for cid in ids[:3]
                if ",".join(sorted(state[cid].tags)) != next(t for t, i in groups.items() if cid in i))
    assert moved >= 3  # the orders did move customers: the comparison is not between unchanged rows


def test_a_resync_reads_rows_in_proportion_to_its_customers_not_to_the_shop(tmp_path, mailchimp_fake,
                                                                           monkeypatch):
    """On a store of 60 000 customers and 300 000 orders (written by the serve benchmark's generator, the
    ledger marked as synced), a resync of three customers reads their rows: a few hundred, not the store. The
    store holds refunds and customers without an e-mail: a filter on the status or the e-mail beside the match
    by customer made DuckDB scan the orders or the contacts instead of reading them through the lookup index."""
    from bench.serve_load import big_store

    monkeypatch.setenv("MAILCHIMP_API_KEY", mailchimp_fake.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", mailchimp_fake.url)
    path, churned = big_store(tmp_path / "big", 60_000, 0.2, pool=65, fake=mailchimp_fake)
    cfg, settings = load_config(path), load_settings()
    ids = list(churned)
    with open_ledger(cfg, settings) as ledger:
        warm = resync(cfg, ledger, settings, orders_for(ids[:2], "WARM"), as_of=AS_OF)  # counts managed contacts
        assert warm.indexes_built == 0 and not warm.reports[0].forgotten  # the fake holds what the ledger says
        assert warm.ledger_rows_read >= 54_000  # the one recount (a tenth of the customers have no e-mail)
        report = resync(cfg, ledger, settings, orders_for(ids[2:5], "R"), as_of=AS_OF)
        batch = resync(cfg, ledger, settings, orders_for(ids[5:65], "B"), as_of=AS_OF)  # more than 50 keys
    assert report.customers == 3 and report.reports[0].counts["ok"] >= 3
    for email in list(churned.values())[2:5]:
        assert "Winback" not in mailchimp_fake.tags_of(email)  # they moved, and the ESP holds it
    # three customers: ~5 orders and one contact and one ledger row each, plus a constant per statement
    assert report.ledger_rows_read <= 3 * 2
    assert report.store_rows_read <= 500, report.store_rows_read
    assert report.rows_read == report.store_rows_read + report.ledger_rows_read
    # sixty customers: still their rows (DuckDB would scan 360 000 rows for a join of more than 50 keys)
    assert batch.customers == 60 and batch.ledger_rows_read <= 60 * 2
    assert batch.store_rows_read <= 60 * 50, batch.store_rows_read


def test_the_kept_managed_count_equals_a_recount_after_resyncs(tmp_path, mailchimp_fake, monkeypatch):
    """The plan guards' denominator is kept between resyncs (moved by each plan's own effect): it must be
    what counting the ledger again gives."""
    from sync.planning.plan import all_managed
    from sync.serve.resync import MANAGED_COUNTS

    path = synced_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=120)
    cfg, settings = load_config(path), load_settings()
    managed = all_managed(cfg.destination(DEST))
    with open_ledger(cfg, settings) as ledger:
        groups = customers_by_tag(ledger)
        for n, ids in enumerate(groups.values()):  # several resyncs, customers leaving and entering tags
            resync(cfg, ledger, settings, orders_for(ids[:4], f"M{n}", amount="5000000"), as_of=AS_OF)
        revision = ledger.state_revision(DEST)
        kept, read = MANAGED_COUNTS.count(ledger, DEST, managed, revision)
        exact = sum(c for tags, c in ledger.tag_set_counts(DEST).items() if tags & set(managed))
    assert read == 0  # served from what the resyncs kept, not counted again
    assert kept == exact


def test_a_full_refresh_drops_the_lookup_indexes_and_the_next_resync_builds_them_again(tmp_path, mailchimp_fake,
                                                                                      monkeypatch):
    path = synced_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=60)
    cfg, settings = load_config(path), load_settings()

    def indexes() -> int:
        with open_store(store_path(cfg)) as con:
            return con.execute("SELECT count(*) FROM duckdb_indexes() WHERE index_name LIKE 'rfmsync_%'"
                               ).fetchall()[0][0]

    with open_ledger(cfg, settings) as ledger:
        ids = customers_by_tag(ledger)["Winback"]
        first = resync(cfg, ledger, settings, orders_for(ids[:1], "I1"), as_of=AS_OF)
        assert first.indexes_built == 6 and indexes() == 6
        run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")  # an unchanged export: nothing read
        assert indexes() == 6
        run_sync(cfg, ledger, settings, as_of=AS_OF, reading=Reading(reread=True))  # the file's full refresh
        assert indexes() == 0
        again = resync(cfg, ledger, settings, orders_for(ids[1:2], "I2"), as_of=AS_OF)
        assert again.indexes_built == 6 and indexes() == 6
        with open_store(store_path(cfg)) as con:  # the webhook orders survived the refresh, indexes or not
            assert con.execute("SELECT count(*) FROM orders WHERE order_id IN ('I1-0', 'I2-0')").fetchall() == [(2,)]


def test_the_ledger_reads_a_destination_by_key_and_customer_and_counts_its_tag_sets(ledger_url):
    from sync.ledger import Ledger
    from sync.model import PushedState

    with Ledger.connect(ledger_url) as ledger:
        run_id = ledger.start_run("sync", "d")
        ledger.save_states("d", run_id, [
            PushedState("a@x.com", "1", frozenset({"VIP"}), {"F": 1}, True),
            PushedState("b@x.com", "2", frozenset({"Winback"}), {}, True),
            PushedState("old@x.com", "2", frozenset({"Winback"}), {}, True),  # customer 2's former address
            PushedState("c@x.com", "3", frozenset(), {}, False),
            PushedState("d@x.com", None, frozenset({"VIP", "Other"}), {}, True)])
        ledger.save_states("e", run_id, [PushedState("a@x.com", "1", frozenset({"VIP"}), {}, True)])
        got = ledger.load_state_of("d", ["a@x.com", "nobody@x.com"], ["2"])
        assert set(got) == {"a@x.com", "b@x.com", "old@x.com"}
        assert got["a@x.com"] == ledger.load_state("d")["a@x.com"]
        assert ledger.load_state_of("d") == {}
        assert ledger.tag_set_counts("d") == {frozenset({"VIP"}): 1, frozenset({"Winback"}): 2,
                                              frozenset({"VIP", "Other"}): 1}


def test_a_resync_that_found_a_lost_tag_counts_the_managed_contacts_again(tmp_path, mailchimp_fake, monkeypatch):
    """A resync whose setup created a lost tag again had the ledger forget it for every holder, not only for
    its own contacts: the kept denominator is not moved by the plan's effect alone but counted again."""
    from sync.guards import waiting_only
    from sync.planning.plan import all_managed
    from sync.serve.resync import MANAGED_COUNTS

    path = synced_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=120)
    cfg, settings = load_config(path), load_settings()
    managed = set(all_managed(cfg.destination(DEST)))
    with open_ledger(cfg, settings) as ledger:
        groups = customers_by_tag(ledger)
        lost, holders = max(((t, ids) for t, ids in groups.items() if t in managed), key=lambda x: len(x[1]))
        others = next(ids for t, ids in groups.items() if t != lost and len(ids) >= 3)
        resync(cfg, ledger, settings, orders_for(others[:1], "W", amount="5000000"), as_of=AS_OF)  # counted
        lst = mailchimp_fake.lists["aud1"]  # the tag deleted in Mailchimp's web app
        lst.segments = {i: s for i, s in lst.segments.items() if s["name"] != lost}
        report = resync(cfg, ledger, settings, orders_for(others[1:3], "L", amount="5000000"), as_of=AS_OF)
        assert any(f"tag {lost!r} was missing" in line for line in report.reports[0].errors)
        kept, _ = MANAGED_COUNTS.count(ledger, DEST, all_managed(cfg.destination(DEST)), ledger.state_revision(DEST))
        exact = sum(c for tags, c in ledger.tag_set_counts(DEST).items() if tags & managed)
        # and the holders the ledger took the tag from, waiting to be given it back (their only managed tag)
        waiting = waiting_only(ledger.lost_tags(DEST), ledger.load_state(DEST), frozenset(managed))
    assert waiting and kept == exact + waiting


def test_a_resync_leaves_retired_tags_to_the_full_sync_whose_guard_sees_them_all(tmp_path, mailchimp_fake,
                                                                                 monkeypatch):
    """A retired tag (``retire_tags``) came off the few contacts of each webhook with no guard line, while the
    full sync taking it off everyone is refused (``max_removal_pct``): a mistaken entry dribbled out. The resync
    leaves it (on the contact and in the ledger) for the full sync."""
    path = synced_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=120)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('"Best active" = "VIP"\n', '').replace(
        'new_contacts = "transactional"', 'new_contacts = "transactional"\nretire_tags = ["VIP"]'), encoding="utf-8")
    cfg, settings = load_config(path), load_settings()
    assert cfg.destination(DEST).retire_tags == ["VIP"]
    with open_ledger(cfg, settings) as ledger:
        vip = {k: s.customer_id for k, s in ledger.load_state(DEST).items() if "VIP" in s.tags}
        assert len(vip) >= 3
        picked = dict(list(vip.items())[:3])
        report = resync(cfg, ledger, settings, orders_for(list(picked.values()), "R"), as_of=AS_OF)
        assert report.customers == 3
        state = ledger.load_state(DEST)
        assert all("VIP" in state[k].tags for k in picked)  # the ledger still says rfmsync put it there
        assert all("VIP" in mailchimp_fake.tags_of(k) for k in picked)  # and the ESP still holds it
        with pytest.raises(GuardRefusedError, match="max_removal_pct"):
            run_full_sync(cfg, ledger, settings, as_of=AS_OF, kind="sync")
    assert all("VIP" in mailchimp_fake.tags_of(k) for k in vip)
