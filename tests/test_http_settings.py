"""[http] settings: timeouts and retry budgets for every ESP and CRM client, from the config and RFMSYNC_HTTP_*."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sync.config import HttpConfig, load_config
from sync.destinations.registry import make_destination
from sync.errors import ConfigError, DestinationError
from sync.pipeline import configured_source
from sync.settings import load_settings
from tests.fakes.http import LoopbackServer, Reply
from tests.fakes.mailchimp import FakeMailchimp, mailchimp_fake  # noqa: F401  (fixture)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rfmsync.toml"
    path.write_text(text, encoding="utf-8")
    return path


MC = '''
[[destinations]]
name = "mc"
type = "mailchimp"
audience = "aud1"
'''


@pytest.fixture
def mc_env(mailchimp_fake, monkeypatch):
    monkeypatch.setenv("MAILCHIMP_API_KEY", mailchimp_fake.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", mailchimp_fake.url)
    return mailchimp_fake


def test_defaults_sections_and_precedence(tmp_path, monkeypatch):
    cfg = load_config(write(tmp_path, MC))
    assert cfg.http == HttpConfig() and cfg.http.timeout_seconds == 30
    cfg = load_config(write(tmp_path, "[http]\ntimeout_seconds = 10\nmax_attempts = 3\n" + MC
                            + "\n[destinations.http]\nmax_attempts = 2\nconcurrency = 8\n"))
    eff = cfg.destinations[0].http_settings(load_settings())
    assert (eff.timeout_seconds, eff.max_attempts, eff.concurrency) == (10, 2, 8)
    monkeypatch.setenv("RFMSYNC_HTTP_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv("RFMSYNC_HTTP_MAX_ATTEMPTS", "4")
    eff = cfg.destinations[0].http_settings(load_settings())
    assert (eff.timeout_seconds, eff.max_attempts) == (0.5, 4), "RFMSYNC_HTTP_* wins over the config"
    policy = eff.retry_policy()
    assert (policy.attempts, policy.timeout, policy.max_wait) == (4, 0.5, 30)


def test_bad_values_are_config_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="timeout_seconds"):
        load_config(write(tmp_path, "[http]\ntimeout_seconds = 0\n"))
    with pytest.raises(ConfigError, match="retries"):
        load_config(write(tmp_path, "[http]\nretries = 3\n"))
    cfg = load_config(write(tmp_path, MC))
    monkeypatch.setenv("RFMSYNC_HTTP_MAX_ATTEMPTS", "0")  # refused as the variable it is, not as [http]'s max_attempts
    with pytest.raises(ConfigError, match="environment variable RFMSYNC_HTTP_MAX_ATTEMPTS='0': should be greater"):
        cfg.destinations[0].http_settings(load_settings())


def test_a_stalled_esp_fails_fast_with_the_configured_timeout(tmp_path, mc_env, monkeypatch):
    monkeypatch.setenv("RFMSYNC_HTTP_MAX_WAIT_SECONDS", "0")  # no back-off sleeps in the test
    cfg = load_config(write(tmp_path, "[http]\ntimeout_seconds = 0.5\nmax_attempts = 2\n" + MC))
    mc_env.stall(3, times=5, method="GET")
    client = make_destination(cfg.destinations[0], load_settings())
    started = time.monotonic()
    with pytest.raises(DestinationError) as err:
        client.check()
    assert time.monotonic() - started < 2.5, "two attempts of 0.5 s, not the 30 s default"
    assert "timed out after 0.5 s" in str(err.value) and "gave up after 2 attempts" in str(err.value)


def test_max_wait_caps_a_long_retry_after(tmp_path, mc_env):
    cfg = load_config(write(tmp_path, MC + "\n[destinations.http]\nmax_wait_seconds = 5\nmax_attempts = 3\n"))
    dest = cfg.destinations[0]
    waits: list[float] = []
    mc_env.fail(429, times=2, retry_after="3600", method="GET")
    client = make_destination(dest, load_settings(), retry=dest.http_settings(load_settings()).retry_policy(
        sleep=waits.append))
    assert "aud1" in client.check()
    assert waits == [5.0, 5.0], "Retry-After: 3600 capped at max_wait_seconds"


def test_concurrency_is_bounded_by_the_vendor_limit(tmp_path, mc_env):
    cfg = load_config(write(tmp_path, MC + "\n[destinations.http]\nconcurrency = 50\n"))
    client = make_destination(cfg.destinations[0], load_settings())
    assert client.max_connections == 10  # Mailchimp: 10 simultaneous connections per key


def test_a_stalled_crm_fails_fast_with_the_configured_timeout(tmp_path, monkeypatch):
    stalled = Reply(200, b'{"success": true}', {"Content-Type": "application/json"}, delay=3)
    with LoopbackServer(lambda req: stalled) as server:
        monkeypatch.setenv("RETAILCRM_API_KEY", "crm-key-123456")
        monkeypatch.setenv("RETAILCRM_URL", server.url)
        monkeypatch.setenv("RFMSYNC_HTTP_MAX_WAIT_SECONDS", "0")
        cfg = load_config(write(tmp_path, '[source]\ntype = "retailcrm"\n\n[http]\ntimeout_seconds = 0.5\n'
                                          'max_attempts = 2\n'))
        source = configured_source(cfg, load_settings())
        started = time.monotonic()
        with pytest.raises(Exception) as err:
            source.check()
        assert time.monotonic() - started < 2.5
        assert "timed out after 0.5 s" in str(err.value) and "gave up after 2 attempts" in str(err.value)
