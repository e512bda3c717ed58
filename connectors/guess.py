"""``rfmsync init``: read an export's header and a sample, and guess how to read it (pure of ``sync``).

Encoding, delimiter, decimal mark and date format are detected with the file source's own helpers
(:mod:`connectors.file_readers`, :mod:`connectors.normalize`, :mod:`connectors.diagnose`); the column mapping is
guessed from header synonyms in Russian, Uzbek and English, or recognised as a built-in preset
(:mod:`connectors.presets`). Every guess says whether it is certain (``detected``) or to be checked (``guessed``).
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .diagnose import guess_format
from .errors import BadFileError, ConfigError
from .file_encoding import cut_inside_character, detect_encoding, read_encoding, settled
from .file_lines import TITLE_SCAN, header_line
from .file_readers import XLSX_HEADER_SCAN, default_sheet, line_delimiter
from .normalize import DATE_FORMATS, sniff_decimal
from .presets import PRESETS

SAMPLE_ROWS = 200

#: canonical field → header synonyms (compared case-insensitively, spaces and punctuation ignored)
SYNONYMS: dict[str, tuple[str, ...]] = {
    "ordered_at": ("дата продажи", "дата", "дата чека", "дата заказа", "дата документа", "sana", "sotuv sanasi",
                   "date", "order date", "sale date", "created at", "ordered at"),
    "order_id": ("номер чека", "чек", "чек №", "номер продажи", "номер заказа", "номер", "chek raqami", "chek",
                 "buyurtma raqami", "receipt", "receipt no", "receipt number", "order", "order id", "order no",
                 "order number", "invoice"),
    "customer": ("клиент", "покупатель", "контрагент", "фио", "фио клиента", "фио покупателя", "mijoz", "xaridor",
                 "customer", "client", "buyer", "customer name", "client name"),
    "customer_id": ("код клиента", "id клиента", "mijoz kodi", "mijoz id", "customer id", "client id"),
    "amount": ("итого", "сумма", "чистые продажи", "сумма продажи", "jami", "summa", "total", "amount",
               "order total", "net sales"),
    "phone": ("телефон", "тел", "мобильный", "telefon", "tel", "phone", "mobile", "phone number"),
    "email": ("e-mail", "email", "эл почта", "электронная почта", "почта", "elektron pochta", "mail"),
    "marketing_consent": ("согласие на рассылку", "согласие", "подписка", "rozilik", "xabarnomaga rozilik",
                          "consent", "marketing consent", "subscribed", "accepts marketing"),
    "status": ("статус", "holat", "status"),
    "discount": ("скидка", "chegirma", "discount"),
    "currency": ("валюта", "valyuta", "currency"),
    "first_name": ("имя", "ism", "first name"),
    "last_name": ("фамилия", "familiya", "last name"),
    "created_at": ("дата регистрации", "ro'yxatdan o'tgan sana", "registered", "signup date"),
    "cancelled_at": ("дата отмены", "bekor qilingan sana", "cancelled at", "canceled at", "cancelled date"),
}

#: phone country code → (phone_region, timezone) guessed from the sample's phones
_COUNTRIES = (("998", "UZ", "Asia/Tashkent"), ("7", "RU", "Europe/Moscow"), ("1", "US", "America/New_York"))


def _key(header: str) -> str:
    return re.sub(r"[\s_.:;,/()#№-]+", " ", header.strip().casefold().replace("ё", "е")).strip()


_SYNONYM_KEYS = {field_: {_key(s) for s in names} for field_, names in SYNONYMS.items()}


@dataclass
class Sample:
    path: Path
    kind: str  # csv, xlsx, parquet
    headers: list[str]
    rows: list[dict[str, str]]
    encoding: str | None = None
    delimiter: str | None = None
    skip: int = 0  # title lines above a CSV's header
    #: the encoding read from the bytes of the last row only, the first MB ASCII (a guess: cp1251 or cut UTF-8?)
    encoding_guessed: bool = False
    #: that 8-bit reading only because the file was named on the command line: it ends inside a UTF-8 character
    #: and changed a moment ago (a UTF-8 copy under way, cut short, reads so too): ``auto`` decides again each run
    encoding_maybe_cut: bool = False


@dataclass
class Guess:
    """What ``rfmsync init`` writes: ``settings`` (``[source]`` keys) and ``columns`` (field → header), each
    with a note (``detected`` or ``guessed: check``)."""

    sample: Sample
    preset: str | None = None
    settings: dict[str, tuple[object, str]] = field(default_factory=dict)
    columns: dict[str, tuple[str, str]] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)

    @property
    def names_as_ids(self) -> str | None:
        """The header of a column of names mapped as the customer id (:data:`NAMES_AS_IDS`), else ``None``."""
        header, note = self.columns.get("customer_id", (None, None))
        return header if note == NAMES_AS_IDS else None


def read_sample(path: Path, rows: int = SAMPLE_ROWS) -> Sample:
    """The header and the first ``rows`` rows (as text) of a CSV/TSV, XLSX or Parquet export."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        return _xlsx_sample(path, rows)
    if suffix == ".parquet":
        import duckdb

        rel = duckdb.connect().sql(f"SELECT * FROM read_parquet('{str(path).replace(chr(39), chr(39) * 2)}') "
                                   f"LIMIT {rows}")
        values = rel.fetchall()
        return Sample(path, "parquet", list(rel.columns),
                      [{h: _text(v) for h, v in zip(rel.columns, r)} for r in values])
    encoding = read_encoding(path)  # the reader's decision: a last row in another encoding, a file cut short
    with open(path, encoding="utf-8-sig" if encoding == "utf-8" else encoding, errors="replace",
              newline="") as f:
        head = "".join(line for _, line in zip(range(rows + 1), f))
    if not head.strip():
        raise BadFileError(f"{path}: empty file")
    lines = head.splitlines(keepends=True)
    skip, _ = header_line(lines[:TITLE_SCAN])  # a title and blank lines above the header (as the reader skips)
    skip = _named_header(lines, skip)
    delimiter = line_delimiter(lines[skip])  # the header line decides; its delimiters are ASCII in any encoding
    reader = csv.reader(io.StringIO("".join(lines[skip:])), delimiter=delimiter)
    headers = [h.strip() for h in next(reader)]
    data = [dict(zip(headers, r)) for r in reader if any(c.strip() for c in r)]
    maybe_cut = encoding != "utf-8" and not settled(path) and cut_inside_character(path)
    return Sample(path, "csv", headers, data, encoding, delimiter, skip, encoding != detect_encoding(path), maybe_cut)


def _named_header(lines: list[str], skip: int) -> int:
    """The header's line: ``skip`` (:func:`header_line`'s, by the lines' shapes), or a line above it holding more
    of the known header names (:data:`SYNONYMS`, two at least): a header whose rows below are text only spans no
    less than they do (``Дата;Клиент;Сумма`` above ``вчера;Иван Петров;сто;примечание``), and the shapes alone
    take such a row for the header below a title."""
    def named(i: int) -> int:
        cells = next(csv.reader([lines[i]], delimiter=line_delimiter(lines[i])), [])
        return sum(any(_key(c) in keys for keys in _SYNONYM_KEYS.values()) for c in cells)
    best = max(range(skip + 1), key=lambda i: (named(i), i == skip))
    return best if named(best) >= 2 and named(best) > named(skip) else skip


def _xlsx_sample(path: Path, rows: int) -> Sample:
    from openpyxl import load_workbook

    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # a truncated or mis-named file: zip/XML errors
        raise BadFileError(f"{path}: cannot read as XLSX ({type(e).__name__})") from None
    try:
        it = default_sheet(wb).iter_rows(values_only=True)  # the sheet the reader reads
        head = [r for _, r in zip(range(XLSX_HEADER_SCAN), it)]
        at = _xlsx_header(head)
        headers = [_text(h) or "" for h in (head[at] if head else ())]
        below = itertools.chain(head[at + 1:], it)
        data = [{h: _text(v) for h, v in zip(headers, r)} for _, r in zip(range(rows), below)
                if any(v is not None and v != "" for v in r)]
    finally:
        wb.close()
    return Sample(path, "xlsx", headers, data)


def _xlsx_header(head: list[tuple]) -> int:
    """The header row among a sheet's first rows, as the reader finds it below a title (a merged «Отчёт» row): the
    one holding the most known header names (:data:`SYNONYMS`, two at least), else the first non-empty one."""
    def named(r: tuple) -> int:
        return sum(isinstance(c, str) and any(_key(c) in keys for keys in _SYNONYM_KEYS.values()) for c in r)
    best = max(range(len(head)), key=lambda i: (named(head[i]), -i), default=0)
    if head and named(head[best]) >= 2:
        return best
    return next((i for i, r in enumerate(head) if any(c is not None and c != "" for c in r)), 0)


def _text(v: object) -> str | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


def guess(sample: Sample) -> Guess:
    """The preset or the column mapping, and the file's settings, from the header and the sample."""
    g = Guess(sample)
    if sample.kind == "csv":
        g.settings["encoding"] = (
            ("auto", f"guessed: check ({sample.encoding}, or a UTF-8 copy cut short? auto decides again each run)")
            if sample.encoding_maybe_cut else
            (sample.encoding, "guessed: check" if sample.encoding_guessed else "detected"))
        g.settings["delimiter"] = ("tab" if sample.delimiter == "\t" else sample.delimiter, "detected")
    g.preset = _preset(sample.headers)
    if g.preset:
        cols = {f: h for f, h in PRESETS[g.preset].items() if h in sample.headers}
    else:
        cols = _columns(sample)
    mapped = set(cols.values())
    g.unmapped = [h for h in sample.headers if h and h not in mapped]
    headers = ", ".join(repr(h) for h in sample.headers)
    line = f" (the header taken from line {sample.skip + 1})" if sample.skip else ""
    if "ordered_at" not in cols or not ({"amount", "price"} & set(cols)):
        missing = [n for n, ok in (("the order date", "ordered_at" in cols),
                                   ("the order total", bool({"amount", "price"} & set(cols)))) if not ok]
        raise ConfigError(f"{sample.path}: cannot tell which column is {' nor '.join(missing)} from the headers "
                          f"{headers}{line}; map them under [source.columns] by hand (docs/sources/files.md)")
    if not g.preset:
        g.columns = {f: (h, "guessed: check") for f, h in cols.items()}
        if not ({"customer_id", "email", "phone"} & set(cols)):  # the file source needs one of them
            if "name" not in cols:
                raise ConfigError(f"{sample.path}: cannot tell which column identifies the customers (a customer "
                                  f"code, e-mail or phone) from the headers {headers}{line}; map one under "
                                  f"[source.columns] as customer_id, email or phone by hand (docs/sources/files.md)")
            g.columns = {("customer_id" if f == "name" else f): (h, NAMES_AS_IDS if f == "name" else note)
                         for f, (h, note) in g.columns.items()}
    _settings(g, cols)
    return g


#: the note of a name column mapped as the customer id (the file has no code, e-mail or phone column)
NAMES_AS_IDS = ("guessed: check (the names as customer ids, no code, e-mail or phone column found: namesakes are "
                "one customer)")


def _preset(headers: list[str]) -> str | None:
    """The built-in preset whose headers the file carries (its order date and total, and most of the rest)."""
    have = set(headers)
    best, share = None, 0.0
    for name, cols in PRESETS.items():
        needed = {cols["ordered_at"], cols.get("amount") or cols["price"], cols["order_id"]}
        if not needed <= have:
            continue
        s = len(set(cols.values()) & have) / len(set(cols.values()))
        if s > share:
            best, share = name, s
    return best if share >= 0.6 else None


def _columns(sample: Sample) -> dict[str, str]:
    """Field → header by synonyms, each header used once, the first synonym list that claims it wins."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for f, keys in _SYNONYM_KEYS.items():
        for h in sample.headers:
            if h not in used and _key(h) in keys:
                out[f], _ = h, used.add(h)
                break
    if "customer" in out:  # a code (C00401, 12345) is an id; words are a name
        h = out.pop("customer")
        values = [v.strip() for r in sample.rows if (v := r.get(h)) and v.strip()]
        as_id = values and sum(1 for v in values if " " not in v and any(c.isdigit() for c in v)) > len(values) / 2
        out.setdefault("customer_id" if as_id else "name", h)
    return out


def _settings(g: Guess, cols: dict[str, str]) -> None:
    rows = g.sample.rows
    amounts = [r.get(cols.get("amount") or cols.get("price")) for r in rows]
    if g.sample.kind == "csv":
        g.settings["decimal"] = (sniff_decimal(amounts), "guessed: check")
    if g.sample.skip:
        g.settings["skip_lines"] = (g.sample.skip, "detected: a title above the header")
    dates = [v for r in rows if (v := r.get(cols["ordered_at"])) and v.strip()]
    if dates and not _reads_all(dates, DATE_FORMATS):
        fmt = guess_format(dates)
        if fmt:
            g.settings["date_format"] = (fmt, "guessed: check")
    phones = [re.sub(r"\D", "", v) for r in rows if (v := r.get(cols.get("phone", ""))) and v.strip()]
    country = next(((region, tz) for code, region, tz in _COUNTRIES
                    if phones and sum(p.startswith(code) for p in phones) > len(phones) / 2), None)
    if country:
        g.settings["timezone"] = (country[1], "guessed from the phones: check")
        g.settings["phone_region"] = (country[0], "guessed from the phones: check")
    else:
        g.settings["timezone"] = ("UTC", "guessed: check (your shop's IANA time zone)")


def _reads_all(values: list[str], formats) -> bool:
    for v in values:
        v = v.strip()
        if not any(_parses(v, f) for f in formats) and not re.match(r"^\d{4}-\d\d-\d\d[T ]", v):
            return False
    return True


def _parses(v: str, fmt: str) -> bool:
    try:
        datetime.strptime(v, fmt)
        return True
    except ValueError:
        return False
