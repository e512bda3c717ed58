"""A setting left blank is unset: ``AMOCRM_SUBDOMAIN=`` as ``settings.example.env`` lists it, ``currency = ""`` or
``url = "  "`` in ``[source]`` read as if the line were not there (its default, else the usual "set X" error), in
every connector's settings and secrets (:class:`BlankIsUnset`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, model_validator


def unset_blank(data: Any) -> Any:
    """``data`` (a model's input) without the settings whose value is a blank string."""
    if not isinstance(data, dict):
        return data
    return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}


class BlankIsUnset(BaseModel):
    """The base of a connector's config model or secrets class (``class XSecrets(BlankIsUnset, BaseSettings)``):
    a blank value is unset (:func:`unset_blank`)."""

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        return unset_blank(data)


__all__ = ["BlankIsUnset", "unset_blank"]
