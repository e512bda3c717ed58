"""ESP answers are claims: a 2xx body is decoded and validated against the vendor's documented shape before
anything in it is believed (STYLE.md §18).

Each destination declares the shapes it relies on as small pydantic models (``extra`` keys ignored, no type
coercion) and reads a 2xx body with :func:`parse_answer`. Anything else — HTML, truncated or wrong-shaped
JSON, ``errors`` that is not a list, an empty body, bytes that are not text — raises :class:`BadAnswer`, which
the destination turns into a failure of every item the call covered (recorded in the ledger's ``failures``
with the raw answer cut to :data:`RAW_LIMIT` characters, and retried by the next run). It is never a success
and never an internal error.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from connectors.secrets import masked_start

from ..errors import DestinationError

RAW_LIMIT = 200  # characters of a bad answer kept in errors and in the ledger
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


#: unknown keys are ignored, types are not coerced (also for TypedDict shapes: ``@with_config(STRICT)``)
STRICT = ConfigDict(extra="ignore", strict=True)


class Shape(BaseModel):
    """Base of the documented answer shapes: unknown keys are ignored, types are not coerced."""

    model_config = STRICT


class BadAnswer(DestinationError):
    """A 2xx answer that is not the documented shape: a failure of the items the call covered."""

    def __init__(self, what: str, reason: str, raw: Any = b"", secrets: Iterable[str] = ()) -> None:
        self.raw = excerpt(raw, secrets)
        self.reason = reason
        super().__init__(f"{what}: answer not believed ({reason}): {self.raw!r}", body=self.raw)


def excerpt(raw: Any, secrets: Iterable[str] = (), limit: int = RAW_LIMIT) -> str:
    """The raw answer as text (undecodable bytes replaced), secrets masked, cut to ``limit`` characters. Only
    the start the excerpt needs is masked (:func:`~connectors.secrets.masked_start`), not the whole text:
    also the one place a 2xx answer's per-member error text (Mailchimp's ``errors[]``, Unisender's import
    ``log``, SendGrid's errors file) is made safe to store and log."""
    if isinstance(raw, (bytes, bytearray)):
        text = bytes(raw).decode("utf-8", errors="replace")
    elif isinstance(raw, str):
        text = raw
    else:
        try:
            text = json.dumps(raw, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(raw)
    return masked_start(text, limit, secrets)


def decode_json(raw: bytes | str | None, what: str, secrets: Iterable[str] = ()) -> Any:
    """JSON from a body (any encoding JSON allows); :class:`BadAnswer` for an empty or non-JSON body."""
    if raw is None or not (raw.strip() if isinstance(raw, (bytes, str)) else raw):
        raise BadAnswer(what, "empty body", raw or b"", secrets)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadAnswer(what, "not JSON", raw, secrets) from None


def validate(model: type[M] | TypeAdapter[T], payload: Any, what: str, raw: Any = None,
             secrets: Iterable[str] = ()) -> M | T:
    """``payload`` as ``model`` (a :class:`Shape`, or a ``TypeAdapter`` of a TypedDict shape), or
    :class:`BadAnswer` naming the first field that is not as documented."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(payload)
        return model.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "answer"
        raise BadAnswer(what, f"{loc}: {err['msg']}", payload if raw is None else raw, secrets) from None


def parse_answer(model: type[M] | TypeAdapter[T], raw: bytes | str | None, what: str,
                 secrets: Iterable[str] = ()) -> M | T:
    """Decode and validate a 2xx body in one step.

    The body is validated straight from its bytes (pydantic's JSON parser): only the fields the shape names
    become Python objects, the rest of a large answer (Mailchimp's full member objects) is parsed and skipped,
    never decoded into dicts. Whatever that refuses goes through :func:`decode_json` and :func:`validate`, so a
    body that is not the documented shape fails with the same reason as before (and JSON in UTF-16/32, which
    the one-pass parser does not read, is still accepted)."""
    if isinstance(raw, (bytes, str)) and raw:
        try:
            if isinstance(model, TypeAdapter):
                return model.validate_json(raw)
            return model.model_validate_json(raw)
        except ValidationError:
            pass
    return validate(model, decode_json(raw, what, secrets), what, raw, secrets)


def unaccounted(sent: Iterable[str], *answered: Iterable[str]) -> list[str]:
    """Submitted items (lower-cased) that the answer does not mention anywhere."""
    seen = {str(x).lower() for group in answered for x in group}
    return [s for s in sent if s.lower() not in seen]


__all__ = ["BadAnswer", "Shape", "STRICT", "RAW_LIMIT", "decode_json", "excerpt", "parse_answer", "unaccounted",
           "validate"]
