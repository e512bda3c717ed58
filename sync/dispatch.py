"""What an apply leaves in flight when it ends: nothing when it ended normally (every call answered, its outcome
in the ledger) or before its first write call (:func:`landed`); when it failed or was interrupted past that point,
the operations its calls carried (:func:`narrowed`), as its client reported them before each call
(:class:`Dispatched`, the ``dispatching`` of :meth:`~sync.destinations.base.Destination.apply`). The operations
never sent are not in doubt: plainly pending, planned again by the next sync, never read back or taken off first.
A process killed before it narrows the row (kill -9, a crash, the OOM killer) leaves all of them in doubt, the
safe side (:mod:`sync.ledger.inflight`).
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor, Future
from types import TracebackType
from typing import TYPE_CHECKING, Callable, Sequence

from .ledger.inflight import in_flight_ops
from .model import ContactChange

if TYPE_CHECKING:
    from .ledger import Ledger

log = logging.getLogger(__name__)


class Dispatched:
    """The write calls an apply sent, as its client reports them (``dispatching``): each call's changes and the one
    operation of theirs it carries (None: every add and create of theirs). Kept as the call's own list, read
    only when the apply fails (a list's append is atomic: a client may report from any thread)."""

    def __init__(self) -> None:
        self._calls: list[tuple[Sequence[ContactChange], str | None]] = []

    def __call__(self, changes: Sequence[ContactChange], op: str | None = None) -> None:
        self._calls.append((changes, op))

    def ops(self, changes: Sequence[ContactChange]) -> dict[str, list[str]]:
        """Of the operations ``changes`` had in flight (:func:`in_flight_ops`), those a reported call carried."""
        sent: set[tuple[str, str]] = set()
        for part, op in list(self._calls):
            if op is None:
                sent.update((key, o) for o, keys in in_flight_ops(part).items() for key in keys)
            else:
                sent.update((c.key, op) for c in part)
        return {op: kept for op, keys in in_flight_ops(changes).items()
                if (kept := [key for key in keys if (key, op) in sent])}


def landed(ledger: Ledger, destination: str, run_id: int, noted: Future[int]) -> None:
    """The run's apply ended normally (every call answered, its outcome in the ledger) or failed before its first
    write call: its operations are no longer in flight (``noted``: the write of them, whose count says whether there
    is a row). Not called when it failed or was interrupted past that point (:func:`narrowed`): a call that raised
    may have been carried out though no outcome says so, so the row stays for the next apply, which finds the
    outcomes recorded and doubts only the others (:meth:`~sync.ledger.inflight.InFlight.doubt_in_flight`); so does
    a ledger that fails here (the run's own error, if any, is the one raised)."""
    try:
        if not noted.result():
            return  # nothing was in flight
    except Exception:  # not written (the run failed on it, before any call): nothing to clear
        return
    try:
        ledger.clear_in_flight(destination, run_id)
    except Exception as exc:
        log.warning("sync %s: run %d's operations in flight were not cleared (%s); the next apply finds their "
                    "outcomes in the ledger", destination, run_id, type(exc).__name__)


def narrowed(ledger: Ledger, destination: str, run_id: int, noted: Future[int], changes: Sequence[ContactChange],
             dispatched: Dispatched | None) -> None:
    """The run's apply failed or was interrupted past its first write call: its row in flight keeps only the
    operations its calls carried (``dispatched``; None: a client that does not report them, all stay). A ledger that
    fails here leaves the row whole (all in doubt: the safe side); the run's own error is the one raised."""
    if dispatched is None or not noted.done() or noted.exception() is not None or not noted.result():
        return
    try:
        kept = ledger.narrow_in_flight(destination, run_id, dispatched.ops(changes))
    except Exception as exc:
        log.warning("sync %s: run %d's operations in flight were not narrowed to the ones sent (%s); all stay in "
                    "doubt", destination, run_id, type(exc).__name__)
        return
    log.info("sync %s: %d of run %d's %d operations in flight were sent, in doubt until the next sync; the others "
             "were not sent", destination, kept, run_id, noted.result())


def shut_down(pool: Executor) -> Callable[[type[BaseException] | None, BaseException | None,
                                            TracebackType | None], None]:
    """An exit callback (``ExitStack.push``) shutting ``pool`` down: waiting for its calls, but for none when the
    block is left by an interruption (Ctrl-C, SIGTERM to the CLI: their answers would not be read; a call not
    started is cancelled). The exception, if any, goes on."""
    def exit_(exc_type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None) -> None:
        cut = exc_type is not None and not issubclass(exc_type, Exception)
        pool.shutdown(wait=not cut, cancel_futures=cut)
    return exit_


__all__ = ["Dispatched", "landed", "narrowed", "shut_down"]
