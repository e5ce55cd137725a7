# Fault injection: the bridge worker SIGKILLed again and again while 100k
# events flow.  Each kill makes the postmaster crash-restart every backend
# (the producer's connection included), so the producer re-runs a batch only
# if its marker row did not commit.  Afterwards every event must be in the
# stream exactly once and applied exactly once: outbox rows published but not
# yet marked are republished under the same Nats-Msg-Id (JetStream drops the
# duplicate), messages applied but not yet acked come back after ack_wait and
# the inbox skips them.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/faultlib.sh"

BATCHES=100 SIZE=1000
N=$((BATCHES * SIZE))
# The handler sleeps 10 ms on every 100th event, so that applying trails
# producing and the kills find the bridge with work in hand.
F_APPLY_PAUSE=0.01
fault_init fault_kill fault.kill
fault_subscribe || fatal "the subscription runs"

sig9_before=$(grep -c 'terminated by signal 9' "$ISA_STACK_DIR/pg/postgresql.log")
fault_start_producer "$BATCHES" "$SIZE" 0.1

# Four kills: at a fifth, two fifths and three fifths of the production, each
# at a moment when committed events wait to be published or applied, and once
# the production is over (whatever the bridge is doing then).
kills=0
for at in 20 40 60 "$BATCHES"; do
  if ! wait_produced "$at" 90; then
    _report fail "the producer reached batch $at within 90 s" "$(tail -n 5 "$F_WORK/producer.log")"
    break
  fi
  old=$(bridge_pid)
  if [ -z "$old" ]; then
    _report fail "a bridge runs at batch $at"
    fault_diag
    break
  fi
  # during production: at a moment when the bridge has work in hand
  [ "$at" -lt "$BATCHES" ] && wait_in_flight 10 >/dev/null
  state=$(sql "SELECT outbox_backlog || ' unpublished, ' || (SELECT count(*) FROM fault_kill.applied) || ' applied'
                 FROM isa.bridge_status()" 2>/dev/null)
  kill -KILL "$old"
  kills=$((kills + 1))
  note "kill $kills: bridge $old at $(elapsed), batch >= $at, $state"
  if new=$(wait_new_bridge "$old" 30); then
    _report ok "after kill $kills the crash-restarted cluster runs a new bridge (pid $new), connected to NATS"
  else
    _report fail "after kill $kills a new bridge runs and connects to NATS within 30 s"
    fault_diag
    break
  fi
done
ok "the bridge was SIGKILLed at least 3 times (kills: $kills)" test "$kills" -ge 3
is "$(($(grep -c 'terminated by signal 9' "$ISA_STACK_DIR/pg/postgresql.log") - sig9_before))" "$kills" \
  "the postmaster logged each kill ('terminated by signal 9') and crash-restarted"

fault_wait_producer 120
is "$(produced)" "$BATCHES" "all $BATCHES batch markers committed"

fault_assert_exact "$N"
note "done in $(elapsed)"

done_testing
