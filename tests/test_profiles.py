"""The suite's Hypothesis profiles (tests/profiles.py): RFMSYNC_HYPOTHESIS picks one, a test's stated count scales
with it, a stated minimum holds under every profile, and a misspelt profile is an error naming the choices."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from tests import profiles


@pytest.fixture
def restore_profile():
    before = settings.get_current_profile_name()
    yield
    settings.load_profile(before)


@pytest.mark.parametrize(("env", "name", "plain", "stated", "small"), [
    (None, "fast", 25, 50, 3),
    ("", "fast", 25, 50, 3),
    ("fast", "fast", 25, 50, 3),
    ("thorough", "thorough", 200, 400, 6),
])
def test_the_variable_picks_the_profile_and_a_stated_count_scales_with_it(monkeypatch, restore_profile, env, name,
                                                                          plain, stated, small):
    if env is None:
        monkeypatch.delenv(profiles.ENV, raising=False)
    else:
        monkeypatch.setenv(profiles.ENV, env)
    assert profiles.load_profile() == name
    assert settings.default.max_examples == plain  # a test that states no count
    assert profiles.examples(200) == stated
    assert profiles.examples(3) == small  # fast: never below what the test asked when that is under the floor
    assert profiles.examples(40) >= profiles.FLOOR
    assert profiles.examples(1000, minimum=1000) >= 1000

    runs = []

    @given(st.integers())
    def unstated(i):
        runs.append(i)

    unstated()
    assert len(runs) == plain


def test_a_misspelt_profile_names_the_variable_and_the_choices(monkeypatch, restore_profile):
    monkeypatch.setenv(profiles.ENV, "thourough")
    with pytest.raises(ValueError, match=r"RFMSYNC_HYPOTHESIS='thourough': expected one of fast, thorough"):
        profiles.load_profile()


def test_the_suite_runs_under_the_profile_the_variable_names():
    """Loaded before any test module is imported (tests/conftest.py), so the counts the modules computed at import
    are the profile's. (The variable itself is gone by now: tests/conftest.py hides every RFMSYNC_ variable.)"""
    assert profiles.LOADED in profiles.PROFILES
    assert settings.get_current_profile_name() == profiles.LOADED
    assert settings.default.max_examples == profiles.PROFILES[profiles.LOADED]
