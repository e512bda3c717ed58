"""A move's plan saved by an rfmsync older than ``moves_from`` (a ``plan --full-refresh -o FILE`` after the audience
changed): whether it moves is not in the file, so its apply is refused, and said as such (not "another run recorded
it"); nothing is forgotten or written, and a new plan moves the destination."""

from __future__ import annotations

import json

from tests.test_config_moved import AS_OF, cli, point_at, shop  # noqa: F401


def test_a_move_plan_saved_before_moves_from_is_refused_as_made_by_an_older_rfmsync(shop, mailchimp_fake,  # noqa: F811
                                                                                   tmp_path):
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    point_at(shop, 'audience = "aud1"', 'audience = "aud2"')
    saved = tmp_path / "plan.json"
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "--full-refresh", "-o", str(saved))
    doc = json.loads(saved.read_text())
    assert doc["plans"][0]["moves_from"] == "mailchimp:aud1"
    for plan in doc["plans"]:
        del plan["moves_from"]  # as an older rfmsync wrote it
    saved.write_text(json.dumps(doc))
    writes = mailchimp_fake.write_calls
    refused = cli("apply", "--config", str(shop), str(saved), "--allow-mass-change", code=5).output
    assert "this plan for destination 'mailchimp-demo' was made by an older rfmsync" in refused
    assert 'moves the destination from mailchimp audience "aud1"' in refused and "make a new plan" in refused
    assert "another run recorded" not in refused
    assert mailchimp_fake.write_calls == writes and not mailchimp_fake.lists["aud2"].members
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "--full-refresh", "-o", str(saved))  # a new plan moves it
    cli("apply", "--config", str(shop), str(saved), "--allow-mass-change")
    assert mailchimp_fake.lists["aud2"].members


def test_a_plan_file_without_moves_from_says_so_and_one_with_it_does_not():
    from sync.planning.plan import Plan

    plan = Plan("mc", "mailchimp", (), (), (), {}, 0, pushed_to="mailchimp:aud2", moves_from=None)
    data = plan.to_json()
    assert Plan.from_json(data).moves_unknown is False
    del data["moves_from"]
    assert Plan.from_json(data).moves_unknown is True
