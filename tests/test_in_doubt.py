"""An add whose outcome is unknown is in doubt (sync.planning.doubt): the ESP may have carried it out though its
answer was lost (a proxy's HTML page after the work was done). When the contact then withdraws consent, the next
sync takes the managed tag or list off him, never creates a contact the ESP does not hold, and no failure is
left pending for ever. End to end on each ESP's fake (both ledger engines); both planners on the doubt alone."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sync.config import DestinationConfig
from sync.model import DesiredContact, PushedState
from sync.planning import plan as ref
from tests.builders import run_cli as cli
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_plan_columnar import columnar
from tests.test_retire_fields import AS_OF, _ours, shop  # noqa: F401
from tests.test_retire_fields_esp import _withdraw_consent

HTML = b"<html><body>502 Bad Gateway</body></html>"


def _mangle(esp: str, fake, work: bool) -> None:
    """The first call that puts new contacts on a managed tag or list is answered 200 with a proxy's page;
    ``work``: the ESP did it first."""
    if esp == "mailchimp":  # its tags go by a call of their own
        fake.answer_raw(HTML, method="POST", path=r"/segments/\d+$", work=work)
    elif esp == "sendgrid":  # the upsert carries the lists
        fake.answer_raw(HTML, status=200, method="PUT", path="/marketing/contacts$", work=work)
    else:  # the import that carries the lists
        fake.answer_raw(HTML, work=work, column="email_list_ids")


def _held(esp: str, fake, email: str) -> set[str]:
    """The tags or lists ``email`` is on in the fake (none: not held)."""
    if esp == "mailchimp":
        return fake.tags_of(email)
    contact = fake.contacts.get(email)
    if contact is None:
        return set()
    return set(map(str, contact["list_ids"] if esp == "sendgrid" else contact["lists"]))


def _failures(cfg: Path) -> list[dict]:
    return json.loads(cli("failures", "--config", str(cfg), "--format", "json").stdout)


@pytest.mark.parametrize("work", [True, False], ids=["done-answer-lost", "not-done"])
def test_a_doubted_add_comes_off_when_consent_is_withdrawn_and_nobody_is_created(shop, work):
    esp, fake, cfg = shop
    text = re.sub(r'new_contacts = "\w+"\n', "", cfg.read_text(encoding="utf-8"))
    cfg.write_text(text.replace(f"type = \"{esp}\"\n", f"type = \"{esp}\"\nnew_contacts = \"skip\"\n", 1),
                   encoding="utf-8")
    _mangle(esp, fake, work)
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, code=4)  # partial: the mangled call's items failed
    failed = _failures(cfg)
    doubted = sorted({f["key"] for f in failed if f["op"].startswith("tag+")})
    assert doubted
    if work:  # the ESP did the adds: the ledger does not know it
        assert all(_held(esp, fake, k) for k in doubted), [(k, _held(esp, fake, k)) for k in doubted]
    else:
        assert not any(_held(esp, fake, k) for k in doubted)
    before = set(_ours(fake, esp))
    withdrawn = doubted[:5]
    for key in withdrawn:
        _withdraw_consent(cfg, key)

    plan = json.loads(cli("plan", "--config", str(cfg), "--as-of", AS_OF, "--format", "json").stdout)["plans"][0]
    planned = {c["key"]: c for c in plan["changes"] if c["key"] in withdrawn}
    # each one's doubted tags taken off; his fields written only where the ESP (read under skip) holds him
    assert set(planned) == set(withdrawn)
    shown = [(c["key"], c["create"], c["add_tags"], c["remove_tags"], c["set_fields"]) for c in planned.values()]
    assert all(c["remove_tags"] and not c["add_tags"] and not c["create"]
               and (work or not c["set_fields"]) for c in planned.values()), shown
    cli("sync", "--config", str(cfg), "--as-of", AS_OF, "--dry-run")
    assert _failures(cfg) == failed  # a dry run (plan, sync --dry-run) forgets and settles nothing
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)

    assert not any(_held(esp, fake, k) for k in withdrawn), {k: _held(esp, fake, k) for k in withdrawn}
    assert set(_ours(fake, esp)) <= before | {f["key"] for f in failed}  # the failed ones' retries only
    assert not set(withdrawn) & (set(_ours(fake, esp)) - before)  # nobody created for a removal
    assert _failures(cfg) == []  # the doubts are settled: the others' adds redone, the withdrawn's taken off
    again = json.loads(cli("plan", "--config", str(cfg), "--as-of", AS_OF, "--format", "json").stdout)["plans"][0]
    assert not {c["key"] for c in again["changes"]} & set(withdrawn)


DEST = DestinationConfig(name="mc", type="mailchimp", audience="a1", segments={"Best active": "VIP", "Churn": "Out"},
                         new_contacts="skip", fields={"SEG": "segment"})


@pytest.mark.parametrize("planner", ["reference", "columnar"])
def test_both_planners_take_a_doubted_tag_off_and_add_it_again_while_he_still_gets_it(planner):
    rows = [{"customer_id": "1", "email": "gone@shop.uz", "segment": "Best active", "marketing_consent": "no"},
            {"customer_id": "2", "email": "kept@shop.uz", "segment": "Best active", "marketing_consent": "yes"},
            {"customer_id": "3", "email": "moved@shop.uz", "segment": "Churn", "marketing_consent": "yes"}]
    last = {"moved@shop.uz": PushedState("moved@shop.uz", "3", frozenset(), {"SEG": "Churn"}, True)}
    doubt = {k: frozenset({"VIP", "hand-added"}) for k in ("gone@shop.uz", "kept@shop.uz", "moved@shop.uz",
                                                            "left@shop.uz")}
    if planner == "columnar":
        plan = columnar(rows, last, DEST, doubt=doubt)
    else:
        desired, skipped = ref.desired_contacts(rows, DEST)
        plan = ref.plan_destination(DEST, desired, last, revision=3, skipped=skipped, doubt=doubt)
    got = {c.key: (c.create, sorted(c.add_tags), sorted(c.remove_tags), sorted(c.set_fields)) for c in plan.changes}
    assert got == {"gone@shop.uz": (False, [], ["VIP"], []),  # withdrew: off, never created nor upserted
                   "kept@shop.uz": (True, ["VIP"], [], ["SEG"]),  # still his: created and added again
                   "moved@shop.uz": (False, ["Out"], ["VIP"], []),  # another segment's tag now
                   "left@shop.uz": (False, [], ["VIP"], [])}  # left the customer base
    assert plan.skipped == () and plan.withdrawn == ("gone@shop.uz",)
    assert isinstance(ref.desired_contacts(rows, DEST)[0][0], DesiredContact)
