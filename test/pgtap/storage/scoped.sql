-- scoped.sql — storage's one check within a scope (storage.can_read_scoped,
-- list_album_files_scoped; docs/services/storage.md, "Reads within a
-- scope"): what a user owns and what reaches them through the organizations
-- named, never a share with the user alone nor authz; organization's own
-- shares (organization.is_shared_with) only of those organizations; the
-- user and the sharer members, live; albums and the files their owner put
-- in them; the unscoped check unchanged; errors and privileges.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(40);

\ir ../fixtures.psql
SELECT pg_temp.new_user(l) FROM unnest(ARRAY['ann', 'ben', 'cat', 'eve']) l;
CREATE TEMP TABLE a (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.aid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.a WHERE label = l$$;
-- can_read_scoped(user, orgs, kind, label)
CREATE FUNCTION pg_temp.sees(who text, orgs text[], kind text, l text) RETURNS boolean LANGUAGE sql AS $$
    SELECT storage.can_read_scoped(pg_temp.uid(who), ARRAY(SELECT pg_temp.oid(x) FROM unnest(orgs) x), kind,
                                   CASE kind WHEN 'file' THEN pg_temp.fid(l) ELSE pg_temp.aid(l) END) $$;

-- ann owns family fam (ben admin, cat member); eve owns family eves (cat a member there too).
INSERT INTO o VALUES ('fam', (organization.create_organization(pg_temp.uid('ann'), 'family', 'Scoped')).org_id),
                     ('eves', (organization.create_organization(pg_temp.uid('eve'), 'family', 'Eves')).org_id);
SELECT pg_temp.join_org('fam', 'ann', 'ben', 'admin');
SELECT pg_temp.join_org('fam', 'ann', 'cat', 'member');
SELECT pg_temp.join_org('eves', 'eve', 'cat', 'member');
SELECT pg_temp.file(l, w) FROM (VALUES ('cat1', 'cat'), ('ben-fam', 'ben'), ('ben-org', 'ben'), ('ben-direct', 'ben'),
                                       ('ben-authz', 'ben'), ('eve-eves', 'eve'), ('ben-inalb', 'ben'), ('ben-inalb2', 'ben'),
                                       ('ben-write', 'ben')) x (l, w);
SELECT storage.share_file(pg_temp.uid('ben'), pg_temp.fid('ben-fam'), org_id => pg_temp.oid('fam'));
SELECT storage.share_file(pg_temp.uid('ben'), pg_temp.fid('ben-write'), org_id => pg_temp.oid('fam'), access => 'write');
SELECT organization.share_resource(pg_temp.uid('ben'), pg_temp.oid('fam'), 'file', pg_temp.fid('ben-org'));
SELECT storage.share_file(pg_temp.uid('ben'), pg_temp.fid('ben-direct'), user_id => pg_temp.uid('cat'));
SELECT authz.grant_permission(pg_temp.uid('cat'), 'storage:read', pg_temp.fid('ben-authz')::text);
SELECT storage.share_file(pg_temp.uid('eve'), pg_temp.fid('eve-eves'), org_id => pg_temp.oid('eves'));
-- ben's albums: one shared with fam by storage, one by organization, one only with cat
INSERT INTO a SELECT l, (storage.create_album(pg_temp.uid('ben'), l)).album_id FROM unnest(ARRAY['alb-fam', 'alb-org', 'alb-direct']) l;
SELECT storage.add_album_file(pg_temp.uid('ben'), pg_temp.aid('alb-fam'), pg_temp.fid(l)) FROM unnest(ARRAY['ben-inalb2', 'ben-inalb']) l;
SELECT storage.share_album(pg_temp.uid('ben'), pg_temp.aid('alb-fam'), org_id => pg_temp.oid('fam'));
SELECT organization.share_resource(pg_temp.uid('ben'), pg_temp.oid('fam'), 'album', pg_temp.aid('alb-org'));
SELECT storage.add_album_file(pg_temp.uid('ben'), pg_temp.aid('alb-org'), pg_temp.fid('ben-inalb'));
SELECT storage.share_album(pg_temp.uid('ben'), pg_temp.aid('alb-direct'), user_id => pg_temp.uid('cat'));
-- cat puts ben's family file into an album of hers: she could only read it
INSERT INTO a SELECT 'cat-alb', (storage.create_album(pg_temp.uid('cat'), 'cat-alb')).album_id;
SELECT storage.add_album_file(pg_temp.uid('cat'), pg_temp.aid('cat-alb'), pg_temp.fid('ben-fam'));

-- ---------------------------------------------------------------- unscoped: as before
SELECT ok(storage.can_read(pg_temp.uid('cat'), pg_temp.fid('ben-direct'))
          AND storage.can_read(pg_temp.uid('cat'), pg_temp.fid('ben-authz'))
          AND storage.can_read(pg_temp.uid('cat'), pg_temp.fid('eve-eves'))
          AND storage.can_read(pg_temp.uid('cat'), pg_temp.fid('ben-org')),
          'unscoped, cat reads through a direct share, authz, another organization and organization''s share');
SELECT ok(storage.can_write(pg_temp.uid('cat'), pg_temp.fid('ben-write')), 'and writes through a write share');

-- ---------------------------------------------------------------- scoped to fam
SELECT ok(pg_temp.sees('cat', '{fam}', 'file', 'cat1'), 'in a scope, what the user owns counts');
SELECT ok(pg_temp.sees('cat', '{}', 'file', 'cat1'), '… even in the empty scope');
SELECT ok(NOT pg_temp.sees('cat', '{}', 'file', 'ben-fam'), 'the empty scope: nothing shared counts');
SELECT ok(pg_temp.sees('cat', '{fam}', 'file', 'ben-fam'), 'a storage share with fam counts in fam''s scope');
SELECT ok(pg_temp.sees('cat', '{fam}', 'file', 'ben-write'), '… a write share too (read, in a scope)');
SELECT ok(pg_temp.sees('cat', '{fam}', 'file', 'ben-org'), 'organization.share_resource with fam counts (is_shared_with)');
SELECT ok(NOT pg_temp.sees('cat', '{fam}', 'file', 'ben-direct'), 'a share with the user alone does not');
SELECT ok(NOT pg_temp.sees('cat', '{fam}', 'file', 'ben-authz'), 'nor authz''s storage:read');
SELECT ok(NOT pg_temp.sees('cat', '{fam}', 'file', 'eve-eves'), 'nor a share with another organization of the user');
SELECT ok(pg_temp.sees('cat', '{fam,eves}', 'file', 'eve-eves'), '… which counts when the scope names it');
SELECT ok(NOT pg_temp.sees('eve', '{fam}', 'file', 'ben-fam'), 'a scope the user is no member of gives nothing');
SELECT ok(pg_temp.sees('cat', '{fam}', 'album', 'alb-fam') AND pg_temp.sees('cat', '{fam}', 'album', 'alb-org'),
          'albums shared with fam by storage and by organization count');
SELECT ok(NOT pg_temp.sees('cat', '{fam}', 'album', 'alb-direct'), 'an album shared with the user alone does not');
SELECT ok(pg_temp.sees('cat', '{fam}', 'album', 'cat-alb'), 'the user''s own album counts');
SELECT ok(pg_temp.sees('cat', '{fam}', 'file', 'ben-inalb'), 'a file its owner put in an album readable in the scope counts');
SELECT ok(pg_temp.sees('cat', '{}', 'album', 'cat-alb') AND NOT pg_temp.sees('cat', '{}', 'file', 'ben-fam'),
          'her own album counts in the empty scope, but does not pass on the file she put there and could only read');
SELECT ok(NOT storage.can_read_scoped(pg_temp.uid('cat'), ARRAY[pg_temp.oid('fam')], 'file', gen_random_uuid())
          AND NOT storage.can_read_scoped(pg_temp.uid('cat'), ARRAY[pg_temp.oid('fam')], 'album', gen_random_uuid()),
          'nothing that does not exist');

-- ---------------------------------------------------------------- album files within a scope
SELECT is((SELECT array_agg(x.file_id) FROM storage.list_album_files_scoped(pg_temp.uid('cat'), ARRAY[pg_temp.oid('fam')],
                                                                          pg_temp.aid('alb-fam')) x),
          ARRAY[pg_temp.fid('ben-inalb2'), pg_temp.fid('ben-inalb')],
          'list_album_files_scoped: its files in order (ben put his own there: the album passes them on)');
SELECT storage.add_album_file(pg_temp.uid('ben'), pg_temp.aid('alb-org'), pg_temp.fid('eve-eves'))
  FROM (SELECT storage.share_file(pg_temp.uid('eve'), pg_temp.fid('eve-eves'), user_id => pg_temp.uid('ben'))) s;
SELECT is((SELECT array_agg(x.file_id) FROM storage.list_album_files_scoped(pg_temp.uid('cat'), ARRAY[pg_temp.oid('fam')],
                                                                          pg_temp.aid('alb-org')) x),
          ARRAY[pg_temp.fid('ben-inalb')],
          '… without a file ben only could read (eve''s), which the scope does not reach');
SELECT is((SELECT count(*) FROM storage.list_album_files_scoped(pg_temp.uid('cat'), '{}', pg_temp.aid('cat-alb'))), 0::bigint,
          'the user''s own album in the empty scope: without the file she could only read');
SELECT throws_ok(format('SELECT * FROM storage.list_album_files_scoped(%L, %L, %L)', pg_temp.uid('cat'), ARRAY[pg_temp.oid('fam')],
                        pg_temp.aid('alb-direct')),
                 'P0002', format('album %s not found', pg_temp.aid('alb-direct')), 'an album not readable in the scope is P0002');
SELECT throws_ok(format('SELECT * FROM storage.list_album_files_scoped(%L, %L, %L, 0)', pg_temp.uid('cat'), ARRAY[pg_temp.oid('fam')],
                        pg_temp.aid('alb-fam')), '22023', NULL, 'row_limit 0 is 22023');

-- ---------------------------------------------------------------- live
SELECT storage.revoke_share(pg_temp.uid('ben'), (SELECT share_id FROM storage.list_file_shares(pg_temp.uid('ben'), pg_temp.fid('ben-fam'))));
SELECT ok(NOT pg_temp.sees('cat', '{fam}', 'file', 'ben-fam'), 'a revoked share counts no more');
SELECT organization.remove_member(pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.uid('cat'));
SELECT ok(NOT pg_temp.sees('cat', '{fam}', 'file', 'ben-org') AND NOT pg_temp.sees('cat', '{fam}', 'album', 'alb-fam')
          AND NOT pg_temp.sees('cat', '{fam}', 'file', 'ben-write'),
          'the user removed from fam: nothing reaches her through it any more');
SELECT ok(pg_temp.sees('cat', '{fam}', 'file', 'cat1'), 'what she owns still counts');
SELECT ok(pg_temp.sees('ann', '{fam}', 'file', 'ben-org') AND pg_temp.sees('ann', '{fam}', 'file', 'ben-write'),
          'ann, still a member, reads what ben shared');
SELECT organization.remove_member(pg_temp.uid('ann'), pg_temp.oid('fam'), pg_temp.uid('ben'));
SELECT ok(NOT pg_temp.sees('ann', '{fam}', 'file', 'ben-write'), 'the sharer removed: his storage share with fam counts no more');
SELECT ok(NOT pg_temp.sees('ann', '{fam}', 'file', 'ben-org') AND NOT pg_temp.sees('ann', '{fam}', 'album', 'alb-org'),
          '… nor his organization shares (withdrawn with his membership)');

-- ---------------------------------------------------------------- organization.is_shared_with
SELECT organization.share_resource(pg_temp.uid('eve'), pg_temp.oid('eves'), 'file', pg_temp.fid('eve-eves'));
SELECT ok(organization.is_shared_with(pg_temp.oid('eves'), 'file', pg_temp.fid('eve-eves')), 'is_shared_with: shared with that organization');
SELECT ok(NOT organization.is_shared_with(pg_temp.oid('fam'), 'file', pg_temp.fid('eve-eves')), '… not with another');
SELECT ok(NOT organization.is_shared_with(pg_temp.oid('eves'), 'album', pg_temp.fid('eve-eves')), '… nor under another kind');
SELECT throws_ok(format('SELECT organization.is_shared_with(%L, %L, %L)', pg_temp.oid('eves'), 'photo', pg_temp.fid('eve-eves')),
                 '22023', NULL, 'is_shared_with of an unknown kind is 22023');
SELECT throws_ok(format('SELECT organization.is_shared_with(NULL, %L, %L)', 'file', pg_temp.fid('eve-eves')),
                 '22004', NULL, '… NULL is 22004');

-- ---------------------------------------------------------------- errors
SELECT throws_ok(format('SELECT storage.can_read_scoped(%L, NULL, %L, %L)', pg_temp.uid('cat'), 'file', pg_temp.fid('cat1')),
                 '22004', NULL, 'can_read_scoped without a scope is 22004 (NULL is not "everything")');
SELECT throws_ok(format('SELECT storage.can_read_scoped(%L, %L, %L, %L)', pg_temp.uid('cat'), '{}', 'device', pg_temp.fid('cat1')),
                 '22023', 'kind must be file or album, not "device"', 'an unknown kind is 22023');

-- ---------------------------------------------------------------- privileges
SELECT ok(has_function_privilege('isa_svc_device', 'storage.can_read_scoped(uuid,uuid[],text,uuid)', 'EXECUTE')
          AND has_function_privilege('isa_svc_device', 'storage.list_album_files_scoped(uuid,uuid[],uuid,integer)', 'EXECUTE'),
          'the device service''s role may ask the scoped check');
SELECT ok(NOT has_function_privilege('isa_app', 'storage.can_read_scoped(uuid,uuid[],text,uuid)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'storage.list_album_files_scoped(uuid,uuid[],uuid,integer)', 'EXECUTE'),
          'applications may not (a service asks it for what it shows)');
SELECT ok(has_function_privilege('isa_svc_storage', 'organization.is_shared_with(uuid,text,uuid)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'organization.is_shared_with(uuid,text,uuid)', 'EXECUTE'),
          'organization.is_shared_with is storage''s to call');

SELECT * FROM finish();
ROLLBACK;
