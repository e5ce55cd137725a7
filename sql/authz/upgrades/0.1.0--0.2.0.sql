-- 0.1.0 → 0.2.0, authz: the organization roles and the subscriptions to
-- organization's membership events (sql/authz/authz.sql, "organization
-- roles"; the handlers themselves are replayed from there).  A role of the
-- same name made by an administrator is kept as it is.
INSERT INTO authz.roles (name, description, permissions) VALUES
    ('org_owner',  'The owner of an organization (kept by organization''s events).',
     '{organization:*,org_member:*,shared_resource:*}'),
    ('org_admin',  'An admin of an organization (kept by organization''s events).',
     '{org_member:invite,org_member:read,org_member:remove,org_member:update_role,organization:read,shared_resource:read,shared_resource:share}'),
    ('org_member', 'A member of an organization (kept by organization''s events).',
     '{org_member:read,organization:read,shared_resource:read,shared_resource:share}'),
    ('org_guest',  'A guest of an organization (kept by organization''s events).',
     '{org_member:read,organization:read,shared_resource:read}')
ON CONFLICT (name) DO NOTHING;

-- The handlers do not exist yet when the fragments run (the replay that
-- creates them comes after): create them here first, the replay replaces them.
CREATE FUNCTION authz.on_organization_member_added(e isa.event) RETURNS void
    LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION authz.on_organization_member_role_changed(e isa.event) RETURNS void
    LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION authz.on_organization_member_removed(e isa.event) RETURNS void
    LANGUAGE plpgsql AS $$BEGIN END$$;
SELECT isa.subscribe_to_events('authz', 'organization_service.organization.member_added',
                               'authz.on_organization_member_added(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('authz', 'organization_service.organization.member_role_changed',
                               'authz.on_organization_member_role_changed(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('authz', 'organization_service.organization.member_removed',
                               'authz.on_organization_member_removed(isa.event)'::regprocedure);
