"""The desired fields spelled in SQL as the ledger spells pushed ones (sync.planning.canonical): every text is,
byte for byte, the text the ledger writes for the value the planner would write (so equal text can only mean an
unchanged value, and the ledger may store the text as it is), or NULL; and the everyday values have a text (so an
unchanged contact is recognised)."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal

import duckdb
import pyarrow as pa
from hypothesis import given, settings, strategies as st

from sync.ledger.state_rows import fields_json
from sync.planning.canonical import fields_text_sql, value_text_sql
from sync.planning.plan import normalise_value, same_value

from tests.profiles import examples

# doubles just around a rounding tie of the sixth decimal (where DuckDB's round and Python's may part), found by
# comparing the two on 800 000 values
TIES = [i / 2e6 for i in range(-40, 40)] + [0.0000005, 2.5e-06, 1.0000005, 123.4567895, 0.1234565, -7.0000015]


ARROW = {"VARCHAR": pa.string(), "DOUBLE": pa.float64(), "FLOAT": pa.float32(),
         "DECIMAL(18,2)": pa.decimal128(18, 2), "DECIMAL(38,8)": pa.decimal128(38, 8), "BIGINT": pa.int64(),
         "DECIMAL(4,4)": pa.decimal128(4, 4),
         "DATE": pa.date32(), "TIMESTAMP": pa.timestamp("us"), "BOOLEAN": pa.bool_()}
CON = duckdb.connect()


def texts(dtype: str, values: list) -> list[tuple[object, str | None]]:
    """(value as the planner reads it from DuckDB, its text from ``value_text_sql``) for each value."""
    CON.register("t", pa.table({"i": pa.array(range(len(values)), pa.int64()), "v": pa.array(values, ARROW[dtype])}))
    try:
        return CON.execute(f"SELECT v, {value_text_sql('CAST(v AS ' + dtype + ')', dtype)} FROM t ORDER BY i"
                           ).fetchall()
    finally:
        CON.unregister("t")


def ledger_text(value) -> str:
    """What the ledger writes for a field value (sync.ledger.state: compact, UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def assert_sound(dtype: str, values: list) -> list[str | None]:
    """Each text is the ledger's own text of the value (inside a fields object, as the ledger writes it)."""
    out = []
    for value, text in texts(dtype, values):
        want = normalise_value(value)
        if text is not None:
            assert same_value(json.loads(text), want), (dtype, value, text)
            assert "{" + json.dumps("k") + ":" + text + "}" == fields_json({"k": want}), (dtype, value, text)
        out.append(text)
    return out


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
                          st.text(st.characters(max_codepoint=127), max_size=8)), max_size=20))
def test_text_values(values):
    assert_sound("VARCHAR", values)


def test_a_text_with_a_control_character_has_no_text_and_the_others_are_python_s():
    """DuckDB escapes some control characters in capitals (``\\u001B``) where Python writes ``\\u001b``: strings
    with a control character have no text (the ledger encodes them); every other character, non-ASCII included
    (UTF-8, as the ledger writes it), quotes, backslashes and slashes are spelled as Python spells them."""
    odd = ["\x0b", "\x1f", "a\nb", "\t", "Обувь\x1b"]
    assert [t for _, t in texts("VARCHAR", odd)] == [None] * len(odd)
    others = ['a "q" \\ /', "~ !", "é", "\u2028", "😀", "\x7f", "Обувь", "Toshkent sh., Навоий 1"]
    assert assert_sound("VARCHAR", others) == [json.dumps(v, ensure_ascii=False) for v in others]


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(width=64)), max_size=20),
       st.lists(st.one_of(st.none(), st.floats(width=32)), max_size=10))
def test_floating_values(doubles, floats):
    assert_sound("DOUBLE", doubles + TIES)
    assert_sound("FLOAT", floats)


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.one_of(st.none(), st.decimals(min_value=-10**15, max_value=10**15, places=2)), max_size=20),
       st.lists(st.decimals(min_value=-10**20, max_value=10**20, places=8), max_size=10),
       st.lists(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)), max_size=10))
def test_decimal_and_integer_values(d2, d8, ints):
    assert_sound("DECIMAL(18,2)", d2)
    assert_sound("DECIMAL(38,8)", d8)
    assert_sound("BIGINT", ints)


def test_a_decimal_of_no_whole_digits_is_spelled_with_its_leading_zero():
    """DuckDB prints a DECIMAL(4,4) as ``.0001``, not JSON: spelled ``0.0001`` as Python writes it."""
    values = [Decimal("0.0001"), Decimal("-0.5"), Decimal("0.1234"), None]
    assert assert_sound("DECIMAL(4,4)", values) == ["0.0001", "-0.5", "0.1234", "null"]


def test_a_decimal_python_writes_otherwise_has_no_text():
    """More than 15 significant digits (Python writes its double's shortest text) or below 1e-4 (an exponent)."""
    many = [Decimal("12345678901234.5678"), Decimal("-0.00005"), Decimal("0.00001"), Decimal("1234567890123.45678")]
    assert [t for _, t in texts("DECIMAL(38,8)", many)] == [None] * len(many)
    assert assert_sound("DECIMAL(38,8)", [Decimal("0.0001"), Decimal("-1234567890123.45"), Decimal("10")]) == [
        "0.0001", "-1234567890123.45", "10"]


@settings(max_examples=examples(40), deadline=None)
@given(st.lists(st.one_of(st.none(), st.dates()), max_size=10),
       st.lists(st.one_of(st.none(), st.datetimes()), max_size=10),
       st.lists(st.one_of(st.none(), st.booleans()), max_size=5))
def test_dates_timestamps_and_booleans(dates, stamps, bools):
    assert_sound("DATE", dates)
    assert_sound("TIMESTAMP", stamps)
    assert_sound("BOOLEAN", bools)


def test_no_sure_text_at_a_rounding_tie_or_outside_what_json_and_isoformat_write():
    """A double near a tie of its sixth decimal, a non-finite one, a date before year 1000: NULL (the full
    comparison decides); the rest of the ties are spelled as Python rounds them."""
    assert_sound("DOUBLE", TIES)
    assert [t for _, t in texts("DOUBLE", [0.0000005, -1.0000005, float("inf"), float("nan"), 1e9])] == [None] * 5
    assert texts("DATE", [date(999, 1, 2), date(1000, 1, 2)]) == [(date(999, 1, 2), None),
                                                                  (date(1000, 1, 2), '"1000-01-02"')]


def test_everyday_values_are_spelled_as_the_ledger_writes_them():
    """So a contact whose pushed fields are its desired ones is recognised by their text."""
    cases = {"VARCHAR": ["Champions", "At risk", "a \"quoted\" \\ value", "", None, "Чемпионы", "Иван Петров",
                         "Sodiqov Ғайрат", "東京"],
             "DECIMAL(18,2)": [Decimal("1389900.00"), Decimal("5.50"), Decimal("-0.05"), Decimal("7.25"), None],
             "BIGINT": [0, -3, 2**40], "BOOLEAN": [True, False], "DATE": [date(2024, 1, 2)],
             "TIMESTAMP": [datetime(2024, 1, 2, 23, 59)],
             "DOUBLE": [0.5, 1 / 3, 2.0, 12345.678901, -0.25, 1e-7]}
    for dtype, values in cases.items():
        got = assert_sound(dtype, values)
        assert got == [ledger_text(normalise_value(v)) for v in values], dtype


def test_the_fields_object_has_sorted_keys_and_no_unsure_value():
    con = duckdb.connect()
    con.register("t", pa.table({"s": ["Loyal", "Loyal"], "m": [5.5, float("nan")], "n": [1, 2]}))
    sql = fields_text_sql([("Segment", "s", "VARCHAR"), ("Monetary", "m", "DOUBLE"), ("A/b", "n", "BIGINT")])
    assert [t for (t,) in con.execute(f"SELECT {sql} FROM t").fetchall()] == [
        json.dumps({"A/b": 1, "Monetary": 5.5, "Segment": "Loyal"}, sort_keys=True, separators=(",", ":")), None]
    named = fields_text_sql([("Имя", "s", "VARCHAR"), ("ZIP", "n", "BIGINT")])  # a key spelled as the ledger does
    assert con.execute(f"SELECT {named} FROM t LIMIT 1").fetchall() == [(fields_json({"Имя": "Loyal", "ZIP": 1}),)]
    assert con.execute(f"SELECT {fields_text_sql([('X', 's', 'VARCHAR[]')])}").fetchall() == [(None,)]
    assert con.execute(f"SELECT {fields_text_sql([])}").fetchall() == [("{}",)]
