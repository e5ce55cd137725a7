# The organization chain through real NATS: user.created → the user's
# personal organization, once, even when a NATS client (test/natsclient, not
# isa code) publishes the same user.created again under another envelope id;
# a family created, a member invited and accepted → authz binds org_member in
# the family; the member promoted → org_admin replaces it; the member removed
# → the binding is gone.  Every event of the chain is counted: no storm.
source "$(dirname "$0")/lib.sh"
NATS="node $(dirname "$0")/../natsclient/isa-nats.mjs"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
is "$(wait_for "SELECT subscriptions >= (SELECT count(*) FROM isa.subscriptions) FROM isa.bridge_status()" t 20)" t \
   "every subscription (organization's and authz's among them) has its consumer"

owner=$(sql "SELECT user_id FROM account.create_user('org-owner-$$@example.com', 'Org Owner')")
kid=$(sql "SELECT user_id FROM account.create_user('Org-Kid-$$@Example.com', 'Org Kid')")
personal() { sql "SELECT count(*) FROM organization.organizations WHERE created_by = '$1' AND kind = 'personal'"; }
is "$(wait_for "SELECT count(*) FROM organization.organizations WHERE created_by IN ('$owner', '$kid') AND kind = 'personal'" 2 20)" 2 \
   "user.created reached organization through NATS: each user has a personal organization"
owner_personal=$(sql "SELECT org_id FROM organization.organizations WHERE created_by = '$owner' AND kind = 'personal'")
is "$(wait_for "SELECT count(*) FROM authz.role_bindings b JOIN authz.roles r USING (role_id) WHERE b.user_id = '$owner' AND b.org_id = '$owner_personal' AND r.name = 'org_owner'" 1 20)" 1 \
   "and authz binds org_owner in it (organization.member_added)"

# the same user.created again, from outside, under a new envelope id
$NATS pub-events user.created --source account_service --ids-file "$TMP/id" \
  --data-template "{\"user_id\": \"$owner\", \"email\": \"org-owner-$$@example.com\", \"name\": \"Org Owner\", \"created_at\": \"2026-01-01T00:00:00Z\"}" >/dev/null
dup=$(cat "$TMP/id")
is "$(wait_for "SELECT count(*) FROM organization.inbox WHERE event_id::text = '$dup'" 1 20)" 1 \
   "the second user.created (another envelope id) was handled by organization"
is "$(personal "$owner")" 1 "still one personal organization: the handler is idempotent on the user id"
is "$(sql "SELECT count(*) FROM organization.outbox WHERE event_type = 'organization.created' AND data->>'owner_id' = '$owner'")" 1 \
   "and one organization.created"

# the family: created, the kid invited by email and accepted
fam=$(sql "SELECT org_id FROM organization.create_organization('$owner', 'family', 'Chain family $$', 'chain-fam-$$')")
token=$(sql "SELECT token FROM organization.invite_member('$owner', '$fam', 'org-kid-$$@example.com', 'member', 'chain-inv-$$')")
is "$(sql "SELECT role FROM organization.accept_invitation('$kid', '$token')")" member "the invitee accepts (email compared case-blind)"
binding() { sql "SELECT coalesce(string_agg(r.name, ',' ORDER BY r.name), '-') FROM authz.role_bindings b JOIN authz.roles r USING (role_id)
                  WHERE b.user_id = '$kid' AND b.org_id = '$fam'"; }
is "$(wait_for "SELECT count(*) FROM authz.role_bindings b JOIN authz.roles r USING (role_id) WHERE b.user_id = '$kid' AND b.org_id = '$fam'" 1 20)" 1 \
   "organization.member_added reached authz"
is "$(binding)" org_member "the member holds org_member in the family"
is "$(sql "SELECT authz.check('$kid', 'shared_resource:read', NULL, '$fam')")" t "so authz.check allows shared_resource:read there"

sql "SELECT organization.change_member_role('$owner', '$fam', '$kid', 'admin')" >/dev/null
is "$(wait_for "SELECT count(*) FROM authz.inbox WHERE event_type = 'organization.member_role_changed' AND event_id IN (SELECT id FROM organization.outbox WHERE data->>'org_id' = '$fam')" 1 20)" 1 \
   "organization.member_role_changed reached authz"
is "$(binding)" org_admin "org_admin replaces org_member"

sql "SELECT organization.remove_member('$owner', '$fam', '$kid')" >/dev/null
is "$(wait_for "SELECT count(*) FROM authz.role_bindings WHERE user_id = '$kid' AND org_id = '$fam'" 0 20)" 0 \
   "organization.member_removed reached authz: the binding is gone"
is "$(sql "SELECT authz.check('$kid', 'shared_resource:read', NULL, '$fam')")" f "authz.check denies there now"

# no storm: every event of the chain, counted
is "$(sql "SELECT string_agg(event_type || ' ' || n, ', ' ORDER BY event_type) FROM (SELECT event_type, count(*) n FROM organization.outbox
            WHERE data->>'org_id' = '$fam' GROUP BY event_type) x")" \
   "organization.created 1, organization.member_added 2, organization.member_invited 1, organization.member_removed 1, organization.member_role_changed 1" \
   "organization published exactly: created, member_added (owner, kid), member_invited, member_role_changed, member_removed"
# authz: org_owner's 3 permissions for the owner; org_member's 4 granted then
# revoked; org_admin's 7 granted then revoked
is "$(wait_for "SELECT string_agg(event_type || ' ' || n, ', ' ORDER BY event_type) FROM (SELECT event_type, count(*) n FROM authz.outbox
            WHERE data->>'org_id' = '$fam' GROUP BY event_type) x" "permission.granted 14, permission.revoked 11" 20)" \
   "permission.granted 14, permission.revoked 11" "authz published one event per permission bound or unbound, no more"
sleep 2
is "$(sql "SELECT count(*) FROM organization.outbox WHERE data->>'org_id' = '$fam'") $(sql "SELECT count(*) FROM authz.outbox WHERE data->>'org_id' = '$fam'")" \
   "6 25" "and nothing more arrives: no event causes another loop"
is "$(sql "SELECT count(*) FROM isa.dead_letters WHERE service IN ('organization', 'authz')")" 0 "no dead letter"
done_testing
