# Fault injection: PostgreSQL stopped with -m immediate (no shutdown
# checkpoint: the restart does crash recovery) twice while 30k events flow, at
# moments when committed events wait to be published or applied.  What committed survives; what the
# bridge had published but not marked is republished under the same
# Nats-Msg-Id; what it had applied but not acked comes back and meets the
# inbox.  Zero loss, zero double application.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/faultlib.sh"

BATCHES=30 SIZE=1000
N=$((BATCHES * SIZE))
# The handler sleeps 20 ms on every 100th event: applying (about 4k events/s)
# trails producing, so a crash always finds committed events not yet applied.
F_APPLY_PAUSE=0.02
fault_init fault_crash fault.pg.crash
fault_subscribe || fatal "the subscription runs"

log=$ISA_STACK_DIR/pg/postgresql.log
recoveries_before=$(grep -c 'automatic recovery in progress' "$log")
fault_start_producer "$BATCHES" "$SIZE" 0.1

crashes=0
for at in 10 20; do
  if ! wait_produced "$at" 60; then
    _report fail "the producer reached batch $at within 60 s" "$(tail -n 5 "$F_WORK/producer.log")"
    break
  fi
  old=$(bridge_pid)
  in_flight=$(wait_in_flight 10)   # the moment: while the bridge has work in hand
  note "crash $((crashes + 1)) at $(elapsed), batch >= $at: backlog $(sql "SELECT outbox_backlog FROM isa.bridge_status()"), $in_flight events committed but not yet applied"
  ok "the crash hits mid-flow: $in_flight events are committed but not yet applied" test "${in_flight:-0}" -gt 0
  ok "PostgreSQL stops with -m immediate and starts again" "$root/tools/stack.sh" "${ISA_STACK_NAME:-test}" pg-crash
  crashes=$((crashes + 1))
  if new=$(wait_new_bridge "$old" 30); then
    _report ok "after crash $crashes a new bridge (pid $new) runs, connected to NATS ($(elapsed))"
  else
    _report fail "after crash $crashes a new bridge runs and connects to NATS within 30 s"
    fault_diag
    break
  fi
done
is "$(($(grep -c 'automatic recovery in progress' "$log") - recoveries_before))" "$crashes" \
  "each restart did crash recovery"

fault_wait_producer 90
is "$(produced)" "$BATCHES" "all $BATCHES batch markers committed"
fault_assert_exact "$N"
note "done in $(elapsed)"

done_testing
