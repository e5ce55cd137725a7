# Fault injection: nats-server stopped for 10 s while 20k events flow.
# Producers must not notice (nothing in a domain transaction waits for NATS);
# the outbox grows while the bridge is disconnected and drains when NATS is
# back, and every event ends up in the stream once and applied once.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/faultlib.sh"

BATCHES=80 SIZE=250 DOWN=10
N=$((BATCHES * SIZE))
restart_nats() { "$root/tools/stack.sh" "${ISA_STACK_NAME:-test}" nats-start >/dev/null 2>&1; }
FAULT_CLEANUP_HOOK=restart_nats   # whatever happens, leave NATS running
fault_init fault_nats fault.nats.down
fault_subscribe || fatal "the subscription runs"

reconnects0=$(sql "SELECT reconnects FROM isa.bridge_status()")
fault_start_producer "$BATCHES" "$SIZE" 0.2

if ! wait_produced 20 60; then
  _report fail "the producer reached batch 20 within 60 s" "$(tail -n 5 "$F_WORK/producer.log")"
fi
ok "nats-server stops (at $(elapsed), batch $(produced))" "$root/tools/stack.sh" "${ISA_STACK_NAME:-test}" nats-stop
down_at=$SECONDS
check "$(wait_for "SELECT connected FROM isa.bridge_status()" f 10)" f \
  "bridge_status().connected turns false while NATS is down"
b1=$(sql "SELECT outbox_backlog FROM isa.bridge_status()")
p1=$(produced)
sleep $((DOWN - (SECONDS - down_at)))
b2=$(sql "SELECT outbox_backlog FROM isa.bridge_status()")
p2=$(produced)
note "while NATS was down: backlog $b1 -> $b2, batches committed $p1 -> $p2"
ok "producers kept committing while NATS was down (batches $p1 -> $p2)" test "$p2" -gt "$p1"
ok "the outbox backlog grew while NATS was down ($b1 -> $b2)" test "$b2" -gt "$b1"
is "$(sql "SELECT connected FROM isa.bridge_status()")" f "and the bridge was still disconnected after $DOWN s"

ok "nats-server starts again on the same store (at $(elapsed))" "$root/tools/stack.sh" "${ISA_STACK_NAME:-test}" nats-start
check "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t \
  "the bridge reconnects ($(elapsed))"
# (nats.c reports the connection before its reconnected callback counts it:
# the count may follow the status by a turn of the bridge)
is "$(wait_for "SELECT reconnects > $reconnects0 FROM isa.bridge_status()" t 10)" t \
  "and counts the reconnection (reconnects $reconnects0 -> $(sql "SELECT reconnects FROM isa.bridge_status()"))"

fault_wait_producer 90
is "$(produced)" "$BATCHES" "all $BATCHES batch markers committed"
fault_assert_exact "$N"
note "done in $(elapsed)"

done_testing
