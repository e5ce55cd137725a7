-- 0.1.0 → 0.2.0, storage: sharing (docs/services/storage.md, "Sharing" and
-- "Albums"): albums and their files, shares of files and albums with users
-- and organizations, the events file.shared and file.unshared, the reaction
-- to organization.member_removed, and the routes.  Functions, comments,
-- grants, event types, the subscription and the routes are replayed from
-- sql/storage/storage.sql after this: here are the tables and types.

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

-- Timestamps are formatted by the core's isa.iso_time (one helper for every
-- service).  storage._delete of 0.1.0 is an SQL-standard function that
-- depends on _iso: it goes with it, and the replay below makes it again.
DROP FUNCTION storage._iso(timestamptz) CASCADE;

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
