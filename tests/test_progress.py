"""Progress bars (stderr, terminals only), ``--quiet``, and the retry-wait line (issue 16, section 5).

The display is a :class:`sync.progress.Reporter`; tests give it a rich Console writing to a buffer (as a terminal
or not) through :func:`sync.progress.reporting`, or run the real CLI with stderr on a pseudo-terminal.
"""

from __future__ import annotations

import io
import json
import os
import pty
import random
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import responses
from rich.console import Console

from connectors.errors import TransientError
from connectors.retry import RetryPolicy, RetryWait
from sync import api, progress
from sync.cli.progress import Display
from sync.config import load_config
from sync.demodata import generate_shop
from sync.destinations.registry import make_destination
from sync.ledger import open_ledger
from sync.settings import load_settings
from tests.builders import run_cli

AS_OF = "2025-06-30"
ROOT = Path(__file__).resolve().parents[1]
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")  # ESC, CR, ...: what a bar or a spinner writes


@pytest.fixture(scope="module")
def small_shop(tmp_path_factory) -> Path:
    return generate_shop(tmp_path_factory.mktemp("shop"), customers=150, seed=7, as_of=date.fromisoformat(AS_OF))


@pytest.fixture
def shop(tmp_path, mailchimp_fake, monkeypatch) -> Path:
    """A demo shop synced to the fake Mailchimp (its fields need the predictions: every step runs)."""
    cfg = generate_shop(tmp_path / "shop", customers=150, seed=3, as_of=date.fromisoformat(AS_OF))
    text = cfg.read_text(encoding="utf-8").replace('audience = "demo000001"', 'audience = "aud1"')
    cfg.write_text(text.replace('RFM_CODE = "rfm"', 'RFM_CODE = "rfm"\nCHURN = "churn_risk"'), encoding="utf-8")
    monkeypatch.setenv("MAILCHIMP_API_KEY", mailchimp_fake.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", mailchimp_fake.url)
    return cfg


def terminal(buf: io.StringIO) -> Console:
    return Console(file=buf, force_terminal=True, width=160, color_system=None)


def sync_with(display: Display, cfg_path: Path):
    cfg, settings = load_config(cfg_path), load_settings()
    ledger = open_ledger(cfg, settings)
    try:
        with progress.reporting(display):
            return api.run_sync(cfg, ledger, settings, as_of=date.fromisoformat(AS_OF))
    finally:
        ledger.close()


# ---------------------------------------------------------------------------------------------- bars
def test_a_terminal_gets_a_bar_per_step_with_contacts_done_and_calls(shop, mailchimp_fake):
    buf = io.StringIO()
    display = Display(terminal(buf))
    reports = sync_with(display, shop)
    shown = buf.getvalue()
    for step in ("reading files", "predicting", "segmenting", "planning", "applying mailchimp-demo"):
        assert step in shown, step
    planned = reports[0].counts["planned"]
    assert planned > 0 and f"{planned}/{planned} contacts" in shown, "contacts done / total of the apply step"
    calls = re.findall(r"(\d+) calls", shown)
    assert calls and int(calls[-1]) >= mailchimp_fake.write_calls, "the API calls made (reads and writes)"
    assert "\x1b[?25h" in shown and display._live is None, "the bars are gone once the steps are done"
    assert mailchimp_fake.api_key not in shown


def test_no_bars_without_a_terminal_or_with_quiet(small_shop):
    cfg = load_config(small_shop)
    for display in (Display(Console(file=io.StringIO(), width=160)),  # a pipe, a file, cron
                    Display(terminal(io.StringIO()), quiet=True)):
        with progress.reporting(display):
            run = api.segments(cfg, date.fromisoformat(AS_OF), predict=True)
            run.close()
        assert display.console.file.getvalue() == ""


def test_a_pull_advances_by_pages_and_steps_nest():
    buf = io.StringIO()
    with progress.reporting(Display(terminal(buf))):
        with progress.step("pulling retailcrm") as advance:
            advance(100)
            advance(50)
            progress.api_call()
            with progress.step("inner", total=2):
                progress.advance(2)
    shown = buf.getvalue()
    assert "pulling retailcrm" in shown and "150" in shown and "1 calls" in shown and "2/2" in shown


def test_a_crm_pull_shows_its_records_and_calls(tmp_path, monkeypatch):
    from tests.test_cli_pull import seeded
    from tests.test_retailcrm import BASE, KEY

    monkeypatch.setenv("RETAILCRM_URL", BASE)
    monkeypatch.setenv("RETAILCRM_API_KEY", KEY)
    (tmp_path / "rfmsync.toml").write_text('[source]\ntype = "retailcrm"\npage_size = 20\n', encoding="utf-8")
    cfg, settings, buf = load_config(tmp_path / "rfmsync.toml"), load_settings(), io.StringIO()
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        seeded(rsps)
        ledger = open_ledger(cfg, settings)
        try:
            with progress.reporting(Display(terminal(buf))):
                pulled = api.pull(cfg, ledger, settings)
        finally:
            ledger.close()
    shown = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buf.getvalue())
    records = pulled.result.orders + pulled.result.contacts
    assert records == 4 and re.search(rf"pulling retailcrm .* {records} records  \d+ calls", shown), shown
    assert KEY not in shown


def test_outside_a_cli_nobody_listens(small_shop, capsys):
    run = api.segments(load_config(small_shop), date.fromisoformat(AS_OF))
    run.close()
    progress.advance(3)  # outside any step: nothing to advance
    assert capsys.readouterr() == ("", "")


# ---------------------------------------------------------------------------------------------- the CLI
def run_on_a_pty(*args: str, cwd: Path) -> tuple[int, bytes, bytes]:
    """``rfmsync ARGS`` with stderr on a pseudo-terminal (stdout a pipe): exit code, stdout, stderr."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE")}
    proc = subprocess.Popen([sys.executable, "-m", "sync", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env={**env, "COLUMNS": "120"})
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        err += chunk
    out = proc.stdout.read()
    proc.wait(timeout=60)
    os.close(master)
    return proc.returncode, out, err


def test_the_cli_draws_bars_on_a_terminal_stderr_and_quiet_turns_them_off(small_shop):
    args = ("segments", "--config", str(small_shop), "--as-of", AS_OF, "--format", "json")
    code, out, err = run_on_a_pty(*args, cwd=small_shop.parent)
    assert code == 0, err
    assert b"reading files" in err and b"segmenting" in err and b"\x1b[" in err
    piped = run_cli(*args)
    assert out.decode() == piped.stdout, "stdout is the same whether stderr is a terminal or not"
    code, quiet_out, quiet_err = run_on_a_pty(*args, "--quiet", cwd=small_shop.parent)
    assert code == 0 and quiet_out == out
    assert b"reading files" not in quiet_err and b"segmenting" not in quiet_err and not quiet_err.strip()


def stamp(text: str) -> str:
    """The plan's creation time is the one thing two runs differ in."""
    return re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", "<now>", text)


def test_without_a_terminal_the_output_is_the_same_byte_for_byte(small_shop, tmp_path):
    """No stray control characters in piped output or JSON: a run is identical with --quiet (the progress code
    off) and without it (the progress code running, with nothing to draw on)."""
    for args in (("segments", "--format", "json"), ("segments",), ("plan", "--format", "json"),
                 ("check", "--format", "json", "--offline")):
        base = (*args, "--config", str(small_shop), "--as-of", AS_OF) if args[0] != "check" else \
            (*args, "--config", str(small_shop))
        loud, quiet = run_cli(*base), run_cli(*base, "--quiet")
        assert stamp(loud.stdout) == stamp(quiet.stdout) and loud.stderr == quiet.stderr, args
        assert not CONTROL.search(loud.stdout.replace("\n", "")) and not CONTROL.search(loud.stderr.replace("\n", ""))
        if "json" in args:
            json.loads(loud.stdout)


def test_quiet_before_or_after_the_command_drops_the_info_lines(small_shop, tmp_path):
    """``--quiet`` drops "wrote N customers"; the demo shop's bad rows stay said, as a warning."""
    base = ("segments", "--config", str(small_shop), "--as-of", AS_OF, "--customers", "--no-predict", "-o")
    loud = run_cli(*base, str(tmp_path / "a.csv"))
    assert "wrote 1" in loud.stderr
    warnings = [line for line in loud.stderr.splitlines() if line.startswith("warning: ")]
    assert any("bad rows were left out" in line for line in warnings)
    for quiet in (run_cli(*base, str(tmp_path / "b.csv"), "--quiet"), run_cli("-q", *base, str(tmp_path / "c.csv"))):
        assert quiet.stderr.splitlines() == warnings
    assert (tmp_path / "b.csv").read_bytes() == (tmp_path / "a.csv").read_bytes()


def test_quiet_keeps_errors_and_warnings(tmp_path):
    result = run_cli("--quiet", "segments", "--config", str(tmp_path / "missing.toml"), code=2)
    assert result.stderr.startswith("error:")


# ---------------------------------------------------------------------------------------------- retry waits
def test_the_retry_layer_tells_each_wait_without_the_message():
    waits: list[RetryWait] = []
    calls: list[int] = []
    answers = iter([TransientError("Mailchimp GET https://x/?apikey=secret: HTTP 429", status=429, retry_after=12),
                    TransientError("Mailchimp GET: timed out after 30 s"),
                    TransientError("Mailchimp GET: cannot connect (ConnectionError)")])

    def flaky() -> str:
        err = next(answers, None)
        if err is not None:
            raise err
        return "ok"

    policy = RetryPolicy(sleep=lambda s: None, rng=random.Random(0), on_attempt=lambda: calls.append(1),
                         on_wait=waits.append)
    assert policy.call(flaky, what="mailchimp GET lists", vendor="Mailchimp") == "ok"
    assert [w.line() for w in waits][0] == "Mailchimp 429: waiting 12 s, attempt 2/6"
    assert [(w.reason, w.attempt) for w in waits] == [("429", 2), ("timeout", 3), ("connection error", 4)]
    assert len(calls) == 4 and all("secret" not in w.line() for w in waits)


def mailchimp_client(shop: Path, sleeps: list[float]):
    dest, settings = load_config(shop).destinations[0], load_settings()
    return make_destination(dest, settings, retry=dest.http_settings(settings).retry_policy(sleep=sleeps.append))


@pytest.mark.parametrize("quiet", [False, True])
def test_a_long_wait_prints_one_line_even_without_a_terminal_unless_quiet(shop, mailchimp_fake, quiet):
    mailchimp_fake.fail(429, times=2, retry_after="3", method="GET")
    mailchimp_fake.fail(429, retry_after="2", method="GET")  # 2 s: not "longer than 2 s", the bar only
    buf, sleeps = io.StringIO(), []
    with progress.reporting(Display(Console(file=buf, width=160), quiet=quiet)):
        assert "aud1" in mailchimp_client(shop, sleeps).check()
    assert sleeps == [3.0, 3.0, 2.0], "no real sleeping: the waits went to the injected sleep"
    expected = "" if quiet else "Mailchimp 429: waiting 3 s, attempt 2/6\nMailchimp 429: waiting 3 s, attempt 3/6\n"
    assert buf.getvalue() == expected
    assert mailchimp_fake.api_key not in buf.getvalue()


def test_a_wait_shows_on_the_running_bar(shop, mailchimp_fake):
    mailchimp_fake.fail(429, retry_after="1", method="GET")
    buf = io.StringIO()
    with progress.reporting(Display(terminal(buf))):
        with progress.step("planning"):
            mailchimp_client(shop, []).check()
    assert "Mailchimp 429: waiting 1 s, attempt 2/6" in buf.getvalue()
