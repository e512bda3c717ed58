"""A config's pydantic errors as one line: every error with its key path, "did you mean" for a mistyped key or a
value outside a fixed choice, our validators' own sentences without pydantic's prefix (:mod:`sync.config`)."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from connectors.suggest import did_you_mean


def format_validation_error(exc: ValidationError, path: Path | None, prefix: str = "") -> str:
    """One line for every error, with "did you mean" for a mistyped key or a value outside a fixed choice."""
    where = f"{path}: " if path else ""
    parts = []
    model = _model_named(exc.title)
    for err in exc.errors():
        loc = ".".join(str(x) for x in ((prefix,) if prefix else ()) + tuple(err["loc"]))
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and err["loc"]:
            key = str(err["loc"][-1])
            msg = f"unknown key {key!r}{did_you_mean(key, _keys_at(model, err['loc'][:-1]))}"
        elif err["type"] == "value_error" and err.get("ctx", {}).get("error") is not None:
            msg = str(err["ctx"]["error"])  # our validators' own sentence, without pydantic's "Value error, "
        elif err["type"] == "literal_error" and isinstance(err.get("input"), str):
            msg += did_you_mean(err["input"], re.findall(r"'((?:[^'\\]|\\.)*)'", err["ctx"]["expected"]))
        parts.append(f"{loc}: {msg}" if loc else msg)
    return where + "; ".join(parts)


def _model_named(title: str) -> type[BaseModel] | None:
    """The model a ValidationError is about (its ``title`` is the class name): the config or a source's."""
    from segmentation.predictive import PredictConfig

    from .config import Config

    models: list[Any] = [Config, PredictConfig]
    try:
        from connectors.registry import SOURCES

        models += [SOURCES[kind][0] for kind in SOURCES]
    except ImportError:  # a connector that cannot import only loses its suggestions (not a bug here: see it)
        pass
    return next((m for m in models if m.__name__ == title), None)


def _keys_at(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """The keys a model accepts at ``loc`` (``("destinations", 0)`` → a destination's keys)."""
    ann: Any = model
    for part in loc:
        ann = _unwrap(ann, part)
        if ann is None:
            return []
    ann = _unwrap(ann, None)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [a for n, f in ann.model_fields.items() for a in (n, f.alias) if a]
    return []


def _unwrap(ann: Any, part: Any) -> Any:
    """Step into ``ann`` by one location part: a model's field, a list item, a dict value; Optional is dropped."""
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if typing.get_origin(ann) in (typing.Union, types.UnionType) and len(args) == 1:
        ann = args[0]
        args = list(typing.get_args(ann))
    if part is None:
        return ann
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        field = ann.model_fields.get(str(part))
        return field.annotation if field is not None else None
    origin = typing.get_origin(ann)
    if origin is list and isinstance(part, int):
        return args[0] if args else None
    if origin is dict:
        return args[1] if len(args) == 2 else None
    return None


__all__ = ["format_validation_error"]
