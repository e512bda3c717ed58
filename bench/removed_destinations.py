"""The removed-destination check (sync.planning.retired.removed_destinations) that every plan and sync runs, at N
contacts: after a rename (N rows under the old name, N under the new one that synced), and after a removed
destination's remedy took every tag off (N rows left with no tag); then once the ledger settled it as an apply
does now (sync.takeover: the new name takes over the old one's rows; the retire-only destination is forgotten),
with that one-off step's own time. Usage: python -m bench.removed_destinations N sqlite:////tmp/x.db"""

from __future__ import annotations

import sys
import time

from sync.config import Config
from sync.ledger import Ledger
from sync.model import PushedState
from sync.planning.retired import removed_destinations
from sync.planning.target import TARGET_CURSOR, record_target

SEGMENTS = {"Best active": "VIP", "Falling asleep": "Winback soft", "Churn": "Winback", "Beginners": "Welcome"}


def fill(ledger: Ledger, name: str, n: int, tagged: bool) -> None:
    tags = list(SEGMENTS.values())
    for start in range(0, n, 100_000):
        ledger.save_states(name, None, [PushedState(f"c{i}@x.io", str(i), frozenset({tags[i % 4]} if tagged else ()),
                                                    {"RFM_SEG": tags[i % 4]}, True)
                                        for i in range(start, min(n, start + 100_000))])


def timed(label: str, call):  # noqa: ANN001, ANN201
    wall, cpu = time.perf_counter(), time.process_time()
    out = call()
    print(f"{label}: {time.perf_counter() - wall:.2f}s wall {time.process_time() - cpu:.2f}s CPU")
    return out


def main(n: int, url: str) -> None:
    cfg = Config.model_validate({"source": {"type": "file", "orders": "o.csv"}, "destinations": [
        {"name": "mc", "type": "mailchimp", "audience": "aud1", "segments": SEGMENTS}]})
    with Ledger.connect(url) as ledger:
        for name, tagged in (("old", True), ("mc", True), ("retired", False)):
            fill(ledger, name, n, tagged)
        record_target(ledger, "old", "mailchimp:aud1")
        record_target(ledger, "mc", "mailchimp:aud1")
        record_target(ledger, "retired", "mailchimp:aud2")
        for _ in range(2):
            timed(f"N={n} before: removed_destinations ({ledger.state_destinations()})",
                  lambda: removed_destinations(cfg, ledger))
        if not hasattr(ledger, "take_over"):
            return
        timed("one-off: mc takes over old", lambda: ledger.take_over("old", "mc", (TARGET_CURSOR, "old")))
        timed("one-off: retired forgotten", lambda: ledger.forget_destination("retired", (TARGET_CURSOR, "retired")))
        for _ in range(2):
            timed(f"N={n} after: removed_destinations ({ledger.state_destinations()})",
                  lambda: removed_destinations(cfg, ledger))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
