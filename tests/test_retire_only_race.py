"""A retire-only destination's end (:func:`sync.takeover.end_retired`) against another sync of the same destination
running at the same time (two processes sharing the ledger: another host, a cron beside ``serve``, with a config
that maps the retired field again): the ledger forgets the destination only from what it holds under the
destination's lock, never from a read made before another run wrote."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from sync import api
from sync.config import load_config
from sync.ledger import Ledger
from sync.settings import load_settings
from tests.builders import run_cli as cli
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_retire_fields import AS_OF, _value, make_shop


class _Overlapped(Ledger):
    """A ledger where another process's run (``then``) comes after this run's apply, just before its end
    (:func:`sync.takeover.end_retired`) takes the destination's lock: the other run writes in between, after
    anything the end would have read of the rows before taking the lock."""

    then: list = []
    applied = False

    def finish_run(self, run_id, status, counts, error=None):
        super().finish_run(run_id, status, counts, error)
        self.applied = self.applied or ("planned" in counts and status == "succeeded")

    def acquire_lock(self, *args, **kwargs):
        while self.applied and self.then:
            self.then.pop()()
        return super().acquire_lock(*args, **kwargs)


def test_the_end_of_a_retire_only_destination_never_forgets_what_an_overlapping_sync_wrote(
        tmp_path, mailchimp_fake, monkeypatch, ledger_url):  # noqa: F811
    path = make_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch, ledger_url)
    text = path.read_text(encoding="utf-8")
    head, fields = text[:text.index("[destinations.segments]")], text[text.index("[destinations.fields]"):]
    mapping = Path(path.parent / "mapping.toml")  # the other process's config: the fields mapped (no tags)
    mapping.write_text(head + fields, encoding="utf-8")
    cli("sync", "--config", str(mapping), "--as-of", AS_OF)
    path.write_text(head + 'retire_fields = ["RFM_SEG", "RFM_CODE"]\n', encoding="utf-8")
    other: list[int] = []
    _Overlapped.then = [lambda: other.append(
        cli("sync", "--config", str(mapping), "--as-of", AS_OF, code=(0, 75)).exit_code)]
    cfg = load_config(path)
    name = cfg.destinations[0].name
    with _Overlapped.connect(ledger_url) as ledger:  # its values cleared, then its end
        api.run_sync(cfg, ledger, load_settings(), as_of=date.fromisoformat(AS_OF), allow_mass_change=True)
    assert other == [0], other  # it ran between the apply and the end, and wrote the fields again
    members = mailchimp_fake.lists["aud1"].members
    written = {e for e in members if _value("mailchimp", mailchimp_fake, e, "RFM_SEG")}
    with Ledger.connect(ledger_url) as ledger:
        held = {k for k, s in ledger.load_state(name).items() if s.fields.get("RFM_SEG")}
    assert held == written  # what rfmsync wrote in the ESP, the ledger knows (retire_fields can clear it)
