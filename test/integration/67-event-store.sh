# The event store through real NATS, the bridge and HTTP
# (docs/services/event.md): what the services publish for two users signed
# up over HTTP lands in event.events once each, with its subject, user and
# organization; an external producer's events on external.> too; the store
# announces its batches with event.batch.stored and, storing those, announces
# nothing more; over HTTP a user reads their own events and their
# organization's, not another user's (404, 403), and their timeline.
source "$(dirname "$0")/lib.sh"
: "${ISA_HTTP_URL:?run me in a stack environment (tools/stack.sh NAME env)}"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
U=$ISA_HTTP_URL
STACK=$(basename "$ISA_STACK_DIR")
NATS="node $(dirname "$0")/../natsclient/isa-nats.mjs"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
source "$(dirname "$0")/httplib.sh"
run="$$$(date +%s)"

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
is "$(subs_running)" "$(subs_want)/$(subs_want)" "every subscription (the store's on > among them) has its consumer"

read -r alice atok < <(signup_login "it67-alice-$run@example.com" "IT67 Alice")
read -r bob btok < <(signup_login "it67-bob-$run@example.com" "IT67 Bob")
is "$(sql "SELECT count(*) FROM account.users WHERE user_id IN ('$alice', '$bob')") ${#atok} ${#btok}" \
   "2 $(( ${#atok} > 100 ? ${#atok} : -1 )) $(( ${#btok} > 100 ? ${#btok} : -1 ))" "alice and bob signed up and logged in over HTTP"
fam=$(sql "SELECT org_id FROM organization.create_organization('$alice', 'family', 'IT67 family $run')")

# ---------------------------------------------------------------- every event once
# The events the services published about alice and bob: each is stored once,
# with its subject and the user (or organization) it concerns.
theirs="SELECT o.id, o.source, o.event_type FROM isa.outbox o
         WHERE o.data ->> 'user_id' IN ('$alice', '$bob') OR o.data ->> 'org_id' = '$fam'"
is "$(wait_for "SELECT count(*) FROM ($theirs) o WHERE NOT EXISTS (SELECT FROM event.events e WHERE e.id = o.id)" 0 30)" 0 \
   "every event the services published about alice, bob and the family reached the store through NATS"
n_theirs=$(sql "SELECT count(*) FROM ($theirs) o")
is "$([ "$n_theirs" -ge 8 ] && echo many)" many "they are many ($n_theirs: user.created, logins, the family, permissions …)"
is "$(sql "SELECT count(*) || ' ' || count(DISTINCT e.id) FROM event.events e WHERE e.id IN (SELECT id FROM ($theirs) o)")" \
   "$n_theirs $n_theirs" "each is stored once"
is "$(sql "SELECT count(*) FROM ($theirs) o JOIN event.events e ON e.id = o.id
            WHERE e.subject <> o.source || '.' || o.event_type")" 0 "each with its subject, <source>.<event_type>"
is "$(sql "SELECT e.user_id FROM event.events e
            WHERE e.subject = 'account_service.user.created' AND e.data ->> 'user_id' = '$alice'")" "$alice" \
   "user.created is alice's (user_id from data)"
is "$(sql "SELECT count(*) FROM event.events e WHERE e.subject = 'organization_service.organization.created'
            AND e.organization_id = '$fam'")" 1 "organization.created is the family's (organization_id from data.org_id)"
is "$(sql "SELECT count(*) FROM (SELECT i.event_id FROM isa.inbox i JOIN isa.subscriptions s ON s.durable_name = i.consumer
            WHERE s.service = 'event' AND i.event_id IN (SELECT id FROM ($theirs) o)) x")" "$n_theirs" \
   "the bridge recorded them in the store's inbox (a redelivery is skipped)"

# ---------------------------------------------------------------- external.>
$NATS --creds "$ISA_NATS_PRODUCER_CREDS" pub-events usage.recorded.model --count 3 --source external \
  --data-template "{\"usage_id\": \"it67-{{i}}-$run\", \"user_id\": \"$alice\", \"model\": \"it67-model\", \"input_tokens\": 1, \"output_tokens\": 0}" \
  >/dev/null
is "$(wait_for "SELECT count(*) FROM event.events WHERE subject = 'external.usage.recorded.model' AND user_id = '$alice'" 3 30)" 3 \
   "an external producer's three usage events are stored, as alice's"

# ---------------------------------------------------------------- not feeding itself
is "$(wait_for "SELECT count(*) > 0 FROM event.outbox WHERE event_type = 'event.batch.stored'" t 10)" t \
   "the store announces its batches (event.batch.stored)"
# once the store has stored its own announcements, it announces nothing more
settled="SELECT count(*) FROM event.outbox x WHERE x.subject IS NULL AND NOT EXISTS (SELECT FROM event.events e WHERE e.id = x.id)"
is "$(wait_for "$settled" 0 30)" 0 "the store stored its own announcements too"
# Other tests' events may still arrive (and be announced): each announcement
# must stand for at least one stored event of another source, which a loop
# of announcements announcing announcements would not.  (Both counts in one
# snapshot: a batch commits its events and its announcement together.)
counts="SELECT (SELECT count(*) FROM event.outbox WHERE event_type = 'event.batch.stored') || ' '
            || (SELECT count(*) FROM event.events WHERE source <> 'event_service')"
read -r n1 f1 <<<"$(sql "$counts")"
sleep 2
is "$(wait_for "$settled" 0 10)" 0 "the store has stored every announcement made since"
read -r n2 f2 <<<"$(sql "$counts")"
ok "and storing them announced nothing more: $((n2 - n1)) announcement(s) in 2 s for $((f2 - f1)) other events stored, no loop" \
   test "$((n2 - n1))" -le "$((f2 - f1))"
is "$(sql "SELECT count(*) FROM event.outbox x WHERE x.event_type = 'event.batch.stored' AND (x.data ->> 'count')::int = 0
            AND (x.data ->> 'skipped')::int = 0")" 0 "no announcement of an empty batch"

# ---------------------------------------------------------------- HTTP: who reads what
call GET "/v1/events?row_limit=1000" -H "$(auth "$atok")"
is "$ST" 200 "GET /v1/events: 200"
is "$(jq "[.[] | select(.subject == \"account_service.user.created\" and .user_id == \"$alice\")] | length" <<<"$BODY")" 1 \
   "alice's list has her user.created"
is "$(jq "[.[] | select(.organization_id == \"$fam\")] | length > 0" <<<"$BODY")" true "and her family's events"
is "$(jq "[.[] | select(.user_id == \"$bob\")] | length" <<<"$BODY")" 0 "and none of bob's"
is "$(jq -r '[.[].occurred_at] | . == (sort | reverse)' <<<"$BODY")" true "newest first"
ev=$(sql "SELECT id FROM event.events WHERE subject = 'account_service.user.created' AND user_id = '$alice'")
call GET "/v1/events/$ev" -H "$(auth "$atok")"
is "$ST $(field id) $(field user_id)" "200 $ev $alice" "GET /v1/events/{event_id}: alice reads her event"
call GET "/v1/events/$ev" -H "$(auth "$btok")"
is "$ST" 404 "bob does not: 404, as an unknown event"
call GET "/v1/events?event_type=usage.recorded.*&source=external" -H "$(auth "$atok")"
is "$ST $(jq length <<<"$BODY")" "200 3" "a type filter and a source: alice's three usage events"
call GET "/v1/events?event_type=usage..x" -H "$(auth "$atok")"
is "$ST $(field code)" "400 22023" "a malformed filter: 400, 22023"
from=$(date -u -d '-1 day' +%Y-%m-%dT%H:00:00Z); to=$(date -u -d '+1 day' +%Y-%m-%dT%H:00:00Z)
call GET "/v1/events/timeline?bucket=day&from_time=$from&to_time=$to" -H "$(auth "$atok")"
is "$ST" 200 "GET /v1/events/timeline: 200"
is "$(jq '[.[].count] | add' <<<"$BODY")" "$(sql "SELECT count(*) FROM event.events WHERE user_id = '$alice'")" \
   "it counts all of alice's own events"
is "$(jq '[.[].by_type["usage.recorded.model"] // 0] | add' <<<"$BODY")" 3 "per type too"
call GET "/v1/organizations/$fam/events" -H "$(auth "$atok")"
is "$ST $(jq "[.[] | select(.organization_id != \"$fam\")] | length" <<<"$BODY")" "200 0" \
   "GET /v1/organizations/{org_id}/events: the family's only, for alice"
call GET "/v1/organizations/$fam/events" -H "$(auth "$btok")"
is "$ST $(field code)" "403 42501" "bob is not a member: 403"
call GET "/v1/organizations/$fam/events/timeline?bucket=month&from_time=$from&to_time=$to" -H "$(auth "$atok")"
is "$ST $(jq '[.[].count] | add > 0' <<<"$BODY")" "200 true" "GET /v1/organizations/{org_id}/events/timeline: the family's calendar"
call GET "/v1/organizations/$fam/events/timeline?bucket=month&from_time=$from&to_time=$to" -H "$(auth "$btok")"
is "$ST" 403 "not bob's: 403"
call GET /v1/events
is "$ST" 401 "no token: 401"

done_testing
