"""A destination whose apply fails does not keep the other destinations of the run stale (sync.run.full_sync)."""

from __future__ import annotations

import logging

from sync.ledger import Ledger

from tests.builders import run_cli
from tests.test_history import D0
from tests.test_history_webhooks import CONFIG_EXIT, SECOND
from tests.test_transitions import sync, tiny  # noqa: F401  (tiny: the fixture)


def _runs(shop) -> dict[str, str]:
    ledger = Ledger.connect(f"sqlite:///{shop.parent / 'rfmsync.db'}")
    try:
        return {r["destination"]: r["status"] for r in reversed(ledger.recent_runs(10)) if r["kind"] == "sync"}
    finally:
        ledger.close()


def test_the_destinations_after_a_failed_one_are_still_written_and_the_run_exits_with_its_error(tiny, mailchimp_fake, caplog):
    """mc (aud1) answers 401 to every write, mc2 (aud2, listed after it) works: mc2 gets its tags, the command
    still fails with mc's error and exit code, and the ledger shows mc failed and mc2 succeeded."""
    caplog.set_level(logging.ERROR)
    tiny.write_text(tiny.read_text(encoding="utf-8") + SECOND, encoding="utf-8")
    mailchimp_fake.add_list("aud2")
    mailchimp_fake.fail(401, None, fraction=1.0, method="POST", path="/lists/aud1")
    failed = run_cli("sync", "--config", str(tiny), "--as-of", D0.isoformat(), code=CONFIG_EXIT)
    assert "error: destination 'mc': Mailchimp POST /lists/aud1" in failed.output
    assert "destination 'mc' failed" in caplog.text and "going on with the others" in caplog.text
    assert "VIP" in mailchimp_fake.tags_of("y@example.org", "aud2")
    assert "Winback" in mailchimp_fake.tags_of("x@example.org", "aud2")
    assert not mailchimp_fake.tags_of("y@example.org")  # nothing reached aud1
    assert _runs(tiny) == {"mc": "failed", "mc2": "succeeded"}


def test_when_every_destination_fails_the_first_error_decides_the_exit(tiny, mailchimp_fake, caplog):
    caplog.set_level(logging.ERROR)
    tiny.write_text(tiny.read_text(encoding="utf-8") + SECOND, encoding="utf-8")
    mailchimp_fake.add_list("aud2")
    mailchimp_fake.fail(401, None, fraction=1.0, method="POST", path="/lists/aud")  # aud1 and aud2
    failed = run_cli("sync", "--config", str(tiny), "--as-of", D0.isoformat(), code=CONFIG_EXIT)
    assert "error: destination 'mc': Mailchimp POST /lists/aud1" in failed.output
    assert "destination 'mc2' failed" in caplog.text  # the others' errors on stderr
    assert _runs(tiny) == {"mc": "failed", "mc2": "failed"}


def test_a_later_destination_failing_the_retry_later_way_makes_a_scheduled_run_retry(tiny, mailchimp_fake,
                                                                                        monkeypatch):
    """mc's key is refused (fix the settings: no retry), mc2 answers 503 (may pass in minutes): the run raises mc's
    error, as the CLI's exit code needs, and the scheduler still sees that running again may help."""
    import pytest

    from sync.config import load_config
    from sync.errors import DestinationError
    from sync.ledger import open_ledger
    from sync.serve.schedule_retry import transient
    from sync.serve.scheduler import run_full_sync
    from sync.settings import load_settings

    monkeypatch.setenv("RFMSYNC_HTTP_MAX_ATTEMPTS", "1")  # no back-off in the test: the 503 is given up at once
    tiny.write_text(tiny.read_text(encoding="utf-8") + SECOND, encoding="utf-8")
    mailchimp_fake.add_list("aud2")
    mailchimp_fake.fail(401, None, fraction=1.0, method="POST", path="/lists/aud1")
    mailchimp_fake.fail(503, None, fraction=1.0, method="POST", path="/lists/aud2")
    cfg, settings = load_config(tiny), load_settings()
    with open_ledger(cfg, settings) as ledger, pytest.raises(DestinationError) as info:
        run_full_sync(cfg, ledger, settings, as_of=D0)
    assert info.value.status == 401 and not info.value.transient  # mc's error decides the exit code
    assert [e.status for e in info.value.other_failures] == [503]
    assert transient(info.value)


def _last_sync_runs(shop) -> list[tuple[str, str, str]]:
    ledger = Ledger.connect(f"sqlite:///{shop.parent / 'rfmsync.db'}")
    try:
        return [(r["destination"], r["status"], r["error"] or "") for r in ledger.recent_runs(10)
                if r["kind"] == "sync"]
    finally:
        ledger.close()


def test_a_sync_whose_esp_check_fails_before_planning_is_a_failed_run_in_the_ledger(tiny, mailchimp_fake):
    """The audience check answered with a proxy's HTML page (hunt29a): the sync exits 4 before any write, and the
    ledger's latest sync run is that failure, not the last good sync (a cron job watched through `rfmsync runs`
    would miss an outage of days); a sync after it succeeds and is the latest again."""
    run_cli("sync", "--config", str(tiny), "--as-of", D0.isoformat())
    assert _last_sync_runs(tiny)[0][:2] == ("mc", "succeeded")
    writes = mailchimp_fake.write_calls
    mailchimp_fake.answer_raw(b"<html><body>maintenance</body></html>", method="GET", path=r"^/lists/aud1$")
    failed = run_cli("sync", "--config", str(tiny), "--as-of", D0.isoformat(), code=4)
    assert "Mailchimp" in failed.output
    dest, status, error = _last_sync_runs(tiny)[0]
    assert (dest, status) == ("mc", "failed")
    assert error.startswith("failed before any ESP write (planning): ") and "Mailchimp" in error
    assert mailchimp_fake.write_calls == writes  # nothing written
    run_cli("sync", "--config", str(tiny), "--as-of", D0.isoformat())
    assert _last_sync_runs(tiny)[0][:2] == ("mc", "succeeded")


def test_a_refused_key_is_a_failed_run_of_every_destination_of_the_sync_and_names_no_secret(tiny, mailchimp_fake,
                                                                                          monkeypatch):
    tiny.write_text(tiny.read_text(encoding="utf-8") + SECOND, encoding="utf-8")
    mailchimp_fake.add_list("aud2")
    mailchimp_fake.fail(401, None, fraction=1.0, method="GET", path="/lists/aud1")
    run_cli("sync", "--config", str(tiny), "--as-of", D0.isoformat(), code=CONFIG_EXIT)
    runs = {d: (s, e) for d, s, e in _last_sync_runs(tiny)}
    assert runs["mc"][0] == runs["mc2"][0] == "failed"
    assert runs["mc"][1] == runs["mc2"][1]  # nothing was planned nor written to mc2 either: one error, named
    import os
    key = os.environ.get("MAILCHIMP_API_KEY", "")
    assert key and key not in runs["mc"][1]
