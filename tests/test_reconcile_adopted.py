"""resync30 #3: the ``--reconcile`` warning about an adopted tag/list's own members (sync29,
:mod:`sync.planning.adopted`) reaches the user wherever they can be taken off. rfmsync has no ``prepare`` command:
``prepare`` is each destination's setup inside an apply, which adopts an existing managed tag/list as it is (no
option, nothing taken off: without ``--reconcile`` only those the ledger says rfmsync tagged come off). The members
come off only by ``sync --reconcile``, whose plan says it before the first write (``sync --dry-run --reconcile``:
tests/test_config_moved.py)."""

from __future__ import annotations

from tests.builders import run_cli as cli
from tests.test_config_moved import AS_OF, shop  # noqa: F401


def test_sync_reconcile_says_it_before_it_takes_an_adopted_tags_own_members_off(shop, mailchimp_fake):  # noqa: F811
    hand = [f"hand{i}@elsewhere.example" for i in range(3)]
    for email in hand:
        mailchimp_fake.add_member(email, tags=["VIP"], list_id="aud1")
    first = cli("sync", "--config", str(shop), "--as-of", AS_OF)  # its setup adopts VIP: its members stay on it
    assert "rfmsync did not add" not in first.output
    assert all("VIP" in mailchimp_fake.tags_of(e, "aud1") for e in hand)
    result = cli("sync", "--config", str(shop), "--as-of", AS_OF, "--reconcile")
    out = result.output
    warned = out.index("--reconcile takes the managed tag/list 'VIP' off 3 of its members rfmsync did not add")
    assert warned < out.index("run ") and "3 changes" in out  # said before the run's report
    assert not any(e in result.output for e in hand)
    assert not any("VIP" in mailchimp_fake.tags_of(e, "aud1") for e in hand)
