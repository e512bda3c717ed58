"""amoCRM / Kommo ``[source]`` settings and secrets; the account's subdomain as users paste it (``shop``,
``shop.amocrm.ru``, ``https://shop.kommo.com/leads/``) read as the name before the domain, with a clear error for
anything else. Re-exported by :mod:`connectors.amocrm`."""

from __future__ import annotations

import re
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .blank import BlankIsUnset, unset_blank
from .contacts import PhoneRegion
from .errors import ConfigError
from .secrets import Secret, shown
from .zones import TimeZone

Domain = Literal["amocrm.ru", "amocrm.com", "kommo.com"]
DOMAINS: tuple[str, ...] = get_args(Domain)
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def split_account(value: str, where: str) -> tuple[str, str | None]:
    """``(subdomain, domain or None)`` of what a user set as the account's subdomain (``where``: the setting, for
    the error): a bare name, or a host or URL of one of :data:`DOMAINS`. A ValueError naming ``where`` else."""
    text = value.strip().lower()
    host = (urlsplit(text if "//" in text else f"//{text}").hostname or "") if re.search(r"[./:]", text) else text
    sub, _, domain = host.partition(".")
    if (domain and domain not in DOMAINS) or not _NAME.fullmatch(sub):
        raise ValueError(f"{where} = {shown(value)} is not an amoCRM account: expected the part before "
                         f".amocrm.ru / .amocrm.com / .kommo.com, e.g. \"shop\" for https://shop.amocrm.ru")
    return sub, domain or None


class AmoCrmConfig(BlankIsUnset):
    model_config = ConfigDict(extra="forbid")
    type: Literal["amocrm"] = "amocrm"
    subdomain: str | None = None  # default AMOCRM_SUBDOMAIN
    domain: Domain = "amocrm.ru"
    won_status_ids: list[int] = Field(default_factory=lambda: [142])
    pipeline_ids: list[int] = Field(default_factory=list)  # empty: every pipeline
    currency: str = "RUB"  # the account currency (leads carry none)
    page_size: int = Field(250, ge=1, le=250)
    lookback_minutes: int = Field(10, ge=0)
    requests_per_second: float = Field(7.0, gt=0)
    phone_region: PhoneRegion = None  # default country of phones written without one, e.g. "RU"
    timezone: TimeZone = "UTC"  # the shop's zone: purchases are counted per local day in it

    @model_validator(mode="before")
    @classmethod
    def _account(cls, data: Any) -> Any:
        """``subdomain`` pasted as a host or URL: its name, and its domain as ``domain`` (an error when ``domain``
        says another one: which of them is meant cannot be told); blank: unset (run before the base's check)."""
        data = unset_blank(data)
        if not isinstance(data, dict) or not isinstance(data.get("subdomain"), str):
            return data
        sub, domain = split_account(data["subdomain"], "subdomain")
        if domain and data.get("domain", domain) != domain:
            raise ValueError(f"subdomain = {data['subdomain'][:80]!r} is on {domain}, but domain = "
                             f"{data['domain']!r}: set subdomain = \"{sub}\" and the domain the account is on")
        return {**data, "subdomain": sub, **({"domain": domain} if domain else {})}


class AmoCrmSecrets(BlankIsUnset, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AMOCRM_", extra="ignore", env_ignore_empty=True)
    subdomain: str | None = None
    token: Secret | None = None  # long-lived token of a private integration
    api_url: str | None = None  # base-URL override (tests, proxies)
    webhook_token: Secret | None = None


def env_subdomain(value: str, domain: str) -> str:
    """AMOCRM_SUBDOMAIN read as :func:`split_account` reads ``[source] subdomain`` (its domain must be ``domain``:
    the variable cannot set it); a ConfigError naming the variable else."""
    try:
        sub, pasted = split_account(value, "AMOCRM_SUBDOMAIN")
    except ValueError as exc:
        raise ConfigError(f"amocrm: {exc}") from None
    if pasted and pasted != domain:
        raise ConfigError(f"amocrm: AMOCRM_SUBDOMAIN = {shown(value)} is on {pasted}, but [source] domain is "
                          f"{domain!r}: set AMOCRM_SUBDOMAIN={sub} and domain = \"{pasted}\" in [source]")
    return sub


__all__ = ["AmoCrmConfig", "AmoCrmSecrets", "DOMAINS", "split_account", "env_subdomain"]
