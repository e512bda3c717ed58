"""Secrets as read (esp14 #3, #4): a trailing newline or space is dropped from every secret wherever it is read
(the environment, a ``.env`` file, a CRM's own variables, the config file's ``[ledger] url``), in one place
(:func:`connectors.secrets.as_read`); and a password written only in the config's ``[ledger] url`` is masked as
the environment's is, where it stands in a URL (``:<password>@``)."""

from __future__ import annotations

from datetime import date

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from connectors.secrets import mask
from sync.settings import Settings, load_settings

#: what a file (a Kubernetes secret, ``echo key > file``) or a paste leaves after a value
TAILS = ["\n", "\r\n", "  ", " \t\n"]
SECRET_FIELDS = sorted(name for name, f in Settings.model_fields.items() if "Secret" in str(f.annotation))


def test_every_secret_of_the_settings_is_read_through_the_one_rule() -> None:
    """Every SecretStr setting is a Secret (a new secret added as a plain SecretStr would keep its newline)."""
    plain = [name for name, f in Settings.model_fields.items()
             if "SecretStr" in str(f.annotation) and "as_read" not in str(f.annotation)]
    assert SECRET_FIELDS and not plain, plain


@pytest.mark.parametrize("tail", TAILS, ids=repr)
def test_secrets_from_the_environment_lose_their_trailing_whitespace(monkeypatch, tail) -> None:
    for name in SECRET_FIELDS:
        monkeypatch.setenv(name.upper(), f"value-of-{name}{tail}")
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", f"postgresql+psycopg://rfm:pw-0123456789@db.example/rfm{tail}")
    settings = load_settings()
    for name in SECRET_FIELDS:
        value = getattr(settings, name)
        assert isinstance(value, SecretStr) and value.get_secret_value() == f"value-of-{name}", name
    assert settings.rfmsync_ledger_url == "postgresql+psycopg://rfm:pw-0123456789@db.example/rfm"


def test_secrets_from_a_dotenv_file_lose_their_trailing_whitespace(tmp_path) -> None:
    (tmp_path / ".env").write_text('SENDGRID_API_KEY="SG.key-0123456789\\n"\nRFMSYNC_WEBHOOK_SECRET="hook-secret  "\n'
                                   "UNISENDER_API_KEY=uni-key-0123456789   \n", encoding="utf-8")
    settings = Settings()  # ./.env (the test runs in tmp_path)
    assert settings.sendgrid_api_key.get_secret_value() == "SG.key-0123456789"
    assert settings.rfmsync_webhook_secret.get_secret_value() == "hook-secret"
    assert settings.unisender_api_key.get_secret_value() == "uni-key-0123456789"


@pytest.mark.parametrize("kind,variables", [
    ("amocrm", {"AMOCRM_TOKEN": "token", "AMOCRM_WEBHOOK_TOKEN": "webhook_token"}),
    ("retailcrm", {"RETAILCRM_API_KEY": "api_key", "RETAILCRM_WEBHOOK_TOKEN": "webhook_token"}),
    ("shopify", {"SHOPIFY_TOKEN": "token", "SHOPIFY_WEBHOOK_SECRET": "webhook_secret"}),
    ("bitrix24", {"BITRIX24_WEBHOOK_URL": "webhook_url", "BITRIX24_APP_TOKEN": "app_token"}),
])
def test_a_crms_own_secrets_lose_their_trailing_whitespace(monkeypatch, kind, variables) -> None:
    """A source reads its secrets from its own variables too (``connectors.registry.SECRETS``)."""
    from connectors.registry import SECRETS, secrets_for

    for variable in variables:
        monkeypatch.setenv(variable, f"{variable.lower()}-0123456789\r\n")
    for secrets in (SECRETS[kind](), secrets_for(kind, load_settings())):
        for variable, field in variables.items():
            assert getattr(secrets, field).get_secret_value() == f"{variable.lower()}-0123456789", (kind, field)


def test_a_key_read_with_a_trailing_newline_is_used_not_refused(sendgrid_fake, monkeypatch) -> None:
    """The key from a file, newline and all: the client built from the settings works (it was a config error,
    'SENDGRID_API_KEY holds a line break')."""
    from sync.destinations.sendgrid import SendGridDestination

    monkeypatch.setenv("SENDGRID_API_KEY", sendgrid_fake.api_key + "\n")
    dest = SendGridDestination("sg", load_settings().sendgrid_api_key, api_url=sendgrid_fake.url)
    assert dest.check().startswith("API key accepted")


def _shop(tmp_path):
    from sync.demodata import generate_shop

    return generate_shop(tmp_path / "shop", customers=20, seed=3, as_of=date(2025, 6, 30))


def _with_ledger_url(cfg, url: str) -> None:
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(f"[ledger]\nurl = {url}\n\n" + text, encoding="utf-8")


def test_the_config_files_ledger_url_loses_its_trailing_whitespace(tmp_path) -> None:
    """``[ledger] url = "sqlite:///…/x.db\\n"`` (a multi-line string, a value pasted with its newline): the ledger
    is x.db, not a file whose name ends in a newline."""
    from sync.config import load_config
    from sync.ledger import open_ledger

    cfg = _shop(tmp_path)
    _with_ledger_url(cfg, f'"sqlite:///{tmp_path / "x.db"} \\n"')
    config = load_config(cfg)
    assert config.ledger.url == f"sqlite:///{tmp_path / 'x.db'}"
    open_ledger(config, load_settings()).close()
    assert (tmp_path / "x.db").is_file() and sorted(p.name for p in tmp_path.glob("x.db*")) == ["x.db"]


def test_a_password_only_in_the_config_files_ledger_url_is_masked(tmp_path) -> None:
    """esp14 #4: the password of ``[ledger] url`` (no RFMSYNC_LEDGER_URL) was masked nowhere: an error echoing it
    (PostgreSQL's own, a driver's, a vendor's) showed it. It is masked as the environment's is, ``:<pw>@``,
    as written and percent-decoded, once the ledger URL is read; the word elsewhere is left alone."""
    from sync.cli import main
    from sync.config import load_config
    from sync.ledger.url import ledger_url

    cfg = _shop(tmp_path)
    _with_ledger_url(cfg, '"postgresql+psycopg://rfm:pa%40ss-file-pw@127.0.0.1:1/rfm"')
    ledger_url(load_config(cfg), load_settings())
    assert mask("connect to rfm:pa%40ss-file-pw@127.0.0.1 failed; user rfm:pa@ss-file-pw@db") == (
        "connect to rfm:***@127.0.0.1 failed; user rfm:***@db")
    assert mask("the word pa@ss-file-pw alone") == "the word pa@ss-file-pw alone"
    out = CliRunner().invoke(main, ["runs", "--config", str(cfg)])
    assert "pa%40ss-file-pw" not in out.output and "pa@ss-file-pw" not in out.output, out.output
