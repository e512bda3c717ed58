"""One customer per person: customer ids, e-mails and phones resolved into one key per person."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.files import FileSource, FileSourceConfig
from connectors.records import Contact, Order
from connectors.tables import create_tables, stage_records
from connectors.source import PullResult
from sync.cli import main
from sync.store import merge_staged

from tests.profiles import examples

COLS = {"order_id": "id", "ordered_at": "date", "amount": "sum", "email": "email", "phone": "phone"}
HEADER = ["id", "date", "sum", "email", "phone"]
UTC = timezone.utc


def write(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    path.write_text("\n".join(";".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


def pull(tmp_path: Path, **cfg):
    cfg.setdefault("columns", COLS)
    cfg.setdefault("orders", "sales.csv")
    cfg.setdefault("phone_region", "UZ")
    con = duckdb.connect()
    result = FileSource(FileSourceConfig(type="file", **cfg), tmp_path).pull(con)
    return result, con


def keys(con) -> dict[str, str]:
    """order id → customer key."""
    return dict(con.execute("SELECT order_id, customer_id FROM staged_orders").fetchall())


def people(con) -> dict[str, tuple]:
    return {r[0]: r[1:3] for r in con.execute("SELECT customer_id, email, phone FROM staged_contacts").fetchall()}


AZIZ = [["1", "02.01.2024", "100", "", "90 111 22 33"],
        ["2", "10.02.2024", "100", "aziz@mail.ru", ""],
        ["3", "05.03.2024", "100", "Aziz@Mail.ru", "+998 90 111-22-33"],
        ["4", "06.03.2024", "100", "", "+998901112233"],
        ["5", "07.03.2024", "100", "bob@mail.ru", ""]]


def test_aziz_phone_rows_and_email_rows_are_one_customer_with_both_identifiers(tmp_path):
    write(tmp_path / "sales.csv", AZIZ)
    result, con = pull(tmp_path)
    assert keys(con) == {"1": "+998901112233", "2": "+998901112233", "3": "+998901112233", "4": "+998901112233",
                         "5": "bob@mail.ru"}
    assert people(con) == {"+998901112233": ("aziz@mail.ru", "+998901112233"), "bob@mail.ru": ("bob@mail.ru", None)}
    # the old rule gave row 2 the key aziz@mail.ru, row 3 too: two rows linked, two customers became one
    assert (result.identity.linked_rows, result.identity.merged_customers) == (2, 1)
    assert result.identity.ignored_identifiers == [] and result.bad_row_count == 0


def test_transitive_links_through_rows_and_the_earliest_order_names_the_customer(tmp_path):
    write(tmp_path / "sales.csv", [["1", "05.01.2024", "1", "a@x.com", "+998900000001"],
                                   ["2", "01.01.2024", "1", "b@x.com", "+998900000001"],  # earliest
                                   ["3", "07.01.2024", "1", "b@x.com", "+998900000002"],
                                   ["4", "09.01.2024", "1", "c@x.com", "+998900000002"],
                                   ["5", "09.01.2024", "1", "z@x.com", "+998900000009"]])
    result, con = pull(tmp_path)
    got = keys(con)
    assert {got[i] for i in "1234"} == {"b@x.com"}  # e-mail before phone on the earliest order
    assert got["5"] == "z@x.com"
    assert people(con)["b@x.com"] == ("c@x.com", "+998900000002")  # latest non-empty values
    assert result.identity.merged_customers == 2  # a@, b@ and c@ were three customers by the old rule


def test_rows_without_customer_id_join_the_customer_with_that_email_or_phone(tmp_path):
    cols = {**COLS, "customer_id": "client"}
    write(tmp_path / "sales.csv", [["1", "01.01.2024", "10", "anna@x.com", "", "c1"],
                                   ["2", "02.01.2024", "10", "ANNA@x.com ", "", ""],       # joins c1 by e-mail
                                   ["3", "03.01.2024", "10", "", "+998900000003", "c2"],
                                   ["4", "04.01.2024", "10", "", "90 000 00 03", ""],       # joins c2 by phone
                                   ["5", "05.01.2024", "10", "new@x.com", "90 000 00 03", ""],
                                   ["6", "06.01.2024", "10", "solo@x.com", "", ""],
                                   ["7", "07.01.2024", "10", "shared@x.com", "", "c3"],
                                   ["8", "08.01.2024", "10", "shared@x.com", "", "c4"],
                                   ["9", "09.01.2024", "10", "shared@x.com", "", ""]],      # two owners: smallest id
          HEADER + ["client"])
    result, con = pull(tmp_path, columns=cols)
    assert keys(con) == {"1": "c1", "2": "c1", "3": "c2", "4": "c2", "5": "c2", "6": "solo@x.com", "7": "c3",
                         "8": "c4", "9": "c3"}
    assert people(con)["c2"] == ("new@x.com", "+998900000003")
    assert result.identity.linked_rows == 4  # rows 2, 4, 5, 9


def test_a_shop_phone_on_fifty_receipts_links_nobody_and_is_reported(tmp_path):
    shop = "+998712000000"
    rows = [[str(i), f"{1 + i % 28:02d}.01.2024", "5", f"buyer{i}@x.com", shop] for i in range(50)]
    rows += [["100", "01.02.2024", "5", "", shop],  # only the shop's phone: a bad row that names it
             ["101", "02.02.2024", "5", "", "+998900000077"], ["102", "03.02.2024", "5", "pal@x.com", "+998900000077"]]
    write(tmp_path / "sales.csv", rows)
    result, con = pull(tmp_path)
    got = keys(con)
    assert len({got[str(i)] for i in range(50)}) == 50  # fifty buyers, not one
    assert got["101"] == got["102"] == "+998900000077"  # a phone shared by two people still links
    assert "100" not in got
    assert [(b.row, b.field, b.value) for b in result.bad_rows] == [(52, "customer_id", shop)]
    assert "max_identity_group" in result.bad_rows[0].reason
    assert [(s.value, s.customers) for s in result.identity.ignored_identifiers] == [(shop, 50)]
    assert all(phone != shop for _, phone in people(con).values())  # never a contact's phone
    _, con = pull(tmp_path, max_identity_group=60)  # raised above the group: the phone links everyone
    assert len(set(keys(con).values())) == 2


def test_a_shared_email_with_customer_ids_is_ignored_above_the_threshold(tmp_path):
    cols = {**COLS, "customer_id": "client"}
    rows = [[str(i), "01.01.2024", "1", "office@shop.uz", "", f"c{i}"] for i in range(7)]
    rows.append(["9", "02.01.2024", "1", "office@shop.uz", "+998900000055", ""])
    write(tmp_path / "sales.csv", rows, HEADER + ["client"])
    result, con = pull(tmp_path, columns=cols)
    assert keys(con)["9"] == "+998900000055"
    assert [(s.value, s.customers) for s in result.identity.ignored_identifiers] == [("office@shop.uz", 8)]


def test_contacts_file_rows_take_part_in_linking(tmp_path):
    write(tmp_path / "sales.csv", [["1", "01.01.2024", "1", "", "+998900000011"],
                                   ["2", "02.01.2024", "1", "kamila@x.com", ""]])
    write(tmp_path / "people.csv", [["Kamila", "kamila@x.com", "90 000 00 11"]], ["name", "email", "phone"])
    result, con = pull(tmp_path, contacts="people.csv",
                       contact_columns={"first_name": "name", "email": "email", "phone": "phone"})
    assert set(keys(con).values()) == {"+998900000011"}
    assert con.execute("SELECT customer_id, email, phone, first_name FROM staged_contacts").fetchall() == [
        ("+998900000011", "kamila@x.com", "+998900000011", "Kamila")]


def test_every_row_with_a_customer_id_takes_the_fast_path(tmp_path):
    cols = {**COLS, "customer_id": "client"}
    write(tmp_path / "sales.csv", [["1", "01.01.2024", "1", "same@x.com", "", "c1"],
                                   ["2", "01.01.2024", "1", "same@x.com", "", "c2"]], HEADER + ["client"])
    result, con = pull(tmp_path, columns=cols)
    assert keys(con) == {"1": "c1", "2": "c2"}  # different ids are never merged
    assert result.identity.to_json() == {"linked_rows": 0, "merged_customers": 0, "ignored_identifiers": []}
    assert con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = '_fs_okeyed'"
                       ).fetchall() == []  # scratch dropped, and no identity tables were made
    assert not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE '_fs_id%'"
                           ).fetchall()[0][0]


# --------------------------------------------------------------------------- stable keys (property)

_PEOPLE = [("a@x.com", "+998900000001"), ("b@x.com", "+998900000002"), ("c@x.com", None), (None, "+998900000004")]


@st.composite
def _receipts(draw):
    """Rows of a few people, each row with the e-mail, the phone or both; dates distinct per row."""
    n = draw(st.integers(2, 14))
    rows = []
    for i in range(n):
        email, phone = draw(st.sampled_from(_PEOPLE))
        which = draw(st.sampled_from(["e", "p", "ep"]))
        e = email if "e" in which or phone is None else ""
        p = phone if "p" in which or email is None else ""
        rows.append([f"r{i}", (datetime(2024, 1, 1) + timedelta(days=draw(st.integers(0, 60)), minutes=i))
                     .strftime("%Y-%m-%d %H:%M"), "1", e or "", p or ""])
    return rows


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_receipts(), seed=st.integers(0, 10_000), files=st.integers(1, 3))
def test_keys_do_not_depend_on_row_or_file_order(tmp_path_factory, rows, seed, files):
    base = tmp_path_factory.mktemp("a")
    write(base / "sales.csv", rows)
    _, con = pull(base)
    expected = keys(con)
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    other = tmp_path_factory.mktemp("b")
    for f in range(files):
        write(other / f"sales{f}.csv", shuffled[f::files])
    _, con = pull(other, orders="sales*.csv")
    assert keys(con) == expected
    again = tmp_path_factory.mktemp("c")  # a later run with one more recent order keeps every key
    write(again / "sales.csv", rows + [["later", "2025-01-01 00:00", "1", rows[0][3], rows[0][4]]])
    _, con = pull(again)
    assert {k: v for k, v in keys(con).items() if k != "later"} == expected


# --------------------------------------------------------------------------- CLI: check and segments JSON

def _config(tmp_path: Path) -> Path:
    write(tmp_path / "sales.csv", AZIZ + [[str(10 + i), "01.03.2024", "5", f"u{i}@x.com", "+998712000000"]
                                          for i in range(6)])
    cfg = tmp_path / "rfmsync.toml"
    cfg.write_text('[source]\ntype = "file"\norders = "sales.csv"\nphone_region = "UZ"\nmax_identity_group = 5\n'
                   '[source.columns]\n' + "".join(f'{k} = "{v}"\n' for k, v in COLS.items()), encoding="utf-8")
    return cfg


def test_check_prints_one_identity_line(tmp_path):
    result = CliRunner().invoke(main, ["check", "--config", str(_config(tmp_path))], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if "identity:" in ln)
    assert "2 rows linked, 1 customer merged, 1 shared identifier ignored: +998712000000 (6 customers)" in line


def test_segments_json_reports_identity(tmp_path):
    result = CliRunner().invoke(main, ["segments", "--config", str(_config(tmp_path)), "--as-of", "2024-06-01",
                                       "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["identity"] == {"linked_rows": 2, "merged_customers": 1,
                                "ignored_identifiers": [{"value": "+998712000000", "customers": 6}]}
    assert data["customers"] == 8  # Aziz, Bob and six buyers who share the shop's phone


def test_customers_file_carries_both_identifiers_of_the_merged_customer(tmp_path):
    out = tmp_path / "customers.csv"
    result = CliRunner().invoke(main, ["segments", "--config", str(_config(tmp_path)), "--as-of", "2024-06-01",
                                       "--customers", "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = duckdb.connect().execute(f"SELECT customer_id, email, phone, frequency FROM read_csv('{out}', "
                                    "all_varchar=true) WHERE customer_id = '+998901112233'").fetchall()
    assert rows == [("+998901112233", "aziz@mail.ru", "+998901112233", "4")]


def test_max_identity_group_must_be_positive():
    with pytest.raises(ValueError, match="max_identity_group"):
        FileSourceConfig(type="file", orders="x.csv", max_identity_group=0)


# --------------------------------------------------------------------------- CRM and webhook records (the store)

def _at(day: int) -> datetime:
    return datetime(2024, 1, day, 12, tzinfo=UTC)


def _order(oid: str, cust: str, day: int = 1) -> Order:
    return Order(order_id=oid, customer_id=cust, ordered_at=_at(day), amount=Decimal("10"))


def _store(orders=(), contacts=()) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_tables(con)
    stage_records(con, orders, contacts)
    merge_staged(con, PullResult())
    return con


def _merge(con, orders=(), contacts=(), origin="pull", **kw) -> PullResult:
    stage_records(con, orders, contacts)
    result = PullResult()
    merge_staged(con, result, origin=origin, **kw)
    return result


def _owners(con) -> dict[str, str]:
    return dict(con.execute("SELECT order_id, customer_id FROM orders").fetchall())


def test_a_guest_order_keyed_by_email_joins_the_crm_customer_with_that_email():
    con = _store([_order("1", "c1")], [Contact("c1", email="anna@x.com", first_name="Anna", marketing_consent="yes")])
    result = _merge(con, [_order("2", " Anna@X.com", 2)], [Contact(" Anna@X.com", email="anna@x.com",
                                                                     phone="+998900000001")], origin="webhook")
    assert _owners(con) == {"1": "c1", "2": "c1"}
    assert con.execute("SELECT customer_id, email, phone, first_name, marketing_consent FROM contacts").fetchall() == [
        ("c1", "anna@x.com", None, "Anna", "yes")]  # (a guest's phone never becomes the customer's: guest32)
    assert (result.identity.linked_rows, result.identity.merged_customers) == (2, 1)


def test_stored_guest_rows_join_the_customer_when_its_contact_arrives_with_that_phone():
    con = _store([_order("1", "+998900000002"), _order("2", "+998900000002", 3)],
                 [Contact("+998900000002", phone="+998900000002", first_name="Aziz")])
    result = _merge(con, [_order("3", "c2", 5)], [Contact("c2", phone="+998900000002", email="aziz@mail.ru")])
    assert _owners(con) == {"1": "c2", "2": "c2", "3": "c2"}
    assert con.execute("SELECT customer_id, email, phone, first_name FROM contacts").fetchall() == [
        ("c2", "aziz@mail.ru", "+998900000002", "Aziz")]
    assert result.identity.merged_customers == 1
    again = _merge(con, [_order("3", "c2", 5)], [Contact("c2", phone="+998900000002")])  # nothing left to link
    assert again.identity.merged_customers == 0 and _owners(con)["1"] == "c2"


def test_crm_records_with_their_own_ids_are_never_merged():
    con = _store([_order("1", "c1")], [Contact("c1", email="family@x.com")])
    _merge(con, [_order("2", "c2")], [Contact("c2", email="family@x.com")])
    assert _owners(con) == {"1": "c1", "2": "c2"}


def test_a_shared_email_in_the_store_links_no_guest_and_is_reported():
    office = [Contact(f"c{i}", email="office@shop.uz") for i in range(6)]
    con = _store([_order(f"o{i}", f"c{i}") for i in range(6)], office)
    result = _merge(con, [_order("g", "office@shop.uz")])
    assert _owners(con)["g"] == "office@shop.uz"
    assert result.identity.to_json()["ignored_identifiers"] == [{"value": "office@shop.uz", "customers": 6}]
    _merge(con, [_order("g", "office@shop.uz")], max_identity_group=6)
    assert _owners(con)["g"] == "c0"  # within the group: the smallest customer id


def test_max_identity_group_is_a_key_every_crm_source_accepts(monkeypatch):
    monkeypatch.setenv("SHOPIFY_TOKEN", "test-token")
    from connectors.errors import ConfigError
    from connectors.registry import build_source

    assert build_source({"type": "shopify", "shop": "demo", "max_identity_group": 3}).max_identity_group == 3
    with pytest.raises(ConfigError, match="max_identity_group"):
        build_source({"type": "shopify", "shop": "demo", "max_identity_group": 0})
