"""max_change_pct and the fields that drift by themselves (recency_days, the models' numbers; docs/safety.md):
their new values are not counted, but emptying one is: a drift never empties a field, a model that was not fitted
(one order in a second currency, thin data, a fit error) empties it for every customer."""
from __future__ import annotations

from datetime import timedelta

import pytest

from sync.guards import PlanStats, plan_stats
from sync.model import ContactChange, PushedState
from sync.planning.plan import Plan
from tests.test_guards import assert_refused, audience, run_cli
from tests.test_worker import AS_OF, make_shop

FIELDS = {"SEG": "segment", "DAYS": "recency_days", "ALIVE": "p_alive", "CLV": "clv", "AOV": "expected_aov"}


def _plan(*changes: ContactChange) -> Plan:
    return Plan(destination="mc", type="mailchimp", changes=tuple(changes), skipped=(), managed_tags=("VIP",),
                fields=FIELDS, ledger_revision=1)


def _change(key: str, **fields) -> ContactChange:
    return ContactChange(key, key, key, "VIP", False, None, set_fields=fields)


@pytest.mark.parametrize("recorded, new, counted", [
    ({"CLV": "120.00"}, {"CLV": None}, True),  # the spend model was not fitted: emptied
    ({"CLV": "120.00"}, {"CLV": ""}, True),
    ({"ALIVE": 0.91}, {"ALIVE": None}, True),
    ({"DAYS": 10}, {"DAYS": None}, True),
    ({"CLV": "120.00", "DAYS": 10}, {"CLV": "119.50", "DAYS": 11}, False),  # a day later: drift
    ({"CLV": None}, {"CLV": "119.50"}, False),  # filled in (the model fitted again)
    ({"CLV": ""}, {"CLV": "119.50"}, False),
    ({"CLV": None}, {"CLV": None}, False),  # empty and still empty
    ({}, {"CLV": None}, False),  # the ledger records no value (a new mapping)
])
def test_emptying_a_drifting_field_is_a_change(recorded, new, counted):
    state = {"a": PushedState("a", "a", frozenset({"VIP"}), {"SEG": "Best", **recorded}),
             "b": PushedState("b", "b", frozenset({"VIP"}), {"SEG": "Best"})}
    assert plan_stats(_plan(_change("a", **new)), state) == PlanStats(managed=2, removed=0, changed=int(counted))


def test_a_failed_spend_fit_blanking_clv_for_everyone_is_refused(tmp_path, mailchimp_fake, monkeypatch):
    """The bad day: one order exported in another currency; the spend model is not fitted, clv and expected_aov
    are empty for every customer. The sync is refused (exit 6) and every contact keeps his values."""
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch)
    text = path.read_text(encoding="utf-8").replace('currency = "UZS"\n', '')
    text = text.replace('status = "Статус"', 'status = "Статус"\ncurrency = "Валюта"')
    path.write_text(text.replace('RFM_CODE = "rfm"', 'RFM_CODE = "rfm"\nCLV = "clv"\nAOV = "expected_aov"'),
                    encoding="utf-8")
    orders = path.parent / "orders.csv"
    lines = orders.read_text(encoding="utf-8-sig").splitlines()
    lines = [lines[0] + ";Валюта"] + [line + ";UZS" for line in lines[1:]]
    orders.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_cli("sync", "--config", str(path), "--as-of", AS_OF.isoformat())
    members = mailchimp_fake.lists["aud1"].members.values()
    assert members and all(m["merge_fields"]["CLV"] not in (None, "") for m in members)
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls

    orders.write_text("\n".join(lines[:-1] + [lines[-1][:-len("UZS")] + "USD"]) + "\n", encoding="utf-8")
    result = run_cli("sync", "--config", str(path), "--as-of", (AS_OF + timedelta(days=1)).isoformat(), code=6)
    assert "spend predictions not computed" in result.output
    assert_refused(path, mailchimp_fake, before, writes, result, "guard max_change_pct:")
