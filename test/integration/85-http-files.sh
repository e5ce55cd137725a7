# Files through isa-httpd (storage service, docs/services/storage.md): random
# files of 0, 1, 256 Ki, 256 Ki + 1 bytes and ~3 MiB are uploaded with
# Content-Length and with Transfer-Encoding: chunked, come back with their
# size and SHA-256 and download byte for byte; ranges (206, clamped ends, 416
# with bytes */size), the ETag and If-None-Match (304), HEAD; another user
# gets 404 (not 403), no token 401; DELETE; file.uploaded / file.deleted in
# the outbox; names that are paths or hold NUL, control characters, too many
# characters are refused and store nothing, a Unicode name comes back
# RFC 6266-encoded; the size limit (413, with and without Content-Length);
# signed download URLs (public, ranged; tampered, another file's, expired are
# refused; without the secret a clear error); an upload abandoned mid-way is
# never visible and is aborted at once (a stuck one is purged); isa-httpd's memory does not grow with the size
# of an upload or a download.  Node's fetch is a second, independent client
# for one upload (both framings) and download round trip.
source "$(dirname "$0")/lib.sh"
: "${ISA_HTTP_URL:?run me in the test stack environment (tools/stack.sh NAME env)}"
U=$ISA_HTTP_URL
run="$$$(date +%s)"
TMP=$(mktemp -d)
SECRET="it85-${run}-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
bgpid=
sampler=
cleanup() {
  [ -n "$bgpid" ] && kill "$bgpid" 2>/dev/null
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
  sql "ALTER SYSTEM RESET isa.storage_max_file_bytes" >/dev/null
  sql "ALTER SYSTEM RESET isa.storage_url_secret" >/dev/null
  sql "SELECT pg_reload_conf()" >/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

# header NAME FILE: the value of a header in a curl -D dump (the last one)
header() { tr -d '\r' <"$2" | sed -n "s/^$1: //Ip" | tail -n 1; }
uri() { jq -rn --arg s "$1" '$s | @uri'; }
slice() { tail -c +$(($2 + 1)) "$1" | head -c "$3"; } # FILE OFFSET LENGTH
setting() { # NAME VALUE|RESET: ALTER SYSTEM and a reload (the caller waits until it is seen)
  if [ "$2" = RESET ]; then sql "ALTER SYSTEM RESET $1" >/dev/null; else sql "ALTER SYSTEM SET $1 = '$2'" >/dev/null; fi
  sql "SELECT pg_reload_conf()" >/dev/null
  sleep 0.2
}

# --- two users, signed up and logged in over HTTP
user() { # WHO: prints "user_id token"
  local email="it85-$1-${run}@example.com" id token
  id=$(curl -s -X POST "$U/v1/auth/signup" -H 'Content-Type: application/json' \
         -d "{\"email\": \"$email\", \"name\": \"IT85 $1\", \"password\": \"it85-password-$run\"}" | jq -r .user_id)
  token=$(curl -s -X POST "$U/v1/auth/login" -H 'Content-Type: application/json' \
            -d "{\"email\": \"$email\", \"password\": \"it85-password-$run\"}" | jq -r .access_token)
  echo "$id $token"
}
read -r uid token < <(user owner)
read -r uid2 token2 < <(user other)
like "$uid $uid2" '^[0-9a-f-]{36} [0-9a-f-]{36}$' "two users sign up over HTTP"
like "$token" '^[^.]+\.[^.]+\.[^.]+$' "and log in (access token)"
auth=(-H "Authorization: Bearer $token")
auth2=(-H "Authorization: Bearer $token2")
is "$(sql "SELECT current_setting('isa.storage_max_file_bytes')")" 64MB "isa.storage_max_file_bytes is at its default (64MB)"

# upload NAME FILE cl|chunked [CONTENT_TYPE]: the status; the answer in $TMP/up.json
upload() {
  local te=()
  [ "$3" = chunked ] && te=(-H 'Transfer-Encoding: chunked')
  rm -f "$TMP/up.json"
  curl -s -o "$TMP/up.json" -w '%{http_code}' -X POST "$U/v1/files?name=$(uri "$1")" "${auth[@]}" \
    -H "Content-Type: ${4:-application/octet-stream}" "${te[@]}" --data-binary @"$2"
}
# get URL OUT [curl args]: the status; headers in OUT.h, body in OUT (curl
# does not create OUT for an empty body: bytes OUT says 0 then)
get() { local url=$1 out=$2; shift 2; rm -f "$out" "$out.h"; curl -s -D "$out.h" -o "$out" -w '%{http_code}' "$@" "$url"; }
bytes() { if [ -e "$1" ]; then stat -c %s "$1"; else echo 0; fi; }

# --- uploads: each size with Content-Length and chunked
declare -A fid fsha
sizes=(0 1 262144 262145 $((3 * 1048576 + 12345)))
for size in "${sizes[@]}"; do
  head -c "$size" /dev/urandom >"$TMP/f$size"
  sha=$(sha256sum "$TMP/f$size" | cut -d' ' -f1)
  for mode in cl chunked; do
    k="$size-$mode"
    code=$(upload "it85-$k.bin" "$TMP/f$size" "$mode")
    is "$code $(jq -r '[.size, .sha256, .name, .content_type, .owner_id] | join(" ")' "$TMP/up.json")" \
       "201 $size $sha it85-$k.bin application/octet-stream $uid" \
       "POST /v1/files, $size bytes ($mode): 201, size and sha256 equal the local ones"
    fid[$k]=$(jq -r .file_id "$TMP/up.json"); fsha[$k]=$sha
    cp "$TMP/up.json" "$TMP/up-$k.json"
    # chunked: no size declared; chunks of 256 KiB as the body arrived
    is "$(sql "SELECT status || ' ' || coalesce(declared_size::text, 'null') || ' ' || size || ' '
                      || (SELECT count(*) || ' ' || coalesce(max(octet_length(data)), 0) FROM storage.chunks c WHERE c.file_id = f.file_id)
                 FROM storage.files f WHERE file_id = '${fid[$k]}'")" \
       "complete $([ "$mode" = cl ] && echo "$size" || echo null) $size $(((size + 262143) / 262144)) $((size < 262144 ? size : 262144))" \
       "  stored complete, declared size $([ "$mode" = cl ] && echo "= Content-Length" || echo "NULL"), in pieces of at most 256 KiB"
    code=$(get "$U/v1/files/${fid[$k]}/content" "$TMP/dl" "${auth[@]}")
    is "$code $(header content-length "$TMP/dl.h") $(header etag "$TMP/dl.h")" "200 $size \"$sha\"" \
       "  GET …/content: 200, Content-Length $size, ETag the sha256"
    ok "  and the bytes downloaded are the bytes uploaded" cmp "$TMP/dl" "$TMP/f$size"
  done
done

# --- list and metadata
code=$(get "$U/v1/files" "$TMP/list" "${auth[@]}")
is "$code $(jq -r '[.[].file_id] | sort | join(" ")' "$TMP/list")" "200 $(printf '%s\n' "${fid[@]}" | sort | paste -sd ' ')" \
   "GET /v1/files lists exactly the caller's ten files"
is "$(jq -r '[.[].created_at] | . == (sort | reverse)' "$TMP/list")" true "newest first"
k=262145-cl
code=$(get "$U/v1/files/${fid[$k]}" "$TMP/meta" "${auth[@]}")
is "$code $(jq -cS . "$TMP/meta")" "200 $(jq -cS . "$TMP/up-$k.json")" "GET /v1/files/{file_id}: the file_info the upload returned"
is "$(jq -r 'keys | join(",")' "$TMP/meta")" "content_type,created_at,file_id,name,owner_id,sha256,size" \
   "  with file_id, owner_id, name, content_type, size, sha256, created_at"

# --- Range on the ~3 MiB file
k="${sizes[4]}-cl"; F=$TMP/f${sizes[4]}; S=${sizes[4]}; C=$U/v1/files/${fid[$k]}/content
range() { # RANGE FIRST LAST: 206, Content-Range, Content-Length and the bytes
  local code
  code=$(get "$C" "$TMP/r" "${auth[@]}" -H "Range: $1")
  is "$code $(header content-range "$TMP/r.h") $(header content-length "$TMP/r.h")" "206 bytes $2-$3/$S $(($3 - $2 + 1))" \
     "Range: $1 → 206, Content-Range bytes $2-$3/$S"
  slice "$F" "$2" $(($3 - $2 + 1)) >"$TMP/want"
  ok "  the $(($3 - $2 + 1)) bytes are exact" cmp "$TMP/r" "$TMP/want"
}
range "bytes=0-9" 0 9
range "bytes=262140-262150" 262140 262150           # across the first chunk boundary
range "bytes=1048570-1310730" 1048570 1310730       # over several chunks
range "bytes=100-" 100 $((S - 1))
range "bytes=-5" $((S - 5)) $((S - 1))
range "bytes=100-99999999" 100 $((S - 1))           # end beyond the size: clamped
range "bytes=-99999999" 0 $((S - 1))                # suffix longer than the file: all of it
for r in "bytes=$S-" "bytes=$((S + 10))-$((S + 20))" "bytes=abc" "bytes=5-1" "bytes=0-1,4-5" "bytes=-0" "bytes=" "bytes=1-x"; do
  code=$(get "$C" "$TMP/r" "${auth[@]}" -H "Range: $r")
  is "$code $(header content-range "$TMP/r.h") $(bytes "$TMP/r")" "416 bytes */$S 0" \
     "Range: $r → 416, Content-Range bytes */$S, no body"
done
# RFC 9110 §14.2: a Range with a unit the server does not understand MUST be ignored.
code=$(get "$C" "$TMP/r" "${auth[@]}" -H "Range: items=0-1")
is "$code $(bytes "$TMP/r")" "200 $S" "Range: items=0-1 (unknown unit) is ignored: 200 with the whole file (RFC 9110 §14.2)"
code=$(get "$U/v1/files/${fid[1-cl]}/content" "$TMP/r" "${auth[@]}" -H "Range: bytes=0-0")
is "$code $(header content-range "$TMP/r.h") $(cmp -s "$TMP/r" "$TMP/f1" && echo same)" "206 bytes 0-0/1 same" "a 1-byte file: bytes=0-0 is its byte"
code=$(get "$U/v1/files/${fid[0-cl]}/content" "$TMP/r" "${auth[@]}" -H "Range: bytes=0-")
is "$code $(header content-range "$TMP/r.h")" "416 bytes */0" "the empty file: any range is unsatisfiable (416 bytes */0)"

# --- ETag, If-None-Match, HEAD
etag="\"${fsha[$k]}\""
get "$C" "$TMP/e" "${auth[@]}" >/dev/null
is "$(header etag "$TMP/e.h") $(header accept-ranges "$TMP/e.h")" "$etag bytes" "ETag is \"<sha256>\", Accept-Ranges: bytes"
is "$(header content-disposition "$TMP/e.h")" "attachment; filename*=UTF-8''it85-$k.bin" "Content-Disposition: attachment with the name"
for inm in "$etag" "W/$etag" "\"0000\", $etag" "*"; do
  code=$(get "$C" "$TMP/e" "${auth[@]}" -H "If-None-Match: $inm")
  is "$code $(bytes "$TMP/e") $(header etag "$TMP/e.h")" "304 0 $etag" "If-None-Match: $inm → 304, no body, the ETag"
done
# RFC 9110 §8.6 wants a 304 without Content-Length (or the 200's); libmicrohttpd
# 0.9.75 always adds "Content-Length: 0" to an empty response. Not asserted:
# a known gap of docs/http.md.
echo "# known gap: the 304 carries Content-Length: 0 (libmicrohttpd 0.9.75)"
code=$(get "$C" "$TMP/e" "${auth[@]}" -H "If-None-Match: \"${fsha[0-cl]}\"")
is "$code $(bytes "$TMP/e")" "200 $S" "If-None-Match with another ETag → 200 and the content"
code=$(get "$C" "$TMP/e" "${auth[@]}" -H "If-None-Match: $etag" -H "Range: bytes=0-9")
is "$code" 304 "If-None-Match that matches wins over Range: 304"
code=$(curl -s -I -o "$TMP/head.h" -w '%{http_code} %{size_download}' "${auth[@]}" "$C")
is "$code $(header content-length "$TMP/head.h") $(header etag "$TMP/head.h")" "200 0 $S $etag" \
   "HEAD …/content: 200, Content-Length $S (the full size), ETag, no body"
code=$(curl -s -I -o "$TMP/head.h" -w '%{http_code} %{size_download}' "${auth[@]}" "$U/v1/files/${fid[0-chunked]}/content")
is "$code $(header content-length "$TMP/head.h")" "200 0 0" "HEAD of the empty file: 200, Content-Length 0"

# --- Node's fetch: an independent client, both framings, download and a range
head -c $((2 * 1048576 + 777)) /dev/urandom >"$TMP/node.bin"
IT85_U=$U IT85_TOKEN=$token IT85_FILE=$TMP/node.bin IT85_NAME="it85-node-$run.bin" \
node --input-type=module -e '
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
const { IT85_U: U, IT85_TOKEN: token, IT85_FILE: path, IT85_NAME: name } = process.env;
const data = readFileSync(path);
const sha = createHash("sha256").update(data).digest("hex");
const auth = { authorization: `Bearer ${token}` };
const out = {};
const url = `${U}/v1/files?name=${encodeURIComponent(name)}`;
// 1. a body of known length (Content-Length)
let r = await fetch(url, { method: "POST", headers: { ...auth, "content-type": "image/png" }, body: data });
let j = await r.json();
out.up = `${r.status} ${j.size === data.length} ${j.sha256 === sha} ${j.content_type}`;
const id = j.file_id;
// 2. a stream (Transfer-Encoding: chunked), in uneven pieces
const pieces = [1, 65536, 262143, 5, data.length];
const stream = new ReadableStream({
  start(c) { let at = 0; for (const p of pieces) { const e = Math.min(at + p, data.length); if (e > at) c.enqueue(data.subarray(at, e)); at = e; } c.close(); },
});
r = await fetch(url, { method: "POST", headers: { ...auth, "content-type": "image/png" }, body: stream, duplex: "half" });
j = await r.json();
out.up_stream = `${r.status} ${j.size === data.length} ${j.sha256 === sha}`;
out.stream_id = j.file_id;
// 3. the whole content
r = await fetch(`${U}/v1/files/${id}/content`, { headers: auth });
const got = Buffer.from(await r.arrayBuffer());
out.dl = `${r.status} ${got.equals(data)} ${r.headers.get("etag") === `"${sha}"`} ${r.headers.get("content-type")} ${r.headers.get("content-length")}`;
// 4. a range across the chunk boundary of the streamed one
r = await fetch(`${U}/v1/files/${out.stream_id}/content`, { headers: { ...auth, range: "bytes=262143-524288" } });
const part = Buffer.from(await r.arrayBuffer());
out.rng = `${r.status} ${r.headers.get("content-range")} ${part.equals(data.subarray(262143, 524289))}`;
out.id = id;
console.log(JSON.stringify(out));
' >"$TMP/node.json" 2>"$TMP/node.err"
[ -s "$TMP/node.err" ] && sed 's/^/# node stderr: /' "$TMP/node.err"
N=$((2 * 1048576 + 777))
is "$(jq -r .up "$TMP/node.json")" "201 true true image/png" "Node fetch: upload with Content-Length → 201, size and sha256 equal Node's own"
is "$(jq -r .up_stream "$TMP/node.json")" "201 true true" "Node fetch: upload of a ReadableStream (chunked, uneven pieces) → 201, size and sha256"
is "$(jq -r .dl "$TMP/node.json")" "200 true true image/png $N" "Node fetch: download → 200, identical bytes, ETag, Content-Type, Content-Length"
is "$(jq -r .rng "$TMP/node.json")" "206 bytes 262143-524288/$N true" "Node fetch: Range across the chunk boundary → 206, exact bytes"
node_ids=("$(jq -r .id "$TMP/node.json")" "$(jq -r .stream_id "$TMP/node.json")")
is "$(sql "SELECT string_agg(coalesce(declared_size::text, 'null'), ' ' ORDER BY declared_size NULLS LAST) FROM storage.files
            WHERE file_id IN ('${node_ids[0]}', '${node_ids[1]}')")" "$N null" "  (the first declared its size, the stream did not)"

# --- access: another user, no token
k=262144-cl
for p in "" /content; do
  code=$(get "$U/v1/files/${fid[$k]}$p" "$TMP/x" "${auth2[@]}")
  is "$code $(jq -r .code "$TMP/x")" "404 P0002" "another user: GET /v1/files/{file_id}$p → 404 (not 403: existence is not revealed)"
done
is "$(curl -s -I -o /dev/null -w '%{http_code}' "${auth2[@]}" "$U/v1/files/${fid[$k]}/content")" 404 "another user: HEAD …/content → 404"
is "$(curl -s -o /dev/null -w '%{http_code}' "${auth2[@]}" -X DELETE "$U/v1/files/${fid[$k]}") $(curl -s -o /dev/null -w '%{http_code}' "${auth2[@]}" -X POST "$U/v1/files/${fid[$k]}/download-url")" \
   "404 404" "another user: DELETE and POST …/download-url → 404"
is "$(curl -s "${auth2[@]}" "$U/v1/files")" "[]" "another user's list is empty"
is "$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "$U/v1/files/$(sql "SELECT gen_random_uuid()")")" 404 "an unknown file id → 404"
unauth=""
for req in "GET /v1/files" "GET /v1/files/${fid[$k]}" "GET /v1/files/${fid[$k]}/content" "DELETE /v1/files/${fid[$k]}" \
           "POST /v1/files/${fid[$k]}/download-url" "POST /v1/files?name=x"; do
  m=${req%% *}; body=()
  [ "$req" = "POST /v1/files?name=x" ] && body=(-H 'Content-Type: text/plain' --data-binary x)
  unauth+="$(curl -s -o "$TMP/x" -w '%{http_code}' -X "$m" "${body[@]}" "$U${req#* }")/$(jq -r .code "$TMP/x") "
done
is "$unauth" "401/28000 401/28000 401/28000 401/28000 401/28000 401/28000 " \
   "without a token: list, metadata, content, DELETE, download-url, upload → 401"
is "$(sql "SELECT status FROM storage.files WHERE file_id = '${fid[$k]}'")" complete "the file is still there"

# --- DELETE, events
is "$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" -X DELETE "$U/v1/files/${fid[$k]}")" 204 "DELETE /v1/files/{file_id} by its owner → 204"
is "$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "$U/v1/files/${fid[$k]}") $(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "$U/v1/files/${fid[$k]}/content")" \
   "404 404" "then its metadata and content are 404 for the owner"
is "$(curl -s "${auth[@]}" "$U/v1/files" | jq --arg id "${fid[$k]}" '[.[] | select(.file_id == $id)] | length') $(curl -s "${auth[@]}" "$U/v1/files" | jq length)" \
   "0 11" "and it is no longer listed (11 files left)"
is "$(sql "SELECT status || ' ' || (SELECT count(*) FROM storage.chunks c WHERE c.file_id = f.file_id) FROM storage.files f WHERE file_id = '${fid[$k]}'")" \
   "deleted 0" "the row is marked deleted, its chunks are gone"
is "$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" -X DELETE "$U/v1/files/${fid[$k]}")" 204 "DELETE again: 204, nothing more happens"
ids_sql=$(printf "'%s'," "${fid[@]}" "${node_ids[@]}"); ids_sql=${ids_sql%,}
is "$(sql "SELECT count(*) FROM storage.outbox o JOIN storage.files f ON f.file_id = (o.data ->> 'file_id')::uuid
            WHERE o.event_type = 'file.uploaded' AND f.file_id IN ($ids_sql)
              AND o.data ->> 'owner_id' = '$uid' AND (o.data ->> 'size')::bigint = f.size
              AND o.data ->> 'sha256' = encode(f.sha256, 'hex') AND o.data ->> 'name' = f.name AND o.data ->> 'content_type' = f.content_type")" 12 \
   "storage.outbox: one file.uploaded for each of the 12 uploads, with its owner, name, type, size and sha256"
is "$(sql "SELECT count(*) || ' ' || string_agg(data ->> 'reason' || ' ' || (data ->> 'size') || ' ' || (data ->> 'owner_id'), ',')
             FROM storage.outbox WHERE event_type = 'file.deleted' AND data ->> 'file_id' = '${fid[$k]}'")" \
   "1 owner 262144 $uid" "one file.deleted (reason owner, its size and owner), not a second for the second DELETE"

# --- file names
rows() { sql "SELECT (SELECT count(*) FROM storage.files WHERE owner_id = '$uid') || ' ' || (SELECT count(*) FROM storage.chunks c JOIN storage.files f USING (file_id) WHERE f.owner_id = '$uid')"; }
before=$(rows)
long=$(printf 'n%.0s' $(seq 256))
bad=""
for q in "../etc/passwd" "..%2Fetc%2Fpasswd" "a%2Fb" "a/b" "a%5Cb" ".." "." "%2E%2E" "%00" "a%0Ab" "a%0Db" "a%09b" "a%1Bb" "a%7Fb" "$long" ""; do
  code=$(curl -s -o "$TMP/x" -w '%{http_code}' -X POST "$U/v1/files?name=$q" "${auth[@]}" -H 'Content-Type: text/plain' --data-binary 'payload')
  # storage refuses a bad name (22023); isa-httpd refuses control characters and %00 in
  # any query argument before (ISA400)
  case "$code $(jq -r .code "$TMP/x")" in "400 22023" | "400 ISA400") ;; *) bad+=" name=${q:0:20}: $code $(jq -c . "$TMP/x")" ;; esac
done
is "$bad" "" "bad names (../etc/passwd, a/b, a\\b, .., ., NUL alone, LF, CR, tab, ESC, DEL, 256 characters, empty) → 400 (22023, or ISA400 for control characters)"
is "$(curl -s -o "$TMP/x" -w '%{http_code}' -X POST "$U/v1/files" "${auth[@]}" -H 'Content-Type: text/plain' --data-binary x) $(jq -r .code "$TMP/x")" \
   "400 ISA400" "no name at all → 400"
is "$(rows)" "$before" "the refused names stored nothing (no row, no chunk)"
code=$(curl -s -o "$TMP/x" -w '%{http_code}' -X POST "$U/v1/files?name=evil.exe%00.txt" "${auth[@]}" -H 'Content-Type: text/plain' --data-binary 'payload')
is "$code $(jq -r '.code // .name' "$TMP/x") $(rows)" "400 ISA400 $before" \
   "a name with a NUL inside (evil.exe%00.txt) → 400 and nothing stored (not a file named as cut at the NUL)"
name="café 中文 \"q\";.txt"
code=$(upload "$name" "$TMP/f1" cl "text/plain; charset=utf-8")
id=$(jq -r .file_id "$TMP/up.json")
is "$code $(jq -r '.name + "|" + .content_type' "$TMP/up.json")" "201 $name|text/plain; charset=utf-8" "a Unicode name (é, 中文, a quote, a semicolon) is accepted as given"
get "$U/v1/files/$id/content" "$TMP/x" "${auth[@]}" >/dev/null
is "$(header content-disposition "$TMP/x.h")" "attachment; filename*=UTF-8''caf%C3%A9%20%E4%B8%AD%E6%96%87%20%22q%22%3B.txt" \
   "  and comes back in Content-Disposition as filename*=UTF-8'' percent-encoded"
is "$(header content-type "$TMP/x.h")" "text/plain; charset=utf-8" "  with its Content-Type (parameters kept)"
name255=$(printf 'é%.0s' $(seq 255))
is "$(upload "$name255" "$TMP/f1" cl) $(jq -r '.name | length' "$TMP/up.json")" "201 255" "a name of 255 characters (510 bytes) is accepted"

# --- limits: isa.storage_max_file_bytes lowered to 1MB; content types
setting isa.storage_max_file_bytes 1MB
is "$(wait_for "SELECT current_setting('isa.storage_max_file_bytes')" 1MB 10)" 1MB "isa.storage_max_file_bytes lowered to 1MB"
head -c $((2 * 1048576)) /dev/urandom >"$TMP/f2m"
head -c 1048576 /dev/urandom >"$TMP/f1m"
code=$(upload "it85-2m-cl-$run" "$TMP/f2m" cl)
is "$code $(jq -r .code "$TMP/up.json")" "413 54000" "2 MiB with Content-Length → 413 (54000), answered at the headers"
is "$(sql "SELECT count(*) FROM storage.files WHERE name = 'it85-2m-cl-$run'")" 0 "  no row at all"
code=$(upload "it85-2m-chunked-$run" "$TMP/f2m" chunked)
is "$code $(jq -r .code "$TMP/up.json")" "413 54000" "2 MiB chunked → 413 (54000) once the limit is passed"
is "$(wait_for "SELECT count(*) FROM storage.files WHERE name = 'it85-2m-chunked-$run'" 0 5)" 0 \
   "  nothing left: the refused upload was aborted (storage.abort_upload), not left for the purge"
chunked413=$(sql "SELECT file_id FROM storage.files WHERE name = 'it85-2m-chunked-$run'")
is "$(curl -s "${auth[@]}" "$U/v1/files" | jq --arg n "it85-2m-chunked-$run" '[.[] | select(.name == $n)] | length') $(
      [ -z "$chunked413" ] && echo "404 404" ||
        echo "$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "$U/v1/files/$chunked413") $(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "$U/v1/files/$chunked413/content")")" \
   "0 404 404" "  and it is invisible: not listed, metadata and content 404"
is "$(upload "it85-1m-$run" "$TMP/f1m" chunked)" 201 "exactly 1 MiB (the limit), chunked → 201"
before=$(rows)
bad=""
for ct in "textplain" "text/" "/plain" "a/b/c" "text/plain; charset" "text/pl ain"; do
  code=$(upload "it85-ct-$run" "$TMP/f1" cl "$ct")
  [ "$code $(jq -r .code "$TMP/up.json")" = "400 22023" ] || bad+=" [$ct]: $code $(jq -c . "$TMP/up.json")"
done
is "$bad" "" "a Content-Type that is not type/subtype[; name=value] → 400 (22023)"
is "$(rows)" "$before" "  and nothing is stored"
is "$(curl -s -o "$TMP/x" -w '%{http_code}' -X POST "$U/v1/files?name=it85-noct" "${auth[@]}" -H 'Content-Type:' --data-binary x) $(jq -r .content_type "$TMP/x")" \
   "201 application/octet-stream" "no Content-Type → application/octet-stream"
setting isa.storage_max_file_bytes RESET
is "$(wait_for "SELECT current_setting('isa.storage_max_file_bytes')" 64MB 10)" 64MB "isa.storage_max_file_bytes reset to its default"

# --- signed download URLs (first without a secret: empty, as a stack has a development one)
setting isa.storage_url_secret ''
wait_for "SELECT current_setting('isa.storage_url_secret')" "" 10 >/dev/null
k="${sizes[4]}-chunked"; F=$TMP/f${sizes[4]}; S=${sizes[4]}
code=$(curl -s -o "$TMP/x" -w '%{http_code}' -X POST "${auth[@]}" "$U/v1/files/${fid[$k]}/download-url")
nosecret_sign="$code $(jq -r .code "$TMP/x")"
like "$nosecret_sign" '^5[0-9][0-9] 55000$' "without isa.storage_url_secret: POST …/download-url → 5xx (55000)"
like "$(jq -r .message "$TMP/x")" "isa.storage_url_secret is not set" "  with a message that names the missing setting"
setting isa.storage_url_secret "$SECRET"
is "$(wait_for "SELECT current_setting('isa.storage_url_secret') = '$SECRET'" t 10)" t "isa.storage_url_secret set (ALTER SYSTEM, reload)"
code=$(curl -s -o "$TMP/sig" -w '%{http_code}' -X POST "${auth[@]}" -H 'Content-Type: application/json' -d '{"ttl_seconds": 120}' \
         "$U/v1/files/${fid[$k]}/download-url")
is "$code $(jq -r '[.file_id == "'"${fid[$k]}"'", (.expires - now | floor | . > 100 and . <= 120), (.signature | test("^[A-Za-z0-9_-]{43}$"))] | join(" ")' "$TMP/sig")" \
   "200 true true true" "POST …/download-url {ttl_seconds: 120} → file_id, expires (now + 120), signature (base64url)"
exp=$(jq -r .expires "$TMP/sig"); sig=$(jq -r .signature "$TMP/sig")
D="$U/v1/downloads/${fid[$k]}?expires=$exp&signature=$sig"
code=$(get "$D" "$TMP/sd")
is "$code $(header content-length "$TMP/sd.h") $(header etag "$TMP/sd.h")" "200 $S \"${fsha[$k]}\"" "GET /v1/downloads/{file_id}?expires&signature without a token → 200"
ok "  the bytes are the file's" cmp "$TMP/sd" "$F"
code=$(get "$D" "$TMP/sd" -H "Range: bytes=262140-262150")
slice "$F" 262140 11 >"$TMP/want"
is "$code $(header content-range "$TMP/sd.h") $(cmp -s "$TMP/sd" "$TMP/want" && echo exact)" "206 bytes 262140-262150/$S exact" \
   "  Range works on it: 206, exact bytes"
is "$(curl -s -I -o "$TMP/sd.h" -w '%{http_code} %{size_download}' "$D") $(header content-length "$TMP/sd.h")" "200 0 $S" "  HEAD: 200, full Content-Length, no body"
other=${fid[262145-chunked]}
tampered=$( [ "${sig: -1}" = A ] && echo "${sig%?}B" || echo "${sig%?}A")
code=$(curl -s -o "$TMP/sw" -w '%{http_code}' "$U/v1/downloads/${fid[$k]}?expires=$exp&signature=$tampered"); st_t="$code/$(jq -r .code "$TMP/sw")"
code=$(curl -s -o "$TMP/sw" -w '%{http_code}' "$U/v1/downloads/$other?expires=$exp&signature=$sig"); st_o="$code/$(jq -r .code "$TMP/sw")"
code=$(curl -s -o "$TMP/sw" -w '%{http_code}' "$U/v1/downloads/${fid[$k]}?expires=$((exp + 3600))&signature=$sig"); st_x="$code/$(jq -r .code "$TMP/sw")"
curl -s -o "$TMP/sig1" -X POST "${auth[@]}" -H 'Content-Type: application/json' -d '{"ttl_seconds": 1}' "$U/v1/files/${fid[$k]}/download-url"
sleep 2
code=$(curl -s -o "$TMP/sw" -w '%{http_code}' "$U/v1/downloads/${fid[$k]}?expires=$(jq -r .expires "$TMP/sig1")&signature=$(jq -r .signature "$TMP/sig1")")
st_e="$code/$(jq -r .code "$TMP/sw")"
like "$st_t $st_o $st_x $st_e" '^[45][0-9][0-9]/42501 [45][0-9][0-9]/42501 [45][0-9][0-9]/42501 [45][0-9][0-9]/42501$' \
   "tampered signature, another file's id, a later expires, an expired URL (ttl 1, 2 s later): refused (42501), never 2xx"
is "${st_t%/*} ${st_o%/*} ${st_x%/*} ${st_e%/*}" "403 403 403 403" "  with 403 (a signature is not a token: no 401 / WWW-Authenticate: Bearer)"
is "$(curl -s -o /dev/null -w '%{http_code}' "${auth2[@]}" "$U/v1/downloads/${fid[$k]}?expires=$exp&signature=$tampered")" 403 \
   "  (the same tampered URL with some user's token: 403)"
curl -s -o "$TMP/sigdel" -X POST "${auth[@]}" "$U/v1/files/${fid[1-chunked]}/download-url"
curl -s -o /dev/null "${auth[@]}" -X DELETE "$U/v1/files/${fid[1-chunked]}"
is "$(curl -s -o "$TMP/sw" -w '%{http_code}' "$U/v1/downloads/${fid[1-chunked]}?expires=$(jq -r .expires "$TMP/sigdel")&signature=$(jq -r .signature "$TMP/sigdel")") $(jq -r .code "$TMP/sw")" \
   "404 P0002" "a valid signed URL of a file deleted since → 404"
setting isa.storage_url_secret ''
is "$(wait_for "SELECT current_setting('isa.storage_url_secret')" "" 10)" "" "isa.storage_url_secret emptied"
code=$(curl -s -o "$TMP/sw" -w '%{http_code}' "$D")
is "$code $(jq -r .code "$TMP/sw")" "${nosecret_sign}" "without the secret the URL signed before is refused like signing: ${nosecret_sign} (not a download)"
is "$(grep -c -F "$SECRET" "$ISA_PGDATA/../postgresql.log" "$ISA_HTTPD_LOG" 2>/dev/null | awk -F: '{s += $NF} END {print s + 0}')" 0 \
   "no line of the server or isa-httpd log carries the secret"

# --- an upload abandoned mid-way
mkfifo "$TMP/feed"
curl -s -o /dev/null -X POST "$U/v1/files?name=it85-abandoned-$run" "${auth[@]}" -H 'Content-Type: application/octet-stream' -T - <"$TMP/feed" &
bgpid=$!
exec 7>"$TMP/feed"
head -c $((1048576 + 1000)) /dev/urandom >&7
is "$(wait_for "SELECT status || ' ' || (size >= 1048576) FROM storage.files WHERE owner_id = '$uid' AND name = 'it85-abandoned-$run'" "uploading true" 20)" \
   "uploading true" "a chunked upload in progress: streamed to the database as it arrives (1 MiB in, status uploading)"
abandoned=$(sql "SELECT file_id FROM storage.files WHERE name = 'it85-abandoned-$run'")
is "$(curl -s "${auth[@]}" "$U/v1/files" | jq --arg id "$abandoned" '[.[] | select(.file_id == $id)] | length') $(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "$U/v1/files/$abandoned")" \
   "0 404" "  while it streams the API does not show it (not listed, 404)"
kill "$bgpid"; wait "$bgpid" 2>/dev/null; bgpid=
exec 7>&-
is "$(wait_for "SELECT count(*) FROM storage.files WHERE file_id = '$abandoned'" 0 10) $(sql "SELECT count(*) FROM storage.chunks WHERE file_id = '$abandoned'") $(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "$U/v1/files/$abandoned/content")" \
   "0 0 404" "curl killed mid-way: isa-httpd aborts the upload (storage.abort_upload): no row, no chunk, its content 404"
# what a crashed isa-httpd would leave: the purge
stuck=$(sql "SELECT storage.begin_upload('$uid', 'it85-stuck-$run')")
is "$(sql "SELECT storage.purge_abandoned_uploads('0 seconds') >= 1") $(sql "SELECT count(*) FROM storage.files WHERE file_id = '$stuck'")" \
   "t 0" "storage.purge_abandoned_uploads('0 seconds') removes an upload nobody finished or aborted"

# --- isa-httpd's memory does not grow with the size of an upload or a download
pid=$(cat "$ISA_STACK_DIR/httpd.pid")
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }
head -c $((20 * 1048576)) /dev/urandom >"$TMP/f20m"
upload "it85-warmup-$run" "$TMP/f1m" cl >/dev/null
measure() { # COMMAND...: runs it while sampling VmRSS; prints "before peak" in kB
  local b
  b=$(rss)
  (while :; do rss; sleep 0.02; done) >"$TMP/rss" &
  sampler=$!
  "$@" >/dev/null
  kill "$sampler"; wait "$sampler" 2>/dev/null; sampler=
  echo "$b $( (cat "$TMP/rss"; rss) | sort -n | tail -n 1)"
}
read -r b p < <(measure upload "it85-20m-$run" "$TMP/f20m" cl)
is "$(jq -r '.size, .sha256' "$TMP/up.json" | paste -sd ' ')" "$((20 * 1048576)) $(sha256sum "$TMP/f20m" | cut -d' ' -f1)" "a 20 MiB upload (Content-Length) succeeds"
big=$(jq -r .file_id "$TMP/up.json")
is "$(((p - b) < 8192))" 1 "  isa-httpd's VmRSS grows by less than 8 MiB during it ($b kB → peak $p kB)"
read -r b p < <(measure upload "it85-20m-chunked-$run" "$TMP/f20m" chunked)
is "$(jq -r .size "$TMP/up.json") $(((p - b) < 8192))" "$((20 * 1048576)) 1" "a 20 MiB chunked upload too ($b kB → peak $p kB)"
read -r b p < <(measure curl -s -o "$TMP/d20m" "${auth[@]}" "$U/v1/files/$big/content")
ok "a 20 MiB download is exact" cmp "$TMP/d20m" "$TMP/f20m"
is "$(((p - b) < 8192))" 1 "  and VmRSS grows by less than 8 MiB during it ($b kB → peak $p kB)"

done_testing
