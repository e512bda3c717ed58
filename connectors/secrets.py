"""The secrets of this process and their masking, without the HTTP stack (the CLI imports this at its start; a
scoring run has no use for requests).

* :func:`remember_secrets` keeps every secret a client (or the CLI, from its settings) was given, process-wide;
  :func:`mask` / :func:`redact` replace them with ``***``; :class:`RedactSecrets` does it on a library's logger.
* :func:`webhook_code` is the secret part of a Bitrix24 inbound webhook URL (the portal stays named).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Iterable
from urllib.parse import urlsplit

#: query parameters that are credentials: keys and tokens, and the signature of a pre-signed URL (S3's
#: ``X-Amz-Signature``/``Signature``, Azure's ``sig``), which reads its file without any key
_SECRET_PARAMS = re.compile(r"(?i)((?:api_?key|access_token|token|auth|signature|sig)=)[^&\s]+")
_known: frozenset[str] = frozenset()  # every secret a client of this process was given (see remember_secrets)
_known_lock = threading.Lock()


def remember_secrets(*secrets: str | None) -> None:
    """Make :func:`redact` (and so :class:`RedactSecrets` on the HTTP libraries' loggers) mask these everywhere
    in this process: every client calls this with the secrets it was given."""
    global _known
    new = {s for s in secrets if s and len(s) >= 8} - _known  # (shorter: a test's stand-in, or a word)
    if new:
        with _known_lock:
            _known = _known | new


def forget_secrets() -> None:
    """Empty :func:`remember_secrets`' set (a test fixture: what one test's clients were given must not mask
    another test's output)."""
    global _known
    with _known_lock:
        _known = frozenset()


def mask(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace every known secret (``secrets``, and all given to :func:`remember_secrets`) with ``***``; JSON
    stays JSON (a vendor's answer is parsed after)."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4} | _known, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """:func:`mask`, and secret-looking query parameters (``api_key=``, ``token=``...) too."""
    return _SECRET_PARAMS.sub(r"\1***", mask(text, secrets))


class RedactSecrets(logging.Filter):
    """Masks :func:`redact`'s secrets in the records of a logger rfmsync does not own: urllib3 logs every
    request's path and query at DEBUG (``-vv``), and a Bitrix24 inbound webhook's secret is a path segment."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        safe = redact(msg)
        if safe != msg:
            record.msg, record.args = safe, None
        return True


def redact_logger(name: str) -> None:
    """Put a :class:`RedactSecrets` on the logger ``name`` (once): an HTTP library's logger that writes URLs or
    answers at DEBUG."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())


#: a Bitrix24 inbound webhook URL's secret: the path segment after /rest/<user>/ (a method pasted after it is not)
BITRIX24_CODE = re.compile(r"/rest/[^/]+/([^/]+)")


def webhook_code(url: str) -> str | None:
    """The secret of a Bitrix24 inbound webhook URL (``https://<portal>/rest/<user>/<code>/``): its code, or None."""
    code = BITRIX24_CODE.search(urlsplit(url.strip()).path)
    return code.group(1) if code else None
