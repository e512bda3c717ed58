"""The consent a saved plan's apply reads again (sync.planning.consent_now.recheck_consent) for a plan that subscribes
N new contacts, against an order store of N contacts (with N orders), 1 in 1000 of them withdrawn since the plan and
1 in 1000 sharing his address with another card saying no. Usage: python -m bench.consent_now N /tmp/store.duckdb"""

from __future__ import annotations

import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb

from bench.common import parse_size
from sync.config import Config
from sync.model import ContactChange
from sync.planning.consent_now import recheck_consent
from sync.planning.plan import Plan


def store(path: Path, n: int) -> None:
    if path.exists():
        path.unlink()
    from connectors.tables import create_tables

    con = duckdb.connect(str(path))
    create_tables(con)
    con.execute(f"""INSERT INTO contacts BY NAME SELECT 'C' || i AS customer_id, 'c' || i || '@x.io' AS email,
                    CASE WHEN i % 1000 = 0 THEN 'no' ELSE 'yes' END AS marketing_consent
                    FROM range({n}) t(i)""")
    con.execute(f"""INSERT INTO contacts BY NAME SELECT 'D' || i AS customer_id, 'c' || i || '@x.io' AS email,
                    'no' AS marketing_consent FROM range(1, {n}, 1000) t(i)""")
    con.execute(f"""INSERT INTO orders BY NAME SELECT 'O' || i AS order_id, 'D' || i AS customer_id,
                    TIMESTAMPTZ '2025-01-01 10:00:00+00' AS ordered_at, 'completed' AS status, 10 AS amount
                    FROM range(1, {n}, 1000) t(i)""")
    con.close()


def main(n: int, path: Path) -> None:
    store(path, n)
    cfg = Config.model_validate({"source": {"type": "file", "orders": "o.csv"}, "destinations": [
        {"name": "mc", "type": "mailchimp", "audience": "a1", "new_contacts": "transactional",
         "segments": {"Churn": "Winback"}}]})
    changes = tuple(ContactChange(f"c{i}@x.io", f"c{i}@x.io", f"C{i}", "Churn", True, "subscribed",
                                  frozenset({"Winback"})) for i in range(n))
    plan = Plan("mc", "mailchimp", changes, (), ("Winback",), {}, 0)
    wall, cpu = time.perf_counter(), time.process_time()
    plans, left = recheck_consent(cfg, [plan], path, date(2025, 6, 30))
    print(f"recheck of {n:,} subscribes: {time.perf_counter() - wall:.2f} s wall, "
          f"{time.process_time() - cpu:.2f} s CPU; left out {len(left[0].reasons) if left else 0:,}, "
          f"applied {len(plans[0].changes):,} ({datetime.now(timezone.utc):%H:%M} UTC)")


if __name__ == "__main__":
    main(parse_size(sys.argv[1]), Path(sys.argv[2]))
