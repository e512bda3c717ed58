"""Bitrix24's ``[source]`` settings and its secrets (the inbound webhook URL, the events' application token).
Re-exported by :mod:`connectors.bitrix24`."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .blank import BlankIsUnset
from .contacts import PhoneRegion
from .secrets import Secret
from .zones import TimeZone


class Bitrix24Config(BlankIsUnset):
    model_config = ConfigDict(extra="forbid")
    type: Literal["bitrix24"] = "bitrix24"
    won_semantics: list[str] = Field(default_factory=lambda: ["S"])
    won_stage_ids: list[str] = Field(default_factory=list)  # e.g. ["WON", "C2:WON"]
    category_ids: list[int] = Field(default_factory=list)  # deal pipelines; empty: all
    currency: str | None = None  # used when a deal has no CURRENCY_ID
    lookback_minutes: int = Field(10, ge=0)
    requests_per_second: float = Field(2.0, gt=0)
    burst: int = Field(50, ge=1)
    line_items: bool = True  # read product rows of won deals (one batch call per page of deals)
    phone_region: PhoneRegion = None  # default country of phones written without one, e.g. "RU"
    timezone: TimeZone = "UTC"  # the portal's zone: purchases are counted per local day in it


class Bitrix24Secrets(BlankIsUnset, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BITRIX24_", extra="ignore", env_ignore_empty=True)
    webhook_url: Secret | None = None  # https://portal.bitrix24.ru/rest/1/<code>/ (the code is a secret)
    app_token: Secret | None = None  # application_token of the outgoing webhook / app, for events


__all__ = ["Bitrix24Config", "Bitrix24Secrets"]
