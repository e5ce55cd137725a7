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

CREATE FUNCTION storage._iso(t timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    RETURN pg_catalog.to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
COMMENT ON FUNCTION storage._iso(timestamptz) IS
    'RFC 3339 UTC with microseconds, as in the envelope.';

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
    SELECT * INTO f FROM storage.files x
     WHERE x.file_id = get_my_file.file_id AND x.owner_id = get_my_file.owner_id AND x.status = 'complete';
    IF NOT FOUND THEN
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
                                        'reason', p_reason, 'deleted_at', storage._iso(g.deleted_at))))
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
END
$$;
COMMENT ON FUNCTION storage.delete_file(uuid, uuid) IS
    'Deletes a file of owner_id (soft delete: its content goes) and publishes file.deleted; deleting it again does nothing. An upload of owner_id still in progress is aborted (removed with its chunks, no event). P0002 (the same error) when it does not exist or belongs to someone else.';

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
    PERFORM storage.get_my_file(owner_id, file_id);
    RETURN storage.sign_download(file_id, ttl_seconds);
END
$$;
COMMENT ON FUNCTION storage.sign_my_download(uuid, uuid, integer) IS
    'sign_download for a file of owner_id. P0002 (the same error) when it does not exist or belongs to someone else; otherwise as sign_download.';

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
END
$$;
COMMENT ON FUNCTION storage.on_user_deleted(isa.event) IS
    'Handler of account_service.user.deleted: deletes the user''s files (soft delete, chunks removed, file.deleted reason user_deleted for each) and drops the user''s unfinished uploads.';

SELECT isa.subscribe_to_events('storage', 'account_service.user.deleted',
                               'storage.on_user_deleted(isa.event)'::regprocedure);

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
    storage.get_signed_file(uuid, bigint, text)
TO isa_app_storage;
-- What storage's own code calls of other services, as isa_svc_storage.
GRANT EXECUTE ON FUNCTION account.require_user(uuid) TO isa_svc_storage;
GRANT EXECUTE ON FUNCTION storage.purge_abandoned_uploads(interval) TO isa_admin;

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- A user sees and deletes only their own files: owner_id is the caller
-- (subject_param), and another user's file is "not found".
SELECT isa.http_route('GET', '/v1/files', 'storage.list_files(uuid, integer)', 'user',
    'The caller''s files, newest first (row_limit 1 to 1000, default 100).', subject_param => 'owner_id');
SELECT isa.http_route('GET', '/v1/files/{file_id}', 'storage.get_my_file(uuid, uuid)', 'user',
    'One of the caller''s files: name, content type, size, SHA-256.', subject_param => 'owner_id');
SELECT isa.http_route('DELETE', '/v1/files/{file_id}', 'storage.delete_file(uuid, uuid)', 'user',
    'Deletes one of the caller''s files.', subject_param => 'owner_id');
SELECT isa.http_route('POST', '/v1/files/{file_id}/download-url', 'storage.sign_my_download(uuid, uuid, integer)', 'user',
    'A signed download URL of one of the caller''s files, valid ttl_seconds (1 to 86400, default 300): file_id, expires, signature.',
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
SELECT isa.http_route('GET', '/v1/files/{file_id}/content', 'storage.get_my_file(uuid, uuid)', 'user',
    'The content of one of the caller''s files (Range, If-None-Match).', subject_param => 'owner_id', stream => 'download');
SELECT isa.http_route('GET', '/v1/downloads/{file_id}', 'storage.get_signed_file(uuid, bigint, text)', 'public',
    'The content of a file through a signed download URL: expires and signature in the query string (Range, If-None-Match).',
    stream => 'download');
