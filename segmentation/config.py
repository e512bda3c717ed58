"""The ``[segmentation]`` config section (pydantic at the edge)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Thresholds(BaseModel):
    """Explicit ascending cut points, N−1 per metric.

    recency_days: ``≤ c1`` → N, ``c1 < x ≤ c2`` → N−1, … ``> c_last`` → 1.
    frequency / monetary: ``< c1`` → 1, ``c1 ≤ x < c2`` → 2, … ``≥ c_last`` → N.
    """

    model_config = ConfigDict(extra="forbid")
    recency_days: list[float]
    frequency: list[float]
    monetary: list[float]

    @model_validator(mode="after")
    def _ascending(self) -> "Thresholds":
        for name in ("recency_days", "frequency", "monetary"):
            cuts = getattr(self, name)
            if not all(math.isfinite(c) for c in cuts):  # nan and inf are TOML floats; no score is ever past them
                raise ValueError(f"segmentation.thresholds.{name} must be finite numbers, got {cuts}")
            if any(b <= a for a, b in zip(cuts, cuts[1:])):
                raise ValueError(f"segmentation.thresholds.{name} must be strictly ascending, got {cuts}")
        return self


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    match: list[str] = Field(min_length=1)


class BoundaryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window_days: int = 90  # "comes back within this many days"
    return_probability: float = 0.10  # the boundary: P(return within window | silent d days) drops below this
    max_days: int = 730  # longest silence the curve is computed for
    min_at_risk: int = 20  # stop the curve where fewer customers remain observed
    sample_customers: int = 100_000  # larger shops: estimate on a deterministic sample of about this many


class SegmentationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preset: str = "tracks"  # tracks | crm-4 | classic-5 | none
    method: Literal["quantile", "thresholds"] = "quantile"
    levels: int | None = None  # 3, 4 or 5; defaults to the preset's
    thresholds: Thresholds | None = None
    rules: list[Rule] = Field(default_factory=list)  # evaluated before the preset's rules
    default_segment: str | None = None  # defaults to the preset's ("Other")
    reminder_lead_days: int = 14
    boundary: BoundaryConfig = Field(default_factory=BoundaryConfig)
