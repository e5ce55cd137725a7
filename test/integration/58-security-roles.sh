# Security: least privilege in the database (issue 12, §3; docs/install.md,
# "Roles").  Through the bridge: a handler runs as its service's role, never
# as a superuser, and what it publishes is its service's source only; the
# bridge itself publishes a dead-lettered event but no other.  And the
# attacker's publish of issue 12: isa_app may not speak as payment_service.
source "$(dirname "$0")/lib.sh"

sql "SET client_min_messages = warning;
     DROP SCHEMA IF EXISTS it_roles CASCADE;
     CREATE SCHEMA it_roles;
     CREATE TABLE it_roles.seen (event_id uuid, who text, superuser boolean, published_as_other text);
     CREATE FUNCTION it_roles.record(e isa.event) RETURNS void LANGUAGE plpgsql AS \$\$
     DECLARE
       other text;
     BEGIN
       -- a forged event would want to speak for payment: it may not
       BEGIN
         PERFORM isa.publish_event('payment.completed', 'payment_service', '{}');
         other := 'published';
       EXCEPTION WHEN insufficient_privilege THEN
         other := '42501';
       END;
       INSERT INTO it_roles.seen VALUES (e.id, current_user,
              (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), other);
       PERFORM isa.publish_event('it.roles.reacted', 'wallet_service', '{}');
       IF e.data ? 'fail' THEN
         RAISE EXCEPTION 'it.roles: asked to fail' USING ERRCODE = '22012';
       END IF;
     END \$\$;
     GRANT USAGE ON SCHEMA it_roles TO isa_svc_wallet;    -- the handler runs as wallet's role
     GRANT INSERT ON it_roles.seen TO isa_svc_wallet;
     SELECT isa.register_event_type('it.roles', 'billing_service', '1.0.0', 'integration test event');
     SELECT isa.register_event_type('it.roles.reacted', 'wallet_service', '1.0.0', 'integration test reaction');
     SELECT isa.subscribe_to_events('wallet', 'billing_service.it.roles', 'it_roles.record(isa.event)',
                                    '{\"deliver_policy\": \"new\", \"max_deliver\": 2}');" >/dev/null
cleanup() {
  sql "SET client_min_messages = warning;
       SELECT isa.unsubscribe_from_events('wallet', 'billing_service.it.roles', 'it_roles.record(isa.event)');
       DROP SCHEMA it_roles CASCADE;
       DELETE FROM isa.outbox WHERE event_type IN ('it.roles', 'it.roles.reacted');
       DELETE FROM isa.event_types WHERE event_type IN ('it.roles', 'it.roles.reacted');" >/dev/null 2>&1
}
trap cleanup EXIT

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
is "$(subs_running)" "$(subs_want)/$(subs_want)" "the test subscription runs"
is "$(sql "SELECT owner_role FROM isa.subscriptions WHERE subject_filter = 'billing_service.it.roles'")" isa_svc_wallet \
   "a subscription of wallet is owned by wallet's role, whoever subscribed it"
is "$(sql "SELECT count(*) FROM isa.subscriptions s JOIN pg_roles r ON r.rolname = s.owner_role WHERE r.rolsuper")" 0 \
   "no subscription's handler runs as a superuser"
is "$(sql "SELECT usename FROM pg_stat_activity WHERE backend_type = 'isa bridge'")" postgres \
   "the bridge connects as the bootstrap superuser (PostgreSQL 15 needs LOGIN otherwise) ..."
sleep 0.5

# --- a handler, through NATS
id=$(sql "SELECT isa.publish_event('it.roles', 'billing_service', '{}')")
is "$(wait_for "SELECT who || ' ' || superuser || ' ' || published_as_other FROM it_roles.seen WHERE event_id = '$id'" \
                "isa_svc_wallet false 42501" 15)" "isa_svc_wallet false 42501" \
   "the handler ran as isa_svc_wallet, no superuser, and could not publish as payment_service"
is "$(wait_for "SELECT count(*) FROM wallet.outbox WHERE event_type = 'it.roles.reacted' AND metadata->>'causation_id' = '$id'" 1 10)" 1 \
   "what it published as wallet_service is in wallet's outbox"

# --- the bridge's own role: without UPDATE on wallet's outbox partition it cannot mark what it
# published (a superuser could; the worker logs the error and restarts); with it back it catches up
denied_before=$(grep -c 'ERROR:  permission denied for table outbox' "$ISA_STACK_DIR/pg/postgresql.log")
sql "REVOKE UPDATE ON wallet.outbox FROM isa_bridge" >/dev/null
trap 'sql "GRANT UPDATE ON wallet.outbox TO isa_bridge" >/dev/null; cleanup' EXIT
id3=$(sql "SELECT isa.publish_event('it.roles.reacted', 'wallet_service', '{\"probe\": true}')")
denied() { grep -c 'ERROR:  permission denied for table outbox' "$ISA_STACK_DIR/pg/postgresql.log"; }
for ((i = 0; i < 150; i++)); do [ "$(denied)" -gt "$denied_before" ] && break; sleep 0.1; done
is "$([ "$(denied)" -gt "$denied_before" ] && echo denied)" denied \
   "... its transactions run as isa_bridge: with UPDATE on wallet.outbox revoked, it may not mark an event published (the log says so)"
is "$(sql "SELECT count(*) FROM isa.outbox WHERE id = '$id3' AND published_at IS NULL")" 1 "the event stays unpublished"
sql "GRANT UPDATE ON wallet.outbox TO isa_bridge" >/dev/null
is "$(wait_for "SELECT count(*) FROM isa.outbox WHERE id = '$id3' AND published_at IS NOT NULL" 1 15)" 1 \
   "with the grant back, the bridge marks it"

# --- it writes the dead letter and publishes event.dead_lettered
id2=$(sql "SELECT isa.publish_event('it.roles', 'billing_service', '{\"fail\": true}')")
is "$(wait_for "SELECT count(*) FROM isa.dead_letters WHERE event_id = '$id2'" 1 30)" 1 \
   "a failing handler is dead-lettered by isa_bridge"
is "$(wait_for "SELECT count(*) FROM wallet.outbox WHERE event_type = 'event.dead_lettered' AND data->>'event_id' = '$id2'" 1 10)" 1 \
   "and isa_bridge published wallet_service's event.dead_lettered"
is "$(sqlstate "SET ROLE isa_bridge; SELECT isa.publish_event('it.roles.reacted', 'wallet_service', '{}')")" 42501 \
   "but isa_bridge may publish no other event of wallet_service"

# --- the attack of issue 12
is "$(sqlstate "SET ROLE isa_app; SELECT isa.publish_event('payment.completed', 'payment_service', '{\"tokens\": 777777}')")" 42501 \
   "isa_app may not publish payment_service's payment.completed"
is "$(sqlstate "SET ROLE isa_app; SELECT auth.set_password('00000000-0000-7000-8000-000000000000', 'a password long enough', NULL)")" 42501 \
   "nor set a password without the old one"

done_testing
