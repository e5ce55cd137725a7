#!/usr/bin/env bash
# tools/nats-config.sh — NATS in operator/JWT mode for isa: the keys, the
# accounts, each party's credential and permissions, and the server's
# configuration.  The one place that says who may publish and subscribe to
# what (docs/bridge.md, "Securing NATS"); keys and JWTs are minted by
# tools/isa-nats-keys (make builds it).
#
#   tools/nats-config.sh production DIR --database CONNINFO [--bridge NAME]
#         [--listen HOST:PORT] [--producer NAME=SUBJECT]... [--consumer NAME]...
#       Reads the catalogue of the database (isa.services, the isa.services and
#       isa.stream settings): the bridge of that database may publish the sources
#       of the services it runs.  Writes into DIR the keys (kept if there), the
#       server's configuration nats.conf, and one creds file per party: admin,
#       NAME (the bridge, default bridge; run once per database with another
#       NAME), producer, each --producer, subscriber.  Prints the bridge's settings.
#   tools/nats-config.sh dev DIR
#       The same for a development stack (tools/stack.sh, tools/nats-cluster.sh):
#       every source of the service map (sql/core/services.sql), streams
#       ISA_EVENTS, ISA_R3 (the cluster test's) and ISA_REPLAY, no database needed; writes
#       DIR/accounts.conf for the server configurations to include.
#
# Files are created mode 0600 and kept: a key is made only when absent, a
# credential again only when its permissions changed.  The parties:
#   admin       everything (operators, tests that forge events)
#   <bridge>    publish its services' subjects, the replays (replay.>) and the
#               devices' commands (isa.devices.*.commands, core NATS); the JetStream
#               API of the isa stream(s) it uses and ISA_REPLAY (stream info/create/update, its consumers,
#               pulls, acks); subscribe only to its inbox prefix _INBOX.<bridge>
#   producer    publish external.> only (any external producer); inbox _INBOX.producer
#   <producer>  one external producer, its own subject (model: external.usage.recorded.model)
#   subscriber  read only: subscribe to the event subjects and replay.>; stream info and
#               message get; create, use and delete only the consumers named
#               by --consumer (default watch); publish no event
#   revoker     (system account) tools/isa-nats-revoker: looks up the isa
#               account's JWT and pushes it again with the revocations of
#               decommissioned devices, signed by operator-signing.nk
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KEYS=$ROOT/tools/isa-nats-keys
MODE=${1:?usage: tools/nats-config.sh production|dev DIR [options]}
DIR=${2:?usage: tools/nats-config.sh production|dev DIR [options]}
shift 2

DATABASE=
BRIDGE=bridge
LISTEN=0.0.0.0:4222
PRODUCERS=(model=external.usage.recorded.model)
CONSUMERS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --database) DATABASE=$2; shift 2 ;;
    --bridge) BRIDGE=$2; shift 2 ;;
    --listen) LISTEN=$2; shift 2 ;;
    --producer) PRODUCERS+=("$2"); shift 2 ;;
    --consumer) CONSUMERS+=("$2"); shift 2 ;;
    *) echo "nats-config: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[ ${#CONSUMERS[@]} -gt 0 ] || CONSUMERS=(watch)
[[ "$BRIDGE" =~ ^[a-z][a-z0-9_-]*$ ]] || { echo "nats-config: --bridge NAME: lower-case letters, digits, _ and -" >&2; exit 2; }
[ -x "$KEYS" ] || { echo "nats-config: $KEYS is not built (make)" >&2; exit 1; }

umask 077
mkdir -p "$DIR"

# ---------------------------------------------------------------- the catalogue
case "$MODE" in
  dev)
    # the service map: every service with a schema publishes (isa.services = *)
    mapfile -t SOURCES < <(sed -n "s/^ *('[a-z_]*', *'[a-z_]*', *'\([a-z_]*\)'.*/\1/p" "$ROOT/sql/core/services.sql")
    ALL_SOURCES=("${SOURCES[@]}" external)
    STREAMS=(ISA_EVENTS ISA_R3 ISA_REPLAY)
    ;;
  production)
    [ -n "$DATABASE" ] || { echo "nats-config: production needs --database CONNINFO" >&2; exit 2; }
    q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DATABASE" -c "$1"; }
    mapfile -t SOURCES < <(q "SELECT source FROM isa.services
        WHERE schema_name IS NOT NULL
          AND (current_setting('isa.services') IN ('*', 'all')
               OR name = ANY (string_to_array(replace(current_setting('isa.services'), ' ', ''), ',')))
        ORDER BY source")
    mapfile -t ALL_SOURCES < <(q "SELECT source FROM isa.services ORDER BY source")
    mapfile -t STREAMS < <(q "SELECT current_setting('isa.stream')")
    STREAMS+=(ISA_REPLAY)   # the replays (docs/bridge.md, "Subject override")
    ;;
  *) echo "nats-config: unknown mode '$MODE' (production or dev)" >&2; exit 2 ;;
esac
[ ${#SOURCES[@]} -gt 0 ] || { echo "nats-config: no source to publish found in the catalogue" >&2; exit 1; }

# ---------------------------------------------------------------- keys
nkey() { # FILE KIND — a seed, made once
  [ -s "$DIR/$1" ] || "$KEYS" nkey "$2" >"$DIR/$1"
}
nkey operator.nk operator
nkey operator-signing.nk operator   # signs the isa account again with its revocations (isa-nats-revoker)
nkey sys.nk account
nkey isa.nk account
nkey isa-signing.nk account       # signs the users: the account's own key stays put
nkey isa-device-signing.nk account  # scoped: signs the devices' credentials (the database holds it)
OPERATOR=$("$KEYS" public "$DIR/operator.nk")
OPERATOR_SIGNING=$("$KEYS" public "$DIR/operator-signing.nk")
SYS=$("$KEYS" public "$DIR/sys.nk")
ISA=$("$KEYS" public "$DIR/isa.nk")
SIGNING=$("$KEYS" public "$DIR/isa-signing.nk")
DEVICE_SIGNING=$("$KEYS" public "$DIR/isa-device-signing.nk")

# A JWT or a creds file, made again only when what it says changed (the
# arguments are kept beside it in FILE.args).
mint() { # FILE ARGS…
  local file=$1 args
  shift
  args=$(printf '%s\n' "$@")
  if [ -s "$DIR/$file" ] && [ "$(cat "$DIR/$file.args" 2>/dev/null)" = "$args" ]; then return 0; fi
  "$KEYS" "$@" >"$DIR/$file.tmp"
  mv "$DIR/$file.tmp" "$DIR/$file"
  printf '%s\n' "$args" >"$DIR/$file.args"
}
mint operator.jwt operator "$DIR/operator.nk" --name isa --system-account "$SYS" --signing-key "$OPERATOR_SIGNING"
mint sys.jwt account "$DIR/operator.nk" "$SYS" --name SYS
# The devices' key is scoped: a user it signs (named by its device id, bearer:
# MQTT passes the JWT as its password) gets the template's permissions, its
# own device's topics only, whatever the database that minted it put in it
# (docs/services/device.md, "MQTT").  Devices subscribe at QoS 0 (commands
# are core NATS messages, delivered at QoS 0 anyway): no $MQTT.sub.>, where
# nats-server delivers every MQTT client's QoS 1 subscriptions and which any
# device could have read by name.  Made again (its arguments
# changed), it carries the revocations of the account JWT the server keeps in
# its resolver directory (isa-nats-revoker pushed them): a newer preload would
# replace that JWT at the server's next start.
mint isa.jwt account "$DIR/operator.nk" "$ISA" --name ISA --jetstream --signing-key "$SIGNING" \
  --scoped-key "$DEVICE_SIGNING" --scope-role device --scope-bearer \
  --scope-pub 'isa.devices.{{name()}}.acks' --scope-pub 'isa.devices.{{name()}}.heartbeat' \
  --scope-sub 'isa.devices.{{name()}}.commands' \
  --revocations-from "$DIR/resolver/$ISA.jwt"
# The revoker: a user of the system account that may only look up the isa
# account's JWT and push one (the operator's signing key signs it).
mint revoker.creds user "$DIR/sys.nk" --name revoker --pub "\$SYS.REQ.ACCOUNT.$ISA.CLAIMS.LOOKUP" \
  --pub '$SYS.REQ.CLAIMS.UPDATE' --sub '_INBOX.revoker.>'

user() { # PARTY ARGS… — PARTY.creds, signed by the account's signing key
  local party=$1
  shift
  mint "$party.creds" user "$DIR/isa-signing.nk" --account "$ISA" --name "$party" "$@"
}

# ---------------------------------------------------------------- the parties
user admin

args=()
for s in "${SOURCES[@]}"; do args+=(--pub "$s.>"); done
for st in "${STREAMS[@]}"; do
  args+=(--pub "\$JS.API.STREAM.INFO.$st" --pub "\$JS.API.STREAM.CREATE.$st" --pub "\$JS.API.STREAM.UPDATE.$st"
         --pub "\$JS.API.CONSUMER.INFO.$st.*" --pub "\$JS.API.CONSUMER.CREATE.$st.>"
         --pub "\$JS.API.CONSUMER.DURABLE.CREATE.$st.*" --pub "\$JS.API.CONSUMER.DELETE.$st.*"
         --pub "\$JS.API.CONSUMER.MSG.NEXT.$st.*" --pub "\$JS.ACK.$st.>")
done
# the device service's commands, sent as direct messages (docs/bridge.md, "Direct messages")
args+=(--pub 'isa.devices.*.commands')
# the event service's replays, into the stream ISA_REPLAY (docs/bridge.md, "Subject override")
args+=(--pub 'replay.>')
user "$BRIDGE" "${args[@]}" --sub "_INBOX.$BRIDGE.>"

user producer --pub 'external.>' --sub '_INBOX.producer.>'
for p in "${PRODUCERS[@]}"; do
  name=${p%%=*} subject=${p#*=}
  [[ "$name" =~ ^[a-z][a-z0-9_-]*$ && "$subject" == external.* ]] ||
    { echo "nats-config: --producer NAME=external.SUBJECT, not '$p'" >&2; exit 2; }
  user "$name" --pub "$subject" --sub "_INBOX.$name.>"
done

args=(--pub '$JS.API.INFO')
for st in "${STREAMS[@]}"; do
  args+=(--pub "\$JS.API.STREAM.INFO.$st" --pub "\$JS.API.STREAM.MSG.GET.$st")
  for c in "${CONSUMERS[@]}"; do
    # named in the subject: the server refuses a body naming another consumer
    args+=(--pub "\$JS.API.CONSUMER.CREATE.$st.$c" --pub "\$JS.API.CONSUMER.CREATE.$st.$c.>"
           --pub "\$JS.API.CONSUMER.DURABLE.CREATE.$st.$c" --pub "\$JS.API.CONSUMER.INFO.$st.$c"
           --pub "\$JS.API.CONSUMER.DELETE.$st.$c" --pub "\$JS.API.CONSUMER.MSG.NEXT.$st.$c"
           --pub "\$JS.ACK.$st.$c.>")
  done
done
for s in "${ALL_SOURCES[@]}"; do args+=(--sub "$s.>"); done
args+=(--sub 'replay.>')   # an outside consumer of a replay
user subscriber "${args[@]}" --sub '_INBOX.subscriber.>'

# ---------------------------------------------------------------- the server
# The trust of a server: the operator, the system account, the accounts; the
# resolver (type full, its directory in the server's own configuration) keeps
# what is pushed to it later across restarts.
cat >"$DIR/accounts.conf.tmp" <<CONF
# generated by tools/nats-config.sh; edits are overwritten
operator: "$DIR/operator.jwt"
system_account: $SYS
resolver_preload: {
  $SYS: $(cat "$DIR/sys.jwt")
  $ISA: $(cat "$DIR/isa.jwt")
}
CONF
mv "$DIR/accounts.conf.tmp" "$DIR/accounts.conf"

if [ "$MODE" = production ]; then
  cat >"$DIR/nats.conf" <<CONF
# generated by tools/nats-config.sh production: one server; for a cluster add
# server_name and a cluster block (docs/bridge.md, "Securing NATS")
listen: $LISTEN
jetstream { store_dir: "$DIR/jetstream" }
resolver: { type: full, dir: "$DIR/resolver" }
include "accounts.conf"
CONF
  cat <<INFO
NATS configuration written to $DIR (operator $OPERATOR, account ISA $ISA):
  nats-server -c $DIR/nats.conf
  bridge of this database: copy $DIR/$BRIDGE.creds where PostgreSQL reads it, then
      isa.nats_creds_file = '<that path>'
      isa.nats_inbox_prefix = '_INBOX.$BRIDGE'
  publishes: ${SOURCES[*]/%/.>}
  admin.creds (everything), producer.creds (external.>), $(for p in "${PRODUCERS[@]}"; do printf '%s.creds (%s), ' "${p%%=*}" "${p#*=}"; done)subscriber.creds (read only; consumers: ${CONSUMERS[*]})
  the device service mints with the scoped signing key isa-device-signing.nk (account $ISA):
      isa.device_nats_signing_key = '<its seed>'
      isa.device_nats_account = '$ISA'
  revocation of decommissioned devices' credentials (docs/services/device.md, "Revocation"),
  next to nats-server, not in the database: it holds the operator's signing key
      isa-nats-revoker --database 'CONNINFO (a role that may run device.nats_revocations*)' \\
          --nats nats://HOST:PORT \\
          --creds $DIR/revoker.creds --operator-jwt $DIR/operator.jwt \\
          --signing-key $DIR/operator-signing.nk --account $ISA
INFO
fi
