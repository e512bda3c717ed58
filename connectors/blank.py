"""A setting left blank is unset: ``AMOCRM_SUBDOMAIN=`` as ``settings.example.env`` lists it, ``currency = ""`` or
``url = "  "`` in ``[source]`` read as if the line were not there (its default, else the usual "set X" error), in
every connector's settings and secrets (:class:`BlankIsUnset`; the file source's but its delimiter and its
required ``orders``), and in rfmsync's own environment settings (``sync.settings.Settings``: a blank
``RFMSYNC_HTTP_TIMEOUT_SECONDS=`` or ``MAILCHIMP_API_KEY=`` is unset, so ``settings.example.env`` copied unedited
sets nothing). An environment variable exported blank, empty or spaces only, is not there at all: ``.env``'s value
of it applies (``env_ignore_empty`` drops an empty one; :meth:`BlankIsUnset.settings_customise_sources` one of
spaces, which otherwise hid ``.env``'s value and left the default)."""

from __future__ import annotations

from typing import Any, ClassVar, Iterable

from pydantic import BaseModel, model_validator


def unset_blank(data: Any, keys: Iterable[str] | None = None) -> Any:
    """``data`` (a model's input) without the settings (of ``keys``, when given) whose value is a blank string."""
    if not isinstance(data, dict):
        return data
    keys = None if keys is None else set(keys)
    return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip() and (keys is None or k in keys))}


class BlankIsUnset(BaseModel):
    """The base of a connector's config model or secrets class (``class XSecrets(BlankIsUnset, BaseSettings)``):
    a blank value is unset (:func:`unset_blank`); only of the settings in ``blankable`` when it names them (the file
    source: its delimiter may be a space or a tab)."""

    blankable: ClassVar[frozenset[str] | None] = None

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        return unset_blank(data, cls.blankable)

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, env_settings: Any,
                                   dotenv_settings: Any, file_secret_settings: Any) -> tuple[Any, ...]:
        """A ``BaseSettings`` subclass's sources (pydantic-settings' order), its environment's blank values left
        out (:func:`unset_blank`) before they are merged over ``.env``'s: a variable of spaces is not there."""
        def environment() -> dict[str, Any]:
            return unset_blank(env_settings(), cls.blankable)
        return init_settings, environment, dotenv_settings, file_secret_settings


__all__ = ["BlankIsUnset", "unset_blank"]
