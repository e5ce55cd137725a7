# The event store and the audit trail hold every event of the integration
# run (issue 16): once the bridge is quiet, each event the services published
# (every published outbox row) and each event any service consumed (every
# inbox row: external events included) is in event.events and in
# audit.entries exactly once, neither service dead-lettered anything, and the
# audit chain verifies.  Runs after the other tests and before 99-dump-restore
# (which recreates the database).
source "$(dirname "$0")/lib.sh"

is "$(wait_for "SELECT count(*) FROM isa.outbox WHERE published_at IS NULL" 0 120)" 0 \
   "the bridge published every outbox row"

# What a store is missing: published outbox rows and consumed events it lacks.
missing() { # table column
  sql "SELECT (SELECT count(*) FROM isa.outbox o WHERE o.published_at IS NOT NULL AND o.subject IS NULL
                  AND NOT EXISTS (SELECT 1 FROM $1 s WHERE s.$2 = o.id))
            + (SELECT count(DISTINCT i.event_id) FROM isa.inbox i
                WHERE i.service NOT IN ('event', 'audit')
                  AND NOT EXISTS (SELECT 1 FROM $1 s WHERE s.$2 = i.event_id))"
}
for _ in $(seq 1 1200); do
  [ "$(missing event.events id)" = 0 ] && [ "$(missing audit.entries event_id)" = 0 ] && break
  sleep 0.1
done
published=$(sql "SELECT count(*) FROM isa.outbox WHERE published_at IS NOT NULL AND subject IS NULL")
ok "the run published events ($published)" test "$published" -gt 1000
is "$(missing event.events id)" 0 "every published and every consumed event is in the event store"
is "$(missing audit.entries event_id)" 0 "and in the audit trail"
is "$(sql "SELECT count(*) - count(DISTINCT id) FROM event.events")" 0 "the store holds each event once"
is "$(sql "SELECT count(*) - count(DISTINCT event_id) FROM audit.entries")" 0 "the trail holds each event once"
# (forged and malformed messages are dead-lettered by every subscriber of
# their subject, the two recorders included: the bridge refuses them before
# any handler; what counts is that no handler failed)
is "$(sql "SELECT count(*) FROM isa.dead_letters WHERE service IN ('event', 'audit')
             AND reason NOT IN ('invalid_envelope', 'subject_mismatch')")" 0 \
   "neither recorder failed on an event (no handler error, no unsupported version)"
is "$(sql "SELECT ok FROM audit.verify()")" t "the audit chain of the whole run verifies"

done_testing
