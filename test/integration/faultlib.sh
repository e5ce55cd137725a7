# test/integration/faultlib.sh — what the fault-injection tests (6x-fault-*.sh)
# share.  Sourced after lib.sh; not a test itself (run picks [0-9]*.sh only).
#
# A test calls `fault_init SCHEMA EVENT_TYPE`, which registers EVENT_TYPE for
# audit_service (subject audit_service.EVENT_TYPE, unique to the test) and
# builds SCHEMA:
#   produced (batch int PRIMARY KEY)   the producer's marker, one per committed batch
#   applied  (event_id uuid, ...)      what the handler did — no unique constraint,
#                                      so a double application shows as a surplus row
#   apply(e isa.event)                 the handler, subscribed by audit
# then produces with `fault_produce` in the background, breaks something, and
# asserts with `fault_assert_exact N` that every one of the N events was
# published once and applied once.  `fault_cleanup` (on EXIT) removes all of it.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# isa-nats.mjs, bounded: some of its calls can wait forever (`count` whose
# ordered consumer landed on a dead cluster node, seen in 63-fault-cluster).
natsc() { timeout 20 node "$root/test/natsclient/isa-nats.mjs" "$@"; }

# stream_count SUBJECT [SECONDS]: "TOTAL UNIQUE" on F_STREAM.  A read that
# fails or hangs (an election after a node died) is retried, for 60 s at most;
# one attempt may take F_COUNT_SECONDS.
F_COUNT_SECONDS=10
stream_count() {
  local got deadline=$((SECONDS + ${2:-60}))
  while :; do
    got=$(timeout "$F_COUNT_SECONDS" node "$root/test/natsclient/isa-nats.mjs" count "$1" --stream "$F_STREAM" \
      --server "$F_SERVER" --timeout-ms 3000 2>&1)
    [[ $got =~ ^[0-9]+\ [0-9]+$ ]] || [ "$SECONDS" -ge "$deadline" ] && break
    echo "count failed (retrying): ${got:-timed out after $F_COUNT_SECONDS s}" >>"$F_WORK/count.log"
    sleep 1
  done
  printf '%s' "${got:-count timed out}"
}

# The stream and servers the counts read (63-fault-cluster points them at its cluster).
F_STREAM=ISA_EVENTS
F_SERVER=$ISA_NATS_URL
F_PURGE=1        # purge the test's subject from F_STREAM before and after
F_APPLY_PAUSE=0  # seconds the handler sleeps on every 100th event (a slower consumer)
F_PRODUCER=
F_T0=$(date +%s)

# seconds since the test started, for the diagnostics
elapsed() { echo "$(($(date +%s) - F_T0)) s"; }


# The bridge's state and its last log lines, as TAP comments (after a failure).
fault_diag() {
  {
    echo "bridge_status: $(sql "SELECT row_to_json(b) FROM isa.bridge_status() b" 2>&1)"
    local p
    p=$(bridge_pid)
    [ -n "$p" ] && echo "TCP connections of the bridge (pid $p): $(ss -tnpH 2>/dev/null | grep "pid=$p," | awk '{printf "%s %s -> %s; ", $1, $4, $5}')"
    echo "last bridge lines of $ISA_STACK_DIR/pg/postgresql.log:"
    grep -E 'isa bridge|terminated by signal|server process|database system' "$ISA_STACK_DIR/pg/postgresql.log" 2>/dev/null | tail -n 8
  } | sed 's/^/#   /'
}

# check GOT WANT DESCRIPTION: `is`, plus fault_diag when it fails
check() {
  local before=$_failed
  is "$@"
  [ "$_failed" = "$before" ] || fault_diag
}

# fatal DESCRIPTION [DIAGNOSTICS]: a failure the rest of the test cannot go on
# after (no bridge, no cluster): reported with the bridge's state, then exit.
fatal() {
  _report fail "$1" "${2:-}"
  fault_diag
  note "giving up: the rest of the test depends on this"
  done_testing
  exit 1
}

# Purges the test's subject from the stream (leftovers of an earlier run; the
# store outlives `make test`'s fresh database).  isa-nats.mjs has no purge.
nats_purge() { # SUBJECT
  (cd "$root/test/natsclient" && timeout 20 node --input-type=module -e '
    import { connect, credsAuthenticator } from "nats";
    import { readFileSync } from "node:fs";
    const [stream, servers, filter, creds] = process.argv.slice(1);
    const auth = creds ? { authenticator: credsAuthenticator(readFileSync(creds)) } : {};
    const nc = await connect({ servers: servers.split(","), timeout: 5000, ...auth });
    try {
      const jsm = await nc.jetstreamManager({ timeout: 5000 });
      await jsm.streams.purge(stream, { filter });
    } catch (e) {
      if (!/stream not found/.test(e.message)) { console.error(e.message); process.exitCode = 1; }
    } finally { await nc.close(); }' "$F_STREAM" "$F_SERVER" "$1" "${ISA_NATS_CREDS:-}")
}

fault_init() { # SCHEMA EVENT_TYPE
  F_SCHEMA=$1
  F_TYPE=$2
  F_SUBJECT=audit_service.$2
  F_WORK=$(mktemp -d /tmp/isa-fault.XXXXXX)
  trap fault_cleanup EXIT
  fault_remove >/dev/null 2>&1   # what a failed earlier run may have left
  if [ "$F_PURGE" = 1 ]; then nats_purge "$F_SUBJECT" || note "could not purge $F_SUBJECT from $F_STREAM"; fi

  # Messages a killed bridge held come back after ack_wait, not 30 s later.
  sql "ALTER SYSTEM SET isa.ack_wait = '3s'" >/dev/null
  sql "SELECT pg_reload_conf()" >/dev/null
  sql "SET client_min_messages = warning;
       SELECT isa.register_event_type('$F_TYPE', 'audit_service', '1.0.0', 'fault-injection test event');
       CREATE SCHEMA $F_SCHEMA;
       CREATE TABLE $F_SCHEMA.produced (batch int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());
       CREATE TABLE $F_SCHEMA.applied (event_id uuid, batch int, i int, at timestamptz NOT NULL DEFAULT clock_timestamp());
       CREATE FUNCTION $F_SCHEMA.apply(e isa.event) RETURNS void LANGUAGE sql
         AS \$\$ SELECT pg_sleep($F_APPLY_PAUSE) WHERE $F_APPLY_PAUSE > 0 AND (e.data->>'i')::int % 100 = 0;
                 INSERT INTO $F_SCHEMA.applied (event_id, batch, i)
                 VALUES (e.id, (e.data->>'batch')::int, (e.data->>'i')::int) \$\$;
       -- the handler runs as audit's role
       GRANT USAGE ON SCHEMA $F_SCHEMA TO isa_svc_audit;
       GRANT INSERT ON $F_SCHEMA.applied TO isa_svc_audit;" >/dev/null
}

# Subscribes the handler and waits (F_SUBSCRIBE_SECONDS) until the bridge
# has made its consumer.
F_SUBSCRIBE_SECONDS=15
fault_subscribe() {
  local n
  sql "SELECT isa.subscribe_to_events('audit', '$F_SUBJECT', '$F_SCHEMA.apply(isa.event)')" >/dev/null
  F_DURABLE=$(sql "SELECT durable_name FROM isa.subscriptions WHERE subject_filter = '$F_SUBJECT'")
  n=$(sql "SELECT count(*) FROM isa.subscriptions")
  check "$(wait_for "SELECT subscriptions FROM isa.bridge_status()" "$n" "$F_SUBSCRIBE_SECONDS")" "$n" \
    "the bridge runs the subscription on $F_SUBJECT"
  for ((i = 0; i < 100; i++)); do
    natsc consumer-info "$F_STREAM" "$F_DURABLE" --server "$F_SERVER" --timeout-ms 1000 >/dev/null 2>&1 && break
    sleep 0.1
  done
  local before=$_failed
  ok "its durable consumer $F_DURABLE exists on $F_STREAM" \
    natsc consumer-info "$F_STREAM" "$F_DURABLE" --server "$F_SERVER" --timeout-ms 2000
  [ "$_failed" = "$before" ]
}

# fault_produce BATCHES SIZE PAUSE — run in the background.  Batch b commits
# SIZE events and the marker b in one transaction.  When a batch fails (the
# connection dropped, the server is restarting) the producer waits for the
# server and re-runs the batch only if its marker is absent.  Exits 1 if the
# server stays away for 120 s or a batch fails 20 times.
fault_produce() {
  local batches=$1 size=$2 pause=$3 b i tries out
  for ((b = 1; b <= batches; b++)); do
    tries=0
    until out=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -c "BEGIN;
          SELECT count(isa.publish_event('$F_TYPE', 'audit_service', jsonb_build_object('batch', $b, 'i', i)))
            FROM generate_series(1, $size) i;
          INSERT INTO $F_SCHEMA.produced (batch) VALUES ($b);
          COMMIT;" 2>&1); do
      tries=$((tries + 1))
      echo "batch $b failed: $(printf '%s' "$out" | tr '\n' ' ' | cut -c1-200)"
      [ "$tries" -ge 20 ] && { echo "producer: batch $b failed $tries times; giving up"; return 1; }
      for ((i = 0; i < 1200; i++)); do
        sql "SELECT 1" >/dev/null 2>&1 && break
        sleep 0.1
      done
      [ "$i" -lt 1200 ] || { echo "producer: the server did not come back within 120 s"; return 1; }
      if [ "$(sql "SELECT count(*) FROM $F_SCHEMA.produced WHERE batch = $b" 2>/dev/null)" = 1 ]; then
        echo "batch $b had committed: not re-run"
        break
      fi
      echo "batch $b had not committed: re-run"
    done
    sleep "$pause"
  done
  echo "producer: done"
}

fault_start_producer() { # BATCHES SIZE PAUSE
  fault_produce "$@" >"$F_WORK/producer.log" 2>&1 &
  F_PRODUCER=$!
}

# Prints how many batches have committed (empty while the server is away).
produced() { sql "SELECT count(*) FROM $F_SCHEMA.produced" 2>/dev/null; }

# wait_produced N SECONDS: until at least N batches have committed; false on timeout.
wait_produced() {
  local i n
  for ((i = 0; i < $2 * 10; i++)); do
    n=$(produced) && [ -n "$n" ] && [ "$n" -ge "$1" ] && return 0
    sleep 0.1
  done
  return 1
}

# Waits (bounded) for the producer and asserts that it finished.
fault_wait_producer() { # SECONDS
  local i
  for ((i = 0; i < $1 * 10; i++)); do
    kill -0 "$F_PRODUCER" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$F_PRODUCER" 2>/dev/null; then
    kill "$F_PRODUCER" 2>/dev/null
    _report fail "the producer finished within $1 s" "$(tail -n 5 "$F_WORK/producer.log")"
  else
    wait "$F_PRODUCER"
    local rc=$?
    if [ "$rc" = 0 ]; then _report ok "the producer finished ($(elapsed))"; else
      _report fail "the producer finished" "$(tail -n 5 "$F_WORK/producer.log")"; fi
  fi
  F_PRODUCER=
  local failed committed rerun
  failed=$(grep -c 'failed:' "$F_WORK/producer.log")
  committed=$(grep -c 'had committed' "$F_WORK/producer.log")
  rerun=$(grep -c 'had not committed' "$F_WORK/producer.log")
  note "producer: $failed failed attempts; afterwards $committed batches were found committed, $rerun re-run"
}

# Events committed but not yet applied (empty while the server is away).
in_flight() {
  sql "SELECT (SELECT count(*) FROM isa.outbox WHERE event_type = '$F_TYPE')
            - (SELECT count(*) FROM $F_SCHEMA.applied)" 2>/dev/null
}

# wait_in_flight SECONDS: until the bridge has work in hand (committed events
# not yet applied); prints their number, false if there was none in time.
wait_in_flight() {
  local i n
  for ((i = 0; i < $1 * 10; i++)); do
    n=$(in_flight)
    [ -n "$n" ] && [ "$n" -gt 0 ] && { echo "$n"; return 0; }
    sleep 0.1
  done
  echo 0
  return 1
}

bridge_pid() { sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'isa bridge'" 2>/dev/null; }

# Waits until a bridge other than OLD_PID runs and is connected to NATS; prints its pid.
wait_new_bridge() { # OLD_PID SECONDS
  local i p
  for ((i = 0; i < $2 * 10; i++)); do
    p=$(bridge_pid)
    if [ -n "$p" ] && [ "$p" != "$1" ] && [ "$(sql "SELECT connected FROM isa.bridge_status()" 2>/dev/null)" = t ]; then
      echo "$p"
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# wait_progress QUERY WANT STALL MAX: polls QUERY (a count) until it prints
# WANT; gives up when the value has not changed for STALL seconds or after
# MAX seconds.  Prints the last value.
wait_progress() {
  local q=$1 want=$2 got last= since=$SECONDS end=$((SECONDS + $4))
  while :; do
    got=$(sql "$q" 2>/dev/null)
    [ "$got" = "$want" ] && break
    [ "$got" != "$last" ] && { last=$got; since=$SECONDS; }
    [ $((SECONDS - since)) -ge "$3" ] || [ "$SECONDS" -ge "$end" ] && break
    sleep 0.2
  done
  printf '%s' "$got"
}

# Every one of N events was published once and applied once.
fault_assert_exact() { # N
  local n=$1 got i info wait=60 before=$_failed
  check "$(wait_progress "SELECT outbox_backlog FROM isa.bridge_status()" 0 20 60)" 0 \
    "the outbox backlog reaches 0 ($(elapsed))"
  [ "$_failed" = "$before" ] || wait=6   # stuck: count what there is, without more long waits
  is "$(sql "SELECT count(*), count(DISTINCT id) FROM isa.outbox WHERE event_type = '$F_TYPE'")" "$n|$n" \
    "the outbox holds exactly $n events of $F_TYPE: no batch committed twice, none lost"
  got=$(stream_count "$F_SUBJECT" $((wait * 2 / 3)))
  check "$got" "$n $n" "stream $F_STREAM holds exactly $n messages on $F_SUBJECT with $n distinct Nats-Msg-Ids"
  [ -s "$F_WORK/count.log" ] && note "isa-nats.mjs count needed $(($(wc -l <"$F_WORK/count.log") + 1)) attempts:" "$(cat "$F_WORK/count.log")"

  # (LEAST: a surplus ends the wait too)
  wait_progress "SELECT least(count(*), $n) FROM $F_SCHEMA.applied" "$n" 20 "$wait" >/dev/null
  check "$(sql "SELECT count(*) FROM $F_SCHEMA.applied")" "$n" "the handler applied $n events ($(elapsed))"
  # Let whatever is still in flight come back (ack_wait is 3 s), then count again.
  local deadline=$((SECONDS + wait / 3))
  while :; do
    info=$(natsc consumer-info "$F_STREAM" "$F_DURABLE" --server "$F_SERVER" --timeout-ms 2000 2>/dev/null |
      jq -r '"\(.num_pending) \(.num_ack_pending) \(.delivered.consumer_seq)"' 2>/dev/null)
    [ "${info% *}" = "0 0" ] || [ "$SECONDS" -ge "$deadline" ] && break
    sleep 0.2
  done
  check "${info% *}" "0 0" "consumer $F_DURABLE has nothing pending and nothing unacknowledged"
  note "consumer $F_DURABLE made ${info##* } deliveries for $n events: $((${info##* } - n)) redeliveries, which the inbox absorbed"
  sleep 4
  is "$(sql "SELECT count(*), count(DISTINCT event_id), count(DISTINCT (batch, i)) FROM $F_SCHEMA.applied")" "$n|$n|$n" \
    "applied has exactly $n rows, $n distinct event ids, $n distinct (batch, i): nothing applied twice"
  is "$(sql "SELECT count(*) FROM isa.outbox o WHERE o.event_type = '$F_TYPE'
               AND NOT EXISTS (SELECT 1 FROM $F_SCHEMA.applied a WHERE a.event_id = o.id)")" 0 \
    "every event of the outbox was applied: zero loss"
  is "$(sql "SELECT count(*) FROM isa.inbox WHERE service = 'audit' AND consumer = '$F_DURABLE'")" "$n" \
    "the inbox has exactly $n rows for consumer $F_DURABLE"
  is "$(sql "SELECT count(*) FROM isa.dead_letters WHERE consumer = '$F_DURABLE'")" 0 "and no dead letter"
}

# Removes the subscription, schema, rows and event type (quietly; for leftovers too).
fault_remove() {
  sql "SELECT isa.unsubscribe_from_events(service, subject_filter, handler)
         FROM isa.subscriptions WHERE subject_filter = '$F_SUBJECT'" >/dev/null
  sql "SET client_min_messages = warning;
       DROP SCHEMA IF EXISTS $F_SCHEMA CASCADE;
       DELETE FROM isa.inbox WHERE event_type = '$F_TYPE';
       DELETE FROM isa.outbox WHERE event_type = '$F_TYPE';
       DELETE FROM isa.event_types WHERE event_type = '$F_TYPE'" >/dev/null
}

fault_cleanup() {
  local rc=$?
  if [ -n "$F_PRODUCER" ]; then kill "$F_PRODUCER" 2>/dev/null; wait "$F_PRODUCER" 2>/dev/null; fi
  # The server may be coming back from the last fault.
  for ((i = 0; i < 300; i++)); do sql "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
  fault_remove
  [ -n "${FAULT_CLEANUP_HOOK:-}" ] && $FAULT_CLEANUP_HOOK
  sql "ALTER SYSTEM RESET isa.ack_wait" >/dev/null
  sql "SELECT pg_reload_conf()" >/dev/null
  [ "$F_PURGE" = 1 ] && nats_purge "$F_SUBJECT" >/dev/null 2>&1
  rm -rf "$F_WORK"
  return $rc
}
