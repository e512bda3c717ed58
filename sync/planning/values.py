"""The one field vocabulary: every value a destination field may carry, its kind, and whether it is predictive.

``[destinations.fields]`` maps an ESP field to one of these names. Each value has a *kind* (``number``, ``text``,
``date``, ``bool``); each destination maps kinds to its own field types (``DestinationSpec.field_types`` in
:mod:`sync.destinations`), so a value gets the same kind of field in every ESP. Predictive and behavioural
values are computed only when a mapping (or a custom segment rule) asks for one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

NUMBER, TEXT, DATE, BOOL = "number", "text", "date", "bool"
KINDS = (NUMBER, TEXT, DATE, BOOL)


@dataclass(frozen=True)
class Value:
    name: str
    kind: str  # one of KINDS
    predictive: bool = False  # computed by the predictive/behavioural step (segmentation.predictive, lifecycle)
    column: str | None = None  # the segments table's column when it is not ``name``
    #: moves for (nearly) every customer without anything happening to him: with the as-of day (recency_days,
    #: the models' numbers as T grows) or with a refit of the models on everyone's orders. The plan guards do not
    #: count such a field's new value as a change (sync.guards.plan_stats): it would trip max_change_pct every day
    drifts: bool = False


def _values(*items: Value) -> Mapping[str, Value]:
    return MappingProxyType({v.name: v for v in items})


def _predictive(name: str, kind: str, drifts: bool = False) -> Value:
    return Value(name, kind, predictive=True, drifts=drifts)


#: name → value, in the order the config error lists them
VALUES: Mapping[str, Value] = _values(
    Value("segment", TEXT), Value("rfm", TEXT), Value("r", NUMBER), Value("f", NUMBER),
    Value("m", NUMBER), Value("recency_days", NUMBER, drifts=True), Value("frequency", NUMBER),
    Value("monetary", NUMBER), Value("avg_check", NUMBER),
    Value("first_order", DATE, column="first_order_at"), Value("last_order", DATE, column="last_order_at"),
    Value("customer_id", TEXT),
    _predictive("p_alive", NUMBER, drifts=True), _predictive("expected_purchases", NUMBER, drifts=True),
    _predictive("churn_probability", NUMBER, drifts=True), _predictive("churn_risk", TEXT),
    _predictive("expected_aov", NUMBER, drifts=True), _predictive("clv", NUMBER, drifts=True),
    _predictive("next_order_date", DATE), _predictive("reorder_due", BOOL),
    _predictive("avg_days_between_orders", NUMBER), _predictive("discount_share", NUMBER),
    _predictive("discount_hunter", BOOL), _predictive("favourite_category", TEXT),
    _predictive("favourite_brand", TEXT),
)
FIELD_VALUES: tuple[str, ...] = tuple(VALUES)
PREDICTIVE_VALUES: frozenset[str] = frozenset(n for n, v in VALUES.items() if v.predictive)
DRIFTING_VALUES: frozenset[str] = frozenset(n for n, v in VALUES.items() if v.drifts)


def kind_of(name: str) -> str:
    """The kind of a value name; ``text`` for a name outside the vocabulary (any value fits a text field).

    The config rejects such names before anything is created (:func:`sync.planning.plan.check_fields`)."""
    value = VALUES.get(name.lower())
    return value.kind if value is not None else TEXT


def column_of(name: str) -> str:
    """The segments-table column a value is read from."""
    value = VALUES.get(name)
    return (value.column or value.name) if value is not None else name


__all__ = ["BOOL", "DATE", "DRIFTING_VALUES", "FIELD_VALUES", "Value", "KINDS", "NUMBER", "PREDICTIVE_VALUES",
           "TEXT", "VALUES", "column_of", "kind_of"]
