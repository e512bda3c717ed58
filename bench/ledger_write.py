"""What the ledger's write of an apply's pushed states costs a row, for the table as it is and for other layouts.

Issue 17 §2 wants the ledger's writes of a full apply at ≤ 10 % of the apply; at 1 M contacts the apply's writer
thread spends ~7 µs of CPU a row (``bench/sync.py``), ~2.9 µs would be needed. This bench measures, on SQLite
(the default ledger), the upsert of ``--rows`` pushed states in groups of ``--group`` (one transaction each, as
the apply's writer commits them), an insert pass (a first sync) and then an update of every row (each contact
moved to another segment), as thread CPU µs a row:

* ``product``: :meth:`sync.ledger.Ledger.save_states` on a fresh ledger file (the code as it is);
* the same upsert written out in SQL (one JSON document per group, ``json_each``, as ``save_states`` does) on
  other layouts of ``pushed_state``: the destination as a small integer id, ``WITHOUT ROWID``, no secondary index
  on (destination, customer_id), no foreign key on ``run_id``, 16 KiB pages, and all of these at once;
* other ways to ship the rows: ``executemany`` into a temporary table and one ``INSERT … SELECT`` from it
  (``temp``); the fields' text given ready-made (``pretext``: what a fields text made by the plan would save);
  ``jsonb_each`` instead of ``json_each`` (SQLite 3.45 and later: each row comes as a JSONB blob, which ``->>``
  reads without parsing text again).

``--sqlite pysqlite3`` runs the SQL variants on ``pysqlite3-binary``'s newer SQLite (not an rfmsync dependency;
the ``product`` line is left out then, the ledger uses the standard library's).

``--key-order``, as ``bench/sync.py``'s: ``ordered`` (default) gives contact *i* the id ``C000000i`` and the address
``customer000000i@example.com`` (both in the ledger's index order); ``random`` derives both from an md5 of *i*, as
real addresses are. The rows come in the plan's order, sorted by key: with random keys their customer ids are in
no order, so each group lands all over ``ix_pushed_state_customer``.

A second table compares ways the apply's writer could commit (``--only strategies`` runs it alone), each written
with the product's own statements (``Ledger.save_states``): groups of ``--group`` (as the apply writes them),
fewer, larger transactions (``--big-group`` rows each), the customer index on ``customer_id`` alone (without the
``destination`` prefix: a smaller index), no customer index at all (what it costs), and an append-only outbox
(each group appended to an unindexed table in its own transaction, folded into ``pushed_state`` in one
transaction sorted by key at the end), with its two halves.

    python bench/ledger_write.py --rows 1m
    python bench/ledger_write.py --rows 1m --key-order random --only strategies
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import random
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if sys.path[0] != str(ROOT):  # first, even when PYTHONPATH names it: bench/sync.py must not hide the package
    sys.path.insert(0, str(ROOT))

from bench.common import format_table, parse_size  # noqa: E402

DESTINATION = "bench-mailchimp"
SEGMENTS = ("Champions", "Loyal", "Promising", "At risk", "Hibernating")
TAGS = {"Champions": ("rfm-champion",), "At risk": ("rfm-at-risk",)}
NOW = "2026-12-04 20:00:00.000000"
UPDATED = ("tags", "fields", "in_destination", "pushed_at", "run_id", "revision")

DRIVER: Any = sqlite3  # --sqlite
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False).encode


@dataclass(frozen=True)
class Layout:
    """A variant: the table's shape and how a group of rows is shipped to SQLite."""

    name: str
    dest_id: bool = False  # (dest_id INTEGER, key) instead of (destination VARCHAR, key)
    rowid: bool = True  # False: WITHOUT ROWID
    index: bool = True  # the (destination, customer_id) index
    fk: bool = True  # run_id REFERENCES runs (checked on every row: foreign_keys is on)
    page_size: int = 4096
    ship: str = "json"  # json | temp | pretext | jsonb | jsonb pretext


LAYOUTS = (
    Layout("sql, as it is"),
    Layout("destination id", dest_id=True),
    Layout("destination id, WITHOUT ROWID", dest_id=True, rowid=False),
    Layout("no customer index", index=False),
    Layout("no foreign key", fk=False),
    Layout("16 KiB pages", page_size=16384),
    Layout("smallest: id, WITHOUT ROWID, no index, no FK", dest_id=True, rowid=False, index=False, fk=False),
    Layout("temp table (executemany)", ship="temp"),
    Layout("fields text ready-made", ship="pretext"),
    Layout("jsonb_each (SQLite ≥ 3.45)", ship="jsonb"),
    Layout("jsonb_each, fields text ready-made", ship="jsonb pretext"),
)


PARTS = {"encode": "encoding the JSON document (Python)", "unpack": "json_each and ->> (SQLite, no write)",
         "upsert": "the upsert from a temp table (B-trees, WAL)"}


def contact(i: int, key_order: str) -> tuple[str, str]:
    """Contact ``i``'s address and customer id, as ``bench/sync.py``'s ``KEY_ORDERS`` spell them (DuckDB's
    ``md5('e' || i)`` is Python's md5 of the same text)."""
    if key_order == "random":
        return (hashlib.md5(b"e%d" % i).hexdigest()[:16] + "@example.com",
                "C" + hashlib.md5(b"c%d" % i).hexdigest()[:14])
    return f"customer{i:07d}@example.com", f"C{i:07d}"


def make_rows(n: int, moved: int, seed: int = 7, key_order: str = "ordered"
              ) -> list[tuple[str, str, tuple[str, ...], dict[str, Any], bool]]:
    """``n`` pushed states shaped like ``bench/sync.py``'s (segment, RFM code and monetary as fields), contact *i*
    keyed per ``key_order``, in the plan's order (its changes are sorted by key: with random keys, the customer
    ids are then in no order); ``moved`` shifts every contact to another segment (the update pass)."""
    rnd = random.Random(seed + moved)
    out = []
    for i in range(n):
        segment = SEGMENTS[(i + moved) % len(SEGMENTS)]
        fields = {"Monetary": round(100 + rnd.random() * 20_000, 2),
                  "Rfm": f"{1 + i % 5}{1 + (i // 5) % 5}{1 + (i // 25) % 5}", "Segment": segment}
        out.append((*contact(i, key_order), TAGS.get(segment, ()), fields, True))
    return sorted(out) if key_order == "random" else out  # the plan's order: its changes come sorted by key


def create(con: sqlite3.Connection, v: Layout) -> None:
    con.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind VARCHAR(50))")
    con.execute("INSERT INTO runs (kind) VALUES ('sync')")
    dest = "dest_id INTEGER NOT NULL" if v.dest_id else "destination VARCHAR(200) NOT NULL"
    dcol = "dest_id" if v.dest_id else "destination"
    fk = " REFERENCES runs (id) ON DELETE SET NULL" if v.fk else ""
    con.execute(f"CREATE TABLE pushed_state ({dest}, key VARCHAR(320) NOT NULL, customer_id VARCHAR(200),"
                " tags TEXT NOT NULL, fields TEXT NOT NULL, in_destination BOOLEAN NOT NULL,"
                f" pushed_at DATETIME NOT NULL, run_id INTEGER{fk}, revision INTEGER NOT NULL DEFAULT 0,"
                f" PRIMARY KEY ({dcol}, key)){'' if v.rowid else ' WITHOUT ROWID'}")
    if v.index:
        con.execute(f"CREATE INDEX ix_pushed_state_customer ON pushed_state ({dcol}, customer_id)")
    con.execute("CREATE TEMP TABLE rows (key TEXT, customer_id TEXT, tags TEXT, fields TEXT, in_destination INT)")


def write_group(cur: sqlite3.Cursor, v: Layout, group: list[Any], revision: int) -> None:
    """One transaction's upsert of ``group`` (the rows of :func:`make_rows`, tags already as their JSON text
    and, for ``pretext``, fields too), the new rows and the rows whose customer is unchanged (as save_states)."""
    dcol, dval = ("dest_id", 1) if v.dest_id else ("destination", DESTINATION)
    if v.ship == "temp":
        cur.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?)",
                        [(k, c, t, _encode(f), e) for k, c, t, f, e in group])
        source, params = "SELECT ?, key, customer_id, tags, fields, in_destination, ?, ?, ? FROM rows WHERE true", \
            (dval, NOW, 1, revision)
    else:
        fields = "->>" if "pretext" in v.ship else "->"
        each = "jsonb_each" if "jsonb" in v.ship else "json_each"  # jsonb: each row a blob, not text parsed again
        source = (f"SELECT ?, r.value ->> 0, r.value ->> 1, r.value ->> 2, r.value {fields} 3, r.value ->> 4,"
                  f" ?, ?, ? FROM {each}(?) AS r WHERE true")
        params = (dval, NOW, 1, revision, _encode(group))
    cur.execute(f"INSERT INTO pushed_state ({dcol}, key, customer_id, tags, fields, in_destination, pushed_at,"
                f" run_id, revision) {source} ON CONFLICT ({dcol}, key) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in UPDATED)
                + " WHERE pushed_state.customer_id IS excluded.customer_id", params)
    if v.ship == "temp":
        cur.execute("DELETE FROM rows")


def run_sql(v: Layout, passes: list[list[Any]], group: int, folder: Path) -> list[float]:
    path = folder / "layout.db"
    con = DRIVER.connect(str(path), isolation_level=None)
    con.execute(f"PRAGMA page_size = {v.page_size}")
    for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "foreign_keys = ON"):
        con.execute(f"PRAGMA {pragma}")
    create(con, v)
    cur = con.cursor()
    tags_json: dict[tuple[str, ...], str] = {}
    per_row = []
    for revision, rows in enumerate(passes, 1):
        if "pretext" in v.ship:  # the fields' text comes ready-made: not this writer's CPU
            rows = [(k, c, t, _encode(f), e) for k, c, t, f, e in rows]
        c0 = time.thread_time()
        for start in range(0, len(rows), group):
            chunk = []
            for k, c, t, f, e in rows[start:start + group]:  # what save_states hands SQLite (its row building)
                tags = tags_json.get(t) or tags_json.setdefault(t, _encode(sorted(t)))
                chunk.append((k, c, tags, f, e))
            cur.execute("BEGIN IMMEDIATE")
            write_group(cur, v, chunk, revision)
            cur.execute("COMMIT")
        per_row.append((time.thread_time() - c0) / len(rows) * 1e6)
    assert con.execute("SELECT count(*) FROM pushed_state").fetchone()[0] == len(passes[0])
    con.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return per_row


def parts(rows: list[Any], group: int, folder: Path) -> dict[str, float]:
    """The insert pass of the upsert as it is, in three parts (thread CPU µs a row): encoding each group's
    JSON document in Python, SQLite unpacking it (``json_each`` and the ``->>`` of each column, nothing
    written), and the upsert itself from a temporary table holding the same rows."""
    con = DRIVER.connect(str(folder / "parts.db"), isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "foreign_keys = ON"):
        con.execute(f"PRAGMA {pragma}")
    create(con, Layout("parts"))
    spent = {"encode": 0.0, "unpack": 0.0, "upsert": 0.0}
    unpack = ("SELECT sum(length(r.value ->> 0) + length(r.value ->> 1) + length(r.value ->> 2)"
              " + length(r.value -> 3) + (r.value ->> 4)) FROM json_each(?) AS r")
    for start in range(0, len(rows), group):
        chunk = [(k, c, _encode(sorted(t)), f, e) for k, c, t, f, e in rows[start:start + group]]
        c0 = time.thread_time()
        doc = _encode(chunk)
        c1 = time.thread_time()
        con.execute(unpack, (doc,)).fetchone()
        c2 = time.thread_time()
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?)",
                        [(k, c, t, _encode(f), e) for k, c, t, f, e in chunk])
        c3 = time.thread_time()
        write_group(con.cursor(), Layout("parts", ship="temp"), [], 1)  # the rows are in the temp table already
        con.execute("COMMIT")
        spent["encode"] += c1 - c0
        spent["unpack"] += c2 - c1
        spent["upsert"] += time.thread_time() - c3
    con.close()
    return {name: seconds / len(rows) * 1e6 for name, seconds in spent.items()}


def run_product(passes: list[list[Any]], group: int, folder: Path, *, customer_index: str = "as it is",
                outbox: bool = False) -> list[float]:
    """``Ledger.save_states`` in groups of ``group`` (the states carry the plan's text of their fields, as an
    apply's do), thread CPU µs a row of each pass. ``customer_index``:
    ``customer_id``: the index on that column alone instead of (destination, customer_id); ``none``: no customer
    index (what it costs: a webhook resync's keyed read needs it). ``outbox``: each group
    appended to an unindexed table instead (the product's multi-row ``VALUES``, one transaction each), all of them
    folded into ``pushed_state`` at the end of the pass in one transaction, sorted by key (the page cache of a
    large group); each pass gives three figures then: its total, the appends and the fold."""
    from sync.ledger import Ledger
    from sync.ledger.state_rows import fields_json
    from sync.model import PushedState

    path = folder / "ledger.db"
    ledger = Ledger.connect(f"sqlite:///{path}")
    con = sqlite3.connect(str(path), isolation_level=None)
    try:
        run_id = ledger.start_run("sync", DESTINATION)
        if customer_index != "as it is":
            con.execute("DROP INDEX ix_pushed_state_customer")
        if customer_index == "customer_id":
            con.execute("CREATE INDEX ix_pushed_state_customer ON pushed_state (customer_id)")
        if outbox:
            _outbox(ledger, con)
        per_row = []
        for rows in passes:
            # with the plan's text of the fields, as the apply hands them (made before the clock starts)
            states = [PushedState(k, c, frozenset(t), f, e, fields_json(f)) for k, c, t, f, e in rows]
            c0 = time.thread_time()
            for start in range(0, len(states), group):
                ledger.save_states(DESTINATION, run_id, states[start:start + group])
            c1 = time.thread_time()
            if outbox:
                ledger.fold_outbox()
            per_row.append((time.thread_time() - c0) / len(states) * 1e6)
            if outbox:
                per_row += [(c1 - c0) / len(states) * 1e6, (time.thread_time() - c1) / len(states) * 1e6]
        assert con.execute("SELECT count(*) FROM pushed_state").fetchone()[0] == len(passes[0])
    finally:
        con.close()
        ledger.close()
    return per_row


_COLUMNS = "destination, key, customer_id, tags, fields, in_destination, pushed_at, run_id, revision, subscribed"


def _outbox(ledger: Any, con: sqlite3.Connection) -> None:
    """Turns this ``ledger``'s ``save_states`` into appends to an unindexed ``pushed_outbox`` table (the product's
    statements aimed at it) and gives it ``fold_outbox``: the pending rows into ``pushed_state``, sorted by key,
    in one transaction with the large group's page cache, then deleted (a sketch: nothing here reads them)."""
    from sync.ledger import state_rows

    con.execute(f"CREATE TABLE pushed_outbox ({_COLUMNS})")
    upsert = state_rows._upsert_sql

    def append(rows: int) -> tuple[str, str]:
        same, _ = upsert(rows)
        return same.split(" ON CONFLICT")[0].replace("INSERT INTO pushed_state", "INSERT INTO pushed_outbox"), ""

    def fold() -> None:
        updated = ", ".join(f"{c} = excluded.{c}" for c in state_rows._STATE_UPDATE_COLUMNS)
        with ledger.state._db.write() as conn:
            cur = conn.connection.driver_connection.cursor()
            cur.execute(f"PRAGMA cache_size = {-state_rows.GROUP_CACHE_KIB}")
            cur.execute(f"INSERT INTO pushed_state ({_COLUMNS}) SELECT {_COLUMNS} FROM pushed_outbox WHERE true"
                        f" ORDER BY destination, key ON CONFLICT (destination, key) DO UPDATE SET {updated}")
            cur.execute("DELETE FROM pushed_outbox")
            cur.execute("PRAGMA cache_size = -2000")

    state_rows._upsert_sql = append  # the appends: every row is "new" (rowcount == rows: no second statement)
    ledger.fold_outbox = fold


STRATEGIES = (("product: groups of --group", {}), ("fewer, larger transactions: groups of --big-group", {"big": True}),
              ("customer index on customer_id alone", {"customer_index": "customer_id"}),
              ("no customer index (its cost; the resync needs one)", {"customer_index": "none"}),
              ("outbox: appends, one sorted fold at the end", {"outbox": True}))


def strategies(passes: list[list[Any]], group: int, big: int, folder: Path) -> list[dict[str, str]]:
    from sync.ledger import state_rows

    table = []
    for i, (name, options) in enumerate(STRATEGIES):
        sub = folder / f"s{i}"
        sub.mkdir()
        upsert = state_rows._upsert_sql
        try:
            got = run_product(passes, big if options.get("big") else group, sub,
                              **{k: v for k, v in options.items() if k != "big"})
        finally:
            state_rows._upsert_sql = upsert
        if len(got) == 6:  # the outbox: its halves
            table.append({"strategy": name, "insert": f"{got[0]:.2f}", "update": f"{got[3]:.2f}",
                          "halves (append + fold)": f"{got[1]:.2f} + {got[2]:.2f} / {got[4]:.2f} + {got[5]:.2f}"})
        else:
            table.append({"strategy": name, "insert": f"{got[0]:.2f}", "update": f"{got[1]:.2f}",
                          "halves (append + fold)": "-"})
        print(f"  {name}: {table[-1]['insert']} / {table[-1]['update']}", file=sys.stderr, flush=True)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="200k", help="pushed states written (default 200k)")
    parser.add_argument("--group", default="25k", help="rows a transaction (default 25k)")
    parser.add_argument("--sqlite", default="sqlite3", choices=("sqlite3", "pysqlite3"),
                        help="the SQL variants' driver (default: the standard library's sqlite3)")
    parser.add_argument("--key-order", choices=("ordered", "random"), default="ordered",
                        help="ordered (default: ids and addresses in the ledger's index order) or random "
                             "(both derived from a hash, as real addresses are)")
    parser.add_argument("--big-group", default="200k", help="rows a transaction of the larger-transactions "
                                                             "strategy (default 200k)")
    parser.add_argument("--only", choices=("layouts", "strategies"), default=None,
                        help="run only the layouts' table or only the writer strategies' (default: both)")
    args = parser.parse_args(argv)
    global DRIVER
    DRIVER = importlib.import_module("pysqlite3.dbapi2") if args.sqlite == "pysqlite3" else sqlite3
    n, group = parse_size(args.rows), parse_size(args.group)
    passes = [make_rows(n, 0, key_order=args.key_order), make_rows(n, 1, key_order=args.key_order)]
    print(f"SQLite {DRIVER.sqlite_version} ({args.sqlite}), {n:,} rows in groups of {group:,}, keys {args.key_order}:"
          " thread CPU µs a row", flush=True)
    table = []
    with tempfile.TemporaryDirectory(prefix="rfmsync-ledger-write-") as tmp:
        if args.only != "layouts" and DRIVER is sqlite3:
            folder = Path(tmp) / "strategies"
            folder.mkdir()
            rows = strategies(passes, group, parse_size(args.big_group), folder)
            print(format_table(rows, [(c, c) for c in rows[0]]), flush=True)
        if args.only == "strategies":
            return 0
        if DRIVER is sqlite3:
            product = run_product(passes, group, Path(tmp))
            table.append({"layout": "product: Ledger.save_states", "insert": f"{product[0]:.2f}",
                          "update": f"{product[1]:.2f}", "× as it is": "-"})
        base: list[float] = []
        for i, v in enumerate(LAYOUTS):
            if "jsonb" in v.ship and DRIVER.sqlite_version_info < (3, 45):
                continue
            folder = Path(tmp) / str(i)
            folder.mkdir()
            ins, upd = run_sql(v, passes, group, folder)
            base = base or [ins, upd]
            table.append({"layout": v.name, "insert": f"{ins:.2f}", "update": f"{upd:.2f}",
                          "× as it is": f"{(ins + upd) / sum(base):.2f}×"})
            print(f"  {v.name}: {ins:.2f} / {upd:.2f}", file=sys.stderr, flush=True)
        folder = Path(tmp) / "parts"
        folder.mkdir()
        for name, us in parts(passes[0], group, folder).items():
            table.append({"layout": f"as it is, part: {PARTS[name]}", "insert": f"{us:.2f}", "update": "-",
                          "× as it is": "-"})
    print(format_table(table, [(c, c) for c in table[0]]))
    print("(a schema change had to reach ≤ 0.60×: 40 % less CPU a row)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
