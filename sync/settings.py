"""Environment settings: the one place secrets and endpoints come from (pydantic-settings, ``.env`` supported).

Nothing is read at import time: call :func:`load_settings`. ``settings.example.env`` lists every variable;
a test keeps the two in step.
"""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # rfmsync itself
    rfmsync_config: str | None = None
    rfmsync_store_url: str | None = None
    rfmsync_webhook_secret: SecretStr | None = None
    # [http] overrides (tests, one-off runs): win over [http] and [destinations.http]
    rfmsync_http_timeout_seconds: float | None = None
    rfmsync_http_max_attempts: int | None = None
    rfmsync_http_max_wait_seconds: float | None = None
    rfmsync_http_concurrency: int | None = None
    # Mailchimp
    mailchimp_api_key: SecretStr | None = None
    mailchimp_api_url: str | None = None
    # SendGrid
    sendgrid_api_key: SecretStr | None = None
    sendgrid_api_url: str | None = None
    # Unisender / Selzy
    unisender_api_key: SecretStr | None = None
    unisender_api_url: str | None = None
    # CRM / POS sources
    retailcrm_url: str | None = None
    retailcrm_api_key: SecretStr | None = None
    retailcrm_api_url: str | None = None
    retailcrm_webhook_token: SecretStr | None = None
    amocrm_subdomain: str | None = None
    amocrm_token: SecretStr | None = None
    amocrm_api_url: str | None = None
    amocrm_webhook_token: SecretStr | None = None
    bitrix24_webhook_url: SecretStr | None = None
    bitrix24_app_token: SecretStr | None = None
    shopify_shop: str | None = None
    shopify_token: SecretStr | None = None
    shopify_webhook_secret: SecretStr | None = None
    shopify_api_url: str | None = None

    def http_overrides(self) -> dict[str, float | int]:
        """The ``RFMSYNC_HTTP_*`` values that are set, keyed like ``[http]``."""
        prefix = "rfmsync_http_"
        return {name[len(prefix):]: value for name, value in self.__dict__.items()
                if name.startswith(prefix) and value is not None}


def load_settings(**overrides) -> Settings:
    return Settings(**overrides)


def secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
