"""A full refresh of a Unisender destination (fixu27 #3): a list the ledger already holds a contact on is not re-sent
(no fresh reason to set it) and so not read: a known contact put on a list is read first (``getContact``, one call
each, paced at 1200 calls/min: a million contacts were ~14 h of reads). A list new to him is sent, and read first."""

from __future__ import annotations

import random

from connectors.retry import RetryPolicy
from sync.config import Config
from sync.destinations.unisender import UnisenderDestination
from sync.engine import execute_plan
from sync.ledger import Ledger
from sync.model import DesiredContact, PushedState
from sync.planning.plan import plan_destination
from sync.planning.planner import plan_one

from tests.ledger_fixtures import ledger_url  # noqa: F401

RETRY = RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(0))
N = 20


def _config(type_="unisender"):
    extra = {"audience": "aud1"} if type_ == "mailchimp" else {}
    return Config(destinations=[{"name": "d", "type": type_, "new_contacts": "subscribed", **extra,
                                 "segments": {"Churn": "Champions", "Other": "Loyal"},
                                 "fields": {"rfm_segment": "segment"}}])


def test_a_full_refresh_reads_and_resends_no_list_the_ledger_holds(unisender_fake, ledger_url):  # noqa: F811
    cfg = _config()
    client = UnisenderDestination("d", unisender_fake.api_key, api_url=unisender_fake.api_url, timeout=5, retry=RETRY)
    client.prepare(["list:Champions", "list:Loyal"], {"rfm_segment": "segment"})
    rows, states = [], []
    for i in range(N):
        unisender_fake.add_contact(f"k{i}@x.com", status="active", lists=["Champions"], rfm_segment="Churn")
        segment = "Churn" if i else "Other"  # k0 moves to Loyal: a list new to him, read first
        rows.append({"customer_id": f"c{i}", "email": f"k{i}@x.com", "segment": segment, "marketing_consent": "yes"})
        states.append(PushedState(f"k{i}@x.com", f"c{i}", frozenset({"list:Champions"}), {"rfm_segment": "Churn"}))
    with Ledger.connect(ledger_url) as ledger:
        ledger.save_states("d", None, states)
        plan = plan_one(cfg, cfg.destinations[0], rows, ledger, None, None, full_refresh=True, reconcile=False).plan
        assert len(plan.changes) == N  # every contact's fields again
        assert {c.key: sorted(c.add_tags) for c in plan.changes if c.add_tags} == {"k0@x.com": ["list:Loyal"]}
        report = execute_plan(plan, client, ledger)
        assert report.status == "succeeded"
        assert all(s.tags == {"list:Champions"} for k, s in ledger.load_state("d").items() if k != "k0@x.com")
    assert unisender_fake.calls["getContact"] == 1  # k0's new list only (was one a contact: N)
    assert "k0@x.com" in unisender_fake.members("Loyal") and len(unisender_fake.members("Champions")) == N - 1


def _one(dest, tag):
    desired = [DesiredContact(key="k@x.com", customer_id="c1", email="k@x.com", consent="yes", segment="Churn",
                              tags=frozenset({tag}), fields={"rfm_segment": "Churn"})]
    last = {"k@x.com": PushedState("k@x.com", "c1", frozenset({tag}), {"rfm_segment": "Churn"})}
    return [c.add_tags for c in plan_destination(dest, desired, last, full_refresh=True).changes]


def test_the_python_plan_agrees_and_other_esps_still_resend_every_tag():
    assert _one(_config().destinations[0], "list:Champions") == [frozenset()]
    mc = _config("mailchimp").destinations[0]
    tag = mc.spec.segment_name(mc, "Champions")
    assert _one(mc, tag) == [frozenset({tag})]
