-- ota.sql — the OTA service (schema ota, source ota_service): firmware over
-- the air.  A release is a device model's firmware at a semantic version,
-- stored through storage, described by a manifest signed with Ed25519 by a
-- trusted key (ota.signing_keys); a rollout offers one release to the
-- devices of that model (some organizations, a range of current versions)
-- group by group, each group opening when enough of the previous one
-- succeeded and the rollout halting when too many failed.  Offers go to the
-- device as the device service's command ota.update (MQTT, re-sent until
-- acknowledged); the device reports its progress as acks of that command
-- (MQTT) or over its HTTP routes, and asks check_for_update when it likes.
-- The C is in ota/ (SemVer, the manifest's parser, signatures).  It calls
-- device and storage; it reacts to device.online and to the devices' acks.
-- docs/services/ota.md documents the manifest, the keys, the rollout model.

-- ---------------------------------------------------------------- C (ota/)
CREATE FUNCTION ota.version_valid(version text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_ota_version_valid' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION ota.version_valid(text) IS
    'Whether version is a semantic version (SemVer 2.0.0: MAJOR.MINOR.PATCH[-pre.release][+build], at most 64 characters).';
CREATE FUNCTION ota.version_cmp(a text, b text) RETURNS integer
    AS 'MODULE_PATHNAME', 'isa_ota_version_cmp' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION ota.version_cmp(text, text) IS
    'SemVer 2.0.0 precedence of a and b: -1, 0 or 1 (1.0.0-rc.1 < 1.0.0; numeric identifiers numerically and below alphanumeric ones; build metadata ignored). 22023 when either is not a semantic version.';
CREATE FUNCTION ota._parse_manifest(manifest text, OUT model text, OUT version text, OUT sha256 bytea,
                                    OUT size bigint, OUT file_id text, OUT notes text)
    AS 'MODULE_PATHNAME', 'isa_ota_parse_manifest' LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION ota._parse_manifest(text) IS
    'The members of a release manifest (docs/services/ota.md, "The manifest"), or 22023 saying what is wrong with it.';
CREATE FUNCTION ota._ed25519_verify(message bytea, signature bytea, public_key bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_ota_ed25519_verify' LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION ota._ed25519_verify(bytea, bytea, bytea) IS
    'Whether signature is public_key''s Ed25519 signature of message''s exact bytes (libsodium); false for a signature or key of the wrong length.';

-- ---------------------------------------------------------------- tables
-- The public keys whose signatures make a release trusted.  Several at once
-- (rotation: sign with the new key, then retire the old); a retired key
-- verifies no new release (releases it verified stay).
CREATE TABLE ota.signing_keys (
    key_id     text PRIMARY KEY CHECK (key_id ~ '^[A-Za-z0-9._-]{1,64}$'),
    public_key bytea NOT NULL UNIQUE CHECK (octet_length(public_key) = 32),
    added_at   timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);
COMMENT ON TABLE ota.signing_keys IS
    'Trusted Ed25519 public keys of release manifests: several at once, each retirable (a retired key verifies no new release).';

CREATE TABLE ota.releases (
    release_id uuid PRIMARY KEY DEFAULT isa.uuid_v7(),
    model      text NOT NULL,
    version    text NOT NULL CHECK (ota.version_valid(version)),
    file_id    uuid NOT NULL,                                -- storage's file (no cross-schema foreign key)
    sha256     bytea NOT NULL CHECK (octet_length(sha256) = 32),
    size       bigint NOT NULL CHECK (size > 0),
    notes      text,
    manifest   text NOT NULL,                                -- the exact bytes signed
    signature  bytea NOT NULL CHECK (octet_length(signature) = 64),
    key_id     text NOT NULL REFERENCES ota.signing_keys,
    created_by uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT releases_model_version UNIQUE (model, version)
);
COMMENT ON TABLE ota.releases IS
    'Firmware releases: model, semantic version, storage file, SHA-256, size, and the signed manifest with the key that verified it.';

-- A rollout: draft → running (group by group) → completed, or paused,
-- halted (error threshold, or an operator) or cancelled.  groups: the
-- groups' sizes in percent of the target, in order, summing to 100.
CREATE TABLE ota.rollouts (
    rollout_id        uuid PRIMARY KEY DEFAULT isa.uuid_v7(),
    release_id        uuid NOT NULL REFERENCES ota.releases,
    name              text NOT NULL,
    organization_ids  uuid[],                                -- NULL: devices of the model anywhere
    min_version       text CHECK (ota.version_valid(min_version)),   -- current version range, inclusive
    max_version       text CHECK (ota.version_valid(max_version)),
    groups            integer[] NOT NULL,
    success_threshold integer NOT NULL CHECK (success_threshold BETWEEN 1 AND 100),  -- % of a group completed opens the next
    error_threshold   integer NOT NULL CHECK (error_threshold BETWEEN 1 AND 100),    -- % of a group failed halts
    forced            boolean NOT NULL DEFAULT false,        -- soft: the device may postpone
    allow_downgrade   boolean NOT NULL DEFAULT false,
    window_start      time,                                  -- maintenance window, UTC; NULL: any time
    window_end        time,
    action_timeout    integer NOT NULL CHECK (action_timeout BETWEEN 60 AND 86400),  -- seconds an offer may stay open
    state             text NOT NULL DEFAULT 'draft'
                      CHECK (state IN ('draft', 'running', 'paused', 'halted', 'completed', 'cancelled')),
    current_group     integer NOT NULL DEFAULT 0,            -- 0 before the start, then the open group's number
    halt_reason       text,
    created_by        uuid NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((window_start IS NULL) = (window_end IS NULL)),
    CHECK (current_group BETWEEN 0 AND cardinality(groups))
);
CREATE INDEX rollouts_running ON ota.rollouts (state) WHERE state = 'running';
COMMENT ON TABLE ota.rollouts IS
    'Rollouts of a release: target (model, organizations, current-version range), groups in percent, success and error thresholds, soft or forced, maintenance window, downgrade allowed or not, and the state machine.';

-- Each device of a rollout: its group (fixed at the start, from a hash of
-- device and rollout) and its action: waiting (group not open), pending
-- (to offer), offered, downloading, installing, then completed, failed,
-- expired (no report in time), skipped (not eligible) or cancelled.
CREATE TABLE ota.rollout_devices (
    rollout_id   uuid NOT NULL REFERENCES ota.rollouts ON DELETE CASCADE,
    device_id    uuid NOT NULL,                              -- device's (no cross-schema foreign key)
    group_no     integer NOT NULL CHECK (group_no >= 1),
    state        text NOT NULL DEFAULT 'waiting'
                 CHECK (state IN ('waiting', 'pending', 'offered', 'downloading', 'installing',
                                  'completed', 'failed', 'expired', 'skipped', 'cancelled')),
    command_id   uuid,                                       -- the device command ota.update that offered it
    from_version text,                                       -- the device's firmware when offered
    offer_after  timestamptz,                                -- a postponed offer waits until then
    offered_at   timestamptz,
    deadline     timestamptz,                                -- an open action expires then
    reason       text,                                       -- why failed, skipped, expired or cancelled
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rollout_id, device_id),
    CHECK ((state IN ('offered', 'downloading', 'installing')) <= (deadline IS NOT NULL))
);
CREATE INDEX rollout_devices_group ON ota.rollout_devices (rollout_id, group_no, state);
CREATE INDEX rollout_devices_device ON ota.rollout_devices (device_id);
CREATE UNIQUE INDEX rollout_devices_command ON ota.rollout_devices (command_id) WHERE command_id IS NOT NULL;
CREATE INDEX rollout_devices_open ON ota.rollout_devices (deadline) WHERE state IN ('offered', 'downloading', 'installing');
COMMENT ON TABLE ota.rollout_devices IS
    'The devices of each rollout: group (deterministic), action state (waiting, pending, offered, downloading, installing, completed, failed, expired, skipped, cancelled), the offering command, deadline and reason.';

-- ---------------------------------------------------------------- types
CREATE TYPE ota.release_info AS (
    release_id uuid,
    model      text,
    version    text,
    file_id    uuid,
    sha256     text,            -- 64 lower-case hexadecimal digits
    size       bigint,
    notes      text,
    key_id     text,
    created_by uuid,
    created_at timestamptz
);
COMMENT ON TYPE ota.release_info IS 'A release as the OTA API returns it.';

CREATE TYPE ota.rollout_info AS (
    rollout_id        uuid,
    release_id        uuid,
    name              text,
    model             text,
    version           text,
    state             text,
    current_group     integer,
    groups            integer[],
    success_threshold integer,
    error_threshold   integer,
    forced            boolean,
    allow_downgrade   boolean,
    halt_reason       text,
    counts            jsonb,          -- per group: {"1": {"completed": n, …}, …}
    created_at        timestamptz,
    started_at        timestamptz,
    finished_at       timestamptz
);
COMMENT ON TYPE ota.rollout_info IS 'A rollout, its state and its devices counted by group and action state.';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('ota.update_available', 'ota_service', '1.0.0',
    'A rollout offered a device a firmware update (once per device and rollout; a postponed offer is offered again).',
    '{"device_id":       {"type": "uuid",    "required": true,  "description": "The device."},
      "owner_id":        {"type": "uuid",    "required": true,  "description": "Its owner."},
      "organization_id": {"type": "uuid",    "required": false, "description": "Its organization; null when none."},
      "rollout_id":      {"type": "uuid",    "required": true,  "description": "The rollout."},
      "release_id":      {"type": "uuid",    "required": true,  "description": "The release offered."},
      "model":           {"type": "string",  "required": true,  "description": "The device model."},
      "version":         {"type": "string",  "required": true,  "description": "The release''s semantic version."},
      "from_version":    {"type": "string",  "required": false, "description": "The firmware the device runs; null when unknown."},
      "forced":          {"type": "boolean", "required": true,  "description": "Whether the device must install it (false: it may postpone)."},
      "command_id":      {"type": "uuid",    "required": true,  "description": "The device command ota.update carrying the offer."}}');
SELECT isa.register_event_type('ota.update_completed', 'ota_service', '1.0.0',
    'A device reported that it installed a release and runs it.',
    '{"device_id":       {"type": "uuid",   "required": true,  "description": "The device."},
      "owner_id":        {"type": "uuid",   "required": true,  "description": "Its owner."},
      "organization_id": {"type": "uuid",   "required": false, "description": "Its organization; null when none."},
      "rollout_id":      {"type": "uuid",   "required": true,  "description": "The rollout."},
      "release_id":      {"type": "uuid",   "required": true,  "description": "The release installed."},
      "model":           {"type": "string", "required": true,  "description": "The device model."},
      "version":         {"type": "string", "required": true,  "description": "The version the device runs now."},
      "from_version":    {"type": "string", "required": false, "description": "The version it ran before; null when unknown."}}');
SELECT isa.register_event_type('ota.update_failed', 'ota_service', '1.0.0',
    'A device reported that an update failed, or did not report in time (expired).',
    '{"device_id":       {"type": "uuid",   "required": true,  "description": "The device."},
      "owner_id":        {"type": "uuid",   "required": true,  "description": "Its owner."},
      "organization_id": {"type": "uuid",   "required": false, "description": "Its organization; null when none."},
      "rollout_id":      {"type": "uuid",   "required": true,  "description": "The rollout."},
      "release_id":      {"type": "uuid",   "required": true,  "description": "The release."},
      "model":           {"type": "string", "required": true,  "description": "The device model."},
      "version":         {"type": "string", "required": true,  "description": "The release''s version."},
      "state":           {"type": "string", "required": true,  "description": "failed (the device said so) or expired (no report before the deadline)."},
      "reason":          {"type": "string", "required": true,  "description": "What the device said, or why it expired."}}');

-- ---------------------------------------------------------------- internal helpers
CREATE FUNCTION ota._release_info(r ota.releases) RETURNS ota.release_info
    LANGUAGE sql IMMUTABLE
    RETURN ROW(r.release_id, r.model, r.version, r.file_id, pg_catalog.encode(r.sha256, 'hex'), r.size, r.notes,
               r.key_id, r.created_by, r.created_at)::ota.release_info;
COMMENT ON FUNCTION ota._release_info(ota.releases) IS 'A releases row as ota.release_info.';

CREATE FUNCTION ota._rollout_info(r ota.rollouts) RETURNS ota.rollout_info
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN (SELECT ROW(r.rollout_id, r.release_id, r.name, x.model, x.version, r.state, r.current_group, r.groups,
                       r.success_threshold, r.error_threshold, r.forced, r.allow_downgrade, r.halt_reason,
                       (SELECT coalesce(jsonb_object_agg(g.group_no, g.counts), '{}')
                          FROM (SELECT rd.group_no, jsonb_object_agg(rd.state, rd.n) AS counts
                                  FROM (SELECT y.group_no, y.state, count(*) AS n FROM ota.rollout_devices y
                                         WHERE y.rollout_id = r.rollout_id GROUP BY 1, 2) rd
                                 GROUP BY rd.group_no) g),
                       r.created_at, r.started_at, r.finished_at)::ota.rollout_info
              FROM ota.releases x WHERE x.release_id = r.release_id);
COMMENT ON FUNCTION ota._rollout_info(ota.rollouts) IS 'A rollouts row as ota.rollout_info, with its devices counted by group and state.';

-- The key that verifies signature over manifest's exact bytes among the
-- trusted (not retired) keys; 55000 when none is trusted, 22023 otherwise.
CREATE FUNCTION ota._verify_manifest(manifest text, signature bytea) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
BEGIN
    IF NOT EXISTS (SELECT FROM ota.signing_keys x WHERE x.retired_at IS NULL) THEN
        RAISE EXCEPTION 'no trusted OTA signing key: releases cannot be verified' USING ERRCODE = '55000',
            HINT = 'An operator adds the vendor''s public key with ota.add_signing_key(key_id, public_key).';
    END IF;
    IF octet_length(signature) <> 64 THEN
        RAISE EXCEPTION 'the manifest''s signature must be 64 bytes (Ed25519), not %', octet_length(signature)
            USING ERRCODE = '22023';
    END IF;
    SELECT x.key_id INTO k FROM ota.signing_keys x
     WHERE x.retired_at IS NULL AND ota._ed25519_verify(convert_to(manifest, 'UTF8'), signature, x.public_key)
     ORDER BY x.added_at LIMIT 1;
    IF k IS NULL THEN
        RAISE EXCEPTION 'the manifest''s signature does not verify with any trusted key' USING ERRCODE = '22023',
            HINT = 'Sign the manifest''s exact bytes with a key in ota.signing_keys that is not retired (tools/isa-ota-sign sign).';
    END IF;
    RETURN k;
END
$$;
COMMENT ON FUNCTION ota._verify_manifest(text, bytea) IS
    'The key_id of the trusted, unretired key whose Ed25519 signature of the manifest''s exact UTF-8 bytes signature is; 22023 when none verifies it or it is not 64 bytes, 55000 when no key is trusted.';

-- A device's group in a rollout, 1 … cardinality(groups): its bucket
-- (0 … 9999, from the MD5 of device and rollout ids) falls in the groups'
-- cumulative shares.  Deterministic: the same device, the same group.
CREATE FUNCTION ota.device_group(device_id uuid, rollout_id uuid, groups integer[]) RETURNS integer
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bucket bigint := (('x' || substr(md5(device_id::text || rollout_id::text), 1, 8))::bit(32)::bigint) % 10000;
    upto   bigint := 0;                              -- the groups' cumulative share so far, in percent
BEGIN
    -- (plpgsql: a quarter of the cost of the SQL form with a subquery per
    -- group; a rollout's start calls it for every device of the target)
    FOR i IN 1 .. cardinality(groups) LOOP
        upto := upto + groups[i];
        IF bucket < 100 * upto THEN
            RETURN i;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION ota.device_group(uuid, uuid, integer[]) IS
    'The group (1-based) of a device in a rollout whose groups are percentages summing to 100: its bucket, the first 32 bits of md5(device_id || rollout_id) modulo 10000, in the groups'' cumulative shares. Deterministic.';

-- Whether now (UTC) is inside a rollout's maintenance window (none: always).
CREATE FUNCTION ota._in_window(r ota.rollouts) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN r.window_start IS NULL
        OR CASE WHEN r.window_start <= r.window_end
                THEN (now() AT TIME ZONE 'UTC')::time BETWEEN r.window_start AND r.window_end
                ELSE (now() AT TIME ZONE 'UTC')::time >= r.window_start OR (now() AT TIME ZONE 'UTC')::time <= r.window_end
           END;
COMMENT ON FUNCTION ota._in_window(ota.rollouts) IS
    'Whether now, in UTC, is within the rollout''s maintenance window (window_start … window_end, across midnight when start > end); true without a window.';

-- Why a device running `current` may not get `version` in rollout r, or NULL.
CREATE FUNCTION ota._ineligible(r ota.rollouts, version text, current text) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    RETURN CASE
        WHEN current IS NULL OR NOT ota.version_valid(current) THEN
             CASE WHEN r.min_version IS NOT NULL OR r.max_version IS NOT NULL
                  THEN 'its firmware version is unknown or not a semantic version, and the rollout targets a version range' END
        WHEN r.min_version IS NOT NULL AND ota.version_cmp(current, r.min_version) < 0 THEN 'its firmware ' || current || ' is below the range'
        WHEN r.max_version IS NOT NULL AND ota.version_cmp(current, r.max_version) > 0 THEN 'its firmware ' || current || ' is above the range'
        WHEN ota.version_cmp(current, version) = 0 THEN 'it runs ' || version || ' already'
        WHEN ota.version_cmp(current, version) > 0 AND NOT r.allow_downgrade
             THEN 'anti-rollback: it runs ' || current || ', higher than ' || version || ', and the rollout allows no downgrade'
    END;
COMMENT ON FUNCTION ota._ineligible(ota.rollouts, text, text) IS
    'Why a device whose firmware is current may not be offered version by rollout r (outside the version range, already there, or a downgrade the rollout does not allow), or NULL when it may.';

-- The offer a device gets (the command's args, check_for_update's answer):
-- the release, its signed manifest and a signed download URL.
CREATE FUNCTION ota._offer_args(r ota.rollouts, x ota.releases) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dl jsonb := storage.sign_download(x.file_id, r.action_timeout);
BEGIN
    RETURN jsonb_build_object(
        'rollout_id', r.rollout_id, 'release_id', x.release_id, 'model', x.model, 'version', x.version,
        'size', x.size, 'sha256', pg_catalog.encode(x.sha256, 'hex'), 'forced', r.forced,
        'manifest', x.manifest, 'signature', pg_catalog.encode(x.signature, 'hex'), 'key_id', x.key_id,
        'download', dl || jsonb_build_object('url', format('/v1/downloads/%s?expires=%s&signature=%s',
                                                            x.file_id, dl ->> 'expires', dl ->> 'signature')));
END
$$;
COMMENT ON FUNCTION ota._offer_args(ota.rollouts, ota.releases) IS
    'An offer: rollout, release, model, version, size, sha256, forced, the signed manifest (manifest, signature in hex, key_id) and a signed download URL valid for the rollout''s action_timeout.';

CREATE FUNCTION ota._publish(event_type text, r ota.rollouts, x ota.releases, d device.device_info, extra jsonb)
RETURNS uuid
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    RETURN isa.publish_event(event_type, 'ota_service',
        jsonb_build_object('device_id', d.device_id, 'owner_id', d.owner_id, 'organization_id', d.organization_id,
                           'rollout_id', r.rollout_id, 'release_id', x.release_id, 'model', x.model,
                           'version', x.version) || extra);
COMMENT ON FUNCTION ota._publish(text, ota.rollouts, ota.releases, device.device_info, jsonb) IS
    'Publishes an ota.* event of a device in a rollout: device, owner, organization, rollout, release, model, version, and extra.';

-- Offers a pending device its update, when it may have it: the command
-- ota.update (sent now when online, else when it comes online) and
-- ota.update_available.  A device no longer eligible is skipped.  Returns
-- the row as it is then.
CREATE FUNCTION ota._offer(p_rollout_id uuid, p_device_id uuid) RETURNS ota.rollout_devices
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rd  ota.rollout_devices;
    r   ota.rollouts;
    x   ota.releases;
    d   device.device_info;
    why text;
    cmd device.command_info;
BEGIN
    SELECT * INTO rd FROM ota.rollout_devices y
     WHERE y.rollout_id = p_rollout_id AND y.device_id = p_device_id FOR UPDATE;
    SELECT * INTO r FROM ota.rollouts y WHERE y.rollout_id = p_rollout_id;
    IF rd.state IS DISTINCT FROM 'pending' OR r.state <> 'running' OR rd.group_no > r.current_group
       OR coalesce(rd.offer_after, '-infinity') > now() OR NOT ota._in_window(r) THEN
        RETURN rd;
    END IF;
    SELECT * INTO x FROM ota.releases y WHERE y.release_id = r.release_id;
    d := device.lookup_device(p_device_id);
    IF d.status = 'decommissioned' THEN
        why := 'decommissioned';
    ELSIF r.organization_ids IS NOT NULL AND NOT coalesce(d.organization_id = ANY (r.organization_ids), false) THEN
        why := 'it is no longer in an organization the rollout targets';
    ELSE
        why := ota._ineligible(r, x.version, d.firmware_version);
    END IF;
    IF why IS NOT NULL THEN
        UPDATE ota.rollout_devices y SET state = 'skipped', reason = why, from_version = d.firmware_version, updated_at = now()
         WHERE y.rollout_id = p_rollout_id AND y.device_id = p_device_id RETURNING * INTO rd;
        RETURN rd;
    END IF;
    cmd := device.send_service_command(p_device_id, 'ota.update', ota._offer_args(r, x), r.action_timeout);
    UPDATE ota.rollout_devices y
       SET state = 'offered', command_id = cmd.command_id, from_version = d.firmware_version, offered_at = now(),
           deadline = now() + make_interval(secs => r.action_timeout), offer_after = NULL, reason = NULL, updated_at = now()
     WHERE y.rollout_id = p_rollout_id AND y.device_id = p_device_id RETURNING * INTO rd;
    PERFORM ota._publish('ota.update_available', r, x, d,
        jsonb_build_object('from_version', d.firmware_version, 'forced', r.forced, 'command_id', cmd.command_id));
    RETURN rd;
END
$$;
COMMENT ON FUNCTION ota._offer(uuid, uuid) IS
    'Offers a pending device of a running rollout its update if its group is open, its postponement over and the window open: skipped (with the reason) when decommissioned, moved out of the organizations the rollout targets, or not eligible (version range, already there, anti-rollback); else the device command ota.update and ota.update_available.';

-- Offers every pending device of an open group of a running rollout that is
-- online (the others get theirs when they come online: on_device_online).
CREATE FUNCTION ota._offer_online(r ota.rollouts) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint := 0;
    v_id uuid;
BEGIN
    IF r.state <> 'running' OR NOT ota._in_window(r) THEN
        RETURN 0;
    END IF;
    -- The pending devices of the open groups, then which of them are online:
    -- device probes each by its key.  (A join with every device of the model
    -- was planned as a nested loop over the function's rows while the
    -- rollout's new rows had no statistics: at 100,000 devices, minutes.)
    FOR v_id IN
        SELECT o.id
          FROM device.online_devices(ARRAY(
                   SELECT rd.device_id FROM ota.rollout_devices rd
                    WHERE rd.rollout_id = r.rollout_id AND rd.state = 'pending' AND rd.group_no <= r.current_group
                      AND coalesce(rd.offer_after, '-infinity') <= now())) o (id)
         ORDER BY o.id LOOP
        IF (ota._offer(r.rollout_id, v_id)).state = 'offered' THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION ota._offer_online(ota.rollouts) IS
    'Offers the online pending devices of the open groups of a running rollout in its window; returns how many were offered.';

-- Ends the rollout's actions not yet offered (halt, cancel): they never will be.
CREATE FUNCTION ota._cancel_pending(p_rollout_id uuid, p_reason text) RETURNS bigint
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH c AS (UPDATE ota.rollout_devices y SET state = 'cancelled', reason = p_reason, updated_at = now()
                WHERE y.rollout_id = p_rollout_id AND y.state IN ('waiting', 'pending') RETURNING 1)
    SELECT count(*) FROM c;
END;
COMMENT ON FUNCTION ota._cancel_pending(uuid, text) IS
    'Cancels, with a reason, the devices of a rollout not offered yet (waiting or pending); returns how many.';

-- A device's report on its update: downloading, installing, completed,
-- failed (with reason) or postponed (a soft rollout's offer, again in an
-- hour).  Errors: 23514 when the action is not open or a forced update is
-- postponed; 22023 bad status.
CREATE FUNCTION ota._progress(rd ota.rollout_devices, p_status text, p_reason text) RETURNS ota.rollout_devices
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ota.rollouts;
    x ota.releases;
    d device.device_info;
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('downloading', 'installing', 'completed', 'failed', 'postponed') THEN
        RAISE EXCEPTION 'status must be downloading, installing, completed, failed or postponed, not %', coalesce(p_status, 'null')
            USING ERRCODE = '22023';
    END IF;
    IF rd.state = p_status THEN
        RETURN rd;                                   -- the same report again
    END IF;
    IF rd.state NOT IN ('offered', 'downloading', 'installing') THEN
        RAISE EXCEPTION 'the update of device % in rollout % is %, not in progress', rd.device_id, rd.rollout_id, rd.state
            USING ERRCODE = '23514';
    END IF;
    SELECT * INTO r FROM ota.rollouts y WHERE y.rollout_id = rd.rollout_id;
    IF p_status = 'postponed' THEN
        IF r.forced THEN
            RAISE EXCEPTION 'rollout % is forced: the update cannot be postponed', r.rollout_id USING ERRCODE = '23514';
        END IF;
        UPDATE ota.rollout_devices y
           SET state = 'pending', offer_after = now() + interval '1 hour', deadline = NULL, reason = 'postponed',
               updated_at = now()
         WHERE y.rollout_id = rd.rollout_id AND y.device_id = rd.device_id RETURNING * INTO rd;
        RETURN rd;
    END IF;
    UPDATE ota.rollout_devices y
       SET state = p_status, updated_at = now(),
           reason = CASE WHEN p_status = 'failed' THEN coalesce(left(p_reason, 1000), 'failed on the device') END
     WHERE y.rollout_id = rd.rollout_id AND y.device_id = rd.device_id RETURNING * INTO rd;
    IF p_status IN ('completed', 'failed') THEN
        SELECT * INTO x FROM ota.releases y WHERE y.release_id = r.release_id;
        d := device.lookup_device(rd.device_id);
        IF p_status = 'completed' THEN
            PERFORM ota._publish('ota.update_completed', r, x, d, jsonb_build_object('from_version', rd.from_version));
        ELSE
            PERFORM ota._publish('ota.update_failed', r, x, d, jsonb_build_object('state', 'failed', 'reason', rd.reason));
        END IF;
    END IF;
    RETURN rd;
END
$$;
COMMENT ON FUNCTION ota._progress(ota.rollout_devices, text, text) IS
    'Applies a device''s report to its open action: downloading, installing, completed (ota.update_completed), failed (ota.update_failed, with reason) or postponed (soft rollouts: offered again after an hour). The same report twice changes nothing. 22023 bad status, 23514 action not open or forced rollout postponed.';

CREATE FUNCTION ota._rollout(p_rollout_id uuid, p_lock boolean) RETURNS ota.rollouts
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ota.rollouts;
BEGIN
    PERFORM isa.not_null('rollout_id', p_rollout_id);
    IF p_lock THEN
        SELECT * INTO r FROM ota.rollouts x WHERE x.rollout_id = p_rollout_id FOR UPDATE;
    ELSE
        SELECT * INTO r FROM ota.rollouts x WHERE x.rollout_id = p_rollout_id;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rollout % not found', p_rollout_id USING ERRCODE = 'P0002';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION ota._rollout(uuid, boolean) IS 'The rollout, locked FOR UPDATE when it is to change, or P0002.';

-- Advances one running rollout as far as it goes now: its open group halts
-- it (error threshold), opens the next (success threshold) or completes it.
CREATE FUNCTION ota._advance(p_rollout_id uuid) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r       ota.rollouts := ota._rollout(p_rollout_id, true);
    total   bigint;
    done    bigint;
    bad     bigint;
BEGIN
    WHILE r.state = 'running' LOOP
        SELECT count(*) FILTER (WHERE y.state NOT IN ('skipped', 'cancelled')),
               count(*) FILTER (WHERE y.state = 'completed'),
               count(*) FILTER (WHERE y.state IN ('failed', 'expired'))
          INTO total, done, bad
          FROM ota.rollout_devices y WHERE y.rollout_id = r.rollout_id AND y.group_no = r.current_group;
        IF total > 0 AND bad * 100 >= r.error_threshold::bigint * total THEN
            PERFORM ota._cancel_pending(r.rollout_id, 'the rollout halted');
            UPDATE ota.rollouts x
               SET state = 'halted', finished_at = now(), updated_at = now(),
                   halt_reason = format('error threshold: %s of %s devices of group %s failed (threshold %s%%)',
                                        bad, total, r.current_group, r.error_threshold)
             WHERE x.rollout_id = r.rollout_id RETURNING * INTO r;
        ELSIF total = 0 OR done * 100 >= r.success_threshold::bigint * total THEN
            IF r.current_group = cardinality(r.groups) THEN
                UPDATE ota.rollouts x SET state = 'completed', finished_at = now(), updated_at = now()
                 WHERE x.rollout_id = r.rollout_id RETURNING * INTO r;
            ELSE
                UPDATE ota.rollouts x SET current_group = x.current_group + 1, updated_at = now()
                 WHERE x.rollout_id = r.rollout_id RETURNING * INTO r;
                UPDATE ota.rollout_devices y SET state = 'pending', updated_at = now()
                 WHERE y.rollout_id = r.rollout_id AND y.group_no = r.current_group AND y.state = 'waiting';
            END IF;
        ELSE
            EXIT;
        END IF;
    END LOOP;
    PERFORM ota._offer_online(r);
    RETURN r.state;
END
$$;
COMMENT ON FUNCTION ota._advance(uuid) IS
    'Advances a running rollout: while its open group reaches the error threshold (halted: the devices not offered are cancelled) or the success threshold (the next group opens, or the rollout completes after the last), then offers the online pending devices. Returns the state.';

-- ---------------------------------------------------------------- API: keys (operators)
CREATE FUNCTION ota.add_signing_key(key_id text, public_key bytea) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k ota.signing_keys;
BEGIN
    PERFORM isa.not_null('key_id, public_key', key_id, public_key);
    IF key_id !~ '^[A-Za-z0-9._-]{1,64}$' THEN
        RAISE EXCEPTION 'invalid key_id "%": 1 to 64 characters of A-Z a-z 0-9 . _ -', left(key_id, 100) USING ERRCODE = '22023';
    END IF;
    IF octet_length(public_key) <> 32 THEN
        RAISE EXCEPTION 'an Ed25519 public key is 32 bytes, not %', octet_length(public_key) USING ERRCODE = '22023';
    END IF;
    SELECT * INTO k FROM ota.signing_keys x WHERE x.key_id = add_signing_key.key_id OR x.public_key = add_signing_key.public_key;
    IF FOUND THEN
        IF k.key_id = add_signing_key.key_id AND k.public_key = add_signing_key.public_key AND k.retired_at IS NULL THEN
            RETURN false;
        END IF;
        RAISE EXCEPTION 'signing key % (or this public key) exists already%', k.key_id,
            CASE WHEN k.retired_at IS NOT NULL THEN ', retired' ELSE ' with another public key' END
            USING ERRCODE = '23505', HINT = 'A retired key stays retired: add the new key under a new key_id.';
    END IF;
    INSERT INTO ota.signing_keys (key_id, public_key) VALUES (key_id, public_key);
    RETURN true;
END
$$;
COMMENT ON FUNCTION ota.add_signing_key(text, bytea) IS
    'Trusts an Ed25519 public key (32 bytes) for release manifests under key_id: true when added, false when this key was trusted already. 22004, 22023 bad key_id or key, 23505 key_id or key exists with another key or retired.';

CREATE FUNCTION ota.retire_signing_key(key_id text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('key_id', key_id);
    IF NOT EXISTS (SELECT FROM ota.signing_keys x WHERE x.key_id = retire_signing_key.key_id) THEN
        RAISE EXCEPTION 'signing key % not found', key_id USING ERRCODE = 'P0002';
    END IF;
    UPDATE ota.signing_keys x SET retired_at = now() WHERE x.key_id = retire_signing_key.key_id AND x.retired_at IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION ota.retire_signing_key(text) IS
    'Retires a signing key: it verifies no new release (releases it verified stay). true when it retired it, false when it was retired. 22004, P0002 unknown key.';

CREATE FUNCTION ota.list_signing_keys() RETURNS TABLE (key_id text, public_key bytea, added_at timestamptz, retired_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT x.key_id, x.public_key, x.added_at, x.retired_at FROM ota.signing_keys x ORDER BY x.added_at, x.key_id;
END;
COMMENT ON FUNCTION ota.list_signing_keys() IS 'The signing keys, trusted and retired, oldest first.';

-- ---------------------------------------------------------------- API: releases (administrators)
CREATE FUNCTION ota.create_release(actor_id uuid, manifest text, signature bytea) RETURNS ota.release_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m   record;
    k   text;
    f   storage.file_info;
    x   ota.releases;
BEGIN
    PERFORM isa.not_null('actor_id, manifest, signature', actor_id, manifest, signature);
    SELECT * INTO m FROM ota._parse_manifest(manifest);
    k := ota._verify_manifest(manifest, signature);
    f := storage.get_readable_file(actor_id, m.file_id::uuid);
    IF f.size <> m.size OR f.sha256 <> pg_catalog.encode(m.sha256, 'hex') THEN
        RAISE EXCEPTION 'the firmware file % does not match the manifest: % bytes with SHA-256 %, the manifest says % bytes with %',
            f.file_id, f.size, f.sha256, m.size, pg_catalog.encode(m.sha256, 'hex') USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT FROM ota.releases y WHERE y.model = m.model AND y.version = m.version) THEN
        RAISE EXCEPTION 'model "%" has a release % already', m.model, m.version USING ERRCODE = '23505',
            HINT = 'A release is never replaced: publish a higher version.';
    END IF;
    INSERT INTO ota.releases (model, version, file_id, sha256, size, notes, manifest, signature, key_id, created_by)
    VALUES (m.model, m.version, m.file_id::uuid, m.sha256, m.size, m.notes, manifest, signature, k, actor_id)
    RETURNING * INTO x;
    RETURN ota._release_info(x);
END
$$;
COMMENT ON FUNCTION ota.create_release(uuid, text, bytea) IS
    'Creates a release from its manifest (docs/services/ota.md) and the Ed25519 signature of its exact bytes: refused, nothing stored, when the manifest is invalid (22023), the signature verifies with no trusted key (22023; 55000 no key trusted), the firmware file is not one the actor may read (P0002) or its size or SHA-256 differ from the manifest''s (22023), or the model has this version already (23505).';

CREATE FUNCTION ota.get_release(release_id uuid) RETURNS ota.release_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    x ota.releases;
BEGIN
    PERFORM isa.not_null('release_id', release_id);
    SELECT * INTO x FROM ota.releases y WHERE y.release_id = get_release.release_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'release % not found', release_id USING ERRCODE = 'P0002';
    END IF;
    RETURN ota._release_info(x);
END
$$;
COMMENT ON FUNCTION ota.get_release(uuid) IS 'A release. 22004, P0002 unknown release.';

CREATE FUNCTION ota.list_releases(model text DEFAULT NULL) RETURNS SETOF ota.release_info
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT ota._release_info(x) FROM ota.releases x
     WHERE list_releases.model IS NULL OR x.model = list_releases.model
     ORDER BY x.model, x.created_at DESC;
END;
COMMENT ON FUNCTION ota.list_releases(text) IS 'The releases, of one model or all, newest first per model.';

-- ---------------------------------------------------------------- API: rollouts (administrators)
CREATE FUNCTION ota.create_rollout(actor_id uuid, release_id uuid, name text,
                                   groups integer[] DEFAULT '{10,30,60}',
                                   success_threshold integer DEFAULT 90, error_threshold integer DEFAULT 20,
                                   organization_ids uuid[] DEFAULT NULL,
                                   min_version text DEFAULT NULL, max_version text DEFAULT NULL,
                                   forced boolean DEFAULT false, allow_downgrade boolean DEFAULT false,
                                   window_start time DEFAULT NULL, window_end time DEFAULT NULL,
                                   action_timeout integer DEFAULT 3600)
RETURNS ota.rollout_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    x ota.releases;
    r ota.rollouts;
    v_name text := isa.check_text('a rollout''s name', name, 200);
BEGIN
    PERFORM isa.not_null('actor_id, release_id, name, groups, success_threshold, error_threshold, forced, allow_downgrade, action_timeout',
                         actor_id, release_id, name, groups, success_threshold, error_threshold, forced, allow_downgrade,
                         action_timeout);
    PERFORM ota.get_release(release_id);
    SELECT * INTO x FROM ota.releases y WHERE y.release_id = create_rollout.release_id;
    IF cardinality(groups) NOT BETWEEN 1 AND 20 OR array_position(groups, NULL) IS NOT NULL
       OR EXISTS (SELECT FROM unnest(groups) g WHERE g NOT BETWEEN 1 AND 100)
       OR (SELECT sum(g) FROM unnest(groups) g) <> 100 THEN
        RAISE EXCEPTION 'groups must be 1 to 20 percentages from 1 to 100 that sum to 100, not %', groups
            USING ERRCODE = '22023', HINT = 'e.g. {10,30,60}: 10 % of the devices first, then 30 %, then the rest.';
    END IF;
    IF success_threshold NOT BETWEEN 1 AND 100 OR error_threshold NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'success_threshold and error_threshold are percentages from 1 to 100' USING ERRCODE = '22023';
    END IF;
    IF action_timeout NOT BETWEEN 60 AND 86400 THEN
        RAISE EXCEPTION 'action_timeout must be 60 … 86400 seconds, not %', action_timeout USING ERRCODE = '22023';
    END IF;
    IF (window_start IS NULL) <> (window_end IS NULL) THEN
        RAISE EXCEPTION 'a maintenance window needs both window_start and window_end (UTC)' USING ERRCODE = '22023';
    END IF;
    IF organization_ids IS NOT NULL AND (cardinality(organization_ids) = 0 OR array_position(organization_ids, NULL) IS NOT NULL) THEN
        RAISE EXCEPTION 'organization_ids must be NULL (every device of the model) or a list of organizations' USING ERRCODE = '22023';
    END IF;
    IF min_version IS NOT NULL AND NOT ota.version_valid(min_version) OR max_version IS NOT NULL AND NOT ota.version_valid(max_version) THEN
        RAISE EXCEPTION 'min_version and max_version must be semantic versions' USING ERRCODE = '22023';
    END IF;
    IF ota.version_cmp(min_version, max_version) > 0 THEN
        RAISE EXCEPTION 'min_version % is above max_version %', min_version, max_version USING ERRCODE = '22023';
    END IF;
    IF NOT allow_downgrade AND ota.version_cmp(min_version, x.version) > 0 THEN
        RAISE EXCEPTION 'the release % is below min_version %: a downgrade, and the rollout does not allow it', x.version, min_version
            USING ERRCODE = '22023', HINT = 'Anti-rollback: set allow_downgrade to roll a lower version out on purpose.';
    END IF;
    INSERT INTO ota.rollouts (release_id, name, organization_ids, min_version, max_version, groups, success_threshold,
                              error_threshold, forced, allow_downgrade, window_start, window_end, action_timeout, created_by)
    VALUES (release_id, v_name, organization_ids, min_version, max_version, groups, success_threshold,
            error_threshold, forced, allow_downgrade, window_start, window_end, action_timeout, actor_id)
    RETURNING * INTO r;
    RETURN ota._rollout_info(r);
END
$$;
COMMENT ON FUNCTION ota.create_rollout(uuid, uuid, text, integer[], integer, integer, uuid[], text, text, boolean, boolean, time, time, integer) IS
    'Creates a draft rollout of a release to the devices of its model (organization_ids: those organizations only; min_version … max_version: current firmware range), in groups of the given percentages, opening the next group when success_threshold % of a group completed and halting when error_threshold % failed; soft (devices may postpone) or forced; offers only within window_start … window_end (UTC) when set; an offer left without report action_timeout seconds expires. 22004, 22023 bad arguments or a downgrade without allow_downgrade, P0002 unknown release.';

CREATE FUNCTION ota.set_rollout_state(actor_id uuid, rollout_id uuid, state text) RETURNS ota.rollout_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ota.rollouts;
    x ota.releases;
BEGIN
    PERFORM isa.not_null('actor_id, rollout_id, state', actor_id, rollout_id, state);
    IF state NOT IN ('running', 'paused', 'cancelled') THEN
        RAISE EXCEPTION 'state must be running (start or resume), paused or cancelled, not %', state USING ERRCODE = '22023';
    END IF;
    r := ota._rollout(rollout_id, true);
    IF r.state = set_rollout_state.state THEN
        RETURN ota._rollout_info(r);
    END IF;
    IF r.state IN ('completed', 'cancelled', 'halted')
       OR (set_rollout_state.state = 'paused' AND r.state <> 'running') THEN
        RAISE EXCEPTION 'rollout % is %: it cannot become %', rollout_id, r.state, state USING ERRCODE = '23514';
    END IF;
    IF set_rollout_state.state = 'cancelled' THEN
        PERFORM ota._cancel_pending(r.rollout_id, 'the rollout was cancelled');
        UPDATE ota.rollouts y SET state = 'cancelled', finished_at = now(), updated_at = now()
         WHERE y.rollout_id = r.rollout_id RETURNING * INTO r;
    ELSIF set_rollout_state.state = 'paused' THEN
        UPDATE ota.rollouts y SET state = 'paused', updated_at = now() WHERE y.rollout_id = r.rollout_id RETURNING * INTO r;
    ELSIF r.state = 'paused' THEN
        UPDATE ota.rollouts y SET state = 'running', updated_at = now() WHERE y.rollout_id = r.rollout_id;
        PERFORM ota._advance(r.rollout_id);
        r := ota._rollout(rollout_id, false);
    ELSE
        -- the start: every targeted device gets its group, the first group opens
        SELECT * INTO x FROM ota.releases y WHERE y.release_id = r.release_id;
        INSERT INTO ota.rollout_devices (rollout_id, device_id, group_no, state)
        SELECT r.rollout_id, d.device_id, g.group_no, CASE WHEN g.group_no = 1 THEN 'pending' ELSE 'waiting' END
          FROM device.list_model_devices(x.model, r.organization_ids) d,
               LATERAL (SELECT ota.device_group(d.device_id, r.rollout_id, r.groups) AS group_no) g;
        UPDATE ota.rollouts y SET state = 'running', current_group = 1, started_at = now(), updated_at = now()
         WHERE y.rollout_id = r.rollout_id;
        PERFORM ota._advance(r.rollout_id);
        r := ota._rollout(rollout_id, false);
    END IF;
    RETURN ota._rollout_info(r);
END
$$;
COMMENT ON FUNCTION ota.set_rollout_state(uuid, uuid, text) IS
    'An operator moves a rollout: running (a draft starts: each targeted device gets its deterministic group, the first group opens and its online devices are offered; a paused one resumes), paused (no new offers; reports still count), cancelled (the devices not offered yet never are). The same state again returns it unchanged. 22004, 22023 bad state, P0002 unknown rollout, 23514 a finished rollout or pausing one that is not running.';

CREATE FUNCTION ota.get_rollout(rollout_id uuid) RETURNS ota.rollout_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN ota._rollout_info(ota._rollout(rollout_id, false));
END
$$;
COMMENT ON FUNCTION ota.get_rollout(uuid) IS 'A rollout with its devices counted by group and action state. 22004, P0002 unknown rollout.';

CREATE FUNCTION ota.list_rollouts(row_limit integer DEFAULT 100) RETURNS SETOF ota.rollout_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF row_limit IS NULL OR row_limit NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'row_limit must be 1 … 1000' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY SELECT i.* FROM (SELECT * FROM ota.rollouts r ORDER BY r.created_at DESC LIMIT row_limit) r,
                        LATERAL ota._rollout_info(r) i;
END
$$;
COMMENT ON FUNCTION ota.list_rollouts(integer) IS 'The rollouts, newest first (row_limit 1 … 1000, default 100). 22023 bad row_limit.';

-- ---------------------------------------------------------------- API: devices
CREATE FUNCTION ota.check_for_update(device_id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rd ota.rollout_devices;
    r  ota.rollouts;
    x  ota.releases;
BEGIN
    PERFORM isa.not_null('device_id', device_id);
    PERFORM device.lookup_device(device_id);
    -- an open action first, else the oldest running rollout with an offer to make
    FOR rd IN SELECT y.* FROM ota.rollout_devices y JOIN ota.rollouts z USING (rollout_id)
               WHERE y.device_id = check_for_update.device_id AND z.state = 'running'
                 AND y.state IN ('pending', 'offered', 'downloading', 'installing') AND y.group_no <= z.current_group
               ORDER BY y.state = 'pending', z.created_at LOOP
        IF rd.state = 'pending' THEN
            rd := ota._offer(rd.rollout_id, rd.device_id);
        END IF;
        IF rd.state IN ('offered', 'downloading', 'installing') THEN
            SELECT * INTO r FROM ota.rollouts z WHERE z.rollout_id = rd.rollout_id;
            SELECT * INTO x FROM ota.releases z WHERE z.release_id = r.release_id;
            RETURN ota._offer_args(r, x) || jsonb_build_object('state', rd.state, 'command_id', rd.command_id,
                                                                'deadline', isa.iso_time(rd.deadline));
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION ota.check_for_update(uuid) IS
    'The update a device may install now, or NULL: its open offer, else the first pending one of a running rollout whose group is open (offered now, within the window, when still eligible). The offer has the release, its signed manifest, a fresh signed download URL, forced, state, command_id and deadline. 22004, P0002 unknown device.';

CREATE FUNCTION ota.report_progress(device_id uuid, rollout_id uuid, status text, reason text DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rd ota.rollout_devices;
BEGIN
    PERFORM isa.not_null('device_id, rollout_id, status', device_id, rollout_id, status);
    SELECT * INTO rd FROM ota.rollout_devices y
     WHERE y.rollout_id = report_progress.rollout_id AND y.device_id = report_progress.device_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'device % has no update in rollout %', device_id, rollout_id USING ERRCODE = 'P0002';
    END IF;
    RETURN (ota._progress(rd, status, reason)).state;
END
$$;
COMMENT ON FUNCTION ota.report_progress(uuid, uuid, text, text) IS
    'A device reports on its update in a rollout: downloading, installing, completed, failed (reason) or postponed (soft rollouts only); returns the action''s state. 22004, 22023 bad status, P0002 no such update for this device, 23514 not in progress or forced rollout postponed.';

-- ---------------------------------------------------------------- jobs
CREATE FUNCTION ota.advance_rollouts() RETURNS TABLE (action text, n bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rd ota.rollout_devices;
    r  ota.rollouts;
    x  ota.releases;
    k  bigint := 0;
    v_id uuid;
BEGIN
    FOR rd IN SELECT y.* FROM ota.rollout_devices y
               WHERE y.state IN ('offered', 'downloading', 'installing') AND y.deadline <= now()
               ORDER BY y.deadline FOR UPDATE SKIP LOCKED LOOP
        UPDATE ota.rollout_devices y SET state = 'expired', updated_at = now(),
               reason = format('no report for %s s (was %s)', extract(epoch FROM rd.deadline - rd.offered_at)::bigint, rd.state)
         WHERE y.rollout_id = rd.rollout_id AND y.device_id = rd.device_id RETURNING * INTO rd;
        SELECT * INTO r FROM ota.rollouts z WHERE z.rollout_id = rd.rollout_id;
        SELECT * INTO x FROM ota.releases z WHERE z.release_id = r.release_id;
        PERFORM ota._publish('ota.update_failed', r, x, device.lookup_device(rd.device_id),
                             jsonb_build_object('state', 'expired', 'reason', rd.reason));
        k := k + 1;
    END LOOP;
    action := 'actions expired'; n := k;
    RETURN NEXT;

    k := 0;
    FOR v_id IN SELECT z.rollout_id FROM ota.rollouts z WHERE z.state = 'running' ORDER BY z.created_at
                FOR UPDATE SKIP LOCKED LOOP
        PERFORM ota._advance(v_id);
        k := k + 1;
    END LOOP;
    action := 'rollouts advanced'; n := k;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION ota.advance_rollouts() IS
    'The rollouts'' state machine: expires the open actions past their deadline (ota.update_failed, state expired), then advances each running rollout (error threshold halts, success threshold opens the next group or completes) and offers its online pending devices. pg_cron runs it every minute (isa-ota-advance).';

INSERT INTO isa.scheduled_jobs (jobname, schedule, command, description)
VALUES ('isa-ota-advance', '* * * * *', 'SELECT ota.advance_rollouts()',
        'Every minute: expire stale OTA actions, advance running rollouts group by group, offer online devices.')
ON CONFLICT (jobname) DO NOTHING;

-- ---------------------------------------------------------------- handlers
-- device_service.device.online {device_id, …}: a device that comes online is
-- offered what is pending for it (once: an offered action is not pending).
CREATE FUNCTION ota.on_device_online(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    did text := e.data ->> 'device_id';
    v_rollout uuid;
BEGIN
    IF NOT isa.is_uuid(did) THEN
        RAISE WARNING 'ota: device.online % ignored: no device_id', e.id;
        RETURN;
    END IF;
    FOR v_rollout IN SELECT y.rollout_id FROM ota.rollout_devices y JOIN ota.rollouts z USING (rollout_id)
                      WHERE y.device_id = did::uuid AND y.state = 'pending' AND z.state = 'running'
                      ORDER BY z.created_at LOOP
        PERFORM ota._offer(v_rollout, did::uuid);
    END LOOP;
END
$$;
COMMENT ON FUNCTION ota.on_device_online(isa.event) IS
    'Handler of device_service.device.online: offers the device the updates pending for it in running rollouts whose group is open (once: an offered action is no longer pending).';

-- device.ack, from the bridge: a device's ack of its command ota.update is
-- its progress report: result.ota is downloading, installing, completed,
-- failed or postponed (reason: error); ok false without result.ota is a
-- failure.  Acks of other commands are not OTA's.
CREATE FUNCTION ota.on_device_ack(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rd ota.rollout_devices;
    v_status text := e.data -> 'result' ->> 'ota';
BEGIN
    IF NOT isa.is_uuid(e.data ->> 'device_id') OR NOT isa.is_uuid(e.data ->> 'command_id') THEN
        RETURN;                                        -- the device service warns about malformed acks
    END IF;
    SELECT * INTO rd FROM ota.rollout_devices y
     WHERE y.command_id = (e.data ->> 'command_id')::uuid AND y.device_id = (e.data ->> 'device_id')::uuid FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_status IS NULL THEN
        IF (e.data ->> 'ok') = 'false' THEN
            v_status := 'failed';
        ELSE
            RETURN;                                    -- the device received the offer
        END IF;
    END IF;
    BEGIN
        PERFORM ota._progress(rd, v_status, e.data ->> 'error');
    EXCEPTION WHEN invalid_parameter_value OR check_violation THEN
        RAISE WARNING 'ota: report % of device % ignored: %', e.id, rd.device_id, SQLERRM;
    END;
END
$$;
COMMENT ON FUNCTION ota.on_device_ack(isa.event) IS
    'Handler of the acks devices publish over MQTT (isa/devices/<id>/acks): an ack of the device''s own ota.update command with result.ota = downloading, installing, completed, failed or postponed (reason: error) reports its progress as ota.report_progress; ok false without result.ota is failed. A report that does not apply is ignored with a warning; acks of other commands are not OTA''s.';

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ota FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    ota.check_for_update(uuid),
    ota.report_progress(uuid, uuid, text, text)
TO isa_app_ota;
-- Releases and rollouts are administration (isa:admin over HTTP).
GRANT EXECUTE ON FUNCTION
    ota.create_release(uuid, text, bytea), ota.get_release(uuid), ota.list_releases(text),
    ota.create_rollout(uuid, uuid, text, integer[], integer, integer, uuid[], text, text, boolean, boolean, time, time, integer),
    ota.set_rollout_state(uuid, uuid, text), ota.get_rollout(uuid), ota.list_rollouts(integer)
TO isa_app_admin;
-- Which keys are trusted is the operators' (SQL only).
GRANT EXECUTE ON FUNCTION
    ota.add_signing_key(text, bytea), ota.retire_signing_key(text), ota.list_signing_keys(), ota.advance_rollouts()
TO isa_admin;
-- What ota's own code calls of other services and of isa, as isa_svc_ota
-- (device's functions are granted in sql/device/device.sql).
GRANT EXECUTE ON FUNCTION
    storage.get_readable_file(uuid, uuid), storage.sign_download(uuid, integer)
TO isa_svc_ota;

-- ---------------------------------------------------------------- subscriptions
SELECT isa.subscribe_to_events('ota', 'device_service.device.online', 'ota.on_device_online(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('ota', 'isa.devices.*.acks', 'ota.on_device_ack(isa.event)'::regprocedure);

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- Releases and rollouts: administrators (isa:admin); actor_id from the token.
-- A device asks for its update and reports with its device token.
SELECT isa.http_route('POST', '/v1/ota/releases', 'ota.create_release(uuid, text, bytea)', 'admin',
    'Creates a release from its manifest (a JSON string, the exact bytes signed) and Ed25519 signature (base64); the firmware is a storage file the caller may read.',
    subject_param => 'actor_id', status => 201);
SELECT isa.http_route('GET', '/v1/ota/releases', 'ota.list_releases(text)', 'admin',
    'The releases, of one model (query model) or all.');
SELECT isa.http_route('GET', '/v1/ota/releases/{release_id}', 'ota.get_release(uuid)', 'admin',
    'A release.');
SELECT isa.http_route('POST', '/v1/ota/rollouts', 'ota.create_rollout(uuid, uuid, text, integer[], integer, integer, uuid[], text, text, boolean, boolean, time, time, integer)', 'admin',
    'Creates a draft rollout of a release: groups (percentages), thresholds, organizations, version range, forced, allow_downgrade, window, action_timeout.',
    subject_param => 'actor_id', status => 201);
SELECT isa.http_route('GET', '/v1/ota/rollouts', 'ota.list_rollouts(integer)', 'admin',
    'The rollouts, newest first, with their devices counted by group and state.');
SELECT isa.http_route('GET', '/v1/ota/rollouts/{rollout_id}', 'ota.get_rollout(uuid)', 'admin',
    'A rollout, its state and its devices counted by group and state.');
SELECT isa.http_route('POST', '/v1/ota/rollouts/{rollout_id}/state', 'ota.set_rollout_state(uuid, uuid, text)', 'admin',
    'Starts or resumes (state running), pauses or cancels a rollout.', subject_param => 'actor_id');
SELECT isa.http_route('POST', '/v1/device/ota/check', 'ota.check_for_update(uuid)', 'device',
    'The update the calling device may install now (offered now if pending), with its signed manifest and a signed download URL (Range works on it); null when none.',
    subject_param => 'device_id');
SELECT isa.http_route('POST', '/v1/device/ota/progress', 'ota.report_progress(uuid, uuid, text, text)', 'device',
    'The calling device reports on its update (body: rollout_id, status downloading, installing, completed, failed or postponed, reason).',
    subject_param => 'device_id');
