"""The one retry layer, built on tenacity, shared by every CRM connector and ESP client.

Retries :class:`~connectors.errors.TransientError` (connection errors, timeouts, 429, 5xx
as mapped by each client; never a :class:`~connectors.errors.RetryLaterError`: only a later run can do it) with exponential backoff and full jitter, or the server's ``retry_after`` when it
asks for longer (capped; a "retry now" never shortens the back-off). Stops on attempts *and* on a deadline, re-raises
the last error. ``sleep`` is injectable so tests assert waits without sleeping.

Two optional hooks tell a progress display what happens (the CLI wires them in
``sync.config.HttpConfig.retry_policy``; this package knows nothing of the display): ``on_attempt()``
before every call made, ``on_wait(RetryWait)`` before every wait. A :class:`RetryWait` names the vendor,
the status or error kind, the seconds and the attempt to come; never a URL or a secret.

Only wrap idempotent calls: a POST that creates something must not be retried blindly.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, TypeVar

import tenacity

from .errors import RetryLaterError, TransientError, retry_ask
from .runstart import MAX_VENDOR_LAG, server_date

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryWait:
    """One wait before a retry: ``Mailchimp 429: waiting 12 s, attempt 3/6`` (:meth:`line`)."""

    vendor: str  # "Mailchimp", "SendGrid", "RetailCRM" (the first word of the call's description)
    reason: str  # the HTTP status ("429", "503") or the error kind ("timeout", "connection error", "error")
    seconds: float
    attempt: int  # the attempt that comes after the wait
    attempts: int  # the most this policy makes

    def line(self) -> str:
        return (f"{self.vendor} {self.reason}: waiting {math.ceil(self.seconds)} s, "
                f"attempt {self.attempt}/{self.attempts}")


def wait_reason(exc: BaseException | None) -> str:
    """What a retried error was, in a word or a status: never its message (which may name a URL)."""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status >= 400:
        return str(status)
    text = str(exc).lower()
    if "timed out" in text or "timeout" in text:
        return "timeout"
    if "connect" in text:
        return "connection error"
    return "error"


@dataclass
class RetryPolicy:
    attempts: int = 6
    deadline: float = 120.0  # seconds, whole call including waits
    base: float = 0.5  # first backoff, doubled each attempt
    max_wait: float = 30.0  # cap on any single wait, Retry-After included
    #: per-call timeout (seconds) of the clients that use this policy ([http] timeout_seconds); None: their default
    timeout: float | None = None
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    #: called before every call made (a progress display counts calls); None: nobody listens
    on_attempt: Callable[[], None] | None = None
    #: called before every wait with what it is waiting for (a progress display says so); None: nobody listens
    on_wait: Callable[[RetryWait], None] | None = None

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """The back-off of this attempt (exponential, full jitter), or the server's ``retry_after`` when it is
        longer, capped at ``max_wait``: a ``Retry-After: 0``, a negative value or a date already past ("retry now")
        never makes a wait shorter than our own back-off (six calls at once would hit a rate limit again, and amoCRM
        blocks the address of a client that keeps at it)."""
        exc = state.outcome.exception() if state.outcome else None
        ceiling = min(self.max_wait, self.base * 2 ** (state.attempt_number - 1))
        backoff = self.rng.uniform(ceiling / 2, ceiling)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is None:
            return backoff
        return min(max(float(retry_after), backoff), self.max_wait)

    def call(self, fn: Callable[[], T], *, what: str = "call", vendor: str | None = None) -> T:
        """Run ``fn`` with retries on TransientError; other errors pass straight through. When it gives up
        after more than one attempt, the last TransientError (same type and attributes) says how many
        attempts were made: "...; gave up after 6 attempts". ``vendor`` labels the waits told to
        ``on_wait`` (default: the first word of ``what``)."""
        attempts = 0

        def counted() -> T:
            nonlocal attempts
            attempts += 1
            if self.on_attempt is not None:
                self.on_attempt()
            return fn()

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.info("retrying %s after %s (attempt %d, waiting %.1fs)", what, exc,
                     state.attempt_number, state.upcoming_sleep)
            if self.on_wait is not None:
                self.on_wait(RetryWait(vendor or what.split(" ", 1)[0], wait_reason(exc), state.upcoming_sleep,
                                       state.attempt_number + 1, self.attempts))

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientError)  # (not what only a later run can do)
            & tenacity.retry_if_not_exception_type(RetryLaterError),
            stop=tenacity.stop_after_attempt(self.attempts) | tenacity.stop_after_delay(self.deadline),
            wait=self._wait,
            sleep=self.sleep,
            reraise=True,
            before_sleep=before_sleep,
        )
        try:
            return retrying(counted)
        except TransientError as exc:
            if attempts > 1:
                exc.args = (f"{exc}; gave up after {attempts} attempts", *exc.args[1:])
            raise


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Parse ``Retry-After`` (seconds or HTTP date) or an epoch ``X-RateLimit-Reset``: the seconds to wait from
    ``now`` (a date or epoch; default: this host's clock), at least 0 (the caller's back-off decides then), at most
    :data:`connectors.errors.MAX_RETRY_AFTER`."""
    if not value:
        return None
    value = value.strip()
    try:
        num = float(value)
    except ValueError:
        dt = server_date(value, zoneless_utc=True)  # (an HTTP date is GMT: one without a zone too)
        if dt is None:
            return None
        num = dt.timestamp()
    else:
        if not math.isfinite(num):
            return None
        if num <= 1_000_000_000:  # seconds; more is an epoch timestamp (X-RateLimit-Reset)
            return retry_ask(num)
    return retry_ask(num - (now if now is not None else time.time()))


def retry_after_from(headers: Mapping[str, str] | None, *names: str) -> float | None:
    """The seconds the first of the headers ``names`` that parses asks to wait (:func:`retry_after_seconds`). A date
    or an epoch is measured from the answer's own ``Date`` when it is believable, within
    :data:`~connectors.runstart.MAX_VENDOR_LAG` (a day) of this host's clock either way: the server's clock (a host
    clock an hour off would read the server's "in 30 s" as an hour or as "now"). Else (none, a clock stuck in 1970 or
    in year 9999, a cached answer days old) from this host's clock."""
    if not headers:
        return None
    now, sent = time.time(), server_date(headers.get("Date"))
    if sent is not None and abs(sent.timestamp() - now) <= MAX_VENDOR_LAG.total_seconds():
        now = sent.timestamp()
    for name in names:
        wait = retry_after_seconds(headers.get(name), now)
        if wait is not None:
            return wait
    return None
