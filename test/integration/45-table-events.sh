# Events from any table (docs/table-events.md), end to end: a DBA's table,
# tracked with isa.track_table, speaks on NATS through the bridge.  An
# independent client (test/natsclient) checks the subjects and payloads of an
# insert, an update and a delete, that a rolled-back transaction published
# nothing, that a 10,000-row bulk UPDATE arrives whole, and that each row's
# events arrive in the order their transactions committed, writers racing on
# the same rows.  A pg_dump of a database with a tracked table restores with
# its tracking: one set of triggers, the catalogue, events again.
source "$(dirname "$0")/lib.sh"
NATS="node $(dirname "$0")/../natsclient/isa-nats.mjs"
TMP=$(mktemp -d)
DUMPDB=it45_src_$$ RESTOREDB=it45_dst_$$
cleanup() {
  psql -X -q -d postgres -c "SET client_min_messages = warning" \
       -c "DROP DATABASE IF EXISTS $DUMPDB WITH (FORCE)" -c "DROP DATABASE IF EXISTS $RESTOREDB WITH (FORCE)" >/dev/null 2>&1
  sql "SET client_min_messages = warning; DROP SCHEMA IF EXISTS it45 CASCADE" >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT
# The stream outlives databases: an event name of this run's own keeps old messages out.
N="it45_$$"

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
sql "SET client_min_messages = warning;
     CREATE SCHEMA it45;
     CREATE TABLE it45.stock (sku int PRIMARY KEY, label text NOT NULL, qty int NOT NULL, supplier_secret text);
     SELECT isa.track_table('it45.stock', event_name => '$N', exclude_columns => '{supplier_secret}');" >/dev/null
is "$(sql "SELECT subjects || ' ' || triggers FROM isa.tracked_tables WHERE event_name = '$N'")" "table.$N.> 4" \
   "the table is tracked: subjects table.$N.>, four triggers"

# ---------------------------------------------------------------- one of each
sql "INSERT INTO it45.stock VALUES (1, 'bolt', 5, 's1'), (2, 'nut', 7, 's2')" >/dev/null
sql "UPDATE it45.stock SET qty = 4 WHERE sku = 1" >/dev/null
sql "DELETE FROM it45.stock WHERE sku = 2" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -c "BEGIN" -c "INSERT INTO it45.stock VALUES (99, 'rolled back', 1, NULL)" -c "ROLLBACK" >/dev/null
sql "UPDATE it45.stock SET label = 'bolt M4' WHERE sku = 1" >/dev/null
$NATS sub "table.$N.>" --count 5 --timeout-ms 15000 >"$TMP/first" 2>"$TMP/first.err"
is "$(jq -r .subject "$TMP/first" | paste -sd' ')" \
   "table.$N.inserted table.$N.inserted table.$N.updated table.$N.deleted table.$N.updated" \
   "insert (2 rows), update, delete, update arrive on table.$N.<operation> in commit order"
is "$(jq -c 'select(.seq) | .data.data' "$TMP/first" | head -n 1)" \
   "{\"key\":{\"sku\":1},\"new\":{\"qty\":5,\"sku\":1,\"label\":\"bolt\"},\"table\":\"it45.stock\"}" \
   "an inserted event carries the key and the new row, without the excluded column"
is "$(jq -c 'select(.subject | endswith(".updated")) | .data.data | [.key, .old.qty, .new.qty, .changed]' "$TMP/first" | head -n 1)" \
   '[{"sku":1},5,4,["qty"]]' "an updated event carries the old row, the new row and the changed columns"
is "$(jq -c 'select(.subject | endswith(".deleted")) | .data.data | [.key, .old.label, has("new")]' "$TMP/first")" \
   '[{"sku":2},"nut",false]' "a deleted event carries the old row"
is "$(jq -r '[.data.source, .data.event_type, .data.version, (.headers["Nats-Msg-Id"] == .data.id),
              (.headers.traceparent == .data.metadata.traceparent and (.data.metadata.traceparent | test("^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")))] | join(" ")' "$TMP/first" | sort -u | paste -sd'|')" \
   "table $N.deleted 1.0.0 true true|table $N.inserted 1.0.0 true true|table $N.updated 1.0.0 true true" \
   "the envelopes: source table, event_type <name>.<operation>, version 1.0.0, Nats-Msg-Id the event id, a traceparent (also a header)"
is "$(grep -c supplier_secret "$TMP/first")" 0 "the excluded column is nowhere on the wire"
is "$($NATS count "table.$N.>" --timeout-ms 1000)" "5 5" "the rolled-back insert published nothing: five events, each once"

# A client with the read-only credential every consumer of the events may get.
out=$(ISA_NATS_CREDS=$ISA_NATS_SUBSCRIBER_CREDS $NATS sub "table.$N.>" --consumer watch --count 5 --timeout-ms 10000 2>&1)
is "$(jq -r .subject <<<"$out" 2>/dev/null | wc -l)" 5 "the subscriber credential (read only) reads them with its own consumer"

# ---------------------------------------------------------------- the commit wakes the bridge
wakeups() { sql "SELECT wakeups_signalled FROM isa.wakeup_state()"; }
pause_service event   # (its batch summaries would wake the bridge too)
w0=$(wakeups)
sql "INSERT INTO it45.stock VALUES (3, 'washer', 1, NULL), (4, 'pin', 1, NULL)" >/dev/null
is "$(wakeups)" "$((w0 + 1))" "a committed write of a tracked table signals the bridge once"
sql "UPDATE it45.stock SET qty = 0 WHERE sku = -1" >/dev/null
is "$(wakeups)" "$((w0 + 1))" "a statement that changed no row signals nothing"
psql -X -q -v ON_ERROR_STOP=1 -c "BEGIN" -c "SAVEPOINT s" -c "INSERT INTO it45.stock VALUES (98, 'rolled back', 1, NULL)" \
     -c "ROLLBACK TO SAVEPOINT s" -c "COMMIT" >/dev/null
is "$(wakeups)" "$((w0 + 1))" "a commit whose only tracked write was in a rolled-back savepoint signals nothing"
is "$(sql "SELECT count(*) FROM table_events.outbox WHERE event_type LIKE '$N.%' AND data->'key'->>'sku' IN ('98', '99')")" 0 \
   "and neither rolled-back insert left an event"
resume_services

# ---------------------------------------------------------------- isa.bridge_render_interval
# Two renderings at least the interval apart (2 s here): a commit after a quiet
# spell is rendered at once, one right after it waits for the interval's end.
sql "ALTER SYSTEM SET isa.bridge_render_interval = '2s'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
pending() { sql "SELECT pending_statements FROM isa.tracked_tables WHERE event_name = '$N'"; }
sleep 2.2   # the last rendering is older than the interval
sql "INSERT INTO it45.stock VALUES (5, 'cog', 1, NULL)" >/dev/null
is "$(wait_for "SELECT pending_statements FROM isa.tracked_tables WHERE event_name = '$N'" 0 1)" 0 \
   "a commit after a quiet spell is rendered at once (within a second; the interval is 2 s)"
sql "INSERT INTO it45.stock VALUES (6, 'cam', 1, NULL)" >/dev/null
sleep 0.3
is "$(pending)" 1 "a commit right after that rendering waits for the interval's end"
is "$(wait_for "SELECT pending_statements FROM isa.tracked_tables WHERE event_name = '$N'" 0 5)" 0 \
   "and is rendered then"
sql "ALTER SYSTEM RESET isa.bridge_render_interval" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null

# ---------------------------------------------------------------- bulk
sql "INSERT INTO it45.stock SELECT g, 'item ' || g, 0, 'x' FROM generate_series(1000, 10999) g" >/dev/null
sql "UPDATE it45.stock SET qty = qty + 1 WHERE sku >= 1000" >/dev/null
is "$(wait_for "SELECT count(*) FROM table_events.outbox WHERE event_type = '$N.updated' AND (data->'key'->>'sku')::int >= 1000" 10000 60)" 10000 \
   "a 10,000-row UPDATE becomes 10,000 events (its batch rendered by the bridge)"
is "$(wait_for "SELECT count(*) FROM table_events.outbox WHERE event_type LIKE '$N.%' AND published_at IS NULL" 0 60)" 0 \
   "the bridge publishes them all"
is "$($NATS count "table.$N.updated" --timeout-ms 2000)" "10002 10002" "all 10,000 updated events (and the two before) are on the stream, each once"

# ---------------------------------------------------------------- commit order per row key
# Four writers race on the same 20 rows, each transaction adding 1 to the qty
# of a random half of them: per row, the events' new.qty must be 1, 2, 3 …
# in stream order, whatever the interleaving.
sql "INSERT INTO it45.stock SELECT g, 'hot ' || g, 0, NULL FROM generate_series(100, 119) g" >/dev/null
for w in 1 2 3 4; do
  (for i in $(seq 1 25); do
     # rows locked in key order: racing, not deadlocking
     echo "WITH l AS (SELECT sku FROM it45.stock WHERE sku BETWEEN 100 AND 119 AND random() < 0.5 ORDER BY sku FOR UPDATE)
           UPDATE it45.stock s SET qty = qty + 1 FROM l WHERE s.sku = l.sku;"
   done | psql -X -q -v ON_ERROR_STOP=1 >/dev/null) &
done
wait
total=$(sql "SELECT sum(qty) FROM it45.stock WHERE sku BETWEEN 100 AND 119")
is "$(wait_for "SELECT count(*) FROM table_events.outbox WHERE event_type LIKE '$N.%' AND published_at IS NULL" 0 30)" 0 \
   "the racing writers' events are published"
$NATS sub "table.$N.>" --count $((5 + 2 + 2 + 20000 + 20 + total)) --timeout-ms 30000 >"$TMP/all" 2>"$TMP/all.err"
jq -r 'select(.data.data.key.sku >= 100 and .data.data.key.sku < 120) | "\(.data.data.key.sku) \(.data.data.new.qty)"' "$TMP/all" >"$TMP/hot"
is "$(wc -l < "$TMP/hot")" "$((20 + total))" "every hot row's insert and each of its $total updates is on the stream"
bad=$(awk '{ if (($1 in last) && $2 != last[$1] + 1) print "sku " $1 ": " last[$1] " then " $2; last[$1] = $2 }' "$TMP/hot" | head -n 5)
is "$bad" "" "per row key, the events are in commit order (new.qty 0, 1, 2 … in stream order)"

# ---------------------------------------------------------------- dump and restore
# In a database of its own (CREATE EXTENSION isa, no pg_cron), dumped and
# restored into another: the tracking, its triggers and its event types come
# back once, and the restored table publishes again.
psql -X -q -d postgres -c "CREATE DATABASE $DUMPDB" -c "CREATE DATABASE $RESTOREDB" >/dev/null
sql "SET client_min_messages = warning; CREATE EXTENSION isa;
     CREATE TABLE public.parts (id int PRIMARY KEY, name text);
     SELECT isa.track_table('parts', operations => '{insert,update}', exclude_columns => '{}');
     INSERT INTO parts VALUES (1, 'gear');" -d "$DUMPDB" >/dev/null
ok "pg_dump of a database with a tracked table" bash -c "pg_dump -d '$DUMPDB' > '$TMP/dump.sql'"
ok "it restores with no error" psql -X -q -v ON_ERROR_STOP=1 -d "$RESTOREDB" -f "$TMP/dump.sql"
is "$(sql "SELECT relation || ' ' || operations::text || ' ' || triggers FROM isa.tracked_tables" -d "$RESTOREDB")" \
   "parts {insert,update} 2" "the tracking is back, with its two triggers, not doubled"
is "$(sql "SELECT string_agg(event_type, ' ' ORDER BY event_type) FROM isa.event_types WHERE source = 'table' AND event_type LIKE 'parts.%'" -d "$RESTOREDB")" \
   "parts.inserted parts.updated" "its event types are in the restored catalogue, once"
# (no bridge runs in these two databases: nothing renders the batches but this test)
is "$(sql "SELECT count(*) FROM table_events.outbox" -d "$RESTOREDB")" 0 "the restore wrote no event"
is "$(sql "SELECT isa._render_table_events()" -d "$RESTOREDB")" 1 "the pending statement came back with its batch, and renders as its one event"
sql "INSERT INTO parts VALUES (2, 'shaft'); UPDATE parts SET name = 'gear 2' WHERE id = 1" -d "$RESTOREDB" >/dev/null
sql "SELECT isa._render_table_events()" -d "$RESTOREDB" >/dev/null
is "$(sql "SELECT string_agg(event_type, ' ' ORDER BY id) FROM table_events.outbox" -d "$RESTOREDB")" \
   "parts.inserted parts.inserted parts.updated" "the restored table publishes its changes"

# ---------------------------------------------------------------- untrack
sql "SELECT isa.untrack_table('it45.stock')" >/dev/null
sql "INSERT INTO it45.stock VALUES (50000, 'after', 1, NULL)" >/dev/null
is "$(sql "SELECT count(*) FROM table_events.outbox WHERE event_type LIKE '$N.%' AND data->'key'->>'sku' = '50000'")" 0 \
   "an untracked table publishes nothing"

done_testing
