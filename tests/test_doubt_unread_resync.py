"""A webhook resync that waited for another host's run reads that run's in-flight ops once its lock lapses
(docs/sync.md: "a webhook resync of serve does the same"; written by the review of doubt32, fails without it)."""
from sync.config import load_config
from sync.ledger import open_ledger
from sync.ledger.locks import apply_lock
from sync.serve.resync import resync
from sync.settings import load_settings
from tests.test_serve_resync import AS_OF, DEST, orders_for
from tests.test_worker import churned_contact, shop  # noqa: F401

DOUBTED = "Winback soft"
ELSEWHERE = "web2/4026531836/aaaaaaaaaaaa.bbbbbbbbbbbb:4242:cafe0000"


def test_resync_rereads_a_run_that_died_while_it_waited(shop, mailchimp_fake):  # noqa: F811
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        email, cid = churned_contact(ledger)
        seg = next(s for s in mailchimp_fake.lists["aud1"].segments.values() if s["name"] == DOUBTED)
        seg["members"].add(email)  # the other run's add landed
        other = ledger.start_run("sync", DEST)
        ledger.note_in_flight(DEST, other, {f"tag+{DOUBTED}": [email]})
        ledger.acquire_lock(apply_lock(DEST), owner=ELSEWHERE, ttl_seconds=600)
        assert ledger.doubted_ops(DEST) == []
        slept = []

        def sleep(_s):
            if not slept:
                assert ledger.release_lock(apply_lock(DEST), ELSEWHERE)  # its lock lapses: it died
            slept.append(1)
        resync(cfg, ledger, settings, orders_for([cid], "W"), as_of=AS_OF, sleep=sleep)
        assert slept
        assert DOUBTED not in mailchimp_fake.tags_of(email)
        assert ledger.in_flight_count(DEST) == 0
