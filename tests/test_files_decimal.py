"""A number column's decimal mark is decided over the whole column by the values that can be read one way only:
a stray value or a first 2 000 ambiguous values do not decide it, and truly mixed marks stop the read."""

from __future__ import annotations

from decimal import Decimal

import duckdb
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connectors import amounts
from connectors import normalize as nz
from connectors.errors import BadFileError
from connectors.file_decimal import _whole_column, vote_key, voted_sql
from tests.test_files import orders, pull, write_csv

COLS = {"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a", "status": "s"}


def _csv(tmp_path, amounts: list[str]) -> None:
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "a", "s"],
                                       *([str(i), "x", "05.01.2024", a, ""] for i, a in enumerate(amounts, 1))])


def test_ambiguous_first_values_follow_the_marks_decided_later_in_the_column(tmp_path):
    """The first 2 000 amounts are all `1,500` (alone: thousands); the later `2,75` values say ',' is the mark."""
    _csv(tmp_path, ["1,500"] * 2000 + ["2,75"] * 50)
    result, con = pull(tmp_path, columns=COLS)
    got = orders(con)
    assert result.bad_row_count == 0
    assert got["1"][2] == Decimal("1.50") and got["2050"][2] == Decimal("2.75")


def test_one_stray_value_among_the_first_does_not_flip_the_column(tmp_path):
    """`0.500` (read one way only: a decimal point) among ambiguous `1.500` thousands, with the column's
    `1 200,50` amounts after the first 2 000 values: the majority (',') decides, so `1.500` stays 1500."""
    _csv(tmp_path, ["0.500"] + ["1.500"] * 1999 + ["1 200,50"] * 300)
    _, con = pull(tmp_path, columns=COLS)
    got = orders(con)
    assert got["1"][2] == Decimal("0.50")  # the stray value itself is read as it can only be read
    assert got["2"][2] == Decimal("1500.00") and got["2300"][2] == Decimal("1200.50")


def test_truly_mixed_marks_with_ambiguous_values_stop_naming_the_column_and_the_key(tmp_path):
    _csv(tmp_path, ["12,50"] * 30 + ["7.25"] * 20 + ["1.234"])
    with pytest.raises(BadFileError) as e:
        pull(tmp_path, columns=COLS)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'sales.csv'}: column 'a' mixes decimal marks: 30 values read with ','")
    assert "'12,50'" in msg and "'7.25'" in msg and "'1.234'" in msg and '[source] decimal = ","' in msg
    _, con = pull(tmp_path, columns=COLS, decimal=".")  # the key the message names reads the file
    assert orders(con)["51"][2] == Decimal("1.23")


def test_mixed_marks_without_an_ambiguous_value_read_every_value(tmp_path):
    """Each of `12,50` and `7.25` can be read one way only: the column's mark changes nothing, so no error."""
    _csv(tmp_path, ["12,50"] * 30 + ["7.25"] * 20)
    result, con = pull(tmp_path, columns=COLS)
    got = orders(con)
    assert result.bad_row_count == 0 and got["1"][2] == Decimal("12.50") and got["50"][2] == Decimal("7.25")


@pytest.mark.parametrize("ambiguous", ["1.234", "1,234"])
def test_a_tie_between_the_marks_stops_on_an_ambiguous_value_whichever_its_mark(tmp_path, ambiguous):
    """One `12,50` and one `7.25`: no majority says which mark the column uses. Before, the tie went to '.', so
    `1.234` was 1.23 and `1,234` was 1234, silently; now either stops naming the column, the values and the key."""
    _csv(tmp_path, ["12,50", "7.25", ambiguous])
    with pytest.raises(BadFileError) as e:
        pull(tmp_path, columns=COLS)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'sales.csv'}: column 'a' mixes decimal marks: 1 value read with ','")
    assert f"1 value such as {ambiguous!r} means a different number" in msg and '[source] decimal = ","' in msg
    _, con = pull(tmp_path, columns=COLS, decimal=",")
    assert orders(con)["3"][2] == (Decimal("1.23") if ambiguous == "1,234" else Decimal("1234.00"))
    _csv(tmp_path, ["12,50", "7.25"])  # a tie without an ambiguous value reads each value as it can only be read
    result, con = pull(tmp_path, columns=COLS)
    assert result.bad_row_count == 0 and orders(con)["2"][2] == Decimal("7.25")


_TEXT = st.text(alphabet="0123456789,. \u00a0\u2007\u2009\u202fр$-", max_size=12)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(_TEXT, st.none()), max_size=30))
@example(values=["1037.000", "-1037,000", "01037.000", "12 345.678", "999.000", "0000.500", "1,037.000"])
@example(values=["1.234,5", "1.234.567", ",1.50", "1,5 кг.", "0.523", "12.5", "1 234,567", "2,50", ".5,250"])
@example(values=["0р.0000", "12,50 р.", "12,5.", ",12,5", "р.12,5"])
@example(values=["1\u200723,50", "1\u2009234,50", "1234\u202f567,00", "12\u00a0345.678", "1\u20071234"])
def test_the_whole_column_count_agrees_with_the_python_votes_whatever_the_first_guess(values):
    """The one-scan count (most values never classified) equals classifying every value with the Python twin,
    in a money column and in a quantity (whose shaped values differ)."""
    _twins_agree(values)


@pytest.mark.parametrize("space", ["\u2007", "\u2009", "\u202f", "\u00a0", "\u3000", "\x0b", " "])
def test_the_sql_and_python_twins_read_the_same_unicode_spaces(space):
    """RE2's `\\s` (the SQL twins') is ASCII, Python's Unicode: a figure space (U+2007) was a misplaced thousands
    space to `bad_spaces` and `vote_key` but not to their SQL twins, which counted `1\u200723,50` as a `,` vote.
    The spaces are spelled out, so both read the same ones (U+2009, U+202F, U+00A0 as thousands spaces)."""
    _twins_agree([f"1{space}23,50", f"1{space}234,50", f"1234{space}567,00", f"12{space}345.678", f"1{space}234"])


def _twins_agree(values: list[str | None]) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT unnest(?::VARCHAR[]) AS v", [values])
    for field in ("amount", "quantity"):
        expected = {",": 0, ".": 0, "w": 0, "w,": 0, "w.": 0, "s,": 0, "s.": 0}
        for v in values:
            vote, key = nz.decimal_vote(v), vote_key(v, money=field == "amount")
            if vote is not None:
                expected[vote[0] if vote[1] else "w"] += 1
                expected["w" + vote[0]] += not vote[1]
                expected["s" + vote[0]] += key == "s" + vote[0]
                assert (key == vote[0] or key == "s" + vote[0]) if vote[1] else key == "w" + vote[0]
        for guess in (",", "."):
            assert _whole_column(con, "t", {field: "v"}, {field: guess})[field] == expected
            # the SQL twin, value by value: one query over the column (one per value took minutes under load)
            sql = f"SELECT v, vote FROM {voted_sql('t', 'v', guess, field == 'amount')}"
            sql_votes = dict(con.execute(sql).fetchall())
            for v in values:
                assert sql_votes[v] == vote_key(v, field == "amount"), v
    for v in values:  # decimal_vote's SQL twin
        vote = nz.decimal_vote(v)
        want = None if vote is None else vote[0] if vote[1] else "w" + vote[0]
        assert con.execute(f"SELECT {nz.decimal_vote_sql('x')} FROM (SELECT ?::VARCHAR AS x)", [v]).fetchone()[0] \
            == want, v
        if v is not None:
            bad = con.execute(f"SELECT {amounts.bad_spaces_sql('x')} FROM (SELECT ?::VARCHAR AS x)", [v]).fetchone()[0]
            assert bad == amounts.bad_spaces(v), v


def test_one_decisive_value_does_not_read_thousands_of_ambiguous_amounts_as_decimals(tmp_path):
    """3 100 UZS amounts `150.000` (alone: thousands) and one `12.5` late in the column: the one value may not
    make them all 150.00; the read stops naming the column and the key."""
    _csv(tmp_path, ["150.000", "85.000", "320.000"] * 1000 + ["12.5"] + ["150.000"] * 100)
    with pytest.raises(BadFileError) as e:
        pull(tmp_path, columns=COLS)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'sales.csv'}: column 'a' mixes decimal marks: 1 value read with '.'")
    assert "'12.5'" in msg and "3100 values such as '150.000'" in msg and "[source] decimal" in msg
    _, con = pull(tmp_path, columns=COLS, decimal=",")
    assert orders(con)["1"][2] == Decimal("150000.00")


def test_a_few_decisive_values_decide_as_few_ambiguous_ones(tmp_path):
    """`0,500` and `1 200,50` (a decimal comma only) next to two ambiguous `1,250`, `2,000`: read as decimals."""
    _csv(tmp_path, ["0,500", "1,250", "2,000", "1 200,50"])
    _, con = pull(tmp_path, columns=COLS)
    assert [orders(con)[str(i)][2] for i in (1, 2, 3, 4)] == [Decimal(v) for v in ("0.50", "1.25", "2.00", "1200.50")]


def test_a_stray_in_a_small_file_is_no_conflict(tmp_path):
    """A small day file: 19 × `1 200,50`, 5 × `1.500`, one `0.500` (5 % of the decisive values, but one value):
    no conflict, and `1.500` stays 1500."""
    _csv(tmp_path, ["1 200,50"] * 19 + ["1.500"] * 5 + ["0.500"])
    _, con = pull(tmp_path, columns=COLS)
    got = orders(con)
    assert got["1"][2] == Decimal("1200.50") and got["20"][2] == Decimal("1500.00") and got["25"][2] == Decimal("0.50")


def test_the_typed_fast_path_weighs_a_decisive_value_among_the_first_rows(tmp_path):
    """ISO dates (the typed fast path) and the one `12.5` among the first 2 000 amounts: the sample's one decisive
    `.` may not read 3 100 `150.000` as 150.00 either; the read stops as on the text path."""
    amounts = ["150.000"] * 3100
    amounts.insert(1000, "12.5")
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "a"],
                                       *([str(i), "x", "2026-11-01", a] for i, a in enumerate(amounts, 1))])
    cols = {"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a"}
    with pytest.raises(BadFileError) as e:
        pull(tmp_path, columns=cols, timezone="UTC")
    assert "column 'a' mixes decimal marks" in str(e.value) and "'12.5'" in str(e.value)
    _, con = pull(tmp_path, columns=cols, timezone="UTC", decimal=",")
    assert orders(con)["1"][2] == Decimal("150000.00") and orders(con)["1001"][2] == Decimal("12.50")


def _prices3(n_ambiguous: int, n_below_one: int) -> list[str]:
    """Prices printed with 3 decimals: ``12.345``-style (alone: thousands) and a few below 1 (``0.523``: decimals)."""
    return [f"{1 + i % 59}.{(37 * i) % 1000:03d}" for i in range(n_ambiguous)] + \
        [f"0.{500 + i % 499:03d}" for i in range(n_below_one)]


def test_decisive_values_need_not_grow_past_a_cap_with_the_ambiguous_ones(tmp_path):
    """The shape of a million 3-decimal prices 0.5–60 (0.8 % below 1, decisive): 60 prices below 1 among 5 000
    `12.345` are under 2 % of them, yet far more than a stray; they read the column as prices (12.345)."""
    amounts = _prices3(5000, 60)
    _csv(tmp_path, amounts)
    result, con = pull(tmp_path, columns=COLS)
    got = orders(con)
    assert result.bad_row_count == 0 and got["1"][2] == Decimal("1.00") and got["5001"][2] == Decimal("0.50")
    assert got["2"][2] == Decimal("2.04")  # `2.037`: NUMERIC(…, 2) of a price with 3 decimals
    assert amounts[1] == "2.037"


def test_the_capped_weight_still_stops_below_the_cap(tmp_path):
    """40 decisive values (fewer than the cap and than 2 % of 5 000) still may not read 5 000 `12.345` as 12."""
    _csv(tmp_path, _prices3(5000, 40))
    with pytest.raises(BadFileError, match="column 'a' mixes decimal marks: 40 values read with '.'"):
        pull(tmp_path, columns=COLS)


def test_capped_weight_on_the_typed_fast_path(tmp_path):
    """ISO dates (the typed fast path): the same 3-decimal prices read as prices, not stopped."""
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "a"], *([str(i), "x", "2026-11-01", a]
                                                                for i, a in enumerate(_prices3(5000, 60), 1))])
    _, con = pull(tmp_path, columns={"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a"},
                  timezone="UTC")
    assert orders(con)["2"][2] == Decimal("2.04") and orders(con)["5001"][2] == Decimal("0.50")


@pytest.mark.parametrize("value, vote", [("1037.000", (".", True)), ("-1037,000", (",", True)),
                                         ("12 345.678", (".", True)), ("999.000", (".", False)),
                                         ("+999,000", (",", False)), ("0.500", (".", True))])
def test_a_mark_after_more_than_three_digits_is_decisive(value, vote):
    """A thousands group cannot follow four digits: `1037.000` has a decimal point; `999.000` stays ambiguous."""
    assert nz.decimal_vote(value) == vote


def test_amounts_of_four_digits_with_three_decimals_are_not_read_as_thousands(tmp_path):
    """Every amount `1037.000`-style (>= 1000, printed with 3 decimals): read as 1037, not 1 037 000 (so was main);
    in a column whose decimal mark is ',' a `1037.000` is read as it can only be read, like the vote says."""
    _csv(tmp_path, [f"{1000 + 37 * i}.000" for i in range(1, 300)])
    _, con = pull(tmp_path, columns=COLS)
    assert orders(con)["1"][2] == Decimal("1037.00") and orders(con)["299"][2] == Decimal("12063.00")
    _csv(tmp_path, ["12,50"] * 30 + ["1037.000"])
    _, con = pull(tmp_path, columns=COLS, decimal=",")
    assert orders(con)["31"][2] == Decimal("1037.00") and orders(con)["1"][2] == Decimal("12.50")


def test_four_digit_amounts_with_three_decimals_on_the_typed_fast_path(tmp_path):
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "a"], *([str(i), "x", "2026-11-01", f"{1000 + 37 * i}.000"]
                                                                for i in range(1, 3000))])
    _, con = pull(tmp_path, columns={"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a"},
                  timezone="UTC")
    assert orders(con)["1"][2] == Decimal("1037.00") and orders(con)["2999"][2] == Decimal("111963.00")


def _thousands(n: int) -> list[str]:
    """UZS amounts written with `.` grouping thousands and no decimals: `10.000` … `999.900` (alone: thousands)."""
    return [f"{10 + i % 990}.{i % 10}00" for i in range(n)]


def test_a_tiny_side_of_short_decimals_does_not_read_many_three_digit_amounts_as_decimals(tmp_path):
    """20 000 amounts `150.000`-shaped and 50 stray `12.5` (the weight cap, 0.25 % of them): `12.5` says which mark
    is a decimal one, not that the amounts have three decimals; the read stops instead of making them 1000x too
    small (on main they read as 150.00 without a word)."""
    amounts = _thousands(20000)
    for i in range(50):
        amounts.insert(2500 + 300 * i, "12.5")
    _csv(tmp_path, amounts)
    with pytest.raises(BadFileError) as e:
        pull(tmp_path, columns=COLS)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'sales.csv'}: column 'a' mixes decimal marks: 50 values read with '.'")
    assert "'12.5'" in msg and "20000 values such as '10.000'" in msg and "[source] decimal" in msg
    _, con = pull(tmp_path, columns=COLS, decimal=",")
    assert orders(con)["1"][2] == Decimal("10000.00") and orders(con)["2501"][2] == Decimal("12.50")


def test_a_tiny_side_of_short_decimals_on_the_typed_fast_path(tmp_path):
    """The same column with ISO dates and the strays among the first 2 000 values: the sample rule stops it too."""
    amounts = _thousands(20000)
    for i in range(50):
        amounts.insert(20 * i, "12.5")
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "a"],
                                       *([str(i), "x", "2026-11-01", a] for i, a in enumerate(amounts, 1))])
    cols = {"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a"}
    with pytest.raises(BadFileError, match="column 'a' mixes decimal marks: 50 values read with '.'"):
        pull(tmp_path, columns=cols, timezone="UTC")


def test_a_tiny_side_of_quantities_does_not_read_many_three_digit_quantities_as_thousands(tmp_path):
    """A quantity column of 20 000 `1.000`-shaped weights (alone: decimals) and 50 stray `2,5`: the strays may
    not make them all thousands of units; a side that shows `.` grouping thousands (`1.234,5`) may."""
    qty = [f"{1 + i % 9}.{i % 7}00" for i in range(20000)]
    rows = [["id", "c", "d", "a", "q"], *([str(i), "x", "05.01.2024", "10", q] for i, q in enumerate(qty, 1))]
    cols = {**COLS, "quantity": "q"}
    cols.pop("status")
    write_csv(tmp_path / "sales.csv", rows + [[f"s{i}", "x", "05.01.2024", "10", "2,5"] for i in range(50)])
    with pytest.raises(BadFileError, match="column 'q' mixes decimal marks: 50 values read with ','"):
        pull(tmp_path, columns=cols)
    write_csv(tmp_path / "sales.csv", rows + [[f"s{i}", "x", "05.01.2024", "10", "1.234,5"] for i in range(50)])
    _, con = pull(tmp_path, columns=cols)
    assert con.execute("SELECT quantity FROM staged_line_items WHERE order_id = '2'").fetchone()[0] == Decimal("2100")


def _iso_csv(tmp_path, amounts: list[str]) -> dict[str, str]:
    """ISO dates: the typed fast path's file; the columns to map."""
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "a"],
                                       *([str(i), "x", "2026-11-01", a] for i, a in enumerate(amounts, 1))])
    return {"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a"}


def test_the_typed_fast_path_stops_where_the_text_path_does_after_a_clean_first_sample(tmp_path):
    """2 000 amounts (1 990 whole, 10 `979.17`), then 3 000 UZS amounts `150.000`: the first 2 000 values hold no
    ambiguous one, yet the typed fast path may not read the rest as 150.00 (10 deciding values are under 2 % of
    them); it stops as the text path does (dd.mm.yyyy dates)."""
    amounts = [str(100 + i) for i in range(1990)] + ["979.17"] * 10 + _thousands(3000)
    cols = _iso_csv(tmp_path, amounts)
    with pytest.raises(BadFileError, match="column 'a' mixes decimal marks: 10 values read with '.'"):
        pull(tmp_path, columns=cols, timezone="UTC")
    _csv(tmp_path, amounts)
    with pytest.raises(BadFileError, match="column 'a' mixes decimal marks: 10 values read with '.'"):
        pull(tmp_path, columns=COLS)


def test_a_few_three_decimal_amounts_keep_the_typed_fast_path(tmp_path):
    """2-decimal amounts with every 300th printed with three decimals (`301.400`, weighed goods): the values of
    slices across the file clear the weight rule, so the column stays on the fast path and reads as decimals."""
    amounts = [f"{1 + i % 9999}.{i % 100:02d}" for i in range(30000)]
    for i in range(0, 30000, 300):
        amounts[i] = f"{1 + i % 999}.400"
    result, con = pull(tmp_path, columns=_iso_csv(tmp_path, amounts), timezone="UTC")
    assert result.fast_path and result.bad_row_count == 0
    assert orders(con)["301"][2] == Decimal("301.40") and orders(con)["2"][2] == Decimal("2.01")


def test_spread_cells_read_whole_lines_from_slices_across_the_file(tmp_path):
    """Each slice skips the line it starts in and its unfinished last one; a line inside a quoted field (fewer
    cells than the header; one row in 400 here: more than 1 % of the lines read would give none) is left out;
    every cell is a whole value of the column."""
    from connectors.file_lines import spread_cells

    rows = [["id", "note", "a"], *([str(i), f'"line {i}\nmore, {i}.5"' if i % 400 == 0 else "n", f"{i}.25"]
                                   for i in range(1, 20001))]
    write_csv(tmp_path / "s.csv", rows, delim=",")
    cells = spread_cells(tmp_path / "s.csv", ",", "a")
    assert len(cells) > 1000 and all(c.endswith(".25") for c in cells)
    assert int(cells[-1][:-3]) > 19000 and spread_cells(tmp_path / "s.csv", ",", "nope") == []


def test_spread_cells_count_rows_ending_in_a_delimiter_and_give_none_when_few_slices_yield(tmp_path):
    """A row ending in a delimiter the header lacks (an empty cell at the end) is a row; a file whose rows mostly
    hold a quoted line break (an address) gives values from few slices, too few to stand for it: none."""
    from connectors.file_lines import spread_cells

    write_csv(tmp_path / "t.csv", [["id", "a"], *([str(i), f"{i}.25", ""] for i in range(20000))], delim=",")
    assert len(spread_cells(tmp_path / "t.csv", ",", "a")) > 1000
    rows = [["id", "addr", "a"], *([str(i), "", f"{i}.25"] for i in range(500)),
            *([str(i), f'"Ташкент, Чиланзар 5\nкв. {i}"', f"{i}.25"] for i in range(500, 20000))]
    write_csv(tmp_path / "m.csv", rows, delim=",")
    assert spread_cells(tmp_path / "m.csv", ",", "a") == []


def test_the_typed_fast_path_stops_on_rows_whose_address_holds_a_line_break(tmp_path):
    """1 990 whole amounts and 10 `979.17`, then 3 000 UZS `150.000` on delivery rows whose quoted address holds a
    line break: the slices see none of those rows, so they may not say the column holds no ambiguous value; the
    typed fast path stops as the text path does."""
    amounts = [str(100 + i) for i in range(1990)] + ["979.17"] * 10 + _thousands(3000)
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "addr", "a"], *(
        [str(i), "x", "2026-11-01", '"Ташкент, Чиланзар 5\nкв. 7"' if i > 2000 else "", a]
        for i, a in enumerate(amounts, 1))])
    cols = {"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a"}
    with pytest.raises(BadFileError, match="column 'a' mixes decimal marks: 10 values read with '.'"):
        pull(tmp_path, columns=cols, timezone="UTC")


@pytest.mark.parametrize("every", [2, 300])
def test_the_typed_fast_path_stops_when_only_the_rows_with_a_line_break_hold_the_ambiguous_amounts(tmp_path, every):
    """One-line rows (whole amounts) and, one in ``every``, rows whose quoted address holds a line break (UZS
    `150.000`): the slices read values of the one-line rows only, so a line that does not fit the header and holds
    an ambiguous number says they do not stand for the column; the typed fast path stops as the text path does.
    Before: the slices passed (48 of 64 yield) and `150.000` read as 150.00 without a word; a rule on the share of
    such lines (1 %) still passed one in 300."""
    amounts = [f"{100 + i}.{10 + i % 89}" for i in range(30)] + [str(100 + i) for i in range(1970)]
    rows = [[str(i), "x", "2026-11-01", "", a] for i, a in enumerate(amounts, 1)]
    for i in range(1600 * every):
        if i % every == 0:
            rows.append([f"m{i}", "x", "2026-11-01", '"Ташкент, Чиланзар 5\nкв. 7"', f"{10 + i % 900}.{1 + i % 9}00"])
        else:
            rows.append([f"w{i}", "x", "2026-11-01", "", str(10 + i % 900)])
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "addr", "a"], *rows])
    cols = {"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a"}
    with pytest.raises(BadFileError, match="column 'a' mixes decimal marks: 30 values read with '.'"):
        pull(tmp_path, columns=cols, timezone="UTC")


def test_a_clean_file_with_a_few_notes_on_two_lines_keeps_the_typed_fast_path(tmp_path):
    """Clean amounts and a quoted two-line note on one row in 50 (a BILLZ/1C delivery note): the lines that do not
    fit the header hold no ambiguous number, so the slices still stand for the file (no whole-column vote)."""
    from connectors.file_lines import spread_cells

    rows = [["id", "note", "a"], *([str(i), '"позвонить\nзаранее"' if i % 50 == 0 else "", f"{i}.25"]
                                   for i in range(1, 40001))]
    write_csv(tmp_path / "n.csv", rows, delim=",")
    assert len(spread_cells(tmp_path / "n.csv", ",", "a")) > 1000


def test_the_typed_fast_path_does_not_oversample_a_block_of_long_lines(tmp_path):
    """2 000 whole amounts, then 20 000 UZS `150.000` on short rows and, mid-file, 350 prices `12.34` on long rows
    (an address): 1.75 % of the ambiguous values decide, too few, so the text path stops. Slices reading 32 lines
    each took 223 long rows among 1 665 ambiguous values (13 %, over the 10 % the margin asks); slices reading a
    fixed number of bytes take lines as the file holds them, and the typed fast path stops too."""
    amounts = [str(100 + i) for i in range(2000)] + _thousands(20000)
    at = len(amounts) // 2
    rows = [[str(i), "x", "2026-11-01", "", a] for i, a in enumerate(amounts, 1)]
    rows[at:at] = [[f"p{i}", "x", "2026-11-01", "Tashkent Chilonzor district street house flat " * 4,
                    f"{1 + i % 99}.{10 + i % 89}"] for i in range(350)]
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "addr", "a"], *rows])
    cols = {"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a"}
    with pytest.raises(BadFileError, match="column 'a' mixes decimal marks: 350 values read with '.'"):
        pull(tmp_path, columns=cols, timezone="UTC")


def test_shaped_values_let_the_cap_weigh_every_deciding_value(tmp_path):
    """1C prices printed with three decimals: 10 000 `99,900`, 30 `1 105,000` (decisive and shaped) and 120 `12,5`
    typed by hand: 150 deciding values, 3 of them shaped or more, are enough whatever the ambiguous ones' number
    (the cap); the prices read as prices. 50 `12.5` without a shaped one still stop 20 000 `150.000` (above)."""
    amounts = [f"{1 + i % 999},{(37 * i) % 1000:03d}" for i in range(10000)] + ["1 105,000"] * 30 + ["12,5"] * 120
    _csv(tmp_path, amounts)
    result, con = pull(tmp_path, columns=COLS)
    got = orders(con)
    assert result.bad_row_count == 0 and got["2"][2] == Decimal("2.04") and got["10001"][2] == Decimal("1105.00")
    assert got["10031"][2] == Decimal("12.50")
    _csv(tmp_path, amounts[:10000] + ["1 105,000"] * 2 + ["12,5"] * 120)
    with pytest.raises(BadFileError, match="column 'a' mixes decimal marks: 122 values read with ','"):
        pull(tmp_path, columns=COLS)


WIDE = {"order_id": "id", "customer_id": "c", "ordered_at": "d", "amount": "a", "price": "p", "quantity": "q"}


def _wide(tmp_path, rows: list[tuple[str, str, str]]) -> None:
    """A wide export: amount, price and quantity columns, ``rows`` of (amount, price, quantity)."""
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "a", "p", "q"],
                                       *([str(i), "x", "05.01.2024", *r] for i, r in enumerate(rows, 1))])


def _items(con) -> list[tuple]:
    return con.execute("SELECT price, quantity FROM staged_line_items ORDER BY order_id").fetchall()


def test_each_number_column_of_a_wide_export_is_decided_on_its_own(tmp_path):
    """`12,50` amounts and `1,299.99` prices: each column read by its own values, none misread; a quantity of
    `1,000` follows the money's mark (1C prints weights so: one unit). Characterisation: main read these so too."""
    _wide(tmp_path, [("12,50", "1,299.99", "2")] * 50)
    _, con = pull(tmp_path, columns=WIDE)
    assert orders(con)["1"][2] == Decimal("12.50") and _items(con)[0] == (Decimal("1299.99"), Decimal("2"))
    _wide(tmp_path, [("12,50", "12,50", "1,000")] * 50)
    _, con = pull(tmp_path, columns=WIDE)
    assert _items(con)[0] == (Decimal("12.50"), Decimal("1"))


def test_a_quantity_of_ambiguous_values_beside_money_columns_that_disagree_stops_naming_it(tmp_path):
    """`12,50` amounts (',') and `7.25` prices ('.'): which mark the quantities `1,000` use nothing says. Before,
    the money columns' majority (a tie: '.') read them as a thousand units each, silently."""
    _wide(tmp_path, [("12,50", "7.25", "1,000")] * 50)
    with pytest.raises(BadFileError) as e:
        pull(tmp_path, columns=WIDE)
    assert str(e.value) == (
        f"{tmp_path / 'sales.csv'}: column 'q' has 50 values such as '1,000', which mean a different number with "
        f"each decimal mark, and none that says which it uses: the file's other number columns disagree ('a' reads "
        f"',' as the decimal mark, 'p' reads '.' as the decimal mark); set [source] decimal = \",\" or \".\" to say "
        f"which the file uses")
    _, con = pull(tmp_path, columns=WIDE, decimal=",")  # the key the message names reads the file
    assert _items(con)[0] == (Decimal("7.25"), Decimal("1"))


@pytest.mark.parametrize("amount, price, mark", [("1 200,50", "1,500", ","), ("1,200.50", "1.500", ".")])
def test_a_money_column_of_ambiguous_values_against_the_files_decimal_mark_stops_naming_it(tmp_path, amount, price,
                                                                                            mark):
    """Amounts that say the file's decimal mark and prices that are all `1,500` with that mark: a price of three
    decimals, or thousands grouped by the file's decimal mark. Before, silently 1 500 (1000× the price of 1.5)."""
    _wide(tmp_path, [(amount, price, "2")] * 40)
    with pytest.raises(BadFileError) as e:
        pull(tmp_path, columns=WIDE)
    assert str(e.value).startswith(f"{tmp_path / 'sales.csv'}: column 'p' has 40 values such as '{price}', which")
    assert f"the file's other number columns ('a') read '{mark}' as the decimal mark" in str(e.value)
    _, con = pull(tmp_path, columns=WIDE, decimal=mark)
    assert _items(con)[0] == (Decimal("1.5"), Decimal("2")) and orders(con)["1"][2] == Decimal("1200.50")


SALES = {**WIDE, "discount": "disc"}


def _sales(tmp_path, rows: list[tuple[str, str, str, str]]) -> None:
    """A 1C sales export: amount, price, quantity and discount columns, ``rows`` of those four."""
    write_csv(tmp_path / "sales.csv", [["id", "c", "d", "a", "p", "q", "disc"],
                                       *([str(i), "x", "05.01.2024", *r] for i, r in enumerate(rows, 1))])


@pytest.mark.parametrize("discounts", [["0"] * 30 + ["0.5"], ["7.5"] * 31], ids=["one stray", "percent"])
def test_a_quantity_follows_the_mark_most_money_columns_read_past_a_stray_or_a_percent_discount(tmp_path,
                                                                                                 discounts):
    """`1 500,00` amounts, `150,00` prices and `10,000` quantities (ten units) with one stray `0.5` discount, or
    percent discounts written `7.5`: the amounts and prices settle ','. Before, any money column with one value
    read one way only counted as deciding, so the money columns "disagreed" and the export stopped."""
    _sales(tmp_path, [("1 500,00", "150,00", "10,000", d) for d in discounts])
    result, con = pull(tmp_path, columns=SALES)
    assert result.bad_row_count == 0 and _items(con)[0] == (Decimal("150.00"), Decimal("10"))
    assert orders(con)["1"][2] == Decimal("1500.00")


def test_the_ambiguous_columns_still_stop_when_the_deciding_money_columns_do_not_settle_them(tmp_path):
    """`45,990` prices beside `1 500,00` amounts stop past a stray `0.5` discount (it decides nothing); a quantity
    of `10,000` beside `1 500,00` amounts and `7.5` discounts (one column each way, prices `150`) stops too."""
    _sales(tmp_path, [("1 500,00", "45,990", "2", "0")] * 30 + [("1 500,00", "45,990", "2", "0.5")])
    with pytest.raises(BadFileError, match=r"column 'p' has 31 values such as '45,990'.* the file's other number "
                                           r"columns \('a'\) read ',' as the decimal mark"):
        pull(tmp_path, columns=SALES)
    _sales(tmp_path, [("1 500,00", "150", "10,000", "7.5")] * 30)
    with pytest.raises(BadFileError, match=r"column 'q' has 30 values such as '10,000'.* disagree \('a' reads ','"
                                           r" as the decimal mark, 'disc' reads '.' as the decimal mark\)"):
        pull(tmp_path, columns=SALES)


def test_a_money_column_of_ambiguous_values_beside_money_columns_that_disagree_stops_naming_it(tmp_path):
    """`1 500,00` amounts (',') and `7.5` percent discounts ('.'): which mark the prices `45,990` use nothing says
    (45.99 as the amounts read, 45 990 as the discounts do). Before, money's default read them as thousands,
    silently, where a quantity `1,000` in the same tie stopped."""
    _sales(tmp_path, [("1 500,00", "45,990", "2", "7.5")] * 30)
    with pytest.raises(BadFileError) as e:
        pull(tmp_path, columns=SALES)
    assert str(e.value) == (
        f"{tmp_path / 'sales.csv'}: column 'p' has 30 values such as '45,990', which mean a different number with "
        f"each decimal mark, and none that says which it uses: the file's other number columns disagree ('a' reads "
        f"',' as the decimal mark, 'disc' reads '.' as the decimal mark); set [source] decimal = \",\" or \".\" to say "
        f"which the file uses")
    _, con = pull(tmp_path, columns=SALES, decimal=",")  # the key the message names reads the file
    assert _items(con)[0] == (Decimal("45.99"), Decimal("2"))


@pytest.mark.parametrize("bad", ["1.234.5", "1.2.3,50", "1234.567,5", "12,5.", "12,50,", ",12,5", "1.234.567,",
                                 ",500", "12,", "12,50 сум.", "1 23,50", "12 3456,00", "1234 567,00", "12 5,50",
                                 "1\u00a023,50", "1'23,50", "1 234 56,00 сум"])
def test_malformed_values_do_not_vote_and_stay_bad_rows(tmp_path, bad):
    """Three values no documented form fits (``1.234.5``: a thousands group of one digit; ``1.2.3,50``;
    ``1234.567,5``: four digits before a thousands group; a mark at an end, ``12,5.``, ``,12,5``; ``,500``) are bad
    rows, and they said nothing of the column's mark: before, they voted ',' (a repeated mark or both marks; a mark
    at an end was stripped before the form was checked) and read the column's ``1,500`` thousands as 1.5. Thousands
    spaces not in threes (``1 23,50``, ``12 3456,00``, a first group of four digits ``1234 567,00``) are bad rows too:
    before, the spaces were dropped before the vote, so the value voted ',' (and ``1234 567,00`` was 1234567.00)."""
    _csv(tmp_path, ["1,500"] * 20 + [bad] * 3)
    result, con = pull(tmp_path, columns=COLS)
    got = orders(con)
    assert got["1"][2] == Decimal("1500.00") and got["20"][2] == Decimal("1500.00")
    assert [(b.row, b.field, b.value) for b in result.bad_rows] == [(r, "amount", bad) for r in (22, 23, 24)]
    assert nz.decimal_vote(bad) is None and vote_key(bad, money=True) is None


@pytest.mark.parametrize("value, vote", [("1.234.567", (",", True)), ("12,34,567", (".", True)),
                                         ("1,234,567.89", (".", True)), ("1.234,5", (",", True)),
                                         ("1.234.5", None), ("1,2,3", None), ("1.234.5,00", None),
                                         ("1,23.45", None), ("12345,678.9", None), ("12,5.", None),
                                         ("12,50,", None), (",12,5", None), ("1.234.567,", None), (",500", None),
                                         ("12,", None), (",5", (",", True)), ("12,50 р.", (",", True)),
                                         ("1 234,50 руб.", (",", True)), ("$1,234,567.", None),
                                         ("1 23,50", None), ("12 3456,00", None), ("1234 567,00", None),
                                         ("1\u202f23.5", None), ("12 500,5", (",", True)), ("1 234.567", (".", True))])
def test_only_values_a_documented_form_fits_vote(value, vote):
    assert nz.decimal_vote(value) == vote
    sql = nz.decimal_vote_sql("x")
    want = None if vote is None else vote[0]
    assert duckdb.connect().execute(f"SELECT {sql} FROM (SELECT ?::VARCHAR AS x)", [value]).fetchone()[0] == want


@pytest.mark.parametrize("amounts, decisive", [(["12,50"] * 5 + ["1.2.3,50"] * 100 + ["1,500"] * 3000, "5 values"),
                                               (["12,5"] * 3 + ["1.2.3,50"] * 200 + ["1,500"] * 3000, "3 values"),
                                               (["12,50"] * 5 + ["1 23,50"] * 100 + ["1,500"] * 3000, "5 values"),
                                               (["12,50"] * 5 + ["12 3456,00"] * 100 + ["1,500"] * 3000, "5 values")])
def test_malformed_values_of_the_first_guesss_mark_are_not_counted_by_the_whole_columns_shortcut(tmp_path, amounts,
                                                                                              decisive):
    """The whole-column vote counts a value of the first guess's usual shape (``12,50``) by one regular expression
    (``_clean_re``) without classifying it: a ``1.2.3,50`` (a bad row) fitted it before files28, so a hundred of them
    outvoted three thousand ``1,500`` and read them as 1.5. Now they are not counted: the few ``12,50`` alone stop
    the read (too few to decide against 3000 ``1,500``), the count naming only them. Nor is a ``1 23,50`` (thousands
    spaces not in threes, a bad row): it fitted the shortcut's shape until files29."""
    _csv(tmp_path, amounts)
    with pytest.raises(BadFileError) as e:
        pull(tmp_path, columns=COLS)
    assert (f"column 'a' mixes decimal marks: {decisive} read with ',' as the decimal mark only (e.g. '{amounts[0]}'), "
            "and 3000 values such as '1,500' mean a different number with each (too few values decide it)") in str(e.value)
