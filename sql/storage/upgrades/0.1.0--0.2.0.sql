-- 0.1.0 → 0.2.0, storage: sharing (docs/services/storage.md, "Sharing" and
-- "Albums"): albums and their files, shares of files and albums with users
-- and organizations, the events file.shared and file.unshared, the reaction
-- to organization.member_removed, and the routes.  Functions, comments and
-- grants are replayed from sql/storage/storage.sql after this.

-- Albums: an owner's ordered collections of files.  album_files keeps the
-- order (position, from 0) and who added each file: an album passes read
-- access on to a file only when its own owner added it (storage._file_access),
-- so no one re-shares through an album a file they could merely read.
CREATE TABLE storage.albums (
    album_id        uuid PRIMARY KEY DEFAULT isa.uuid_v7(),
    owner_id        uuid NOT NULL,                                  -- account's user
    name            text NOT NULL,                                  -- as a file name: 1-255 characters, no / \ or control character
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT albums_idempotency_key UNIQUE (owner_id, idempotency_key)
);
CREATE INDEX albums_owner ON storage.albums (owner_id, created_at DESC, album_id DESC);
COMMENT ON TABLE storage.albums IS
    'Albums: ordered collections of files, each owned by one user.';

CREATE TABLE storage.album_files (
    album_id uuid NOT NULL REFERENCES storage.albums ON DELETE CASCADE,
    file_id  uuid NOT NULL REFERENCES storage.files ON DELETE CASCADE,
    position integer NOT NULL CHECK (position >= 0),
    added_by uuid NOT NULL,                                          -- the owner or a writer of the album
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (album_id, file_id),
    CONSTRAINT album_files_position UNIQUE (album_id, position) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX album_files_file ON storage.album_files (file_id);
COMMENT ON TABLE storage.album_files IS
    'The files of an album in order (position from 0), with who added each.';

-- Shares of a file or an album by its owner with one user or one
-- organization, read or write, until expires_at (NULL: no end) or until
-- revoked (the row stays, for an idempotent retry and the record).  At most
-- one live share per resource and grantee: sharing again changes it.
CREATE TABLE storage.shares (
    share_id        uuid PRIMARY KEY DEFAULT isa.uuid_v7(),
    kind            text NOT NULL CHECK (kind IN ('file', 'album')),
    file_id         uuid REFERENCES storage.files ON DELETE CASCADE,
    album_id        uuid REFERENCES storage.albums ON DELETE CASCADE,
    owner_id        uuid NOT NULL,                                   -- the resource's owner, who shared it
    user_id         uuid,                                            -- shared with this user …
    org_id          uuid,                                            -- … or with the members of this organization
    access          text NOT NULL CHECK (access IN ('read', 'write')),
    expires_at      timestamptz,
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    revoke_reason   text CHECK (revoke_reason IN ('revoked', 'member_removed', 'deleted')),
    CHECK ((kind = 'file') = (file_id IS NOT NULL) AND (kind = 'album') = (album_id IS NOT NULL)),
    CHECK ((user_id IS NULL) <> (org_id IS NULL)),
    CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL)),
    CONSTRAINT shares_idempotency_key UNIQUE (owner_id, idempotency_key)
);
CREATE UNIQUE INDEX shares_live ON storage.shares (coalesce(file_id, album_id), coalesce(user_id, org_id)) WHERE revoked_at IS NULL;
CREATE INDEX shares_user ON storage.shares (user_id) WHERE revoked_at IS NULL AND user_id IS NOT NULL;
CREATE INDEX shares_org ON storage.shares (org_id, owner_id) WHERE revoked_at IS NULL AND org_id IS NOT NULL;
COMMENT ON TABLE storage.shares IS
    'Files and albums shared by their owner with a user or an organization, read or write, until expires_at or revoked.';

CREATE TYPE storage.album_info AS (
    album_id   uuid,
    owner_id   uuid,
    name       text,
    file_count integer,
    created_at timestamptz,
    updated_at timestamptz
);
COMMENT ON TYPE storage.album_info IS 'An album as the storage API returns it, with how many files it holds.';

CREATE TYPE storage.share_info AS (
    share_id    uuid,
    kind        text,            -- file or album
    resource_id uuid,            -- the file_id or album_id
    owner_id    uuid,
    user_id     uuid,            -- the user it is shared with, or NULL
    org_id      uuid,            -- the organization it is shared with, or NULL
    access      text,            -- read or write
    expires_at  timestamptz,     -- NULL: until revoked
    created_at  timestamptz
);
COMMENT ON TYPE storage.share_info IS 'A share of a file or an album with a user or an organization.';

-- One event type for files and albums (kind says which): an album is a
-- collection of files, and a subscriber (a notification, a frame) handles
-- one subject for "something was shared with you".
SELECT isa.register_event_type('file.shared', 'storage_service', '1.0.0',
    'A file or an album was shared by its owner with a user or an organization, or an existing share''s access or expiry changed (storage.share_file, storage.share_album).',
    '{"share_id":    {"type": "uuid",      "required": true,  "description": "the share"},
      "kind":        {"type": "string",    "required": true,  "description": "file or album"},
      "resource_id": {"type": "uuid",      "required": true,  "description": "the file_id or album_id"},
      "owner_id":    {"type": "uuid",      "required": true,  "description": "its owner, who shared it"},
      "user_id":     {"type": "uuid",      "required": false, "description": "the user it is shared with (or org_id)"},
      "org_id":      {"type": "uuid",      "required": false, "description": "the organization it is shared with (or user_id)"},
      "access":      {"type": "string",    "required": true,  "description": "read or write"},
      "expires_at":  {"type": "timestamp", "required": false, "description": "when the share ends by itself; null: until revoked"}}');
SELECT isa.register_event_type('file.unshared', 'storage_service', '1.0.0',
    'A share of a file or an album ended before its expiry: revoked by its owner, the owner''s membership of the organization it was shared with ended, or the file, the album or the owner''s account was deleted.',
    '{"share_id":    {"type": "uuid",   "required": true,  "description": "the share"},
      "kind":        {"type": "string", "required": true,  "description": "file or album"},
      "resource_id": {"type": "uuid",   "required": true,  "description": "the file_id or album_id"},
      "owner_id":    {"type": "uuid",   "required": true,  "description": "its owner"},
      "user_id":     {"type": "uuid",   "required": false, "description": "the user it was shared with (or org_id)"},
      "org_id":      {"type": "uuid",   "required": false, "description": "the organization it was shared with (or user_id)"},
      "reason":      {"type": "string", "required": true,  "description": "revoked, member_removed or deleted (the file, album or owner)"}}');

-- The functions the subscription, the routes and organization's fragment
-- (its grant of album_owner) name do not exist yet when the fragments run
-- (the replay that creates them comes after): created here with their final
-- signatures, the replay replaces them.
CREATE FUNCTION storage.album_owner(album_id uuid)
    RETURNS uuid LANGUAGE plpgsql AS $$BEGIN END$$;
-- organization's fragment grants album_owner and get_my_file to its role
-- before the replay grants them to isa_app_storage; granted here first, so
-- their privileges are in a fresh install's order (90-upgrade compares).
GRANT EXECUTE ON FUNCTION storage.album_owner(uuid), storage.get_my_file(uuid, uuid) TO isa_app_storage;
CREATE FUNCTION storage.on_member_removed(e isa.event)
    RETURNS void LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION storage.get_readable_file(user_id uuid, file_id uuid)
    RETURNS storage.file_info LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION storage.rename_file(user_id uuid, file_id uuid, name text)
    RETURNS storage.file_info LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION storage.share_file(owner_id uuid, file_id uuid, user_id uuid DEFAULT NULL, org_id uuid DEFAULT NULL, access text DEFAULT 'read', expires_at timestamptz DEFAULT NULL, idempotency_key text DEFAULT NULL)
    RETURNS storage.share_info LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION storage.list_file_shares(owner_id uuid, file_id uuid)
    RETURNS SETOF storage.share_info LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION storage.revoke_share(owner_id uuid, share_id uuid)
    RETURNS boolean LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION storage.list_shared_with_me(user_id uuid, row_limit integer DEFAULT 100)
    RETURNS SETOF storage.share_info LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION storage.create_album(owner_id uuid, name text, idempotency_key text DEFAULT NULL)
    RETURNS storage.album_info LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION storage.list_albums(owner_id uuid, row_limit integer DEFAULT 100)
    RETURNS SETOF storage.album_info LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION storage.get_album(user_id uuid, album_id uuid)
    RETURNS storage.album_info LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION storage.delete_album(owner_id uuid, album_id uuid)
    RETURNS void LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION storage.list_album_files(user_id uuid, album_id uuid, row_limit integer DEFAULT 1000)
    RETURNS SETOF storage.file_info LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION storage.add_album_file(user_id uuid, album_id uuid, file_id uuid)
    RETURNS storage.album_info LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION storage.remove_album_file(user_id uuid, album_id uuid, file_id uuid)
    RETURNS boolean LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION storage.reorder_album(user_id uuid, album_id uuid, file_ids uuid[])
    RETURNS SETOF storage.file_info LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION storage.share_album(owner_id uuid, album_id uuid, user_id uuid DEFAULT NULL, org_id uuid DEFAULT NULL, access text DEFAULT 'read', expires_at timestamptz DEFAULT NULL, idempotency_key text DEFAULT NULL)
    RETURNS storage.share_info LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE FUNCTION storage.list_album_shares(owner_id uuid, album_id uuid)
    RETURNS SETOF storage.share_info LANGUAGE plpgsql AS $$BEGIN END$$;

SELECT isa.subscribe_to_events('storage', 'organization_service.organization.member_removed',
                               'storage.on_member_removed(isa.event)'::regprocedure);

-- Reads of a file go through the access check: these routes now name
-- get_readable_file (and sign_my_download's summary changed).
SELECT isa.http_route('GET', '/v1/files/{file_id}', 'storage.get_readable_file(uuid, uuid)', 'user',
    'A file the caller may read (their own or shared with them): name, content type, size, SHA-256.', subject_param => 'user_id');

SELECT isa.http_route('GET', '/v1/files/{file_id}/content', 'storage.get_readable_file(uuid, uuid)', 'user',
    'The content of a file the caller may read (Range, If-None-Match).', subject_param => 'user_id', stream => 'download');

SELECT isa.http_route('POST', '/v1/files/{file_id}/download-url', 'storage.sign_my_download(uuid, uuid, integer)', 'user',
    'A signed download URL of a file the caller may read, valid ttl_seconds (1 to 86400, default 300): file_id, expires, signature.',
    subject_param => 'owner_id');

-- Sharing (docs/services/storage.md, "Sharing"): what a user reads, renames
-- or changes is decided by storage's one check (_file_access,
-- _album_access): P0002 → 404 when the caller may not even read it, 42501 →
-- 403 when they may read it but need more.  Sharing, listing shares and
-- revoking are the owner's.
SELECT isa.http_route('PATCH', '/v1/files/{file_id}', 'storage.rename_file(uuid, uuid, text)', 'user',
    'Renames a file the caller may write (body: name).', subject_param => 'user_id');
SELECT isa.http_route('POST', '/v1/files/{file_id}/shares',
    'storage.share_file(uuid, uuid, uuid, uuid, text, timestamptz, text)', 'user',
    'Shares one of the caller''s files with a user (user_id) or an organization (org_id), read or write, optionally until expires_at (idempotency_key: a retry returns the first share).',
    subject_param => 'owner_id', status => 201);
SELECT isa.http_route('GET', '/v1/files/{file_id}/shares', 'storage.list_file_shares(uuid, uuid)', 'user',
    'The live shares of one of the caller''s files.', subject_param => 'owner_id');
SELECT isa.http_route('DELETE', '/v1/shares/{share_id}', 'storage.revoke_share(uuid, uuid)', 'user',
    'Ends one of the caller''s shares at once: true, or false if it had ended.', subject_param => 'owner_id');
SELECT isa.http_route('GET', '/v1/shared-with-me', 'storage.list_shared_with_me(uuid, integer)', 'user',
    'The files and albums shared with the caller or an organization of theirs, newest first.', subject_param => 'user_id');
SELECT isa.http_route('POST', '/v1/albums', 'storage.create_album(uuid, text, text)', 'user',
    'Creates an album of the caller (body: name, idempotency_key).', subject_param => 'owner_id', status => 201);
SELECT isa.http_route('GET', '/v1/albums', 'storage.list_albums(uuid, integer)', 'user',
    'The caller''s albums, newest first.', subject_param => 'owner_id');
SELECT isa.http_route('GET', '/v1/albums/{album_id}', 'storage.get_album(uuid, uuid)', 'user',
    'An album the caller may read.', subject_param => 'user_id');
SELECT isa.http_route('DELETE', '/v1/albums/{album_id}', 'storage.delete_album(uuid, uuid)', 'user',
    'Deletes one of the caller''s albums (not its files); its shares end.', subject_param => 'owner_id');
SELECT isa.http_route('GET', '/v1/albums/{album_id}/files', 'storage.list_album_files(uuid, uuid, integer)', 'user',
    'The files of an album the caller may read, in order.', subject_param => 'user_id');
SELECT isa.http_route('POST', '/v1/albums/{album_id}/files', 'storage.add_album_file(uuid, uuid, uuid)', 'user',
    'Adds a file the caller may read (body: file_id) at the end of an album the caller may write.', subject_param => 'user_id');
SELECT isa.http_route('DELETE', '/v1/albums/{album_id}/files/{file_id}', 'storage.remove_album_file(uuid, uuid, uuid)', 'user',
    'Takes a file out of an album the caller may write: true if it was in it.', subject_param => 'user_id');
SELECT isa.http_route('PUT', '/v1/albums/{album_id}/order', 'storage.reorder_album(uuid, uuid, uuid[])', 'user',
    'Reorders an album the caller may write (body: file_ids, first in that order); returns its files.', subject_param => 'user_id');
SELECT isa.http_route('POST', '/v1/albums/{album_id}/shares',
    'storage.share_album(uuid, uuid, uuid, uuid, text, timestamptz, text)', 'user',
    'Shares one of the caller''s albums with a user (user_id) or an organization (org_id), read or write, optionally until expires_at.',
    subject_param => 'owner_id', status => 201);
SELECT isa.http_route('GET', '/v1/albums/{album_id}/shares', 'storage.list_album_shares(uuid, uuid)', 'user',
    'The live shares of one of the caller''s albums.', subject_param => 'owner_id');
