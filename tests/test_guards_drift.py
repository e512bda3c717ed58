"""max_change_pct and the fields that drift by themselves (recency_days, the models' numbers; docs/safety.md):
their new values are not counted, but emptying one is (a drift never empties a field, a model that was not fitted
-- one order in a second currency, thin data, a fit error -- empties it for every customer), and so is a jump no
drift makes (amounts exported in minor units: clv x100 for everyone; recency_days going down)."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, InvalidOperation

import pytest

from sync.guards import PlanStats, plan_stats
from sync.model import ContactChange, PushedState
from sync.planning.plan import Plan
from tests.test_guards import assert_refused, audience, run_cli
from tests.test_worker import AS_OF, make_shop

FIELDS = {"SEG": "segment", "DAYS": "recency_days", "ALIVE": "p_alive", "CLV": "clv", "AOV": "expected_aov",
          "CHURN": "churn_probability", "EXP": "expected_purchases", "RFM": "rfm"}


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
    # jumps no drift makes
    ({"CLV": "120.00", "AOV": "40.00"}, {"CLV": "12000.00", "AOV": "4000.00"}, True),  # amounts in minor units
    ({"CLV": "12000.00"}, {"CLV": "120.00"}, True),  # and back
    ({"AOV": 40.0}, {"AOV": 130.0}, True),  # over 3x
    ({"EXP": "1.50"}, {"EXP": "0.40"}, True),  # under 1/3
    ({"CLV": "120.00"}, {"CLV": "0.00"}, True),  # to zero
    ({"DAYS": 200}, {"DAYS": 0}, True),  # recency_days down: only a new order does that
    ({"DAYS": 10}, {"DAYS": 9}, True),
    ({"ALIVE": 0.31}, {"ALIVE": 1.0}, True),  # a probability by more than 0.5
    ({"CHURN": 0.1}, {"CHURN": 0.65}, True),
    ({"CLV": "120.00"}, {"CLV": "n/a"}, True),  # not a number any more
    # drifts
    ({"CLV": "120.00"}, {"CLV": "360.00"}, False),  # 3x at most: a refit after a big order
    ({"CLV": "120.00"}, {"CLV": "40.00"}, False),
    ({"CLV": "0.00"}, {"CLV": "35.00"}, False),  # from zero: filled in, as from empty
    ({"CLV": "0.00"}, {"CLV": "0.00"}, False),
    ({"CLV": "1 200,00"}, {"CLV": "1 150,00"}, False),
    ({"DAYS": 10}, {"DAYS": 17}, False),  # a week later
    ({"DAYS": 10}, {"DAYS": 400}, False),
    ({"ALIVE": 0.9}, {"ALIVE": 0.4}, False),  # by 0.5 at most
    ({"CHURN": 0.2}, {"CHURN": 0.7}, False),
    ({"RFM": "555"}, {"RFM": "554"}, True),  # not a drifting value: any new value counts
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


def _minor_units(cell: str) -> str:
    """``109 000,00`` → ``10900000,00``: the export's amounts in minor units (tiyin, cents); the demo's broken
    cells stay as they are."""
    try:
        return f"{Decimal(''.join(cell.split()).replace(',', '.')) * 100:.2f}".replace(".", ",")
    except InvalidOperation:
        return cell


def test_an_export_switching_to_minor_units_is_refused(tmp_path, mailchimp_fake, monkeypatch):
    """Every amount x100: the quantile scores and so the segments do not move, but clv would be sent x100 to every
    contact. Refused (exit 6); every contact keeps his clv."""
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch)
    path.write_text(path.read_text(encoding="utf-8").replace('RFM_CODE = "rfm"', 'RFM_CODE = "rfm"\nCLV = "clv"'),
                    encoding="utf-8")
    run_cli("sync", "--config", str(path), "--as-of", AS_OF.isoformat())
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    orders = path.parent / "orders.csv"
    lines = orders.read_text(encoding="utf-8-sig").splitlines()
    head = lines[0].split(";")
    money = [head.index("Сумма"), head.index("Скидка")]
    rows = [line.split(";") for line in lines[1:]]
    for cells in rows:
        for i in money:
            cells[i] = _minor_units(cells[i])
    orders.write_text("\n".join([lines[0], *(";".join(cells) for cells in rows)]) + "\n", encoding="utf-8")

    result = run_cli("sync", "--config", str(path), "--as-of", (AS_OF + timedelta(days=1)).isoformat(), code=6)
    assert_refused(path, mailchimp_fake, before, writes, result, "guard max_change_pct:")


def test_a_normal_next_day_is_not_refused(tmp_path, mailchimp_fake, monkeypatch):
    """The day after, with every drifting value mapped: each moves for nearly everyone, the sync goes through."""
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch)
    mapped = "".join(f'\n{esp} = "{value}"' for esp, value in FIELDS.items() if esp not in ("SEG", "RFM"))
    path.write_text(path.read_text(encoding="utf-8").replace('RFM_CODE = "rfm"', 'RFM_CODE = "rfm"' + mapped),
                    encoding="utf-8")
    run_cli("sync", "--config", str(path), "--as-of", AS_OF.isoformat())
    days = {e: m["merge_fields"]["DAYS"] for e, m in mailchimp_fake.lists["aud1"].members.items()}
    run_cli("sync", "--config", str(path), "--as-of", (AS_OF + timedelta(days=1)).isoformat())
    after = {e: m["merge_fields"]["DAYS"] for e, m in mailchimp_fake.lists["aud1"].members.items()}
    assert days and all(int(after[e]) == int(d) + 1 for e, d in days.items() if d not in (None, ""))
