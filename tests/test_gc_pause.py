"""An apply runs with the cyclic garbage collector off, and gives it back as it found it (sync.gc_pause)."""

from __future__ import annotations

import gc
import threading

import pytest

from sync import gc_pause
from sync.engine import execute_plan
from sync.ledger import Ledger
from sync.model import ContactChange, ItemResult
from sync.planning.plan import Plan


class RecordingDestination:
    """A destination (the Protocol, no ESP) that says whether the collector was on while it applied."""

    name = "rec"
    reads_existing_members = False
    reconciles = False

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.collector_on = fail, None

    def check(self) -> str:
        return "ok"

    def prepare(self, managed_tags, fields, creating=None) -> None:
        pass

    def apply(self, changes, on_results) -> None:
        self.collector_on = gc.isenabled()
        on_results([ItemResult(c.key, "upsert", True) for c in changes])
        if self.fail:
            raise RuntimeError("the ESP went away")

    def read_managed(self, managed_tags):
        return {}

    def existing_members(self, keys=None):
        return None


def plan(n: int = gc_pause.MIN_CHANGES) -> Plan:
    changes = tuple(ContactChange(f"c{i}@example.com", f"c{i}@example.com", f"C{i}", "A", True, "subscribed",
                                  set_fields={"SEGMENT": "A"}) for i in range(n))
    return Plan("rec", "mailchimp", changes, (), (), {"SEGMENT": "segment"}, 0)


@pytest.fixture
def ledger(tmp_path):
    led = Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield led
    led.close()


@pytest.fixture
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


@pytest.mark.parametrize("fail", [False, True])
def test_the_apply_runs_without_the_collector_and_turns_it_back_on(ledger, collector_on, fail):
    dest = RecordingDestination(fail=fail)
    if fail:
        with pytest.raises(RuntimeError):
            execute_plan(plan(), dest, ledger)
    else:
        assert execute_plan(plan(), dest, ledger).status == "succeeded"
    assert dest.collector_on is False
    assert gc.isenabled()
    assert len(ledger.load_state("rec")) == gc_pause.MIN_CHANGES  # the outcomes were recorded all the same


def test_a_small_apply_keeps_the_collector_on(ledger, collector_on):
    """A webhook resync's few contacts: overlapping small applies in `rfmsync serve` never starve the collector."""
    dest = RecordingDestination()
    assert execute_plan(plan(3), dest, ledger).status == "succeeded"
    assert dest.collector_on is True


def test_a_collector_the_program_turned_off_stays_off(ledger, collector_on):
    gc.disable()
    execute_plan(plan(), RecordingDestination(), ledger)
    assert not gc.isenabled()


def test_overlapping_pauses_turn_the_collector_back_on_when_the_last_one_ends(collector_on):
    first_in, second_out = threading.Event(), threading.Event()
    seen = []

    def first() -> None:
        with gc_pause.paused():
            first_in.set()
            second_out.wait(5)
            seen.append(gc.isenabled())  # the other pause ended first: still off

    t = threading.Thread(target=first)
    t.start()
    first_in.wait(5)
    with gc_pause.paused():
        seen.append(gc.isenabled())
    second_out.set()
    t.join(5)
    assert seen == [False, False]
    assert gc.isenabled()
