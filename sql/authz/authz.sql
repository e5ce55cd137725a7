-- authz.sql — the authorization service (schema authz, source
-- authorization_service): roles holding 'resource:action' permissions, role
-- bindings (global or in one organization), per-resource grants, and
-- authz.check, deny by default.  Every change of what a user may do publishes
-- permission.granted / permission.revoked; user.deleted removes the user's
-- bindings and grants; organization's membership events keep one
-- organization-scoped role per member (org_owner, org_admin, org_member,
-- org_guest).  docs/services/authz.md documents the API.
--
-- Built for authz.check: a binding row carries a copy of its role's
-- permissions (role_bindings.permissions, kept by the functions that change a
-- role), so the role path of a check is one probe of the (user_id, ...) index
-- of role_bindings, read index-only; the grant path is one probe of the
-- (user_id, resource_id, ...) index of grants.  Nothing else is read.

-- ---------------------------------------------------------------- permissions
-- 'resource:action': lower-case tokens (a letter, then letters, digits, _ ; at
-- most 63 characters each); the action may be '*' (every action on that
-- resource type).
CREATE FUNCTION authz._is_permission(permission text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN permission ~ '^[a-z][a-z0-9_]{0,62}:([a-z][a-z0-9_]{0,62}|\*)$';

-- The permission, or 22004 (NULL) / 22023 (malformed).
CREATE FUNCTION authz._check_permission(permission text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('permission', permission);
    IF NOT authz._is_permission(permission) THEN
        RAISE EXCEPTION 'malformed permission "%"', left(permission, 200) USING ERRCODE = '22023',
            HINT = 'A permission is resource:action in lower-case letters, digits and _, e.g. wallet:read; the action may be * for every action.';
    END IF;
    RETURN permission;
END
$$;

-- ---------------------------------------------------------------- tables
CREATE TABLE authz.roles (
    role_id     int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    description text NOT NULL CHECK (length(description) <= 1000),
    -- sorted, distinct, each a valid permission
    permissions text[] NOT NULL DEFAULT '{}' CHECK (array_position(permissions, NULL) IS NULL),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE authz.roles IS
    'Roles: a name, a description and the permissions (resource:action) the role gives.';

CREATE TABLE authz.role_bindings (
    user_id     uuid NOT NULL,
    role_id     int NOT NULL REFERENCES authz.roles,
    org_id      uuid,                              -- NULL: everywhere; else only in that organization
    permissions text[] NOT NULL,                   -- = roles.permissions of role_id, kept by the write functions
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- check's index: the user's bindings with everything it tests, read index-only.
    CONSTRAINT role_bindings_key UNIQUE NULLS NOT DISTINCT (user_id, role_id, org_id) INCLUDE (permissions)
);
CREATE INDEX role_bindings_role ON authz.role_bindings (role_id);
COMMENT ON TABLE authz.role_bindings IS
    'Which user holds which role, everywhere (org_id NULL) or in one organization; permissions copies the role''s for authz.check.';

CREATE TABLE authz.grants (
    user_id     uuid NOT NULL,
    permission  text NOT NULL CHECK (authz._is_permission(permission)),
    resource_id text NOT NULL CHECK (resource_id <> '' AND length(resource_id) <= 255),
    org_id      uuid,                              -- NULL: everywhere; else only in that organization
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- check's index: probed on (user_id, resource_id).
    CONSTRAINT grants_key UNIQUE NULLS NOT DISTINCT (user_id, resource_id, permission, org_id)
);
COMMENT ON TABLE authz.grants IS
    'Per-resource grants: a user may do permission on one resource (resource_id), everywhere or in one organization.';

-- ---------------------------------------------------------------- types
CREATE TYPE authz.role_info AS (
    name        text,
    description text,
    permissions text[],
    created_at  timestamptz,
    updated_at  timestamptz
);
COMMENT ON TYPE authz.role_info IS 'A role as the authz API returns it.';

CREATE TYPE authz.user_permission AS (
    permission    text,
    resource_type text,
    resource_id   text,      -- NULL: every resource of the type (a role's permission)
    org_id        uuid,      -- NULL: everywhere
    via           text,      -- 'role' or 'grant'
    role          text       -- the role's name when via = 'role'
);
COMMENT ON TYPE authz.user_permission IS
    'One source of a user''s permission: a role binding or a grant (authz.list_user_permissions).';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type(t.event_type, 'authorization_service', '1.0.0', t.description,
    '{"user_id":       {"type": "uuid",   "required": true,  "description": "the user"},
      "permission":    {"type": "string", "required": true,  "description": "resource:action (action may be *)"},
      "resource_type": {"type": "string", "required": true,  "description": "the resource part of the permission"},
      "resource_id":   {"type": "string", "required": false, "description": "the resource of a grant; null for a role''s permission (every resource)"},
      "org_id":        {"type": "uuid",   "required": false, "description": "the organization it is limited to; null: everywhere"},
      "via":           {"type": "string", "required": true,  "description": "role or grant"},
      "role":          {"type": "string", "required": false, "description": "the role''s name when via is role, else null"}}')
  FROM (VALUES
    ('permission.granted', 'A user gained a permission through a role binding, a permission added to a bound role, or a grant; one event per binding and permission, or per grant.'),
    ('permission.revoked', 'A user lost a permission of a role binding (unbound, role changed or deleted, user deleted) or a grant; one event per binding and permission, or per grant.')
  ) AS t (event_type, description);

-- ---------------------------------------------------------------- internal helpers
CREATE FUNCTION authz._publish(event_type text, user_id uuid, permission text, resource_id text,
                               org_id uuid, via text, role text) RETURNS uuid
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    RETURN isa.publish_event(event_type, 'authorization_service',
        jsonb_build_object('user_id', user_id, 'permission', permission,
                           'resource_type', split_part(permission, ':', 1),
                           'resource_id', resource_id, 'org_id', org_id, 'via', via, 'role', role));

-- The role row, locked (FOR SHARE to bind, FOR UPDATE to change it), or 22004/P0002.
CREATE FUNCTION authz._role(name text, for_update boolean) RETURNS authz.roles
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r authz.roles;
BEGIN
    PERFORM isa.not_null('role', name);
    IF for_update THEN
        SELECT * INTO r FROM authz.roles x WHERE x.name = _role.name FOR UPDATE;
    ELSE
        SELECT * INTO r FROM authz.roles x WHERE x.name = _role.name FOR SHARE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role "%" not found', left(name, 200) USING ERRCODE = 'P0002';
    END IF;
    RETURN r;
END
$$;

-- The resource id, or 22004/22023.
CREATE FUNCTION authz._check_resource_id(resource_id text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF resource_id IS NULL THEN
        RAISE EXCEPTION 'resource_id must not be null' USING ERRCODE = '22004',
            HINT = 'A grant is for one resource; for every resource of a type, bind a role.';
    END IF;
    IF resource_id = '' OR length(resource_id) > 255 THEN
        RAISE EXCEPTION 'resource_id must be 1 to 255 characters' USING ERRCODE = '22023';
    END IF;
    RETURN resource_id;
END
$$;

-- An organization a binding or grant is limited to must exist: P0002
-- otherwise.  organization is loaded before authz (ISA_SERVICES); the call
-- is resolved when it runs in any case (plpgsql).
CREATE FUNCTION authz._check_org(org_id uuid) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF org_id IS NOT NULL AND NOT organization.organization_exists(org_id) THEN
        RAISE EXCEPTION 'organization % not found', org_id USING ERRCODE = 'P0002',
            HINT = 'A binding or grant is limited to an existing, not closed organization, or to none (NULL).';
    END IF;
END
$$;

CREATE FUNCTION authz._role_info(r authz.roles) RETURNS authz.role_info
    LANGUAGE sql IMMUTABLE
    RETURN ROW(r.name, r.description, r.permissions, r.created_at, r.updated_at)::authz.role_info;

-- ---------------------------------------------------------------- the check
CREATE FUNCTION authz.check(user_id uuid, permission text, resource_id text DEFAULT NULL, org_id uuid DEFAULT NULL)
RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- the permission asked for and its resource's wildcard, e.g. {wallet:read, wallet:*}
    wanted text[];
BEGIN
    IF authz._is_permission($2) IS NOT TRUE THEN
        PERFORM authz._check_permission($2);        -- raises 22004 or 22023
    END IF;
    wanted := ARRAY[$2, split_part($2, ':', 1) || ':*'];
    -- "check" is a reserved word, so the arguments are $1..$4 here.
    RETURN EXISTS (SELECT 1 FROM authz.role_bindings b
                    WHERE b.user_id = $1 AND (b.org_id IS NULL OR b.org_id = $4)
                      AND b.permissions && wanted)
        OR EXISTS (SELECT 1 FROM authz.grants g
                    WHERE g.user_id = $1 AND g.resource_id = $3
                      AND g.permission = ANY (wanted)
                      AND (g.org_id IS NULL OR g.org_id = $4));
END
$$;
COMMENT ON FUNCTION authz.check(uuid, text, text, uuid) IS
    'Whether a user may do permission (resource:action) on resource_id in org_id: through a role bound everywhere or in that organization, or a grant on that resource. Deny by default: unknown users, roles and permissions give false. 22023 malformed permission.';

-- ---------------------------------------------------------------- roles
CREATE FUNCTION authz.create_role(name text, description text, permissions text[] DEFAULT '{}')
RETURNS authz.role_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    perms text[];
    r     authz.roles;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'role name must not be null' USING ERRCODE = '22004';
    END IF;
    IF name !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'malformed role name "%"', left(name, 200) USING ERRCODE = '22023',
            HINT = 'A role name is 1 to 63 lower-case letters, digits, _ and -, starting with a letter.';
    END IF;
    PERFORM isa.not_null('description', description);
    IF length(description) > 1000 THEN
        RAISE EXCEPTION 'description is too long (% characters; at most 1000)', length(description)
            USING ERRCODE = '22023';
    END IF;
    IF permissions IS NULL THEN
        RAISE EXCEPTION 'permissions must not be null' USING ERRCODE = '22004',
            HINT = 'Give an empty array for a role without permissions.';
    END IF;
    PERFORM authz._check_permission(p) FROM unnest(create_role.permissions) p;
    perms := ARRAY(SELECT DISTINCT p FROM unnest(create_role.permissions) p ORDER BY p);

    INSERT INTO authz.roles (name, description, permissions)
    VALUES (create_role.name, create_role.description, perms)
    ON CONFLICT (name) DO NOTHING
    RETURNING * INTO r;
    IF NOT FOUND THEN
        SELECT * INTO r FROM authz.roles x WHERE x.name = create_role.name;
        IF r.description IS DISTINCT FROM create_role.description OR r.permissions <> perms THEN
            RAISE EXCEPTION 'role "%" already exists', r.name USING ERRCODE = '23505',
                HINT = 'Change a role with authz.add_role_permission and authz.remove_role_permission.';
        END IF;
    END IF;
    RETURN authz._role_info(r);          -- new, or the same role created before (a retry)
END
$$;
COMMENT ON FUNCTION authz.create_role(text, text, text[]) IS
    'Creates a role with its permissions; the same call again returns the role. 23505 if the name exists with another description or permissions; 22023 malformed name or permission.';

CREATE FUNCTION authz.get_role(name text) RETURNS authz.role_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r authz.roles;
BEGIN
    PERFORM isa.not_null('role', name);
    SELECT * INTO r FROM authz.roles x WHERE x.name = get_role.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role "%" not found', left(name, 200) USING ERRCODE = 'P0002';
    END IF;
    RETURN authz._role_info(r);
END
$$;
COMMENT ON FUNCTION authz.get_role(text) IS 'A role with its permissions; P0002 if unknown.';

CREATE FUNCTION authz.list_roles() RETURNS SETOF authz.role_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT r.name, r.description, r.permissions, r.created_at, r.updated_at
                   FROM authz.roles r ORDER BY r.name;
END
$$;
COMMENT ON FUNCTION authz.list_roles() IS 'Every role with its permissions, by name.';

CREATE FUNCTION authz.add_role_permission(role text, permission text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p text := authz._check_permission(permission);
    r authz.roles := authz._role(role, true);
BEGIN
    IF p = ANY (r.permissions) THEN
        RETURN false;                                  -- already there: nothing changes
    END IF;
    r.permissions := ARRAY(SELECT x FROM unnest(r.permissions || p) x ORDER BY x);
    UPDATE authz.roles x SET permissions = r.permissions, updated_at = now() WHERE x.role_id = r.role_id;
    UPDATE authz.role_bindings b SET permissions = r.permissions WHERE b.role_id = r.role_id;
    PERFORM authz._publish('permission.granted', b.user_id, p, NULL, b.org_id, 'role', r.name)
       FROM authz.role_bindings b WHERE b.role_id = r.role_id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION authz.add_role_permission(text, text) IS
    'Adds a permission to a role: true if added, false if the role had it. Publishes permission.granted for every binding of the role. P0002 unknown role, 22023 malformed permission.';

CREATE FUNCTION authz.remove_role_permission(role text, permission text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p text := authz._check_permission(permission);
    r authz.roles := authz._role(role, true);
BEGIN
    IF NOT p = ANY (r.permissions) THEN
        RETURN false;                                  -- not there: nothing changes
    END IF;
    r.permissions := array_remove(r.permissions, p);
    UPDATE authz.roles x SET permissions = r.permissions, updated_at = now() WHERE x.role_id = r.role_id;
    UPDATE authz.role_bindings b SET permissions = r.permissions WHERE b.role_id = r.role_id;
    PERFORM authz._publish('permission.revoked', b.user_id, p, NULL, b.org_id, 'role', r.name)
       FROM authz.role_bindings b WHERE b.role_id = r.role_id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION authz.remove_role_permission(text, text) IS
    'Removes a permission from a role: true if removed, false if the role did not have it. Publishes permission.revoked for every binding of the role. P0002 unknown role, 22023 malformed permission.';

CREATE FUNCTION authz.delete_role(role text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r authz.roles := authz._role(role, true);
    n bigint;
BEGIN
    WITH gone AS (DELETE FROM authz.role_bindings b WHERE b.role_id = r.role_id RETURNING b.user_id, b.org_id)
    SELECT count(authz._publish('permission.revoked', g.user_id, p, NULL, g.org_id, 'role', r.name)) INTO n
      FROM gone g, unnest(r.permissions) p;
    DELETE FROM authz.roles x WHERE x.role_id = r.role_id;
END
$$;
COMMENT ON FUNCTION authz.delete_role(text) IS
    'Deletes a role and its bindings, publishing permission.revoked for every binding and permission. P0002 unknown role.';

-- ---------------------------------------------------------------- bindings
CREATE FUNCTION authz.bind_role(user_id uuid, role text, org_id uuid DEFAULT NULL) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r authz.roles;
BEGIN
    PERFORM account.require_user(user_id);
    PERFORM authz._check_org(org_id);
    r := authz._role(role, false);      -- FOR SHARE: the role's permissions cannot change until commit
    INSERT INTO authz.role_bindings AS b (user_id, role_id, org_id, permissions)
    VALUES (bind_role.user_id, r.role_id, bind_role.org_id, r.permissions)
    ON CONFLICT ON CONSTRAINT role_bindings_key DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;                   -- bound already: nothing changes
    END IF;
    PERFORM authz._publish('permission.granted', bind_role.user_id, p, NULL, bind_role.org_id, 'role', r.name)
       FROM unnest(r.permissions) p;
    RETURN true;
END
$$;
COMMENT ON FUNCTION authz.bind_role(uuid, text, uuid) IS
    'Gives a user a role, everywhere (org_id NULL) or in one organization: true if bound, false if it was. Publishes permission.granted per permission of the role. P0002 unknown or deleted user, unknown role, unknown or closed organization.';

CREATE FUNCTION authz.unbind_role(user_id uuid, role text, org_id uuid DEFAULT NULL) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r     authz.roles;
    perms text[];
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    r := authz._role(role, false);
    DELETE FROM authz.role_bindings b
     WHERE b.user_id = unbind_role.user_id AND b.role_id = r.role_id
       AND b.org_id IS NOT DISTINCT FROM unbind_role.org_id
    RETURNING b.permissions INTO perms;
    IF NOT FOUND THEN
        RETURN false;                   -- not bound: nothing changes
    END IF;
    PERFORM authz._publish('permission.revoked', unbind_role.user_id, p, NULL, unbind_role.org_id, 'role', r.name)
       FROM unnest(perms) p;
    RETURN true;
END
$$;
COMMENT ON FUNCTION authz.unbind_role(uuid, text, uuid) IS
    'Takes a role binding away (the one with exactly this org_id): true if removed, false if there was none. Publishes permission.revoked per permission of the role. P0002 unknown role.';

-- ---------------------------------------------------------------- grants
CREATE FUNCTION authz.grant_permission(user_id uuid, permission text, resource_id text, org_id uuid DEFAULT NULL)
RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p   text := authz._check_permission(permission);
    res text := authz._check_resource_id(resource_id);
BEGIN
    PERFORM account.require_user(user_id);
    PERFORM authz._check_org(org_id);
    INSERT INTO authz.grants AS g (user_id, permission, resource_id, org_id)
    VALUES (grant_permission.user_id, p, res, grant_permission.org_id)
    ON CONFLICT ON CONSTRAINT grants_key DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;                   -- granted already: nothing changes
    END IF;
    PERFORM authz._publish('permission.granted', grant_permission.user_id, p, res, grant_permission.org_id, 'grant', NULL);
    RETURN true;
END
$$;
COMMENT ON FUNCTION authz.grant_permission(uuid, text, text, uuid) IS
    'Lets a user do permission on one resource, everywhere (org_id NULL) or in one organization: true if granted, false if it was. Publishes permission.granted. P0002 unknown or deleted user, unknown or closed organization, 22023 malformed permission or resource id.';

CREATE FUNCTION authz.revoke_permission(user_id uuid, permission text, resource_id text, org_id uuid DEFAULT NULL)
RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p   text := authz._check_permission(permission);
    res text := authz._check_resource_id(resource_id);
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    DELETE FROM authz.grants g
     WHERE g.user_id = revoke_permission.user_id AND g.resource_id = res AND g.permission = p
       AND g.org_id IS NOT DISTINCT FROM revoke_permission.org_id;
    IF NOT FOUND THEN
        RETURN false;                   -- no such grant: nothing changes
    END IF;
    PERFORM authz._publish('permission.revoked', revoke_permission.user_id, p, res, revoke_permission.org_id, 'grant', NULL);
    RETURN true;
END
$$;
COMMENT ON FUNCTION authz.revoke_permission(uuid, text, text, uuid) IS
    'Takes a grant away (the one with exactly this org_id): true if removed, false if there was none. Publishes permission.revoked. 22023 malformed permission or resource id.';

-- ---------------------------------------------------------------- listing
CREATE FUNCTION authz.list_user_permissions(user_id uuid, org_id uuid DEFAULT NULL)
RETURNS SETOF authz.user_permission
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    RETURN QUERY
    SELECT s.permission, split_part(s.permission, ':', 1), s.resource_id, s.org_id, s.via, s.role
      FROM (SELECT p AS permission, NULL::text AS resource_id, b.org_id, 'role'::text AS via, r.name AS role
              FROM authz.role_bindings b
              JOIN authz.roles r ON r.role_id = b.role_id
             CROSS JOIN unnest(b.permissions) p
             WHERE b.user_id = list_user_permissions.user_id
               AND (b.org_id IS NULL OR b.org_id = list_user_permissions.org_id)
            UNION ALL
            SELECT g.permission, g.resource_id, g.org_id, 'grant', NULL
              FROM authz.grants g
             WHERE g.user_id = list_user_permissions.user_id
               AND (g.org_id IS NULL OR g.org_id = list_user_permissions.org_id)) s
     ORDER BY s.permission, s.resource_id NULLS FIRST, s.org_id NULLS FIRST, s.via, s.role;
END
$$;
COMMENT ON FUNCTION authz.list_user_permissions(uuid, uuid) IS
    'What a user may do in org_id (NULL: outside any organization): one row per role binding and permission, and per grant, that authz.check would count there.';

-- ---------------------------------------------------------------- subscriptions
-- account_service.user.deleted: the user's bindings and grants go, each
-- published as permission.revoked.  Idempotent: a second delivery finds nothing.
CREATE FUNCTION authz.on_user_deleted(e isa.event) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid_text text := e.data ->> 'user_id';
    uid      uuid;
    n        bigint;
BEGIN
    IF uid_text IS NULL OR uid_text !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        -- Bad data, not a transient failure: retrying would not help.
        RAISE WARNING 'authz.on_user_deleted: event % has no valid data.user_id (%), ignored', e.id, uid_text;
        RETURN;
    END IF;
    uid := uid_text::uuid;
    WITH gone AS (DELETE FROM authz.role_bindings b WHERE b.user_id = uid
                  RETURNING b.role_id, b.org_id, b.permissions)
    SELECT count(authz._publish('permission.revoked', uid, p, NULL, g.org_id, 'role', r.name)) INTO n
      FROM gone g JOIN authz.roles r ON r.role_id = g.role_id, unnest(g.permissions) p;
    WITH gone AS (DELETE FROM authz.grants g WHERE g.user_id = uid
                  RETURNING g.permission, g.resource_id, g.org_id)
    SELECT count(authz._publish('permission.revoked', uid, g.permission, g.resource_id, g.org_id, 'grant', NULL)) INTO n
      FROM gone g;
END
$$;
COMMENT ON FUNCTION authz.on_user_deleted(isa.event) IS
    'Handler of account_service.user.deleted: removes the user''s role bindings and grants, publishing permission.revoked for each.';

SELECT isa.subscribe_to_events('authz', 'account_service.user.deleted',
                               'authz.on_user_deleted(isa.event)'::regprocedure);

-- ---------------------------------------------------------------- organization roles
-- A member of an organization holds, in that organization, the role named
-- after their membership role: org_owner, org_admin, org_member or org_guest.
-- What other services check in an organization (authz.check(..., org_id)).
-- The roles are made by _sync_org_role the first time a membership needs
-- them, not by the install script: rows the script wrote would collide with
-- the same rows restored from a dump (authz.roles is dumped with its data).

-- Makes the user's org_* binding in an organization match organization's
-- answer now (organization.member_role): the role of the membership bound,
-- the other org_* roles unbound, none when not a member.  Asking instead of
-- trusting the event makes the handlers order-free: member_added,
-- member_role_changed and member_removed of one member are consumed by three
-- consumers, and whichever comes last leaves the binding right.
CREATE FUNCTION authz._sync_org_role(p_user_id uuid, p_org_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    want text := 'org_' || organization.member_role(p_org_id, p_user_id);   -- NULL: not a member
    r    authz.roles;
    n    bigint;
BEGIN
    IF (SELECT count(*) FROM authz.roles x WHERE x.name IN ('org_owner', 'org_admin', 'org_member', 'org_guest')) < 4 THEN
        INSERT INTO authz.roles AS x (name, description, permissions) VALUES
            ('org_owner',  'The owner of an organization (kept by organization''s events).',
             '{organization:*,org_member:*,shared_resource:*}'),
            ('org_admin',  'An admin of an organization (kept by organization''s events).',
             '{org_member:invite,org_member:read,org_member:remove,org_member:update_role,organization:read,shared_resource:read,shared_resource:share}'),
            ('org_member', 'A member of an organization (kept by organization''s events).',
             '{org_member:read,organization:read,shared_resource:read,shared_resource:share}'),
            ('org_guest',  'A guest of an organization (kept by organization''s events).',
             '{org_member:read,organization:read,shared_resource:read}')
        ON CONFLICT (name) DO NOTHING;
    END IF;
    IF want IS NOT NULL AND NOT account.user_exists(p_user_id) THEN
        want := NULL;                       -- a deleted user holds nothing (user.deleted removed the rest)
    END IF;
    FOR r IN SELECT * FROM authz.roles x WHERE x.name IN ('org_owner', 'org_admin', 'org_member', 'org_guest')
              ORDER BY x.name FOR SHARE LOOP
        IF r.name = want THEN
            INSERT INTO authz.role_bindings AS b (user_id, role_id, org_id, permissions)
            VALUES (p_user_id, r.role_id, p_org_id, r.permissions)
            ON CONFLICT ON CONSTRAINT role_bindings_key DO NOTHING;
            IF FOUND THEN
                PERFORM authz._publish('permission.granted', p_user_id, p, NULL, p_org_id, 'role', r.name)
                   FROM unnest(r.permissions) p;
            END IF;
        ELSE
            WITH gone AS (DELETE FROM authz.role_bindings b
                           WHERE b.user_id = p_user_id AND b.role_id = r.role_id AND b.org_id = p_org_id
                          RETURNING b.permissions)
            SELECT count(authz._publish('permission.revoked', p_user_id, p, NULL, p_org_id, 'role', r.name)) INTO n
              FROM gone g, unnest(g.permissions) p;
        END IF;
    END LOOP;
END
$$;

-- The handlers of organization's membership events: data.org_id and
-- data.user_id name the membership to bring up to date.
CREATE FUNCTION authz._on_membership_event(e isa.event) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid text := e.data ->> 'user_id';
    org text := e.data ->> 'org_id';
BEGIN
    IF uid IS NULL OR org IS NULL
       OR uid !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
       OR org !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RAISE WARNING 'authz: %.% % ignored: needs data.user_id and data.org_id (uuids), got %',
            e.source, e.event_type, e.id, e.data;
        RETURN;
    END IF;
    PERFORM authz._sync_org_role(uid::uuid, org::uuid);
END
$$;

CREATE FUNCTION authz.on_organization_member_added(e isa.event) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM authz._on_membership_event(e);
END
$$;
COMMENT ON FUNCTION authz.on_organization_member_added(isa.event) IS
    'Handler of organization_service.organization.member_added: binds the member''s org_<role> in the organization (as organization answers now), publishing permission.granted.';

CREATE FUNCTION authz.on_organization_member_role_changed(e isa.event) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM authz._on_membership_event(e);
END
$$;
COMMENT ON FUNCTION authz.on_organization_member_role_changed(isa.event) IS
    'Handler of organization_service.organization.member_role_changed: replaces the member''s org_<role> binding in the organization with the current one.';

CREATE FUNCTION authz.on_organization_member_removed(e isa.event) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM authz._on_membership_event(e);
END
$$;
COMMENT ON FUNCTION authz.on_organization_member_removed(isa.event) IS
    'Handler of organization_service.organization.member_removed: unbinds the former member''s org_* role in the organization, publishing permission.revoked.';

SELECT isa.subscribe_to_events('authz', 'organization_service.organization.member_added',
                               'authz.on_organization_member_added(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('authz', 'organization_service.organization.member_role_changed',
                               'authz.on_organization_member_role_changed(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('authz', 'organization_service.organization.member_removed',
                               'authz.on_organization_member_removed(isa.event)'::regprocedure);

-- ---------------------------------------------------------------- privileges
-- Every API function is for isa_app; the HTTP front decides which callers may
-- reach the role-changing ones (docs/services/authz.md, "Who may call what").
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA authz FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    authz.check(uuid, text, text, uuid),
    authz.get_role(text),
    authz.list_roles(),
    authz.list_user_permissions(uuid, uuid)
TO isa_app_authz;
-- Defining roles and binding them (isa:admin is a role's permission) is
-- administration: isa_app_admin, not the applications' roles.
GRANT EXECUTE ON FUNCTION
    authz.create_role(text, text, text[]),
    authz.add_role_permission(text, text),
    authz.remove_role_permission(text, text),
    authz.delete_role(text),
    authz.bind_role(uuid, text, uuid),
    authz.unbind_role(uuid, text, uuid),
    authz.grant_permission(uuid, text, text, uuid),
    authz.revoke_permission(uuid, text, text, uuid)
TO isa_app_admin;
-- What authz's own code calls of other services, as isa_svc_authz.
GRANT EXECUTE ON FUNCTION
    account.require_user(uuid), account.user_exists(uuid),
    organization.organization_exists(uuid), organization.member_role(uuid, uuid)
TO isa_svc_authz;

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- Anyone may ask about their own permissions (self_param); asking about
-- another user, or reading roles, needs authz:read.  Changing roles, bindings
-- and grants is for administrators (isa:admin).
SELECT isa.http_route('GET', '/v1/authz/check', 'authz.check(uuid, text, text, uuid)', 'user',
    'Whether a user may do permission on resource_id in org_id.',
    permission => 'authz:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/authz/users/{user_id}/permissions', 'authz.list_user_permissions(uuid, uuid)', 'user',
    'What a user may do in org_id: one row per role binding and permission, and per grant.',
    permission => 'authz:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/authz/roles', 'authz.list_roles()', 'user',
    'Every role with its permissions.', permission => 'authz:read');
SELECT isa.http_route('GET', '/v1/authz/roles/{name}', 'authz.get_role(text)', 'user',
    'A role with its permissions.', permission => 'authz:read');
SELECT isa.http_route('POST', '/v1/authz/roles', 'authz.create_role(text, text, text[])', 'admin',
    'Creates a role with its permissions.', status => 201);
SELECT isa.http_route('DELETE', '/v1/authz/roles/{role}', 'authz.delete_role(text)', 'admin',
    'Deletes a role and its bindings.');
SELECT isa.http_route('POST', '/v1/authz/roles/{role}/permissions', 'authz.add_role_permission(text, text)', 'admin',
    'Adds a permission to a role: true if added, false if the role had it.');
SELECT isa.http_route('DELETE', '/v1/authz/roles/{role}/permissions/{permission}',
    'authz.remove_role_permission(text, text)', 'admin',
    'Removes a permission from a role: true if removed, false if the role did not have it.');
SELECT isa.http_route('POST', '/v1/authz/users/{user_id}/roles', 'authz.bind_role(uuid, text, uuid)', 'admin',
    'Gives a user a role, everywhere or in one organization: true if bound, false if it was.');
SELECT isa.http_route('DELETE', '/v1/authz/users/{user_id}/roles/{role}', 'authz.unbind_role(uuid, text, uuid)', 'admin',
    'Takes a role binding away (the one with exactly this org_id): true if removed.');
SELECT isa.http_route('POST', '/v1/authz/users/{user_id}/grants', 'authz.grant_permission(uuid, text, text, uuid)', 'admin',
    'Lets a user do permission on one resource: true if granted, false if it was.');
SELECT isa.http_route('DELETE', '/v1/authz/users/{user_id}/grants', 'authz.revoke_permission(uuid, text, text, uuid)', 'admin',
    'Takes a grant away (the one with exactly this org_id): true if removed.');
