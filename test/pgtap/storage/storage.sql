-- storage.sql — the storage service: uploads (begin, chunks in order, finish
-- with size and SHA-256 checks), files invisible until finished, byte-range
-- reads across chunks, owner checks, soft delete, signed download URLs, the
-- purge of abandoned uploads, the user.deleted handler, the events each
-- operation puts in storage.outbox, the settings, and who may call what.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(202);

-- Users this file creates, by label.
CREATE TEMP TABLE u (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.uid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.u WHERE label = l$$;
CREATE FUNCTION pg_temp.new_user(l text) RETURNS uuid LANGUAGE sql AS $$
    INSERT INTO pg_temp.u
    SELECT l, (account.create_user('storage-' || l || '-' || gen_random_uuid() || '@example.test', 'Storage ' || l)).user_id
    RETURNING id $$;
-- Uploads and files this file makes, by label.
CREATE TEMP TABLE f (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.fid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.f WHERE label = l$$;
CREATE FUNCTION pg_temp.begin(l text, owner text, name text, size bigint DEFAULT NULL) RETURNS uuid LANGUAGE sql AS $$
    INSERT INTO pg_temp.f SELECT l, storage.begin_upload(pg_temp.uid(owner), name, 'text/plain', size) RETURNING id $$;
CREATE FUNCTION pg_temp.bytes(s text) RETURNS bytea LANGUAGE sql AS $$SELECT convert_to(s, 'UTF8')$$;
-- The outbox rows of this file's users, in publication order.
CREATE TEMP VIEW ev AS
SELECT o.id, o.event_type, o.data, (SELECT label FROM u WHERE u.id::text = o.data ->> 'owner_id') AS label
  FROM storage.outbox o
 WHERE o.data ->> 'owner_id' IN (SELECT id::text FROM u);
-- An event as the bridge hands it to a handler.
CREATE FUNCTION pg_temp.event(event_type text, source text, data jsonb) RETURNS isa.event LANGUAGE sql AS $$
    SELECT isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(), 'event_type', event_type, 'source', source,
                                                  'timestamp', now(), 'data', data)) $$;

-- isa.storage_max_file_bytes and isa.storage_url_secret, for this transaction
-- (NULL: the default).  When isa.so defines them as GUCs, SET LOCAL sets them.  Until then the
-- prefix "isa." is reserved (MarkGUCPrefixReserved) and an undefined isa.*
-- setting cannot be set at all: storage._setting(), through which the service
-- reads them, is then replaced for this transaction (rolled back at the end)
-- by one that reads pg_temp.settings first.
CREATE TEMP TABLE settings (name text PRIMARY KEY, value text) ON COMMIT DROP;
CREATE FUNCTION pg_temp.set(setting_name text, value text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    BEGIN
        IF value IS NULL THEN
            EXECUTE 'SET LOCAL ' || setting_name || ' TO DEFAULT';
        ELSE
            PERFORM set_config(setting_name, value, true);
        END IF;
        RETURN;
    EXCEPTION WHEN invalid_name OR undefined_object THEN
        NULL;
    END;
    INSERT INTO pg_temp.settings VALUES (setting_name, value) ON CONFLICT (name) DO UPDATE SET value = excluded.value;
    CREATE OR REPLACE FUNCTION storage._setting(setting_name text) RETURNS text
        LANGUAGE sql STABLE
        SET search_path = pg_catalog, pg_temp
        AS $$SELECT nullif(coalesce((SELECT s.value FROM pg_temp.settings s WHERE s.name = setting_name),
                                    current_setting(setting_name, true)), '')$$;
END
$f$;
CREATE FUNCTION pg_temp.sig(file_id uuid, expires bigint) RETURNS text LANGUAGE sql AS $$
    SELECT isa.base64url_encode(isa.hmac_sha256(convert_to('pgtap-storage-secret-0123456789abcdef', 'UTF8'),
                                                convert_to(file_id::text || '.' || expires::text, 'UTF8'))) $$;

-- ---------------------------------------------------------------- schema
SELECT has_table('storage', 'files', 'table storage.files exists');
SELECT has_table('storage', 'chunks', 'table storage.chunks exists');
SELECT is((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
            WHERE a.attrelid = (SELECT typrelid FROM pg_type WHERE oid = 'storage.file_info'::regtype)
              AND a.attnum > 0 AND NOT a.attisdropped),
          ARRAY['file_id', 'owner_id', 'name', 'content_type', 'size', 'sha256', 'created_at'],
          'file_info is (file_id, owner_id, name, content_type, size, sha256, created_at)');
SELECT is((SELECT attstorage FROM pg_attribute WHERE attrelid = 'storage.chunks'::regclass AND attname = 'data'), 'e',
          'chunks.data is STORAGE EXTERNAL (uncompressed, sliced reads)');
SELECT col_is_pk('storage', 'chunks', ARRAY['file_id', 'seq'], 'chunks are keyed by (file_id, seq)');
SELECT set_eq($$SELECT event_type || ' ' || version || ' ' || (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(data_fields) k)
                 FROM isa.event_types WHERE source = 'storage_service' AND event_type LIKE 'file.%'$$,
              ARRAY['file.uploaded 1.0.0 content_type,file_id,name,owner_id,sha256,size',
                    'file.deleted 1.0.0 deleted_at,file_id,owner_id,reason,size',
                    'file.shared 1.0.0 access,expires_at,kind,org_id,owner_id,resource_id,share_id,user_id',
                    'file.unshared 1.0.0 kind,org_id,owner_id,reason,resource_id,share_id,user_id'],
              'file.uploaded, file.deleted, file.shared and file.unshared are registered with their data fields');
SELECT set_eq($$SELECT subject_filter || ' ' || handler::text FROM isa.subscriptions WHERE service = 'storage'$$,
              ARRAY['account_service.user.deleted storage.on_user_deleted(isa.event)',
                    'organization_service.organization.member_removed storage.on_member_removed(isa.event)',
                    'order_service.order.fulfilled storage.on_order_fulfilled(isa.event)'],
              'storage subscribes to user.deleted, organization.member_removed and order.fulfilled');
SELECT is((SELECT schedule || ' | ' || command FROM isa.scheduled_jobs WHERE jobname = 'isa-storage-purge-uploads'),
          '*/10 * * * * | SELECT storage.purge_abandoned_uploads()',
          'isa.scheduled_jobs purges abandoned uploads every 10 minutes (isa-storage-purge-uploads)');
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
            WHERE p.pronamespace = 'storage'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL),
          NULL, 'every function of schema storage has a comment');
SELECT set_eq($$SELECT r.method || ' ' || r.path || ' ' || r.function::text || ' ' || r.auth || ' ' || coalesce(r.subject_param, '-')
                       || ' ' || r.status
                  FROM isa.http_routes r JOIN pg_proc p ON p.oid = r.function
                 WHERE p.pronamespace = 'storage'::regnamespace$$,
              ARRAY['GET /v1/files storage.list_files(uuid,integer) user owner_id 200',
                    'GET /v1/files/{file_id} storage.get_readable_file(uuid,uuid) user user_id 200',
                    'PATCH /v1/files/{file_id} storage.rename_file(uuid,uuid,text) user user_id 200',
                    'DELETE /v1/files/{file_id} storage.delete_file(uuid,uuid) user owner_id 200',
                    'POST /v1/files/{file_id}/download-url storage.sign_my_download(uuid,uuid,integer) user owner_id 200',
                    'POST /v1/files storage.begin_upload(uuid,text,text,bigint) user owner_id 201',
                    'GET /v1/files/{file_id}/content storage.get_readable_file(uuid,uuid) user user_id 200',
                    'GET /v1/downloads/{file_id} storage.get_signed_file(uuid,bigint,text) public - 200',
                    'POST /v1/files/{file_id}/shares storage.share_file(uuid,uuid,uuid,uuid,text,timestamp with time zone,text) user owner_id 201',
                    'GET /v1/files/{file_id}/shares storage.list_file_shares(uuid,uuid) user owner_id 200',
                    'DELETE /v1/shares/{share_id} storage.revoke_share(uuid,uuid) user owner_id 200',
                    'GET /v1/shared-with-me storage.list_shared_with_me(uuid,integer) user user_id 200',
                    'POST /v1/albums storage.create_album(uuid,text,text) user owner_id 201',
                    'GET /v1/albums storage.list_albums(uuid,integer) user owner_id 200',
                    'GET /v1/albums/{album_id} storage.get_album(uuid,uuid) user user_id 200',
                    'DELETE /v1/albums/{album_id} storage.delete_album(uuid,uuid) user owner_id 200',
                    'GET /v1/albums/{album_id}/files storage.list_album_files(uuid,uuid,integer) user user_id 200',
                    'POST /v1/albums/{album_id}/files storage.add_album_file(uuid,uuid,uuid) user user_id 200',
                    'DELETE /v1/albums/{album_id}/files/{file_id} storage.remove_album_file(uuid,uuid,uuid) user user_id 200',
                    'PUT /v1/albums/{album_id}/order storage.reorder_album(uuid,uuid,uuid[]) user user_id 200',
                    'POST /v1/albums/{album_id}/shares storage.share_album(uuid,uuid,uuid,uuid,text,timestamp with time zone,text) user owner_id 201',
                    'GET /v1/albums/{album_id}/shares storage.list_album_shares(uuid,uuid) user owner_id 200',
                    'PUT /v1/files/{file_id}/offer storage.offer_file(uuid,uuid,bigint) user owner_id 200',
                    'GET /v1/files/{file_id}/offer storage.get_offer(uuid) user - 200',
                    'DELETE /v1/files/{file_id}/offer storage.withdraw_offer(uuid,uuid) user owner_id 200'],
              'the HTTP routes of storage');

-- ---------------------------------------------------------------- settings
SELECT pg_temp.set('isa.storage_max_file_bytes', NULL);
SELECT is(storage._max_file_bytes(), 67108864::bigint, 'isa.storage_max_file_bytes defaults to 64 MiB');
SELECT is(storage._max_file_bytes('1000'), 1000::bigint, 'a number of bytes is taken as it is');
SELECT is(storage._max_file_bytes('16MB'), 16777216::bigint, 'a value with a unit (as an integer GUC shows it) is understood');
SELECT throws_ok($$SELECT storage._max_file_bytes('lots')$$, '55000', NULL, 'a malformed isa.storage_max_file_bytes is 55000');
SELECT throws_ok($$SELECT storage._max_file_bytes('1GB')$$, '55000', NULL, 'more than 512 MiB is 55000');
SELECT throws_ok($$SELECT storage._url_secret(NULL)$$, '55000',
                 'signed download URLs are not configured: isa.storage_url_secret is not set',
                 'an unset isa.storage_url_secret is 55000');
SELECT throws_ok($$SELECT storage._url_secret('0123456789abcdef0123456789abcde')$$, '55000',
                 'signed download URLs are not configured: isa.storage_url_secret is shorter than 32 bytes',
                 'a secret of 31 bytes is 55000');
SELECT is(storage._url_secret('0123456789abcdef0123456789abcdef'), convert_to('0123456789abcdef0123456789abcdef', 'UTF8'),
          'a secret of 32 bytes is the key');

-- ---------------------------------------------------------------- begin_upload
SELECT pg_temp.new_user('alice');
SELECT pg_temp.new_user('bob');
SELECT pg_temp.begin('a1', 'alice', 'notes.txt', 30);
SELECT is(substr(pg_temp.fid('a1')::text, 15, 1), '7', 'begin_upload returns a UUIDv7');
SELECT is((SELECT (x.owner_id, x.name, x.content_type, x.declared_size, x.size, x.status) FROM storage.files x
            WHERE x.file_id = pg_temp.fid('a1')),
          ROW(pg_temp.uid('alice'), 'notes.txt'::text, 'text/plain'::text, 30::bigint, 0::bigint, 'uploading'::text),
          'begin_upload records the upload: owner, name, content type, declared size, nothing received');
INSERT INTO f VALUES ('blob1', storage.begin_upload(pg_temp.uid('alice'), 'blob')),
                     ('blob2', storage.begin_upload(pg_temp.uid('alice'), 'blob', NULL));
SELECT is((SELECT x.content_type FROM storage.files x WHERE x.file_id = pg_temp.fid('blob1')), 'application/octet-stream',
          'the content type defaults to application/octet-stream');
SELECT is((SELECT x.content_type FROM storage.files x WHERE x.file_id = pg_temp.fid('blob2')), 'application/octet-stream',
          'a NULL content type is application/octet-stream too');
SELECT lives_ok(format('SELECT storage.begin_upload(%L, %L, %L)', pg_temp.uid('alice'), 'page.html', 'text/html; charset=utf-8'),
                'a content type may have parameters');
SELECT lives_ok(format('SELECT storage.begin_upload(%L, %L, %L)', pg_temp.uid('alice'), 'x.svg', 'image/svg+xml'),
                'image/svg+xml is a content type');
SELECT lives_ok(format('SELECT storage.begin_upload(%L, %L)', pg_temp.uid('alice'), repeat('é', 255)),
                'a name of 255 characters is accepted');
SELECT lives_ok(format('SELECT storage.begin_upload(%L, %L)', pg_temp.uid('alice'), 'Photo 2024 (1).jpeg'),
                'a name may have spaces and brackets');
SELECT lives_ok(format('SELECT storage.begin_upload(%L, %L, size => 67108864)', pg_temp.uid('alice'), 'max'),
                'a declared size of exactly the maximum is accepted');
SELECT lives_ok(format('SELECT storage.begin_upload(%L, %L, size => 0)', pg_temp.uid('alice'), 'empty'),
                'a declared size of 0 is accepted');
SELECT throws_ok('SELECT storage.begin_upload(NULL, ''a'')', '22004', 'owner_id must not be null', 'begin_upload without owner is 22004');
SELECT throws_ok(format('SELECT storage.begin_upload(%L, %L)', gen_random_uuid(), 'a'), 'P0002', NULL,
                 'begin_upload for an unknown user is P0002');
SELECT pg_temp.new_user('gone');
SELECT account.delete_user(pg_temp.uid('gone'));
SELECT throws_ok(format('SELECT storage.begin_upload(%L, %L)', pg_temp.uid('gone'), 'a'), 'P0002',
                 format('user %s not found', pg_temp.uid('gone')), 'begin_upload for a deleted user is P0002');
SELECT throws_ok(format('SELECT storage.begin_upload(%L, NULL)', pg_temp.uid('alice')), '22004', 'name must not be null',
                 'a NULL name is 22004');
SELECT throws_ok(format('SELECT storage.begin_upload(%L, %L)', pg_temp.uid('alice'), ''), '22023', 'file name must not be empty',
                 'an empty name is 22023');
SELECT throws_ok(format('SELECT storage.begin_upload(%L, %L)', pg_temp.uid('alice'), repeat('a', 256)), '22023',
                 'file name is too long (256 characters; at most 255)', 'a name of 256 characters is 22023');
SELECT throws_ok(format('SELECT storage.begin_upload(%L, %L)', pg_temp.uid('alice'), 'a/b'), '22023',
                 'file name must not contain "/"', 'a name with "/" is 22023');
SELECT throws_ok(format('SELECT storage.begin_upload(%L, %L)', pg_temp.uid('alice'), 'a\b'), '22023',
                 'file name must not contain "\"', 'a name with "\" is 22023');
SELECT throws_ok(format('SELECT storage.begin_upload(%L, %L)', pg_temp.uid('alice'), '.'), '22023',
                 'file name must not be "."', 'the name "." is 22023');
SELECT throws_ok(format('SELECT storage.begin_upload(%L, %L)', pg_temp.uid('alice'), '..'), '22023',
                 'file name must not be ".."', 'the name ".." is 22023');
SELECT throws_ok(format('SELECT storage.begin_upload(%L, %L)', pg_temp.uid('alice'), E'a\nb'), '22023',
                 'file name must not contain control characters', 'a name with a newline is 22023');
SELECT throws_ok(format('SELECT storage.begin_upload(%L, %L)', pg_temp.uid('alice'), E'a\tb'), '22023',
                 'file name must not contain control characters', 'a name with a tab is 22023');
SELECT throws_ok(format('SELECT storage.begin_upload(%L, %L, %L)', pg_temp.uid('alice'), 'a', 'text'), '22023',
                 'invalid content type "text"', 'a content type without subtype is 22023');
SELECT throws_ok(format('SELECT storage.begin_upload(%L, %L, %L)', pg_temp.uid('alice'), 'a', E'text/plain\r\nX-Evil: 1'), '22023',
                 NULL, 'a content type with a line break is 22023');
SELECT throws_ok(format('SELECT storage.begin_upload(%L, %L, %L)', pg_temp.uid('alice'), 'a', 'text/plain; charset'), '22023',
                 NULL, 'a content type with a malformed parameter is 22023');
SELECT throws_ok(format('SELECT storage.begin_upload(%L, %L, size => -1)', pg_temp.uid('alice'), 'a'), '22023',
                 'size must not be negative, not -1', 'a negative size is 22023');
SELECT throws_ok(format('SELECT storage.begin_upload(%L, %L, size => 67108865)', pg_temp.uid('alice'), 'a'), '54000',
                 'file too large: 67108865 bytes; at most 67108864 bytes', 'a declared size above the maximum is 54000');
SELECT pg_temp.set('isa.storage_max_file_bytes', '100');
SELECT throws_ok(format('SELECT storage.begin_upload(%L, %L, size => 101)', pg_temp.uid('alice'), 'a'), '54000',
                 'file too large: 101 bytes; at most 100 bytes', 'the maximum is isa.storage_max_file_bytes');
SELECT is((SELECT count(*) FROM ev), 0::bigint, 'beginning uploads publishes nothing');

-- ---------------------------------------------------------------- invisible until finished
SELECT throws_ok(format('SELECT storage.get_file(%L)', pg_temp.fid('a1')), 'P0002', format('file %s not found', pg_temp.fid('a1')),
                 'an unfinished upload is not a file for get_file');
SELECT throws_ok(format('SELECT storage.get_my_file(%L, %L)', pg_temp.uid('alice'), pg_temp.fid('a1')), 'P0002', NULL,
                 'nor for get_my_file');
SELECT throws_ok(format('SELECT storage.read_file(%L, 0, 10)', pg_temp.fid('a1')), 'P0002', NULL, 'nor for read_file');
SELECT is((SELECT count(*) FROM storage.list_files(pg_temp.uid('alice'))), 0::bigint, 'nor for list_files');
SELECT throws_ok(format('SELECT storage.delete_file(%L, %L)', pg_temp.uid('bob'), pg_temp.fid('a1')), 'P0002', NULL,
                 'nor for delete_file by another user');

-- ---------------------------------------------------------------- put_chunk
SELECT lives_ok(format('SELECT storage.put_chunk(%L, 0, %L)', pg_temp.fid('a1'), pg_temp.bytes('0123456789')), 'put_chunk 0');
SELECT throws_ok(format('SELECT storage.put_chunk(%L, 0, %L)', pg_temp.fid('a1'), pg_temp.bytes('0123456789')), '22023',
                 format('chunk 0 is out of order: upload %s expects chunk 1', pg_temp.fid('a1')), 'the same seq again is 22023');
SELECT throws_ok(format('SELECT storage.put_chunk(%L, 2, %L)', pg_temp.fid('a1'), pg_temp.bytes('0123456789')), '22023', NULL,
                 'skipping a seq is 22023');
SELECT lives_ok(format('SELECT storage.put_chunk(%L, 1, %L)', pg_temp.fid('a1'), pg_temp.bytes('abcdefghij')), 'put_chunk 1');
SELECT throws_ok(format('SELECT storage.finish_upload(%L)', pg_temp.fid('a1')), '22023',
                 'upload incomplete: 20 of the 30 bytes declared were received', 'finishing before the declared size is 22023');
SELECT throws_ok(format('SELECT storage.put_chunk(%L, 2, %L)', pg_temp.fid('a1'), pg_temp.bytes('ABCDEFGHIJK')), '54000',
                 'file too large: more than the 30 bytes declared', 'going past the declared size is 54000');
SELECT lives_ok(format('SELECT storage.put_chunk(%L, 2, %L)', pg_temp.fid('a1'), pg_temp.bytes('ABCDEFGHIJ')), 'put_chunk 2');
SELECT is((SELECT array_agg(c.seq || ':' || c.start_offset || ':' || octet_length(c.data) ORDER BY c.seq) FROM storage.chunks c
            WHERE c.file_id = pg_temp.fid('a1')),
          ARRAY['0:0:10', '1:10:10', '2:20:10'], 'the chunks are stored with their byte offsets');
SELECT is((SELECT (x.size, x.next_seq) FROM storage.files x WHERE x.file_id = pg_temp.fid('a1')), ROW(30::bigint, 3),
          'the upload counts its bytes and chunks');
SELECT throws_ok(format('SELECT storage.put_chunk(%L, 0, %L)', gen_random_uuid(), pg_temp.bytes('x')), 'P0002', NULL,
                 'put_chunk to an unknown upload is P0002');
SELECT throws_ok(format('SELECT storage.put_chunk(NULL, 0, %L)', pg_temp.bytes('x')), '22004', 'upload_id must not be null',
                 'put_chunk(NULL, ...) is 22004');
SELECT throws_ok(format('SELECT storage.put_chunk(%L, NULL, %L)', pg_temp.fid('a1'), pg_temp.bytes('x')), '22004',
                 'seq must not be null', 'a NULL seq is 22004');
SELECT throws_ok(format('SELECT storage.put_chunk(%L, 3, NULL)', pg_temp.fid('a1')), '22004', 'data must not be null',
                 'NULL data is 22004');
SELECT throws_ok(format('SELECT storage.put_chunk(%L, 3, %L)', pg_temp.fid('a1'), '\x'), '22023', 'a chunk must not be empty',
                 'an empty chunk is 22023');
SELECT pg_temp.set('isa.storage_max_file_bytes', NULL);
SELECT pg_temp.begin('big', 'alice', 'big.bin');
SELECT throws_ok(format('SELECT storage.put_chunk(%L, 0, %L)', pg_temp.fid('big'), decode(repeat('00', 1048577), 'hex')), '22023',
                 'chunk too large: 1048577 bytes; at most 1048576 (1 MiB)', 'a chunk over 1 MiB is 22023');
SELECT lives_ok(format('SELECT storage.put_chunk(%L, 0, %L)', pg_temp.fid('big'), decode(repeat('00', 1048576), 'hex')),
                'a chunk of 1 MiB is accepted');
SELECT pg_temp.set('isa.storage_max_file_bytes', '1048580');
SELECT throws_ok(format('SELECT storage.put_chunk(%L, 1, %L)', pg_temp.fid('big'), pg_temp.bytes('12345')), '54000',
                 'file too large: more than 1048580 bytes', 'going past isa.storage_max_file_bytes is 54000');
SELECT lives_ok(format('SELECT storage.put_chunk(%L, 1, %L)', pg_temp.fid('big'), pg_temp.bytes('1234')),
                'up to isa.storage_max_file_bytes is accepted');
SELECT pg_temp.set('isa.storage_max_file_bytes', NULL);

-- ---------------------------------------------------------------- finish_upload
SELECT throws_ok(format('SELECT storage.finish_upload(%L, %L)', pg_temp.fid('a1'), repeat('0', 64)), '22023',
                 'content does not match its sha256', 'a wrong sha256 is 22023');
SELECT throws_ok(format('SELECT storage.finish_upload(%L, %L)', pg_temp.fid('a1'), 'abc'), '22023',
                 'sha256 must be 64 hexadecimal digits', 'a malformed sha256 is 22023');
SELECT throws_ok(format('SELECT storage.finish_upload(%L, %L)', pg_temp.fid('a1'), repeat('g', 64)), '22023',
                 'sha256 must be 64 hexadecimal digits', 'a sha256 with non-hex digits is 22023');
SELECT throws_ok('SELECT storage.finish_upload(NULL)', '22004', 'upload_id must not be null', 'finish_upload(NULL) is 22004');
SELECT throws_ok(format('SELECT storage.finish_upload(%L)', gen_random_uuid()), 'P0002', NULL, 'finishing an unknown upload is P0002');
SELECT is((SELECT x.status FROM storage.files x WHERE x.file_id = pg_temp.fid('a1')), 'uploading',
          'a refused finish leaves the upload unfinished');

CREATE TEMP TABLE r (label text PRIMARY KEY, info storage.file_info) ON COMMIT DROP;
INSERT INTO r SELECT 'a1', storage.finish_upload(pg_temp.fid('a1'),
                                                 upper(encode(sha256(pg_temp.bytes('0123456789abcdefghijABCDEFGHIJ')), 'hex')));
SELECT is((SELECT info FROM r WHERE label = 'a1'),
          ROW(pg_temp.fid('a1'), pg_temp.uid('alice'), 'notes.txt', 'text/plain', 30::bigint,
              encode(sha256(pg_temp.bytes('0123456789abcdefghijABCDEFGHIJ')), 'hex'), now())::storage.file_info,
          'finish_upload (with the right sha256, in upper case) returns the file: size, SHA-256 in lower-case hex, created_at');
SELECT is((SELECT (e.event_type, e.data) FROM ev e WHERE e.data ->> 'file_id' = pg_temp.fid('a1')::text),
          ROW('file.uploaded'::text, jsonb_build_object('file_id', pg_temp.fid('a1'), 'owner_id', pg_temp.uid('alice'),
                                                        'name', 'notes.txt', 'content_type', 'text/plain', 'size', 30,
                                                        'sha256', encode(sha256(pg_temp.bytes('0123456789abcdefghijABCDEFGHIJ')), 'hex'))),
          'finish_upload publishes file.uploaded with file_id, owner_id, name, content_type, size, sha256');
SELECT is(storage.finish_upload(pg_temp.fid('a1')), (SELECT info FROM r WHERE label = 'a1'),
          'finishing it again returns the file');
SELECT is((SELECT count(*) FROM ev WHERE data ->> 'file_id' = pg_temp.fid('a1')::text), 1::bigint,
          'and publishes nothing more');
SELECT throws_ok(format('SELECT storage.finish_upload(%L, %L)', pg_temp.fid('a1'), repeat('0', 64)), '22023',
                 'content does not match its sha256', 'finishing it again with another sha256 is 22023');
SELECT throws_ok(format('SELECT storage.put_chunk(%L, 3, %L)', pg_temp.fid('a1'), pg_temp.bytes('x')), '55000',
                 format('upload %s is finished: it takes no more chunks', pg_temp.fid('a1')), 'put_chunk after finish is 55000');

-- no declared size, no sha256; an empty file; chunks of different sizes
SELECT pg_temp.begin('a2', 'alice', 'odd.bin');
SELECT storage.put_chunk(pg_temp.fid('a2'), s.seq, pg_temp.bytes(s.part))
  FROM (VALUES (0, 'The quick'), (1, ' '), (2, 'brown fox jumps'), (3, ' over the lazy dog.')) s (seq, part) ORDER BY s.seq;
SELECT is((storage.finish_upload(pg_temp.fid('a2'))).size, 44::bigint, 'an upload without a declared size is as long as its chunks');
SELECT is((storage.get_file(pg_temp.fid('a2'))).sha256, encode(sha256(pg_temp.bytes('The quick brown fox jumps over the lazy dog.')), 'hex'),
          'its SHA-256 is that of the chunks in order');
SELECT pg_temp.begin('empty', 'alice', 'empty.txt', 0);
SELECT is((SELECT (x.size, x.sha256) FROM storage.finish_upload(pg_temp.fid('empty')) x),
          ROW(0::bigint, 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'::text),
          'an empty file has size 0 and the SHA-256 of nothing');
SELECT is(storage.read_file(pg_temp.fid('empty'), 0, 10), '\x'::bytea, 'reading an empty file gives nothing');

-- ---------------------------------------------------------------- read_file
SELECT is(convert_from(storage.read_file(pg_temp.fid('a1'), 5, 20), 'UTF8'), '56789abcdefghijABCDE',
          'read_file [5, 25) spans three chunks');
SELECT is(convert_from(storage.read_file(pg_temp.fid('a1'), 0, 30), 'UTF8'), '0123456789abcdefghijABCDEFGHIJ',
          'read_file [0, 30) is the whole file');
SELECT is(convert_from(storage.read_file(pg_temp.fid('a1'), 12, 3), 'UTF8'), 'cde', 'read_file inside one chunk');
SELECT is(convert_from(storage.read_file(pg_temp.fid('a1'), 10, 10), 'UTF8'), 'abcdefghij', 'read_file of exactly one chunk');
SELECT is(convert_from(storage.read_file(pg_temp.fid('a1'), 9, 2), 'UTF8'), '9a', 'read_file across one boundary');
SELECT is(convert_from(storage.read_file(pg_temp.fid('a1'), 25, 100), 'UTF8'), 'FGHIJ', 'read_file past the end stops at the end');
SELECT is(storage.read_file(pg_temp.fid('a1'), 30, 10), '\x'::bytea, 'read_file from the end gives nothing');
SELECT is(storage.read_file(pg_temp.fid('a1'), 1000, 10), '\x'::bytea, 'read_file beyond the end gives nothing');
SELECT is(storage.read_file(pg_temp.fid('a1'), 3, 0), '\x'::bytea, 'read_file of 0 bytes gives nothing');
SELECT ok((SELECT bool_and(storage.read_file(pg_temp.fid('a2'), o, l)
                           = substring(pg_temp.bytes('The quick brown fox jumps over the lazy dog.') FROM o + 1 FOR l))
             FROM generate_series(0, 45) o, generate_series(0, 46) l),
          'read_file of every range of a file of chunks of different sizes is the right substring');
SELECT is(octet_length(storage.read_file(pg_temp.fid('a2'), 0, 4194304)), 44, 'a length of 4 MiB is accepted');
SELECT throws_ok(format('SELECT storage.read_file(%L, -1, 10)', pg_temp.fid('a1')), '22023', 'offset must not be negative, not -1',
                 'a negative offset is 22023');
SELECT throws_ok(format('SELECT storage.read_file(%L, 0, -1)', pg_temp.fid('a1')), '22023',
                 'length must be from 0 to 4194304 (4 MiB), not -1', 'a negative length is 22023');
SELECT throws_ok(format('SELECT storage.read_file(%L, 0, 4194305)', pg_temp.fid('a1')), '22023', NULL,
                 'a length over 4 MiB is 22023');
SELECT throws_ok('SELECT storage.read_file(NULL, 0, 1)', '22004', 'file_id must not be null', 'read_file(NULL, ...) is 22004');
SELECT throws_ok(format('SELECT storage.read_file(%L, NULL, 1)', pg_temp.fid('a1')), '22004', 'offset must not be null',
                 'a NULL offset is 22004');
SELECT throws_ok(format('SELECT storage.read_file(%L, 0, NULL)', pg_temp.fid('a1')), '22004', 'length must not be null',
                 'a NULL length is 22004');
SELECT throws_ok(format('SELECT storage.read_file(%L, 0, 1)', gen_random_uuid()), 'P0002', NULL, 'read_file of an unknown file is P0002');

-- ---------------------------------------------------------------- get_file, get_my_file, list_files
SELECT is(storage.get_file(pg_temp.fid('a1')), (SELECT info FROM r WHERE label = 'a1'), 'get_file returns the file');
SELECT is(storage.get_my_file(pg_temp.uid('alice'), pg_temp.fid('a1')), (SELECT info FROM r WHERE label = 'a1'),
          'get_my_file returns the owner''s file');
SELECT throws_ok(format('SELECT storage.get_my_file(%L, %L)', pg_temp.uid('bob'), pg_temp.fid('a1')), 'P0002',
                 format('file %s not found', pg_temp.fid('a1')), 'get_my_file of another user''s file is P0002 "not found"');
SELECT throws_ok(format('SELECT storage.get_my_file(%L, %L)', pg_temp.uid('bob'), '00000000-0000-7000-8000-000000000000'), 'P0002',
                 'file 00000000-0000-7000-8000-000000000000 not found', 'exactly as for a file that does not exist');
SELECT throws_ok(format('SELECT storage.get_file(%L)', gen_random_uuid()), 'P0002', NULL, 'get_file of an unknown file is P0002');
SELECT throws_ok('SELECT storage.get_file(NULL)', '22004', 'file_id must not be null', 'get_file(NULL) is 22004');
SELECT throws_ok(format('SELECT storage.get_my_file(NULL, %L)', pg_temp.fid('a1')), '22004', 'owner_id must not be null',
                 'get_my_file(NULL, ...) is 22004');
SELECT throws_ok(format('SELECT storage.get_my_file(%L, NULL)', pg_temp.uid('alice')), '22004', 'file_id must not be null',
                 'get_my_file(..., NULL) is 22004');

SELECT pg_temp.begin('b1', 'bob', 'bob.txt');
SELECT storage.put_chunk(pg_temp.fid('b1'), 0, pg_temp.bytes('bob''s'));
SELECT storage.finish_upload(pg_temp.fid('b1'));
SELECT is(ARRAY(SELECT x.file_id FROM storage.list_files(pg_temp.uid('alice')) x),
          ARRAY[pg_temp.fid('empty'), pg_temp.fid('a2'), pg_temp.fid('a1')],
          'list_files: the owner''s finished files, newest first (unfinished uploads and others'' files left out)');
SELECT is(ARRAY(SELECT x.file_id FROM storage.list_files(pg_temp.uid('alice'), 2) x),
          ARRAY[pg_temp.fid('empty'), pg_temp.fid('a2')], 'list_files stops at row_limit');
SELECT is((SELECT array_agg(x) FROM storage.list_files(pg_temp.uid('bob')) x),
          ARRAY[storage.get_file(pg_temp.fid('b1'))], 'list_files returns file_info rows');
SELECT is((SELECT count(*) FROM storage.list_files(gen_random_uuid())), 0::bigint, 'a user without files has none');
SELECT throws_ok(format('SELECT * FROM storage.list_files(%L, 0)', pg_temp.uid('alice')), '22023',
                 'row_limit must be from 1 to 1000, not 0', 'row_limit 0 is 22023');
SELECT throws_ok(format('SELECT * FROM storage.list_files(%L, 1001)', pg_temp.uid('alice')), '22023', NULL, 'row_limit 1001 is 22023');
SELECT throws_ok(format('SELECT * FROM storage.list_files(%L, NULL)', pg_temp.uid('alice')), '22004', 'row_limit must not be null',
                 'a NULL row_limit is 22004');
SELECT throws_ok('SELECT * FROM storage.list_files(NULL)', '22004', 'owner_id must not be null', 'list_files(NULL) is 22004');
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
            WHERE p.pronamespace = 'storage'::regnamespace AND p.provolatile = 's' AND p.prosecdef),
          ARRAY['storage.album_owner(uuid)', 'storage.can_read(uuid,uuid)', 'storage.can_read_album(uuid,uuid)',
                'storage.can_read_scoped(uuid,uuid[],text,uuid)', 'storage.can_write(uuid,uuid)', 'storage.can_write_album(uuid,uuid)', 'storage.get_album(uuid,uuid)',
                'storage.get_file(uuid)', 'storage.get_my_file(uuid,uuid)', 'storage.get_offer(uuid)', 'storage.get_readable_file(uuid,uuid)',
                'storage.get_signed_file(uuid,bigint,text)', 'storage.list_album_files(uuid,uuid,integer)',
                'storage.list_album_files_scoped(uuid,uuid[],uuid,integer)', 'storage.list_album_shares(uuid,uuid)', 'storage.list_albums(uuid,integer)',
                'storage.list_file_shares(uuid,uuid)', 'storage.list_files(uuid,integer)',
                'storage.list_shared_with_me(uuid,integer)', 'storage.read_file(uuid,bigint,integer)',
                'storage.sign_download(uuid,integer)', 'storage.sign_my_download(uuid,uuid,integer)'],
          'the reads are STABLE');

-- ---------------------------------------------------------------- signed downloads
SELECT pg_temp.set('isa.storage_url_secret', '');   -- empty: a stack's configuration has a development secret
SELECT throws_ok(format('SELECT storage.sign_download(%L)', pg_temp.fid('a1')), '55000',
                 'signed download URLs are not configured: isa.storage_url_secret is not set',
                 'sign_download without isa.storage_url_secret is 55000');
SELECT throws_ok(format('SELECT storage.get_signed_file(%L, 1, %L)', pg_temp.fid('a1'), 'x'), '55000', NULL,
                 'and so is get_signed_file');
SELECT pg_temp.set('isa.storage_url_secret', 'too-short-secret');
SELECT throws_ok(format('SELECT storage.sign_download(%L)', pg_temp.fid('a1')), '55000',
                 'signed download URLs are not configured: isa.storage_url_secret is shorter than 32 bytes',
                 'a secret under 32 bytes is 55000');
SELECT pg_temp.set('isa.storage_url_secret', 'pgtap-storage-secret-0123456789abcdef');

CREATE TEMP TABLE s (label text PRIMARY KEY, j jsonb) ON COMMIT DROP;
INSERT INTO s SELECT 'a1', storage.sign_download(pg_temp.fid('a1'));
SELECT is((SELECT j FROM s WHERE label = 'a1'),
          jsonb_build_object('file_id', pg_temp.fid('a1'), 'expires', floor(extract(epoch FROM now()))::bigint + 300,
                             'signature', pg_temp.sig(pg_temp.fid('a1'), floor(extract(epoch FROM now()))::bigint + 300)),
          'sign_download: file_id, expires in 300 s, base64url HMAC-SHA256 of "<file_id>.<expires>"');
SELECT is((storage.sign_download(pg_temp.fid('a1'), 60) ->> 'expires')::bigint, floor(extract(epoch FROM now()))::bigint + 60,
          'ttl_seconds sets expires');
SELECT is(storage.get_signed_file(pg_temp.fid('a1'), (j ->> 'expires')::bigint, j ->> 'signature'),
          (SELECT info FROM r WHERE label = 'a1'), 'get_signed_file returns the file of a valid signature')
  FROM s WHERE label = 'a1';
SELECT is(storage.get_signed_file(pg_temp.fid('a1'), ceil(extract(epoch FROM now()))::bigint,
                                  pg_temp.sig(pg_temp.fid('a1'), ceil(extract(epoch FROM now()))::bigint)),
          (SELECT info FROM r WHERE label = 'a1'), 'a signature is valid up to its expires time');
SELECT throws_ok(format('SELECT storage.get_signed_file(%L, %s, %L)', pg_temp.fid('a1'), floor(extract(epoch FROM now()))::bigint - 1,
                        pg_temp.sig(pg_temp.fid('a1'), floor(extract(epoch FROM now()))::bigint - 1)),
                 '42501', 'invalid or expired download signature', 'an expired signature is 42501');
SELECT throws_ok(format('SELECT storage.get_signed_file(%L, %s, %L)', pg_temp.fid('a1'), (j ->> 'expires')::bigint,
                        translate(j ->> 'signature', 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz',
                                                     'BCDEFGHIJKLMNOPQRSTUVWXYZAbcdefghijklmnopqrstuvwxyza')),
                 '42501', 'invalid or expired download signature', 'a tampered signature is 42501')
  FROM s WHERE label = 'a1';
SELECT throws_ok(format('SELECT storage.get_signed_file(%L, %s, %L)', pg_temp.fid('a1'), (j ->> 'expires')::bigint + 3600,
                        j ->> 'signature'),
                 '42501', 'invalid or expired download signature', 'a signature with a later expires is 42501')
  FROM s WHERE label = 'a1';
SELECT throws_ok(format('SELECT storage.get_signed_file(%L, %s, %L)', pg_temp.fid('a2'), (j ->> 'expires')::bigint, j ->> 'signature'),
                 '42501', 'invalid or expired download signature', 'the signature of another file is 42501')
  FROM s WHERE label = 'a1';
SELECT throws_ok(format('SELECT storage.get_signed_file(%L, %s, %L)', pg_temp.fid('a1'), (j ->> 'expires')::bigint, ''),
                 '42501', 'invalid or expired download signature', 'an empty signature is 42501')
  FROM s WHERE label = 'a1';
SELECT throws_ok(format('SELECT storage.get_signed_file(%L, %s, %L)', pg_temp.fid('a1'), (j ->> 'expires')::bigint, j ->> 'signature'),
                 '42501', 'invalid or expired download signature', 'a signature made with another secret is 42501')
  FROM s WHERE label = 'a1' AND pg_temp.set('isa.storage_url_secret', 'another-secret-0123456789abcdef-xyz') IS NOT NULL;
SELECT pg_temp.set('isa.storage_url_secret', 'pgtap-storage-secret-0123456789abcdef');
SELECT throws_ok(format('SELECT storage.sign_download(%L, 0)', pg_temp.fid('a1')), '22023',
                 'ttl_seconds must be from 1 to 86400 (a day), not 0', 'ttl_seconds 0 is 22023');
SELECT throws_ok(format('SELECT storage.sign_download(%L, 86401)', pg_temp.fid('a1')), '22023', NULL, 'ttl_seconds 86401 is 22023');
SELECT throws_ok(format('SELECT storage.sign_download(%L, NULL)', pg_temp.fid('a1')), '22004', 'ttl_seconds must not be null',
                 'a NULL ttl_seconds is 22004');
SELECT throws_ok('SELECT storage.sign_download(NULL)', '22004', 'file_id must not be null', 'sign_download(NULL) is 22004');
SELECT throws_ok(format('SELECT storage.sign_download(%L)', gen_random_uuid()), 'P0002', NULL, 'signing an unknown file is P0002');
SELECT throws_ok(format('SELECT storage.sign_download(%L)', pg_temp.fid('big')), 'P0002', NULL, 'signing an unfinished upload is P0002');
SELECT throws_ok(format('SELECT storage.get_signed_file(NULL, 1, %L)', 'x'), '22004', 'file_id must not be null',
                 'get_signed_file(NULL, ...) is 22004');
SELECT throws_ok(format('SELECT storage.get_signed_file(%L, NULL, %L)', pg_temp.fid('a1'), 'x'), '22004', 'expires must not be null',
                 'a NULL expires is 22004');
SELECT throws_ok(format('SELECT storage.get_signed_file(%L, 1, NULL)', pg_temp.fid('a1')), '22004', 'signature must not be null',
                 'a NULL signature is 22004');
SELECT is(storage.sign_my_download(pg_temp.uid('alice'), pg_temp.fid('a1'), 120),
          storage.sign_download(pg_temp.fid('a1'), 120), 'sign_my_download signs the owner''s file');
SELECT throws_ok(format('SELECT storage.sign_my_download(%L, %L)', pg_temp.uid('bob'), pg_temp.fid('a1')), 'P0002',
                 format('file %s not found', pg_temp.fid('a1')), 'sign_my_download of another user''s file is P0002');

-- ---------------------------------------------------------------- delete_file
SELECT throws_ok(format('SELECT storage.delete_file(%L, %L)', pg_temp.uid('bob'), pg_temp.fid('a2')), 'P0002',
                 format('file %s not found', pg_temp.fid('a2')), 'deleting another user''s file is P0002');
SELECT is((storage.get_file(pg_temp.fid('a2'))).size, 44::bigint, 'and leaves it alone');
SELECT lives_ok(format('SELECT storage.delete_file(%L, %L)', pg_temp.uid('alice'), pg_temp.fid('a2')), 'the owner deletes a file');
SELECT is((SELECT (x.status, x.deleted_at) FROM storage.files x WHERE x.file_id = pg_temp.fid('a2')), ROW('deleted'::text, now()),
          'it is soft-deleted');
SELECT is((SELECT count(*) FROM storage.chunks c WHERE c.file_id = pg_temp.fid('a2')), 0::bigint, 'its chunks are gone');
SELECT is((SELECT (e.event_type, e.data) FROM ev e WHERE e.data ->> 'file_id' = pg_temp.fid('a2')::text AND e.event_type = 'file.deleted'),
          ROW('file.deleted'::text, jsonb_build_object('file_id', pg_temp.fid('a2'), 'owner_id', pg_temp.uid('alice'), 'size', 44,
                                                       'reason', 'owner', 'deleted_at',
                                                       to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))),
          'delete_file publishes file.deleted with file_id, owner_id, size, reason owner, deleted_at');
SELECT throws_ok(format('SELECT storage.get_file(%L)', pg_temp.fid('a2')), 'P0002', NULL, 'a deleted file is gone for get_file');
SELECT throws_ok(format('SELECT storage.get_my_file(%L, %L)', pg_temp.uid('alice'), pg_temp.fid('a2')), 'P0002', NULL,
                 'and for get_my_file');
SELECT throws_ok(format('SELECT storage.read_file(%L, 0, 1)', pg_temp.fid('a2')), 'P0002', NULL, 'and for read_file');
SELECT throws_ok(format('SELECT storage.sign_download(%L)', pg_temp.fid('a2')), 'P0002', NULL, 'and for sign_download');
SELECT throws_ok(format('SELECT storage.put_chunk(%L, 4, %L)', pg_temp.fid('a2'), pg_temp.bytes('x')), 'P0002', NULL,
                 'and for put_chunk');
SELECT is(ARRAY(SELECT x.file_id FROM storage.list_files(pg_temp.uid('alice')) x), ARRAY[pg_temp.fid('empty'), pg_temp.fid('a1')],
          'and for list_files');
SELECT lives_ok(format('SELECT storage.delete_file(%L, %L)', pg_temp.uid('alice'), pg_temp.fid('a2')),
                'deleting it again succeeds');
SELECT is((SELECT count(*) FROM ev WHERE data ->> 'file_id' = pg_temp.fid('a2')::text AND event_type = 'file.deleted'), 1::bigint,
          'and publishes nothing more');
SELECT throws_ok(format('SELECT storage.delete_file(%L, %L)', pg_temp.uid('alice'), gen_random_uuid()), 'P0002', NULL,
                 'deleting an unknown file is P0002');
-- abort_upload (isa-httpd, when an upload ends unfinished): an upload in progress goes, a file stays.
SELECT pg_temp.begin('abort2', 'alice', 'partial2.bin');
SELECT storage.put_chunk(pg_temp.fid('abort2'), 0, pg_temp.bytes('some bytes'));
SELECT is(storage.abort_upload(pg_temp.fid('abort2')), true, 'abort_upload removes an upload in progress');
SELECT ok(NOT EXISTS (SELECT FROM storage.chunks c WHERE c.file_id = pg_temp.fid('abort2')), '  with its chunks');
SELECT is(storage.abort_upload(pg_temp.fid('a2')), false, 'abort_upload of a file that is not an upload in progress does nothing');
SELECT ok(EXISTS (SELECT FROM storage.files WHERE file_id = pg_temp.fid('a2')), '  and the file stays');
SELECT is(storage.abort_upload(gen_random_uuid()), false, 'abort_upload of an unknown id is false');
-- An upload in progress, deleted by its owner, is aborted: gone with its chunks, no event.
SELECT pg_temp.begin('abort1', 'alice', 'partial.bin');
SELECT storage.put_chunk(pg_temp.fid('abort1'), 0, pg_temp.bytes('some bytes'));
SELECT lives_ok(format('SELECT storage.delete_file(%L, %L)', pg_temp.uid('alice'), pg_temp.fid('abort1')),
                'the owner deletes an upload in progress (aborts it)');
SELECT ok(NOT EXISTS (SELECT FROM storage.files x WHERE x.file_id = pg_temp.fid('abort1'))
          AND NOT EXISTS (SELECT FROM storage.chunks c WHERE c.file_id = pg_temp.fid('abort1'))
          AND NOT EXISTS (SELECT FROM ev WHERE data ->> 'file_id' = pg_temp.fid('abort1')::text),
          'an aborted upload leaves no row, no chunk and no event');
SELECT throws_ok(format('SELECT storage.delete_file(NULL, %L)', pg_temp.fid('a1')), '22004', 'owner_id must not be null',
                 'delete_file(NULL, ...) is 22004');
SELECT throws_ok(format('SELECT storage.delete_file(%L, NULL)', pg_temp.uid('alice')), '22004', 'file_id must not be null',
                 'delete_file(..., NULL) is 22004');
-- A signature made before the deletion still verifies, but the file is gone.
SELECT throws_ok(format('SELECT storage.get_signed_file(%L, %s, %L)', pg_temp.fid('a2'), floor(extract(epoch FROM now()))::bigint + 60,
                        pg_temp.sig(pg_temp.fid('a2'), floor(extract(epoch FROM now()))::bigint + 60)),
                 'P0002', format('file %s not found', pg_temp.fid('a2')), 'get_signed_file of a deleted file is P0002');

-- ---------------------------------------------------------------- purge_abandoned_uploads
SELECT pg_temp.begin('old', 'bob', 'old.bin');
SELECT storage.put_chunk(pg_temp.fid('old'), 0, pg_temp.bytes('stale'));
SELECT pg_temp.begin('fresh', 'bob', 'fresh.bin');
UPDATE storage.files x SET started_at = now() - interval '3 hours', updated_at = now() - interval '2 hours'
 WHERE x.file_id = pg_temp.fid('old');
UPDATE storage.files x SET started_at = now() - interval '3 hours' WHERE x.file_id = pg_temp.fid('fresh');
UPDATE storage.files x SET created_at = now() - interval '3 hours', updated_at = now() - interval '3 hours'
 WHERE x.file_id = pg_temp.fid('b1');
SELECT cmp_ok(storage.purge_abandoned_uploads(), '>=', 1::bigint, 'purge_abandoned_uploads returns how many it deleted');
SELECT is((SELECT count(*) FROM storage.files x WHERE x.file_id = pg_temp.fid('old')), 0::bigint,
          'an upload idle for over an hour is deleted');
SELECT is((SELECT count(*) FROM storage.chunks c WHERE c.file_id = pg_temp.fid('old')), 0::bigint, 'with its chunks');
SELECT is((SELECT x.status FROM storage.files x WHERE x.file_id = pg_temp.fid('fresh')), 'uploading',
          'an upload begun long ago but active lately stays');
SELECT is((storage.get_file(pg_temp.fid('b1'))).size, 5::bigint, 'finished files stay, however old');
SELECT is(storage.purge_abandoned_uploads(interval '0'), (SELECT count(*) FROM storage.files x WHERE x.status = 'uploading'
                                                            AND x.updated_at < now()),
          'older_than 0 deletes every upload idle before now');
SELECT throws_ok('SELECT storage.purge_abandoned_uploads(NULL)', '22004', 'older_than must not be null',
                 'purge_abandoned_uploads(NULL) is 22004');
SELECT throws_ok($$SELECT storage.purge_abandoned_uploads('-1 hour')$$, '22023', NULL, 'a negative older_than is 22023');

-- ---------------------------------------------------------------- handler: user.deleted
SELECT pg_temp.new_user('carol');
SELECT pg_temp.begin('c1', 'carol', 'c1.txt');
SELECT storage.put_chunk(pg_temp.fid('c1'), 0, pg_temp.bytes('one'));
SELECT storage.finish_upload(pg_temp.fid('c1'));
SELECT pg_temp.begin('c2', 'carol', 'c2.txt');
SELECT storage.put_chunk(pg_temp.fid('c2'), 0, pg_temp.bytes('two'));
SELECT storage.finish_upload(pg_temp.fid('c2'));
SELECT pg_temp.begin('c3', 'carol', 'c3.txt');
SELECT storage.put_chunk(pg_temp.fid('c3'), 0, pg_temp.bytes('unfinished'));
SELECT storage.delete_file(pg_temp.uid('carol'), pg_temp.fid('c2'));
SELECT lives_ok(format('SELECT storage.on_user_deleted(pg_temp.event(%L, %L, %L))', 'user.deleted', 'account_service',
                       jsonb_build_object('user_id', pg_temp.uid('carol'), 'deleted_at', now())),
                'on_user_deleted runs');
SELECT is((SELECT array_agg(x.status ORDER BY x.name) FROM storage.files x WHERE x.owner_id = pg_temp.uid('carol')),
          ARRAY['deleted', 'deleted'], 'user.deleted deletes the user''s files and drops the unfinished upload');
SELECT is((SELECT count(*) FROM storage.chunks c WHERE c.file_id IN (pg_temp.fid('c1'), pg_temp.fid('c2'), pg_temp.fid('c3'))),
          0::bigint, 'their chunks are gone');
SELECT is((SELECT array_agg((e.data ->> 'file_id') || ' ' || (e.data ->> 'reason') ORDER BY e.id) FROM ev e
            WHERE e.label = 'carol' AND e.event_type = 'file.deleted'),
          ARRAY[pg_temp.fid('c2') || ' owner', pg_temp.fid('c1') || ' user_deleted'],
          'file.deleted (reason user_deleted) is published for each file it deleted, not again for one deleted before');
SELECT lives_ok(format('SELECT storage.on_user_deleted(pg_temp.event(%L, %L, %L))', 'user.deleted', 'account_service',
                       jsonb_build_object('user_id', pg_temp.uid('carol'), 'deleted_at', now())),
                'a second delivery runs');
SELECT is((SELECT count(*) FROM ev WHERE label = 'carol' AND event_type = 'file.deleted'), 2::bigint,
          'and does nothing (idempotent)');
SELECT lives_ok($$SELECT storage.on_user_deleted(pg_temp.event('user.deleted', 'account_service', '{"user_id": "not-a-uuid"}'))$$,
                'an event without a valid user_id is ignored with a warning');
SELECT is((SELECT count(*) FROM storage.list_files(pg_temp.uid('alice'))), 2::bigint, 'other users'' files are untouched');

-- ---------------------------------------------------------------- privileges
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
            WHERE p.pronamespace = 'storage'::regnamespace
              AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a
                                               WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))),
          NULL, 'no function of schema storage is executable by PUBLIC');
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'storage'::regnamespace AND has_function_privilege('isa_app', p.oid, 'EXECUTE')$$,
              ARRAY['storage.begin_upload(uuid,text,text,bigint)', 'storage.put_chunk(uuid,integer,bytea)', 'storage.abort_upload(uuid)',
                    'storage.finish_upload(uuid,text)', 'storage.get_file(uuid)', 'storage.get_my_file(uuid,uuid)',
                    'storage.read_file(uuid,bigint,integer)', 'storage.list_files(uuid,integer)',
                    'storage.delete_file(uuid,uuid)', 'storage.sign_download(uuid,integer)',
                    'storage.sign_my_download(uuid,uuid,integer)', 'storage.get_signed_file(uuid,bigint,text)',
                    'storage.can_read(uuid,uuid)', 'storage.can_write(uuid,uuid)', 'storage.can_read_album(uuid,uuid)',
                    'storage.can_write_album(uuid,uuid)', 'storage.album_owner(uuid)', 'storage.get_readable_file(uuid,uuid)',
                    'storage.rename_file(uuid,uuid,text)', 'storage.create_album(uuid,text,text)', 'storage.get_album(uuid,uuid)',
                    'storage.list_albums(uuid,integer)', 'storage.list_album_files(uuid,uuid,integer)',
                    'storage.add_album_file(uuid,uuid,uuid)', 'storage.remove_album_file(uuid,uuid,uuid)',
                    'storage.reorder_album(uuid,uuid,uuid[])', 'storage.delete_album(uuid,uuid)',
                    'storage.share_file(uuid,uuid,uuid,uuid,text,timestamp with time zone,text)',
                    'storage.share_album(uuid,uuid,uuid,uuid,text,timestamp with time zone,text)',
                    'storage.revoke_share(uuid,uuid)', 'storage.list_file_shares(uuid,uuid)', 'storage.list_album_shares(uuid,uuid)',
                    'storage.list_shared_with_me(uuid,integer)',
                    'storage.offer_file(uuid,uuid,bigint)', 'storage.withdraw_offer(uuid,uuid)', 'storage.get_offer(uuid)'],
              'isa_app may execute exactly the API functions (no handler, no purge, no internal function)');
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
            WHERE p.pronamespace = 'storage'::regnamespace AND has_function_privilege('isa_app', p.oid, 'EXECUTE')
              AND NOT p.prosecdef),
          NULL, 'the API functions are SECURITY DEFINER');
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
            WHERE p.pronamespace = 'storage'::regnamespace
              AND NOT coalesce(p.proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp']
              AND p.proname NOT IN ('_info', '_share_info', '_rank') AND p.prolang <> (SELECT oid FROM pg_language WHERE lanname = 'c')),
          NULL, 'every function pins search_path (but _info, _share_info and _rank, plain SQL expressions to be inlined, and the C secret reader)');
SELECT ok(has_function_privilege('isa_admin', 'storage.purge_abandoned_uploads(interval)', 'EXECUTE'),
          'isa_admin may run purge_abandoned_uploads');

SELECT pg_temp.new_user('app');
GRANT SELECT ON u TO isa_app;             -- for pg_temp.uid()
GRANT SELECT, INSERT ON f TO isa_app;     -- for pg_temp.fid() and the upload's id
SET LOCAL ROLE isa_app;
INSERT INTO f VALUES ('app', storage.begin_upload(pg_temp.uid('app'), 'app.txt', 'text/plain', 6));
SELECT lives_ok(format('SELECT storage.put_chunk(%L, 0, %L)', pg_temp.fid('app'), '\x616263'), 'isa_app can put a chunk');
SELECT lives_ok(format('SELECT storage.put_chunk(%L, 1, %L)', pg_temp.fid('app'), '\x646566'), 'and another');
SELECT is((storage.finish_upload(pg_temp.fid('app'))).size, 6::bigint, 'isa_app can finish an upload');
SELECT is((SELECT convert_from(storage.read_file(x.file_id, 2, 3), 'UTF8') FROM storage.list_files(pg_temp.uid('app')) x),
          'cde', 'isa_app can list and read files');
SELECT throws_ok('SELECT 1 FROM storage.files', '42501', NULL, 'isa_app cannot read storage.files');
SELECT throws_ok('SELECT 1 FROM storage.chunks', '42501', NULL, 'isa_app cannot read storage.chunks');
SELECT throws_ok('UPDATE storage.files SET owner_id = owner_id', '42501', NULL, 'isa_app cannot write storage.files');
SELECT throws_ok('SELECT storage.on_user_deleted(NULL::isa.event)', '42501', NULL, 'isa_app cannot call the handler');
SELECT throws_ok('SELECT storage.purge_abandoned_uploads()', '42501', NULL, 'isa_app cannot purge uploads');
SELECT throws_ok('SELECT storage._url_secret()', '42501', NULL, 'isa_app cannot read the URL secret');
SELECT throws_ok('SELECT 1 FROM storage.outbox', '42501', NULL, 'isa_app cannot read storage.outbox');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
