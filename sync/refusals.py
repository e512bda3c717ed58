"""Refusals by the guards (:mod:`sync.guards`), shared by the full sync, ``apply`` (:mod:`sync.run`) and the
webhook resync (:mod:`sync.serve.resync`): a refusal records one ``refused`` run per destination (the reason as its
error) and raises :class:`sync.errors.GuardRefusedError` (exit 6); when only plan guards other than the withdrawal
rules refused, the consent withdrawals go out alone first (:func:`refuse_after_withdrawals`)."""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

from .engine import ApplyReport
from .errors import GuardRefusedError, RunStopped
from .ledger import RunRecorder
from .planning.plan import Plan
from .planning.withdrawals import ALONE, withdrawals_alone

log = logging.getLogger(__name__)


def refuse(ledger: RunRecorder, kind: str, destinations: Sequence[str], lines: Sequence[str],
           counts: Mapping[str, Any] | None = None, *, applied: Sequence[ApplyReport] = (),
           note: str | None = None) -> GuardRefusedError:
    """Record a ``refused`` run per destination (nothing else written, but the withdrawals ``applied`` alone,
    which ``note`` tells) and return the error to raise."""
    refused = GuardRefusedError(list(lines), destinations, applied=applied, note=note)
    error = "; ".join(refused.message_lines)
    record_closed(ledger, kind, destinations, "refused", error, counts)
    written = "only consent withdrawals written" if applied else "nothing written"
    log.warning("refused by a guard (%s to %s): %s", written, ", ".join(destinations), error)
    return refused


def record_closed(ledger: RunRecorder, kind: str, destinations: Sequence[str], status: str, error: str,
                  counts: Mapping[str, Any] | None = None) -> None:
    """One run per destination, closed at once with ``status`` (nothing written to it: a refusal, a failure before
    any plan) and ``error``."""
    for name in destinations:
        ledger.finish_run(ledger.start_run(kind, name), status, dict(counts or {}), error=error)


class HeldAgain(Exception):
    """A re-plan under the destination's lock (the ledger moved while the apply waited for it) trips plan guards
    other than the withdrawal rules: nothing applied yet; the caller sends the re-plan's withdrawals alone and
    refuses the rest (:func:`refuse_after_withdrawals`), as it would have for the first plan. ``planned``: the
    re-plan; ``lines``: its guard lines, named by destination."""

    def __init__(self, planned: Any, lines: Sequence[str]) -> None:
        super().__init__("\n".join(lines))
        self.planned, self.lines = planned, list(lines)


#: one destination's withdrawals applied alone (:func:`sync.planning.withdrawals.withdrawals_alone`): its name and
#: the call that applies them (None: it has none)
Withdraw = tuple[str, Callable[[], ApplyReport] | None]


def refuse_after_withdrawals(ledger: RunRecorder, kind: str, destinations: Sequence[str], lines: Sequence[str],
                             withdraw: Sequence[Withdraw], counts: Mapping[str, Any] | None = None
                             ) -> GuardRefusedError:
    """A refusal by plan guards other than the withdrawal rules (:class:`sync.guards.PlanVerdict`): each
    destination's consent withdrawals go out alone first (only the withdrawn contacts' managed tags/lists come
    off), then the rest is refused as :func:`refuse` (exit 6) with one more line: how many went out, the rest held.
    A destination whose withdrawals could not be applied (its ESP down, a re-plan tripping a withdrawal rule) is
    named on that line; the others still go out. A stop asked for (SIGTERM) stops at once (nothing refused)."""
    applied, failed = [], []
    for name, apply in withdraw:
        if apply is None:
            continue
        try:
            applied.append(apply())
        except RunStopped:
            raise
        except GuardRefusedError as exc:  # a re-plan under the lock tripped a withdrawal rule: its lines
            failed.append(f"{name}: {'; '.join(exc.message_lines)}")
        except Exception as exc:  # a failed apply is recorded by the engine (failed run, pending items)
            failed.append(f"{name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    return refuse(ledger, kind, destinations, lines, counts, applied=applied, note=withdrawal_note(applied, failed))


def withdrawal_note(applied: Sequence[ApplyReport], failed: Sequence[str]) -> str | None:
    """The refusal's line on the withdrawals that went out alone (None: there were none to send); when none went
    out, only those that could not (``failed``: each destination's reason, named once)."""
    if not applied:
        return f"consent withdrawals not applied: {'; '.join(failed)}" if failed else None
    n = sum(r.counts.get("planned", 0) for r in applied)
    where = ", ".join(f"{r.destination} {r.counts.get('planned', 0)}" for r in applied)
    text = (f"{n} consent withdrawal{'s' if n != 1 else ''} went out alone{f' ({where})' if where else ''}: only the "
            f"withdrawn contacts' managed tags/lists were taken off; the rest of the plan is held")
    ops = sum(r.counts.get("failed", 0) for r in applied)
    if ops:
        text += f"; {ops} of their operations failed (recorded, retried by the next run: `rfmsync failures`)"
    if failed:
        text += f"; not applied: {'; '.join(failed)}"
    return text


def apply_alone(plan: Plan, execute: Callable[..., ApplyReport]) -> Callable[[], ApplyReport] | None:
    """The apply of ``plan``'s consent withdrawals alone (None: it has none): ``execute`` called with the cut plan
    and the run's options (``data``: :data:`~sync.planning.withdrawals.ALONE`, no input counts; ``alone=True``)."""
    cut = withdrawals_alone(plan)
    if cut.is_empty:
        return None
    return lambda: execute(cut, data={ALONE: len(cut.changes)}, alone=True)


def judge_replan(planned: Any, plan: Plan, lines: Sequence[str], withdrawal_lines: Sequence[str], *, alone: bool,
                 ledger: RunRecorder, kind: str, counts: Mapping[str, Any] | None = None) -> Plan:
    """The plan to apply of a re-plan under the destination's lock (the ledger moved while the apply waited for it),
    held to the plan guards like the first plan: ``planned`` the re-plan, ``plan`` its plan, ``lines`` its guard
    lines (named by destination; none when the run overrides them), ``withdrawal_lines`` those of the withdrawal
    rules (unnamed). Sending withdrawals ``alone``: its withdrawals alone, or (a withdrawal rule tripped) a
    :class:`GuardRefusedError` with those lines, not applied, which the refusal that follows records and names. A
    whole plan: refused whole (:func:`refuse`) when a withdrawal rule trips, :class:`HeldAgain` when other plan
    guards alone do (its withdrawals go out alone), else ``plan``."""
    if alone:
        if withdrawal_lines:
            raise GuardRefusedError(list(withdrawal_lines), [plan.destination])
        return withdrawals_alone(plan)
    if withdrawal_lines:
        raise refuse(ledger, kind, [plan.destination], lines, counts)
    if lines:
        raise HeldAgain(planned, lines)
    return plan
