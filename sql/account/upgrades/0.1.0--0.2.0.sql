-- 0.1.0 → 0.2.0, account: timestamps are formatted by the core's
-- isa.iso_time (one helper for every service, sql/core/core.sql).
DROP FUNCTION account._iso(timestamptz);

-- Notification preferences grow from 0.1.0's {email, push, mqtt} (channel
-- switches) to channels, categories, quiet hours and locale
-- (docs/services/account.md): each user's switches move under "channels",
-- push becoming the webhook channel that stands in for push providers, and
-- the in-app channel on.  Anything else a row held is dropped: 0.1.0 took
-- only those three keys.
ALTER TABLE account.users ALTER COLUMN notification_preferences
    SET DEFAULT '{"channels": {"email": true, "webhook": true, "mqtt": true, "inapp": true}, "categories": {}, "quiet_hours": null, "locale": "en"}';
UPDATE account.users u
   SET notification_preferences = jsonb_build_object(
           'channels', jsonb_build_object(
               'email',   coalesce((u.notification_preferences ->> 'email')::boolean, true),
               'webhook', coalesce((u.notification_preferences ->> 'push')::boolean, true),
               'mqtt',    coalesce((u.notification_preferences ->> 'mqtt')::boolean, false),
               'inapp',   true),
           'categories', '{}'::jsonb, 'quiet_hours', 'null'::jsonb, 'locale', 'en')
 WHERE NOT u.notification_preferences ? 'channels';
