"""How often a webhook resync opens the order store: once for its merge and read, then per destination once for
who else the store gives an address and once under its lock for the store's generation (another card's *no* on it, an old address the ledger still tags), both reads
through one connection (before: one each, a second open of the store per destination per resync)."""

from __future__ import annotations

from connectors.records import Consent, Contact
from sync.config import load_config
from sync.ledger import open_ledger
from sync.serve.resync import resync
from sync.settings import load_settings
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_replan_after_later_run import _churned, _state, shop  # noqa: F401
from tests.test_worker import AS_OF


def test_a_changed_e_mail_s_reads_of_who_gives_an_address_share_one_store_connection(shop, mailchimp_fake):
    """The contact's new address asks whose *no* it carries, its old one (still tagged) who else gives it: two
    reads, one connection."""
    x = _churned(shop)
    new = f"new-{x.key}"
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        report = resync(cfg, ledger, settings, contacts=[Contact(x.customer_id, email=new,
                                                                 marketing_consent=Consent.YES)], as_of=AS_OF)
    assert report.customers == 1 and report.reports[0].counts["ok"] >= 1
    # the merge and read; the destination's reads of who gives an address; its store generation under the lock
    assert report.store_opens == 3, report.store_opens
    assert _state(shop, new).tags == {"Winback"}
    assert set(mailchimp_fake.tags_of(new, "aud1")) == {"Winback"}
