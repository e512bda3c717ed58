"""``--format json`` of a failed sync (sync/cli/json_output.py): the guard lines and the withdrawals that went out
alone are in the document whichever destination's failure the command's exit code came from (sync.run.full_sync
keeps the first failure and hangs the others on it as ``other_failures``)."""

from __future__ import annotations

import json

import click

from sync.cli.json_output import emit_error, start
from sync.engine import ApplyReport
from sync.errors import GuardRefusedError, RfmsyncError


def printed(exc: BaseException, capsys) -> dict:
    with click.Context(click.Command("sync")) as ctx:
        start("json", "sync")
        assert emit_error(ctx, 4, str(exc), exc)
    return json.loads(capsys.readouterr().out)


def test_a_destination_refused_after_another_failed_still_lists_its_guards_and_withdrawals(capsys):
    """mc's vendor was down (the first failure: its exit code); vip's re-plan was refused by max_change_pct and its
    one withdrawal went out alone: the JSON says so, as stderr does."""
    down = RfmsyncError("mc: Mailchimp could not be reached")
    vip = GuardRefusedError(["vip: guard max_change_pct: 9 of 10 managed contacts (90 %) would change; limit 50 %"],
                            ["vip"], applied=[ApplyReport("vip", 7, "succeeded", {"withdrawals_alone": 1})],
                            note="1 consent withdrawal went out alone (vip 1)")
    down.other_failures = [vip]  # type: ignore[attr-defined]
    doc = printed(down, capsys)
    assert doc["exit_code"] == 4 and doc["error"] == "mc: Mailchimp could not be reached"
    assert doc["guards"] == vip.lines
    assert [(r["destination"], r["run_id"], r["counts"]) for r in doc["withdrawals_applied"]] == [
        ("vip", 7, {"withdrawals_alone": 1})]


def test_a_failure_with_no_guard_has_no_guard_fields(capsys):
    doc = printed(RfmsyncError("mc: Mailchimp could not be reached"), capsys)
    assert "guards" not in doc and "withdrawals_applied" not in doc
