-- ota.sql — the OTA service: SemVer ordering and the manifest's parser (C,
-- ota/), trusted keys (add, retire, rotation), releases (unsigned, wrongly
-- signed, hash-mismatched, invalid, duplicate: refused, nothing stored),
-- rollouts (arguments, deterministic groups, the start, offers as the device
-- command ota.update, device.online once, check_for_update, progress over
-- HTTP and as MQTT acks, success threshold opens the next group, error
-- threshold halts and the rest is never offered, anti-rollback, expiry,
-- postponing), the events written to ota.outbox, device recording the
-- firmware, and privileges.  Over HTTP: test 80's OTA cases; the story over
-- real NATS and MQTT with 120 devices: test 66.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(110);
-- the offers carry signed download URLs: a key for this transaction (the test stack sets one; make installcheck does not)
SET LOCAL isa.storage_url_secret = 'ota-test-secret-0123456789abcdefghijklmn';

\ir ../fixtures.psql
SELECT pg_temp.new_user(l) FROM unnest(ARRAY['ops', 'ann', 'eve']) l;
INSERT INTO o SELECT 'fam', org_id FROM organization.create_organization(pg_temp.uid('ann'), 'family', 'Anns');
-- The model of this run: no other file's devices are targeted.
CREATE TEMP TABLE run (model text) ON COMMIT DROP;
INSERT INTO run VALUES ('OTA-Frame-' || txid_current());
CREATE FUNCTION pg_temp.model() RETURNS text LANGUAGE sql AS $$SELECT model FROM pg_temp.run$$;
-- Keys: the vendor's, a second (rotation), an untrusted one.
CREATE TEMP TABLE k (label text PRIMARY KEY, pk bytea, sk bytea) ON COMMIT DROP;
INSERT INTO k SELECT 'vendor', public_key, secret_key FROM auth._ed25519_keypair();
INSERT INTO k SELECT 'next', public_key, secret_key FROM auth._ed25519_keypair();
INSERT INTO k SELECT 'rogue', public_key, secret_key FROM auth._ed25519_keypair();
CREATE FUNCTION pg_temp.sig(l text, m text) RETURNS bytea LANGUAGE sql
    AS $$SELECT auth._ed25519_sign((SELECT sk FROM pg_temp.k WHERE label = l), convert_to(m, 'UTF8'))$$;
-- A firmware file of ops, and the manifest of a version of it.
CREATE FUNCTION pg_temp.fw(l text) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE id uuid := storage.begin_upload(pg_temp.uid('ops'), l || '.bin', 'application/octet-stream');
BEGIN
    PERFORM storage.put_chunk(id, 0, convert_to('firmware ' || l, 'UTF8'));
    PERFORM storage.finish_upload(id);
    INSERT INTO pg_temp.f VALUES (l, id);
    RETURN id;
END $$;
CREATE FUNCTION pg_temp.manifest(version text, file_label text, model text DEFAULT NULL, sha text DEFAULT NULL) RETURNS text
    LANGUAGE sql AS $$
    SELECT format('{"format":"isa-ota-manifest/1","model":"%s","version":"%s","sha256":"%s","size":%s,"file_id":"%s"}',
                  coalesce(model, pg_temp.model()), version,
                  coalesce(sha, encode(sha256(convert_to('firmware ' || file_label, 'UTF8')), 'hex')),
                  octet_length(convert_to('firmware ' || file_label, 'UTF8')), pg_temp.fid(file_label)) $$;
-- Devices of ann, by label, at a firmware version.
CREATE TEMP TABLE d (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.did(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.d WHERE label = l$$;
CREATE FUNCTION pg_temp.dev(l text, fw text, model text DEFAULT NULL) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE id uuid;
BEGIN
    id := (device.register_device(pg_temp.uid('ann'), 'SN-OTA-' || l || '-' || txid_current(), coalesce(model, pg_temp.model()),
                                  sha256(convert_to('ota-key-' || l || txid_current(), 'UTF8')), 'Frame ' || l, pg_temp.oid('fam'))).device_id;
    UPDATE device.devices SET firmware_version = fw WHERE device_id = id;
    INSERT INTO pg_temp.d VALUES (l, id);
    RETURN id;
END $$;
CREATE FUNCTION pg_temp.online(l text) RETURNS void LANGUAGE sql AS $$SELECT device.heartbeat(pg_temp.did(l))$$;
CREATE FUNCTION pg_temp.event(event_type text, source text, data jsonb) RETURNS isa.event LANGUAGE sql AS $$
    SELECT isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(), 'event_type', event_type, 'source', source,
                                                  'timestamp', now(), 'data', data)) $$;
CREATE FUNCTION pg_temp.st(ro uuid, l text) RETURNS text LANGUAGE sql
    AS $$SELECT state FROM ota.rollout_devices WHERE rollout_id = ro AND device_id = pg_temp.did(l)$$;
CREATE FUNCTION pg_temp.nev(t text, l text) RETURNS bigint LANGUAGE sql
    AS $$SELECT count(*) FROM ota.outbox WHERE event_type = t AND data ->> 'device_id' = pg_temp.did(l)::text$$;
CREATE TEMP TABLE ro (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.rid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.ro WHERE label = l$$;

-- ---------------------------------------------------------------- catalogue
SELECT has_table('ota', 'releases', 'table ota.releases exists');
SELECT has_table('ota', 'rollouts', 'table ota.rollouts exists');
SELECT has_table('ota', 'rollout_devices', 'table ota.rollout_devices exists');
SELECT set_eq($$SELECT event_type FROM isa.event_types WHERE source = 'ota_service' AND event_type <> 'event.dead_lettered'$$,
              ARRAY['ota.update_available', 'ota.update_completed', 'ota.update_failed'],
              'ota_service publishes the seed''s three events');
SELECT set_eq($$SELECT subject_filter || ' ' || handler::text FROM isa.subscriptions WHERE service = 'ota'$$,
              ARRAY['device_service.device.online ota.on_device_online(isa.event)',
                    'isa.devices.*.acks ota.on_device_ack(isa.event)'],
              'ota subscribes to device.online and the devices'' acks');
SELECT is((SELECT command FROM isa.scheduled_jobs WHERE jobname = 'isa-ota-advance'), 'SELECT ota.advance_rollouts()',
          'its job advances the rollouts');
SELECT ok(EXISTS (SELECT FROM isa.subscriptions WHERE service = 'device' AND subject_filter = 'ota_service.ota.update_completed'),
          'device subscribes to ota.update_completed (records the firmware)');

-- ---------------------------------------------------------------- SemVer (ota/semver.c)
SELECT is(array_agg(ota.version_valid(v) ORDER BY n)::text, '{t,t,t,t,t,f,f,f,f,f,f,f,f}', 'valid and invalid versions')
  FROM unnest(ARRAY['1.0.0', '0.0.0', '1.2.3-rc.1', '1.0.0-alpha-1.0+build.01', '18446744073709551616.0.0',
                    '1.0', '01.0.0', '1.0.0-01', '1.0.0-', '1.0.0+', 'v1.0.0', '1.0.0-a..b', repeat('1', 62) || '.0.0']) WITH ORDINALITY AS x (v, n);
SELECT is((SELECT array_agg(v ORDER BY n) FROM (
              SELECT v, row_number() OVER () AS n FROM unnest(ARRAY['1.0.0', '1.0.0-rc.1', '1.0.0-beta.11', '1.0.0-beta.2',
                 '1.0.0-beta', '1.0.0-alpha.beta', '1.0.0-alpha.1', '1.0.0-alpha', '2.0.0', '1.10.0', '1.9.0']) v) s),
          ARRAY['1.0.0', '1.0.0-rc.1', '1.0.0-beta.11', '1.0.0-beta.2', '1.0.0-beta', '1.0.0-alpha.beta', '1.0.0-alpha.1',
                '1.0.0-alpha', '2.0.0', '1.10.0', '1.9.0'], '(the list)');
SELECT is((SELECT string_agg(v, ' ' ORDER BY r) FROM (
              SELECT a.v, (SELECT count(*) FROM unnest(ARRAY['1.0.0', '1.0.0-rc.1', '1.0.0-beta.11', '1.0.0-beta.2', '1.0.0-beta',
                              '1.0.0-alpha.beta', '1.0.0-alpha.1', '1.0.0-alpha', '2.0.0', '1.10.0', '1.9.0']) b (v)
                            WHERE ota.version_cmp(b.v, a.v) < 0) AS r
                FROM unnest(ARRAY['1.0.0', '1.0.0-rc.1', '1.0.0-beta.11', '1.0.0-beta.2', '1.0.0-beta', '1.0.0-alpha.beta',
                                  '1.0.0-alpha.1', '1.0.0-alpha', '2.0.0', '1.10.0', '1.9.0']) a (v)) s),
          '1.0.0-alpha 1.0.0-alpha.1 1.0.0-alpha.beta 1.0.0-beta 1.0.0-beta.2 1.0.0-beta.11 1.0.0-rc.1 1.0.0 1.9.0 1.10.0 2.0.0',
          'SemVer 2.0.0 precedence: the spec''s example order, pre-releases below their release, numbers numerically');
SELECT is(ota.version_cmp('1.0.0+build.1', '1.0.0+build.2'), 0, 'build metadata is ignored');
SELECT is(ota.version_cmp('99999999999999999999.0.0', '9999999999999999999.0.0'), 1, 'numbers of any length compare numerically');
SELECT throws_ok($$SELECT ota.version_cmp('1.0', '1.0.0')$$, '22023', 'version "1.0" is not a semantic version',
                 'version_cmp of an invalid version is 22023');

-- ---------------------------------------------------------------- manifest (ota/manifest.c)
SELECT is((SELECT (model, version, size, file_id, notes)::text
             FROM ota._parse_manifest('{"format":"isa-ota-manifest/1","model":"F \"10\"","version":"1.2.0","sha256":"'
                                      || repeat('ab', 32) || '","size":42,"file_id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","notes":"ü"}')),
          '("F ""10""",1.2.0,42,0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b,ü)', 'a manifest is parsed, escapes and UTF-8 included');
SELECT throws_ok(format($$SELECT ota._parse_manifest(%L)$$, m), '22023', 'invalid release manifest: ' || e, w)
  FROM (VALUES
    ('{"format":"isa-ota-manifest/1"}', 'member "model" is missing', 'a missing member'),
    ('{"format":"isa-ota-manifest/1","format":"x"}', 'member "format" appears twice', 'a member twice'),
    ('{"formats":1}', 'unknown member "formats" (the members are format, model, version, sha256, size, file_id and notes)', 'an unknown member'),
    ('[1]', 'the manifest must be one JSON object of strings and the integer size (at byte 0)', 'not an object'),
    (pg_temp.manifest('1.0', 'x'), 'version "1.0" is not a semantic version (SemVer 2.0.0, e.g. 1.2.0 or 1.3.0-rc.1)', 'an invalid version'),
    (pg_temp.manifest('1.0.0', 'x', sha => 'AB'), 'sha256 must be 64 lower-case hexadecimal digits', 'a bad sha256'),
    ('{"size":-1}', 'size must be a positive integer (at byte 8)', 'a negative size'),
    ('{"model":"a\u0041"}', 'an escape other than \" \\ \/ in a string (at byte 11)', 'a \u escape'),
    ('{"format":"isa-ota-manifest/1"} x', 'text after the manifest''s object (at byte 32)', 'text after the object')
  ) AS t (m, e, w);

-- ---------------------------------------------------------------- keys
UPDATE ota.signing_keys SET retired_at = now() WHERE retired_at IS NULL;   -- this file's keys only, in its transaction
SELECT pg_temp.fw('v1');
SELECT throws_ok(format($$SELECT ota.create_release(%L, %L, %L)$$, pg_temp.uid('ops'), pg_temp.manifest('1.0.0', 'v1'),
                        pg_temp.sig('vendor', pg_temp.manifest('1.0.0', 'v1'))),
                 '55000', 'no trusted OTA signing key: releases cannot be verified', 'without a trusted key no release is verified: 55000');
SELECT is(ota.add_signing_key('vendor-' || txid_current(), (SELECT pk FROM k WHERE label = 'vendor')), true, 'an operator trusts the vendor''s key');
SELECT is(ota.add_signing_key('vendor-' || txid_current(), (SELECT pk FROM k WHERE label = 'vendor')), false, 'the same key again: false');
SELECT throws_ok(format($$SELECT ota.add_signing_key(%L, %L)$$, 'vendor-' || txid_current(), (SELECT pk FROM k WHERE label = 'next')),
                 '23505', NULL, 'the key_id with another key is 23505');
SELECT throws_ok($$SELECT ota.add_signing_key('bad id', '\x00')$$, '22023', NULL, 'a bad key_id is 22023');
SELECT throws_ok($$SELECT ota.add_signing_key('short', '\x00')$$, '22023', 'an Ed25519 public key is 32 bytes, not 1', 'a short key is 22023');
SELECT throws_ok($$SELECT ota.retire_signing_key('no-such-key')$$, 'P0002', 'signing key no-such-key not found', 'retiring an unknown key is P0002');

-- ---------------------------------------------------------------- releases
CREATE TEMP TABLE rel (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.rel(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.rel WHERE label = l$$;
SELECT throws_ok(format($$SELECT ota.create_release(%L, %L, %L)$$, pg_temp.uid('ops'), pg_temp.manifest('1.0.0', 'v1'), '\x'::bytea),
                 '22023', 'the manifest''s signature must be 64 bytes (Ed25519), not 0', 'an unsigned release is refused (22023)');
SELECT throws_ok(format($$SELECT ota.create_release(%L, %L, %L)$$, pg_temp.uid('ops'), pg_temp.manifest('1.0.0', 'v1'),
                        pg_temp.sig('rogue', pg_temp.manifest('1.0.0', 'v1'))),
                 '22023', 'the manifest''s signature does not verify with any trusted key', 'a release signed by an untrusted key is refused');
SELECT throws_ok(format($$SELECT ota.create_release(%L, %L, %L)$$, pg_temp.uid('ops'), pg_temp.manifest('1.0.0', 'v1') || ' ',
                        pg_temp.sig('vendor', pg_temp.manifest('1.0.0', 'v1'))),
                 '22023', 'the manifest''s signature does not verify with any trusted key', 'a manifest changed by one byte after signing is refused');
SELECT throws_ok(format($$SELECT ota.create_release(%L, %L, %L)$$, pg_temp.uid('ops'), pg_temp.manifest('1.0.0', 'v1', sha => repeat('0', 64)),
                        pg_temp.sig('vendor', pg_temp.manifest('1.0.0', 'v1', sha => repeat('0', 64)))),
                 '22023', NULL, 'a signed manifest whose SHA-256 is not the file''s is refused (22023)');
SELECT throws_ok(format($$SELECT ota.create_release(%L, %L, %L)$$, pg_temp.uid('eve'), pg_temp.manifest('1.0.0', 'v1'),
                        pg_temp.sig('vendor', pg_temp.manifest('1.0.0', 'v1'))),
                 'P0002', NULL, 'a firmware file the actor may not read is P0002');
SELECT throws_ok(format($$SELECT ota.create_release(%L, %L, %L)$$, pg_temp.uid('ops'), pg_temp.manifest('1.0', 'v1'),
                        pg_temp.sig('vendor', pg_temp.manifest('1.0', 'v1'))),
                 '22023', NULL, 'a signed manifest with an invalid version is refused');
SELECT is((SELECT count(*) FROM ota.releases WHERE model = pg_temp.model()), 0::bigint, 'nothing was stored by the refused releases');
INSERT INTO rel SELECT 'v1', release_id FROM ota.create_release(pg_temp.uid('ops'), pg_temp.manifest('1.0.0', 'v1'),
                                                                 pg_temp.sig('vendor', pg_temp.manifest('1.0.0', 'v1')));
SELECT is((SELECT (version, sha256 = encode(sha256(convert_to('firmware v1', 'UTF8')), 'hex'), key_id = 'vendor-' || txid_current())::text
             FROM ota.get_release(pg_temp.rel('v1'))), '(1.0.0,t,t)', 'a release signed by the trusted key is created, with its key');
SELECT throws_ok(format($$SELECT ota.create_release(%L, %L, %L)$$, pg_temp.uid('ops'), pg_temp.manifest('1.0.0', 'v1'),
                        pg_temp.sig('vendor', pg_temp.manifest('1.0.0', 'v1'))),
                 '23505', NULL, 'the same model and version again is 23505');
-- rotation: the next key is added, the vendor's retired
SELECT ota.add_signing_key('next-' || txid_current(), (SELECT pk FROM k WHERE label = 'next'));
SELECT is(ota.retire_signing_key('vendor-' || txid_current()), true, 'the old key is retired');
SELECT pg_temp.fw('v2');
SELECT throws_ok(format($$SELECT ota.create_release(%L, %L, %L)$$, pg_temp.uid('ops'), pg_temp.manifest('2.0.0', 'v2'),
                        pg_temp.sig('vendor', pg_temp.manifest('2.0.0', 'v2'))),
                 '22023', NULL, 'a retired key verifies no new release');
INSERT INTO rel SELECT 'v2', release_id FROM ota.create_release(pg_temp.uid('ops'), pg_temp.manifest('2.0.0', 'v2'),
                                                                 pg_temp.sig('next', pg_temp.manifest('2.0.0', 'v2')));
SELECT is((SELECT key_id FROM ota.get_release(pg_temp.rel('v2'))), 'next-' || txid_current(), 'the new key verifies the next release');
SELECT throws_ok($$SELECT ota.get_release('00000000-0000-0000-0000-000000000001')$$, 'P0002', NULL, 'an unknown release is P0002');

-- ---------------------------------------------------------------- rollouts: arguments
SELECT throws_ok(format($$SELECT ota.create_rollout(%L, %L, 'r', groups => '{50,40}')$$, pg_temp.uid('ops'), pg_temp.rel('v2')),
                 '22023', NULL, 'groups that do not sum to 100 are 22023');
SELECT throws_ok(format($$SELECT ota.create_rollout(%L, %L, 'r', error_threshold => 0)$$, pg_temp.uid('ops'), pg_temp.rel('v2')),
                 '22023', NULL, 'a threshold of 0 is 22023');
SELECT throws_ok(format($$SELECT ota.create_rollout(%L, %L, 'r', window_start => '02:00')$$, pg_temp.uid('ops'), pg_temp.rel('v2')),
                 '22023', NULL, 'half a window is 22023');
SELECT throws_ok(format($$SELECT ota.create_rollout(%L, %L, 'r', min_version => '3.0.0')$$, pg_temp.uid('ops'), pg_temp.rel('v2')),
                 '22023', 'the release 2.0.0 is below min_version 3.0.0: a downgrade, and the rollout does not allow it',
                 'a rollout aimed at devices above the release is a downgrade: 22023 without allow_downgrade');
SELECT throws_ok(format($$SELECT ota.create_rollout(%L, %L, 'r', min_version => '1.x')$$, pg_temp.uid('ops'), pg_temp.rel('v2')),
                 '22023', NULL, 'an invalid min_version is 22023');
SELECT throws_ok(format($$SELECT ota.create_rollout(%L, %L, 'r')$$, pg_temp.uid('ops'), '00000000-0000-0000-0000-000000000001'),
                 'P0002', NULL, 'an unknown release is P0002');
SELECT throws_ok($$SELECT ota.set_rollout_state('00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000001', 'running')$$,
                 'P0002', NULL, 'an unknown rollout is P0002');

-- ---------------------------------------------------------------- a rollout in three groups
-- 30 devices at 1.0.0 (the first 20 online), one at 3.0.0 (anti-rollback), one of another model.
SELECT pg_temp.dev('n' || i, '1.0.0') FROM generate_series(1, 30) i;
SELECT pg_temp.online('n' || i) FROM generate_series(1, 20) i;
SELECT pg_temp.dev('newer', '3.0.0');
SELECT pg_temp.online('newer');
SELECT pg_temp.dev('other', '1.0.0', 'Another model');
INSERT INTO ro SELECT 'a', rollout_id FROM ota.create_rollout(pg_temp.uid('ops'), pg_temp.rel('v2'), 'spring', '{34,33,33}', 100, 50,
                                                             ARRAY[pg_temp.oid('fam')]);
SELECT is((SELECT state FROM ota.get_rollout(pg_temp.rid('a'))), 'draft', 'a rollout is created as a draft');
SELECT is((SELECT count(*) FROM ota.rollout_devices WHERE rollout_id = pg_temp.rid('a')), 0::bigint, '… with no devices yet');
SELECT is((SELECT (state, current_group)::text FROM ota.set_rollout_state(pg_temp.uid('ops'), pg_temp.rid('a'), 'running')),
          '(running,1)', 'it starts: running, group 1 open');
SELECT is((SELECT count(*) FROM ota.rollout_devices WHERE rollout_id = pg_temp.rid('a')), 31::bigint,
          'the 31 devices of the model in the organization are in it, not the other model''s');
SELECT is((SELECT count(*) FROM ota.rollout_devices WHERE rollout_id = pg_temp.rid('a')
            AND group_no <> ota.device_group(device_id, rollout_id, '{34,33,33}')), 0::bigint,
          'each device''s group is the deterministic hash of device and rollout');
SELECT is((SELECT count(DISTINCT group_no) FROM ota.rollout_devices WHERE rollout_id = pg_temp.rid('a')), 3::bigint, 'three groups are filled');
SELECT is((SELECT count(*) FROM ota.rollout_devices WHERE rollout_id = pg_temp.rid('a') AND group_no > 1 AND state <> 'waiting'), 0::bigint,
          'groups 2 and 3 wait');
SELECT is((SELECT count(*) FROM ota.rollout_devices rd JOIN device.devices dv USING (device_id)
            WHERE rd.rollout_id = pg_temp.rid('a') AND rd.group_no = 1 AND dv.status = 'online' AND rd.device_id <> pg_temp.did('newer')
              AND (rd.state <> 'offered' OR rd.command_id IS NULL)), 0::bigint,
          'every online device of group 1 is offered, with a command');
SELECT is((SELECT count(*) FROM ota.rollout_devices rd JOIN device.devices dv USING (device_id)
            WHERE rd.rollout_id = pg_temp.rid('a') AND rd.group_no = 1 AND dv.status = 'offline' AND rd.state <> 'pending'), 0::bigint,
          'its offline devices stay pending');
SELECT is((SELECT (command, args ->> 'version', args ->> 'forced', args -> 'download' ->> 'url' LIKE '/v1/downloads/' || pg_temp.fid('v2') || '?expires=%&signature=%',
                   ota._ed25519_verify(convert_to(args ->> 'manifest', 'UTF8'), decode(args ->> 'signature', 'hex'), (SELECT pk FROM k WHERE label = 'next')))::text
             FROM device.commands c JOIN ota.rollout_devices rd USING (command_id)
            WHERE rd.rollout_id = pg_temp.rid('a') LIMIT 1),
          '(ota.update,2.0.0,false,t,t)',
          'the offer is the device command ota.update: version, soft, a signed download URL, and the manifest with its valid signature');
SELECT is((SELECT count(*) FROM ota.outbox o JOIN ota.rollout_devices rd ON rd.command_id::text = o.data ->> 'command_id'
            WHERE o.event_type = 'ota.update_available' AND rd.rollout_id = pg_temp.rid('a')),
          (SELECT count(*) FROM ota.rollout_devices WHERE rollout_id = pg_temp.rid('a') AND state = 'offered'),
          'one ota.update_available per offer');
-- anti-rollback: the device at 3.0.0, in whatever group, is skipped when its turn comes
UPDATE ota.rollout_devices SET group_no = 1, state = 'pending' WHERE rollout_id = pg_temp.rid('a') AND device_id = pg_temp.did('newer');
SELECT ota._offer(pg_temp.rid('a'), pg_temp.did('newer'));
SELECT is((SELECT state || ': ' || reason FROM ota.rollout_devices WHERE rollout_id = pg_temp.rid('a') AND device_id = pg_temp.did('newer')),
          'skipped: anti-rollback: it runs 3.0.0, higher than 2.0.0, and the rollout allows no downgrade',
          'a device running a higher version is never offered a lower one (anti-rollback)');
SELECT is(pg_temp.nev('ota.update_available', 'newer'), 0::bigint, '… and no ota.update_available for it');

-- a device moved out of the organizations the rollout targets, after its start, is skipped when its turn comes
INSERT INTO d SELECT 'moved', rd.device_id FROM ota.rollout_devices rd
  WHERE rd.rollout_id = pg_temp.rid('a') AND rd.group_no = 3 AND rd.device_id <> pg_temp.did('newer')
    AND rd.device_id NOT IN (SELECT id FROM d WHERE label IN ('n1', 'n20', 'n21')) LIMIT 1;   -- devices the tests below use
UPDATE ota.rollout_devices SET group_no = 1, state = 'pending' WHERE rollout_id = pg_temp.rid('a') AND device_id = pg_temp.did('moved');
SELECT device.move_device(pg_temp.uid('ann'), pg_temp.did('moved'), NULL);
SELECT ota._offer(pg_temp.rid('a'), pg_temp.did('moved'));
SELECT is((SELECT state || ': ' || reason FROM ota.rollout_devices WHERE rollout_id = pg_temp.rid('a') AND device_id = pg_temp.did('moved')),
          'skipped: it is no longer in an organization the rollout targets',
          'a device moved out of the organizations a rollout targets is not offered it (skipped)');
-- the job asks device which pending devices are online
SELECT is(ARRAY(SELECT device.online_devices(ARRAY[pg_temp.did('n20'), pg_temp.did('n21'), pg_temp.did('n1'),
                                                   '00000000-0000-0000-0000-000000000001'])),
          ARRAY(SELECT unnest(ARRAY[pg_temp.did('n1'), pg_temp.did('n20')]) ORDER BY 1),
          'device.online_devices: of the ids given, the online devices in id order (offline and unknown left out)');

-- device.online offers a pending device once
-- (an offline device put in group 1: whether the hash put one there depends on the random ids)
CREATE TEMP TABLE g1off AS SELECT rd.device_id FROM ota.rollout_devices rd JOIN device.devices dv USING (device_id)
  WHERE rd.rollout_id = pg_temp.rid('a') AND dv.status = 'offline' AND rd.state IN ('pending', 'waiting')
    AND rd.device_id NOT IN (SELECT id FROM d WHERE label IN ('n1', 'n20', 'n21', 'moved')) LIMIT 1;
UPDATE ota.rollout_devices SET group_no = 1, state = 'pending' WHERE rollout_id = pg_temp.rid('a') AND device_id = (SELECT device_id FROM g1off);
INSERT INTO d SELECT 'late', device_id FROM g1off;
SELECT pg_temp.online('late');
SELECT ota.on_device_online(pg_temp.event('device.online', 'device_service', jsonb_build_object('device_id', pg_temp.did('late'))));
SELECT is(pg_temp.st(pg_temp.rid('a'), 'late'), 'offered', 'a device of an open group coming online is offered its update');
SELECT ota.on_device_online(pg_temp.event('device.online', 'device_service', jsonb_build_object('device_id', pg_temp.did('late'))));
SELECT is(pg_temp.nev('ota.update_available', 'late'), 1::bigint, 'once: online again, no second ota.update_available');

-- check_for_update
SELECT is((SELECT (u ->> 'rollout_id' = pg_temp.rid('a')::text, u ->> 'state', u ->> 'version', u ? 'download')::text
             FROM ota.check_for_update(pg_temp.did('late')) u), '(t,offered,2.0.0,t)',
          'check_for_update returns the device''s open offer with a download');
SELECT is(ota.check_for_update(pg_temp.did('other')), NULL, 'nothing for a device no rollout targets');
SELECT throws_ok($$SELECT ota.check_for_update('00000000-0000-0000-0000-000000000001')$$, 'P0002', NULL,
                 'check_for_update of an unknown device is P0002');

-- progress: every offered device of group 1 completes (one over the MQTT ack path); the threshold (100 %) opens group 2
SELECT is(ota.report_progress(pg_temp.did('late'), pg_temp.rid('a'), 'downloading'), 'downloading', 'a device reports downloading');
SELECT is(ota.report_progress(pg_temp.did('late'), pg_temp.rid('a'), 'downloading'), 'downloading', '… twice: no change');
SELECT throws_ok(format($$SELECT ota.report_progress(%L, %L, 'rebooting')$$, pg_temp.did('late'), pg_temp.rid('a')), '22023', NULL,
                 'an unknown status is 22023');
SELECT throws_ok(format($$SELECT ota.report_progress(%L, %L, 'completed')$$, pg_temp.did('other'), pg_temp.rid('a')), 'P0002', NULL,
                 'a report for an update the device does not have is P0002');
SELECT ota.on_device_ack(pg_temp.event('device.ack', 'device', jsonb_build_object('device_id', pg_temp.did('late'),
           'command_id', (SELECT command_id FROM ota.rollout_devices WHERE rollout_id = pg_temp.rid('a') AND device_id = pg_temp.did('late')),
           'ok', true, 'result', jsonb_build_object('ota', 'completed'))));
SELECT is(pg_temp.st(pg_temp.rid('a'), 'late'), 'completed', 'an MQTT ack of the ota.update command with result.ota completed completes it');
SELECT is((SELECT data ->> 'from_version' FROM ota.outbox WHERE event_type = 'ota.update_completed' AND data ->> 'device_id' = pg_temp.did('late')::text),
          '1.0.0', 'ota.update_completed, with the version it ran before');
SELECT device.on_ota_update_completed(pg_temp.event('ota.update_completed', 'ota_service',
           (SELECT data FROM ota.outbox WHERE event_type = 'ota.update_completed' AND data ->> 'device_id' = pg_temp.did('late')::text)));
SELECT is((SELECT firmware_version FROM device.devices WHERE device_id = pg_temp.did('late')), '2.0.0',
          'device records the firmware version on ota.update_completed');
SELECT throws_ok(format($$SELECT ota.report_progress(%L, %L, 'failed')$$, pg_temp.did('late'), pg_temp.rid('a')), '23514', NULL,
                 'a report on a completed update is 23514');
SELECT is((SELECT count(ota.report_progress(device_id, pg_temp.rid('a'), 'completed')) FROM ota.rollout_devices
            WHERE rollout_id = pg_temp.rid('a') AND group_no = 1 AND state = 'offered') > 0, true, 'the other offered devices of group 1 complete');
SELECT is((SELECT current_group FROM ota.get_rollout(pg_temp.rid('a'))), 1, 'group 2 is not open before the job runs (offline devices of group 1 pending)');
UPDATE ota.rollout_devices SET state = 'skipped', reason = 'test: offline' WHERE rollout_id = pg_temp.rid('a') AND group_no = 1 AND state = 'pending';
SELECT ota.advance_rollouts();
SELECT is((SELECT current_group FROM ota.get_rollout(pg_temp.rid('a'))), 2, 'the job opens group 2 once group 1 reached the success threshold');
SELECT is((SELECT count(*) FROM ota.rollout_devices rd JOIN device.devices dv USING (device_id)
            WHERE rd.rollout_id = pg_temp.rid('a') AND rd.group_no = 2 AND dv.status = 'online' AND rd.state NOT IN ('offered', 'skipped')), 0::bigint,
          'its online devices are offered');
-- errors: group 2's offered devices fail → halted, group 3 never offered.  Its
-- offline devices are skipped first, as for group 1: how many of a group are
-- online depends on the random ids' hashes, and pending ones count in the
-- error ratio (50 %).
UPDATE ota.rollout_devices SET state = 'skipped', reason = 'test: offline' WHERE rollout_id = pg_temp.rid('a') AND group_no = 2 AND state = 'pending';
SELECT count(ota.report_progress(device_id, pg_temp.rid('a'), 'failed', 'flash write error'))
  FROM ota.rollout_devices WHERE rollout_id = pg_temp.rid('a') AND group_no = 2 AND state = 'offered';
SELECT is((SELECT data ->> 'reason' FROM ota.outbox WHERE event_type = 'ota.update_failed'
            AND data ->> 'rollout_id' = pg_temp.rid('a')::text LIMIT 1), 'flash write error', 'ota.update_failed carries the device''s reason');
SELECT ota.advance_rollouts();
SELECT is((SELECT state FROM ota.get_rollout(pg_temp.rid('a'))), 'halted', 'the error threshold halts the rollout');
SELECT alike((SELECT halt_reason FROM ota.get_rollout(pg_temp.rid('a'))), 'error threshold: % of group 2 failed (threshold 50%)', 'and says why');
SELECT is((SELECT count(*) FROM ota.rollout_devices WHERE rollout_id = pg_temp.rid('a') AND group_no = 3 AND state <> 'cancelled'), 0::bigint,
          'the devices of group 3 are cancelled: never offered');
SELECT is((SELECT count(*) FROM ota.outbox o WHERE o.event_type = 'ota.update_available' AND o.data ->> 'rollout_id' = pg_temp.rid('a')::text
            AND o.data ->> 'device_id' IN (SELECT device_id::text FROM ota.rollout_devices WHERE rollout_id = pg_temp.rid('a') AND group_no = 3)),
          0::bigint, '… no ota.update_available for any of them');
SELECT throws_ok(format($$SELECT ota.set_rollout_state(%L, %L, 'running')$$, pg_temp.uid('ops'), pg_temp.rid('a')), '23514', NULL,
                 'a halted rollout cannot run again (23514)');
SELECT throws_ok(format($$SELECT ota.set_rollout_state(%L, %L, 'done')$$, pg_temp.uid('ops'), pg_temp.rid('a')), '22023', NULL,
                 'an unknown state is 22023');

-- ---------------------------------------------------------------- forced, expiry, pause, cancel
SELECT pg_temp.fw('v3');
INSERT INTO rel SELECT 'v3', release_id FROM ota.create_release(pg_temp.uid('ops'), pg_temp.manifest('2.1.0', 'v3'),
                                                                 pg_temp.sig('next', pg_temp.manifest('2.1.0', 'v3')));
INSERT INTO ro SELECT 'b', rollout_id FROM ota.create_rollout(pg_temp.uid('ops'), pg_temp.rel('v3'), 'forced', '{100}', 50, 50,
                                                             ARRAY[pg_temp.oid('fam')], forced => true, action_timeout => 60);
SELECT ota.set_rollout_state(pg_temp.uid('ops'), pg_temp.rid('b'), 'running');
SELECT is(pg_temp.st(pg_temp.rid('b'), 'late'), 'offered', 'a forced rollout offers 2.1.0 to the device at 2.0.0');
SELECT throws_ok(format($$SELECT ota.report_progress(%L, %L, 'postponed')$$, pg_temp.did('late'), pg_temp.rid('b')), '23514',
                 'rollout ' || pg_temp.rid('b') || ' is forced: the update cannot be postponed', 'a forced update cannot be postponed (23514)');
UPDATE ota.rollout_devices SET deadline = now() - interval '1 second' WHERE rollout_id = pg_temp.rid('b') AND device_id = pg_temp.did('late');
SELECT is((SELECT n FROM ota.advance_rollouts() WHERE action = 'actions expired'), 1::bigint, 'the job expires the stale action');
SELECT is(pg_temp.st(pg_temp.rid('b'), 'late'), 'expired', 'its state is expired');
SELECT is((SELECT data ->> 'state' FROM ota.outbox WHERE event_type = 'ota.update_failed' AND data ->> 'rollout_id' = pg_temp.rid('b')::text
            AND data ->> 'device_id' = pg_temp.did('late')::text), 'expired', 'ota.update_failed with state expired');
-- soft: postponed goes back to pending for an hour
INSERT INTO ro SELECT 'c', rollout_id FROM ota.create_rollout(pg_temp.uid('ops'), pg_temp.rel('v3'), 'soft', '{100}', 50, 50,
                                                             ARRAY[pg_temp.oid('fam')], min_version => '1.0.0', max_version => '1.0.0');
SELECT throws_ok(format($$SELECT ota.set_rollout_state(%L, %L, 'paused')$$, pg_temp.uid('ops'), pg_temp.rid('c')), '23514', NULL,
                 'a draft cannot be paused (23514)');
SELECT ota.set_rollout_state(pg_temp.uid('ops'), pg_temp.rid('c'), 'running');
SELECT is(pg_temp.st(pg_temp.rid('c'), 'n1'), 'offered', 'a device at 1.0.0 in the range 1.0.0 … 1.0.0 is offered');
SELECT is(pg_temp.st(pg_temp.rid('c'), 'late'), 'skipped', 'a device at 2.0.0 outside the range is skipped');
SELECT is(ota.report_progress(pg_temp.did('n1'), pg_temp.rid('c'), 'postponed'), 'pending', 'a soft update is postponed: pending again');
SELECT ota.on_device_online(pg_temp.event('device.online', 'device_service', jsonb_build_object('device_id', pg_temp.did('n1'))));
SELECT is(pg_temp.st(pg_temp.rid('c'), 'n1'), 'pending', '… and not offered again within the hour');
SELECT is((SELECT state FROM ota.set_rollout_state(pg_temp.uid('ops'), pg_temp.rid('c'), 'paused')), 'paused', 'an operator pauses it');
SELECT is((SELECT state FROM ota.set_rollout_state(pg_temp.uid('ops'), pg_temp.rid('c'), 'cancelled')), 'cancelled', '… and cancels it');
SELECT is(pg_temp.st(pg_temp.rid('c'), 'n1'), 'cancelled', 'its pending devices are cancelled');
SELECT is(ota.check_for_update(pg_temp.did('n1')) ->> 'rollout_id', pg_temp.rid('b')::text,
          'check_for_update offers nothing of the cancelled rollout: the open offer of the forced one');

-- ---------------------------------------------------------------- privileges
SELECT ok(has_function_privilege('isa_app_ota', 'ota.check_for_update(uuid)', 'EXECUTE')
          AND has_function_privilege('isa_app_ota', 'ota.report_progress(uuid, uuid, text, text)', 'EXECUTE'),
          'applications (isa_app_ota) may check for updates and report progress');
SELECT ok(NOT has_function_privilege('isa_app_ota', 'ota.create_release(uuid, text, bytea)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app_ota', 'ota.set_rollout_state(uuid, uuid, text)', 'EXECUTE'),
          'but not create releases or move rollouts');
SELECT ok(has_function_privilege('isa_app_admin', 'ota.create_release(uuid, text, bytea)', 'EXECUTE')
          AND has_function_privilege('isa_app_admin', 'ota.create_rollout(uuid, uuid, text, integer[], integer, integer, uuid[], text, text, boolean, boolean, time, time, integer)', 'EXECUTE'),
          'administration (isa_app_admin) creates releases and rollouts');
SELECT ok(NOT has_function_privilege('isa_app', 'ota.add_signing_key(text, bytea)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app_admin', 'ota.add_signing_key(text, bytea)', 'EXECUTE')
          AND has_function_privilege('isa_admin', 'ota.add_signing_key(text, bytea)', 'EXECUTE'),
          'only operators (isa_admin) choose the trusted keys');
SELECT ok(NOT has_function_privilege('isa_app_device', 'device.send_service_command(uuid, text, jsonb, integer)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'device.lookup_device(uuid)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'device.online_devices(uuid[])', 'EXECUTE')
          AND has_function_privilege('isa_svc_ota', 'device.send_service_command(uuid, text, jsonb, integer)', 'EXECUTE')
          AND has_function_privilege('isa_svc_ota', 'device.online_devices(uuid[])', 'EXECUTE'),
          'device''s functions for services are isa_svc_ota''s, no application''s');
SELECT ok(NOT has_table_privilege('isa_app', 'ota.releases', 'SELECT') AND NOT has_table_privilege('isa_app_ota', 'ota.rollout_devices', 'SELECT'),
          'applications read no OTA table');
SELECT ok(NOT has_function_privilege('isa_app', 'ota._offer(uuid, uuid)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'ota.advance_rollouts()', 'EXECUTE'),
          'internals and the job are not the applications''');

SELECT * FROM finish();
ROLLBACK;
