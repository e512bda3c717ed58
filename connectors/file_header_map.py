"""An export file's header matched to the config's mapping: each mapped column found (or the closest header named),
a header written twice refused unless the mapping names which one is meant."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .suggest import closest


@dataclass(frozen=True)
class Mapping:
    columns: dict[str, str]  # canonical field → header
    optional: frozenset[str]  # fields that came from a preset only (skipped when missing)


def match_headers(path: Path, headers: list[str], mapping: Mapping, attributes: dict[str, str]) -> dict[str, str]:
    """canonical field (or ``attr:<name>``) → the file's real header; ConfigError listing what is missing."""
    by_key = {h.strip().casefold(): h for h in headers}
    wanted = {**mapping.columns, **{f"attr:{k}": v for k, v in attributes.items()}}
    out, missing = {}, []
    for fld, header in wanted.items():
        real = by_key.get(header.strip().casefold())
        if real is not None:
            out[fld] = real
        elif fld not in mapping.optional and not fld.startswith("attr:"):
            missing.append(f"{fld} = {header!r}{closest_header(header, headers)}")
        elif fld in ("ordered_at", "amount") or (fld == "price" and "amount" not in mapping.columns):
            missing.append(f"{fld} = {header!r} (from the preset){closest_header(header, headers)}")
    if missing:
        raise ConfigError(f"{path}: mapped column(s) not found: {'; '.join(missing)}. "
                          f"Columns in the file: {', '.join(repr(h) for h in headers)}")
    return out


def repeated_headers(path: Path, written: list[str], read: list[str], mapping: Mapping,
                      attributes: dict[str, str]) -> None:
    """ConfigError naming a mapped header the file's header holds twice (or more), and where: which of them is
    meant cannot be told (two ``Сумма``: the sum with and without the discount), unless the mapping also names a
    later one by the name the reader gives it (``read``, by position: DuckDB's ``Сумма_1``, the XLSX reader's
    ``Сумма_2``): then each is mapped by its own name."""
    wanted = {h.strip().casefold() for h in [*mapping.columns.values(), *attributes.values()]}
    at: dict[str, list[int]] = {}
    for i, h in enumerate(written, start=1):
        if h.strip().casefold() in wanted:
            at.setdefault(h.strip().casefold(), []).append(i)
    for key, places in at.items():
        renamed = [read[i - 1] for i in places[1:] if i <= len(read) and read[i - 1].strip().casefold() != key]
        if len(places) > 1 and not {r.strip().casefold() for r in renamed} & wanted:
            where = ", ".join(map(str, places[:-1])) + f" and {places[-1]}"
            second = (f"; or map the second one as {renamed[0]!r} (the reader's name for that column: naming it"
                      " picks it)") if renamed else ""
            raise ConfigError(f"{path}: the header {written[places[0] - 1].strip()!r} is in columns {where}: which "
                              f"one is meant cannot be told; rename one of them in the file (or in its export)"
                              f"{second}")


def closest_header(header: str, headers: list[str]) -> str:
    best = closest(header, headers)
    return f" (closest header: {best!r})" if best is not None else ""
