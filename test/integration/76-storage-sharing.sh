# Storage sharing through real NATS and HTTP (docs/services/storage.md,
# "Sharing"): alice uploads a photo and shares it with her family; bob, a
# member, reads it over HTTP; bob shares a photo of his own with the family.
# alice removes bob: organization.member_removed reaches storage through
# the bridge, bob's share with the family ends (file.unshared, reason
# member_removed) and bob's read of alice's photo is refused (404, as for a
# file he never could see).  A direct share with an expiry works until it
# expires, then gives nothing; an album shared with bob shows him its photo.
source "$(dirname "$0")/lib.sh"
: "${ISA_HTTP_URL:?run me in the test stack environment (tools/stack.sh NAME env)}"
U=$ISA_HTTP_URL
run="$$$(date +%s)"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT

# call METHOD PATH TOKEN [curl args]: the status in ST, the body in BODY
call() {
  local m=$1 p=$2 t=$3
  shift 3
  ST=$(curl -s -m 20 -o "$TMP/b" -w '%{http_code}' -X "$m" -H "Authorization: Bearer $t" "$@" "$U$p")
  BODY=$(cat "$TMP/b" 2>/dev/null)
}
json() { call "$1" "$2" "$3" -H 'Content-Type: application/json' -d "$4"; }
user() { # WHO: prints "user_id token"
  local email="it76-$1-${run}@example.com" id token
  id=$(curl -s -X POST "$U/v1/auth/signup" -H 'Content-Type: application/json' \
         -d "{\"email\": \"$email\", \"name\": \"IT76 $1\", \"password\": \"it76-password-$run\"}" | jq -r .user_id)
  token=$(curl -s -X POST "$U/v1/auth/login" -H 'Content-Type: application/json' \
            -d "{\"email\": \"$email\", \"password\": \"it76-password-$run\"}" | jq -r .access_token)
  echo "$id $token"
}
upload() { # TOKEN NAME FILE: the new file's id
  curl -s -X POST "$U/v1/files?name=$2" -H "Authorization: Bearer $1" -H 'Content-Type: image/jpeg' \
       --data-binary @"$3" | jq -r .file_id
}

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
is "$(subs_running)" "$(subs_want)/$(subs_want)" "every subscription (storage's of organization.member_removed among them) has its consumer"

read -r alice ta < <(user alice)
read -r bob tb < <(user bob)
like "$alice $bob" '^[0-9a-f-]{36} [0-9a-f-]{36}$' "alice and bob sign up and log in over HTTP"

head -c 70000 /dev/urandom >"$TMP/photo.jpg"
head -c 3000 /dev/urandom >"$TMP/bobs.jpg"
photo=$(upload "$ta" photo.jpg "$TMP/photo.jpg")
bobs=$(upload "$tb" bobs.jpg "$TMP/bobs.jpg")
like "$photo $bobs" '^[0-9a-f-]{36} [0-9a-f-]{36}$' "alice and bob each upload a photo"

call GET "/v1/files/$photo/content" "$tb"
is "$ST" 404 "bob cannot read alice's photo before it is shared: 404, as for a file that does not exist"

# the family: alice creates it, invites bob, bob accepts
json POST /v1/organizations "$ta" '{"kind": "family", "name": "IT76 family", "idempotency_key": "it76-fam"}'
fam=$(jq -r .org_id <<<"$BODY")
json POST "/v1/organizations/$fam/invitations" "$ta" "{\"email\": \"it76-bob-${run}@example.com\", \"role\": \"member\"}"
json POST /v1/invitations/accept "$tb" "{\"token\": $(jq .token <<<"$BODY")}"
is "$ST $(jq -r .role <<<"$BODY")" "200 member" "bob accepts alice's invitation to the family"

json POST "/v1/files/$photo/shares" "$ta" "{\"org_id\": \"$fam\", \"idempotency_key\": \"it76-share-1\"}"
is "$ST $(jq -r '[.kind, .resource_id, .org_id, .access] | join(" ")' <<<"$BODY")" "201 file $photo $fam read" \
   "alice shares the photo with the family (POST /v1/files/{file_id}/shares): 201"
share=$(jq -r .share_id <<<"$BODY")
json POST "/v1/files/$photo/shares" "$ta" "{\"org_id\": \"$fam\", \"idempotency_key\": \"it76-share-1\"}"
is "$ST $(jq -r .share_id <<<"$BODY")" "201 $share" "a retry with the same idempotency key returns the same share"
is "$(sql "SELECT count(*) FROM storage.outbox WHERE event_type = 'file.shared' AND data->>'share_id' = '$share'")" 1 \
   "and file.shared is published once"
ST=$(curl -s -o "$TMP/got.jpg" -w '%{http_code}' -H "Authorization: Bearer $tb" "$U/v1/files/$photo/content")
is "$ST" 200 "bob, a member of the family, downloads the photo: 200"
ok "  byte for byte" cmp "$TMP/got.jpg" "$TMP/photo.jpg"
call GET /v1/shared-with-me "$tb"
is "$(jq -r '[.[] | .resource_id] | join(",")' <<<"$BODY")" "$photo" "GET /v1/shared-with-me lists it for bob"
call GET "/v1/files/$photo/shares" "$tb"
is "$ST" 403 "bob may read the photo but not list its shares: 403"

json POST "/v1/files/$bobs/shares" "$tb" "{\"org_id\": \"$fam\"}"
bshare=$(jq -r .share_id <<<"$BODY")
is "$ST" 201 "bob shares his own photo with the family"
call GET "/v1/files/$bobs" "$ta"
is "$ST $(jq -r .name <<<"$BODY")" "200 bobs.jpg" "alice reads bob's photo through the family"

# bob removed from the family: the reaction through NATS
call DELETE "/v1/organizations/$fam/members/$bob" "$ta"
is "$ST" 204 "alice removes bob from the family"
removed=$(sql "SELECT id FROM organization.outbox WHERE event_type = 'organization.member_removed'
                AND data->>'org_id' = '$fam' AND data->>'user_id' = '$bob'")
is "$(wait_for "SELECT count(*) FROM storage.inbox WHERE event_id = '$removed'" 1 20)" 1 \
   "organization.member_removed reached storage through the bridge"
is "$(sql "SELECT revoke_reason FROM storage.shares WHERE share_id = '$bshare'")" member_removed \
   "bob's share with the family ended in that reaction"
is "$(sql "SELECT data->>'reason' FROM storage.outbox WHERE event_type = 'file.unshared' AND data->>'share_id' = '$bshare'")" member_removed \
   "  file.unshared, reason member_removed"
call GET "/v1/files/$photo/content" "$tb"
is "$ST" 404 "bob's read of alice's photo is refused after the removal: 404"
call GET "/v1/files/$bobs" "$ta"
is "$ST" 404 "and alice no longer reads bob's photo"
is "$(sql "SELECT revoked_at IS NULL FROM storage.shares WHERE share_id = '$share'")" t \
   "alice's own share with the family stays"

# a direct share that expires
exp=$(sql "SELECT to_char((now() + interval '3 seconds') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
json POST "/v1/files/$photo/shares" "$ta" "{\"user_id\": \"$bob\", \"expires_at\": \"$exp\"}"
is "$ST $(jq -r .user_id <<<"$BODY")" "201 $bob" "alice shares the photo with bob directly, for 3 seconds"
call GET "/v1/files/$photo" "$tb"
is "$ST" 200 "bob reads it while the share lasts"
sleep 3.5
call GET "/v1/files/$photo" "$tb"
is "$ST" 404 "once it has expired, bob reads nothing: 404"
call GET /v1/shared-with-me "$tb"
is "$BODY" "[]" "and it is no longer listed as shared with him"

# an album shared with bob
json POST /v1/albums "$ta" '{"name": "Summer"}'
album=$(jq -r .album_id <<<"$BODY")
is "$ST" 201 "alice creates an album"
json POST "/v1/albums/$album/files" "$ta" "{\"file_id\": \"$photo\"}"
is "$ST $(jq -r .file_count <<<"$BODY")" "200 1" "and puts the photo in it"
call GET "/v1/albums/$album/files" "$tb"
is "$ST" 404 "bob cannot see the album yet"
json POST "/v1/albums/$album/shares" "$ta" "{\"user_id\": \"$bob\"}"
call GET "/v1/albums/$album/files" "$tb"
is "$ST $(jq -r '[.[] | .file_id] | join(",")' <<<"$BODY")" "200 $photo" "once it is shared with him, bob lists its photo"
call GET "/v1/files/$photo" "$tb"
is "$ST" 200 "and reads the photo through the album"
json POST "/v1/albums/$album/files" "$tb" "{\"file_id\": \"$bobs\"}"
is "$ST" 403 "a read share of an album does not let bob add to it: 403"

done_testing
