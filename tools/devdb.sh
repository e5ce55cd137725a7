#!/usr/bin/env bash
# tools/devdb.sh DB SERVICE... — a scratch database for developing services in
# parallel: drops and creates DB on the PostgreSQL of the current environment
# (eval "$(tools/stack.sh NAME env)" first), creates the installed extension
# (built with ISA_SERVICES= so that it holds no service), pgtap, then loads
# sql/SERVICE/SERVICE.sql for each SERVICE in the order given, as the extension would.
# Then: pg_prove -d DB test/pgtap/SERVICE/SERVICE.sql
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DB=${1:?usage: tools/devdb.sh DB SERVICE...}; shift
psql -X -q -d postgres -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" \
  -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
psql -X -q -d "$DB" -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" \
  -c "CREATE EXTENSION isa CASCADE" -c "CREATE EXTENSION pgtap"
for s in "$@"; do
  sed "s|MODULE_PATHNAME|\$libdir/isa|g" "$ROOT/sql/$s/$s.sql" |
    psql -X -q -d "$DB" -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" -f - >/dev/null ||
    { echo "devdb: loading sql/$s/$s.sql failed" >&2; exit 1; }
done
echo "devdb: $DB ready with: ${*:-no service}"
