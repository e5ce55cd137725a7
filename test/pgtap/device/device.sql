-- device.sql — the device service: registration (its key in auth, the owner
-- or an organization's admin, idempotency), rename, move, decommission (key,
-- tokens, open commands end), who may see, command and manage a device
-- (live membership), presence (heartbeats, device.online/offline once per
-- transition), commands (pending → sent → acknowledged/failed/expired, direct
-- messages on isa.devices.<id>.commands, re-sends with backoff, on online),
-- the handlers, the events written to device.outbox, and privileges.
-- Through NATS and a real MQTT client: test/integration/75-device-mqtt.sh.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(129);

-- Users this file creates, by label.
CREATE TEMP TABLE u (label text PRIMARY KEY, id uuid, email text) ON COMMIT DROP;
CREATE FUNCTION pg_temp.uid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.u WHERE label = l$$;
INSERT INTO u
SELECT l, (account.create_user(e, initcap(l))).user_id, e
  FROM unnest(ARRAY['ann', 'ben', 'cat', 'dan', 'eve']) l,
       LATERAL (SELECT 'dev-' || l || '-' || gen_random_uuid() || '@example.test' AS e) m;
-- ann owns family "fam": ben is an admin, cat a member, dan a guest; eve is outside.
CREATE TEMP TABLE o (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.oid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.o WHERE label = l$$;
INSERT INTO o SELECT 'fam', org_id FROM organization.create_organization(pg_temp.uid('ann'), 'family', 'Anns');
INSERT INTO o SELECT 'eves', org_id FROM organization.create_organization(pg_temp.uid('eve'), 'family', 'Eves');
SELECT organization.accept_invitation(pg_temp.uid(l),
           (organization.invite_member(pg_temp.uid('ann'), pg_temp.oid('fam'), (SELECT email FROM u WHERE label = l), r)).token)
  FROM (VALUES ('ben', 'admin'), ('cat', 'member'), ('dan', 'guest')) AS m (l, r);
-- Devices this file registers, by label.
CREATE TEMP TABLE d (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.did(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.d WHERE label = l$$;
CREATE FUNCTION pg_temp.key(n integer) RETURNS bytea LANGUAGE sql AS $$SELECT sha256(convert_to('device-key-' || n, 'UTF8'))$$;
CREATE FUNCTION pg_temp.serial(l text) RETURNS text LANGUAGE sql AS $$SELECT 'SN-' || l || '-' || txid_current()$$;
-- The events of this file's devices, in order, and a mark to read those written since.
CREATE TEMP VIEW ev AS
SELECT row_number() OVER (ORDER BY x.id) AS n, x.event_type, x.data
  FROM device.outbox x WHERE x.data ->> 'device_id' IN (SELECT id::text FROM d);
CREATE TEMP TABLE mark (at bigint) ON COMMIT DROP;
INSERT INTO mark VALUES (0);
CREATE FUNCTION pg_temp.reset_mark() RETURNS void LANGUAGE sql
    AS $$UPDATE mark SET at = (SELECT coalesce(max(n), 0) FROM ev)$$;
CREATE FUNCTION pg_temp.since_types() RETURNS text LANGUAGE sql
    AS $$SELECT coalesce(string_agg(event_type, ' ' ORDER BY n), '-') FROM ev WHERE n > (SELECT at FROM mark)$$;
-- The direct messages waiting for the bridge for one device.
CREATE FUNCTION pg_temp.queued(l text) RETURNS bigint LANGUAGE sql
    AS $$SELECT count(*) FROM isa.direct_messages WHERE subject = 'isa.devices.' || pg_temp.did(l) || '.commands'$$;
CREATE FUNCTION pg_temp.event(event_type text, source text, data jsonb) RETURNS isa.event LANGUAGE sql AS $$
    SELECT isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(), 'event_type', event_type, 'source', source,
                                                  'timestamp', now(), 'data', data)) $$;
CREATE FUNCTION pg_temp.state(c uuid) RETURNS text LANGUAGE sql AS $$SELECT state FROM device.commands WHERE command_id = c$$;
-- What the bridge makes of a device's ack or heartbeat over MQTT (docs/bridge.md, "Device messages").
CREATE FUNCTION pg_temp.mqtt(event_type text, l text, data jsonb, at timestamptz DEFAULT now()) RETURNS isa.event LANGUAGE sql AS $$
    SELECT isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(), 'event_type', event_type, 'source', 'device',
                                                  'timestamp', at, 'data', data || jsonb_build_object('device_id', pg_temp.did(l)))) $$;

-- ---------------------------------------------------------------- catalogue
SELECT has_table('device', 'devices', 'table device.devices exists');
SELECT has_table('device', 'commands', 'table device.commands exists');
SELECT hasnt_column('device', 'devices', 'public_key', 'a device''s key is auth''s alone (auth.devices)');
SELECT set_eq($$SELECT event_type || ' ' || (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(data_fields) k)
                 FROM isa.event_types WHERE source = 'device_service' AND event_type <> 'event.dead_lettered'$$,
              ARRAY['device.registered device_id,model,name,organization_id,owner_id,registered_by,serial',
                    'device.moved device_id,moved_by,old_organization_id,organization_id,owner_id',
                    'device.online device_id,last_seen_at,organization_id,owner_id',
                    'device.offline device_id,last_seen_at,organization_id,owner_id',
                    'device.command_sent command,command_id,device_id,expires_at,sent_by',
                    'device.decommissioned decommissioned_by,device_id,organization_id,owner_id',
                    'device.playlist_updated command_id,device_id,item_count,organization_id,owner_id,updated_by,version'],
              'device_service''s seven events are registered with their data fields');
SELECT set_eq($$SELECT subject_filter || ' ' || handler::text FROM isa.subscriptions WHERE service = 'device'$$,
              ARRAY['organization_service.organization.member_removed device.on_member_removed(isa.event)',
                    'auth_service.device.authenticated device.on_device_authenticated(isa.event)',
                    'isa.devices.*.acks device.on_device_ack(isa.event)',
                    'isa.devices.*.heartbeat device.on_device_heartbeat(isa.event)',
                    'ota_service.ota.update_completed device.on_ota_update_completed(isa.event)'],
              'device subscribes to organization.member_removed, device.authenticated, the devices'' acks and heartbeats, and ota.update_completed');
SELECT set_eq($$SELECT jobname || ' ' || command FROM isa.scheduled_jobs WHERE jobname LIKE 'isa-device-%'$$,
              ARRAY['isa-device-mark-offline SELECT device.mark_offline()',
                    'isa-device-commands SELECT device.process_commands()',
                    'isa-device-housekeeping SELECT device.housekeeping()'],
              'its jobs mark devices offline, expire and re-send commands, forget old message ids');

-- ---------------------------------------------------------------- registration
SELECT pg_temp.reset_mark();
INSERT INTO d SELECT 'frame', device_id
  FROM device.register_device(pg_temp.uid('ann'), pg_temp.serial('frame'), 'Frame 10', pg_temp.key(1), ' Kitchen ',
                              pg_temp.oid('fam'), idempotency_key => 'reg-frame');
SELECT is((SELECT (owner_id = pg_temp.uid('ann'), organization_id = pg_temp.oid('fam'), name, model, status)::text
             FROM device.get_device(pg_temp.uid('ann'), pg_temp.did('frame'))),
          '(t,t,Kitchen,"Frame 10",offline)', 'the owner registers a device into a family: named (trimmed), offline');
SELECT is((SELECT public_key FROM auth.devices WHERE device_id = pg_temp.did('frame')::text), pg_temp.key(1),
          'its key is registered with auth, under the device id''s text');
SELECT is((SELECT user_id FROM auth.devices WHERE device_id = pg_temp.did('frame')::text), NULL,
          'auth keeps no owner: ownership is the device service''s alone');
SELECT is(pg_temp.since_types(), 'device.registered', 'device.registered is published');
SELECT is((SELECT data - 'serial' FROM ev WHERE event_type = 'device.registered' AND data ->> 'device_id' = pg_temp.did('frame')::text),
          jsonb_build_object('device_id', pg_temp.did('frame'), 'owner_id', pg_temp.uid('ann'), 'organization_id', pg_temp.oid('fam'),
                             'model', 'Frame 10', 'name', 'Kitchen', 'registered_by', pg_temp.uid('ann')),
          'device.registered carries device_id, owner_id and organization_id as organization expects');
SELECT is((SELECT device_id FROM device.register_device(pg_temp.uid('ann'), pg_temp.serial('frame'), 'Frame 10', pg_temp.key(1),
                                                        'Kitchen', pg_temp.oid('fam'), idempotency_key => 'reg-frame')),
          pg_temp.did('frame'), 'the same idempotency key and arguments return the first device');
SELECT is(pg_temp.since_types(), 'device.registered', '… and publish nothing more');
SELECT throws_ok(format('SELECT device.register_device(%L, %L, %L, %L, %L, %L, idempotency_key => %L)', pg_temp.uid('ann'),
                        pg_temp.serial('frame'), 'Frame 10', pg_temp.key(1), 'Hall', pg_temp.oid('fam'), 'reg-frame'),
                 '23505', NULL, 'the same key with other arguments is 23505');
SELECT throws_ok(format('SELECT device.register_device(%L, %L, %L, %L, %L, %L, idempotency_key => %L)', pg_temp.uid('ann'),
                        pg_temp.serial('frame'), 'Frame 10', pg_temp.key(9), 'Kitchen', pg_temp.oid('fam'), 'reg-frame'),
                 '23505', NULL, 'the same key with another public key is 23505 (auth''s check)');
SELECT throws_ok(format('SELECT device.register_device(%L, %L, %L, %L, %L)', pg_temp.uid('ann'),
                        pg_temp.serial('frame'), 'Frame 10', pg_temp.key(2), 'Other'),
                 '23505', 'a device with serial "' || pg_temp.serial('frame') || '" is already registered',
                 'a serial in service is 23505');
INSERT INTO d SELECT 'cats', device_id
  FROM device.register_device(pg_temp.uid('ben'), pg_temp.serial('cats'), 'Frame 8', pg_temp.key(3), 'Cat''s frame',
                              pg_temp.oid('fam'), pg_temp.uid('cat'));
SELECT is((SELECT owner_id FROM device.get_device(pg_temp.uid('cat'), pg_temp.did('cats'))), pg_temp.uid('cat'),
          'an admin of the organization registers a device for one of its members');
SELECT throws_ok(format('SELECT device.register_device(%L, %L, %L, %L, %L, %L, %L)', pg_temp.uid('cat'),
                        pg_temp.serial('x1'), 'F', pg_temp.key(4), 'X', pg_temp.oid('fam'), pg_temp.uid('ben')),
                 '42501', NULL, 'a member cannot register a device for someone else');
SELECT throws_ok(format('SELECT device.register_device(%L, %L, %L, %L, %L, owner_id => %L)', pg_temp.uid('ann'),
                        pg_temp.serial('x2'), 'F', pg_temp.key(4), 'X', pg_temp.uid('ben')),
                 '42501', NULL, 'registering for someone else needs an organization');
SELECT throws_ok(format('SELECT device.register_device(%L, %L, %L, %L, %L, %L, %L)', pg_temp.uid('ann'),
                        pg_temp.serial('x3'), 'F', pg_temp.key(4), 'X', pg_temp.oid('fam'), pg_temp.uid('dan')),
                 '42501', NULL, 'a guest cannot be given a device in the organization');
SELECT throws_ok(format('SELECT device.register_device(%L, %L, %L, %L, %L, %L)', pg_temp.uid('ann'),
                        pg_temp.serial('x4'), 'F', pg_temp.key(4), 'X', pg_temp.oid('eves')),
                 '42501', NULL, 'an owner cannot bring a device into an organization they are not a member of');
SELECT throws_ok(format('SELECT device.register_device(%L, %L, %L, %L, %L)', pg_temp.uid('ann'), 'bad serial!', 'F', pg_temp.key(4), 'X'),
                 '22023', 'invalid serial "bad serial!"', 'a malformed serial is 22023');
SELECT throws_ok(format('SELECT device.register_device(%L, %L, %L, %L, %L)', pg_temp.uid('ann'), pg_temp.serial('x5'), 'F', pg_temp.key(4), E'\t'),
                 '22023', NULL, 'an empty name is 22023');
SELECT throws_ok(format('SELECT device.register_device(%L, %L, %L, %L, %L)', pg_temp.uid('ann'), pg_temp.serial('x6'), 'F', '\x0102'::bytea, 'X'),
                 '22023', NULL, 'a key that is not 32 bytes is 22023 (auth''s check)');
SELECT throws_ok(format('SELECT device.register_device(%L, %L, %L, NULL, %L)', pg_temp.uid('ann'), pg_temp.serial('x7'), 'F', 'X'),
                 '22004', 'public_key must not be null', 'a NULL argument is 22004');
SELECT throws_ok(format('SELECT device.register_device(%L, %L, %L, %L, %L)', gen_random_uuid(), pg_temp.serial('x8'), 'F', pg_temp.key(4), 'X'),
                 'P0002', NULL, 'an unknown user is P0002');
SELECT is((SELECT count(*) FROM device.devices WHERE serial LIKE 'SN-x%'), 0::bigint, 'no refused registration left a device');

-- ---------------------------------------------------------------- who may see, command, manage
SELECT is((SELECT array_agg(l ORDER BY l) FROM unnest(ARRAY['ann', 'ben', 'cat', 'dan', 'eve']) l
            WHERE device._right(device._device(pg_temp.did('frame'), false), pg_temp.uid(l)) = 'manage'),
          ARRAY['ann', 'ben'], 'the owner and the organization''s admins manage a device');
SELECT is(device._right(device._device(pg_temp.did('frame'), false), pg_temp.uid('cat')), 'command', 'a member sends commands');
SELECT is(device._right(device._device(pg_temp.did('frame'), false), pg_temp.uid('dan')), 'view', 'a guest only sees it');
SELECT throws_ok(format('SELECT device.get_device(%L, %L)', pg_temp.uid('eve'), pg_temp.did('frame')),
                 '42501', NULL, 'an outsider cannot see a device');
SELECT throws_ok(format('SELECT device.get_device(%L, %L)', pg_temp.uid('ann'), gen_random_uuid()),
                 'P0002', NULL, 'an unknown device is P0002');
SELECT is((SELECT array_agg(name ORDER BY name) FROM device.list_organization_devices(pg_temp.uid('dan'), pg_temp.oid('fam'))),
          ARRAY['Cat''s frame', 'Kitchen'], 'any member, a guest too, lists the organization''s devices');
SELECT throws_ok(format('SELECT * FROM device.list_organization_devices(%L, %L)', pg_temp.uid('eve'), pg_temp.oid('fam')),
                 '42501', NULL, 'a non-member cannot list them');
SELECT throws_ok(format('SELECT * FROM device.list_organization_devices(%L, %L, 0)', pg_temp.uid('ann'), pg_temp.oid('fam')),
                 '22023', NULL, 'a page size outside 1 … 1000 is 22023');
SELECT is((SELECT array_agg(name) FROM device.list_my_devices(pg_temp.uid('cat'))), ARRAY['Cat''s frame'],
          'a user lists the devices they own');
-- eve sees a device shared with her organization (organization.can_access)
INSERT INTO d SELECT 'eves', device_id
  FROM device.register_device(pg_temp.uid('eve'), pg_temp.serial('eves'), 'Frame 8', pg_temp.key(5), 'Eve''s');
SELECT is(device._right(device._device(pg_temp.did('eves'), false), pg_temp.uid('ann')), NULL, 'a device of someone else is out of reach');
SELECT organization.on_device_registered(pg_temp.event('device.registered', 'device_service',
           jsonb_build_object('device_id', pg_temp.did('eves'), 'owner_id', pg_temp.uid('eve'))));
SELECT organization.accept_invitation(pg_temp.uid('ann'),
           (organization.invite_member(pg_temp.uid('eve'), pg_temp.oid('eves'), (SELECT email FROM u WHERE label = 'ann'), 'member')).token);
SELECT organization.share_resource(pg_temp.uid('eve'), pg_temp.oid('eves'), 'device', pg_temp.did('eves'));
SELECT is(device._right(device._device(pg_temp.did('eves'), false), pg_temp.uid('ann')), 'view',
          'shared with an organization of the user (organization.can_access): the user sees it');

-- ---------------------------------------------------------------- rename, move
SELECT is((SELECT name FROM device.rename_device(pg_temp.uid('ben'), pg_temp.did('frame'), 'Hall')), 'Hall',
          'an admin of the organization renames the device');
SELECT throws_ok(format('SELECT device.rename_device(%L, %L, %L)', pg_temp.uid('cat'), pg_temp.did('frame'), 'Mine'),
                 '42501', NULL, 'a member cannot rename it');
SELECT throws_ok(format('SELECT device.rename_device(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.did('frame'), repeat('x', 201)),
                 '22023', NULL, 'a name over 200 characters is 22023');
SELECT pg_temp.reset_mark();
SELECT is((SELECT organization_id FROM device.move_device(pg_temp.uid('ann'), pg_temp.did('frame'), NULL)), NULL,
          'the owner moves the device out of its organization');
SELECT is(pg_temp.since_types(), 'device.moved', 'device.moved is published');
SELECT is((SELECT data ->> 'old_organization_id' FROM ev WHERE event_type = 'device.moved' ORDER BY n DESC LIMIT 1),
          pg_temp.oid('fam')::text, 'device.moved names the organization it left');
SELECT throws_ok(format('SELECT device.get_device(%L, %L)', pg_temp.uid('cat'), pg_temp.did('frame')),
                 '42501', NULL, 'the organization''s members lose it at once');
SELECT throws_ok(format('SELECT device.move_device(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.did('frame'), gen_random_uuid()),
                 '42501', NULL, 'it moves only into an organization its owner is a member of');
SELECT is((SELECT organization_id FROM device.move_device(pg_temp.uid('ann'), pg_temp.did('frame'), pg_temp.oid('fam'))),
          pg_temp.oid('fam'), 'and back');
SELECT is((SELECT organization_id FROM device.move_device(pg_temp.uid('ann'), pg_temp.did('frame'), pg_temp.oid('fam'))),
          pg_temp.oid('fam'), 'moving where it is changes nothing …');
SELECT is(pg_temp.since_types(), 'device.moved device.moved', '… and publishes nothing');

-- ---------------------------------------------------------------- presence
SELECT pg_temp.reset_mark();
SELECT is((SELECT (status, firmware_version)::text FROM device.heartbeat(pg_temp.did('frame'), '2.1.0')), '(online,2.1.0)',
          'a heartbeat makes an offline device online and records its firmware');
SELECT is((SELECT status FROM device.heartbeat(pg_temp.did('frame'))), 'online', 'a second heartbeat keeps it online');
SELECT is(pg_temp.since_types(), 'device.online', 'device.online once per transition, not per heartbeat');
SELECT is((SELECT data ->> 'organization_id' FROM ev WHERE event_type = 'device.online' ORDER BY n DESC LIMIT 1),
          pg_temp.oid('fam')::text, 'device.online names its organization (members are notified)');
SELECT device.mark_offline();
SELECT is((SELECT status FROM device.devices WHERE device_id = pg_temp.did('frame')), 'online', 'a device seen just now stays online');
UPDATE device.devices SET last_seen_at = now() - make_interval(secs => device._offline_after() + 1)
 WHERE device_id = pg_temp.did('frame');
SELECT is(device._offline_after(), 90, 'isa.device_offline_after is 90 seconds by default');
SELECT cmp_ok(device.mark_offline(), '>=', 1, 'mark_offline marks a device silent for isa.device_offline_after offline');
SELECT is((SELECT status FROM device.get_device(pg_temp.uid('ann'), pg_temp.did('frame'))), 'offline', 'it is offline');
SELECT device.mark_offline();
SELECT is(pg_temp.since_types(), 'device.online device.offline', 'device.offline once, however often the job runs');
SELECT device.on_device_authenticated(pg_temp.event('device.authenticated', 'auth_service',
           jsonb_build_object('device_id', pg_temp.did('frame'), 'session_id', gen_random_uuid())));
SELECT is((SELECT (status, last_seen_at = now())::text FROM device.devices WHERE device_id = pg_temp.did('frame')), '(offline,t)',
          'device.authenticated moves last_seen_at, not the status');
SELECT lives_ok($$SELECT device.on_device_authenticated(pg_temp.event('device.authenticated', 'auth_service', '{"device_id": "frame-0042"}'))$$,
                'a device id that is not the device service''s is ignored');
SELECT throws_ok(format('SELECT device.heartbeat(%L)', gen_random_uuid()), 'P0002', NULL, 'an unknown device''s heartbeat is P0002');
-- heartbeats over MQTT: device.on_device_heartbeat
SELECT device.on_device_heartbeat(pg_temp.mqtt('device.heartbeat', 'frame', '{"message_id": "hb-1", "firmware_version": "2.2.0"}'));
SELECT is((SELECT (status, firmware_version)::text FROM device.devices WHERE device_id = pg_temp.did('frame')), '(online,2.2.0)',
          'a heartbeat over MQTT makes an offline device online and records its firmware');
SELECT is(pg_temp.since_types(), 'device.online device.offline device.online', '… with one device.online');
UPDATE device.devices SET status = 'offline' WHERE device_id = pg_temp.did('frame');
SELECT device.on_device_heartbeat(pg_temp.mqtt('device.heartbeat', 'frame', '{"message_id": "hb-1"}'));
SELECT is((SELECT status FROM device.devices WHERE device_id = pg_temp.did('frame')), 'offline',
          'the same message_id again counts once: the device published it twice');
SELECT is((SELECT count(*) FROM device.device_messages WHERE device_id = pg_temp.did('frame')), 1::bigint,
          'its id is kept in device.device_messages');
SELECT device.on_device_heartbeat(pg_temp.mqtt('device.heartbeat', 'frame', '{}', now() - interval '1 hour'));
SELECT is((SELECT status FROM device.devices WHERE device_id = pg_temp.did('frame')), 'offline',
          'a heartbeat older than isa.device_offline_after (delivered late) does not bring a device online');
SELECT device.on_device_heartbeat(pg_temp.mqtt('device.heartbeat', 'frame', '{"firmware_version": ""}'));
SELECT is((SELECT (status, firmware_version)::text FROM device.devices WHERE device_id = pg_temp.did('frame')), '(online,2.2.0)',
          'one without message_id counts, a malformed firmware_version is ignored');
SELECT lives_ok(format($$SELECT device.on_device_heartbeat(isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(),
                         'event_type', 'device.heartbeat', 'source', 'device', 'timestamp', now(), 'data', jsonb_build_object('device_id', %L))))$$,
                       gen_random_uuid()),
                'an unknown device''s heartbeat is ignored (a warning, no retry)');
SELECT lives_ok($$SELECT device.on_device_heartbeat(pg_temp.mqtt('device.heartbeat', 'frame', '{"message_id": 7}'))$$,
                'a message_id that is not a string is ignored');
UPDATE device.devices SET status = 'offline' WHERE device_id = pg_temp.did('frame');

-- ---------------------------------------------------------------- commands
CREATE TEMP TABLE c (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.cid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.c WHERE label = l$$;
SELECT pg_temp.reset_mark();
INSERT INTO c SELECT 'refresh', command_id
  FROM device.send_command(pg_temp.uid('cat'), pg_temp.did('frame'), 'display.refresh', '{"mode": "full"}', 'cmd-1');
SELECT is(pg_temp.state(pg_temp.cid('refresh')), 'pending', 'a command to an offline device is pending');
SELECT is(pg_temp.queued('frame'), 0::bigint, '… and not sent yet');
SELECT is((SELECT command_id FROM device.send_command(pg_temp.uid('cat'), pg_temp.did('frame'), 'display.refresh', '{"mode": "full"}', 'cmd-1')),
          pg_temp.cid('refresh'), 'the same idempotency key and arguments return the first command');
SELECT throws_ok(format('SELECT device.send_command(%L, %L, %L, %L, %L)', pg_temp.uid('cat'), pg_temp.did('frame'), 'display.refresh', '{}', 'cmd-1'),
                 '23505', NULL, 'the same key with other arguments is 23505');
SELECT throws_ok(format('SELECT device.send_command(%L, %L, %L)', pg_temp.uid('dan'), pg_temp.did('frame'), 'display.refresh'),
                 '42501', NULL, 'a guest cannot send commands');
SELECT throws_ok(format('SELECT device.send_command(%L, %L, %L)', pg_temp.uid('cat'), pg_temp.did('frame'), 'Reboot Now'),
                 '22023', NULL, 'a malformed command name is 22023');
SELECT throws_ok(format('SELECT device.send_command(%L, %L, %L, %L)', pg_temp.uid('cat'), pg_temp.did('frame'), 'x', '[1]'),
                 '22023', NULL, 'args that are not an object are 22023');
SELECT throws_ok(format('SELECT device.send_command(%L, %L, %L, ttl_seconds => 1)', pg_temp.uid('cat'), pg_temp.did('frame'), 'x'),
                 '22023', NULL, 'a ttl under 10 seconds is 22023');
SELECT device.heartbeat(pg_temp.did('frame'));
SELECT is(pg_temp.state(pg_temp.cid('refresh')), 'sent', 'when the device comes online, its pending command is sent');
SELECT is((SELECT payload FROM isa.direct_messages WHERE subject = 'isa.devices.' || pg_temp.did('frame') || '.commands'),
          jsonb_build_object('command_id', pg_temp.cid('refresh'), 'command', 'display.refresh', 'args', '{"mode": "full"}'::jsonb,
                             'expires_at', (SELECT isa.iso_time(expires_at) FROM device.commands WHERE command_id = pg_temp.cid('refresh')),
                             'attempt', 1),
          'as a direct message on isa.devices.<id>.commands: id, command, args, expiry, attempt');
SELECT is(pg_temp.since_types(), 'device.online device.command_sent', 'device.command_sent is published when it first goes out');
INSERT INTO c SELECT 'now', command_id FROM device.send_command(pg_temp.uid('ann'), pg_temp.did('frame'), 'display.show', '{"file": "a.jpg"}');
SELECT is((SELECT (state, attempts)::text FROM device.commands WHERE command_id = pg_temp.cid('now')), '(sent,1)',
          'a command to an online device is sent at once');
-- backoff: nothing is due now; after the delay the command goes out again
SELECT device.process_commands();
SELECT is((SELECT attempts FROM device.commands WHERE command_id = pg_temp.cid('now')), 1, 'no re-send before the backoff');
UPDATE device.commands SET next_attempt_at = now() - interval '1 second' WHERE command_id = pg_temp.cid('now');
SELECT cmp_ok((SELECT n FROM device.process_commands() WHERE action = 'commands sent again'), '>=', 1::bigint,
              'an unacknowledged command goes out again after its backoff');
SELECT is((SELECT (attempts, next_attempt_at - now())::text FROM device.commands WHERE command_id = pg_temp.cid('now')),
          '(2,00:00:20)', 'the same id, attempt 2, and the next wait doubles (10 s, 20 s … 5 min)');
SELECT is(device._resend_delay(10), interval '300 seconds', 'the backoff stops at 5 minutes');
SELECT is(pg_temp.queued('frame'), 3::bigint, 'three direct messages: the pending one, the new one, its re-send');
SELECT is(pg_temp.since_types(), 'device.online device.command_sent device.command_sent', 're-sends publish nothing');
-- acknowledgements
SELECT is((SELECT state FROM device.acknowledge_command(pg_temp.did('frame'), pg_temp.cid('now'), true, '{"shown": true}')), 'acknowledged',
          'the device acknowledges the command');
SELECT is((SELECT (state, result)::text FROM device.acknowledge_command(pg_temp.did('frame'), pg_temp.cid('now'), false, NULL, 'late')),
          '(acknowledged,"{""shown"": true}")', 'a repeated or contrary answer changes nothing');
SELECT is((SELECT (state, error)::text FROM device.acknowledge_command(pg_temp.did('frame'), pg_temp.cid('refresh'), false, NULL, 'no panel')),
          '(failed,"no panel")', 'a device reports a command failed, with its error');
SELECT throws_ok(format('SELECT device.acknowledge_command(%L, %L)', pg_temp.did('cats'), pg_temp.cid('now')),
                 'P0002', NULL, 'a device cannot answer another device''s command');
UPDATE device.commands SET next_attempt_at = now() - interval '1 second' WHERE command_id = pg_temp.cid('now');
SELECT device.process_commands();
SELECT is((SELECT attempts FROM device.commands WHERE command_id = pg_temp.cid('now')), 2, 'an acknowledged command is not sent again');
-- expiry
INSERT INTO c SELECT 'old', command_id FROM device.send_command(pg_temp.uid('ann'), pg_temp.did('frame'), 'display.dim', ttl_seconds => 10);
UPDATE device.commands SET expires_at = now() - interval '1 second' WHERE command_id = pg_temp.cid('old');
SELECT cmp_ok((SELECT n FROM device.process_commands() WHERE action = 'commands expired'), '>=', 1::bigint,
              'the job expires an unacknowledged command past its time');
SELECT is(pg_temp.state(pg_temp.cid('old')), 'expired', 'it is expired');
SELECT is((SELECT state FROM device.acknowledge_command(pg_temp.did('frame'), pg_temp.cid('old'))), 'expired', 'a late ack does not revive it');
SELECT is((SELECT count(*) FROM device.list_commands(pg_temp.uid('dan'), pg_temp.did('frame'))), 3::bigint,
          'whoever sees the device lists its commands');
SELECT is((SELECT state FROM device.get_command(pg_temp.uid('cat'), pg_temp.cid('refresh'))), 'failed', 'and reads one');
SELECT throws_ok(format('SELECT device.get_command(%L, %L)', pg_temp.uid('eve'), pg_temp.cid('refresh')),
                 '42501', NULL, 'an outsider cannot read a command');
-- acks over MQTT: device.on_device_ack
INSERT INTO c SELECT 'mqtt', command_id FROM device.send_command(pg_temp.uid('ann'), pg_temp.did('frame'), 'display.show');
SELECT device.on_device_ack(pg_temp.mqtt('device.ack', 'cats', jsonb_build_object('command_id', pg_temp.cid('mqtt'), 'ok', true)));
SELECT is(pg_temp.state(pg_temp.cid('mqtt')), 'sent', 'an ack over MQTT for another device''s command changes nothing');
SELECT device.on_device_ack(pg_temp.mqtt('device.ack', 'frame', jsonb_build_object('command_id', pg_temp.cid('mqtt'), 'ok', 'yes')));
SELECT is(pg_temp.state(pg_temp.cid('mqtt')), 'sent', 'an ack whose ok is not a boolean is ignored');
SELECT device.on_device_ack(pg_temp.mqtt('device.ack', 'frame', jsonb_build_object('command_id', pg_temp.cid('mqtt'), 'ok', true,
                                                                                  'result', '{"shown": true}'::jsonb, 'message_id', 'ack-1')));
SELECT is((SELECT (state, result)::text FROM device.commands WHERE command_id = pg_temp.cid('mqtt')), '(acknowledged,"{""shown"": true}")',
          'an ack over MQTT acknowledges the device''s command, with its result');
SELECT device.on_device_ack(pg_temp.mqtt('device.ack', 'frame', jsonb_build_object('command_id', pg_temp.cid('mqtt'), 'ok', true, 'message_id', 'ack-1')));
SELECT is((SELECT count(*) FROM device.device_messages WHERE device_id = pg_temp.did('frame') AND message_id = 'ack-1'), 1::bigint,
          'the same ack twice is applied once');
INSERT INTO c SELECT 'mqtt-fail', command_id FROM device.send_command(pg_temp.uid('ann'), pg_temp.did('frame'), 'display.show');
SELECT device.on_device_ack(pg_temp.mqtt('device.ack', 'frame', jsonb_build_object('command_id', pg_temp.cid('mqtt-fail'), 'ok', false,
                                                                                  'error', 'no panel')));
SELECT is((SELECT (state, error)::text FROM device.commands WHERE command_id = pg_temp.cid('mqtt-fail')), '(failed,"no panel")',
          'ok false fails the command, with its error');

-- ---------------------------------------------------------------- member removed
INSERT INTO c SELECT 'cats-own', command_id FROM device.send_command(pg_temp.uid('cat'), pg_temp.did('cats'), 'display.refresh');
INSERT INTO c SELECT 'cats-fam', command_id FROM device.send_command(pg_temp.uid('cat'), pg_temp.did('frame'), 'display.refresh');
SELECT organization.remove_member(pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.uid('cat'));
SELECT throws_ok(format('SELECT device.send_command(%L, %L, %L)', pg_temp.uid('cat'), pg_temp.did('frame'), 'display.refresh'),
                 '42501', NULL, 'a removed member loses access at once (checked live)');
SELECT device.on_member_removed(pg_temp.event('organization.member_removed', 'organization_service',
           jsonb_build_object('org_id', pg_temp.oid('fam'), 'user_id', pg_temp.uid('cat'), 'role', 'member', 'reason', 'removed')));
SELECT is(pg_temp.state(pg_temp.cid('cats-fam')), 'failed', 'member_removed: their open commands to the organization''s devices fail');
SELECT is(pg_temp.state(pg_temp.cid('cats-own')), 'pending', '… not those to their own device');
SELECT throws_ok(format('SELECT device.rename_device(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.did('cats'), 'Mine now'),
                 '42501', NULL, 'the device of a member who left is no longer the organization''s: its owner cannot manage it');
SELECT ok(NOT EXISTS (SELECT 1 FROM device.list_organization_devices(pg_temp.uid('ann'), pg_temp.oid('fam')) x
                       WHERE x.device_id = pg_temp.did('cats')),
          '… nor does the organization list it');

-- ---------------------------------------------------------------- decommission
SELECT pg_temp.reset_mark();
INSERT INTO c SELECT 'last', command_id FROM device.send_command(pg_temp.uid('ann'), pg_temp.did('frame'), 'display.refresh');
-- the device holds a session (a device token) of auth
INSERT INTO auth.sessions (kind, device_id, expires_at) VALUES ('device', pg_temp.did('frame')::text, now() + interval '1 hour');
SELECT throws_ok(format('SELECT device.decommission_device(%L, %L)', pg_temp.uid('dan'), pg_temp.did('frame')),
                 '42501', NULL, 'a guest cannot decommission a device');
SELECT is(device.decommission_device(pg_temp.uid('ben'), pg_temp.did('frame')), true, 'an admin of its organization decommissions it');
SELECT is((SELECT status FROM device.get_device(pg_temp.uid('ann'), pg_temp.did('frame'))), 'decommissioned', 'its status says so');
SELECT is((SELECT count(*) FROM auth.devices WHERE device_id = pg_temp.did('frame')::text), 0::bigint,
          'auth forgot its key: it cannot authenticate again');
SELECT is((SELECT count(*) FROM auth.sessions WHERE device_id = pg_temp.did('frame')::text AND revoked_at IS NULL), 0::bigint,
          'its device sessions ended: its tokens are refused');
SELECT is(pg_temp.state(pg_temp.cid('last')), 'failed', 'its open commands failed');
SELECT is(pg_temp.since_types(), 'device.command_sent device.decommissioned', 'device.decommissioned is published');
SELECT is(device.decommission_device(pg_temp.uid('ann'), pg_temp.did('frame')), false, 'decommissioning again: false, nothing more');
SELECT throws_ok(format('SELECT device.send_command(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.did('frame'), 'x'),
                 '23514', NULL, 'a decommissioned device takes no command (23514)');
SELECT throws_ok(format('SELECT device.heartbeat(%L)', pg_temp.did('frame')), '23514', NULL, 'nor heartbeats');
SELECT lives_ok(format('SELECT device.register_device(%L, %L, %L, %L, %L)', pg_temp.uid('ann'), pg_temp.serial('frame'), 'Frame 10', pg_temp.key(6), 'New'),
                'its serial is free again');

-- ---------------------------------------------------------------- privileges
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
            WHERE p.pronamespace = 'device'::regnamespace AND has_function_privilege('isa_app', p.oid, 'EXECUTE')
              AND (p.proname LIKE '\_%' OR p.proname LIKE 'on\_%' OR NOT p.prosecdef)),
          NULL, 'isa_app may execute only SECURITY DEFINER API functions (no handler, no internal function)');
SELECT is((SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'device'::regnamespace
             AND has_function_privilege('isa_app_device', p.oid, 'EXECUTE')), 16::bigint, 'isa_app_device executes the 16 API functions');
SELECT ok(NOT has_function_privilege('isa_app', 'isa.send_direct_message(text, jsonb)', 'EXECUTE')
          AND has_function_privilege('isa_svc_device', 'isa.send_direct_message(text, jsonb)', 'EXECUTE'),
          'only the device service''s role may queue direct messages');
SELECT ok(NOT has_function_privilege('isa_app_device', 'device._nats_settings()', 'EXECUTE'),
          'the reader of the NATS signing key is the service''s own');
SELECT ok(NOT EXISTS (SELECT 1 FROM pg_class k WHERE k.relnamespace = 'device'::regnamespace AND k.relkind IN ('r', 'p')
                         AND has_table_privilege('isa_app', k.oid, 'SELECT')),
          'isa_app reads no table of device');
SELECT is((SELECT relowner::regrole::text FROM pg_class WHERE oid = 'device.devices'::regclass), 'isa_svc_device',
          'device''s tables belong to isa_svc_device');
GRANT SELECT ON u, d TO isa_app;
SET LOCAL ROLE isa_app;
SELECT is((SELECT name FROM device.get_device(pg_temp.uid('cat'), pg_temp.did('cats'))), 'Cat''s frame', 'isa_app calls the API');
SELECT throws_ok('SELECT 1 FROM device.devices', '42501', NULL, 'isa_app cannot read device.devices');
SELECT throws_ok($$SELECT isa.send_direct_message('isa.devices.x.commands', '{}')$$, '42501', NULL,
                 'isa_app cannot send a direct message');
RESET ROLE;
SELECT throws_ok($$SELECT isa.send_direct_message('wallet_service.tokens.deducted', '{}')$$, '22023', NULL,
                 'a direct message never goes to an event subject');

SELECT * FROM finish();
ROLLBACK;
