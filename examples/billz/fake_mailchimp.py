"""A stand-in Mailchimp for the README walkthrough: the test suite's fake, on 127.0.0.1, audience "aud1".

    .venv/bin/python examples/billz/fake_mailchimp.py      # needs the dev extra (make test installs it)

It prints the two variables to export in another shell, serves until Ctrl-C, then prints what the audience
holds: members by status and by tag. Nothing leaves the machine.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for tests.fakes

from tests.fakes.mailchimp import FakeMailchimp  # noqa: E402


def main() -> None:
    with FakeMailchimp() as fake:
        print(f"export MAILCHIMP_API_KEY={fake.api_key} MAILCHIMP_API_URL={fake.url}", flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        audience = fake.lists["aud1"]
        print("members by status:", dict(Counter(m["status"] for m in audience.members.values())))
        print("members by tag:", {seg["name"]: len(seg["members"]) for seg in audience.segments.values()})


if __name__ == "__main__":
    main()
