-- 0.1.0 → 0.2.0, auth: auth.unregister_device is new.  The device service's
-- fragment (its whole file, which runs before the replay) grants it to
-- isa_svc_device, so it must exist by then: declared here, its body made by
-- the replay of sql/auth/auth.sql (CREATE OR REPLACE sets every attribute).
CREATE FUNCTION auth.unregister_device(device_id text) RETURNS integer
    LANGUAGE sql AS 'SELECT NULL::integer';
