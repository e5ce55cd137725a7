-- nats_revocation.sql — the device service's side of revoking NATS
-- credentials: every credential device.nats_credentials issues is recorded
-- (device.nats_keys), decommissioning revokes the device's unexpired ones
-- (the queue the revoker reads), device.nats_revocations() and
-- device.nats_revocations_pushed() (the revoker's, isa_admin's), their
-- errors, housekeeping, and who may do what.  The push itself, and a
-- connected device cut off: test/integration/77-device-revocation.sh.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(41);

-- the scoped signing key and its account, as the stack hands them to the database
SELECT set_config('isa.device_nats_signing_key', isa.nats_nkey_create('account'), true);
SELECT set_config('isa.device_nats_account', isa.nats_nkey_public(isa.nats_nkey_create('account')), true);

CREATE TEMP TABLE t (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.id(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.t WHERE label = l$$;
INSERT INTO t SELECT 'ann', (account.create_user('rev-ann-' || gen_random_uuid() || '@example.test', 'Ann')).user_id;
INSERT INTO t SELECT 'eve', (account.create_user('rev-eve-' || gen_random_uuid() || '@example.test', 'Eve')).user_id;
INSERT INTO t SELECT l, (device.register_device(pg_temp.id('ann'), 'REV-' || l || '-' || txid_current(), 'Frame',
                                                sha256(convert_to('rev-key-' || l, 'UTF8')), 'Frame ' || l)).device_id
  FROM unnest(ARRAY['a', 'b']) l;
-- the credentials issued, by label: public key from the JWT's subject
CREATE TEMP TABLE k (label text PRIMARY KEY, device text, public_key text, expires_at timestamptz) ON COMMIT DROP;
CREATE FUNCTION pg_temp.key(l text) RETURNS text LANGUAGE sql AS $$SELECT public_key FROM pg_temp.k WHERE label = l$$;
INSERT INTO k SELECT l, d, isa.nats_jwt_claims(c.jwt) ->> 'sub', c.expires_at
  FROM (VALUES ('a1', 'a'), ('a2', 'a'), ('b1', 'b')) v (l, d), LATERAL device.nats_credentials(pg_temp.id(d)) c;
CREATE FUNCTION pg_temp.row(l text) RETURNS device.nats_keys LANGUAGE sql
    AS $$SELECT * FROM device.nats_keys WHERE public_key = pg_temp.key(l)$$;
CREATE FUNCTION pg_temp.decommissioned(l text) RETURNS bigint LANGUAGE sql
    AS $$SELECT count(*) FROM device.outbox WHERE event_type = 'device.decommissioned' AND data ->> 'device_id' = pg_temp.id(l)::text$$;

-- ---------------------------------------------------------------- the record
SELECT has_table('device', 'nats_keys', 'table device.nats_keys exists');
SELECT is((SELECT count(*) FROM device.nats_keys WHERE public_key IN (SELECT public_key FROM k)), 3::bigint,
          'every credential issued is recorded, by its user''s public key (the JWT''s sub)');
SELECT is((pg_temp.row('a1')).device_id, pg_temp.id('a'), 'with its device');
SELECT is((pg_temp.row('a1')).expires_at, (SELECT expires_at FROM k WHERE label = 'a1'), 'and the expiry the device was told');
SELECT ok((SELECT bool_and(r.revoked_at IS NULL AND r.pushed_at IS NULL) FROM k, LATERAL pg_temp.row(k.label) r),
          'none is revoked while its device is in service');
SELECT isnt(pg_temp.key('a1'), pg_temp.key('a2'), 'each credential has a key of its own');
SELECT throws_ok($$INSERT INTO device.nats_keys (public_key, device_id, expires_at) VALUES ('not-a-key', $$ || quote_literal(pg_temp.id('a')) || $$, now())$$,
                 '23514', NULL, 'a recorded key is a user''s public key');
-- one of a's credentials expired already (made by hand: the function refuses a past expiry)
INSERT INTO k VALUES ('a0', 'a', 'U' || repeat('A', 55), now() - interval '1 minute');
INSERT INTO device.nats_keys (public_key, device_id, issued_at, expires_at)
VALUES (pg_temp.key('a0'), pg_temp.id('a'), now() - interval '2 hours', now() - interval '1 minute');

-- ---------------------------------------------------------------- decommission: the queue
SELECT is(device.decommission_device(pg_temp.id('ann'), pg_temp.id('a')), true, 'device a is decommissioned');
SELECT is((pg_temp.row('a1')).revoked_at, now(), 'its credential is revoked in the same transaction');
SELECT is((pg_temp.row('a2')).revoked_at, now(), 'every unexpired one of it');
SELECT is((pg_temp.row('a0')).revoked_at, NULL, 'not one that expired already (the server refuses it anyway)');
SELECT is((pg_temp.row('b1')).revoked_at, NULL, 'nor another device''s of the same owner: revocation is per key');
SELECT ok((pg_temp.row('a1')).pushed_at IS NULL AND (pg_temp.row('a2')).pushed_at IS NULL,
          'both wait for the revoker (not pushed)');
SELECT is(pg_temp.decommissioned('a'), 1::bigint, 'device.decommissioned is published once');
SELECT is(device.decommission_device(pg_temp.id('ann'), pg_temp.id('a')), false, 'decommissioning again does nothing');
SELECT is(pg_temp.decommissioned('a'), 1::bigint, '… and publishes nothing more');
SELECT throws_ok(format('SELECT device.nats_credentials(%L)', pg_temp.id('a')), '23514', NULL,
                 'a decommissioned device gets no new credential (23514)');
SELECT is((SELECT count(*) FROM device.nats_keys WHERE device_id = pg_temp.id('a')), 3::bigint, '… and none is recorded');

-- ---------------------------------------------------------------- what the revoker reads
SELECT set_eq(format('SELECT public_key FROM device.nats_revocations() WHERE device_id IN (%L, %L)', pg_temp.id('a'), pg_temp.id('b')),
              ARRAY[pg_temp.key('a1'), pg_temp.key('a2')],
              'device.nats_revocations() lists the revoked keys, not the others');
SELECT is((SELECT (revoked_at, expires_at, pushed_at)::text FROM device.nats_revocations() WHERE public_key = pg_temp.key('a1')),
          (now(), (SELECT expires_at FROM k WHERE label = 'a1'), NULL::timestamptz)::text,
          'with when it was revoked, when it expires, and not pushed yet');

-- ---------------------------------------------------------------- what the revoker marks
SELECT is(device.nats_revocations_pushed(ARRAY[pg_temp.key('a1')]), 1, 'the revoker marks a key pushed once a server took it');
SELECT is((pg_temp.row('a1')).pushed_at, now(), 'its pushed_at is set');
SELECT is((pg_temp.row('a2')).pushed_at, NULL, 'the other stays queued');
SELECT is(device.nats_revocations_pushed(ARRAY[pg_temp.key('a1')]), 0, 'marking it again changes nothing');
SELECT is(device.nats_revocations_pushed(ARRAY['U' || repeat('B', 55)]), 0, 'a key no longer kept is ignored');
SELECT throws_ok('SELECT device.nats_revocations_pushed(NULL)', '22004', NULL, 'NULL: 22004');
SELECT throws_ok($$SELECT device.nats_revocations_pushed(ARRAY['UABC'])$$, '22023', NULL, 'not a user''s public key: 22023');
SELECT throws_ok($$SELECT device.nats_revocations_pushed(ARRAY[NULL::text])$$, '22023', NULL, 'a NULL key: 22023');
SELECT throws_ok(format('SELECT device.nats_revocations_pushed(ARRAY[%L, %L])', pg_temp.key('a2'), pg_temp.key('b1')),
                 '23514', NULL, 'a key that is not revoked: 23514');
SELECT is((pg_temp.row('a2')).pushed_at, NULL, '… and nothing of the call was written');

-- ---------------------------------------------------------------- housekeeping
UPDATE device.nats_keys SET expires_at = now() - interval '25 hours' WHERE public_key = pg_temp.key('a0');
SELECT cmp_ok(device.housekeeping(), '>=', 1::bigint, 'housekeeping runs');
SELECT is(pg_temp.row('a0'), NULL, 'it forgets a credential expired for a day');
SELECT isnt(pg_temp.row('a2'), NULL, 'not one that is still valid (revoked: the revoker still needs it)');

-- ---------------------------------------------------------------- privileges
SELECT is((SELECT relowner::regrole::text FROM pg_class WHERE oid = 'device.nats_keys'::regclass), 'isa_svc_device',
          'device.nats_keys belongs to isa_svc_device');
SELECT ok(NOT has_table_privilege('isa_app', 'device.nats_keys', 'SELECT')
          AND NOT has_table_privilege('isa_app_device', 'device.nats_keys', 'SELECT,INSERT,UPDATE'),
          'no application role reads or writes the keys');
SELECT ok(NOT has_function_privilege('isa_app', 'device.nats_revocations()', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'device.nats_revocations_pushed(text[])', 'EXECUTE'),
          'no application role reads the revocations or marks them');
SELECT ok(has_function_privilege('isa_admin', 'device.nats_revocations()', 'EXECUTE')
          AND has_function_privilege('isa_admin', 'device.nats_revocations_pushed(text[])', 'EXECUTE'),
          'isa_admin (the revoker''s role) does');
GRANT SELECT ON t, k TO isa_app;
SET LOCAL ROLE isa_app;
SELECT throws_ok('SELECT count(*) FROM device.nats_keys', '42501', NULL, 'isa_app cannot read the keys');
SELECT throws_ok('SELECT count(*) FROM device.nats_revocations()', '42501', NULL, 'nor list the revocations');
SELECT throws_ok(format('SELECT device.nats_revocations_pushed(ARRAY[%L])', pg_temp.key('a2')), '42501', NULL,
                 'nor mark one pushed');
SELECT throws_ok(format($$UPDATE device.nats_keys SET revoked_at = now() WHERE public_key = %L$$, pg_temp.key('b1')), '42501', NULL,
                 'nor revoke (enqueue) a key by hand: only decommissioning does');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
