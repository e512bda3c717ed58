"""Untrusted text read as a whole number (connectors/digits.py): only the digits 0-9. ``str.isdigit()`` also takes
``"²"`` and other Unicode digits, which ``int()`` refuses: a signed generic delivery's ``X-Rfmsync-Timestamp: ²``
was a 503 ("the event queue is unavailable") and an ERROR line instead of a 401, and the vendors' fields read so
raised a bare ValueError instead of their clear error."""

from __future__ import annotations

import json

import pytest

from connectors.digits import digits
from connectors.errors import FatalError
from connectors.http import parse_dt
from connectors.retailcrm_paging import history_entry, page_count
from tests.test_webhooks_generic import SECRET, ledger, make_client, order, post  # noqa: F401


@pytest.mark.parametrize("value, expected", [
    ("0", True), ("1733567400", True), ("", False), ("²", False), ("¹²³", False), ("١٢", False), ("12 ", False),
    ("-1", False), ("1.5", False), (12, False), (None, False), (b"12", False),
])
def test_digits_are_ascii_digits_only(value, expected):
    assert digits(value) is expected


@pytest.mark.parametrize("stamp", ["²", "¹²³"])
def test_a_generic_timestamp_of_superscript_digits_is_refused_with_401(make_client, caplog, stamp):  # noqa: F811
    client, _ = make_client()
    body = json.dumps(order()).encode()
    r = post(client, body, {"X-Rfmsync-Signature": "sha256=" + "0" * 64, "X-Rfmsync-Timestamp": stamp})
    assert (r.status_code, r.json()) == (401, {"error": "X-Rfmsync-Timestamp must be Unix seconds"})
    assert not [rec for rec in caplog.records if rec.levelname == "ERROR"]


def test_vendor_fields_of_superscript_digits_get_their_clear_errors():
    with pytest.raises(ValueError, match="Invalid isoformat string: '²'"):  # read as a date, not as Unix time
        parse_dt("²")
    with pytest.raises(FatalError, match=r"pagination.totalPageCount is '²', not a count"):
        page_count({"pagination": {"totalPageCount": "²"}}, "totalPageCount", "RetailCRM orders")
    with pytest.raises(FatalError, match="a history entry that is not an object with an integer id"):
        history_entry({"id": "²", "order": {}}, "order", "RetailCRM history")


def test_a_php_style_group_is_indexed_by_ascii_digits_only():
    """A vendor's form ``{"0": …, "1": …}`` is a list in index order; a key of superscript digits is no index (before:
    ``int("²")`` raised a bare ValueError out of as_list)."""
    from connectors.webhooks import as_list

    assert as_list({"1": "b", "0": "a"}) == ["a", "b"]
    assert as_list({"²": "x"}) == [{"²": "x"}] and as_list({"0": "a", "¹": "b"}) == [{"0": "a", "¹": "b"}]
