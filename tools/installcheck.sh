#!/usr/bin/env bash
# tools/installcheck.sh — `make installcheck`: the pgTAP files that need no NATS,
# run with pg_prove against the isa that is installed (make install, or the
# Debian package) on a throw-away PostgreSQL cluster made by pg_virtualenv
# (package postgresql-common), with isa and pg_cron preloaded.  The cluster and
# its files are removed when the check ends, whatever happens.
#
# The cluster runs as `postgres` (pg_virtualenv -t does that when run as root;
# initdb refuses root) in a directory under /tmp, on the first free port of
# 29410-29419 (ISA_INSTALLCHECK_PORT chooses another).  Nothing here reads the
# checkout but test/pgtap/, and pg_prove reads it as the caller.
#
#   tools/installcheck.sh            every file of test/pgtap/ but those below
#   tools/installcheck.sh FILE...    only these
#
# In a Debian build (tools/debian/rules), ISA_INSTALLCHECK_PACKAGE names the
# package whose files, still in debian/PACKAGE/, are tested instead of the
# installed ones (pg_virtualenv -p: Debian's extension_destdir).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
[ -x "$PG_CONFIG" ] || PG_CONFIG=$(command -v pg_config) || { echo "installcheck: pg_config not found" >&2; exit 2; }
PG_MAJOR=$("$PG_CONFIG" --version | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')
SHAREDIR=$("$PG_CONFIG" --sharedir)

# The files that need a NATS server, with the reason; every other file of
# test/pgtap/ runs.  None today: the pgTAP files test the SQL surface in one
# transaction each and never wait for the bridge (core/bridge.sql checks only
# that the worker runs, and its status and metrics, which hold unconnected).
# What needs NATS is in test/integration/.  A new file runs by default: add it
# here, with the reason, only if it waits for something done over NATS.
NEEDS_NATS=(
)

# The settings of the stacks (tools/stack.sh) without NATS: the bridge is
# switched off, so the worker runs (core/bridge.sql checks it) but never
# connects, and nothing it would do over NATS can race a test.
SETTINGS=(
  "shared_preload_libraries=pg_cron,isa"
  "cron.database_name=isa"
  "isa.database=isa"
  "isa.bridge_enabled=off"
  "isa.nats_url=nats://127.0.0.1:1"
)

inside() {   # in the environment pg_virtualenv made (PGHOST, PGPORT, PGUSER, PGPASSWORD)
  export PGDATABASE=isa
  psql -X -q -v ON_ERROR_STOP=1 -d postgres -c 'CREATE DATABASE isa'
  psql -X -q -v ON_ERROR_STOP=1 -o /dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION isa CASCADE;
CREATE EXTENSION pg_cron;
SELECT FROM isa.schedule_jobs();
CREATE EXTENSION pgtap;
SQL
  # The bridge starts when it sees the extension (it looks every 5 s).
  local i
  for ((i = 0; i < 150; i++)); do
    [ "$(psql -X -A -t -c 'SELECT running FROM isa.bridge_status()')" = t ] && break
    sleep 0.1
  done
  # error: the warnings some files provoke on purpose (an event ignored) are not news
  PGOPTIONS='-c client_min_messages=error' pg_prove --failures --ext .sql "$@"
}

if [ "${1:-}" = --inside ]; then
  shift
  inside "$@"
  exit
fi

for need in pg_virtualenv pg_prove; do
  command -v "$need" >/dev/null ||
    { echo "installcheck: $need not found (packages postgresql-common, libtap-parser-sourcehandler-pgtap-perl)" >&2; exit 2; }
done
cd "$ROOT"
pkg=${ISA_INSTALLCHECK_PACKAGE:-}
for ext in isa pgtap pg_cron; do
  [ -f "$SHAREDIR/extension/$ext.control" ] || [ -f "debian/$pkg$SHAREDIR/extension/$ext.control" ] ||
    { echo "installcheck: extension $ext is not installed in $SHAREDIR (make install; packages postgresql-$PG_MAJOR-pgtap, postgresql-$PG_MAJOR-cron)" >&2; exit 2; }
done

if [ $# -gt 0 ]; then
  files=()
  for f in "$@"; do [[ $f = /* ]] || f=$OLDPWD/$f; files+=("$f"); done
else
  files=()
  for f in test/pgtap/*/*.sql; do
    skip=
    for n in "${NEEDS_NATS[@]}"; do [ "$f" = "$n" ] && skip=1; done
    [ -z "$skip" ] && files+=("$f")
  done
fi

port=${ISA_INSTALLCHECK_PORT:-}
if [ -z "$port" ]; then
  for p in $(seq 29410 29419); do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { port=$p; break; }
  done
  [ -n "$port" ] || { echo "installcheck: no free port in 29410-29419" >&2; exit 2; }
fi

opts=()
for s in "${SETTINGS[@]}"; do opts+=(-o "$s"); done
[ -n "$pkg" ] && opts+=(-p "$pkg")
# -t: a cluster of its own under /tmp even as root (not /etc/postgresql/);
# UTF-8 as tools/stack.sh makes it, whatever the caller's locale: in a shell
# without LANG the cluster would be SQL_ASCII, where the tests' non-ASCII
# names and JSON cannot go
PGPORT=$port exec pg_virtualenv -t -v "$PG_MAJOR" -i "--encoding=UTF8 --locale=C.UTF-8" "${opts[@]}" \
  "$ROOT/tools/installcheck.sh" --inside "${files[@]}"
