#!/usr/bin/env bash
# tools/gen-docs.sh — rewrites the generated parts of the docs from the
# database of the current environment (eval "$(tools/stack.sh NAME env)"
# first, on a database made from this checkout): the event catalogue in
# docs/events.md (isa.event_catalogue_markdown()) and the route table in
# docs/http.md (isa.http_routes_markdown()).  Tests 40 and 41 check both.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

replace() { # file marker sql
  local gen
  gen=$(psql -X -A -t -q -v ON_ERROR_STOP=1 -c "$3")
  GEN="$gen" python3 - "$1" "$2" <<'PY'
import os, sys
path, marker = sys.argv[1], sys.argv[2]
s = open(path).read()
begin, end = f'<!-- {marker}:begin -->', f'<!-- {marker}:end -->'
a, b = s.index(begin) + len(begin), s.index(end)
open(path, 'w').write(s[:a] + '\n' + os.environ['GEN'].strip('\n') + '\n' + s[b:])
PY
  echo "gen-docs: $1 ($2)"
}

replace "$ROOT/docs/events.md" catalogue "SELECT isa.event_catalogue_markdown()"
replace "$ROOT/docs/http.md" routes "SELECT isa.http_routes_markdown()"
