-- device.sql — the device service (schema device, source device_service):
-- smart frames and their owners, names, organization, firmware, presence
-- (online/offline from heartbeats) and commands (pending → sent →
-- acknowledged, failed or expired), delivered to the device's NATS subject
-- isa.devices.<id>.commands as direct messages the bridge publishes
-- (isa.send_direct_message, docs/bridge.md "Direct messages").  auth keeps
-- each device's key and its challenge/response (auth.devices, registered and
-- unregistered through auth's admin functions); everything else about a
-- device is here.  It calls auth and organization; it reacts to
-- organization.member_removed and auth's device.authenticated.
-- docs/services/device.md documents the API, the events and the handlers.

-- ---------------------------------------------------------------- tables
CREATE TABLE device.devices (
    device_id        uuid PRIMARY KEY,                   -- UUIDv7; auth's device id is its text
    serial           text NOT NULL CHECK (serial ~ '^[A-Za-z0-9._:/-]{1,128}$'),
    model            text NOT NULL CHECK (model <> '' AND length(model) <= 100),
    owner_id         uuid NOT NULL,                      -- account's user (no cross-schema foreign key)
    organization_id  uuid,                               -- organization's, if the device belongs to one
    name             text NOT NULL CHECK (name <> '' AND length(name) <= 200),
    firmware_version text CHECK (length(firmware_version) BETWEEN 1 AND 64),
    status           text NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'offline')),
    last_seen_at     timestamptz,
    registered_by    uuid NOT NULL,
    idempotency_key  text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    registered_at    timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    decommissioned_at timestamptz,
    CHECK (decommissioned_at IS NULL OR status = 'offline'),
    CONSTRAINT devices_idempotency_key UNIQUE (registered_by, idempotency_key)
);
-- A serial names one device in service; a decommissioned one frees it.
CREATE UNIQUE INDEX devices_serial ON device.devices (serial) WHERE decommissioned_at IS NULL;
CREATE INDEX devices_owner ON device.devices (owner_id);
CREATE INDEX devices_organization ON device.devices (organization_id) WHERE organization_id IS NOT NULL;
CREATE INDEX devices_online ON device.devices (last_seen_at) WHERE status = 'online';
COMMENT ON TABLE device.devices IS
    'Devices: serial, model, owner, organization, name, firmware, presence (online/offline, last seen) and decommissioning. Their keys are auth''s (auth.devices).';

CREATE TABLE device.commands (
    command_id      uuid PRIMARY KEY,                    -- UUIDv7; devices deduplicate by it
    device_id       uuid NOT NULL REFERENCES device.devices,
    command         text NOT NULL CHECK (command ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    args            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(args) = 'object'),
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sent', 'acknowledged', 'failed', 'expired')),
    sent_by         uuid NOT NULL,
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    attempts        integer NOT NULL DEFAULT 0,          -- times handed to the bridge
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    sent_at         timestamptz,                         -- the first time it went out
    next_attempt_at timestamptz,                         -- when an unacknowledged one goes out again
    finished_at     timestamptz,                         -- acknowledged, failed or expired
    result          jsonb,                               -- what the device answered
    error           text,
    CHECK ((state IN ('acknowledged', 'failed', 'expired')) = (finished_at IS NOT NULL)),
    CONSTRAINT commands_idempotency_key UNIQUE (sent_by, idempotency_key)
);
CREATE INDEX commands_device ON device.commands (device_id, created_at);
CREATE INDEX commands_open ON device.commands (next_attempt_at) WHERE state IN ('pending', 'sent');
COMMENT ON TABLE device.commands IS
    'Commands sent to devices: pending until the device is online, sent (again with backoff) until acknowledged, failed, or expired.';

-- Acks and heartbeats devices publish over MQTT, by the id in their payload:
-- the bridge may deliver one twice, and a device may publish one twice.
CREATE TABLE device.device_messages (
    device_id   uuid NOT NULL,
    message_id  text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, message_id)
);
COMMENT ON TABLE device.device_messages IS
    'Ids of the messages devices sent over MQTT (acks, heartbeats) already applied; purged after a day by device.housekeeping().';

-- Every NATS credential device.nats_credentials issued, by its user's public
-- key, kept until a day after it expired.  Decommissioning marks the
-- device's unexpired ones revoked (the queue: revoked, not pushed); the
-- revoker (tools/isa-nats-revoker, outside the database: it holds the NATS
-- operator's signing key) lists them in the account JWT's revocations, pushes
-- it to the servers and marks them pushed once a server took it
-- (docs/services/device.md, "Revocation").
CREATE TABLE device.nats_keys (
    public_key text PRIMARY KEY CHECK (public_key ~ '^U[A-Z2-7]{55}$'),
    device_id  uuid NOT NULL REFERENCES device.devices,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,                              -- its device was decommissioned
    pushed_at  timestamptz,                              -- a server took the account JWT revoking it
    CHECK (pushed_at IS NULL OR revoked_at IS NOT NULL)
);
CREATE INDEX nats_keys_device ON device.nats_keys (device_id);
CREATE INDEX nats_keys_revoked ON device.nats_keys (revoked_at) WHERE revoked_at IS NOT NULL;
COMMENT ON TABLE device.nats_keys IS
    'The NATS credentials issued to devices (user public key, expiry) and their revocation: revoked at decommissioning, pushed once the account JWT listing it reached NATS; purged a day after expiry by device.housekeeping().';

-- ---------------------------------------------------------------- types
CREATE TYPE device.device_info AS (
    device_id         uuid,
    serial            text,
    model             text,
    owner_id          uuid,
    organization_id   uuid,
    name              text,
    firmware_version  text,
    status            text,          -- online, offline, or decommissioned
    last_seen_at      timestamptz,
    registered_at     timestamptz,
    decommissioned_at timestamptz
);
COMMENT ON TYPE device.device_info IS 'A device as the device API returns it.';

CREATE TYPE device.command_info AS (
    command_id      uuid,
    device_id       uuid,
    command         text,
    args            jsonb,
    state           text,
    attempts        integer,
    sent_by         uuid,
    created_at      timestamptz,
    sent_at         timestamptz,
    expires_at      timestamptz,
    finished_at     timestamptz,
    result          jsonb,
    error           text
);
COMMENT ON TYPE device.command_info IS 'A command as the device API returns it.';

CREATE TYPE device.nats_credential AS (
    device_id        uuid,
    jwt              text,          -- MQTT: the password (any username); NATS: a bearer JWT
    expires_at       timestamptz,
    commands_topic   text,          -- MQTT topics of the device (docs/services/device.md, "MQTT")
    acks_topic       text,
    heartbeat_topic  text
);
COMMENT ON TYPE device.nats_credential IS 'A device''s expiring NATS credential, as device.nats_credentials returns it.';

-- ---------------------------------------------------------------- C (extension/device/)
CREATE FUNCTION device._offline_after() RETURNS integer
    AS 'MODULE_PATHNAME', 'isa_device_offline_after_setting' LANGUAGE C STABLE;
COMMENT ON FUNCTION device._offline_after() IS
    'isa.device_offline_after in seconds: how long after its last heartbeat a device is marked offline.';
CREATE FUNCTION device._nats_settings(OUT signing_key text, OUT account text, OUT ttl integer)
    AS 'MODULE_PATHNAME', 'isa_device_nats_settings' LANGUAGE C STABLE;
COMMENT ON FUNCTION device._nats_settings() IS
    'isa.device_nats_signing_key (superuser-only), isa.device_nats_account and isa.device_nats_ttl, for device.nats_credentials; executable by the device service''s role only.';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('device.registered', 'device_service', '1.0.0',
    'A device was registered: its key is auth''s, its record the device service''s.',
    '{"device_id":       {"type": "uuid",   "required": true,  "description": "The new device."},
      "owner_id":        {"type": "uuid",   "required": true,  "description": "Its owner."},
      "organization_id": {"type": "uuid",   "required": false, "description": "The organization it belongs to; absent when none."},
      "serial":          {"type": "string", "required": true,  "description": "Its serial number."},
      "model":           {"type": "string", "required": true,  "description": "Its model."},
      "name":            {"type": "string", "required": true,  "description": "Its name."},
      "registered_by":   {"type": "uuid",   "required": true,  "description": "Who registered it: the owner or an admin of the organization."}}');
SELECT isa.register_event_type('device.moved', 'device_service', '1.0.0',
    'A device moved to another organization, or out of one.',
    '{"device_id":           {"type": "uuid", "required": true,  "description": "The device."},
      "owner_id":            {"type": "uuid", "required": true,  "description": "Its owner."},
      "old_organization_id": {"type": "uuid", "required": false, "description": "The organization it left; null when none."},
      "organization_id":     {"type": "uuid", "required": false, "description": "The organization it belongs to now; null when none."},
      "moved_by":            {"type": "uuid", "required": true,  "description": "Who moved it."}}');
SELECT isa.register_event_type('device.online', 'device_service', '1.0.0',
    'A device that was offline sent a heartbeat: once per transition.',
    '{"device_id":       {"type": "uuid",      "required": true,  "description": "The device."},
      "owner_id":        {"type": "uuid",      "required": true,  "description": "Its owner."},
      "organization_id": {"type": "uuid",      "required": false, "description": "Its organization; null when none."},
      "last_seen_at":    {"type": "timestamp", "required": true,  "description": "The heartbeat."}}');
SELECT isa.register_event_type('device.offline', 'device_service', '1.0.0',
    'An online device sent no heartbeat for isa.device_offline_after: once per transition.',
    '{"device_id":       {"type": "uuid",      "required": true,  "description": "The device."},
      "owner_id":        {"type": "uuid",      "required": true,  "description": "Its owner."},
      "organization_id": {"type": "uuid",      "required": false, "description": "Its organization; null when none."},
      "last_seen_at":    {"type": "timestamp", "required": true,  "description": "Its last heartbeat."}}');
SELECT isa.register_event_type('device.command_sent', 'device_service', '1.0.0',
    'A command went out to its device for the first time (re-sends publish nothing).',
    '{"command_id": {"type": "uuid",      "required": true, "description": "The command; the device deduplicates by it."},
      "device_id":  {"type": "uuid",      "required": true, "description": "The device."},
      "command":    {"type": "string",    "required": true, "description": "The command''s name, e.g. display.refresh."},
      "sent_by":    {"type": "uuid",      "required": true, "description": "The user who sent it."},
      "expires_at": {"type": "timestamp", "required": true, "description": "When it expires unacknowledged."}}');
SELECT isa.register_event_type('device.decommissioned', 'device_service', '1.0.0',
    'A device was taken out of service: its key and tokens ended, its open commands failed.',
    '{"device_id":         {"type": "uuid", "required": true,  "description": "The device."},
      "owner_id":          {"type": "uuid", "required": true,  "description": "Its owner."},
      "organization_id":   {"type": "uuid", "required": false, "description": "Its organization; null when none."},
      "decommissioned_by": {"type": "uuid", "required": true,  "description": "Who decommissioned it."}}');

-- ---------------------------------------------------------------- internal helpers
-- How long an unacknowledged command waits before it goes out again: 10 s,
-- doubling with each attempt, at most 5 minutes.
CREATE FUNCTION device._resend_delay(attempts integer) RETURNS interval
    LANGUAGE sql IMMUTABLE
    RETURN make_interval(secs => least(10 * power(2, greatest(attempts - 1, 0)), 300));

CREATE FUNCTION device._check_text(what text, value text, max_len integer) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null(what, value);
    RETURN isa.check_text('a device''s ' || what, value, max_len);
END
$$;

CREATE FUNCTION device._info(d device.devices) RETURNS device.device_info
    LANGUAGE sql IMMUTABLE
    RETURN ROW(d.device_id, d.serial, d.model, d.owner_id, d.organization_id, d.name, d.firmware_version,
               CASE WHEN d.decommissioned_at IS NOT NULL THEN 'decommissioned' ELSE d.status END,
               d.last_seen_at, d.registered_at, d.decommissioned_at)::device.device_info;

CREATE FUNCTION device._command_info(c device.commands) RETURNS device.command_info
    LANGUAGE sql IMMUTABLE
    RETURN ROW(c.command_id, c.device_id, c.command, c.args, c.state, c.attempts, c.sent_by, c.created_at,
               c.sent_at, c.expires_at, c.finished_at, c.result, c.error)::device.command_info;

-- The device, locked FOR UPDATE when it is to change, or P0002.
CREATE FUNCTION device._device(p_device_id uuid, p_lock boolean) RETURNS device.devices
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d device.devices;
BEGIN
    PERFORM isa.not_null('device_id', p_device_id);
    IF p_lock THEN
        SELECT * INTO d FROM device.devices x WHERE x.device_id = p_device_id FOR UPDATE;
    ELSE
        SELECT * INTO d FROM device.devices x WHERE x.device_id = p_device_id;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'device % not found', p_device_id USING ERRCODE = 'P0002';
    END IF;
    RETURN d;
END
$$;

-- A device in service, or 23514.
CREATE FUNCTION device._in_service(d device.devices) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF d.decommissioned_at IS NOT NULL THEN
        RAISE EXCEPTION 'device % is decommissioned', d.device_id USING ERRCODE = '23514';
    END IF;
END
$$;

-- The actor's right over a device, asked live of organization at every call
-- (so a removed member loses it at once): 'manage' (the owner, an owner or
-- admin of its organization), 'command' (those, and a member of its
-- organization), 'view' (those, a guest of its organization, and a member of
-- an organization it is shared with: organization.can_access), or NULL.  The
-- organization's roles count while the device's owner is a member of it: a
-- device whose owner left (or was removed) is no longer the organization's.
CREATE FUNCTION device._right(d device.devices, p_actor uuid) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r text;
BEGIN
    IF d.owner_id = p_actor THEN
        RETURN 'manage';
    END IF;
    IF d.organization_id IS NOT NULL AND organization.member_role(d.organization_id, d.owner_id) IS NOT NULL THEN
        r := organization.member_role(d.organization_id, p_actor);
        IF r IN ('owner', 'admin') THEN
            RETURN 'manage';
        ELSIF r = 'member' THEN
            RETURN 'command';
        ELSIF r = 'guest' THEN
            RETURN 'view';
        END IF;
    END IF;
    IF organization.can_access(p_actor, 'device', d.device_id) THEN
        RETURN 'view';
    END IF;
    RETURN NULL;
END
$$;

-- The actor's right, at least p_need (view < command < manage), or 42501.
CREATE FUNCTION device._require(d device.devices, p_actor uuid, p_need text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r    text;
    rank text[] := ARRAY['view', 'command', 'manage'];
BEGIN
    PERFORM isa.not_null('actor_id', p_actor);
    r := device._right(d, p_actor);
    IF r IS NULL OR array_position(rank, r) < array_position(rank, p_need) THEN
        RAISE EXCEPTION 'not allowed: user % may not % device %', p_actor,
            CASE p_need WHEN 'manage' THEN 'manage' WHEN 'command' THEN 'send commands to' ELSE 'see' END,
            d.device_id
            USING ERRCODE = '42501',
                  HINT = 'The owner and the owners and admins of its organization manage a device; its members send commands.';
    END IF;
END
$$;

-- Whether a device's owner may bring it into an organization: a member, not a guest.
CREATE FUNCTION device._check_owner_in(p_org uuid, p_owner uuid) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(organization.member_role(p_org, p_owner), 'none') NOT IN ('owner', 'admin', 'member') THEN
        RAISE EXCEPTION 'the owner % is not a member of organization %', p_owner, p_org USING ERRCODE = '42501',
            HINT = 'A device belongs to an organization its owner is a member of (not a guest).';
    END IF;
END
$$;

-- Hands a command to the bridge (isa.devices.<id>.commands), counts the
-- attempt and schedules the next one; the first time, device.command_sent.
CREATE FUNCTION device._transmit(c device.commands) RETURNS device.commands
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    first boolean := c.sent_at IS NULL;
BEGIN
    PERFORM isa.send_direct_message('isa.devices.' || c.device_id || '.commands',
        jsonb_build_object('command_id', c.command_id, 'command', c.command, 'args', c.args,
                           'expires_at', isa.iso_time(c.expires_at), 'attempt', c.attempts + 1));
    UPDATE device.commands x
       SET state = 'sent', attempts = x.attempts + 1, sent_at = coalesce(x.sent_at, now()),
           next_attempt_at = now() + device._resend_delay(x.attempts + 1)
     WHERE x.command_id = c.command_id
    RETURNING * INTO c;
    IF first THEN
        PERFORM isa.publish_event('device.command_sent', 'device_service',
            jsonb_build_object('command_id', c.command_id, 'device_id', c.device_id, 'command', c.command,
                               'sent_by', c.sent_by, 'expires_at', isa.iso_time(c.expires_at)));
    END IF;
    RETURN c;
END
$$;

-- A device was seen at p_at: its last_seen_at moves forward, its firmware is
-- recorded; an offline device becomes online (device.online, once) and its
-- open commands go out now.  A decommissioned device changes nothing.
CREATE FUNCTION device._seen(p_device_id uuid, p_at timestamptz, p_firmware text) RETURNS device.devices
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d   device.devices := device._device(p_device_id, true);
    was text := d.status;
    c   device.commands;
BEGIN
    IF d.decommissioned_at IS NOT NULL THEN
        RETURN d;
    END IF;
    UPDATE device.devices x
       SET last_seen_at = greatest(x.last_seen_at, p_at), status = 'online',
           firmware_version = coalesce(p_firmware, x.firmware_version),
           updated_at = CASE WHEN p_firmware IS DISTINCT FROM x.firmware_version AND p_firmware IS NOT NULL
                             THEN now() ELSE x.updated_at END
     WHERE x.device_id = p_device_id
    RETURNING * INTO d;
    IF was = 'offline' THEN
        PERFORM isa.publish_event('device.online', 'device_service',
            jsonb_build_object('device_id', d.device_id, 'owner_id', d.owner_id,
                               'organization_id', d.organization_id, 'last_seen_at', isa.iso_time(d.last_seen_at)));
        FOR c IN SELECT * FROM device.commands x
                  WHERE x.device_id = p_device_id AND x.state IN ('pending', 'sent') AND x.expires_at > now()
                  ORDER BY x.command_id FOR UPDATE LOOP
            PERFORM device._transmit(c);
        END LOOP;
    END IF;
    RETURN d;
END
$$;

-- Ends a command that is still open: acknowledged, failed or expired.
CREATE FUNCTION device._finish(p_command_id uuid, p_state text, p_result jsonb, p_error text) RETURNS device.commands
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c device.commands;
BEGIN
    UPDATE device.commands x
       SET state = p_state, finished_at = now(), next_attempt_at = NULL, result = p_result, error = p_error
     WHERE x.command_id = p_command_id AND x.state IN ('pending', 'sent')
    RETURNING * INTO c;
    RETURN c;
END
$$;

-- A device answers one of its own commands (over HTTP or MQTT): acknowledged
-- or failed while it is open; an answer repeated, or after the command ended,
-- changes nothing.  The command as it is now; all NULL if the device has no
-- such command (another device's is none of its own).
CREATE FUNCTION device._answer(p_device_id uuid, p_command_id uuid, p_success boolean, p_result jsonb, p_error text)
RETURNS device.commands
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c device.commands;
BEGIN
    SELECT * INTO c FROM device.commands x
     WHERE x.command_id = p_command_id AND x.device_id = p_device_id FOR UPDATE;
    IF FOUND AND c.state IN ('pending', 'sent') AND c.expires_at > now() THEN
        c := device._finish(c.command_id, CASE WHEN p_success THEN 'acknowledged' ELSE 'failed' END, p_result,
                            CASE WHEN NOT p_success THEN coalesce(left(p_error, 1000), 'failed on the device') END);
    END IF;
    RETURN c;
END
$$;

-- A device message (docs/bridge.md, "Device messages") not applied before:
-- false if its message_id was seen already (the device published it twice).
-- Without message_id, only the bridge's inbox dedupes (a redelivery).
CREATE FUNCTION device._first_message(e isa.event) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT e.data ? 'message_id' THEN
        RETURN true;
    END IF;
    INSERT INTO device.device_messages (device_id, message_id)
    VALUES ((e.data ->> 'device_id')::uuid, e.data ->> 'message_id')
    ON CONFLICT DO NOTHING;
    RETURN FOUND;
END
$$;

-- Whether a device message can be applied: a device id (the bridge's, from
-- the subject) and, if there is one, a message_id of 1 to 255 characters.
CREATE FUNCTION device._check_message(e isa.event) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT isa.is_uuid(e.data ->> 'device_id') THEN
        RAISE WARNING 'device: % % ignored: no device id %', e.event_type, e.id, e.data -> 'device_id';
        RETURN false;
    END IF;
    IF e.data ? 'message_id' AND (jsonb_typeof(e.data -> 'message_id') <> 'string'
                                  OR length(e.data ->> 'message_id') NOT BETWEEN 1 AND 255) THEN
        RAISE WARNING 'device: % % of device % ignored: message_id must be a string of 1 to 255 characters, got %',
            e.event_type, e.id, e.data ->> 'device_id', e.data -> 'message_id';
        RETURN false;
    END IF;
    RETURN true;
END
$$;

-- ---------------------------------------------------------------- API: registration and management
CREATE FUNCTION device.register_device(actor_id uuid, serial text, model text, public_key bytea, name text,
                                       organization_id uuid DEFAULT NULL, owner_id uuid DEFAULT NULL,
                                       firmware_version text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS device.device_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_owner uuid := coalesce(register_device.owner_id, register_device.actor_id);
    v_name  text := device._check_text('name', name, 200);
    v_model text := device._check_text('model', model, 100);
    v_fw    text;
    d       device.devices;
BEGIN
    PERFORM isa.not_null('actor_id, serial, public_key', actor_id, serial, public_key);
    IF serial !~ '^[A-Za-z0-9._:/-]{1,128}$' THEN
        RAISE EXCEPTION 'invalid serial "%"', left(serial, 140) USING ERRCODE = '22023',
            HINT = 'A serial is 1 to 128 characters of A-Z a-z 0-9 . _ : / -';
    END IF;
    IF firmware_version IS NOT NULL THEN
        v_fw := device._check_text('firmware_version', firmware_version, 64);
    END IF;
    PERFORM isa.check_idempotency_key(idempotency_key);
    PERFORM account.require_user(actor_id);
    IF idempotency_key IS NOT NULL THEN
        -- Serialise the actor's calls with one key: the second waits here for the first.
        PERFORM pg_advisory_xact_lock(hashtextextended('device.register:' || actor_id::text || ':' || idempotency_key, 0));
        SELECT * INTO d FROM device.devices x
         WHERE x.registered_by = register_device.actor_id AND x.idempotency_key = register_device.idempotency_key;
        IF FOUND THEN
            IF d.serial <> register_device.serial OR d.model <> v_model OR d.name <> v_name
               OR d.owner_id <> v_owner OR d.organization_id IS DISTINCT FROM register_device.organization_id
               OR d.firmware_version IS DISTINCT FROM v_fw THEN
                RAISE EXCEPTION 'idempotency key "%" was already used to register another device', idempotency_key
                    USING ERRCODE = '23505', HINT = 'Use a new idempotency key for a new device.';
            END IF;
            -- the same key: auth says false; another key: 23505 (auth's check, not its table)
            IF d.decommissioned_at IS NULL THEN
                PERFORM auth.register_device(d.device_id::text, public_key, NULL);
            END IF;
            RETURN device._info(d);
        END IF;
    END IF;
    IF v_owner <> actor_id THEN
        -- registering for someone else: an owner or admin of the organization, for one of its members
        IF organization_id IS NULL
           OR coalesce(organization.member_role(organization_id, actor_id), 'none') NOT IN ('owner', 'admin') THEN
            RAISE EXCEPTION 'not allowed: only an owner or admin of the device''s organization registers a device for another user'
                USING ERRCODE = '42501';
        END IF;
        PERFORM account.require_user(v_owner);
    END IF;
    IF organization_id IS NOT NULL THEN
        PERFORM device._check_owner_in(organization_id, v_owner);
    END IF;
    IF EXISTS (SELECT FROM device.devices x WHERE x.serial = register_device.serial AND x.decommissioned_at IS NULL) THEN
        RAISE EXCEPTION 'a device with serial "%" is already registered', serial USING ERRCODE = '23505',
            HINT = 'Decommission it first.';
    END IF;

    INSERT INTO device.devices AS x (device_id, serial, model, owner_id, organization_id, name, firmware_version,
                                     registered_by, idempotency_key)
    VALUES (isa.uuid_v7(), register_device.serial, v_model, v_owner, register_device.organization_id, v_name, v_fw,
            actor_id, register_device.idempotency_key)
    RETURNING * INTO d;
    -- the key is auth's: the device authenticates there (challenge/response).
    -- No owner in auth: the device service alone says who owns a device.
    PERFORM auth.register_device(d.device_id::text, public_key, NULL);
    PERFORM isa.publish_event('device.registered', 'device_service',
        jsonb_strip_nulls(jsonb_build_object('device_id', d.device_id, 'owner_id', d.owner_id,
                                             'organization_id', d.organization_id, 'serial', d.serial,
                                             'model', d.model, 'name', d.name, 'registered_by', actor_id)));
    RETURN device._info(d);
END
$$;
COMMENT ON FUNCTION device.register_device(uuid, text, text, bytea, text, uuid, uuid, text, text) IS
    'Registers a device (its Ed25519 public key goes to auth) owned by owner_id (default the actor; another owner only by an owner or admin of organization_id), optionally in an organization its owner is a member of; publishes device.registered. The same idempotency key with the same arguments returns the first device; with others 23505. 23505 serial in use, 22023 bad serial, model, name, firmware or key, 42501 not allowed, P0002 unknown user.';

CREATE FUNCTION device.rename_device(actor_id uuid, device_id uuid, name text) RETURNS device.device_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name text := device._check_text('name', name, 200);
    d      device.devices := device._device(device_id, true);
BEGIN
    PERFORM device._require(d, actor_id, 'manage');
    PERFORM device._in_service(d);
    UPDATE device.devices x SET name = v_name, updated_at = now()
     WHERE x.device_id = rename_device.device_id AND x.name <> v_name
    RETURNING * INTO d;
    RETURN device._info(device._device(device_id, false));
END
$$;
COMMENT ON FUNCTION device.rename_device(uuid, uuid, text) IS
    'Renames a device (its owner, or an owner or admin of its organization). 22023 bad name, 42501 not allowed, P0002 unknown device, 23514 decommissioned.';

CREATE FUNCTION device.move_device(actor_id uuid, device_id uuid, organization_id uuid) RETURNS device.device_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d   device.devices := device._device(device_id, true);
    old uuid := d.organization_id;
BEGIN
    PERFORM device._require(d, actor_id, 'manage');
    PERFORM device._in_service(d);
    IF organization_id IS NOT DISTINCT FROM old THEN
        RETURN device._info(d);
    END IF;
    IF organization_id IS NOT NULL THEN
        PERFORM device._check_owner_in(organization_id, d.owner_id);
        -- someone else's device joins an organization only by an owner or admin of it
        IF d.owner_id <> actor_id
           AND coalesce(organization.member_role(organization_id, actor_id), 'none') NOT IN ('owner', 'admin') THEN
            RAISE EXCEPTION 'not allowed: user % is not an owner or admin of organization %', actor_id, organization_id
                USING ERRCODE = '42501';
        END IF;
    END IF;
    UPDATE device.devices x SET organization_id = move_device.organization_id, updated_at = now()
     WHERE x.device_id = move_device.device_id
    RETURNING * INTO d;
    PERFORM isa.publish_event('device.moved', 'device_service',
        jsonb_build_object('device_id', d.device_id, 'owner_id', d.owner_id, 'old_organization_id', old,
                           'organization_id', d.organization_id, 'moved_by', actor_id));
    RETURN device._info(d);
END
$$;
COMMENT ON FUNCTION device.move_device(uuid, uuid, uuid) IS
    'Moves a device into an organization its owner is a member of (not a guest), or out of any (NULL); by its owner or an owner or admin of its organization (of the new one too, for someone else''s device); publishes device.moved. 42501 not allowed or owner not a member, P0002 unknown device, 23514 decommissioned.';

CREATE FUNCTION device.decommission_device(actor_id uuid, device_id uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d device.devices := device._device(device_id, true);
    c device.commands;
BEGIN
    PERFORM device._require(d, actor_id, 'manage');
    IF d.decommissioned_at IS NOT NULL THEN
        RETURN false;
    END IF;
    UPDATE device.devices x SET decommissioned_at = now(), status = 'offline', updated_at = now()
     WHERE x.device_id = decommission_device.device_id
    RETURNING * INTO d;
    FOR c IN SELECT * FROM device.commands x
              WHERE x.device_id = decommission_device.device_id AND x.state IN ('pending', 'sent') FOR UPDATE LOOP
        PERFORM device._finish(c.command_id, 'failed', NULL, 'device decommissioned');
    END LOOP;
    -- its key goes and its device tokens end (auth); its NATS credentials are
    -- no longer issued (device.nats_credentials), and those it holds are
    -- revoked: the revoker, woken by the notification at commit, pushes them
    -- to NATS, which closes the device's connections
    PERFORM auth.unregister_device(d.device_id::text);
    UPDATE device.nats_keys k SET revoked_at = now()
     WHERE k.device_id = d.device_id AND k.revoked_at IS NULL AND k.expires_at > now();
    IF FOUND THEN
        PERFORM pg_notify('isa_device_nats_revocations', '');
    END IF;
    PERFORM isa.publish_event('device.decommissioned', 'device_service',
        jsonb_build_object('device_id', d.device_id, 'owner_id', d.owner_id,
                           'organization_id', d.organization_id, 'decommissioned_by', actor_id));
    RETURN true;
END
$$;
COMMENT ON FUNCTION device.decommission_device(uuid, uuid) IS
    'Takes a device out of service (its owner, or an owner or admin of its organization): auth forgets its key and ends its sessions, its open commands fail, its unexpired NATS credentials are revoked (device.nats_keys; the revoker is notified on channel isa_device_nats_revocations), its serial is free again; publishes device.decommissioned. true if it did, false if it was decommissioned already. 42501 not allowed, P0002 unknown device.';

-- ---------------------------------------------------------------- API: reads
CREATE FUNCTION device.get_device(actor_id uuid, device_id uuid) RETURNS device.device_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d device.devices := device._device(device_id, false);
BEGIN
    PERFORM device._require(d, actor_id, 'view');
    RETURN device._info(d);
END
$$;
COMMENT ON FUNCTION device.get_device(uuid, uuid) IS
    'A device and its status (online, offline, decommissioned) for its owner, a member of its organization, or a member of an organization it is shared with (organization.can_access). 42501 not allowed, P0002 unknown device.';

CREATE FUNCTION device.list_my_devices(actor_id uuid, row_limit integer DEFAULT 100) RETURNS SETOF device.device_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('actor_id', actor_id);
    PERFORM isa.check_page_size('row_limit', row_limit);
    RETURN QUERY SELECT (device._info(d)).* FROM device.devices d
                  WHERE d.owner_id = list_my_devices.actor_id AND d.decommissioned_at IS NULL
                  ORDER BY d.registered_at, d.device_id LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION device.list_my_devices(uuid, integer) IS
    'The devices the actor owns and that are in service, oldest first. 22023 row_limit outside 1 … 1000.';

CREATE FUNCTION device.list_organization_devices(actor_id uuid, org_id uuid, row_limit integer DEFAULT 100)
RETURNS SETOF device.device_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('actor_id, org_id', actor_id, org_id);
    PERFORM isa.check_page_size('row_limit', row_limit);
    IF organization.member_role(org_id, actor_id) IS NULL THEN
        RAISE EXCEPTION 'user % is not a member of organization %', actor_id, org_id USING ERRCODE = '42501';
    END IF;
    RETURN QUERY SELECT (device._info(d)).* FROM device.devices d
                  WHERE d.organization_id = list_organization_devices.org_id AND d.decommissioned_at IS NULL
                    AND organization.member_role(d.organization_id, d.owner_id) IS NOT NULL
                  ORDER BY d.registered_at, d.device_id LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION device.list_organization_devices(uuid, uuid, integer) IS
    'The devices in service of an organization whose owners are its members, for its members (any role), oldest first. 42501 not a member, 22023 row_limit outside 1 … 1000.';

-- ---------------------------------------------------------------- API: commands
CREATE FUNCTION device.send_command(actor_id uuid, device_id uuid, command text, args jsonb DEFAULT '{}',
                                    idempotency_key text DEFAULT NULL, ttl_seconds integer DEFAULT 3600)
RETURNS device.command_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d device.devices;
    c device.commands;
    v_args jsonb := coalesce(args, '{}');
BEGIN
    PERFORM isa.not_null('actor_id, device_id, command, ttl_seconds', actor_id, device_id, command, ttl_seconds);
    IF command !~ '^[a-z][a-z0-9_.-]{0,63}$' THEN
        RAISE EXCEPTION 'invalid command "%"', left(command, 100) USING ERRCODE = '22023',
            HINT = 'A command is 1 to 64 characters of a-z 0-9 _ . -, starting with a letter.';
    END IF;
    IF jsonb_typeof(v_args) <> 'object' OR octet_length(v_args::text) > 16384 THEN
        RAISE EXCEPTION 'args must be a JSON object of at most 16 KiB' USING ERRCODE = '22023';
    END IF;
    IF ttl_seconds NOT BETWEEN 10 AND 7 * 24 * 3600 THEN
        RAISE EXCEPTION 'ttl_seconds must be 10 … 604800, not %', ttl_seconds USING ERRCODE = '22023';
    END IF;
    PERFORM isa.check_idempotency_key(idempotency_key);
    d := device._device(device_id, true);
    PERFORM device._require(d, actor_id, 'command');
    IF idempotency_key IS NOT NULL THEN
        SELECT * INTO c FROM device.commands x
         WHERE x.sent_by = send_command.actor_id AND x.idempotency_key = send_command.idempotency_key;
        IF FOUND THEN
            IF c.device_id <> send_command.device_id OR c.command <> send_command.command OR c.args <> v_args THEN
                RAISE EXCEPTION 'idempotency key "%" was already used for another command', idempotency_key
                    USING ERRCODE = '23505', HINT = 'Use a new idempotency key for a new command.';
            END IF;
            RETURN device._command_info(c);
        END IF;
    END IF;
    PERFORM device._in_service(d);
    INSERT INTO device.commands AS x (command_id, device_id, command, args, sent_by, idempotency_key, expires_at)
    VALUES (isa.uuid_v7(), send_command.device_id, send_command.command, v_args, actor_id,
            send_command.idempotency_key, now() + make_interval(secs => ttl_seconds))
    RETURNING * INTO c;
    -- an offline device gets it when it comes online (device._seen)
    IF d.status = 'online' THEN
        c := device._transmit(c);
    END IF;
    RETURN device._command_info(c);
END
$$;
COMMENT ON FUNCTION device.send_command(uuid, uuid, text, jsonb, text, integer) IS
    'Queues a command for a device (its owner, or an owner, admin or member of its organization) and returns at once with its id: sent now to isa.devices.<id>.commands if the device is online (device.command_sent), else when it comes online; re-sent with backoff until acknowledged or expired (ttl_seconds, default an hour). The same idempotency key with the same device, command and args returns the first; with others 23505. 22023 bad command, args or ttl, 42501 not allowed, P0002 unknown device, 23514 decommissioned.';

CREATE FUNCTION device.get_command(actor_id uuid, command_id uuid) RETURNS device.command_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c device.commands;
BEGIN
    PERFORM isa.not_null('actor_id, command_id', actor_id, command_id);
    SELECT * INTO c FROM device.commands x WHERE x.command_id = get_command.command_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'command % not found', command_id USING ERRCODE = 'P0002';
    END IF;
    PERFORM device._require(device._device(c.device_id, false), actor_id, 'view');
    RETURN device._command_info(c);
END
$$;
COMMENT ON FUNCTION device.get_command(uuid, uuid) IS
    'A command and its state, for whoever may see its device. 42501 not allowed, P0002 unknown command.';

CREATE FUNCTION device.list_commands(actor_id uuid, device_id uuid, row_limit integer DEFAULT 100)
RETURNS SETOF device.command_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.check_page_size('row_limit', row_limit);
    PERFORM device._require(device._device(device_id, false), actor_id, 'view');
    RETURN QUERY SELECT (device._command_info(c)).* FROM device.commands c
                  WHERE c.device_id = list_commands.device_id
                  ORDER BY c.command_id DESC LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION device.list_commands(uuid, uuid, integer) IS
    'A device''s commands, newest first, for whoever may see it. 42501 not allowed, P0002 unknown device, 22023 row_limit outside 1 … 1000.';

-- ---------------------------------------------------------------- playlists
-- What a frame shows (docs/services/device.md, "Playlists"): an ordered list
-- of storage's files and albums, set by whoever manages the device and read
-- by whoever may see it.  What the frame itself may read is decided when it
-- reads, by storage's one check within a scope (storage.can_read_scoped):
-- the files and albums of the device's owner, and what reaches its owner
-- through the device's organization (shared with it by a member), so a frame
-- never shows what its owner could not read, and shows nothing of an
-- organization its owner has left.  The items are kept as set: an item the
-- frame can no longer read (unshared, deleted, its owner left) is left out
-- of what the frame gets and counted as hidden, and comes back if it becomes
-- readable again.
CREATE TABLE device.playlists (
    device_id  uuid PRIMARY KEY REFERENCES device.devices,
    version    integer NOT NULL CHECK (version > 0),          -- 1 for the first list, +1 each time it changes
    updated_by uuid NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE device.playlists IS
    'A device''s playlist: its version (each change adds one), who set it and when; its items are device.playlist_items.';

CREATE TABLE device.playlist_items (
    device_id uuid NOT NULL REFERENCES device.playlists ON DELETE CASCADE,
    position  integer NOT NULL CHECK (position >= 0),
    kind      text NOT NULL CHECK (kind IN ('file', 'album')),
    item_id   uuid NOT NULL,                                   -- storage's file_id or album_id (no cross-schema foreign key)
    PRIMARY KEY (device_id, position),
    CONSTRAINT playlist_items_once UNIQUE (device_id, kind, item_id)
);
COMMENT ON TABLE device.playlist_items IS
    'The items of a playlist in order (position from 0): storage files and albums, each at most once.';

SELECT isa.register_event_type('device.playlist_updated', 'device_service', '1.0.0',
    'A device''s playlist was set to another list of files and albums (set_playlist); the device was sent playlist.refresh.',
    '{"device_id":       {"type": "uuid",    "required": true,  "description": "The device."},
      "owner_id":        {"type": "uuid",    "required": true,  "description": "Its owner."},
      "organization_id": {"type": "uuid",    "required": false, "description": "Its organization; null when none."},
      "version":         {"type": "integer", "required": true,  "description": "The playlist''s new version (1 for the first)."},
      "item_count":      {"type": "integer", "required": true,  "description": "How many files and albums it lists."},
      "updated_by":      {"type": "uuid",    "required": true,  "description": "Who set it: the owner, or an owner or admin of its organization."},
      "command_id":      {"type": "uuid",    "required": true,  "description": "The playlist.refresh command sent to the device."}}');

-- The organizations through which a frame reads: its own, if any (storage
-- checks that the owner is still a member of it, and the sharer too).
CREATE FUNCTION device._playlist_scope(d device.devices) RETURNS uuid[]
    LANGUAGE sql IMMUTABLE
    RETURN CASE WHEN d.organization_id IS NULL THEN '{}'::uuid[] ELSE ARRAY[d.organization_id] END;
COMMENT ON FUNCTION device._playlist_scope(device.devices) IS
    'The scope in which a device reads storage for its playlist (storage.can_read_scoped): its organization, or none.';

-- A playlist as users read it.
CREATE FUNCTION device._playlist_view(d device.devices) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p device.playlists;
BEGIN
    SELECT * INTO p FROM device.playlists x WHERE x.device_id = d.device_id;
    RETURN jsonb_build_object(
        'device_id', d.device_id, 'version', coalesce(p.version, 0), 'updated_by', p.updated_by,
        'updated_at', isa.iso_time(p.updated_at),
        'items', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                     'position', i.position, 'kind', i.kind, 'id', i.item_id,
                                     'shown', d.decommissioned_at IS NULL
                                              AND storage.can_read_scoped(d.owner_id, device._playlist_scope(d), i.kind, i.item_id))
                                   ORDER BY i.position)
                             FROM device.playlist_items i WHERE i.device_id = d.device_id), '[]'));
END
$$;
COMMENT ON FUNCTION device._playlist_view(device.devices) IS
    'A device''s playlist as users read it: {device_id, version (0: none set), updated_by, updated_at, items: [{position, kind, id, shown}]}, shown: the device may show the item now.';

-- The items of a set_playlist call, in order, or 22023.
CREATE FUNCTION device._check_playlist_items(items jsonb, OUT kinds text[], OUT ids uuid[])
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e    jsonb;
    n    integer := 0;
    keys text[] := '{}';
BEGIN
    IF jsonb_typeof(items) IS DISTINCT FROM 'array' OR jsonb_array_length(items) > 200 THEN
        RAISE EXCEPTION 'items must be a JSON array of at most 200 items' USING ERRCODE = '22023',
            HINT = 'Each item is {"kind": "file" or "album", "id": its id}.';
    END IF;
    kinds := '{}';
    ids := '{}';
    FOR e IN SELECT x FROM jsonb_array_elements(items) x LOOP
        IF jsonb_typeof(e) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'item % of the playlist is not a JSON object', n USING ERRCODE = '22023';
        END IF;
        IF coalesce(e ->> 'kind', '') NOT IN ('file', 'album') OR jsonb_typeof(e -> 'id') IS DISTINCT FROM 'string'
           OR NOT isa.is_uuid(e ->> 'id') OR EXISTS (SELECT 1 FROM jsonb_object_keys(e) k WHERE k NOT IN ('kind', 'id')) THEN
            RAISE EXCEPTION 'item % of the playlist is not {"kind": "file" or "album", "id": a uuid}', n
                USING ERRCODE = '22023';
        END IF;
        IF (e ->> 'kind') || ':' || lower(e ->> 'id') = ANY (keys) THEN
            RAISE EXCEPTION 'item % of the playlist names % % again', n, e ->> 'kind', e ->> 'id' USING ERRCODE = '22023',
                HINT = 'A playlist lists a file or an album once.';
        END IF;
        keys := keys || ((e ->> 'kind') || ':' || lower(e ->> 'id'));
        kinds := kinds || (e ->> 'kind');
        ids := ids || (e ->> 'id')::uuid;
        n := n + 1;
    END LOOP;
END
$$;
COMMENT ON FUNCTION device._check_playlist_items(jsonb) IS
    'The kinds and ids of a playlist''s items as set_playlist takes them (a JSON array of at most 200 {"kind": "file" or "album", "id"}, each once), in order; 22023 otherwise.';

CREATE FUNCTION device.set_playlist(actor_id uuid, device_id uuid, items jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v     record;
    d     device.devices;
    p     device.playlists;
    c     device.command_info;
    stray record;
BEGIN
    PERFORM isa.not_null('actor_id, device_id, items', actor_id, device_id, items);
    SELECT * INTO v FROM device._check_playlist_items(items);
    d := device._device(device_id, true);                 -- the lock orders the versions
    PERFORM device._require(d, actor_id, 'manage');
    PERFORM device._in_service(d);
    -- Only what the actor may read goes in; one answer for a file or an
    -- album that does not exist and one the actor may not read (storage's).
    SELECT n.kind, n.id INTO stray FROM unnest(v.kinds, v.ids) WITH ORDINALITY n (kind, id, pos)
     WHERE NOT CASE n.kind WHEN 'file' THEN storage.can_read(actor_id, n.id)
                           ELSE storage.can_read_album(actor_id, n.id) END
     ORDER BY n.pos LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '% % not found', stray.kind, stray.id USING ERRCODE = 'P0002',
            HINT = 'A playlist lists files and albums that whoever sets it may read.';
    END IF;
    IF (SELECT coalesce(array_agg(i.kind ORDER BY i.position), '{}') FROM device.playlist_items i WHERE i.device_id = d.device_id) = v.kinds
       AND (SELECT coalesce(array_agg(i.item_id ORDER BY i.position), '{}') FROM device.playlist_items i WHERE i.device_id = d.device_id) = v.ids THEN
        RETURN device._playlist_view(d);                  -- the same list: nothing changes, nothing is sent
    END IF;
    INSERT INTO device.playlists AS x (device_id, version, updated_by)
    VALUES (d.device_id, 1, actor_id)
    ON CONFLICT ON CONSTRAINT playlists_pkey DO UPDATE
       SET version = x.version + 1, updated_by = EXCLUDED.updated_by, updated_at = now()
    RETURNING * INTO p;
    DELETE FROM device.playlist_items i WHERE i.device_id = d.device_id;
    INSERT INTO device.playlist_items (device_id, position, kind, item_id)
    SELECT d.device_id, (n.pos - 1)::integer, n.kind, n.id FROM unnest(v.kinds, v.ids) WITH ORDINALITY n (kind, id, pos);
    -- One refresh waits per device: an older one not yet acknowledged is superseded.
    PERFORM device._finish(x.command_id, 'expired', NULL, 'superseded by playlist version ' || p.version)
       FROM device.commands x
      WHERE x.device_id = d.device_id AND x.command = 'playlist.refresh' AND x.state IN ('pending', 'sent');
    c := device.send_command(actor_id, d.device_id, 'playlist.refresh', jsonb_build_object('version', p.version),
                             NULL, 86400);
    PERFORM isa.publish_event('device.playlist_updated', 'device_service',
        jsonb_build_object('device_id', d.device_id, 'owner_id', d.owner_id, 'organization_id', d.organization_id,
                           'version', p.version, 'item_count', cardinality(v.ids), 'updated_by', actor_id,
                           'command_id', c.command_id));
    RETURN device._playlist_view(d) || jsonb_build_object('command_id', c.command_id);
END
$$;
COMMENT ON FUNCTION device.set_playlist(uuid, uuid, jsonb) IS
    'Sets what a device shows (its owner, or an owner or admin of its organization): items, a JSON array of at most 200 {"kind": "file" or "album", "id"}, in order, each once and readable by the actor (storage.can_read / can_read_album). A changed list gets a new version, publishes device.playlist_updated and sends the device playlist.refresh {version} (an older refresh not yet acknowledged expires); the same list changes nothing. Returns the playlist as get_playlist, with command_id when one was sent. 22023 bad items, 42501 not allowed, P0002 unknown device or an item not found or not readable, 23514 decommissioned.';

CREATE FUNCTION device.get_playlist(actor_id uuid, device_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d device.devices := device._device(device_id, false);
BEGIN
    PERFORM device._require(d, actor_id, 'view');
    RETURN device._playlist_view(d);
END
$$;
COMMENT ON FUNCTION device.get_playlist(uuid, uuid) IS
    'A device''s playlist for whoever may see the device: {device_id, version (0: never set), updated_by, updated_at, items: [{position, kind, id, shown}]}, shown telling whether the device may show the item now. 42501 not allowed, P0002 unknown device.';

-- One file of what a device gets: its metadata (not its owner) and a signed
-- download URL of isa-httpd's GET /v1/downloads/{file_id}.
CREATE FUNCTION device._playlist_file(f storage.file_info, ttl_seconds integer) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s jsonb := storage.sign_download(f.file_id, ttl_seconds);
BEGIN
    RETURN (to_jsonb(f) - 'owner_id') || jsonb_build_object(
        'url', format('/v1/downloads/%s?expires=%s&signature=%s', f.file_id, s ->> 'expires', s ->> 'signature'),
        'expires', (s ->> 'expires')::bigint);
END
$$;
COMMENT ON FUNCTION device._playlist_file(storage.file_info, integer) IS
    'A file as device_playlist gives it: file_id, name, content_type, size, sha256, created_at, and url, a signed download path valid ttl_seconds, with its expires (unix seconds).';

-- The device reads its playlist: every file it may read now, in order, an
-- album's files in the album's order, each with a signed download URL; the
-- items it may not read are counted, never named.  STABLE: one snapshot for
-- every check and every file.
CREATE FUNCTION device.device_playlist(device_id uuid, ttl_seconds integer DEFAULT 3600) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d      device.devices;
    p      device.playlists;
    scope  uuid[];
    i      device.playlist_items;
    f      storage.file_info;
    files  jsonb[] := '{}';
    hidden integer := 0;
BEGIN
    PERFORM isa.not_null('device_id, ttl_seconds', device_id, ttl_seconds);
    IF ttl_seconds NOT BETWEEN 60 AND 86400 THEN
        RAISE EXCEPTION 'ttl_seconds must be from 60 to 86400, not %', ttl_seconds USING ERRCODE = '22023';
    END IF;
    d := device._device(device_id, false);
    PERFORM device._in_service(d);
    scope := device._playlist_scope(d);
    SELECT * INTO p FROM device.playlists x WHERE x.device_id = d.device_id;
    FOR i IN SELECT * FROM device.playlist_items x WHERE x.device_id = d.device_id ORDER BY x.position LOOP
        IF NOT storage.can_read_scoped(d.owner_id, scope, i.kind, i.item_id) THEN
            hidden := hidden + 1;
        ELSIF cardinality(files) > 1000 THEN
            CONTINUE;                                     -- truncated: the hidden ones are still counted
        ELSIF i.kind = 'file' THEN
            files := files || (jsonb_build_object('position', i.position, 'kind', i.kind, 'album_id', NULL)
                               || device._playlist_file(storage.get_file(i.item_id), ttl_seconds));
        ELSE
            FOR f IN SELECT * FROM storage.list_album_files_scoped(d.owner_id, scope, i.item_id) LOOP
                files := files || (jsonb_build_object('position', i.position, 'kind', i.kind, 'album_id', i.item_id)
                                   || device._playlist_file(f, ttl_seconds));
                EXIT WHEN cardinality(files) > 1000;
            END LOOP;
        END IF;
    END LOOP;
    RETURN jsonb_build_object('device_id', d.device_id, 'version', coalesce(p.version, 0),
                              'updated_at', isa.iso_time(p.updated_at),
                              'files', to_jsonb(files[1:1000]), 'hidden', hidden,
                              'truncated', cardinality(files) > 1000);
END
$$;
COMMENT ON FUNCTION device.device_playlist(uuid, integer) IS
    'The calling device''s playlist as it may show it now: {device_id, version, updated_at, files: [{position, kind, album_id, file_id, name, content_type, size, sha256, created_at, url, expires}], hidden, truncated}. Each file its owner owns or that reaches its owner through its organization (storage.can_read_scoped), an album expanded in its order; url a signed download (storage.sign_download) valid ttl_seconds (60 to 86400, default 3600). hidden counts the items it may not read (never naming them); at most 1000 files (truncated). P0002 unknown device, 23514 decommissioned, 22023 bad ttl, 55000 isa.storage_url_secret not set.';

GRANT EXECUTE ON FUNCTION
    device.set_playlist(uuid, uuid, jsonb),
    device.get_playlist(uuid, uuid),
    device.device_playlist(uuid, integer)
TO isa_app_device;
-- What the playlists ask of storage, as isa_svc_device: storage loads first.
GRANT EXECUTE ON FUNCTION
    storage.can_read(uuid, uuid), storage.can_read_album(uuid, uuid),
    storage.can_read_scoped(uuid, uuid[], text, uuid), storage.list_album_files_scoped(uuid, uuid[], uuid, integer),
    storage.get_file(uuid), storage.sign_download(uuid, integer)
TO isa_svc_device;

SELECT isa.http_route('GET', '/v1/devices/{device_id}/playlist', 'device.get_playlist(uuid, uuid)', 'user',
    'A device''s playlist (files and albums in order, each with whether the device may show it now), for whoever may see the device.',
    subject_param => 'actor_id');
SELECT isa.http_route('PUT', '/v1/devices/{device_id}/playlist', 'device.set_playlist(uuid, uuid, jsonb)', 'user',
    'Sets a device''s playlist (body: items, [{kind: file or album, id}] in order): its owner, or an owner or admin of its organization; the device is sent playlist.refresh.',
    subject_param => 'actor_id');
SELECT isa.http_route('GET', '/v1/device/playlist', 'device.device_playlist(uuid, integer)', 'device',
    'The calling device''s playlist as it may show it now: its files in order with signed download URLs (ttl_seconds), and how many items are hidden from it.',
    subject_param => 'device_id');

-- ---------------------------------------------------------------- notifications shown on devices
-- The notification service's MQTT channel (docs/services/notification.md,
-- "Channels"): a notification for a user goes to every device in service the
-- user may see as theirs (their own, and those of their organizations whose
-- owners are still members) as a command notification.show on the command
-- path (at least once: re-sent until acknowledged or expired).  Not to a
-- device merely shared with one of the user's organizations.  For the
-- notification service's role only: nothing here checks who asks.
CREATE FUNCTION device.user_devices(user_id uuid) RETURNS SETOF uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    RETURN QUERY
    SELECT d.device_id FROM device.devices d
     WHERE d.decommissioned_at IS NULL
       AND (d.owner_id = user_devices.user_id
            OR (d.organization_id IS NOT NULL
                AND organization.member_role(d.organization_id, user_devices.user_id) IS NOT NULL
                AND organization.member_role(d.organization_id, d.owner_id) IS NOT NULL))
     ORDER BY d.device_id;
END
$$;
COMMENT ON FUNCTION device.user_devices(uuid) IS
    'The devices in service a user may see as theirs: owned, or of an organization they are a member of (any role) whose owner is still a member; not those merely shared with one. For the notification service (isa_svc_notification). 22004 NULL.';

CREATE FUNCTION device.notify_user_devices(user_id uuid, payload jsonb, expires_in integer) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    did uuid;
    c   device.commands;
    n   integer := 0;
BEGIN
    PERFORM isa.not_null('user_id, payload, expires_in', user_id, payload, expires_in);
    IF jsonb_typeof(payload) <> 'object' OR NOT isa.is_uuid(payload ->> 'notification_id')
       OR octet_length(payload::text) > 16384 THEN
        RAISE EXCEPTION 'payload must be a JSON object of at most 16 KiB with a notification_id' USING ERRCODE = '22023';
    END IF;
    IF expires_in NOT BETWEEN 10 AND 7 * 24 * 3600 THEN
        RAISE EXCEPTION 'expires_in must be 10 … 604800, not %', expires_in USING ERRCODE = '22023';
    END IF;
    FOR did IN SELECT * FROM device.user_devices(user_id) LOOP
        -- one command per notification and device, whoever asks twice; in the
        -- user's name, so that it fails with the user's membership
        -- (on_member_removed) like the user's own commands
        INSERT INTO device.commands AS x (command_id, device_id, command, args, sent_by, idempotency_key, expires_at)
        VALUES (isa.uuid_v7(), did, 'notification.show', payload, notify_user_devices.user_id,
                'notification:' || (payload ->> 'notification_id') || ':' || did,
                now() + make_interval(secs => expires_in))
        ON CONFLICT ON CONSTRAINT commands_idempotency_key DO NOTHING
        RETURNING * INTO c;
        IF FOUND AND EXISTS (SELECT FROM device.devices d WHERE d.device_id = did AND d.status = 'online') THEN
            PERFORM device._transmit(c);   -- an offline device gets it when it comes online (device._seen)
        END IF;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION device.notify_user_devices(uuid, jsonb, integer) IS
    'Queues the command notification.show (args: payload, a JSON object with a notification_id: kind, title, text) to each device of device.user_devices(user_id), once per notification and device, expiring after expires_in seconds (10 … 604800); sent now to an online device. Returns how many devices it is for (0: the user has none). For the notification service (isa_svc_notification). 22023 bad payload or expires_in, 22004 NULL.';

-- ---------------------------------------------------------------- API: the device itself
CREATE FUNCTION device.heartbeat(device_id uuid, firmware_version text DEFAULT NULL) RETURNS device.device_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_fw text;
    d    device.devices;
BEGIN
    IF firmware_version IS NOT NULL THEN
        v_fw := device._check_text('firmware_version', firmware_version, 64);
    END IF;
    d := device._device(device_id, false);
    PERFORM device._in_service(d);
    RETURN device._info(device._seen(device_id, now(), v_fw));
END
$$;
COMMENT ON FUNCTION device.heartbeat(uuid, text) IS
    'A device says it is alive (with its firmware version, optionally): last seen now; offline → online publishes device.online once and sends its open commands again. P0002 unknown device, 23514 decommissioned, 22023 bad firmware version.';

CREATE FUNCTION device.acknowledge_command(device_id uuid, command_id uuid, success boolean DEFAULT true,
                                           result jsonb DEFAULT NULL, error text DEFAULT NULL)
RETURNS device.command_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c device.commands;
BEGIN
    PERFORM isa.not_null('device_id, command_id, success', device_id, command_id, success);
    c := device._answer(device_id, command_id, success, result, error);
    IF c.command_id IS NULL THEN
        RAISE EXCEPTION 'command % of device % not found', command_id, device_id USING ERRCODE = 'P0002';
    END IF;
    RETURN device._command_info(c);
END
$$;
COMMENT ON FUNCTION device.acknowledge_command(uuid, uuid, boolean, jsonb, text) IS
    'The device answers a command: acknowledged (success) or failed, with its result or error. Idempotent: an answer to a command that ended already (acknowledged, failed, expired) changes nothing. P0002 no such command of this device.';

-- The device's own NATS user: named by its device id, signed by the scoped
-- signing key isa.device_nats_signing_key, whose template in the account JWT
-- (tools/nats-config.sh) gives it its own topics only; a bearer JWT, so that an
-- MQTT client passes it as its password.  It expires after isa.device_nats_ttl;
-- its public key is kept (device.nats_keys) so that decommissioning revokes it
-- (docs/services/device.md, "Revocation").
CREATE FUNCTION device.nats_credentials(device_id uuid) RETURNS device.nats_credential
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d   device.devices;
    cfg record := device._nats_settings();
    c   record;
    r   device.nats_credential;
    t   text := 'isa/devices/' || device_id || '/';
BEGIN
    PERFORM isa.not_null('device_id', device_id);
    -- locked: a decommissioning that runs meanwhile waits, then revokes this key too
    d := device._device(device_id, true);
    PERFORM device._in_service(d);
    IF cfg.signing_key = '' OR cfg.account = '' THEN
        RAISE EXCEPTION 'devices get no NATS credentials: isa.device_nats_signing_key or isa.device_nats_account is not set'
            USING ERRCODE = '55000',
                  HINT = 'Set both (the scoped signing key tools/nats-config.sh makes, isa-device-signing.nk, and the account); docs/configuration.md.';
    END IF;
    r.expires_at := date_trunc('second', now()) + make_interval(secs => cfg.ttl);
    c := isa.nats_scoped_user_credentials(cfg.signing_key, d.device_id::text, cfg.account, r.expires_at);
    INSERT INTO device.nats_keys (public_key, device_id, expires_at) VALUES (c.public_key, d.device_id, r.expires_at);
    r.device_id := d.device_id;
    r.jwt := c.jwt;
    r.commands_topic := t || 'commands';
    r.acks_topic := t || 'acks';
    r.heartbeat_topic := t || 'heartbeat';
    RETURN r;
END
$$;
COMMENT ON FUNCTION device.nats_credentials(uuid) IS
    'The calling device''s NATS credential: a bearer JWT (MQTT: the password) valid for isa.device_nats_ttl (default 1 h) that may subscribe to isa/devices/<id>/commands and publish isa/devices/<id>/acks and …/heartbeat only. P0002 unknown device, 23514 decommissioned, 55000 not configured.';

-- ---------------------------------------------------------------- revocation (the revoker's)
-- tools/isa-nats-revoker reads what the account JWT must revoke and marks
-- what a server took; it holds the NATS operator's signing key, the database
-- does not (docs/services/device.md, "Revocation").
CREATE FUNCTION device.nats_revocations()
    RETURNS TABLE (public_key text, device_id uuid, revoked_at timestamptz, expires_at timestamptz,
                   pushed_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.public_key, k.device_id, k.revoked_at, k.expires_at, k.pushed_at
      FROM device.nats_keys k
     WHERE k.revoked_at IS NOT NULL
     ORDER BY k.revoked_at, k.public_key
$$;
COMMENT ON FUNCTION device.nats_revocations() IS
    'The revoked NATS credentials of decommissioned devices still kept (until a day after expiry): public key, device, when revoked, when it expires, when a server took the account JWT revoking it (NULL: not yet). The revoker lists the unexpired ones in the account JWT and drops the expired ones from it. For isa_admin (the revoker''s role).';

CREATE FUNCTION device.nats_revocations_pushed(public_keys text[]) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
    bad text;
BEGIN
    PERFORM isa.not_null('public_keys', public_keys);
    SELECT x INTO bad FROM unnest(public_keys) x WHERE x IS NULL OR x !~ '^U[A-Z2-7]{55}$' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'not a NATS user''s public key: %', coalesce(bad, 'NULL') USING ERRCODE = '22023',
            HINT = 'A user''s public key is U followed by 55 characters of A-Z and 2-7.';
    END IF;
    SELECT k.public_key INTO bad FROM device.nats_keys k
     WHERE k.public_key = ANY (public_keys) AND k.revoked_at IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'NATS key % is not revoked', bad USING ERRCODE = '23514';
    END IF;
    UPDATE device.nats_keys k SET pushed_at = now()
     WHERE k.public_key = ANY (public_keys) AND k.pushed_at IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION device.nats_revocations_pushed(text[]) IS
    'The revoker says a NATS server took the account JWT revoking these keys: marks them pushed (once); returns how many it marked. Keys no longer kept are ignored. 22023 not user public keys, 23514 a key that is not revoked. For isa_admin (the revoker''s role).';

-- ---------------------------------------------------------------- jobs
CREATE FUNCTION device.mark_offline() RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    WITH gone AS (
        UPDATE device.devices x SET status = 'offline'
         WHERE x.status = 'online'
           AND x.last_seen_at < now() - make_interval(secs => device._offline_after())
        RETURNING x.device_id, x.owner_id, x.organization_id, x.last_seen_at)
    SELECT count(isa.publish_event('device.offline', 'device_service',
                 jsonb_build_object('device_id', g.device_id, 'owner_id', g.owner_id,
                                    'organization_id', g.organization_id,
                                    'last_seen_at', isa.iso_time(g.last_seen_at))))
      INTO n FROM gone g;
    RETURN n;
END
$$;
COMMENT ON FUNCTION device.mark_offline() IS
    'Marks offline the online devices silent for isa.device_offline_after (default 90 s), one device.offline each; returns how many. pg_cron runs it every minute (isa-device-mark-offline).';

CREATE FUNCTION device.process_commands() RETURNS TABLE (action text, n bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c device.commands;
    k bigint := 0;
BEGIN
    SELECT count(device._finish(x.command_id, 'expired', NULL, NULL)) INTO k
      FROM device.commands x WHERE x.state IN ('pending', 'sent') AND x.expires_at <= now();
    action := 'commands expired'; n := k;
    RETURN NEXT;

    k := 0;
    FOR c IN SELECT x.* FROM device.commands x JOIN device.devices d USING (device_id)
              WHERE x.state = 'sent' AND x.next_attempt_at <= now() AND d.status = 'online'
              ORDER BY x.next_attempt_at
              FOR UPDATE OF x SKIP LOCKED LOOP
        PERFORM device._transmit(c);
        k := k + 1;
    END LOOP;
    action := 'commands sent again'; n := k;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION device.process_commands() IS
    'Expires the open commands past expires_at, and sends again the unacknowledged ones of online devices whose backoff (10 s doubling to 5 min) is over. pg_cron runs it every minute (isa-device-commands).';

CREATE FUNCTION device.housekeeping() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k bigint;
    n bigint;
BEGIN
    DELETE FROM device.device_messages m WHERE m.received_at < now() - interval '1 day';
    GET DIAGNOSTICS k = ROW_COUNT;
    -- a day after expiry: the revoker has had the time to drop a revoked one
    -- from the account JWT (it lists the expired ones to drop)
    DELETE FROM device.nats_keys x WHERE x.expires_at < now() - interval '1 day';
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN k + n;
END
$$;
COMMENT ON FUNCTION device.housekeeping() IS
    'Forgets the ids of device messages (MQTT acks, heartbeats) older than a day and the NATS credentials expired for a day; returns how many rows. pg_cron runs it hourly (isa-device-housekeeping).';

INSERT INTO isa.scheduled_jobs (jobname, schedule, command, description)
VALUES ('isa-device-mark-offline', '* * * * *', 'SELECT device.mark_offline()',
        'Every minute: mark offline the devices silent for isa.device_offline_after.'),
       ('isa-device-commands', '* * * * *', 'SELECT device.process_commands()',
        'Every minute: expire device commands past their time, send the unacknowledged ones again.'),
       ('isa-device-housekeeping', '41 * * * *', 'SELECT device.housekeeping()',
        'Hourly: forget the ids of device messages older than a day.')
ON CONFLICT (jobname) DO NOTHING;

-- ---------------------------------------------------------------- handlers
-- organization_service.organization.member_removed {org_id, user_id}: access
-- to the organization's devices is checked live at every call (device._right),
-- so it ends with the membership by itself; what the removed member queued
-- for the organization's devices and is not delivered yet must not go out.
CREATE FUNCTION device.on_member_removed(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    org text := e.data ->> 'org_id';
    uid text := e.data ->> 'user_id';
BEGIN
    IF NOT isa.is_uuid(org) OR NOT isa.is_uuid(uid) THEN
        RAISE WARNING 'device: organization.member_removed % ignored: needs data.org_id and data.user_id (uuids), got %',
            e.id, e.data;
        RETURN;
    END IF;
    PERFORM device._finish(c.command_id, 'failed', NULL, 'the sender left the device''s organization')
       FROM device.commands c JOIN device.devices d USING (device_id)
      WHERE c.sent_by = uid::uuid AND c.state IN ('pending', 'sent')
        AND d.organization_id = org::uuid AND d.owner_id <> uid::uuid;
END
$$;
COMMENT ON FUNCTION device.on_member_removed(isa.event) IS
    'Handler of organization_service.organization.member_removed: the removed member''s open commands to the organization''s devices (not their own) fail. Their access itself is checked live at every call.';

-- auth_service.device.authenticated {device_id, session_id}: a device that
-- authenticated was alive then (last seen; its status changes with heartbeats).
CREATE FUNCTION device.on_device_authenticated(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    did text := e.data ->> 'device_id';
BEGIN
    IF NOT isa.is_uuid(did) THEN
        RETURN;                     -- a device auth knows and this service does not (registered by hand)
    END IF;
    UPDATE device.devices d SET last_seen_at = greatest(d.last_seen_at, e."timestamp")
     WHERE d.device_id = did::uuid AND d.decommissioned_at IS NULL;
END
$$;
COMMENT ON FUNCTION device.on_device_authenticated(isa.event) IS
    'Handler of auth_service.device.authenticated: moves the device''s last_seen_at to the authentication''s time (not its status: heartbeats decide it).';

-- device.ack, from the bridge (docs/bridge.md, "Device messages"): what a
-- device published on isa/devices/<id>/acks, {command_id, ok, result?,
-- error?, message_id?}, data.device_id being the <id> of the subject.
CREATE FUNCTION device.on_device_ack(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c device.commands;
BEGIN
    IF NOT device._check_message(e) THEN
        RETURN;
    END IF;
    IF NOT isa.is_uuid(e.data ->> 'command_id') OR jsonb_typeof(e.data -> 'ok') IS DISTINCT FROM 'boolean' THEN
        RAISE WARNING 'device: ack % of device % ignored: needs command_id (a uuid) and ok (true or false), got %',
            e.id, e.data ->> 'device_id', e.data;
        RETURN;
    END IF;
    IF NOT device._first_message(e) THEN
        RETURN;
    END IF;
    c := device._answer((e.data ->> 'device_id')::uuid, (e.data ->> 'command_id')::uuid, (e.data ->> 'ok')::boolean,
                        e.data -> 'result', e.data ->> 'error');
    IF c.command_id IS NULL THEN
        RAISE WARNING 'device: ack % ignored: device % has no command %', e.id, e.data ->> 'device_id',
            e.data ->> 'command_id';
    END IF;
END
$$;
COMMENT ON FUNCTION device.on_device_ack(isa.event) IS
    'Handler of the acks devices publish over MQTT (isa/devices/<id>/acks, {command_id, ok, result?, error?, message_id?}): acknowledges (ok) or fails that command of that device only, as device.acknowledge_command does; the same message_id twice counts once. A malformed ack, or one for a command the device does not have, is ignored with a warning.';

-- device.heartbeat, from the bridge: what a device published on
-- isa/devices/<id>/heartbeat, {firmware_version?, message_id?}.  Seen at the
-- time the stream stored it; one older than isa.device_offline_after (the
-- bridge caught up late) moves last_seen_at only, and cannot bring a device
-- online that the next mark_offline would take off again.
CREATE FUNCTION device.on_device_heartbeat(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    did uuid;
    fw  text;
BEGIN
    IF NOT device._check_message(e) THEN
        RETURN;
    END IF;
    did := (e.data ->> 'device_id')::uuid;
    IF NOT EXISTS (SELECT FROM device.devices x WHERE x.device_id = did) THEN
        RAISE WARNING 'device: heartbeat % ignored: device % not found', e.id, did;
        RETURN;
    END IF;
    IF NOT device._first_message(e) THEN
        RETURN;
    END IF;
    IF e."timestamp" < now() - make_interval(secs => device._offline_after()) THEN
        UPDATE device.devices x SET last_seen_at = greatest(x.last_seen_at, e."timestamp")
         WHERE x.device_id = did AND x.decommissioned_at IS NULL;
        RETURN;
    END IF;
    IF jsonb_typeof(e.data -> 'firmware_version') = 'string' THEN
        BEGIN
            fw := device._check_text('firmware_version', e.data ->> 'firmware_version', 64);
        EXCEPTION WHEN invalid_parameter_value THEN
            RAISE WARNING 'device: heartbeat % of device %: firmware_version ignored: %', e.id, did, SQLERRM;
        END;
    END IF;
    PERFORM device._seen(did, least(e."timestamp", now()), fw);
END
$$;
COMMENT ON FUNCTION device.on_device_heartbeat(isa.event) IS
    'Handler of the heartbeats devices publish over MQTT (isa/devices/<id>/heartbeat, {firmware_version?, message_id?}): as device.heartbeat, last seen then, offline → online publishes device.online once and sends its open commands again; the same message_id twice counts once. A decommissioned device changes nothing; a heartbeat older than isa.device_offline_after moves last_seen_at only.';

-- ---------------------------------------------------------------- API: for other services (ota)
-- The OTA service (sql/ota/ota.sql) targets devices by model and
-- organization, reads one device's state and offers it an update as a
-- command: it acts as no user, so these take no actor and are granted to
-- isa_svc_ota only, never to an application.
CREATE FUNCTION device.list_model_devices(model text, organization_ids uuid[] DEFAULT NULL)
RETURNS TABLE (device_id uuid, owner_id uuid, organization_id uuid, firmware_version text, status text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT d.device_id, d.owner_id, d.organization_id, d.firmware_version, d.status
      FROM device.devices d
     WHERE d.model = list_model_devices.model AND d.decommissioned_at IS NULL
       AND (list_model_devices.organization_ids IS NULL OR d.organization_id = ANY (list_model_devices.organization_ids))
     ORDER BY d.device_id;
END;
COMMENT ON FUNCTION device.list_model_devices(text, uuid[]) IS
    'The devices in service of one model, of the given organizations only unless organization_ids is NULL: id, owner, organization, firmware and status. For the OTA service (isa_svc_ota), not applications.';

-- Which of many devices are online now: ota asks it of the pending devices of
-- a rollout's open groups (an indexed probe each, whatever the fleet's size).
CREATE FUNCTION device.online_devices(device_ids uuid[]) RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT d.device_id FROM device.devices d
     WHERE d.device_id = ANY (online_devices.device_ids) AND d.status = 'online' AND d.decommissioned_at IS NULL
     ORDER BY d.device_id;
END;
COMMENT ON FUNCTION device.online_devices(uuid[]) IS
    'The devices of device_ids that are online (in service), in id order; unknown ids are left out. For the OTA service (isa_svc_ota), not applications.';

CREATE FUNCTION device.lookup_device(device_id uuid) RETURNS device.device_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN device._info(device._device(device_id, false));
END
$$;
COMMENT ON FUNCTION device.lookup_device(uuid) IS
    'A device as device_info (status decommissioned when it is), whoever owns it. For the OTA service (isa_svc_ota), not applications. 22004, P0002 unknown device.';

CREATE FUNCTION device.send_service_command(device_id uuid, command text, args jsonb, ttl_seconds integer)
RETURNS device.command_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d device.devices;
    c device.commands;
BEGIN
    PERFORM isa.not_null('device_id, command, args, ttl_seconds', device_id, command, args, ttl_seconds);
    IF command !~ '^[a-z][a-z0-9_.-]{0,63}$' OR jsonb_typeof(args) <> 'object' OR ttl_seconds NOT BETWEEN 10 AND 7 * 24 * 3600 THEN
        RAISE EXCEPTION 'invalid service command "%" (a name of a-z 0-9 _ . -, args an object, ttl 10 … 604800 s)',
            left(command, 100) USING ERRCODE = '22023';
    END IF;
    d := device._device(device_id, true);
    PERFORM device._in_service(d);
    -- sent_by: the nil UUID, no user (a member's removal never fails it)
    INSERT INTO device.commands AS x (command_id, device_id, command, args, sent_by, expires_at)
    VALUES (isa.uuid_v7(), send_service_command.device_id, send_service_command.command, args,
            '00000000-0000-0000-0000-000000000000', now() + make_interval(secs => ttl_seconds))
    RETURNING * INTO c;
    IF d.status = 'online' THEN
        c := device._transmit(c);
    END IF;
    RETURN device._command_info(c);
END
$$;
COMMENT ON FUNCTION device.send_service_command(uuid, text, jsonb, integer) IS
    'Queues a command from a service, not a user (sent_by is the nil UUID), as send_command does: sent now if the device is online, else when it comes online; the device acknowledges it as any command. For the OTA service (isa_svc_ota: ota.update offers). 22004, 22023, P0002 unknown device, 23514 decommissioned.';

-- ota_service.ota.update_completed {device_id, version, …}: the device runs
-- the release's firmware now; its next heartbeat says so too.
CREATE FUNCTION device.on_ota_update_completed(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    did text := e.data ->> 'device_id';
    fw  text := e.data ->> 'version';
BEGIN
    IF NOT isa.is_uuid(did) OR fw IS NULL OR length(fw) NOT BETWEEN 1 AND 64 THEN
        RAISE WARNING 'device: ota.update_completed % ignored: needs device_id (a uuid) and version, got %', e.id, e.data;
        RETURN;
    END IF;
    UPDATE device.devices d SET firmware_version = fw, updated_at = now()
     WHERE d.device_id = did::uuid AND d.decommissioned_at IS NULL AND d.firmware_version IS DISTINCT FROM fw;
END
$$;
COMMENT ON FUNCTION device.on_ota_update_completed(isa.event) IS
    'Handler of ota_service.ota.update_completed: records the release''s version as the device''s firmware_version (a device in service only).';

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA device FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    device.register_device(uuid, text, text, bytea, text, uuid, uuid, text, text),
    device.rename_device(uuid, uuid, text),
    device.move_device(uuid, uuid, uuid),
    device.decommission_device(uuid, uuid),
    device.get_device(uuid, uuid),
    device.list_my_devices(uuid, integer),
    device.list_organization_devices(uuid, uuid, integer),
    device.send_command(uuid, uuid, text, jsonb, text, integer),
    device.get_command(uuid, uuid),
    device.list_commands(uuid, uuid, integer),
    device.heartbeat(uuid, text),
    device.acknowledge_command(uuid, uuid, boolean, jsonb, text),
    device.nats_credentials(uuid)
TO isa_app_device;
GRANT EXECUTE ON FUNCTION device.mark_offline(), device.process_commands(), device.housekeeping() TO isa_admin;
-- the OTA service's (sql/ota/ota.sql loads after device)
GRANT EXECUTE ON FUNCTION
    device.list_model_devices(text, uuid[]), device.online_devices(uuid[]), device.lookup_device(uuid),
    device.send_service_command(uuid, text, jsonb, integer)
TO isa_svc_ota;
-- the revoker's (tools/isa-nats-revoker connects as a member of isa_admin)
GRANT EXECUTE ON FUNCTION device.nats_revocations(), device.nats_revocations_pushed(text[]) TO isa_admin;
-- What device's own code calls of other services and of isa, as isa_svc_device.
GRANT EXECUTE ON FUNCTION
    account.require_user(uuid),
    auth.register_device(text, bytea, uuid), auth.unregister_device(text),
    organization.member_role(uuid, uuid), organization.can_access(uuid, text, uuid),
    isa.send_direct_message(text, jsonb),
    isa.nats_scoped_user_credentials(text, text, text, timestamptz)
TO isa_svc_device;

-- ---------------------------------------------------------------- subscriptions
SELECT isa.subscribe_to_events('device', 'organization_service.organization.member_removed',
                               'device.on_member_removed(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('device', 'auth_service.device.authenticated',
                               'device.on_device_authenticated(isa.event)'::regprocedure);
-- what devices publish over MQTT, made into events by the bridge (docs/bridge.md, "Device messages")
SELECT isa.subscribe_to_events('device', 'isa.devices.*.acks', 'device.on_device_ack(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('device', 'isa.devices.*.heartbeat', 'device.on_device_heartbeat(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('device', 'ota_service.ota.update_completed',
                               'device.on_ota_update_completed(isa.event)'::regprocedure);

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- A user acts on the devices they may reach: actor_id is filled from the
-- token and the function decides by ownership and live membership (42501
-- otherwise).  A device calls the /v1/device routes with its device token:
-- device_id is its own, from the token.
SELECT isa.http_route('POST', '/v1/devices', 'device.register_device(uuid, text, text, bytea, text, uuid, uuid, text, text)', 'user',
    'Registers a device with its public key (idempotency_key: a retry returns the first).',
    subject_param => 'actor_id', status => 201);
SELECT isa.http_route('GET', '/v1/devices', 'device.list_my_devices(uuid, integer)', 'user',
    'The caller''s devices in service, oldest first.', subject_param => 'actor_id');
SELECT isa.http_route('GET', '/v1/devices/{device_id}', 'device.get_device(uuid, uuid)', 'user',
    'A device and its status, for its owner and the members who may see it.', subject_param => 'actor_id');
SELECT isa.http_route('PATCH', '/v1/devices/{device_id}', 'device.rename_device(uuid, uuid, text)', 'user',
    'Renames a device (body: name).', subject_param => 'actor_id');
SELECT isa.http_route('POST', '/v1/devices/{device_id}/move', 'device.move_device(uuid, uuid, uuid)', 'user',
    'Moves a device into an organization (body: organization_id; null: out of any).', subject_param => 'actor_id');
SELECT isa.http_route('DELETE', '/v1/devices/{device_id}', 'device.decommission_device(uuid, uuid)', 'user',
    'Decommissions a device: its key, tokens and open commands end. true if it did.', subject_param => 'actor_id');
SELECT isa.http_route('GET', '/v1/organizations/{org_id}/devices', 'device.list_organization_devices(uuid, uuid, integer)', 'user',
    'The devices of one of the caller''s organizations.', subject_param => 'actor_id');
SELECT isa.http_route('POST', '/v1/devices/{device_id}/commands', 'device.send_command(uuid, uuid, text, jsonb, text, integer)', 'user',
    'Sends a command to a device (body: command, args, idempotency_key, ttl_seconds): its id at once.',
    subject_param => 'actor_id', status => 202);
SELECT isa.http_route('GET', '/v1/devices/{device_id}/commands', 'device.list_commands(uuid, uuid, integer)', 'user',
    'A device''s commands, newest first.', subject_param => 'actor_id');
SELECT isa.http_route('GET', '/v1/commands/{command_id}', 'device.get_command(uuid, uuid)', 'user',
    'A command and its state.', subject_param => 'actor_id');
SELECT isa.http_route('POST', '/v1/device/heartbeat', 'device.heartbeat(uuid, text)', 'device',
    'The calling device is alive (body: firmware_version, optional).', subject_param => 'device_id');
SELECT isa.http_route('POST', '/v1/device/commands/{command_id}/ack', 'device.acknowledge_command(uuid, uuid, boolean, jsonb, text)', 'device',
    'The calling device answers a command (body: success, result, error).', subject_param => 'device_id');
SELECT isa.http_route('POST', '/v1/device/nats-credentials', 'device.nats_credentials(uuid)', 'device',
    'The calling device''s NATS credential: a bearer JWT for MQTT (the password) and its topics.',
    subject_param => 'device_id');
