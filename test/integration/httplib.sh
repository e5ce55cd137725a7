# test/integration/httplib.sh — helpers of the HTTP tests (81, 82), sourced
# after lib.sh.  Needs TMP (a scratch directory), U (the stack's isa-httpd
# URL), ROOT and STACK (the stack's name).

# call METHOD PATH [curl args...]: the answer's status in ST, body in BODY,
# headers in $TMP/h (BASE: the server, default the stack's isa-httpd).  With
# ERRORS_LOG set, every 4xx/5xx body is appended to it.
call() {
  local m=$1 p=$2
  shift 2
  ST=$(curl -s -m 20 -o "$TMP/b" -D "$TMP/h" -w '%{http_code}' -X "$m" "$@" "${BASE:-$U}$p")
  BODY=$(cat "$TMP/b")
  if [ -n "${ERRORS_LOG:-}" ] && [[ $ST =~ ^[45] ]]; then { cat "$TMP/b"; echo; } >>"$ERRORS_LOG"; fi
  return 0
}
# SIGHUP the stack's isa-httpd: it reads the routes and the signing keys again
reload_httpd() { "$ROOT/tools/stack.sh" "$STACK" httpd-reload 2>/dev/null || kill -HUP "$(cat "$ISA_STACK_DIR/httpd.pid")"; }
hdr() { tr -d '\r' <"$TMP/h" | sed -n "s/^$1: //Ip" | head -n 1; }
field() { jq -r ".$1" <<<"$BODY" 2>/dev/null; }
auth() { printf 'Authorization: Bearer %s' "$1"; }
JSON=(-H 'Content-Type: application/json')
