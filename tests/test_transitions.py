"""Transition tags (issue 16 §2): config validation, naming per ESP, the SQL relation, and end to end against the
fake Mailchimp: a move adds the tag once, a re-run the same day adds nothing, it goes after ``transition_days``
or at the next move; a webhook resync records the move."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from sync.config import Config, load_config
from sync.errors import ConfigError
from sync.ledger import Ledger
from sync.planning import transitions as tr
from tests.builders import config_error, run_cli

D0 = date(2025, 6, 30)
BASE = {"name": "mc", "type": "mailchimp", "audience": "aud1", "segments": {"Best active": "VIP", "Churn": "Winback"}}


def config(tmp_path: Path, transitions: str, extra: str = "") -> Path:
    path = tmp_path / "rfmsync.toml"
    path.write_text(f"""[segmentation]\npreset = "tracks"\n[[destinations]]\nname = "mc"\ntype = "mailchimp"
audience = "aud1"\n{extra}\n[destinations.segments]\n"Best active" = "VIP"\n"Churn" = "Winback"
[destinations.transitions]\n{transitions}\n""", encoding="utf-8")
    return path


@pytest.mark.parametrize("line, message", [
    ('"Best activ -> Falling asleep" = "rfm-slipping"',
     "'Best activ -> Falling asleep': unknown segment 'Best activ' (did you mean 'Best active'?); the segments are "
     "Best active, Falling asleep, Churn, Beginners, Other"),
    ('"* -> Chrun" = "rfm-churned"', "unknown segment 'Chrun' (did you mean 'Churn'?)"),
    ('"Churn" = "x"', "'Churn' is not \"FROM -> TO\""),
    ('"Be* -> Churn" = "x"', "* stands alone for any segment"),
    ('"Churn -> Churn" = "x"', "a move goes to another segment, so this never happens"),
    ('"* -> Churn" = "Winback"', "Winback is also a segment tag of this destination"),
])
def test_a_bad_transition_is_a_config_error_naming_the_file_destination_and_pattern(tmp_path, line, message):
    path = config(tmp_path, line)
    error, out = config_error(path)
    assert error.startswith(f"{path}: destination 'mc': [destinations.transitions]")
    assert message in error
    assert message.split(":")[0] in out


def test_custom_rule_names_are_segment_names_and_transition_days_defaults_to_7(tmp_path):
    path = config(tmp_path, '"* -> Reorder due" = "rfm-reorder"')
    path.write_text(path.read_text(encoding="utf-8").replace(
        '[[destinations]]', '[[segmentation.rules]]\nname = "Reorder due"\nmatch = ["R1F1"]\n[[destinations]]'),
        encoding="utf-8")
    dest = load_config(path).destinations[0]
    assert dest.transition_days == 7 and tr.transition_managed(dest) == ["rfm-reorder"]
    with pytest.raises(ConfigError, match="transition_days: Input should be greater than or equal to 1"):
        load_config(config(tmp_path, '"* -> Churn" = "x"', extra="transition_days = 0"))


def test_transition_tags_are_named_like_each_destinations_segment_tags():
    cfg = Config(destinations=[
        {**BASE, "tag_prefix": "rfm/", "transitions": {"* -> Churn": "churned"}},
        {"name": "sg", "type": "sendgrid", "list_prefix": "RFM ", "transitions": {"* -> Churn": "churned"}},
        {"name": "us", "type": "unisender", "transitions": {"* -> Churn": "churned"}},
    ])
    assert [tr.transition_managed(d) for d in cfg.destinations] == [["rfm/churned"], ["RFM churned"], ["tag:churned"]]
    from sync.planning.plan import all_managed

    assert all_managed(cfg.destinations[0]) == ["rfm/VIP", "rfm/Winback", "rfm/churned"]  # managed tags too


def test_the_sql_relation_gives_the_same_tags_as_the_planner_rows():
    dest = Config(destinations=[{**BASE, "transition_days": 3, "transitions": {
        "Best active -> Falling asleep": "slipping", "* -> Churn": "churned", "Churn -> *": "back"}}]).destinations[0]
    moves = [("a", "Best active", "Falling asleep", 0), ("b", "Falling asleep", "Churn", 2),
             ("c", "Best active", "Churn", 3), ("d", "Churn", "Beginners", 1), ("e", "Beginners", "Other", 0)]
    con = duckdb.connect()
    con.execute("CREATE TABLE m (customer_id VARCHAR, from_segment VARCHAR, to_segment VARCHAR, moved_days INT)")
    con.executemany("INSERT INTO m VALUES (?, ?, ?, ?)", moves)
    by_sql: dict[str, set[str]] = {}
    for cid, tag in con.sql(tr.transition_tags_sql(dest, "SELECT * FROM m")).fetchall():
        by_sql.setdefault(cid, set()).add(tag)
    by_rows = {cid: set(tags) for cid, f, t, days in moves
               if (tags := tr.tags_for_row(dest, {"moved_from": f, "moved_to": t, "moved_days": days}))}
    assert by_sql == by_rows == {"a": {"slipping"}, "b": {"churned"}, "d": {"back"}}  # c: 3 days is too old


# ------------------------------------------------------------------------------------------- end to end

ORDERS_HEADER = "order_id,customer_id,ordered_at,amount,status,email\n"


def order_line(oid: str, cid: str, day: date, amount: int) -> str:
    return f"{oid},{cid},{day.isoformat()} 12:00,{amount},completed,{cid}@example.org\n"


@pytest.fixture
def tiny(tmp_path, mailchimp_fake, monkeypatch):
    """A shop scored on fixed thresholds, so each move is known in advance (tracks on 3 levels)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    rows = [order_line(f"x{i}", "x", D0 - timedelta(days=130 - 10 * i), 1000) for i in range(4)]  # Churn
    rows += [order_line(f"v{i}", "v", D0 - timedelta(days=120 - 10 * i), 1000) for i in range(2)]  # Churn (F2)
    rows += [order_line(f"y{i}", "y", D0 - timedelta(days=5 + i), 1000) for i in range(4)]  # Best active
    rows += [order_line(f"w{i}", "w", D0 - timedelta(days=88 + i), 1000) for i in range(4)]  # Best active, R2
    (folder / "orders.csv").write_text(ORDERS_HEADER + "".join(rows), encoding="utf-8")
    (folder / "rfmsync.toml").write_text("""[source]
type = "file"
orders = "orders.csv"
timezone = "UTC"
[source.columns]
order_id = "order_id"
customer_id = "customer_id"
ordered_at = "ordered_at"
amount = "amount"
status = "status"
email = "email"
[segmentation]
preset = "tracks"
method = "thresholds"
[segmentation.thresholds]
recency_days = [30, 90]
frequency = [2, 4]
monetary = [100, 1000]
[guards]
max_removal_pct = 100
max_change_pct = 100
max_customer_drop_pct = 100
stale_days = 0
[[destinations]]
name = "mc"
type = "mailchimp"
audience = "aud1"
[destinations.segments]
"Best active" = "VIP"
"Churn" = "Winback"
"Beginners" = "Welcome"
[destinations.transitions]
"Churn -> *" = "rfm-back"
"* -> Churn" = "rfm-churned"
""", encoding="utf-8")
    monkeypatch.setenv("MAILCHIMP_API_KEY", mailchimp_fake.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", mailchimp_fake.url)
    return folder / "rfmsync.toml"


def buy(shop: Path, oid: str, cid: str, day: date) -> None:
    with (shop.parent / "orders.csv").open("a", encoding="utf-8") as f:
        f.write(order_line(oid, cid, day, 1000))


def sync(shop: Path, day: date) -> None:
    run_cli("sync", "--config", str(shop), "--as-of", day.isoformat())


def tag_adds(fake, tag: str, email: str) -> int:
    """How many calls added ``email`` to the Mailchimp tag ``tag``."""
    ids = {sid for sid, s in fake.lists["aud1"].segments.items() if s["name"] == tag}
    return sum(1 for method, path, _, body in fake.requests
               if method == "POST" and path.rsplit("/", 1)[-1].isdigit() and int(path.rsplit("/", 1)[-1]) in ids
               and email in (body or {}).get("members_to_add", []))


def ledger_tags(shop: Path, email: str) -> set[str]:
    ledger = Ledger.connect(f"sqlite:///{shop.parent / 'rfmsync.db'}")
    try:
        return set(ledger.load_state("mc")[email].tags)
    finally:
        ledger.close()


def test_a_move_adds_its_tag_once_and_it_goes_after_transition_days_or_at_the_next_move(tiny, mailchimp_fake,
                                                                                         caplog):
    import json
    import logging

    caplog.set_level(logging.WARNING)
    fake, x, v, w = mailchimp_fake, "x@example.org", "v@example.org", "w@example.org"
    sync(tiny, D0)  # the first record: nobody has moved yet
    assert "in use" not in caplog.text  # the store without history yet is not "another process's"
    assert not any(t.startswith("rfm-") for e in (x, v, w) for t in fake.tags_of(e))

    d1 = D0 + timedelta(days=1)
    buy(tiny, "x9", "x", d1)  # x: Churn → Best active
    buy(tiny, "v2", "v", d1)  # v: Churn → Beginners (3 orders)
    run_cli("plan", "--config", str(tiny), "--as-of", d1.isoformat(), "-o", str(tiny.parent / "plan.json"))
    plan = json.loads((tiny.parent / "plan.json").read_text(encoding="utf-8"))
    lines = {r["target"]: r for r in plan["plans"][0]["summary"]}
    assert (lines["rfm-back"]["added"], lines["rfm-churned"]["added"]) == (2, 0)  # their own lines in the plan
    sync(tiny, d1)
    assert "rfm-back" in fake.tags_of(x) and "rfm-back" in fake.tags_of(v)
    assert "rfm-back" in ledger_tags(tiny, x) and "VIP" in ledger_tags(tiny, x)
    assert tag_adds(fake, "rfm-back", x) == 1

    writes = fake.write_calls
    sync(tiny, d1)  # the same day again: nothing to add, nothing written
    assert fake.write_calls == writes and tag_adds(fake, "rfm-back", x) == 1

    d3 = D0 + timedelta(days=3)
    buy(tiny, "v3", "v", d3)  # v moves again (Beginners → Best active): its move tag goes before its days are up
    sync(tiny, d3)  # w: 91 days since its last order → Churn
    assert "rfm-back" not in fake.tags_of(v) and "rfm-back" not in ledger_tags(tiny, v)
    assert "rfm-back" in fake.tags_of(x)
    assert "rfm-churned" in fake.tags_of(w) and tag_adds(fake, "rfm-churned", w) == 1

    sync(tiny, d1 + timedelta(days=6))  # six days after the move: still on
    assert "rfm-back" in fake.tags_of(x)
    sync(tiny, d1 + timedelta(days=7))  # transition_days (7) later: off, added exactly once in all
    assert "rfm-back" not in fake.tags_of(x) and "rfm-back" not in ledger_tags(tiny, x)
    assert "VIP" in fake.tags_of(x) and tag_adds(fake, "rfm-back", x) == 1
    assert "rfm-churned" in fake.tags_of(w)  # moved on d3: 5 days
    assert not fake.violations

    hist = run_cli("history", "--config", str(tiny), "--from", d1.isoformat(), "--to", d3.isoformat(),
                   "--format", "csv").stdout
    assert "Best active,Churn,1" in hist  # w


def test_a_history_that_cannot_be_recorded_never_fails_a_sync_that_wrote_its_esp(tiny, mailchimp_fake, caplog):
    """A store whose history table is not the one this version writes (a broken or foreign store): the sync
    still exits 0 with its ESP writes done, and says the history was not recorded."""
    from sync.pipeline import store_path

    with duckdb.connect(str(store_path(load_config(tiny)))) as con:
        con.execute("CREATE TABLE segment_history_records (x INTEGER)")  # not the contract's columns
    sync(tiny, D0)  # run_cli asserts exit 0
    assert ledger_tags(tiny, "x@example.org")  # the ESP was written and recorded in the ledger
    assert any("segment history not recorded" in r.getMessage() for r in caplog.records)


def test_a_changed_preset_starts_a_new_line_and_gives_nobody_a_move_tag(tiny, mailchimp_fake):
    sync(tiny, D0)
    text = tiny.read_text(encoding="utf-8")
    # a condition every customer meets (a score pattern taking every score would leave the mapped segments
    # unreachable: a config error)
    tiny.write_text(text.replace('[segmentation.thresholds]', '[[segmentation.rules]]\nname = "Anyone"\n'
                                 'match = ["frequency >= 1"]\n[segmentation.thresholds]')
                    .replace('"Churn -> *" = "rfm-back"', '"* -> Anyone" = "rfm-any"'), encoding="utf-8")
    sync(tiny, D0 + timedelta(days=1))  # every customer now "Anyone": new rules, not a flood of moves
    assert not any("rfm-any" in mailchimp_fake.tags_of(f"{c}@example.org") for c in "xvyw")
    assert "a new line" in run_cli("history", "--config", str(tiny)).output


def test_a_webhook_resync_records_the_move_and_adds_the_move_tag(tmp_path, mailchimp_fake, monkeypatch):
    from sync.history import open_history
    from sync.ledger import open_ledger
    from sync.serve.scheduler import run_full_sync
    from sync.serve.worker import Worker
    from sync.settings import load_settings
    from sync.store import history
    from tests.test_worker import churned_contact, make_shop, queue_order

    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch)
    block = '[destinations.transitions]\n"Churn -> *" = "rfm-back"\n\n[destinations.fields]'
    path.write_text(path.read_text(encoding="utf-8").replace("[destinations.fields]", block), encoding="utf-8")
    cfg, settings = load_config(path), load_settings()
    d1 = D0 + timedelta(days=1)
    with open_ledger(cfg, settings) as ledger:
        run_full_sync(cfg, ledger, settings, as_of=D0, kind="sync")
        email, cid = churned_contact(ledger)
        queue_order(ledger, "W-1", cid, day=d1.isoformat())
        assert Worker(cfg, ledger, settings, as_of=lambda: d1).drain() == 1
        assert "rfm-back" in mailchimp_fake.tags_of(email)
    con = open_history(cfg)
    try:
        rows = history.customer_history(con, cid)
        assert [r["segment"] for r in rows][0] == "Churn" and rows[-1]["valid_from"] == d1
        assert [r["source"] for r in history.records(con)] == ["sync", "webhook"]
    finally:
        con.close()


def test_on_the_demo_shop_a_customer_who_buys_again_gets_the_move_tag_once_until_transition_days(
        tmp_path, mailchimp_fake, monkeypatch):
    from sync.demodata import generate_shop
    from sync.history import open_history
    from sync.store import history
    from tests.test_history import add_order

    shop = generate_shop(tmp_path / "shop", customers=250, seed=3, as_of=D0)
    block = '[destinations.transitions]\n"Churn -> *" = "rfm-back"\n\n[destinations.fields]'
    shop.write_text(shop.read_text(encoding="utf-8").replace('audience = "demo000001"', 'audience = "aud1"')
                    .replace("[destinations.fields]", block), encoding="utf-8")
    monkeypatch.setenv("MAILCHIMP_API_KEY", mailchimp_fake.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", mailchimp_fake.url)
    fake = mailchimp_fake
    sync(shop, D0)
    ledger = Ledger.connect(f"sqlite:///{shop.parent / 'rfmsync.db'}")
    try:
        email, cid = next((k, s.customer_id) for k, s in sorted(ledger.load_state("mailchimp-demo").items())
                          if s.tags == {"Winback"})
    finally:
        ledger.close()
    d1 = D0 + timedelta(days=1)
    add_order(shop, cid, d1)
    sync(shop, d1)
    assert "rfm-back" in fake.tags_of(email) and "Winback" not in fake.tags_of(email)
    assert tag_adds(fake, "rfm-back", email) == 1
    con = open_history(load_config(shop))
    try:  # everyone who got the tag left Churn on d1, per the recorded history
        moved = {m[0] for m in con.sql(history.recent_moves_sql(d1, 1)).fetchall() if m[1] == "Churn"}
        emails = dict(con.execute("SELECT customer_id, lower(email) FROM contacts").fetchall())
    finally:
        con.close()
    tagged = {e for e in fake.lists["aud1"].members if "rfm-back" in fake.tags_of(e)}
    assert cid in moved and tagged == {emails[c] for c in moved if emails.get(c)}
    writes = fake.write_calls
    sync(shop, d1)
    assert fake.write_calls == writes
    sync(shop, d1 + timedelta(days=7))
    assert "rfm-back" not in fake.tags_of(email) and tag_adds(fake, "rfm-back", email) == 1
    assert not any("rfm-back" in fake.tags_of(e) for e in tagged)


@pytest.mark.parametrize("dest_table, tag", [
    ({**BASE, "new_contacts": "skip"}, "rfm-back"),
    ({"name": "sg", "type": "sendgrid", "list_prefix": "RFM ", "new_contacts": "skip"}, "RFM rfm-back"),
    ({"name": "us", "type": "unisender", "new_contacts": "skip"}, "tag:rfm-back"),
])
def test_move_tags_follow_the_segment_tags_rules_in_every_destination(dest_table, tag):
    """Planned like segment tags: added to a known contact, never a reason to create one without consent,
    taken off when the move is over."""
    from sync.model import PushedState
    from sync.planning.plan import NO_CONSENT_SKIP, desired_contacts, plan_destination

    dest = Config(destinations=[{**dest_table, "transitions": {"Churn -> *": "rfm-back"}}]).destinations[0]
    moved = {"moved_from": "Churn", "moved_to": "Best active", "moved_days": 0}
    rows = [{"customer_id": "1", "email": "known@example.org", "segment": "Best active", "marketing_consent": "yes",
             **moved},
            {"customer_id": "2", "email": "new@example.org", "segment": "Best active", "marketing_consent": "no",
             **moved},
            {"customer_id": "3", "email": "over@example.org", "segment": "Best active", "marketing_consent": "yes",
             "moved_from": None, "moved_to": None, "moved_days": None}]
    desired, _ = desired_contacts(rows, dest)
    last = {k: PushedState(key=k, customer_id=c, tags=frozenset({tag}) if k.startswith("over") else frozenset(),
                           fields={}) for k, c in (("known@example.org", "1"), ("over@example.org", "3"))}
    plan = plan_destination(dest, desired, last)
    changes = {c.key: c for c in plan.changes}
    assert tag in changes["known@example.org"].add_tags and not changes["known@example.org"].create
    assert "new@example.org" not in changes
    assert [s.reason for s in plan.skipped if s.key == "new@example.org"] == [NO_CONSENT_SKIP]
    assert changes["over@example.org"].remove_tags == {tag} and tag in plan.managed_tags
