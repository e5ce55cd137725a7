-- account.sql — the account service: users with a unique (case-insensitive)
-- email among live users, soft delete, create_user's idempotency key,
-- update_user's "changed" list, notification preferences, the events each
-- write puts in account.outbox, and who may call what.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(144);

-- Users this file creates, by label.
CREATE TEMP TABLE u (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
-- The outbox rows of this file's users, newest last.
CREATE TEMP VIEW ev AS
SELECT o.id, o.source, o.event_type, o.data, (SELECT label FROM u WHERE u.id::text = o.data ->> 'user_id') AS label
  FROM account.outbox o
 WHERE o.data ->> 'user_id' IN (SELECT id::text FROM u);

-- ---------------------------------------------------------------- schema
SELECT has_table('account', 'users', 'table account.users exists');
SELECT has_table('account', 'create_requests', 'table account.create_requests exists');
SELECT has_type('account', 'user_profile', 'type account.user_profile exists');
SELECT is((SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
            WHERE attrelid = (SELECT typrelid FROM pg_type WHERE oid = 'account.user_profile'::regtype)
              AND attnum > 0 AND NOT attisdropped),
          ARRAY['user_id', 'email', 'name', 'status', 'created_at', 'updated_at'],
          'user_profile is (user_id, email, name, status, created_at, updated_at) as the contract says');
SELECT set_eq($$SELECT event_type || ' ' || (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(data_fields) k)
                 FROM isa.event_types WHERE source = 'account_service' AND event_type LIKE 'user.%'$$,
              ARRAY['user.created created_at,email,name,user_id',
                    'user.updated changed,email,name,user_id',
                    'user.deleted deleted_at,user_id'],
              'user.created, user.updated and user.deleted are registered with the contract''s data fields');
SELECT is((SELECT count(*) FROM isa.subscriptions WHERE service = 'account'), 0::bigint,
          'account subscribes to nothing');

-- ---------------------------------------------------------------- create_user
INSERT INTO u SELECT 'alice', (account.create_user('  Alice@Example.COM ', ' Alice Liddell ')).user_id;
SELECT is((SELECT (p.email, p.name, p.status) FROM account.get_user((SELECT id FROM u WHERE label = 'alice')) p),
          ROW('Alice@Example.COM'::text, 'Alice Liddell'::text, 'active'::text)::record,
          'create_user stores the email and name trimmed, as typed otherwise, status active');
SELECT is((SELECT substr(id::text, 15, 1) FROM u WHERE label = 'alice'), '7', 'a user id is a UUIDv7');
SELECT is((SELECT p.created_at = now() AND p.updated_at = now()
             FROM account.get_user((SELECT id FROM u WHERE label = 'alice')) p),
          true, 'created_at and updated_at are the creating transaction''s time');
SELECT is((SELECT count(*) FROM ev WHERE label = 'alice'), 1::bigint, 'create_user writes one outbox row');
SELECT is((SELECT (source, event_type) FROM ev WHERE label = 'alice'),
          ROW('account_service'::text, 'user.created'::text)::record,
          'it is user.created from account_service');
SELECT is((SELECT data FROM ev WHERE label = 'alice'),
          jsonb_build_object('user_id', (SELECT id FROM u WHERE label = 'alice'), 'email', 'Alice@Example.COM',
                             'name', 'Alice Liddell',
                             'created_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
          'user.created carries user_id, email, name and created_at (RFC 3339 UTC)');

SELECT throws_ok($$SELECT account.create_user('alice@example.com', 'Other Alice')$$,
                 '23505', 'email "alice@example.com" is already taken',
                 'an email taken by a live user (in another case) is 23505');
SELECT lives_ok($$SELECT account.create_user('first.last+tag@mail.sub-domain.example.org', 'Plus Address')$$,
                'dots, plus tags, subdomains and hyphens are valid');
SELECT lives_ok($$SELECT account.create_user('o''brien_{x}@example.io', 'O''Brien')$$,
                'apostrophes, underscores and braces are valid in the local part');
SELECT lives_ok($$SELECT account.create_user('ivan@xn--80ak6aa92e.xn--p1ai', 'Ivan')$$,
                'punycode labels and top-level domains are valid');

SELECT throws_ok(format('SELECT account.create_user(%L, %L)', m, 'Bad Mail'), '22023', format('invalid email address "%s"', btrim(m)),
                 format('the malformed email %L is 22023', m))
  FROM unnest(ARRAY['plainaddress', '@example.com', 'bob@', 'bob@example', 'bob@@example.com', 'bob smith@example.com',
                    '.bob@example.com', 'bob.@example.com', 'bob..x@example.com', 'bob@-example.com',
                    'bob@example-.com', 'bob@example..com', 'bob@example.c', 'bob@example.123', '']) m;
SELECT throws_ok(format('SELECT account.create_user(%L, %L)', repeat('a', 65) || '@example.com', 'Long'), '22023',
                 NULL, 'a local part longer than 64 characters is 22023');
SELECT throws_ok(format('SELECT account.create_user(%L, %L)', 'a@' || repeat('b', 60) || '.' || repeat('c', 60) || '.'
                        || repeat('d', 60) || '.' || repeat('e', 60) || '.' || repeat('f', 60) || '.com', 'Long'), '22023',
                 NULL, 'an address longer than 254 characters is 22023');
SELECT throws_ok($$SELECT account.create_user(NULL, 'Nobody')$$, '22004', 'email must not be null',
                 'a NULL email is 22004');
SELECT throws_ok($$SELECT account.create_user('nobody@example.com', NULL)$$, '22004', 'name must not be null',
                 'a NULL name is 22004');
SELECT throws_ok($$SELECT account.create_user('nobody@example.com', '   ')$$, '22023', 'name must not be empty',
                 'a blank name is 22023');
SELECT throws_ok(format('SELECT account.create_user(%L, %L)', 'nobody@example.com', repeat('n', 201)), '22023',
                 'name is too long (201 characters; at most 200)', 'a name over 200 characters is 22023');
SELECT lives_ok(format('SELECT account.create_user(%L, %L)', 'twohundred@example.com', repeat('n', 200)),
                'a name of 200 characters is accepted');
SELECT throws_ok($$SELECT account.create_user('nobody@example.com', E'Bad\nName')$$, '22023',
                 'name must not contain control characters', 'a name with a control character is 22023');
SELECT is((SELECT count(*) FROM account.users WHERE lower(email) = 'nobody@example.com'), 0::bigint,
          'the refused creations wrote no user');

-- ---------------------------------------------------------------- idempotency key
INSERT INTO u SELECT 'idem', (account.create_user('idem@example.com', 'Idem', 'pgtap-account-key-1')).user_id;
SELECT is((account.create_user('idem@example.com', 'Idem', 'pgtap-account-key-1')).user_id,
          (SELECT id FROM u WHERE label = 'idem'),
          'the same key with the same arguments returns the first call''s user');
SELECT is((account.create_user(' IDEM@example.com', 'Idem ', 'pgtap-account-key-1')).user_id,
          (SELECT id FROM u WHERE label = 'idem'),
          'the arguments are compared as stored (trimmed, email case-insensitively)');
SELECT is((SELECT count(*) FROM ev WHERE label = 'idem'), 1::bigint,
          'a replayed create_user publishes no second user.created');
SELECT is((SELECT count(*) FROM account.users WHERE lower(email) = 'idem@example.com'), 1::bigint,
          'and creates no second user');
SELECT throws_ok($$SELECT account.create_user('idem@example.com', 'Someone Else', 'pgtap-account-key-1')$$,
                 '23505', 'idempotency key "pgtap-account-key-1" was already used to create another user',
                 'the same key with another name is 23505');
SELECT throws_ok($$SELECT account.create_user('other-idem@example.com', 'Idem', 'pgtap-account-key-1')$$,
                 '23505', 'idempotency key "pgtap-account-key-1" was already used to create another user',
                 'the same key with another email is 23505');
SELECT throws_ok($$SELECT account.create_user('idem2@example.com', 'Idem', '')$$,
                 '22023', 'idempotency_key must be 1 to 255 characters', 'an empty key is 22023');
SELECT throws_ok(format('SELECT account.create_user(%L, %L, %L)', 'idem2@example.com', 'Idem', repeat('k', 256)),
                 '22023', 'idempotency_key must be 1 to 255 characters', 'a key over 255 characters is 22023');
SELECT throws_ok($$SELECT account.create_user('ALICE@example.com', 'Alice Twin', 'pgtap-account-key-2')$$,
                 '23505', 'email "ALICE@example.com" is already taken',
                 'a keyed create with a taken email is 23505');
SELECT is((SELECT count(*) FROM account.create_requests WHERE idempotency_key = 'pgtap-account-key-2'), 0::bigint,
          'the refused keyed create left its key unclaimed');
SELECT lives_ok($$SELECT account.create_user('alice-twin@example.com', 'Alice Twin', 'pgtap-account-key-2')$$,
                'so the key can be used for a user that can be created');

-- ---------------------------------------------------------------- reads
SELECT is(account.user_exists((SELECT id FROM u WHERE label = 'alice')), true, 'user_exists: true for a live user');
SELECT is(account.user_exists(gen_random_uuid()), false, 'user_exists: false for an unknown id');
SELECT is(account.user_exists(NULL), false, 'user_exists: false for NULL');
SELECT throws_ok(format('SELECT account.get_user(%L)', '00000000-0000-7000-8000-000000000001'), 'P0002',
                 'user 00000000-0000-7000-8000-000000000001 not found', 'get_user of an unknown id is P0002');
SELECT throws_ok($$SELECT account.get_user(NULL)$$, '22004', 'user_id must not be null', 'get_user(NULL) is 22004');
SELECT is((account.find_user_by_email('aLiCe@eXaMpLe.cOm')).user_id, (SELECT id FROM u WHERE label = 'alice'),
          'find_user_by_email compares case-insensitively');
SELECT is((account.find_user_by_email(' alice@example.com ')).user_id, (SELECT id FROM u WHERE label = 'alice'),
          'find_user_by_email ignores surrounding blanks');
SELECT throws_ok($$SELECT account.find_user_by_email('nobody-here@example.com')$$, 'P0002',
                 'no user with email "nobody-here@example.com"', 'find_user_by_email of an unknown email is P0002');
SELECT throws_ok($$SELECT account.find_user_by_email('not an email')$$, '22023', 'invalid email address "not an email"',
                 'find_user_by_email of a malformed email is 22023');
SELECT throws_ok($$SELECT account.find_user_by_email(NULL)$$, '22004', 'email must not be null',
                 'find_user_by_email(NULL) is 22004');

-- ---------------------------------------------------------------- update_user
INSERT INTO u SELECT 'bob', (account.create_user('bob@example.com', 'Bob')).user_id;
SELECT is((SELECT (p.email, p.name) FROM account.update_user((SELECT id FROM u WHERE label = 'bob'), name => ' Robert ') p),
          ROW('bob@example.com'::text, 'Robert'::text)::record, 'update_user changes the name (trimmed) and keeps the email');
SELECT is((SELECT data FROM ev WHERE label = 'bob' AND event_type = 'user.updated' ORDER BY id DESC LIMIT 1),
          jsonb_build_object('user_id', (SELECT id FROM u WHERE label = 'bob'), 'email', 'bob@example.com',
                             'name', 'Robert', 'changed', jsonb_build_array('name')),
          'user.updated carries user_id, email, name and changed = ["name"]');
SELECT is((SELECT (p.email, p.name) FROM account.update_user((SELECT id FROM u WHERE label = 'bob'), 'robert@example.com') p),
          ROW('robert@example.com'::text, 'Robert'::text)::record, 'update_user changes the email and keeps the name');
SELECT is((SELECT data -> 'changed' FROM ev WHERE label = 'bob' AND event_type = 'user.updated' ORDER BY id DESC LIMIT 1),
          '["email"]'::jsonb, 'changed = ["email"] when only the email changed');
SELECT is((SELECT (p.email, p.name) FROM account.update_user((SELECT id FROM u WHERE label = 'bob'), 'bob@example.com', 'Bob') p),
          ROW('bob@example.com'::text, 'Bob'::text)::record, 'update_user changes both');
SELECT is((SELECT data -> 'changed' FROM ev WHERE label = 'bob' AND event_type = 'user.updated' ORDER BY id DESC LIMIT 1),
          '["email", "name"]'::jsonb, 'changed = ["email", "name"] when both changed');
SELECT is((SELECT count(*) FROM ev WHERE label = 'bob' AND event_type = 'user.updated'), 3::bigint,
          'one user.updated per changing call');
SELECT is((SELECT (p.email, p.name) FROM account.update_user((SELECT id FROM u WHERE label = 'bob'), 'bob@example.com', 'Bob') p),
          ROW('bob@example.com'::text, 'Bob'::text)::record, 'update_user with the current values returns the profile');
SELECT is((SELECT (p.email, p.name) FROM account.update_user((SELECT id FROM u WHERE label = 'bob')) p),
          ROW('bob@example.com'::text, 'Bob'::text)::record, 'update_user with nothing to change returns the profile');
SELECT is((SELECT count(*) FROM ev WHERE label = 'bob' AND event_type = 'user.updated'), 3::bigint,
          'and publishes nothing when nothing changed');
SELECT is((SELECT (p.email) FROM account.update_user((SELECT id FROM u WHERE label = 'bob'), 'BOB@Example.com') p),
          'BOB@Example.com', 'a user may change the case of its own email');
SELECT is((SELECT data -> 'changed' FROM ev WHERE label = 'bob' AND event_type = 'user.updated' ORDER BY id DESC LIMIT 1),
          '["email"]'::jsonb, 'a change of case is a change of the email');
SELECT throws_ok(format('SELECT account.update_user(%L, %L)', (SELECT id FROM u WHERE label = 'bob'), 'ALICE@example.com'),
                 '23505', 'email "ALICE@example.com" is already taken', 'update_user to a taken email is 23505');
SELECT throws_ok(format('SELECT account.update_user(%L, %L)', (SELECT id FROM u WHERE label = 'bob'), 'bob@'),
                 '22023', 'invalid email address "bob@"', 'update_user to a malformed email is 22023');
SELECT throws_ok(format('SELECT account.update_user(%L, name => %L)', (SELECT id FROM u WHERE label = 'bob'), ''),
                 '22023', 'name must not be empty', 'update_user to an empty name is 22023');
SELECT throws_ok(format('SELECT account.update_user(%L, name => %L)', '00000000-0000-7000-8000-000000000002', 'X'),
                 'P0002', 'user 00000000-0000-7000-8000-000000000002 not found', 'update_user of an unknown user is P0002');
SELECT throws_ok($$SELECT account.update_user(NULL, name => 'X')$$, '22004', 'user_id must not be null',
                 'update_user(NULL) is 22004');
SELECT is((SELECT count(*) FROM ev WHERE label = 'bob' AND event_type = 'user.updated'), 4::bigint,
          'the refused updates published nothing');

-- ---------------------------------------------------------------- notification preferences
CREATE FUNCTION pg_temp.bob() RETURNS uuid LANGUAGE sql AS $$SELECT id FROM u WHERE label = 'bob'$$;
CREATE FUNCTION pg_temp.prefs_error(prefs text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM account.set_notification_preferences(pg_temp.bob(), prefs::jsonb);
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END $$;
SELECT is(account.get_notification_preferences(pg_temp.bob()),
          '{"channels": {"email": true, "webhook": true, "mqtt": true, "inapp": true}, "categories": {}, "quiet_hours": null, "locale": "en"}'::jsonb,
          'a new user gets every channel on, no category of their own, no quiet hours, English');
SELECT is(account.set_notification_preferences(pg_temp.bob(), '{"channels": {"mqtt": false}, "categories": {"wallet": {"email": false, "webhook": true}}}'),
          '{"channels": {"email": true, "webhook": true, "mqtt": false, "inapp": true}, "categories": {"wallet": {"email": false, "webhook": true}}, "quiet_hours": null, "locale": "en"}'::jsonb,
          'set_notification_preferences merges channels and a category''s channels, and returns the result');
SELECT is(account.set_notification_preferences(pg_temp.bob(),
              '{"categories": {"wallet": {"webhook": null}, "family": {"inapp": false}}, "quiet_hours": {"start": "22:30", "end": "06:45", "time_zone": "Europe/Berlin"}, "locale": "de"}'),
          '{"channels": {"email": true, "webhook": true, "mqtt": false, "inapp": true}, "categories": {"wallet": {"email": false}, "family": {"inapp": false}}, "quiet_hours": {"start": "22:30", "end": "06:45", "time_zone": "Europe/Berlin"}, "locale": "de"}'::jsonb,
          'null takes a category''s channel back to its default; quiet hours and locale are set');
SELECT is(account.get_notification_preferences(pg_temp.bob()) -> 'categories',
          '{"wallet": {"email": false}, "family": {"inapp": false}}'::jsonb, 'the merged preferences are stored');
SELECT is((SELECT data FROM ev WHERE label = 'bob' AND event_type = 'user.updated' ORDER BY id DESC LIMIT 1),
          jsonb_build_object('user_id', pg_temp.bob(), 'email', 'BOB@Example.com',
                             'name', 'Bob', 'changed', jsonb_build_array('notification_preferences')),
          'a preference change publishes user.updated with changed = ["notification_preferences"]');
SELECT is(account.set_notification_preferences(pg_temp.bob(), '{"categories": {"wallet": {"email": null}}, "quiet_hours": null}') -> 'categories',
          '{"family": {"inapp": false}}'::jsonb, 'a category left with no choice of its own is dropped');
SELECT is(account.set_notification_preferences(pg_temp.bob(), '{"email": false, "push": false, "mqtt": true}') -> 'channels',
          '{"email": false, "webhook": false, "mqtt": true, "inapp": true}'::jsonb,
          '0.1.0''s email, push and mqtt are taken as channels (push: webhook)');
SELECT is(account.set_notification_preferences(pg_temp.bob(), '{"channels": {"mqtt": true}}') -> 'channels',
          '{"email": false, "webhook": false, "mqtt": true, "inapp": true}'::jsonb, 'setting the current value returns the preferences');
SELECT is(account.set_notification_preferences(pg_temp.bob(), '{}') ->> 'locale', 'de', 'an empty object changes nothing');
SELECT is((SELECT count(*) FROM ev WHERE label = 'bob' AND event_type = 'user.updated'), 8::bigint,
          'and neither publishes anything');
SELECT is(pg_temp.prefs_error(p), e, 'refused: ' || p)
  FROM (VALUES
    ('{"sms": true}',                                   '22023 unknown notification preference "sms"'),
    ('{"channels": {"sms": true}}',                      '22023 unknown notification channel "sms"'),
    ('{"channels": {"push": true}}',                     '22023 unknown notification channel "push"'),
    ('{"push": "yes"}',                                  '22023 notification channel "push" must be true or false, not "yes"'),
    ('{"channels": {"email": null}}',                    '22023 notification channel "email" must be true or false, not null'),
    ('{"channels": []}',                                 '22023 channels must be a JSON object of true or false per channel'),
    ('{"categories": {"Wallet!": {}}}',                  '22023 invalid notification category "Wallet!"'),
    ('{"categories": {"wallet": true}}',                 '22023 category "wallet" must be a JSON object of true, false or null per channel'),
    ('{"categories": {"wallet": {"sms": true}}}',        '22023 unknown notification channel "wallet.sms"'),
    ('{"categories": {"wallet": {"push": true}}}',       '22023 unknown notification channel "wallet.push"'),
    ('{"categories": {"wallet": {"email": 1}}}',         '22023 notification channel "wallet.email" must be true or false, not 1'),
    ('{"quiet_hours": {"start": "22:00", "end": "7:00", "time_zone": "UTC"}}',
     '22023 quiet_hours must be null or {"start": "HH:MM", "end": "HH:MM", "time_zone": an IANA time zone}'),
    ('{"quiet_hours": {"start": "22:00", "end": "07:00"}}',
     '22023 quiet_hours must be null or {"start": "HH:MM", "end": "HH:MM", "time_zone": an IANA time zone}'),
    ('{"quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "UTC", "x": 1}}',
     '22023 quiet_hours must be null or {"start": "HH:MM", "end": "HH:MM", "time_zone": an IANA time zone}'),
    ('{"quiet_hours": "22-7"}',
     '22023 quiet_hours must be null or {"start": "HH:MM", "end": "HH:MM", "time_zone": an IANA time zone}'),
    ('{"quiet_hours": {"start": "22:00", "end": "22:00", "time_zone": "UTC"}}',
     '22023 quiet hours must not start and end at the same time'),
    ('{"quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Mars/Olympus"}}',
     '22023 unknown time zone "Mars/Olympus"'),
    ('{"locale": "deutsch"}',                            '22023 locale must be a language tag like "en", "de" or "pt-BR", not "deutsch"'),
    ('{"locale": 7}',                                    '22023 locale must be a language tag like "en", "de" or "pt-BR", not 7'),
    ('["email"]',                                        '22023 notification preferences must be a JSON object, not array')
  ) AS t (p, e);
SELECT throws_ok(format('SELECT account.set_notification_preferences(%L, NULL)', pg_temp.bob()),
                 '22004', 'prefs must not be null', 'NULL preferences are 22004');
SELECT throws_ok(format('SELECT account.set_notification_preferences(%L, %L)', '00000000-0000-7000-8000-000000000003', '{"push": true}'),
                 'P0002', 'user 00000000-0000-7000-8000-000000000003 not found', 'preferences of an unknown user are P0002');
SELECT throws_ok(format('SELECT account.set_notification_preferences(%L, %L)', '00000000-0000-7000-8000-000000000003', '{"sms": true}'),
                 '22023', 'unknown notification preference "sms"', 'malformed preferences of an unknown user are 22023');
SELECT throws_ok(format('SELECT account.get_notification_preferences(%L)', '00000000-0000-7000-8000-000000000003'),
                 'P0002', 'user 00000000-0000-7000-8000-000000000003 not found', 'get_notification_preferences of an unknown user is P0002');
SELECT is(account.get_notification_preferences(pg_temp.bob()),
          '{"channels": {"email": false, "webhook": false, "mqtt": true, "inapp": true}, "categories": {"family": {"inapp": false}}, "quiet_hours": null, "locale": "de"}'::jsonb,
          'refused changes left the preferences as they were');
SELECT is((SELECT count(*) FROM ev WHERE label = 'bob' AND event_type = 'user.updated'), 8::bigint, 'and published nothing');

-- ---------------------------------------------------------------- delete_user (soft)
SELECT lives_ok(format('SELECT account.delete_user(%L)', (SELECT id FROM u WHERE label = 'bob')), 'delete_user runs');
SELECT is((SELECT (status, deleted_at = now()) FROM account.users WHERE user_id = (SELECT id FROM u WHERE label = 'bob')),
          ROW('deleted'::text, true)::record, 'the row stays, with status deleted and deleted_at set (soft delete)');
SELECT is((SELECT data FROM ev WHERE label = 'bob' AND event_type = 'user.deleted'),
          jsonb_build_object('user_id', (SELECT id FROM u WHERE label = 'bob'),
                             'deleted_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
          'user.deleted carries user_id and deleted_at');
SELECT is((SELECT source FROM ev WHERE label = 'bob' AND event_type = 'user.deleted'), 'account_service',
          'user.deleted comes from account_service');
SELECT is(account.user_exists((SELECT id FROM u WHERE label = 'bob')), false, 'user_exists is false for a deleted user');
SELECT lives_ok(format('SELECT account.require_user(%L)', (SELECT id FROM u WHERE label = 'alice')),
                'require_user: a live user passes');
SELECT throws_ok(format('SELECT account.require_user(%L)', (SELECT id FROM u WHERE label = 'bob')),
                 'P0002', format('user %s not found', (SELECT id FROM u WHERE label = 'bob')),
                 'require_user: a deleted user is P0002');
SELECT throws_ok('SELECT account.require_user(''00000000-0000-7000-8000-000000000000'')',
                 'P0002', 'user 00000000-0000-7000-8000-000000000000 not found', 'require_user: an unknown user is P0002');
SELECT throws_ok('SELECT account.require_user(NULL)', '22004', 'user_id must not be null', 'require_user: NULL is 22004');
SELECT throws_ok(format('SELECT account.get_user(%L)', (SELECT id FROM u WHERE label = 'bob')), 'P0002',
                 format('user %s not found', (SELECT id FROM u WHERE label = 'bob')), 'get_user of a deleted user is P0002');
SELECT throws_ok($$SELECT account.find_user_by_email('bob@example.com')$$, 'P0002', 'no user with email "bob@example.com"',
                 'find_user_by_email does not find a deleted user');
SELECT throws_ok(format('SELECT account.update_user(%L, name => %L)', (SELECT id FROM u WHERE label = 'bob'), 'Zombie'),
                 'P0002', format('user %s not found', (SELECT id FROM u WHERE label = 'bob')), 'update_user of a deleted user is P0002');
SELECT throws_ok(format('SELECT account.get_notification_preferences(%L)', (SELECT id FROM u WHERE label = 'bob')),
                 'P0002', format('user %s not found', (SELECT id FROM u WHERE label = 'bob')),
                 'get_notification_preferences of a deleted user is P0002');
SELECT throws_ok(format('SELECT account.set_notification_preferences(%L, %L)', (SELECT id FROM u WHERE label = 'bob'), '{"push": false}'),
                 'P0002', format('user %s not found', (SELECT id FROM u WHERE label = 'bob')),
                 'set_notification_preferences of a deleted user is P0002');
SELECT lives_ok(format('SELECT account.delete_user(%L)', (SELECT id FROM u WHERE label = 'bob')),
                'deleting a deleted user again succeeds (a retry)');
SELECT is((SELECT count(*) FROM ev WHERE label = 'bob' AND event_type = 'user.deleted'), 1::bigint,
          'and publishes no second user.deleted');
SELECT throws_ok(format('SELECT account.delete_user(%L)', '00000000-0000-7000-8000-000000000004'), 'P0002',
                 'user 00000000-0000-7000-8000-000000000004 not found', 'delete_user of an unknown user is P0002');
SELECT throws_ok($$SELECT account.delete_user(NULL)$$, '22004', 'user_id must not be null', 'delete_user(NULL) is 22004');

INSERT INTO u SELECT 'bob2', (account.create_user('Bob@example.com', 'Bob the Second')).user_id;
SELECT isnt((SELECT id FROM u WHERE label = 'bob2'), (SELECT id FROM u WHERE label = 'bob'),
            'a deleted user''s email can be taken by a new user, who gets a new id');
SELECT is((account.find_user_by_email('bob@example.com')).user_id, (SELECT id FROM u WHERE label = 'bob2'),
          'find_user_by_email finds the new, live user');
SELECT lives_ok(format('SELECT account.update_user(%L, %L)', (SELECT id FROM u WHERE label = 'alice'), 'robert@example.com'),
                'an email once used by a since-changed or deleted user is free');

-- ---------------------------------------------------------------- privileges
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
            WHERE p.pronamespace = 'account'::regnamespace
              AND EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                           WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')),
          NULL, 'no function of schema account is executable by PUBLIC');
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'account'::regnamespace AND has_function_privilege('isa_app', p.oid, 'EXECUTE')$$,
              ARRAY['account.user_exists(uuid)', 'account.require_user(uuid)', 'account.get_user(uuid)', 'account.find_user_by_email(text)',
                    'account.create_user(text,text,text)', 'account.update_user(uuid,text,text)',
                    'account.delete_user(uuid)', 'account.get_notification_preferences(uuid)',
                    'account.set_notification_preferences(uuid,jsonb)'],
              'isa_app may execute exactly the API functions');
SELECT is((SELECT bool_and(p.prosecdef AND p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'])
             FROM pg_proc p WHERE p.pronamespace = 'account'::regnamespace
              AND has_function_privilege('isa_app', p.oid, 'EXECUTE')),
          true, 'every API function is SECURITY DEFINER with search_path pinned');
SELECT ok(NOT has_table_privilege('isa_app', 'account.users', 'SELECT')
          AND NOT has_table_privilege('isa_app', 'account.users', 'INSERT')
          AND NOT has_table_privilege('isa_app', 'account.users', 'UPDATE')
          AND NOT has_table_privilege('isa_app', 'account.create_requests', 'SELECT'),
          'isa_app has no privilege on the tables');

GRANT SELECT, INSERT ON u TO isa_app;      -- this file's bookkeeping, not the service's
SET LOCAL ROLE isa_app;
INSERT INTO u SELECT 'app', (account.create_user('app-made@example.com', 'Made by the app')).user_id;
SELECT is(account.user_exists((SELECT id FROM u WHERE label = 'app')), true, 'isa_app creates and reads users through the API');
SELECT throws_ok($$SELECT count(*) FROM account.users$$, '42501', 'permission denied for table users',
                 'isa_app may not read account.users');
SELECT throws_ok($$SELECT account._check_email('x@example.com')$$, '42501', 'permission denied for function _check_email',
                 'isa_app may not call internal functions');
RESET ROLE;
SELECT is((SELECT count(*) FROM ev WHERE label = 'app' AND event_type = 'user.created'), 1::bigint,
          'a user created by isa_app is published too (publish_event runs as the function owner)');

SELECT * FROM finish();
ROLLBACK;
