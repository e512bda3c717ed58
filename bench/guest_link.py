"""CPU seconds of link_staged on a large store (one phone-keyed guest order; one registered contact with a
phone), in a fresh process, of the tree on PYTHONPATH (guest32's harness).
usage: PYTHONPATH=. python bench/guest_link.py build PATH N GUESTS | link PATH order|contact [learned]"""
import sys, time
import duckdb
from connectors import identity
from connectors.tables import create_tables
from sync.store.lookup import ensure_lookup_indexes, lookup_by_key

def build(path, n, guests):
    con = duckdb.connect(path); create_tables(con)
    con.execute(f"INSERT INTO contacts (customer_id, email, phone, marketing_consent) SELECT 'C' || i, 'u' || i || "
                f"'@example.com', '+99890' || lpad(i::VARCHAR, 7, '0'), 'yes' FROM range({n}) t(i)")
    con.execute(f"INSERT INTO orders (order_id, customer_id, ordered_at, amount, status) SELECT 'O' || i, 'C' || i, "
                f"TIMESTAMPTZ '2025-01-01' + INTERVAL (i % 300) DAY, 100, 'completed' FROM range({n}) t(i)")
    if guests:  # guests keyed by their e-mail, with a phone of their own (none a customer's)
        con.execute(f"INSERT INTO contacts (customer_id, phone, marketing_consent) SELECT 'g' || i || '@example.com', "
                    f"'+99891' || lpad(i::VARCHAR, 7, '0'), 'unknown' FROM range({guests}) t(i)")
        con.execute(f"INSERT INTO orders (order_id, customer_id, ordered_at, amount, status) SELECT 'G' || i, "
                    f"'g' || i || '@example.com', TIMESTAMPTZ '2025-01-01' + INTERVAL (i % 300) DAY, 100, 'completed' "
                    f"FROM range({guests}) t(i)")
    ensure_lookup_indexes(con); con.close()

def link(path, kind):
    con = duckdb.connect(path); lookup_by_key(con)
    create_tables(con, prefix="staged_", temp=True)
    if kind == "order":
        con.execute("INSERT INTO staged_orders VALUES ('W1', '+998900004321', TIMESTAMPTZ '2025-06-01', 5, NULL, 'completed', NULL)")
    else:  # a customer registering with a guest's phone
        con.execute("INSERT INTO staged_contacts (customer_id, email, phone, marketing_consent) VALUES ('N1', 'n@x.com', '+998910004321', 'unknown')")
    con.execute("BEGIN")
    c0 = time.process_time()
    identity.link_staged(con, learned="identity_links" if len(sys.argv) > 4 else None)
    took = time.process_time() - c0
    con.execute("ROLLBACK"); con.close()
    print(f"{took:.3f}")

if __name__ == "__main__":
    if sys.argv[1] == "build": build(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else: link(sys.argv[2], sys.argv[3])
