# The OTA story (issue 15), with real NATS, the bridge, isa-httpd and MQTT
# (mosquitto as the device): a fleet of 120 frames of one model in one
# organization, a vendor key made with tools/isa-ota-sign and trusted, a
# release signed with it and created over HTTP.  Rollout A (groups 20/30/50,
# success threshold 100) opens its groups one after another as the devices
# report success: most over HTTP with their own device tokens (fleet.mjs), one
# device per group over MQTT (the command ota.update on
# isa/devices/<id>/commands, progress as acks on isa/devices/<id>/acks), one
# of which downloads the firmware interrupted halfway and resumed with Range
# and checks its SHA-256 and the manifest's signature; a device offline when
# its group opens is offered the update when it comes online, once (its
# update_available counted, after coming online twice); a device running a
# higher version is never offered it (anti-rollback); the firmware recorded
# by the device service through ota.update_completed.  Rollout B's devices
# report failures: it halts exactly at its error threshold and the devices of
# the groups not opened are never offered it, whatever happens next.  A
# wrongly signed, a tampered and a hash-mismatched release and a downgrade
# are refused with their SQLSTATE and nothing stored.  No wall-clock waits:
# ota.advance_rollouts() (pg_cron's job) is called directly.  The devices'
# tokens come from auth's challenge/response called in SQL (the HTTP route
# would rate-limit 120 devices of one address); the MQTT devices' over HTTP.
# (docs/services/ota.md.)
source "$(dirname "$0")/lib.sh"
: "${ISA_MQTT_PORT:?run me in the stack environment (tools/stack.sh NAME env)}"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
U=$ISA_HTTP_URL
STACK=$(basename "$ISA_STACK_DIR")
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sql "SELECT ota.retire_signing_key('it66-vendor-$run')" >/dev/null 2>&1   # its seed goes with TMP
  rm -rf "$TMP"
}
trap cleanup EXIT
source "$(dirname "$0")/httplib.sh"
source "$(dirname "$0")/devicelib.sh"
PREFIX=IT66
SIGN=$ROOT/tools/isa-ota-sign
FLEET=$ROOT/test/integration/fleet.mjs
run="$$$(date +%s)"
M="IT66-Frame-$run"            # the model of this run: no other test's devices are targeted
N=120
t0=$(date +%s)

as() { local t=$1 m=$2 p=$3; shift 3; call "$m" "$p" -H "$(auth "$t")" "$@"; }
# fleet LIST METHOD PATH [BODY]: each device of LIST ("ID TOKEN" lines) calls the route; JSON lines in $TMP/out
fleet() { local l=$1; shift; node "$FLEET" "$U" "$@" <"$l" >"$TMP/out"; }
# statuses: "STATUS×COUNT …" of the last fleet call
statuses() { jq -rs 'group_by(.status) | map("\(.[0].status)x\(length)") | join(" ")' "$TMP/out"; }
advance() { sql "SELECT string_agg(action || ' ' || n, ', ') FROM ota.advance_rollouts()" >/dev/null; }
rstate() { sql "SELECT state || ' ' || current_group FROM ota.rollouts WHERE rollout_id = '$1'"; }
dstate() { sql "SELECT state FROM ota.rollout_devices WHERE rollout_id = '$1' AND device_id = '$2'"; }
# the devices of LIST in group G of rollout R (DEVICE_ID TOKEN lines)
in_group() { grep -F -f <(sql "SELECT device_id FROM ota.rollout_devices WHERE rollout_id = '$2' AND group_no = $3") "$1"; }
n_events() { sql "SELECT count(*) FROM ota.outbox WHERE event_type = 'ota.$1' AND data ->> 'rollout_id' = '$2' ${3:+AND $3}"; }
n_commands() { sql "SELECT count(*) FROM device.commands WHERE command = 'ota.update' AND args ->> 'rollout_id' = '$1' ${2:+AND $2}"; }

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
is "$(subs_running)" "$(subs_want)/$(subs_want)" "every subscription has its consumer, ota's of device.online and the acks among them"

# ---------------------------------------------------------------- the administrator, the vendor's key, the firmware
read -r admin tadm < <(signup_login "it66-admin-$run@example.com" "IT66 Admin")
sql "SELECT authz.create_role('it66-admin-$run', 'it66 administrators', ARRAY['isa:admin']);
     SELECT authz.bind_role('$admin', 'it66-admin-$run')" >/dev/null
vendor_pub=$("$SIGN" keygen "$TMP/vendor.seed")
rogue_pub=$("$SIGN" keygen "$TMP/rogue.seed")
like "$vendor_pub $(stat -c %a "$TMP/vendor.seed")" '^[0-9a-f]{64} 600$' \
  "isa-ota-sign keygen: the vendor's public key (hex), its seed kept 0600"
is "$(sql "SELECT ota.add_signing_key('it66-vendor-$run', decode('$vendor_pub', 'hex'))")" t \
  "an operator trusts the vendor's key (ota.add_signing_key)"
head -c 1572865 /dev/urandom >"$TMP/fw.bin"          # 1.5 MiB + 1: not a multiple of storage's chunk
fw_sha=$(sha256sum "$TMP/fw.bin" | cut -d' ' -f1)
as "$tadm" POST "/v1/files?name=it66-fw-$run.bin" -H 'Content-Type: application/octet-stream' --data-binary @"$TMP/fw.bin"
fw=$(field file_id)
is "$ST $(field size) $(field sha256)" "201 1572865 $fw_sha" "the administrator uploads the firmware through storage"

# release VERSION SEEDFILE [FILE]: a manifest of the firmware made and signed with isa-ota-sign, POSTed
# (FILE: the bytes the manifest describes, default the firmware); the manifest in $TMP/m-VERSION.json
release() {
  "$SIGN" manifest "$M" "$1" "${3:-$TMP/fw.bin}" "$fw" "it66 $1" >"$TMP/m-$1.json"
  "$SIGN" sign "$2" "$TMP/m-$1.json" >"$TMP/s-$1"
  post_release "$TMP/m-$1.json" "$(xxd -r -p "$TMP/s-$1" | base64 -w0)"
}
post_release() { # MANIFEST_FILE SIGNATURE_BASE64
  post /v1/ota/releases "$(jq -nc --rawfile m "$1" --arg s "$2" '{manifest: $m, signature: $s}')" "$tadm"
}
n_releases() { sql "SELECT count(*) FROM ota.releases WHERE model = '$M'"; }

release 1.1.0 "$TMP/vendor.seed"
ra_rel=$(field release_id)
is "$ST $(field version) $(field sha256) $(field key_id)" "201 1.1.0 $fw_sha it66-vendor-$run" \
  "POST /v1/ota/releases: release 1.1.0 signed with the vendor's key is created, its SHA-256 the firmware's"
ok "  isa-ota-sign verify accepts what was signed" "$SIGN" verify "$vendor_pub" "$TMP/m-1.1.0.json" "$(cat "$TMP/s-1.1.0")"

# ---------------------------------------------------------------- refused releases: nothing stored
before=$(n_releases)
release 1.3.0 "$TMP/rogue.seed"
is "$ST $(field code) $(field message)" "400 22023 the manifest's signature does not verify with any trusted key" \
  "a release signed with an untrusted key is refused: 400, 22023"
sed 's/"version":"1.3.0"/"version":"1.3.1"/' "$TMP/m-1.3.0.json" >"$TMP/m-tampered.json"
"$SIGN" sign "$TMP/vendor.seed" "$TMP/m-1.3.0.json" >"$TMP/s-good"
post_release "$TMP/m-tampered.json" "$(xxd -r -p "$TMP/s-good" | base64 -w0)"
is "$ST $(field code)" "400 22023" "a manifest changed after the vendor signed it is refused: 22023"
ok "  (isa-ota-sign verify refuses it too)" bash -c "! '$SIGN' verify '$vendor_pub' '$TMP/m-tampered.json' '$(cat "$TMP/s-good")' 2>/dev/null"
head -c 100 /dev/urandom >"$TMP/other.bin"
release 1.3.2 "$TMP/vendor.seed" "$TMP/other.bin"
is "$ST $(field code)" "400 22023" "a signed manifest whose size and SHA-256 are not the firmware file's is refused: 22023"
is "$(sqlstate "SELECT ota.create_release('$admin', '$(sed "s/'/''/g" "$TMP/m-1.3.0.json")', decode('$(cat "$TMP/s-1.3.0")', 'hex'))")" 22023 \
  "… and in SQL, the wrongly signed one: 22023"
is "$(n_releases) $(sql "SELECT count(*) FROM ota.releases WHERE model = '$M' AND version LIKE '1.3.%'")" "$before 0" \
  "nothing of the refused releases was stored"

# ---------------------------------------------------------------- the fleet: 120 frames of the organization, online
owner=$(sql "SELECT (account.create_user('it66-owner-$run@example.com', 'IT66 Owner')).user_id")
org=$(sql "SELECT org_id FROM organization.create_organization('$owner', 'family', 'IT66 fleet $run')")
psql -X -A -t -q -v ON_ERROR_STOP=1 >"$TMP/all" <<SQL
CREATE TEMP TABLE it66 AS
SELECT n, k.secret_key,
       (device.register_device('$owner', 'IT66-$run-' || n, '$M', k.public_key, 'IT66 frame ' || n, '$org')).device_id
  FROM generate_series(1, $N) n, LATERAL auth._ed25519_keypair() k;
ALTER TABLE it66 ADD nonce text;
UPDATE it66 SET nonce = (auth.device_challenge(device_id::text)).nonce;
SELECT device_id || ' ' || (auth.device_authenticate(device_id::text, nonce,
                                                     auth._ed25519_sign(secret_key, convert_to(nonce, 'UTF8')))).access_token
  FROM it66 ORDER BY n;
SQL
is "$(wc -l <"$TMP/all")" "$N" "$N frames registered into the organization, each with its key and a device token"
stranger=$(sql "SELECT device_id FROM device.register_device('$owner', 'IT66-$run-stranger', '$M', '\\x$(ed_keypair | cut -d' ' -f1)'::bytea, 'IT66 stranger')")
id_of() { sed -n "${1}p" "$TMP/all" | cut -d' ' -f1; }
ahead=$(id_of "$N")              # runs 9.0.0: never offered a lower version
grep -v "^$ahead " "$TMP/all" >"$TMP/fleet"

# ---------------------------------------------------------------- rollout A: draft, groups, the MQTT devices
post /v1/ota/rollouts "$(jq -nc --arg r "$ra_rel" --arg o "$org" \
  '{release_id: $r, name: "it66 A", groups: [20, 30, 50], success_threshold: 100, error_threshold: 20, organization_ids: [$o]}')" "$tadm"
ra=$(field rollout_id)
is "$ST $(field state) $(field current_group)" "201 draft 0" "POST /v1/ota/rollouts: a draft rollout of 1.1.0 to the organization's frames"
# a device's group is known before the start (deterministic): one MQTT device per group
grp() { sql "SELECT ota.device_group('$1', rollout_id, groups) FROM ota.rollouts WHERE rollout_id = '$2'"; }
pick() { # ROLLOUT GROUP: the first fleet device of that group
  local id
  while read -r id _; do [ "$(grp "$id" "$1")" = "$2" ] && { echo "$id"; return; }; done <"$TMP/fleet"
}
mq1=$(pick "$ra" 1); mq2=$(pick "$ra" 2); mq3=$(pick "$ra" 3)
like "$mq1 $mq2 $mq3" '^[0-9a-f-]{36} [0-9a-f-]{36} [0-9a-f-]{36}$' "ota.device_group names each device's group before the start"
tok_of() { grep "^$1 " "$TMP/all" | cut -d' ' -f2; }
# mqtt_device ID: its NATS credential over HTTP, and a subscriber on its commands (messages: $TMP/ID.cmds)
mqtt_device() {
  post /v1/device/nats-credentials '{}' "$(tok_of "$1")"
  field jwt >"$TMP/$1.jwt"
  timeout 85 mosquitto_sub -h 127.0.0.1 -p "$ISA_MQTT_PORT" -i "it66-$1" -u "$1" -P "$(cat "$TMP/$1.jwt")" -q 0 \
    -t "isa/devices/$1/commands" >"$TMP/$1.cmds" 2>"$TMP/$1.err" &
  PIDS+=($!)
  mqtt_subscribed "it66-$1" "$1"
}
mpub() { # ID TOPIC JSON: the device publishes over MQTT
  mqtt mosquitto_pub -i "it66-pub-$1-$RANDOM" -u "$1" -P "$(cat "$TMP/$1.jwt")" -q 1 -t "isa/devices/$1/$2" -m "$3"
}
is "$(mqtt_device "$mq1")$(mqtt_device "$mq2")$(mqtt_device "$mq3")" ttt \
  "three frames get their MQTT credential and subscribe to their commands (mosquitto_sub, QoS 1)"

# The fleet says it is alive: over HTTP, firmware 1.0.0 (the ahead one 9.0.0); mq1 and mq3 over
# MQTT; mq2 stays offline.
grep -v -e "^$mq1 " -e "^$mq2 " -e "^$mq3 " "$TMP/fleet" >"$TMP/http"
fleet "$TMP/http" POST /v1/device/heartbeat '{"firmware_version": "1.0.0"}'
is "$(statuses)" "200x$((N - 4))" "$((N - 4)) frames heartbeat over HTTP with their own token (firmware 1.0.0)"
grep "^$ahead " "$TMP/all" >"$TMP/ahead"
fleet "$TMP/ahead" POST /v1/device/heartbeat '{"firmware_version": "9.0.0"}'
mpub "$mq1" heartbeat '{"firmware_version": "1.0.0", "message_id": "hb-1"}'
mpub "$mq3" heartbeat '{"firmware_version": "1.0.0", "message_id": "hb-1"}'
is "$(wait_for "SELECT count(*) FROM device.devices WHERE model = '$M' AND organization_id = '$org' AND status = 'online'" $((N - 1)) 20)" \
  $((N - 1)) "two more over MQTT: $((N - 1)) of the $N online, one offline"

# ---------------------------------------------------------------- rollout A starts: group 1
as "$tadm" POST "/v1/ota/rollouts/$ra/state" "${JSON[@]}" -d '{"state": "running"}'
is "$ST $(field state) $(field current_group)" "200 running 1" "the rollout starts over HTTP: running, group 1 open"
is "$(sql "SELECT count(*) || ' ' || count(*) FILTER (WHERE device_id = '$stranger') FROM ota.rollout_devices WHERE rollout_id = '$ra'")" "$N 0" \
  "each of the organization's $N frames has its group; the model's frame outside it has none"
is "$(sql "SELECT count(*) FROM ota.rollout_devices WHERE rollout_id = '$ra'
             AND group_no <> ota.device_group(device_id, rollout_id, '{20,30,50}')")" 0 "  the groups are ota.device_group's"
sizes=$(sql "SELECT string_agg(n::text, ' ' ORDER BY g) FROM (SELECT group_no g, count(*) n FROM ota.rollout_devices
                                                            WHERE rollout_id = '$ra' GROUP BY 1) s")
like "$sizes" '^[0-9]+ [0-9]+ [0-9]+$' "three groups ($sizes devices)"
g1=$(sql "SELECT count(*) FROM ota.rollout_devices WHERE rollout_id = '$ra' AND group_no = 1 AND device_id <> '$ahead'")
is "$(n_commands "$ra") $(n_events update_available "$ra")" "$g1 $g1" \
  "the online frames of group 1 are offered it: $g1 commands ota.update, as many ota.update_available"
is "$(n_commands "$ra" "device_id IN (SELECT device_id FROM ota.rollout_devices WHERE rollout_id = '$ra' AND group_no > 1)")" 0 \
  "  no device of groups 2 and 3"

# the MQTT device of group 1 receives the offer
got_offer() { # ID ROLLOUT [N]: waits (10 s) for its Nth ota.update of ROLLOUT over MQTT (default the first); prints it
  local i
  for i in $(seq 100); do
    [ "$(offers "$1" "$2" | wc -l)" -ge "${3:-1}" ] && break
    sleep 0.1
  done
  offers "$1" "$2" | sed -n "${3:-1}p"
}
offers() { jq -c --arg r "$2" 'select(.command == "ota.update" and .args.rollout_id == $r)' "$TMP/$1.cmds" 2>/dev/null; }
offer=$(got_offer "$mq1" "$ra")
is "$(jq -r '[.command, .args.rollout_id, .args.version, .args.sha256, .args.size, .args.key_id] | join(" ")' <<<"$offer")" \
  "ota.update $ra 1.1.0 $fw_sha 1572865 it66-vendor-$run" \
  "group 1's MQTT frame receives ota.update on isa/devices/<id>/commands: rollout, version, SHA-256, size, key"

# the HTTP devices of group 1 ask, download, report
in_group "$TMP/http" "$ra" 1 >"$TMP/h1"
in_group "$TMP/http" "$ra" 2 >"$TMP/h2"
in_group "$TMP/http" "$ra" 3 >"$TMP/h3"
fleet "$TMP/h1" POST /v1/device/ota/check
is "$(statuses) $(jq -r '[.body.state, .body.version, .body.rollout_id] | join(" ")' "$TMP/out" | sort -u)" \
  "200x$(wc -l <"$TMP/h1") offered 1.1.0 $ra" "POST /v1/device/ota/check: each HTTP frame of group 1 has its offer"
jq -r '.body.download.url' "$TMP/out" | head -n 3 >"$TMP/urls"
for u in $(cat "$TMP/urls"); do curl -s -o "$TMP/dl" "$U$u"; sha256sum "$TMP/dl" | cut -d' ' -f1; done | sort -u >"$TMP/shas"
is "$(wc -l <"$TMP/urls") $(cat "$TMP/shas")" "3 $fw_sha" "  three of them download the firmware through their signed URL: the release's SHA-256"
cat "$TMP/h2" "$TMP/h3" >"$TMP/h23"
fleet "$TMP/h23" POST /v1/device/ota/check
is "$(statuses) $(jq -r '.body' "$TMP/out" | sort -u)" "200x$(wc -l <"$TMP/h23") null" "  the frames of groups 2 and 3 have none (null)"
# a frame speaks only for itself
read -r x_id x_tok < <(sed -n 1p "$TMP/h1"); y_id=$(sed -n 2p "$TMP/h1" | cut -d' ' -f1)
post /v1/device/ota/progress "{\"device_id\": \"$y_id\", \"rollout_id\": \"$ra\", \"status\": \"completed\"}" "$x_tok"
is "$ST $(dstate "$ra" "$y_id")" "400 offered" "a frame reporting for another (device_id in the body) is refused: 400, the other's update unchanged"
report() { # LIST ROLLOUT STATUS [REASON]
  fleet "$1" POST /v1/device/ota/progress "$(jq -nc --arg r "$2" --arg s "$3" --arg e "${4:-}" \
                                              '{rollout_id: $r, status: $s} + (if $e == "" then {} else {reason: $e} end)')"
}
for s in downloading installing completed; do
  report "$TMP/h1" "$ra" "$s"
  echo "$(statuses) $(jq -r '.body' "$TMP/out" | sort -u)"
done >"$TMP/reports"
n1=$(wc -l <"$TMP/h1")
is "$(paste -sd' ' "$TMP/reports")" "200x$n1 downloading 200x$n1 installing 200x$n1 completed" \
  "POST /v1/device/ota/progress: they report downloading, installing, completed"
advance
is "$(rstate "$ra") $(n_commands "$ra" "device_id IN (SELECT device_id FROM ota.rollout_devices WHERE rollout_id = '$ra' AND group_no > 1)")" \
  "running 1 0" "advance_rollouts: group 1 is not complete while the MQTT frame has not reported (threshold 100 %): group 2 stays closed"

# ---------------------------------------------------------------- the MQTT frame of group 1: interrupted download, resumed
cmd=$(jq -r .command_id <<<"$offer")
url=$U$(jq -r .args.download.url <<<"$offer")
ack() { # ID COMMAND_ID OTA_STATUS [MESSAGE_ID]
  mpub "$1" acks "$(jq -nc --arg c "$2" --arg s "$3" --arg m "${4:-$3-$2}" '{command_id: $c, ok: true, result: {ota: $s}, message_id: $m}')"
}
ack "$mq1" "$cmd" downloading
is "$(wait_for "SELECT state FROM ota.rollout_devices WHERE command_id = '$cmd'" downloading 20)" downloading \
  "its ack {ok, result: {ota: downloading}} over MQTT reaches ota through the bridge: downloading"
half=$((1572865 / 2))
curl -s "$url" | head -c "$half" >"$TMP/fw.part"
is "$(stat -c %s "$TMP/fw.part")" "$half" "the download is interrupted halfway ($half bytes)"
code=$(curl -s -C - -D "$TMP/resume.h" -o "$TMP/fw.part" -w '%{http_code}' "$url")
is "$code $(tr -d '\r' <"$TMP/resume.h" | sed -n 's/^content-range: //Ip')" \
  "206 bytes $half-1572864/1572865" "curl --continue-at resumes it with Range: 206, the second half"
is "$(sha256sum "$TMP/fw.part" | cut -d' ' -f1)" "$(jq -r .args.sha256 <<<"$offer")" \
  "the resumed file's SHA-256 is the offer's (the release's)"
jq -j .args.manifest <<<"$offer" >"$TMP/offered-manifest"
ok "the device verifies the offered manifest with the vendor's key (isa-ota-sign verify)" \
  "$SIGN" verify "$vendor_pub" "$TMP/offered-manifest" "$(jq -r .args.signature <<<"$offer")"
ack "$mq1" "$cmd" installing
ack "$mq1" "$cmd" completed
is "$(wait_for "SELECT state FROM ota.rollout_devices WHERE command_id = '$cmd'" completed 20)" completed \
  "it acks installing, then completed, over MQTT"
is "$(sql "SELECT state || ' ' || result FROM device.commands WHERE command_id = '$cmd'")" 'acknowledged {"ota": "downloading"}' \
  "  the device service took the first ack as the command's acknowledgement"

advance
g2=$(sql "SELECT count(*) FROM ota.rollout_devices WHERE rollout_id = '$ra' AND group_no = 2 AND device_id <> '$ahead'")
is "$(rstate "$ra") $(n_commands "$ra" "device_id IN (SELECT device_id FROM ota.rollout_devices WHERE rollout_id = '$ra' AND group_no = 2)")" \
  "running 2 $((g2 - 1))" "group 1 complete: advance_rollouts opens group 2, its $((g2 - 1)) online frames offered"
is "$(dstate "$ra" "$mq2") $(n_commands "$ra" "device_id = '$mq2'")" "pending 0" "  the offline frame of group 2 is pending, not offered"

# ---------------------------------------------------------------- group 2: the HTTP frames, the frame that comes online
for s in downloading installing completed; do report "$TMP/h2" "$ra" "$s"; statuses; done >"$TMP/reports"
n2=$(wc -l <"$TMP/h2")
is "$(paste -sd' ' "$TMP/reports")" "200x$n2 200x$n2 200x$n2" "group 2's HTTP frames report downloading, installing, completed"
advance
is "$(rstate "$ra")" "running 2" "group 2 waits for its offline frame"
online_events() { sql "SELECT count(*) FROM device.outbox WHERE event_type = 'device.online' AND data ->> 'device_id' = '$mq2'"; }
mpub "$mq2" heartbeat '{"firmware_version": "1.0.0", "message_id": "hb-1"}'
offer=$(got_offer "$mq2" "$ra")
is "$(jq -r '.command + " " + .args.rollout_id' <<<"$offer") $(online_events)" "ota.update $ra 1" \
  "it comes online (heartbeat over MQTT → device.online → ota): it receives ota.update over MQTT"
cmd=$(jq -r .command_id <<<"$offer")
# offline again before it answered, then online again: no second offer
sql "UPDATE device.devices SET last_seen_at = now() - interval '1 hour' WHERE device_id = '$mq2'; SELECT device.mark_offline()" >/dev/null
is "$(sql "SELECT status FROM device.devices WHERE device_id = '$mq2'")" offline "it goes offline without answering"
mpub "$mq2" heartbeat '{"message_id": "hb-2"}'
is "$(wait_for "SELECT count(*) FROM device.outbox WHERE event_type = 'device.online' AND data ->> 'device_id' = '$mq2'" 2 20)" 2 \
  "and comes online again: a second device.online"
second=$(sql "SELECT id FROM device.outbox WHERE event_type = 'device.online' AND data ->> 'device_id' = '$mq2' ORDER BY id DESC LIMIT 1")
is "$(wait_for "SELECT count(*) FROM isa.inbox WHERE service = 'ota' AND event_id = '$second'" 1 20)" 1 "  ota handled it"
is "$(n_events update_available "$ra" "data ->> 'device_id' = '$mq2'") $(n_commands "$ra" "device_id = '$mq2'")" "1 1" \
  "ota.update_available was published once for it, one command ota.update"
again=$(got_offer "$mq2" "$ra" 2)
is "$(jq -r '.command_id + " " + (.attempt | tostring)' <<<"$again")" "$cmd 2" \
  "  (the device service sent the same open command again, attempt 2: the offer is not repeated)"
ack "$mq2" "$cmd" downloading; ack "$mq2" "$cmd" installing; ack "$mq2" "$cmd" completed
is "$(wait_for "SELECT state FROM ota.rollout_devices WHERE command_id = '$cmd'" completed 20)" completed "it completes over MQTT"

advance
g3=$(sql "SELECT count(*) FROM ota.rollout_devices WHERE rollout_id = '$ra' AND group_no = 3 AND device_id <> '$ahead'")
is "$(rstate "$ra") $(n_commands "$ra" "device_id IN (SELECT device_id FROM ota.rollout_devices WHERE rollout_id = '$ra' AND group_no = 3)")" \
  "running 3 $g3" "group 2 complete: group 3 opens, its $g3 frames offered"

# ---------------------------------------------------------------- group 3, the rollout completes
offer=$(got_offer "$mq3" "$ra")
cmd=$(jq -r .command_id <<<"$offer")
curl -s -o "$TMP/fw3" "$U$(jq -r .args.download.url <<<"$offer")"
is "$(sha256sum "$TMP/fw3" | cut -d' ' -f1)" "$fw_sha" "group 3's MQTT frame downloads the firmware of its offer"
ack "$mq3" "$cmd" downloading; ack "$mq3" "$cmd" installing; ack "$mq3" "$cmd" completed
for s in downloading installing completed; do report "$TMP/h3" "$ra" "$s"; statuses; done >"$TMP/reports"
n3=$(wc -l <"$TMP/h3")
is "$(paste -sd' ' "$TMP/reports")" "200x$n3 200x$n3 200x$n3" "group 3's HTTP frames report downloading, installing, completed"
is "$(wait_for "SELECT state FROM ota.rollout_devices WHERE command_id = '$cmd'" completed 20)" completed "and the MQTT one over MQTT"
advance
is "$(rstate "$ra")" "completed 3" "advance_rollouts: the last group complete, the rollout is completed"
as "$tadm" GET "/v1/ota/rollouts/$ra"
is "$ST $(field state) $(jq -r '[.counts[] | .completed // 0] | add' <<<"$BODY") $(jq -r '[.counts[] | .skipped // 0] | add' <<<"$BODY")" \
  "200 completed $((N - 1)) 1" "GET /v1/ota/rollouts/{id}: $((N - 1)) completed, one skipped"
is "$(sql "SELECT state || ': ' || reason FROM ota.rollout_devices WHERE rollout_id = '$ra' AND device_id = '$ahead'") $(n_commands "$ra" "device_id = '$ahead'")" \
  "skipped: anti-rollback: it runs 9.0.0, higher than 1.1.0, and the rollout allows no downgrade 0" \
  "the frame running 9.0.0 was never offered 1.1.0 (anti-rollback)"
is "$(n_events update_available "$ra") $(sql "SELECT count(DISTINCT data ->> 'device_id') FROM ota.outbox WHERE event_type = 'ota.update_available' AND data ->> 'rollout_id' = '$ra'") $(n_events update_completed "$ra") $(n_events update_failed "$ra")" \
  "$((N - 1)) $((N - 1)) $((N - 1)) 0" "events: one ota.update_available and one ota.update_completed per frame, no failure"
is "$(wait_for "SELECT count(*) FILTER (WHERE firmware_version = '1.1.0') || ' ' || count(*) FILTER (WHERE firmware_version = '9.0.0')
                  FROM device.devices WHERE model = '$M' AND organization_id = '$org'" "$((N - 1)) 1" 30)" "$((N - 1)) 1" \
  "ota.update_completed reached the device service: device.firmware_version is 1.1.0 on the $((N - 1)) frames"

# ---------------------------------------------------------------- a downgrade is refused
release 0.9.0 "$TMP/vendor.seed"
old_rel=$(field release_id)
is "$ST $(field version)" "201 0.9.0" "a release 0.9.0 exists (an older build)"
post /v1/ota/rollouts "$(jq -nc --arg r "$old_rel" '{release_id: $r, name: "it66 downgrade", min_version: "1.0.0"}')" "$tadm"
is "$ST $(field code) $(sql "SELECT count(*) FROM ota.rollouts WHERE release_id = '$old_rel'")" "400 22023 0" \
  "a rollout of 0.9.0 to frames from 1.0.0 up (a downgrade, not allowed) is refused: 400, 22023, nothing stored"
is "$(sqlstate "SELECT ota.create_rollout('$admin', '$old_rel', 'it66 downgrade', min_version => '1.1.0')")" 22023 "… in SQL too: 22023"
dn=$(sql "SELECT rollout_id FROM ota.create_rollout('$admin', '$old_rel', 'it66 no range', organization_ids => ARRAY['$org'::uuid])")
sql "SELECT ota.set_rollout_state('$admin', '$dn', 'running')" >/dev/null
for _ in 1 2 3 4; do advance; done
is "$(rstate "$dn") $(sql "SELECT string_agg(DISTINCT state || ' ' || left(reason, 14), ',') FROM ota.rollout_devices WHERE rollout_id = '$dn' AND state <> 'pending'") $(n_commands "$dn") $(n_events update_available "$dn")" \
  "completed 3 skipped anti-rollback: 0 0" \
  "a rollout of 0.9.0 without a range offers no frame running 1.1.0 (each skipped, anti-rollback) and completes"

# ---------------------------------------------------------------- rollout B: failures halt it at the error threshold
fleet "$TMP/http" POST /v1/device/heartbeat '{}'
release 1.2.0 "$TMP/vendor.seed"
rb_rel=$(field release_id)
post /v1/ota/rollouts "$(jq -nc --arg r "$rb_rel" --arg o "$org" \
  '{release_id: $r, name: "it66 B", groups: [20, 30, 50], success_threshold: 90, error_threshold: 20, organization_ids: [$o]}')" "$tadm"
rb=$(field rollout_id)
is "$ST $(field state)" "201 draft" "rollout B of release 1.2.0: error threshold 20 %"
b1=$(pick "$rb" 1)
is "$(mqtt_device "$b1")" t "its first frame of group 1 subscribes over MQTT"
as "$tadm" POST "/v1/ota/rollouts/$rb/state" "${JSON[@]}" -d '{"state": "running"}'
is "$ST $(field state) $(field current_group)" "200 running 1" "rollout B starts"
gb1=$(sql "SELECT count(*) FROM ota.rollout_devices WHERE rollout_id = '$rb' AND group_no = 1 AND state = 'offered'")
is "$(n_commands "$rb") $(n_events update_available "$rb")" "$gb1 $gb1" "its group 1 is offered 1.2.0 ($gb1 frames)"
need=$(((gb1 * 20 + 99) / 100))     # failures that reach 20 % of the group
offer=$(got_offer "$b1" "$rb")
cmd=$(jq -r .command_id <<<"$offer")
is "$(jq -r '.args.version' <<<"$offer")" 1.2.0 "the MQTT frame of group 1 receives it"
mpub "$b1" acks "$(jq -nc --arg c "$cmd" '{command_id: $c, ok: false, error: "flash write failed", message_id: "fail-1"}')"
is "$(wait_for "SELECT state || ': ' || reason FROM ota.rollout_devices WHERE command_id = '$cmd'" "failed: flash write failed" 20)" \
  "failed: flash write failed" "it acks {ok: false, error} over MQTT: failed, with its reason"
in_group "$TMP/http" "$rb" 1 | grep -v "^$b1 " >"$TMP/b1"
# …and over MQTT it cannot answer another frame's offer: an ack of its command on its own topic is not OTA's
victim=$(sed -n "${need}p" "$TMP/b1" | cut -d' ' -f1)
acks() { sql "SELECT count(*) FROM isa.inbox WHERE service = 'ota' AND event_type = 'device.ack'"; }
n_acks=$(acks)
ack "$b1" "$(sql "SELECT command_id FROM ota.rollout_devices WHERE rollout_id = '$rb' AND device_id = '$victim'")" completed
is "$(wait_for "SELECT count(*) FROM isa.inbox WHERE service = 'ota' AND event_type = 'device.ack'" $((n_acks + 1)) 20) $(dstate "$rb" "$victim")" \
  "$((n_acks + 1)) offered" "an MQTT frame acking another frame's ota.update (on its own acks topic) changes nothing"
head -n $((need - 2)) "$TMP/b1" >"$TMP/fail-a"
sed -n "$((need - 1))p" "$TMP/b1" >"$TMP/fail-b"
[ "$need" -gt 2 ] && report "$TMP/fail-a" "$rb" failed "battery too low"
advance
is "$(rstate "$rb")" "running 1" "$((need - 1)) of $gb1 failed (below 20 %): advance_rollouts keeps it running"
report "$TMP/fail-b" "$rb" failed "checksum mismatch"
is "$(statuses) $(jq -r .body "$TMP/out")" "200x1 failed" "one more frame reports failed over HTTP"
advance
is "$(rstate "$rb") $(sql "SELECT halt_reason FROM ota.rollouts WHERE rollout_id = '$rb'")" \
  "halted 1 error threshold: $need of $gb1 devices of group 1 failed (threshold 20%)" \
  "$need of $gb1 (20 %): advance_rollouts halts it, and says why"
is "$(sql "SELECT string_agg(DISTINCT state, ',') FROM ota.rollout_devices WHERE rollout_id = '$rb' AND group_no > 1")" cancelled \
  "the frames of groups 2 and 3 are cancelled"
is "$(n_events update_failed "$rb" "data ->> 'state' = 'failed'") $(n_events update_available "$rb") $(n_commands "$rb")" "$need $gb1 $gb1" \
  "ota.update_failed once per failure; offers only to group 1"
# whatever happens next, the others are never offered it
advance
g23=$(sed -n '1p' <(in_group "$TMP/http" "$rb" 2))
sql "UPDATE device.devices SET last_seen_at = now() - interval '1 hour' WHERE device_id = '${g23%% *}'; SELECT device.mark_offline()" >/dev/null
echo "$g23" >"$TMP/g23"
fleet "$TMP/g23" POST /v1/device/heartbeat '{}'
is "$(wait_for "SELECT count(*) FROM isa.inbox WHERE service = 'ota' AND event_id = (SELECT id FROM device.outbox WHERE event_type = 'device.online'
                  AND data ->> 'device_id' = '${g23%% *}' ORDER BY id DESC LIMIT 1)" 1 20)" 1 \
  "a frame of group 2 comes online again (ota handled its device.online)"
in_group "$TMP/http" "$rb" 3 >"$TMP/b3"
fleet "$TMP/b3" POST /v1/device/ota/check
is "$(statuses) $(jq -r .body "$TMP/out" | sort -u)" "200x$(wc -l <"$TMP/b3") null" "group 3's frames ask: nothing for them"
report "$TMP/b3" "$rb" completed
is "$(statuses) $(jq -r .body.code "$TMP/out" | sort -u)" "400x$(wc -l <"$TMP/b3") 23514" \
  "  and a report on B is refused: 400, 23514 (not in progress)"
advance
is "$(rstate "$rb") $(n_commands "$rb") $(n_commands "$rb" "device_id IN (SELECT device_id FROM ota.rollout_devices WHERE rollout_id = '$rb' AND group_no > 1)") $(n_events update_available "$rb")" \
  "halted 1 $gb1 0 $gb1" "after more advances, a device online again and their asking: no device beyond group 1 was ever offered 1.2.0"

secs=$(($(date +%s) - t0))
# (not a check: test/run.sh bounds a file's time, and speed belongs in bench/)
note "the story took ${secs} s"
done_testing
