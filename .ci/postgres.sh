#!/usr/bin/env bash
# Provision a local PostgreSQL for the ledger tests; idempotent, no input, run as root.
#
#   eval "$(.ci/postgres.sh)"      # sets RFMSYNC_TEST_PG_URL
#
# Installs PostgreSQL with apt when no server binaries are present, creates/starts the
# Debian cluster (pg_ctlcluster; it listens on localhost), creates the role and database, checks a password login
# over TCP and prints ONE line on stdout:
#   export RFMSYNC_TEST_PG_URL=postgresql+psycopg://rfmsync:...@127.0.0.1:PORT/rfmsync_test
# Everything else goes to stderr. Overridable: RFMSYNC_PG_USER, RFMSYNC_PG_PASSWORD,
# RFMSYNC_PG_DB, RFMSYNC_PG_PORT (used only when a new cluster has to be created).
set -euo pipefail

PG_USER="${RFMSYNC_PG_USER:-rfmsync}"
PG_PASSWORD="${RFMSYNC_PG_PASSWORD:-rfmsync-ci}"   # a throwaway local test password
PG_DB="${RFMSYNC_PG_DB:-rfmsync_test}"
WANT_PORT="${RFMSYNC_PG_PORT:-5432}"
CLUSTER=main

log() { echo "postgres.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

provision() {
[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts the server as postgres)"
for name in "$PG_USER" "$PG_DB"; do
  [[ "$name" =~ ^[a-z_][a-z0-9_]*$ ]] || die "invalid PostgreSQL identifier: $name"
done
[[ "$PG_PASSWORD" != *"'"* ]] || die "RFMSYNC_PG_PASSWORD must not contain a single quote"

pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

if [ -z "$(pg_bindir)" ] || [ ! -x "$(pg_bindir)/postgres" ]; then
  log "PostgreSQL server not found: installing it with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q postgresql
fi
BINDIR="$(pg_bindir)"
[ -x "$BINDIR/postgres" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql after install"
VERSION="$(basename "$(dirname "$BINDIR")")"
log "using PostgreSQL $VERSION ($BINDIR)"

as_postgres() { runuser -u postgres -- "$@"; }

command -v pg_lsclusters >/dev/null 2>&1 || {
  log "postgresql-common (pg_lsclusters) missing: installing it with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q postgresql-common
}

# Debian's postgresql-common: one cluster per version, managed with pg_ctlcluster.
cluster_field() {  # cluster_field N -> column N of pg_lsclusters for $VERSION/$CLUSTER
  pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" -v n="$1" '$1 == v && $2 == c {print $n}'
}
if [ -z "$(cluster_field 2)" ]; then
  log "creating cluster $VERSION/$CLUSTER on port $WANT_PORT"
  pg_createcluster -p "$WANT_PORT" "$VERSION" "$CLUSTER" >&2
fi
PORT="$(cluster_field 3)"
if [ "$(cluster_field 4)" != "online" ]; then
  log "starting cluster $VERSION/$CLUSTER on port $PORT"
  pg_ctlcluster "$VERSION" "$CLUSTER" start >&2
else
  log "cluster $VERSION/$CLUSTER already running on port $PORT"
fi
SOCKDIR=/var/run/postgresql

for _ in $(seq 1 30); do
  "$BINDIR/pg_isready" -q -h "$SOCKDIR" -p "$PORT" && break
  sleep 1
done
"$BINDIR/pg_isready" -h "$SOCKDIR" -p "$PORT" >&2 || die "server on port $PORT is not accepting connections"

psql_admin() { as_postgres "$BINDIR/psql" -h "$SOCKDIR" -p "$PORT" -X -q -v ON_ERROR_STOP=1 "$@"; }

log "ensuring role $PG_USER and database $PG_DB"
psql_admin -d postgres <<SQL >&2
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD';
  ELSE
    ALTER ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD';
  END IF;
END
\$\$;
SQL
if [ "$(psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != "1" ]; then
  psql_admin -d postgres -c "CREATE DATABASE $PG_DB OWNER $PG_USER" >&2
fi
# a database that cannot hold every character: the ledger must refuse it (tests/test_ledger.py)
if [ "$(psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '${PG_DB}_latin1'")" != "1" ]; then
  psql_admin -d postgres -c "CREATE DATABASE ${PG_DB}_latin1 OWNER $PG_USER ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" >&2
fi

# The tests log in over TCP with the password: prove that works before handing out the URL.
PGPASSWORD="$PG_PASSWORD" "$BINDIR/psql" -h 127.0.0.1 -p "$PORT" -U "$PG_USER" -d "$PG_DB" -X -tAc "SELECT 1" >/dev/null \
  || die "password login as $PG_USER on 127.0.0.1:$PORT failed (check pg_hba.conf)"
log "ready: $PG_USER@127.0.0.1:$PORT/$PG_DB"
}

# Everything provision() and its children print goes to stderr. No descriptor of the real
# stdout is left open for the server we start to inherit (bash keeps its saved copy
# close-on-exec), so `$(.ci/postgres.sh)` returns as soon as this script exits.
provision >&2
echo "export RFMSYNC_TEST_PG_URL=postgresql+psycopg://$PG_USER:$PG_PASSWORD@127.0.0.1:$PORT/$PG_DB"
