"""An address the ESPs refuse is refused by rfmsync first: invalid in every path (file exports in SQL, API and
webhook contacts in Python), reported as a bad row / skipped with the reason, never sent to fail every run."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.email_phone import email_map, lower_like_sql, normalize_email
from connectors import amocrm, bitrix24, retailcrm, retailcrm_mapping, shopify
from connectors.records import Contact
from connectors.contacts import clean_contact
from sync.config import DestinationConfig
from sync.planning.plan import desired_contacts
from sync.planning.rows import stage_dicts
from sync.planning.columnar import plan_columnar, stage_pushed
from tests.builders import scratch_con
from tests.profiles import examples

LOCAL_64 = "a" * 64 + "@mail.ru"
TOO_LONG = [
    "a" * 65 + "@mail.ru",  # RFC 5321: 64 characters before the @ at most
    "i" * 40 + "." + "v" * 30 + "@mail.ru",
    "п" * 65 + "@почта.рф",
]


@pytest.mark.parametrize("value", TOO_LONG)
def test_a_local_part_over_64_characters_is_invalid_in_sql_and_in_python(value):
    assert normalize_email(value) is None
    con = duckdb.connect()
    con.register("v", pa.table({"raw": [value, LOCAL_64]}))
    m = email_map(con, "SELECT raw FROM v", "m")
    assert dict(con.execute("SELECT raw, norm FROM m").fetchall()) == {value: None, LOCAL_64: LOCAL_64}
    assert m.invalid == 1


def test_the_longest_local_part_is_still_valid_in_both_paths():
    assert normalize_email(LOCAL_64.upper()) == LOCAL_64
    assert normalize_email("п" * 64 + "@почта.рф") == "п" * 64 + "@почта.рф"


def test_a_crm_contact_with_such_an_address_is_kept_without_it_and_reported():
    contact, issues = clean_contact(Contact("c1", email=TOO_LONG[0], phone="+998901112233"), None, "crm:contacts")
    assert contact.email is None and contact.phone == "+998901112233"
    assert [(i.field, i.value) for i in issues] == [("email", TOO_LONG[0])]


def test_the_plan_skips_it_as_an_invalid_email_in_both_planners():
    dest = DestinationConfig(name="mc", type="mailchimp", audience="a", new_contacts="transactional",
                             segments={"Churn": "Winback"})
    rows = [{"customer_id": "1", "email": TOO_LONG[0], "segment": "Churn", "marketing_consent": "yes"},
            {"customer_id": "2", "email": LOCAL_64, "segment": "Churn", "marketing_consent": "yes"}]
    desired, skipped = desired_contacts(rows, dest)
    assert [d.key for d in desired] == [LOCAL_64]
    assert [(s.customer_id, s.reason) for s in skipped] == [("1", "invalid email")]
    with scratch_con() as con:
        staged = stage_dicts(rows, con)
        stage_pushed(con, pa.table({"key": pa.array([], pa.string()), "customer_id": pa.array([], pa.string()),
                                    "tags": pa.array([], pa.string()), "fields": pa.array([], pa.string()),
                                    "in_destination": pa.array([], pa.bool_())}))
        plan = plan_columnar(staged, dest)
    assert [c.key for c in plan.changes] == [LOCAL_64]
    assert [(s.customer_id, s.reason) for s in plan.skipped] == [("1", "invalid email")]


# ------------------------------------------------------------------ one address, one key in every path

TYPED_TWO_WAYS = [
    ("İlham@Mail.az", "ilham@mail.az"),  # Azerbaijani/Turkish capital dotted I: one letter, not i + U+0307
    ("İLHAM.ƏLİYEV@MAIL.AZ", "ilham.əliyev@mail.az"),
    ("ΟΔΟΣ@mail.gr", "οδοσ@mail.gr"),  # a capital sigma is σ wherever it stands (no final ς)
    ("Nikos.ΠΑΠΑΣ@Mail.gr", "nikos.παπασ@mail.gr"),
    ("info@καλημέρας.gr", "info@καλημέρας.gr"),  # a final ς typed so stays: ς and σ make two domains (IDNA 2008)
    ("Иван@Почта.РФ", "иван@почта.рф"),
]


@pytest.mark.parametrize("typed, key", TYPED_TWO_WAYS)
def test_a_file_export_and_a_crm_or_webhook_contact_give_the_same_key(typed, key):
    """A file export's addresses are lower-cased by DuckDB (:func:`email_map`, the planner's staging), a CRM's
    or webhook's by Python (:func:`normalize_email`, the resync's planner): Python's ``str.lower`` turns İ into
    two characters and a word-final Σ into ς, DuckDB does neither, and the same person was two ESP contacts."""
    con = duckdb.connect()
    con.register("v", pa.table({"raw": [typed]}))
    email_map(con, "SELECT raw FROM v", "m")
    assert con.execute("SELECT norm FROM m").fetchall() == [(key,)]
    assert normalize_email(typed) == key
    assert clean_contact(Contact("c1", email=typed), None, "crm")[0].email == key


_LOCAL = st.text(st.sampled_from("aZİIıiΣσςΟΔßẞÅÆǅЁёƏə09+-. \u0307\t\n\r\x0b\u200b\u200c\u200d\u2060\u3000"
                                 "\ufeff\u00a0"), min_size=1, max_size=6)
_DOMAIN = st.sampled_from(["@Mail.Az", "@mail.az", "@ПОЧТА.РФ", "@İSTANBUL.com.tr", "@ΜΑΙΛ.gr", "@x-y.COM",
                           "@Straße.de"])


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.tuples(_LOCAL, st.sampled_from([0, 0, 0, 57, 58, 59]), _DOMAIN)
                .map(lambda t: ("a" * t[1] + t[0] if t[1] else t[0]) + t[2]), min_size=1, max_size=20))
def test_the_sql_and_python_twins_agree_on_every_address(values):
    """Upper-case and non-ASCII domains, combining dots, blanks inside and around, and local parts reaching and
    passing 64 characters (57-59 'a's before up to six more)."""
    with scratch_con() as con:
        con.register("v", pa.table({"raw": values}))
        email_map(con, "SELECT raw FROM v", "m")
        sql = dict(con.execute("SELECT raw, norm FROM m").fetchall())
    for v in values:
        if v.strip(" "):
            assert normalize_email(v) == sql[v], v


def test_sql_lower_and_the_python_twin_agree_on_every_character():
    """Every code point, medial and word-final after a letter (Python lowers a final Σ by its context): DuckDB's
    ``lower()`` is :func:`lower_like_sql`, so no character gives a file export one key and a CRM or webhook
    another."""
    values = ["a" + chr(c) * 2 for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF]
    con = duckdb.connect()
    con.register("v", pa.table({"raw": values, "py": [lower_like_sql(v) for v in values]}))
    assert con.execute("SELECT raw, py FROM v WHERE lower(raw) <> py").fetchall() == []


CRM_CONTACTS = {
    "shopify": lambda e: shopify.map_customer({"id": 1, "email": e}),
    "amocrm": lambda e: amocrm.map_contact({"id": 1, "custom_fields_values": [
        {"field_code": "EMAIL", "values": [{"value": e}]}]}),
    "bitrix24": lambda e: bitrix24.map_contact({"ID": "1", "EMAIL": [{"VALUE": e}]}),
    "retailcrm": lambda e: retailcrm_mapping.map_customer({"id": 1, "email": e}, retailcrm.RetailCrmConfig()),
}


@pytest.mark.parametrize("vendor", sorted(CRM_CONTACTS))
def test_every_crm_contact_gives_the_file_exports_key(vendor):
    """The CRM mappers lower-cased the address with Python's ``str.lower`` before :func:`clean_contact` saw it."""
    for typed, key in TYPED_TWO_WAYS:
        contact = CRM_CONTACTS[vendor](typed)
        assert clean_contact(contact, None, vendor)[0].email == key, typed


def test_a_shopify_order_without_a_customer_is_keyed_by_the_same_address():
    order = shopify.map_order({"id": 7, "email": " İlham@Mail.az", "financial_status": "paid", "total_price": "10",
                               "processed_at": "2026-01-01T00:00:00Z", "currency": "UZS"}, shopify.ShopifyConfig(), [])
    assert order.customer_id == "ilham@mail.az"


AROUND = ["ivan@mail.ru\t", "\tIvan@mail.ru", "ivan@mail.ru\n", "ivan@mail.ru\r\n", "\u200bivan@mail.ru",
          "ivan@mail.ru\u200b", "\ufeffivan@mail.ru", "ivan@mail.ru\u2060", "\u00a0ivan@mail.ru \u200d"]


@pytest.mark.parametrize("typed", AROUND)
def test_invisible_characters_around_an_address_are_trimmed_in_both_paths(typed):
    """A tab or line break left in an export's cell, a zero-width space or BOM pasted with the address: the
    address was invalid, so the customer had no e-mail (not synced) while his CRM contact had one."""
    assert normalize_email(typed) == "ivan@mail.ru"
    con = duckdb.connect()
    con.register("v", pa.table({"raw": [typed]}))
    email_map(con, "SELECT raw FROM v", "m")
    assert con.execute("SELECT norm FROM m").fetchall() == [("ivan@mail.ru",)]
    with scratch_con() as c:
        staged = stage_dicts([{"customer_id": "1", "email": typed, "segment": "Churn"}], c)
        assert staged.desired_keys() == ["ivan@mail.ru"]
    assert normalize_email("iv\u200ban@mail.ru") is None  # inside the address it is no blank: still invalid


LOOK_ALIKES = ["ivаn@mail.ru",  # a Cyrillic а in a Latin name
               "ivan@mаil.ru",  # ... in the domain
               "IVАN.petrov@mail.ru",  # upper case, one label of two
               "ivan@почтa.рф"]  # a Latin a in a Cyrillic domain
REAL = ["иван@почта.рф", "иван.petrov@mail.ru", "ivan@почта.рф", "ü@exämple.de"]


def test_a_label_mixing_latin_and_cyrillic_letters_is_invalid_in_sql_and_in_python():
    """A Cyrillic look-alike letter typed into a Latin address is a typo no mailbox answers to; fully Cyrillic
    (IDN) addresses, and labels each in one script, stay valid."""
    assert [normalize_email(v) for v in LOOK_ALIKES] == [None] * 4
    assert [normalize_email(v) for v in REAL] == ["иван@почта.рф", "иван.petrov@mail.ru", "ivan@почта.рф",
                                                  "ü@exämple.de"]
    con = duckdb.connect()
    con.register("v", pa.table({"raw": LOOK_ALIKES + REAL}))
    m = email_map(con, "SELECT raw FROM v", "m")
    got = dict(con.execute("SELECT raw, norm FROM m").fetchall())
    assert got == {v: normalize_email(v) for v in LOOK_ALIKES + REAL}
    assert m.invalid == 4


def test_a_file_row_with_a_look_alike_address_is_reported_as_an_invalid_email(tmp_path):
    from tests.test_files import HEADER, pull, write_csv

    write_csv(tmp_path / "sales.csv", [HEADER, ["1", "c1", "02.01.2024", "100", "", "ivаn@mail.ru", ""],
                                       ["2", "c2", "02.01.2024", "100", "", "иван@почта.рф", ""]])
    result, con = pull(tmp_path)
    assert [(i.row, i.field, i.value, i.reason) for i in result.issues] == [
        (2, "email", "ivаn@mail.ru", "invalid email; the contact is kept without it")]
    assert dict(con.execute("SELECT customer_id, email FROM staged_contacts").fetchall()) == {
        "c1": None, "c2": "иван@почта.рф"}
