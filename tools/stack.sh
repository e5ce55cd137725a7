#!/usr/bin/env bash
# tools/stack.sh NAME COMMAND — a private PostgreSQL cluster + nats-server (JetStream)
# + isa-httpd on loopback, kept under ./.isa/NAME/.  `make run` uses NAME=run, `make test`
# NAME=test; each NAME has its own ports, so a test run never touches the
# stack a developer is using.
#
#   start [--fresh]   start what is not running (--fresh: recreate database isa and
#                     empty the JetStream store: the stream's events go with the database)
#   stop              stop the servers (and the revoker)
#   status            exit 0 if all run
#   httpd-restart     restart isa-httpd (it reloads its routes on SIGHUP: httpd-reload)
#   httpd-reload      SIGHUP isa-httpd: routes and signing keys are read again
#   nats-stop         stop only nats-server (SIGTERM: it flushes its store)
#   nats-start        start nats-server again on the same port and store
#   revoker-stop      stop only isa-nats-revoker (revocations wait in the database)
#   revoker-start     start it again
#   pg-crash          stop PostgreSQL with -m immediate (no shutdown checkpoint: the
#                     next start does crash recovery), start it again and wait until
#                     it accepts connections
#   psql [ARGS]       psql on database isa
#   env               shell exports for clients (PGHOST, PGPORT, ISA_NATS_URL, the NATS
#                     credentials ISA_NATS_CREDS …)
#
# Ports (override with the environment): run: PG 55432, NATS 54222/monitor 58222,
# HTTP 58080; test: PG 25442, NATS 24232/28232, HTTP 28280; bench: PG 25472,
# NATS 24262/28262, HTTP 28290; any other NAME must set ISA_PG_PORT,
# ISA_NATS_PORT and ISA_NATS_MONITOR_PORT (and ISA_HTTP_PORT, else PG port + 3).
# MQTT (nats-server's listener, for devices): always the NATS port + 3000 (run
# 57222, test 27232, bench 27262; `env` exports it as ISA_MQTT_PORT, which is
# therefore no override: a stack a test starts from another's environment must
# not inherit its MQTT port); beside the monitor's +4000 and
# tools/nats-cluster.sh's routes +2000, it takes no port of the scheme.
#
# NATS runs in operator/JWT mode: keys, accounts and one credential per party
# (tools/nats-config.sh dev) in .isa/NAME/nats/, made at the first start and
# kept; no client gets in without one (docs/bridge.md, "Securing NATS").
# tools/isa-nats-revoker runs beside it: it revokes the NATS credentials of
# decommissioned devices in the account JWT (docs/services/device.md,
# "Revocation"), connected to the database as isa_nats_revoker.
#
# PostgreSQL refuses to run as root: as root, the cluster runs as the `postgres`
# user of Debian's package and its files are theirs.
set -euo pipefail

NAME=${1:?usage: tools/stack.sh NAME start|stop|status|nats-stop|nats-start|revoker-stop|revoker-start|pg-crash|psql|env}
CMD=${2:?usage: tools/stack.sh NAME start|stop|status|nats-stop|nats-start|revoker-stop|revoker-start|pg-crash|psql|env}
shift 2

ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$NAME" in
  run)  def_pg=55432; def_nats=54222; def_mon=58222; def_http=58080 ;;
  test) def_pg=25442; def_nats=24232; def_mon=28232; def_http=28280 ;;
  bench) def_pg=25472; def_nats=24262; def_mon=28262; def_http=28290 ;;
  *)    def_pg=; def_nats=; def_mon=; def_http= ;;
esac
PG_PORT=${ISA_PG_PORT:-$def_pg}
HTTP_PORT=${ISA_HTTP_PORT:-${def_http:-$((${PG_PORT:-0} + 3))}}
NATS_PORT=${ISA_NATS_PORT:-$def_nats}
NATS_MON_PORT=${ISA_NATS_MONITOR_PORT:-$def_mon}
MQTT_PORT=$((${NATS_PORT:-0} + 3000))
[ -n "$PG_PORT" ] && [ -n "$NATS_PORT" ] && [ -n "$NATS_MON_PORT" ] ||
  { echo "stack $NAME: set ISA_PG_PORT, ISA_NATS_PORT and ISA_NATS_MONITOR_PORT" >&2; exit 2; }
DB=isa

PGBIN=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
STACK=$ROOT/.isa/$NAME
PGDIR=$STACK/pg
NATSDIR=$STACK/nats
HTTPD_BIN=$ROOT/httpd/isa-httpd
HTTPD_PID=$STACK/httpd.pid
HTTPD_LOG=$STACK/httpd.log
REVOKER_BIN=$ROOT/tools/isa-nats-revoker
REVOKER_PID=$STACK/revoker.pid
REVOKER_LOG=$STACK/revoker.log

# As root, the cluster belongs to `postgres`, who must be able to reach it.
# When the checkout lives where `postgres` cannot enter (e.g. under /root),
# the cluster lives under /var/tmp and .isa/NAME/pg links to it.
if [ "$(id -u)" = 0 ]; then
  AS_PG=(runuser -u postgres --)
else
  AS_PG=()
fi

# run as the cluster's owner, from / (postgres may not enter the checkout)
pg() { (cd / && "${AS_PG[@]}" "$@"); }

prepare_pgdir() {
  mkdir -p "$STACK"
  [ -e "$PGDIR" ] && return 0
  if [ ${#AS_PG[@]} -gt 0 ] && ! runuser -u postgres -- test -x "$STACK"; then
    local away
    away=/var/tmp/isa-$(printf '%s' "$STACK" | md5sum | cut -c1-12)
    mkdir -p "$away"
    ln -s "$away" "$PGDIR"
  else
    mkdir -p "$PGDIR"
  fi
  [ ${#AS_PG[@]} -gt 0 ] && chown postgres: "$(readlink -f "$PGDIR")"
  PGDIR=$(readlink -f "$PGDIR")
  return 0
}
# postgres must never be handed a path through the link
[ -L "$PGDIR" ] && PGDIR=$(readlink -f "$PGDIR")

pg_running() { [ -f "$PGDIR/data/postmaster.pid" ] && pg "$PGBIN/pg_ctl" -D "$PGDIR/data" status >/dev/null 2>&1; }
# A pid file's process is ours only while it runs our program: a server that
# stopped leaves its pid behind, and another process may get that pid (a
# stale nats.pid once made a start believe NATS was running).
alive() { # PID WORD-OF-ITS-COMMAND-LINE
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}
nats_pid() { [ -f "$NATSDIR/nats.pid" ] && cat "$NATSDIR/nats.pid"; }
nats_running() { alive "$(nats_pid 2>/dev/null)" "$NATSDIR/nats.conf"; }

psql_db() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }

wait_port() { # host port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

start_pg() {
  prepare_pgdir
  bridge_credentials
  if [ ! -f "$PGDIR/data/PG_VERSION" ]; then
    pg "$PGBIN/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$STACK/initdb.log" 2>&1 ||
      { cat "$STACK/initdb.log" >&2; exit 1; }
    echo "include_if_exists = 'isa-stack.conf'" | pg tee -a "$PGDIR/data/postgresql.conf" >/dev/null
  fi
  dev_secrets
  pg mkdir -p "$PGDIR/socket"
  # the devices' scoped signing key (tools/nats-config.sh): device.nats_credentials
  local device_seed isa_account
  device_seed=$(cat "$NATSDIR/isa-device-signing.nk")
  isa_account=$("$ROOT/tools/isa-nats-keys" public "$NATSDIR/isa.nk")
  # Rewritten at every start so a changed port or setting takes effect.
  (umask 077 && pg tee "$PGDIR/data/isa-stack.conf" >/dev/null) <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGDIR/socket'
shared_preload_libraries = 'pg_cron,isa'
cron.database_name = '$DB'
isa.database = '$DB'
isa.nats_url = 'nats://127.0.0.1:$NATS_PORT'
isa.nats_creds_file = '$PGDIR/nats-bridge.creds'
isa.nats_inbox_prefix = '_INBOX.bridge'
isa.bridge_apply_groups = '${ISA_APPLY_GROUPS-billing;event,audit}'
isa.device_nats_signing_key = '$device_seed'
isa.device_nats_account = '$isa_account'
max_connections = 100
log_line_prefix = '%m [%p] %q%u@%d '
include_if_exists = 'isa-dev-secrets.conf'
CONF
  pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/postgresql.log" -w -t 60 start >/dev/null ||
    { tail -n 30 "$PGDIR/postgresql.log" >&2; exit 1; }
}

# Development values of the secrets a fresh stack would otherwise lack (the
# Stripe webhook and signed download URLs answer 503 without them), made
# once per cluster: random, in a 0600 file of the cluster's own, included by
# isa-stack.conf. ALTER SYSTEM still overrides them; ALTER SYSTEM RESET
# returns to them. Never for production: docs/configuration.md.
DEV_SECRETS=$PGDIR/data/isa-dev-secrets.conf
rand_hex() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
dev_secrets() {
  pg test -e "$DEV_SECRETS" && return 0
  (umask 077 && pg tee "$DEV_SECRETS" >/dev/null <<CONF)
# development secrets of stack '$NAME' (tools/stack.sh): never use them in production
isa.stripe_webhook_secret = 'whsec_dev_$(rand_hex)'
isa.storage_url_secret = 'dev-$(rand_hex)'
CONF
  pg chmod 600 "$DEV_SECRETS"
}

# The token GET /metrics of the stack's isa-httpd requires (0600, made once).
METRICS_TOKEN=$STACK/metrics.token
metrics_token() {
  [ -s "$METRICS_TOKEN" ] && return 0
  (umask 077 && rand_hex >"$METRICS_TOKEN")
}

# ---------------------------------------------------------------- NATS security
# Keys, accounts and each party's creds file (tools/nats-config.sh dev: made
# when absent, kept across restarts; shared with tools/nats-cluster.sh NAME).
# (once per command: start_pg and nats_config both need them)
NATS_CREDENTIALS_DONE=0
nats_credentials() {
  [ "$NATS_CREDENTIALS_DONE" = 1 ] && return 0
  [ -x "$ROOT/tools/isa-nats-keys" ] || { echo "tools/isa-nats-keys is not built: run 'make'" >&2; exit 1; }
  "$ROOT/tools/nats-config.sh" dev "$NATSDIR"
  NATS_CREDENTIALS_DONE=1
}

# The bridge's creds file, where the cluster's owner may read it (0600).
# Replaced in one rename, never rewritten in place: a bridge that restarts
# meanwhile (after a crash, while start_pg runs) must not read half a file.
bridge_credentials() {
  nats_credentials
  cmp -s "$NATSDIR/bridge.creds" "$PGDIR/nats-bridge.creds" 2>/dev/null && return 0
  pg sh -c "umask 077 && cat > '$PGDIR/nats-bridge.creds.new' && mv '$PGDIR/nats-bridge.creds.new' '$PGDIR/nats-bridge.creds'" <"$NATSDIR/bridge.creds"
}

# The server's configuration: operator/JWT mode, a resolver that keeps what it
# is given across restarts, the MQTT listener of the devices (it needs
# JetStream and a server_name; docs/services/device.md, "MQTT"); rewritten at
# every start so a changed port takes effect.
nats_config() {
  nats_credentials
  cat >"$NATSDIR/nats.conf" <<CONF
# generated by tools/stack.sh; edits are overwritten at the next start
server_name: isa_$NAME
listen: 127.0.0.1:$NATS_PORT
http: 127.0.0.1:$NATS_MON_PORT
pid_file: "$NATSDIR/nats.pid"
log_file: "$NATSDIR/nats.log"
jetstream { store_dir: "$NATSDIR/jetstream" }
mqtt { listen: 127.0.0.1:$MQTT_PORT }
resolver: { type: full, dir: "$NATSDIR/resolver" }
include "accounts.conf"
CONF
}

start_nats() {
  mkdir -p "$NATSDIR/jetstream"
  command -v nats-server >/dev/null || { echo "nats-server not found: run 'make deps'" >&2; exit 1; }
  nats_config
  # one file descriptor per client: devices over MQTT are many
  # (bench/device_presence connects 10,000); the hard limit, not the soft one
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  nohup nats-server -c "$NATSDIR/nats.conf" >/dev/null 2>&1 &
  wait_port 127.0.0.1 "$NATS_PORT" 20 || { echo "nats-server did not start; see $NATSDIR/nats.log" >&2; exit 1; }
}

stop_nats() {
  local p
  p=$(nats_pid)
  kill "$p"
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
}

# until psql gets an answer (seconds): after pg_ctl -w, a crash-restarted
# cluster may still refuse connections for a moment
wait_pg() {
  local i
  for ((i = 0; i < $1 * 10; i++)); do
    psql_db -d postgres -tAc 'SELECT 1' >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# The installed extension script, as a fingerprint: a database created from
# another one is out of date (the version number does not change during
# development, so CREATE EXTENSION IF NOT EXISTS would not notice).
script_sum() { cat "$(pg_config --sharedir 2>/dev/null || echo /usr/share/postgresql/15)"/extension/isa--*.sql 2>/dev/null | md5sum | cut -c1-32; }

create_db() {
  local fresh=$1 created=0
  if [ "$fresh" = 1 ]; then
    psql_db -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
  fi
  if [ -z "$(psql_db -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
    psql_db -d postgres -c "CREATE DATABASE $DB"
    created=1
  fi
  # A database of an older version is updated (ALTER EXTENSION isa UPDATE runs
  # the upgrade scripts); one made from other scripts of the same, unreleased
  # version cannot be, and is only reported (docs/architecture.md, "Versions
  # and upgrades").
  local have want
  have=$(psql_db -d "$DB" -tAc "SELECT extversion FROM pg_extension WHERE extname = 'isa'")
  want=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$ROOT/isa.control")
  if [ -n "$have" ] && [ "$have" != "$want" ]; then
    echo "database $DB has isa $have: updating it to $want (ALTER EXTENSION isa UPDATE)"
    psql_db -d "$DB" -c "SET client_min_messages = warning" -c "ALTER EXTENSION isa UPDATE" ||
      { echo "the update of database $DB failed; its data is untouched" >&2; exit 1; }
    script_sum > "$STACK/extension.sum"
  elif [ "$created" = 1 ]; then
    script_sum > "$STACK/extension.sum"
  elif [ "$(cat "$STACK/extension.sum" 2>/dev/null)" != "$(script_sum)" ]; then
    echo "warning: database $DB was created from other install scripts of isa $want (a version" >&2
    echo "         still in development); its functions and tables may not match this checkout." >&2
    echo "         To recreate it (its data is dropped): tools/stack.sh $NAME start --fresh" >&2
  fi
  psql_db -d "$DB" -o /dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS isa CASCADE;
CREATE EXTENSION IF NOT EXISTS pg_cron;
SELECT FROM isa.schedule_jobs();
SQL
}

httpd_pid() { [ -f "$HTTPD_PID" ] && cat "$HTTPD_PID"; }
httpd_running() { alive "$(httpd_pid 2>/dev/null)" isa-httpd; }

# isa-httpd connects as isa_httpd, a login member of isa_app and of
# isa_app_admin (its admin routes call administration functions; its route
# rules decide who reaches them), trust in these stacks, over the cluster's
# Unix socket as a front on the same host would; auth needs one signing key to
# issue tokens.
start_httpd() {
  [ -x "$HTTPD_BIN" ] || { echo "warning: $HTTPD_BIN is not built (make): no HTTP front" >&2; return 0; }
  # (in PL/pgSQL, so that a database made by an older checkout, without auth,
  # is not an error: isa-httpd then answers 503 until it is recreated)
  psql_db -d "$DB" -o /dev/null <<'SQL'
SET client_min_messages = warning;
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'isa_httpd') THEN
    CREATE ROLE isa_httpd LOGIN IN ROLE isa_app;
  END IF;
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'isa_app_admin')
     AND NOT pg_has_role('isa_httpd', 'isa_app_admin', 'MEMBER') THEN
    GRANT isa_app_admin TO isa_httpd;
  END IF;
  IF to_regclass('auth.signing_keys') IS NOT NULL THEN   -- planned only when it exists
    IF NOT EXISTS (SELECT FROM auth.signing_keys WHERE retired_at IS NULL) THEN
      PERFORM auth.rotate_signing_key();
    END IF;
  END IF;
END $$;
SQL
  metrics_token
  ISA_HTTPD_LISTEN=127.0.0.1 ISA_HTTPD_PORT=$HTTP_PORT ISA_HTTPD_METRICS_TOKEN_FILE=$METRICS_TOKEN \
  ISA_HTTPD_DATABASE_URL="host=$PGDIR/socket port=$PG_PORT dbname=$DB user=isa_httpd application_name=isa-httpd" \
  ISA_HTTPD_PUBLIC_URL="http://127.0.0.1:$HTTP_PORT" \
    nohup "$HTTPD_BIN" ${ISA_HTTPD_ARGS:-} >"$HTTPD_LOG" 2>&1 &
  echo $! >"$HTTPD_PID"
  local i
  for ((i = 0; i < 100; i++)); do
    curl -sf "http://127.0.0.1:$HTTP_PORT/live" >/dev/null 2>&1 && return 0
    kill -0 "$(httpd_pid)" 2>/dev/null || break
    sleep 0.1
  done
  echo "isa-httpd did not start; see $HTTPD_LOG" >&2
  tail -n 5 "$HTTPD_LOG" >&2
  exit 1
}

# SIGTERM to the process of a pid file, SIGKILL after 5 s, then the file goes
stop_pid_file() {
  local p
  p=$(cat "$1" 2>/dev/null) || return 0
  kill "$p" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  rm -f "$1"
}
stop_httpd() { stop_pid_file "$HTTPD_PID"; }

# The revoker (tools/isa-nats-revoker): the operator's side of revocation, with
# the operator's signing key and the system account's revoker.creds.  In the
# database, a login role that may call the revoker's two functions and nothing
# else (trust, over the socket); granted at every start: --fresh makes the
# database again.  It outlives nats-stop/nats-start and pg-crash: it
# connects again.
revoker_pid() { [ -f "$REVOKER_PID" ] && cat "$REVOKER_PID"; }
revoker_running() { alive "$(revoker_pid 2>/dev/null)" isa-nats-revoker; }

revoker_role() {
  psql_db -d "$DB" -o /dev/null <<'SQL'
SET client_min_messages = warning;
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'isa_nats_revoker') THEN
    CREATE ROLE isa_nats_revoker LOGIN;
  END IF;
  IF to_regprocedure('device.nats_revocations_pushed(text[])') IS NOT NULL THEN   -- not in an older database
    GRANT USAGE ON SCHEMA device TO isa_nats_revoker;
    GRANT EXECUTE ON FUNCTION device.nats_revocations(), device.nats_revocations_pushed(text[]) TO isa_nats_revoker;
  END IF;
END $$;
SQL
}

start_revoker() {
  [ -x "$REVOKER_BIN" ] || { echo "warning: $REVOKER_BIN is not built (make): decommissioned devices stay connected" >&2; return 0; }
  nats_credentials
  nohup "$REVOKER_BIN" --database "host=$PGDIR/socket port=$PG_PORT dbname=$DB user=isa_nats_revoker" \
    --nats "nats://127.0.0.1:$NATS_PORT" --creds "$NATSDIR/revoker.creds" --operator-jwt "$NATSDIR/operator.jwt" \
    --signing-key "$NATSDIR/operator-signing.nk" --account "$("$ROOT/tools/isa-nats-keys" public "$NATSDIR/isa.nk")" \
    >>"$REVOKER_LOG" 2>&1 &
  echo $! >"$REVOKER_PID"
  sleep 0.1
  revoker_running || { echo "isa-nats-revoker did not start; see $REVOKER_LOG" >&2; tail -n 5 "$REVOKER_LOG" >&2; exit 1; }
}

stop_revoker() { stop_pid_file "$REVOKER_PID"; }

# One process of the stack alone (nats-stop, revoker-start …): LABEL RUNNING STOP|START [WHERE]
stop_one() {
  "$2" || { echo "$1 of stack '$NAME' is not running." >&2; exit 1; }
  "$3"
  echo "$1 of stack '$NAME' stopped."
}
start_one() {
  "$2" && { echo "$1 of stack '$NAME' is already running."; exit 0; }
  "$3"
  echo "$1 of stack '$NAME' is running${4:-}."
}

print_info() {
  cat <<INFO
isa stack '$NAME' is running (files in .isa/$NAME):
  PostgreSQL  psql "postgresql://postgres@127.0.0.1:$PG_PORT/$DB"    (or: make psql)
  NATS        nats://127.0.0.1:$NATS_PORT  (JetStream; monitoring http://127.0.0.1:$NATS_MON_PORT)
  MQTT        mqtt://127.0.0.1:$MQTT_PORT  (devices: isa/devices/<id>/…, password = the JWT of
              POST /v1/device/nats-credentials; docs/services/device.md, "MQTT")
  HTTP        http://127.0.0.1:$HTTP_PORT  (isa-httpd: /openapi.json lists the routes; docs/http.md)
  metrics     curl -H "Authorization: Bearer \$(cat .isa/$NAME/metrics.token)" http://127.0.0.1:$HTTP_PORT/metrics
  secrets     $DEV_SECRETS (development values of isa.stripe_webhook_secret
              and isa.storage_url_secret, mode 0600)
  NATS credentials (operator/JWT mode: no client gets in without one), in .isa/$NAME/nats/:
              admin.creds       everything: administration, tools that forge events
              producer.creds    publish external.> (an external producer)
              model.creds       publish external.usage.recorded.model only (isA_Model)
              subscriber.creds  read only: subscribe to events, consumer "watch" of its own
              bridge.creds      the bridge's (isa.nats_creds_file); publishes the services' subjects
              a client passes its file as its credentials (nats CLI --creds FILE, nats.js
              credsAuthenticator, nats.c natsOptions_SetUserCredentialsFromFiles) and uses the
              inbox prefix it may subscribe to (_INBOX.producer, _INBOX.model, _INBOX.subscriber), e.g.
              node test/natsclient/isa-nats.mjs --creds .isa/$NAME/nats/subscriber.creds sub 'wallet_service.>' --consumer watch
              (eval "\$(tools/stack.sh $NAME env)" exports ISA_NATS_CREDS and the others)
  revoker     isa-nats-revoker: decommissioned devices' NATS credentials revoked in the
              account JWT (operator-signing.nk, revoker.creds); log .isa/$NAME/revoker.log
  logs        .isa/$NAME/pg/postgresql.log, .isa/$NAME/nats/nats.log, .isa/$NAME/httpd.log
  stop        make stop
INFO
}

case "$CMD" in
  start)
    fresh=0
    [ "${1:-}" = --fresh ] && fresh=1
    if pg_running && nats_running && httpd_running && { revoker_running || [ ! -x "$REVOKER_BIN" ]; } &&
       [ "$fresh" = 0 ]; then
      echo "isa stack '$NAME' is already running; nothing to do."
      create_db 0 >/dev/null
      revoker_role
      print_info
      exit 0
    fi
    pg_running || start_pg
    # --fresh drops the database's outboxes and inboxes: the stream's events go
    # with them, or a durable consumer of the new database would resume where
    # the old one stopped (its inbox no longer knows what was applied)
    if [ "$fresh" = 1 ]; then
      nats_running && stop_nats
      rm -rf "$NATSDIR/jetstream"
    fi
    nats_running || start_nats
    create_db "$fresh"
    # a database recreated under a running isa-httpd: it reconnects, but reload its routes
    if httpd_running; then kill -HUP "$(httpd_pid)"; else start_httpd; fi
    revoker_role
    revoker_running || start_revoker
    print_info
    ;;
  stop)
    stopped=0
    if revoker_running; then stop_revoker; stopped=1; fi
    if httpd_running; then stop_httpd; stopped=1; fi
    if pg_running; then pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null; stopped=1; fi
    if nats_running; then stop_nats; stopped=1; fi
    [ "$stopped" = 1 ] && echo "isa stack '$NAME' stopped." || echo "isa stack '$NAME' was not running."
    ;;
  status)
    pg_running && echo "postgresql: running on 127.0.0.1:$PG_PORT" || echo "postgresql: stopped"
    nats_running && echo "nats-server: running on 127.0.0.1:$NATS_PORT" || echo "nats-server: stopped"
    httpd_running && echo "isa-httpd: running on 127.0.0.1:$HTTP_PORT" || echo "isa-httpd: stopped"
    revoker_running && echo "isa-nats-revoker: running" || echo "isa-nats-revoker: stopped"
    pg_running && nats_running && httpd_running && { revoker_running || [ ! -x "$REVOKER_BIN" ]; }
    ;;
  httpd-restart)
    stop_httpd
    start_httpd
    echo "isa-httpd of stack '$NAME' is running on 127.0.0.1:$HTTP_PORT."
    ;;
  httpd-reload)
    httpd_running || { echo "isa-httpd of stack '$NAME' is not running." >&2; exit 1; }
    kill -HUP "$(httpd_pid)"
    ;;
  nats-stop) stop_one nats-server nats_running stop_nats ;;
  nats-start) start_one nats-server nats_running start_nats " on 127.0.0.1:$NATS_PORT" ;;
  revoker-stop) stop_one isa-nats-revoker revoker_running stop_revoker ;;
  revoker-start) start_one isa-nats-revoker revoker_running start_revoker ;;
  pg-crash)
    pg_running || { echo "PostgreSQL of stack '$NAME' is not running." >&2; exit 1; }
    pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >/dev/null
    start_pg
    wait_pg 60 || { echo "PostgreSQL of stack '$NAME' does not accept connections; see $PGDIR/postgresql.log" >&2; exit 1; }
    echo "PostgreSQL of stack '$NAME' crashed (-m immediate) and restarted on 127.0.0.1:$PG_PORT."
    ;;
  psql)
    exec "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$DB" "$@"
    ;;
  env)
    cat <<ENV
export PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=postgres PGDATABASE=$DB
export ISA_STACK_NAME='$NAME' ISA_STACK_DIR='$STACK' ISA_PGDATA='$PGDIR/data' ISA_PGBIN='$PGBIN'
export ISA_NATS_URL=nats://127.0.0.1:$NATS_PORT ISA_NATS_MONITOR=http://127.0.0.1:$NATS_MON_PORT
export ISA_MQTT_PORT=$MQTT_PORT
export ISA_HTTP_URL=http://127.0.0.1:$HTTP_PORT ISA_HTTPD_LOG='$HTTPD_LOG' ISA_METRICS_TOKEN_FILE='$METRICS_TOKEN'
export ISA_REVOKER_LOG='$REVOKER_LOG'
export ISA_NATS_CREDS='$NATSDIR/admin.creds' ISA_NATS_PRODUCER_CREDS='$NATSDIR/producer.creds'
export ISA_NATS_MODEL_CREDS='$NATSDIR/model.creds' ISA_NATS_SUBSCRIBER_CREDS='$NATSDIR/subscriber.creds'
export ISA_NATS_BRIDGE_CREDS='$NATSDIR/bridge.creds'
ENV
    ;;
  *)
    echo "unknown command '$CMD'" >&2
    exit 2
    ;;
esac
