"""Kept out in the webhook resync (fixu27 #5, #6): the resync leaves out the operations kept out (the review's test,
adopted), reading the ``kept_out`` rows of its plan's contacts by key (it read the whole table on every webhook:
100 k rows, 2-3 s), and counts them in ``ledger_rows_read``."""

from __future__ import annotations

from sync.config import load_config
from sync.ledger import Ledger, open_ledger
from sync.ledger.kept_out import BY_KEY_LIMIT
from sync.model import ItemResult
from sync.planning.plan import all_managed
from sync.serve.resync import resync
from sync.settings import load_settings

from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_serve_resync import AS_OF, DEST, customers_by_tag, orders_for, synced_shop


def _kept(key, op="tag+list:A", why="compliance"):
    return ItemResult(key, op, False, why, refused=True, kept_out=True)


def test_resync_leaves_kept_out_adds(tmp_path, mailchimp_fake, monkeypatch):
    path = synced_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=250)
    cfg, settings = load_config(path), load_settings()
    managed = all_managed(cfg.destination(DEST))
    with open_ledger(cfg, settings) as ledger:
        groups = customers_by_tag(ledger)
        picked = [cid for ids in groups.values() for cid in ids[:4]]
        state = {s.customer_id: s for s in ledger.load_state(DEST).values()}
        kept = picked[::2]
        ledger.record_kept_out(DEST, None, [_kept(state[c].key, f"tag+{t}") for c in kept for t in managed])
        ledger.record_kept_out(DEST, None, [_kept(f"other{i}@x.com") for i in range(300)])  # not this resync's
        before = {c: set(state[c].tags) for c in picked}
        report = resync(cfg, ledger, settings, orders_for(picked, "Q"), as_of=AS_OF)
        after = {s.customer_id: set(s.tags) for s in ledger.load_state(DEST).values()}
        assert len(ledger.kept_out_list(DEST)) == 300 + len(kept) * len(managed)  # none done, none dropped
    gained_kept = {c: after[c] - before[c] for c in kept if after[c] - before[c]}
    gained_free = {c: after[c] - before[c] for c in picked if c not in kept and after[c] - before[c]}
    assert gained_free  # the orders do move customers into new tags
    assert not gained_kept
    for c in kept:
        assert set(mailchimp_fake.tags_of(state[c].key)) & set(managed) <= before[c]
    assert report.reports[0].status == "succeeded"


def test_kept_out_ops_reads_the_keys_asked(ledger_url):  # noqa: F811
    with Ledger.connect(ledger_url) as ledger:
        ledger.record_kept_out("d", None, [_kept(f"k{i}@x.com") for i in range(20)] + [_kept("k1@x.com", "upsert")])
        ledger.record_kept_out("e", None, [_kept("k1@x.com")])
        assert ledger.kept_out_ops("d", ["k1@x.com", "k2@x.com", "nobody@x.com"]) == {
            "k1@x.com": frozenset({"tag+list:A", "upsert"}), "k2@x.com": frozenset({"tag+list:A"})}
        assert ledger.kept_out_ops("d", []) == {} and len(ledger.kept_out_ops("d")) == 20
        many = ["k3@x.com", *(f"z{i}@x.com" for i in range(BY_KEY_LIMIT + 1))]  # one read, filtered
        assert ledger.kept_out_ops("d", many) == {"k3@x.com": frozenset({"tag+list:A"})}
        assert ledger.has_kept_out("d") and not ledger.has_kept_out("f")
        assert ledger.forget_kept_out("d", [("k1@x.com", "upsert"), ("k1@x.com", "upsert"), ("k2@x.com", "x")]) == 1
        assert ledger.kept_out_ops("e") == {"k1@x.com": frozenset({"tag+list:A"})}
