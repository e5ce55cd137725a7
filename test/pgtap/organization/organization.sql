-- organization.sql — the organization service: organizations and their one
-- owner, members and roles, invitations by email (token or id, the invitee's
-- account only, single use, expiry), leave, remove, role changes, transfer
-- of ownership, sharing and can_access, the handlers (user.created,
-- user.deleted, device.registered), the events each operation writes to
-- organization.outbox, and who may call what.  Through real NATS (the
-- personal organization once, authz's bindings): test/integration/74-organization-chain.sh.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(163);

-- Users this file creates, by label.
CREATE TEMP TABLE u (label text PRIMARY KEY, id uuid, email text) ON COMMIT DROP;
CREATE FUNCTION pg_temp.uid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.u WHERE label = l$$;
CREATE FUNCTION pg_temp.mail(l text) RETURNS text LANGUAGE sql AS $$SELECT email FROM pg_temp.u WHERE label = l$$;
INSERT INTO u
SELECT l, (account.create_user(e, initcap(l))).user_id, e
  FROM unnest(ARRAY['ann', 'ben', 'cat', 'dan', 'eve', 'fay', 'gus']) l,
       LATERAL (SELECT 'org-' || l || '-' || gen_random_uuid() || '@Example.test' AS e) m;
-- Organizations this file creates, by label.
CREATE TEMP TABLE o (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.oid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.o WHERE label = l$$;
-- The outbox rows of this file's organizations and users, in publication order,
-- and a mark to read the ones written since.
CREATE TEMP VIEW ev AS
SELECT row_number() OVER (ORDER BY x.id) AS n, x.event_type, x.data,
       (SELECT label FROM u WHERE u.id::text = x.data ->> 'user_id') AS who
  FROM organization.outbox x
 WHERE x.data ->> 'org_id' IN (SELECT id::text FROM o) OR x.data ->> 'owner_id' IN (SELECT id::text FROM u)
    OR x.data ->> 'user_id' IN (SELECT id::text FROM u);
CREATE TEMP TABLE mark (at bigint) ON COMMIT DROP;
INSERT INTO mark VALUES (0);
CREATE FUNCTION pg_temp.since() RETURNS SETOF ev LANGUAGE sql AS $$SELECT * FROM ev WHERE n > (SELECT at FROM mark)$$;
CREATE FUNCTION pg_temp.reset_mark() RETURNS void LANGUAGE sql
    AS $$UPDATE mark SET at = (SELECT coalesce(max(n), 0) FROM ev)$$;
-- The event types written since the mark, in order.
CREATE FUNCTION pg_temp.since_types() RETURNS text LANGUAGE sql
    AS $$SELECT coalesce(string_agg(event_type, ' ' ORDER BY n), '-') FROM pg_temp.since()$$;
-- An event as the bridge hands it to a handler.
CREATE FUNCTION pg_temp.event(event_type text, source text, data jsonb) RETURNS isa.event LANGUAGE sql AS $$
    SELECT isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(), 'event_type', event_type, 'source', source,
                                                  'timestamp', now(), 'data', data)) $$;
CREATE FUNCTION pg_temp.role_of(org text, l text) RETURNS text LANGUAGE sql
    AS $$SELECT organization.member_role(pg_temp.oid(org), pg_temp.uid(l))$$;

-- ---------------------------------------------------------------- schema and catalogue
SELECT has_table('organization', 'organizations', 'table organization.organizations exists');
SELECT has_table('organization', 'members', 'table organization.members exists');
SELECT has_table('organization', 'invitations', 'table organization.invitations exists');
SELECT has_table('organization', 'shared_resources', 'table organization.shared_resources exists');
SELECT hasnt_column('organization', 'invitations', 'token', 'an invitation keeps the hash of its token, never the token');
SELECT set_eq($$SELECT event_type || ' ' || (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(data_fields) k)
                 FROM isa.event_types WHERE source = 'organization_service' AND event_type <> 'event.dead_lettered'$$,
              ARRAY['organization.created created_at,kind,name,org_id,owner_id',
                    'organization.member_added invitation_id,kind,org_id,role,user_id,via',
                    'organization.member_removed org_id,reason,removed_by,role,user_id',
                    'organization.member_role_changed changed_by,new_role,old_role,org_id,reason,user_id',
                    'organization.member_invited email,expires_at,invitation_id,invited_by,inviter_name,org_id,org_kind,org_name,role',
                    'organization.closed closed_at,org_id,reason',
                    'family.resource_shared kind,org_id,org_kind,resource_id,shared_by',
                    'family.resource_unshared kind,org_id,reason,resource_id,shared_by,unshared_by'],
              'organization_service''s eight events are registered with their data fields');
SELECT set_eq($$SELECT subject_filter || ' ' || handler::text FROM isa.subscriptions WHERE service = 'organization'$$,
              ARRAY['account_service.user.created organization.on_user_created(isa.event)',
                    'account_service.user.deleted organization.on_user_deleted(isa.event)',
                    'device_service.device.registered organization.on_device_registered(isa.event)'],
              'organization subscribes to user.created, user.deleted and device.registered');

-- ---------------------------------------------------------------- user.created: the personal organization
SELECT pg_temp.reset_mark();
CREATE TEMP TABLE ann_created ON COMMIT DROP AS
SELECT pg_temp.event('user.created', 'account_service', jsonb_build_object('user_id', pg_temp.uid('ann'))) AS e;
SELECT lives_ok($$SELECT organization.on_user_created(e) FROM ann_created$$, 'on_user_created handles user.created');
INSERT INTO o SELECT 'ann-personal', org_id FROM organization.list_my_organizations(pg_temp.uid('ann')) WHERE kind = 'personal';
SELECT is((SELECT (kind, name, role, member_count)::text FROM organization.get_organization(pg_temp.uid('ann'), pg_temp.oid('ann-personal'))),
          '(personal,Personal,owner,1)', 'the user owns a personal organization, alone');
SELECT is(pg_temp.since_types(), 'organization.created organization.member_added',
          'organization.created and organization.member_added (the owner) are published');
SELECT is((SELECT data ->> 'owner_id' FROM pg_temp.since() WHERE event_type = 'organization.created'), pg_temp.uid('ann')::text,
          'organization.created names the owner');
SELECT pg_temp.reset_mark();
SELECT lives_ok($$SELECT organization.on_user_created(pg_temp.event('user.created', 'account_service',
                    jsonb_build_object('user_id', pg_temp.uid('ann'))))$$,
                'user.created again, under another envelope id');
SELECT is((SELECT count(*) FROM organization.list_my_organizations(pg_temp.uid('ann')) WHERE kind = 'personal'), 1::bigint,
          'still one personal organization');
SELECT is(pg_temp.since_types(), '-', 'and no event');
SET LOCAL client_min_messages = error;     -- the handlers warn about bad events
SELECT lives_ok($$SELECT organization.on_user_created(pg_temp.event('user.created', 'account_service', '{"user_id": "x"}'))$$,
                'a user.created without a uuid is ignored, not raised');
SELECT lives_ok(format($$SELECT organization.on_user_created(pg_temp.event('user.created', 'account_service', '{"user_id": "%s"}'))$$,
                       gen_random_uuid()), 'so is one of an unknown user');
RESET client_min_messages;

-- ---------------------------------------------------------------- create, get, list
SELECT pg_temp.reset_mark();
INSERT INTO o SELECT 'fam', org_id FROM organization.create_organization(pg_temp.uid('ann'), 'family', '  The Anns  ', 'fam-1');
SELECT is((SELECT (kind, name, role, member_count)::text FROM organization.get_organization(pg_temp.uid('ann'), pg_temp.oid('fam'))),
          '(family,"The Anns",owner,1)', 'create_organization makes a family owned by its creator, the name trimmed');
SELECT is(substr(pg_temp.oid('fam')::text, 15, 1), '7', 'an organization id is a UUIDv7');
SELECT is(pg_temp.since_types(), 'organization.created organization.member_added', 'it publishes organization.created and member_added');
SELECT is((SELECT data FROM pg_temp.since() WHERE event_type = 'organization.member_added'),
          jsonb_build_object('org_id', pg_temp.oid('fam'), 'user_id', pg_temp.uid('ann'), 'role', 'owner', 'kind', 'family',
                             'via', 'created', 'invitation_id', NULL),
          'member_added: the owner, via created');
SELECT pg_temp.reset_mark();
SELECT is((SELECT org_id FROM organization.create_organization(pg_temp.uid('ann'), 'family', 'The Anns', 'fam-1')), pg_temp.oid('fam'),
          'the same idempotency key and arguments return the first organization');
SELECT is(pg_temp.since_types(), '-', 'and publish nothing');
SELECT throws_ok(format('SELECT organization.create_organization(%L, %L, %L, %L)', pg_temp.uid('ann'), 'business', 'The Anns', 'fam-1'),
                 '23505', NULL, 'the same key with other arguments is 23505');
SELECT throws_ok(format('SELECT organization.create_organization(%L, %L, %L)', pg_temp.uid('ann'), 'personal', 'Mine'),
                 '22023', NULL, 'kind personal is not created through the API: 22023');
SELECT throws_ok(format('SELECT organization.create_organization(%L, %L, %L)', pg_temp.uid('ann'), 'club', 'Mine'),
                 '22023', NULL, 'an unknown kind is 22023');
SELECT throws_ok(format('SELECT organization.create_organization(%L, %L, %L)', pg_temp.uid('ann'), 'family', '   '),
                 '22023', NULL, 'an empty name is 22023');
SELECT throws_ok(format('SELECT organization.create_organization(%L, %L, %L)', pg_temp.uid('ann'), 'family', repeat('n', 201)),
                 '22023', NULL, 'a name over 200 characters is 22023');
SELECT throws_ok(format('SELECT organization.create_organization(%L, %L, %L, %L)', pg_temp.uid('ann'), 'family', 'F', ''),
                 '22023', NULL, 'an empty idempotency key is 22023');
SELECT throws_ok(format('SELECT organization.create_organization(NULL, %L, %L)', 'family', 'F'), '22004', NULL,
                 'a NULL actor is 22004');
SELECT throws_ok(format('SELECT organization.create_organization(%L, NULL, %L)', pg_temp.uid('ann'), 'F'), '22004', NULL,
                 'a NULL kind is 22004');
SELECT throws_ok(format('SELECT organization.create_organization(%L, %L, %L)', gen_random_uuid(), 'family', 'F'), 'P0002', NULL,
                 'an unknown user is P0002');
SELECT is((SELECT string_agg(kind || ':' || role, ',' ORDER BY created_at) FROM organization.list_my_organizations(pg_temp.uid('ann'))),
          'personal:owner,family:owner', 'list_my_organizations lists the caller''s organizations with the role, oldest first');
SELECT throws_ok(format('SELECT * FROM organization.list_my_organizations(%L, 0)', pg_temp.uid('ann')), '22023', NULL,
                 'a page size of 0 is 22023');
SELECT throws_ok(format('SELECT organization.get_organization(%L, %L)', pg_temp.uid('ben'), pg_temp.oid('fam')), '42501', NULL,
                 'get_organization for a non-member is 42501');
SELECT throws_ok(format('SELECT organization.get_organization(%L, %L)', pg_temp.uid('ann'), gen_random_uuid()), 'P0002', NULL,
                 'an unknown organization is P0002');
SELECT throws_ok(format('SELECT * FROM organization.list_members(%L, %L)', pg_temp.uid('ben'), pg_temp.oid('fam')), '42501', NULL,
                 'list_members for a non-member is 42501');
SELECT is(organization.organization_exists(pg_temp.oid('fam')), true, 'organization_exists: true for an active organization');
SELECT is(organization.organization_exists(gen_random_uuid()), false, '... false for an unknown one');
SELECT is(organization.organization_exists(NULL), false, '... and for NULL');

-- ---------------------------------------------------------------- invitations
SELECT pg_temp.reset_mark();
CREATE TEMP TABLE inv ON COMMIT DROP AS
SELECT 'ben'::text AS label, i.* FROM organization.invite_member(pg_temp.uid('ann'), pg_temp.oid('fam'), upper(pg_temp.mail('ben')),
                                                        'admin', 'inv-ben') i;
SELECT is((SELECT (status, role, email = upper(pg_temp.mail('ben')), token ~ '^[A-Za-z0-9_-]{43}$')::text FROM inv),
          '(pending,admin,t,t)', 'invite_member returns the pending invitation with a 43-character token');
SELECT ok((SELECT expires_at BETWEEN now() + interval '7 days' - interval '1 minute' AND now() + interval '7 days' FROM inv),
          'it expires in 7 days');
SELECT is((SELECT token_hash FROM organization.invitations WHERE invitation_id = (SELECT invitation_id FROM inv)),
          (SELECT sha256(convert_to(token, 'UTF8')) FROM inv), 'the database keeps the sha256 of the token');
SELECT is(pg_temp.since_types(), 'organization.member_invited', 'organization.member_invited is published');
SELECT is((SELECT data FROM pg_temp.since()),
          (SELECT jsonb_build_object('invitation_id', i.invitation_id, 'org_id', pg_temp.oid('fam'), 'org_name', 'The Anns',
                                     'org_kind', 'family', 'email', i.email, 'role', 'admin', 'invited_by', pg_temp.uid('ann'),
                                     'inviter_name', 'Ann',
                                     'expires_at', to_char(i.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
             FROM inv i),
          'member_invited carries the invitation id, organization, email, role, inviter and expiry, not the token');
SELECT pg_temp.reset_mark();
CREATE TEMP TABLE inv_retry ON COMMIT DROP AS
SELECT * FROM organization.invite_member(pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.mail('ben'), 'admin', 'inv-ben');
SELECT is((SELECT invitation_id FROM inv_retry), (SELECT invitation_id FROM inv), 'a retry with the same key returns the same invitation');
SELECT isnt((SELECT token FROM inv_retry), (SELECT token FROM inv), 'with a new token');
SELECT is(pg_temp.since_types(), '-', 'and no second event');
UPDATE inv SET token = (SELECT token FROM inv_retry);
SELECT throws_ok(format('SELECT organization.invite_member(%L, %L, %L, %L, %L)', pg_temp.uid('ann'), pg_temp.oid('fam'),
                        pg_temp.mail('cat'), 'admin', 'inv-ben'), '23505', NULL, 'the same key for another invitation is 23505');
SELECT throws_ok(format('SELECT organization.invite_member(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.mail('ben')),
                 '23505', NULL, 'inviting an address with a pending invitation again is 23505');
SELECT throws_ok(format('SELECT organization.invite_member(%L, %L, %L, %L)', pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.mail('cat'), 'owner'),
                 '22023', NULL, 'the role owner cannot be offered: 22023');
SELECT throws_ok(format('SELECT organization.invite_member(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.oid('fam'), 'not an email'),
                 '22023', NULL, 'a malformed email is 22023');
SELECT throws_ok(format('SELECT organization.invite_member(%L, %L, NULL)', pg_temp.uid('ann'), pg_temp.oid('fam')),
                 '22004', NULL, 'a NULL email is 22004');
SELECT throws_ok(format('SELECT organization.invite_member(%L, %L, %L)', pg_temp.uid('cat'), pg_temp.oid('fam'), pg_temp.mail('dan')),
                 '42501', NULL, 'a non-member cannot invite: 42501');
SELECT throws_ok(format('SELECT organization.invite_member(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.oid('ann-personal'), pg_temp.mail('dan')),
                 '23514', NULL, 'a personal organization takes no invitation: 23514');

-- accept: only the invitee's account
SELECT throws_ok(format('SELECT organization.accept_invitation(%L, %L)', pg_temp.uid('cat'), (SELECT token FROM inv)),
                 'P0002', NULL, 'another account cannot accept (its email is not the invitation''s): P0002');
SELECT throws_ok(format('SELECT organization.accept_invitation(%L, %L)', pg_temp.uid('ben'), 'not-a-token'),
                 'P0002', NULL, 'an unknown token is P0002');
SELECT throws_ok(format('SELECT organization.accept_invitation(%L)', pg_temp.uid('ben')),
                 '22004', NULL, 'neither token nor invitation_id is 22004');
SELECT throws_ok(format('SELECT organization.accept_invitation(%L, %L, %L)', pg_temp.uid('ben'), (SELECT token FROM inv),
                        (SELECT invitation_id FROM inv)), '22023', NULL, 'both token and invitation_id is 22023');
SELECT is((SELECT (role, user_id = pg_temp.uid('ben'))::text FROM organization.accept_invitation(pg_temp.uid('ben'), (SELECT token FROM inv))),
          '(admin,t)', 'the invitee accepts by token (emails compared case-blind): a member with the invited role');
SELECT is(pg_temp.since_types(), 'organization.member_added', 'organization.member_added is published');
SELECT is((SELECT data ->> 'via' || ' ' || (data ->> 'invitation_id') FROM pg_temp.since()),
          'invitation ' || (SELECT invitation_id FROM inv), 'via invitation, naming it');
SELECT pg_temp.reset_mark();
SELECT is((SELECT role FROM organization.accept_invitation(pg_temp.uid('ben'), (SELECT token FROM inv))), 'admin',
          'accepting again returns the membership');
SELECT is(pg_temp.since_types(), '-', 'and publishes nothing');
SELECT is((SELECT status FROM organization.list_invitations(pg_temp.uid('ann'), pg_temp.oid('fam'))
            WHERE invitation_id = (SELECT invitation_id FROM inv)), 'accepted', 'list_invitations shows it accepted');
SELECT is((SELECT count(*) FROM organization.list_invitations(pg_temp.uid('ann'), pg_temp.oid('fam')) WHERE token IS NOT NULL),
          0::bigint, 'list_invitations shows no token');

-- by id (the email's link), decline, revoke, expiry
INSERT INTO inv SELECT 'cat', i.* FROM organization.invite_member(pg_temp.uid('ben'), pg_temp.oid('fam'), pg_temp.mail('cat'), 'member') i;
SELECT is((SELECT string_agg(org_name || ' ' || role, ',') FROM organization.list_my_invitations(pg_temp.uid('cat'))), 'The Anns member',
          'an admin invites below its rank; list_my_invitations shows the invitee its pending invitation');
SELECT throws_ok(format('SELECT organization.invite_member(%L, %L, %L, %L)', pg_temp.uid('ben'), pg_temp.oid('fam'), pg_temp.mail('dan'), 'admin'),
                 '42501', NULL, 'an admin cannot offer admin: 42501');
SELECT is((SELECT role FROM organization.accept_invitation(pg_temp.uid('cat'),
                                                          invitation_id => (SELECT invitation_id FROM inv WHERE label = 'cat'))),
          'member', 'the invitee accepts by invitation id');
INSERT INTO inv SELECT 'dan', i.* FROM organization.invite_member(pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.mail('dan'), 'guest') i;
SELECT pg_temp.reset_mark();
SELECT lives_ok(format('SELECT organization.decline_invitation(%L, %L)', pg_temp.uid('dan'), (SELECT token FROM inv WHERE label = 'dan')),
                'the invitee declines');
SELECT lives_ok(format('SELECT organization.decline_invitation(%L, %L)', pg_temp.uid('dan'), (SELECT token FROM inv WHERE label = 'dan')),
                'declining again does nothing');
SELECT throws_ok(format('SELECT organization.accept_invitation(%L, %L)', pg_temp.uid('dan'), (SELECT token FROM inv WHERE label = 'dan')),
                 '23514', NULL, 'a declined invitation cannot be accepted: 23514');
SELECT is(pg_temp.since_types(), '-', 'declining publishes nothing');
INSERT INTO inv SELECT 'dan2', i.* FROM organization.invite_member(pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.mail('dan'), 'guest') i;
SELECT throws_ok(format('SELECT organization.revoke_invitation(%L, %L)', pg_temp.uid('cat'), (SELECT invitation_id FROM inv WHERE label = 'dan2')),
                 '42501', NULL, 'a member cannot revoke: 42501');
SELECT lives_ok(format('SELECT organization.revoke_invitation(%L, %L)', pg_temp.uid('ben'), (SELECT invitation_id FROM inv WHERE label = 'dan2')),
                'an admin revokes a pending invitation');
SELECT lives_ok(format('SELECT organization.revoke_invitation(%L, %L)', pg_temp.uid('ben'), (SELECT invitation_id FROM inv WHERE label = 'dan2')),
                'revoking again does nothing');
SELECT throws_ok(format('SELECT organization.accept_invitation(%L, %L)', pg_temp.uid('dan'), (SELECT token FROM inv WHERE label = 'dan2')),
                 '23514', NULL, 'a revoked token is refused: 23514');
SELECT throws_ok(format('SELECT organization.revoke_invitation(%L, %L)', pg_temp.uid('ann'), (SELECT invitation_id FROM inv WHERE label = 'ben')),
                 '23514', NULL, 'an accepted invitation cannot be revoked: 23514');
SELECT throws_ok(format('SELECT organization.revoke_invitation(%L, %L)', pg_temp.uid('ann'), gen_random_uuid()),
                 'P0002', NULL, 'revoking an unknown invitation is P0002');
INSERT INTO inv SELECT 'dan3', i.* FROM organization.invite_member(pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.mail('dan'), 'guest') i;
UPDATE organization.invitations SET expires_at = now() - interval '1 second'
 WHERE invitation_id = (SELECT invitation_id FROM inv WHERE label = 'dan3');
SELECT throws_ok(format('SELECT organization.accept_invitation(%L, %L)', pg_temp.uid('dan'), (SELECT token FROM inv WHERE label = 'dan3')),
                 '23514', NULL, 'an expired invitation is refused: 23514');
SELECT is((SELECT status FROM organization.list_invitations(pg_temp.uid('ann'), pg_temp.oid('fam'))
            WHERE invitation_id = (SELECT invitation_id FROM inv WHERE label = 'dan3')), 'expired', 'and listed as expired');
SELECT is((SELECT count(*) FROM organization.list_my_invitations(pg_temp.uid('dan'))), 0::bigint,
          'list_my_invitations leaves out expired, declined and revoked invitations');
INSERT INTO inv SELECT 'dan4', i.* FROM organization.invite_member(pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.mail('dan'), 'guest') i;
SELECT is((SELECT role FROM organization.accept_invitation(pg_temp.uid('dan'), (SELECT token FROM inv WHERE label = 'dan4'))), 'guest',
          'an expired invitation does not block a new one: dan joins as guest');
SELECT throws_ok(format('SELECT organization.invite_member(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.mail('dan')),
                 '23505', NULL, 'inviting a member is 23505');
SELECT throws_ok(format('SELECT * FROM organization.list_invitations(%L, %L)', pg_temp.uid('cat'), pg_temp.oid('fam')),
                 '42501', NULL, 'a member cannot list the invitations: 42501');

-- ---------------------------------------------------------------- members, is_member, member_role
SELECT is((SELECT string_agg(pg_temp_u.label || ':' || m.role, ',' ORDER BY ord)
             FROM organization.list_members(pg_temp.uid('dan'), pg_temp.oid('fam')) WITH ORDINALITY m(org_id, user_id, role, joined_at, ord)
             JOIN u pg_temp_u ON pg_temp_u.id = m.user_id),
          'ann:owner,ben:admin,cat:member,dan:guest', 'list_members: owner first, then by role (a guest may list)');
SELECT is(organization.is_member(pg_temp.oid('fam'), pg_temp.uid('dan')), true, 'is_member: a guest is a member');
SELECT is(organization.is_member(pg_temp.oid('fam'), pg_temp.uid('eve')), false, '... eve is not');
SELECT is(pg_temp.role_of('fam', 'ben'), 'admin', 'member_role gives the role');
SELECT is(pg_temp.role_of('fam', 'eve'), NULL, '... NULL for a non-member');
SELECT throws_ok(format('SELECT organization.member_role(NULL, %L)', pg_temp.uid('eve')), '22004', NULL, 'member_role(NULL, …) is 22004');

-- ---------------------------------------------------------------- change role, remove, leave, transfer
SELECT pg_temp.reset_mark();
SELECT is((SELECT role FROM organization.change_member_role(pg_temp.uid('ben'), pg_temp.oid('fam'), pg_temp.uid('dan'), 'member')),
          'member', 'an admin promotes a guest to member');
SELECT is((SELECT data ->> 'old_role' || '>' || (data ->> 'new_role') || ' ' || (data ->> 'reason') FROM pg_temp.since()),
          'guest>member changed', 'organization.member_role_changed: old and new role, reason changed');
SELECT throws_ok(format('SELECT organization.change_member_role(%L, %L, %L, %L)', pg_temp.uid('ben'), pg_temp.oid('fam'), pg_temp.uid('dan'), 'admin'),
                 '42501', NULL, 'an admin cannot make an admin: 42501');
SELECT throws_ok(format('SELECT organization.change_member_role(%L, %L, %L, %L)', pg_temp.uid('cat'), pg_temp.oid('fam'), pg_temp.uid('dan'), 'guest'),
                 '42501', NULL, 'a member cannot change roles: 42501');
SELECT throws_ok(format('SELECT organization.change_member_role(%L, %L, %L, %L)', pg_temp.uid('ben'), pg_temp.oid('fam'), pg_temp.uid('ann'), 'guest'),
                 '42501', NULL, 'an admin cannot change the owner: 42501');
SELECT throws_ok(format('SELECT organization.change_member_role(%L, %L, %L, %L)', pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.uid('ann'), 'admin'),
                 '23514', NULL, 'the owner cannot step down by a role change (no owner would be left): 23514');
SELECT throws_ok(format('SELECT organization.change_member_role(%L, %L, %L, %L)', pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.uid('cat'), 'owner'),
                 '22023', NULL, 'role owner is given by transfer_ownership only: 22023');
SELECT throws_ok(format('SELECT organization.change_member_role(%L, %L, %L, %L)', pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.uid('eve'), 'guest'),
                 'P0002', NULL, 'changing a non-member is P0002');
SELECT pg_temp.reset_mark();
SELECT throws_ok(format('SELECT organization.leave_organization(%L, %L)', pg_temp.uid('ann'), pg_temp.oid('fam')),
                 '23514', NULL, 'the owner cannot leave: 23514');
SELECT throws_ok(format('SELECT organization.leave_organization(%L, %L)', pg_temp.uid('eve'), pg_temp.oid('fam')),
                 '42501', NULL, 'leaving an organization one is not in is 42501');
SELECT throws_ok(format('SELECT organization.remove_member(%L, %L, %L)', pg_temp.uid('cat'), pg_temp.oid('fam'), pg_temp.uid('dan')),
                 '42501', NULL, 'a member cannot remove: 42501');
SELECT throws_ok(format('SELECT organization.remove_member(%L, %L, %L)', pg_temp.uid('ben'), pg_temp.oid('fam'), pg_temp.uid('ann')),
                 '42501', NULL, 'an admin cannot remove the owner: 42501');
SELECT throws_ok(format('SELECT organization.remove_member(%L, %L, %L)', pg_temp.uid('ben'), pg_temp.oid('fam'), pg_temp.uid('ben')),
                 '22023', NULL, 'removing oneself is 22023 (leave_organization)');
SELECT throws_ok(format('SELECT organization.transfer_ownership(%L, %L, %L)', pg_temp.uid('ben'), pg_temp.oid('fam'), pg_temp.uid('cat')),
                 '42501', NULL, 'only the owner transfers ownership: 42501');
SELECT throws_ok(format('SELECT organization.transfer_ownership(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.uid('eve')),
                 'P0002', NULL, 'ownership passes to a member only: P0002');
SELECT lives_ok(format('SELECT organization.transfer_ownership(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.uid('ann')),
                'transferring to oneself changes nothing');
SELECT is(pg_temp.since_types(), '-', 'the refused calls publish nothing');
SELECT is((SELECT role FROM organization.transfer_ownership(pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.uid('cat'))), 'owner',
          'the owner transfers ownership to a member');
SELECT is(pg_temp.role_of('fam', 'ann') || ',' || pg_temp.role_of('fam', 'cat'), 'admin,owner', 'the former owner is an admin');
SELECT is((SELECT string_agg(who || ':' || (data ->> 'old_role') || '>' || (data ->> 'new_role') || ':' || (data ->> 'reason'), ' ' ORDER BY n)
             FROM pg_temp.since()),
          'ann:owner>admin:ownership_transferred cat:member>owner:ownership_transferred',
          'two member_role_changed events, reason ownership_transferred');
SELECT is((SELECT count(*) FROM organization.members WHERE org_id = pg_temp.oid('fam') AND role = 'owner'), 1::bigint,
          'the organization has exactly one owner');
SELECT pg_temp.reset_mark();
SELECT lives_ok(format('SELECT organization.remove_member(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.uid('dan')),
                'an admin removes a member');
SELECT is((SELECT who || ' ' || (data ->> 'role') || ' ' || (data ->> 'reason') || ' ' || (data ->> 'removed_by') FROM pg_temp.since()),
          'dan member removed ' || pg_temp.uid('ann'), 'organization.member_removed: role, reason removed, removed_by');
SELECT throws_ok(format('SELECT organization.remove_member(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.uid('dan')),
                 'P0002', NULL, 'removing a non-member is P0002');

-- ---------------------------------------------------------------- sharing
CREATE TEMP TABLE res (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
-- ben's album is storage's (share_resource asks storage.album_owner); the
-- device and the file are ids nobody owns.
INSERT INTO res VALUES ('album', (storage.create_album(pg_temp.uid('ben'), 'Holidays')).album_id),
                       ('device', gen_random_uuid()), ('file', gen_random_uuid());
CREATE FUNCTION pg_temp.rid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.res WHERE label = l$$;
SELECT pg_temp.reset_mark();
SELECT is((SELECT (kind, shared_by = pg_temp.uid('ben'))::text
             FROM organization.share_resource(pg_temp.uid('ben'), pg_temp.oid('fam'), 'album', pg_temp.rid('album'))),
          '(album,t)', 'a member shares an album with the family');
SELECT is((SELECT data FROM pg_temp.since()),
          jsonb_build_object('org_id', pg_temp.oid('fam'), 'org_kind', 'family', 'kind', 'album', 'resource_id', pg_temp.rid('album'),
                             'shared_by', pg_temp.uid('ben')),
          'family.resource_shared: organization, kind, resource, sharer');
SELECT pg_temp.reset_mark();
SELECT lives_ok(format('SELECT organization.share_resource(%L, %L, %L, %L)', pg_temp.uid('ben'), pg_temp.oid('fam'), 'album', pg_temp.rid('album')),
                'sharing it again');
SELECT is(pg_temp.since_types(), '-', 'publishes nothing');
SELECT is(organization.can_access(pg_temp.uid('ann'), 'album', pg_temp.rid('album')), true, 'can_access: another member sees it');
SELECT is(organization.can_access(pg_temp.uid('eve'), 'album', pg_temp.rid('album')), false, '... a non-member does not');
SELECT is(organization.can_access(pg_temp.uid('ann'), 'file', pg_temp.rid('album')), false, '... nor under another kind');
SELECT throws_ok(format('SELECT organization.can_access(%L, %L, %L)', pg_temp.uid('ann'), 'photo', pg_temp.rid('album')),
                 '22023', NULL, 'can_access of an unknown kind is 22023');
SELECT throws_ok(format('SELECT organization.share_resource(%L, %L, %L, %L)', pg_temp.uid('ben'), pg_temp.oid('fam'), 'file', pg_temp.rid('file')),
                 'P0002', NULL, 'a file is shared only by its owner (storage.get_my_file): P0002');
SELECT throws_ok(format('SELECT organization.share_resource(%L, %L, %L, %L)', pg_temp.uid('ann'), pg_temp.oid('fam'), 'album', pg_temp.rid('album')),
                 'P0002', format('album %s not found', pg_temp.rid('album')),
                 'an album is shared only by its owner (storage.album_owner): another member''s is P0002');
SELECT throws_ok(format('SELECT organization.share_resource(%L, %L, %L, %L)', pg_temp.uid('ben'), pg_temp.oid('fam'), 'album', gen_random_uuid()),
                 'P0002', NULL, 'and an album that does not exist is P0002');
SELECT throws_ok(format('SELECT organization.share_resource(%L, %L, %L, %L)', pg_temp.uid('ben'), pg_temp.oid('fam'), 'device', pg_temp.rid('device')),
                 'P0002', NULL, 'a device not registered to the sharer is P0002');
SELECT throws_ok(format('SELECT organization.share_resource(%L, %L, %L, %L)', pg_temp.uid('ben'), pg_temp.oid('fam'), 'photo', pg_temp.rid('album')),
                 '22023', NULL, 'an unknown kind is 22023');
SELECT throws_ok(format('SELECT organization.share_resource(%L, %L, %L, %L)', pg_temp.uid('eve'), pg_temp.oid('fam'), 'album', pg_temp.rid('album')),
                 '42501', NULL, 'a non-member cannot share: 42501');
SELECT throws_ok(format('SELECT organization.share_resource(%L, %L, %L, %L)', pg_temp.uid('ann'), pg_temp.oid('ann-personal'), 'album', pg_temp.rid('album')),
                 '23514', NULL, 'nothing is shared with a personal organization: 23514');
-- device.registered: the owner is recorded, the device joins the family the event names
SELECT pg_temp.reset_mark();
SELECT lives_ok(format($$SELECT organization.on_device_registered(pg_temp.event('device.registered', 'device_service',
                    jsonb_build_object('device_id', %L::uuid, 'owner_id', %L::uuid, 'organization_id', %L::uuid)))$$,
                    pg_temp.rid('device'), pg_temp.uid('cat'), pg_temp.oid('fam')),
                'on_device_registered handles a device of cat naming the family');
SELECT is((SELECT string_agg(kind, ',' ORDER BY kind) FROM organization.shared_resources(pg_temp.uid('ben'), pg_temp.oid('fam'))),
          'album,device', 'the device is shared with the family (shared_resources lists it for a member)');
SELECT is(pg_temp.since_types(), 'family.resource_shared', 'family.resource_shared is published');
SELECT pg_temp.reset_mark();
SELECT lives_ok(format($$SELECT organization.on_device_registered(pg_temp.event('device.registered', 'device_service',
                    jsonb_build_object('device_id', %L::uuid, 'owner_id', %L::uuid, 'organization_id', %L::uuid)))$$,
                    pg_temp.rid('device'), pg_temp.uid('cat'), pg_temp.oid('fam')), 'the same event again');
SELECT is(pg_temp.since_types(), '-', 'publishes nothing');
SET LOCAL client_min_messages = error;
SELECT lives_ok(format($$SELECT organization.on_device_registered(pg_temp.event('device.registered', 'device_service',
                    jsonb_build_object('device_id', %L::uuid, 'owner_id', %L::uuid, 'organization_id', %L::uuid)))$$,
                    gen_random_uuid(), pg_temp.uid('eve'), pg_temp.oid('fam')),
                'a device whose owner is not a member of the organization named');
SELECT is(pg_temp.since_types(), '-', 'is not shared (a warning, no event)');
SELECT lives_ok($$SELECT organization.on_device_registered(pg_temp.event('device.registered', 'device_service', '{"device_id": 1}'))$$,
                'a malformed device.registered is ignored, not raised');
RESET client_min_messages;
SELECT is((SELECT kind FROM organization.share_resource(pg_temp.uid('cat'), pg_temp.oid('fam'), 'device', pg_temp.rid('device'))), 'device',
          'the device''s owner (known from device.registered) may share it through the API');
SELECT throws_ok(format('SELECT organization.unshare_resource(%L, %L, %L, %L)', pg_temp.uid('dan'), pg_temp.oid('fam'), 'album', pg_temp.rid('album')),
                 '42501', NULL, 'a non-member cannot unshare: 42501');
SELECT pg_temp.reset_mark();
SELECT is(organization.unshare_resource(pg_temp.uid('cat'), pg_temp.oid('fam'), 'album', pg_temp.rid('album')), true,
          'the owner unshares a member''s album');
SELECT is((SELECT data ->> 'reason' || ' ' || (data ->> 'unshared_by') FROM pg_temp.since()), 'unshared ' || pg_temp.uid('cat'),
          'family.resource_unshared, reason unshared');
SELECT is(organization.unshare_resource(pg_temp.uid('cat'), pg_temp.oid('fam'), 'album', pg_temp.rid('album')), false,
          'unsharing again: false');
SELECT is(organization.can_access(pg_temp.uid('ann'), 'album', pg_temp.rid('album')), false, 'no member sees it any more');
SELECT organization.share_resource(pg_temp.uid('ben'), pg_temp.oid('fam'), 'album', pg_temp.rid('album'));
SELECT pg_temp.reset_mark();
SELECT lives_ok(format('SELECT organization.leave_organization(%L, %L)', pg_temp.uid('ben'), pg_temp.oid('fam')), 'an admin leaves');
SELECT is(pg_temp.since_types(), 'family.resource_unshared organization.member_removed',
          'the sharer''s shares end with the membership, then organization.member_removed (reason left)');
SELECT is(organization.can_access(pg_temp.uid('ann'), 'album', pg_temp.rid('album')), false, 'what ben shared is no longer visible');
SELECT is(organization.can_access(pg_temp.uid('ben'), 'device', pg_temp.rid('device')), false,
          'and ben no longer sees what the family shares');

-- ---------------------------------------------------------------- user.deleted
-- fam: cat owner, ann admin.  biz: fay owner, gus guest.  (and ann-personal)
INSERT INTO o SELECT 'biz', org_id FROM organization.create_organization(pg_temp.uid('fay'), 'business', 'Fay Inc');
SELECT organization.accept_invitation(pg_temp.uid('gus'),
           (organization.invite_member(pg_temp.uid('fay'), pg_temp.oid('biz'), pg_temp.mail('gus'), 'guest')).token);
SELECT organization.accept_invitation(pg_temp.uid('gus'),
           (organization.invite_member(pg_temp.uid('cat'), pg_temp.oid('fam'), pg_temp.mail('gus'), 'member')).token);
SELECT pg_temp.reset_mark();
SELECT lives_ok(format($$SELECT organization.on_user_deleted(pg_temp.event('user.deleted', 'account_service', '{"user_id": "%s"}'))$$,
                       pg_temp.uid('cat')), 'on_user_deleted: the owner of fam is deleted');
SELECT is(pg_temp.role_of('fam', 'ann'), 'owner', 'ownership passes to the longest-standing admin (ann, before gus the member)');
SELECT is((SELECT string_agg(event_type || ':' || coalesce(who, '-') || ':' || coalesce(data ->> 'reason', ''), ' ' ORDER BY n) FROM pg_temp.since()),
          'family.resource_unshared:-:member_left organization.member_removed:cat:user_deleted organization.member_role_changed:ann:owner_deleted',
          'cat''s device share ends, member_removed (user_deleted), then member_role_changed (owner_deleted)');
SELECT pg_temp.reset_mark();
SELECT lives_ok(format($$SELECT organization.on_user_deleted(pg_temp.event('user.deleted', 'account_service', '{"user_id": "%s"}'))$$,
                       pg_temp.uid('fay')), 'the owner of biz, whose only other member is a guest, is deleted');
SELECT is(organization.organization_exists(pg_temp.oid('biz')), false, 'biz closes');
SELECT is(organization.is_member(pg_temp.oid('biz'), pg_temp.uid('gus')), false, 'its guest is no longer a member');
SELECT is((SELECT string_agg(event_type || ':' || coalesce(who, '-') || ':' || coalesce(data ->> 'reason', ''), ' ' ORDER BY n) FROM pg_temp.since()),
          'organization.member_removed:fay:user_deleted organization.member_removed:gus:closed organization.closed:-:owner_deleted',
          'member_removed for the owner (user_deleted) and the guest (closed), then organization.closed');
SELECT pg_temp.reset_mark();
SELECT lives_ok(format($$SELECT organization.on_user_deleted(pg_temp.event('user.deleted', 'account_service', '{"user_id": "%s"}'))$$,
                       pg_temp.uid('fay')), 'user.deleted again');
SELECT is(pg_temp.since_types(), '-', 'finds nothing to do');

-- ---------------------------------------------------------------- privileges
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
            WHERE p.pronamespace = 'organization'::regnamespace
              AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a
                                               WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))),
          NULL, 'no function of schema organization is executable by PUBLIC');
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
            WHERE p.pronamespace = 'organization'::regnamespace AND has_function_privilege('isa_app', p.oid, 'EXECUTE')
              AND (p.proname LIKE '\_%' OR p.proname LIKE 'on\_%' OR NOT p.prosecdef)),
          NULL, 'isa_app may execute only SECURITY DEFINER API functions (no handler, no internal function)');
SELECT is((SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'organization'::regnamespace
             AND has_function_privilege('isa_app', p.oid, 'EXECUTE')), 21::bigint, 'the 21 API functions');
SELECT ok(NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = 'organization'::regnamespace AND c.relkind IN ('r', 'p')
                         AND (has_table_privilege('isa_app', c.oid, 'SELECT') OR has_table_privilege('isa_app', c.oid, 'INSERT')
                              OR has_table_privilege('isa_app', c.oid, 'UPDATE') OR has_table_privilege('isa_app', c.oid, 'DELETE'))),
          'isa_app has no privilege on any table of organization');
GRANT SELECT ON u, o TO isa_app;        -- this file's bookkeeping, not the service's
SET LOCAL ROLE isa_app;
SELECT is((SELECT role FROM organization.get_organization(pg_temp.uid('ann'), pg_temp.oid('fam'))), 'owner',
          'isa_app calls the API');
SELECT throws_ok('SELECT 1 FROM organization.members', '42501', NULL, 'isa_app cannot read organization.members');
SELECT throws_ok($$SELECT organization.on_user_deleted(NULL::isa.event)$$, '42501', NULL, 'isa_app cannot call a handler');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
