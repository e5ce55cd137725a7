-- account.sql — the account service (schema account, source account_service):
-- users (unique email among live users, soft delete), their notification
-- preferences, and the events user.created / user.updated / user.deleted.
-- Schema, outbox and inbox come from sql/core/services.sql.  account subscribes to
-- nothing.  docs/services/account.md documents the API.

-- ---------------------------------------------------------------- tables
CREATE TABLE account.users (
    user_id     uuid PRIMARY KEY,                     -- UUIDv7
    email       text NOT NULL,                        -- as given (trimmed); unique case-insensitively among live users
    name        text NOT NULL CHECK (name <> '' AND length(name) <= 200),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),
    notification_preferences jsonb NOT NULL DEFAULT '{"channels": {"email": true, "webhook": true, "mqtt": true, "inapp": true}, "categories": {}, "quiet_hours": null, "locale": "en"}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    CHECK ((status = 'deleted') = (deleted_at IS NOT NULL))
);
COMMENT ON TABLE account.users IS
    'Users: email (unique case-insensitively among active users), name, status active/deleted (soft delete), notification preferences.';

-- One live user per email, whatever its case; a deleted user's email is free.
CREATE UNIQUE INDEX users_email_active ON account.users (lower(email)) WHERE status = 'active';

-- create_user's idempotency keys: the arguments of the first call and the
-- user it created.
CREATE TABLE account.create_requests (
    idempotency_key text PRIMARY KEY,
    email           text NOT NULL,        -- lower-cased, as compared
    name            text NOT NULL,
    user_id         uuid NOT NULL REFERENCES account.users DEFERRABLE INITIALLY DEFERRED,  -- the key is claimed before the user row exists
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE account.create_requests IS
    'Idempotency keys of account.create_user: the first call''s arguments and the user it created.';

-- ---------------------------------------------------------------- types
CREATE TYPE account.user_profile AS (
    user_id    uuid,
    email      text,
    name       text,
    status     text,
    created_at timestamptz,
    updated_at timestamptz
);
COMMENT ON TYPE account.user_profile IS
    'A user as the account API returns it.';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('user.created', 'account_service', '1.0.0',
    'A user account was created (account.create_user).',
    '{"user_id":    {"type": "uuid",      "required": true, "description": "the new user"},
      "email":      {"type": "string",    "required": true, "description": "the email address as stored"},
      "name":       {"type": "string",    "required": true, "description": "display name"},
      "created_at": {"type": "timestamp", "required": true, "description": "when the account was created"}}');
SELECT isa.register_event_type('user.updated', 'account_service', '1.0.0',
    'A user''s email, name or notification preferences changed (account.update_user, account.set_notification_preferences).',
    '{"user_id": {"type": "uuid",   "required": true, "description": "the user"},
      "email":   {"type": "string", "required": true, "description": "the email address after the change"},
      "name":    {"type": "string", "required": true, "description": "the name after the change"},
      "changed": {"type": "array",  "required": true, "description": "names of the fields that changed: email, name, notification_preferences"}}');
SELECT isa.register_event_type('user.deleted', 'account_service', '1.0.0',
    'A user account was deleted (soft delete, account.delete_user); its email may be reused.',
    '{"user_id":    {"type": "uuid",      "required": true, "description": "the deleted user"},
      "deleted_at": {"type": "timestamp", "required": true, "description": "when it was deleted"}}');

-- ---------------------------------------------------------------- internal helpers
-- The email trimmed, or 22004/22023.  The form checked: local@domain, at most
-- 254 characters, a local part of at most 64 characters from the RFC 5322
-- dot-atom set (no leading, trailing or double dot), a domain of at least two
-- dot-separated labels of letters, digits and inner hyphens (each at most 63),
-- the last label 2 to 63 letters or a punycode label (xn--...).
CREATE FUNCTION account._check_email(email text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e text := btrim(email, E' \t\r\n');
BEGIN
    PERFORM isa.not_null('email', email);
    IF length(e) > 254
       OR length(split_part(e, '@', 1)) > 64
       OR e !~ '^[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+)*@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,63}|[Xx][Nn]--[A-Za-z0-9-]{1,59})$' THEN
        RAISE EXCEPTION 'invalid email address "%"', left(e, 300) USING ERRCODE = '22023',
            HINT = 'An email address is local@domain.tld, at most 254 characters, without spaces.';
    END IF;
    RETURN e;
END
$$;

-- The name trimmed, or 22004/22023: 1 to 200 characters, no control characters.
CREATE FUNCTION account._check_name(name text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n text := btrim(name, E' \t\r\n');
BEGIN
    PERFORM isa.not_null('name', name);
    IF n = '' THEN
        RAISE EXCEPTION 'name must not be empty' USING ERRCODE = '22023';
    END IF;
    IF length(n) > 200 THEN
        RAISE EXCEPTION 'name is too long (% characters; at most 200)', length(n) USING ERRCODE = '22023';
    END IF;
    IF n ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'name must not contain control characters' USING ERRCODE = '22023';
    END IF;
    RETURN n;
END
$$;

CREATE FUNCTION account._profile(u account.users) RETURNS account.user_profile
    LANGUAGE sql IMMUTABLE
    RETURN ROW(u.user_id, u.email, u.name, u.status, u.created_at, u.updated_at)::account.user_profile;

-- ---------------------------------------------------------------- API: reads
CREATE FUNCTION account.user_exists(user_id uuid) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM account.users u
                    WHERE u.user_id = user_exists.user_id AND u.status = 'active');
END
$$;
COMMENT ON FUNCTION account.user_exists(uuid) IS
    'Whether a user exists and is not deleted (false for unknown, deleted or NULL).';

-- The check every service's API makes on a user id it is given.
CREATE FUNCTION account.require_user(user_id uuid) RETURNS void
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    IF NOT EXISTS (SELECT 1 FROM account.users u WHERE u.user_id = require_user.user_id AND u.status = 'active') THEN
        RAISE EXCEPTION 'user % not found', user_id USING ERRCODE = 'P0002';
    END IF;
END
$$;
COMMENT ON FUNCTION account.require_user(uuid) IS
    'Raises 22004 for a NULL user id and P0002 (user <id> not found) for an unknown or deleted user; the user check of the services'' APIs.';

CREATE FUNCTION account.get_user(user_id uuid) RETURNS account.user_profile
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u account.users;
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    SELECT * INTO u FROM account.users x WHERE x.user_id = get_user.user_id AND x.status = 'active';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % not found', user_id USING ERRCODE = 'P0002';
    END IF;
    RETURN account._profile(u);
END
$$;
COMMENT ON FUNCTION account.get_user(uuid) IS
    'A user''s profile; P0002 if the user is unknown or deleted.';

CREATE FUNCTION account.find_user_by_email(email text) RETURNS account.user_profile
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e text := account._check_email(email);
    u account.users;
BEGIN
    SELECT * INTO u FROM account.users x WHERE lower(x.email) = lower(e) AND x.status = 'active';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no user with email "%"', e USING ERRCODE = 'P0002';
    END IF;
    RETURN account._profile(u);
END
$$;
COMMENT ON FUNCTION account.find_user_by_email(text) IS
    'The active user with this email, compared case-insensitively; P0002 if none, 22023 if the email is malformed.';

-- ---------------------------------------------------------------- API: writes
CREATE FUNCTION account.create_user(email text, name text, idempotency_key text DEFAULT NULL)
RETURNS account.user_profile
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    e   text := account._check_email(email);
    n   text := account._check_name(name);
    req account.create_requests;
    u   account.users;
BEGIN
    IF idempotency_key IS NOT NULL THEN
        IF idempotency_key = '' OR length(idempotency_key) > 255 THEN
            RAISE EXCEPTION 'idempotency_key must be 1 to 255 characters' USING ERRCODE = '22023';
        END IF;
        -- Claim the key; a concurrent call with the same key waits here for
        -- the first to commit, then finds its row.
        INSERT INTO account.create_requests (idempotency_key, email, name, user_id)
        VALUES (idempotency_key, lower(e), n, isa.uuid_v7())
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING * INTO req;
        IF NOT FOUND THEN
            SELECT * INTO req FROM account.create_requests r WHERE r.idempotency_key = create_user.idempotency_key;
            IF req.email <> lower(e) OR req.name <> n THEN
                RAISE EXCEPTION 'idempotency key "%" was already used to create another user', idempotency_key
                    USING ERRCODE = '23505',
                    HINT = 'Use a new idempotency key for a new user.';
            END IF;
            SELECT * INTO u FROM account.users x WHERE x.user_id = req.user_id;
            RETURN account._profile(u);       -- the first call's user, as it is now
        END IF;
    END IF;

    INSERT INTO account.users AS x (user_id, email, name)
    VALUES (coalesce(req.user_id, isa.uuid_v7()), e, n)
    ON CONFLICT (lower(email)) WHERE status = 'active' DO NOTHING
    RETURNING * INTO u;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'email "%" is already taken', e USING ERRCODE = '23505';
    END IF;

    PERFORM isa.publish_event('user.created', 'account_service',
        jsonb_build_object('user_id', u.user_id, 'email', u.email, 'name', u.name,
                           'created_at', isa.iso_time(u.created_at)));
    RETURN account._profile(u);
END
$$;
COMMENT ON FUNCTION account.create_user(text, text, text) IS
    'Creates a user and publishes user.created. 23505 if the email is taken or the idempotency key was used with other arguments; the same key with the same arguments returns the first call''s user.';

CREATE FUNCTION account.update_user(user_id uuid, email text DEFAULT NULL, name text DEFAULT NULL)
RETURNS account.user_profile
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e       text := CASE WHEN email IS NOT NULL THEN account._check_email(email) END;
    n       text := CASE WHEN name IS NOT NULL THEN account._check_name(name) END;
    u       account.users;
    changed text[] := '{}';
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    SELECT * INTO u FROM account.users x
     WHERE x.user_id = update_user.user_id AND x.status = 'active' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % not found', user_id USING ERRCODE = 'P0002';
    END IF;

    IF e IS NOT NULL AND e <> u.email THEN
        IF lower(e) <> lower(u.email) AND EXISTS (
               SELECT 1 FROM account.users x
                WHERE lower(x.email) = lower(e) AND x.status = 'active' AND x.user_id <> u.user_id) THEN
            RAISE EXCEPTION 'email "%" is already taken', e USING ERRCODE = '23505';
        END IF;
        changed := changed || 'email'::text;
        u.email := e;
    END IF;
    IF n IS NOT NULL AND n <> u.name THEN
        changed := changed || 'name'::text;
        u.name := n;
    END IF;
    IF cardinality(changed) = 0 THEN
        RETURN account._profile(u);
    END IF;

    BEGIN
        UPDATE account.users x SET email = u.email, name = u.name, updated_at = now()
         WHERE x.user_id = u.user_id
        RETURNING * INTO u;
    EXCEPTION WHEN unique_violation THEN      -- another transaction took the email meanwhile
        RAISE EXCEPTION 'email "%" is already taken', e USING ERRCODE = '23505';
    END;
    PERFORM isa.publish_event('user.updated', 'account_service',
        jsonb_build_object('user_id', u.user_id, 'email', u.email, 'name', u.name,
                           'changed', to_jsonb(changed)));
    RETURN account._profile(u);
END
$$;
COMMENT ON FUNCTION account.update_user(uuid, text, text) IS
    'Changes a user''s email and/or name (NULL: unchanged); publishes user.updated with the changed fields if anything changed. P0002 unknown or deleted user, 23505 email taken.';

CREATE FUNCTION account.delete_user(user_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u account.users;
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    SELECT * INTO u FROM account.users x WHERE x.user_id = delete_user.user_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % not found', user_id USING ERRCODE = 'P0002';
    END IF;
    IF u.status = 'deleted' THEN
        RETURN;                                  -- a retried delete: done already, no second event
    END IF;
    UPDATE account.users x SET status = 'deleted', deleted_at = now(), updated_at = now()
     WHERE x.user_id = u.user_id
    RETURNING * INTO u;
    PERFORM isa.publish_event('user.deleted', 'account_service',
        jsonb_build_object('user_id', u.user_id, 'deleted_at', isa.iso_time(u.deleted_at)));
END
$$;
COMMENT ON FUNCTION account.delete_user(uuid) IS
    'Soft-deletes a user and publishes user.deleted; the email becomes free. P0002 if unknown; deleting a deleted user again does nothing.';

-- ---------------------------------------------------------------- notification preferences
-- A user's preferences, which the notification service reads (never copies)
-- at each notification through get_notification_preferences:
--   {"channels":    {"email": bool, "webhook": bool, "mqtt": bool, "inapp": bool},  a channel off is never used
--    "categories":  {"<category>": {"<channel>": bool}},  per category, over its default channels
--    "quiet_hours": {"start": "HH:MM", "end": "HH:MM", "time_zone": "<IANA name>"} or null,
--    "locale":      "en", "de", …}
-- The categories are the notification service's (notification.list_categories);
-- account checks their form only.  0.1.0's {email, push, mqtt} are still
-- taken by set_notification_preferences as channels (push: webhook, which
-- stands in for push providers).
CREATE FUNCTION account._check_notification_channel(what text, v jsonb, legacy boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF split_part(what, '.', -1) NOT IN ('email', 'webhook', 'mqtt', 'inapp') AND NOT legacy THEN
        RAISE EXCEPTION 'unknown notification channel "%"', left(what, 100) USING ERRCODE = '22023',
            HINT = 'Known channels: email, webhook, mqtt, inapp.';
    END IF;
    IF jsonb_typeof(v) IS DISTINCT FROM 'boolean' THEN
        RAISE EXCEPTION 'notification channel "%" must be true or false, not %', what, v USING ERRCODE = '22023';
    END IF;
END
$$;
COMMENT ON FUNCTION account._check_notification_channel(text, jsonb, boolean) IS
    'Checks one channel switch of the notification preferences (what: its path, ending in email, webhook, mqtt or inapp, or one of 0.1.0''s top-level email, push, mqtt when legacy; v a JSON boolean); 22023 otherwise.';

-- Quiet hours as set_notification_preferences takes them: null, or
-- {"start": "HH:MM", "end": "HH:MM", "time_zone": an IANA name}; 22023 otherwise.
CREATE FUNCTION account._check_quiet_hours(v jsonb) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hhmm text := '^([01][0-9]|2[0-3]):[0-5][0-9]$';
BEGIN
    IF v = 'null' THEN
        RETURN;
    END IF;
    IF jsonb_typeof(v) <> 'object'
       OR (SELECT array_agg(x ORDER BY x) FROM jsonb_object_keys(CASE WHEN jsonb_typeof(v) = 'object' THEN v ELSE '{}' END) x)
          IS DISTINCT FROM ARRAY['end', 'start', 'time_zone']
       OR coalesce(v ->> 'start', '') !~ hhmm OR coalesce(v ->> 'end', '') !~ hhmm
       OR jsonb_typeof(v -> 'time_zone') <> 'string' THEN
        RAISE EXCEPTION 'quiet_hours must be null or {"start": "HH:MM", "end": "HH:MM", "time_zone": an IANA time zone}'
            USING ERRCODE = '22023', HINT = 'For example {"start": "22:00", "end": "07:00", "time_zone": "Europe/Berlin"}.';
    END IF;
    IF v ->> 'start' = v ->> 'end' THEN
        RAISE EXCEPTION 'quiet hours must not start and end at the same time' USING ERRCODE = '22023';
    END IF;
    IF v ->> 'time_zone' !~ '^[A-Za-z][A-Za-z0-9_+/-]{0,63}$'
       OR NOT EXISTS (SELECT 1 FROM pg_timezone_names z WHERE z.name = v ->> 'time_zone') THEN
        RAISE EXCEPTION 'unknown time zone "%"', left(v ->> 'time_zone', 100) USING ERRCODE = '22023',
            HINT = 'An IANA time zone name, e.g. Europe/Berlin or America/New_York.';
    END IF;
END
$$;
COMMENT ON FUNCTION account._check_quiet_hours(jsonb) IS
    'Checks quiet hours: null, or {"start": "HH:MM", "end": "HH:MM" (another time), "time_zone": an IANA name PostgreSQL knows}; 22023 otherwise.';

-- prefs merged into old, checked: 22023 for anything malformed.
CREATE FUNCTION account._merge_notification_preferences(old jsonb, prefs jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k      text;
    v      jsonb;
    cat    text;
    chans  jsonb;
    ch     text;
    sw     jsonb;
    merged jsonb := old;
    legacy jsonb := '{"email": "email", "push": "webhook", "mqtt": "mqtt"}';
BEGIN
    IF jsonb_typeof(prefs) <> 'object' THEN
        RAISE EXCEPTION 'notification preferences must be a JSON object, not %', jsonb_typeof(prefs)
            USING ERRCODE = '22023',
                  HINT = 'For example {"channels": {"mqtt": false}, "categories": {"wallet": {"email": false}}, "quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Europe/Berlin"}, "locale": "de"}.';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(prefs) LOOP
        IF legacy ? k THEN
            PERFORM account._check_notification_channel(k, v, true);
            merged := jsonb_set(merged, ARRAY['channels', legacy ->> k], v);
        ELSIF k = 'channels' THEN
            IF jsonb_typeof(v) <> 'object' THEN
                RAISE EXCEPTION 'channels must be a JSON object of true or false per channel' USING ERRCODE = '22023';
            END IF;
            FOR ch, sw IN SELECT * FROM jsonb_each(v) LOOP
                PERFORM account._check_notification_channel(ch, sw);
                merged := jsonb_set(merged, ARRAY['channels', ch], sw);
            END LOOP;
        ELSIF k = 'categories' THEN
            IF jsonb_typeof(v) <> 'object' THEN
                RAISE EXCEPTION 'categories must be a JSON object: {"<category>": {"<channel>": true, false or null}}'
                    USING ERRCODE = '22023';
            END IF;
            FOR cat, chans IN SELECT * FROM jsonb_each(v) LOOP
                IF cat !~ '^[a-z][a-z0-9_]{0,31}$' THEN
                    RAISE EXCEPTION 'invalid notification category "%"', left(cat, 100) USING ERRCODE = '22023',
                        HINT = 'A category is 1 to 32 characters of a-z 0-9 _ (notification.list_categories).';
                END IF;
                IF jsonb_typeof(chans) <> 'object' THEN
                    RAISE EXCEPTION 'category "%" must be a JSON object of true, false or null per channel', cat
                        USING ERRCODE = '22023';
                END IF;
                merged := jsonb_set(merged, ARRAY['categories', cat], coalesce(merged #> ARRAY['categories', cat], '{}'));
                FOR ch, sw IN SELECT * FROM jsonb_each(chans) LOOP
                    PERFORM account._check_notification_channel(cat || '.' || ch, CASE WHEN sw = 'null' THEN 'true' ELSE sw END);
                    merged := CASE WHEN sw = 'null'      -- back to the category's default
                                   THEN jsonb_set(merged, ARRAY['categories', cat], (merged #> ARRAY['categories', cat]) - ch)
                                   ELSE jsonb_set(merged, ARRAY['categories', cat, ch], sw) END;
                END LOOP;
                IF merged #> ARRAY['categories', cat] = '{}' THEN
                    merged := jsonb_set(merged, '{categories}', (merged -> 'categories') - cat);
                END IF;
            END LOOP;
            IF (SELECT count(*) FROM jsonb_object_keys(merged -> 'categories')) > 32 THEN
                RAISE EXCEPTION 'at most 32 categories have preferences of their own' USING ERRCODE = '22023';
            END IF;
        ELSIF k = 'quiet_hours' THEN
            PERFORM account._check_quiet_hours(v);
            merged := jsonb_set(merged, '{quiet_hours}', v);
        ELSIF k = 'locale' THEN
            IF jsonb_typeof(v) IS DISTINCT FROM 'string' OR v #>> '{}' !~ '^[a-z]{2,3}(-[A-Z]{2})?$' THEN
                RAISE EXCEPTION 'locale must be a language tag like "en", "de" or "pt-BR", not %', left(v::text, 100)
                    USING ERRCODE = '22023';
            END IF;
            merged := jsonb_set(merged, '{locale}', v);
        ELSE
            RAISE EXCEPTION 'unknown notification preference "%"', left(k, 100) USING ERRCODE = '22023',
                HINT = 'Known: channels, categories, quiet_hours, locale (and 0.1.0''s email, push, mqtt).';
        END IF;
    END LOOP;
    RETURN merged;
END
$$;
COMMENT ON FUNCTION account._merge_notification_preferences(jsonb, jsonb) IS
    'Notification preferences prefs merged into old (channels and category channels key by key, a category channel null back to its default; quiet_hours and locale replaced), checked; 22023 for an unknown key, channel or time zone, a malformed category, time or locale.';

CREATE FUNCTION account.get_notification_preferences(user_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    prefs jsonb;
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    SELECT u.notification_preferences INTO prefs FROM account.users u
     WHERE u.user_id = get_notification_preferences.user_id AND u.status = 'active';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % not found', user_id USING ERRCODE = 'P0002';
    END IF;
    RETURN prefs;
END
$$;
COMMENT ON FUNCTION account.get_notification_preferences(uuid) IS
    'A user''s notification preferences: {"channels": {"email", "webhook", "mqtt", "inapp": bool}, "categories": {"<category>": {"<channel>": bool}}, "quiet_hours": {"start", "end", "time_zone"} or null, "locale"}. P0002 unknown or deleted user.';

CREATE FUNCTION account.set_notification_preferences(user_id uuid, prefs jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u      account.users;
    merged jsonb;
BEGIN
    PERFORM isa.not_null('user_id, prefs', user_id, prefs);
    SELECT * INTO u FROM account.users x
     WHERE x.user_id = set_notification_preferences.user_id AND x.status = 'active' FOR UPDATE;
    IF NOT FOUND THEN
        -- checked first: malformed preferences of an unknown user are 22023
        PERFORM account._merge_notification_preferences('{"channels": {}, "categories": {}}', prefs);
        RAISE EXCEPTION 'user % not found', user_id USING ERRCODE = 'P0002';
    END IF;
    merged := account._merge_notification_preferences(u.notification_preferences, prefs);
    IF merged = u.notification_preferences THEN
        RETURN merged;
    END IF;
    UPDATE account.users x SET notification_preferences = merged, updated_at = now()
     WHERE x.user_id = u.user_id;
    PERFORM isa.publish_event('user.updated', 'account_service',
        jsonb_build_object('user_id', u.user_id, 'email', u.email, 'name', u.name,
                           'changed', jsonb_build_array('notification_preferences')));
    RETURN merged;
END
$$;
COMMENT ON FUNCTION account.set_notification_preferences(uuid, jsonb) IS
    'Merges prefs into a user''s notification preferences and returns the result: channels and a category''s channels key by key (null: back to the category''s default), quiet_hours (null: none) and locale replaced; 0.1.0''s top-level email, push (the webhook channel) and mqtt are taken as channels. Publishes user.updated if anything changed. 22023 unknown key, channel or time zone, non-boolean switch, malformed category, quiet hours or locale; P0002 unknown or deleted user.';

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA account FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    account.user_exists(uuid),
    account.require_user(uuid),
    account.get_user(uuid),
    account.find_user_by_email(text),
    account.create_user(text, text, text),
    account.update_user(uuid, text, text),
    account.delete_user(uuid),
    account.get_notification_preferences(uuid),
    account.set_notification_preferences(uuid, jsonb)
TO isa_app_account;

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- A user's own account needs no permission (self_param); anyone else's needs
-- account:read / account:write / account:delete on it.  Sign-up is
-- auth.sign_up (POST /v1/auth/signup): an account is made with its password.
SELECT isa.http_route('GET', '/v1/me', 'account.get_user(uuid)', 'user',
    'The caller''s profile.', subject_param => 'user_id');
SELECT isa.http_route('GET', '/v1/accounts/{user_id}', 'account.get_user(uuid)', 'user',
    'A user''s profile.',
    permission => 'account:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/accounts/{user_id}/exists', 'account.user_exists(uuid)', 'user',
    'Whether a user exists and is not deleted.',
    permission => 'account:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/accounts/by-email', 'account.find_user_by_email(text)', 'user',
    'The active user with an email address, compared case-insensitively.',
    permission => 'account:read');
SELECT isa.http_route('PATCH', '/v1/accounts/{user_id}', 'account.update_user(uuid, text, text)', 'user',
    'Changes a user''s email and/or name.',
    permission => 'account:write', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('DELETE', '/v1/accounts/{user_id}', 'account.delete_user(uuid)', 'user',
    'Deletes a user (soft delete); the email becomes free.',
    permission => 'account:delete', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/accounts/{user_id}/notification-preferences',
    'account.get_notification_preferences(uuid)', 'user',
    'A user''s notification preferences: channels, categories, quiet_hours, locale (docs/services/account.md).',
    permission => 'account:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('PATCH', '/v1/accounts/{user_id}/notification-preferences',
    'account.set_notification_preferences(uuid, jsonb)', 'user',
    'Merges prefs (channels, categories, quiet_hours, locale) into a user''s notification preferences.',
    permission => 'account:write', resource_param => 'user_id', self_param => 'user_id');
