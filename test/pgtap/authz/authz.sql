-- authz.sql — the authorization service: roles with 'resource:action'
-- permissions, role bindings everywhere or in one organization, per-resource
-- grants, authz.check (deny by default), the permission.granted / revoked
-- events each change writes to authz.outbox, the user.deleted handler, the
-- organization roles kept from organization's membership events, and who may
-- call what.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(188);

-- Users of this file (made through account), by label.
CREATE TEMP TABLE u (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
INSERT INTO u
SELECT l, (account.create_user(l || '@authz-pgtap.example.com', initcap(l))).user_id
  FROM unnest(ARRAY['alice', 'bob', 'carol', 'dave', 'erin']) l;
SELECT account.delete_user((SELECT id FROM u WHERE label = 'carol'));
-- Two organizations (bindings and grants limited to one must name a real
-- one), owned by a user who is not one of this file's.
CREATE TEMP TABLE org (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
INSERT INTO org
SELECT l, (organization.create_organization(
              (account.create_user('olga-' || gen_random_uuid() || '@authz-pgtap.example.com', 'Olga')).user_id,
              'business', 'Org ' || l)).org_id
  FROM unnest(ARRAY['x', 'y']) l;
CREATE FUNCTION pg_temp.uid(l text) RETURNS uuid LANGUAGE sql STABLE RETURN (SELECT id FROM u WHERE label = l);
CREATE FUNCTION pg_temp.oid_of(l text) RETURNS uuid LANGUAGE sql STABLE RETURN (SELECT id FROM org WHERE label = l);
-- This file's events, oldest first: (n, event_type, source, user, data).
CREATE TEMP VIEW ev AS
SELECT row_number() OVER (ORDER BY o.id) AS n, o.event_type, o.source,
       (SELECT label FROM u WHERE u.id::text = o.data ->> 'user_id') AS who, o.data
  FROM authz.outbox o
 WHERE o.data ->> 'user_id' IN (SELECT id::text FROM u);
CREATE TEMP TABLE mark (at bigint) ON COMMIT DROP;
INSERT INTO mark VALUES (0);
-- events since the last pg_temp.since() call
CREATE FUNCTION pg_temp.since() RETURNS SETOF ev LANGUAGE sql
    AS $$SELECT * FROM ev WHERE n > (SELECT at FROM mark)$$;
CREATE FUNCTION pg_temp.reset_mark() RETURNS void LANGUAGE sql
    AS $$UPDATE mark SET at = (SELECT coalesce(max(n), 0) FROM ev)$$;

-- ---------------------------------------------------------------- schema and catalogue
SELECT has_table('authz', 'roles', 'table authz.roles exists');
SELECT has_table('authz', 'role_bindings', 'table authz.role_bindings exists');
SELECT has_table('authz', 'grants', 'table authz.grants exists');
SELECT set_eq($$SELECT event_type || ' ' || (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(data_fields) k)
                 FROM isa.event_types WHERE source = 'authorization_service' AND event_type LIKE 'permission.%'$$,
              ARRAY['permission.granted org_id,permission,resource_id,resource_type,role,user_id,via',
                    'permission.revoked org_id,permission,resource_id,resource_type,role,user_id,via'],
              'permission.granted and permission.revoked are registered with the contract''s data fields');
SELECT set_eq($$SELECT subject_filter || ' ' || handler::text FROM isa.subscriptions WHERE service = 'authz'$$,
              ARRAY['account_service.user.deleted authz.on_user_deleted(isa.event)',
                    'organization_service.organization.member_added authz.on_organization_member_added(isa.event)',
                    'organization_service.organization.member_role_changed authz.on_organization_member_role_changed(isa.event)',
                    'organization_service.organization.member_removed authz.on_organization_member_removed(isa.event)'],
              'authz subscribes to user.deleted and to organization''s member_added, member_role_changed, member_removed');

-- ---------------------------------------------------------------- create_role
SELECT is((SELECT (r.name, r.description, r.permissions)::text
             FROM authz.create_role('pgtap_editor', 'Edits documents',
                                    ARRAY['document:write', 'document:read', 'document:write']) r),
          '(pgtap_editor,"Edits documents","{document:read,document:write}")',
          'create_role returns the role with its permissions sorted and without duplicates');
SELECT is((SELECT r.created_at FROM authz.create_role('pgtap_editor', 'Edits documents',
                                                      ARRAY['document:read', 'document:write']) r),
          (SELECT created_at FROM authz.roles WHERE name = 'pgtap_editor'),
          'the same create_role again (in any order) returns the existing role: a retry');
SELECT is((SELECT count(*) FROM authz.roles WHERE name = 'pgtap_editor'), 1::bigint, 'and creates no second role');
SELECT throws_ok($$SELECT authz.create_role('pgtap_editor', 'Edits everything', ARRAY['document:read', 'document:write'])$$,
                 '23505', 'role "pgtap_editor" already exists', 'the same name with another description is 23505');
SELECT throws_ok($$SELECT authz.create_role('pgtap_editor', 'Edits documents', ARRAY['document:read'])$$,
                 '23505', 'role "pgtap_editor" already exists', 'the same name with other permissions is 23505');
SELECT lives_ok($$SELECT authz.create_role('pgtap_org_admin', 'Runs projects in an organization', ARRAY['project:*'])$$,
                'a role may hold a resource:* permission');
SELECT lives_ok($$SELECT authz.create_role('pgtap_reader', 'Reads projects', ARRAY['project:read'])$$,
                'create_role pgtap_reader');
SELECT is((SELECT permissions FROM authz.create_role('pgtap_empty', '')), '{}'::text[],
          'a role without permissions and with an empty description is allowed');
SELECT throws_ok(format('SELECT authz.create_role(%L, %L)', n, 'x'), '22023', format('malformed role name "%s"', n),
                 format('the role name %L is 22023', n))
  FROM unnest(ARRAY['Admin', '1admin', '', 'a b', 'admin!', 'r' || repeat('x', 63)]) n;
SELECT throws_ok(format('SELECT authz.create_role(%L, %L, ARRAY[%L])', 'pgtap_bad', 'x', p), '22023',
                 format('malformed permission "%s"', p), format('the permission %L is 22023', p))
  FROM unnest(ARRAY['read', 'Document:read', 'document:', ':read', 'document:read:all', '*:read', 'document:re*',
                    'document:*x', 'doc ument:read', 'document :read', '']) p;
SELECT throws_ok($$SELECT authz.create_role('pgtap_bad', 'x', ARRAY['document:read', NULL])$$, '22004',
                 'permission must not be null', 'a NULL permission in the list is 22004');
SELECT throws_ok($$SELECT authz.create_role(NULL, 'x')$$, '22004', 'role name must not be null', 'a NULL role name is 22004');
SELECT throws_ok($$SELECT authz.create_role('pgtap_bad', NULL)$$, '22004', 'description must not be null',
                 'a NULL description is 22004');
SELECT throws_ok($$SELECT authz.create_role('pgtap_bad', 'x', NULL)$$, '22004', 'permissions must not be null',
                 'NULL permissions are 22004');
SELECT throws_ok(format('SELECT authz.create_role(%L, %L)', 'pgtap_bad', repeat('d', 1001)), '22023',
                 'description is too long (1001 characters; at most 1000)', 'a description over 1000 characters is 22023');
SELECT is((SELECT count(*) FROM authz.roles WHERE name = 'pgtap_bad'), 0::bigint, 'no refused role was created');
SELECT is((SELECT (r.name, r.permissions)::text FROM authz.get_role('pgtap_org_admin') r), '(pgtap_org_admin,{project:*})',
          'get_role returns a role');
SELECT throws_ok($$SELECT authz.get_role('pgtap_nope')$$, 'P0002', 'role "pgtap_nope" not found', 'get_role of an unknown role is P0002');
SELECT throws_ok($$SELECT authz.get_role(NULL)$$, '22004', 'role must not be null', 'get_role(NULL) is 22004');
SELECT is(ARRAY(SELECT name FROM authz.list_roles() WHERE name LIKE 'pgtap\_%'),
          ARRAY['pgtap_editor', 'pgtap_empty', 'pgtap_org_admin', 'pgtap_reader'], 'list_roles lists the roles by name');
SELECT is((SELECT count(*) FROM ev), 0::bigint, 'creating roles publishes nothing (no user''s permissions changed)');

-- ---------------------------------------------------------------- bind_role
SELECT is(authz.bind_role(pg_temp.uid('alice'), 'pgtap_editor'), true, 'bind_role binds a role everywhere: true');
SELECT is((SELECT count(*) FROM pg_temp.since()), 2::bigint, 'one event per permission of the role');
SELECT set_eq($$SELECT event_type || ' ' || source || ' ' || data::text FROM pg_temp.since()$$,
              ARRAY['permission.granted authorization_service ' ||
                      jsonb_build_object('user_id', pg_temp.uid('alice'), 'permission', 'document:read',
                                         'resource_type', 'document', 'resource_id', NULL, 'org_id', NULL,
                                         'via', 'role', 'role', 'pgtap_editor')::text,
                    'permission.granted authorization_service ' ||
                      jsonb_build_object('user_id', pg_temp.uid('alice'), 'permission', 'document:write',
                                         'resource_type', 'document', 'resource_id', NULL, 'org_id', NULL,
                                         'via', 'role', 'role', 'pgtap_editor')::text],
              'permission.granted carries user_id, permission, resource_type, resource_id null, org_id null, via role and the role');
SELECT pg_temp.reset_mark();
SELECT is(authz.bind_role(pg_temp.uid('alice'), 'pgtap_editor'), false, 'binding the same role again returns false');
SELECT is((SELECT count(*) FROM pg_temp.since()), 0::bigint, 'and publishes nothing');
SELECT is((SELECT count(*) FROM authz.role_bindings WHERE user_id = pg_temp.uid('alice')), 1::bigint, 'and adds no binding');

SELECT is(authz.bind_role(pg_temp.uid('alice'), 'pgtap_org_admin', pg_temp.oid_of('x')), true,
          'bind_role binds a role in one organization');
SELECT is((SELECT data FROM pg_temp.since()),
          jsonb_build_object('user_id', pg_temp.uid('alice'), 'permission', 'project:*', 'resource_type', 'project',
                             'resource_id', NULL, 'org_id', pg_temp.oid_of('x'), 'via', 'role', 'role', 'pgtap_org_admin'),
          'its event names the organization');
SELECT pg_temp.reset_mark();
SELECT is(authz.bind_role(pg_temp.uid('alice'), 'pgtap_org_admin', pg_temp.oid_of('x')), false,
          'binding it again in the same organization returns false');
SELECT is(authz.bind_role(pg_temp.uid('dave'), 'pgtap_reader', pg_temp.oid_of('y')), true, 'bind dave as reader in y');
SELECT is(authz.bind_role(pg_temp.uid('dave'), 'pgtap_editor'), true, 'bind dave as editor everywhere');
SELECT is(authz.bind_role(pg_temp.uid('erin'), 'pgtap_empty'), true, 'a role without permissions can be bound');
SELECT is((SELECT count(*) FROM pg_temp.since() WHERE who = 'erin'), 0::bigint, 'binding it publishes nothing');
SELECT pg_temp.reset_mark();

SELECT throws_ok(format('SELECT authz.bind_role(%L, %L)', '0190f1a0-0000-7000-8000-0000000000ff', 'pgtap_editor'),
                 'P0002', 'user 0190f1a0-0000-7000-8000-0000000000ff not found', 'binding an unknown user is P0002');
SELECT throws_ok(format('SELECT authz.bind_role(%L, %L)', pg_temp.uid('carol'), 'pgtap_editor'),
                 'P0002', format('user %s not found', pg_temp.uid('carol')), 'binding a deleted user is P0002');
SELECT throws_ok(format('SELECT authz.bind_role(%L, %L)', pg_temp.uid('bob'), 'pgtap_nope'),
                 'P0002', 'role "pgtap_nope" not found', 'binding an unknown role is P0002');
SELECT throws_ok($$SELECT authz.bind_role(NULL, 'pgtap_editor')$$, '22004', 'user_id must not be null',
                 'bind_role with a NULL user is 22004');
SELECT throws_ok(format('SELECT authz.bind_role(%L, NULL)', pg_temp.uid('bob')), '22004', 'role must not be null',
                 'bind_role with a NULL role is 22004');
SELECT is((SELECT count(*) FROM authz.role_bindings WHERE user_id IN (pg_temp.uid('bob'), pg_temp.uid('carol'))), 0::bigint,
          'the refused bindings wrote nothing');

-- ---------------------------------------------------------------- grant_permission
SELECT is(authz.grant_permission(pg_temp.uid('bob'), 'wallet:read', 'w-1'), true, 'grant_permission grants: true');
SELECT is((SELECT event_type || ' ' || data::text FROM pg_temp.since()),
          'permission.granted ' || jsonb_build_object('user_id', pg_temp.uid('bob'), 'permission', 'wallet:read',
                                                      'resource_type', 'wallet', 'resource_id', 'w-1', 'org_id', NULL,
                                                      'via', 'grant', 'role', NULL)::text,
          'its event carries the resource_id, via grant and no role');
SELECT pg_temp.reset_mark();
SELECT is(authz.grant_permission(pg_temp.uid('bob'), 'wallet:read', 'w-1'), false, 'granting the same again returns false');
SELECT is((SELECT count(*) FROM pg_temp.since()), 0::bigint, 'and publishes nothing');
SELECT is(authz.grant_permission(pg_temp.uid('bob'), 'file:write', 'f-1', pg_temp.oid_of('x')), true,
          'a grant may be limited to an organization');
SELECT is((SELECT data ->> 'org_id' FROM pg_temp.since()), pg_temp.oid_of('x')::text, 'its event names the organization');
SELECT is(authz.grant_permission(pg_temp.uid('bob'), 'folder:*', 'd-1'), true, 'a grant may be resource:*');
SELECT pg_temp.reset_mark();
SELECT throws_ok(format('SELECT authz.grant_permission(%L, %L, %L)', '0190f1a0-0000-7000-8000-0000000000ff', 'wallet:read', 'w-1'),
                 'P0002', 'user 0190f1a0-0000-7000-8000-0000000000ff not found', 'granting to an unknown user is P0002');
SELECT throws_ok(format('SELECT authz.grant_permission(%L, %L, %L)', pg_temp.uid('carol'), 'wallet:read', 'w-1'),
                 'P0002', format('user %s not found', pg_temp.uid('carol')), 'granting to a deleted user is P0002');
SELECT throws_ok(format('SELECT authz.grant_permission(%L, %L, %L)', pg_temp.uid('bob'), 'Wallet:read', 'w-1'),
                 '22023', 'malformed permission "Wallet:read"', 'granting a malformed permission is 22023');
SELECT throws_ok(format('SELECT authz.grant_permission(%L, %L, NULL)', pg_temp.uid('bob'), 'wallet:read'),
                 '22004', 'resource_id must not be null', 'a grant without a resource is 22004');
SELECT throws_ok(format('SELECT authz.grant_permission(%L, %L, %L)', pg_temp.uid('bob'), 'wallet:read', ''),
                 '22023', 'resource_id must be 1 to 255 characters', 'an empty resource id is 22023');
SELECT throws_ok(format('SELECT authz.grant_permission(%L, %L, %L)', pg_temp.uid('bob'), 'wallet:read', repeat('r', 256)),
                 '22023', 'resource_id must be 1 to 255 characters', 'a resource id over 255 characters is 22023');
SELECT throws_ok(format('SELECT authz.grant_permission(NULL, %L, %L)', 'wallet:read', 'w-1'),
                 '22004', 'user_id must not be null', 'a grant to a NULL user is 22004');
SELECT is((SELECT count(*) FROM pg_temp.since()), 0::bigint, 'the refused grants published nothing');

-- ---------------------------------------------------------------- check
SELECT is(authz.check(pg_temp.uid('alice'), 'document:read'), true, 'a role bound everywhere allows its permission');
SELECT is(authz.check(pg_temp.uid('alice'), 'document:read', 'doc-42', pg_temp.oid_of('y')), true,
          '... on any resource and in any organization');
SELECT is(authz.check(pg_temp.uid('alice'), 'document:delete'), false, 'a permission the role does not hold is denied');
SELECT is(authz.check(pg_temp.uid('alice'), 'document:*'), false, 'document:* is denied to a role holding only some actions');
SELECT is(authz.check(pg_temp.uid('alice'), 'project:delete', NULL, pg_temp.oid_of('x')), true,
          'a role bound in organization x allows in x; project:* covers project:delete');
SELECT is(authz.check(pg_temp.uid('alice'), 'project:*', 'p-1', pg_temp.oid_of('x')), true,
          'project:* itself is allowed to a holder of project:*');
SELECT is(authz.check(pg_temp.uid('alice'), 'project:delete'), false, '... but not outside any organization');
SELECT is(authz.check(pg_temp.uid('alice'), 'project:delete', NULL, pg_temp.oid_of('y')), false, '... nor in another organization');
SELECT is(authz.check(pg_temp.uid('dave'), 'project:read', NULL, pg_temp.oid_of('y')), true, 'dave reads projects in y');
SELECT is(authz.check(pg_temp.uid('dave'), 'project:write', NULL, pg_temp.oid_of('y')), false, 'but may not write them');
SELECT is(authz.check(pg_temp.uid('bob'), 'wallet:read', 'w-1'), true, 'a grant allows its permission on its resource');
SELECT is(authz.check(pg_temp.uid('bob'), 'wallet:read', 'w-1', pg_temp.oid_of('y')), true,
          'a grant without organization applies in any organization');
SELECT is(authz.check(pg_temp.uid('bob'), 'wallet:read', 'w-2'), false, 'a grant does not cover another resource');
SELECT is(authz.check(pg_temp.uid('bob'), 'wallet:read'), false, 'a grant does not answer a check without a resource');
SELECT is(authz.check(pg_temp.uid('bob'), 'wallet:write', 'w-1'), false, 'a grant does not cover another action');
SELECT is(authz.check(pg_temp.uid('bob'), 'file:write', 'f-1', pg_temp.oid_of('x')), true, 'an organization''s grant applies there');
SELECT is(authz.check(pg_temp.uid('bob'), 'file:write', 'f-1'), false, '... not outside any organization');
SELECT is(authz.check(pg_temp.uid('bob'), 'file:write', 'f-1', pg_temp.oid_of('y')), false, '... nor in another one');
SELECT is(authz.check(pg_temp.uid('bob'), 'folder:delete', 'd-1'), true, 'a folder:* grant covers folder:delete on its resource');
SELECT is(authz.check(pg_temp.uid('bob'), 'document:read'), false, 'a user without roles is denied role permissions');
SELECT is(authz.check(pg_temp.uid('erin'), 'document:read'), false, 'a role without permissions allows nothing');
SELECT is(authz.check('0190f1a0-0000-7000-8000-0000000000ff', 'document:read'), false, 'an unknown user is denied, no error');
SELECT is(authz.check(NULL, 'document:read'), false, 'a NULL user is denied');
SELECT is(authz.check(pg_temp.uid('alice'), 'spaceship:launch'), false, 'an unknown permission is denied, no error');
SELECT throws_ok(format('SELECT authz.check(%L, %L)', pg_temp.uid('alice'), p), '22023', format('malformed permission "%s"', p),
                 format('check of the malformed permission %L is 22023', p))
  FROM unnest(ARRAY['document', 'Document:read', 'document:read:x', '', '*:*']) p;
SELECT throws_ok(format('SELECT authz.check(%L, NULL)', pg_temp.uid('alice')), '22004', 'permission must not be null',
                 'check with a NULL permission is 22004');
SELECT is((SELECT provolatile FROM pg_proc WHERE oid = 'authz.check(uuid,text,text,uuid)'::regprocedure), 's',
          'authz.check is STABLE');

-- ---------------------------------------------------------------- list_user_permissions
SELECT is(ARRAY(SELECT (p.permission, p.resource_type, p.resource_id, p.org_id, p.via, p.role)::text
                  FROM authz.list_user_permissions(pg_temp.uid('alice')) p),
          ARRAY['(document:read,document,,,role,pgtap_editor)', '(document:write,document,,,role,pgtap_editor)'],
          'list_user_permissions without organization: the global bindings');
SELECT is(ARRAY(SELECT (p.permission, p.org_id, p.role)::text FROM authz.list_user_permissions(pg_temp.uid('alice'), pg_temp.oid_of('x')) p),
          ARRAY['(document:read,,pgtap_editor)', '(document:write,,pgtap_editor)',
                format('(project:*,%s,pgtap_org_admin)', pg_temp.oid_of('x'))],
          'in organization x: the global bindings and those of x');
SELECT is(ARRAY(SELECT (p.permission, p.resource_id, p.org_id, p.via)::text FROM authz.list_user_permissions(pg_temp.uid('bob'), pg_temp.oid_of('x')) p),
          ARRAY[format('(file:write,f-1,%s,grant)', pg_temp.oid_of('x')), '(folder:*,d-1,,grant)', '(wallet:read,w-1,,grant)'],
          'grants are listed with their resource');
SELECT is((SELECT count(*) FROM authz.list_user_permissions('0190f1a0-0000-7000-8000-0000000000ff')), 0::bigint,
          'an unknown user has no permissions (no error)');
SELECT throws_ok($$SELECT * FROM authz.list_user_permissions(NULL)$$, '22004', 'user_id must not be null',
                 'list_user_permissions(NULL) is 22004');

-- ---------------------------------------------------------------- role changes reach the bindings
SELECT pg_temp.reset_mark();
SELECT is(authz.add_role_permission('pgtap_editor', 'comment:write'), true, 'add_role_permission adds: true');
SELECT is(authz.check(pg_temp.uid('alice'), 'comment:write'), true, 'a bound user may do the added permission at once');
SELECT is(authz.check(pg_temp.uid('dave'), 'comment:write'), true, 'every bound user may');
SELECT set_eq($$SELECT event_type || ' ' || who || ' ' || (data ->> 'permission') || ' ' || (data ->> 'role') FROM pg_temp.since()$$,
              ARRAY['permission.granted alice comment:write pgtap_editor', 'permission.granted dave comment:write pgtap_editor'],
              'one permission.granted per binding of the role');
SELECT pg_temp.reset_mark();
SELECT is(authz.add_role_permission('pgtap_editor', 'comment:write'), false, 'adding it again returns false');
SELECT is((SELECT count(*) FROM pg_temp.since()), 0::bigint, 'and publishes nothing');
SELECT is((SELECT permissions FROM authz.get_role('pgtap_editor')), ARRAY['comment:write', 'document:read', 'document:write'],
          'the role lists it, sorted');
SELECT throws_ok($$SELECT authz.add_role_permission('pgtap_nope', 'comment:write')$$, 'P0002', 'role "pgtap_nope" not found',
                 'add_role_permission to an unknown role is P0002');
SELECT throws_ok($$SELECT authz.add_role_permission('pgtap_editor', 'comment')$$, '22023', 'malformed permission "comment"',
                 'add_role_permission of a malformed permission is 22023');

SELECT is(authz.remove_role_permission('pgtap_editor', 'document:write'), true, 'remove_role_permission removes: true');
SELECT is(authz.check(pg_temp.uid('alice'), 'document:write'), false, 'bound users lose it at once');
SELECT set_eq($$SELECT event_type || ' ' || who || ' ' || (data ->> 'permission') || ' ' || (data ->> 'via') FROM pg_temp.since()$$,
              ARRAY['permission.revoked alice document:write role', 'permission.revoked dave document:write role'],
              'one permission.revoked per binding of the role');
SELECT pg_temp.reset_mark();
SELECT is(authz.remove_role_permission('pgtap_editor', 'document:write'), false, 'removing it again returns false');
SELECT is((SELECT count(*) FROM pg_temp.since()), 0::bigint, 'and publishes nothing');
SELECT throws_ok($$SELECT authz.remove_role_permission('pgtap_nope', 'document:read')$$, 'P0002', 'role "pgtap_nope" not found',
                 'remove_role_permission from an unknown role is P0002');
SELECT is((SELECT count(*) FROM authz.role_bindings b JOIN authz.roles r USING (role_id)
            WHERE r.name LIKE 'pgtap\_%' AND b.permissions IS DISTINCT FROM r.permissions), 0::bigint,
          'every binding carries exactly its role''s permissions');

-- ---------------------------------------------------------------- unbind_role, revoke_permission
SELECT is(authz.unbind_role(pg_temp.uid('alice'), 'pgtap_org_admin', pg_temp.oid_of('y')), false,
          'unbinding with another organization than the binding''s removes nothing: false');
SELECT is(authz.unbind_role(pg_temp.uid('alice'), 'pgtap_org_admin'), false,
          'nor does unbinding the global binding the user does not have');
SELECT is(authz.check(pg_temp.uid('alice'), 'project:read', NULL, pg_temp.oid_of('x')), true, 'the binding in x remains');
SELECT is(authz.unbind_role(pg_temp.uid('alice'), 'pgtap_org_admin', pg_temp.oid_of('x')), true, 'unbind_role removes the binding: true');
SELECT is(authz.check(pg_temp.uid('alice'), 'project:read', NULL, pg_temp.oid_of('x')), false, 'its permissions are gone');
SELECT is((SELECT event_type || ' ' || data::text FROM pg_temp.since()),
          'permission.revoked ' || jsonb_build_object('user_id', pg_temp.uid('alice'), 'permission', 'project:*',
                                                      'resource_type', 'project', 'resource_id', NULL,
                                                      'org_id', pg_temp.oid_of('x'), 'via', 'role', 'role', 'pgtap_org_admin')::text,
          'permission.revoked per permission of the role, with the binding''s organization');
SELECT pg_temp.reset_mark();
SELECT is(authz.unbind_role(pg_temp.uid('alice'), 'pgtap_org_admin', pg_temp.oid_of('x')), false, 'unbinding again returns false');
SELECT is((SELECT count(*) FROM pg_temp.since()), 0::bigint, 'and publishes nothing');
SELECT throws_ok(format('SELECT authz.unbind_role(%L, %L)', pg_temp.uid('alice'), 'pgtap_nope'), 'P0002',
                 'role "pgtap_nope" not found', 'unbinding an unknown role is P0002');
SELECT throws_ok($$SELECT authz.unbind_role(NULL, 'pgtap_editor')$$, '22004', 'user_id must not be null',
                 'unbind_role with a NULL user is 22004');

SELECT is(authz.revoke_permission(pg_temp.uid('bob'), 'wallet:read', 'w-1', pg_temp.oid_of('x')), false,
          'revoking with another organization than the grant''s removes nothing: false');
SELECT is(authz.revoke_permission(pg_temp.uid('bob'), 'wallet:read', 'w-1'), true, 'revoke_permission removes the grant: true');
SELECT is(authz.check(pg_temp.uid('bob'), 'wallet:read', 'w-1'), false, 'the grant no longer allows');
SELECT is((SELECT event_type || ' ' || data::text FROM pg_temp.since()),
          'permission.revoked ' || jsonb_build_object('user_id', pg_temp.uid('bob'), 'permission', 'wallet:read',
                                                      'resource_type', 'wallet', 'resource_id', 'w-1', 'org_id', NULL,
                                                      'via', 'grant', 'role', NULL)::text,
          'permission.revoked for the grant');
SELECT pg_temp.reset_mark();
SELECT is(authz.revoke_permission(pg_temp.uid('bob'), 'wallet:read', 'w-1'), false, 'revoking again returns false');
SELECT is((SELECT count(*) FROM pg_temp.since()), 0::bigint, 'and publishes nothing');
SELECT throws_ok(format('SELECT authz.revoke_permission(%L, %L, %L)', pg_temp.uid('bob'), 'wallet', 'w-1'), '22023',
                 'malformed permission "wallet"', 'revoking a malformed permission is 22023');

-- ---------------------------------------------------------------- user.deleted
SELECT is(authz.grant_permission(pg_temp.uid('dave'), 'invoice:read', 'inv-7'), true, 'grant dave invoice:read on inv-7');
SELECT is(authz.grant_permission(pg_temp.uid('alice'), 'invoice:read', 'inv-8'), true, 'grant alice invoice:read on inv-8');
SELECT pg_temp.reset_mark();
CREATE TEMP TABLE dave_deleted ON COMMIT DROP AS
SELECT isa.event_from_json(jsonb_build_object('id', gen_random_uuid(), 'event_type', 'user.deleted',
         'source', 'account_service', 'timestamp', now(),
         'data', jsonb_build_object('user_id', pg_temp.uid('dave'), 'deleted_at', now()))) AS e;
SELECT lives_ok($$SELECT authz.on_user_deleted(e) FROM dave_deleted$$, 'on_user_deleted handles user.deleted');
SELECT is((SELECT count(*) FROM authz.role_bindings WHERE user_id = pg_temp.uid('dave'))
          + (SELECT count(*) FROM authz.grants WHERE user_id = pg_temp.uid('dave')), 0::bigint,
          'the user''s bindings and grants are gone');
SELECT set_eq($$SELECT event_type || ' ' || who || ' ' || (data ->> 'permission') || ' ' || (data ->> 'via')
                       || ' ' || coalesce(data ->> 'role', '-') || ' ' || coalesce(data ->> 'org_id', '-') FROM pg_temp.since()$$,
              ARRAY['permission.revoked dave comment:write role pgtap_editor -',
                    'permission.revoked dave document:read role pgtap_editor -',
                    'permission.revoked dave project:read role pgtap_reader ' || pg_temp.oid_of('y'),
                    'permission.revoked dave invoice:read grant - -'],
              'one permission.revoked per binding and permission and per grant');
SELECT is(authz.check(pg_temp.uid('alice'), 'invoice:read', 'inv-8'), true, 'other users keep theirs');
SELECT pg_temp.reset_mark();
SELECT lives_ok($$SELECT authz.on_user_deleted(e) FROM dave_deleted$$, 'a second delivery is harmless');
SELECT is((SELECT count(*) FROM pg_temp.since()), 0::bigint, 'and publishes nothing');
SET LOCAL client_min_messages = error;     -- the handler warns about the bad event
SELECT lives_ok($$SELECT authz.on_user_deleted(isa.event_from_json(jsonb_build_object('id', gen_random_uuid(),
                    'event_type', 'user.deleted', 'source', 'account_service', 'timestamp', now(),
                    'data', jsonb_build_object('user_id', 'not-a-uuid'))))$$,
                'an event with a malformed user_id is ignored, not raised (it would never succeed)');
RESET client_min_messages;
SELECT is((SELECT count(*) FROM authz.role_bindings WHERE user_id = pg_temp.uid('alice')), 1::bigint,
          'and changes nothing');

-- ---------------------------------------------------------------- delete_role
SELECT is(authz.bind_role(pg_temp.uid('bob'), 'pgtap_editor', pg_temp.oid_of('y')), true, 'bind bob as editor in y');
SELECT pg_temp.reset_mark();
SELECT lives_ok($$SELECT authz.delete_role('pgtap_editor')$$, 'delete_role deletes a role');
SELECT throws_ok($$SELECT authz.get_role('pgtap_editor')$$, 'P0002', 'role "pgtap_editor" not found', 'the role is gone');
SELECT is(authz.check(pg_temp.uid('alice'), 'document:read'), false, 'its permissions are gone from its holders');
SELECT set_eq($$SELECT event_type || ' ' || who || ' ' || (data ->> 'permission') || ' ' || coalesce(data ->> 'org_id', '-') FROM pg_temp.since()$$,
              ARRAY['permission.revoked alice comment:write -', 'permission.revoked alice document:read -',
                    'permission.revoked bob comment:write ' || pg_temp.oid_of('y'),
                    'permission.revoked bob document:read ' || pg_temp.oid_of('y')],
              'permission.revoked per binding and permission of the role');
SELECT throws_ok($$SELECT authz.delete_role('pgtap_editor')$$, 'P0002', 'role "pgtap_editor" not found',
                 'deleting an unknown role is P0002');

-- ---------------------------------------------------------------- organization roles
SELECT throws_ok(format('SELECT authz.bind_role(%L, %L, %L)', pg_temp.uid('bob'), 'pgtap_reader', gen_random_uuid()),
                 'P0002', NULL, 'binding a role in an unknown organization is P0002 (organization.organization_exists)');
SELECT throws_ok(format('SELECT authz.grant_permission(%L, %L, %L, %L)', pg_temp.uid('bob'), 'file:read', 'f-9', gen_random_uuid()),
                 'P0002', NULL, 'so is a grant limited to an unknown organization');

-- organization's events as the bridge hands them to authz's handlers
CREATE FUNCTION pg_temp.org_event(p_type text, p_user text) RETURNS isa.event LANGUAGE sql AS $$
    SELECT isa.event_from_json(jsonb_build_object('id', o.id, 'event_type', o.event_type, 'source', o.source,
                                                  'timestamp', now(), 'data', o.data))
      FROM organization.outbox o
     WHERE o.event_type = p_type AND o.data ->> 'user_id' = pg_temp.uid(p_user)::text
       AND o.data ->> 'org_id' = pg_temp.oid_of('fam')::text
     ORDER BY o.id DESC LIMIT 1 $$;
CREATE FUNCTION pg_temp.org_roles(p_user text) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(r.name, ',' ORDER BY r.name), '-')
      FROM authz.role_bindings b JOIN authz.roles r ON r.role_id = b.role_id
     WHERE b.user_id = pg_temp.uid(p_user) AND b.org_id = pg_temp.oid_of('fam') $$;
INSERT INTO org SELECT 'fam', (organization.create_organization(pg_temp.uid('erin'), 'family', 'Erin''s family')).org_id;
SELECT pg_temp.reset_mark();
SELECT lives_ok($$SELECT authz.on_organization_member_added(pg_temp.org_event('organization.member_added', 'erin'))$$,
                'on_organization_member_added handles the creator''s member_added');
SELECT is(pg_temp.org_roles('erin'), 'org_owner', 'the creator holds org_owner in the organization');
SELECT set_eq($$SELECT name || ' ' || array_to_string(permissions, ',') FROM authz.roles WHERE name LIKE 'org\_%'$$,
              ARRAY['org_owner organization:*,org_member:*,shared_resource:*',
                    'org_admin org_member:invite,org_member:read,org_member:remove,org_member:update_role,organization:read,shared_resource:read,shared_resource:share',
                    'org_member org_member:read,organization:read,shared_resource:read,shared_resource:share',
                    'org_guest org_member:read,organization:read,shared_resource:read'],
              'the first membership event made the four organization roles with their permissions');
SELECT is(authz.check(pg_temp.uid('erin'), 'org_member:invite', NULL, pg_temp.oid_of('fam')), true,
          'so authz.check allows org_member:invite there');
SELECT is(authz.check(pg_temp.uid('erin'), 'org_member:invite', NULL, pg_temp.oid_of('x')), false, '... and not in another organization');
SELECT is((SELECT string_agg(event_type || ' ' || (data ->> 'permission') || ' ' || (data ->> 'role'), ', ' ORDER BY data ->> 'permission')
             FROM pg_temp.since()),
          'permission.granted org_member:* org_owner, permission.granted organization:* org_owner, permission.granted shared_resource:* org_owner',
          'one permission.granted per permission of org_owner');
SELECT pg_temp.reset_mark();
SELECT lives_ok($$SELECT authz.on_organization_member_added(pg_temp.org_event('organization.member_added', 'erin'))$$,
                'a second delivery');
SELECT is((SELECT count(*) FROM pg_temp.since()), 0::bigint, 'publishes nothing');

SELECT organization.accept_invitation(pg_temp.uid('bob'),
           (organization.invite_member(pg_temp.uid('erin'), pg_temp.oid_of('fam'), 'BOB@authz-pgtap.example.com')).token);
SELECT lives_ok($$SELECT authz.on_organization_member_added(pg_temp.org_event('organization.member_added', 'bob'))$$,
                'an invitee''s member_added');
SELECT is(pg_temp.org_roles('bob'), 'org_member', 'binds org_member');
SELECT organization.change_member_role(pg_temp.uid('erin'), pg_temp.oid_of('fam'), pg_temp.uid('bob'), 'guest');
SELECT pg_temp.reset_mark();
SELECT lives_ok($$SELECT authz.on_organization_member_role_changed(pg_temp.org_event('organization.member_role_changed', 'bob'))$$,
                'on_organization_member_role_changed handles a change to guest');
SELECT is(pg_temp.org_roles('bob'), 'org_guest', 'org_guest replaces org_member');
SELECT is((SELECT string_agg(event_type || ' ' || (data ->> 'role'), ', ' ORDER BY event_type, data ->> 'role') FROM pg_temp.since()),
          'permission.granted org_guest, permission.granted org_guest, permission.granted org_guest, '
          || 'permission.revoked org_member, permission.revoked org_member, permission.revoked org_member, permission.revoked org_member',
          'org_guest''s permissions granted, org_member''s revoked');
SELECT organization.remove_member(pg_temp.uid('erin'), pg_temp.oid_of('fam'), pg_temp.uid('bob'));
SELECT lives_ok($$SELECT authz.on_organization_member_removed(pg_temp.org_event('organization.member_removed', 'bob'))$$,
                'on_organization_member_removed handles a removal');
SELECT is(pg_temp.org_roles('bob'), '-', 'the former member holds no role in the organization');
SELECT lives_ok($$SELECT authz.on_organization_member_added(pg_temp.org_event('organization.member_added', 'bob'))$$,
                'member_added delivered after member_removed (another consumer, late)');
SELECT is(pg_temp.org_roles('bob'), '-', 'binds nothing: authz asks organization, which says bob is not a member');
SET LOCAL client_min_messages = error;     -- the handler warns about the bad event
SELECT lives_ok($$SELECT authz.on_organization_member_added(isa.event_from_json(jsonb_build_object('id', gen_random_uuid(),
                    'event_type', 'organization.member_added', 'source', 'organization_service', 'timestamp', now(),
                    'data', jsonb_build_object('user_id', 'nope', 'org_id', 'nope'))))$$,
                'a malformed membership event is ignored, not raised');
RESET client_min_messages;

-- ---------------------------------------------------------------- privileges
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
            WHERE p.pronamespace = 'authz'::regnamespace
              AND EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                           WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')),
          NULL, 'no function of schema authz is executable by PUBLIC');
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'authz'::regnamespace AND has_function_privilege('isa_app', p.oid, 'EXECUTE')$$,
              ARRAY['authz."check"(uuid,text,text,uuid)', 'authz.get_role(text)', 'authz.list_roles()',
                    'authz.list_user_permissions(uuid,uuid)'],
              'isa_app may execute exactly the reading API functions (not the role-changing ones, isa_app_admin''s; not the handler, not the internal ones)');
SELECT is((SELECT bool_and(p.prosecdef AND p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'])
             FROM pg_proc p WHERE p.pronamespace = 'authz'::regnamespace
              AND (has_function_privilege('isa_app', p.oid, 'EXECUTE') OR has_function_privilege('isa_app_admin', p.oid, 'EXECUTE'))),
          true, 'every API function is SECURITY DEFINER with search_path pinned');
SELECT ok(NOT has_table_privilege('isa_app', 'authz.roles', 'SELECT')
          AND NOT has_table_privilege('isa_app', 'authz.role_bindings', 'SELECT')
          AND NOT has_table_privilege('isa_app', 'authz.grants', 'SELECT')
          AND NOT has_table_privilege('isa_app', 'authz.grants', 'INSERT'),
          'isa_app has no privilege on the tables');

GRANT SELECT ON u, org TO isa_app, isa_app_admin;      -- this file's bookkeeping, not the service's
SET LOCAL ROLE isa_app_admin;
SELECT is(authz.bind_role(pg_temp.uid('erin'), 'pgtap_reader'), true, 'isa_app_admin binds roles through the API');
SET LOCAL ROLE isa_app;
SELECT is(authz.check(pg_temp.uid('erin'), 'project:read'), true, 'and isa_app checks');
SELECT throws_ok($$SELECT count(*) FROM authz.role_bindings$$, '42501', 'permission denied for table role_bindings',
                 'isa_app may not read authz.role_bindings');
SELECT throws_ok($$SELECT authz.on_user_deleted(NULL::isa.event)$$, '42501', 'permission denied for function on_user_deleted',
                 'isa_app may not call the handler');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
