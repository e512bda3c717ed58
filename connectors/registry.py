"""Source registry used by the CLI: ``type`` name → (config model, factory).

API factories are called as ``factory(config, secrets=None, *, retry=None, sleep=None, clock=None)``;
``secrets=None`` reads the source's environment variables (see docs/sources/common.md).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from pydantic import BaseModel, SecretStr

from .errors import ConfigError
from .source import Source
from .suggest import did_you_mean

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

# type → (module, config model, source class, secrets class or None)
_SPECS: dict[str, tuple[str, str, str, str | None]] = {
    "retailcrm": ("retailcrm", "RetailCrmConfig", "RetailCrmSource", "RetailCrmSecrets"),
    "amocrm": ("amocrm", "AmoCrmConfig", "AmoCrmSource", "AmoCrmSecrets"),
    "bitrix24": ("bitrix24", "Bitrix24Config", "Bitrix24Source", "Bitrix24Secrets"),
    "shopify": ("shopify", "ShopifyConfig", "ShopifySource", "ShopifySecrets"),
    "file": ("files", "FileSourceConfig", "FileSource", None),
}


class _Table(Mapping[str, Any]):
    """``type`` → entry, importing a connector's module only when its entry is looked up, so that a run on
    a file export does not import requests, openpyxl and four API clients first (about 0.6 s of start-up)."""

    def __init__(self, kinds: list[str], entry: Callable[[Any, tuple[str, str, str, str | None]], Any]) -> None:
        self._kinds, self._entry = kinds, entry

    def __getitem__(self, kind: str) -> Any:
        if kind not in self._kinds:
            raise KeyError(kind)
        spec = _SPECS[kind]
        return self._entry(importlib.import_module(f".{spec[0]}", __package__), spec)

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)


#: type → (config model, source class)
SOURCES: Mapping[str, tuple[type[BaseModel], Callable[..., Source]]] = _Table(
    list(_SPECS), lambda mod, spec: (getattr(mod, spec[1]), getattr(mod, spec[2])))

#: per API source: its secrets class (env prefix = type name upper-cased + "_")
SECRETS: Mapping[str, type[BaseSettings]] = _Table(
    [k for k, spec in _SPECS.items() if spec[3]], lambda mod, spec: getattr(mod, spec[3]))


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
    kind = section.get("type", "file")  # a [source] without type is a file source (docs/configuration.md)
    if kind not in SOURCES:
        raise ConfigError(f"[source] type must be one of {', '.join(sorted(SOURCES))}; got {kind!r}"
                          f"{did_you_mean(str(kind), SOURCES)}")
    model, factory = SOURCES[kind]
    if kind == "file":
        config = model.model_validate(dict(section))
        return factory(config, base_dir=base_dir if base_dir is not None else Path("."), clock=runtime.get("clock"))
    # keys every API source shares (connectors.identity): taken out before the vendor's own model sees the table
    from .identity import max_group_of

    group = max_group_of(section)
    config = model.model_validate({k: v for k, v in section.items() if k != "max_identity_group"})
    source = factory(config, secrets_for(kind, settings), **runtime)
    source.max_identity_group = group  # read by the order store's merge (sync.pipeline.pull_into)
    return source
