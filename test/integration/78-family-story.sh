# The family story, end to end (issue 13), through isa-httpd, the bridge,
# real NATS and a real MQTT client (mosquitto) for the frame: alice signs up
# → her personal organization; she creates a family, invites bob, who
# accepts; a frame is registered into the family; alice uploads a photo and
# shares it with the family; she sets the frame's playlist, the frame is
# told over MQTT (playlist.refresh), reads its playlist with its device
# token and downloads the photo through the signed URL; bob, a member, sees
# the frame's playlist and the photo, and his own frame in the family shows
# it too.  Alice removes bob: bob no longer reaches the frame nor the photo,
# his frame no longer shows it (hidden, not named), and his frame is no
# longer the family's.  The frame goes offline when its heartbeats over MQTT
# stop (isa.device_offline_after 10 s for this database, device.mark_offline()
# called) and online once when they resume.  No event storm: once the bridge
# is quiet, every event of the story is counted, per type, in the outboxes
# and in the inboxes of the services that handled it.  (docs/services/device.md,
# "Playlists"; organization.md; storage.md, "Sharing".)
source "$(dirname "$0")/lib.sh"
: "${ISA_MQTT_PORT:?run me in the stack environment (tools/stack.sh NAME env)}"
U=$ISA_HTTP_URL
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sql "ALTER DATABASE \"$PGDATABASE\" RESET isa.device_offline_after" >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT
source "$(dirname "$0")/httplib.sh"
command -v mosquitto_sub >/dev/null || { echo "1..0 # SKIP mosquitto-clients is not installed"; exit 0; }
run="$$$(date +%s)"
t0=$(date +%s)

as() { local t=$1 m=$2 p=$3; shift 3; call "$m" "$p" -H "$(auth "$t")" "$@"; }
put_json() { as "$1" PUT "$2" "${JSON[@]}" -d "$3"; }
# download FILE PATH [TOKEN]: the status in ST, the body in FILE
download() { ST=$(curl -s -m 20 -o "$1" -w '%{http_code}' ${3:+-H "$(auth "$3")"} "$U$2"); }
# register TOKEN SERIAL NAME PUBLIC_HEX: a frame in the family, over HTTP; its id
register() {
  post /v1/devices "$(jq -nc --arg s "$2" --arg n "$3" --arg k "$(xxd -r -p <<<"$4" | base64 -w0)" --arg o "$fam" \
                       '{serial: $s, model: "Frame", name: $n, public_key: $k, organization_id: $o}')" "$1"
  field device_id
}
mqtt() { local tool=$1; shift; timeout 10 "$tool" -h 127.0.0.1 -p "$ISA_MQTT_PORT" "$@"; }
beat() { mqtt mosquitto_pub -i "it78-hb-$frame" -u "$frame" -P "$jwt" -q 1 -t "isa/devices/$frame/heartbeat" -m "{\"message_id\": \"$1\"}"; }
applied() { wait_for "SELECT count(*) FROM device.device_messages WHERE device_id = '$frame' AND message_id = '$1'" 1 10; }
status() { sql "SELECT status FROM device.devices WHERE device_id = '$frame'"; }
n_event() { sql "SELECT count(*) FROM device.outbox WHERE event_type = '$1' AND data ->> 'device_id' = '$frame'"; }

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
is "$(subs_running)" "$(subs_want)/$(subs_want)" "every subscription has its consumer"
mark=$(sql "SELECT isa.uuid_v7()")   # the story's events are those after it

# ---------------------------------------------------------------- user created → personal organization
read -r alice ta < <(signup_login "it78-alice-$run@example.com" "IT78 Alice")
read -r bob tb < <(signup_login "it78-bob-$run@example.com" "IT78 Bob")
like "$alice $bob" '^[0-9a-f-]{36} [0-9a-f-]{36}$' "alice and bob sign up over HTTP (the account route) and log in"
is "$(wait_for "SELECT count(*) FROM organization.organizations WHERE created_by IN ('$alice', '$bob') AND kind = 'personal'" 2 20)" 2 \
   "user.created reached organization through NATS: each has a personal organization"
as "$ta" GET /v1/organizations
is "$ST $(jq -r '[.[] | .kind + " " + .role] | join(",")' <<<"$BODY")" "200 personal owner" "alice sees hers over HTTP, as its owner"

# ---------------------------------------------------------------- family created, member invited, accepts
post /v1/organizations "{\"kind\": \"family\", \"name\": \"IT78 family $run\", \"idempotency_key\": \"it78-fam-$run\"}" "$ta"
fam=$(field org_id)
is "$ST $(field kind) $(field role)" "201 family owner" "alice creates the family"
post "/v1/organizations/$fam/invitations" "{\"email\": \"it78-bob-$run@example.com\", \"role\": \"member\"}" "$ta"
is "$ST $(field role)" "201 member" "alice invites bob as a member"
post /v1/invitations/accept "{\"token\": $(jq .token <<<"$BODY")}" "$tb"
is "$ST $(field role)" "200 member" "bob accepts the invitation"
as "$tb" GET "/v1/organizations/$fam/members"
is "$(jq -r 'length' <<<"$BODY")" 2 "the family has two members"

# ---------------------------------------------------------------- frames registered into the family
read -r pub priv < <(ed_keypair)
frame=$(register "$ta" "IT78-$run-frame" "Family frame" "$pub")
read -r bpub bpriv < <(ed_keypair)
bframe=$(register "$tb" "IT78-$run-bob" "Bob's frame" "$bpub")
like "$frame $bframe" '^[0-9a-f-]{36} [0-9a-f-]{36}$' "alice registers the family's frame into the family, bob a frame of his"
is "$(wait_for "SELECT count(*) FROM organization.shared_resources WHERE org_id = '$fam' AND kind = 'device'" 2 20)" 2 \
   "device.registered reached organization: both frames are shared with the family"
as "$tb" GET "/v1/devices/$frame"
is "$ST $(field organization_id)" "200 $fam" "bob, a member, sees the family's frame"

# ---------------------------------------------------------------- the frame connects over MQTT
dtok=$(device_token "$frame" "$priv")
post /v1/device/nats-credentials '{}' "$dtok"
jwt=$(field jwt)
is "$ST $(field commands_topic)" "200 isa/devices/$frame/commands" "the frame authenticates and gets its MQTT credential"
mqtt mosquitto_sub -i "it78-$frame" -u "$frame" -P "$jwt" -q 0 -t "isa/devices/$frame/commands" -C 1 >"$TMP/cmd" 2>"$TMP/cmd.err" &
PIDS+=($!)
is "$(for _ in $(seq 100); do
        curl -s "$ISA_NATS_MONITOR/connz?subs=1&mqtt_client=it78-$frame" |
          jq -e --arg s "isa.devices.$frame.commands" '[.connections[].subscriptions_list[]?] | index($s) != null' >/dev/null && { echo t; break; }
        sleep 0.1; done)" t "it subscribes to its commands (mosquitto_sub, QoS 1)"
beat hb-1
is "$(wait_for "SELECT status FROM device.devices WHERE device_id = '$frame'" online 20)" online "a heartbeat over MQTT brings it online"

# ---------------------------------------------------------------- a photo uploaded and shared with the family
head -c 50000 /dev/urandom >"$TMP/photo.jpg"
as "$ta" POST "/v1/files?name=photo-$run.jpg" -H 'Content-Type: image/jpeg' --data-binary @"$TMP/photo.jpg"
photo=$(field file_id)
is "$ST $(field size)" "201 50000" "alice uploads a photo"
post "/v1/files/$photo/shares" "{\"org_id\": \"$fam\"}" "$ta"
is "$ST $(field org_id)" "201 $fam" "and shares it with the family"
download "$TMP/bob.jpg" "/v1/files/$photo/content" "$tb"
ok "bob, a member, downloads it" test "$ST" = 200
ok "  byte for byte" cmp "$TMP/bob.jpg" "$TMP/photo.jpg"

# ---------------------------------------------------------------- the playlists
put_json "$tb" "/v1/devices/$frame/playlist" "{\"items\": [{\"kind\": \"file\", \"id\": \"$photo\"}]}"
is "$ST $(field code)" "403 42501" "bob, a member, may not set the family frame's playlist"
put_json "$ta" "/v1/devices/$frame/playlist" "{\"items\": [{\"kind\": \"file\", \"id\": \"$photo\"}]}"
refresh=$(field command_id)
is "$ST $(field version) $(jq -c '[.items[] | .id, .shown]' <<<"$BODY")" "200 1 [\"$photo\",true]" \
   "alice sets it: the photo, version 1, shown"
wait "${PIDS[-1]}"
is "$(jq -r '[.command_id, .command, .args.version] | join(" ")' <"$TMP/cmd" 2>/dev/null)" "$refresh playlist.refresh 1" \
   "the frame is told over MQTT: playlist.refresh {version 1}"
as "$dtok" GET /v1/device/playlist
is "$ST $(field version) $(jq -r '[.files[].file_id] | join(",")' <<<"$BODY") $(field hidden)" "200 1 $photo 0" \
   "the frame reads its playlist with its device token: the photo, nothing hidden"
download "$TMP/frame.jpg" "$(jq -r '.files[0].url' <<<"$BODY")"
is "$ST" 200 "it downloads the photo through the signed URL (no token)"
ok "  byte for byte" cmp "$TMP/frame.jpg" "$TMP/photo.jpg"
mqtt mosquitto_pub -i "it78-ack-$frame" -u "$frame" -P "$jwt" -q 1 -t "isa/devices/$frame/acks" \
  -m "{\"command_id\": \"$refresh\", \"ok\": true, \"message_id\": \"ack-1\"}"
is "$(wait_for "SELECT state FROM device.commands WHERE command_id = '$refresh'" acknowledged 20)" acknowledged \
   "and acknowledges the refresh over MQTT"
as "$tb" GET "/v1/devices/$frame/playlist"
is "$ST $(jq -c '[.items[] | .id, .shown]' <<<"$BODY")" "200 [\"$photo\",true]" "bob sees the frame's playlist show the photo"
put_json "$tb" "/v1/devices/$bframe/playlist" "{\"items\": [{\"kind\": \"file\", \"id\": \"$photo\"}]}"
is "$ST $(field version)" "200 1" "bob puts the family's photo on his own frame"
btok=$(device_token "$bframe" "$bpriv")
as "$btok" GET /v1/device/playlist
is "$(jq -r '[.files[].file_id] | join(",")' <<<"$BODY") $(field hidden)" "$photo 0" "bob's frame shows it (shared with its family)"

# ---------------------------------------------------------------- the member is removed
call DELETE "/v1/organizations/$fam/members/$bob" -H "$(auth "$ta")"
is "$ST" 204 "alice removes bob from the family"
removed=$(sql "SELECT id FROM organization.outbox WHERE event_type = 'organization.member_removed' AND data ->> 'user_id' = '$bob'")
is "$(wait_for "SELECT count(*) FROM isa.inbox WHERE event_id = '$removed' AND service IN ('device', 'storage', 'authz')" 3 20)" 3 \
   "organization.member_removed reached device, storage and authz through the bridge"
as "$tb" GET "/v1/devices/$frame"
is "$ST" 403 "bob no longer sees the family's frame"
as "$tb" GET "/v1/devices/$frame/playlist"
is "$ST" 403 "  nor its playlist"
download "$TMP/gone.jpg" "/v1/files/$photo/content" "$tb"
is "$ST" 404 "  nor the photo (404, as for a file that does not exist)"
post "/v1/files/$photo/download-url" '{}' "$tb"
is "$ST" 404 "  nor a signed URL of it"
as "$btok" GET /v1/device/playlist
is "$(jq -c '.files' <<<"$BODY") $(field hidden) $(grep -c "$photo" <<<"$BODY")" "[] 1 0" \
   "his frame no longer shows the photo: one item hidden, not named"
as "$ta" GET "/v1/devices/$bframe"
is "$ST" 403 "and his frame is no longer the family's: alice no longer reaches it"
as "$dtok" GET /v1/device/playlist
is "$(jq -r '[.files[].file_id] | join(",")' <<<"$BODY") $(field hidden)" "$photo 0" "the family's frame still shows alice's photo"

# ---------------------------------------------------------------- offline when the heartbeats stop, online once when they resume
beat hb-2
is "$(applied hb-2)" 1 "the frame's heartbeats go on"
sql "ALTER DATABASE \"$PGDATABASE\" SET isa.device_offline_after = 10" >/dev/null
is "$(sql "SELECT device._offline_after()")" 10 "isa.device_offline_after is 10 s for this database's new sessions"
online0=$(n_event device.online)
beat hb-3
is "$(applied hb-3)/$(status)/$(n_event device.online)" "1/online/$online0" "another heartbeat: online still, no device.online"
# the heartbeats stop: device.mark_offline() (pg_cron's job) finds it silent for 10 s
for _ in $(seq 150); do
  [ "$(sql "SELECT device.mark_offline() >= 0 AND status = 'offline' FROM device.devices WHERE device_id = '$frame'")" = t ] && break
  sleep 0.2
done
is "$(status)" offline "the heartbeats stopped: device.mark_offline() marks it offline"
is "$(sql "SELECT now() - last_seen_at >= interval '10 seconds' FROM device.devices WHERE device_id = '$frame'")" t \
   "  once silent for isa.device_offline_after"
# back to the default, so that pg_cron's job cannot take it offline again while the story is counted
sql "ALTER DATABASE \"$PGDATABASE\" RESET isa.device_offline_after" >/dev/null
beat hb-4
is "$(applied hb-4)/$(wait_for "SELECT status FROM device.devices WHERE device_id = '$frame'" online 10)" "1/online" \
   "the heartbeats resume: online"
beat hb-5
beat hb-5
beat hb-6
is "$(applied hb-5)$(applied hb-6)/$(status)" "11/online" "more heartbeats (one sent twice) keep it online"
is "$(n_event device.online) $(n_event device.offline)" "2 1" "device.online twice (first heartbeat, resumed), device.offline once"

# ---------------------------------------------------------------- no event storm
# The story's events: those after the mark that name one of its users,
# family, frames or photo.  Each is owed one application by every
# subscription whose filter matches its subject; the bridge is done with the
# story when every story event is published and applied by each such
# subscription, the notification senders have settled every email of the
# story's notifications (the stack has no SMTP server: each fails at once, and
# record_delivery publishes and falls back in its own transaction), and
# nothing new came meanwhile (twice in a row).
story="'$alice', '$bob', '$fam', '$frame', '$bframe', '$photo'"
events="SELECT o.id, o.source, o.event_type, o.published_at FROM isa.outbox o
         WHERE o.id > '$mark' AND EXISTS (SELECT 1 FROM jsonb_each_text(o.data) d WHERE d.value IN ($story))"
owed="SELECT s.service, s.durable_name, e.id FROM ($events) e JOIN isa.subscriptions s
       ON e.source || '.' || e.event_type
          ~ ('^' || replace(replace(replace(s.subject_filter, '.', '\.'), '*', '[^.]+'), '>', '.+') || '\$')"
progress="SELECT (SELECT count(*) FROM ($events) e) || ' ' || (SELECT count(*) FROM ($events) e WHERE e.published_at IS NULL)
          || ' ' || (SELECT count(*) FROM ($owed) w
                      WHERE NOT EXISTS (SELECT 1 FROM isa.inbox i
                                         WHERE i.service = w.service AND i.consumer = w.durable_name AND i.event_id = w.id))
          || ' ' || (SELECT count(*) FROM notification.deliveries d JOIN notification.notifications n USING (notification_id)
                      WHERE n.event_id IN (SELECT e.id FROM ($events) e)
                        AND d.channel IN ('email', 'webhook') AND d.state IN ('pending', 'sending'))"
q=0 last=
for _ in $(seq 150); do
  now=$(sql "$progress")
  if [[ $now =~ ^[0-9]+\ 0\ 0\ 0$ ]] && [ "$now" = "$last" ]; then q=$((q + 1)); [ $q = 2 ] && break; else q=0; fi
  last=$now
  sleep 0.2
done
is "$q ${now#* }" "2 0 0 0" "the bridge is done with the story: every event published and applied by each subscription it matches, every email settled, nothing new"
counts=$(sql "SELECT string_agg(event_type || ' ' || n, E'\n' ORDER BY event_type) FROM (SELECT event_type, count(*) n FROM ($events) e GROUP BY 1) x")
# notification tells both logins (welcome back), bob's invitation and the
# frame going offline: each in-app at once (notification.sent), and by email,
# which the email sender fails at once without an SMTP server
# (notification.failed, four); the frame going offline then falls back to
# MQTT, the next channel of its category that reaches alice (her frames:
# notification.show, a second device.command_sent, a fifth notification.sent).
is "$counts" "device.authenticated 2
device.command_sent 2
device.offline 1
device.online 2
device.playlist_updated 2
device.registered 2
family.resource_shared 2
family.resource_unshared 1
file.shared 1
file.uploaded 1
notification.failed 4
notification.sent 5
organization.created 3
organization.member_added 4
organization.member_invited 1
organization.member_removed 1
permission.granted 13
permission.revoked 4
user.created 2
user.logged_in 2" "the story published exactly these events: once each transition, no loop"
# (the event store takes every event: test 67; left out here)
handled=$(sql "SELECT string_agg(service || ' ' || event_type || ' ' || n, E'\n' ORDER BY service, event_type)
                 FROM (SELECT i.service, i.event_type, count(*) n FROM isa.inbox i JOIN ($events) e ON e.id = i.event_id
                        WHERE i.service NOT IN ('audit', 'event') GROUP BY 1, 2) x")
is "$handled" "auth permission.revoked 4
authz organization.member_added 4
authz organization.member_removed 1
device device.authenticated 2
device organization.member_removed 1
notification device.offline 1
notification organization.member_invited 1
notification user.logged_in 2
organization device.registered 2
organization user.created 2
ota device.online 2
storage organization.member_removed 1
wallet user.created 2" "and the services' handlers applied exactly these, each once"
is "$(sql "SELECT count(*) || ' ' || count(*) FILTER (WHERE (SELECT count(*) FROM audit.entries a WHERE a.event_id = e.id) = 1)
            FROM ($events) e")" "$(sql "SELECT count(*) || ' ' || count(*) FROM ($events) e")" \
   "the audit trail (which reads every subject) recorded each event of the story once"
is "$(sql "SELECT count(*) FROM isa.dead_letters WHERE event_id IN (SELECT id FROM ($events) e) OR subject LIKE 'isa.devices.$frame.%'")" 0 \
   "no dead letter"
secs=$(($(date +%s) - t0))
# (not a check: test/run.sh bounds a file's time, and speed belongs in bench/)
note "the story took ${secs} s"

done_testing
