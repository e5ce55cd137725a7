# Without shared_preload_libraries the extension still works: publishing writes
# the outbox and commits; there is just no shared memory and nobody to wake.
# A throwaway cluster (no pg_cron either) on its own port.
source "$(dirname "$0")/lib.sh"

port=$((PGPORT + 5))
dir=$(mktemp -d /tmp/isa-nopreload.XXXXXX)
chmod 755 "$dir"
as_pg=()
[ "$(id -u)" = 0 ] && { chown postgres: "$dir"; as_pg=(runuser -u postgres --); }
cd /   # postgres may not be allowed into the checkout
cleanup() { "${as_pg[@]}" "$ISA_PGBIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1; rm -rf "$dir"; }
trap cleanup EXIT

"${as_pg[@]}" "$ISA_PGBIN/initdb" -D "$dir/data" -U postgres -A trust >/dev/null 2>&1
"${as_pg[@]}" "$ISA_PGBIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
  -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir" start >/dev/null
ok "a cluster without isa in shared_preload_libraries starts" \
  psql -X -h 127.0.0.1 -p "$port" -U postgres -d postgres -c 'SELECT 1'

q() { psql -X -A -t -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "$@" 2>&1; }
ok "CREATE EXTENSION isa CASCADE succeeds without preload" q "CREATE EXTENSION isa CASCADE"
q "SELECT isa.register_event_type('device.online', 'device_service', '1.0.0', 'not-preloaded test')" >/dev/null
id=$(q "SELECT isa.publish_event('device.online', 'device_service', '{\"device_id\": \"d1\"}')")
like "$id" '^[0-9a-f]{8}-[0-9a-f]{4}-7' "publish_event returns a version 7 id without preload"
is "$(q "SELECT count(*) FROM device.outbox WHERE id = '$id'")" 1 "the committed event is in device.outbox"
is "$(q "SELECT preloaded, wakeups_signalled IS NULL FROM isa.wakeup_state()")" "f|t" \
  "wakeup_state reports no shared memory, so the commit's wake-up was a no-op"
is "$(q "LOAD 'isa'" -c "SHOW isa.stream")" "ISA_EVENTS" "the isa GUCs are defined once the library is loaded"
is "$(q "LOAD 'isa'" -c "SHOW isa.database")" "isa" "isa.database is defined without preload (as a reloadable setting)"
out=$(q "SELECT count(*) FROM isa.schedule_jobs()")
like "$out" "pg_cron is not installed" "isa.schedule_jobs() says clearly that pg_cron is missing"
like "$out" '(^|[^0-9])0$' "and schedules nothing"

done_testing
