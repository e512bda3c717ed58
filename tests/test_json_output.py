"""`--format json` on check, pull, sync and apply (docs/configuration.md): stdout is one JSON object in every
case, success or failure, with the exit reason (`exit_code`, `error`), against the demo shop and the fake
Mailchimp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sync.cli import main
from tests.test_guards import audience, month_first, set_guards
from tests.test_worker import AS_OF, DEST, make_shop


def run_json(*args: str, code: int = 0) -> dict:
    result = CliRunner().invoke(main, [*args, "--format", "json"], catch_exceptions=False)
    assert result.exit_code == code, result.output
    doc = json.loads(result.stdout)  # one JSON object, nothing else on stdout
    assert isinstance(doc, dict) and doc["exit_code"] == code
    return doc


@pytest.fixture
def shop(tmp_path, mailchimp_fake, monkeypatch) -> Path:
    return make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch)


def test_a_successful_sync_reports_each_destination(shop, mailchimp_fake):
    doc = run_json("sync", "--config", str(shop), "--as-of", AS_OF.isoformat())
    assert doc["command"] == "sync" and doc["error"] is None and doc["warnings"] == []
    [dest] = doc["destinations"]
    assert dest["destination"] == DEST and dest["status"] == "succeeded" and dest["errors"] == []
    assert dest["counts"]["ok"] > 0 and dest["counts"]["failed"] == 0
    assert doc["counts"]["ok"] == dest["counts"]["ok"]
    assert dest["counts"]["ledger_only"] == doc["counts"]["ledger_only"] == 0  # always there (a new owner alone)
    assert len(mailchimp_fake.lists["aud1"].members) > 0


def test_a_refused_sync_is_one_json_object_with_the_guard_lines_and_exit_6(shop, mailchimp_fake):
    run_json("sync", "--config", str(shop), "--as-of", AS_OF.isoformat())
    set_guards(shop, min_orders=100000)
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    doc = run_json("sync", "--config", str(shop), "--as-of", AS_OF.isoformat(), code=6)
    assert doc["command"] == "sync"
    [line] = doc["guards"]
    assert line.startswith("guard min_orders: ") and line.endswith("valid orders; at least 100000 needed")
    assert line in doc["error"]
    assert audience(mailchimp_fake) == before and mailchimp_fake.write_calls == writes


def test_check_lists_bad_rows_counts_and_the_guard_that_would_refuse(shop):
    clean = run_json("check", "--config", str(shop), "--offline")
    assert clean["error"] is None and clean["counts"] == {"orders": 865, "contacts": 250, "bad_rows": 6}
    assert clean["destinations"] == [{"destination": DEST, "type": "mailchimp", "status": "not checked",
                                      "message": "--offline"}]
    month_first(shop, every=3)
    doc = run_json("check", "--config", str(shop), "--offline", "--limit", "5", code=3)
    assert doc["counts"]["bad_rows"] == 294 and len(doc["bad_rows"]) == 5
    line = "guard max_bad_rows_pct: 294 of 871 rows (33.8 %) are bad; limit 5 %"
    assert doc["guards"] == [line] and doc["error"] == line


def test_check_reaches_the_destination(shop):
    doc = run_json("check", "--config", str(shop))
    [dest] = doc["destinations"]
    assert dest["destination"] == DEST and dest["status"] == "ok"


def test_apply_of_a_saved_plan(shop, mailchimp_fake, tmp_path):
    saved = tmp_path / "plan.json"
    CliRunner().invoke(main, ["plan", "--config", str(shop), "--as-of", AS_OF.isoformat(), "-o", str(saved)],
                       catch_exceptions=False)
    doc = run_json("apply", "--config", str(shop), str(saved))
    [dest] = doc["destinations"]
    assert doc["command"] == "apply" and dest["destination"] == DEST and dest["status"] == "succeeded"
    assert dest["counts"]["ok"] > 0 and mailchimp_fake.write_calls > 0
    again = run_json("apply", "--config", str(shop), str(saved), code=5)  # the ledger moved: the plan is stale
    assert again["error"] and again["command"] == "apply"


def test_pull_counts(shop):
    doc = run_json("pull", "--config", str(shop))
    assert doc["counts"]["orders"] == 865 and doc["counts"]["stored_orders"] == 865
    assert doc["counts"]["bad_records"] == 6 and doc["source"] == {"type": "file"}


def test_a_config_error_is_json_too(tmp_path):
    doc = run_json("check", "--config", str(tmp_path / "missing.toml"), code=2)
    assert "missing.toml" in doc["error"]


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o nosort -F _rfmsync_completion rfmsync"),
                                           ("zsh", "#compdef rfmsync"), ("fish", "complete --no-files")])
def test_shell_completion_scripts_as_documented(shell, marker):
    docs = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert f"_RFMSYNC_COMPLETE={shell}_source rfmsync" in docs
    result = CliRunner().invoke(main, [], env={"_RFMSYNC_COMPLETE": f"{shell}_source"}, prog_name="rfmsync")
    assert result.exit_code == 0 and marker in result.stdout


def test_demo(tmp_path):
    doc = run_json("demo", "--workdir", str(tmp_path / "demo"), "--customers", "200")
    assert doc["command"] == "demo" and doc["error"] is None
    assert doc["segments"]["customers"] > 0 and doc["segments"]["segments"]
    [plan] = doc["plans"]
    assert plan["destination"] == "mailchimp-demo" and plan["totals"]["new"] > 0
    assert Path(doc["report"]).is_file() and Path(doc["config"]).is_file()
