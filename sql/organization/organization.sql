-- organization.sql — the organization service (schema organization, source
-- organization_service): organizations of kind personal, family or business,
-- their members with a role (owner, admin, member, guest), invitations by
-- email with a single-use expiring token, and the devices, files and albums
-- shared with an organization.  Every organization has exactly one owner.
-- It calls account (users, their email) and storage (a file's or an album's owner); it
-- reacts to user.created (the personal organization), user.deleted
-- (memberships end, ownership passes on) and device.registered (a device joins
-- a family).  authz keeps organization-scoped role bindings from its events.
-- Schema, outbox and inbox come from sql/core/services.sql.
-- docs/services/organization.md documents the API, the events and the handlers.

-- ---------------------------------------------------------------- tables
CREATE TABLE organization.organizations (
    org_id          uuid PRIMARY KEY,                   -- UUIDv7
    kind            text NOT NULL CHECK (kind IN ('personal', 'family', 'business')),
    name            text NOT NULL CHECK (name <> '' AND length(name) <= 200),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed')),
    created_by      uuid NOT NULL,                      -- account's user (no cross-schema foreign key)
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz,
    CHECK ((status = 'closed') = (closed_at IS NOT NULL)),
    CONSTRAINT organizations_idempotency_key UNIQUE (created_by, idempotency_key)
);
COMMENT ON TABLE organization.organizations IS
    'Organizations: kind personal (one per user, made from user.created), family or business; a name; active or closed (its last owner was deleted with no one to take over).';
-- One personal organization per user, whatever delivers user.created twice.
CREATE UNIQUE INDEX organizations_personal ON organization.organizations (created_by) WHERE kind = 'personal';

CREATE TABLE organization.members (
    org_id    uuid NOT NULL REFERENCES organization.organizations,
    user_id   uuid NOT NULL,                            -- account's user
    role      text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'guest')),
    joined_at timestamptz NOT NULL DEFAULT clock_timestamp(),   -- "longest-standing" orders by it
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX members_user ON organization.members (user_id);
-- At most one owner; the functions that change members keep exactly one.
CREATE UNIQUE INDEX members_one_owner ON organization.members (org_id) WHERE role = 'owner';
COMMENT ON TABLE organization.members IS
    'Who belongs to which organization with which role; exactly one owner per active organization, none in a closed one.';

CREATE TABLE organization.invitations (
    invitation_id   uuid PRIMARY KEY,                   -- UUIDv7
    org_id          uuid NOT NULL REFERENCES organization.organizations,
    email           text NOT NULL,                      -- as given (trimmed); compared case-blind
    role            text NOT NULL CHECK (role IN ('admin', 'member', 'guest')),
    invited_by      uuid NOT NULL,
    token_hash      bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),  -- sha256 of the token; the token is never stored
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'declined', 'revoked')),
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    responded_at    timestamptz,                        -- accepted, declined or revoked
    accepted_by     uuid,
    CHECK ((status = 'pending') = (responded_at IS NULL)),
    CHECK ((status = 'accepted') = (accepted_by IS NOT NULL)),
    CONSTRAINT invitations_idempotency_key UNIQUE (invited_by, idempotency_key)
);
CREATE INDEX invitations_org ON organization.invitations (org_id, created_at);
CREATE INDEX invitations_email ON organization.invitations (lower(email)) WHERE status = 'pending';
COMMENT ON TABLE organization.invitations IS
    'Invitations by email: the role offered, the sha256 of the single-use token, pending until accepted, declined or revoked, and useless after expires_at.';

CREATE TABLE organization.shared_resources (
    org_id      uuid NOT NULL REFERENCES organization.organizations,
    kind        text NOT NULL CHECK (kind IN ('device', 'file', 'album')),
    resource_id uuid NOT NULL,                          -- the device's, file's or album's id in its service
    shared_by   uuid NOT NULL,                          -- a member; the share ends with the membership
    shared_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, kind, resource_id)
);
CREATE INDEX shared_resources_resource ON organization.shared_resources (kind, resource_id);
COMMENT ON TABLE organization.shared_resources IS
    'Devices, files and albums a member shared with an organization: visible to its members while they are members, until unshared or the sharer''s membership ends.';

-- The owners of devices, as device_service.device.registered announced them:
-- organization's own record, so that sharing a device checks its owner
-- without reading the device service.
CREATE TABLE organization.devices (
    device_id     uuid PRIMARY KEY,
    owner_id      uuid NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE organization.devices IS
    'Device owners as device_service.device.registered announced them; share_resource(kind device) checks the sharer against it.';

-- ---------------------------------------------------------------- types
CREATE TYPE organization.organization_info AS (
    org_id       uuid,
    kind         text,
    name         text,
    role         text,           -- the caller's role in it
    member_count integer,
    created_at   timestamptz
);
COMMENT ON TYPE organization.organization_info IS
    'An organization as the organization API returns it to one of its members, with that member''s role.';

CREATE TYPE organization.member_info AS (
    org_id    uuid,
    user_id   uuid,
    role      text,
    joined_at timestamptz
);
COMMENT ON TYPE organization.member_info IS 'A membership: organization, user, role, since when.';

CREATE TYPE organization.invitation_info AS (
    invitation_id uuid,
    org_id        uuid,
    org_name      text,
    email         text,
    role          text,
    status        text,          -- pending, accepted, declined, revoked, or expired (pending past expires_at)
    invited_by    uuid,
    expires_at    timestamptz,
    created_at    timestamptz,
    token         text           -- only in invite_member's answer; NULL everywhere else
);
COMMENT ON TYPE organization.invitation_info IS
    'An invitation; token is set only in the answer of invite_member (the database keeps its hash).';

CREATE TYPE organization.shared_resource_info AS (
    org_id      uuid,
    kind        text,
    resource_id uuid,
    shared_by   uuid,
    shared_at   timestamptz
);
COMMENT ON TYPE organization.shared_resource_info IS 'A device, file or album shared with an organization.';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('organization.created', 'organization_service', '1.0.0',
    'An organization was created: a family or business by create_organization, a personal one from user.created.',
    '{"org_id":     {"type": "uuid",      "required": true, "description": "the new organization"},
      "kind":       {"type": "string",    "required": true, "description": "personal, family or business"},
      "name":       {"type": "string",    "required": true, "description": "its name"},
      "owner_id":   {"type": "uuid",      "required": true, "description": "the user who created it, its owner"},
      "created_at": {"type": "timestamp", "required": true, "description": "when it was created"}}');
SELECT isa.register_event_type('organization.member_added', 'organization_service', '1.0.0',
    'A user became a member of an organization: its creator (as owner) or an invitee who accepted.',
    '{"org_id":        {"type": "uuid",   "required": true,  "description": "the organization"},
      "user_id":       {"type": "uuid",   "required": true,  "description": "the new member"},
      "role":          {"type": "string", "required": true,  "description": "owner, admin, member or guest"},
      "kind":          {"type": "string", "required": true,  "description": "the organization''s kind: personal, family or business"},
      "via":           {"type": "string", "required": true,  "description": "created (the creator) or invitation"},
      "invitation_id": {"type": "uuid",   "required": false, "description": "the invitation accepted, when via is invitation"}}');
SELECT isa.register_event_type('organization.member_removed', 'organization_service', '1.0.0',
    'A membership ended: the member left, was removed, was deleted (user.deleted), or the organization closed.',
    '{"org_id":     {"type": "uuid",   "required": true,  "description": "the organization"},
      "user_id":    {"type": "uuid",   "required": true,  "description": "the former member"},
      "role":       {"type": "string", "required": true,  "description": "the role the membership had"},
      "reason":     {"type": "string", "required": true,  "description": "left, removed, user_deleted or closed"},
      "removed_by": {"type": "uuid",   "required": false, "description": "the owner or admin who removed the member, when reason is removed"}}');
SELECT isa.register_event_type('organization.member_role_changed', 'organization_service', '1.0.0',
    'A member''s role changed: by an owner or admin, by a transfer of ownership (two events: the new owner, the former owner now admin), or because the owner was deleted and the member took over.',
    '{"org_id":     {"type": "uuid",   "required": true,  "description": "the organization"},
      "user_id":    {"type": "uuid",   "required": true,  "description": "the member"},
      "old_role":   {"type": "string", "required": true,  "description": "the role before"},
      "new_role":   {"type": "string", "required": true,  "description": "the role after"},
      "reason":     {"type": "string", "required": true,  "description": "changed, ownership_transferred or owner_deleted"},
      "changed_by": {"type": "uuid",   "required": false, "description": "the user who made the change; null for owner_deleted"}}');
SELECT isa.register_event_type('organization.member_invited', 'organization_service', '1.0.0',
    'Someone was invited by email to join an organization (not a member yet). Carries no token: the accept link is built from invitation_id, and only the invitee''s own account can accept.',
    '{"invitation_id": {"type": "uuid",      "required": true, "description": "the invitation: the accept link is /invitations/{invitation_id}"},
      "org_id":        {"type": "uuid",      "required": true, "description": "the organization"},
      "org_name":      {"type": "string",    "required": true, "description": "its name"},
      "org_kind":      {"type": "string",    "required": true, "description": "family or business"},
      "email":         {"type": "string",    "required": true, "description": "the invitee''s email address, as given"},
      "role":          {"type": "string",    "required": true, "description": "the role offered: admin, member or guest"},
      "invited_by":    {"type": "uuid",      "required": true, "description": "the inviting owner or admin"},
      "inviter_name":  {"type": "string",    "required": true, "description": "the inviter''s display name"},
      "expires_at":    {"type": "timestamp", "required": true, "description": "after this the invitation cannot be accepted"}}');
SELECT isa.register_event_type('organization.closed', 'organization_service', '1.0.0',
    'An organization closed: its owner was deleted and no admin or member was left to take over (its guests'' memberships ended, each with organization.member_removed).',
    '{"org_id":    {"type": "uuid",      "required": true, "description": "the organization"},
      "reason":    {"type": "string",    "required": true, "description": "owner_deleted"},
      "closed_at": {"type": "timestamp", "required": true, "description": "when it closed"}}');
SELECT isa.register_event_type('family.resource_shared', 'organization_service', '1.0.0',
    'A member shared a device, file or album with a family or business organization (share_resource, or a device registered into its owner''s family).',
    '{"org_id":      {"type": "uuid",   "required": true, "description": "the organization"},
      "org_kind":    {"type": "string", "required": true, "description": "family or business"},
      "kind":        {"type": "string", "required": true, "description": "device, file or album"},
      "resource_id": {"type": "uuid",   "required": true, "description": "the resource''s id in its service"},
      "shared_by":   {"type": "uuid",   "required": true, "description": "the member who shared it"}}');
SELECT isa.register_event_type('family.resource_unshared', 'organization_service', '1.0.0',
    'A shared device, file or album is no longer shared with an organization: unshared, its sharer''s membership ended, or the organization closed.',
    '{"org_id":      {"type": "uuid",   "required": true,  "description": "the organization"},
      "kind":        {"type": "string", "required": true,  "description": "device, file or album"},
      "resource_id": {"type": "uuid",   "required": true,  "description": "the resource''s id in its service"},
      "shared_by":   {"type": "uuid",   "required": true,  "description": "the member who had shared it"},
      "reason":      {"type": "string", "required": true,  "description": "unshared, member_left or closed"},
      "unshared_by": {"type": "uuid",   "required": false, "description": "who unshared it, when reason is unshared"}}');

-- ---------------------------------------------------------------- internal helpers
-- A role's rank: an owner or admin acts only on members ranked below them.
CREATE FUNCTION organization._rank(role text) RETURNS integer
    LANGUAGE sql IMMUTABLE
    RETURN CASE role WHEN 'owner' THEN 4 WHEN 'admin' THEN 3 WHEN 'member' THEN 2 WHEN 'guest' THEN 1 ELSE 0 END;

-- How long an invitation can be accepted.
CREATE FUNCTION organization._invitation_lifetime() RETURNS interval
    LANGUAGE sql IMMUTABLE
    RETURN interval '7 days';

CREATE FUNCTION organization._check_name(name text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('name', name);
    RETURN isa.check_text('an organization''s name', name, 200);
END
$$;

-- An invitation's address: trimmed, at most 254 characters, local@domain
-- without spaces.  Whether it is a real address is the invitee's business:
-- only an account with this email (account's rules) can accept.
CREATE FUNCTION organization._check_email(email text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e text := btrim(email, E' \t\r\n');
BEGIN
    PERFORM isa.not_null('email', email);
    IF length(e) > 254 OR e !~ '^[^@[:space:][:cntrl:]]+@[^@[:space:][:cntrl:]]+\.[^@[:space:][:cntrl:]]+$' THEN
        RAISE EXCEPTION 'invalid email address "%"', left(e, 300) USING ERRCODE = '22023',
            HINT = 'An email address is local@domain.tld, at most 254 characters, without spaces.';
    END IF;
    RETURN e;
END
$$;

-- What may be shared with an organization: a device, a file or an album, or 22023.
CREATE FUNCTION organization._check_kind(kind text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF kind NOT IN ('device', 'file', 'album') THEN
        RAISE EXCEPTION 'unknown kind "%"', left(kind, 100) USING ERRCODE = '22023', HINT = 'One of device, file, album.';
    END IF;
END
$$;
COMMENT ON FUNCTION organization._check_kind(text) IS
    'A kind of shared resource is device, file or album; 22023 otherwise.';

-- The active organization, locked FOR UPDATE when it is to change (every
-- write to its members, invitations and shares holds that lock, which keeps
-- the one-owner rule), or P0002.
CREATE FUNCTION organization._org(p_org_id uuid, p_lock boolean) RETURNS organization.organizations
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o organization.organizations;
BEGIN
    PERFORM isa.not_null('org_id', p_org_id);
    IF p_lock THEN
        SELECT * INTO o FROM organization.organizations x WHERE x.org_id = p_org_id AND x.status = 'active' FOR UPDATE;
    ELSE
        SELECT * INTO o FROM organization.organizations x WHERE x.org_id = p_org_id AND x.status = 'active';
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'organization % not found', p_org_id USING ERRCODE = 'P0002';
    END IF;
    RETURN o;
END
$$;

-- The caller's role in an organization, at least p_min_role, or 42501.
CREATE FUNCTION organization._actor_role(p_org_id uuid, p_actor_id uuid, p_min_role text) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r text;
BEGIN
    PERFORM isa.not_null('actor_id', p_actor_id);
    SELECT m.role INTO r FROM organization.members m WHERE m.org_id = p_org_id AND m.user_id = p_actor_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % is not a member of organization %', p_actor_id, p_org_id USING ERRCODE = '42501';
    END IF;
    IF organization._rank(r) < organization._rank(p_min_role) THEN
        RAISE EXCEPTION 'not allowed: this needs the role % or higher in organization % (you are %)', p_min_role, p_org_id, r
            USING ERRCODE = '42501';
    END IF;
    RETURN r;
END
$$;

CREATE FUNCTION organization._info(o organization.organizations, p_role text) RETURNS organization.organization_info
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN ROW(o.org_id, o.kind, o.name, p_role,
               (SELECT count(*)::integer FROM organization.members m WHERE m.org_id = o.org_id),
               o.created_at)::organization.organization_info;

CREATE FUNCTION organization._invitation_info(i organization.invitations, p_token text) RETURNS organization.invitation_info
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN ROW(i.invitation_id, i.org_id, (SELECT o.name FROM organization.organizations o WHERE o.org_id = i.org_id),
               i.email, i.role,
               CASE WHEN i.status = 'pending' AND i.expires_at <= now() THEN 'expired' ELSE i.status END,
               i.invited_by, i.expires_at, i.created_at, p_token)::organization.invitation_info;

-- Creates an organization with p_owner as its owner; publishes
-- organization.created and organization.member_added.  NULL when a personal
-- organization of the user exists already.
CREATE FUNCTION organization._create(p_owner uuid, p_kind text, p_name text, p_key text) RETURNS organization.organizations
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o organization.organizations;
    event_id uuid;
BEGIN
    IF p_kind = 'personal' THEN
        INSERT INTO organization.organizations AS x (org_id, kind, name, created_by)
        VALUES (isa.uuid_v7(), p_kind, p_name, p_owner)
        ON CONFLICT (created_by) WHERE kind = 'personal' DO NOTHING
        RETURNING * INTO o;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
    ELSE
        INSERT INTO organization.organizations AS x (org_id, kind, name, created_by, idempotency_key)
        VALUES (isa.uuid_v7(), p_kind, p_name, p_owner, p_key)
        RETURNING * INTO o;
    END IF;
    INSERT INTO organization.members (org_id, user_id, role) VALUES (o.org_id, p_owner, 'owner');
    event_id := isa.publish_event('organization.created', 'organization_service',
        jsonb_build_object('org_id', o.org_id, 'kind', o.kind, 'name', o.name, 'owner_id', p_owner,
                           'created_at', isa.iso_time(o.created_at)));
    event_id := isa.publish_event('organization.member_added', 'organization_service',
        jsonb_build_object('org_id', o.org_id, 'user_id', p_owner, 'role', 'owner', 'kind', o.kind,
                           'via', 'created', 'invitation_id', NULL));
    RETURN o;
END
$$;

-- Ends the shares of p_user_id (all of the organization's when NULL) in an
-- organization, publishing family.resource_unshared for each.
CREATE FUNCTION organization._withdraw_shares(p_org_id uuid, p_user_id uuid, p_reason text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    WITH gone AS (DELETE FROM organization.shared_resources s
                   WHERE s.org_id = p_org_id AND (p_user_id IS NULL OR s.shared_by = p_user_id)
                  RETURNING s.kind, s.resource_id, s.shared_by)
    SELECT count(isa.publish_event('family.resource_unshared', 'organization_service',
               jsonb_build_object('org_id', p_org_id, 'kind', g.kind, 'resource_id', g.resource_id,
                                  'shared_by', g.shared_by, 'reason', p_reason, 'unshared_by', NULL))) INTO n
      FROM (SELECT * FROM gone ORDER BY kind, resource_id) g;
END
$$;

-- Ends a membership (not the owner's: callers keep the owner rule), its
-- shares with it, and publishes organization.member_removed.
CREATE FUNCTION organization._remove(p_org_id uuid, p_user_id uuid, p_reason text, p_removed_by uuid) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r text;
    event_id uuid;
BEGIN
    DELETE FROM organization.members m WHERE m.org_id = p_org_id AND m.user_id = p_user_id RETURNING m.role INTO r;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM organization._withdraw_shares(p_org_id, p_user_id, CASE WHEN p_reason = 'closed' THEN 'closed' ELSE 'member_left' END);
    event_id := isa.publish_event('organization.member_removed', 'organization_service',
        jsonb_build_object('org_id', p_org_id, 'user_id', p_user_id, 'role', r, 'reason', p_reason,
                           'removed_by', p_removed_by));
END
$$;

CREATE FUNCTION organization._set_role(p_org_id uuid, p_user_id uuid, p_old text, p_new text, p_reason text, p_by uuid)
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    event_id uuid;
BEGIN
    UPDATE organization.members m SET role = p_new WHERE m.org_id = p_org_id AND m.user_id = p_user_id;
    event_id := isa.publish_event('organization.member_role_changed', 'organization_service',
        jsonb_build_object('org_id', p_org_id, 'user_id', p_user_id, 'old_role', p_old, 'new_role', p_new,
                           'reason', p_reason, 'changed_by', p_by));
END
$$;

-- The shares' rule: a member (not a guest) shares what they own.  A file's
-- owner is storage's answer; a device's, what device.registered said; an
-- album's, storage's (docs/services/organization.md, "Sharing").
CREATE FUNCTION organization._share(o organization.organizations, p_kind text, p_resource_id uuid, p_by uuid)
RETURNS organization.shared_resources
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s organization.shared_resources;
    event_id uuid;
BEGIN
    INSERT INTO organization.shared_resources AS x (org_id, kind, resource_id, shared_by)
    VALUES (o.org_id, p_kind, p_resource_id, p_by)
    ON CONFLICT (org_id, kind, resource_id) DO NOTHING
    RETURNING * INTO s;
    IF NOT FOUND THEN
        SELECT * INTO s FROM organization.shared_resources x
         WHERE x.org_id = o.org_id AND x.kind = p_kind AND x.resource_id = p_resource_id;
        RETURN s;                                   -- shared already: no second event
    END IF;
    event_id := isa.publish_event('family.resource_shared', 'organization_service',
        jsonb_build_object('org_id', o.org_id, 'org_kind', o.kind, 'kind', p_kind, 'resource_id', p_resource_id,
                           'shared_by', p_by));
    RETURN s;
END
$$;

-- The invitation named by a token or an id (exactly one), checked against
-- the caller's email: only the invitee's account answers it.  Not locked:
-- callers lock the organization, then the invitation (revoke's order).
CREATE FUNCTION organization._invitation_for(p_actor_id uuid, p_token text, p_invitation_id uuid)
RETURNS organization.invitations
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i organization.invitations;
    actor_email text;
BEGIN
    PERFORM isa.not_null('actor_id', p_actor_id);
    IF p_token IS NULL AND p_invitation_id IS NULL THEN
        RAISE EXCEPTION 'token or invitation_id must not be null' USING ERRCODE = '22004',
            HINT = 'Give the token of the invitation link, or the invitation id of the invitation email.';
    END IF;
    IF p_token IS NOT NULL AND p_invitation_id IS NOT NULL THEN
        RAISE EXCEPTION 'give token or invitation_id, not both' USING ERRCODE = '22023';
    END IF;
    actor_email := (account.get_user(p_actor_id)).email;       -- P0002 for an unknown or deleted user
    IF p_token IS NOT NULL THEN
        SELECT * INTO i FROM organization.invitations x
         WHERE x.token_hash = sha256(convert_to(p_token, 'UTF8'));
    ELSE
        SELECT * INTO i FROM organization.invitations x WHERE x.invitation_id = p_invitation_id;
    END IF;
    IF NOT FOUND OR lower(i.email) <> lower(actor_email) THEN
        -- Someone else's invitation is not found either: an id or token says
        -- nothing to anyone but its invitee.
        RAISE EXCEPTION 'invitation not found' USING ERRCODE = 'P0002',
            HINT = 'An invitation is answered by the account whose email it was sent to.';
    END IF;
    RETURN i;
END
$$;

-- ---------------------------------------------------------------- API: reads for other services
CREATE FUNCTION organization.organization_exists(org_id uuid) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM organization.organizations o
                    WHERE o.org_id = organization_exists.org_id AND o.status = 'active');
END
$$;
COMMENT ON FUNCTION organization.organization_exists(uuid) IS
    'Whether an organization exists and is not closed (false for unknown, closed or NULL). authz checks organization-scoped bindings with it.';

CREATE FUNCTION organization.member_role(org_id uuid, user_id uuid) RETURNS text
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('org_id, user_id', org_id, user_id);
    RETURN (SELECT m.role FROM organization.members m
              JOIN organization.organizations o ON o.org_id = m.org_id AND o.status = 'active'
             WHERE m.org_id = member_role.org_id AND m.user_id = member_role.user_id);
END
$$;
COMMENT ON FUNCTION organization.member_role(uuid, uuid) IS
    'The user''s role in the organization (owner, admin, member, guest), NULL if not a member or the organization is unknown or closed. 22004 NULL argument.';

CREATE FUNCTION organization.member_ids(org_id uuid) RETURNS SETOF uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('org_id', org_id);
    RETURN QUERY SELECT m.user_id FROM organization.members m
                   JOIN organization.organizations o ON o.org_id = m.org_id AND o.status = 'active'
                  WHERE m.org_id = member_ids.org_id
                  ORDER BY m.joined_at, m.user_id;
END
$$;
COMMENT ON FUNCTION organization.member_ids(uuid) IS
    'The members (any role) of an active organization, longest-standing first; none for an unknown or closed one. For services that tell an organization''s members (notification: device.offline); no route. 22004 NULL.';

CREATE FUNCTION organization.is_member(org_id uuid, user_id uuid) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN organization.member_role(org_id, user_id) IS NOT NULL;
END
$$;
COMMENT ON FUNCTION organization.is_member(uuid, uuid) IS
    'Whether the user is a member (any role) of the active organization. 22004 NULL argument.';

CREATE FUNCTION organization.can_access(user_id uuid, kind text, resource_id uuid) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id, kind, resource_id', user_id, kind, resource_id);
    PERFORM organization._check_kind(kind);
    RETURN EXISTS (SELECT 1 FROM organization.shared_resources s
                     JOIN organization.members m ON m.org_id = s.org_id AND m.user_id = can_access.user_id
                    WHERE s.kind = can_access.kind AND s.resource_id = can_access.resource_id);
END
$$;
COMMENT ON FUNCTION organization.can_access(uuid, text, uuid) IS
    'Whether the resource (kind device, file or album) is shared with an organization the user is a member of, now: the one sharing check other services call (the resource''s own owner is theirs to check). 22004 NULL, 22023 unknown kind.';

CREATE FUNCTION organization.is_shared_with(org_id uuid, kind text, resource_id uuid) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('org_id, kind, resource_id', org_id, kind, resource_id);
    PERFORM organization._check_kind(kind);
    RETURN EXISTS (SELECT 1 FROM organization.shared_resources s
                     JOIN organization.organizations o ON o.org_id = s.org_id AND o.status = 'active'
                    WHERE s.org_id = is_shared_with.org_id AND s.kind = is_shared_with.kind
                      AND s.resource_id = is_shared_with.resource_id);
END
$$;
COMMENT ON FUNCTION organization.is_shared_with(uuid, text, uuid) IS
    'Whether the resource (kind device, file or album) is shared with that active organization now (share_resource; it ends with its sharer''s membership): can_access for one organization, which storage asks for a frame of that organization (storage.can_read_scoped). Membership is the caller''s to check. 22004 NULL, 22023 unknown kind.';

-- ---------------------------------------------------------------- API: organizations
CREATE FUNCTION organization.create_organization(actor_id uuid, kind text, name text, idempotency_key text DEFAULT NULL)
RETURNS organization.organization_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    n text := organization._check_name(name);
    o organization.organizations;
BEGIN
    PERFORM isa.not_null('kind', kind);
    IF kind NOT IN ('family', 'business') THEN
        RAISE EXCEPTION 'kind must be family or business, not "%"', left(kind, 100) USING ERRCODE = '22023',
            HINT = 'A user''s personal organization is made with the account.';
    END IF;
    PERFORM isa.check_idempotency_key(idempotency_key);
    PERFORM account.require_user(actor_id);
    IF idempotency_key IS NOT NULL THEN
        -- Serialise the user's calls with one key: the second waits here for the first.
        PERFORM pg_advisory_xact_lock(hashtextextended('organization.create:' || actor_id::text || ':' || idempotency_key, 0));
        SELECT * INTO o FROM organization.organizations x
         WHERE x.created_by = create_organization.actor_id AND x.idempotency_key = create_organization.idempotency_key;
        IF FOUND THEN
            IF o.kind <> kind OR o.name <> n THEN
                RAISE EXCEPTION 'idempotency key "%" was already used to create another organization', idempotency_key
                    USING ERRCODE = '23505', HINT = 'Use a new idempotency key for a new organization.';
            END IF;
            RETURN organization._info(o, organization.member_role(o.org_id, actor_id));
        END IF;
    END IF;
    o := organization._create(actor_id, kind, n, idempotency_key);
    RETURN organization._info(o, 'owner');
END
$$;
COMMENT ON FUNCTION organization.create_organization(uuid, text, text, text) IS
    'Creates a family or business organization owned by actor_id and publishes organization.created and organization.member_added. The same idempotency key with the same kind and name returns the first organization; with others it is 23505. 22023 bad kind or name, P0002 unknown user.';

CREATE FUNCTION organization.list_my_organizations(actor_id uuid, row_limit integer DEFAULT 100)
RETURNS SETOF organization.organization_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('actor_id', actor_id);
    PERFORM isa.check_page_size('row_limit', row_limit);
    RETURN QUERY
        SELECT o.org_id, o.kind, o.name, m.role,
               (SELECT count(*)::integer FROM organization.members x WHERE x.org_id = o.org_id), o.created_at
          FROM organization.members m
          JOIN organization.organizations o ON o.org_id = m.org_id AND o.status = 'active'
         WHERE m.user_id = list_my_organizations.actor_id
         ORDER BY o.created_at, o.org_id
         LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION organization.list_my_organizations(uuid, integer) IS
    'The organizations actor_id belongs to, oldest first (at most row_limit, 1 to 1000), each with the caller''s role.';

CREATE FUNCTION organization.get_organization(actor_id uuid, org_id uuid) RETURNS organization.organization_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o organization.organizations := organization._org(org_id, false);
BEGIN
    RETURN organization._info(o, organization._actor_role(o.org_id, actor_id, 'guest'));
END
$$;
COMMENT ON FUNCTION organization.get_organization(uuid, uuid) IS
    'An organization of which actor_id is a member, with the caller''s role and the member count. P0002 unknown or closed, 42501 not a member.';

CREATE FUNCTION organization.list_members(actor_id uuid, org_id uuid, row_limit integer DEFAULT 1000)
RETURNS SETOF organization.member_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o organization.organizations := organization._org(org_id, false);
BEGIN
    PERFORM organization._actor_role(o.org_id, actor_id, 'guest');
    PERFORM isa.check_page_size('row_limit', row_limit);
    RETURN QUERY
        SELECT m.org_id, m.user_id, m.role, m.joined_at
          FROM organization.members m
         WHERE m.org_id = o.org_id
         ORDER BY organization._rank(m.role) DESC, m.joined_at, m.user_id
         LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION organization.list_members(uuid, uuid, integer) IS
    'The members of an organization of which actor_id is a member: owner first, then by role and seniority (at most row_limit, 1 to 1000, default 1000). P0002 unknown or closed, 42501 not a member.';

-- ---------------------------------------------------------------- API: invitations
CREATE FUNCTION organization.invite_member(actor_id uuid, org_id uuid, email text, role text DEFAULT 'member',
                                           idempotency_key text DEFAULT NULL)
RETURNS organization.invitation_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    e         text := organization._check_email(email);
    o         organization.organizations := organization._org(org_id, true);
    my_role   text;
    i         organization.invitations;
    token     text := isa.base64url_encode(isa.random_bytes(32));
    inviter   account.user_profile;
    invitee   uuid;
    event_id  uuid;
BEGIN
    PERFORM isa.not_null('role', role);
    IF role NOT IN ('admin', 'member', 'guest') THEN
        RAISE EXCEPTION 'an invitation offers the role admin, member or guest, not "%"', left(role, 100)
            USING ERRCODE = '22023', HINT = 'An owner passes ownership with transfer_ownership.';
    END IF;
    PERFORM isa.check_idempotency_key(idempotency_key);
    my_role := organization._actor_role(o.org_id, actor_id, 'admin');
    IF organization._rank(role) >= organization._rank(my_role) THEN
        RAISE EXCEPTION 'not allowed: an % may invite only roles below its own, not %', my_role, role USING ERRCODE = '42501';
    END IF;
    IF o.kind = 'personal' THEN
        RAISE EXCEPTION 'a personal organization has only its owner' USING ERRCODE = '23514',
            HINT = 'Create a family or business organization to invite others.';
    END IF;
    IF idempotency_key IS NOT NULL THEN
        SELECT * INTO i FROM organization.invitations x
         WHERE x.invited_by = invite_member.actor_id AND x.idempotency_key = invite_member.idempotency_key;
        IF FOUND THEN
            IF i.org_id <> o.org_id OR lower(i.email) <> lower(e) OR i.role <> role THEN
                RAISE EXCEPTION 'idempotency key "%" was already used for another invitation', idempotency_key
                    USING ERRCODE = '23505', HINT = 'Use a new idempotency key for a new invitation.';
            END IF;
            IF i.status <> 'pending' THEN
                RETURN organization._invitation_info(i, NULL);
            END IF;
            -- The first answer was lost (or the client retried anyway): a new
            -- token, so that the caller holds one; the old one stops working.
            -- No second event: the invitee's email is not sent twice.
            UPDATE organization.invitations x SET token_hash = sha256(convert_to(token, 'UTF8'))
             WHERE x.invitation_id = i.invitation_id RETURNING * INTO i;
            RETURN organization._invitation_info(i, token);
        END IF;
    END IF;
    BEGIN
        invitee := (account.find_user_by_email(e)).user_id;
    EXCEPTION WHEN no_data_found OR invalid_parameter_value THEN
        invitee := NULL;                            -- no account (yet) with this email
    END;
    IF EXISTS (SELECT 1 FROM organization.members m WHERE m.org_id = o.org_id AND m.user_id = invitee) THEN
        RAISE EXCEPTION '% is a member of this organization already', e USING ERRCODE = '23505';
    END IF;
    IF EXISTS (SELECT 1 FROM organization.invitations x
                WHERE x.org_id = o.org_id AND lower(x.email) = lower(e) AND x.status = 'pending' AND x.expires_at > now()) THEN
        RAISE EXCEPTION '% has a pending invitation to this organization already', e USING ERRCODE = '23505',
            HINT = 'Revoke it first to send a new one.';
    END IF;
    inviter := account.get_user(actor_id);
    INSERT INTO organization.invitations AS x (invitation_id, org_id, email, role, invited_by, token_hash,
                                               idempotency_key, expires_at)
    VALUES (isa.uuid_v7(), o.org_id, e, role, actor_id, sha256(convert_to(token, 'UTF8')),
            idempotency_key, now() + organization._invitation_lifetime())
    RETURNING * INTO i;
    event_id := isa.publish_event('organization.member_invited', 'organization_service',
        jsonb_build_object('invitation_id', i.invitation_id, 'org_id', o.org_id, 'org_name', o.name, 'org_kind', o.kind,
                           'email', i.email, 'role', i.role, 'invited_by', actor_id, 'inviter_name', inviter.name,
                           'expires_at', isa.iso_time(i.expires_at)));
    RETURN organization._invitation_info(i, token);
END
$$;
COMMENT ON FUNCTION organization.invite_member(uuid, uuid, text, text, text) IS
    'An owner or admin invites an email address with a role below their own (admin, member, guest; default member): returns the invitation with its single-use token (valid 7 days; shown only here) and publishes organization.member_invited (without the token). The same idempotency key with the same arguments returns the invitation with a new token and no second event. 42501 not a member or not allowed, 23514 personal organization, 23505 already a member or invited (or key reused), 22023 bad email or role, P0002 unknown organization.';

CREATE FUNCTION organization.list_invitations(actor_id uuid, org_id uuid, row_limit integer DEFAULT 100)
RETURNS SETOF organization.invitation_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o organization.organizations := organization._org(org_id, false);
BEGIN
    PERFORM organization._actor_role(o.org_id, actor_id, 'admin');
    PERFORM isa.check_page_size('row_limit', row_limit);
    RETURN QUERY
        SELECT (organization._invitation_info(i, NULL)).*
          FROM organization.invitations i
         WHERE i.org_id = o.org_id
         ORDER BY i.created_at DESC, i.invitation_id DESC
         LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION organization.list_invitations(uuid, uuid, integer) IS
    'An organization''s invitations, newest first, for its owner and admins (at most row_limit, 1 to 1000, default 100); no token. P0002 unknown organization, 42501 not a member or not allowed.';

CREATE FUNCTION organization.list_my_invitations(actor_id uuid) RETURNS SETOF organization.invitation_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    actor_email text := (account.get_user(actor_id)).email;
BEGIN
    RETURN QUERY
        SELECT (organization._invitation_info(i, NULL)).*
          FROM organization.invitations i
          JOIN organization.organizations o ON o.org_id = i.org_id AND o.status = 'active'
         WHERE lower(i.email) = lower(actor_email) AND i.status = 'pending' AND i.expires_at > now()
         ORDER BY i.created_at DESC, i.invitation_id DESC;
END
$$;
COMMENT ON FUNCTION organization.list_my_invitations(uuid) IS
    'The pending, unexpired invitations sent to actor_id''s email address (compared case-blind), newest first; no token. P0002 unknown user.';

CREATE FUNCTION organization.accept_invitation(actor_id uuid, token text DEFAULT NULL, invitation_id uuid DEFAULT NULL)
RETURNS organization.member_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i organization.invitations := organization._invitation_for(actor_id, token, invitation_id);
    o organization.organizations := organization._org(i.org_id, true);
    m organization.members;
    event_id uuid;
BEGIN
    SELECT * INTO i FROM organization.invitations x WHERE x.invitation_id = i.invitation_id FOR UPDATE;
    SELECT * INTO m FROM organization.members x WHERE x.org_id = o.org_id AND x.user_id = actor_id;
    IF i.status = 'accepted' AND i.accepted_by = actor_id AND m.user_id IS NOT NULL THEN
        RETURN ROW(m.org_id, m.user_id, m.role, m.joined_at)::organization.member_info;   -- a retry
    END IF;
    IF i.status <> 'pending' THEN
        RAISE EXCEPTION 'this invitation was % already', i.status USING ERRCODE = '23514',
            HINT = 'An invitation is used once; ask for a new one.';
    END IF;
    IF i.expires_at <= now() THEN
        RAISE EXCEPTION 'this invitation expired at %', i.expires_at USING ERRCODE = '23514',
            HINT = 'Ask for a new invitation.';
    END IF;
    UPDATE organization.invitations x SET status = 'accepted', responded_at = now(), accepted_by = actor_id
     WHERE x.invitation_id = i.invitation_id;
    IF m.user_id IS NOT NULL THEN
        RETURN ROW(m.org_id, m.user_id, m.role, m.joined_at)::organization.member_info;   -- a member already
    END IF;
    INSERT INTO organization.members AS x (org_id, user_id, role) VALUES (o.org_id, actor_id, i.role) RETURNING * INTO m;
    event_id := isa.publish_event('organization.member_added', 'organization_service',
        jsonb_build_object('org_id', o.org_id, 'user_id', actor_id, 'role', m.role, 'kind', o.kind,
                           'via', 'invitation', 'invitation_id', i.invitation_id));
    RETURN ROW(m.org_id, m.user_id, m.role, m.joined_at)::organization.member_info;
END
$$;
COMMENT ON FUNCTION organization.accept_invitation(uuid, text, uuid) IS
    'The invitee accepts an invitation named by its token or its id (exactly one): the caller''s email must be the invitation''s (case-blind). Makes the caller a member with the invited role and publishes organization.member_added; accepting again returns the membership. P0002 not found or not the caller''s, 23514 expired, declined, revoked or used, 22004/22023 neither or both of token and invitation_id.';

CREATE FUNCTION organization.decline_invitation(actor_id uuid, token text DEFAULT NULL, invitation_id uuid DEFAULT NULL)
RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i organization.invitations := organization._invitation_for(actor_id, token, invitation_id);
BEGIN
    SELECT * INTO i FROM organization.invitations x WHERE x.invitation_id = i.invitation_id FOR UPDATE;
    IF i.status = 'declined' THEN
        RETURN;                                     -- a retry
    END IF;
    IF i.status <> 'pending' THEN
        RAISE EXCEPTION 'this invitation was % already', i.status USING ERRCODE = '23514';
    END IF;
    UPDATE organization.invitations x SET status = 'declined', responded_at = now()
     WHERE x.invitation_id = i.invitation_id;
END
$$;
COMMENT ON FUNCTION organization.decline_invitation(uuid, text, uuid) IS
    'The invitee declines an invitation named by its token or its id: it can no longer be accepted. Declining again does nothing. P0002 not found or not the caller''s, 23514 accepted or revoked already.';

CREATE FUNCTION organization.revoke_invitation(actor_id uuid, invitation_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i organization.invitations;
    o organization.organizations;
BEGIN
    PERFORM isa.not_null('invitation_id', invitation_id);
    SELECT * INTO i FROM organization.invitations x WHERE x.invitation_id = revoke_invitation.invitation_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invitation % not found', invitation_id USING ERRCODE = 'P0002';
    END IF;
    o := organization._org(i.org_id, true);
    PERFORM organization._actor_role(o.org_id, actor_id, 'admin');
    SELECT * INTO i FROM organization.invitations x WHERE x.invitation_id = revoke_invitation.invitation_id FOR UPDATE;
    IF i.status = 'revoked' THEN
        RETURN;                                     -- a retry
    END IF;
    IF i.status <> 'pending' THEN
        RAISE EXCEPTION 'this invitation was % already', i.status USING ERRCODE = '23514';
    END IF;
    UPDATE organization.invitations x SET status = 'revoked', responded_at = now()
     WHERE x.invitation_id = i.invitation_id;
END
$$;
COMMENT ON FUNCTION organization.revoke_invitation(uuid, uuid) IS
    'An owner or admin revokes a pending invitation of their organization: its token stops working. Revoking again does nothing. P0002 unknown, 42501 not a member or not allowed, 23514 accepted or declined already.';

-- ---------------------------------------------------------------- API: members
CREATE FUNCTION organization.leave_organization(actor_id uuid, org_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o organization.organizations := organization._org(org_id, true);
BEGIN
    IF organization._actor_role(o.org_id, actor_id, 'guest') = 'owner' THEN
        RAISE EXCEPTION 'the owner cannot leave: the organization would have no owner' USING ERRCODE = '23514',
            HINT = 'Transfer ownership to another member first (transfer_ownership).';
    END IF;
    PERFORM organization._remove(o.org_id, actor_id, 'left', NULL);
END
$$;
COMMENT ON FUNCTION organization.leave_organization(uuid, uuid) IS
    'The caller leaves an organization; their shares with it end. Publishes organization.member_removed (reason left). 23514 the owner (transfer first), 42501 not a member, P0002 unknown organization.';

CREATE FUNCTION organization.remove_member(actor_id uuid, org_id uuid, user_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o       organization.organizations := organization._org(org_id, true);
    my_role text := organization._actor_role(o.org_id, actor_id, 'admin');
    r       text;
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    IF user_id = actor_id THEN
        RAISE EXCEPTION 'to leave an organization, use leave_organization' USING ERRCODE = '22023';
    END IF;
    SELECT m.role INTO r FROM organization.members m WHERE m.org_id = o.org_id AND m.user_id = remove_member.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % is not a member of organization %', user_id, o.org_id USING ERRCODE = 'P0002';
    END IF;
    IF organization._rank(r) >= organization._rank(my_role) THEN
        RAISE EXCEPTION 'not allowed: an % cannot remove an %', my_role, r USING ERRCODE = '42501';
    END IF;
    PERFORM organization._remove(o.org_id, user_id, 'removed', actor_id);
END
$$;
COMMENT ON FUNCTION organization.remove_member(uuid, uuid, uuid) IS
    'An owner or admin removes a member ranked below them; the member''s shares with the organization end. Publishes organization.member_removed (reason removed). 42501 not a member or not allowed, P0002 unknown organization or user not a member, 22023 removing oneself (leave_organization).';

CREATE FUNCTION organization.change_member_role(actor_id uuid, org_id uuid, user_id uuid, role text)
RETURNS organization.member_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    o       organization.organizations := organization._org(org_id, true);
    my_role text := organization._actor_role(o.org_id, actor_id, 'admin');
    m       organization.members;
BEGIN
    PERFORM isa.not_null('user_id, role', user_id, role);
    IF role NOT IN ('admin', 'member', 'guest') THEN
        RAISE EXCEPTION 'role must be admin, member or guest, not "%"', left(role, 100) USING ERRCODE = '22023',
            HINT = 'Ownership passes with transfer_ownership.';
    END IF;
    SELECT * INTO m FROM organization.members x WHERE x.org_id = o.org_id AND x.user_id = change_member_role.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % is not a member of organization %', user_id, o.org_id USING ERRCODE = 'P0002';
    END IF;
    IF m.role = 'owner' AND user_id = actor_id THEN
        RAISE EXCEPTION 'the owner cannot take another role: the organization would have no owner' USING ERRCODE = '23514',
            HINT = 'Transfer ownership to another member first (transfer_ownership).';
    END IF;
    IF organization._rank(m.role) >= organization._rank(my_role) OR organization._rank(role) >= organization._rank(my_role) THEN
        RAISE EXCEPTION 'not allowed: an % changes only roles below its own', my_role USING ERRCODE = '42501';
    END IF;
    IF m.role <> role THEN
        PERFORM organization._set_role(o.org_id, m.user_id, m.role, role, 'changed', actor_id);
        m.role := role;
    END IF;
    RETURN ROW(m.org_id, m.user_id, m.role, m.joined_at)::organization.member_info;
END
$$;
COMMENT ON FUNCTION organization.change_member_role(uuid, uuid, uuid, text) IS
    'An owner or admin gives a member ranked below them another role below their own (admin, member, guest). Publishes organization.member_role_changed when it changes. 42501 not allowed, 23514 the owner''s own role, P0002 not a member, 22023 bad role.';

CREATE FUNCTION organization.transfer_ownership(actor_id uuid, org_id uuid, user_id uuid)
RETURNS organization.member_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o organization.organizations := organization._org(org_id, true);
    m organization.members;
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    PERFORM organization._actor_role(o.org_id, actor_id, 'owner');
    SELECT * INTO m FROM organization.members x WHERE x.org_id = o.org_id AND x.user_id = transfer_ownership.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % is not a member of organization %', user_id, o.org_id USING ERRCODE = 'P0002',
            HINT = 'Ownership passes to a member: invite them first.';
    END IF;
    IF user_id = actor_id THEN
        RETURN ROW(m.org_id, m.user_id, m.role, m.joined_at)::organization.member_info;   -- the owner already
    END IF;
    IF o.kind = 'personal' THEN
        RAISE EXCEPTION 'a personal organization belongs to its user' USING ERRCODE = '23514';
    END IF;
    -- The former owner steps down first: members_one_owner allows one owner.
    PERFORM organization._set_role(o.org_id, actor_id, 'owner', 'admin', 'ownership_transferred', actor_id);
    PERFORM organization._set_role(o.org_id, m.user_id, m.role, 'owner', 'ownership_transferred', actor_id);
    m.role := 'owner';
    RETURN ROW(m.org_id, m.user_id, m.role, m.joined_at)::organization.member_info;
END
$$;
COMMENT ON FUNCTION organization.transfer_ownership(uuid, uuid, uuid) IS
    'The owner makes another member the owner and becomes an admin: two organization.member_role_changed events (reason ownership_transferred). 42501 not the owner, P0002 not a member, 23514 a personal organization.';

-- ---------------------------------------------------------------- API: sharing
CREATE FUNCTION organization.share_resource(actor_id uuid, org_id uuid, kind text, resource_id uuid)
RETURNS organization.shared_resource_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    o organization.organizations := organization._org(org_id, true);
    s organization.shared_resources;
BEGIN
    PERFORM isa.not_null('kind, resource_id', kind, resource_id);
    PERFORM organization._check_kind(kind);
    PERFORM organization._actor_role(o.org_id, actor_id, 'member');
    IF o.kind = 'personal' THEN
        RAISE EXCEPTION 'a personal organization has no one to share with' USING ERRCODE = '23514';
    END IF;
    IF kind = 'file' THEN
        PERFORM storage.get_my_file(actor_id, resource_id);      -- P0002 unless the caller's finished file
    ELSIF kind = 'album' AND storage.album_owner(resource_id) IS DISTINCT FROM actor_id THEN
        RAISE EXCEPTION 'album % not found', resource_id USING ERRCODE = 'P0002',
            HINT = 'A member shares an album of their own (storage.create_album).';
    ELSIF kind = 'device' AND NOT EXISTS (SELECT 1 FROM organization.devices d
                                           WHERE d.device_id = resource_id AND d.owner_id = actor_id) THEN
        RAISE EXCEPTION 'device % not found', resource_id USING ERRCODE = 'P0002',
            HINT = 'A member shares a device registered to them (device_service.device.registered).';
    END IF;
    s := organization._share(o, kind, resource_id, actor_id);
    RETURN ROW(s.org_id, s.kind, s.resource_id, s.shared_by, s.shared_at)::organization.shared_resource_info;
END
$$;
COMMENT ON FUNCTION organization.share_resource(uuid, uuid, text, uuid) IS
    'A member (not a guest) shares their device, file or album with a family or business organization: its members may access it while they are members (can_access). Publishes family.resource_shared; sharing again returns the share. 42501 not a member or a guest, P0002 unknown organization or not the caller''s file, album or device, 23514 a personal organization, 22023 unknown kind.';

CREATE FUNCTION organization.unshare_resource(actor_id uuid, org_id uuid, kind text, resource_id uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    o       organization.organizations := organization._org(org_id, true);
    my_role text := organization._actor_role(o.org_id, actor_id, 'guest');
    s       organization.shared_resources;
    event_id uuid;
BEGIN
    PERFORM isa.not_null('kind, resource_id', kind, resource_id);
    SELECT * INTO s FROM organization.shared_resources x
     WHERE x.org_id = o.org_id AND x.kind = unshare_resource.kind AND x.resource_id = unshare_resource.resource_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF s.shared_by <> actor_id AND organization._rank(my_role) < organization._rank('admin') THEN
        RAISE EXCEPTION 'not allowed: only its sharer, an admin or the owner unshares a resource' USING ERRCODE = '42501';
    END IF;
    DELETE FROM organization.shared_resources x
     WHERE x.org_id = s.org_id AND x.kind = s.kind AND x.resource_id = s.resource_id;
    event_id := isa.publish_event('family.resource_unshared', 'organization_service',
        jsonb_build_object('org_id', s.org_id, 'kind', s.kind, 'resource_id', s.resource_id, 'shared_by', s.shared_by,
                           'reason', 'unshared', 'unshared_by', actor_id));
    RETURN true;
END
$$;
COMMENT ON FUNCTION organization.unshare_resource(uuid, uuid, text, uuid) IS
    'Its sharer, an admin or the owner stops sharing a resource with an organization: true if it was shared, false if not. Publishes family.resource_unshared. 42501 not a member or not allowed, P0002 unknown organization.';

CREATE FUNCTION organization.shared_resources(actor_id uuid, org_id uuid, row_limit integer DEFAULT 1000)
RETURNS SETOF organization.shared_resource_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o organization.organizations := organization._org(org_id, false);
BEGIN
    PERFORM organization._actor_role(o.org_id, actor_id, 'guest');
    PERFORM isa.check_page_size('row_limit', row_limit);
    RETURN QUERY
        SELECT s.org_id, s.kind, s.resource_id, s.shared_by, s.shared_at
          FROM organization.shared_resources s
         WHERE s.org_id = o.org_id
         ORDER BY s.shared_at DESC, s.kind, s.resource_id
         LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION organization.shared_resources(uuid, uuid, integer) IS
    'What is shared with an organization, newest first, for its members (at most row_limit, 1 to 1000, default 1000). P0002 unknown organization, 42501 not a member.';

-- ---------------------------------------------------------------- handlers
-- Handlers raise only on transient failure: bad data is logged (WARNING) and
-- the event is consumed.

-- account_service.user.created: the user's personal organization, once
-- (organizations_personal), however often the event comes.
CREATE FUNCTION organization.on_user_created(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid text := e.data ->> 'user_id';
BEGIN
    IF NOT isa.is_uuid(uid) THEN
        RAISE WARNING 'organization: user.created % ignored: data.user_id is not a uuid', e.id;
        RETURN;
    END IF;
    IF NOT account.user_exists(uid::uuid) THEN
        RAISE WARNING 'organization: user.created % ignored: user % does not exist (deleted since?)', e.id, uid;
        RETURN;
    END IF;
    PERFORM organization._create(uid::uuid, 'personal', 'Personal', NULL);
END
$$;
COMMENT ON FUNCTION organization.on_user_created(isa.event) IS
    'Handler of account_service.user.created: creates the user''s personal organization unless it exists.';

-- account_service.user.deleted: every membership of the user ends.  Where
-- the user was the owner, the longest-standing admin takes over, else the
-- longest-standing member; with neither, the organization closes (its
-- guests' memberships end, its shares and pending invitations with it).
CREATE FUNCTION organization.on_user_deleted(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid       text := e.data ->> 'user_id';
    ms        record;
    successor organization.members;
    g         record;
    event_id  uuid;
BEGIN
    IF NOT isa.is_uuid(uid) THEN
        RAISE WARNING 'organization: user.deleted % ignored: data.user_id is not a uuid', e.id;
        RETURN;
    END IF;
    FOR ms IN
        SELECT o.org_id, m.role
          FROM organization.members m JOIN organization.organizations o ON o.org_id = m.org_id
         WHERE m.user_id = uid::uuid
         ORDER BY o.org_id
           FOR UPDATE OF o
    LOOP
        PERFORM organization._remove(ms.org_id, uid::uuid, 'user_deleted', NULL);
        CONTINUE WHEN ms.role <> 'owner';
        SELECT * INTO successor FROM organization.members m
         WHERE m.org_id = ms.org_id AND m.role IN ('admin', 'member')
         ORDER BY organization._rank(m.role) DESC, m.joined_at, m.user_id
         LIMIT 1;
        IF FOUND THEN
            PERFORM organization._set_role(ms.org_id, successor.user_id, successor.role, 'owner', 'owner_deleted', NULL);
        ELSE
            FOR g IN SELECT m.user_id FROM organization.members m WHERE m.org_id = ms.org_id ORDER BY m.joined_at, m.user_id LOOP
                PERFORM organization._remove(ms.org_id, g.user_id, 'closed', NULL);
            END LOOP;
            UPDATE organization.invitations i SET status = 'revoked', responded_at = now()
             WHERE i.org_id = ms.org_id AND i.status = 'pending';
            UPDATE organization.organizations o SET status = 'closed', closed_at = now(), updated_at = now()
             WHERE o.org_id = ms.org_id;
            event_id := isa.publish_event('organization.closed', 'organization_service',
                jsonb_build_object('org_id', ms.org_id, 'reason', 'owner_deleted', 'closed_at', isa.iso_time(now())));
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION organization.on_user_deleted(isa.event) IS
    'Handler of account_service.user.deleted: the user''s memberships end (organization.member_removed, reason user_deleted); an organization they owned passes to its longest-standing admin, else member (organization.member_role_changed, reason owner_deleted), else closes (organization.closed).';

-- device_service.device.registered {device_id, owner_id, organization_id?}:
-- organization records the device's owner; when the event names an
-- organization of which the owner is a member (not a guest), the device is
-- shared with it.
CREATE FUNCTION organization.on_device_registered(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    did  text := e.data ->> 'device_id';
    own  text := e.data ->> 'owner_id';
    org  text := e.data ->> 'organization_id';
    o    organization.organizations;
BEGIN
    IF NOT isa.is_uuid(did) OR NOT isa.is_uuid(own)
       OR (org IS NOT NULL AND NOT isa.is_uuid(org)) THEN
        RAISE WARNING 'organization: device.registered % ignored: needs data.device_id and data.owner_id (uuids), data.organization_id a uuid or absent, got %',
            e.id, e.data;
        RETURN;
    END IF;
    INSERT INTO organization.devices AS d (device_id, owner_id) VALUES (did::uuid, own::uuid)
    ON CONFLICT (device_id) DO UPDATE SET owner_id = EXCLUDED.owner_id, registered_at = now()
     WHERE d.owner_id <> EXCLUDED.owner_id;
    IF org IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO o FROM organization.organizations x WHERE x.org_id = org::uuid AND x.status = 'active' FOR UPDATE;
    IF NOT FOUND OR o.kind = 'personal'
       OR organization._rank(organization.member_role(o.org_id, own::uuid)) < organization._rank('member') THEN
        RAISE WARNING 'organization: device.registered %: device % not shared: % is not a family or business organization in which % is a member',
            e.id, did, org, own;
        RETURN;
    END IF;
    PERFORM organization._share(o, 'device', did::uuid, own::uuid);
END
$$;
COMMENT ON FUNCTION organization.on_device_registered(isa.event) IS
    'Handler of device_service.device.registered: records the device''s owner; when data.organization_id names a family or business organization of which the owner is a member (not a guest), shares the device with it (family.resource_shared).';

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA organization FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    organization.organization_exists(uuid),
    organization.member_role(uuid, uuid),
    organization.is_member(uuid, uuid),
    organization.can_access(uuid, text, uuid),
    organization.create_organization(uuid, text, text, text),
    organization.list_my_organizations(uuid, integer),
    organization.get_organization(uuid, uuid),
    organization.list_members(uuid, uuid, integer),
    organization.invite_member(uuid, uuid, text, text, text),
    organization.list_invitations(uuid, uuid, integer),
    organization.list_my_invitations(uuid),
    organization.accept_invitation(uuid, text, uuid),
    organization.decline_invitation(uuid, text, uuid),
    organization.revoke_invitation(uuid, uuid),
    organization.leave_organization(uuid, uuid),
    organization.remove_member(uuid, uuid, uuid),
    organization.change_member_role(uuid, uuid, uuid, text),
    organization.transfer_ownership(uuid, uuid, uuid),
    organization.share_resource(uuid, uuid, text, uuid),
    organization.unshare_resource(uuid, uuid, text, uuid),
    organization.shared_resources(uuid, uuid, integer)
TO isa_app_organization;
-- What organization's own code calls of other services, as isa_svc_organization.
GRANT EXECUTE ON FUNCTION
    account.get_user(uuid), account.find_user_by_email(text), account.require_user(uuid),
    account.user_exists(uuid), storage.get_my_file(uuid, uuid), storage.album_owner(uuid)
TO isa_svc_organization;
-- What storage's code calls of organization, as isa_svc_storage: granted
-- here because storage loads first (organization calls storage).
GRANT EXECUTE ON FUNCTION
    organization.organization_exists(uuid), organization.member_role(uuid, uuid),
    organization.is_member(uuid, uuid), organization.can_access(uuid, text, uuid),
    organization.is_shared_with(uuid, text, uuid)
TO isa_svc_storage;

-- ---------------------------------------------------------------- subscriptions
SELECT isa.subscribe_to_events('organization', 'account_service.user.created',
                               'organization.on_user_created(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('organization', 'account_service.user.deleted',
                               'organization.on_user_deleted(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('organization', 'device_service.device.registered',
                               'organization.on_device_registered(isa.event)'::regprocedure);

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- A user acts in their own organizations only: every route fills actor_id
-- from the token (subject_param), and the function decides by the caller's
-- membership and role (42501 otherwise).  organization_exists, member_role,
-- is_member and can_access are for other services and have no route.
SELECT isa.http_route('POST', '/v1/organizations', 'organization.create_organization(uuid, text, text, text)', 'user',
    'Creates a family or business organization owned by the caller (idempotency_key: a retry returns the first).',
    subject_param => 'actor_id', status => 201);
SELECT isa.http_route('GET', '/v1/organizations', 'organization.list_my_organizations(uuid, integer)', 'user',
    'The caller''s organizations with the caller''s role, oldest first.', subject_param => 'actor_id');
SELECT isa.http_route('GET', '/v1/organizations/{org_id}', 'organization.get_organization(uuid, uuid)', 'user',
    'One of the caller''s organizations.', subject_param => 'actor_id');
SELECT isa.http_route('GET', '/v1/organizations/{org_id}/members', 'organization.list_members(uuid, uuid, integer)', 'user',
    'The members of one of the caller''s organizations, owner first.', subject_param => 'actor_id');
SELECT isa.http_route('POST', '/v1/organizations/{org_id}/invitations',
    'organization.invite_member(uuid, uuid, text, text, text)', 'user',
    'An owner or admin invites an email address: the invitation with its single-use token (idempotency_key: a retry returns it with a new token).',
    subject_param => 'actor_id', status => 201);
SELECT isa.http_route('GET', '/v1/organizations/{org_id}/invitations',
    'organization.list_invitations(uuid, uuid, integer)', 'user',
    'An organization''s invitations, for its owner and admins.', subject_param => 'actor_id');
SELECT isa.http_route('DELETE', '/v1/invitations/{invitation_id}',
    'organization.revoke_invitation(uuid, uuid)', 'user',
    'An owner or admin revokes a pending invitation.', subject_param => 'actor_id');
SELECT isa.http_route('GET', '/v1/me/invitations', 'organization.list_my_invitations(uuid)', 'user',
    'The pending invitations sent to the caller''s email address.', subject_param => 'actor_id');
SELECT isa.http_route('POST', '/v1/invitations/accept', 'organization.accept_invitation(uuid, text, uuid)', 'user',
    'The invitee accepts an invitation by its token (body: token).', subject_param => 'actor_id');
SELECT isa.http_route('POST', '/v1/invitations/{invitation_id}/accept', 'organization.accept_invitation(uuid, text, uuid)', 'user',
    'The invitee accepts an invitation by its id (the link of the invitation email).', subject_param => 'actor_id');
SELECT isa.http_route('POST', '/v1/invitations/decline', 'organization.decline_invitation(uuid, text, uuid)', 'user',
    'The invitee declines an invitation by its token (body: token).', subject_param => 'actor_id');
SELECT isa.http_route('POST', '/v1/invitations/{invitation_id}/decline', 'organization.decline_invitation(uuid, text, uuid)', 'user',
    'The invitee declines an invitation by its id.', subject_param => 'actor_id');
SELECT isa.http_route('POST', '/v1/organizations/{org_id}/leave', 'organization.leave_organization(uuid, uuid)', 'user',
    'The caller leaves an organization (not its owner).', subject_param => 'actor_id');
SELECT isa.http_route('DELETE', '/v1/organizations/{org_id}/members/{user_id}',
    'organization.remove_member(uuid, uuid, uuid)', 'user',
    'An owner or admin removes a member ranked below them.', subject_param => 'actor_id');
SELECT isa.http_route('PATCH', '/v1/organizations/{org_id}/members/{user_id}',
    'organization.change_member_role(uuid, uuid, uuid, text)', 'user',
    'An owner or admin changes the role of a member ranked below them (body: role).', subject_param => 'actor_id');
SELECT isa.http_route('POST', '/v1/organizations/{org_id}/transfer',
    'organization.transfer_ownership(uuid, uuid, uuid)', 'user',
    'The owner makes another member (body: user_id) the owner and becomes an admin.', subject_param => 'actor_id');
SELECT isa.http_route('POST', '/v1/organizations/{org_id}/shared',
    'organization.share_resource(uuid, uuid, text, uuid)', 'user',
    'A member shares their device, file or album (body: kind, resource_id) with the organization.',
    subject_param => 'actor_id', status => 201);
SELECT isa.http_route('GET', '/v1/organizations/{org_id}/shared',
    'organization.shared_resources(uuid, uuid, integer)', 'user',
    'What is shared with one of the caller''s organizations.', subject_param => 'actor_id');
SELECT isa.http_route('DELETE', '/v1/organizations/{org_id}/shared/{kind}/{resource_id}',
    'organization.unshare_resource(uuid, uuid, text, uuid)', 'user',
    'Its sharer, an admin or the owner stops sharing a resource: true if it was shared.', subject_param => 'actor_id');
