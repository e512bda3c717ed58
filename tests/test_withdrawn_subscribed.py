"""hunt32b F3: a consent withdrawn in the source by a contact rfmsync itself created ``subscribed``. rfmsync never
changes an existing contact's status (docs/sync.md, "Consent"), so he stays subscribed in the ESP; ``plan`` and
``sync`` now say so: a warning line naming him, ``withdrawn_subscribed`` in the plan JSON and in the run's counts.
The ledger (``subscribed_by_us``, SQLite and PostgreSQL) tells him from a contact created transactional.

Through the CLI against the fake Mailchimp, the store fed by the real file pull of the demo shop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync.ledger import Ledger
from sync.model import ItemResult
from tests import ledger_fixtures
from tests.builders import run_cli as cli
from tests.test_config_moved import AS_OF, shop  # noqa: F401

ledger_url = ledger_fixtures.ledger_url  # the fixture: SQLite, and PostgreSQL when RFMSYNC_TEST_PG_URL is set
NAME = "mailchimp-demo"


def _set_consent(shop: Path, customer: str, old: str, new: str) -> None:  # noqa: F811
    """The export's card of ``customer`` says ``new`` now (it said ``old``)."""
    clients = shop.parent / "clients.csv"
    lines = clients.read_text(encoding="utf-8").split("\n")
    row = next(i for i, line in enumerate(lines) if line.startswith(f"{customer};"))
    assert f";{old};" in lines[row], lines[row]
    lines[row] = lines[row].replace(f";{old};", f";{new};")
    clients.write_text("\n".join(lines), encoding="utf-8")


def _json(result) -> dict:
    out = result.output
    return json.loads(out[out.index("{\n"):])


def test_a_withdrawal_by_a_contact_rfmsync_subscribed_is_said_by_plan_and_sync(shop, mailchimp_fake,  # noqa: F811
                                                                              ledger_url, monkeypatch):
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", ledger_url)
    first = _json(cli("sync", "--config", str(shop), "--as-of", AS_OF, "--format", "json"))
    assert "withdrawn_subscribed" not in first["destinations"][0]["counts"]
    doc = _json(cli("plan", "--config", str(shop), "--as-of", AS_OF, "--format", "json"))
    assert doc["plans"][0]["withdrawn_subscribed"] == []
    members = mailchimp_fake.lists["aud1"].members
    subscribed = sorted(k for k, m in members.items() if m["status"] == "subscribed")
    transactional = sorted(k for k, m in members.items() if m["status"] == "transactional")
    assert len(subscribed) >= 2 and transactional
    clients = (shop.parent / "clients.csv").read_text(encoding="utf-8").split("\n")

    def customer_of(key: str) -> str:
        return next(line.split(";")[0].lstrip("\ufeff") for line in clients if f";{key};" in line.lower())

    gone = subscribed[0]
    _set_consent(shop, customer_of(gone), "да", "нет")  # he withdraws in the source
    # one created transactional (no consent then) who says no now: not rfmsync's subscriber, never named
    quiet = next((k for k in transactional if ";нет;" in next(l for l in clients if f";{k};" in l.lower())), None)
    cli("pull", "--config", str(shop))

    plan = cli("plan", "--config", str(shop), "--as-of", AS_OF, "--format", "json")
    doc = _json(plan)
    assert doc["plans"][0]["withdrawn_subscribed"] == [gone]
    line = next(w for w in doc["warnings"] if "withdrawn_subscribed" in w)
    assert line.startswith(f"{NAME}: 1 contact rfmsync created subscribed now has marketing consent \"no\"")
    assert gone in line and "unsubscribe him in the ESP" in line and "'transactional'" in line

    synced = cli("sync", "--config", str(shop), "--as-of", AS_OF, "--format", "json")
    report = _json(synced)
    assert report["destinations"][0]["counts"]["withdrawn_subscribed"] == 1
    assert any(gone in w and "withdrawn_subscribed" in w for w in report["warnings"])
    # said, not changed: the default sends no status for an existing member
    assert mailchimp_fake.member(gone, "aud1")["status"] == "subscribed"
    if quiet is not None:
        assert quiet not in doc["plans"][0]["withdrawn_subscribed"]
    # the table plan says it too (the warning on stderr, in every format)
    assert gone in cli("plan", "--config", str(shop), "--as-of", AS_OF).output

    # he consents again: named no more
    _set_consent(shop, customer_of(gone), "нет", "да")
    cli("pull", "--config", str(shop))
    doc = _json(cli("plan", "--config", str(shop), "--as-of", AS_OF, "--format", "json"))
    assert doc["plans"][0]["withdrawn_subscribed"] == []


def test_the_ledger_records_whom_rfmsync_created_subscribed(ledger_url):
    ledger = Ledger.connect(ledger_url)
    try:
        assert not ledger.has_subscribed("mc")
        assert ledger.record_subscribed("mc", None, ["a@x.org", "b@x.org", "a@x.org"]) == 2
        ledger.record_subscribed("mc", None, ["b@x.org"])  # again: kept once
        ledger.record_subscribed("other", None, ["c@x.org"])
        assert ledger.has_subscribed("mc")
        assert ledger.subscribed_among("mc", ["a@x.org", "b@x.org", "c@x.org", "d@x.org"]) == {"a@x.org", "b@x.org"}
        many = [f"k{i}@x.org" for i in range(6000)] + ["a@x.org"]  # past the by-key limit: read once, filtered
        assert ledger.subscribed_among("mc", many) == {"a@x.org"}
        assert ledger.forget_subscribed("mc", ["a@x.org"]) == 1
        assert ledger.subscribed_among("mc", ["a@x.org", "b@x.org"]) == {"b@x.org"}
        assert ledger.subscribed_among("other", ["c@x.org"]) == {"c@x.org"}
    finally:
        ledger.close()


def test_a_forgotten_destination_forgets_whom_it_subscribed_and_a_renamed_one_takes_them_over(ledger_url):
    from sync.planning.target import TARGET_CURSOR

    ledger = Ledger.connect(ledger_url)
    try:
        ledger.record_subscribed("old", None, ["a@x.org", "b@x.org"])
        ledger.record_subscribed("new", None, ["b@x.org"])
        ledger.take_over("old", "new", (TARGET_CURSOR, "old"))
        assert ledger.subscribed_among("new", ["a@x.org", "b@x.org"]) == {"a@x.org", "b@x.org"}
        assert not ledger.has_subscribed("old")
        ledger.forget_destination("new", (TARGET_CURSOR, "new"), untagged=False)
        assert not ledger.has_subscribed("new")
        # a retire-only destination forgotten beside another of its target (sync.takeover.heir_of): that one
        # takes its record over, in the same transaction, keeping its own row of a contact both hold
        ledger.record_subscribed("retired", None, ["a@x.org", "b@x.org"])
        ledger.record_subscribed("owner", None, ["b@x.org"])
        ledger.forget_destination("retired", (TARGET_CURSOR, "retired"), untagged=False, heir="owner")
        assert not ledger.has_subscribed("retired")
        assert sorted(ledger.subscribed_keys("owner")) == ["a@x.org", "b@x.org"]
    finally:
        ledger.close()


def test_the_apply_records_its_subscribed_creates_and_forgets_one_created_again_otherwise(ledger_url):
    """The outcome writer: a create that succeeded with the status ``subscribed`` is recorded; a failed one, an
    update and a create under another status are not, and the last (the ESP lost him, created transactional since)
    forgets the record."""
    from sync.model import CallResults, ContactChange, ItemResult
    from sync.outcomes import OutcomeWriter

    def change(key: str, create: bool, status: str | None) -> ContactChange:
        return ContactChange(key=key, email=key, customer_id=key, segment="Churn", create=create, status_if_new=status)

    ledger = Ledger.connect(ledger_url)
    try:
        run = ledger.start_run("sync", "mc")
        first = {c.key: c for c in (change("a@x.org", True, "subscribed"), change("b@x.org", True, "subscribed"),
                                    change("c@x.org", False, "subscribed"), change("d@x.org", True, "transactional"))}
        writer = OutcomeWriter(ledger, "mc", run, changes=first)
        writer.submit([], CallResults([("upsert", ["a@x.org", "c@x.org", "d@x.org"])],
                                      [ItemResult("b@x.org", "upsert", False, "timeout")]))
        writer.close()
        assert ledger.subscribed_among("mc", first) == {"a@x.org"}
        again = {"a@x.org": change("a@x.org", True, "transactional")}  # lost by the ESP, consent no since
        writer = OutcomeWriter(ledger, "mc", run, changes=again)
        writer.submit([], CallResults([("upsert", ["a@x.org"])]))
        writer.close()
        assert ledger.subscribed_among("mc", first) == set()
    finally:
        ledger.close()


def test_many_saying_no_are_matched_in_duckdb_as_few_are_by_key(ledger_url):
    """Past the by-key limit the ledger's keys are joined in DuckDB: the same contacts named, sorted."""
    import duckdb

    from sync.ledger.subscribed import BY_KEY_LIMIT
    from sync.planning.columnar import PUSHED
    from sync.planning.rows import DESIRED
    from sync.planning.withdrawn import withdrawn_subscribed

    ledger = Ledger.connect(ledger_url)
    con = duckdb.connect()
    try:
        for n in (40, 2 * BY_KEY_LIMIT + 40):  # half of them say no; one in 20 of those rfmsync subscribed
            ledger.record_subscribed("mc", None, [f"c{i:06d}@x.org" for i in range(n) if i % 40 == 0 or i % 2])
            con.execute(f"CREATE OR REPLACE TABLE r AS SELECT 'c' || lpad(CAST(i AS VARCHAR), 6, '0') || '@x.org' "
                        f"AS _key, CASE WHEN i % 2 = 0 THEN 'no' ELSE 'yes' END AS marketing_consent, "
                        f"i % 80 <> 40 AS present FROM range({n}) t(i)")
            con.execute(f"CREATE OR REPLACE VIEW {DESIRED} AS SELECT _key, marketing_consent FROM r")
            con.execute(f"CREATE OR REPLACE VIEW {PUSHED} AS SELECT _key AS key, present FROM r")
            # said no, subscribed by rfmsync, in the ESP (the ledger's present): i % 40 == 0 but i % 80 == 40
            assert withdrawn_subscribed(con, ledger, "mc") == tuple(f"c{i:06d}@x.org" for i in range(0, n, 80))
    finally:
        con.close()
        ledger.close()


def _yes_customers(shop: Path) -> list[tuple[str, str]]:  # noqa: F811
    """(customer id, e-mail) of the export's customers who say yes, in the file's order."""
    out = []
    for line in (shop.parent / "clients.csv").read_text(encoding="utf-8").split("\n")[1:]:
        cells = line.split(";")
        mail = next((c for c in cells if "@" in c), None)
        if ";да;" in line and mail:
            out.append((cells[0].lstrip("\ufeff"), mail.lower()))
    return out


def test_a_member_the_audience_already_held_is_not_recorded_as_subscribed_by_rfmsync(shop, mailchimp_fake,  # noqa: F811
                                                                                     ledger_url, monkeypatch):
    """review-consent32 MUST 1: Mailchimp answers a create of an address it already holds ERROR_CONTACT_EXISTS
    (his status untouched); the apply took it as a success and recorded him "created subscribed", so the plan told
    the user to unsubscribe someone who had left (or joined) the audience himself. Only ``new_members`` count."""
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", ledger_url)
    (c1, m1), (c2, m2), (c3, m3) = _yes_customers(shop)[:3]
    mailchimp_fake.add_member(m1, status="unsubscribed", list_id="aud1")  # he left the audience himself before
    mailchimp_fake.add_member(m2, status="subscribed", list_id="aud1")  # he subscribed himself before
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--format", "json")
    assert mailchimp_fake.member(m1, "aud1")["status"] == "unsubscribed"  # (his status untouched)
    assert mailchimp_fake.member(m3, "aud1")["status"] == "subscribed"  # created by rfmsync
    led = Ledger.connect(ledger_url)
    try:
        assert led.subscribed_among(NAME, [m1, m2, m3]) == {m3}
    finally:
        led.close()
    for customer in (c1, c2, c3):
        _set_consent(shop, customer, "да", "нет")
    cli("pull", "--config", str(shop))
    doc = _json(cli("plan", "--config", str(shop), "--as-of", AS_OF, "--format", "json"))
    assert doc["plans"][0]["withdrawn_subscribed"] == [m3]
    line = next(w for w in doc["warnings"] if "withdrawn_subscribed" in w)
    assert m3 in line and m1 not in line and m2 not in line


def test_an_exists_answer_without_fields_to_write_is_not_recorded(ledger_url):
    """The outcome writer: an ``upsert`` result flagged ``existed`` (Mailchimp's ERROR_CONTACT_EXISTS for a create
    with no field to write, or a spilled create's update) is neither recorded nor forgets an earlier record."""
    from sync.model import CallResults, ContactChange, ItemResult
    from sync.outcomes import OutcomeWriter

    changes = {k: ContactChange(key=k, email=k, customer_id=k, segment="Churn", create=True,
                                status_if_new="subscribed") for k in ("a@x.org", "b@x.org", "c@x.org")}
    ledger = Ledger.connect(ledger_url)
    try:
        ledger.record_subscribed("mc", None, ["c@x.org"])  # created by rfmsync once, lost by the ledger since
        writer = OutcomeWriter(ledger, "mc", ledger.start_run("sync", "mc"), changes=changes)
        writer.submit([], CallResults([("upsert", ["a@x.org"])], [ItemResult("b@x.org", "upsert", True, existed=True),
                                                                   ItemResult("c@x.org", "upsert", True, existed=True)]))
        writer.close()
        assert ledger.subscribed_among("mc", changes) == {"a@x.org", "c@x.org"}
    finally:
        ledger.close()


def test_a_move_to_another_audience_forgets_whom_rfmsync_subscribed_in_the_old_one(ledger_url):
    """review-consent32 MUST 2: ``move_state`` kept the old audience's ``subscribed_by_us`` rows, so the new
    audience's contacts were believed created subscribed by rfmsync (docs/ledger.md says a move deletes them)."""
    from sync.planning.target import TARGET_CURSOR

    ledger = Ledger.connect(ledger_url)
    try:
        ledger.record_subscribed("mc", None, ["a@x.org"])
        ledger.record_subscribed("other", None, ["a@x.org"])
        ledger.move_state("mc", (TARGET_CURSOR, "mc"), "mailchimp:aud2")
        assert not ledger.has_subscribed("mc")
        assert ledger.has_subscribed("other")  # another destination's rows stay
    finally:
        ledger.close()


def test_the_record_is_written_in_the_transaction_of_the_state_save(ledger_url):
    """review-consent32 SHOULD: the record was its own transaction after the state save, so a process killed
    between the two left the contact's state saved and the record missing (or, on the forget path, a stale record
    kept). A database that refuses the record (a trigger, standing for the kill) now rolls the state save back too:
    the next run plans him again, and records him then."""
    from sqlalchemy import create_engine, text

    from sync.model import ContactChange, PushedState
    from sync.outcomes import OutcomeWriter

    ledger = Ledger.connect(ledger_url)
    engine = create_engine(ledger_url)
    try:
        run = ledger.start_run("sync", "mc")
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.execute(text("CREATE TRIGGER refuse_record BEFORE INSERT ON subscribed_by_us "
                                  "BEGIN SELECT RAISE(ABORT, 'killed'); END"))
            else:
                conn.execute(text("CREATE OR REPLACE FUNCTION refuse_record() RETURNS trigger AS "
                                  "$$ BEGIN RAISE EXCEPTION 'killed'; END $$ LANGUAGE plpgsql"))
                conn.execute(text("CREATE TRIGGER refuse_record BEFORE INSERT ON subscribed_by_us "
                                  "FOR EACH ROW EXECUTE FUNCTION refuse_record()"))
        changes = {"a@x.org": ContactChange(key="a@x.org", email="a@x.org", customer_id="a", segment="Churn",
                                            create=True, status_if_new="subscribed")}
        writer = OutcomeWriter(ledger, "mc", run, changes=changes)
        writer.submit([PushedState("a@x.org", "a", frozenset({"Churn"}), {}, True)],
                      [ItemResult("a@x.org", "upsert", True)])
        with pytest.raises(Exception, match="killed"):
            writer.close()
        assert "a@x.org" not in ledger.load_state("mc")  # not saved without its record
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER IF EXISTS refuse_record" +
                              ("" if conn.dialect.name == "sqlite" else " ON subscribed_by_us")))
        engine.dispose()
        ledger.close()
