# A DBA's backup: pg_dump of database isa, DROP DATABASE, restore from the
# dump.  The services' data, the subscriptions one made and the sequences come
# back, the extension's own subscriptions are not doubled, and the bridge runs
# again on the restored database.  Last of the files: it recreates the database.
source "$(dirname "$0")/lib.sh"
DUMP=$(mktemp); trap 'rm -f "$DUMP"' EXIT
DB=$PGDATABASE

uid=$(sql "SELECT user_id FROM account.create_user('dump-$$@example.com', 'Dump Tester')")
is "$(wait_for "SELECT count(*) FROM wallet.wallets WHERE user_id = '$uid'" 1 20)" 1 "a user with a wallet (through the bridge)"
sql "SELECT wallet.add('$uid', 77, 'dump-$$');
     CREATE SCHEMA it_dump;
     CREATE FUNCTION it_dump.on_wallet(e isa.event) RETURNS void LANGUAGE plpgsql AS 'BEGIN END';
     SELECT isa.subscribe_to_events('audit', 'wallet_service.>', 'it_dump.on_wallet(isa.event)');
     -- a DBA's table tracked (docs/table-events.md)
     CREATE TABLE it_dump.stock (sku int PRIMARY KEY, qty int);
     SELECT isa.track_table('it_dump.stock', event_name => 'it_dump_stock');
     INSERT INTO it_dump.stock VALUES (1, 1);" >/dev/null
before=$(sql "SELECT count(*) || ' ' || max(id) FROM isa.subscriptions")
ledger=$(sql "SELECT count(*) FROM wallet.transactions")
users=$(sql "SELECT count(*) FROM account.users")

# The bridge is off during the restore (docs/operations.md, "Backups"):
# otherwise it applies what the consumers had not acknowledged yet (the audit
# trail is always last to catch up) into the new database as soon as CREATE
# EXTENSION ran, before the dump's rows.
sql "ALTER SYSTEM SET isa.bridge_enabled = off" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
is "$(wait_for "SELECT connected FROM isa.bridge_status()" f 20)" f "the bridge is off for the restore"
ok "pg_dump of database $DB" bash -c "pg_dump -d '$DB' > '$DUMP'"
sql "DROP DATABASE $DB WITH (FORCE)" -d postgres >/dev/null
sql "CREATE DATABASE $DB" -d postgres >/dev/null
ok "the dump restores with no error" psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -f "$DUMP"
sql "ALTER SYSTEM RESET isa.bridge_enabled" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null

is "$(sql "SELECT count(*) FROM account.users")" "$users" "the users are back"
is "$(sql "SELECT balance FROM wallet.wallets WHERE user_id = '$uid'")" 77 "the balance is back"
is "$(sql "SELECT count(*) FROM wallet.transactions")" "$ledger" "and the whole ledger"
is "$(sql "SELECT count(*) || ' ' || max(id) FROM isa.subscriptions")" "$before" \
   "the subscriptions: the extension's own once, the one we made, the same ids"
is "$(sql "SELECT count(*) FROM isa.subscriptions WHERE handler = 'it_dump.on_wallet(isa.event)'::regprocedure")" 1 \
   "our subscription is there"
id=$(sql "SELECT isa.subscribe_to_events('audit', 'account_service.>', 'it_dump.on_wallet(isa.event)')")
is "$((id > ${before#* }))" 1 "a new subscription gets a fresh id (the sequence was restored)"
is "$(sql "SELECT triggers || ' ' || (SELECT count(*) FROM isa.event_types WHERE event_type LIKE 'it_dump_stock.%') FROM isa.tracked_tables WHERE event_name = 'it_dump_stock'")" "4 4" \
   "the tracked table is tracked again, its four triggers and event types once"
is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 30)" t "the bridge runs again on the restored database"
is "$(subs_running "" 30)" "$(subs_want)/$(subs_want)" "with every subscription"
sql "SELECT wallet.add('$uid', 3, 'dump-after-$$')" >/dev/null
is "$(wait_for "SELECT count(*) FROM wallet.outbox WHERE event_type = 'wallet.tokens.added' AND data->>'user_id' = '$uid' AND published_at IS NULL" 0 20)" 0 \
   "a new event is published from the restored outbox"
is "$(wait_for "SELECT count(*) FROM audit.entries WHERE event_type = 'wallet.tokens.added' AND data->>'user_id' = '$uid' AND data->>'amount' = '3'" 1 20)" 1 \
   "and recorded in the restored audit trail"
is "$(sql "SELECT ok FROM audit.verify()")" t "whose chains verify"
sql "UPDATE it_dump.stock SET qty = 2 WHERE sku = 1" >/dev/null
is "$(wait_for "SELECT count(*) FROM table_events.outbox WHERE event_type = 'it_dump_stock.updated' AND published_at IS NOT NULL" 1 20)" 1 \
   "the restored tracked table publishes its changes"

done_testing
