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


def interrupted_query(exc: BaseException) -> bool:
    """Whether ``exc`` is DuckDB's form of a Ctrl-C: its Python client checks for signals while a statement runs
    and, when a signal's handler raised (SIGINT's KeyboardInterrupt; ``rfmsync serve``'s SIGTERM raises the same),
    throws ``RuntimeError("Query interrupted")`` instead, the KeyboardInterrupt dropped (DuckDB 2.0's
    ``CompletePendingQuery``). Not ``duckdb.InterruptException``: that one answers ``connection.interrupt()``."""
    return type(exc) is RuntimeError and str(exc) == "Query interrupted"
