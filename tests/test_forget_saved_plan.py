"""A plan saved (``plan -o``) before ``rfmsync forget`` is refused by ``apply`` whatever happened since: the
destination's revision counter never goes back, so a destination forgotten, put back in the config and synced
again never reaches the saved plan's revision again (docs/ledger.md#forget)."""

from __future__ import annotations

import json

from sync.ledger import Ledger

from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_config_moved import AS_OF, cli, point_at, shop  # noqa: F401


def resave(shop, times: int) -> None:
    """Save one contact's state of ``mailchimp-demo`` again ``times`` times (a sync's save each)."""
    with Ledger.connect(f"sqlite:///{next(shop.parent.glob('*.db'))}") as ledger:
        for _ in range(times):
            ledger.save_states("mailchimp-demo", None, list(ledger.load_state("mailchimp-demo").values())[:1])


def revision(shop) -> int:
    with Ledger.connect(f"sqlite:///{next(shop.parent.glob('*.db'))}") as ledger:
        return ledger.state_revision("mailchimp-demo")


def test_a_plan_saved_before_a_forget_is_refused_after_the_destination_is_put_back(shop, mailchimp_fake,  # noqa: F811
                                                                                  tmp_path):
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    resave(shop, 3)  # as a few syncs more would: the plan's revision is beyond what one sync after the forget reaches
    saved = tmp_path / "plan.json"
    point_at(shop, '"Churn" = "Winback"', '"Churn" = "Lapsed"')  # a plan that changes tags, saved
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "-o", str(saved))
    point_at(shop, '"Churn" = "Lapsed"', '"Churn" = "Winback"')
    plan = json.loads(saved.read_text())["plans"][0]
    assert plan["changes"] and plan["ledger_revision"] >= 4
    point_at(shop, 'name = "mailchimp-demo"', 'name = "renamed-away"')  # removed from the config, then forgotten
    cli("forget", "--config", str(shop), "--destination", "mailchimp-demo", "--yes")
    point_at(shop, 'name = "renamed-away"', 'name = "mailchimp-demo"')  # put back: synced as a new destination
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    # the syncs after it (one or two saves each) bring a counter started afresh to the plan's revision again;
    # one that never went back is past it already
    resave(shop, plan["ledger_revision"] - revision(shop))
    writes = mailchimp_fake.write_calls

    refused = cli("apply", "--config", str(shop), str(saved), "--allow-mass-change", code=5).output
    assert "the ledger of destination 'mailchimp-demo' changed since this plan was made" in refused
    assert "forgotten" in refused and "make a new plan" in refused
    assert mailchimp_fake.write_calls == writes


def test_forgetting_moves_the_revision_on_and_never_back(ledger_url):  # noqa: F811
    """Forgetting a name (``rfmsync forget``, the old name of a rename taken over) moves its revision counter on
    under a new epoch, also from 0 (only failures held); the name is no longer held; a sync of it put back goes on
    counting; forgetting a name that holds nothing moves nothing."""
    from sqlalchemy import create_engine, text

    from sync.model import ItemResult, PushedState
    from sync.planning.target import TARGET_CURSOR, record_target

    def epoch(name: str) -> str | None:
        engine = create_engine(ledger_url)
        with engine.connect() as conn:
            found = conn.execute(text("SELECT epoch FROM state_revisions WHERE destination = :d"), {"d": name}).scalar()
        engine.dispose()
        return found

    state = [PushedState("a@x.io", "1", frozenset({"VIP"}), {}, True)]
    with Ledger.connect(ledger_url) as ledger:
        run = ledger.start_run("sync", "gone")
        ledger.record_results("failed", run, [ItemResult("1@x.io", "upsert", False, "Invalid Resource")])
        assert ledger.state_revision("failed") == 0  # a plan made now is of revision 0
        ledger.forget_destination("failed", (TARGET_CURSOR, "failed"))
        assert ledger.state_revision("failed") == 1 and "failed" not in ledger.held_destinations(TARGET_CURSOR)

        for _ in range(2):
            ledger.save_states("gone", run, state)
        record_target(ledger, "gone", "mailchimp:aud1")
        before = epoch("gone")
        assert ledger.state_revision("gone") == 2 and ledger.state_destinations() == ["gone"]
        assert ledger.forget_destination("gone", (TARGET_CURSOR, "gone"), untagged=False) == 1
        assert ledger.state_revision("gone") == 3 and epoch("gone") not in (None, before)
        assert ledger.state_destinations() == [] and ledger.held_destinations(TARGET_CURSOR) == []
        assert ledger.load_state("gone") == {}
        ledger.forget_destination("gone", (TARGET_CURSOR, "gone"))  # nothing held: nothing moves
        assert ledger.state_revision("gone") == 3
        ledger.save_states("gone", run, state)  # put back and synced: counting on
        assert ledger.state_revision("gone") == 4 and list(ledger.load_state("gone")) == ["a@x.io"]

        ledger.take_over("gone", "heir", (TARGET_CURSOR, "gone"))  # a rename: the old name's counter moves on
        assert ledger.state_revision("gone") == 5 and list(ledger.load_state("heir")) == ["a@x.io"]
        assert ledger.state_destinations() == ["heir"]
