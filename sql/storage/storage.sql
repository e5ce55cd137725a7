-- storage.sql — the storage service (schema storage, source storage_service):
-- files a user uploads, stored in the database as chunks.  An upload is begun
-- (begin_upload), fed chunk by chunk in order (put_chunk) and finished
-- (finish_upload: size and SHA-256 checked, file.uploaded published); until
-- then the file is invisible to every read.  Reads return a byte range and
-- touch only the chunks it overlaps.  Devices download through signed,
-- expiring URLs (sign_download / get_signed_file).  isa-httpd streams uploads
-- and downloads through these functions.  Schema, outbox and inbox come from
-- sql/core/services.sql.  docs/services/storage.md documents the API, the events,
-- the handler and the settings.

-- ---------------------------------------------------------------- tables
-- One row per upload, which becomes the file: status uploading (invisible,
-- chunks arriving), complete (a file), deleted (soft-deleted; chunks gone).
-- An abandoned upload is deleted outright (purge_abandoned_uploads).
CREATE TABLE storage.files (
    file_id       uuid PRIMARY KEY DEFAULT isa.uuid_v7(),   -- the upload id, then the file id
    owner_id      uuid NOT NULL,                            -- account's user (no cross-schema foreign key)
    name          text NOT NULL,                            -- 1-255 characters, no / \ or control character, not . or ..
    content_type  text NOT NULL,                            -- type/subtype[; parameters]
    declared_size bigint CHECK (declared_size >= 0),        -- the size announced by begin_upload, or NULL
    size          bigint NOT NULL DEFAULT 0 CHECK (size >= 0),  -- bytes received so far; the file's size once complete
    next_seq      integer NOT NULL DEFAULT 0 CHECK (next_seq >= 0),  -- the seq put_chunk expects next
    sha256        bytea CHECK (octet_length(sha256) = 32),  -- SHA-256 of the content, set by finish_upload
    status        text NOT NULL DEFAULT 'uploading' CHECK (status IN ('uploading', 'complete', 'deleted')),
    started_at    timestamptz NOT NULL DEFAULT now(),       -- begin_upload
    updated_at    timestamptz NOT NULL DEFAULT now(),       -- the last chunk (abandoned uploads are judged by it)
    created_at    timestamptz,                              -- finish_upload: when the file became visible
    deleted_at    timestamptz,
    CHECK ((status = 'uploading') = (created_at IS NULL)),
    CHECK ((status = 'uploading') = (sha256 IS NULL)),
    CHECK ((status = 'deleted') = (deleted_at IS NOT NULL))
);
COMMENT ON TABLE storage.files IS
    'Uploads and files: owner, name, content type, size, SHA-256; status uploading (invisible until finish_upload), complete, or deleted (soft delete, chunks removed).';
CREATE INDEX files_owner_created ON storage.files (owner_id, created_at DESC, file_id DESC) WHERE status = 'complete';
CREATE INDEX files_uploading ON storage.files (updated_at) WHERE status = 'uploading';

-- The content, in the order received.  start_offset is the chunk's position in
-- the file, so a read selects the chunks it overlaps through the unique index
-- whatever the chunk sizes were.  STORAGE EXTERNAL: out of line, never
-- compressed, so substring() fetches only the TOAST pieces of the bytes it
-- returns.
CREATE TABLE storage.chunks (
    file_id      uuid NOT NULL REFERENCES storage.files ON DELETE CASCADE,
    seq          integer NOT NULL CHECK (seq >= 0),
    start_offset bigint NOT NULL CHECK (start_offset >= 0),
    data         bytea NOT NULL CHECK (octet_length(data) BETWEEN 1 AND 1048576),
    PRIMARY KEY (file_id, seq),
    CONSTRAINT chunks_offset UNIQUE (file_id, start_offset)
);
ALTER TABLE storage.chunks ALTER COLUMN data SET STORAGE EXTERNAL;
COMMENT ON TABLE storage.chunks IS
    'File content as chunks of 1 byte to 1 MiB: seq from 0 in order, start_offset the byte position of the chunk in the file.';

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

-- ---------------------------------------------------------------- types
CREATE TYPE storage.file_info AS (
    file_id      uuid,
    owner_id     uuid,
    name         text,
    content_type text,
    size         bigint,
    sha256       text,            -- 64 lower-case hexadecimal digits
    created_at   timestamptz
);
COMMENT ON TYPE storage.file_info IS
    'A file as the storage API returns it (sha256 in hexadecimal).';

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

-- Files for sale (0.2.0): an owner offers a file for a price in tokens; an
-- order naming it (orders.create_order, items [{"file_id": …}]) buys it, and
-- once the order is fulfilled storage shares it, read, with the buyer.
CREATE TABLE storage.offers (
    file_id    uuid PRIMARY KEY REFERENCES storage.files ON DELETE CASCADE,
    seller_id  uuid NOT NULL,                                        -- the file's owner
    price      bigint NOT NULL CHECK (price > 0),                    -- tokens
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE storage.offers IS
    'Files their owner sells for a price in tokens; an order naming one shares it with the buyer once fulfilled.';

CREATE TYPE storage.offer_info AS (
    file_id    uuid,
    seller_id  uuid,
    price      bigint,
    created_at timestamptz,
    updated_at timestamptz
);
COMMENT ON TYPE storage.offer_info IS 'A file for sale, its seller and its price in tokens.';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('file.uploaded', 'storage_service', '1.0.0',
    'An upload was finished: the file is complete, its size and SHA-256 checked (storage.finish_upload).',
    '{"file_id":      {"type": "uuid",    "required": true, "description": "the file"},
      "owner_id":     {"type": "uuid",    "required": true, "description": "the user who owns it"},
      "name":         {"type": "string",  "required": true, "description": "file name"},
      "content_type": {"type": "string",  "required": true, "description": "media type, e.g. image/jpeg"},
      "size":         {"type": "integer", "required": true, "description": "size in bytes"},
      "sha256":       {"type": "string",  "required": true, "description": "SHA-256 of the content, 64 lower-case hexadecimal digits"}}');
SELECT isa.register_event_type('file.deleted', 'storage_service', '1.0.0',
    'A file was deleted (soft delete; its content is gone): by its owner (storage.delete_file) or because the owner''s account was deleted.',
    '{"file_id":    {"type": "uuid",      "required": true, "description": "the file"},
      "owner_id":   {"type": "uuid",      "required": true, "description": "the user who owned it"},
      "size":       {"type": "integer",   "required": true, "description": "its size in bytes"},
      "reason":     {"type": "string",    "required": true, "description": "owner or user_deleted"},
      "deleted_at": {"type": "timestamp", "required": true, "description": "when it was deleted"}}');
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

-- ---------------------------------------------------------------- settings
-- isa.storage_max_file_bytes and isa.storage_url_secret (docs/services/storage.md).
-- Read through this one function so that nothing else names a setting.  The
-- secret is superuser-only (GUC_SUPERUSER_ONLY), which current_setting()
-- enforces against the service's role too: it is read by a C reader
-- (extension/storage/storage_settings.c) that only its owner, that role, may
-- execute.
CREATE FUNCTION storage._url_secret_setting() RETURNS text
    AS 'MODULE_PATHNAME', 'isa_storage_url_secret_setting' LANGUAGE C STABLE;
COMMENT ON FUNCTION storage._url_secret_setting() IS
    'The key of signed download URLs (isa.storage_url_secret, '''' when unset); executable by the storage service''s role only.';
CREATE FUNCTION storage._setting(setting_name text) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN nullif(CASE setting_name WHEN 'isa.storage_url_secret' THEN storage._url_secret_setting()
                                    ELSE current_setting(setting_name, true) END, '');
COMMENT ON FUNCTION storage._setting(text) IS
    'The value of a setting, NULL when it is unset, empty or unknown.';

-- The largest file: isa.storage_max_file_bytes, a number of bytes (a unit
-- B, kB, MB or GB allowed, as an integer GUC with GUC_UNIT_BYTE shows it),
-- default 64 MiB, at most 512 MiB: finish_upload hashes the content as one
-- bytea in memory.
CREATE FUNCTION storage._max_file_bytes(v text DEFAULT storage._setting('isa.storage_max_file_bytes')) RETURNS bigint
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m text[];
    n numeric;
BEGIN
    IF v IS NULL THEN
        RETURN 67108864;
    END IF;
    m := regexp_match(btrim(v), '^([0-9]{1,12}) ?(B|kB|MB|GB)?$');
    IF m IS NOT NULL THEN
        n := m[1]::numeric * CASE m[2] WHEN 'kB' THEN 1024 WHEN 'MB' THEN 1048576 WHEN 'GB' THEN 1073741824 ELSE 1 END;
    END IF;
    IF n IS NULL OR n > 536870912 THEN
        RAISE EXCEPTION 'isa.storage_max_file_bytes must be a number of bytes from 0 to 536870912 (512 MB), not "%"', left(v, 40)
            USING ERRCODE = '55000', HINT = 'Unset it for the default of 67108864 (64 MB).';
    END IF;
    RETURN n::bigint;
END
$$;
COMMENT ON FUNCTION storage._max_file_bytes(text) IS
    'The largest file in bytes: v, by default the setting isa.storage_max_file_bytes (NULL: 67108864; at most 536870912); 55000 if it is malformed.';

-- The key of download signatures: isa.storage_url_secret, at least 32 bytes.
-- Neither message carries the secret or its length.
CREATE FUNCTION storage._url_secret(v text DEFAULT storage._setting('isa.storage_url_secret')) RETURNS bytea
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF v IS NULL OR octet_length(convert_to(v, 'UTF8')) < 32 THEN
        RAISE EXCEPTION 'signed download URLs are not configured: isa.storage_url_secret is %',
            CASE WHEN v IS NULL THEN 'not set' ELSE 'shorter than 32 bytes' END
            USING ERRCODE = '55000',
            HINT = 'A superuser sets isa.storage_url_secret to a random secret of at least 32 bytes (docs/services/storage.md).';
    END IF;
    RETURN convert_to(v, 'UTF8');
END
$$;
COMMENT ON FUNCTION storage._url_secret(text) IS
    'The HMAC key of download signatures: v, by default the setting isa.storage_url_secret, as UTF-8 bytes; 55000 when unset or shorter than 32 bytes.';

-- ---------------------------------------------------------------- internal helpers
CREATE FUNCTION storage._info(f storage.files) RETURNS storage.file_info
    LANGUAGE sql IMMUTABLE
    RETURN ROW(f.file_id, f.owner_id, f.name, f.content_type, f.size,
               pg_catalog.encode(f.sha256, 'hex'), f.created_at)::storage.file_info;
COMMENT ON FUNCTION storage._info(storage.files) IS
    'A files row as storage.file_info.';

-- A file name as given, or 22004/22023.  It is a name, not a path: isa-httpd
-- puts it in Content-Disposition and clients may save under it.
CREATE FUNCTION storage._check_name(name text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('name', name);
    IF name = '' THEN
        RAISE EXCEPTION 'file name must not be empty' USING ERRCODE = '22023';
    ELSIF length(name) > 255 THEN
        RAISE EXCEPTION 'file name is too long (% characters; at most 255)', length(name) USING ERRCODE = '22023';
    ELSIF strpos(name, '/') > 0 THEN
        RAISE EXCEPTION 'file name must not contain "/"' USING ERRCODE = '22023',
            HINT = 'A file name is a name, not a path.';
    ELSIF strpos(name, '\') > 0 THEN
        RAISE EXCEPTION 'file name must not contain "\"' USING ERRCODE = '22023',
            HINT = 'A file name is a name, not a path.';
    ELSIF name IN ('.', '..') THEN
        RAISE EXCEPTION 'file name must not be "%"', name USING ERRCODE = '22023';
    ELSIF name ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'file name must not contain control characters' USING ERRCODE = '22023';
    END IF;
    RETURN name;
END
$$;
COMMENT ON FUNCTION storage._check_name(text) IS
    'Checks a file name: 1 to 255 characters, no "/", "\" or control character, not "." or ".."; 22004 / 22023.';

-- A media type type/subtype (RFC 6838 names) with optional ;name=value
-- parameters, at most 255 characters: nothing that could break the
-- Content-Type header isa-httpd sends it in.  NULL: application/octet-stream.
CREATE FUNCTION storage._check_content_type(content_type text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF content_type IS NULL THEN
        RETURN 'application/octet-stream';
    END IF;
    IF length(content_type) > 255
       OR content_type !~ '^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}( *; *[A-Za-z0-9!#$&^_.+-]+=([A-Za-z0-9!#$&^_.+-]+|"[^"\\[:cntrl:]]*"))*$' THEN
        RAISE EXCEPTION 'invalid content type "%"', left(content_type, 100) USING ERRCODE = '22023',
            HINT = 'A content type is type/subtype, optionally with parameters, e.g. image/jpeg or text/plain; charset=utf-8.';
    END IF;
    RETURN content_type;
END
$$;
COMMENT ON FUNCTION storage._check_content_type(text) IS
    'Checks a media type (type/subtype[; name=value]..., at most 255 characters; NULL gives application/octet-stream); 22023.';

-- The signature of a download of file_id valid until expires (unix seconds):
-- base64url(HMAC-SHA256(secret, '<file_id>.<expires>')).
CREATE FUNCTION storage._signature(file_id uuid, expires bigint) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN isa.base64url_encode(isa.hmac_sha256(storage._url_secret(),
                                                convert_to(file_id::text || '.' || expires::text, 'UTF8')));
COMMENT ON FUNCTION storage._signature(uuid, bigint) IS
    'base64url(HMAC-SHA256(isa.storage_url_secret, ''<file_id>.<expires>'')): the signature of a download URL.';

-- ---------------------------------------------------------------- access: the one check
-- What a user may do with a file or an album: 'owner', 'write', 'read' or
-- NULL (nothing).  Every read and write of the API asks here, through
-- _require_file / _require_album or can_read / can_write.  Live: a share
-- counts while it is not revoked and not expired; a share with an
-- organization counts while the user and the sharer are both its members
-- (organization.is_member); organization's own shares (share_resource) count
-- through organization.can_access; authz counts through storage:read and
-- storage:write on the file's or album's id.  organization and authz load
-- after storage (ISA_SERVICES): plpgsql resolves the calls when they run, and
-- their files grant them to isa_svc_storage.
--
-- The scope (p_orgs) narrows what counts: NULL, everything above (a user
-- acting for themselves); an array, only what the user owns and what reaches
-- them through those organizations (storage's shares with them,
-- organization's shares with them), never a share with the user alone nor
-- authz.  A frame reads with its owner's id and its organization as the scope
-- (can_read_scoped: docs/services/device.md, "Playlists"), so it never shows
-- what its owner could not read.
CREATE FUNCTION storage._rank(access text) RETURNS integer
    LANGUAGE sql IMMUTABLE
    RETURN CASE access WHEN 'owner' THEN 3 WHEN 'write' THEN 2 WHEN 'read' THEN 1 ELSE 0 END;
COMMENT ON FUNCTION storage._rank(text) IS
    'The rank of an access: owner 3, write 2, read 1, none 0.';

-- The best live, unexpired share of a file or album with the user or with an
-- organization the user and the sharer belong to: 'write', 'read' or NULL.
-- plpgsql, not a SQL-standard body: organization loads after storage, and a
-- plpgsql body is resolved when it runs.
CREATE FUNCTION storage._share_access(p_user uuid, p_kind text, p_resource uuid, p_orgs uuid[] DEFAULT NULL)
RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT max(s.access)                    -- 'write' > 'read'
              FROM storage.shares s
             WHERE coalesce(s.file_id, s.album_id) = p_resource AND s.kind = p_kind
               AND s.revoked_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > now())
               AND ((s.user_id = p_user AND p_orgs IS NULL)
                    OR (s.org_id IS NOT NULL AND (p_orgs IS NULL OR s.org_id = ANY (p_orgs))
                        AND organization.is_member(s.org_id, p_user)
                        AND organization.is_member(s.org_id, s.owner_id))));
END
$$;
COMMENT ON FUNCTION storage._share_access(uuid, text, uuid, uuid[]) IS
    'The best live, unexpired share of a file or album (kind) with the user, directly or through an organization both the user and the sharer are members of: write, read or NULL. With p_orgs, only shares with those organizations count.';

-- What grants besides storage's shares reach the user: organization's shares
-- (of the organizations of p_orgs only, when given) and authz's permission
-- p_permission (never within a scope).
CREATE FUNCTION storage._granted(p_user uuid, p_kind text, p_resource uuid, p_orgs uuid[], p_permission text)
RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_orgs IS NOT NULL THEN
        RETURN p_permission = 'storage:read'
               AND EXISTS (SELECT 1 FROM unnest(p_orgs) g (org_id)
                            WHERE organization.is_shared_with(g.org_id, p_kind, p_resource)
                              AND organization.is_member(g.org_id, p_user));
    END IF;
    RETURN (p_permission = 'storage:read' AND organization.can_access(p_user, p_kind, p_resource))
           OR authz.check(p_user, p_permission, p_resource::text);
END
$$;
COMMENT ON FUNCTION storage._granted(uuid, text, uuid, uuid[], text) IS
    'Whether organization''s shares (storage:read) or authz (p_permission on the id) give the user that access to a file or album; within a scope (p_orgs), only organization''s shares with those organizations, of which the user is a member.';

CREATE FUNCTION storage._album_access(p_user uuid, p_album uuid, p_orgs uuid[] DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_owner uuid;
    v_share text;
BEGIN
    SELECT a.owner_id INTO v_owner FROM storage.albums a WHERE a.album_id = p_album;
    IF NOT FOUND OR p_user IS NULL THEN
        RETURN NULL;
    ELSIF v_owner = p_user THEN
        RETURN 'owner';
    END IF;
    v_share := storage._share_access(p_user, 'album', p_album, p_orgs);
    IF v_share = 'write' OR storage._granted(p_user, 'album', p_album, p_orgs, 'storage:write') THEN
        RETURN 'write';
    ELSIF v_share = 'read' OR storage._granted(p_user, 'album', p_album, p_orgs, 'storage:read') THEN
        RETURN 'read';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION storage._album_access(uuid, uuid, uuid[]) IS
    'What a user may do with an album: owner, write (a write share, storage:write), read (a read share, organization.can_access, storage:read) or NULL; within the scope p_orgs when given.';

-- A file is also readable through an album the user may read, when the
-- file's owner put it there: an album never passes on a file its adder could
-- only read.
CREATE FUNCTION storage._file_access(p_user uuid, p_file uuid, p_orgs uuid[] DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_owner uuid;
    v_share text;
BEGIN
    SELECT f.owner_id INTO v_owner FROM storage.files f WHERE f.file_id = p_file AND f.status = 'complete';
    IF NOT FOUND OR p_user IS NULL THEN
        RETURN NULL;
    ELSIF v_owner = p_user THEN
        RETURN 'owner';
    END IF;
    v_share := storage._share_access(p_user, 'file', p_file, p_orgs);
    IF v_share = 'write' OR storage._granted(p_user, 'file', p_file, p_orgs, 'storage:write') THEN
        RETURN 'write';
    ELSIF v_share = 'read' OR storage._granted(p_user, 'file', p_file, p_orgs, 'storage:read')
          OR EXISTS (SELECT 1 FROM storage.album_files af
                      WHERE af.file_id = p_file AND af.added_by = v_owner
                        AND storage._album_access(p_user, af.album_id, p_orgs) IS NOT NULL) THEN
        RETURN 'read';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION storage._file_access(uuid, uuid, uuid[]) IS
    'What a user may do with a finished file: owner, write (a write share, storage:write), read (a read share, organization.can_access, storage:read, or an album the user may read into which its owner put it) or NULL; within the scope p_orgs when given.';

-- The answer of a check that found `have` on a file or an album and needs
-- `p_need`: P0002 when the user may not even read it (the same answer as for
-- one that does not exist), 42501 when they may read it but need more.
CREATE FUNCTION storage._require_rank(p_kind text, p_id uuid, p_have text, p_need text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_have IS NULL THEN
        RAISE EXCEPTION '% % not found', p_kind, p_id USING ERRCODE = 'P0002';
    ELSIF storage._rank(p_have) < storage._rank(p_need) THEN
        RAISE EXCEPTION 'not allowed: this needs % access to % % (you have %)', p_need, p_kind, p_id, p_have
            USING ERRCODE = '42501';
    END IF;
END
$$;
COMMENT ON FUNCTION storage._require_rank(text, uuid, text, text) IS
    'Raises P0002 (no access: "not found") or 42501 (less than p_need) for the access p_have found on a file or an album.';

-- The file (locked when p_lock) if the user has at least p_need on it:
-- P0002 when the user may not even read it (the same answer as for a file
-- that does not exist), 42501 when they may read it but need more.
CREATE FUNCTION storage._require_file(p_user uuid, p_file uuid, p_need text, p_lock boolean DEFAULT false)
RETURNS storage.files
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f storage.files;
    have text := storage._file_access(p_user, p_file);
BEGIN
    PERFORM storage._require_rank('file', p_file, have, p_need);
    IF p_lock THEN
        SELECT * INTO f FROM storage.files x WHERE x.file_id = p_file AND x.status = 'complete' FOR UPDATE;
    ELSE
        SELECT * INTO f FROM storage.files x WHERE x.file_id = p_file;
    END IF;
    IF NOT FOUND THEN                               -- deleted meanwhile
        RAISE EXCEPTION 'file % not found', p_file USING ERRCODE = 'P0002';
    END IF;
    RETURN f;
END
$$;
COMMENT ON FUNCTION storage._require_file(uuid, uuid, text, boolean) IS
    'The finished file if the user has at least p_need (read, write, owner) on it, locked when p_lock: P0002 when the user may not read it, 42501 when they need more.';

CREATE FUNCTION storage._require_album(p_user uuid, p_album uuid, p_need text, p_lock boolean DEFAULT false)
RETURNS storage.albums
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a storage.albums;
    have text := storage._album_access(p_user, p_album);
BEGIN
    PERFORM storage._require_rank('album', p_album, have, p_need);
    IF p_lock THEN
        SELECT * INTO a FROM storage.albums x WHERE x.album_id = p_album FOR UPDATE;
    ELSE
        SELECT * INTO a FROM storage.albums x WHERE x.album_id = p_album;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'album % not found', p_album USING ERRCODE = 'P0002';
    END IF;
    RETURN a;
END
$$;
COMMENT ON FUNCTION storage._require_album(uuid, uuid, text, boolean) IS
    'The album if the user has at least p_need (read, write, owner) on it, locked when p_lock: P0002 when the user may not read it, 42501 when they need more.';

CREATE FUNCTION storage.can_read(user_id uuid, file_id uuid) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id, file_id', user_id, file_id);
    RETURN storage._file_access(user_id, file_id) IS NOT NULL;
END
$$;
COMMENT ON FUNCTION storage.can_read(uuid, uuid) IS
    'Whether the user may read the finished file now: its owner, a live share (to the user or an organization of theirs), organization''s own share (can_access), an album they may read into which its owner put it, or authz storage:read / storage:write on it. 22004.';

CREATE FUNCTION storage.can_write(user_id uuid, file_id uuid) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id, file_id', user_id, file_id);
    RETURN storage._rank(storage._file_access(user_id, file_id)) >= storage._rank('write');
END
$$;
COMMENT ON FUNCTION storage.can_write(uuid, uuid) IS
    'Whether the user may write (rename) the finished file now: its owner, a live write share, or authz storage:write on it. 22004.';

CREATE FUNCTION storage.can_read_album(user_id uuid, album_id uuid) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id, album_id', user_id, album_id);
    RETURN storage._album_access(user_id, album_id) IS NOT NULL;
END
$$;
COMMENT ON FUNCTION storage.can_read_album(uuid, uuid) IS
    'Whether the user may read the album now (see can_read; organization.can_access with kind album). 22004.';

CREATE FUNCTION storage.can_write_album(user_id uuid, album_id uuid) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id, album_id', user_id, album_id);
    RETURN storage._rank(storage._album_access(user_id, album_id)) >= storage._rank('write');
END
$$;
COMMENT ON FUNCTION storage.can_write_album(uuid, uuid) IS
    'Whether the user may change the album''s files and their order now: its owner, a live write share, or authz storage:write on it. 22004.';

CREATE FUNCTION storage.album_owner(album_id uuid) RETURNS uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT a.owner_id FROM storage.albums a WHERE a.album_id = album_owner.album_id);
END
$$;
COMMENT ON FUNCTION storage.album_owner(uuid) IS
    'The owner of an album, NULL when there is no such album (or for NULL). organization.share_resource asks it before sharing an album.';

-- Reads for another service acting with a user's rights narrowed to a scope
-- (see "access: the one check"): the device service shows on a frame what
-- its owner owns and what reaches its owner through the frame's organization.
CREATE FUNCTION storage.can_read_scoped(user_id uuid, org_ids uuid[], kind text, resource_id uuid) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id, org_ids, kind, resource_id', user_id, org_ids, kind, resource_id);
    IF kind = 'file' THEN
        RETURN storage._file_access(user_id, resource_id, org_ids) IS NOT NULL;
    ELSIF kind = 'album' THEN
        RETURN storage._album_access(user_id, resource_id, org_ids) IS NOT NULL;
    END IF;
    RAISE EXCEPTION 'kind must be file or album, not "%"', left(kind, 100) USING ERRCODE = '22023';
END
$$;
COMMENT ON FUNCTION storage.can_read_scoped(uuid, uuid[], text, uuid) IS
    'Whether the user may read the finished file or the album (kind) now through what they own or what reaches them through the organizations org_ids (storage''s shares with them, organization.share_resource; the user a member, the sharer too): never a share with the user alone, nor authz. ''{}'': what they own only. For the device service (a frame''s playlist). 22004, 22023 bad kind.';

CREATE FUNCTION storage.list_album_files_scoped(user_id uuid, org_ids uuid[], album_id uuid, row_limit integer DEFAULT 1000)
RETURNS SETOF storage.file_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id, org_ids, album_id', user_id, org_ids, album_id);
    PERFORM isa.check_page_size('row_limit', row_limit);
    IF storage._album_access(user_id, album_id, org_ids) IS NULL THEN
        RAISE EXCEPTION 'album % not found', album_id USING ERRCODE = 'P0002';
    END IF;
    RETURN QUERY
        SELECT (storage._info(f)).*
          FROM storage.album_files af JOIN storage.files f ON f.file_id = af.file_id AND f.status = 'complete'
         WHERE af.album_id = list_album_files_scoped.album_id
           AND storage._file_access(list_album_files_scoped.user_id, f.file_id, org_ids) IS NOT NULL
         ORDER BY af.position
         LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION storage.list_album_files_scoped(uuid, uuid[], uuid, integer) IS
    'As list_album_files, within a scope (can_read_scoped): the finished files of the album in its order, each one readable in the scope (at most row_limit, 1 to 1000, default 1000). P0002 the album is not readable in the scope; 22004, 22023.';

-- ---------------------------------------------------------------- API: uploads
CREATE FUNCTION storage.begin_upload(owner_id uuid, name text,
                                     content_type text DEFAULT 'application/octet-stream',
                                     size bigint DEFAULT NULL) RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name text := storage._check_name(begin_upload.name);
    v_type text := storage._check_content_type(begin_upload.content_type);
    v_max  bigint := storage._max_file_bytes();
    v_id   uuid;
BEGIN
    PERFORM isa.not_null('owner_id', owner_id);
    IF size < 0 THEN
        RAISE EXCEPTION 'size must not be negative, not %', size USING ERRCODE = '22023';
    END IF;
    IF size > v_max THEN
        RAISE EXCEPTION 'file too large: % bytes; at most % bytes', size, v_max USING ERRCODE = '54000',
            HINT = 'The limit is the setting isa.storage_max_file_bytes.';
    END IF;
    PERFORM account.require_user(owner_id);
    INSERT INTO storage.files AS f (owner_id, name, content_type, declared_size)
    VALUES (begin_upload.owner_id, v_name, v_type, begin_upload.size)
    RETURNING f.file_id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION storage.begin_upload(uuid, text, text, bigint) IS
    'Begins an upload for a user and returns its id (the future file_id); the file is invisible until finish_upload. size: the announced size in bytes, or NULL. 22004, 22023 bad name or content type, P0002 unknown user, 54000 file too large.';

CREATE FUNCTION storage.put_chunk(upload_id uuid, seq integer, data bytea) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f     storage.files;
    n     bigint := octet_length(data);
    v_max bigint := storage._max_file_bytes();
BEGIN
    PERFORM isa.not_null('upload_id, seq, data', upload_id, seq, data);
    IF n = 0 THEN
        RAISE EXCEPTION 'a chunk must not be empty' USING ERRCODE = '22023';
    ELSIF n > 1048576 THEN
        RAISE EXCEPTION 'chunk too large: % bytes; at most 1048576 (1 MiB)', n USING ERRCODE = '22023';
    END IF;
    -- The row lock orders the chunks of one upload.
    SELECT * INTO f FROM storage.files x WHERE x.file_id = put_chunk.upload_id AND x.status <> 'deleted' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'upload % not found', upload_id USING ERRCODE = 'P0002';
    ELSIF f.status <> 'uploading' THEN
        RAISE EXCEPTION 'upload % is finished: it takes no more chunks', upload_id USING ERRCODE = '55000';
    ELSIF seq <> f.next_seq THEN
        RAISE EXCEPTION 'chunk % is out of order: upload % expects chunk %', seq, upload_id, f.next_seq
            USING ERRCODE = '22023', HINT = 'Chunks are numbered from 0 and sent in order, each once.';
    ELSIF f.size + n > f.declared_size THEN
        RAISE EXCEPTION 'file too large: more than the % bytes declared', f.declared_size USING ERRCODE = '54000';
    ELSIF f.size + n > v_max THEN
        RAISE EXCEPTION 'file too large: more than % bytes', v_max USING ERRCODE = '54000',
            HINT = 'The limit is the setting isa.storage_max_file_bytes.';
    END IF;
    INSERT INTO storage.chunks (file_id, seq, start_offset, data) VALUES (f.file_id, put_chunk.seq, f.size, put_chunk.data);
    UPDATE storage.files x SET size = f.size + n, next_seq = f.next_seq + 1, updated_at = now()
     WHERE x.file_id = f.file_id;
END
$$;
COMMENT ON FUNCTION storage.put_chunk(uuid, integer, bytea) IS
    'Appends a chunk (1 byte to 1 MiB) to an upload; seq counts from 0 and must be the next one. 22004, 22023 empty, too large or out-of-order chunk, P0002 unknown upload, 55000 upload finished, 54000 more than the declared size or isa.storage_max_file_bytes.';

CREATE FUNCTION storage.finish_upload(upload_id uuid, sha256 text DEFAULT NULL) RETURNS storage.file_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f        storage.files;
    expected bytea;
    digest   bytea;
    event_id uuid;
BEGIN
    PERFORM isa.not_null('upload_id', upload_id);
    IF finish_upload.sha256 IS NOT NULL THEN
        IF finish_upload.sha256 !~ '^[0-9A-Fa-f]{64}$' THEN
            RAISE EXCEPTION 'sha256 must be 64 hexadecimal digits' USING ERRCODE = '22023';
        END IF;
        expected := decode(finish_upload.sha256, 'hex');
    END IF;
    SELECT * INTO f FROM storage.files x WHERE x.file_id = finish_upload.upload_id AND x.status <> 'deleted' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'upload % not found', upload_id USING ERRCODE = 'P0002';
    END IF;
    IF f.status = 'complete' THEN
        -- A retried finish: the file as it was made, nothing published again.
        IF expected IS NOT NULL AND expected <> f.sha256 THEN
            RAISE EXCEPTION 'content does not match its sha256' USING ERRCODE = '22023';
        END IF;
        RETURN storage._info(f);
    END IF;
    IF f.size <> f.declared_size THEN
        RAISE EXCEPTION 'upload incomplete: % of the % bytes declared were received', f.size, f.declared_size
            USING ERRCODE = '22023';
    END IF;
    -- At most isa.storage_max_file_bytes (<= 512 MiB), which put_chunk enforced.
    SELECT pg_catalog.sha256(coalesce(string_agg(c.data, '' ORDER BY c.seq), '')) INTO digest
      FROM storage.chunks c WHERE c.file_id = f.file_id;
    IF expected IS NOT NULL AND expected <> digest THEN
        RAISE EXCEPTION 'content does not match its sha256' USING ERRCODE = '22023',
            DETAIL = format('The %s bytes received hash to %s.', f.size, encode(digest, 'hex'));
    END IF;
    UPDATE storage.files x SET status = 'complete', sha256 = digest, created_at = now(), updated_at = now()
     WHERE x.file_id = f.file_id
    RETURNING * INTO f;
    event_id := isa.publish_event('file.uploaded', 'storage_service',
        jsonb_build_object('file_id', f.file_id, 'owner_id', f.owner_id, 'name', f.name,
                           'content_type', f.content_type, 'size', f.size, 'sha256', encode(f.sha256, 'hex')));
    RETURN storage._info(f);
END
$$;
COMMENT ON FUNCTION storage.finish_upload(uuid, text) IS
    'Finishes an upload: checks the declared size and, when given, the SHA-256 (hex) of the content, makes the file visible, publishes file.uploaded and returns the file. Finishing a finished upload again returns it. 22004, 22023 size or sha256 mismatch, P0002 unknown upload.';

-- What isa-httpd calls when an upload ends without finish_upload (the client
-- went away, put_chunk refused a chunk, the session ended): its row and chunks
-- go at once rather than at the purge.  Only an upload in progress: a
-- finished file is never removed here.
CREATE FUNCTION storage.abort_upload(upload_id uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('upload_id', upload_id);
    DELETE FROM storage.files f WHERE f.file_id = abort_upload.upload_id AND f.status = 'uploading';  -- chunks: cascade
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION storage.abort_upload(uuid) IS
    'Removes an upload still in progress, with its chunks (no event: it was never announced); true when there was one. A finished file is left alone. isa-httpd calls it when an upload ends unfinished.';

CREATE FUNCTION storage.purge_abandoned_uploads(older_than interval DEFAULT '1 hour') RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM isa.not_null('older_than', older_than);
    IF older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must not be negative, not %', older_than USING ERRCODE = '22023';
    END IF;
    DELETE FROM storage.files f WHERE f.status = 'uploading' AND f.updated_at < now() - older_than;  -- chunks: cascade
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION storage.purge_abandoned_uploads(interval) IS
    'Deletes the uploads that received nothing for older_than (default 1 hour) and were never finished, with their chunks; returns how many. For isa_admin; pg_cron runs it every 10 minutes (isa-storage-purge-uploads).';

INSERT INTO isa.scheduled_jobs (jobname, schedule, command, description)
VALUES ('isa-storage-purge-uploads', '*/10 * * * *', 'SELECT storage.purge_abandoned_uploads()',
        'Every 10 minutes: delete uploads idle for over an hour and never finished, with their chunks.')
ON CONFLICT (jobname) DO NOTHING;

-- ---------------------------------------------------------------- API: reads
CREATE FUNCTION storage.get_file(file_id uuid) RETURNS storage.file_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f storage.files;
BEGIN
    PERFORM isa.not_null('file_id', file_id);
    SELECT * INTO f FROM storage.files x WHERE x.file_id = get_file.file_id AND x.status = 'complete';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'file % not found', file_id USING ERRCODE = 'P0002';
    END IF;
    RETURN storage._info(f);
END
$$;
COMMENT ON FUNCTION storage.get_file(uuid) IS
    'A file by id. P0002 unknown, deleted or not finished.';

CREATE FUNCTION storage.get_my_file(owner_id uuid, file_id uuid) RETURNS storage.file_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f storage.files;
BEGIN
    PERFORM isa.not_null('owner_id, file_id', owner_id, file_id);
    SELECT * INTO f FROM storage.files x WHERE x.file_id = get_my_file.file_id;
    IF storage._file_access(owner_id, file_id) IS DISTINCT FROM 'owner' THEN
        -- The same answer whether the file does not exist or is someone else's.
        RAISE EXCEPTION 'file % not found', file_id USING ERRCODE = 'P0002';
    END IF;
    RETURN storage._info(f);
END
$$;
COMMENT ON FUNCTION storage.get_my_file(uuid, uuid) IS
    'A file of owner_id. P0002 (the same error) when it does not exist, is not finished, is deleted or belongs to someone else.';

CREATE FUNCTION storage.read_file(file_id uuid, "offset" bigint, length integer) RETURNS bytea
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_off   bigint := read_file."offset";
    v_size  bigint;
    v_end   bigint;
    v_first bigint;
    result  bytea;
BEGIN
    PERFORM isa.not_null('file_id, offset, length', file_id, v_off, read_file.length);
    IF v_off < 0 THEN
        RAISE EXCEPTION 'offset must not be negative, not %', v_off USING ERRCODE = '22023';
    ELSIF read_file.length NOT BETWEEN 0 AND 4194304 THEN
        RAISE EXCEPTION 'length must be from 0 to 4194304 (4 MiB), not %', read_file.length USING ERRCODE = '22023';
    END IF;
    SELECT f.size INTO v_size FROM storage.files f WHERE f.file_id = read_file.file_id AND f.status = 'complete';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'file % not found', file_id USING ERRCODE = 'P0002';
    END IF;
    IF v_off >= v_size OR read_file.length = 0 THEN
        RETURN '\x'::bytea;
    END IF;
    v_end := least(v_off + read_file.length, v_size);
    -- The chunk holding the first byte, then every chunk starting before the end.
    SELECT max(c.start_offset) INTO v_first
      FROM storage.chunks c WHERE c.file_id = read_file.file_id AND c.start_offset <= v_off;
    SELECT string_agg(substring(c.data FROM (greatest(v_off - c.start_offset, 0) + 1)::integer
                                       FOR (least(c.start_offset + octet_length(c.data), v_end)
                                            - greatest(c.start_offset, v_off))::integer),
                      '' ORDER BY c.start_offset)
      INTO result
      FROM storage.chunks c
     WHERE c.file_id = read_file.file_id AND c.start_offset >= v_first AND c.start_offset < v_end;
    RETURN result;
END
$$;
COMMENT ON FUNCTION storage.read_file(uuid, bigint, integer) IS
    'The bytes [offset, offset + length) of a finished file, fewer at its end, empty from its end on; reads only the chunks they lie in. 22004, 22023 negative offset or length outside 0 to 4194304, P0002 unknown, deleted or unfinished file.';

CREATE FUNCTION storage.list_files(owner_id uuid, row_limit integer DEFAULT 100) RETURNS SETOF storage.file_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('owner_id', owner_id);
    PERFORM isa.check_page_size('row_limit', row_limit);
    RETURN QUERY
        SELECT f.file_id, f.owner_id, f.name, f.content_type, f.size, encode(f.sha256, 'hex'), f.created_at
          FROM storage.files f
         WHERE f.owner_id = list_files.owner_id AND f.status = 'complete'
         ORDER BY f.created_at DESC, f.file_id DESC
         LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION storage.list_files(uuid, integer) IS
    'A user''s finished files, newest first, at most row_limit (1 to 1000, default 100). 22004, 22023.';

-- ---------------------------------------------------------------- API: deletion
-- Soft-deletes complete files (the row stays, the chunks go) and publishes
-- file.deleted for each; returns how many.  Callers lock the rows.
CREATE FUNCTION storage._delete(p_file_ids uuid[], p_reason text) RETURNS bigint
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH gone AS (
        UPDATE storage.files f SET status = 'deleted', deleted_at = now(), updated_at = now()
         WHERE f.file_id = ANY (p_file_ids) AND f.status = 'complete'
        RETURNING f.file_id, f.owner_id, f.size, f.deleted_at),
    dropped AS (
        DELETE FROM storage.chunks c WHERE c.file_id IN (SELECT g.file_id FROM gone g))
    SELECT count(isa.publish_event('file.deleted', 'storage_service',
                     jsonb_build_object('file_id', g.file_id, 'owner_id', g.owner_id, 'size', g.size,
                                        'reason', p_reason, 'deleted_at', isa.iso_time(g.deleted_at))))
      FROM gone g;
END;
COMMENT ON FUNCTION storage._delete(uuid[], text) IS
    'Soft-deletes the complete files among p_file_ids: status deleted, chunks removed, file.deleted (reason p_reason) published for each; returns how many.';

CREATE FUNCTION storage.delete_file(owner_id uuid, file_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status text;
BEGIN
    PERFORM isa.not_null('owner_id, file_id', owner_id, file_id);
    SELECT x.status INTO v_status FROM storage.files x
     WHERE x.file_id = delete_file.file_id AND x.owner_id = delete_file.owner_id
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'file % not found', file_id USING ERRCODE = 'P0002';
    END IF;
    -- An upload in progress is aborted: it goes with its chunks, and no event
    -- (it was never announced).
    IF v_status = 'uploading' THEN
        DELETE FROM storage.files x WHERE x.file_id = delete_file.file_id;   -- chunks: cascade
        RETURN;
    END IF;
    -- Deleting a deleted file again: done already, no second event.
    PERFORM storage._delete(ARRAY[delete_file.file_id], 'owner');
    PERFORM storage._end_shares(ARRAY(SELECT s.share_id FROM storage.shares s
                                       WHERE s.file_id = delete_file.file_id AND s.revoked_at IS NULL
                                       ORDER BY s.share_id), 'deleted');
END
$$;
COMMENT ON FUNCTION storage.delete_file(uuid, uuid) IS
    'Deletes a file of owner_id (soft delete: its content goes) and publishes file.deleted; its live shares end (file.unshared, reason deleted); deleting it again does nothing. An upload of owner_id still in progress is aborted (removed with its chunks, no event). P0002 (the same error) when it does not exist or belongs to someone else.';

-- ---------------------------------------------------------------- API: signed downloads
CREATE FUNCTION storage.sign_download(file_id uuid, ttl_seconds integer DEFAULT 300) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_expires bigint;
BEGIN
    PERFORM isa.not_null('file_id, ttl_seconds', file_id, ttl_seconds);
    IF ttl_seconds NOT BETWEEN 1 AND 86400 THEN
        RAISE EXCEPTION 'ttl_seconds must be from 1 to 86400 (a day), not %', ttl_seconds USING ERRCODE = '22023';
    END IF;
    PERFORM storage.get_file(file_id);
    v_expires := floor(extract(epoch FROM now()))::bigint + ttl_seconds;
    RETURN jsonb_build_object('file_id', file_id, 'expires', v_expires,
                              'signature', storage._signature(file_id, v_expires));
END
$$;
COMMENT ON FUNCTION storage.sign_download(uuid, integer) IS
    'A signed download of a finished file for ttl_seconds (1 to 86400, default 300): {"file_id", "expires" (unix seconds), "signature" (base64url HMAC-SHA256 of "<file_id>.<expires>")}. 22004, 22023, P0002 unknown file, 55000 isa.storage_url_secret not set.';

CREATE FUNCTION storage.sign_my_download(owner_id uuid, file_id uuid, ttl_seconds integer DEFAULT 300) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('owner_id, file_id', owner_id, file_id);
    PERFORM storage._require_file(owner_id, file_id, 'read');   -- owner_id: the caller (its 0.1.0 name)
    RETURN storage.sign_download(file_id, ttl_seconds);
END
$$;
COMMENT ON FUNCTION storage.sign_my_download(uuid, uuid, integer) IS
    'sign_download for a file the user owner_id may read (can_read: their own or shared with them). P0002 (the same error) when it does not exist or the user may not read it; otherwise as sign_download.';

CREATE FUNCTION storage.get_signed_file(file_id uuid, expires bigint, signature text) RETURNS storage.file_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    valid boolean;
BEGIN
    PERFORM isa.not_null('file_id, expires, signature', file_id, expires, signature);
    -- Compared in constant time; a bad and an expired signature get one answer.
    valid := isa.secure_equals(convert_to(storage._signature(file_id, expires), 'UTF8'),
                               convert_to(signature, 'UTF8'));
    IF NOT valid OR extract(epoch FROM now()) > expires THEN
        RAISE EXCEPTION 'invalid or expired download signature' USING ERRCODE = '42501';
    END IF;
    RETURN storage.get_file(file_id);
END
$$;
COMMENT ON FUNCTION storage.get_signed_file(uuid, bigint, text) IS
    'The file of a signed download URL (sign_download) when its signature is valid and it has not expired. 22004, 42501 invalid or expired signature, P0002 file deleted since, 55000 isa.storage_url_secret not set.';

-- ---------------------------------------------------------------- API: files shared with the caller
CREATE FUNCTION storage.get_readable_file(user_id uuid, file_id uuid) RETURNS storage.file_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id, file_id', user_id, file_id);
    RETURN storage._info(storage._require_file(user_id, file_id, 'read'));
END
$$;
COMMENT ON FUNCTION storage.get_readable_file(uuid, uuid) IS
    'A finished file the user may read (can_read: their own, shared with them or an organization of theirs, in an album they may read, or through authz). P0002 (the same error) when it does not exist or the user may not read it.';

CREATE FUNCTION storage.rename_file(user_id uuid, file_id uuid, name text) RETURNS storage.file_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name text := storage._check_name(rename_file.name);
    f      storage.files;
BEGIN
    PERFORM isa.not_null('user_id, file_id', user_id, file_id);
    f := storage._require_file(user_id, file_id, 'write', true);
    UPDATE storage.files x SET name = v_name, updated_at = now() WHERE x.file_id = f.file_id RETURNING * INTO f;
    RETURN storage._info(f);
END
$$;
COMMENT ON FUNCTION storage.rename_file(uuid, uuid, text) IS
    'Renames a finished file the user may write (its owner or a write share): returns the file. 22004, 22023 bad name, P0002 not found or not readable, 42501 read access only.';

-- ---------------------------------------------------------------- API: albums
CREATE FUNCTION storage._album_info(a storage.albums) RETURNS storage.album_info
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN ROW(a.album_id, a.owner_id, a.name,
               (SELECT count(*)::integer FROM storage.album_files af JOIN storage.files f USING (file_id)
                 WHERE af.album_id = a.album_id AND f.status = 'complete'),
               a.created_at, a.updated_at)::storage.album_info;
COMMENT ON FUNCTION storage._album_info(storage.albums) IS
    'An albums row as storage.album_info (file_count: its finished files).';

CREATE FUNCTION storage.create_album(owner_id uuid, name text, idempotency_key text DEFAULT NULL) RETURNS storage.album_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name text := storage._check_name(create_album.name);
    a      storage.albums;
BEGIN
    PERFORM isa.not_null('owner_id', owner_id);
    PERFORM isa.check_idempotency_key(idempotency_key);
    PERFORM account.require_user(owner_id);
    IF idempotency_key IS NOT NULL THEN
        -- The second of two calls with one key waits here for the first.
        PERFORM pg_advisory_xact_lock(hashtextextended('storage.create_album:' || owner_id::text || ':' || idempotency_key, 0));
        SELECT * INTO a FROM storage.albums x
         WHERE x.owner_id = create_album.owner_id AND x.idempotency_key = create_album.idempotency_key;
        IF FOUND THEN
            IF a.name <> v_name THEN
                RAISE EXCEPTION 'idempotency key "%" was already used to create another album', idempotency_key
                    USING ERRCODE = '23505', HINT = 'Use a new idempotency key for a new album.';
            END IF;
            RETURN storage._album_info(a);
        END IF;
    END IF;
    INSERT INTO storage.albums AS x (owner_id, name, idempotency_key)
    VALUES (create_album.owner_id, v_name, create_album.idempotency_key)
    RETURNING * INTO a;
    RETURN storage._album_info(a);
END
$$;
COMMENT ON FUNCTION storage.create_album(uuid, text, text) IS
    'Creates an empty album of owner_id (name as a file name). The same idempotency key with the same name returns the first album; with another name it is 23505. 22004, 22023 bad name or key, P0002 unknown user.';

CREATE FUNCTION storage.get_album(user_id uuid, album_id uuid) RETURNS storage.album_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id, album_id', user_id, album_id);
    RETURN storage._album_info(storage._require_album(user_id, album_id, 'read'));
END
$$;
COMMENT ON FUNCTION storage.get_album(uuid, uuid) IS
    'An album the user may read. P0002 (the same error) when it does not exist or the user may not read it.';

CREATE FUNCTION storage.list_albums(owner_id uuid, row_limit integer DEFAULT 100) RETURNS SETOF storage.album_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('owner_id', owner_id);
    PERFORM isa.check_page_size('row_limit', row_limit);
    RETURN QUERY
        SELECT (storage._album_info(a)).*
          FROM storage.albums a
         WHERE a.owner_id = list_albums.owner_id
         ORDER BY a.created_at DESC, a.album_id DESC
         LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION storage.list_albums(uuid, integer) IS
    'The user''s own albums, newest first, at most row_limit (1 to 1000, default 100). 22004, 22023.';

CREATE FUNCTION storage.list_album_files(user_id uuid, album_id uuid, row_limit integer DEFAULT 1000)
RETURNS SETOF storage.file_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a storage.albums;
BEGIN
    PERFORM isa.not_null('user_id, album_id', user_id, album_id);
    PERFORM isa.check_page_size('row_limit', row_limit);
    a := storage._require_album(user_id, album_id, 'read');
    RETURN QUERY
        SELECT (storage._info(f)).*
          FROM storage.album_files af JOIN storage.files f ON f.file_id = af.file_id AND f.status = 'complete'
         WHERE af.album_id = a.album_id AND storage._file_access(list_album_files.user_id, f.file_id) IS NOT NULL
         ORDER BY af.position
         LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION storage.list_album_files(uuid, uuid, integer) IS
    'The finished files of an album the user may read, in the album''s order, each one the user may read (at most row_limit, 1 to 1000, default 1000). P0002 not found or not readable.';

CREATE FUNCTION storage.add_album_file(user_id uuid, album_id uuid, file_id uuid) RETURNS storage.album_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a storage.albums;
BEGIN
    PERFORM isa.not_null('user_id, album_id, file_id', user_id, album_id, file_id);
    a := storage._require_album(user_id, album_id, 'write', true);   -- the lock orders the positions
    PERFORM storage._require_file(user_id, file_id, 'read');
    INSERT INTO storage.album_files AS x (album_id, file_id, position, added_by)
    SELECT a.album_id, add_album_file.file_id,
           coalesce((SELECT max(y.position) + 1 FROM storage.album_files y WHERE y.album_id = a.album_id), 0),
           add_album_file.user_id
    ON CONFLICT ON CONSTRAINT album_files_pkey DO NOTHING;
    IF FOUND THEN
        UPDATE storage.albums x SET updated_at = now() WHERE x.album_id = a.album_id RETURNING * INTO a;
    END IF;
    RETURN storage._album_info(a);
END
$$;
COMMENT ON FUNCTION storage.add_album_file(uuid, uuid, uuid) IS
    'Adds a file the user may read at the end of an album the user may write; adding it again does nothing. Returns the album. P0002 album or file not found or not readable, 42501 read access to the album only.';

CREATE FUNCTION storage.remove_album_file(user_id uuid, album_id uuid, file_id uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a storage.albums;
BEGIN
    PERFORM isa.not_null('user_id, album_id, file_id', user_id, album_id, file_id);
    a := storage._require_album(user_id, album_id, 'write', true);
    DELETE FROM storage.album_files x WHERE x.album_id = a.album_id AND x.file_id = remove_album_file.file_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE storage.albums x SET updated_at = now() WHERE x.album_id = a.album_id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION storage.remove_album_file(uuid, uuid, uuid) IS
    'Takes a file out of an album the user may write (the file stays): true if it was in it. P0002 album not found or not readable, 42501 read access only.';

CREATE FUNCTION storage.reorder_album(user_id uuid, album_id uuid, file_ids uuid[]) RETURNS SETOF storage.file_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a     storage.albums;
    stray uuid;
BEGIN
    PERFORM isa.not_null('user_id, album_id, file_ids', user_id, album_id, file_ids);
    a := storage._require_album(user_id, album_id, 'write', true);
    IF cardinality(file_ids) <> (SELECT count(DISTINCT g) FROM unnest(file_ids) g) THEN
        RAISE EXCEPTION 'file_ids must not name a file twice (or hold NULL)' USING ERRCODE = '22023';
    END IF;
    SELECT g INTO stray FROM unnest(file_ids) g
     WHERE NOT EXISTS (SELECT 1 FROM storage.album_files x WHERE x.album_id = a.album_id AND x.file_id = g) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'file % is not in album %', stray, a.album_id USING ERRCODE = '22023',
            HINT = 'Add it first (add_album_file).';
    END IF;
    -- The files named come first, in the order given; the others follow in
    -- their order (album_files_position is checked at commit).
    UPDATE storage.album_files x SET position = n.pos
      FROM (SELECT g.file_id, (g.ord - 1)::integer AS pos
              FROM unnest(file_ids) WITH ORDINALITY g (file_id, ord)
            UNION ALL
            SELECT y.file_id, (cardinality(file_ids) + row_number() OVER (ORDER BY y.position) - 1)::integer
              FROM storage.album_files y
             WHERE y.album_id = a.album_id AND y.file_id <> ALL (file_ids)) n
     WHERE x.album_id = a.album_id AND x.file_id = n.file_id;
    UPDATE storage.albums x SET updated_at = now() WHERE x.album_id = a.album_id;
    RETURN QUERY SELECT * FROM storage.list_album_files(user_id, a.album_id);
END
$$;
COMMENT ON FUNCTION storage.reorder_album(uuid, uuid, uuid[]) IS
    'Reorders an album the user may write: the files named come first in that order, the others follow in theirs. Returns the album''s files as list_album_files. 22004, 22023 a file twice or not in the album, P0002 not found or not readable, 42501 read access only.';

-- Ends the live shares among p_share_ids with reason p_reason, publishing
-- file.unshared for each; returns how many.
CREATE FUNCTION storage._end_shares(p_share_ids uuid[], p_reason text) RETURNS bigint
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH gone AS (
        UPDATE storage.shares s SET revoked_at = now(), revoke_reason = p_reason, updated_at = now()
         WHERE s.share_id = ANY (p_share_ids) AND s.revoked_at IS NULL
        RETURNING s.share_id, s.kind, coalesce(s.file_id, s.album_id) AS resource_id, s.owner_id, s.user_id, s.org_id)
    SELECT count(isa.publish_event('file.unshared', 'storage_service',
                     jsonb_build_object('share_id', g.share_id, 'kind', g.kind, 'resource_id', g.resource_id,
                                        'owner_id', g.owner_id, 'user_id', g.user_id, 'org_id', g.org_id,
                                        'reason', p_reason)))
      FROM (SELECT * FROM gone ORDER BY share_id) g;
END;
COMMENT ON FUNCTION storage._end_shares(uuid[], text) IS
    'Revokes the live shares among p_share_ids (reason revoked, member_removed or deleted) and publishes file.unshared for each; returns how many.';

CREATE FUNCTION storage.delete_album(owner_id uuid, album_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a storage.albums;
BEGIN
    PERFORM isa.not_null('owner_id, album_id', owner_id, album_id);
    a := storage._require_album(owner_id, album_id, 'owner', true);
    PERFORM storage._end_shares(ARRAY(SELECT s.share_id FROM storage.shares s WHERE s.album_id = a.album_id), 'deleted');
    DELETE FROM storage.albums x WHERE x.album_id = a.album_id;     -- its files' places and its shares: cascade
END
$$;
COMMENT ON FUNCTION storage.delete_album(uuid, uuid) IS
    'Deletes an album of owner_id (its files stay): its live shares end (file.unshared, reason deleted). P0002 not found or not readable, 42501 not its owner.';

-- ---------------------------------------------------------------- API: sharing
CREATE FUNCTION storage._share_info(s storage.shares) RETURNS storage.share_info
    LANGUAGE sql IMMUTABLE
    RETURN ROW(s.share_id, s.kind, coalesce(s.file_id, s.album_id), s.owner_id, s.user_id, s.org_id,
               s.access, s.expires_at, s.created_at)::storage.share_info;
COMMENT ON FUNCTION storage._share_info(storage.shares) IS
    'A shares row as storage.share_info.';

-- The owner shares a file or an album (locked by the caller) with one user
-- or one organization.  A live share with the same grantee is changed (new
-- access, new expiry) rather than doubled; file.shared is published when
-- something changed.
CREATE FUNCTION storage._share(p_kind text, p_resource uuid, p_owner uuid, p_user uuid, p_org uuid,
                               p_access text, p_expires timestamptz, p_key text) RETURNS storage.share_info
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s        storage.shares;
    r        text;
    event_id uuid;
BEGIN
    PERFORM isa.not_null('access', p_access);
    IF p_user IS NULL AND p_org IS NULL THEN
        RAISE EXCEPTION 'user_id or org_id must not be null' USING ERRCODE = '22004',
            HINT = 'A share is with one user (user_id) or with the members of one organization (org_id).';
    ELSIF p_user IS NOT NULL AND p_org IS NOT NULL THEN
        RAISE EXCEPTION 'give user_id or org_id, not both' USING ERRCODE = '22023';
    ELSIF p_access NOT IN ('read', 'write') THEN
        RAISE EXCEPTION 'access must be read or write, not "%"', left(p_access, 100) USING ERRCODE = '22023';
    ELSIF p_expires <= now() THEN
        RAISE EXCEPTION 'expires_at must be in the future, not %', p_expires USING ERRCODE = '22023';
    ELSIF p_user = p_owner THEN
        RAISE EXCEPTION 'a % is not shared with its owner', p_kind USING ERRCODE = '22023';
    END IF;
    PERFORM isa.check_idempotency_key(p_key);
    IF p_key IS NOT NULL THEN
        SELECT * INTO s FROM storage.shares x WHERE x.owner_id = p_owner AND x.idempotency_key = p_key;
        IF FOUND THEN
            IF (s.kind, coalesce(s.file_id, s.album_id), s.access) IS DISTINCT FROM (p_kind, p_resource, p_access)
               OR s.user_id IS DISTINCT FROM p_user OR s.org_id IS DISTINCT FROM p_org
               OR s.expires_at IS DISTINCT FROM p_expires THEN
                RAISE EXCEPTION 'idempotency key "%" was already used for another share', p_key USING ERRCODE = '23505',
                    HINT = 'Use a new idempotency key for a new share.';
            END IF;
            RETURN storage._share_info(s);          -- a retry
        END IF;
    END IF;
    IF p_user IS NOT NULL THEN
        PERFORM account.require_user(p_user);       -- P0002 unknown or deleted user
    ELSE
        IF NOT organization.organization_exists(p_org) THEN
            RAISE EXCEPTION 'organization % not found', p_org USING ERRCODE = 'P0002';
        END IF;
        r := organization.member_role(p_org, p_owner);
        IF r IS NULL OR r = 'guest' THEN
            RAISE EXCEPTION 'not allowed: you share with an organization of which you are a member (not a guest)'
                USING ERRCODE = '42501';
        END IF;
    END IF;
    SELECT * INTO s FROM storage.shares x
     WHERE coalesce(x.file_id, x.album_id) = p_resource AND coalesce(x.user_id, x.org_id) = coalesce(p_user, p_org)
       AND x.revoked_at IS NULL;
    IF FOUND THEN
        IF s.access = p_access AND s.expires_at IS NOT DISTINCT FROM p_expires THEN
            RETURN storage._share_info(s);          -- shared so already: nothing changes, no event
        END IF;
        UPDATE storage.shares x SET access = p_access, expires_at = p_expires, updated_at = now()
         WHERE x.share_id = s.share_id RETURNING * INTO s;
    ELSE
        INSERT INTO storage.shares AS x (kind, file_id, album_id, owner_id, user_id, org_id, access, expires_at, idempotency_key)
        VALUES (p_kind, CASE p_kind WHEN 'file' THEN p_resource END, CASE p_kind WHEN 'album' THEN p_resource END,
                p_owner, p_user, p_org, p_access, p_expires, p_key)
        RETURNING * INTO s;
    END IF;
    event_id := isa.publish_event('file.shared', 'storage_service',
        jsonb_build_object('share_id', s.share_id, 'kind', s.kind, 'resource_id', p_resource, 'owner_id', s.owner_id,
                           'user_id', s.user_id, 'org_id', s.org_id, 'access', s.access,
                           'expires_at', isa.iso_time(s.expires_at)));
    RETURN storage._share_info(s);
END
$$;
COMMENT ON FUNCTION storage._share(text, uuid, uuid, uuid, uuid, text, timestamptz, text) IS
    'Shares a file or an album of p_owner with a user or an organization (exactly one), or changes the live share with that grantee; publishes file.shared when something changed. An idempotency key returns the first share for the same arguments, 23505 for others.';

CREATE FUNCTION storage.share_file(owner_id uuid, file_id uuid, user_id uuid DEFAULT NULL, org_id uuid DEFAULT NULL,
                                   access text DEFAULT 'read', expires_at timestamptz DEFAULT NULL,
                                   idempotency_key text DEFAULT NULL) RETURNS storage.share_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f storage.files;
BEGIN
    PERFORM isa.not_null('owner_id, file_id', owner_id, file_id);
    f := storage._require_file(owner_id, file_id, 'owner', true);
    RETURN storage._share('file', f.file_id, f.owner_id, user_id, org_id, access, expires_at, idempotency_key);
END
$$;
COMMENT ON FUNCTION storage.share_file(uuid, uuid, uuid, uuid, text, timestamptz, text) IS
    'The owner shares a finished file with a user (user_id) or the members of an organization they belong to (org_id, not as a guest), read (default) or write, until expires_at (NULL: until revoked); sharing again with the same grantee changes the share. Publishes file.shared (kind file). 22004, 22023 both grantees, bad access, past expiry, oneself, P0002 file, user or organization not found, 42501 not the owner or not a member, 23505 idempotency key reused.';

CREATE FUNCTION storage.share_album(owner_id uuid, album_id uuid, user_id uuid DEFAULT NULL, org_id uuid DEFAULT NULL,
                                    access text DEFAULT 'read', expires_at timestamptz DEFAULT NULL,
                                    idempotency_key text DEFAULT NULL) RETURNS storage.share_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a storage.albums;
BEGIN
    PERFORM isa.not_null('owner_id, album_id', owner_id, album_id);
    a := storage._require_album(owner_id, album_id, 'owner', true);
    RETURN storage._share('album', a.album_id, a.owner_id, user_id, org_id, access, expires_at, idempotency_key);
END
$$;
COMMENT ON FUNCTION storage.share_album(uuid, uuid, uuid, uuid, text, timestamptz, text) IS
    'As share_file, for an album: read lets the grantee see the album and the files its owner put in it; write also lets them add (files they may read), remove and reorder files. Publishes file.shared (kind album).';

CREATE FUNCTION storage.revoke_share(owner_id uuid, share_id uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s storage.shares;
BEGIN
    PERFORM isa.not_null('owner_id, share_id', owner_id, share_id);
    SELECT * INTO s FROM storage.shares x
     WHERE x.share_id = revoke_share.share_id AND x.owner_id = revoke_share.owner_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'share % not found', share_id USING ERRCODE = 'P0002';
    END IF;
    RETURN storage._end_shares(ARRAY[s.share_id], 'revoked') > 0;
END
$$;
COMMENT ON FUNCTION storage.revoke_share(uuid, uuid) IS
    'The owner ends a share at once: true, and file.unshared (reason revoked); false when it had ended already. P0002 unknown or another user''s share.';

CREATE FUNCTION storage._live_shares(p_kind text, p_resource uuid) RETURNS SETOF storage.share_info
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (storage._share_info(s)).*
      FROM storage.shares s
     WHERE coalesce(s.file_id, s.album_id) = p_resource AND s.kind = p_kind
       AND s.revoked_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > now())
     ORDER BY s.created_at, s.share_id;
END;
COMMENT ON FUNCTION storage._live_shares(text, uuid) IS
    'The live, unexpired shares of a file or album, oldest first.';

CREATE FUNCTION storage.list_file_shares(owner_id uuid, file_id uuid) RETURNS SETOF storage.share_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('owner_id, file_id', owner_id, file_id);
    PERFORM storage._require_file(owner_id, file_id, 'owner');
    RETURN QUERY SELECT * FROM storage._live_shares('file', file_id);
END
$$;
COMMENT ON FUNCTION storage.list_file_shares(uuid, uuid) IS
    'The live, unexpired shares of a file, for its owner, oldest first. P0002 not found or not readable, 42501 not the owner.';

CREATE FUNCTION storage.list_album_shares(owner_id uuid, album_id uuid) RETURNS SETOF storage.share_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('owner_id, album_id', owner_id, album_id);
    PERFORM storage._require_album(owner_id, album_id, 'owner');
    RETURN QUERY SELECT * FROM storage._live_shares('album', album_id);
END
$$;
COMMENT ON FUNCTION storage.list_album_shares(uuid, uuid) IS
    'The live, unexpired shares of an album, for its owner, oldest first. P0002 not found or not readable, 42501 not the owner.';

CREATE FUNCTION storage.list_shared_with_me(user_id uuid, row_limit integer DEFAULT 100) RETURNS SETOF storage.share_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    PERFORM isa.check_page_size('row_limit', row_limit);
    RETURN QUERY
        SELECT (storage._share_info(s)).*
          FROM storage.shares s
          LEFT JOIN storage.files f ON f.file_id = s.file_id
         WHERE s.revoked_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > now())
           AND s.owner_id <> list_shared_with_me.user_id
           AND (s.kind = 'album' OR f.status = 'complete')
           AND (s.user_id = list_shared_with_me.user_id
                OR (s.org_id IS NOT NULL AND organization.is_member(s.org_id, list_shared_with_me.user_id)
                    AND organization.is_member(s.org_id, s.owner_id)))
         ORDER BY s.created_at DESC, s.share_id DESC
         LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION storage.list_shared_with_me(uuid, integer) IS
    'The live, unexpired shares of files and albums with the user or with an organization the user (and its sharer) belongs to, newest first, at most row_limit (1 to 1000, default 100). Shares made through organization.share_resource are listed by organization.shared_resources. 22004, 22023.';

-- ---------------------------------------------------------------- handlers
-- account_service.user.deleted: the user's files are deleted (file.deleted,
-- reason user_deleted, for each) and the uploads in progress dropped.
-- Idempotent: a second delivery finds nothing to do.
CREATE FUNCTION storage.on_user_deleted(e isa.event) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid_text text := e.data ->> 'user_id';
    uid      uuid;
    ids      uuid[];
BEGIN
    IF uid_text IS NULL OR uid_text !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        -- Bad data, not a transient failure: retrying would not help.
        RAISE WARNING 'storage.on_user_deleted: event % has no valid data.user_id (%), ignored', e.id, uid_text;
        RETURN;
    END IF;
    uid := uid_text::uuid;
    DELETE FROM storage.files f WHERE f.owner_id = uid AND f.status = 'uploading';   -- chunks: cascade
    SELECT array_agg(f.file_id ORDER BY f.file_id) INTO ids
      FROM (SELECT x.file_id FROM storage.files x WHERE x.owner_id = uid AND x.status = 'complete'
              ORDER BY x.file_id FOR UPDATE) f;
    IF ids IS NOT NULL THEN
        PERFORM storage._delete(ids, 'user_deleted');
    END IF;
    -- Their shares end (file.unshared, reason deleted), and their albums go.
    PERFORM storage._end_shares(ARRAY(SELECT s.share_id FROM storage.shares s
                                       WHERE s.owner_id = uid AND s.revoked_at IS NULL
                                       ORDER BY s.share_id FOR UPDATE), 'deleted');
    DELETE FROM storage.albums a WHERE a.owner_id = uid;       -- their files' places and shares: cascade
END
$$;
COMMENT ON FUNCTION storage.on_user_deleted(isa.event) IS
    'Handler of account_service.user.deleted: deletes the user''s files (soft delete, chunks removed, file.deleted reason user_deleted for each), drops the user''s unfinished uploads, ends their shares (file.unshared, reason deleted) and deletes their albums.';

SELECT isa.subscribe_to_events('storage', 'account_service.user.deleted',
                               'storage.on_user_deleted(isa.event)'::regprocedure);

-- organization_service.organization.member_removed: the removed member's
-- shares with that organization end (file.unshared, reason member_removed).
-- What the member could read through the organization ends by itself: the
-- check asks organization.is_member live.  Idempotent: a second delivery
-- finds no live share.
CREATE FUNCTION storage.on_member_removed(e isa.event) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    org_text text := e.data ->> 'org_id';
    uid_text text := e.data ->> 'user_id';
    pattern  constant text := '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
BEGIN
    IF org_text IS NULL OR uid_text IS NULL OR org_text !~* pattern OR uid_text !~* pattern THEN
        RAISE WARNING 'storage.on_member_removed: event % has no valid data.org_id and data.user_id, ignored', e.id;
        RETURN;
    END IF;
    PERFORM storage._end_shares(ARRAY(SELECT s.share_id FROM storage.shares s
                                       WHERE s.org_id = org_text::uuid AND s.owner_id = uid_text::uuid
                                         AND s.revoked_at IS NULL
                                       ORDER BY s.share_id FOR UPDATE),
                                'member_removed');
END
$$;
COMMENT ON FUNCTION storage.on_member_removed(isa.event) IS
    'Handler of organization_service.organization.member_removed: the shares the former member made with that organization end (file.unshared, reason member_removed); their own access through it ends with the membership (checked live).';

SELECT isa.subscribe_to_events('storage', 'organization_service.organization.member_removed',
                               'storage.on_member_removed(isa.event)'::regprocedure);

-- ---------------------------------------------------------------- files for sale
CREATE FUNCTION storage.offer_file(owner_id uuid, file_id uuid, price bigint) RETURNS storage.offer_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o storage.offers;
BEGIN
    PERFORM isa.not_null('owner_id, file_id, price', owner_id, file_id, price);
    IF price <= 0 OR price > 1000000000000 THEN
        RAISE EXCEPTION 'price must be 1 to 1000000000000 tokens, not %', price USING ERRCODE = '22023';
    END IF;
    PERFORM storage._require_file(owner_id, file_id, 'owner', true);
    INSERT INTO storage.offers AS x (file_id, seller_id, price) VALUES (file_id, owner_id, price)
    ON CONFLICT ON CONSTRAINT offers_pkey DO UPDATE SET price = excluded.price, updated_at = now()
    RETURNING * INTO o;
    RETURN ROW(o.file_id, o.seller_id, o.price, o.created_at, o.updated_at)::storage.offer_info;
END
$$;
COMMENT ON FUNCTION storage.offer_file(uuid, uuid, bigint) IS
    'Offers one of the owner''s files for sale at price tokens (or changes its price): an order naming it buys it (orders.create_order). 22023 bad price, P0002 no such file of the owner''s, 42501 not its owner.';

CREATE FUNCTION storage.withdraw_offer(owner_id uuid, file_id uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('owner_id, file_id', owner_id, file_id);
    PERFORM storage._require_file(owner_id, file_id, 'owner', true);
    DELETE FROM storage.offers x WHERE x.file_id = withdraw_offer.file_id;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION storage.withdraw_offer(uuid, uuid) IS
    'Takes a file off sale (orders fulfilled already keep their shares); true if it was for sale. P0002 no such file of the owner''s, 42501 not its owner.';

CREATE FUNCTION storage.get_offer(file_id uuid) RETURNS storage.offer_info
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
RETURN (SELECT ROW(o.file_id, o.seller_id, o.price, o.created_at, o.updated_at)::storage.offer_info
          FROM storage.offers o JOIN storage.files f ON f.file_id = o.file_id AND f.status = 'complete'
         WHERE o.file_id = get_offer.file_id);
COMMENT ON FUNCTION storage.get_offer(uuid) IS
    'The offer of a file for sale, NULL when it is not for sale (or deleted).';

-- order_service.order.fulfilled (1.1.0): the files the order bought are
-- shared, read, with the buyer, by their seller (file.shared).  The offer was
-- checked when the order was placed; an offer withdrawn since does not undo
-- a paid sale.  Idempotent: the share's key is order:<order_id>:<file_id>.
CREATE FUNCTION storage.on_order_fulfilled(e isa.event) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    buyer text := e.data ->> 'user_id';
    oid   text := e.data ->> 'order_id';
    fid   text;
    f     storage.files;
BEGIN
    IF e.data -> 'file_ids' IS NULL THEN
        RETURN;                           -- bought no file
    END IF;
    IF buyer IS NULL OR oid IS NULL OR NOT isa.is_uuid(buyer) OR NOT isa.is_uuid(oid)
       OR jsonb_typeof(e.data -> 'file_ids') <> 'array' THEN
        RAISE WARNING 'storage: order.fulfilled % ignored: needs data.order_id, data.user_id (uuid) and data.file_ids (array), got %',
            e.id, e.data;
        RETURN;
    END IF;
    IF NOT account.user_exists(buyer::uuid) THEN
        RAISE WARNING 'storage: order.fulfilled %: buyer % is deleted; nothing shared', e.id, buyer;
        RETURN;
    END IF;
    FOR fid IN SELECT jsonb_array_elements_text(e.data -> 'file_ids') LOOP
        IF NOT isa.is_uuid(fid) THEN
            RAISE WARNING 'storage: order.fulfilled %: file id % is no uuid; skipped', e.id, left(fid, 60);
            CONTINUE;
        END IF;
        SELECT * INTO f FROM storage.files x WHERE x.file_id = fid::uuid AND x.status = 'complete';
        IF NOT FOUND THEN
            RAISE WARNING 'storage: order % bought file %, which is deleted; nothing shared', oid, fid;
            CONTINUE;
        END IF;
        CONTINUE WHEN f.owner_id = buyer::uuid;
        PERFORM storage._share('file', f.file_id, f.owner_id, buyer::uuid, NULL, 'read', NULL,
                               'order:' || oid || ':' || fid);
    END LOOP;
END
$$;
COMMENT ON FUNCTION storage.on_order_fulfilled(isa.event) IS
    'Handler of order_service.order.fulfilled: shares each file the order bought (data.file_ids), read, with the buyer, by its owner (file.shared); once per order and file.';

SELECT isa.subscribe_to_events('storage', 'order_service.order.fulfilled',
                               'storage.on_order_fulfilled(isa.event)'::regprocedure);

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA storage FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    storage.begin_upload(uuid, text, text, bigint),
    storage.put_chunk(uuid, integer, bytea),
    storage.abort_upload(uuid),
    storage.finish_upload(uuid, text),
    storage.get_file(uuid),
    storage.get_my_file(uuid, uuid),
    storage.read_file(uuid, bigint, integer),
    storage.list_files(uuid, integer),
    storage.delete_file(uuid, uuid),
    storage.sign_download(uuid, integer),
    storage.sign_my_download(uuid, uuid, integer),
    storage.get_signed_file(uuid, bigint, text),
    storage.can_read(uuid, uuid),
    storage.can_write(uuid, uuid),
    storage.can_read_album(uuid, uuid),
    storage.can_write_album(uuid, uuid),
    storage.album_owner(uuid),
    storage.get_readable_file(uuid, uuid),
    storage.rename_file(uuid, uuid, text),
    storage.create_album(uuid, text, text),
    storage.get_album(uuid, uuid),
    storage.list_albums(uuid, integer),
    storage.list_album_files(uuid, uuid, integer),
    storage.add_album_file(uuid, uuid, uuid),
    storage.remove_album_file(uuid, uuid, uuid),
    storage.reorder_album(uuid, uuid, uuid[]),
    storage.delete_album(uuid, uuid),
    storage.share_file(uuid, uuid, uuid, uuid, text, timestamptz, text),
    storage.share_album(uuid, uuid, uuid, uuid, text, timestamptz, text),
    storage.revoke_share(uuid, uuid),
    storage.list_file_shares(uuid, uuid),
    storage.list_album_shares(uuid, uuid),
    storage.list_shared_with_me(uuid, integer),
    storage.offer_file(uuid, uuid, bigint),
    storage.withdraw_offer(uuid, uuid),
    storage.get_offer(uuid)
TO isa_app_storage;
-- What other services call of storage: orders checks the files an order buys.
GRANT EXECUTE ON FUNCTION storage.get_offer(uuid) TO isa_svc_orders;
-- What storage's own code calls of other services, as isa_svc_storage.
-- organization and authz load after storage (they call storage): what
-- storage calls of them (organization.organization_exists, member_role,
-- is_member, can_access; authz.check) is granted at the end of their files.
GRANT EXECUTE ON FUNCTION account.require_user(uuid), account.user_exists(uuid) TO isa_svc_storage;
GRANT EXECUTE ON FUNCTION storage.purge_abandoned_uploads(interval) TO isa_admin;

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- A user sees and deletes only their own files: owner_id is the caller
-- (subject_param), and another user's file is "not found".
SELECT isa.http_route('GET', '/v1/files', 'storage.list_files(uuid, integer)', 'user',
    'The caller''s files, newest first (row_limit 1 to 1000, default 100).', subject_param => 'owner_id');
SELECT isa.http_route('GET', '/v1/files/{file_id}', 'storage.get_readable_file(uuid, uuid)', 'user',
    'A file the caller may read (their own or shared with them): name, content type, size, SHA-256.', subject_param => 'user_id');
SELECT isa.http_route('DELETE', '/v1/files/{file_id}', 'storage.delete_file(uuid, uuid)', 'user',
    'Deletes one of the caller''s files.', subject_param => 'owner_id');
SELECT isa.http_route('POST', '/v1/files/{file_id}/download-url', 'storage.sign_my_download(uuid, uuid, integer)', 'user',
    'A signed download URL of a file the caller may read, valid ttl_seconds (1 to 86400, default 300): file_id, expires, signature.',
    subject_param => 'owner_id');

-- Streamed by isa-httpd (isa.http_route's stream, docs/http.md "Files"):
--   upload   POST /v1/files?name=…: begin_upload (content_type and size from the
--            Content-Type and Content-Length headers), put_chunk per 256 KiB of
--            the body as it arrives, finish_upload with the SHA-256 isa-httpd
--            computed; 201 with the file_info.
--   download the route's function gives the file_info (Content-Type, ETag =
--            the SHA-256, Content-Disposition from its name), then read_file
--            per 256 KiB as the client reads; Range (206, 416), If-None-Match (304).
SELECT isa.http_route('POST', '/v1/files', 'storage.begin_upload(uuid, text, text, bigint)', 'user',
    'Uploads a file of the caller: the request body, streamed (name in the query string; Content-Type and Content-Length are its type and size); returns the new file.',
    subject_param => 'owner_id', status => 201, stream => 'upload',
    header_params => '{"content_type": "Content-Type", "size": "Content-Length"}');
SELECT isa.http_route('GET', '/v1/files/{file_id}/content', 'storage.get_readable_file(uuid, uuid)', 'user',
    'The content of a file the caller may read (Range, If-None-Match).', subject_param => 'user_id', stream => 'download');
SELECT isa.http_route('GET', '/v1/downloads/{file_id}', 'storage.get_signed_file(uuid, bigint, text)', 'public',
    'The content of a file through a signed download URL: expires and signature in the query string (Range, If-None-Match).',
    stream => 'download');

-- Sharing (docs/services/storage.md, "Sharing"): what a user reads, renames
-- or changes is decided by storage's one check (_file_access,
-- _album_access): P0002 → 404 when the caller may not even read it, 42501 →
-- 403 when they may read it but need more.  Sharing, listing shares and
-- revoking are the owner's.
SELECT isa.http_route('PATCH', '/v1/files/{file_id}', 'storage.rename_file(uuid, uuid, text)', 'user',
    'Renames a file the caller may write (body: name).', subject_param => 'user_id');
SELECT isa.http_route('PUT', '/v1/files/{file_id}/offer', 'storage.offer_file(uuid, uuid, bigint)', 'user',
    'Offers one of the caller''s files for sale at price tokens (or changes its price); an order naming it buys it.',
    subject_param => 'owner_id');
SELECT isa.http_route('DELETE', '/v1/files/{file_id}/offer', 'storage.withdraw_offer(uuid, uuid)', 'user',
    'Takes one of the caller''s files off sale; true if it was for sale.',
    subject_param => 'owner_id');
SELECT isa.http_route('GET', '/v1/files/{file_id}/offer', 'storage.get_offer(uuid)', 'user',
    'A file''s offer: its seller and price in tokens; null when it is not for sale.');
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
