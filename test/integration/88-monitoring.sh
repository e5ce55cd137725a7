# The monitoring a user plugs in (tools/monitoring/, docs/operations.md,
# "Monitoring"): promtool accepts the alerting rules and the scrape config;
# each alert fires on its test series and stays quiet on a healthy one (and
# the tests notice an alert that never or always fires); the Grafana
# dashboard parses and every expression of it is PromQL; every metric an
# alert or a panel names is on the live /metrics of this stack; the seed's
# metrics carry the seed's names and labels once an event is published and
# processed; every family has one HELP and one TYPE line; a consumer's
# pending/lag gauges rise while it is behind and fall to 0 once caught up.
source "$(dirname "$0")/lib.sh"
: "${ISA_HTTP_URL:?run me in the test stack environment (tools/stack.sh NAME env)}"
MON=$(cd "$(dirname "$0")/../../tools/monitoring" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
ET="it.monitored$$"

# --- the files, offline
ok "promtool check rules alerts.yml" promtool check rules "$MON/alerts.yml"
ok "promtool test rules alerts_test.yml: every alert fires on its series, not on the healthy ones" \
   promtool test rules "$MON/alerts_test.yml"
mkdir "$TMP/prom" && cp "$MON/prometheus.yml" "$MON/alerts.yml" "$TMP/prom/"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/prom/metrics.token"
ok "promtool check config prometheus.yml (with its rule file and a token file beside it)" \
   promtool check config "$TMP/prom/prometheus.yml"

# Each alert, made never to fire, then always to fire: the tests must fail
# both times (so each has a series that raises it and a healthy one).
alerts=$(python3 -c 'import sys, yaml; print(" ".join(r["alert"] for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"] if "alert" in r))' "$MON/alerts.yml")
is "$(wc -w <<<"$alerts")" 8 "alerts.yml has the eight alerts"
caught=""
for a in $alerts; do
  for mutant in 'vector(0) > 1' 'vector(1)'; do
    mkdir -p "$TMP/m" && cp "$MON/alerts_test.yml" "$TMP/m/"
    python3 - "$MON/alerts.yml" "$TMP/m/alerts.yml" "$a" "$mutant" <<'EOF'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
for g in doc["groups"]:
    for r in g["rules"]:
        if r.get("alert") == sys.argv[3]:
            r["expr"] = sys.argv[4]
yaml.safe_dump(doc, open(sys.argv[2], "w"))
EOF
    promtool test rules "$TMP/m/alerts_test.yml" >/dev/null 2>&1 || caught="$caught $a:${mutant// /}"
  done
done
is "$(wc -w <<<"$caught")" 16 "each alert's tests fail when it never fires and when it always fires ($caught )"

# The dashboard: JSON, panels with unique ids and a grid position, each
# target's expr valid PromQL (as a recording rule, promtool parses it).
ok "grafana-dashboard.json parses" python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$MON/grafana-dashboard.json"
is "$(python3 - "$MON/grafana-dashboard.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
panels = [p for p in d["panels"] if p["type"] != "row"]
ids = [p["id"] for p in d["panels"]]
bad = [p.get("title") for p in panels if not p.get("targets") or not p.get("gridPos") or not all(t.get("expr") for t in p["targets"])]
print(len(ids) == len(set(ids)), bad, d["uid"], len(panels) >= 15)
EOF
)" "True [] isa-overview True" "every panel has an id of its own, a grid position and targets with an expr"
python3 - "$MON/grafana-dashboard.json" "$TMP/dash-rules.yml" <<'EOF'
import json, sys, yaml
d = json.load(open(sys.argv[1]))
exprs = [t["expr"].replace("$job", ".*") for p in d["panels"] for t in p.get("targets", [])]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [{"record": "dashboard:expr:%d" % i, "expr": e}
                                                           for i, e in enumerate(exprs)]}]}, open(sys.argv[2], "w"))
EOF
ok "every panel's expr is PromQL (promtool check rules)" promtool check rules "$TMP/dash-rules.yml"

# --- the live /metrics
token_file=${ISA_METRICS_TOKEN_FILE:-$ISA_STACK_DIR/metrics.token}
METRICS_AUTH=()
[ -r "$token_file" ] && METRICS_AUTH=(-H "Authorization: Bearer $(cat "$token_file")")
scrape() { curl -s -o "$TMP/metrics" "${METRICS_AUTH[@]}" "$ISA_HTTP_URL/metrics"; }
# value NAME LABELS_JSON: the value of the sample NAME whose labels are exactly
# LABELS_JSON (label order free), "absent" if none
value() {
  python3 - "$TMP/metrics" "$1" "$2" <<'EOF'
import json, re, sys
want = json.loads(sys.argv[3])
line = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
lab = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
for l in open(sys.argv[1]):
    m = line.match(l.rstrip("\n"))
    if m and m.group(1) == sys.argv[2] and dict(lab.findall(m.group(2) or "")) == want:
        print(m.group(3)); break
else:
    print("absent")
EOF
}

sql "CREATE SCHEMA it_mon;
     CREATE TABLE it_mon.got (event_id uuid);
     GRANT USAGE ON SCHEMA it_mon TO isa_svc_billing;
     GRANT INSERT ON it_mon.got TO isa_svc_billing;
     CREATE FUNCTION it_mon.on_event(e isa.event) RETURNS void LANGUAGE plpgsql AS \$\$
     BEGIN
       PERFORM pg_sleep((e.data->>'sleep')::float8);
       INSERT INTO it_mon.got VALUES (e.id);
     END \$\$;
     SELECT isa.register_event_type('$ET', 'order_service', '1.0.0', 'integration test event');
     SELECT isa.subscribe_to_events('billing', 'order_service.$ET', 'it_mon.on_event(isa.event)',
                                    '{\"deliver_policy\": \"new\", \"batch_size\": 4}');" >/dev/null
is "$(subs_running)" "$(subs_want)/$(subs_want)" "the test subscription runs"
durable=$(sql "SELECT durable_name FROM isa.subscriptions WHERE handler = 'it_mon.on_event(isa.event)'::regprocedure")
pub="{\"service\":\"orders\",\"event_type\":\"$ET\"}"
proc="{\"service\":\"billing\",\"event_type\":\"$ET\",\"status\":\"ok\"}"
dur="{\"service\":\"billing\",\"event_type\":\"$ET\"}"
scrape
is "$(value event_published_total "$pub")" 0 "a registered event type's event_published_total is on /metrics at 0 before its first event"

# one event published and processed: the seed's names with the seed's labels
sql "SELECT isa.publish_event('$ET', 'order_service', '{\"sleep\": 0}')" >/dev/null
is "$(wait_for "SELECT count(*) FROM it_mon.got" 1 20)" 1 "the event is handled"
scrape
is "$(value event_published_total "$pub")" 1 "event_published_total{service,event_type} counts it"
is "$(value event_processed_total "$proc")" 1 "event_processed_total{service,event_type,status} counts its handling"
is "$(value event_processing_duration_seconds_count "$dur")" 1 \
   "event_processing_duration_seconds_count{service,event_type} (labels as the seed's, status dropped)"
like "$(value event_processing_duration_seconds_sum "$dur")" '^[0-9.e-]+$' "event_processing_duration_seconds_sum too"
is "$(value event_processing_duration_seconds_bucket "{\"service\":\"billing\",\"event_type\":\"$ET\",\"le\":\"+Inf\"}")" 1 \
   "and its +Inf bucket"
is "$(grep -c '^isa_event_' "$TMP/metrics")" 0 "no isa_event_* name any more (renamed in 0.2.0)"
is "$(grep -cE '^# TYPE (event_published_total counter|event_processed_total counter|event_processing_duration_seconds histogram)$' "$TMP/metrics")" 3 \
   "the seed's three typed counter, counter, histogram"

# Every family: exactly one HELP and one TYPE line, before its samples, and
# no sample without them (the exposition format, checked on the whole scrape).
is "$(python3 - "$TMP/metrics" <<'EOF'
import re, sys
help, typ, problems = {}, {}, []
for l in open(sys.argv[1]):
    l = l.rstrip("\n")
    m = re.match(r'^# (HELP|TYPE) (\S+) (.*)$', l)
    if m:
        d = help if m.group(1) == "HELP" else typ
        if m.group(2) in d: problems.append("twice: " + l)
        d[m.group(2)] = m.group(3)
        continue
    name = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)', l).group(1)
    fam = name
    for suf in ("_bucket", "_sum", "_count"):
        if name.endswith(suf) and typ.get(name[:-len(suf)]) in ("histogram", "summary"):
            fam = name[:-len(suf)]
    if fam not in help or fam not in typ: problems.append("no HELP/TYPE before: " + name)
    if help.get(fam, "").startswith("isa.metrics():"): problems.append("generic HELP: " + fam)
print(len(problems), sorted(set(problems))[:5])
EOF
)" "0 []" "every family on /metrics has its own HELP and its TYPE"
ok "promtool check metrics accepts /metrics" promtool check metrics <"$TMP/metrics"

# The consumer's gauges: behind while a burst waits, 0 once caught up.
sql "SELECT isa.publish_event('$ET', 'order_service', '{\"sleep\": 0.05}') FROM generate_series(1, 40)" >/dev/null
# (both read in one call of isa.metrics(), so they describe the same moment)
behind="SELECT coalesce(bool_and(value > 0), false) FROM isa.metrics()
         WHERE metric IN ('consumer_pending_messages', 'consumer_lag_seconds') AND labels->>'consumer' = '$durable'"
is "$(wait_for "$behind" t 10)" t \
   "isa_consumer_pending_messages and isa_consumer_lag_seconds of the consumer rise while the burst waits"
is "$(wait_for "SELECT count(*) FROM it_mon.got" 41 30)" 41 "the burst is handled"
scrape
cons="{\"service\":\"billing\",\"consumer\":\"$durable\"}"
is "$(value isa_consumer_pending_messages "$cons") $(value isa_consumer_lag_seconds "$cons")" "0 0" \
   "caught up: pending 0 and lag 0 on /metrics"

# The dead-letter gauge exists for every subscribing service and reason
# before any dead letter (at 0 unless an earlier test left one), and a dead
# letter adds one.
before=$(value isa_dead_letters '{"service":"billing","reason":"subject_mismatch"}')
like "$before" '^[0-9]+$' "isa_dead_letters{service=billing,reason=subject_mismatch} is on /metrics, dead letter or not"
before=$(value isa_dead_letters '{"service":"billing","reason":"invalid_envelope"}')
like "$before" '^[0-9]+$' "isa_dead_letters{service=billing,reason=invalid_envelope} is on /metrics before the dead letter"
sql "INSERT INTO isa.dead_letters (service, consumer, subject, payload, reason, error_message, attempts)
     VALUES ('billing', '$durable', 'order_service.$ET', '\\x00', 'invalid_envelope', 'it88', 1)" >/dev/null
scrape
is "$(value isa_dead_letters '{"service":"billing","reason":"invalid_envelope"}')" "$((before + 1))" \
   "isa_dead_letters{service,reason} counts an unreplayed dead letter"

# Every metric an alert or a panel names is on this live /metrics.
is "$(python3 - "$TMP/metrics" "$MON/alerts.yml" "$MON/grafana-dashboard.json" <<'EOF'
import json, re, sys, yaml
exposed = set()
for l in open(sys.argv[1]):
    m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]', l)
    if m: exposed.add(m.group(1))
exprs = [r["expr"] for g in yaml.safe_load(open(sys.argv[2]))["groups"] for r in g["rules"]]
exprs += [t["expr"] for p in json.load(open(sys.argv[3]))["panels"] for t in p.get("targets", [])]
words = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan"}
missing, named = set(), set()
for e in exprs:
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', e)                  # strings
    e = re.sub(r'\{[^}]*\}', '', e)                             # label matchers
    e = re.sub(r'\b(by|without|on|ignoring)\s*\([^)]*\)', '', e)  # grouping labels
    e = re.sub(r'\[[^\]]*\]', '', e)                            # ranges
    for m in re.finditer(r'[a-zA-Z_:][a-zA-Z0-9_:]*', e):
        w = m.group(0)
        if w in words or e[m.end():].lstrip().startswith("("):
            continue                                            # keyword or function
        named.add(w)
        if w not in exposed:
            missing.add(w)
print(len(named) >= 15, sorted(missing))
EOF
)" "True []" "every metric the alerts and the dashboard use is on the live /metrics"

sql "SELECT isa.unsubscribe_from_events('billing', 'order_service.$ET', 'it_mon.on_event(isa.event)')" >/dev/null
is "$(sql "SELECT count(*) FROM isa.metrics() WHERE labels->>'consumer' = '$durable'")" 0 \
   "an unsubscribed consumer's gauges are gone (a stale lag cannot keep an alert firing)"
sql "DELETE FROM isa.dead_letters WHERE error_message = 'it88';
     DELETE FROM isa.inbox WHERE service = 'billing' AND event_type = '$ET';
     DELETE FROM isa.outbox WHERE event_type = '$ET';
     DELETE FROM isa.event_types WHERE event_type = '$ET';
     SET client_min_messages = warning; DROP SCHEMA it_mon CASCADE" >/dev/null
done_testing
