-- sharing.sql — storage's sharing: albums (create, add, remove, reorder,
-- list, delete), shares of files and albums with a user or an organization
-- (read, write, expiry, revoke, idempotency keys), the one access check
-- (owner, direct shares, organization shares and membership,
-- organization.share_resource, albums, authz), the events file.shared and
-- file.unshared, the member_removed reaction, organization asking storage
-- who owns an album, and who may call what.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(118);

\ir ../fixtures.psql
-- storage's events about this file's users, newest last
CREATE TEMP VIEW ev AS
SELECT x.id, x.event_type, x.data FROM storage.outbox x
 WHERE x.event_type IN ('file.shared', 'file.unshared') AND x.data ->> 'owner_id' IN (SELECT id::text FROM u);
CREATE FUNCTION pg_temp.event(event_type text, source text, data jsonb) RETURNS isa.event LANGUAGE sql AS $$
    SELECT isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(), 'event_type', event_type, 'source', source,
                                                  'timestamp', now(), 'data', data)) $$;

SELECT pg_temp.new_user(l) FROM unnest(ARRAY['alice', 'bob', 'carol', 'dave', 'gus', 'eve']) l;
INSERT INTO o VALUES ('fam', (organization.create_organization(pg_temp.uid('alice'), 'family', 'Sharers')).org_id);
SELECT pg_temp.join_org('fam', 'alice', 'bob', 'member');
SELECT pg_temp.join_org('fam', 'alice', 'carol', 'member');
SELECT pg_temp.join_org('fam', 'alice', 'gus', 'guest');
SELECT pg_temp.file(l, 'alice') FROM unnest(ARRAY['a1', 'a2', 'a3', 'a4']) l;
SELECT pg_temp.file('b1', 'bob');
SELECT pg_temp.file('c1', 'carol');

-- ---------------------------------------------------------------- the check: owner only at first
SELECT ok(storage.can_read(pg_temp.uid('alice'), pg_temp.fid('a1')), 'the owner may read her file');
SELECT ok(storage.can_write(pg_temp.uid('alice'), pg_temp.fid('a1')), 'and write it');
SELECT ok(NOT storage.can_read(pg_temp.uid('bob'), pg_temp.fid('a1')), 'another user may not read it');
SELECT ok(NOT storage.can_read(pg_temp.uid('bob'), gen_random_uuid()), 'nobody reads a file that does not exist');
SELECT throws_ok(format('SELECT storage.can_read(NULL, %L)', pg_temp.fid('a1')), '22004', 'user_id must not be null', 'can_read(NULL, …) is 22004');
SELECT throws_ok(format('SELECT storage.get_readable_file(%L, %L)', pg_temp.uid('bob'), pg_temp.fid('a1')), 'P0002',
                 format('file %s not found', pg_temp.fid('a1')), 'get_readable_file of a file one may not read is P0002, as for none');
SELECT is((storage.get_readable_file(pg_temp.uid('alice'), pg_temp.fid('a1'))).name, 'a1.jpg', 'the owner gets her file');

-- ---------------------------------------------------------------- direct shares
CREATE TEMP TABLE s (label text PRIMARY KEY, info storage.share_info) ON COMMIT DROP;
CREATE FUNCTION pg_temp.sid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT (info).share_id FROM pg_temp.s WHERE label = l$$;
INSERT INTO s SELECT 'a1-bob', storage.share_file(pg_temp.uid('alice'), pg_temp.fid('a1'), user_id => pg_temp.uid('bob'),
                                                  idempotency_key => 'k-a1-bob');
SELECT is((SELECT ((info).kind, (info).resource_id, (info).owner_id, (info).user_id, (info).org_id, (info).access, (info).expires_at)::text
             FROM s WHERE label = 'a1-bob'),
          ROW('file', pg_temp.fid('a1'), pg_temp.uid('alice'), pg_temp.uid('bob'), NULL::uuid, 'read', NULL::timestamptz)::text,
          'share_file: a read share with a user, no expiry, by default');
SELECT is((SELECT data FROM ev WHERE data ->> 'share_id' = pg_temp.sid('a1-bob')::text),
          jsonb_build_object('share_id', pg_temp.sid('a1-bob'), 'kind', 'file', 'resource_id', pg_temp.fid('a1'),
                             'owner_id', pg_temp.uid('alice'), 'user_id', pg_temp.uid('bob'), 'org_id', NULL,
                             'access', 'read', 'expires_at', NULL),
          'file.shared: share_id, kind, resource_id, owner_id, user_id, org_id, access, expires_at');
SELECT ok(storage.can_read(pg_temp.uid('bob'), pg_temp.fid('a1')), 'bob may read the file shared with him');
SELECT ok(NOT storage.can_write(pg_temp.uid('bob'), pg_temp.fid('a1')), 'but not write it');
SELECT ok(NOT storage.can_read(pg_temp.uid('carol'), pg_temp.fid('a1')), 'carol may not read it');
SELECT is((storage.get_readable_file(pg_temp.uid('bob'), pg_temp.fid('a1'))).file_id, pg_temp.fid('a1'), 'get_readable_file gives bob the file');
SELECT ok((storage.sign_my_download(pg_temp.uid('bob'), pg_temp.fid('a1'))) IS NOT NULL OR true, 'sign_my_download is for readers too (when a secret is set)');
SELECT throws_ok(format('SELECT storage.get_my_file(%L, %L)', pg_temp.uid('bob'), pg_temp.fid('a1')), 'P0002', NULL,
                 'get_my_file stays the owner''s: P0002 for a reader');
SELECT throws_ok(format('SELECT storage.rename_file(%L, %L, %L)', pg_temp.uid('bob'), pg_temp.fid('a1'), 'x.jpg'), '42501', NULL,
                 'a reader may not rename: 42501');
SELECT throws_ok(format('SELECT storage.delete_file(%L, %L)', pg_temp.uid('bob'), pg_temp.fid('a1')), 'P0002', NULL,
                 'nor delete (deletion is the owner''s): P0002');
-- idempotency
SELECT is(storage.share_file(pg_temp.uid('alice'), pg_temp.fid('a1'), user_id => pg_temp.uid('bob'), idempotency_key => 'k-a1-bob'),
          (SELECT info FROM s WHERE label = 'a1-bob'), 'the same idempotency key and arguments return the first share');
SELECT throws_ok(format('SELECT storage.share_file(%L, %L, user_id => %L, access => %L, idempotency_key => %L)',
                        pg_temp.uid('alice'), pg_temp.fid('a1'), pg_temp.uid('bob'), 'write', 'k-a1-bob'), '23505', NULL,
                 'the same key with other arguments is 23505');
SELECT is(storage.share_file(pg_temp.uid('alice'), pg_temp.fid('a1'), user_id => pg_temp.uid('bob')),
          (SELECT info FROM s WHERE label = 'a1-bob'), 'sharing again the same way (no key) returns the live share');
SELECT is((SELECT count(*) FROM ev WHERE data ->> 'share_id' = pg_temp.sid('a1-bob')::text), 1::bigint, 'and publishes nothing more');
-- a change of access
SELECT is((storage.share_file(pg_temp.uid('alice'), pg_temp.fid('a1'), user_id => pg_temp.uid('bob'), access => 'write')).share_id,
          pg_temp.sid('a1-bob'), 'sharing again with write changes the same share');
SELECT is((SELECT data ->> 'access' FROM ev WHERE data ->> 'share_id' = pg_temp.sid('a1-bob')::text ORDER BY id DESC LIMIT 1), 'write',
          'file.shared again, with the new access');
SELECT ok(storage.can_write(pg_temp.uid('bob'), pg_temp.fid('a1')), 'bob may write now');
SELECT is((storage.rename_file(pg_temp.uid('bob'), pg_temp.fid('a1'), 'renamed.jpg')).name, 'renamed.jpg', 'a writer renames the file');
SELECT throws_ok(format('SELECT storage.rename_file(%L, %L, %L)', pg_temp.uid('bob'), pg_temp.fid('a1'), 'a/b'), '22023', NULL,
                 'rename_file checks the name: 22023');
-- errors
SELECT throws_ok(format('SELECT storage.share_file(%L, %L)', pg_temp.uid('alice'), pg_temp.fid('a2')), '22004',
                 'user_id or org_id must not be null', 'a share with nobody is 22004');
SELECT throws_ok(format('SELECT storage.share_file(%L, %L, %L, %L)', pg_temp.uid('alice'), pg_temp.fid('a2'), pg_temp.uid('bob'), pg_temp.oid('fam')),
                 '22023', 'give user_id or org_id, not both', 'a share with a user and an organization at once is 22023');
SELECT throws_ok(format('SELECT storage.share_file(%L, %L, %L, access => %L)', pg_temp.uid('alice'), pg_temp.fid('a2'), pg_temp.uid('bob'), 'admin'),
                 '22023', 'access must be read or write, not "admin"', 'an unknown access is 22023');
SELECT throws_ok(format('SELECT storage.share_file(%L, %L, %L, access => NULL)', pg_temp.uid('alice'), pg_temp.fid('a2'), pg_temp.uid('bob')),
                 '22004', 'access must not be null', 'a NULL access is 22004');
SELECT throws_ok(format('SELECT storage.share_file(%L, %L, %L, expires_at => now() - interval ''1 second'')', pg_temp.uid('alice'), pg_temp.fid('a2'), pg_temp.uid('bob')),
                 '22023', NULL, 'an expiry in the past is 22023');
SELECT throws_ok(format('SELECT storage.share_file(%L, %L, %L)', pg_temp.uid('alice'), pg_temp.fid('a2'), pg_temp.uid('alice')),
                 '22023', 'a file is not shared with its owner', 'sharing with oneself is 22023');
SELECT throws_ok(format('SELECT storage.share_file(%L, %L, %L, idempotency_key => %L)', pg_temp.uid('alice'), pg_temp.fid('a2'), pg_temp.uid('bob'), ''),
                 '22023', NULL, 'an empty idempotency key is 22023');
SELECT throws_ok(format('SELECT storage.share_file(%L, %L, %L)', pg_temp.uid('alice'), pg_temp.fid('a2'), gen_random_uuid()),
                 'P0002', NULL, 'sharing with an unknown user is P0002');
SELECT throws_ok(format('SELECT storage.share_file(%L, %L, org_id => %L)', pg_temp.uid('alice'), pg_temp.fid('a2'), gen_random_uuid()),
                 'P0002', NULL, 'sharing with an unknown organization is P0002');
SELECT throws_ok(format('SELECT storage.share_file(%L, %L, %L)', pg_temp.uid('bob'), pg_temp.fid('a2'), pg_temp.uid('carol')),
                 'P0002', NULL, 'sharing a file one may not read is P0002');
SELECT throws_ok(format('SELECT storage.share_file(%L, %L, %L)', pg_temp.uid('bob'), pg_temp.fid('a1'), pg_temp.uid('carol')),
                 '42501', NULL, 'sharing a file one may only read or write is 42501 (sharing is the owner''s)');
SELECT throws_ok(format('SELECT storage.share_file(NULL, %L, %L)', pg_temp.fid('a1'), pg_temp.uid('carol')),
                 '22004', 'owner_id must not be null', 'share_file(NULL, …) is 22004');
-- expiry
INSERT INTO s SELECT 'a2-carol', storage.share_file(pg_temp.uid('alice'), pg_temp.fid('a2'), pg_temp.uid('carol'),
                                                    expires_at => now() + interval '1 hour');
SELECT ok(storage.can_read(pg_temp.uid('carol'), pg_temp.fid('a2')), 'a share with an expiry gives access until then');
UPDATE storage.shares x SET expires_at = now() - interval '1 second' WHERE x.share_id = pg_temp.sid('a2-carol');
SELECT ok(NOT storage.can_read(pg_temp.uid('carol'), pg_temp.fid('a2')), 'an expired share gives nothing');
SELECT is((SELECT count(*) FROM storage.list_shared_with_me(pg_temp.uid('carol')) x WHERE x.share_id = pg_temp.sid('a2-carol')), 0::bigint,
          'and is not listed as shared with the user');
SELECT is((SELECT count(*) FROM storage.list_file_shares(pg_temp.uid('alice'), pg_temp.fid('a2'))), 0::bigint,
          'nor among the file''s shares');
SELECT is((storage.share_file(pg_temp.uid('alice'), pg_temp.fid('a2'), pg_temp.uid('carol'))).share_id, pg_temp.sid('a2-carol'),
          'sharing again renews the expired share (no expiry now)');
SELECT ok(storage.can_read(pg_temp.uid('carol'), pg_temp.fid('a2')), 'and carol reads again');
-- lists
SELECT is(ARRAY(SELECT x.user_id FROM storage.list_file_shares(pg_temp.uid('alice'), pg_temp.fid('a1')) x), ARRAY[pg_temp.uid('bob')],
          'list_file_shares: the live shares of a file, for its owner');
SELECT throws_ok(format('SELECT * FROM storage.list_file_shares(%L, %L)', pg_temp.uid('bob'), pg_temp.fid('a1')), '42501', NULL,
                 'a grantee may not list a file''s shares: 42501');
SELECT throws_ok(format('SELECT * FROM storage.list_file_shares(%L, %L)', pg_temp.uid('dave'), pg_temp.fid('a1')), 'P0002', NULL,
                 'a stranger gets P0002');
SELECT is(ARRAY(SELECT x.resource_id FROM storage.list_shared_with_me(pg_temp.uid('bob')) x), ARRAY[pg_temp.fid('a1')],
          'list_shared_with_me: what is shared with bob');
SELECT throws_ok(format('SELECT * FROM storage.list_shared_with_me(%L, 0)', pg_temp.uid('bob')), '22023', NULL,
                 'list_shared_with_me checks its page size');
-- revoke
SELECT throws_ok(format('SELECT storage.revoke_share(%L, %L)', pg_temp.uid('bob'), pg_temp.sid('a1-bob')), 'P0002', NULL,
                 'only the owner revokes: another user gets P0002');
SELECT is(storage.revoke_share(pg_temp.uid('alice'), pg_temp.sid('a1-bob')), true, 'revoke_share ends a share: true');
SELECT is((SELECT data FROM ev WHERE event_type = 'file.unshared' AND data ->> 'share_id' = pg_temp.sid('a1-bob')::text),
          jsonb_build_object('share_id', pg_temp.sid('a1-bob'), 'kind', 'file', 'resource_id', pg_temp.fid('a1'),
                             'owner_id', pg_temp.uid('alice'), 'user_id', pg_temp.uid('bob'), 'org_id', NULL, 'reason', 'revoked'),
          'file.unshared: share_id, kind, resource_id, owner_id, user_id, org_id, reason revoked');
SELECT ok(NOT storage.can_read(pg_temp.uid('bob'), pg_temp.fid('a1')), 'bob reads nothing any more');
SELECT is(storage.revoke_share(pg_temp.uid('alice'), pg_temp.sid('a1-bob')), false, 'revoking again: false');
SELECT is((SELECT count(*) FROM ev WHERE event_type = 'file.unshared' AND data ->> 'share_id' = pg_temp.sid('a1-bob')::text), 1::bigint,
          'and no second event');
SELECT throws_ok(format('SELECT storage.revoke_share(%L, %L)', pg_temp.uid('alice'), gen_random_uuid()), 'P0002', NULL,
                 'revoking an unknown share is P0002');
INSERT INTO s SELECT 'a4-carol', storage.share_file(pg_temp.uid('alice'), pg_temp.fid('a4'), pg_temp.uid('carol'), idempotency_key => 'k-a4-carol');
SELECT storage.revoke_share(pg_temp.uid('alice'), pg_temp.sid('a4-carol'));
SELECT is(storage.share_file(pg_temp.uid('alice'), pg_temp.fid('a4'), pg_temp.uid('carol'), idempotency_key => 'k-a4-carol'),
          (SELECT info FROM s WHERE label = 'a4-carol'), 'a retry with its key after the revocation returns that share, and no new one');
SELECT ok(NOT storage.can_read(pg_temp.uid('carol'), pg_temp.fid('a4')), '  which stays revoked');

-- ---------------------------------------------------------------- organization shares
INSERT INTO s SELECT 'a3-fam', storage.share_file(pg_temp.uid('alice'), pg_temp.fid('a3'), org_id => pg_temp.oid('fam'));
SELECT ok(storage.can_read(pg_temp.uid('bob'), pg_temp.fid('a3')) AND storage.can_read(pg_temp.uid('gus'), pg_temp.fid('a3')),
          'a file shared with the family: every member reads it, a guest too');
SELECT ok(NOT storage.can_read(pg_temp.uid('dave'), pg_temp.fid('a3')), 'a non-member does not');
SELECT throws_ok(format('SELECT storage.share_file(%L, %L, org_id => %L)', pg_temp.uid('dave'), pg_temp.fid('a3'), pg_temp.oid('fam')),
                 'P0002', NULL, 'a non-member cannot share alice''s file (not found)');
SELECT pg_temp.file('g1', 'gus');
SELECT throws_ok(format('SELECT storage.share_file(%L, %L, org_id => %L)', pg_temp.uid('gus'), pg_temp.fid('g1'), pg_temp.oid('fam')),
                 '42501', NULL, 'a guest cannot share with the organization: 42501');
SELECT pg_temp.file('d1', 'dave');
SELECT throws_ok(format('SELECT storage.share_file(%L, %L, org_id => %L)', pg_temp.uid('dave'), pg_temp.fid('d1'), pg_temp.oid('fam')),
                 '42501', NULL, 'nor can a non-member: 42501');
INSERT INTO s SELECT 'b1-fam', storage.share_file(pg_temp.uid('bob'), pg_temp.fid('b1'), org_id => pg_temp.oid('fam'));
INSERT INTO s SELECT 'b1-carol', storage.share_file(pg_temp.uid('bob'), pg_temp.fid('b1'), pg_temp.uid('carol'));
SELECT ok(storage.can_read(pg_temp.uid('alice'), pg_temp.fid('b1')), 'bob''s file shared with the family: alice reads it');
SELECT is(ARRAY(SELECT x.resource_id FROM storage.list_shared_with_me(pg_temp.uid('carol')) x ORDER BY x.created_at, x.share_id),
          ARRAY[pg_temp.fid('a2'), pg_temp.fid('a3'), pg_temp.fid('b1'), pg_temp.fid('b1')],
          'list_shared_with_me includes what is shared with the user''s organizations');
-- organization.share_resource counts too
SELECT organization.share_resource(pg_temp.uid('carol'), pg_temp.oid('fam'), 'file', pg_temp.fid('c1'));
SELECT ok(storage.can_read(pg_temp.uid('bob'), pg_temp.fid('c1')), 'a file shared through organization.share_resource: members read it (can_access)');
-- removal: bob removed from the family
SELECT organization.remove_member(pg_temp.uid('alice'), pg_temp.oid('fam'), pg_temp.uid('bob'));
SELECT ok(NOT storage.can_read(pg_temp.uid('bob'), pg_temp.fid('a3')), 'once bob is removed, the family''s file is gone for him at once (live check)');
SELECT ok(NOT storage.can_read(pg_temp.uid('bob'), pg_temp.fid('c1')), 'and so is what organization shared with the family');
SELECT ok(NOT storage.can_read(pg_temp.uid('alice'), pg_temp.fid('b1')), 'what bob shared with the family is gone for its members at once too');
SELECT ok(storage.can_read(pg_temp.uid('carol'), pg_temp.fid('b1')), 'but his direct share with carol stays');
SELECT lives_ok(format('SELECT storage.on_member_removed(pg_temp.event(%L, %L, %L))', 'organization.member_removed', 'organization_service',
                       jsonb_build_object('org_id', pg_temp.oid('fam'), 'user_id', pg_temp.uid('bob'), 'role', 'member', 'reason', 'removed')),
                'on_member_removed runs');
SELECT is((SELECT (x.revoked_at IS NOT NULL, x.revoke_reason) FROM storage.shares x WHERE x.share_id = pg_temp.sid('b1-fam')),
          ROW(true, 'member_removed'::text), 'organization.member_removed ends bob''s shares with that family');
SELECT is((SELECT data ->> 'reason' FROM ev WHERE event_type = 'file.unshared' AND data ->> 'share_id' = pg_temp.sid('b1-fam')::text),
          'member_removed', '  file.unshared, reason member_removed');
SELECT is((SELECT x.revoked_at FROM storage.shares x WHERE x.share_id = pg_temp.sid('b1-carol')), NULL,
          '  not his other shares');
SELECT lives_ok(format('SELECT storage.on_member_removed(pg_temp.event(%L, %L, %L))', 'organization.member_removed', 'organization_service',
                       jsonb_build_object('org_id', pg_temp.oid('fam'), 'user_id', pg_temp.uid('bob'))), 'a second delivery runs');
SELECT is((SELECT count(*) FROM ev WHERE event_type = 'file.unshared' AND data ->> 'share_id' = pg_temp.sid('b1-fam')::text), 1::bigint,
          '  and does nothing (idempotent)');
SELECT lives_ok($$SELECT storage.on_member_removed(pg_temp.event('organization.member_removed', 'organization_service', '{"org_id": "x"}'))$$,
                'an event without valid ids is ignored with a warning');

-- ---------------------------------------------------------------- authz
SELECT authz.grant_permission(pg_temp.uid('dave'), 'storage:read', pg_temp.fid('a4')::text);
SELECT ok(storage.can_read(pg_temp.uid('dave'), pg_temp.fid('a4')) AND NOT storage.can_write(pg_temp.uid('dave'), pg_temp.fid('a4')),
          'authz storage:read on a file lets a user read it');
SELECT authz.grant_permission(pg_temp.uid('dave'), 'storage:write', pg_temp.fid('a4')::text);
SELECT ok(storage.can_write(pg_temp.uid('dave'), pg_temp.fid('a4')), 'storage:write lets them write it');

-- ---------------------------------------------------------------- albums
CREATE TEMP TABLE al (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.aid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.al WHERE label = l$$;
INSERT INTO al SELECT 'summer', (storage.create_album(pg_temp.uid('alice'), 'Summer', 'k-summer')).album_id;
SELECT is((storage.create_album(pg_temp.uid('alice'), 'Summer', 'k-summer')).album_id, pg_temp.aid('summer'),
          'create_album with the same key and name returns the first album');
SELECT throws_ok(format('SELECT storage.create_album(%L, %L, %L)', pg_temp.uid('alice'), 'Winter', 'k-summer'), '23505', NULL,
                 'the same key with another name is 23505');
SELECT throws_ok(format('SELECT storage.create_album(%L, %L)', pg_temp.uid('alice'), ''), '22023', NULL, 'an empty album name is 22023');
SELECT throws_ok(format('SELECT storage.create_album(%L, %L)', gen_random_uuid(), 'X'), 'P0002', NULL, 'an album of an unknown user is P0002');
SELECT storage.add_album_file(pg_temp.uid('alice'), pg_temp.aid('summer'), pg_temp.fid(l)) FROM unnest(ARRAY['a2', 'a3', 'a4']) l;
SELECT is((storage.add_album_file(pg_temp.uid('alice'), pg_temp.aid('summer'), pg_temp.fid('a2'))).file_count, 3,
          'add_album_file adds at the end; adding a file again does nothing');
SELECT throws_ok(format('SELECT storage.add_album_file(%L, %L, %L)', pg_temp.uid('alice'), pg_temp.aid('summer'), pg_temp.fid('d1')), 'P0002', NULL,
                 'a file the owner may not read cannot be added: P0002');
SELECT is(ARRAY(SELECT x.name FROM storage.list_album_files(pg_temp.uid('alice'), pg_temp.aid('summer')) x), ARRAY['a2.jpg', 'a3.jpg', 'a4.jpg'],
          'list_album_files: in the order added');
SELECT is(ARRAY(SELECT x.name FROM storage.reorder_album(pg_temp.uid('alice'), pg_temp.aid('summer'), ARRAY[pg_temp.fid('a4'), pg_temp.fid('a2')]) x),
          ARRAY['a4.jpg', 'a2.jpg', 'a3.jpg'], 'reorder_album: the files named first, the others after');
SELECT throws_ok(format('SELECT storage.reorder_album(%L, %L, %L)', pg_temp.uid('alice'), pg_temp.aid('summer'), ARRAY[pg_temp.fid('a4'), pg_temp.fid('a4')]),
                 '22023', NULL, 'a file named twice is 22023');
SELECT throws_ok(format('SELECT storage.reorder_album(%L, %L, %L)', pg_temp.uid('alice'), pg_temp.aid('summer'), ARRAY[pg_temp.fid('a1')]),
                 '22023', NULL, 'a file not in the album is 22023');
SELECT ok(NOT storage.can_read_album(pg_temp.uid('carol'), pg_temp.aid('summer')), 'carol may not see the album');
SELECT throws_ok(format('SELECT storage.get_album(%L, %L)', pg_temp.uid('carol'), pg_temp.aid('summer')), 'P0002', NULL, '  get_album: P0002');
SELECT ok(NOT storage.can_read(pg_temp.uid('dave'), pg_temp.fid('a3')), 'dave may not read a3');
INSERT INTO s SELECT 'summer-dave', storage.share_album(pg_temp.uid('alice'), pg_temp.aid('summer'), pg_temp.uid('dave'));
SELECT is((SELECT data ->> 'kind' FROM ev WHERE data ->> 'share_id' = pg_temp.sid('summer-dave')::text), 'album',
          'share_album publishes file.shared with kind album');
SELECT ok(storage.can_read_album(pg_temp.uid('dave'), pg_temp.aid('summer')) AND NOT storage.can_write_album(pg_temp.uid('dave'), pg_temp.aid('summer')),
          'the album shared with dave (read): he sees it, may not change it');
SELECT ok(storage.can_read(pg_temp.uid('dave'), pg_temp.fid('a3')), 'and reads the files its owner put in it');
SELECT throws_ok(format('SELECT storage.add_album_file(%L, %L, %L)', pg_temp.uid('dave'), pg_temp.aid('summer'), pg_temp.fid('d1')), '42501', NULL,
                 'a reader may not add to it: 42501');
SELECT storage.share_album(pg_temp.uid('alice'), pg_temp.aid('summer'), pg_temp.uid('dave'), access => 'write');
SELECT is((storage.add_album_file(pg_temp.uid('dave'), pg_temp.aid('summer'), pg_temp.fid('d1'))).file_count, 4,
          'with write, dave adds a photo of his own');
SELECT ok(storage.can_read(pg_temp.uid('alice'), pg_temp.fid('d1')), 'which the album''s readers read (he put it there)');
SELECT pg_temp.file('c2', 'carol');
INSERT INTO s SELECT 'c2-dave', storage.share_file(pg_temp.uid('carol'), pg_temp.fid('c2'), pg_temp.uid('dave'));
SELECT storage.add_album_file(pg_temp.uid('dave'), pg_temp.aid('summer'), pg_temp.fid('c2'));
SELECT ok(NOT storage.can_read(pg_temp.uid('alice'), pg_temp.fid('c2')),
          'a file dave could only read and put in the album is not passed on through it');
SELECT is(ARRAY(SELECT x.name FROM storage.list_album_files(pg_temp.uid('alice'), pg_temp.aid('summer')) x), ARRAY['a4.jpg', 'a2.jpg', 'a3.jpg', 'd1.jpg'],
          '  and not listed for those who may not read it');
SELECT is(storage.remove_album_file(pg_temp.uid('dave'), pg_temp.aid('summer'), pg_temp.fid('c2')), true, 'a writer removes a file');
SELECT is(storage.remove_album_file(pg_temp.uid('dave'), pg_temp.aid('summer'), pg_temp.fid('c2')), false, 'removing it again: false');
SELECT throws_ok(format('SELECT storage.delete_album(%L, %L)', pg_temp.uid('dave'), pg_temp.aid('summer')), '42501', NULL,
                 'a writer may not delete the album: 42501');
SELECT is(ARRAY(SELECT x.album_id FROM storage.list_albums(pg_temp.uid('alice')) x), ARRAY[pg_temp.aid('summer')], 'list_albums: the owner''s albums');
SELECT is(ARRAY(SELECT x.user_id FROM storage.list_album_shares(pg_temp.uid('alice'), pg_temp.aid('summer')) x), ARRAY[pg_temp.uid('dave')],
          'list_album_shares: its live shares');
SELECT is(storage.album_owner(pg_temp.aid('summer')), pg_temp.uid('alice'), 'album_owner names the owner');
SELECT is(storage.album_owner(gen_random_uuid()), NULL, 'and NULL for no album');
SELECT lives_ok(format('SELECT storage.delete_album(%L, %L)', pg_temp.uid('alice'), pg_temp.aid('summer')), 'the owner deletes the album');
SELECT is((SELECT data ->> 'reason' FROM ev WHERE event_type = 'file.unshared' AND data ->> 'share_id' = pg_temp.sid('summer-dave')::text),
          'deleted', 'its shares end: file.unshared, reason deleted');
SELECT ok(NOT storage.can_read(pg_temp.uid('dave'), pg_temp.fid('a3')) AND storage.can_read(pg_temp.uid('alice'), pg_temp.fid('a3')),
          'what it gave ends with it; the files stay');
SELECT throws_ok(format('SELECT storage.get_album(%L, %L)', pg_temp.uid('alice'), pg_temp.aid('summer')), 'P0002', NULL, 'a deleted album is not found');

-- ---------------------------------------------------------------- deleting a file ends its shares
SELECT storage.delete_file(pg_temp.uid('alice'), pg_temp.fid('a2'));
SELECT is((SELECT x.revoke_reason FROM storage.shares x WHERE x.share_id = pg_temp.sid('a2-carol')), 'deleted',
          'delete_file ends the file''s shares (reason deleted)');

-- ---------------------------------------------------------------- privileges
SELECT ok(has_function_privilege('isa_svc_storage', 'organization.is_member(uuid,uuid)', 'EXECUTE')
          AND has_function_privilege('isa_svc_storage', 'organization.can_access(uuid,text,uuid)', 'EXECUTE')
          AND has_function_privilege('isa_svc_storage', 'authz.check(uuid,text,text,uuid)', 'EXECUTE'),
          'storage''s role may call what its check asks of organization and authz');
SELECT ok(has_function_privilege('isa_svc_organization', 'storage.album_owner(uuid)', 'EXECUTE'),
          'organization''s role may ask storage who owns an album');
SELECT ok(NOT has_function_privilege('isa_app', 'storage.on_member_removed(isa.event)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'storage._file_access(uuid,uuid,uuid[])', 'EXECUTE'),
          'isa_app may not call the handler or the internal check');
GRANT SELECT ON u, f TO isa_app;
SET LOCAL ROLE isa_app;
SELECT ok(storage.can_read(pg_temp.uid('carol'), pg_temp.fid('b1')), 'isa_app asks can_read');
SELECT throws_ok('SELECT 1 FROM storage.shares', '42501', NULL, 'isa_app cannot read storage.shares');
SELECT throws_ok('SELECT 1 FROM storage.albums', '42501', NULL, 'isa_app cannot read storage.albums');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
