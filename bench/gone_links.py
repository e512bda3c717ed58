"""cross32's harness: CPU seconds of link_staged with 1 M stored contacts (1 in 50 deleted in the CRM) and 20
guest orders keyed by stored customers' e-mails. usage: PYTHONPATH=. python bench/gone_links.py N"""
import sys, time, resource
import duckdb
from connectors.identity import link_staged
N = int(sys.argv[1])
con = duckdb.connect()
cols = "customer_id VARCHAR, email VARCHAR, phone VARCHAR, first_name VARCHAR, last_name VARCHAR, created_at TIMESTAMPTZ, attributes JSON, marketing_consent VARCHAR"
con.execute(f"CREATE TABLE contacts ({cols})")
con.execute(f"CREATE TABLE staged_contacts ({cols})")
con.execute("CREATE TABLE orders (order_id VARCHAR, customer_id VARCHAR)")
con.execute("CREATE TABLE staged_orders (order_id VARCHAR, customer_id VARCHAR)")
con.execute(f"""INSERT INTO contacts SELECT i::VARCHAR, 'c'||i||'@x.com', '+7701'||lpad(i::VARCHAR, 7, '0'), 'n', NULL, NULL,
   CASE WHEN i % 50 = 0 THEN '{{"deleted": "true"}}' ELSE '{{"k": "v"}}' END::JSON, 'yes' FROM range({N}) t(i)""")
con.execute("INSERT INTO orders SELECT i::VARCHAR, i::VARCHAR FROM range({N}) t(i)".format(N=N))
con.execute("CREATE TABLE identity_links (order_id VARCHAR PRIMARY KEY, identifier VARCHAR NOT NULL, customer_id VARCHAR NOT NULL, linked_at TIMESTAMPTZ NOT NULL DEFAULT now(), guest VARCHAR)")
# a batch: 20 guest orders keyed by e-mails of stored customers
con.execute("INSERT INTO staged_orders SELECT 'g'||i, 'c'||(i*7)||'@x.com' FROM range(20) t(i)")
con.execute("INSERT INTO staged_contacts (customer_id, email, marketing_consent) SELECT 'c'||(i*7)||'@x.com', 'c'||(i*7)||'@x.com', 'unknown' FROM range(20) t(i)")
con.execute("INSERT INTO staged_contacts (customer_id, marketing_consent, attributes) VALUES ('14', 'no', '{\"deleted\": \"true\"}')")
t0 = time.process_time()
r = link_staged(con, 5, learned="identity_links")
print(f"{time.process_time() - t0:.3f}", r.linked_rows, r.merged_customers)
