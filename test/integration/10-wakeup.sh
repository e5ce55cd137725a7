# Commit-time wake-up: one signal per committing transaction that wrote the
# outbox, whatever the number of rows; none for a rollback or a transaction
# that published nothing.  Needs the preloaded test cluster, so it cannot live
# in pgTAP (which rolls every file back).
source "$(dirname "$0")/lib.sh"

sql "SELECT isa.register_event_type('it.wakeup', 'wallet_service', '1.0.0', 'integration test type')" >/dev/null
wakeups() { sql "SELECT wakeups_signalled FROM isa.wakeup_state()"; }
rows() { sql "SELECT count(*) FROM wallet.outbox"; }

is "$(sql "SELECT preloaded FROM isa.wakeup_state()")" t "the test cluster has isa preloaded (shared memory exists)"
# The first test of a fresh stack: the bridge first connects and sets up a
# consumer per subscription; what follows times its wake-ups, not its start.
is "$(wait_for "SELECT connected AND subscriptions = (SELECT count(*) FROM isa.subscriptions) FROM isa.bridge_status()" t 60)" t \
   "the bridge is connected and runs every subscription"

# The event store's batch summaries (event.batch.stored) would add wake-ups
# of their own after each event counted here: it waits until the end.
pause_service event

# The bridge's safety timer set to an hour: what it does within seconds, it
# does because a commit woke it.
sql "ALTER SYSTEM SET isa.bridge_idle_interval = '1h'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sleep 0.5

w0=$(wakeups); r0=$(rows)
sql "BEGIN;
     SELECT isa.publish_event('it.wakeup', 'wallet_service', '{\"n\": 1}');
     SELECT isa.publish_event('it.wakeup', 'wallet_service', '{\"n\": 2}');
     SELECT isa.publish_event('it.wakeup', 'wallet_service', '{\"n\": 3}');
     COMMIT;" >/dev/null
is "$(wakeups)" "$((w0 + 1))" "a commit with three published events signals the bridge exactly once"
is "$(rows)" "$((r0 + 3))" "the three committed events are in wallet.outbox"
is "$(wait_for "SELECT count(*) FROM wallet.outbox WHERE published_at IS NULL" 0 5)" 0 \
  "the commit woke the bridge, which published the three events at once (its timer is an hour)"

w1=$(wakeups)
sql "BEGIN;
     SELECT isa.publish_event('it.wakeup', 'wallet_service', '{\"n\": 4}');
     ROLLBACK;" >/dev/null
is "$(wakeups)" "$w1" "a rolled-back transaction signals nothing"
is "$(rows)" "$((r0 + 3))" "a rolled-back publish leaves no outbox row"

sql "BEGIN; SELECT 1; COMMIT;" >/dev/null
is "$(wakeups)" "$w1" "a commit that published nothing signals nothing"

sql "SELECT isa.publish_event('it.wakeup', 'wallet_service', '{\"n\": 5}')" >/dev/null
is "$(wakeups)" "$((w1 + 1))" "an autocommit publish signals once"

sql "BEGIN;
     SAVEPOINT s;
     SELECT isa.publish_event('it.wakeup', 'wallet_service', '{\"n\": 6}');
     ROLLBACK TO SAVEPOINT s;
     COMMIT;" >/dev/null
is "$(rows)" "$((r0 + 4))" "a publish in a rolled-back savepoint leaves no row even though its transaction commits"
is "$(wakeups)" "$((w1 + 1))" "and, having nothing left to publish, that commit wakes nobody"

sql "BEGIN;
     SELECT isa.publish_event('it.wakeup', 'wallet_service', '{\"n\": 7}');
     SAVEPOINT s;
     SELECT isa.publish_event('it.wakeup', 'wallet_service', '{\"n\": 8}');
     ROLLBACK TO SAVEPOINT s;
     SAVEPOINT t;
     SELECT isa.publish_event('it.wakeup', 'wallet_service', '{\"n\": 9}');
     RELEASE SAVEPOINT t;
     COMMIT;" >/dev/null
is "$(rows)" "$((r0 + 6))" "events before a rolled-back savepoint and in a released one commit"
is "$(wakeups)" "$((w1 + 2))" "and their commit signals once"

sql "CREATE OR REPLACE FUNCTION public.it_handler(e isa.event) RETURNS void LANGUAGE sql AS ''"
w2=$(wakeups)
s0=$(subs_want "service <> 'event'")   # the services' own (the event store's wait)
sql "SELECT isa.subscribe_to_events('audit', 'wallet_service.>', 'public.it_handler(isa.event)')" >/dev/null
is "$(wakeups)" "$((w2 + 1))" "a committed subscription change signals the bridge once"
is "$(wait_for "SELECT subscriptions FROM isa.bridge_status()" $((s0 + 1)) 5)" $((s0 + 1)) "and the bridge picked the new subscription up at once"
sql "SELECT isa.unsubscribe_from_events('audit', 'wallet_service.>', 'public.it_handler(isa.event)')" >/dev/null
is "$(wait_for "SELECT subscriptions FROM isa.bridge_status()" "$s0" 5)" "$s0" "and dropped it at once when it was removed"
sql "DROP FUNCTION public.it_handler(isa.event)"
# isa.bridge_publish_interval (0 by default: a round per commit): two
# publishing rounds that commits start at least the interval apart (2 s
# here).  A commit after a quiet spell is published at once; one right after
# it waits for the interval's end, and what wakes the bridge then is the
# interval's own timer (the safety timer is still an hour).
sql "ALTER SYSTEM SET isa.bridge_publish_interval = '2s'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
unpublished() { sql "SELECT count(*) FROM wallet.outbox WHERE event_type = 'it.wakeup' AND published_at IS NULL"; }
sleep 2.2   # the last round is older than the interval
sql "SELECT isa.publish_event('it.wakeup', 'wallet_service', '{\"n\": 10}')" >/dev/null
is "$(wait_for "SELECT count(*) FROM wallet.outbox WHERE event_type = 'it.wakeup' AND published_at IS NULL" 0 1)" 0 \
   "with isa.bridge_publish_interval, a commit after a quiet spell is published at once (within a second; the interval is 2 s)"
sql "SELECT isa.publish_event('it.wakeup', 'wallet_service', '{\"n\": 11}')" >/dev/null
sleep 0.3
is "$(unpublished)" 1 "a commit right after that round waits for the interval's end"
is "$(wait_for "SELECT count(*) FROM wallet.outbox WHERE event_type = 'it.wakeup' AND published_at IS NULL" 0 5)" 0 \
   "and is published then, woken by the interval's end (the safety timer is an hour)"
sql "ALTER SYSTEM RESET isa.bridge_publish_interval" >/dev/null
sql "ALTER SYSTEM RESET isa.bridge_idle_interval" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
# leave the catalogue as the extension made it (40-events-doc compares it)
sql "DELETE FROM isa.outbox WHERE event_type = 'it.wakeup';
     DELETE FROM isa.event_types WHERE event_type = 'it.wakeup'"
resume_services

done_testing
