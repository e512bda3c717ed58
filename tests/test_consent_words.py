"""A file export's consent words (docs/sources/files.md, Consent): the words read as yes and no, and a value read
as neither, which is no (never beaten by an older yes, never a reason to subscribe) and reported once per distinct
value, naming its file, row and how many rows hold it; a warning line of every run that reads the file."""

from __future__ import annotations

import pytest

from connectors import normalize as nz
from tests.builders import run_cli, scratch_con
from tests.test_files import COLS, HEADER, contacts, pull, write_csv
from tests.test_guards_withdrawal import managed_contacts, plan_doc, set_consent, small_shop  # noqa: F401
from tests.test_worker import AS_OF


def answers(values: list[str | None]) -> dict[str | None, tuple[str | None, str]]:
    """value → (consent_word_sql, consent_sql) of it."""
    with scratch_con() as con:
        rows = con.execute(f"SELECT v, {nz.consent_word_sql('v')}, {nz.consent_sql('v')} FROM unnest(?) t(v)",
                           [values]).fetchall()
    return {v: (word, consent) for v, word, consent in rows}


# the hunter's words and the forms an export writes them in: read as yes or no now
@pytest.mark.parametrize("value, expected", [
    ("не согласна", "no"), ("Не согласна", "no"), ("не согласен", "no"), ("yo'q", "no"), ("yo‘q", "no"),
    ("yoʻq", "no"), ("yo’q", "no"), ("Yoʻq", "no"), ("йўқ", "no"), ("ҳа", "yes"), ("Ҳа", "yes"), ("1.0", "yes"),
    ("0.0", "no"), ("отказ", "no"), ("Отписан", "no"), ("отписана", "no"), ("отписалась", "no"),
    ("\u00a0да", "yes"), ("нет\u00a0", "no"), ("TRUE", "yes"), ("Ha", "yes"), ("-", "no"),
    # an ESP's export of its states: Mailchimp's, Shopify's, Klaviyo's
    ("opt_in", "yes"), ("single_opt_in", "yes"), ("Confirmed_Opt_In", "yes"), ("confirmed", "yes"),
    ("opted in", "yes"), ("double_opt_in", "yes"), ("not_subscribed", "no"), ("never_subscribed", "no"),
    ("cleaned", "no"), ("redacted", "no"), ("invalid", "no"), ("unsubscribed", "no"), ("pending", "unknown"),
])
def test_the_words_of_consent_and_refusal_are_read(value, expected):
    assert answers([value])[value] == (expected, expected)


def test_every_listed_word_is_read_as_its_list_says_in_any_case_and_with_spaces_around():
    words = [(w, "yes") for w in nz.CONSENT_YES] + [(w, "no") for w in nz.CONSENT_NO]
    assert not set(nz.CONSENT_YES) & set(nz.CONSENT_NO)
    values = [f" {form} " for w, _ in words for form in (w, w.upper(), w.capitalize())]
    got = answers(values)
    assert {v: got[v][0] for v in values} == {f" {form} ": a for w, a in words
                                               for form in (w, w.upper(), w.capitalize())}


def test_an_empty_cell_says_nothing_and_a_value_read_as_neither_is_no():
    """A cell of punctuation alone is a value read as neither (no, reported), not an empty cell: before, its
    trailing punctuation trimmed left '' and it said nothing, so an older "да" of the contact won silently."""
    unread = ("oui", "✓", "да?", "согласие", "рассылка", "подписка", "maybe", "да нет", "yes, but not sms",
              ".", "…", "...", ",", "!", " ! ")
    got = answers([None, "", "  ", "n/a", "NULL", *unread])
    assert {v: got[v] for v in (None, "", "  ", "n/a", "NULL")} == dict.fromkeys(
        (None, "", "  ", "n/a", "NULL"), ("unknown", "unknown"))
    assert {v: got[v] for v in unread} == dict.fromkeys(unread, (None, "no"))


# before, "Да." and the phrases a form writes were values read as neither: no, and reported
@pytest.mark.parametrize("value, expected", [
    ("Да.", "yes"), ("да!", "yes"), ("Yes.", "yes"), ("нет.", "no"), ("No!", "no"), ("1.", "yes"), ("0.", "no"),
    ("согласие дано", "yes"), ("Согласен на рассылку", "yes"), ("согласна на рассылку.", "yes"),
    ("Да, согласна", "yes"), ("Roziman", "yes"), ("obuna boʻlgan", "yes"), ("I agree", "yes"),
    ("consent given", "yes"), ("Opted-in", "yes"),
    ("согласие не дано", "no"), ("Не согласен на рассылку", "no"), ("нет согласия", "no"), ("rozi emas", "no"),
    ("Opt-out", "no"), ("declined", "no"), ("consent withdrawn", "no"),
])
def test_trailing_punctuation_and_the_unambiguous_phrases_are_read(value, expected):
    assert answers([value])[value] == (expected, expected)


CONSENT_HEADER = HEADER + ["Согласие"]


def _pull(tmp_path, rows):
    write_csv(tmp_path / "sales.csv", [CONSENT_HEADER, *rows])
    return pull(tmp_path, columns={**COLS, "marketing_consent": "Согласие"})


def test_a_newer_refusal_in_a_word_read_now_beats_an_older_yes(tmp_path):
    """The hunter's case: her older row "да", her newer "не согласна" (read as unknown before: the "да" won)."""
    result, con = _pull(tmp_path, [["1", "c1", "01.01.2024", "10", "", "a@example.com", "", "да"],
                                   ["2", "c1", "05.01.2024", "10", "", "a@example.com", "", "не согласна"],
                                   ["3", "c2", "01.01.2024", "10", "", "b@example.com", "", "да"],
                                   ["4", "c2", "05.01.2024", "10", "", "b@example.com", "", "yo‘q"]])
    assert {k: v[4] for k, v in contacts(con).items()} == {"c1": "no", "c2": "no"}
    assert result.issues == [] and result.issue_count == 0


def test_a_newer_value_read_as_neither_is_no_and_each_distinct_value_is_reported_once(tmp_path):
    result, con = _pull(tmp_path, [["1", "c1", "01.01.2024", "10", "", "a@example.com", "", "да"],
                                   ["2", "c1", "05.01.2024", "10", "", "a@example.com", "", "oui"],
                                   ["3", "c2", "01.01.2024", "10", "", "b@example.com", "", "oui"],
                                   ["4", "c3", "01.01.2024", "10", "", "c@example.com", "", "✓"],
                                   ["5", "c3", "02.01.2024", "10", "", "c@example.com", "", "да"],  # latest: yes
                                   ["6", "c4", "01.01.2024", "10", "", "d@example.com", "", ""]])
    assert {k: v[4] for k, v in contacts(con).items()} == {"c1": "no", "c2": "no", "c3": "yes", "c4": "unknown"}
    path = str(tmp_path / "sales.csv")
    assert [(i.source, i.row, i.field, i.value) for i in result.issues] == [
        (path, 3, "marketing_consent", "oui"), (path, 5, "marketing_consent", "✓")]
    assert "(2 rows): taken as no" in result.issues[0].reason and "(1 row)" in result.issues[1].reason
    assert result.issue_count == 2


def test_the_plan_withdraws_a_word_read_now_and_names_a_value_read_as_neither(small_shop):  # noqa: F811
    """Under ``skip``, a synced contact whose export now says "не согласна" (read as unknown before: he kept his
    tags) or "oui" (the same, and nothing said so) loses his managed tags, and the plan's warning names "oui"."""
    managed = managed_contacts(small_shop)
    (k1, c1), (k2, c2) = list(managed.items())[:2]
    set_consent(small_shop, "не согласна", {c1})
    set_consent(small_shop, "oui", {c2})
    doc = plan_doc(small_shop)
    assert doc["plans"][0]["withdrawn"] == sorted([k1, k2])
    (line,) = [w for w in doc["warnings"] if "read neither as yes nor as no" in w]
    assert line.startswith("1 marketing consent value read neither as yes nor as no: 'oui' (")
    # both were created subscribed by rfmsync (their consent was yes then): the withdrawal warning names them too
    (named,) = [w for w in doc["warnings"] if "rfmsync created subscribed" in w]
    assert named.startswith("mailchimp-demo: 2 contacts rfmsync created subscribed now have marketing consent")
    assert "clients.csv, row " in line and "each is taken as no" in line
    warm = run_cli("plan", "--config", str(small_shop), "--as-of", AS_OF.isoformat())  # the file is not read again
    assert "1 marketing consent value read neither as yes nor as no: 'oui'" in warm.stderr


def test_a_store_read_before_the_rule_reads_its_files_again_once(tmp_path, monkeypatch):
    """A store whose files were read before the rule (``не согласна`` stored as unknown, the older ``да`` won) reads
    every file once after the upgrade (the store FORMAT bump), so the refusal counts without an edit of the file."""
    import sync.store.files as store_files
    from connectors.files import FileSource, FileSourceConfig
    from sync.store import connect_store

    write_csv(tmp_path / "sales.csv", [CONSENT_HEADER, ["1", "c1", "01.01.2024", "10", "", "a@example.com", "", "да"],
                                       ["2", "c1", "05.01.2024", "10", "", "a@example.com", "", "не согласна"]])
    src = FileSource(FileSourceConfig(type="file", orders="sales.csv",
                                      columns={**COLS, "marketing_consent": "Согласие"}), tmp_path)
    current = store_files.FORMAT
    con = connect_store(tmp_path / "store.duckdb")
    monkeypatch.setattr(store_files, "FORMAT", 7)  # the release before the rule
    store_files.ingest_files(con, src)
    (view,) = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'ingest_f1'").fetchone()
    con.execute("DROP VIEW ingest_f1")  # what that release stored: no raw value, the refusal unknown
    con.execute("ALTER TABLE ingest_f1_data DROP COLUMN consent_raw")
    con.execute("UPDATE ingest_f1_data SET consent = 'unknown' WHERE consent = 'no'")
    con.execute(view.replace(" consent_raw,", ""))
    con.execute("UPDATE contacts SET marketing_consent = 'yes'")
    monkeypatch.setattr(store_files, "FORMAT", current)  # upgraded
    store_files.ingest_files(con, src)
    assert con.execute("SELECT customer_id, marketing_consent FROM contacts").fetchall() == [("c1", "no")]


def test_an_unread_consent_value_is_listed_past_the_limit_of_listed_issues(tmp_path, monkeypatch):
    """More invalid e-mails than the list holds before the one unread consent value: the value's issue
    is kept among the listed issues (the others cut to make room) and named in the warning line."""
    from connectors import file_staging
    from connectors.file_consent import consent_lines

    monkeypatch.setattr(file_staging, "MAX_BAD_ROWS", 20)
    rows = [[str(i), f"c{i}", "01.01.2024", "10", "", "not-an-email", "", "да"] for i in range(1, 31)]
    rows.append(["9999", "cX", "02.01.2024", "10", "", "x@example.com", "", "oui"])
    result, _ = _pull(tmp_path, rows)
    assert len(result.issues) == 20 and result.issue_count == 31
    assert [(i.row, i.value) for i in result.issues if i.field == "marketing_consent"] == [(32, "oui")]
    assert "'oui'" in consent_lines(result)[0]


def test_a_column_of_many_distinct_unread_values_fetches_only_the_listed_ones_and_counts_them_all(tmp_path,
                                                                                                   monkeypatch):
    """A mis-mapped consent column (a comment per row): the first ``MAX_BAD_ROWS`` values are fetched, in file and
    row order, and all are counted (before, every distinct value was fetched: 1 M values, +0.8 GB)."""
    from connectors.file_consent import consent_issues

    with scratch_con() as con:
        con.execute("""CREATE TABLE v AS SELECT 0 AS _file, i AS _row, 'c' || i AS key, 'note ' || (i % 50) AS
                       consent_raw FROM range(2, 202) t(i)""")
        issues, total = consent_issues(con, ["v"], ["a.csv"], 3)
        con.execute("DROP TABLE v")
    assert total == 50 and [(b.row, b.value) for b in issues] == [(2, "note 2"), (3, "note 3"), (4, "note 4")]
    assert "(4 rows)" in issues[0].reason
    monkeypatch.setattr("connectors.file_staging.MAX_BAD_ROWS", 5)
    result, _ = _pull(tmp_path, [[str(i), f"c{i}", "01.01.2024", "10", "", f"u{i}@example.com", "", f"note {i}"]
                                 for i in range(1, 9)])
    assert [i.value for i in result.issues] == [f"note {i}" for i in range(1, 6)] and result.issue_count == 8


def test_the_warning_counts_every_unread_value_of_a_cut_list(tmp_path, monkeypatch):
    """More distinct unread values than a pull lists: the line gives their exact count, also in a warm run (the
    store's summary keeps it). Before, it counted the listed ones (1 000 at most) as if they were all, then said
    "1 000+"; a summary saved before the count was kept still says so."""
    import dataclasses

    from connectors.file_consent import consent_lines

    monkeypatch.setattr("connectors.file_staging.MAX_BAD_ROWS", 5)
    result, _ = _pull(tmp_path, [[str(i), f"c{i}", "01.01.2024", "10", "", f"u{i}@example.com", "", f"note {i}"]
                                 for i in range(1, 9)])
    assert consent_lines(result)[0].startswith("8 marketing consent values read neither as yes nor as no: "
                                               "'note 1' (")
    assert " and 5 more;" in consent_lines(result)[0]
    assert consent_lines(result.issues)[0].startswith("5 marketing consent values")  # a list alone: as it is
    assert consent_lines(_warm(result))[0].startswith("8 marketing consent values")
    older = _warm(dataclasses.replace(result, consent_values=0))  # a summary without the count
    assert consent_lines(older)[0].startswith("5+ marketing consent values") and " and 2+ more;" in \
        consent_lines(older)[0]
    whole, _ = _pull(tmp_path, [[str(i), f"c{i}", "01.01.2024", "10", "", f"u{i}@example.com", "", f"note {i}"]
                                for i in range(1, 5)])
    assert consent_lines(whole)[0].startswith("4 marketing consent values") and " and 1 more;" in \
        consent_lines(whole)[0]


def _warm(result):
    """``result`` as a warm run reads it back from the store (sync.store.file_report)."""
    import json

    from sync.store import open_store
    from sync.store.file_report import FILES_TABLE, SUMMARY_TABLE, read_back, save_report
    from sync.store.files import create_ingest_tables

    with open_store(None) as con:
        create_ingest_tables(con)
        paths = sorted({b.source for b in result.issues + result.bad_rows})
        for i, path in enumerate(paths):
            con.execute(f"INSERT INTO {FILES_TABLE} (file_id, role, path) VALUES (?, 'contacts', ?)", [i, path])
        save_report(con, result, {p: i for i, p in enumerate(paths)})
        return read_back(con, json.loads(con.execute(f"SELECT summary FROM {SUMMARY_TABLE}").fetchall()[0][0]))
