-- notification.sql — the notification service (schema notification, source
-- notification_service): what the platform's events tell people, by email,
-- webhook, MQTT (the user's devices) and in-app.  A handler of an event makes
-- one notification per recipient (rendered from the template of its kind in
-- the recipient's locale) and one delivery per channel, by the category's
-- channels and the user's preferences (account's: read at each notification,
-- never copied), deferred through the user's quiet hours unless the category
-- is critical.  In-app is delivered by being stored, MQTT by queuing a device
-- command (device.notify_user_devices); email and webhook deliveries are
-- claimed by the senders (background workers, extension/notification/, woken
-- at commit by notification._wake), which record each attempt's outcome:
-- retries with exponential backoff and full jitter, then failure
-- (notification.failed) and the category's next channel.  Nothing here does
-- network I/O.  It calls account, organization and device.
-- docs/services/notification.md documents the API, the channels, the
-- categories, the templates, the retries and the settings.

-- ---------------------------------------------------------------- tables
CREATE TABLE notification.notifications (
    notification_id uuid PRIMARY KEY,                    -- UUIDv7
    event_id        uuid NOT NULL,                       -- the event it tells of
    recipient       text NOT NULL,                       -- the user's id, 'org:<id>' or 'email:<address>'
    user_id         uuid,                                -- account's user, when the recipient is one
    org_id          uuid,                                -- the organization it concerns, if any
    email           text,                                -- where its email goes: the user's address then, or the invited one
    kind            text NOT NULL,
    category        text NOT NULL,
    locale          text NOT NULL,
    title           text NOT NULL,
    body            text NOT NULL,
    data            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),  -- the template's variables
    created_at      timestamptz NOT NULL DEFAULT now(),
    read_at         timestamptz,                         -- in-app: when its user marked it read
    CONSTRAINT notifications_once UNIQUE (event_id, recipient)
);
CREATE INDEX notifications_user ON notification.notifications (user_id, notification_id) WHERE user_id IS NOT NULL;
CREATE INDEX notifications_unread ON notification.notifications (user_id) WHERE read_at IS NULL AND user_id IS NOT NULL;
COMMENT ON TABLE notification.notifications IS
    'Notifications: one per event and recipient (a user, an organization''s webhook, or an invited address), rendered in the recipient''s locale; read_at for the in-app channel.';

CREATE TABLE notification.deliveries (
    delivery_id     uuid PRIMARY KEY,                    -- UUIDv7; oldest first
    notification_id uuid NOT NULL REFERENCES notification.notifications,
    user_id         uuid,
    channel         text NOT NULL CHECK (channel IN ('email', 'webhook', 'mqtt', 'inapp')),
    state           text NOT NULL CHECK (state IN ('pending', 'deferred', 'sending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz,                         -- pending: due then; deferred: when the quiet hours end
    locked_until    timestamptz,                         -- sending: a sender's lease
    last_error      text,
    idempotency_key text NOT NULL,                       -- '<event id>:<recipient>:<channel>'
    payload         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    fallback_of     uuid,                                -- the failed delivery whose fallback this is
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    failed_at       timestamptz,
    CONSTRAINT deliveries_idempotency_key UNIQUE (idempotency_key),
    CONSTRAINT deliveries_one_per_channel UNIQUE (notification_id, channel),
    CHECK ((state = 'sent') = (sent_at IS NOT NULL)),
    CHECK ((state = 'failed') = (failed_at IS NOT NULL)),
    CHECK (state <> 'sending' OR locked_until IS NOT NULL),
    CHECK (state NOT IN ('pending', 'deferred') OR next_attempt_at IS NOT NULL)
);
-- The senders' claims read these in their order (claim_deliveries), next_due their first entry.
CREATE INDEX deliveries_due ON notification.deliveries (channel, next_attempt_at, delivery_id) WHERE state IN ('pending', 'deferred');
CREATE INDEX deliveries_leased ON notification.deliveries (channel, locked_until, delivery_id) WHERE state = 'sending';
COMMENT ON TABLE notification.deliveries IS
    'One delivery per notification and channel (email, webhook, mqtt, inapp): pending → sending (a sender''s lease) → sent, or pending again with backoff, or failed; deferred through quiet hours.';

CREATE TABLE notification.webhooks (
    webhook_id  uuid PRIMARY KEY,
    user_id     uuid,                                    -- a user's own webhook, or
    org_id      uuid,                                    -- an organization's
    url         text NOT NULL,
    secret      text NOT NULL,                           -- whsec_…: the HMAC-SHA256 key of its signatures
    created_by  uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(user_id, org_id) = 1)
);
CREATE UNIQUE INDEX webhooks_user ON notification.webhooks (user_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX webhooks_org ON notification.webhooks (org_id) WHERE org_id IS NOT NULL;
COMMENT ON TABLE notification.webhooks IS
    'Webhooks: one URL per user or organization, with the secret its deliveries are signed with (shown once, at registration; never to isa_admin).';

-- ---------------------------------------------------------------- types
CREATE TYPE notification.notification_info AS (
    notification_id uuid,
    kind            text,
    category        text,
    title           text,
    body            text,
    data            jsonb,
    created_at      timestamptz,
    read_at         timestamptz
);
COMMENT ON TYPE notification.notification_info IS 'An in-app notification as its user reads it.';

CREATE TYPE notification.webhook_info AS (
    webhook_id uuid,
    user_id    uuid,
    org_id     uuid,
    url        text,
    secret     text,             -- only in register_webhook's answer; NULL everywhere else
    created_by uuid,
    created_at timestamptz,
    updated_at timestamptz
);
COMMENT ON TYPE notification.webhook_info IS
    'A webhook; secret is set only in the answer of register_webhook.';

CREATE TYPE notification.category_info AS (
    category    text,
    critical    boolean,         -- never deferred by quiet hours; in-app cannot be switched off
    channels    text[],          -- used unless the user switches them off
    fallback    text[],          -- after a channel fails, the next of these is tried
    description text
);
COMMENT ON TYPE notification.category_info IS 'A category of notifications and its defaults.';

-- ---------------------------------------------------------------- C (extension/notification/)
CREATE FUNCTION notification._settings(OUT max_attempts integer, OUT retry_base integer, OUT retry_max integer,
                                       OUT mqtt_ttl integer, OUT webhook_private boolean)
    AS 'MODULE_PATHNAME', 'isa_notification_settings' LANGUAGE C STABLE;
COMMENT ON FUNCTION notification._settings() IS
    'isa.notification_max_attempts, isa.notification_retry_base and isa.notification_retry_max (seconds), isa.notification_mqtt_ttl (seconds) and isa.notification_webhook_private.';
-- The senders' wake-up: at the commit of the transaction that called it, the
-- sender of that channel (email or webhook) looks for due deliveries.
CREATE FUNCTION notification._wake(channel text) RETURNS void
    AS 'MODULE_PATHNAME', 'isa_notification_wake' LANGUAGE C;
COMMENT ON FUNCTION notification._wake(text) IS
    'Wakes the sender of a channel (email, webhook) at the commit of the calling transaction; called where a delivery of that channel is created or rescheduled.';

-- ---------------------------------------------------------------- categories, kinds, templates
-- Code, not rows: an upgrade replays them like any function, and pg_dump has
-- no rows of them to restore over a fresh install's.
CREATE FUNCTION notification.list_categories() RETURNS SETOF notification.category_info
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c::notification.category_info FROM (VALUES
        ('security', true,  '{inapp,email}'::text[],       '{email,webhook,inapp}'::text[],
         'Sign-ins and other security matters: critical, never deferred.'),
        ('payment',  true,  '{inapp,email}',               '{email,webhook,inapp}',
         'Payments and receipts: critical, never deferred.'),
        ('wallet',   false, '{inapp,mqtt,email}',          '{email,webhook,mqtt,inapp}',
         'Wallet alerts: a low balance, a refused deduction.'),
        ('family',   false, '{inapp,email}',               '{email,webhook,inapp}',
         'Organizations and families: invitations.'),
        ('devices',  false, '{inapp,email}',               '{email,webhook,mqtt,inapp}',
         'Devices of the user and their family: a device went offline, a firmware update offered or failed.'),
        ('tasks',    false, '{inapp,webhook}',             '{webhook,email,mqtt,inapp}',
         'Tasks assigned by outside systems (external.task.assigned).')
    ) AS c (category, critical, channels, fallback, description)
$$;
COMMENT ON FUNCTION notification.list_categories() IS
    'The categories of notifications: whether critical (never deferred by quiet hours, in-app always on), the channels used unless the user switches them off, and the fallback order after a channel fails.';

CREATE FUNCTION notification._kinds() RETURNS TABLE (kind text, category text, description text)
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('payment.receipt',            'payment',  'payment_service.payment.completed: a receipt'),
           ('wallet.balance_low',         'wallet',   'wallet_service.wallet.balance.low'),
           ('wallet.tokens_insufficient', 'wallet',   'wallet_service.wallet.tokens.insufficient'),
           ('organization.invitation',    'family',   'organization_service.organization.member_invited: to the invited address'),
           ('device.offline',             'devices',  'device_service.device.offline: to the device''s owner and its organization''s members'),
           ('ota.update_available',       'devices',  'ota_service.ota.update_available: to the device''s owner'),
           ('ota.update_failed',          'devices',  'ota_service.ota.update_failed: to the device''s owner'),
           ('auth.welcome_back',          'security', 'auth_service.user.logged_in'),
           ('task.assigned',              'tasks',    'external.task.assigned')
$$;
COMMENT ON FUNCTION notification._kinds() IS 'The kinds of notifications, their category, and the event each tells of.';

-- {{name}} in a title or body is the variable name of the notification's
-- data (the event's fields, and the user's name as {{name}}).
CREATE FUNCTION notification._templates() RETURNS TABLE (kind text, locale text, title text, body text)
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    VALUES
    ('payment.receipt', 'en', 'Receipt: {{amount}} {{currency}}',
     E'Hello {{name}},\n\nwe received your payment of {{amount}} {{currency}} ({{tokens}} tokens).\n\nPayment {{payment_id}}'),
    ('payment.receipt', 'de', 'Quittung: {{amount}} {{currency}}',
     E'Hallo {{name}},\n\nwir haben Ihre Zahlung über {{amount}} {{currency}} erhalten ({{tokens}} Tokens).\n\nZahlung {{payment_id}}'),
    ('wallet.balance_low', 'en', 'Your balance is low: {{balance}} tokens',
     E'Hello {{name}},\n\nyour wallet holds {{balance}} tokens, less than your threshold of {{threshold}}. Top it up to keep going.'),
    ('wallet.balance_low', 'de', 'Ihr Guthaben ist niedrig: {{balance}} Tokens',
     E'Hallo {{name}},\n\nIhr Wallet enthält nur noch {{balance}} Tokens, weniger als Ihre Schwelle von {{threshold}}. Laden Sie es auf, um weiterzumachen.'),
    ('wallet.tokens_insufficient', 'en', 'Not enough tokens',
     E'Hello {{name}},\n\n{{requested}} tokens were needed, but your wallet holds {{balance}}. Nothing was deducted.'),
    ('wallet.tokens_insufficient', 'de', 'Nicht genügend Tokens',
     E'Hallo {{name}},\n\n{{requested}} Tokens wären nötig gewesen, Ihr Wallet enthält aber nur {{balance}}. Es wurde nichts abgebucht.'),
    ('organization.invitation', 'en', '{{inviter_name}} invited you to {{org_name}}',
     E'Hello,\n\n{{inviter_name}} invited you to join "{{org_name}}" as {{role}}. The invitation is valid until {{expires_at}}.\n\nAccept it in the app: /invitations/{{invitation_id}}'),
    ('organization.invitation', 'de', '{{inviter_name}} hat Sie zu {{org_name}} eingeladen',
     E'Hallo,\n\n{{inviter_name}} hat Sie eingeladen, „{{org_name}}“ als {{role}} beizutreten. Die Einladung gilt bis {{expires_at}}.\n\nNehmen Sie sie in der App an: /invitations/{{invitation_id}}'),
    ('device.offline', 'en', '{{device_name}} is offline',
     E'Hello {{name}},\n\n{{device_name}} has not been heard from since {{last_seen_at}}.'),
    ('device.offline', 'de', '{{device_name}} ist offline',
     E'Hallo {{name}},\n\n{{device_name}} hat sich seit {{last_seen_at}} nicht mehr gemeldet.'),
    ('ota.update_available', 'en', 'Update for {{device_name}}: {{version}}',
     E'Hello {{name}},\n\nfirmware {{version}} is available for {{device_name}} and is being offered to it.'),
    ('ota.update_available', 'de', 'Update für {{device_name}}: {{version}}',
     E'Hallo {{name}},\n\nFirmware {{version}} ist für {{device_name}} verfügbar und wird dem Gerät angeboten.'),
    ('ota.update_failed', 'en', 'Update of {{device_name}} failed',
     E'Hello {{name}},\n\nthe update of {{device_name}} to {{version}} failed: {{reason}}.'),
    ('ota.update_failed', 'de', 'Update von {{device_name}} fehlgeschlagen',
     E'Hallo {{name}},\n\ndas Update von {{device_name}} auf {{version}} ist fehlgeschlagen: {{reason}}.'),
    ('auth.welcome_back', 'en', 'Welcome back, {{name}}',
     E'Hello {{name}},\n\nyou signed in at {{time}}. If this was not you, change your password and sign out everywhere.'),
    ('auth.welcome_back', 'de', 'Willkommen zurück, {{name}}',
     E'Hallo {{name}},\n\nSie haben sich um {{time}} angemeldet. Wenn Sie das nicht waren, ändern Sie Ihr Passwort und melden Sie sich überall ab.'),
    ('task.assigned', 'en', 'New task: {{title}}',
     E'Hello {{name}},\n\nyou were assigned the task "{{title}}" ({{task_id}}).'),
    ('task.assigned', 'de', 'Neue Aufgabe: {{title}}',
     E'Hallo {{name}},\n\nIhnen wurde die Aufgabe „{{title}}“ ({{task_id}}) zugewiesen.')
$$;
COMMENT ON FUNCTION notification._templates() IS
    'The templates: a title (the email''s subject) and a body per kind and locale (en and de), with {{variables}} from the notification''s data.';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('notification.sent', 'notification_service', '1.0.0',
    'A delivery reached its channel: the email or webhook was accepted by its server, the MQTT commands were queued for the user''s devices, the in-app notification was stored.',
    '{"notification_id": {"type": "uuid",    "required": true,  "description": "The notification."},
      "delivery_id":     {"type": "uuid",    "required": true,  "description": "The delivery (Isa-Delivery of a webhook, the Message-ID of an email)."},
      "user_id":         {"type": "uuid",    "required": false, "description": "Its user; null for an organization''s webhook or an invited address."},
      "channel":         {"type": "string",  "required": true,  "description": "email, webhook, mqtt or inapp."},
      "kind":            {"type": "string",  "required": true,  "description": "What it tells of, e.g. wallet.balance_low."},
      "category":        {"type": "string",  "required": true,  "description": "Its category, e.g. wallet."},
      "attempts":        {"type": "integer", "required": true,  "description": "Attempts it took."}}');
SELECT isa.register_event_type('notification.failed', 'notification_service', '1.0.0',
    'A delivery failed for good (a permanent error, or isa.notification_max_attempts transient ones); the next channel of its category''s fallback order is tried, if any is left.',
    '{"notification_id":  {"type": "uuid",    "required": true,  "description": "The notification."},
      "delivery_id":      {"type": "uuid",    "required": true,  "description": "The failed delivery."},
      "user_id":          {"type": "uuid",    "required": false, "description": "Its user; null for an organization''s webhook or an invited address."},
      "channel":          {"type": "string",  "required": true,  "description": "email, webhook or mqtt."},
      "kind":             {"type": "string",  "required": true,  "description": "What it tells of."},
      "category":         {"type": "string",  "required": true,  "description": "Its category."},
      "attempts":         {"type": "integer", "required": true,  "description": "Attempts made."},
      "error":            {"type": "string",  "required": true,  "description": "The last error."},
      "fallback_channel": {"type": "string",  "required": false, "description": "The channel tried next; null when none is left."}}');
-- The seed names no producer of task.assigned: an outside system publishes it on external.task.assigned.
SELECT isa.register_event_type('task.assigned', 'external', '1.0.0',
    'An outside system assigned a task to a user (the seed''s task.assigned); the notification service tells the user.',
    '{"task_id":     {"type": "string",    "required": true,  "description": "The producer''s id of the task, 1 to 200 characters."},
      "user_id":     {"type": "uuid",      "required": true,  "description": "The user the task is assigned to."},
      "title":       {"type": "string",    "required": true,  "description": "The task''s title, 1 to 200 characters."},
      "assigned_by": {"type": "string",    "required": false, "description": "Who assigned it, as the producer names them."},
      "due_at":      {"type": "timestamp", "required": false, "description": "When it is due."}}');

-- ---------------------------------------------------------------- internal helpers
-- A template rendered: each {{variable}} replaced by its value in vars (a
-- value's control characters made spaces, '' for one vars lacks), in one
-- pass, so that a value is never read as a template.
CREATE FUNCTION notification._render(tpl text, vars jsonb) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rest text := tpl;
    out  text := '';
    m    text[];
    p    integer;
BEGIN
    LOOP
        m := regexp_match(rest, '(\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\})');
        EXIT WHEN m IS NULL;
        p := strpos(rest, m[1]);
        out := out || left(rest, p - 1)
                   || regexp_replace(coalesce(CASE jsonb_typeof(vars -> m[2]) WHEN 'string' THEN vars ->> m[2]
                                                                              WHEN 'null' THEN '' ELSE vars ->> m[2] END, ''),
                                     '[[:cntrl:]]+', ' ', 'g');
        rest := substr(rest, p + length(m[1]));
    END LOOP;
    RETURN out || rest;
END
$$;
COMMENT ON FUNCTION notification._render(text, jsonb) IS
    'A template with each {{variable}} replaced by its value in vars (control characters made spaces; missing: empty), in one pass.';

-- The template of a kind in a locale: the locale's, its language's (pt for
-- pt-BR), or English.
CREATE FUNCTION notification._template(p_kind text, p_locale text, OUT title text, OUT body text, OUT locale text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.title, t.body, t.locale FROM notification._templates() t
     WHERE t.kind = p_kind AND t.locale IN (p_locale, split_part(p_locale, '-', 1), 'en')
     ORDER BY t.locale = p_locale DESC, t.locale = split_part(p_locale, '-', 1) DESC
     LIMIT 1
$$;
COMMENT ON FUNCTION notification._template(text, text) IS
    'The title and body template of a kind in a locale, else its language, else en; with the locale found.';

-- A time as the user reads it: in the time zone of their quiet hours, or UTC.
CREATE FUNCTION notification._local_time(t timestamptz, prefs jsonb) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT to_char(t AT TIME ZONE s.z, 'YYYY-MM-DD HH24:MI') || ' ' || s.z
      FROM (SELECT coalesce(prefs #>> '{quiet_hours,time_zone}', 'UTC') AS z) s
$$;
COMMENT ON FUNCTION notification._local_time(timestamptz, jsonb) IS
    'A time as text in the user''s time zone (that of their quiet hours, else UTC), e.g. 2025-01-31 22:15 Europe/Berlin.';

-- When the quiet hours that hold at p_at end, or NULL outside them (or with
-- none set).  Start and end are local times in the user's time zone; start
-- after end spans midnight.
CREATE FUNCTION notification._quiet_until(prefs jsonb, p_at timestamptz) RETURNS timestamptz
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q     jsonb := prefs -> 'quiet_hours';
    tz    text;
    local timestamp;
    t     time;
    s     time;
    e     time;
BEGIN
    IF q IS NULL OR jsonb_typeof(q) <> 'object' THEN
        RETURN NULL;
    END IF;
    tz := q ->> 'time_zone';
    s := (q ->> 'start')::time;
    e := (q ->> 'end')::time;
    local := p_at AT TIME ZONE tz;
    t := local::time;
    IF s < e AND t >= s AND t < e THEN
        RETURN (local::date + e) AT TIME ZONE tz;
    ELSIF s > e AND t >= s THEN
        RETURN (local::date + 1 + e) AT TIME ZONE tz;
    ELSIF s > e AND t < e THEN
        RETURN (local::date + e) AT TIME ZONE tz;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION notification._quiet_until(jsonb, timestamptz) IS
    'When the user''s quiet hours holding at p_at end (local start and end in their time zone; start after end spans midnight), or NULL outside them or with none.';

-- The backoff before the attempt after the attempts-th: the base doubled
-- per attempt, at most the cap, times u in [0, 1) (full jitter).
CREATE FUNCTION notification._backoff(attempts integer, u double precision DEFAULT random()) RETURNS interval
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT make_interval(secs => u * least(s.retry_base * power(2, least(greatest(attempts - 1, 0), 30)), s.retry_max))
      FROM notification._settings() s
$$;
COMMENT ON FUNCTION notification._backoff(integer, double precision) IS
    'The wait before the next attempt after the attempts-th: u (default random(), in [0, 1)) times min(isa.notification_retry_base × 2^(attempts − 1), isa.notification_retry_max): exponential backoff with full jitter.';

CREATE FUNCTION notification._category(p_category text) RETURNS notification.category_info
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c FROM notification.list_categories() c WHERE c.category = p_category
$$;
COMMENT ON FUNCTION notification._category(text) IS
    'A category by name (NULL if none).';

-- The user's choice for a channel of a category: 'on' (the category's
-- channel, or switched on for it), 'off' (switched off: never used, not even
-- as a fallback; in-app of a critical category cannot be), or 'spare' (not
-- among the category's channels: a fallback only).
CREATE FUNCTION notification._choice(c notification.category_info, prefs jsonb, p_channel text) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN c.critical AND p_channel = 'inapp' THEN 'on'
        WHEN prefs #> ARRAY['channels', p_channel] = 'false'
             OR prefs #> ARRAY['categories', c.category, p_channel] = 'false' THEN 'off'
        WHEN prefs #> ARRAY['categories', c.category, p_channel] = 'true' OR p_channel = ANY (c.channels) THEN 'on'
        ELSE 'spare' END
$$;
COMMENT ON FUNCTION notification._choice(notification.category_info, jsonb, text) IS
    'on, off (switched off by the user: never used) or spare (a fallback only) for a channel of a category, by the user''s preferences (channels, categories) and the category''s defaults; in-app of a critical category is always on.';

-- Whether a channel can reach a notification's recipient now.
CREATE FUNCTION notification._reachable(n notification.notifications, p_channel text) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE p_channel
        WHEN 'email'   THEN n.email IS NOT NULL
        WHEN 'inapp'   THEN n.user_id IS NOT NULL
        WHEN 'mqtt'    THEN n.user_id IS NOT NULL AND EXISTS (SELECT FROM device.user_devices(n.user_id))
        WHEN 'webhook' THEN EXISTS (SELECT FROM notification.webhooks w
                                     WHERE (n.user_id IS NOT NULL AND w.user_id = n.user_id)
                                        OR (n.user_id IS NULL AND w.org_id = n.org_id))
        ELSE false END
$$;
COMMENT ON FUNCTION notification._reachable(notification.notifications, text) IS
    'Whether a channel reaches a notification''s recipient: an email address, a user for in-app, a device they see for MQTT, a webhook of the user (or, for an organization''s notification, of the organization).';

-- What a delivery carries: for email the message, for webhook the webhook
-- and the body to POST (url and secret are added when a sender claims it),
-- for MQTT the device command's args.
CREATE FUNCTION notification._payload(n notification.notifications, p_channel text) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w notification.webhooks;
BEGIN
    CASE p_channel
    WHEN 'email' THEN
        RETURN jsonb_build_object('to', n.email, 'to_name', coalesce(n.data ->> 'name', ''), 'subject', n.title,
                                  'text', n.body, 'locale', n.locale);
    WHEN 'webhook' THEN
        SELECT * INTO w FROM notification.webhooks x
         WHERE (n.user_id IS NOT NULL AND x.user_id = n.user_id) OR (n.user_id IS NULL AND x.org_id = n.org_id);
        RETURN jsonb_build_object('webhook_id', w.webhook_id,
            'body', jsonb_build_object('notification_id', n.notification_id, 'kind', n.kind, 'category', n.category,
                                       'user_id', n.user_id, 'organization_id', n.org_id, 'locale', n.locale,
                                       'title', n.title, 'text', n.body, 'data', n.data - 'name',
                                       'created_at', isa.iso_time(n.created_at)));
    WHEN 'mqtt' THEN
        RETURN jsonb_build_object('notification_id', n.notification_id, 'kind', n.kind, 'title', n.title, 'text', n.body);
    ELSE
        RETURN '{}';
    END CASE;
END
$$;
COMMENT ON FUNCTION notification._payload(notification.notifications, text) IS
    'A delivery''s payload: email {to, to_name, subject, text, locale}; webhook {webhook_id, body}; mqtt {notification_id, kind, title, text}; in-app {}.';

CREATE FUNCTION notification._notification(p_id uuid) RETURNS notification.notifications
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM notification.notifications x WHERE x.notification_id = p_id
$$;
COMMENT ON FUNCTION notification._notification(uuid) IS
    'A notification by id.';

-- A user's preferences as they are now (account's), or none for no user or
-- one deleted since (what they had asked for is gone too).
CREATE FUNCTION notification._prefs_of(p_user_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_user_id IS NULL THEN
        RETURN '{}';
    END IF;
    RETURN account.get_notification_preferences(p_user_id);
EXCEPTION WHEN no_data_found THEN
    RETURN '{}';
END
$$;
COMMENT ON FUNCTION notification._prefs_of(uuid) IS
    'A user''s notification preferences, read from account now (never copied); {} for NULL or a user deleted since.';

-- What notification.sent and notification.failed say of a delivery.
CREATE FUNCTION notification._event_data(n notification.notifications, d notification.deliveries) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    RETURN jsonb_build_object('notification_id', n.notification_id, 'delivery_id', d.delivery_id, 'user_id', n.user_id,
                              'channel', d.channel, 'kind', n.kind, 'category', n.category, 'attempts', d.attempts);
COMMENT ON FUNCTION notification._event_data(notification.notifications, notification.deliveries) IS
    'The data notification.sent and notification.failed share: notification_id, delivery_id, user_id, channel, kind, category, attempts (no address, title or text).';

-- Whether a notification was delivered in-app: its user lists and marks it.
CREATE FUNCTION notification._in_app(p_notification_id uuid) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
RETURN EXISTS (SELECT FROM notification.deliveries d
                WHERE d.notification_id = p_notification_id AND d.channel = 'inapp' AND d.state = 'sent');
COMMENT ON FUNCTION notification._in_app(uuid) IS
    'Whether a notification has its in-app delivery (sent): the notifications a user lists, counts and marks read.';

-- A delivery reached its channel: sent, notification.sent.
CREATE FUNCTION notification._sent(d notification.deliveries) RETURNS notification.deliveries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n notification.notifications := notification._notification(d.notification_id);
BEGIN
    UPDATE notification.deliveries x
       SET state = 'sent', sent_at = now(), locked_until = NULL, next_attempt_at = NULL,
           attempts = CASE WHEN x.channel IN ('inapp', 'mqtt') THEN x.attempts + 1 ELSE x.attempts END
     WHERE x.delivery_id = d.delivery_id
    RETURNING * INTO d;
    PERFORM isa.publish_event('notification.sent', 'notification_service', notification._event_data(n, d));
    RETURN d;
END
$$;
COMMENT ON FUNCTION notification._sent(notification.deliveries) IS
    'Marks a delivery sent (counting the attempt of in-app and MQTT, which have no sender) and publishes notification.sent.';

-- Creates a notification's delivery on a channel at p_at (NULL if it has
-- one there already): in-app is sent at once; outside critical categories,
-- the others wait through the user's quiet hours (deferred); MQTT is queued
-- on the user's devices at once, email and webhook wait for their sender.
CREATE FUNCTION notification._deliver(n notification.notifications, p_channel text, prefs jsonb, p_at timestamptz,
                                      p_fallback_of uuid DEFAULT NULL)
RETURNS notification.deliveries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c     notification.category_info := notification._category(n.category);
    quiet timestamptz;
    d     notification.deliveries;
BEGIN
    IF p_channel <> 'inapp' AND NOT c.critical THEN
        quiet := notification._quiet_until(prefs, p_at);
    END IF;
    INSERT INTO notification.deliveries AS x (delivery_id, notification_id, user_id, channel, state, next_attempt_at,
                                             idempotency_key, payload, fallback_of)
    VALUES (isa.uuid_v7(), n.notification_id, n.user_id, p_channel,
            CASE WHEN quiet IS NOT NULL THEN 'deferred' ELSE 'pending' END, coalesce(quiet, now()),
            n.event_id || ':' || n.recipient || ':' || p_channel, notification._payload(n, p_channel), p_fallback_of)
    ON CONFLICT DO NOTHING
    RETURNING * INTO d;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF d.state = 'deferred' THEN
        RETURN d;
    END IF;
    RETURN notification._start(d);
END
$$;
COMMENT ON FUNCTION notification._deliver(notification.notifications, text, jsonb, timestamptz, uuid) IS
    'Creates a notification''s delivery on a channel (NULL if it has one there): deferred through the user''s quiet hours at p_at unless in-app or critical, else started (notification._start); p_fallback_of names the failed delivery it replaces.';

-- A due delivery goes: in-app is sent; MQTT is queued on the user's devices
-- (failing when they have none now); email and webhook wake their sender.
CREATE FUNCTION notification._start(d notification.deliveries) RETURNS notification.deliveries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n notification.notifications;
BEGIN
    IF d.channel = 'inapp' THEN
        RETURN notification._sent(d);
    ELSIF d.channel = 'mqtt' THEN
        n := notification._notification(d.notification_id);
        IF device.notify_user_devices(n.user_id, d.payload, (notification._settings()).mqtt_ttl) > 0 THEN
            RETURN notification._sent(d);
        END IF;
        RETURN notification._fail(d, 'no device to show it on');
    END IF;
    UPDATE notification.deliveries x SET state = 'pending', next_attempt_at = least(x.next_attempt_at, now())
     WHERE x.delivery_id = d.delivery_id
    RETURNING * INTO d;
    PERFORM notification._wake(d.channel);
    RETURN d;
END
$$;
COMMENT ON FUNCTION notification._start(notification.deliveries) IS
    'Starts a due delivery: in-app sent; MQTT queued on the user''s devices (device.notify_user_devices) and sent, or failed when they have none; email and webhook pending and their sender woken.';

-- The channel after p_after in the category's fallback order that the
-- recipient has not switched off, that reaches them, and that the
-- notification has no delivery on yet; NULL when none is left.
CREATE FUNCTION notification._next_channel(n notification.notifications, prefs jsonb, p_after text) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT f.ch FROM notification._category(n.category) c,
           unnest(c.fallback) WITH ORDINALITY f (ch, pos)
     WHERE f.pos > array_position(c.fallback, p_after)
       AND notification._choice(c, prefs, f.ch) <> 'off'
       AND notification._reachable(n, f.ch)
       AND NOT EXISTS (SELECT FROM notification.deliveries x WHERE x.notification_id = n.notification_id AND x.channel = f.ch)
     ORDER BY f.pos LIMIT 1
$$;
COMMENT ON FUNCTION notification._next_channel(notification.notifications, jsonb, text) IS
    'The fallback after a channel: the next of the category''s fallback order that the user has not switched off, that reaches the recipient and that the notification has no delivery on; NULL if none.';

-- A delivery fails for good: failed, notification.failed, and the next
-- channel of the fallback order is tried.
CREATE FUNCTION notification._fail(d notification.deliveries, p_error text) RETURNS notification.deliveries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n     notification.notifications := notification._notification(d.notification_id);
    prefs jsonb := notification._prefs_of(n.user_id);
    next  text;
BEGIN
    UPDATE notification.deliveries x
       SET state = 'failed', failed_at = now(), locked_until = NULL, next_attempt_at = NULL,
           last_error = left(coalesce(p_error, 'failed'), 1000)
     WHERE x.delivery_id = d.delivery_id
    RETURNING * INTO d;
    next := notification._next_channel(n, prefs, d.channel);
    PERFORM isa.publish_event('notification.failed', 'notification_service',
        notification._event_data(n, d) || jsonb_build_object('error', d.last_error, 'fallback_channel', next));
    IF next IS NOT NULL THEN
        PERFORM notification._deliver(n, next, prefs, now(), d.delivery_id);
    END IF;
    RETURN d;
END
$$;
COMMENT ON FUNCTION notification._fail(notification.deliveries, text) IS
    'Fails a delivery for good: failed with its error, notification.failed (naming the fallback channel), and the fallback delivery created.';

-- The notification of an event for one recipient, and its deliveries: the
-- user's (p_user_id; their address, locale and preferences from account),
-- an organization's (p_org_id alone: its webhook), or an address's
-- (p_email alone: email).  NULL if the event notified this recipient
-- already (the idempotency of a handler), or the user is gone.
CREATE FUNCTION notification._notify(e isa.event, p_kind text, p_vars jsonb, p_user_id uuid,
                                     p_org_id uuid DEFAULT NULL, p_email text DEFAULT NULL)
RETURNS notification.notifications
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k       record;
    c       notification.category_info;
    u       account.user_profile;
    prefs   jsonb := '{}';
    vars    jsonb := coalesce(p_vars, '{}');
    tpl     record;
    n       notification.notifications;
    ch      text;
    started integer := 0;
BEGIN
    SELECT * INTO k FROM notification._kinds() x WHERE x.kind = p_kind;
    c := notification._category(k.category);
    IF p_user_id IS NOT NULL THEN
        BEGIN
            u := account.get_user(p_user_id);
            prefs := account.get_notification_preferences(p_user_id);
        EXCEPTION WHEN no_data_found THEN
            RAISE WARNING 'notification: % of event % not sent: user % not found', p_kind, e.id, p_user_id;
            RETURN NULL;
        END;
        vars := vars || jsonb_build_object('name', u.name);
    END IF;
    vars := jsonb_build_object('time', notification._local_time(e."timestamp", prefs)) || vars;
    SELECT * INTO tpl FROM notification._template(p_kind, coalesce(prefs ->> 'locale', 'en'));
    INSERT INTO notification.notifications AS x (notification_id, event_id, recipient, user_id, org_id, email, kind,
                                                 category, locale, title, body, data)
    VALUES (isa.uuid_v7(), e.id,
            coalesce(p_user_id::text, 'email:' || lower(p_email), 'org:' || p_org_id),
            p_user_id, p_org_id, coalesce(u.email, p_email), p_kind, k.category, tpl.locale,
            left(notification._render(tpl.title, vars), 200), left(notification._render(tpl.body, vars), 10000), vars)
    ON CONFLICT ON CONSTRAINT notifications_once DO NOTHING
    RETURNING * INTO n;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    FOR ch IN SELECT x FROM unnest(ARRAY['inapp', 'mqtt', 'email', 'webhook']) x LOOP
        -- a user's: by their choices; an organization's or an address's: where it can go
        IF (p_user_id IS NULL OR notification._choice(c, prefs, ch) = 'on') AND notification._reachable(n, ch) THEN
            PERFORM notification._deliver(n, ch, prefs, now());
            started := started + 1;
        END IF;
    END LOOP;
    IF started = 0 AND c.critical AND p_user_id IS NOT NULL THEN
        PERFORM notification._deliver(n, 'inapp', prefs, now());   -- critical ones always go
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION notification._notify(isa.event, text, jsonb, uuid, uuid, text) IS
    'The notification of an event of a kind for one recipient (a user, else an organization''s webhook or an address''s email), rendered from its template in the user''s locale with vars, the user''s name and the event''s time in the user''s time zone (time), and its deliveries on the channels the user''s preferences and the category choose that reach them. NULL if the event notified this recipient already or the user is gone.';

-- ---------------------------------------------------------------- API: the senders (isa_svc_notification only)
CREATE FUNCTION notification._check_sender_channel(p_channel text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('channel', p_channel);
    IF p_channel NOT IN ('email', 'webhook') THEN
        RAISE EXCEPTION 'a sender delivers email or webhook, not "%"', left(p_channel, 100) USING ERRCODE = '22023';
    END IF;
END
$$;
COMMENT ON FUNCTION notification._check_sender_channel(text) IS
    '22023 unless the channel is one a sender delivers: email or webhook; 22004 NULL.';

CREATE FUNCTION notification.claim_deliveries(p_channel text, p_max integer DEFAULT 10, p_lease_seconds integer DEFAULT 60)
RETURNS TABLE (delivery_id uuid, attempt integer, payload jsonb)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notification._check_sender_channel(p_channel);
    PERFORM isa.not_null('p_max, p_lease_seconds', p_max, p_lease_seconds);
    IF p_max NOT BETWEEN 1 AND 1000 OR p_lease_seconds NOT BETWEEN 1 AND 3600 THEN
        RAISE EXCEPTION 'p_max must be 1 … 1000 and p_lease_seconds 1 … 3600' USING ERRCODE = '22023';
    END IF;
    -- Longest due first.  Each kind of due delivery is read through its own
    -- partial index, in the index's order (deliveries_due, deliveries_leased):
    -- a claim costs what it takes, not what was ever sent (one OR over both
    -- kinds, ordered by delivery_id, was planned as a walk of the primary key
    -- past every delivery of every channel: 22 ms a claim at 40,000
    -- deliveries, bench/notification_fanout).
    RETURN QUERY
    WITH waiting AS (
        SELECT x.delivery_id, x.next_attempt_at AS due_at FROM notification.deliveries x
         WHERE x.channel = p_channel AND x.state IN ('pending', 'deferred') AND x.next_attempt_at <= now()
         ORDER BY x.next_attempt_at, x.delivery_id
         LIMIT p_max
         FOR UPDATE SKIP LOCKED),
    expired AS (                           -- a lease that ended: its sender died
        SELECT x.delivery_id, x.locked_until AS due_at FROM notification.deliveries x
         WHERE x.channel = p_channel AND x.state = 'sending' AND x.locked_until <= now()
         ORDER BY x.locked_until, x.delivery_id
         LIMIT p_max
         FOR UPDATE SKIP LOCKED),
    due AS (
        SELECT u.delivery_id FROM (SELECT * FROM waiting UNION ALL SELECT * FROM expired) u
         ORDER BY u.due_at, u.delivery_id
         LIMIT p_max),
    claimed AS (
        UPDATE notification.deliveries x
           SET state = 'sending', attempts = x.attempts + 1,
               locked_until = now() + make_interval(secs => p_lease_seconds)
          FROM due WHERE x.delivery_id = due.delivery_id
        RETURNING x.*)
    SELECT c.delivery_id, c.attempts,
           CASE WHEN c.channel = 'webhook' AND c.payload ? 'webhook_id'
                THEN jsonb_build_object('url', w.url, 'secret', w.secret, 'body', c.payload -> 'body')
                ELSE c.payload END              -- (a delivery made by hand may carry url and secret itself)
      FROM claimed c
      LEFT JOIN notification.webhooks w ON c.channel = 'webhook' AND w.webhook_id = (c.payload ->> 'webhook_id')::uuid
     ORDER BY c.delivery_id;
END
$$;
COMMENT ON FUNCTION notification.claim_deliveries(text, integer, integer) IS
    'For the senders: up to p_max (1 … 1000) due deliveries of a channel (email or webhook), longest due first (by next_attempt_at, or locked_until, then delivery_id): pending or deferred ones whose time came, and sending ones whose lease expired (a sender died); each becomes sending with a lease of p_lease_seconds (1 … 3600) and one more attempt. Returns (delivery_id, attempt, payload): email {to, to_name, subject, text, locale}, webhook {url, secret, body}. The caller commits before any network I/O. 22023 bad channel or bounds. isa_svc_notification only.';

CREATE FUNCTION notification.record_delivery(p_delivery_id uuid, p_ok boolean, p_transient boolean DEFAULT true,
                                             p_error text DEFAULT NULL)
RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d notification.deliveries;
BEGIN
    PERFORM isa.not_null('p_delivery_id, p_ok, p_transient', p_delivery_id, p_ok, p_transient);
    SELECT * INTO d FROM notification.deliveries x WHERE x.delivery_id = p_delivery_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'delivery % not found', p_delivery_id USING ERRCODE = 'P0002';
    END IF;
    IF d.state <> 'sending' THEN
        RETURN d.state;                    -- a late answer (its lease expired, another sender took it): nothing changes
    END IF;
    IF p_ok THEN
        d := notification._sent(d);
    ELSIF p_transient AND d.attempts < (notification._settings()).max_attempts THEN
        UPDATE notification.deliveries x
           SET state = 'pending', locked_until = NULL, last_error = left(coalesce(p_error, 'failed'), 1000),
               next_attempt_at = now() + notification._backoff(x.attempts)
         WHERE x.delivery_id = d.delivery_id
        RETURNING * INTO d;
        PERFORM notification._wake(d.channel);
    ELSE
        d := notification._fail(d, p_error);
    END IF;
    RETURN d.state;
END
$$;
COMMENT ON FUNCTION notification.record_delivery(uuid, boolean, boolean, text) IS
    'For the senders, after an attempt: ok → sent (notification.sent); a transient failure before isa.notification_max_attempts → pending again after a backoff (isa.notification_retry_base doubling, at most isa.notification_retry_max, full jitter); else failed (notification.failed) and the category''s next channel is tried. Returns the new state; a delivery not sending (a late answer) is left as it is and its state returned. P0002 unknown delivery. isa_svc_notification only.';

CREATE FUNCTION notification.next_due(p_channel text) RETURNS timestamptz
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notification._check_sender_channel(p_channel);
    RETURN least((SELECT min(x.next_attempt_at) FROM notification.deliveries x
                   WHERE x.channel = p_channel AND x.state IN ('pending', 'deferred')),
                 (SELECT min(x.locked_until) FROM notification.deliveries x
                   WHERE x.channel = p_channel AND x.state = 'sending'));
END
$$;
COMMENT ON FUNCTION notification.next_due(text) IS
    'For the senders'' timer: when the next delivery of a channel (email or webhook) becomes due (a retry, the end of quiet hours, an expiring lease), or NULL if none is waiting. isa_svc_notification only.';

-- ---------------------------------------------------------------- API: in-app
CREATE FUNCTION notification._info(n notification.notifications) RETURNS notification.notification_info
    LANGUAGE sql IMMUTABLE
    RETURN ROW(n.notification_id, n.kind, n.category, n.title, n.body, n.data, n.created_at, n.read_at)::notification.notification_info;
COMMENT ON FUNCTION notification._info(notification.notifications) IS
    'A notification as its user reads it.';

CREATE FUNCTION notification.list_notifications(user_id uuid, unread_only boolean DEFAULT false,
                                                before_id uuid DEFAULT NULL, row_limit integer DEFAULT 50)
RETURNS SETOF notification.notification_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('unread_only', unread_only);
    PERFORM isa.check_page_size('row_limit', row_limit);
    PERFORM account.require_user(user_id);
    RETURN QUERY
    SELECT (notification._info(n)).* FROM notification.notifications n
     WHERE n.user_id = list_notifications.user_id
       AND (before_id IS NULL OR n.notification_id < before_id)
       AND (NOT unread_only OR n.read_at IS NULL)
       AND notification._in_app(n.notification_id)
     ORDER BY n.notification_id DESC
     LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION notification.list_notifications(uuid, boolean, uuid, integer) IS
    'A user''s in-app notifications, newest first: all or the unread ones, row_limit (1 … 1000) at a time; the next page passes the last notification_id as before_id. P0002 unknown user, 22023 bad row_limit.';

CREATE FUNCTION notification.unread_count(user_id uuid) RETURNS bigint
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM account.require_user(user_id);
    RETURN (SELECT count(*) FROM notification.notifications n
             WHERE n.user_id = unread_count.user_id AND n.read_at IS NULL
               AND notification._in_app(n.notification_id));
END
$$;
COMMENT ON FUNCTION notification.unread_count(uuid) IS
    'How many of a user''s in-app notifications are unread. P0002 unknown user.';

CREATE FUNCTION notification.mark_read(user_id uuid, notification_id uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n notification.notifications;
BEGIN
    PERFORM isa.not_null('user_id, notification_id', user_id, notification_id);
    SELECT * INTO n FROM notification.notifications x
     WHERE x.notification_id = mark_read.notification_id AND x.user_id = mark_read.user_id
       AND notification._in_app(x.notification_id)
       FOR UPDATE;
    IF NOT FOUND THEN
        -- one answer for another user's and for none: nothing tells them apart
        RAISE EXCEPTION 'notification % not found', notification_id USING ERRCODE = 'P0002';
    END IF;
    IF n.read_at IS NOT NULL THEN
        RETURN false;
    END IF;
    UPDATE notification.notifications x SET read_at = now() WHERE x.notification_id = n.notification_id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION notification.mark_read(uuid, uuid) IS
    'Marks one of the user''s in-app notifications read: true if it was unread, false if read already. P0002 if it is not theirs or does not exist (one answer for both).';

CREATE FUNCTION notification.mark_all_read(user_id uuid) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k bigint;
BEGIN
    PERFORM account.require_user(user_id);
    UPDATE notification.notifications x SET read_at = now()
     WHERE x.user_id = mark_all_read.user_id AND x.read_at IS NULL
       AND notification._in_app(x.notification_id);
    GET DIAGNOSTICS k = ROW_COUNT;
    RETURN k;
END
$$;
COMMENT ON FUNCTION notification.mark_all_read(uuid) IS
    'Marks all of a user''s unread in-app notifications read; returns how many. P0002 unknown user.';

-- ---------------------------------------------------------------- API: webhooks
-- The URL a webhook may have: http(s), no credentials, at most 2000
-- characters; unless isa.notification_webhook_private, not localhost nor a
-- literal loopback, private, link-local or unspecified address (a name that
-- resolves to one is the senders' to refuse).
CREATE FUNCTION notification._check_webhook_url(url text) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v    text := btrim(url, E' \t\r\n');
    host text;
    ip   inet;
BEGIN
    PERFORM isa.not_null('url', url);
    host := lower(substring(v FROM '^[Hh][Tt][Tt][Pp][Ss]?://(\[[0-9A-Fa-f:.]+\]|[^/?#:@\[\]]+)(:[0-9]{1,5})?([/?#]|$)'));
    IF length(v) > 2000 OR v ~ '[[:space:][:cntrl:]]' OR host IS NULL THEN
        RAISE EXCEPTION 'invalid webhook url "%"', left(v, 200) USING ERRCODE = '22023',
            HINT = 'An http:// or https:// URL of at most 2000 characters, without user or password.';
    END IF;
    IF NOT (notification._settings()).webhook_private THEN
        BEGIN
            ip := btrim(host, '[]')::inet;
        EXCEPTION WHEN invalid_text_representation THEN
            ip := NULL;
        END;
        -- 127.1, 2130706433, 0x7f.0.0.1: numbers a resolver reads as an address
        IF ip IS NULL AND host ~ '^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*\.?$' THEN
            RAISE EXCEPTION 'a webhook names an IP address as a dotted quad or in brackets, not "%"', host USING ERRCODE = '22023';
        END IF;
        IF host IN ('localhost', 'localhost.') OR host LIKE '%.localhost' OR host LIKE '%.localhost.'
           OR (ip IS NOT NULL AND (ip << '127.0.0.0/8' OR ip << '10.0.0.0/8' OR ip << '172.16.0.0/12'
                                   OR ip << '192.168.0.0/16' OR ip << '169.254.0.0/16' OR ip << '100.64.0.0/10'
                                   OR ip <<= '0.0.0.0/8' OR ip << '224.0.0.0/3' OR ip = '::1' OR ip = '::'
                                   OR ip << 'fc00::/7' OR ip << 'fe80::/10' OR ip << 'ff00::/8' OR ip << '::ffff:0:0/96')) THEN
            RAISE EXCEPTION 'a webhook may not name a local or private address: "%"', host USING ERRCODE = '22023',
                HINT = 'isa.notification_webhook_private allows it (tests, closed networks).';
        END IF;
    END IF;
    RETURN v;
END
$$;
COMMENT ON FUNCTION notification._check_webhook_url(text) IS
    'A webhook URL trimmed, or 22023: http(s), no credentials, no spaces, at most 2000 characters, an IP address only as a dotted quad or in brackets; no localhost or literal loopback, private, link-local, multicast or unspecified address unless isa.notification_webhook_private.';

CREATE FUNCTION notification._webhook_info(w notification.webhooks, p_secret text) RETURNS notification.webhook_info
    LANGUAGE sql IMMUTABLE
    RETURN ROW(w.webhook_id, w.user_id, w.org_id, w.url, p_secret, w.created_by, w.created_at, w.updated_at)::notification.webhook_info;
COMMENT ON FUNCTION notification._webhook_info(notification.webhooks, text) IS
    'A webhook as the API returns it, with the secret only when given.';

-- An organization's webhook is its owners' and admins' to see and change.
CREATE FUNCTION notification._require_org_admin(p_actor uuid, p_org uuid) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(organization.member_role(p_org, p_actor), 'none') NOT IN ('owner', 'admin') THEN
        RAISE EXCEPTION 'not allowed: user % is not an owner or admin of organization %', p_actor, p_org
            USING ERRCODE = '42501';
    END IF;
END
$$;
COMMENT ON FUNCTION notification._require_org_admin(uuid, uuid) IS
    '42501 unless the actor is an owner or admin of the organization.';

CREATE FUNCTION notification.register_webhook(actor_id uuid, url text, org_id uuid DEFAULT NULL)
RETURNS notification.webhook_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v      text := notification._check_webhook_url(url);
    v_secret text := 'whsec_' || isa.base64url_encode(isa.random_bytes(32));
    w      notification.webhooks;
BEGIN
    PERFORM account.require_user(actor_id);
    IF org_id IS NOT NULL THEN
        PERFORM notification._require_org_admin(actor_id, org_id);
    END IF;
    -- one per user or organization: registering again gives it a new url and secret
    UPDATE notification.webhooks x SET url = v, secret = v_secret, created_by = actor_id, updated_at = now()
     WHERE (register_webhook.org_id IS NULL AND x.user_id = actor_id)
        OR (register_webhook.org_id IS NOT NULL AND x.org_id = register_webhook.org_id)
    RETURNING * INTO w;
    IF NOT FOUND THEN
        INSERT INTO notification.webhooks (webhook_id, user_id, org_id, url, secret, created_by)
        VALUES (isa.uuid_v7(), CASE WHEN register_webhook.org_id IS NULL THEN actor_id END, register_webhook.org_id,
                v, v_secret, actor_id)
        RETURNING * INTO w;
    END IF;
    RETURN notification._webhook_info(w, v_secret);
END
$$;
COMMENT ON FUNCTION notification.register_webhook(uuid, text, uuid) IS
    'Registers the actor''s webhook, or (org_id) an organization''s, by one of its owners or admins: one URL each; registering again replaces the URL and the secret. Returns it with its new secret (whsec_…, shown only here): the deliveries are signed with it (Isa-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>). 22023 bad url (or a local address), 42501 not an owner or admin, P0002 unknown user.';

CREATE FUNCTION notification.list_webhooks(actor_id uuid) RETURNS SETOF notification.webhook_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM account.require_user(actor_id);
    RETURN QUERY
    SELECT (notification._webhook_info(w, NULL)).* FROM notification.webhooks w
     WHERE w.user_id = actor_id
        OR (w.org_id IS NOT NULL AND organization.member_role(w.org_id, actor_id) IN ('owner', 'admin'))
     ORDER BY w.webhook_id;
END
$$;
COMMENT ON FUNCTION notification.list_webhooks(uuid) IS
    'The actor''s webhook and those of the organizations they own or administer, without secrets. P0002 unknown user.';

CREATE FUNCTION notification.delete_webhook(actor_id uuid, webhook_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w notification.webhooks;
    d notification.deliveries;
BEGIN
    PERFORM isa.not_null('actor_id, webhook_id', actor_id, webhook_id);
    SELECT * INTO w FROM notification.webhooks x WHERE x.webhook_id = delete_webhook.webhook_id FOR UPDATE;
    -- one answer for another user's and for none
    IF NOT FOUND OR (w.user_id IS NOT NULL AND w.user_id <> actor_id) THEN
        RAISE EXCEPTION 'webhook % not found', webhook_id USING ERRCODE = 'P0002';
    END IF;
    IF w.org_id IS NOT NULL THEN
        IF organization.member_role(w.org_id, actor_id) IS NULL THEN
            RAISE EXCEPTION 'webhook % not found', webhook_id USING ERRCODE = 'P0002';
        END IF;
        PERFORM notification._require_org_admin(actor_id, w.org_id);
    END IF;
    DELETE FROM notification.webhooks x WHERE x.webhook_id = w.webhook_id;
    -- what was to go there will not
    FOR d IN SELECT * FROM notification.deliveries x
              WHERE x.channel = 'webhook' AND x.state IN ('pending', 'deferred', 'sending')
                AND x.payload ->> 'webhook_id' = w.webhook_id::text
              ORDER BY x.delivery_id FOR UPDATE LOOP
        PERFORM notification._fail(d, 'webhook deleted');
    END LOOP;
END
$$;
COMMENT ON FUNCTION notification.delete_webhook(uuid, uuid) IS
    'Deletes the actor''s webhook, or an organization''s (its owners and admins); its deliveries not yet sent fail (notification.failed, then the next channel). P0002 unknown or another''s, 42501 a member but not an owner or admin of its organization.';

-- ---------------------------------------------------------------- jobs
CREATE FUNCTION notification.process_due(p_now timestamptz DEFAULT now()) RETURNS TABLE (action text, n bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d notification.deliveries;
    k bigint := 0;
BEGIN
    PERFORM isa.not_null('p_now', p_now);
    FOR d IN SELECT * FROM notification.deliveries x
              WHERE x.state = 'deferred' AND x.next_attempt_at <= p_now
              ORDER BY x.delivery_id FOR UPDATE SKIP LOCKED LOOP
        UPDATE notification.deliveries x SET next_attempt_at = now() WHERE x.delivery_id = d.delivery_id
        RETURNING * INTO d;
        PERFORM notification._start(d);
        k := k + 1;
    END LOOP;
    action := 'deferred deliveries released'; n := k;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION notification.process_due(timestamptz) IS
    'Releases the deliveries deferred through quiet hours that end by p_now (default now): MQTT is queued on the devices, email and webhook become pending and wake their sender (which also claims due deferred ones itself). pg_cron runs it every minute (isa-notification-due).';

INSERT INTO isa.scheduled_jobs (jobname, schedule, command, description)
VALUES ('isa-notification-due', '* * * * *', 'SELECT notification.process_due()',
        'Every minute: release the notifications deferred through quiet hours that have ended.')
ON CONFLICT (jobname) DO NOTHING;

-- ---------------------------------------------------------------- handlers
-- Each handler reads the event's fields, makes the notifications (one per
-- recipient, once per event: notifications_once) and returns; a malformed
-- event is ignored with a warning (dead-lettering it would not mend it).
CREATE FUNCTION notification._uuid_field(e isa.event, field text) RETURNS uuid
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT isa.is_uuid(e.data ->> field) THEN
        RAISE WARNING 'notification: % % ignored: data.% must be a uuid, got %', e.event_type, e.id, field, e.data -> field;
        RETURN NULL;
    END IF;
    RETURN (e.data ->> field)::uuid;
END
$$;
COMMENT ON FUNCTION notification._uuid_field(isa.event, text) IS
    'An event''s data field as a uuid, or NULL with a warning when it is not one.';

-- The event's user (data.user_id) is told: a notification of a kind with vars.
CREATE FUNCTION notification._notify_user(e isa.event, p_kind text, p_vars jsonb) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid uuid := notification._uuid_field(e, 'user_id');
BEGIN
    IF uid IS NOT NULL THEN
        PERFORM notification._notify(e, p_kind, p_vars, uid);
    END IF;
END
$$;
COMMENT ON FUNCTION notification._notify_user(isa.event, text, jsonb) IS
    'Notifies the event''s user (data.user_id; a warning and nobody when it is not a uuid) of a kind with vars.';

CREATE FUNCTION notification.on_payment_completed(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notification._notify_user(e, 'payment.receipt',
        jsonb_build_object('payment_id', e.data ->> 'payment_id', 'order_id', e.data ->> 'order_id',
                           'amount', CASE WHEN jsonb_typeof(e.data -> 'amount') = 'number'
                                          THEN to_char((e.data ->> 'amount')::numeric / 100, 'FM999999999990.00') END,
                           'currency', upper(coalesce(e.data ->> 'currency', '')),
                           'tokens', coalesce(e.data ->> 'tokens', '0')));
END
$$;
COMMENT ON FUNCTION notification.on_payment_completed(isa.event) IS
    'Handler of payment_service.payment.completed: a receipt (payment.receipt, category payment: critical) to the payer, amount in major units.';

CREATE FUNCTION notification.on_balance_low(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notification._notify_user(e, 'wallet.balance_low',
        jsonb_build_object('wallet_id', e.data ->> 'wallet_id', 'balance', e.data ->> 'balance',
                           'threshold', e.data ->> 'threshold'));
END
$$;
COMMENT ON FUNCTION notification.on_balance_low(isa.event) IS
    'Handler of wallet_service.wallet.balance.low: an alert (wallet.balance_low, category wallet) to the wallet''s user.';

CREATE FUNCTION notification.on_tokens_insufficient(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notification._notify_user(e, 'wallet.tokens_insufficient',
        jsonb_build_object('wallet_id', e.data ->> 'wallet_id', 'requested', e.data ->> 'requested',
                           'balance', e.data ->> 'balance', 'reference_type', e.data ->> 'reference_type'));
END
$$;
COMMENT ON FUNCTION notification.on_tokens_insufficient(isa.event) IS
    'Handler of wallet_service.wallet.tokens.insufficient: an alert (wallet.tokens_insufficient, category wallet) to the wallet''s user.';

-- The invitee may have no account yet: the email goes to the invited address
-- (in English); with an account of that address, to that user by their
-- preferences (in-app too).
CREATE FUNCTION notification.on_member_invited(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    org     uuid := notification._uuid_field(e, 'org_id');
    addr    text := e.data ->> 'email';
    invitee uuid;
    vars    jsonb;
BEGIN
    IF org IS NULL OR notification._uuid_field(e, 'invitation_id') IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        invitee := (account.find_user_by_email(addr)).user_id;
    EXCEPTION WHEN no_data_found THEN
        invitee := NULL;
    WHEN invalid_parameter_value OR null_value_not_allowed THEN
        RAISE WARNING 'notification: % % ignored: data.email is not an email address: %', e.event_type, e.id, e.data -> 'email';
        RETURN;
    END;
    vars := jsonb_build_object('invitation_id', e.data ->> 'invitation_id', 'org_id', org,
                               'org_name', e.data ->> 'org_name', 'role', e.data ->> 'role',
                               'inviter_name', e.data ->> 'inviter_name',
                               'expires_at', CASE WHEN e.data ? 'expires_at'
                                                  THEN to_char((e.data ->> 'expires_at')::timestamptz AT TIME ZONE 'UTC',
                                                               'YYYY-MM-DD HH24:MI') || ' UTC' END);
    IF invitee IS NOT NULL THEN
        PERFORM notification._notify(e, 'organization.invitation', vars, invitee, org);
    ELSE
        PERFORM notification._notify(e, 'organization.invitation', vars, NULL, org, addr);
    END IF;
END
$$;
COMMENT ON FUNCTION notification.on_member_invited(isa.event) IS
    'Handler of organization_service.organization.member_invited: the invitation (organization.invitation, category family) to the invited address, as an email in English when no account has it, else to that user by their preferences. It carries no token: the invitee accepts in the app.';

-- A device's event for its owner and, with p_family, its organization's
-- members (the family) and the organization's webhook: vars are p_vars with
-- the device's name and organization, and p_time_field's time in each
-- user's time zone.
CREATE FUNCTION notification._notify_device(e isa.event, p_kind text, p_vars jsonb, p_family boolean,
                                            p_time_field text DEFAULT NULL)
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    did   uuid := notification._uuid_field(e, 'device_id');
    owner uuid := notification._uuid_field(e, 'owner_id');
    org   uuid;
    name  text;
    vars  jsonb;
    uid   uuid;
    at    timestamptz;
BEGIN
    IF did IS NULL OR owner IS NULL THEN
        RETURN;
    END IF;
    IF isa.is_uuid(e.data ->> 'organization_id') THEN
        org := (e.data ->> 'organization_id')::uuid;
        IF organization.member_role(org, owner) IS NULL THEN
            org := NULL;                 -- its owner left: no longer the organization's device
        END IF;
    END IF;
    BEGIN
        name := (device.get_device(owner, did)).name;
        at := (e.data ->> p_time_field)::timestamptz;
    EXCEPTION WHEN no_data_found OR insufficient_privilege OR invalid_datetime_format OR datetime_field_overflow THEN
        RAISE WARNING 'notification: % % ignored: device % of % not found, or a bad %', e.event_type, e.id, did, owner, p_time_field;
        RETURN;
    END;
    vars := p_vars || jsonb_build_object('device_id', did, 'device_name', name, 'organization_id', org);
    FOR uid IN SELECT owner UNION SELECT m FROM organization.member_ids(coalesce(org, owner)) m WHERE p_family AND org IS NOT NULL LOOP
        PERFORM notification._notify(e, p_kind,
            CASE WHEN at IS NULL THEN vars
                 ELSE vars || jsonb_build_object(p_time_field, notification._local_time(at, notification._prefs_of(uid))) END,
            uid, org);
    END LOOP;
    IF p_family AND org IS NOT NULL AND EXISTS (SELECT FROM notification.webhooks w WHERE w.org_id = org) THEN
        PERFORM notification._notify(e, p_kind,
            CASE WHEN at IS NULL THEN vars ELSE vars || jsonb_build_object(p_time_field, isa.iso_time(at)) END, NULL, org);
    END IF;
END
$$;
COMMENT ON FUNCTION notification._notify_device(isa.event, text, jsonb, boolean, text) IS
    'Notifies a device event (data device_id, owner_id, organization_id) of a kind to the device''s owner and, with p_family, to each member of its organization (while the owner is one) and the organization''s webhook; vars gain the device''s name, and p_time_field''s time in each user''s time zone. An unknown device or a bad time: a warning, nobody notified.';

CREATE FUNCTION notification.on_device_offline(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notification._notify_device(e, 'device.offline', jsonb_build_object('last_seen_at', e.data ->> 'last_seen_at'),
                                        true, 'last_seen_at');
END
$$;
COMMENT ON FUNCTION notification.on_device_offline(isa.event) IS
    'Handler of device_service.device.offline: an alert (device.offline, category devices) to the device''s owner and, when it belongs to an organization its owner is still a member of, to each of its members and to the organization''s webhook.';

CREATE FUNCTION notification.on_update_available(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notification._notify_device(e, 'ota.update_available',
        jsonb_build_object('version', e.data ->> 'version', 'from_version', e.data ->> 'from_version',
                           'forced', e.data -> 'forced', 'release_id', e.data ->> 'release_id',
                           'rollout_id', e.data ->> 'rollout_id'),
        false);
END
$$;
COMMENT ON FUNCTION notification.on_update_available(isa.event) IS
    'Handler of ota_service.ota.update_available: tells the device''s owner (ota.update_available, category devices) that a firmware version is offered to their device.';

CREATE FUNCTION notification.on_update_failed(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notification._notify_device(e, 'ota.update_failed',
        jsonb_build_object('version', e.data ->> 'version', 'state', e.data ->> 'state', 'reason', left(e.data ->> 'reason', 500),
                           'release_id', e.data ->> 'release_id', 'rollout_id', e.data ->> 'rollout_id'),
        false);
END
$$;
COMMENT ON FUNCTION notification.on_update_failed(isa.event) IS
    'Handler of ota_service.ota.update_failed: tells the device''s owner (ota.update_failed, category devices) that an update failed or expired, with the reason.';

CREATE FUNCTION notification.on_logged_in(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notification._notify_user(e, 'auth.welcome_back', jsonb_build_object('session_id', e.data ->> 'session_id'));
END
$$;
COMMENT ON FUNCTION notification.on_logged_in(isa.event) IS
    'Handler of auth_service.user.logged_in: "welcome back" (auth.welcome_back, category security: critical) with the time of the sign-in in the user''s time zone.';

CREATE FUNCTION notification.on_task_assigned(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(e.data -> 'task_id') IS DISTINCT FROM 'string' OR length(e.data ->> 'task_id') NOT BETWEEN 1 AND 200
       OR jsonb_typeof(e.data -> 'title') IS DISTINCT FROM 'string' OR length(e.data ->> 'title') NOT BETWEEN 1 AND 200 THEN
        RAISE WARNING 'notification: % % ignored: needs data.task_id and data.title (strings of 1 to 200 characters), got %',
            e.event_type, e.id, e.data;
        RETURN;
    END IF;
    PERFORM notification._notify_user(e, 'task.assigned',
        jsonb_build_object('task_id', e.data ->> 'task_id', 'title', e.data ->> 'title',
                           'assigned_by', left(e.data ->> 'assigned_by', 200), 'due_at', e.data ->> 'due_at'));
END
$$;
COMMENT ON FUNCTION notification.on_task_assigned(isa.event) IS
    'Handler of external.task.assigned: the task (task.assigned, category tasks) to its user; one without a task_id or title of 1 to 200 characters is ignored with a warning.';

-- account_service.user.deleted: nothing more reaches a deleted user.  What
-- waits to be sent fails (no fallback); what the user's notifications said
-- is erased (title, body, variables, address, the deliveries' payloads), their
-- rows and outcomes kept as counts; their own webhook goes.  A delivery a
-- sender holds (sending) is left to finish.  Idempotent.
CREATE FUNCTION notification.on_user_deleted(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid text := e.data ->> 'user_id';
BEGIN
    IF uid IS NULL OR NOT isa.is_uuid(uid) THEN
        RAISE WARNING 'notification: user.deleted % ignored: needs data.user_id (uuid), got %', e.id, e.data;
        RETURN;
    END IF;
    UPDATE notification.deliveries d
       SET state = 'failed', failed_at = now(), last_error = 'the user was deleted', locked_until = NULL
     WHERE d.user_id = uid::uuid AND d.state IN ('pending', 'deferred');
    UPDATE notification.deliveries d SET payload = '{}'
     WHERE d.user_id = uid::uuid AND d.state <> 'sending' AND d.payload <> '{}';
    UPDATE notification.notifications n SET title = '', body = '', data = '{}', email = NULL
     WHERE n.user_id = uid::uuid AND (n.title <> '' OR n.body <> '' OR n.data <> '{}' OR n.email IS NOT NULL);
    DELETE FROM notification.webhooks w WHERE w.user_id = uid::uuid;
END
$$;
COMMENT ON FUNCTION notification.on_user_deleted(isa.event) IS
    'Handler of account_service.user.deleted: the user''s deliveries still waiting fail (no fallback), their notifications'' text, variables and address and the deliveries'' payloads are erased (rows kept), their webhook is deleted.';

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA notification FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    notification.list_categories(),
    notification.list_notifications(uuid, boolean, uuid, integer),
    notification.unread_count(uuid),
    notification.mark_read(uuid, uuid),
    notification.mark_all_read(uuid),
    notification.register_webhook(uuid, text, uuid),
    notification.list_webhooks(uuid),
    notification.delete_webhook(uuid, uuid)
TO isa_app_notification;
GRANT EXECUTE ON FUNCTION notification.process_due(timestamptz) TO isa_admin;
-- claim_deliveries, record_delivery and next_due are the senders'; they
-- connect as isa_svc_notification, which owns them: no grant.
-- What notification's own code calls of other services, as isa_svc_notification.
GRANT EXECUTE ON FUNCTION
    account.require_user(uuid), account.get_user(uuid), account.find_user_by_email(text),
    account.get_notification_preferences(uuid),
    organization.member_role(uuid, uuid), organization.member_ids(uuid),
    device.get_device(uuid, uuid), device.user_devices(uuid), device.notify_user_devices(uuid, jsonb, integer)
TO isa_svc_notification;

-- ---------------------------------------------------------------- subscriptions
-- deliver_policy new: a notification tells of now; a consumer made by an
-- upgrade does not tell of the stream's past.
SELECT isa.subscribe_to_events('notification', 'payment_service.payment.completed',
                               'notification.on_payment_completed(isa.event)'::regprocedure, '{"deliver_policy": "new"}');
SELECT isa.subscribe_to_events('notification', 'wallet_service.wallet.balance.low',
                               'notification.on_balance_low(isa.event)'::regprocedure, '{"deliver_policy": "new"}');
SELECT isa.subscribe_to_events('notification', 'wallet_service.wallet.tokens.insufficient',
                               'notification.on_tokens_insufficient(isa.event)'::regprocedure, '{"deliver_policy": "new"}');
SELECT isa.subscribe_to_events('notification', 'organization_service.organization.member_invited',
                               'notification.on_member_invited(isa.event)'::regprocedure, '{"deliver_policy": "new"}');
SELECT isa.subscribe_to_events('notification', 'device_service.device.offline',
                               'notification.on_device_offline(isa.event)'::regprocedure, '{"deliver_policy": "new"}');
SELECT isa.subscribe_to_events('notification', 'ota_service.ota.update_available',
                               'notification.on_update_available(isa.event)'::regprocedure, '{"deliver_policy": "new"}');
SELECT isa.subscribe_to_events('notification', 'ota_service.ota.update_failed',
                               'notification.on_update_failed(isa.event)'::regprocedure, '{"deliver_policy": "new"}');
SELECT isa.subscribe_to_events('notification', 'auth_service.user.logged_in',
                               'notification.on_logged_in(isa.event)'::regprocedure, '{"deliver_policy": "new"}');
SELECT isa.subscribe_to_events('notification', 'external.task.assigned',
                               'notification.on_task_assigned(isa.event)'::regprocedure, '{"deliver_policy": "new"}');
SELECT isa.subscribe_to_events('notification', 'account_service.user.deleted',
                               'notification.on_user_deleted(isa.event)'::regprocedure, '{"deliver_policy": "new"}');

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- A user reads and marks their own notifications and manages their own
-- webhooks (and their organizations', as an owner or admin): user_id and
-- actor_id are filled from the token.  Preferences are account's routes
-- (/v1/accounts/{user_id}/notification-preferences).
SELECT isa.http_route('GET', '/v1/notifications', 'notification.list_notifications(uuid, boolean, uuid, integer)', 'user',
    'The caller''s in-app notifications, newest first (unread_only; before_id: the last of the previous page).',
    subject_param => 'user_id');
SELECT isa.http_route('GET', '/v1/notifications/unread-count', 'notification.unread_count(uuid)', 'user',
    'How many of the caller''s in-app notifications are unread.', subject_param => 'user_id');
SELECT isa.http_route('POST', '/v1/notifications/{notification_id}/read', 'notification.mark_read(uuid, uuid)', 'user',
    'Marks one of the caller''s notifications read: true if it was unread.', subject_param => 'user_id');
SELECT isa.http_route('POST', '/v1/notifications/read-all', 'notification.mark_all_read(uuid)', 'user',
    'Marks all of the caller''s notifications read: how many were unread.', subject_param => 'user_id');
SELECT isa.http_route('GET', '/v1/notification-categories', 'notification.list_categories()', 'user',
    'The categories of notifications: critical or not, their channels and fallback order (for the preferences).');
SELECT isa.http_route('POST', '/v1/webhooks', 'notification.register_webhook(uuid, text, uuid)', 'user',
    'Registers the caller''s webhook (or, with org_id, an organization''s): its secret is in this answer only.',
    subject_param => 'actor_id', status => 201);
SELECT isa.http_route('GET', '/v1/webhooks', 'notification.list_webhooks(uuid)', 'user',
    'The caller''s webhook and those of the organizations they own or administer (no secrets).',
    subject_param => 'actor_id');
SELECT isa.http_route('DELETE', '/v1/webhooks/{webhook_id}', 'notification.delete_webhook(uuid, uuid)', 'user',
    'Deletes a webhook of the caller (or of an organization they own or administer).', subject_param => 'actor_id');
