"""Environment settings: the one place secrets and endpoints come from (pydantic-settings, ``.env`` supported).

Nothing is read at import time: call :func:`load_settings`. ``settings.example.env`` lists every variable;
a test keeps the two in step.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, get_args
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.blank import BlankIsUnset
from connectors.file_bytes import first_bad_byte, quoted_at
from connectors.secrets import Secret, SecretUrl, as_read, query_passwords, webhook_code
from connectors.suggest import closest

from .errors import ConfigError

log = logging.getLogger(__name__)

#: prefixes of the variables rfmsync reads: an unknown name with one of them is most likely a typo
OUR_PREFIXES = ("RFMSYNC_", "MAILCHIMP_", "SENDGRID_", "UNISENDER_", "RETAILCRM_", "AMOCRM_", "BITRIX24_",
                "SHOPIFY_")
_NOT_SETTINGS = ("RFMSYNC_TEST_", "RFMSYNC_BENCH_")  # the test suite's and the benchmarks' own variables
_warned: set[str] = set()


class Settings(BlankIsUnset, BaseSettings):
    """Every variable rfmsync reads. A blank one (``RFMSYNC_HTTP_TIMEOUT_SECONDS=`` as ``settings.example.env``
    lists it) is unset, as in every connector's settings (:class:`connectors.blank.BlankIsUnset`)."""

    # env_ignore_empty: a variable exported blank (compose's ``${MAILCHIMP_API_KEY}`` the host does not set) is not
    # there, so .env's value applies; BlankIsUnset leaves one of spaces out of the environment's values too, and
    # makes a blank .env line unset
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)
    # every secret is a Secret (or the ledger URL a SecretUrl): read without its trailing whitespace

    # rfmsync itself
    rfmsync_config: str | None = None
    # a PostgreSQL URL holds its password: never in the repr (a traceback's locals, an error tracker)
    rfmsync_ledger_url: SecretUrl | None = Field(None, repr=False)
    rfmsync_store_url: SecretUrl | None = Field(None, repr=False)  # deprecated name of RFMSYNC_LEDGER_URL (warned)
    rfmsync_webhook_secret: Secret | None = None
    rfmsync_report_token: Secret | None = None  # GET /report of `rfmsync serve` (Bearer token); unset: no page
    # [http] overrides (tests, one-off runs): win over [http] and [destinations.http]
    # (the bounds of [http]'s: a value out of range is refused naming the variable, not an [http] table)
    rfmsync_http_timeout_seconds: float | None = Field(None, gt=0, allow_inf_nan=False)
    rfmsync_http_max_attempts: int | None = Field(None, ge=1)
    rfmsync_http_max_wait_seconds: float | None = Field(None, ge=0, allow_inf_nan=False)
    rfmsync_http_concurrency: int | None = Field(None, ge=1)
    # ESPs: one key and one URL override per destination type (sync.destinations.registry names them)
    # Mailchimp
    mailchimp_api_key: Secret | None = None
    mailchimp_api_url: str | None = None
    # SendGrid
    sendgrid_api_key: Secret | None = None
    sendgrid_api_url: str | None = None
    # Unisender / Selzy
    unisender_api_key: Secret | None = None
    unisender_api_url: str | None = None
    # CRM / POS sources
    retailcrm_url: str | None = None
    retailcrm_api_key: Secret | None = None
    retailcrm_api_url: str | None = None
    retailcrm_webhook_token: Secret | None = None
    amocrm_subdomain: str | None = None
    amocrm_token: Secret | None = None
    amocrm_api_url: str | None = None
    amocrm_webhook_token: Secret | None = None
    bitrix24_webhook_url: Secret | None = None
    bitrix24_app_token: Secret | None = None
    shopify_shop: str | None = None
    shopify_token: Secret | None = None
    shopify_webhook_secret: Secret | None = None
    shopify_api_url: str | None = None

    def env_value(self, name: str):
        """The value of the variable ``name`` (``MAILCHIMP_API_KEY``): how destination specs read their key and
        URL. A name this class does not declare is a programming error (add the field, and the line in
        settings.example.env)."""
        field = name.lower()
        if field not in type(self).model_fields:
            raise KeyError(f"{name} is not a setting: add it to sync.settings.Settings and settings.example.env")
        return getattr(self, field)

    def http_overrides(self) -> dict[str, float | int]:
        """The ``RFMSYNC_HTTP_*`` values that are set, keyed like ``[http]``."""
        prefix = "rfmsync_http_"
        return {name[len(prefix):]: value for name, value in self.__dict__.items()
                if name.startswith(prefix) and value is not None}


    def secret_values(self) -> list[str]:
        """Every secret set here (the SecretStr values, a Bitrix24 webhook URL's code, the ledger URL's
        ``:password@``): what the CLI masks in its error line, its JSON error and the ledger's error columns as a
        last resort."""
        values = [v.get_secret_value() for name, v in self.__dict__.items()
                  if isinstance(v, SecretStr) and name != "bitrix24_webhook_url"]  # its code only: errors name the portal
        if self.bitrix24_webhook_url is not None:
            values.append(webhook_code(self.bitrix24_webhook_url.get_secret_value()) or "")
        return values + url_password(self.rfmsync_ledger_url) + url_password(self.rfmsync_store_url)


def url_password(url: str | None) -> list[str]:
    """The password of a database URL as it stands in one, ``:<password>@``, as written and percent-decoded
    (``[]`` when it has none): the bare password may be a word (``postgres``, ``password``) found in every
    message, the user's name, the URL's scheme and the data. One given as a query parameter (``?password=pg``,
    libpq's keyword; ``sslpassword=``; the name in any case, as written: ``PASSWORD=pg``) the same way,
    ``password=<password>`` (masked only as that parameter)."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # an unparsable URL: the ledger refuses it with its own error
        return []
    found = [f":{password}@", f":{unquote(password)}@"] if password else []
    for name, value in query_passwords("?" + parts.query):
        found += [f"{name}={value}", f"{name}={unquote(value)}"]
    return found


def load_settings(**overrides) -> Settings:
    """The settings, or a :class:`sync.errors.ConfigError` (exit 2) of one line: a variable whose value does not
    read (``RFMSYNC_HTTP_TIMEOUT_SECONDS=30s``) named with what it should be, a secret's value never shown; a
    ``.env`` that is not UTF-8 named with the line and byte of its first bad byte."""
    warn_unknown_variables()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(settings_error(exc, given=overrides)) from None
    except UnicodeDecodeError as exc:
        env_file = Path(Settings.model_config["env_file"])
        at = first_bad_byte(env_file, "utf-8") if env_file.is_file() else None
        if at is None:  # not the .env file's (pydantic-settings reads nothing else as text)
            raise
        line, _ = quoted_at(env_file, at, "utf-8")  # (its text is not quoted: the line may hold a secret)
        raise ConfigError(f"{env_file} is not UTF-8: line {line} (byte offset {at}: "
                          f"0x{env_file.read_bytes()[at]:02x}); save it as UTF-8") from exc


def settings_error(exc: ValidationError, given=()) -> str:
    """A settings' ValidationError as one line: each variable's name, where it was set (the environment, ``.env``,
    or ``given`` to :func:`load_settings`) and what it should be; its value for a setting that is not a secret
    (pydantic's own text shows every value, and a link per error)."""
    parts = []
    for err in exc.errors(include_url=False):
        name = str(err["loc"][0]) if err["loc"] else ""
        field = Settings.model_fields.get(name)
        variable = name.upper()
        where = ("setting" if name in given else "environment variable"  # in any case, as pydantic-settings
                 if variable in {n.upper() for n, v in os.environ.items() if v.strip()}  # reads them; a blank one
                 else f"{Settings.model_config['env_file']} variable")  # is not there: .env's value was read
        shown = "" if field is None or is_secret(field) else f"={err['input']!r}"
        expected = err["msg"].removeprefix("Input ")
        parts.append(f"{where} {variable}{shown}: {expected}" if variable else expected)
    return "; ".join(parts) + " (see settings.example.env)"


def is_secret(field: FieldInfo) -> bool:
    """Whether a setting holds a secret: it is read as one (:data:`connectors.secrets.Secret`, ``SecretUrl``),
    optional or not."""
    def read_as_secret(annotation: Any) -> bool:
        metadata = getattr(annotation, "__metadata__", ())  # Annotated[...]'s
        return (any(getattr(meta, "func", None) is as_read for meta in metadata)
                or any(read_as_secret(arg) for arg in get_args(annotation)))

    return read_as_secret(field.annotation) or any(getattr(meta, "func", None) is as_read for meta in field.metadata)


def unknown_variables(names) -> dict[str, str | None]:
    """Names with one of our prefixes that no setting reads → the closest known name (or None)."""
    known = [n.upper() for n in Settings.model_fields]
    return {n: closest(n, known, cutoff=0.7) for n in names
            if n.upper().startswith(OUR_PREFIXES) and n.upper() not in known and not n.upper().startswith(_NOT_SETTINGS)}


def warn_unknown_variables(env_file: str | os.PathLike = ".env") -> None:
    """Log a warning (once per name and process) for each environment or ``.env`` variable that looks like
    ours but is not read (``MAILCHIMP_KEY`` → ``MAILCHIMP_API_KEY``). Names only: never a value."""
    names = {n: "environment variable" for n in os.environ}
    if Path(env_file).is_file():
        try:
            from dotenv import dotenv_values

            names.update({n: f"{env_file} variable" for n in dotenv_values(env_file) if n not in names})
        except Exception:  # an unreadable .env is pydantic-settings' to report
            pass
    for name, expected in sorted(unknown_variables(names).items()):
        if name in _warned:
            continue
        _warned.add(name)
        hint = f"; did you mean {expected}?" if expected else "; see settings.example.env"
        log.warning("%s %s is not used by rfmsync%s", names[name], name, hint)


def secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
