# The upgrade path (docs/architecture.md, "Versions and upgrades"): a database
# created with the oldest kept version (0.1.0, from its own script), holding
# data put in through the API while events flowed through the bridge, is
# updated with ALTER EXTENSION isa UPDATE; it must then be what a fresh
# install of the newest version is (objects, grants, catalogue rows, pg_cron
# jobs), with its data intact, and events must still flow.  A change to the
# SQL without its upgrade step makes the comparison fail and prints the diff.
# Runs on a stack of its own (it-upgrade) so the bridge serves the upgraded
# database.
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
NATS="node $here/../natsclient/isa-nats.mjs"
oldest=$(sed -n 's/^ISA_VERSIONS = \([^ ]*\).*/\1/p' "$root/Makefile")
newest=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$root/isa.control")

export ISA_PG_PORT=$((PGPORT + 7)) ISA_NATS_PORT=$((${ISA_NATS_URL##*:} + 7)) \
       ISA_NATS_MONITOR_PORT=$((${ISA_NATS_MONITOR##*:} + 7)) ISA_HTTP_PORT=$((PGPORT + 17))
stack() { "$root/tools/stack.sh" it-upgrade "$@"; }
TMP=$(mktemp -d)
trap 'stack stop >/dev/null 2>&1; [ -n "${ISA_KEEP:-}" ] || rm -rf "$(readlink -f "$root/.isa/it-upgrade/pg")" "$root/.isa/it-upgrade" "$TMP"' EXIT
stack start >/dev/null 2>&1 || { echo "not ok 1 - the it-upgrade stack starts"; exit 1; }
eval "$(stack env)"
export PGDATABASE=isa

# ---------------------------------------------------------------- the old version
psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE isa WITH (FORCE)" -c "CREATE DATABASE isa"
sql "SET client_min_messages = warning;
     CREATE EXTENSION isa VERSION '$oldest' CASCADE;
     CREATE EXTENSION pg_cron;
     SELECT FROM isa.schedule_jobs();" >/dev/null
is "$(sql "SELECT extversion FROM pg_extension WHERE extname = 'isa'")" "$oldest" "isa $oldest installs from its own script"
is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 30)" t "the bridge of this library runs a database of isa $oldest"
is "$(wait_for "SELECT subscriptions >= (SELECT count(*) FROM isa.subscriptions) FROM isa.bridge_status()" t 20)" t \
   "and every subscription of $oldest has its consumer"

# Data through the API, with events through NATS: users (user.created gives
# each a wallet), ledger rows, billing records from usage events published by
# an outside NATS client, an order paid in tokens.
MODEL="up-model-$$"
sql "SELECT product.set_price((product.create_product('model_input_tokens', '$MODEL', 'input', 'test')).product_id,
                              'per_unit', 0.002, effective_from => now() - interval '1 day');
     SELECT product.set_price((product.create_product('model_output_tokens', '$MODEL', 'output', 'test')).product_id,
                              'per_unit', 0.004, effective_from => now() - interval '1 day');" >/dev/null
for i in 1 2 3; do
  sql "SELECT user_id FROM account.create_user('up$i-$$@example.com', 'Upgrade $i')" > "$TMP/u$i"
done
u1=$(cat "$TMP/u1") u2=$(cat "$TMP/u2")
is "$(wait_for "SELECT count(*) FROM wallet.wallets" 3 20)" 3 "user.created reached wallet through NATS: three wallets"
sql "SELECT wallet.add('$u1', 1000, 'up-seed-1', 'manual');
     SELECT wallet.add('$u2', 500, 'up-seed-2', 'manual');
     SELECT orders.create_order('$u2', 120, 'tokens', 'wallet', 'up-order-1');" >/dev/null
usage() { # USAGE_ID USER
  $NATS pub-events usage.recorded.model --data-template \
    "{\"usage_id\": \"$1\", \"user_id\": \"$2\", \"model\": \"$MODEL\", \"input_tokens\": 100000, \"output_tokens\": 25000}" >/dev/null
}
usage "up-$$-1" "$u1"
is "$(wait_for "SELECT balance FROM wallet.wallets WHERE user_id = '$u1'" 700 20)" 700 \
   "a usage event is billed and deducted through the bridge before the update"

# Every row of the services' tables, and the outbox's events: what the update
# must keep, unchanged.  The update may add rows (a new service's consumer
# replays the stream: organization makes personal organizations), so the
# check is that no row of before is missing or changed after.  isa's
# catalogue is compared with a fresh install below; isa.services,
# subscriptions, dead letters and inbox rows are renamed by 0.1.0→0.2.0
# (services named after their schemas) and compared on what is kept.
# A row is read as the columns its table had before the update (the queries
# are made once, before it): a column the update adds is not a change, one it
# drops fails the query, and so the check.  A column the update moves on
# purpose is checked on its own below: account's notification preferences.
rows() {
  [ -s "$TMP/rows.sql" ] ||
    sql "SELECT format('SELECT %L || '' '' || ROW(%s)::text FROM %s t', r.oid::regclass,
                       (SELECT string_agg(CASE WHEN r.oid = 'account.users'::regclass AND a.attname = 'notification_preferences'
                                               THEN 'NULL' ELSE 't.' || quote_ident(a.attname) END, ', ' ORDER BY a.attnum) FROM pg_attribute a
                         WHERE a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped), r.oid::regclass)
           FROM pg_class r JOIN pg_namespace s ON s.oid = r.relnamespace
          WHERE r.relkind IN ('r', 'p') AND NOT r.relispartition
            AND s.nspname IN (SELECT schema_name FROM isa.services WHERE schema_name IS NOT NULL)
          ORDER BY 1" | { cat; echo "SELECT 'isa.outbox ' || id || ' ' || source || ' ' || event_type || ' ' || data::text FROM isa.outbox"; } |
      sed 's/$/;/' > "$TMP/rows.sql"
  psql -X -A -t -q -v ON_ERROR_STOP=1 -f "$TMP/rows.sql" | LC_ALL=C sort
}
# Taken once the platform is quiet (the bridge may still be applying the
# last reactions): the same rows twice, half a second apart.
quiet_rows() {
  local a b i
  a=$(rows)
  for ((i = 0; i < 40; i++)); do
    sleep 0.5
    b=$(rows)
    [ "$a" = "$b" ] && break
    a=$b
  done
  printf '%s\n' "$a"
}
# The consumers there are before the update: the inbox rows and the
# subscriptions that must be kept are theirs (a subscription the update adds
# starts consuming as soon as it commits).
consumers_before=$(sql "SELECT string_agg(durable_name, ',') FROM isa.subscriptions")
# 0.1.0's notification preferences of u2, changed through its API
sql "SELECT account.set_notification_preferences('$u2', '{\"push\": false, \"mqtt\": true}')" >/dev/null
inbox_rows() { sql "SELECT count(*) || ' ' || count(DISTINCT (consumer, event_id)) FROM isa.inbox
                     WHERE consumer = ANY (string_to_array('$consumers_before', ','))"; }
quiet_rows > "$TMP/rows.before"
inbox_before=$(inbox_rows)
jobs_before=$(sql "SELECT string_agg(jobname || ' ' || schedule || ' ' || command, E'\n' ORDER BY jobname) FROM cron.job")
jobnames_before=$(sql "SELECT string_agg(jobname, ',') FROM cron.job")
subs_before=$(sql "SELECT string_agg(durable_name || ' ' || handler::text || ' ' || subject_filter, E'\n' ORDER BY durable_name) FROM isa.subscriptions")

# ---------------------------------------------------------------- the update
ok "ALTER EXTENSION isa UPDATE runs the chain $oldest → $newest" \
  psql -X -q -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" -c "ALTER EXTENSION isa UPDATE"
updated_at=$(sql "SELECT clock_timestamp()")
is "$(sql "SELECT extversion FROM pg_extension WHERE extname = 'isa'")" "$newest" "the database is at $newest"
quiet_rows > "$TMP/rows.after"
is "$(LC_ALL=C comm -23 "$TMP/rows.before" "$TMP/rows.after" | head -n 20)" "" \
   "no row of a service table and no outbox event is lost or changed ($(wc -l < "$TMP/rows.before") rows before, $(wc -l < "$TMP/rows.after") after)"
is "$(inbox_rows)" "$inbox_before" "the inbox keeps every applied event (renamed services included)"
is "$(sql "SELECT string_agg(notification_preferences::text, ' | ' ORDER BY user_id) FROM account.users WHERE user_id IN ('$u1', '$u2')")" \
   '{"locale": "en", "channels": {"mqtt": false, "email": true, "inapp": true, "webhook": true}, "categories": {}, "quiet_hours": null} | {"locale": "en", "channels": {"mqtt": true, "email": true, "inapp": true, "webhook": false}, "categories": {}, "quiet_hours": null}' \
   "each user's 0.1.0 notification preferences moved under channels (push became webhook, in-app on)"
is "$(sql "SELECT string_agg(durable_name || ' ' || handler::text || ' ' || subject_filter, E'\n' ORDER BY durable_name) FROM isa.subscriptions
            WHERE durable_name = ANY (string_to_array('$consumers_before', ','))")" \
   "$subs_before" "subscriptions keep their durable names, so their consumers keep their place in the stream"
# The jobs a version adds are scheduled as after any update (tools/stack.sh,
# docs/install.md): isa.schedule_jobs() again, which keeps the others as they are.
sql "SELECT FROM isa.schedule_jobs()" >/dev/null
is "$(sql "SELECT string_agg(jobname || ' ' || schedule || ' ' || command, E'\n' ORDER BY jobname) FROM cron.job
            WHERE jobname = ANY (string_to_array('$jobnames_before', ','))")" \
   "$jobs_before" "the pg_cron jobs of $oldest are unchanged"
is "$(sql "SELECT count(*) FROM isa.jobs WHERE jobid IS NULL")" 0 "and every job of isa.scheduled_jobs is scheduled"

# ---------------------------------------------------------------- events still flow
# The bridge kept running while the update changed the catalogue: an error it
# met in that window (a turn that began before the update committed) is
# shown, and only one recorded after it fails.
st=$(wait_for "SELECT connected AND (last_error IS NULL OR last_error_at < timestamptz '$updated_at' + interval '1 second')
                 FROM isa.bridge_status()" t 20)
is "$st" t "the bridge runs on after the update"
err=$(sql "SELECT last_error_at || ': ' || last_error FROM isa.bridge_status() WHERE last_error IS NOT NULL")
[ -z "$err" ] || echo "# the bridge's last error (the update ended at $updated_at): $err"
[ "$st" = t ] || grep -E 'ERROR|isa bridge' "$root/.isa/it-upgrade/pg/postgresql.log" | tail -n 8 | sed 's/^/#   /'
usage "up-$$-2" "$u1"
is "$(wait_for "SELECT balance FROM wallet.wallets WHERE user_id = '$u1'" 400 20)" 400 \
   "a usage event after the update is billed and deducted once"
is "$(sql "SELECT count(*) FROM billing.billing_records WHERE user_id = '$u1'")" 2 "two billing records, one per usage"
sql "SELECT user_id FROM account.create_user('up4-$$@example.com', 'Upgrade 4')" >/dev/null
is "$(wait_for "SELECT count(*) FROM wallet.wallets" 4 20)" 4 "user.created still reaches wallet: a fourth wallet"
# organization is new in 0.2.0: its consumer of user.created starts at the
# beginning of the stream, so the users made before the update get their
# personal organization too; a family made, an invitation accepted, and
# authz binds the new member's organization role through NATS.
is "$(wait_for "SELECT count(*) FROM organization.organizations WHERE kind = 'personal'" 4 20)" 4 \
   "user.created, replayed to organization's new consumer: a personal organization for each of the four users"
fam=$(sql "SELECT org_id FROM organization.create_organization('$u1', 'family', 'Upgrade family', 'up-fam-1')")
sql "SELECT organization.accept_invitation('$u2',
            (organization.invite_member('$u1', '$fam', 'up2-$$@example.com', 'member', 'up-inv-1')).token)" >/dev/null
is "$(sql "SELECT organization.member_role('$fam', '$u2')")" member "an invitee of the family accepts and is a member"
is "$(wait_for "SELECT count(*) FROM authz.role_bindings b JOIN authz.roles r USING (role_id) WHERE b.user_id = '$u2' AND b.org_id = '$fam' AND r.name = 'org_member'" 1 20)" 1 \
   "authz binds org_member in the family from organization.member_added"
# storage's sharing is new in 0.2.0: a file of u1 shared with the family is
# read by u2, an album shared with u2 directly.
photo=$(sql "SELECT storage.begin_upload('$u1', 'up-photo.jpg', 'image/jpeg')")
sql "SELECT storage.put_chunk('$photo', 0, '\\x0102'); SELECT FROM storage.finish_upload('$photo');
     SELECT FROM storage.share_file('$u1', '$photo', org_id => '$fam', idempotency_key => 'up-share-1');
     SELECT FROM storage.add_album_file('$u1', (storage.create_album('$u1', 'Upgrade album', 'up-album-1')).album_id, '$photo');
     SELECT FROM storage.share_album('$u1', (SELECT album_id FROM storage.list_albums('$u1')), '$u2', access => 'write');" >/dev/null
is "$(sql "SELECT storage.can_read('$u2', '$photo') AND storage.can_write_album('$u2', (SELECT album_id FROM storage.list_albums('$u1')))")" t \
   "a file shared with the family and an album shared with a member work after the update"
# device is new in 0.2.0: a device registered into the family reaches
# organization through NATS, and a command to it leaves as a direct message.
dev=$(sql "SELECT device_id FROM device.register_device('$u1', 'UP-SN-$$', 'Frame 10', sha256('up-device'), 'Upgrade frame', '$fam', idempotency_key => 'up-dev-1')")
is "$(wait_for "SELECT count(*) FROM organization.shared_resources WHERE kind = 'device' AND resource_id = '$dev' AND org_id = '$fam'" 1 20)" 1 \
   "a device registered after the update is shared with its family by organization (device.registered)"
sql "SELECT device.heartbeat('$dev', '1.0.0')" >/dev/null
cmd=$(sql "SELECT command_id FROM device.send_command('$u2', '$dev', 'display.refresh', '{}', 'up-cmd-1')")
is "$(sql "SELECT state FROM device.commands WHERE command_id = '$cmd'")" sent "a member's command to the online device is sent"
is "$(wait_for "SELECT count(*) FROM isa.direct_messages" 0 20)" 0 "the bridge publishes the command (its direct message leaves the queue)"
# ota is new in 0.2.0: a vendor's key trusted, firmware kept by storage and
# a release of it signed with tools/isa-ota-sign, a rollout that offers it to
# the family's frame (at 1.0.0) through the device command path.
SIGN=$here/../../tools/isa-ota-sign
vendor=$("$SIGN" keygen "$TMP/vendor.seed")
sql "SELECT ota.add_signing_key('up-vendor-$$', decode('$vendor', 'hex'))" >/dev/null
head -c 3000 /dev/urandom >"$TMP/fw.bin"
fw=$(sql "SELECT (storage.finish_upload(u)).file_id
            FROM (SELECT storage.begin_upload('$u1', 'fw-$$.bin', 'application/octet-stream', 3000) u) x,
                 LATERAL storage.put_chunk(u, 0, decode('$(xxd -p "$TMP/fw.bin" | tr -d '\n')', 'hex'))")
"$SIGN" manifest 'Frame 10' 1.1.0 "$TMP/fw.bin" "$fw" "upgrade test" >"$TMP/m.json"
"$SIGN" sign "$TMP/vendor.seed" "$TMP/m.json" >"$TMP/m.sig"
rel=$(sql "SELECT release_id FROM ota.create_release('$u1', \$m\$$(cat "$TMP/m.json")\$m\$, decode('$(cat "$TMP/m.sig")', 'hex'))")
ro=$(sql "SELECT rollout_id FROM ota.create_rollout('$u1', '$rel', 'up-rollout', '{100}', organization_ids => ARRAY['$fam']::uuid[])")
sql "SELECT ota.set_rollout_state('$u1', '$ro', 'running')" >/dev/null
is "$(sql "SELECT rd.state || ' ' || (SELECT count(*) FROM ota.outbox o WHERE o.event_type = 'ota.update_available' AND o.data ->> 'rollout_id' = '$ro')
             FROM ota.rollout_devices rd WHERE rd.rollout_id = '$ro' AND rd.device_id = '$dev'")" "offered 1" \
   "a signed release after the update is offered to the family's frame by a rollout (ota.update_available)"
# session is new in 0.2.0: u1 (400 tokens) starts a chat session in a login,
# the model's answer is counted, and logging out of that login ends it
# through NATS (auth's user.logged_out), with its totals.
sql "SELECT auth.set_password('$u1', 'upgrade-password-$$')" >/dev/null
sid=$(sql "SELECT session_id FROM auth.login('up1-$$@example.com', 'upgrade-password-$$')")
chat=$(sql "SELECT session_id FROM session.start_session('$u1', '$MODEL', login_session_id => '$sid', idempotency_key => 'up-chat-1')")
sql "SELECT session.add_message('$u1', '$chat', 'user', 'hello');
     SELECT session.add_message('$u1', '$chat', 'assistant', 'hi', 10, 20)" >/dev/null
sql "SELECT auth.logout('$sid'::uuid)" >/dev/null
is "$(wait_for "SELECT status || ' ' || end_reason || ' ' || message_count || ' ' || output_tokens FROM session.sessions WHERE session_id = '$chat'" "ended logout 2 20" 20)" \
   "ended logout 2 20" "a chat session started after the update ends with its login's logout, through NATS"
is "$(wait_for "SELECT count(*) FROM session.outbox WHERE event_type = 'session.ended' AND data->>'session_id' = '$chat' AND published_at IS NOT NULL" 1 20)" 1 \
   "and its session.ended is published"
# notification is new in 0.2.0: that login (auth's user.logged_in, through
# NATS) is told "welcome back" in-app, and by email as u1's moved preferences
# say, which the email sender (running since the restart, waiting for the
# service until the update) fails at once: this stack has no SMTP server.
is "$(wait_for "SELECT string_agg(d.channel || ' ' || d.state, ', ' ORDER BY d.channel) FROM notification.notifications n
                  JOIN notification.deliveries d USING (notification_id) WHERE n.user_id = '$u1' AND n.kind = 'auth.welcome_back'" \
                "email failed, inapp sent" 20)" "email failed, inapp sent" \
   "a login after the update is notified through NATS: in-app, and an email that its sender takes (and fails: no SMTP server)"
sql "SELECT orders.create_order('$u2', 30, 'tokens', 'wallet', 'up-order-2')" >/dev/null
is "$(sql "SELECT balance FROM wallet.wallets WHERE user_id = '$u2'")" 350 "an order after the update is paid from the wallet (500 - 120 - 30)"

# event and audit are new in 0.2.0: their consumers start at the stream's
# beginning, so what was published before the update (u1's user.created, the
# usage chain's deductions) is in the store and in the trail too, once, and
# the trail's chain verifies.
before_id=$(sql "SELECT id FROM account.outbox WHERE event_type = 'user.created' AND data->>'user_id' = '$u1'")
is "$(wait_for "SELECT count(*) FROM event.events WHERE id = '$before_id' AND user_id = '$u1'" 1 30)" 1 \
   "the event store holds an event published before the update (u1's user.created)"
is "$(wait_for "SELECT count(*) FROM audit.entries WHERE event_id = '$before_id'" 1 30)" 1 "and so does the audit trail"
is "$(wait_for "SELECT count(*) FROM isa.outbox o WHERE o.published_at IS NOT NULL AND o.subject IS NULL
                  AND NOT EXISTS (SELECT FROM event.events e WHERE e.id = o.id)" 0 30)" 0 \
   "every event published before and after the update is in the store"
is "$(sql "SELECT ok FROM audit.verify()")" t "and the trail's chain verifies"

# ---------------------------------------------------------------- same as a fresh install
# pg_dump leaves an extension's objects out unless --binary-upgrade, which
# dumps each one (and its grants) with the OIDs it had; the OIDs and the
# extension's version are all that may differ (pg_cron, which a second
# database cannot hold, is left out: --extension=isa).  A sequence's position
# is data (the rows this test put in), not an object: setval lines are left out.
# A column an update added with a default keeps it for the rows before as a
# "missing value" (no table rewrite): storage, not schema; left out too.
# The event store's and the audit trail's monthly partitions are made at run
# time by their handlers and jobs, not by the extension (a fresh install has
# none): data, left out.
psql -X -q -d postgres -c "CREATE DATABASE isa_fresh"
sql "SET client_min_messages = warning; CREATE EXTENSION isa CASCADE" -d isa_fresh >/dev/null
schema() {
  pg_dump --schema-only --binary-upgrade --extension=isa --exclude-table='event.events_*' --exclude-table='audit.entries_*' \
          -h "$PGHOST" -p "$PGPORT" -U postgres -d "$1" | sed "s/^WHERE oid = .[0-9]*.;$/WHERE oid = ?;/" |
    grep -v -e '^--' -e '^$' -e 'binary_upgrade_set_next_' -e 'binary_upgrade_set_pg_class_oids' \
            -e 'binary_upgrade_set_record_init_privs' -e 'binary_upgrade_set_missing_value' \
            -e '^SET ' -e "^SELECT pg_catalog.set_config('search_path'" -e '^\\\(un\)\?restrict ' -e "relfrozenxid" -e "relminmxid" \
            -e "datfrozenxid" -e "datminmxid" -e "^SELECT pg_catalog.setval(" |
    # an object's GRANTs in sorted order: an access list's order is the
    # order of its grants, which an upgrade (owners changed, grants replayed)
    # need not reproduce, and which means nothing
    perl -ne 'if (/^(GRANT|REVOKE) /) { push @run, $_; next } print sort @run; @run = (); print; END { print sort @run }' |
    # the extension's own statement: its OIDs and the order of its config
    # tables (the order they were marked in) differ; the set is compared below
    perl -ne 'if (/binary_upgrade_create_empty_extension/) { $skip = 1 } print unless $skip; $skip = 0 if $skip && /\);$/'
}
schema isa > "$TMP/upgraded.sql"
schema isa_fresh > "$TMP/fresh.sql"
d=$(diff "$TMP/fresh.sql" "$TMP/upgraded.sql" | head -n 60)
is "$d" "" "the upgraded database has the objects and grants of a fresh install of $newest (pg_dump --binary-upgrade, normalised)"
[ "$(wc -l < "$TMP/fresh.sql")" -gt 1000 ] && _report ok "the comparison covers the extension's objects ($(wc -l < "$TMP/fresh.sql") lines)" ||
  _report fail "the comparison covers the extension's objects" "only $(wc -l < "$TMP/fresh.sql") lines"

# The tables whose rows pg_dump keeps (pg_extension_config_dump), with their
# conditions, as a set.
config_tables() {
  psql -X -A -t -q -d "$1" -c "SELECT c.cfg::regclass || ' ' || coalesce(c.cond, '')
                                 FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS c (cfg, cond)
                                WHERE e.extname = 'isa' ORDER BY 1"
}
is "$(config_tables isa)" "$(config_tables isa_fresh)" "the tables pg_dump keeps the rows of are a fresh install's, with the same conditions"

# The catalogue rows, without ids, times and durable names (see above).
catalogue() {
  psql -X -A -t -q -d "$1" -c "
    SELECT 'service ' || name || ' ' || coalesce(schema_name, '-') || ' ' || source || ' ' || description FROM isa.services
    UNION ALL SELECT 'event_type ' || source || ' ' || event_type || ' ' || version || ' ' || description || ' ' || data_fields::text FROM isa.event_types
    UNION ALL SELECT 'subscription ' || service || ' ' || subject_filter || ' ' || handler::text || ' ' || options::text || ' ' || owner_role FROM isa.subscriptions
    UNION ALL SELECT 'route ' || r::text FROM isa.http_routes r
    UNION ALL SELECT 'job ' || j::text FROM isa.scheduled_jobs j
    ORDER BY 1"
}
is "$(catalogue isa)" "$(catalogue isa_fresh)" \
   "the catalogue rows (services, event types, subscriptions, routes, jobs) are a fresh install's"
psql -X -q -d postgres -c "DROP DATABASE isa_fresh WITH (FORCE)"

# Events from any table are new in 0.2.0 (after the comparisons: a tracked
# table and its event types are the database's own): a DBA's table tracked
# in the updated database speaks on NATS through the bridge.
sql "CREATE TABLE public.up_stock (sku int PRIMARY KEY, qty int);
     SELECT isa.track_table('up_stock', event_name => 'up_stock_$$');
     INSERT INTO up_stock VALUES (1, 2);" >/dev/null
msg=$($NATS sub "table.up_stock_$$.inserted" --count 1 --timeout-ms 15000)
is "$(jq -c '[.data.source, .data.data.new]' <<<"$msg")" '["table",{"qty":2,"sku":1}]' \
   "a table tracked after the update publishes table.<name>.inserted through the bridge"
done_testing
