"""Plain-language notes on what the predictive models could not do, and what to change.

:func:`segmentation.predictive.predict_customers` turns each :class:`Unfitted` into one warning line for the run
(``PredictReport.warnings``): which fields stay empty, why in plain words, and which export or ``[predict]``
setting to change. ``str()`` of an :class:`Unfitted` is the short reason kept in ``PredictReport.reason``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from decimal import Decimal

MODEL_FIELDS = "p_alive, expected_purchases, churn_probability, churn_risk, expected_aov, clv"
SPEND_FIELDS = "expected_aov, clv"


@dataclass(frozen=True)
class Unfitted:
    """Why a model was not fitted (``reason``, one line) and what the user can change (``advice``)."""

    reason: str
    advice: str
    kind: str = "fit"  # too_few_customers, short_history, no_repeat_buyers, did_not_converge, currency, spend

    def __str__(self) -> str:
        return self.reason


def too_few_customers(n: int, need: int) -> Unfitted:
    return Unfitted(f"only {n} customer{'' if n == 1 else 's'} with a completed order (need {need})",
                    f"too few customers to learn from; export more of the shop's history or lower [predict] "
                    f"min_customers (now {need})", "too_few_customers")


def short_history(days: int, need: int) -> Unfitted:
    return Unfitted(f"only {days} days of order history (need {need})",
                    f"too little history; export at least {need} days of orders or lower [predict] "
                    f"min_history_days (now {need})", "short_history")


def few_repeat_buyers(n: int, need: int, what: str = "repeat customers") -> Unfitted:
    plain = "no repeat buyers" if n == 0 else f"too few repeat buyers ({n})"
    return Unfitted(f"only {n} {what} (need {need})",
                    f"{plain}: the models learn from customers who bought twice; export a longer history or lower "
                    f"[predict] min_repeat_customers (now {need})", "no_repeat_buyers")


def from_fit_error(message: str, spend: "SpendSpread | None" = None) -> Unfitted:
    """A :class:`~segmentation.btyd_models.FitError` raised by an optimizer or a consistency check (the spend
    model's that did not converge: :func:`spend_did_not_converge`, told its repeat buyers' ``spend`` when known)."""
    if message.startswith("Gamma-Gamma") and ("converge" in message or "boundary" in message):
        return spend_did_not_converge(message, spend)
    if "cannot tell when customers leave" in message:  # (btyd_models.EVERYONE_LEAVES)
        return Unfitted(message, "no customer bought on a third day: the model needs customers who buy three times; "
                                 "export a longer history", "no_repeat_buyers")
    if "converge" in message or "boundary" in message:
        return Unfitted(message, "the model did not converge on this data; export a longer history (more repeat "
                                 "purchases), or try [predict] time_unit = \"days\" instead of \"weeks\" (or back)",
                        "did_not_converge")
    if "q = " in message:
        return Unfitted(message, "a few very large orders dominate the spend; check the export for wrong amounts "
                                 "(e.g. a total typed into the price) or exclude wholesale orders", "spend")
    if "repeat buyer" in message:
        return few_repeat_buyers(0, 2)
    return Unfitted(message, "check the export's dates and statuses (only completed orders count)", "fit")


def spend_did_not_converge(message: str, spend: SpendSpread | None = None) -> Unfitted:
    """The spend model (Gamma-Gamma) did not converge: it learns how the repeat buyers' mean spend per purchase
    day (``spend``, when known) varies between customers, so alike spends leave it nothing to learn (no time unit
    plays a part: it reads no times)."""
    if spend is None:
        seen = "the repeat buyers' mean spends per purchase day are too much alike"
    elif spend.low == spend.high:
        seen = f"every repeat buyer's mean spend per purchase day is {money(spend.low)}"
    else:
        seen = (f"the repeat buyers' mean spend per purchase day runs from {money(spend.low)} to {money(spend.high)}, "
                f"{spend.share * 100:.0f} % of them exactly {money(spend.common)}")
    return Unfitted(message, f"the spend model learns how mean spend varies between customers, and {seen}: one "
                             "price for everything (a subscription box, a fixed fee) leaves it nothing to learn "
                             "(expected_aov would be that price); check that the [source] amount column holds each "
                             "order's amount, or export a longer history (more repeat buyers)", "did_not_converge")


@dataclass(frozen=True)
class SpendSpread:
    """The repeat buyers' mean spends per purchase day: least, greatest, most common and its share of them."""

    low: float
    high: float
    common: float
    share: float


def money(value: "Decimal | float", places: int = 2) -> str:
    """An amount as the run's messages print it: thousands apart by a space, ``places`` decimals."""
    return f"{value:,.{places}f}".replace(",", " ")


def several_currencies(n: int, names: str) -> Unfitted:
    return Unfitted(f"spend model needs one currency, orders are in {n} ({names})",
                    "the spend model adds amounts together; export one currency per config (one shop per "
                    "currency)", "currency")


def warning_lines(bgnbd: Unfitted | None, gamma_gamma: Unfitted | None, non_finite: int) -> list[str]:
    """The run's warnings about predictions, one line each."""
    out = []
    if bgnbd is not None:
        out.append(f"predictions not computed ({MODEL_FIELDS} and the model-based next_order_date stay empty): "
                   f"{bgnbd.reason}; {bgnbd.advice}")
    elif gamma_gamma is not None:
        out.append(f"spend predictions not computed ({SPEND_FIELDS} stay empty): {gamma_gamma.reason}; "
                   f"{gamma_gamma.advice}")
    if non_finite:
        out.append(f"{non_finite} customers got no predictions (the model's numbers overflowed for them); "
                   f"try [predict] time_unit = \"days\" instead of \"weeks\" (or back)")
    return out


def limit_line(one_rate: bool, nobody_leaves: bool, one_spend: float | None) -> str | None:
    """The warning of a fit accepted at one of the models' limits (see :mod:`segmentation.btyd_models`), naming
    each and what it means for the predictions; None when no fit is at one. ``one_spend``: at (or near) the spend
    model's limit, the largest weight a customer's own mean spend has in his expected_aov (0 at the limit itself;
    near it, on its ridge, up to ~16 %), else None."""
    parts = [what for at, what in (
        (one_rate, "everyone buys at one rate (the customers' purchase counts differ no more than chance allows: "
                   "each one's expected purchases are the shop's pooled rate over his own count and age, not how "
                   "often he buys compared with others)"),
        (nobody_leaves, "nobody leaves (p_alive is 1 for everyone and churn_probability only the chance of no "
                        "purchase in the window: a customer silent for a long time is not counted as lost)"),
        (one_spend is not None, _one_spend(one_spend or 0.0))) if at]
    if not parts:
        return None
    return (f"the predictive models reached their limit on this data: {'; '.join(parts)}; check that the orders are "
            "the customers' real purchases (not generated, or imported on one day), or export a longer history")


def _one_spend(weight: float) -> str:
    if weight < 5e-4:  # (0.0 % shown)
        return "one mean spend (expected_aov is the same for every customer: his own orders' amounts do not move it)"
    share = f"{100 * weight:.0f}" if weight >= 0.01 else f"{100 * weight:.1f}"
    return (f"one mean spend (expected_aov is nearly the same for every customer: his own orders' amounts move it at "
            f"most {share} % of the way from the shop's mean spend to his own)")


def beyond_horizon_line(n: int, horizon_days: int) -> str:
    return (f"{n} customers have no next_order_date: predicted beyond horizon_days ({horizon_days} days ahead; "
            f"mostly one-time buyers, whom the model cannot time); raise [predict] horizon_days to keep later dates")
