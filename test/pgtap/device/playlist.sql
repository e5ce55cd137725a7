-- playlist.sql — device playlists (docs/services/device.md, "Playlists"):
-- who sets and reads one, the checks of its items, versions, the event
-- device.playlist_updated and the command playlist.refresh (one waiting per
-- device), what the device reads (its owner's files, what reaches its owner
-- through its organization, albums expanded, signed download URLs, hidden
-- items counted and never named), decided live at every read (shares
-- revoked, a file deleted, the device moved, its sharer removed), errors,
-- the routes and privileges.  Through HTTP, NATS and MQTT:
-- test/integration/78-family-story.sh.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(76);
SET LOCAL isa.storage_url_secret = 'playlist-test-secret-0123456789abcdefghij';

\ir ../fixtures.psql
SELECT pg_temp.new_user(l) FROM unnest(ARRAY['ann', 'ben', 'cat', 'dan', 'eve']) l;
-- ann owns family fam: ben is an admin, cat a member, dan a guest; eve owns family eves, where cat is a member.
INSERT INTO o VALUES ('fam', (organization.create_organization(pg_temp.uid('ann'), 'family', 'Playlists')).org_id),
                     ('eves', (organization.create_organization(pg_temp.uid('eve'), 'family', 'Eves')).org_id);
SELECT pg_temp.join_org(g, w, l, r)
  FROM (VALUES ('fam', 'ann', 'ben', 'admin'), ('fam', 'ann', 'cat', 'member'), ('fam', 'ann', 'dan', 'guest'),
               ('eves', 'eve', 'cat', 'member')) AS m (g, w, l, r);
-- files and albums, by label
SELECT pg_temp.file(l, w) FROM (VALUES ('ann1', 'ann'), ('ann2', 'ann'), ('cat1', 'cat'), ('ben1', 'ben'), ('ben2', 'ben'),
                                       ('ben3', 'ben'), ('dan1', 'dan'), ('dan2', 'dan'), ('eve1', 'eve')) x (l, w);
SELECT storage.share_file(pg_temp.uid('ben'), pg_temp.fid('ben1'), org_id => pg_temp.oid('fam'));       -- storage's share with fam
SELECT organization.share_resource(pg_temp.uid('ben'), pg_temp.oid('fam'), 'file', pg_temp.fid('ben2')); -- organization's
SELECT storage.share_file(pg_temp.uid('eve'), pg_temp.fid('eve1'), org_id => pg_temp.oid('eves'));
SELECT storage.share_file(pg_temp.uid('dan'), pg_temp.fid('dan1'), user_id => pg_temp.uid('cat'));      -- with cat alone
SELECT storage.share_file(pg_temp.uid('dan'), pg_temp.fid('dan2'), user_id => pg_temp.uid('ben'));      -- with ben alone
-- ben's album balb, shared with fam: ben3, ben1, and dan2 (which ben could only read)
CREATE TEMP TABLE a (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
INSERT INTO a SELECT 'balb', (storage.create_album(pg_temp.uid('ben'), 'Ben''s')).album_id;
CREATE FUNCTION pg_temp.aid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.a WHERE label = l$$;
SELECT storage.add_album_file(pg_temp.uid('ben'), pg_temp.aid('balb'), pg_temp.fid(l)) FROM unnest(ARRAY['ben3', 'ben1', 'dan2']) l;
SELECT storage.share_album(pg_temp.uid('ben'), pg_temp.aid('balb'), org_id => pg_temp.oid('fam'));
-- devices: ann's frame in fam, cat's in fam, eve's in no organization
CREATE TEMP TABLE d (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.did(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.d WHERE label = l$$;
INSERT INTO d
SELECT l, (device.register_device(pg_temp.uid(w), 'SN-PL-' || l || '-' || txid_current(), 'Frame', sha256(convert_to('pl-' || l, 'UTF8')),
                                  initcap(l), organization_id => pg_temp.oid(g))).device_id
  FROM (VALUES ('frame', 'ann', 'fam'), ('cats', 'cat', 'fam'), ('solo', 'eve', NULL)) x (l, w, g);

-- an item list: pg_temp.items('file:ann1', 'album:balb', …)
CREATE FUNCTION pg_temp.items(VARIADIC x text[]) RETURNS jsonb LANGUAGE sql AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('kind', split_part(e, ':', 1),
                                                 'id', CASE split_part(e, ':', 1) WHEN 'file' THEN pg_temp.fid(split_part(e, ':', 2))
                                                                                  ELSE pg_temp.aid(split_part(e, ':', 2)) END)
                              ORDER BY n), '[]')
      FROM unnest(x) WITH ORDINALITY t (e, n) $$;
CREATE FUNCTION pg_temp.set(who text, dev text, VARIADIC x text[]) RETURNS jsonb LANGUAGE sql AS $$
    SELECT device.set_playlist(pg_temp.uid(who), pg_temp.did(dev), pg_temp.items(VARIADIC x)) $$;
-- what the device gets, as labels: 'ann1 ben3 …', and its hidden count
CREATE FUNCTION pg_temp.label(id uuid) RETURNS text LANGUAGE sql AS $$SELECT label FROM pg_temp.f WHERE f.id = $1$$;
CREATE FUNCTION pg_temp.shows(dev text) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce((SELECT string_agg(pg_temp.label((e ->> 'file_id')::uuid), ' ' ORDER BY n)
                       FROM jsonb_array_elements(p -> 'files') WITH ORDINALITY t (e, n)), '-') || ' / hidden ' || (p ->> 'hidden')
      FROM device.device_playlist(pg_temp.did(dev)) p $$;
-- the shown flags users see: 't f …'
CREATE FUNCTION pg_temp.shown(who text, dev text) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(CASE WHEN (e ->> 'shown')::boolean THEN 't' ELSE 'f' END, ' ' ORDER BY n)
      FROM jsonb_array_elements(device.get_playlist(pg_temp.uid(who), pg_temp.did(dev)) -> 'items') WITH ORDINALITY t (e, n) $$;
-- device's events about this file's devices, and a mark to read those since
CREATE TEMP VIEW ev AS
SELECT row_number() OVER (ORDER BY x.id) AS n, x.event_type, x.data
  FROM device.outbox x WHERE x.data ->> 'device_id' IN (SELECT id::text FROM d);
CREATE TEMP TABLE mark (at bigint) ON COMMIT DROP;
INSERT INTO mark VALUES (0);
CREATE FUNCTION pg_temp.reset_mark() RETURNS void LANGUAGE sql AS $$UPDATE mark SET at = (SELECT coalesce(max(n), 0) FROM ev)$$;
CREATE FUNCTION pg_temp.since_types() RETURNS text LANGUAGE sql
    AS $$SELECT coalesce(string_agg(event_type, ' ' ORDER BY n), '-') FROM ev WHERE n > (SELECT at FROM mark)$$;
CREATE FUNCTION pg_temp.refreshes(dev text) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(c.state || ' ' || (c.args ->> 'version') || coalesce(' (' || c.error || ')', ''), ', ' ORDER BY c.command_id)
      FROM device.commands c WHERE c.device_id = pg_temp.did(dev) AND c.command = 'playlist.refresh' $$;
SELECT pg_temp.reset_mark();

-- ---------------------------------------------------------------- catalogue
SELECT has_table('device', 'playlists', 'table device.playlists exists');
SELECT has_table('device', 'playlist_items', 'table device.playlist_items exists');
SELECT set_eq($$SELECT method || ' ' || path || ' ' || auth || ' ' || function::regprocedure::text FROM isa.http_routes
                 WHERE path LIKE '%playlist%'$$,
              ARRAY['GET /v1/devices/{device_id}/playlist user device.get_playlist(uuid,uuid)',
                    'PUT /v1/devices/{device_id}/playlist user device.set_playlist(uuid,uuid,jsonb)',
                    'GET /v1/device/playlist device device.device_playlist(uuid,integer)'],
              'three routes: users read and set a device''s playlist, the device reads its own with its device token');

-- ---------------------------------------------------------------- none yet
SELECT is(device.get_playlist(pg_temp.uid('ann'), pg_temp.did('frame')) - 'device_id',
          '{"version": 0, "items": [], "updated_by": null, "updated_at": null}'::jsonb, 'no playlist yet: version 0, no items');
SELECT is(device.device_playlist(pg_temp.did('frame')) - 'device_id',
          '{"version": 0, "files": [], "hidden": 0, "truncated": false, "updated_at": null}'::jsonb,
          'the device reads an empty playlist');

-- ---------------------------------------------------------------- set: the checks
SELECT throws_ok(format('SELECT device.set_playlist(%L, %L, NULL)', pg_temp.uid('ann'), pg_temp.did('frame')),
                 '22004', NULL, 'items NULL: 22004');
SELECT throws_ok(format('SELECT device.set_playlist(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.did('frame'), '{"kind": "file"}'),
                 '22023', 'items must be a JSON array of at most 200 items', 'items not an array: 22023');
SELECT throws_ok(format('SELECT device.set_playlist(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.did('frame'),
                        (SELECT jsonb_agg(jsonb_build_object('kind', 'file', 'id', gen_random_uuid())) FROM generate_series(1, 201))),
                 '22023', 'items must be a JSON array of at most 200 items', '201 items: 22023');
SELECT throws_ok(format('SELECT device.set_playlist(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.did('frame'), '[1]'),
                 '22023', 'item 0 of the playlist is not a JSON object', 'an item that is not an object: 22023');
SELECT throws_ok(format('SELECT device.set_playlist(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.did('frame'),
                        jsonb_build_array(jsonb_build_object('kind', 'file', 'id', pg_temp.fid('ann1')),
                                          jsonb_build_object('kind', 'photo', 'id', pg_temp.fid('ann2')))),
                 '22023', 'item 1 of the playlist is not {"kind": "file" or "album", "id": a uuid}', 'a kind neither file nor album: 22023');
SELECT throws_ok(format('SELECT device.set_playlist(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.did('frame'), '[{"kind": "file", "id": "x"}]'),
                 '22023', NULL, 'an id that is not a uuid: 22023');
SELECT throws_ok(format('SELECT device.set_playlist(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.did('frame'),
                        jsonb_build_array(jsonb_build_object('kind', 'file', 'id', pg_temp.fid('ann1'), 'url', 'http://x'))),
                 '22023', NULL, 'an item with another key: 22023');
SELECT throws_ok(format('SELECT device.set_playlist(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.did('frame'),
                        pg_temp.items('file:ann1', 'file:ann2', 'file:ann1')),
                 '22023', format('item 2 of the playlist names file %s again', pg_temp.fid('ann1')), 'a file twice: 22023');
SELECT throws_ok(format('SELECT device.set_playlist(%L, %L, %L)', pg_temp.uid('ann'), gen_random_uuid(), pg_temp.items('file:ann1')),
                 'P0002', NULL, 'an unknown device: P0002');
SELECT throws_ok(format('SELECT device.set_playlist(%L, %L, %L)', pg_temp.uid(l), pg_temp.did('frame'), pg_temp.items('file:ann1')),
                 '42501', NULL, format('%s (%s) may not set the playlist: 42501', l, r))
  FROM (VALUES ('cat', 'a member: command, not manage'), ('dan', 'a guest'), ('eve', 'an outsider')) x (l, r);
SELECT throws_ok(format('SELECT device.set_playlist(%L, %L, %L)', pg_temp.uid('ben'), pg_temp.did('frame'), pg_temp.items('file:ben1', 'file:ann2')),
                 'P0002', format('file %s not found', pg_temp.fid('ann2')),
                 'an admin may not put a file he cannot read (ann''s own) into it: P0002, as for none');
SELECT throws_ok(format('SELECT device.set_playlist(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.did('frame'),
                        jsonb_build_array(jsonb_build_object('kind', 'album', 'id', gen_random_uuid()))),
                 'P0002', NULL, 'an album that does not exist: P0002');
SELECT is((SELECT count(*) FROM device.playlists WHERE device_id = pg_temp.did('frame')) || ' ' || pg_temp.since_types(), '0 -',
          'nothing was written, nothing published');

-- ---------------------------------------------------------------- set
CREATE TEMP TABLE r (label text PRIMARY KEY, v jsonb) ON COMMIT DROP;
INSERT INTO r SELECT 'v1', pg_temp.set('ann', 'frame', 'file:ann1', 'file:ben1', 'album:balb', 'file:ben2', 'file:ann2');
SELECT is((SELECT (v ->> 'version') || ' ' || (v ->> 'updated_by') || ' ' || jsonb_array_length(v -> 'items') FROM r WHERE label = 'v1'),
          '1 ' || pg_temp.uid('ann') || ' 5', 'ann, the owner, sets the playlist: version 1, by her, five items');
SELECT is((SELECT v -> 'items' -> 2 FROM r WHERE label = 'v1'),
          jsonb_build_object('position', 2, 'kind', 'album', 'id', pg_temp.aid('balb'), 'shown', true),
          'each item: its position, kind, id, and whether the device may show it');
SELECT is(pg_temp.since_types(), 'device.playlist_updated', 'device.playlist_updated is published (the frame is offline: no command goes out yet)');
SELECT is((SELECT data FROM ev WHERE event_type = 'device.playlist_updated' ORDER BY n DESC LIMIT 1),
          jsonb_build_object('device_id', pg_temp.did('frame'), 'owner_id', pg_temp.uid('ann'), 'organization_id', pg_temp.oid('fam'),
                             'version', 1, 'item_count', 5, 'updated_by', pg_temp.uid('ann'),
                             'command_id', (SELECT (v ->> 'command_id')::uuid FROM r WHERE label = 'v1')),
          'its data: device, owner, organization, version, item_count, updated_by, command_id');
SELECT is((SELECT c.command || ' ' || c.args::text || ' ' || c.state || ' ' || (c.sent_by = pg_temp.uid('ann'))
                  || ' ' || (c.expires_at - c.created_at)::text
             FROM device.commands c WHERE c.command_id = (SELECT (v ->> 'command_id')::uuid FROM r WHERE label = 'v1')),
          'playlist.refresh {"version": 1} pending true 1 day',
          'the device is sent playlist.refresh {version} through the command path: pending until it is online, for a day');
SELECT pg_temp.reset_mark();
INSERT INTO r SELECT 'same', pg_temp.set('ann', 'frame', 'file:ann1', 'file:ben1', 'album:balb', 'file:ben2', 'file:ann2');
SELECT is((SELECT (v ->> 'version') || ' ' || (v ? 'command_id') FROM r WHERE label = 'same') || ' ' || pg_temp.since_types()
          || ' ' || pg_temp.refreshes('frame'), '1 false - pending 1',
          'the same list again changes nothing: version 1, no event, no second command');
INSERT INTO r SELECT 'v2', pg_temp.set('ben', 'frame', 'album:balb', 'file:ben1');
SELECT is((SELECT (v ->> 'version') || ' ' || (v ->> 'updated_by') FROM r WHERE label = 'v2'), '2 ' || pg_temp.uid('ben'),
          'ben, an admin of its organization, sets another list: version 2');
SELECT is(pg_temp.refreshes('frame'), 'expired 1 (superseded by playlist version 2), pending 2',
          'the refresh not yet delivered is superseded: one refresh waits per device');
SELECT pg_temp.reset_mark();
SELECT is((device.heartbeat(pg_temp.did('frame'))).status, 'online', 'the frame comes online');
SELECT is(pg_temp.since_types() || ' / ' || pg_temp.refreshes('frame'),
          'device.online device.command_sent / expired 1 (superseded by playlist version 2), sent 2',
          'its waiting refresh goes out (device.command_sent)');
SELECT pg_temp.reset_mark();
INSERT INTO r SELECT 'v3', pg_temp.set('ann', 'frame', 'file:ann1', 'album:balb', 'file:ben1', 'file:ben2', 'file:ann2');
SELECT is(pg_temp.since_types() || ' / ' || pg_temp.refreshes('frame'),
          'device.command_sent device.playlist_updated / expired 1 (superseded by playlist version 2), expired 2 (superseded by playlist version 3), sent 3',
          'online, a new list''s refresh goes out at once; the one sent but not acknowledged is superseded');
SELECT is((SELECT (payload -> 'args')::text FROM isa.direct_messages
            WHERE subject = 'isa.devices.' || pg_temp.did('frame') || '.commands' AND payload ->> 'command' = 'playlist.refresh'
            ORDER BY id DESC LIMIT 1),
          '{"version": 3}', 'the message on isa.devices.<id>.commands: playlist.refresh {version}');

-- ---------------------------------------------------------------- get (users)
SELECT is((SELECT string_agg((e ->> 'kind') || ':' || coalesce(pg_temp.label((e ->> 'id')::uuid), 'balb'), ' ' ORDER BY (e ->> 'position')::integer)
             FROM jsonb_array_elements(device.get_playlist(pg_temp.uid('dan'), pg_temp.did('frame')) -> 'items') e),
          'file:ann1 album:balb file:ben1 file:ben2 file:ann2', 'a guest of its organization reads the playlist, in order');
SELECT is(device.get_playlist(pg_temp.uid('dan'), pg_temp.did('frame')) ->> 'version', '3', '… version 3');
SELECT throws_ok(format('SELECT device.get_playlist(%L, %L)', pg_temp.uid('eve'), pg_temp.did('frame')), '42501', NULL,
                 'an outsider may not: 42501');
SELECT throws_ok(format('SELECT device.get_playlist(%L, %L)', pg_temp.uid('eve'), gen_random_uuid()), 'P0002', NULL,
                 'an unknown device: P0002');

-- ---------------------------------------------------------------- what the device reads
SELECT is(pg_temp.shows('frame'), 'ann1 ben3 ben1 ben1 ben2 ann2 / hidden 0',
          'the device reads its files in order, the album expanded in its order (without dan2, which ben could only read)');
CREATE TEMP TABLE p AS SELECT device.device_playlist(pg_temp.did('frame')) AS v;
SELECT is((SELECT v ->> 'version' FROM p), '3', 'at version 3');
SELECT is((SELECT string_agg((e ->> 'position') || ' ' || (e ->> 'kind') || ' ' || coalesce(e ->> 'album_id' = pg_temp.aid('balb')::text, false), ', ')
             FROM jsonb_array_elements((SELECT v -> 'files' FROM p)) e),
          '0 file false, 1 album true, 1 album true, 2 file false, 3 file false, 4 file false',
          'each file says the position and kind of its item, and its album');
SELECT is((SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys((SELECT v -> 'files' -> 0 FROM p)) k),
          'album_id,content_type,created_at,expires,file_id,kind,name,position,sha256,size,url',
          'a file: its metadata and a signed URL, not its owner');
SELECT is((SELECT (v -> 'files' -> 0 ->> 'name') || ' ' || (v -> 'files' -> 0 ->> 'content_type') || ' ' || (v -> 'files' -> 0 ->> 'size') FROM p),
          'ann1.jpg image/jpeg 10', '… name, content type, size');
CREATE TEMP TABLE url AS
SELECT (e ->> 'file_id')::uuid AS file_id, (e ->> 'expires')::bigint AS expires,
       (regexp_match(e ->> 'url', '^/v1/downloads/([0-9a-f-]{36})\?expires=([0-9]+)&signature=([A-Za-z0-9_-]+)$')) AS m
  FROM jsonb_array_elements((SELECT v -> 'files' FROM p)) e;
SELECT is((SELECT count(*) FROM url WHERE m[1]::uuid = file_id AND m[2]::bigint = expires), 6::bigint,
          'url: /v1/downloads/<file_id>?expires=…&signature=…');
SELECT is((SELECT count(*) FROM url WHERE (storage.get_signed_file(file_id, m[2]::bigint, m[3])).file_id = file_id), 6::bigint,
          'each signature is valid (storage.get_signed_file)');
SELECT ok((SELECT bool_and(expires BETWEEN extract(epoch FROM now())::bigint + 3599 AND extract(epoch FROM now())::bigint + 3601) FROM url),
          'valid an hour by default');
SELECT ok((SELECT bool_and((e ->> 'expires')::bigint <= extract(epoch FROM now())::bigint + 121)
             FROM jsonb_array_elements(device.device_playlist(pg_temp.did('frame'), 120) -> 'files') e),
          'ttl_seconds 120: two minutes');
SELECT throws_ok(format('SELECT device.device_playlist(%L, %s)', pg_temp.did('frame'), t), '22023',
                 format('ttl_seconds must be from 60 to 86400, not %s', t), format('ttl_seconds %s: 22023', t))
  FROM unnest(ARRAY[59, 86401]) t;
SELECT throws_ok(format('SELECT device.device_playlist(%L, NULL)', pg_temp.did('frame')), '22004', NULL, 'ttl_seconds NULL: 22004');
SELECT throws_ok(format('SELECT device.device_playlist(%L)', gen_random_uuid()), 'P0002', NULL, 'an unknown device: P0002');

-- ---------------------------------------------------------------- decided when the device reads
SELECT device.move_device(pg_temp.uid('ann'), pg_temp.did('frame'), NULL);
SELECT is(pg_temp.shows('frame'), 'ann1 ann2 / hidden 3', 'moved out of the family, the frame shows only its owner''s files');
SELECT throws_ok(format('SELECT device.get_playlist(%L, %L)', pg_temp.uid('dan'), pg_temp.did('frame')), '42501', NULL,
                 'and dan, a guest of the family it left, may no longer read its playlist');
SELECT is(pg_temp.shown('ann', 'frame'), 't f f f t', 'its owner sees which items it does not show');
SELECT device.move_device(pg_temp.uid('ann'), pg_temp.did('frame'), pg_temp.oid('fam'));
SELECT is(pg_temp.shows('frame'), 'ann1 ben3 ben1 ben1 ben2 ann2 / hidden 0', 'moved back: all of it again (the items were kept)');
SELECT storage.revoke_share(pg_temp.uid('ben'), (SELECT share_id FROM storage.list_file_shares(pg_temp.uid('ben'), pg_temp.fid('ben1'))));
SELECT is(pg_temp.shows('frame'), 'ann1 ben3 ben1 ben1 ben2 ann2 / hidden 0',
          'ben1''s share with the family revoked: still shown, through the album ben put it in');
SELECT storage.revoke_share(pg_temp.uid('ben'), (SELECT share_id FROM storage.list_album_shares(pg_temp.uid('ben'), pg_temp.aid('balb'))));
SELECT is(pg_temp.shows('frame'), 'ann1 ben2 ann2 / hidden 2', 'the album''s share revoked too: the album and ben1 are hidden');
SELECT is(pg_temp.shown('dan', 'frame'), 't f f t t', 'users see them not shown');
SELECT storage.delete_file(pg_temp.uid('ann'), pg_temp.fid('ann2'));
SELECT is(pg_temp.shows('frame'), 'ann1 ben2 / hidden 3', 'a deleted file is hidden');
SELECT organization.remove_member(pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.uid('ben'));
SELECT is(pg_temp.shows('frame'), 'ann1 / hidden 4', 'its sharer removed from the family: what he shared through organization is hidden');
SELECT ok(position(pg_temp.fid('ben2')::text IN device.device_playlist(pg_temp.did('frame'))::text) = 0,
          'the device is never told which items are hidden');
SELECT is(device.get_playlist(pg_temp.uid('ann'), pg_temp.did('frame')) ->> 'version', '3', 'none of this changed the playlist (version 3)');

-- ---------------------------------------------------------------- a frame shows only what reaches its owner through its organization
INSERT INTO r SELECT 'cats', pg_temp.set('cat', 'cats', 'file:cat1', 'file:eve1', 'file:dan1');
SELECT is(pg_temp.shows('cats') || ' / ' || pg_temp.shown('cat', 'cats'), 'cat1 / hidden 2 / t f f',
          'cat''s frame (in fam): her file; not eve1 (shared with her other family) nor dan1 (shared with her alone)');
INSERT INTO r SELECT 'cats-ann', pg_temp.set('ann', 'cats', 'file:ann1');
SELECT is(pg_temp.shows('cats'), '- / hidden 1', 'ann, owner of its family, manages cat''s frame, but her own private file is not shown on it');
INSERT INTO r SELECT 'solo', pg_temp.set('eve', 'solo', 'file:eve1');
SELECT is(pg_temp.shows('solo'), 'eve1 / hidden 0', 'a frame in no organization shows its owner''s files');

-- ---------------------------------------------------------------- decommissioned
SELECT device.decommission_device(pg_temp.uid('ann'), pg_temp.did('frame'));
SELECT throws_ok(format('SELECT device.device_playlist(%L)', pg_temp.did('frame')), '23514', NULL,
                 'a decommissioned device reads no playlist: 23514');
SELECT throws_ok(format('SELECT device.set_playlist(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.did('frame'), '[]'), '23514', NULL,
                 'and gets none: 23514');
SELECT is(pg_temp.shown('ann', 'frame'), 'f f f f f', 'its playlist stays readable to users, nothing shown');
SELECT is(pg_temp.refreshes('frame'), 'expired 1 (superseded by playlist version 2), expired 2 (superseded by playlist version 3), failed 3 (device decommissioned)',
          'its open refresh failed with it');
SELECT pg_temp.reset_mark();
INSERT INTO r SELECT 'clear', device.set_playlist(pg_temp.uid('eve'), pg_temp.did('solo'), '[]');
SELECT is((SELECT (v ->> 'version') || ' ' || (v -> 'items')::text FROM r WHERE label = 'clear') || ' / ' || pg_temp.shows('solo'),
          '2 [] / - / hidden 0', 'an empty list clears a playlist (a new version)');
SELECT is(pg_temp.since_types(), 'device.playlist_updated', '… published like any other');

-- ---------------------------------------------------------------- privileges
SELECT ok(has_function_privilege('isa_app_device', 'device.set_playlist(uuid,uuid,jsonb)', 'EXECUTE')
          AND has_function_privilege('isa_app_device', 'device.get_playlist(uuid,uuid)', 'EXECUTE')
          AND has_function_privilege('isa_app_device', 'device.device_playlist(uuid,integer)', 'EXECUTE'),
          'isa_app_device executes the three playlist functions');
SELECT ok(NOT has_function_privilege('isa_app', 'device._playlist_view(device.devices)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'device._playlist_file(storage.file_info,integer)', 'EXECUTE'),
          'not the internal ones');
SELECT ok(has_function_privilege('isa_svc_device', 'storage.sign_download(uuid,integer)', 'EXECUTE')
          AND has_function_privilege('isa_svc_device', 'storage.can_read(uuid,uuid)', 'EXECUTE')
          AND has_function_privilege('isa_svc_device', 'storage.can_read_album(uuid,uuid)', 'EXECUTE'),
          'the device service''s role may ask storage what it needs');
SELECT is((SELECT string_agg(relname || ' ' || relowner::regrole::text, ', ' ORDER BY relname) FROM pg_class
            WHERE oid IN ('device.playlists'::regclass, 'device.playlist_items'::regclass)),
          'playlist_items isa_svc_device, playlists isa_svc_device', 'the tables belong to isa_svc_device');
GRANT SELECT ON u, d TO isa_app;
SET LOCAL ROLE isa_app;
SELECT is(device.get_playlist(pg_temp.uid('cat'), pg_temp.did('cats')) ->> 'version', '2', 'isa_app calls the API');
SELECT is(device.device_playlist(pg_temp.did('cats')) ->> 'hidden', '1', '… the device''s function too (isa-httpd, with its device token)');
SELECT throws_ok('SELECT 1 FROM device.playlist_items', '42501', NULL, 'isa_app cannot read device.playlist_items');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
