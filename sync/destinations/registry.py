"""The destination registry: config ``type`` → the vendor's :class:`~sync.destinations.base.DestinationSpec`.

Adding an ESP: its module in ``sync/destinations/`` with a ``_build(dest, key, options)`` for its client, its
``DestinationSpec(...)`` in :mod:`sync.destinations.specs` (data only, ``build=lazy_build("<module>")``: the
client and its SDK are imported when one is first built), one line in :data:`DESTINATIONS`, its
``<VENDOR>_API_KEY`` / ``<VENDOR>_API_URL`` fields in :class:`sync.settings.Settings` (and
``settings.example.env``), and its fake in ``tests/fakes/`` with a row in ``tests/fakes/registry.py``.
The config's ``type`` choices, its vendor rules, the client factory, tag naming and field types all come from here.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from connectors.suggest import did_you_mean

from ..errors import ConfigError
from . import specs
from .base import ClientOptions, Destination, DestinationSpec

if TYPE_CHECKING:
    from ..config import DestinationConfig
    from ..settings import Settings

DESTINATIONS: Mapping[str, DestinationSpec] = MappingProxyType({spec.type: spec for spec in (
    specs.MAILCHIMP,
    specs.SENDGRID,
    specs.UNISENDER,
)})


def type_choices() -> str:
    """``'mailchimp', 'sendgrid' or 'unisender'``: the registered types as a config error lists them."""
    names = [repr(t) for t in DESTINATIONS]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def destination_spec(type_: str) -> DestinationSpec:
    """The spec of a registered type; :class:`ConfigError` (with "did you mean") for any other."""
    try:
        return DESTINATIONS[type_]
    except KeyError:
        raise ConfigError(f"unknown destination type {type_!r}{did_you_mean(type_, DESTINATIONS)}; "
                          f"choose {type_choices()}") from None


def make_destination(dest: "DestinationConfig", settings: "Settings", *, required: bool = True,
                     retry: Any = None, timeout: float | None = None) -> Destination | None:
    """The ESP client for a destination, or None when its credentials are not set and not ``required``.

    ``retry`` (a :class:`connectors.retry.RetryPolicy`) and ``timeout`` default to the destination's [http]
    settings (``RFMSYNC_HTTP_*`` > ``[destinations.http]`` > ``[http]``).
    """
    spec = destination_spec(dest.type)
    http = dest.http_settings(settings)
    key = settings.env_value(spec.key_env)
    if key is None:
        if required:
            raise ConfigError(f"destination {dest.name!r}: {spec.key_env} is not set (see settings.example.env)")
        return None
    options = ClientOptions(api_url=settings.env_value(spec.url_env), retry=retry or http.retry_policy(),
                            timeout=timeout if timeout is not None else http.timeout_seconds,
                            concurrency=http.concurrency)
    return spec.build(dest, key, options)


__all__ = ["DESTINATIONS", "destination_spec", "make_destination", "type_choices"]
