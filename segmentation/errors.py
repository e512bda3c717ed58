"""Errors of the segmentation package.

::

    SegmentationError          root
    ├── RuleError              a segment rule or preset is invalid (fix the config)
    ├── ThinDataError          not enough data for what was asked (a result field stays empty)
    └── DataRangeError         a customer's figure does not fit its column (fix the data or its mapping)
"""


class SegmentationError(Exception):
    pass


class RuleError(SegmentationError):
    pass


class ThinDataError(SegmentationError):
    pass


class DataRangeError(SegmentationError):
    pass
