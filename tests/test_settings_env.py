"""The environment as the README has users write it (hunt31b): ``cp settings.example.env .env``, unedited, runs every
command (its blank lines were refused as numbers: exit 70 with pydantic's dump); a blank ESP key line is a key not
set, as in every connector's settings; a value that does not read, or a ``.env`` that is not UTF-8, is a one-line
config error (exit 2) naming the variable or the file's line, a secret's value never shown."""

from __future__ import annotations

import re
import shutil
from datetime import date
from pathlib import Path

import pytest

from sync.demodata import generate_shop
from sync.destinations.registry import DESTINATIONS
from sync.errors import ConfigError
from sync.settings import Settings, load_settings
from tests.builders import run_cli as run

ROOT = Path(__file__).resolve().parents[1]
AS_OF = "2025-06-30"
#: pydantic's own error text: what no error line of rfmsync shows
PYDANTIC_DUMP = re.compile(r"validation errors? for|errors\.pydantic\.dev|input_value|internal error")


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """The demo shop (its config has a Mailchimp destination) as of :data:`AS_OF`."""
    return generate_shop(tmp_path_factory.mktemp("shop"), customers=150, seed=3, as_of=date.fromisoformat(AS_OF))


def one_destination(shop: Path, folder: Path, type_: str) -> Path:
    """The demo shop's config with one destination of ``type_`` in place of its own, written in ``folder``."""
    text = shop.read_text(encoding="utf-8")
    text = text[:text.index("[[destinations]]")].replace('"orders.csv"', repr(str(shop.parent / "orders.csv")))
    text = text.replace('"clients.csv"', repr(str(shop.parent / "clients.csv")))
    audience = 'audience = "aud1"\n' if DESTINATIONS[type_].needs_audience else ""
    config = folder / f"{type_}.toml"
    config.write_text(f'{text}[[destinations]]\nname = "esp"\ntype = "{type_}"\n{audience}new_contacts = "skip"\n\n'
                      '[destinations.segments]\n"Best active" = "VIP"\n', encoding="utf-8")
    return config


def test_the_example_env_copied_unedited_is_every_setting_unset(tmp_path) -> None:
    """README: ``cp settings.example.env .env``. Every line of it is blank, and a blank variable is unset: the
    settings are their defaults, whatever the file grows to list."""
    shutil.copy(ROOT / "settings.example.env", tmp_path / ".env")  # (the test runs in tmp_path)
    assert load_settings().model_dump() == {name: None for name in Settings.model_fields}


@pytest.mark.parametrize("command", [("check",), ("pull",), ("plan", "--as-of", AS_OF), ("runs",), ("failures",),
                                     ("report", "--as-of", AS_OF, "-o", "report.html")], ids=lambda c: c[0])
def test_every_command_runs_with_the_example_env_unedited(shop, tmp_path, command) -> None:
    """Each was exit 70: "internal error: 4 validation errors for Settings" (the ``RFMSYNC_HTTP_*`` numbers)."""
    shutil.copy(ROOT / "settings.example.env", tmp_path / ".env")
    out = run(*command, "--config", str(shop)).output
    assert not PYDANTIC_DUMP.search(out), out


@pytest.mark.parametrize("type_", sorted(DESTINATIONS))
def test_a_blank_esp_key_line_is_a_key_not_set(shop, tmp_path, type_) -> None:
    """``MAILCHIMP_API_KEY=`` (or SendGrid's, Unisender's) was a key set, an empty one: ``check`` and ``plan`` exit 2
    ("is not set") where the key left out gives "not checked" and a plan against the ledger alone (exit 0)."""
    config = one_destination(shop, tmp_path, type_)
    key = DESTINATIONS[type_].key_env
    unset = [run("check", "--config", str(config)).output, run("plan", "--config", str(config), "--as-of", AS_OF)]
    (tmp_path / ".env").write_text(f"{key}=\n{DESTINATIONS[type_].url_env}=\n", encoding="utf-8")
    check = run("check", "--config", str(config)).output
    plan = run("plan", "--config", str(config), "--as-of", AS_OF)
    assert f"not checked, {key} is not set" in check and check == unset[0]
    assert "planned against the ledger alone" in plan.output and plan.output == unset[1].output


def test_a_mailchimp_key_without_its_data_centre_and_a_blank_url_is_the_clear_error(shop, tmp_path) -> None:
    """A key without ``-us21`` beside ``MAILCHIMP_API_URL=`` called https://None.api.mailchimp.com (six tries, up to
    39 s, then exit 4 "not reachable"); it is the config error a key without its suffix is, at once."""
    from sync.destinations.mailchimp import MailchimpDestination
    from sync.errors import DestinationConfigError

    (tmp_path / ".env").write_text("MAILCHIMP_API_KEY=0123456789abcdef0123456789abcdef\nMAILCHIMP_API_URL=\n",
                                   encoding="utf-8")
    out = run("check", "--config", str(one_destination(shop, tmp_path, "mailchimp")), code=2).output
    assert "no data-centre suffix" in out and "None" not in out, out
    for blank in ("", "  "):  # the library's own callers: a blank URL is no URL
        with pytest.raises(DestinationConfigError, match="no data-centre suffix"):
            MailchimpDestination("m", "aud1", "0123456789abcdef0123456789abcdef", api_url=blank)


@pytest.mark.parametrize("where", ["environment", ".env"])
def test_a_value_that_does_not_read_is_one_line_naming_the_variable(tmp_path, monkeypatch, shop, where) -> None:
    if where == "environment":
        monkeypatch.setenv("RFMSYNC_HTTP_TIMEOUT_SECONDS", "30s")
    else:
        (tmp_path / ".env").write_text("RFMSYNC_HTTP_MAX_ATTEMPTS=6.5\n", encoding="utf-8")
    out = run("check", "--offline", "--config", str(shop), code=2).output
    expected = ("error: environment variable RFMSYNC_HTTP_TIMEOUT_SECONDS='30s': should be a valid number"
                if where == "environment" else "error: .env variable RFMSYNC_HTTP_MAX_ATTEMPTS='6.5': should be a "
                                               "valid integer")
    assert out.startswith(expected) and len(out.strip().splitlines()) == 1, out
    assert not PYDANTIC_DUMP.search(out), out


def test_a_secret_that_does_not_read_is_named_its_value_never_shown() -> None:
    """pydantic's text echoes the value (``input_value=``): for a secret, the error names the variable alone."""
    key = "abcdef0123456789abcdef0123456789-us21"
    with pytest.raises(ConfigError) as exc:
        load_settings(mailchimp_api_key=[key], rfmsync_ledger_url=[f"postgresql://u:{key}@h/db"])
    assert "MAILCHIMP_API_KEY: should be a valid string" in str(exc.value)
    assert "RFMSYNC_LEDGER_URL: should be a valid string" in str(exc.value)
    assert key not in str(exc.value) and not PYDANTIC_DUMP.search(str(exc.value)), exc.value


def test_a_dotenv_not_in_utf8_is_one_line_naming_its_line(tmp_path, shop) -> None:
    """A ``.env`` saved in cp1251 (Notepad, a Cyrillic comment) was "internal error: 'utf-8' codec can't decode
    byte 0xca in position 2"; the line's text is not quoted (it may hold a key)."""
    (tmp_path / ".env").write_bytes("MAILCHIMP_API_KEY=abcdef0123456789abcdef0123456789-us21\n# Ключ Mailchimp\n"
                                    .encode("cp1251"))
    out = run("check", "--offline", "--config", str(shop), code=2).output
    assert out.startswith("error: .env is not UTF-8: line 2 (byte offset 58: 0xca); save it as UTF-8"), out
    assert "abcdef0123456789" not in out and not PYDANTIC_DUMP.search(out), out


def test_serve_help_says_what_worker_runs() -> None:
    """It read "Run [serve] workers resync workers"."""
    help_text = " ".join(run("serve", "--help").output.split())
    assert "Run the resync workers, [serve] workers of them (--no-worker: intake only)." in help_text


def test_sync_and_serve_run_with_the_example_env_unedited(shop, tmp_path) -> None:
    """The two commands the list above leaves out: ``sync`` stops at the missing key (exit 2, not 70), ``serve``
    comes up (its health answers) and stops."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import requests

    shutil.copy(ROOT / "settings.example.env", tmp_path / ".env")
    out = run("sync", "--config", str(shop), "--as-of", AS_OF, code=2).output
    assert "MAILCHIMP_API_KEY is not set" in out and not PYDANTIC_DUMP.search(out), out
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sync.cli", "serve", "--config", str(shop), "--port", str(port)],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "serve did not come up"
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert not PYDANTIC_DUMP.search(log.read_text()), log.read_text()


def test_a_variable_exported_blank_leaves_the_dotenv_value(tmp_path, monkeypatch) -> None:
    """compose's ``MAILCHIMP_API_KEY: ${MAILCHIMP_API_KEY}`` exports it blank when the host does not set it: blank is
    "as if the line were not there", so ``.env``'s value applies (it was unset, the key lost). Spaces alike."""
    from connectors.amocrm_config import AmoCrmSecrets
    from connectors.bitrix24_config import Bitrix24Secrets
    from connectors.retailcrm import RetailCrmSecrets
    from connectors.shopify_config import ShopifySecrets
    from sync.settings import secret

    key = "abcdef0123456789abcdef0123456789-us21"
    (tmp_path / ".env").write_text(f"MAILCHIMP_API_KEY={key}\nRFMSYNC_HTTP_MAX_ATTEMPTS=3\nRFMSYNC_CONFIG=x.toml\n"
                                   "AMOCRM_TOKEN=t1\nRETAILCRM_API_KEY=k1\nBITRIX24_APP_TOKEN=b1\nSHOPIFY_TOKEN=s1\n",
                                   encoding="utf-8")
    for name in ("MAILCHIMP_API_KEY", "RFMSYNC_HTTP_MAX_ATTEMPTS", "AMOCRM_TOKEN", "RETAILCRM_API_KEY",
                 "BITRIX24_APP_TOKEN", "SHOPIFY_TOKEN"):
        monkeypatch.setenv(name, "")
    settings = load_settings()
    assert settings.mailchimp_api_key.get_secret_value() == key and settings.rfmsync_http_max_attempts == 3
    secrets = [cls(_env_file=".env") for cls in (AmoCrmSecrets, RetailCrmSecrets, Bitrix24Secrets, ShopifySecrets)]
    assert [secret(s.token) for s in secrets[::3]] == ["t1", "s1"]  # amoCRM's and Shopify's
    assert secret(secrets[1].api_key) == "k1" and secret(secrets[2].app_token) == "b1"
    monkeypatch.setenv("MAILCHIMP_API_KEY", "  ")  # whitespace only: as if not there too, not a key of "  "
    assert load_settings().mailchimp_api_key.get_secret_value() == key


def test_a_variable_exported_as_spaces_leaves_the_dotenv_value_in_a_real_process(tmp_path) -> None:
    """``MAILCHIMP_API_KEY="  "`` exported while ``.env`` has the key: the spaces hid it (the variable, blank, was
    unset after the merge over ``.env``: the default, no key); a blank-or-spaces variable is not there at all."""
    import json
    import os
    import subprocess
    import sys

    key = "abcdef0123456789abcdef0123456789-us21"
    (tmp_path / ".env").write_text(f"MAILCHIMP_API_KEY={key}\nRFMSYNC_HTTP_MAX_ATTEMPTS=3\n"
                                   "MAILCHIMP_API_URL=https://dotenv.example\nSHOPIFY_TOKEN=s1\n", encoding="utf-8")
    code = ("import json\nfrom sync.settings import load_settings, secret\n"
            "from connectors.shopify_config import ShopifySecrets\ns = load_settings()\n"
            "print(json.dumps([secret(s.mailchimp_api_key), s.rfmsync_http_max_attempts, s.mailchimp_api_url,"
            " secret(ShopifySecrets(_env_file='.env').token)]))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "MAILCHIMP_API_KEY": "  ",
           "RFMSYNC_HTTP_MAX_ATTEMPTS": " \t ", "MAILCHIMP_API_URL": " ", "SHOPIFY_TOKEN": "   "}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [key, 3, "https://dotenv.example", "s1"]


@pytest.mark.parametrize("value", ["", "   "])
def test_a_blank_rfmsync_config_is_unset(shop, tmp_path, monkeypatch, value) -> None:
    """``RFMSYNC_CONFIG="  "`` was "config file    not found": blank is unset, ./rfmsync.toml is read."""
    from sync.config import find_config_path

    monkeypatch.setenv("RFMSYNC_CONFIG", value)
    assert find_config_path() == Path("rfmsync.toml")


def test_a_variable_in_lower_case_is_named_an_environment_variable(tmp_path, monkeypatch) -> None:
    """pydantic-settings reads ``rfmsync_http_timeout_seconds`` as the setting; the error said it came from .env."""
    monkeypatch.setenv("rfmsync_http_timeout_seconds", "30s")
    with pytest.raises(ConfigError, match=r"^environment variable RFMSYNC_HTTP_TIMEOUT_SECONDS='30s': should be"):
        load_settings()


def test_a_bad_dotenv_value_under_a_variable_exported_blank_is_named_a_dotenv_variable(tmp_path, monkeypatch):
    """hunt32a F5: compose's ``${RFMSYNC_HTTP_TIMEOUT_SECONDS}`` unset on the host exports it empty, so ``.env``'s
    ``30s`` is what was read; the error said "environment variable" and the user looked in the wrong place."""
    (tmp_path / ".env").write_text("RFMSYNC_HTTP_TIMEOUT_SECONDS=30s\n", encoding="utf-8")
    monkeypatch.setenv("RFMSYNC_HTTP_TIMEOUT_SECONDS", "")
    with pytest.raises(ConfigError, match=r"^\.env variable RFMSYNC_HTTP_TIMEOUT_SECONDS='30s': should be"):
        load_settings()


@pytest.mark.parametrize("name, value, expected", [
    ("RFMSYNC_HTTP_MAX_ATTEMPTS", "0", "should be greater than or equal to 1"),
    ("RFMSYNC_HTTP_TIMEOUT_SECONDS", "-1", "should be greater than 0"),
    ("RFMSYNC_HTTP_TIMEOUT_SECONDS", "inf", "should be a finite number"),
    ("RFMSYNC_HTTP_MAX_WAIT_SECONDS", "nan", "should be a finite number"),
    ("RFMSYNC_HTTP_CONCURRENCY", "0", "should be greater than or equal to 1")])
def test_a_value_out_of_range_is_refused_naming_the_variable(shop, monkeypatch, name, value, expected) -> None:
    """It was refused from [http]'s model, naming ``http.max_attempts`` (a table the config may not have)."""
    monkeypatch.setenv(name, value)
    out = run("check", "--offline", "--config", str(shop), code=2).output
    assert out.startswith(f"error: environment variable {name}='{value}': {expected}"), out
    assert "http." not in out, out


def test_every_setting_read_as_a_secret_is_in_the_secret_values() -> None:
    """:func:`is_secret` (what an error leaves unshown) and :meth:`Settings.secret_values` (what is masked) agree on
    every field: a secret field added to one is in the other."""
    from sync.settings import is_secret

    fields = Settings.model_fields
    values = {name: 2 if name.startswith("rfmsync_http_") else f"postgresql://u:pw-{name}@h/db"
              if name.endswith("_url") else f"value-{name}" for name in fields}
    values["bitrix24_webhook_url"] = "https://p.example/rest/1/code-bitrix24/"
    for name, field in fields.items():
        settings = Settings(_env_file=None, **{name: values[name]})
        masked = " ".join(settings.secret_values())
        assert (bool(masked.strip(":@ ")) == is_secret(field)), (name, masked)
