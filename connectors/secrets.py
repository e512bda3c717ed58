"""The secrets of this process and their masking, without the HTTP stack (the CLI imports this at its start; a
scoring run has no use for requests).

* :func:`remember_secrets` keeps every secret a client (or the CLI, from its settings) was given, process-wide;
  :func:`mask` / :func:`redact` replace them with ``***``; :class:`RedactSecrets` does it on a library's logger,
  :class:`MaskLogRecords` (:func:`mask_log_handlers`) on the CLI's log handlers, exception text included.
* :func:`webhook_code` is the secret part of a Bitrix24 inbound webhook URL (the portal stays named).
* :data:`Secret` / :data:`SecretUrl` are how every setting holding a secret is read (the ESP keys, CRM tokens,
  webhook secrets, the ledger URL and its password): trailing whitespace dropped, in this one place
  (:func:`as_read`).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from types import TracebackType
from typing import Annotated, Any, Iterable
from urllib.parse import urlsplit

from pydantic import BeforeValidator, SecretStr

#: query parameters that are credentials: keys and tokens, and the signature of a pre-signed URL (S3's
#: ``X-Amz-Signature``/``Signature``, Azure's ``sig``), which reads its file without any key
_SECRET_PARAMS = re.compile(r"(?i)((?:api_?key|access_token|token|auth|signature|sig)=)[^&\s]+")
_known: frozenset[str] = frozenset()  # every secret a client of this process was given (see remember_secrets)
_known_pattern: re.Pattern[str] | None = None  # _known as one pattern, longest first (built once, not per mask())
_known_longest = 0
_known_lock = threading.Lock()


def as_read(value: Any) -> Any:
    """A secret as read from the environment, a ``.env`` file or the config: its trailing whitespace dropped (the
    newline a mounted secret file or ``echo`` leaves, a space pasted after it), which no key, token or URL ends
    with and which a header cannot carry. A line break inside it is left for the client to refuse."""
    if isinstance(value, SecretStr):
        return SecretStr(value.get_secret_value().rstrip())
    return value.rstrip() if isinstance(value, str) else value


#: a setting holding a secret (``SecretStr``), read by :func:`as_read`
Secret = Annotated[SecretStr, BeforeValidator(as_read)]
#: a URL that may hold a secret (the ledger's ``:password@``), read by :func:`as_read`
SecretUrl = Annotated[str, BeforeValidator(as_read)]


def remember_secrets(*secrets: str | None) -> None:
    """Make :func:`redact` (and so :class:`RedactSecrets` on the HTTP libraries' loggers) mask these everywhere
    in this process: every client calls this with the secrets it was given."""
    global _known, _known_pattern, _known_longest
    new = {s for s in secrets if _maskable(s, 8)} - _known  # (shorter: a test's stand-in, or a word)
    if new:
        with _known_lock:
            _known = _known | new
            _known_pattern, _known_longest = _pattern(_known), max(map(len, _known))


def forget_secrets() -> None:
    """Empty :func:`remember_secrets`' set (a test fixture: what one test's clients were given must not mask
    another test's output)."""
    global _known, _known_pattern, _known_longest
    with _known_lock:
        _known, _known_pattern, _known_longest = frozenset(), None, 0


def _url_password(secret: str) -> bool:
    """A URL's password as it stands in one, ``:<password>@`` (:func:`sync.settings.url_password`)."""
    return len(secret) > 2 and secret[0] == ":" and secret[-1] == "@"


#: the query parameters that give a database URL's password: ``password`` (libpq's keyword) and ``sslpassword``
#: (a client key's passphrase), their names in any case (``?PASSWORD=pg``: a password all the same, shown as written)
_PASSWORD_PARAM = r"(?i:(?:ssl)?password)"
#: such a parameter in a URL (or its ``?query``): its name and its value, as written, up to the parameter's end
_QUERY_PASSWORD = re.compile(rf"(?<=[?&])({_PASSWORD_PARAM})=([^&#]*)")


def query_passwords(url: str) -> list[tuple[str, str]]:
    """(name, value as written) of each password a URL gives as a query parameter (``?password=pg``,
    ``&sslpassword=``), those with a value; ``url`` may be the query alone, from its ``?``."""
    return [(m[1], m[2]) for m in _QUERY_PASSWORD.finditer(url) if m[2]]


def hide_query_passwords(url: str) -> str:
    """``url`` with each password given as a query parameter shown as ``password=***``."""
    return _QUERY_PASSWORD.sub(r"\1=***", url)


def _query_password(secret: str) -> bool:
    """A query parameter's password as :func:`sync.settings.url_password` gives it, ``password=<password>``."""
    return re.match(rf"{_PASSWORD_PARAM}=.", secret) is not None


def _maskable(secret: str | None, minimum: int) -> bool:
    """Long enough to be masked (shorter: a test's stand-in, a word); a URL's ``:<password>@`` or
    ``password=<password>`` is, at any length: only where it stands in a URL (:func:`_pattern`)."""
    return bool(secret) and (len(secret) >= minimum or _url_password(secret) or _query_password(secret))


def _pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    """The secrets, longest first, each matched only where no letter or digit continues it on a side where it
    begins or ends with one (a password ``postgres`` masks that word, not ``postgresql``). An escape before it
    (``%3D``, JSON's ``\\n`` or ``\\u00a0``) ends a word: the secret after it is masked. A URL's ``:<password>@``
    shorter than 8 characters (``:ab@``) is matched only after ``//`` and a user (the ``user`` group), where it
    is a URL's password: ``mailto:ab@x.com`` or ``Email:ab@x.ru`` stay as they are. A ``password=<password>``
    (any length) is matched only as a URL's query parameter, after ``?`` or ``&`` and up to the parameter's end:
    the password alone (``pg``) is left where it stands elsewhere."""
    alone_before = r"(?:(?<![^\W_])|(?<=%[0-9A-Fa-f]{2})|(?<=\\[nrtbf])|(?<=\\u[0-9A-Fa-f]{4}))"
    alone_after = r"(?![^\W_])"  # no letter or digit there (an escape after it starts with % or \)
    ordered = sorted(secrets, key=len, reverse=True)
    parts = [(alone_before if s[0].isalnum() else "") + re.escape(s) + (alone_after if s[-1].isalnum() else "")
             for s in ordered if not _query_password(s) and (len(s) >= 8 or not _url_password(s))]
    short = [re.escape(s) for s in ordered if len(s) < 8 and _url_password(s)]
    if short:
        parts.append(r"(?<=//)(?P<user>[^\s/?#@:]*)(?:" + "|".join(short) + ")")
    query = sorted({s.partition("=")[2] for s in ordered if _query_password(s)}, key=len, reverse=True)
    if query:
        parts.append(r"(?<=[?&])(?P<param>" + _PASSWORD_PARAM + "=)(?:" + "|".join(map(re.escape, query)) +
                     r")(?![\w%.~+-])")
    return re.compile("|".join(parts)) if parts else None


def _masked(match: re.Match[str]) -> str:
    found = match.group()
    groups = match.groupdict()
    if groups.get("user") is not None:  # a short password after its URL's user
        return groups["user"] + ":***@"
    if groups.get("param") is not None:  # a password given as a URL's query parameter
        return groups["param"] + "***"
    return ":***@" if found[0] == ":" and found[-1] == "@" else "***"  # a URL's ':password@' stays a URL


def mask(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace every known secret (``secrets``, and all given to :func:`remember_secrets`) with ``***``; JSON
    stays JSON (a vendor's answer is parsed after). A secret is masked where it stands alone, not inside a longer
    run of letters and digits (see :func:`_pattern`)."""
    pattern = _pattern_in(text, secrets)
    return text if pattern is None else pattern.sub(_masked, text)


def _pattern_in(text: str, secrets: Iterable[str]) -> re.Pattern[str] | None:
    """The pattern of the known secrets and ``secrets`` (a client's own, 4 characters or more), or None when
    none of them is in ``text`` (the usual case, and a quick one)."""
    extra = {s for s in secrets if _maskable(s, 4)} - _known
    pattern = _pattern(_known | extra) if extra else _known_pattern
    if pattern is None or not any(s in text for s in (*extra, *_known)):
        return None
    return pattern


def masked_start(text: str, limit: int, secrets: Iterable[str] = ()) -> str:
    """``mask(text)[:limit]``, masking only as much of the start of ``text`` as that needs: a long answer's
    excerpt (a 1.4 MB page's mask() took 100 ms). A secret running past the start masked is cut there and left
    unmasked, and masking an earlier one shortens the text: so what is kept of the start ends a longest secret
    before its end (every secret over a character kept lies wholly in the start), and the start is widened
    while that is shorter than ``limit``."""
    secrets = tuple(secrets)
    longest = max([_known_longest, *(len(s) for s in secrets if s)])
    size = limit + longest
    while size < len(text):
        start, end = text[:size], size - max(longest - 1, 0)
        pattern = _pattern_in(start, secrets)
        kept, pos = [], 0
        for match in pattern.finditer(start) if pattern is not None else ():
            if match.start() >= end:
                break
            kept += [start[pos:match.start()], _masked(match)]
            pos = match.end()
        kept.append(start[pos:end])
        out = "".join(kept)
        if len(out) >= limit:
            return out[:limit]
        size *= 2
    return mask(text, secrets)[:limit]


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


class MaskLogRecords(RedactSecrets):
    """On a handler: every record it writes with :func:`redact`'s secrets masked, its message and also the text of
    its exception and stack (a ``batch failed`` traceback whose exception a vendor's answer or a database URL
    filled with a key or password). A logger's own filter sees only the records made on it, not its children's:
    a handler sees them all. The exception's masked text (``exc_text``) then stands for it: ``exc_info`` is
    cleared, so a formatter that formats ``exc_info`` itself (a JSON formatter's) cannot print the secret; the
    standard formatters print ``exc_text`` whether ``exc_info`` is set or not."""

    def filter(self, record: logging.LogRecord) -> bool:
        super().filter(record)
        if record.exc_info:
            if not record.exc_text:  # the formatters use exc_text when it is set
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def mask_log_handlers() -> None:
    """Put a :class:`MaskLogRecords` on every handler of the root logger and on :data:`logging.lastResort` (what
    writes WARNING and above when no handler is configured, e.g. ``rfmsync serve`` without ``-v``), once each:
    called by the CLI, the application, after it configured logging (the library configures no handler)."""
    for handler in [*logging.getLogger().handlers, logging.lastResort]:
        if handler is not None and not any(isinstance(f, MaskLogRecords) for f in handler.filters):
            handler.addFilter(MaskLogRecords())


def install_masked_excepthooks() -> None:
    """Mask what Python writes itself of an exception nothing caught (:func:`masked_excepthook`: a thread's, as
    ``serve``'s background threads, or the main thread's). The hooks are the process's: installed by the
    program's entry point only (the ``rfmsync`` script, ``python -m sync``), never by a command run in-process
    (a test runner's own hooks, such as pytest's check for crashed threads, stay)."""
    threading.excepthook = masked_thread_excepthook
    sys.excepthook = masked_excepthook


def masked_excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None,
                      heading: str = "") -> None:
    """What :data:`sys.excepthook` writes (the traceback of an exception nothing caught, to stderr), masked."""
    import traceback

    if sys.stderr is not None:
        sys.stderr.write(heading + redact("".join(traceback.format_exception(exc_type, exc, tb))))
        sys.stderr.flush()


def masked_thread_excepthook(args: threading.ExceptHookArgs) -> None:
    """What :data:`threading.excepthook` writes of a thread's uncaught exception, masked (SystemExit: nothing)."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else threading.get_ident()
    masked_excepthook(args.exc_type, args.exc_value, args.exc_traceback, f"Exception in thread {name}:\n")


def redact_logger(name: str) -> None:
    """Put a :class:`RedactSecrets` on the logger ``name`` (once): an HTTP library's logger that writes URLs or
    answers at DEBUG."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())


#: a Bitrix24 inbound webhook URL's secret: the path segment after /rest/<user>/ (a method pasted after it is not;
#: a segment with a dot is a method, ``/rest/1/profile.json``: a URL without its code)
BITRIX24_CODE = re.compile(r"/rest/[^/]+/([^/.]+)(?=/|$)")


#: what a token looks like (:func:`shown`): Shopify's (``shpat_``, ``shpca_``, ``shppa_``, ``shpss_``), a JWT
#: (amoCRM's long-lived and OAuth tokens), a long run of letters and digits holding both (a client secret, a key)
_TOKEN_LIKE = re.compile(r"shp(?:at|ca|pa|ss)_|eyJ[\w-]*\.|(?<!\w)(?=\w*\d)(?=\w*[A-Za-z])\w{32,}(?!\w)")


def shown(value: str, limit: int = 80) -> str:
    """``value`` quoted (cut to ``limit``) for an error about a setting that is no secret (a shop, a subdomain),
    unless it holds anything that looks like a token (:data:`_TOKEN_LIKE`) or a secret this process was given: the variables
    swapped (SHOPIFY_SHOP holding the token), the error echoed the token."""
    # searched anywhere in the value: a token kept in its quotes (``docker --env-file``), after ``Bearer `` or in a
    # URL pasted as the shop is as much a token
    text = value.strip()
    if _TOKEN_LIKE.search(text) or (_known_pattern is not None and _known_pattern.search(text)):
        return "(a value that looks like a token, not shown)"
    return repr(value[:limit])


def webhook_code(url: str) -> str | None:
    """The secret of a Bitrix24 inbound webhook URL (``https://<portal>/rest/<user>/<code>/``): its code, or None."""
    code = BITRIX24_CODE.search(urlsplit(url.strip()).path)
    return code.group(1) if code else None
