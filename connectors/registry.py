"""Source registry used by the CLI: ``type`` name → (config model, factory).

API factories are called as ``factory(config, secrets=None, *, retry=None, sleep=None, clock=None)``;
``secrets=None`` reads the source's environment variables (see "CRM and shop connectors" in README.md). The
``"file"`` source is added when :mod:`connectors.files` is importable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from .amocrm import AmoCrmConfig, AmoCrmSecrets, AmoCrmSource
from .bitrix24 import Bitrix24Config, Bitrix24Secrets, Bitrix24Source
from .errors import ConfigError
from .retailcrm import RetailCrmConfig, RetailCrmSecrets, RetailCrmSource
from .shopify import ShopifyConfig, ShopifySecrets, ShopifySource
from .source import Source

SOURCES: dict[str, tuple[type[BaseModel], Callable[..., Source]]] = {
    "retailcrm": (RetailCrmConfig, RetailCrmSource),
    "amocrm": (AmoCrmConfig, AmoCrmSource),
    "bitrix24": (Bitrix24Config, Bitrix24Source),
    "shopify": (ShopifyConfig, ShopifySource),
}

#: per API source: its secrets class (env prefix = type name upper-cased + "_")
SECRETS: dict[str, type[BaseSettings]] = {
    "retailcrm": RetailCrmSecrets,
    "amocrm": AmoCrmSecrets,
    "bitrix24": Bitrix24Secrets,
    "shopify": ShopifySecrets,
}

try:  # the file source is written separately; register it when present
    from .files import FileSource, FileSourceConfig
except ImportError:  # pragma: no cover - depends on the checkout
    pass
else:
    SOURCES["file"] = (FileSourceConfig, FileSource)


def secrets_for(kind: str, settings: Any = None) -> BaseSettings:
    """The source's secrets: values set on ``settings`` (e.g. ``settings.shopify_token``) win over the env."""
    cls = SECRETS[kind]
    given = {}
    for name in cls.model_fields:
        value = getattr(settings, f"{kind}_{name}", None) if settings is not None else None
        if value is not None:
            given[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
    return cls(**given)


def build_source(section: Mapping[str, Any], *, base_dir: Path | None = None, settings: Any = None,
                 **runtime: Any) -> Source:
    """Validate a ``[source]`` table and build its source.

    Raises ConfigError for an unknown type and pydantic's ValidationError for bad settings
    (the caller formats it with the config file's name).
    """
    kind = section.get("type", "file")
    if kind not in SOURCES:
        raise ConfigError(f"[source] type must be one of {', '.join(sorted(SOURCES))}; got {kind!r}")
    model, factory = SOURCES[kind]
    config = model.model_validate(dict(section))
    if kind == "file":
        return factory(config, base_dir=base_dir if base_dir is not None else Path("."))
    return factory(config, secrets_for(kind, settings), **runtime)
