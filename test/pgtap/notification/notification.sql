-- notification.sql — the notification service: the catalogue (events,
-- subscriptions, categories, job), templates and rendering, quiet hours,
-- backoff with full jitter, the handlers (one notification per event and
-- recipient, a delivery per channel the preferences and the category choose,
-- an event handled twice notifying once), the senders' functions
-- (claim_deliveries, record_delivery, next_due: leases, retries, failure,
-- notification.failed and the fallback channel), in-app (list, paging,
-- unread, mark read), MQTT through device commands, webhooks, every error
-- with its SQLSTATE, and privileges.
-- Through NATS, the bridge and MQTT: test/integration/64-notification-chain.sh.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(154);

-- Users by label: ann (German, a frame in her family), ben (a member of
-- ann's family), cat (quiet hours around now), dan (no device), eve (outside).
CREATE TEMP TABLE u (label text PRIMARY KEY, id uuid, email text) ON COMMIT DROP;
CREATE FUNCTION pg_temp.uid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.u WHERE label = l$$;
INSERT INTO u
SELECT l, (account.create_user(e, CASE l WHEN 'ann' THEN 'Zoë Müller' ELSE initcap(l) END)).user_id, e
  FROM unnest(ARRAY['ann', 'ben', 'cat', 'dan', 'eve']) l,
       LATERAL (SELECT 'ntf-' || l || '-' || gen_random_uuid() || '@example.test' AS e) m;
SELECT account.set_notification_preferences(pg_temp.uid('ann'), '{"locale": "de"}');
CREATE TEMP TABLE o (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
INSERT INTO o SELECT 'fam', org_id FROM organization.create_organization(pg_temp.uid('ann'), 'family', 'Müllers');
CREATE FUNCTION pg_temp.oid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.o WHERE label = l$$;
SELECT organization.accept_invitation(pg_temp.uid('ben'),
           (organization.invite_member(pg_temp.uid('ann'), pg_temp.oid('fam'), (SELECT email FROM u WHERE label = 'ben'))).token);
CREATE TEMP TABLE d (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
INSERT INTO d SELECT 'frame', device_id
  FROM device.register_device(pg_temp.uid('ann'), 'SN-NTF-' || txid_current(), 'frame-1', sha256('ntf-key'::bytea),
                              'Wohnzimmer', pg_temp.oid('fam'));
SELECT device.heartbeat((SELECT id FROM d WHERE label = 'frame'));

CREATE FUNCTION pg_temp.event(event_type text, source text, data jsonb) RETURNS isa.event LANGUAGE sql AS $$
    SELECT isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(), 'event_type', event_type, 'source', source,
                                                  'timestamp', now(), 'data', data)) $$;
CREATE FUNCTION pg_temp.low(l text) RETURNS isa.event LANGUAGE sql AS $$
    SELECT pg_temp.event('wallet.balance.low', 'wallet_service',
        jsonb_build_object('wallet_id', gen_random_uuid(), 'user_id', pg_temp.uid(l), 'balance', 5, 'threshold', 10)) $$;
-- The deliveries of a user's notifications, as 'channel state', in channel order.
CREATE FUNCTION pg_temp.deliveries(n uuid) RETURNS text[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(channel || ' ' || state ORDER BY channel), '{}') FROM notification.deliveries WHERE notification_id = n $$;
CREATE FUNCTION pg_temp.dl(n uuid, ch text) RETURNS notification.deliveries LANGUAGE sql AS $$
    SELECT * FROM notification.deliveries WHERE notification_id = n AND channel = ch $$;
CREATE TEMP VIEW ev AS
SELECT x.id, x.event_type, x.data FROM notification.outbox x
 WHERE x.data ->> 'user_id' IN (SELECT id::text FROM u) OR x.data ->> 'user_id' IS NULL;
CREATE TEMP TABLE keep (k text PRIMARY KEY, v text) ON COMMIT DROP;

-- ---------------------------------------------------------------- the catalogue
SELECT set_eq($$SELECT event_type || ' ' || (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(data_fields) k)
                 FROM isa.event_types WHERE source = 'notification_service' AND event_type <> 'event.dead_lettered'$$,
              ARRAY['notification.sent attempts,category,channel,delivery_id,kind,notification_id,user_id',
                    'notification.failed attempts,category,channel,delivery_id,error,fallback_channel,kind,notification_id,user_id'],
              'notification_service''s two events are registered with their data fields');
SELECT is((SELECT (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(data_fields) k)
             FROM isa.event_types WHERE source = 'external' AND event_type = 'task.assigned'),
          'assigned_by,due_at,task_id,title,user_id', 'external task.assigned is in the catalogue');
SELECT set_eq($$SELECT subject_filter || ' ' || handler::text || ' ' || (options ->> 'deliver_policy')
                 FROM isa.subscriptions WHERE service = 'notification' AND handler::text LIKE 'notification.%'$$,
              ARRAY['payment_service.payment.completed notification.on_payment_completed(isa.event) new',
                    'wallet_service.wallet.balance.low notification.on_balance_low(isa.event) new',
                    'wallet_service.wallet.tokens.insufficient notification.on_tokens_insufficient(isa.event) new',
                    'organization_service.organization.member_invited notification.on_member_invited(isa.event) new',
                    'device_service.device.offline notification.on_device_offline(isa.event) new',
                    'auth_service.user.logged_in notification.on_logged_in(isa.event) new',
                    'ota_service.ota.update_available notification.on_update_available(isa.event) new',
                    'ota_service.ota.update_failed notification.on_update_failed(isa.event) new',
                    'external.task.assigned notification.on_task_assigned(isa.event) new',
                    'account_service.user.deleted notification.on_user_deleted(isa.event) new'],
              'notification subscribes to its ten events, from now on (deliver_policy new)');
SELECT is((SELECT command FROM isa.scheduled_jobs WHERE jobname = 'isa-notification-due'),
          'SELECT notification.process_due()', 'its job releases what quiet hours deferred');
SELECT is((SELECT array_agg(category || ':' || critical ORDER BY category) FROM notification.list_categories()),
          ARRAY['devices:false', 'family:false', 'payment:true', 'security:true', 'tasks:false', 'wallet:false'],
          'six categories; security and payment are critical');
SELECT is((SELECT count(*) FROM notification._kinds() k LEFT JOIN notification.list_categories() c USING (category)
            WHERE c.category IS NULL OR (SELECT count(*) FROM notification._templates() t WHERE t.kind = k.kind AND t.locale IN ('en', 'de')) <> 2),
          0::bigint, 'every kind has a category and an English and a German template');

-- ---------------------------------------------------------------- templates
SELECT is(notification._render('Hi {{name}}, {{ balance }} of {{threshold}}{{missing}}!', '{"name": "Zoë", "balance": 5, "threshold": "10"}'),
          'Hi Zoë, 5 of 10!', 'render: variables by name, numbers as text, a missing one empty');
SELECT is(notification._render('{{a}} and {{b}}', '{"a": "{{b}}", "b": "x"}'), '{{b}} and x',
          'render: one pass, a value is never read as a template');
SELECT is(notification._render('Subject {{t}}', jsonb_build_object('t', E'a\r\nBcc: x@example.com')), 'Subject a Bcc: x@example.com',
          'render: a value''s control characters become a space (no header injection)');
SELECT is((SELECT locale FROM notification._template('wallet.balance_low', 'de-AT')), 'de', 'de-AT falls back to de');
SELECT is((SELECT locale FROM notification._template('wallet.balance_low', 'fr')), 'en', 'fr falls back to en');

-- ---------------------------------------------------------------- quiet hours and backoff
SELECT is(notification._quiet_until('{"quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Europe/Berlin"}}',
                                    '2025-01-15 23:30+01'), '2025-01-16 07:00+01'::timestamptz,
          'quiet hours spanning midnight, before it: they end the next morning (Berlin time)');
SELECT is(notification._quiet_until('{"quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Europe/Berlin"}}',
                                    '2025-07-15 06:59:59+02'), '2025-07-15 07:00+02'::timestamptz,
          'after midnight, in summer time: they end that morning');
SELECT is(notification._quiet_until('{"quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Europe/Berlin"}}',
                                    '2025-01-15 07:00+01'), NULL, 'at their end they are over');
SELECT is(notification._quiet_until('{"quiet_hours": {"start": "13:00", "end": "14:00", "time_zone": "America/New_York"}}',
                                    '2025-01-15 18:30+00'), '2025-01-15 14:00-05'::timestamptz,
          'quiet hours within a day, in the user''s time zone');
SELECT is(notification._quiet_until('{"quiet_hours": null}', now()), NULL, 'no quiet hours: none');
SELECT is(notification._backoff(1, 0), '0'::interval, 'full jitter may wait nothing');
SELECT is(notification._backoff(3, 0.5), '2 seconds'::interval, 'the third attempt''s cap is base × 4 (jitter 0.5: 2 s)');
SELECT is(notification._backoff(40, 0.5), '150 seconds'::interval, 'the cap is isa.notification_retry_max (300 s)');
SELECT ok((SELECT bool_and(b >= '0'::interval AND b <= make_interval(secs => least(power(2, a - 1), 300)))
             FROM generate_series(1, 12) a, LATERAL (SELECT notification._backoff(a) AS b FROM generate_series(1, 50)) x),
          'six hundred random backoffs stay within [0, min(base × 2^(n−1), max)]');
SELECT ok((SELECT count(DISTINCT notification._backoff(10)) FROM generate_series(1, 50)) > 40, 'and they are jittered');

-- ---------------------------------------------------------------- a low balance, ann: in-app, MQTT, email
INSERT INTO keep SELECT 'low_ann', isa.event_to_json(pg_temp.low('ann'))::text;
SELECT notification.on_balance_low(isa.event_from_json((SELECT v::jsonb FROM keep WHERE k = 'low_ann')));
INSERT INTO keep SELECT 'n_ann', notification_id FROM notification.notifications
 WHERE event_id = (SELECT (v::jsonb ->> 'id')::uuid FROM keep WHERE k = 'low_ann');
CREATE FUNCTION pg_temp.k(key text) RETURNS uuid LANGUAGE sql AS $$SELECT v::uuid FROM pg_temp.keep WHERE k = key$$;
SELECT is((SELECT title || ' | ' || locale || ' | ' || kind || ' | ' || category FROM notification.notifications WHERE notification_id = pg_temp.k('n_ann')),
          'Ihr Guthaben ist niedrig: 5 Tokens | de | wallet.balance_low | wallet', 'one notification in ann''s locale, from the template');
SELECT is(pg_temp.deliveries(pg_temp.k('n_ann')), ARRAY['email pending', 'inapp sent', 'mqtt sent'],
          'the wallet category''s channels: in-app stored, MQTT queued, email waiting for its sender');
SELECT is((pg_temp.dl(pg_temp.k('n_ann'), 'email')).payload,
          jsonb_build_object('to', (SELECT email FROM u WHERE label = 'ann'), 'to_name', 'Zoë Müller',
                             'subject', 'Ihr Guthaben ist niedrig: 5 Tokens', 'locale', 'de',
                             'text', E'Hallo Zoë Müller,\n\nIhr Wallet enthält nur noch 5 Tokens, weniger als Ihre Schwelle von 10. Laden Sie es auf, um weiterzumachen.'),
          'the email''s payload: address, name, subject and text in UTF-8');
SELECT is((pg_temp.dl(pg_temp.k('n_ann'), 'email')).idempotency_key,
          (SELECT (v::jsonb ->> 'id') FROM keep WHERE k = 'low_ann') || ':' || pg_temp.uid('ann') || ':email',
          'its idempotency key is <event id>:<recipient>:<channel>');
SELECT is((SELECT command || ' ' || state || ' ' || (args ->> 'notification_id') || ' ' || (args ->> 'title') FROM device.commands
            WHERE device_id = (SELECT id FROM d WHERE label = 'frame') AND command = 'notification.show'),
          'notification.show sent ' || pg_temp.k('n_ann') || ' Ihr Guthaben ist niedrig: 5 Tokens',
          'MQTT: ann''s online frame was sent notification.show on the command path');
SELECT is((SELECT array_agg(data ->> 'channel' ORDER BY id) FROM ev WHERE event_type = 'notification.sent'
            AND data ->> 'notification_id' = pg_temp.k('n_ann')::text), ARRAY['inapp', 'mqtt'],
          'notification.sent for in-app and MQTT');
SELECT is(notification._notify(isa.event_from_json((SELECT v::jsonb FROM keep WHERE k = 'low_ann')), 'wallet.balance_low', '{}',
                               pg_temp.uid('ann')), NULL, 'the same event again notifies nobody');
SELECT notification.on_balance_low(isa.event_from_json((SELECT v::jsonb FROM keep WHERE k = 'low_ann')));
SELECT is((SELECT count(*) FROM notification.deliveries d JOIN notification.notifications n USING (notification_id)
            WHERE n.event_id = (SELECT (v::jsonb ->> 'id')::uuid FROM keep WHERE k = 'low_ann')), 3::bigint,
          'handled twice: still one delivery per channel');
SELECT is((SELECT count(*) FROM device.commands WHERE command = 'notification.show'
            AND device_id = (SELECT id FROM d WHERE label = 'frame')), 1::bigint, 'and one command to the frame');

-- ---------------------------------------------------------------- preferences
SELECT account.set_notification_preferences(pg_temp.uid('ben'), '{"categories": {"wallet": {"email": false}}}');
SELECT notification.on_balance_low(pg_temp.low('ben'));
SELECT is(pg_temp.deliveries((SELECT notification_id FROM notification.notifications WHERE user_id = pg_temp.uid('ben'))),
          ARRAY['inapp sent', 'mqtt sent'], 'ben switched email off for wallet alerts: in-app and MQTT (the family''s frame)');
SELECT account.set_notification_preferences(pg_temp.uid('dan'), '{"channels": {"inapp": false}}');
SELECT notification.on_balance_low(pg_temp.low('dan'));
SELECT is(pg_temp.deliveries((SELECT notification_id FROM notification.notifications WHERE user_id = pg_temp.uid('dan'))),
          ARRAY['email pending'], 'dan: no device (no MQTT), in-app switched off: email only');
SELECT notification.on_payment_completed(pg_temp.event('payment.completed', 'payment_service',
    jsonb_build_object('payment_id', gen_random_uuid(), 'user_id', pg_temp.uid('dan'), 'amount', 1999, 'currency', 'eur', 'tokens', 500)));
SELECT is((SELECT array_agg(channel || ' ' || state ORDER BY channel) FROM notification.deliveries d JOIN notification.notifications n USING (notification_id)
            WHERE n.user_id = pg_temp.uid('dan') AND n.kind = 'payment.receipt'), ARRAY['email pending', 'inapp sent'],
          'a critical category''s in-app cannot be switched off');
SELECT is((SELECT title FROM notification.notifications WHERE user_id = pg_temp.uid('dan') AND kind = 'payment.receipt'),
          'Receipt: 19.99 EUR', 'the receipt shows the amount in major units');

-- ---------------------------------------------------------------- quiet hours
SELECT account.set_notification_preferences(pg_temp.uid('cat'), jsonb_build_object('quiet_hours', jsonb_build_object(
    'start', to_char((now() - interval '1 hour') AT TIME ZONE 'Asia/Tokyo', 'HH24:MI'),
    'end', to_char((now() + interval '1 hour') AT TIME ZONE 'Asia/Tokyo', 'HH24:MI'), 'time_zone', 'Asia/Tokyo')));
SELECT notification.on_balance_low(pg_temp.low('cat'));
INSERT INTO keep SELECT 'n_cat', notification_id FROM notification.notifications WHERE user_id = pg_temp.uid('cat') AND kind = 'wallet.balance_low';
SELECT is(pg_temp.deliveries(pg_temp.k('n_cat')), ARRAY['email deferred', 'inapp sent'],
          'in cat''s quiet hours the email is deferred; in-app, silent, is stored');
SELECT ok((pg_temp.dl(pg_temp.k('n_cat'), 'email')).next_attempt_at BETWEEN now() + interval '59 minutes' AND now() + interval '61 minutes',
          'until the quiet hours end (in an hour, Tokyo time)');
SELECT ok(notification.next_due('email') <= (pg_temp.dl(pg_temp.k('n_cat'), 'email')).next_attempt_at,
          'next_due tells the email sender when it is due at the latest');
SELECT notification.on_logged_in(pg_temp.event('user.logged_in', 'auth_service',
    jsonb_build_object('user_id', pg_temp.uid('cat'), 'session_id', gen_random_uuid(), 'method', 'password')));
SELECT is((SELECT array_agg(channel || ' ' || state ORDER BY channel) FROM notification.deliveries d JOIN notification.notifications n USING (notification_id)
            WHERE n.user_id = pg_temp.uid('cat') AND n.kind = 'auth.welcome_back'), ARRAY['email pending', 'inapp sent'],
          'a security notification (critical) is not deferred');
SELECT alike((SELECT body FROM notification.notifications WHERE user_id = pg_temp.uid('cat') AND kind = 'auth.welcome_back'),
            '%you signed in at ____-__-__ __:__ Asia/Tokyo.%', 'welcome back, with the time in the user''s time zone');
SELECT is((SELECT n FROM notification.process_due()), 0::bigint, 'process_due now releases nothing');
SELECT is((SELECT n FROM notification.process_due(now() + interval '61 minutes')), 1::bigint, 'when the quiet hours are over it releases the email');
SELECT is((pg_temp.dl(pg_temp.k('n_cat'), 'email')).state, 'pending', 'which is pending now');
SELECT ok((pg_temp.dl(pg_temp.k('n_cat'), 'email')).next_attempt_at <= now(), 'and due');

-- ---------------------------------------------------------------- the senders: claim, record, retries
-- Only this file's deliveries are claimed: others' wait.
UPDATE notification.deliveries x SET next_attempt_at = now() + interval '1 day'
 WHERE x.state IN ('pending', 'deferred') AND x.user_id NOT IN (SELECT id FROM u);
CREATE TEMP TABLE claimed ON COMMIT DROP AS SELECT * FROM notification.claim_deliveries('email', 2, 30);
SELECT is((SELECT array_agg(delivery_id ORDER BY delivery_id) FROM claimed),
          (SELECT array_agg(delivery_id ORDER BY delivery_id) FROM (SELECT delivery_id FROM notification.deliveries
             WHERE channel = 'email' AND user_id IN (SELECT id FROM u) ORDER BY delivery_id LIMIT 2) x),
          'claim_deliveries takes the oldest due email deliveries, p_max of them');
SELECT is((SELECT array_agg(DISTINCT state || ' ' || attempts) FROM notification.deliveries WHERE delivery_id IN (SELECT delivery_id FROM claimed)),
          ARRAY['sending 1'], 'they are sending, first attempt');
SELECT ok((SELECT bool_and(locked_until BETWEEN now() + interval '29 seconds' AND now() + interval '31 seconds')
             FROM notification.deliveries WHERE delivery_id IN (SELECT delivery_id FROM claimed)), 'leased for p_lease_seconds');
SELECT is((SELECT attempt FROM claimed WHERE delivery_id = (pg_temp.dl(pg_temp.k('n_ann'), 'email')).delivery_id), 1,
          'each with its attempt number');
SELECT is((SELECT payload ->> 'to_name' FROM claimed WHERE delivery_id = (pg_temp.dl(pg_temp.k('n_ann'), 'email')).delivery_id), 'Zoë Müller',
          'and its payload');
SELECT is((SELECT count(*) FROM notification.claim_deliveries('email', 1000) c WHERE c.delivery_id IN (SELECT delivery_id FROM claimed)),
          0::bigint, 'a leased delivery is not claimed again');
UPDATE notification.deliveries SET locked_until = now() - interval '1 second'
 WHERE delivery_id = (pg_temp.dl(pg_temp.k('n_ann'), 'email')).delivery_id;
SELECT is((SELECT attempt FROM notification.claim_deliveries('email', 1000) c WHERE c.delivery_id = (pg_temp.dl(pg_temp.k('n_ann'), 'email')).delivery_id),
          2, 'one whose lease expired (its sender died) is claimed again: second attempt');
SELECT ok(notification.next_due('email') <= (SELECT min(locked_until) FROM notification.deliveries WHERE channel = 'email' AND state = 'sending'),
          'next_due tells the sender when the next lease ends or delivery is due');

-- ann's email: a transient failure, then, at the second attempt of two, failure and the fallback (her webhook)
SELECT is((notification.register_webhook(pg_temp.uid('ann'), 'https://hooks.example.com/ann')).url, 'https://hooks.example.com/ann',
          'ann registers a webhook');
SET LOCAL isa.notification_max_attempts = 3;
SELECT is(notification.record_delivery((pg_temp.dl(pg_temp.k('n_ann'), 'email')).delivery_id, false, true, '421 try later'), 'pending',
          'a transient failure before the last attempt: pending again');
SELECT ok((SELECT next_attempt_at BETWEEN now() AND now() + interval '2 seconds' AND last_error = '421 try later' AND locked_until IS NULL
             FROM notification.deliveries WHERE delivery_id = (pg_temp.dl(pg_temp.k('n_ann'), 'email')).delivery_id),
          'after a backoff within [0, base × 2) s, with its error');
UPDATE notification.deliveries SET next_attempt_at = now() WHERE delivery_id = (pg_temp.dl(pg_temp.k('n_ann'), 'email')).delivery_id;
SELECT is((SELECT attempt FROM notification.claim_deliveries('email', 1000) c WHERE c.delivery_id = (pg_temp.dl(pg_temp.k('n_ann'), 'email')).delivery_id),
          3, 'claimed again when due: third attempt');
SELECT is(notification.record_delivery((pg_temp.dl(pg_temp.k('n_ann'), 'email')).delivery_id, false, true, 'connection refused'), 'failed',
          'a transient failure at the last attempt fails it');
SELECT is((SELECT data - 'notification_id' - 'delivery_id' FROM ev WHERE event_type = 'notification.failed'
            AND data ->> 'delivery_id' = (pg_temp.dl(pg_temp.k('n_ann'), 'email')).delivery_id::text),
          jsonb_build_object('user_id', pg_temp.uid('ann'), 'channel', 'email', 'kind', 'wallet.balance_low', 'category', 'wallet',
                             'attempts', 3, 'error', 'connection refused', 'fallback_channel', 'webhook'),
          'notification.failed names the error and the fallback channel');
SELECT is((SELECT state || ' ' || (fallback_of = (pg_temp.dl(pg_temp.k('n_ann'), 'email')).delivery_id) FROM notification.deliveries
            WHERE notification_id = pg_temp.k('n_ann') AND channel = 'webhook'), 'pending true',
          'the next channel of the wallet category''s fallback order (webhook) has a delivery now');
SELECT is((SELECT payload -> 'body' ->> 'title' FROM notification.deliveries WHERE notification_id = pg_temp.k('n_ann') AND channel = 'webhook'),
          'Ihr Guthaben ist niedrig: 5 Tokens', 'carrying the notification');
SELECT is(notification.record_delivery((pg_temp.dl(pg_temp.k('n_ann'), 'email')).delivery_id, true), 'failed',
          'a late answer changes nothing: its state is returned');
CREATE TEMP TABLE wh ON COMMIT DROP AS SELECT * FROM notification.claim_deliveries('webhook', 1000)
 WHERE delivery_id = (pg_temp.dl(pg_temp.k('n_ann'), 'webhook')).delivery_id;
SELECT is((SELECT (payload ->> 'url') || ' ' || (payload ->> 'secret' LIKE 'whsec_%') || ' ' || (payload -> 'body' ->> 'notification_id') FROM wh),
          'https://hooks.example.com/ann true ' || pg_temp.k('n_ann'), 'the webhook''s claim carries url, secret and body');
SELECT is((SELECT payload ->> 'secret' FROM notification.deliveries WHERE delivery_id = (SELECT delivery_id FROM wh)), NULL,
          'the secret is not stored in the delivery');
SELECT is(notification.record_delivery((SELECT delivery_id FROM wh), true), 'sent', 'the webhook answered 2xx: sent');
SELECT is((SELECT data ->> 'attempts' FROM ev WHERE event_type = 'notification.sent' AND data ->> 'delivery_id' = (SELECT delivery_id FROM wh)::text),
          '1', 'notification.sent');
-- a permanent failure with nothing left: dan's email (in-app is off, he has no webhook nor device)
SELECT is(notification.record_delivery((SELECT x.delivery_id FROM notification.deliveries x JOIN notification.notifications n USING (notification_id)
                                         WHERE n.user_id = pg_temp.uid('dan') AND n.kind = 'wallet.balance_low'),
                                       false, false, '550 no such user'), 'failed', 'a permanent failure fails at once');
SELECT is((SELECT data ->> 'fallback_channel' FROM ev WHERE event_type = 'notification.failed' AND data ->> 'user_id' = pg_temp.uid('dan')::text),
          NULL, 'no fallback is left for dan (in-app switched off, no webhook, no device)');

-- A claim reads the due deliveries, not every delivery ever made: 3,000 sent
-- emails and 1,000 due ones after them (ids of 1970, before everyone's), the
-- statistics analyzed, a claim of one reads a few rows.  One OR over both
-- kinds of due deliveries ordered by delivery_id read the 1,000 due ones and
-- sorted them, or, when the planner would not sort (as in
-- bench/notification_fanout, 22 ms a claim at 40,000 deliveries: the email
-- sender at 155 emails/s), walked the primary key past the 3,000 sent ones.
CREATE FUNCTION pg_temp.rows_read() RETURNS bigint LANGUAGE sql AS $$
    SELECT pg_stat_get_xact_tuples_returned('notification.deliveries'::regclass)
           + pg_stat_get_xact_tuples_fetched('notification.deliveries'::regclass)
           + (SELECT sum(pg_stat_get_xact_tuples_returned(i.indexrelid)) FROM pg_index i
               WHERE i.indrelid = 'notification.deliveries'::regclass)::bigint $$;
WITH n AS (
    INSERT INTO notification.notifications (notification_id, event_id, recipient, email, kind, category, locale, title, body)
    SELECT ('00000000-000' || CASE WHEN g <= 3000 THEN 1 ELSE 2 END || '-7000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,
           gen_random_uuid(), 'email:claim-' || g || '@example.test', 'claim-' || g || '@example.test',
           'wallet.balance_low', 'wallet', 'en', 't', 'b'
      FROM generate_series(1, 4000) g
    RETURNING notification_id)
INSERT INTO notification.deliveries (delivery_id, notification_id, channel, state, attempts, next_attempt_at, sent_at,
                                     idempotency_key, payload)
SELECT notification_id, notification_id, 'email', CASE WHEN sent THEN 'sent' ELSE 'pending' END, sent::int,
       CASE WHEN NOT sent THEN now() END, CASE WHEN sent THEN now() END, 'claim:' || notification_id, '{"to": "c@example.test"}'
  FROM n, LATERAL (SELECT notification_id < '00000000-0002-0000-0000-000000000000' AS sent) s;
ANALYZE notification.deliveries;
INSERT INTO keep VALUES ('read', pg_temp.rows_read());
SELECT is((SELECT delivery_id FROM notification.claim_deliveries('email', 1)), '00000000-0002-7000-8000-000000000bb9'::uuid,
          'a claim of one takes the longest due delivery (the oldest of those due at the same time)');
SELECT cmp_ok(pg_temp.rows_read() - (SELECT v::bigint FROM keep WHERE k = 'read'), '<', 100::bigint,
              'reading a few rows, not the 1,000 due nor the 3,000 sent ones (deliveries_due and deliveries_leased, in their order)');
SET LOCAL enable_bitmapscan = off;
SET LOCAL enable_sort = off;
UPDATE keep SET v = pg_temp.rows_read() WHERE k = 'read';
SELECT is((SELECT count(*) FROM notification.claim_deliveries('email', 1)), 1::bigint, 'a planner that will not sort');
SELECT cmp_ok(pg_temp.rows_read() - (SELECT v::bigint FROM keep WHERE k = 'read'), '<', 100::bigint,
              'reads as few');
RESET enable_bitmapscan;
RESET enable_sort;
DELETE FROM notification.deliveries WHERE delivery_id < '00000000-0003-0000-0000-000000000000';
DELETE FROM notification.notifications WHERE notification_id < '00000000-0003-0000-0000-000000000000';

-- ---------------------------------------------------------------- the senders' errors and privileges
SELECT throws_ok($$SELECT * FROM notification.claim_deliveries('mqtt')$$, '22023', 'a sender delivers email or webhook, not "mqtt"',
                 'claim_deliveries of another channel is 22023');
SELECT throws_ok($$SELECT * FROM notification.claim_deliveries('email', 0)$$, '22023', NULL, 'p_max 0 is 22023');
SELECT throws_ok($$SELECT * FROM notification.claim_deliveries('email', 10, 0)$$, '22023', NULL, 'a lease of 0 s is 22023');
SELECT throws_ok($$SELECT * FROM notification.claim_deliveries(NULL)$$, '22004', NULL, 'a NULL channel is 22004');
SELECT throws_ok($$SELECT notification.record_delivery('00000000-0000-7000-8000-000000000001', true)$$, 'P0002',
                 'delivery 00000000-0000-7000-8000-000000000001 not found', 'record_delivery of an unknown delivery is P0002');
SELECT throws_ok($$SELECT notification.record_delivery('00000000-0000-7000-8000-000000000001', NULL)$$, '22004', NULL,
                 'record_delivery without an outcome is 22004');
SELECT throws_ok($$SELECT notification.next_due('inapp')$$, '22023', NULL, 'next_due of in-app is 22023');
SELECT ok(NOT has_function_privilege('isa_app', 'notification.claim_deliveries(text, integer, integer)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'notification.record_delivery(uuid, boolean, boolean, text)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'notification.next_due(text)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'notification.process_due(timestamptz)', 'EXECUTE'),
          'the applications cannot claim, record or release deliveries');
SELECT ok(has_function_privilege('isa_svc_notification', 'notification.claim_deliveries(text, integer, integer)', 'EXECUTE')
          AND has_function_privilege('isa_svc_notification', 'notification.record_delivery(uuid, boolean, boolean, text)', 'EXECUTE')
          AND has_function_privilege('isa_svc_notification', 'notification.next_due(text)', 'EXECUTE'),
          'the senders'' role (isa_svc_notification) can');
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'notification'::regnamespace AND has_function_privilege('isa_app', p.oid, 'EXECUTE')$$,
              ARRAY['notification.list_categories()', 'notification.list_notifications(uuid,boolean,uuid,integer)',
                    'notification.unread_count(uuid)', 'notification.mark_read(uuid,uuid)', 'notification.mark_all_read(uuid)',
                    'notification.register_webhook(uuid,text,uuid)', 'notification.list_webhooks(uuid)',
                    'notification.delete_webhook(uuid,uuid)'],
              'isa_app executes the eight API functions, nothing else');
SELECT ok(NOT has_table_privilege('isa_app', 'notification.deliveries', 'SELECT')
          AND NOT has_table_privilege('isa_app', 'notification.webhooks', 'SELECT'), 'and reads no table');
SELECT ok(NOT has_column_privilege('isa_admin', 'notification.webhooks', 'secret', 'SELECT')
          AND has_column_privilege('isa_admin', 'notification.webhooks', 'url', 'SELECT'),
          'isa_admin sees webhooks but not their secrets');
SELECT ok(NOT has_function_privilege('isa_app', 'device.notify_user_devices(uuid, jsonb, integer)', 'EXECUTE')
          AND has_function_privilege('isa_svc_notification', 'device.notify_user_devices(uuid, jsonb, integer)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'device.user_devices(uuid)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'organization.member_ids(uuid)', 'EXECUTE'),
          'device.notify_user_devices, device.user_devices and organization.member_ids are the notification service''s only');

-- ---------------------------------------------------------------- MQTT through device commands
SELECT is((SELECT array_agg(x) FROM device.user_devices(pg_temp.uid('ben')) x), ARRAY[(SELECT id FROM d WHERE label = 'frame')],
          'ben sees his family''s frame');
SELECT is((SELECT count(*) FROM device.user_devices(pg_temp.uid('eve'))), 0::bigint, 'eve sees none');
SELECT throws_ok(format('SELECT device.notify_user_devices(%L, %L, 60)', pg_temp.uid('ann'), '{"title": "x"}'), '22023', NULL,
                 'notify_user_devices needs a notification_id');
SELECT throws_ok(format('SELECT device.notify_user_devices(%L, %L, 5)', pg_temp.uid('ann'), jsonb_build_object('notification_id', gen_random_uuid())),
                 '22023', NULL, 'and an expiry of at least 10 s');
SELECT is(device.notify_user_devices(pg_temp.uid('eve'), jsonb_build_object('notification_id', gen_random_uuid()), 60), 0,
          'a user without devices: 0');
-- cat gets a frame, offline: a deferred MQTT notification is released when the frame is gone
INSERT INTO d SELECT 'cats', device_id
  FROM device.register_device(pg_temp.uid('cat'), 'SN-NTF-CAT-' || txid_current(), 'frame-1', sha256('ntf-cat'::bytea), 'Küche');
SELECT notification.on_tokens_insufficient(pg_temp.event('wallet.tokens.insufficient', 'wallet_service',
    jsonb_build_object('wallet_id', gen_random_uuid(), 'user_id', pg_temp.uid('cat'), 'requested', 50, 'balance', 5, 'reference_type', 'billing')));
INSERT INTO keep SELECT 'n_cat2', notification_id FROM notification.notifications WHERE user_id = pg_temp.uid('cat') AND kind = 'wallet.tokens_insufficient';
SELECT is(pg_temp.deliveries(pg_temp.k('n_cat2')), ARRAY['email deferred', 'inapp sent', 'mqtt deferred'],
          'cat''s MQTT alert waits for the end of her quiet hours too');
SELECT is((SELECT count(*) FROM notification.claim_deliveries('email', 1000) c WHERE c.delivery_id = (pg_temp.dl(pg_temp.k('n_cat2'), 'email')).delivery_id),
          0::bigint, 'a sender does not claim a deferred delivery before its time');
SELECT device.decommission_device(pg_temp.uid('cat'), (SELECT id FROM d WHERE label = 'cats'));
SELECT notification.process_due(now() + interval '61 minutes');
SELECT is(pg_temp.deliveries(pg_temp.k('n_cat2')), ARRAY['email pending', 'inapp sent', 'mqtt failed'],
          'released when her frame is gone: MQTT fails (no device), and email, already there, is no fallback');
SELECT is((SELECT data ->> 'error' FROM ev WHERE event_type = 'notification.failed' AND data ->> 'notification_id' = pg_temp.k('n_cat2')::text),
          'no device to show it on', 'notification.failed says why');

-- ---------------------------------------------------------------- in-app
SELECT is((SELECT count(*) FROM notification.list_notifications(pg_temp.uid('cat'))), 3::bigint,
          'cat lists her three in-app notifications');
SELECT is((SELECT array_agg(kind) FROM notification.list_notifications(pg_temp.uid('cat'))),
          ARRAY['wallet.tokens_insufficient', 'auth.welcome_back', 'wallet.balance_low'], 'newest first');
SELECT is((SELECT array_agg(kind) FROM notification.list_notifications(pg_temp.uid('cat'), row_limit => 2)),
          ARRAY['wallet.tokens_insufficient', 'auth.welcome_back'], 'a page of two');
SELECT is((SELECT array_agg(kind) FROM notification.list_notifications(pg_temp.uid('cat'), before_id =>
             (SELECT notification_id FROM notification.notifications WHERE user_id = pg_temp.uid('cat') AND kind = 'auth.welcome_back'))),
          ARRAY['wallet.balance_low'], 'the next page after the last one seen');
SELECT is(notification.unread_count(pg_temp.uid('cat')), 3::bigint, 'three unread');
SELECT is(notification.mark_read(pg_temp.uid('cat'), pg_temp.k('n_cat')), true, 'mark_read: true the first time');
SELECT is(notification.mark_read(pg_temp.uid('cat'), pg_temp.k('n_cat')), false, 'false the second');
SELECT is(notification.unread_count(pg_temp.uid('cat')), 2::bigint, 'two unread');
SELECT is((SELECT array_agg(kind) FROM notification.list_notifications(pg_temp.uid('cat'), unread_only => true)),
          ARRAY['wallet.tokens_insufficient', 'auth.welcome_back'], 'unread_only lists those');
SELECT throws_ok(format('SELECT notification.mark_read(%L, %L)', pg_temp.uid('eve'), pg_temp.k('n_cat')), 'P0002',
                 format('notification %s not found', pg_temp.k('n_cat')), 'another user''s notification is P0002');
SELECT throws_ok(format('SELECT notification.mark_read(%L, %L)', pg_temp.uid('cat'), '00000000-0000-7000-8000-000000000002'), 'P0002',
                 'notification 00000000-0000-7000-8000-000000000002 not found', 'as is one that does not exist');
SELECT is((SELECT count(*) FROM notification.list_notifications(pg_temp.uid('dan')) WHERE kind = 'wallet.balance_low'), 0::bigint,
          'a notification without in-app delivery is not listed');
SELECT is(notification.mark_all_read(pg_temp.uid('cat')), 2::bigint, 'mark_all_read marks the two others');
SELECT is(notification.unread_count(pg_temp.uid('cat')), 0::bigint, 'none unread');
SELECT throws_ok($$SELECT * FROM notification.list_notifications('00000000-0000-7000-8000-000000000003')$$, 'P0002', NULL,
                 'list_notifications of an unknown user is P0002');
SELECT throws_ok(format('SELECT * FROM notification.list_notifications(%L, row_limit => 0)', pg_temp.uid('cat')), '22023', NULL,
                 'row_limit 0 is 22023');
SELECT throws_ok($$SELECT notification.unread_count(NULL)$$, '22004', NULL, 'unread_count(NULL) is 22004');

-- ---------------------------------------------------------------- webhooks
SELECT ok((SELECT secret ~ '^whsec_[A-Za-z0-9_-]{43}$' FROM notification.register_webhook(pg_temp.uid('ben'), ' https://hooks.example.com/ben ')),
          'register_webhook returns a whsec_ secret (32 random bytes)');
INSERT INTO keep SELECT 'ben_secret', secret FROM notification.webhooks WHERE user_id = pg_temp.uid('ben');
SELECT is((SELECT url || ' ' || (secret <> (SELECT v FROM keep WHERE k = 'ben_secret'))
             FROM notification.register_webhook(pg_temp.uid('ben'), 'https://hooks.example.com/ben2')),
          'https://hooks.example.com/ben2 true', 'registering again replaces the url and the secret');
SELECT is((SELECT count(*) FROM notification.webhooks WHERE user_id = pg_temp.uid('ben')), 1::bigint, 'one webhook per user');
SELECT is((SELECT array_agg(url || ' ' || coalesce(secret, '-')) FROM notification.list_webhooks(pg_temp.uid('ben'))),
          ARRAY['https://hooks.example.com/ben2 -'], 'list_webhooks: the url, never the secret');
SELECT throws_ok(format('SELECT notification.register_webhook(%L, %L, %L)', pg_temp.uid('ben'), 'https://hooks.example.com/fam', pg_temp.oid('fam')),
                 '42501', NULL, 'a member who is not an owner or admin cannot register the family''s webhook');
SELECT is((notification.register_webhook(pg_temp.uid('ann'), 'https://hooks.example.com/fam', pg_temp.oid('fam'))).org_id, pg_temp.oid('fam'),
          'its owner can');
SELECT is((SELECT array_agg(coalesce(org_id::text, 'own') ORDER BY webhook_id) FROM notification.list_webhooks(pg_temp.uid('ann'))),
          ARRAY['own', pg_temp.oid('fam')::text], 'ann lists hers and her family''s');
SELECT is((SELECT count(*) FROM notification.list_webhooks(pg_temp.uid('ben')) WHERE org_id IS NOT NULL), 0::bigint,
          'ben does not see the family''s');
SELECT throws_ok(format('SELECT notification.register_webhook(%L, %L)', pg_temp.uid('eve'), 'ftp://hooks.example.com/'), '22023', NULL,
                 'a url that is not http(s) is 22023');
SELECT throws_ok(format('SELECT notification.register_webhook(%L, %L)', pg_temp.uid('eve'), 'https://user:pw@hooks.example.com/'), '22023', NULL,
                 'a url with credentials is 22023');
SELECT throws_ok(format('SELECT notification.register_webhook(%L, %L)', pg_temp.uid('eve'), 'http://127.0.0.1:8080/hook'), '22023',
                 'a webhook may not name a local or private address: "127.0.0.1"', 'a loopback address is 22023');
SELECT throws_ok(format('SELECT notification.register_webhook(%L, %L)', pg_temp.uid('eve'), 'http://[::1]/hook'), '22023', NULL,
                 'so is ::1');
SELECT throws_ok(format('SELECT notification.register_webhook(%L, %L)', pg_temp.uid('eve'), 'http://192.168.1.10/hook'), '22023', NULL,
                 'and a private one');
SELECT throws_ok(format('SELECT notification.register_webhook(%L, %L)', pg_temp.uid('eve'), 'http://localhost/hook'), '22023', NULL,
                 'and localhost');
SELECT throws_ok(format('SELECT notification.register_webhook(%L, %L)', pg_temp.uid('eve'), 'http://127.1/hook'), '22023',
                 'a webhook names an IP address as a dotted quad or in brackets, not "127.1"', 'an address a resolver would read as 127.0.0.1 is 22023');
SELECT throws_ok(format('SELECT notification.register_webhook(%L, %L)', pg_temp.uid('eve'), 'http://2130706433/hook'), '22023', NULL,
                 'so is one number');
SELECT throws_ok(format('SELECT notification.register_webhook(%L, %L)', pg_temp.uid('eve'), 'http://[::ffff:10.0.0.1]/hook'), '22023', NULL,
                 'and a mapped private address');
SELECT throws_ok(format('SELECT notification.register_webhook(%L, NULL)', pg_temp.uid('eve')), '22004', 'url must not be null',
                 'a NULL url is 22004');
SELECT throws_ok($$SELECT * FROM notification.list_webhooks('00000000-0000-7000-8000-000000000006')$$, 'P0002', NULL,
                 'list_webhooks of an unknown user is P0002');
SELECT throws_ok($$SELECT notification.mark_all_read('00000000-0000-7000-8000-000000000006')$$, 'P0002', NULL,
                 'mark_all_read of an unknown user is P0002');
SET LOCAL isa.notification_webhook_private = on;
SELECT is((notification.register_webhook(pg_temp.uid('eve'), 'http://127.0.0.1:8080/hook')).url, 'http://127.0.0.1:8080/hook',
          'isa.notification_webhook_private allows them');
SET LOCAL isa.notification_webhook_private = off;
SELECT throws_ok($$SELECT notification.register_webhook('00000000-0000-7000-8000-000000000004', 'https://hooks.example.com/')$$,
                 'P0002', NULL, 'register_webhook of an unknown user is P0002');
SELECT throws_ok(format('SELECT notification.delete_webhook(%L, %L)', pg_temp.uid('eve'),
                        (SELECT webhook_id FROM notification.webhooks WHERE user_id = pg_temp.uid('ben'))),
                 'P0002', NULL, 'deleting another user''s webhook is P0002');
SELECT throws_ok(format('SELECT notification.delete_webhook(%L, %L)', pg_temp.uid('ben'),
                        (SELECT webhook_id FROM notification.webhooks WHERE org_id = pg_temp.oid('fam'))),
                 '42501', NULL, 'a member deleting the family''s webhook is 42501');

-- ---------------------------------------------------------------- device.offline: the family, and its webhook
SELECT notification.on_device_offline(pg_temp.event('device.offline', 'device_service',
    jsonb_build_object('device_id', (SELECT id FROM d WHERE label = 'frame'), 'owner_id', pg_temp.uid('ann'),
                       'organization_id', pg_temp.oid('fam'), 'last_seen_at', '2025-01-15T21:00:00Z')));
SELECT is((SELECT array_agg(coalesce(user_id::text, recipient) ORDER BY recipient) FROM notification.notifications WHERE kind = 'device.offline'
            AND org_id = pg_temp.oid('fam')),
          (SELECT array_agg(x ORDER BY x) FROM unnest(ARRAY[pg_temp.uid('ann')::text, pg_temp.uid('ben')::text, 'org:' || pg_temp.oid('fam')]) x),
          'device.offline tells the owner, each member of the family, and the family''s webhook');
SELECT is((SELECT title FROM notification.notifications WHERE kind = 'device.offline' AND user_id = pg_temp.uid('ann')),
          'Wohnzimmer ist offline', 'by the device''s name, in ann''s German');
SELECT is((SELECT array_agg(channel || ' ' || state) FROM notification.deliveries d JOIN notification.notifications n USING (notification_id)
            WHERE n.kind = 'device.offline' AND n.user_id IS NULL), ARRAY['webhook pending'], 'the family''s notification goes to its webhook only');
SELECT is((SELECT array_agg(channel || ' ' || state ORDER BY channel) FROM notification.deliveries d JOIN notification.notifications n USING (notification_id)
            WHERE n.kind = 'device.offline' AND n.user_id = pg_temp.uid('ben')), ARRAY['email pending', 'inapp sent'],
          'ben''s by the devices category (in-app, email)');
-- deleting the family's webhook fails what was to go there
SELECT lives_ok(format('SELECT notification.delete_webhook(%L, %L)', pg_temp.uid('ann'),
                       (SELECT webhook_id FROM notification.webhooks WHERE org_id = pg_temp.oid('fam'))), 'its owner deletes the family''s webhook');
SELECT is((SELECT array_agg(state || ' ' || last_error) FROM notification.deliveries d JOIN notification.notifications n USING (notification_id)
            WHERE n.kind = 'device.offline' AND n.user_id IS NULL), ARRAY['failed webhook deleted'], 'its delivery failed');

-- OTA: the device's owner only
SELECT notification.on_update_available(pg_temp.event('ota.update_available', 'ota_service',
    jsonb_build_object('device_id', (SELECT id FROM d WHERE label = 'frame'), 'owner_id', pg_temp.uid('ann'),
                       'organization_id', pg_temp.oid('fam'), 'rollout_id', gen_random_uuid(), 'release_id', gen_random_uuid(),
                       'model', 'frame-1', 'version', '2.1.0', 'forced', false, 'command_id', gen_random_uuid())));
SELECT is((SELECT array_agg(user_id::text || ' ' || title) FROM notification.notifications WHERE kind = 'ota.update_available'),
          ARRAY[pg_temp.uid('ann') || ' Update für Wohnzimmer: 2.1.0'], 'an update offered to ann''s frame tells ann, not her family');
SELECT notification.on_update_failed(pg_temp.event('ota.update_failed', 'ota_service',
    jsonb_build_object('device_id', (SELECT id FROM d WHERE label = 'frame'), 'owner_id', pg_temp.uid('ann'),
                       'organization_id', pg_temp.oid('fam'), 'rollout_id', gen_random_uuid(), 'release_id', gen_random_uuid(),
                       'model', 'frame-1', 'version', '2.1.0', 'state', 'failed', 'reason', 'checksum mismatch')));
SELECT is((SELECT title || ' | ' || body FROM notification.notifications WHERE kind = 'ota.update_failed' AND user_id = pg_temp.uid('ann')),
          E'Update von Wohnzimmer fehlgeschlagen | Hallo Zoë Müller,\n\ndas Update von Wohnzimmer auf 2.1.0 ist fehlgeschlagen: checksum mismatch.',
          'a failed update tells her why');
SELECT notification.on_update_failed(pg_temp.event('ota.update_failed', 'ota_service',
    jsonb_build_object('device_id', gen_random_uuid(), 'owner_id', pg_temp.uid('ann'), 'version', '2.1.0', 'state', 'expired', 'reason', 'x')));
SELECT is((SELECT count(*) FROM notification.notifications WHERE kind = 'ota.update_failed'), 1::bigint,
          'an unknown device''s event tells nobody (a warning)');

-- ---------------------------------------------------------------- invitations, tasks, the malformed and the gone
SELECT notification.on_member_invited(pg_temp.event('organization.member_invited', 'organization_service',
    jsonb_build_object('invitation_id', gen_random_uuid(), 'org_id', pg_temp.oid('fam'), 'org_name', 'Müllers', 'org_kind', 'family',
                       'email', 'Nobody-' || txid_current() || '@Example.test', 'role', 'member', 'invited_by', pg_temp.uid('ann'),
                       'inviter_name', 'Zoë Müller', 'expires_at', '2030-01-01T00:00:00Z')));
SELECT is((SELECT recipient || ' ' || title FROM notification.notifications WHERE kind = 'organization.invitation' AND user_id IS NULL
            AND org_id = pg_temp.oid('fam')),
          'email:nobody-' || txid_current() || '@example.test Zoë Müller invited you to Müllers',
          'an invitation to an address without an account: to the address, in English');
SELECT is((SELECT array_agg(channel || ' ' || state || ' ' || (payload ->> 'to')) FROM notification.deliveries d JOIN notification.notifications n USING (notification_id)
            WHERE n.kind = 'organization.invitation' AND n.user_id IS NULL),
          ARRAY['email pending Nobody-' || txid_current() || '@Example.test'], 'by email only');
SELECT notification.on_member_invited(pg_temp.event('organization.member_invited', 'organization_service',
    jsonb_build_object('invitation_id', gen_random_uuid(), 'org_id', pg_temp.oid('fam'), 'org_name', 'Müllers', 'org_kind', 'family',
                       'email', upper((SELECT email FROM u WHERE label = 'eve')), 'role', 'guest', 'invited_by', pg_temp.uid('ann'),
                       'inviter_name', 'Zoë Müller', 'expires_at', '2030-01-01T00:00:00Z')));
SELECT is((SELECT array_agg(channel ORDER BY channel) FROM notification.deliveries d JOIN notification.notifications n USING (notification_id)
            WHERE n.kind = 'organization.invitation' AND n.user_id = pg_temp.uid('eve')), ARRAY['email', 'inapp'],
          'to an address with an account: to that user, by their preferences');
SELECT notification.on_task_assigned(pg_temp.event('task.assigned', 'external',
    jsonb_build_object('task_id', 'T-1', 'user_id', pg_temp.uid('ben'), 'title', 'Fotos sortieren')));
SELECT is((SELECT array_agg(channel || ' ' || state ORDER BY channel) FROM notification.deliveries d JOIN notification.notifications n USING (notification_id)
            WHERE n.kind = 'task.assigned' AND n.user_id = pg_temp.uid('ben')), ARRAY['inapp sent', 'webhook pending'],
          'an external task: in-app and ben''s webhook (the tasks category)');
SELECT notification.on_task_assigned(pg_temp.event('task.assigned', 'external', jsonb_build_object('task_id', 'T-2', 'user_id', pg_temp.uid('ben'))));
SELECT notification.on_balance_low(pg_temp.event('wallet.balance.low', 'wallet_service', '{"user_id": "nope"}'));
SELECT is((SELECT count(*) FROM notification.notifications WHERE data ->> 'task_id' = 'T-2'), 0::bigint,
          'a task without a title is ignored (a warning), as is an event without a user id');
SELECT notification.on_balance_low(pg_temp.event('wallet.balance.low', 'wallet_service',
    jsonb_build_object('user_id', '00000000-0000-7000-8000-000000000005', 'balance', 1, 'threshold', 2)));
SELECT is((SELECT count(*) FROM notification.notifications WHERE user_id = '00000000-0000-7000-8000-000000000005'), 0::bigint,
          'a user unknown (or deleted) is not notified');
SELECT is((SELECT count(*) FROM notification.deliveries x WHERE x.user_id IN (SELECT id FROM u) AND x.state = 'sent'),
          (SELECT count(*) FROM ev WHERE event_type = 'notification.sent' AND (data ->> 'user_id')::uuid IN (SELECT id FROM u)),
          'one notification.sent per sent delivery');

-- ---------------------------------------------------------------- user.deleted
CREATE TEMP TABLE bn AS SELECT count(*) AS n FROM notification.deliveries WHERE user_id = pg_temp.uid('ben');
SELECT ok((SELECT count(*) FROM notification.deliveries WHERE user_id = pg_temp.uid('ben') AND state IN ('pending', 'deferred')) > 0
          AND EXISTS (SELECT FROM notification.webhooks WHERE user_id = pg_temp.uid('ben')),
          'ben has deliveries waiting and a webhook');
SELECT notification.on_user_deleted(pg_temp.event('user.deleted', 'account_service', jsonb_build_object('user_id', pg_temp.uid('ben'))));
SELECT is((SELECT string_agg(DISTINCT state || ': ' || coalesce(last_error, ''), ', ') FROM notification.deliveries
            WHERE user_id = pg_temp.uid('ben') AND state NOT IN ('sent')), 'failed: the user was deleted',
          'user.deleted: what waited to be sent to ben fails, saying why');
SELECT is((SELECT count(*) FROM notification.deliveries WHERE user_id = pg_temp.uid('ben')), (SELECT n FROM bn),
          '… with no fallback delivery');
SELECT is((SELECT count(*) FROM notification.notifications WHERE user_id = pg_temp.uid('ben')
             AND (title <> '' OR body <> '' OR data <> '{}' OR email IS NOT NULL))
          + (SELECT count(*) FROM notification.deliveries WHERE user_id = pg_temp.uid('ben') AND payload <> '{}')
          + (SELECT count(*) FROM notification.webhooks WHERE user_id = pg_temp.uid('ben')), 0::bigint,
          'what ben''s notifications said is erased (rows kept) and his webhook is gone');
SELECT lives_ok(format($$SELECT notification.on_user_deleted(pg_temp.event('user.deleted', 'account_service', '{"user_id": "%s"}'));
                         SELECT notification.on_user_deleted(pg_temp.event('user.deleted', 'account_service', '{"user_id": 5}'))$$,
                       pg_temp.uid('ben')),
                'user.deleted again changes nothing; bad data is consumed with a warning');

SELECT * FROM finish();
ROLLBACK;
