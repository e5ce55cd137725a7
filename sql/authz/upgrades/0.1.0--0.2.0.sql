-- 0.1.0 → 0.2.0, authz: the subscriptions to organization's membership
-- events (sql/authz/authz.sql, "organization roles"; the handlers themselves
-- are replayed from there, and they make the org_* roles when first needed).

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
