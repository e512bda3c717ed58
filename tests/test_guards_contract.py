"""The plan guards refuse end to end against every ESP's stateful fake (the contract battery's rig): a segment
change that would take the managed tags or lists off more contacts than ``max_removal_pct`` allows is refused by
`rfmsync sync` and by `rfmsync apply` of a saved plan (exit 6), and nothing reaches the ESP until a person passes
``--allow-mass-change``. (``max_change_pct`` against every ESP: tests/test_lost_guard.py.)"""

from __future__ import annotations

import re

from tests import test_destination_contract as contract
from tests.test_guards import set_guards

AS_OF, LATER = contract.AS_OF, contract.LATER
esp, make_rig, runs, shop = contract.esp, contract.make_rig, contract.runs, contract.shop


def test_a_mass_removal_is_refused_by_sync_and_apply_and_nothing_is_written(esp, make_rig, tmp_path):
    rig = make_rig()
    rig.cli("sync", "--as-of", AS_OF.isoformat())  # the first sync, through the guards: an empty ESP is no mass change
    managed = sorted({t for tags in rig.dest.spec.managed_tags(rig.dest).values() for t in tags})
    # later, with fixed cut points, customers move into "Churn", which no tag stands for: their tags come off
    losing = {c.key for c in rig.plan(LATER)[0].plan.changes if c.remove_tags and not c.add_tags}
    assert losing
    held = {k: esp.managed_of(k, managed) for k in losing}
    assert all(held.values())
    set_guards(rig.path, max_removal_pct=1, max_change_pct=100)
    writes = esp.write_calls

    refused = rig.cli("sync", "--as-of", LATER.isoformat(), ok=False)
    assert refused.exit_code == 6, refused.output
    assert re.search(r"contract: guard max_removal_pct: \d+ of \d+ managed contacts \([\d.]+ %\) would lose their "
                     r"tags; limit 1 %", refused.output), refused.output
    saved = tmp_path / "later.json"
    rig.cli("plan", "--as-of", LATER.isoformat(), "-o", str(saved))
    at_apply = rig.cli("apply", str(saved), ok=False)
    assert at_apply.exit_code == 6 and "guard max_removal_pct" in at_apply.output, at_apply.output
    assert esp.write_calls == writes  # neither wrote to the ESP
    assert {k: esp.managed_of(k, managed) for k in losing} == held

    rig.cli("sync", "--as-of", LATER.isoformat(), "--allow-mass-change")
    assert esp.write_calls > writes
    assert all(esp.managed_of(k, managed) == set() for k in losing)
    assert not esp.violations()
