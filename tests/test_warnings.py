"""Warnings that prevent a wrong sync: stale data, no consent column, unfitted predictions.

Each is one ``warning: ...`` line on stderr (printed literally) and an entry of ``warnings`` in every JSON
output; the command still exits 0.
"""

from __future__ import annotations

import csv
import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from sync.cli import main
from sync.config import DestinationConfig
from sync.model import DesiredContact, PushedState
from sync.planning.plan import plan_destination

NEWEST = date(2024, 1, 31)
STALE_AS_OF = "2025-06-30"  # 516 days after NEWEST
STALE_LINE = ("warning: stale data: the newest order is 516 days old (2024-01-31) but the segments are computed "
              "as of 2025-06-30")


def write_shop(folder: Path, *, customers: int = 60, consent: list[str] | None = None, newest: date = NEWEST,
               repeat: bool = True, destination: str = "", extra: str = "") -> Path:
    """A CSV shop: customer i buys on ``newest − 3i`` days (and, with ``repeat``, 40 and 80 days earlier);
    ``consent``, when given, adds a mapped consent column (cycled over the customers)."""
    folder.mkdir(parents=True, exist_ok=True)
    header = ["order_id", "ordered_at", "customer_id", "email", "amount"] + (["consent"] if consent else [])
    rows = []
    for i in range(customers):
        days = [3 * i] + ([3 * i + 40, 3 * i + 80] if repeat else [])
        for k, back in enumerate(days):
            row = [f"o{i}-{k}", (newest - timedelta(days=back)).isoformat(), f"c{i}", f"c{i}@example.org",
                   f"{10 + i % 7}.50"]
            rows.append(row + ([consent[i % len(consent)]] if consent else []))
    with (folder / "orders.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    mapping = "\n".join(f'{c} = "{c}"' for c in header if c != "consent")
    if consent:
        mapping += '\nmarketing_consent = "consent"'
    cfg = folder / "rfmsync.toml"
    cfg.write_text(f'[source]\ntype = "file"\norders = "orders.csv"\n{extra}\n[source.columns]\n{mapping}\n'
                   f"{destination}", encoding="utf-8")
    return cfg


def mailchimp(name: str = "mc [main]", new_contacts: str = "transactional") -> str:
    return (f'\n[[destinations]]\nname = "{name}"\ntype = "mailchimp"\naudience = "aud1"\n'
            f'new_contacts = "{new_contacts}"\n[destinations.segments]\n"Best active" = "VIP"\n"Churn" = "Winback"\n')


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def warning_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning: ")]


# --------------------------------------------------------------------------- stale data

def test_stale_data_warns_on_stderr_and_in_every_json_output(tmp_path):
    cfg = write_shop(tmp_path / "shop", destination=mailchimp())
    seg = cli("segments", "--config", str(cfg), "--as-of", STALE_AS_OF, "--format", "json")
    [line] = warning_lines(seg)
    assert line.startswith(STALE_LINE) and "run with --as-of 2024-01-31" in line and "stale_days = 30" in line
    assert json.loads(seg.stdout)["warnings"] == [line.removeprefix("warning: ")]

    as_csv = cli("segments", "--config", str(cfg), "--as-of", STALE_AS_OF, "--format", "csv")
    assert warning_lines(as_csv) == [line] and "warning" not in as_csv.stdout  # stderr only

    saved = tmp_path / "plan.json"
    plan = cli("plan", "--config", str(cfg), "--as-of", STALE_AS_OF, "--format", "json", "-o", str(saved))
    assert line in warning_lines(plan)
    assert json.loads(plan.stdout)["warnings"][0] == line.removeprefix("warning: ")
    assert json.loads(saved.read_text(encoding="utf-8"))["warnings"][0] == line.removeprefix("warning: ")

    predict = cli("predict", "--config", str(cfg), "--as-of", STALE_AS_OF, "--format", "json")
    assert line in warning_lines(predict) and line.removeprefix("warning: ") in json.loads(predict.stdout)["warnings"]


def test_fresh_data_and_stale_days_settings(tmp_path):
    cfg = write_shop(tmp_path / "shop")
    fresh = cli("segments", "--config", str(cfg), "--as-of", "2024-03-01", "--format", "json")  # 30 days: not stale
    assert warning_lines(fresh) == [] and json.loads(fresh.stdout)["warnings"] == []
    stale = cli("segments", "--config", str(cfg), "--as-of", "2024-03-02")  # 31 days, table format
    assert warning_lines(stale)[0].startswith("warning: stale data: the newest order is 31 days old (2024-01-31)")

    strict = write_shop(tmp_path / "strict", extra="")
    strict.write_text(strict.read_text(encoding="utf-8") + "\n[guards]\nstale_days = 10\n", encoding="utf-8")
    assert "stale_days = 10" in warning_lines(cli("segments", "--config", str(strict), "--as-of", "2024-02-11"))[0]
    off = write_shop(tmp_path / "off")
    off.write_text(off.read_text(encoding="utf-8") + "\n[guards]\nstale_days = 0\n", encoding="utf-8")
    assert warning_lines(cli("segments", "--config", str(off), "--as-of", STALE_AS_OF)) == []


# --------------------------------------------------------------------------- consent

def test_no_consent_column_warns_and_splits_new_contacts_by_status(tmp_path):
    cfg = write_shop(tmp_path / "shop", destination=mailchimp(new_contacts="subscribed"))
    result = cli("plan", "--config", str(cfg), "--as-of", "2024-02-01", "--format", "json")
    doc = json.loads(result.stdout)
    [plan] = doc["plans"]
    assert plan["new_by_status"] == {"subscribed": 0, "transactional": 60, "pending": 0, "skipped": 0}
    assert plan["totals"]["new_by_status"] == plan["new_by_status"] and plan["totals"]["new"] == 60
    [warning] = plan["warnings"]
    assert warning.startswith("no consent column: the source gives no marketing_consent for any contact, so the 60 "
                              "contacts this plan creates get status transactional (not subscribed: nobody is "
                              "subscribed without consent)")
    assert "map marketing_consent in [source.columns]" in warning
    assert doc["warnings"] == [f"mc [main]: {warning}"]
    assert warning_lines(result) == [f"warning: mc [main]: {warning}"]  # literally: brackets kept

    table = cli("plan", "--config", str(cfg), "--as-of", "2024-02-01")
    assert "new → transactional" in table.stdout and "new → subscribed" not in table.stdout
    assert warning_lines(table) == [f"warning: mc [main]: {warning}"]


def test_a_mapped_consent_column_gives_no_warning_and_the_split_follows_it(tmp_path):
    cfg = write_shop(tmp_path / "shop", consent=["yes", "no", ""], destination=mailchimp())
    result = cli("plan", "--config", str(cfg), "--as-of", "2024-02-01", "--format", "json")
    plan = json.loads(result.stdout)["plans"][0]
    assert plan["warnings"] == [] and warning_lines(result) == []
    assert plan["new_by_status"] == {"subscribed": 20, "transactional": 40, "pending": 0, "skipped": 0}
    table = cli("plan", "--config", str(cfg), "--as-of", "2024-02-01").stdout
    assert "new → subscribed" in table and "new → transactional" in table


def test_skip_creates_nobody_without_consent_so_no_warning(tmp_path):
    cfg = write_shop(tmp_path / "shop", destination=mailchimp(new_contacts="skip"))
    plan = json.loads(cli("plan", "--config", str(cfg), "--as-of", "2024-02-01", "--format", "json").stdout)["plans"][0]
    assert plan["warnings"] == []
    assert plan["new_by_status"] == {"subscribed": 0, "transactional": 0, "pending": 0, "skipped": 60}


def _desired(key: str, consent: str) -> DesiredContact:
    return DesiredContact(key=key, customer_id=key, email=key, consent=consent, segment="Churn",
                          tags=frozenset({"Winback"}), fields={})


@pytest.mark.parametrize("new_contacts,split", [
    ("transactional", {"subscribed": 1, "transactional": 2, "pending": 0, "skipped": 0}),
    ("pending", {"subscribed": 0, "transactional": 0, "pending": 3, "skipped": 0}),
    ("skip", {"subscribed": 1, "transactional": 0, "pending": 0, "skipped": 2}),
])
def test_new_by_status_counts_creates_only(new_contacts, split):
    dest = DestinationConfig(name="mc", type="mailchimp", audience="a", new_contacts=new_contacts,
                             segments={"Churn": "Winback"})
    desired = [_desired("a@x.org", "yes"), _desired("b@x.org", "no"), _desired("c@x.org", "unknown"),
               _desired("d@x.org", "no")]
    last = {"d@x.org": PushedState(key="d@x.org", customer_id="d", tags=frozenset(), fields={}, exists=True)}
    plan = plan_destination(dest, desired, last)
    assert plan.new_by_status() == split and plan.warnings == ()  # consent is known for some: no warning
    unknown = plan_destination(dest, [_desired("c@x.org", "unknown")], {})
    assert bool(unknown.warnings) == (new_contacts != "skip")


# --------------------------------------------------------------------------- predictions

def test_unfitted_predictions_say_why_and_what_to_change(tmp_path):
    cfg = write_shop(tmp_path / "shop", repeat=False)  # one-time buyers only
    result = cli("predict", "--config", str(cfg), "--as-of", "2024-02-01", "--format", "json")
    [line] = warning_lines(result)
    assert line.startswith("warning: predictions not computed (p_alive, expected_purchases, churn_probability, "
                           "churn_risk, expected_aov, clv and the model-based next_order_date stay empty): ")
    assert "no repeat buyers" in line and "export a longer history or lower [predict] min_repeat_customers" in line
    assert json.loads(result.stdout)["warnings"] == [line.removeprefix("warning: ")]

    out = tmp_path / "customers.csv"
    customers = cli("segments", "--config", str(cfg), "--as-of", "2024-02-01", "--customers", "-o", str(out))
    assert warning_lines(customers) == [line]


def test_short_history_names_the_setting(tmp_path):
    cfg = write_shop(tmp_path / "shop", customers=20)  # 80 + 57 days of history, 20 customers
    cfg.write_text(cfg.read_text(encoding="utf-8") + "\n[predict]\nmin_customers = 10\nmin_history_days = 200\n",
                   encoding="utf-8")
    [line] = warning_lines(cli("predict", "--config", str(cfg), "--as-of", "2024-02-01"))
    assert "too little history; export at least 200 days of orders or lower [predict] min_history_days" in line


# --------------------------------------------------------------------------- several currencies

def currency_shop(folder: Path, currencies: list[str]) -> Path:
    """60 customers with one order each, customer i paying in ``currencies[i % len]``: 1 000 000 in UZS, 100 in any
    other currency (about the same money); a customer in a later currency is a bigger spender."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [["order_id", "ordered_at", "customer_id", "email", "amount", "currency"]]
    for i in range(60):
        cur = currencies[i % len(currencies)]
        amount = 1_000_000 + i if cur == "UZS" else 100 + i
        rows.append([f"o{i}", (NEWEST - timedelta(days=i)).isoformat(), f"c{i}", f"c{i}@example.org", str(amount), cur])
    with (folder / "orders.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    mapping = "\n".join(f'{c} = "{c}"' for c in rows[0])
    cfg = folder / "rfmsync.toml"
    cfg.write_text(f'[source]\ntype = "file"\norders = "orders.csv"\n[source.columns]\n{mapping}\n{mailchimp()}',
                   encoding="utf-8")
    return cfg


def test_orders_in_several_currencies_warn_that_monetary_adds_them_up(tmp_path):
    cfg = currency_shop(tmp_path / "mixed", ["UZS", "USD"])
    seg = cli("segments", "--config", str(cfg), "--as-of", "2024-02-01", "--format", "json")
    [line] = warning_lines(seg)
    assert line.startswith("warning: orders in several currencies (orders of each: USD 30, UZS 30): monetary, "
                           "the M score and the revenue columns add the amounts as if they were one currency")
    assert json.loads(seg.stdout)["warnings"] == [line.removeprefix("warning: ")]
    plan = cli("plan", "--config", str(cfg), "--as-of", "2024-02-01", "--format", "json")
    assert line in warning_lines(plan) and line.removeprefix("warning: ") in json.loads(plan.stdout)["warnings"]
    # only the orders up to the as-of day count: on the day of the first order (c59's, in USD) there is one currency
    # (and one customer, who bought that very day yet scores R = 1: the recency warning, tests/test_recency_collapse.py)
    [only] = warning_lines(cli("segments", "--config", str(cfg), "--as-of", "2023-12-03"))
    assert only.startswith("warning: recency scores collapsed: 1 of 1 customer (100 %) shares")


@pytest.mark.parametrize("currencies", [["RUB", "руб", "₽"], ["RUB", "руб.", " rub "], ["USD", "usd", "$"]])
def test_one_currency_spelled_several_ways_is_one_currency(tmp_path, currencies):
    """A currency column's spellings of one currency (the export's symbol on some rows, the code on others) are
    one currency: no 'several currencies' warning (before, RUB and ₽ were two)."""
    cfg = currency_shop(tmp_path / "one", currencies)
    assert warning_lines(cli("segments", "--config", str(cfg), "--as-of", "2024-02-01")) == []


def test_several_currencies_are_named_by_their_codes(tmp_path):
    cfg = currency_shop(tmp_path / "mixed", ["RUB", "₽", "gbp"])
    [line] = warning_lines(cli("segments", "--config", str(cfg), "--as-of", "2024-02-01"))
    assert line.startswith("warning: orders in several currencies (orders of each: RUB 40, GBP 20): ")


def test_one_currency_gives_no_currency_warning(tmp_path):
    cfg = currency_shop(tmp_path / "one", ["UZS"])
    assert warning_lines(cli("segments", "--config", str(cfg), "--as-of", "2024-02-01")) == []


# --------------------------------------------------------------------------- refunds exceeding sales

def test_refunds_exceeding_a_customers_sales_warn_naming_the_customer(tmp_path):
    """A customer whose refunds exceed his sales (the refunded sale made before the export's first day, or a
    refund typed with a wrong amount) has a negative monetary and avg_check, which reached the ESP's fields without
    a word; the warning names how many and the lowest, and the figures stay what they are (net revenue)."""
    cfg = write_shop(tmp_path / "shop", destination=mailchimp() + '[destinations.fields]\nMON = "monetary"\n')
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace("[source.columns]\n", '[source.columns]\nstatus = "status"\n'), encoding="utf-8")
    orders = tmp_path / "shop" / "orders.csv"
    rows = list(csv.reader(orders.open(encoding="utf-8")))
    rows[0].append("status")
    rows = [rows[0]] + [r + ["completed"] for r in rows[1:]]
    rows += [["r1", "2024-01-20", "c3", "c3@example.org", "900.00", "refunded"],
             ["r2", "2024-01-21", "c5", "c5@example.org", "1000.00", "refunded"],
             ["r3", "2024-01-22", "c7", "c7@example.org", "10.00", "refunded"]]  # under c7's sales: no warning
    with orders.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    seg = cli("segments", "--config", str(cfg), "--as-of", "2024-02-01", "--format", "json")
    [line] = warning_lines(seg)
    assert line == ("warning: refunds exceed sales: 2 customers' refunds up to 2024-02-01 exceed their sales (the "
                    "lowest: customer 'c5', net revenue -953.50): their monetary and avg_check are below zero, in "
                    "the segments and in any destination field mapped to them, and they get the lowest M scores; "
                    "refunds of sales made before the export's first day (export those sales too) or a refund's "
                    "amount mistyped?")
    assert json.loads(seg.stdout)["warnings"] == [line.removeprefix("warning: ")]
    plan = cli("plan", "--config", str(cfg), "--as-of", "2024-02-01", "--format", "json")
    assert line.removeprefix("warning: ") in json.loads(plan.stdout)["warnings"]
    fields = {c["customer_id"]: c["set_fields"]["MON"] for p in json.loads(plan.stdout)["plans"] for c in p["changes"]}
    assert fields["c5"] == -953.5 and fields["c3"] == -859.5 and fields["c7"] == 21.5
    # before the refunds' day nothing is below zero
    assert warning_lines(cli("segments", "--config", str(cfg), "--as-of", "2024-01-19")) == []
    # one customer: "1 customer's refunds", not "1 customers' refunds" (hunter 28a)
    rows = [r for r in rows if r[0] != "r2"]
    with orders.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    [line] = warning_lines(cli("segments", "--config", str(cfg), "--as-of", "2024-02-01"))
    assert line.startswith("warning: refunds exceed sales: 1 customer's refunds up to 2024-02-01 exceed their sales "
                           "(the lowest: customer 'c3', net revenue -859.50)")
