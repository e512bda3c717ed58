"""An older store's e-mails normalised once (sync.store.lookup.normalise_emails) before the exact e-mail index is
read: the plain-ASCII shortcut must not skip a punycode domain, which normalises to its Unicode form (the resync
looks up ``user@sub.рф``; a stored ``user@sub.xn--p1ai`` left as it was hid that card's "no")."""

import duckdb

from connectors.email_phone import normalize_email
from sync.store.lookup import normalise_emails


def test_plain_ascii_is_skipped_but_a_punycode_domain_is_normalised():
    con = duckdb.connect()
    con.execute("CREATE TABLE contacts (email VARCHAR)")
    con.execute("INSERT INTO contacts VALUES ('user@sub.xn--p1ai'), ('plain@x.com'), (' FAM@Shop.UZ '), (NULL)")
    assert normalise_emails(con, "contacts", plain_skipped=True) == 2
    got = {e for (e,) in con.execute("SELECT email FROM contacts WHERE email IS NOT NULL").fetchall()}
    assert got == {normalize_email("user@sub.xn--p1ai"), "plain@x.com", "fam@shop.uz"}
    assert normalize_email("user@sub.xn--p1ai") != "user@sub.xn--p1ai"
