# docs/events.md carries the event catalogue generated from isa.event_types:
# what is between its markers must be what isa.event_catalogue_markdown() says.
source "$(dirname "$0")/lib.sh"

root=$(cd "$(dirname "$0")/../.." && pwd)
doc=$(sed -n '/<!-- catalogue:begin -->/,/<!-- catalogue:end -->/p' "$root/docs/events.md" | sed '1d;$d')
gen=$(sql "SELECT isa.event_catalogue_markdown()")
[ -z "$gen" ] && gen="No event types are registered yet."
# compare without leading/trailing blank lines
trim() { sed -e '/./,$!d' | tac | sed -e '/./,$!d' | tac; }
is "$(printf '%s\n' "$doc" | trim)" "$(printf '%s\n' "$gen" | trim)" \
  "docs/events.md's catalogue matches isa.event_types (regenerate it with SELECT isa.event_catalogue_markdown())"

done_testing
