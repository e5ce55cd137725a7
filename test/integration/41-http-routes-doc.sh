# docs/http.md carries the route table generated from isa.http_routes:
# what is between its markers must be what isa.http_routes_markdown() says.
source "$(dirname "$0")/lib.sh"

root=$(cd "$(dirname "$0")/../.." && pwd)
doc=$(sed -n '/<!-- routes:begin -->/,/<!-- routes:end -->/p' "$root/docs/http.md" | sed '1d;$d')
gen=$(sql "SELECT isa.http_routes_markdown()")
[ -z "$gen" ] && gen="No routes are registered yet."
# compare without leading/trailing blank lines
trim() { sed -e '/./,$!d' | tac | sed -e '/./,$!d' | tac; }
is "$(printf '%s\n' "$doc" | trim)" "$(printf '%s\n' "$gen" | trim)" \
  "docs/http.md's route table matches isa.http_routes (regenerate it with SELECT isa.http_routes_markdown())"

done_testing
