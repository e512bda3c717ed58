"""What a file source's staging returns (:func:`connectors.file_staging.stage_files`), kept in the order store for
the warm run (:mod:`sync.store.file_report`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .source import PullResult


@dataclass
class FilePullResult(PullResult):
    """PullResult plus the duplicates and what the files' read kept (its ``issues``: values dropped, e.g. an invalid
    email/phone)."""

    duplicate_orders: int = 0
    fast_path: bool = False  # every orders file was a clean CSV read with typed columns (no text parsing)
    gone_files: list[str] = field(default_factory=list)  # files read before, gone now (sync.store.files)
    renamed_files: list[tuple[str, str]] = field(default_factory=list)  # (old, new): the same bytes renamed (idem)
    copied_files: list[tuple[str, str]] = field(default_factory=list)  # (earlier, later): the same bytes (idem)
    future: dict[str, datetime] = field(default_factory=dict)  # file → its earliest order date bad as future
    #: of ``issue_count``, the distinct consent values read neither as yes nor as no, all counted where ``issues``
    #: lists the first :data:`~connectors.file_staging.MAX_BAD_ROWS` (:func:`connectors.file_consent.consent_lines`)
    consent_values: int = 0
    #: the files' encoding guesses (:mod:`connectors.file_guesses`), said by every run that reads their rows: those
    #: of the files read now, and those the order store keeps with the files it did not read again
    encoding_guesses: list[str] = field(default_factory=list)
