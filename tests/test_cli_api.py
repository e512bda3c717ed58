"""The CLI over the library API: every command and option reachable from `rfmsync --help`, one as-of rule
(today in the config's timezone), and every source taking the same `pull(..., progress=)` call."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from zoneinfo import ZoneInfo

import click
import pytest

from sync import api
from sync.cli import main
from sync.config import load_config
from sync.demodata import generate_shop
from tests.builders import run_cli as run

AS_OF = "2025-06-30"
# UTC+14 and UTC-11: 25 hours apart, so whatever the machine's zone and the hour, at least one of them is on
# another day than the machine's local date (a command that took date.today() would be a day off there)
FAR_ZONES = ("Pacific/Kiritimati", "Pacific/Pago_Pago")




def _commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


def test_every_command_and_option_is_reachable_from_the_help_tree():
    top = run("--help").output
    seen = 0
    for path, command in _commands(main):
        assert re.search(rf"^\s+{path[-1]}\s", top, re.M), f"`rfmsync {path[-1]}` is not listed in rfmsync --help"
        text = run(*path, "--help").output
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                for flag in [*param.opts, *param.secondary_opts]:
                    assert flag in text, f"rfmsync {' '.join(path)}: {flag} missing from --help"
                    seen += 1
    assert seen > 30  # the walk really saw the options


def test_shared_options_are_defined_once():
    """--config, --as-of and --destination read the same in every command that takes them."""
    helps: dict[str, set[str]] = {}
    for _, command in _commands(main):
        for param in command.params:
            if isinstance(param, click.Option) and param.opts[0] in ("--config", "--as-of"):
                helps.setdefault(param.opts[0], set()).add(param.help)
    assert set(helps) == {"--config", "--as-of"}
    assert all(len(texts) == 1 for texts in helps.values()), helps


@pytest.fixture
def far_shop(tmp_path_factory):
    """The demo shop in each of two far-apart zones (its data end on AS_OF; the runs go as of today)."""
    paths = {}
    for zone in FAR_ZONES:
        path = generate_shop(tmp_path_factory.mktemp("far"), customers=120, seed=3,
                             as_of=date.fromisoformat(AS_OF))
        path.write_text(path.read_text(encoding="utf-8").replace('timezone = "Asia/Tashkent"',
                                                                 f'timezone = "{zone}"'), encoding="utf-8")
        paths[zone] = path
    return paths


def test_commands_without_as_of_compute_as_of_today_in_the_configs_timezone(far_shop):
    for zone, path in far_shop.items():
        today = datetime.now(ZoneInfo(zone)).date().isoformat()
        assert api.as_of_date(load_config(path)).isoformat() == today
        segments = json.loads(run("segments", "--config", str(path), "--format", "json").stdout)
        plan = json.loads(run("plan", "--config", str(path), "--format", "json").stdout)
        assert (zone, segments["as_of"], plan["as_of"]) == (zone, today, today)


def test_an_explicit_as_of_wins_over_today(far_shop):
    path = far_shop[FAR_ZONES[0]]
    segments = json.loads(run("segments", "--config", str(path), "--as-of", AS_OF, "--format", "json").stdout)
    assert segments["as_of"] == AS_OF


def test_pull_of_a_file_source_takes_the_progress_callback_like_every_source(tmp_path):
    """`rfmsync pull` gives every source a progress callback (a file export ignores it)."""
    path = generate_shop(tmp_path, customers=60, seed=2, as_of=date.fromisoformat(AS_OF))
    out = run("pull", "--config", str(path)).output
    assert re.search(r"pulled \d+ orders and \d+ contacts from file", out), out
    assert "the store now holds" in out
