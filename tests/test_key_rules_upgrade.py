"""A store written before the identity keys' rules changed (a phone keeps its extension, e-mails NFKC-folded): the
keys it holds are the old ones, and new records typed the new way would split a customer. A file source reads its
files again once (store FORMAT); an API source's store is told once to be pulled whole, and its stored e-mails are
folded at once."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

import sync.store.files as store_files
from tests.builders import run_cli
from tests.test_cli_pull import T0, run, rsps, shop  # noqa: F401 (fixtures)
from tests.test_retailcrm import FakeRetailCrm
from tests.test_store_links import _contacts, _ingest, _owners, _shop

NOTICE = "run `rfmsync pull --full` once"


def _store(shop: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(shop.parent / "rfmsync.duckdb"))


def _old_keys(shop: Path) -> None:
    """What the release before left in the store: no rules recorded, the extension dropped, a fullwidth e-mail."""
    con = _store(shop)
    try:
        con.execute("DROP TABLE store_key_rules")
        con.execute("UPDATE contacts SET phone = '+998712000000', email = 'ａｎｎａ@x.com' WHERE customer_id = '10'")
    finally:
        con.close()


def _contact(shop: Path) -> tuple:
    con = _store(shop)
    try:
        return con.execute("SELECT email, phone FROM contacts WHERE customer_id = '10'").fetchone()
    finally:
        con.close()


def _crm(rsps) -> FakeRetailCrm:  # noqa: F811
    fake = FakeRetailCrm(rsps)
    fake.put_contact(10, "anna@x.com", at=T0, phones=[{"number": "+998 71 200 00 00 доб. 101"}])
    fake.put_order(1, 10, "100", at=T0)
    return fake


def test_a_crm_store_pulled_before_the_new_keys_is_told_once_to_pull_it_whole(rsps, shop):  # noqa: F811
    _crm(rsps)
    assert run("pull", "--config", str(shop)).exit_code == 0
    assert _contact(shop) == ("anna@x.com", "+998712000000;ext=101")
    _old_keys(shop)
    first = run("segments", "--config", str(shop), "--as-of", "2025-06-30")
    assert first.exit_code == 0, first.output
    assert NOTICE in first.output and "phones" in first.output
    assert _contact(shop) == ("anna@x.com", "+998712000000")  # the e-mail folded at once; the phone needs the CRM
    again = run("segments", "--config", str(shop), "--as-of", "2025-06-30")
    assert again.exit_code == 0 and NOTICE not in again.output  # once
    assert run("pull", "--config", str(shop), "--full").exit_code == 0
    assert _contact(shop) == ("anna@x.com", "+998712000000;ext=101")


def test_a_store_first_pulled_by_this_release_is_not_told(rsps, shop):  # noqa: F811
    _crm(rsps)
    assert run("pull", "--config", str(shop)).exit_code == 0
    result = run("segments", "--config", str(shop), "--as-of", "2025-06-30")
    assert result.exit_code == 0 and NOTICE not in result.output


def test_a_file_store_read_before_the_new_keys_reads_its_files_again_once(tmp_path, monkeypatch):
    """The release before stored Aziz and Bobur (one office line, extensions 101 and 102) as one customer and the
    fullwidth address as its own key; the files unchanged, the first run after the upgrade reads them again."""
    cfg = _shop(tmp_path, ["a1,aziz@corp.uz,+998 71 200 00 00 доб. 101,2025-05-01,100",
                           "b1,bobur@corp.uz,+998 71 200 00 00 доб. 102,2025-05-02,50",
                           "f1,ａｎｎａ@x.com,,2025-05-03,70"])
    current = store_files.FORMAT
    monkeypatch.setattr(store_files, "FORMAT", 9)  # the release before the new keys
    _ingest(cfg)
    con = duckdb.connect(str(tmp_path / "rfmsync.duckdb"))
    try:  # the keys that release gave them
        con.execute("UPDATE orders SET customer_id = 'aziz@corp.uz' WHERE order_id IN ('a1', 'b1')")
        con.execute("UPDATE orders SET customer_id = 'ａｎｎａ@x.com' WHERE order_id = 'f1'")
        con.execute("DELETE FROM contacts WHERE customer_id = 'bobur@corp.uz'")
        con.execute("UPDATE contacts SET email = 'bobur@corp.uz', phone = '+998712000000' "
                    "WHERE customer_id = 'aziz@corp.uz'")
        con.execute("UPDATE contacts SET customer_id = 'ａｎｎａ@x.com', email = 'ａｎｎａ@x.com' "
                    "WHERE customer_id = 'anna@x.com'")
    finally:
        con.close()
    monkeypatch.setattr(store_files, "FORMAT", current)  # upgraded
    _ingest(cfg)
    assert _owners(cfg) == {"a1": "aziz@corp.uz", "b1": "bobur@corp.uz", "f1": "anna@x.com"}
    assert _contacts(cfg) == [("anna@x.com", "anna@x.com", None),
                              ("aziz@corp.uz", "aziz@corp.uz", "+998712000000;ext=101"),
                              ("bobur@corp.uz", "bobur@corp.uz", "+998712000000;ext=102")]


def test_explain_of_an_office_line_typed_bare_finds_the_customers_on_its_extensions(tmp_path):
    """Every contact of the line carries its extension (+998712000000;ext=101): ``explain "+998 71 200 00 00"``
    said "no customer" where the customers are those of its extensions."""
    rows = ["a1,aziz@corp.uz,+998 71 200 00 00 доб. 101,2025-05-01,100"]
    _shop(tmp_path, rows)
    found = run_cli("explain", "+998 71 200 00 00", "--config", str(tmp_path / "rfmsync.toml"), "--as-of",
                    "2025-06-30", "--format", "json")
    assert json.loads(found.stdout)["customer_id"] == "aziz@corp.uz"
    _shop(tmp_path, [*rows, "b1,bobur@corp.uz,+998 71 200 00 00 доб. 102,2025-05-02,50"])
    two = run_cli("explain", "+998 71 200 00 00", "--config", str(tmp_path / "rfmsync.toml"), "--as-of",
                  "2025-06-30", code=3)
    assert "matches 2 customers (aziz@corp.uz, bobur@corp.uz): explain one of them by id" in two.output
