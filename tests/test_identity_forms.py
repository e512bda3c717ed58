"""One person typed two ways, two people typed alike: a phone's extension, a fullwidth address, a number a digit
short. The file exports' batch normalisers (``email_map``, ``phone_map`` in DuckDB) and the one-value twins (API and
webhook contacts) give the same key, and identity linking (rule 3) follows it."""

from __future__ import annotations

import random

import duckdb
import phonenumbers
import pyarrow as pa
import pytest

from connectors import email_phone as ep
from connectors.records import Contact
from tests.test_identity import _merge, _order, _owners, _store, keys, people, pull, write


def _batch_phones(values: list[str], region: str | None) -> dict[str, str | None]:
    con = duckdb.connect()
    con.register("p", pa.table({"raw": values}))
    ep.phone_map(con, "SELECT raw FROM p", "pm", region)
    return dict(con.execute("SELECT raw, norm FROM pm").fetchall())


def _batch_emails(values: list[str]) -> dict[str, str | None]:
    con = duckdb.connect()
    con.register("v", pa.table({"raw": values}))
    ep.email_map(con, "SELECT raw FROM v", "m")
    return dict(con.execute("SELECT raw, norm FROM m").fetchall())


# ---------------------------------------------------------------------------------------------- extensions

OFFICE = "+998712000000"
#: how an extension is written after a number: Russian доб./доп./вн., English ext./x/#, RFC 3966's ;ext=, a comma
EXTENSION_FORMS = [" доб. {}", " доб {}", "доб{}", " Доб. {}", " (доб. {})", " доп. {}", " доп.{}", " вн. {}",
                   " ext. {}", " ext {}", " extension {}", " x{}", " X {}", "#{}", " # {}", ";ext={}", ",{}"]
#: the office number as it is typed under UZ, and with no region (international forms only)
NUMBER_FORMS = {"UZ": ["+998 71 200 00 00", "+998712000000", "998 71 200-00-00", "(71) 200-00-00", "71 200 00 00",
                       "+998 (71) 200-00-00"],
                None: ["+998 71 200 00 00", "+998712000000", "+998 (71) 200-00-00", "tel:+998-71-200-00-00"]}


@pytest.mark.parametrize("region", sorted(NUMBER_FORMS, key=str))
def test_every_form_of_an_extension_is_kept_and_both_normalisers_agree(region):
    """Every number form × every extension form (and enough of them for the batch path's shapes): the extension is
    kept RFC 3966 style after the E.164 number, by ``phone_map`` as by ``normalize_phone`` (before: each was the bare
    +998712000000, or no phone at all for ``доп.`` and ``вн.``)."""
    values = [n + f.format(ext) for n in NUMBER_FORMS[region] for f in EXTENSION_FORMS for ext in ("101", "7")]
    values += [n for n in NUMBER_FORMS[region] if not n.startswith("tel:")]
    got = _batch_phones(values, region)
    assert got == {v: ep.normalize_phone(v, region) for v in values}
    for n in NUMBER_FORMS[region]:
        for f in EXTENSION_FORMS:
            assert got[n + f.format("101")] == f"{OFFICE};ext=101", n + f.format("101")
            assert got[n + f.format("7")] == f"{OFFICE};ext=7"
        assert n.startswith("tel:") or got[n] == OFFICE  # the line itself: no extension, as before


@pytest.mark.parametrize("raw, region, e164", [
    ("8 (495) 123-45-67 доб. 12", "RU", "+74951234567;ext=12"),
    ("00998712000000 доб. 101", "RU", "+998712000000;ext=101"),  # 00 read again as + (before: +700998712000000)
    ("8 10 998 71 200 00 00 доп. 5", "RU", "+998712000000;ext=5"),
    ("00998712000000 доб. 101", None, "+998712000000;ext=101"),  # no region: the extension was read as the number's
    ("00 998 71 200 00 00 ext. 101", None, "+998712000000;ext=101"),
    ("+1 650 253 0000 ext. 5", None, "+16502530000;ext=5"),
    ("+998712000000;ext=101", None, "+998712000000;ext=101"),  # the key, read again: itself
])
def test_an_extension_after_other_prefixes(raw, region, e164):
    assert ep.normalize_phone(raw, region) == e164
    assert _batch_phones([raw], region) == {raw: e164}


def test_two_colleagues_on_one_office_line_are_two_customers(tmp_path):
    """The hunter's export: two e-mails, one office number, two extensions, no customer id. Rule 3 linked the rows
    through the number, so Aziz's purchase went to Bobur's address."""
    write(tmp_path / "sales.csv", [["1", "02.01.2024", "10", "aziz@corp.uz", "+998 71 200 00 00 доб. 101"],
                                   ["2", "03.01.2024", "20", "bobur@corp.uz", "+998 71 200 00 00 доб. 102"],
                                   ["3", "04.01.2024", "30", "", "71 200-00-00 ext. 101"]])
    result, con = pull(tmp_path)
    assert keys(con) == {"1": "aziz@corp.uz", "2": "bobur@corp.uz", "3": "aziz@corp.uz"}
    assert people(con) == {"aziz@corp.uz": ("aziz@corp.uz", "+998712000000;ext=101"),
                           "bobur@corp.uz": ("bobur@corp.uz", "+998712000000;ext=102")}
    assert result.bad_row_count == 0 and (result.identity.linked_rows, result.identity.merged_customers) == (1, 1)


def test_a_guest_order_keyed_by_a_phone_with_an_extension_joins_that_extensions_customer():
    """CRM and webhook records (rule 2): a guest keyed by the office line with extension 102 joins the customer
    whose contact has that extension, not the colleague on 101."""
    con = _store([_order("1", "c1"), _order("2", "c2")],
                 [Contact("c1", phone="+998712000000;ext=101"), Contact("c2", phone="+998712000000;ext=102")])
    _merge(con, [_order("3", "+998712000000;ext=102", 2)], [Contact("+998712000000;ext=102",
                                                                     phone="+998712000000;ext=102")],
           origin="webhook")
    assert _owners(con) == {"1": "c1", "2": "c2", "3": "c2"}


@pytest.mark.parametrize("typed", ["+998 71 200 00 00 доб. 101", "+998 71 200-00-00 ext. 101", "+998712000000#101"])
def test_a_stored_guest_keyed_by_a_phone_typed_with_an_extension_joins_the_crm_card_that_arrives(typed):
    """A guest's webhook order keyed by the phone as typed; then Aziz's CRM card arrives with that phone. The merge's
    cheap pre-filter compared the stored id flattened to digits (+998712000000101) with the touched key
    (+998712000000;ext=101): the guest was never looked at and stayed a second customer."""
    con = _store([_order("1", typed)], [Contact(typed, phone=ep.normalize_phone(typed, "UZ"))])
    _merge(con, [_order("2", "c1", 2)], [Contact("c1", email="aziz@corp.uz", phone=ep.normalize_phone(typed, "UZ"))])
    assert _owners(con) == {"1": "c1", "2": "c1"}


# ---------------------------------------------------------------------------------------------- long extensions

@pytest.mark.parametrize("raw, region", [
    ("8 902 001 58 38 доп 89031112233", "RU"),       # a second number after доп (additional), not an extension
    ("+7 902 001 58 38 доб. 89031112233", "RU"),
    ("+998 90 123 45 67 доп. 912345678", "UZ"),
    ("+998 71 200 00 00 доб. 2000001", "UZ"),          # seven digits: a Tashkent city number
    ("+998 71 200 00 00 ext. 1234567", None),
])
def test_an_extension_longer_than_six_digits_is_a_second_number_reported_invalid(raw, region):
    """``8 902 001 58 38 доп 89031112233`` was the new key +79020015838;ext=89031112233: a person's second number
    read as an extension (its own number typed alone was another key). More than six digits after the marker is
    not an extension: the value holds two numbers and is invalid (reported), as ``… доп. 91 234 56 78`` already was;
    in both paths."""
    assert ep.normalize_phone(raw, region) is None
    assert _batch_phones([raw], region) == {raw: None}


@pytest.mark.parametrize("raw, region, e164", [
    ("+998 71 200 00 00 доп. 123456", "UZ", "+998712000000;ext=123456"),
    ("8 495 123-45-67 доп. 12", "RU", "+74951234567;ext=12"),
])
def test_an_extension_of_up_to_six_digits_is_kept(raw, region, e164):
    assert ep.normalize_phone(raw, region) == e164
    assert _batch_phones([raw], region) == {raw: e164}


# ---------------------------------------------------------------------------------------------- fullwidth e-mails

FULLWIDTH = ["ａｎｎａ@x.com", "ＡＮＮＡ@Ｘ．ＣＯＭ", "anna＠x.com", "ａｎｎａ＠ｘ．ｃｏｍ\u3000", " Ａnna@x.com"]


def test_a_fullwidth_address_is_the_same_address_in_both_paths():
    """Typed with a Chinese or Japanese keyboard's fullwidth letters: email-validator folds NFC only, so
    ``ａｎｎａ@x.com`` passed as valid and was a second customer beside anna@x.com."""
    assert [ep.normalize_email(v) for v in FULLWIDTH] == ["anna@x.com"] * len(FULLWIDTH)
    assert _batch_emails(FULLWIDTH) == {v: "anna@x.com" for v in FULLWIDTH}
    assert ep.normalize_email("ﬁona@x.com") == "fiona@x.com"  # a ligature's two letters
    assert ep.normalize_email("иван@почта.рф") == "иван@почта.рф"  # a real Unicode address is as it was


def test_a_fullwidth_address_in_an_export_is_the_customer_of_the_plain_one(tmp_path):
    write(tmp_path / "sales.csv", [["1", "02.01.2024", "10", "anna@x.com", ""],
                                   ["2", "03.01.2024", "20", "ａｎｎａ@x.com", ""]])
    result, con = pull(tmp_path)
    assert keys(con) == {"1": "anna@x.com", "2": "anna@x.com"}
    assert people(con) == {"anna@x.com": ("anna@x.com", None)} and result.bad_row_count == 0


# ---------------------------------------------------------------------------------------------- a digit short

def test_a_number_a_digit_short_is_invalid_not_a_wrong_possible_one():
    """Under RU, ``8 (902) 001-58-3`` (a digit short) kept its 8 as a national digit: a possible +78902001583,
    which no Russian number is. A number possible only with its trunk prefix kept must be valid, in both paths."""
    short, whole = "8 (902) 001-58-3", "8 (902) 001-58-38"
    assert ep.normalize_phone(short, "RU") is None and ep.normalize_phone(whole, "RU") == "+79020015838"
    assert ep.normalize_phone("8 800 123-45-67", "RU") == "+78001234567"  # the 8 of a toll-free 8 800: valid
    values = [short, whole, "8 800 123-45-67"] + [f"8 (902) 001-{i:02d}-3" for i in range(10)] + [
        f"8 (902) 001-58-{i:02d}" for i in range(10)] + [f"8 800 123-45-{i:02d}" for i in range(10)]
    got = _batch_phones(values, "RU")
    assert got[short] is None and got[whole] == "+79020015838" and got["8 800 123-45-67"] == "+78001234567"
    assert got == {v: ep.normalize_phone(v, "RU") for v in values}


def test_a_possible_number_of_a_range_phonenumbers_does_not_know_yet_is_still_kept():
    """The documented choice (docs/sources/files.md): an operator's new prefix appears before the library knows it,
    so a possible number is kept unless its trunk prefix was kept (+998 96 is no Uzbek range today)."""
    values = [f"+998 96 123 45 {i:02d}" for i in range(10)] + ["96 123 45 67"]
    got = _batch_phones(values, "UZ")
    assert got["+998 96 123 45 07"] == "+998961234507" and got["96 123 45 67"] == "+998961234567"
    assert got == {v: ep.normalize_phone(v, "UZ") for v in values}


REGIONS = ["RU", "UZ", "KZ", "US", "GB", "DE", "BY", "IT", "UA", "AR", "MX", "BR", "IN", "CN", "AU", "CA", "JM", "GG"]


@pytest.mark.parametrize("region", [None, "RU", "KZ", "UZ", "US", "GB", "DE", "BY"])
def test_numbers_with_and_without_a_kept_trunk_prefix_agree_in_both_paths(region):
    """Numbers of many countries (several regions behind one country code: +1, +7, +44), all but four digits
    random, in shapes large enough for the batch path's templates; and as many whose national part begins with
    the trunk prefix (typed after +country, or nationally a digit short): the batch path sends those value by
    value, and agrees with ``normalize_phone`` on every one."""
    from phonenumbers import PhoneMetadata

    rng = random.Random(region or "none")
    values: set[str] = set()

    def some(lead: str, fixed: str, length: int, fmt=lambda v: v) -> None:
        for _ in range(30):  # the shape's four digits kept, every other digit random
            values.add(fmt(lead + fixed + "".join(rng.choice("0123456789") for _ in range(length - len(fixed)))))

    for src in REGIONS:
        trunk = PhoneMetadata.metadata_for_region(src).national_prefix or ""
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(src, kind)
            if example is None:
                continue
            nsn = phonenumbers.national_significant_number(example)
            digits = f"{example.country_code}{nsn}"
            some("+", digits[:4], len(digits))
            if trunk:
                some("+", f"{example.country_code}{trunk}{nsn}"[:4], len(digits))  # a trunk prefix after +cc
                if src == region:  # typed nationally, a digit short: phonenumbers keeps the trunk prefix
                    some("", f"{trunk}{nsn}"[:4], len(trunk) + len(nsn) - 1)
    values = sorted(values)
    got = _batch_phones(values, region)
    want = {v: ep.normalize_phone(v, region) for v in values}
    assert got == want
    assert sum(v is None for v in want.values()) > 100 and sum(v is not None for v in want.values()) > 200
