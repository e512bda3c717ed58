"""How many examples the property tests try: one Hypothesis profile for the whole suite, chosen by
``RFMSYNC_HYPOTHESIS`` (loaded by tests/conftest.py before any test module is imported).

- ``fast`` (the default, ``make test``): a quarter of each test's stated count, at least 5 (or the test's count
  if it asked for fewer); a test without a count gets 25 examples.
- ``thorough`` (``RFMSYNC_HYPOTHESIS=thorough make test``): twice each test's stated count; 200 for a test
  without one.

A test states its count relative to Hypothesis's default of 100 and lets the profile scale it:
``@settings(max_examples=examples(200))``. A test that needs a minimum whatever the profile (it asserts a number
of examples, or must see every class of answer) passes ``minimum=``.
"""

from __future__ import annotations

import math
import os

from hypothesis import settings

ENV = "RFMSYNC_HYPOTHESIS"
PROFILES = {"fast": 25, "thorough": 200}  # a test's max_examples when it states no count
FLOOR = 5  # the fewest examples the fast profile gives a test that asked for more

for _name, _count in PROFILES.items():
    settings.register_profile(_name, max_examples=_count)


def load_profile() -> str:
    """Load the profile ``RFMSYNC_HYPOTHESIS`` names (``fast`` when unset) and return its name."""
    name = os.environ.get(ENV, "").strip() or "fast"
    if name not in PROFILES:
        raise ValueError(f"{ENV}={name!r}: expected one of {', '.join(PROFILES)}")
    settings.load_profile(name)
    return name


def examples(count: int, *, minimum: int = 0) -> int:
    """The examples a test that states ``count`` (as if Hypothesis's default were 100) runs under the loaded
    profile: ``count`` scaled by the profile's share of 100, never below ``minimum`` nor below ``FLOOR`` (or
    ``count`` itself when that is smaller)."""
    scaled = math.ceil(count * settings.default.max_examples / 100)
    return max(scaled, min(count, FLOOR), minimum)


LOADED = load_profile()  # the profile the suite runs under (conftest imports this module first)
