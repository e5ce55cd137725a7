# Fault injection on a three-node NATS cluster (tools/nats-cluster.sh): the
# test stack's bridge is pointed at the cluster with an R3 stream, and one
# node is SIGKILLed while 20k events flow.  The bridge fails over to another
# node, JetStream keeps the stream on the two left, and every event ends up in
# the R3 stream once and applied once.  The bridge's settings are restored and
# the cluster stopped at the end, whatever happens.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/faultlib.sh"

BATCHES=40 SIZE=500 KILL=2
N=$((BATCHES * SIZE))
# the cluster of this stack (its keys: the stack's credentials work there)
cluster() { "$root/tools/nats-cluster.sh" "${ISA_STACK_NAME:-test}" "$@"; }
URLS=$(cluster url)
F_STREAM=ISA_R3 F_SERVER=$URLS
F_PURGE=0   # the stream is deleted instead
# Reading 20k messages while the two nodes left settle can take longer than
# the single-server tests allow (CI once saw three 10 s reads time out).
F_COUNT_SECONDS=20
# The bridge makes every subscription's R3 consumer on a cluster that has just
# formed (each one a meta proposal and a Raft group): more than 15 s, once.
F_SUBSCRIBE_SECONDS=40

# Back to the stack's own nats-server: the settings reset, the R3 stream gone.
# Prints t once the bridge is connected there again.  If it is not within
# 20 s, the bridge is terminated (the postmaster starts a new one) so that
# later tests find a working bridge; the caller reports the failure.
restored=0
restore_single() {
  local got p
  [ "$restored" = 1 ] && return 0
  restored=1
  natsc stream-delete ISA_R3 --server "$URLS" --timeout-ms 5000 >/dev/null 2>&1
  sql "ALTER SYSTEM RESET isa.nats_url" >/dev/null
  sql "ALTER SYSTEM RESET isa.stream" >/dev/null
  sql "ALTER SYSTEM RESET isa.stream_replicas" >/dev/null
  sql "SELECT pg_reload_conf()" >/dev/null
  got=$(wait_for "SELECT connected AND server = '$ISA_NATS_URL' FROM isa.bridge_status()" t 20)
  if [ "$got" != t ]; then
    p=$(bridge_pid)
    [ -n "$p" ] && sql "SELECT pg_terminate_backend($p)" >/dev/null
    wait_new_bridge "$p" 30 >/dev/null
  fi
  printf '%s' "$got"
}
stop_cluster() { restore_single >/dev/null; cluster stop >/dev/null 2>&1; }
FAULT_CLEANUP_HOOK=stop_cluster
fault_init fault_cluster fault.cluster

# A fresh cluster for every run: no stream or meta state of an earlier one.
[ "$(cluster status | grep -c running)" = 0 ] && rm -rf "$root/.isa/${ISA_STACK_NAME:-test}/nats-cluster"
# A node's port can be taken for a moment by some client's ephemeral port
# (they share the kernel's ephemeral range): a second start retries what failed.
out=$(cluster start 2>&1) || out=$(cluster start 2>&1) || fatal "the three-node cluster starts" "$out"
_report ok "the three-node cluster starts ($(cluster status | tr '\n' ' '))"
# an earlier run's stream, if it left one
out=$(natsc stream-delete ISA_R3 --server "$URLS" --timeout-ms 10000 2>&1) || [[ $out =~ "stream not found" ]] ||
  fatal "no stream ISA_R3 is left from an earlier run" "$out"

sql "ALTER SYSTEM SET isa.nats_url = '$URLS'" >/dev/null
sql "ALTER SYSTEM SET isa.stream = 'ISA_R3'" >/dev/null
sql "ALTER SYSTEM SET isa.stream_replicas = 3" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
[ "$(wait_for "SELECT connected AND server = ANY (string_to_array('$URLS', ',')) FROM isa.bridge_status()" t 20)" = t ] ||
  fatal "the bridge reconnects to a node of the cluster"
_report ok "the bridge reconnects to a node of the cluster"
sleep 3
check "$(sql "SELECT connected FROM isa.bridge_status()")" t "and stays connected (3 s later)"
for ((i = 0; i < 100; i++)); do
  replicas=$(natsc stream-info --stream ISA_R3 --server "$URLS" --timeout-ms 1000 2>/dev/null | jq -r .config.num_replicas)
  [ "$replicas" = 3 ] && break
  sleep 0.2
done
[ "$replicas" = 3 ] || fatal "the bridge created stream ISA_R3 with 3 replicas" "got: '$replicas'"
_report ok "the bridge created stream ISA_R3 with 3 replicas"

fault_subscribe || fatal "the subscription runs on the cluster"
fault_start_producer "$BATCHES" "$SIZE" 0.2

if ! wait_produced 15 60; then
  _report fail "the producer reached batch 15 within 60 s" "$(tail -n 5 "$F_WORK/producer.log")"
fi
info=$(natsc stream-info --stream ISA_R3 --server "$URLS" --timeout-ms 2000 2>/dev/null)
cinfo=$(natsc consumer-info ISA_R3 "$F_DURABLE" --server "$URLS" --timeout-ms 2000 2>/dev/null)
note "killing n$KILL at $(elapsed), batch $(produced): stream leader $(jq -r .cluster.leader <<<"$info"), consumer leader $(jq -r .cluster.leader <<<"$cinfo"), bridge on $(sql "SELECT server FROM isa.bridge_status()"), backlog $(sql "SELECT outbox_backlog FROM isa.bridge_status()")"
ok "node $KILL is SIGKILLed mid-flow" cluster kill "$KILL"
check "$(wait_for "SELECT connected AND server <> '$(cut -d, -f"$KILL" <<<"$URLS")' FROM isa.bridge_status()" t 20)" t \
  "the bridge is connected to a node that is alive ($(sql "SELECT server FROM isa.bridge_status()"))"

fault_wait_producer 90
is "$(produced)" "$BATCHES" "all $BATCHES batch markers committed"
# The counts below ask the JetStream API: wait for the cluster to settle
# (n2 was the meta leader and the consumers' leader when CI saw them time out).
ok "the nodes left are healthy and have a meta leader ($(elapsed))" cluster ready
fault_assert_exact "$N"
is "$(natsc stream-info --stream ISA_R3 --server "$URLS" --timeout-ms 5000 2>/dev/null | jq -r .config.num_replicas)" 3 \
  "ISA_R3 is still an R3 stream"

# Unsubscribe while connected to the cluster, so the bridge deletes the consumer there.
fault_remove
check "$(wait_for "SELECT subscriptions FROM isa.bridge_status()" "$(sql "SELECT count(*) FROM isa.subscriptions")" 10)" \
  "$(sql "SELECT count(*) FROM isa.subscriptions")" "the bridge dropped the subscription"
restore_single >"$F_WORK/restored"
check "$(cat "$F_WORK/restored")" t "with its settings reset, the bridge is back on the stack's nats-server $ISA_NATS_URL within 20 s"
is "$(sql "SELECT count(*) FROM pg_settings WHERE name IN ('isa.nats_url', 'isa.stream', 'isa.stream_replicas') AND source <> 'configuration file' AND source <> 'default'")" 0 \
  "no isa.nats_url, isa.stream or isa.stream_replicas override is left"
note "done in $(elapsed)"

done_testing
