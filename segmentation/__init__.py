"""RFM scoring, segments, summaries and the falling-asleep boundary, computed in DuckDB.

This package knows no vendor: it reads the canonical ``orders`` table of a DuckDB connection.
"""

from .config import BoundaryConfig, Rule, SegmentationConfig, Thresholds
from .engine import CUSTOMER_COLUMNS, SegmentationResult, run_segmentation
from .errors import DataRangeError, RuleError, SegmentationError, ThinDataError
from .rules import PRESETS

__all__ = ["BoundaryConfig", "Rule", "SegmentationConfig", "Thresholds", "CUSTOMER_COLUMNS",
           "SegmentationResult", "run_segmentation", "DataRangeError", "RuleError", "SegmentationError", "ThinDataError", "PRESETS"]
