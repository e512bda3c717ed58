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
