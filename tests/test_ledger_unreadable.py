"""A pushed-state row whose fields (or tags) text is not JSON (edited by hand, a damaged file, a bad restore): the
apply stopped on a bare ``JSONDecodeError`` (``Expecting property name …``) naming neither the destination nor the
contact (uni27 #4). It is a ledger error now (exit 74) naming both and what to do; the run is recorded failed."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import update

from connectors.retry import RetryPolicy
from sync.destinations.unisender import UnisenderDestination
from sync.engine import execute_plan
from sync.errors import LedgerError
from sync.ledger import Ledger
from sync.ledger.schema import pushed_state
from sync.model import ContactChange, PushedState
from sync.planning.plan import Plan


@pytest.mark.parametrize("column", ["fields", "tags"])
def test_an_unreadable_pushed_state_row_names_the_destination_and_the_contact(unisender_fake, tmp_path, column):
    unisender_fake.add_list("Champions")
    unisender_fake.fields["R"] = "string"
    unisender_fake.add_contact("k@x.com", status="active")
    ledger = Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        ledger.save_states("uni", None, [PushedState("k@x.com", "k", frozenset(), {"R": "1"})])
        with ledger._write() as conn:
            conn.execute(update(pushed_state).where(pushed_state.c.key == "k@x.com").values({column: "{bad"}))
        client = UnisenderDestination("uni", unisender_fake.api_key, api_url=unisender_fake.api_url, timeout=5,
                                      retry=RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(0)))
        change = ContactChange("k@x.com", "k@x.com", "k", "s", False, "subscribed", set_fields={"R": "2"})
        with pytest.raises(LedgerError) as caught:
            execute_plan(Plan("uni", "unisender", (change,), (), (), {"R": "recency_days"}, 0), client, ledger)
        message = str(caught.value)
        assert "destination 'uni'" in message and "'k@x.com'" in message and "not JSON" in message
        assert "restore the ledger from a backup" in message and caught.value.exit_code == 74
        with pytest.raises(LedgerError, match="destination 'uni'.*'k@x.com'"):
            ledger.load_state_of("uni", ["k@x.com"])
        assert ledger.recent_runs(1)[0]["status"] == "failed"
    finally:
        ledger.close()


def test_a_plan_over_an_unreadable_tags_text_names_the_destination_and_the_contact(tmp_path):
    """fixu27 #7: the plan reads the pushed state in DuckDB: a tags text that is not JSON stopped it on a bare DuckDB
    ``InvalidInputException`` (``Malformed JSON at byte 1``) naming neither; now the state reads' LedgerError."""
    from sync.config import Config
    from sync.planning.planner import plan_one

    cfg = Config(destinations=[{"name": "uni", "type": "unisender", "new_contacts": "subscribed",
                                "segments": {"Churn": "Champions"}, "fields": {"rfm_segment": "segment"}}])
    with Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        ledger.save_states("uni", None, [PushedState("k@x.com", "c1", frozenset(), {"rfm_segment": "Other"}),
                                         PushedState("a@x.com", "c2", frozenset(), {"rfm_segment": "Other"})])
        with ledger._write() as conn:
            conn.execute(update(pushed_state).where(pushed_state.c.key == "k@x.com").values({"tags": "{bad"}))
        row = {"customer_id": "c1", "email": "k@x.com", "segment": "Churn", "marketing_consent": "yes"}
        with pytest.raises(LedgerError) as caught:
            plan_one(cfg, cfg.destinations[0], [row], ledger, None, None, full_refresh=False, reconcile=False)
    message = str(caught.value)
    assert "destination 'uni'" in message and "'k@x.com'" in message and "not JSON" in message
    assert caught.value.exit_code == 74
