"""One person typed two ways, two people typed alike: a phone's extension, a fullwidth address, a number a digit
short. The file exports' batch normalisers (``email_map``, ``phone_map`` in DuckDB) and the one-value twins (API and
webhook contacts) give the same key, and identity linking (rule 3) follows it."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from connectors import email_phone as ep
from tests.test_identity import keys, people, pull, write


def _batch_emails(values: list[str]) -> dict[str, str | None]:
    con = duckdb.connect()
    con.register("v", pa.table({"raw": values}))
    ep.email_map(con, "SELECT raw FROM v", "m")
    return dict(con.execute("SELECT raw, norm FROM m").fetchall())


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
