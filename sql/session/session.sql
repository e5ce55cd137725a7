-- session.sql — the session service (schema session, source session_service):
-- AI chat sessions, not login sessions (those are auth's).  A user starts a
-- session with a model or an agent when their wallet holds at least
-- isa.session_min_balance tokens (wallet.check_balance); messages (role,
-- content, token counts, attachments the user may read in storage) are added
-- by the user and by the AI backends; a session ends by the user, after
-- isa.session_idle_timeout without a message (session.end_idle_sessions, pg_cron),
-- when the login that started it ends (auth's user.logged_out) or when the
-- user is deleted (its content is then erased).  session.ended is a summary:
-- the model's own external.usage.recorded.* events are what billing charges.
-- It calls account, wallet, storage and auth.  docs/services/session.md
-- documents the API, the events, the handlers and what deletion keeps.

-- ---------------------------------------------------------------- tables
CREATE TABLE session.sessions (
    session_id       uuid PRIMARY KEY,                   -- UUIDv7
    user_id          uuid NOT NULL,                      -- account's user (no cross-schema foreign key)
    model            text CHECK (length(model) BETWEEN 1 AND 100),
    agent            text CHECK (length(agent) BETWEEN 1 AND 100),
    title            text CHECK (length(title) BETWEEN 1 AND 200),   -- NULL once erased
    login_session_id uuid,                               -- auth's session (the sid of the token) that started it
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
    end_reason       text CHECK (end_reason IN ('user', 'idle', 'logout', 'user_deleted')),
    message_count    integer NOT NULL DEFAULT 0 CHECK (message_count >= 0),
    input_tokens     bigint NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens    bigint NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    idempotency_key  text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    started_at       timestamptz NOT NULL DEFAULT now(),
    last_activity_at timestamptz NOT NULL DEFAULT now(), -- the start, then the last message
    ended_at         timestamptz,
    erased_at        timestamptz,                        -- its content erased (user.deleted)
    CHECK (num_nonnulls(model, agent) = 1),
    CHECK ((status = 'ended') = (ended_at IS NOT NULL) AND (ended_at IS NULL) = (end_reason IS NULL)),
    CONSTRAINT sessions_idempotency_key UNIQUE (user_id, idempotency_key)
);
CREATE INDEX sessions_user ON session.sessions (user_id, session_id);
CREATE INDEX sessions_login ON session.sessions (login_session_id) WHERE status = 'active';
CREATE INDEX sessions_idle ON session.sessions (last_activity_at) WHERE status = 'active';
COMMENT ON TABLE session.sessions IS
    'AI chat sessions: the user, the model or agent, the login that started it, active or ended (why, when), and the running totals of its messages and tokens.';

CREATE TABLE session.messages (
    message_id      uuid PRIMARY KEY,                    -- UUIDv7
    session_id      uuid NOT NULL REFERENCES session.sessions,
    seq             integer NOT NULL CHECK (seq >= 1),   -- 1, 2, … within the session: the paging key
    role            text NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content         text CHECK (length(content) <= 1048576),   -- NULL once erased (or attachments only)
    input_tokens    integer NOT NULL DEFAULT 0 CHECK (input_tokens BETWEEN 0 AND 100000000),
    output_tokens   integer NOT NULL DEFAULT 0 CHECK (output_tokens BETWEEN 0 AND 100000000),
    attachment_ids  uuid[] NOT NULL DEFAULT '{}',        -- storage's files
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_seq UNIQUE (session_id, seq),
    CONSTRAINT messages_idempotency_key UNIQUE (session_id, idempotency_key)
);
COMMENT ON TABLE session.messages IS
    'The messages of the sessions, numbered from 1 in each: role, content, token counts and attached files of storage.';

-- ---------------------------------------------------------------- types
CREATE TYPE session.session_info AS (
    session_id       uuid,
    user_id          uuid,
    model            text,
    agent            text,
    title            text,
    login_session_id uuid,
    status           text,          -- active or ended
    end_reason       text,          -- user, idle, logout, user_deleted; NULL while active
    message_count    integer,
    input_tokens     bigint,
    output_tokens    bigint,
    started_at       timestamptz,
    last_activity_at timestamptz,
    ended_at         timestamptz
);
COMMENT ON TYPE session.session_info IS 'A session as the session API returns it.';

CREATE TYPE session.message_info AS (
    message_id     uuid,
    session_id     uuid,
    seq            integer,
    role           text,
    content        text,
    input_tokens   integer,
    output_tokens  integer,
    attachment_ids uuid[],
    created_at     timestamptz
);
COMMENT ON TYPE session.message_info IS 'A message as the session API returns it.';

-- ---------------------------------------------------------------- C (extension/session/)
CREATE FUNCTION session._min_balance() RETURNS integer
    AS 'MODULE_PATHNAME', 'isa_session_min_balance_setting' LANGUAGE C STABLE;
COMMENT ON FUNCTION session._min_balance() IS
    'isa.session_min_balance: the tokens a wallet must hold to start a session (0: no check).';
CREATE FUNCTION session._idle_timeout() RETURNS integer
    AS 'MODULE_PATHNAME', 'isa_session_idle_timeout_setting' LANGUAGE C STABLE;
COMMENT ON FUNCTION session._idle_timeout() IS
    'isa.session_idle_timeout in seconds: how long a session may go without a message before end_idle_sessions ends it.';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('session.started', 'session_service', '1.0.0',
    'A user started an AI chat session with a model or an agent.',
    '{"session_id":       {"type": "uuid",      "required": true,  "description": "The new session."},
      "user_id":          {"type": "uuid",      "required": true,  "description": "Its user."},
      "model":            {"type": "string",    "required": false, "description": "The model; absent for an agent''s session."},
      "agent":            {"type": "string",    "required": false, "description": "The agent; absent for a model''s session."},
      "login_session_id": {"type": "uuid",      "required": false, "description": "auth''s session (the sid of the token) that started it; absent when none."},
      "started_at":       {"type": "timestamp", "required": true,  "description": "When it started."}}');
SELECT isa.register_event_type('session.ended', 'session_service', '1.0.0',
    'A session ended, with its totals. A summary, not a charge: the model''s own external.usage.recorded.* events are billed, this is not.',
    '{"session_id":    {"type": "uuid",      "required": true,  "description": "The session."},
      "user_id":       {"type": "uuid",      "required": true,  "description": "Its user."},
      "model":         {"type": "string",    "required": false, "description": "The model; absent for an agent''s session."},
      "agent":         {"type": "string",    "required": false, "description": "The agent; absent for a model''s session."},
      "reason":        {"type": "string",    "required": true,  "description": "user, idle, logout (its login ended) or user_deleted."},
      "started_at":    {"type": "timestamp", "required": true,  "description": "When it started."},
      "ended_at":      {"type": "timestamp", "required": true,  "description": "When it ended."},
      "message_count": {"type": "integer",   "required": true,  "description": "Its messages."},
      "input_tokens":  {"type": "integer",   "required": true,  "description": "The sum of its messages'' input tokens."},
      "output_tokens": {"type": "integer",   "required": true,  "description": "The sum of its messages'' output tokens."}}');
SELECT isa.register_event_type('message.sent', 'session_service', '1.0.0',
    'A message was added to a session. Its content is not in the event: session.list_messages reads it.',
    '{"message_id":     {"type": "uuid",    "required": true, "description": "The message."},
      "session_id":     {"type": "uuid",    "required": true, "description": "Its session."},
      "user_id":        {"type": "uuid",    "required": true, "description": "The session''s user."},
      "seq":            {"type": "integer", "required": true, "description": "Its number in the session, from 1."},
      "role":           {"type": "string",  "required": true, "description": "user, assistant, system or tool."},
      "input_tokens":   {"type": "integer", "required": true, "description": "Input tokens it counts."},
      "output_tokens":  {"type": "integer", "required": true, "description": "Output tokens it counts."},
      "attachment_ids": {"type": "array",   "required": true, "description": "The files of storage attached to it (ids)."}}');

-- ---------------------------------------------------------------- internal helpers
CREATE FUNCTION session._info(s session.sessions) RETURNS session.session_info
    LANGUAGE sql IMMUTABLE
    RETURN ROW(s.session_id, s.user_id, s.model, s.agent, s.title, s.login_session_id, s.status, s.end_reason,
               s.message_count, s.input_tokens, s.output_tokens, s.started_at, s.last_activity_at,
               s.ended_at)::session.session_info;

CREATE FUNCTION session._message_info(m session.messages) RETURNS session.message_info
    LANGUAGE sql IMMUTABLE
    RETURN ROW(m.message_id, m.session_id, m.seq, m.role, m.content, m.input_tokens, m.output_tokens,
               m.attachment_ids, m.created_at)::session.message_info;

-- The user's session, locked FOR UPDATE when it is to change; P0002 when
-- there is none or it is another user's (the two are not told apart).
CREATE FUNCTION session._session(p_user_id uuid, p_session_id uuid, p_lock boolean) RETURNS session.sessions
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s session.sessions;
BEGIN
    PERFORM isa.not_null('user_id, session_id', p_user_id, p_session_id);
    IF p_lock THEN
        SELECT * INTO s FROM session.sessions x
         WHERE x.session_id = p_session_id AND x.user_id = p_user_id FOR UPDATE;
    ELSE
        SELECT * INTO s FROM session.sessions x WHERE x.session_id = p_session_id AND x.user_id = p_user_id;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'session % not found', p_session_id USING ERRCODE = 'P0002';
    END IF;
    RETURN s;
END
$$;

-- The advisory lock that orders a start in a login against that login's
-- user.logged_out (session.on_user_logged_out): whichever takes it second
-- sees what the first committed.
CREATE FUNCTION session._lock_login(p_login uuid) RETURNS void
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    RETURN pg_advisory_xact_lock(hashtextextended('session.login:' || p_login::text, 0));

-- The login (auth's session) a new session belongs to: the one named, else
-- within an HTTP request the sid of the caller's own access token; NULL when
-- neither.  It must be a live login of the user (42501): a session of a
-- login that has ended would never end with it.
CREATE FUNCTION session._login(p_user_id uuid, p_login uuid) RETURNS uuid
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    claims jsonb := isa.http_claims();
    v      uuid := p_login;
BEGIN
    IF v IS NULL AND claims ->> 'sub' = p_user_id::text AND claims ->> 'typ' = 'access'
       AND isa.is_uuid(claims ->> 'sid') THEN
        v := (claims ->> 'sid')::uuid;
    END IF;
    IF v IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM session._lock_login(v);
    IF NOT auth.session_is_live(jsonb_build_object('sid', v, 'sub', p_user_id, 'typ', 'access')) THEN
        RAISE EXCEPTION 'not allowed: login session % is not a live login of user %', v, p_user_id
            USING ERRCODE = '42501', HINT = 'Log in again; a session belongs to a login of its own user.';
    END IF;
    RETURN v;
END
$$;

-- Ends an active session for a reason and publishes session.ended with its
-- totals; an ended one is returned as it is.
CREATE FUNCTION session._end(s session.sessions, p_reason text) RETURNS session.sessions
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF s.status <> 'active' THEN
        RETURN s;
    END IF;
    UPDATE session.sessions x SET status = 'ended', end_reason = p_reason, ended_at = now()
     WHERE x.session_id = s.session_id AND x.status = 'active'
    RETURNING * INTO s;
    IF FOUND THEN
        PERFORM isa.publish_event('session.ended', 'session_service',
            jsonb_strip_nulls(jsonb_build_object(
                'session_id', s.session_id, 'user_id', s.user_id, 'model', s.model, 'agent', s.agent,
                'reason', p_reason, 'started_at', isa.iso_time(s.started_at), 'ended_at', isa.iso_time(s.ended_at),
                'message_count', s.message_count, 'input_tokens', s.input_tokens,
                'output_tokens', s.output_tokens)));
    END IF;
    RETURN s;
END
$$;

-- ---------------------------------------------------------------- API: sessions
CREATE FUNCTION session.start_session(user_id uuid, model text DEFAULT NULL, agent text DEFAULT NULL,
                                      title text DEFAULT NULL, idempotency_key text DEFAULT NULL,
                                      login_session_id uuid DEFAULT NULL)
RETURNS session.session_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_model text;
    v_agent text;
    v_title text;
    v_login uuid;
    v_min   integer := session._min_balance();
    s       session.sessions;
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    IF num_nonnulls(model, agent) <> 1 THEN
        RAISE EXCEPTION 'a session is with a model or an agent: give one of model and agent' USING ERRCODE = '22023';
    END IF;
    IF model IS NOT NULL THEN
        v_model := isa.check_text('a session''s model', model, 100);
    ELSE
        v_agent := isa.check_text('a session''s agent', agent, 100);
    END IF;
    IF title IS NOT NULL THEN
        v_title := isa.check_text('a session''s title', title, 200);
    END IF;
    PERFORM isa.check_idempotency_key(idempotency_key);
    IF idempotency_key IS NOT NULL THEN
        -- Serialise the user's calls with one key: the second waits here for the first.
        PERFORM pg_advisory_xact_lock(hashtextextended('session.start:' || user_id::text || ':' || idempotency_key, 0));
        SELECT * INTO s FROM session.sessions x
         WHERE x.user_id = start_session.user_id AND x.idempotency_key = start_session.idempotency_key;
        IF FOUND THEN
            IF s.model IS DISTINCT FROM v_model OR s.agent IS DISTINCT FROM v_agent OR s.title IS DISTINCT FROM v_title THEN
                RAISE EXCEPTION 'idempotency key "%" was already used to start another session', idempotency_key
                    USING ERRCODE = '23505', HINT = 'Use a new idempotency key for a new session.';
            END IF;
            RETURN session._info(s);
        END IF;
    END IF;
    PERFORM account.require_user(user_id);
    v_login := session._login(user_id, login_session_id);
    IF v_min > 0 AND NOT wallet.check_balance(user_id, v_min) THEN
        RAISE EXCEPTION 'the wallet of user % holds less than isa.session_min_balance (% tokens): no session started', user_id, v_min
            USING ERRCODE = '23514', HINT = 'Add tokens to the wallet, then start the session again.';
    END IF;

    INSERT INTO session.sessions AS x (session_id, user_id, model, agent, title, login_session_id, idempotency_key)
    VALUES (isa.uuid_v7(), start_session.user_id, v_model, v_agent, v_title, v_login, start_session.idempotency_key)
    RETURNING * INTO s;
    PERFORM isa.publish_event('session.started', 'session_service',
        jsonb_strip_nulls(jsonb_build_object('session_id', s.session_id, 'user_id', s.user_id, 'model', s.model,
                                             'agent', s.agent, 'login_session_id', s.login_session_id,
                                             'started_at', isa.iso_time(s.started_at))));
    RETURN session._info(s);
END
$$;
COMMENT ON FUNCTION session.start_session(uuid, text, text, text, text, uuid) IS
    'Starts an AI chat session of the user with a model or an agent (exactly one), in the login login_session_id (default: over HTTP, the caller''s token''s; it must be a live login of the user), if the user''s wallet holds isa.session_min_balance tokens (wallet.check_balance); publishes session.started. The same idempotency key with the same model, agent and title returns the first session; with others 23505. 22023 bad model, agent, title or key, 23514 wallet below the minimum (nothing written), 42501 not a live login of the user, P0002 unknown user.';

CREATE FUNCTION session.end_session(user_id uuid, session_id uuid) RETURNS session.session_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN session._info(session._end(session._session(user_id, session_id, true), 'user'));
END
$$;
COMMENT ON FUNCTION session.end_session(uuid, uuid) IS
    'The user ends their session (reason user); publishes session.ended with its totals. An ended session is returned as it is, with no second event. P0002 unknown session or another user''s.';

CREATE FUNCTION session.get_session(user_id uuid, session_id uuid) RETURNS session.session_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN session._info(session._session(user_id, session_id, false));
END
$$;
COMMENT ON FUNCTION session.get_session(uuid, uuid) IS
    'One of the user''s sessions with its totals. P0002 unknown session or another user''s.';

CREATE FUNCTION session.list_sessions(user_id uuid, status text DEFAULT NULL, before uuid DEFAULT NULL,
                                      row_limit integer DEFAULT 50)
RETURNS SETOF session.session_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    PERFORM isa.check_page_size('row_limit', row_limit);
    IF status NOT IN ('active', 'ended') THEN
        RAISE EXCEPTION 'status must be active, ended or null, not "%"', left(status, 40) USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
        SELECT (session._info(x)).*
          FROM session.sessions x
         WHERE x.user_id = list_sessions.user_id
           AND (list_sessions.status IS NULL OR x.status = list_sessions.status)
           AND (list_sessions.before IS NULL OR x.session_id < list_sessions.before)
         ORDER BY x.session_id DESC
         LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION session.list_sessions(uuid, text, uuid, integer) IS
    'The user''s sessions, newest first, optionally only active or ended ones; the next page: before = the last session_id of this one. At most row_limit (1 to 1000, default 50). 22004, 22023.';

-- ---------------------------------------------------------------- API: messages
-- A message added to a session of the user: checked, numbered, counted in
-- the session's totals, published as message.sent.
CREATE FUNCTION session.add_message(user_id uuid, session_id uuid, role text, content text,
                                    input_tokens integer DEFAULT 0, output_tokens integer DEFAULT 0,
                                    attachment_ids uuid[] DEFAULT '{}', idempotency_key text DEFAULT NULL)
RETURNS session.message_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- the arguments under names no column has (in a query, plpgsql would find role, content … ambiguous)
    p_user_id         uuid    := add_message.user_id;
    p_session_id      uuid    := add_message.session_id;
    p_role            text    := add_message.role;
    p_content         text    := add_message.content;
    p_input_tokens    integer := add_message.input_tokens;
    p_output_tokens   integer := add_message.output_tokens;
    p_attachment_ids  uuid[]  := add_message.attachment_ids;
    p_idempotency_key text    := add_message.idempotency_key;
    s   session.sessions;
    m   session.messages;
    f   uuid;
BEGIN
    PERFORM isa.not_null('user_id, session_id, role, input_tokens, output_tokens, attachment_ids',
                         p_user_id, p_session_id, p_role, p_input_tokens, p_output_tokens, p_attachment_ids);
    IF p_role NOT IN ('user', 'assistant', 'system', 'tool') THEN
        RAISE EXCEPTION 'role must be user, assistant, system or tool, not "%"', left(p_role, 40) USING ERRCODE = '22023';
    END IF;
    IF coalesce(p_content, '') = '' AND cardinality(p_attachment_ids) = 0 THEN
        RAISE EXCEPTION 'a message needs content or attachments' USING ERRCODE = '22023';
    END IF;
    IF length(p_content) > 1048576 THEN
        RAISE EXCEPTION 'a message''s content is at most 1048576 characters, not %', length(p_content)
            USING ERRCODE = '22023';
    END IF;
    IF p_input_tokens NOT BETWEEN 0 AND 100000000 OR p_output_tokens NOT BETWEEN 0 AND 100000000 THEN
        RAISE EXCEPTION 'token counts must be from 0 to 100000000, not % and %', p_input_tokens, p_output_tokens
            USING ERRCODE = '22023';
    END IF;
    IF cardinality(p_attachment_ids) > 20 OR array_position(p_attachment_ids, NULL) IS NOT NULL
       OR cardinality(p_attachment_ids) <> (SELECT count(DISTINCT a) FROM unnest(p_attachment_ids) a) THEN
        RAISE EXCEPTION 'attachment_ids must be at most 20 distinct file ids, without null' USING ERRCODE = '22023';
    END IF;
    PERFORM isa.check_idempotency_key(p_idempotency_key);
    s := session._session(p_user_id, p_session_id, true);       -- serialises the session's messages
    IF p_idempotency_key IS NOT NULL THEN
        SELECT * INTO m FROM session.messages x
         WHERE x.session_id = p_session_id AND x.idempotency_key = p_idempotency_key;
        IF FOUND THEN
            IF m.role <> p_role OR m.content IS DISTINCT FROM nullif(p_content, '')
               OR m.input_tokens <> p_input_tokens OR m.output_tokens <> p_output_tokens
               OR m.attachment_ids <> p_attachment_ids THEN
                RAISE EXCEPTION 'idempotency key "%" was already used for another message of session %',
                    p_idempotency_key, p_session_id USING ERRCODE = '23505';
            END IF;
            RETURN session._message_info(m);
        END IF;
    END IF;
    IF s.status <> 'active' THEN
        RAISE EXCEPTION 'session % has ended (%)', p_session_id, s.end_reason USING ERRCODE = '23514',
            HINT = 'Start a new session.';
    END IF;
    FOREACH f IN ARRAY p_attachment_ids LOOP
        IF NOT storage.can_read(p_user_id, f) THEN
            RAISE EXCEPTION 'not allowed: user % may not read file %', p_user_id, f USING ERRCODE = '42501',
                HINT = 'Attach files of the user''s own, or shared with them.';
        END IF;
    END LOOP;

    UPDATE session.sessions x
       SET message_count = x.message_count + 1, input_tokens = x.input_tokens + p_input_tokens,
           output_tokens = x.output_tokens + p_output_tokens, last_activity_at = now()
     WHERE x.session_id = p_session_id
    RETURNING * INTO s;
    INSERT INTO session.messages AS x (message_id, session_id, seq, role, content, input_tokens, output_tokens,
                                       attachment_ids, idempotency_key)
    VALUES (isa.uuid_v7(), p_session_id, s.message_count, p_role, nullif(p_content, ''), p_input_tokens,
            p_output_tokens, p_attachment_ids, p_idempotency_key)
    RETURNING * INTO m;
    PERFORM isa.publish_event('message.sent', 'session_service',
        jsonb_build_object('message_id', m.message_id, 'session_id', m.session_id, 'user_id', s.user_id,
                           'seq', m.seq, 'role', m.role, 'input_tokens', m.input_tokens,
                           'output_tokens', m.output_tokens, 'attachment_ids', to_jsonb(m.attachment_ids)));
    RETURN session._message_info(m);
END
$$;
COMMENT ON FUNCTION session.add_message(uuid, uuid, text, text, integer, integer, uuid[], text) IS
    'Adds a message (role user, assistant, system or tool; content up to 1048576 characters and/or up to 20 attachments, files of storage the user may read; token counts 0 to 100000000) to an active session of the user, for the AI backends; publishes message.sent. Token counts are the session''s totals, never a charge. The same idempotency key with the same message returns it; with another 23505. 22023 bad value, 23514 session ended, 42501 a file the user may not read, P0002 unknown session or another user''s.';

CREATE FUNCTION session.send_message(user_id uuid, session_id uuid, content text,
                                     attachment_ids uuid[] DEFAULT '{}', idempotency_key text DEFAULT NULL)
RETURNS session.message_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN session.add_message(user_id, session_id, 'user', content, 0, 0, attachment_ids, idempotency_key);
END
$$;
COMMENT ON FUNCTION session.send_message(uuid, uuid, text, uuid[], text) IS
    'The user''s own message (role user, no token counts) to their active session, as add_message: the HTTP route of the user. 22023, 23505, 23514, 42501, P0002 as add_message.';

CREATE FUNCTION session.list_messages(user_id uuid, session_id uuid, after_seq integer DEFAULT 0,
                                      row_limit integer DEFAULT 100)
RETURNS SETOF session.message_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM session._session(user_id, session_id, false);
    PERFORM isa.not_null('after_seq', after_seq);
    PERFORM isa.check_page_size('row_limit', row_limit);
    IF after_seq < 0 THEN
        RAISE EXCEPTION 'after_seq must be 0 or more, not %', after_seq USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
        SELECT (session._message_info(m)).*
          FROM session.messages m
         WHERE m.session_id = list_messages.session_id AND m.seq > list_messages.after_seq
         ORDER BY m.seq
         LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION session.list_messages(uuid, uuid, integer, integer) IS
    'The messages of one of the user''s sessions in order, those numbered after after_seq (default 0: from the first), at most row_limit (1 to 1000, default 100); the next page: after_seq = the last seq of this one. P0002 unknown session or another user''s, 22004, 22023.';

-- ---------------------------------------------------------------- jobs
CREATE FUNCTION session.end_idle_sessions() RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s session.sessions;
    n integer := 0;
BEGIN
    FOR s IN SELECT * FROM session.sessions x
              WHERE x.status = 'active'
                AND x.last_activity_at < now() - make_interval(secs => session._idle_timeout())
              ORDER BY x.last_activity_at
              FOR UPDATE SKIP LOCKED LOOP
        PERFORM session._end(s, 'idle');
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION session.end_idle_sessions() IS
    'Ends the active sessions without a message for isa.session_idle_timeout (default 30 min), reason idle, one session.ended each; returns how many. pg_cron runs it every minute (isa-session-idle).';

INSERT INTO isa.scheduled_jobs (jobname, schedule, command, description)
VALUES ('isa-session-idle', '* * * * *', 'SELECT session.end_idle_sessions()',
        'Every minute: end the AI chat sessions idle for isa.session_idle_timeout.')
ON CONFLICT (jobname) DO NOTHING;

-- ---------------------------------------------------------------- handlers
-- auth_service.user.logged_out {user_id, session_id, reason}: the login
-- ended (logout, password change, deletion, refresh reuse …); the chat
-- sessions started in it end too.  The lock orders this against a start in
-- the same login (session._login).
CREATE FUNCTION session.on_user_logged_out(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sid text := e.data ->> 'session_id';
    uid text := e.data ->> 'user_id';
    s   session.sessions;
BEGIN
    IF NOT isa.is_uuid(sid) OR NOT isa.is_uuid(uid) THEN
        RAISE WARNING 'session: user.logged_out % ignored: needs data.session_id and data.user_id (uuids), got %',
            e.id, e.data;
        RETURN;
    END IF;
    PERFORM session._lock_login(sid::uuid);
    FOR s IN SELECT * FROM session.sessions x
              WHERE x.login_session_id = sid::uuid AND x.user_id = uid::uuid AND x.status = 'active'
              ORDER BY x.session_id FOR UPDATE LOOP
        PERFORM session._end(s, 'logout');
    END LOOP;
END
$$;
COMMENT ON FUNCTION session.on_user_logged_out(isa.event) IS
    'Handler of auth_service.user.logged_out: the active sessions started in that login end (reason logout, session.ended each).';

-- account_service.user.deleted {user_id}: the user's active sessions end
-- (reason user_deleted), then what they wrote is erased: messages' content
-- and attachments, sessions' titles and the idempotency keys.  Kept, as
-- account keeps the user's row and storage a deleted file's: the sessions
-- (model or agent, times, end reason, totals) and each message's role,
-- number, token counts and time.  Idempotent.
CREATE FUNCTION session.on_user_deleted(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid text := e.data ->> 'user_id';
    s   session.sessions;
BEGIN
    IF NOT isa.is_uuid(uid) THEN
        RAISE WARNING 'session: user.deleted % ignored: data.user_id is not a uuid (%)', e.id, e.data -> 'user_id';
        RETURN;
    END IF;
    FOR s IN SELECT * FROM session.sessions x
              WHERE x.user_id = uid::uuid AND x.status = 'active'
              ORDER BY x.session_id FOR UPDATE LOOP
        PERFORM session._end(s, 'user_deleted');
    END LOOP;
    UPDATE session.messages m SET content = NULL, attachment_ids = '{}', idempotency_key = NULL
      FROM session.sessions x
     WHERE x.session_id = m.session_id AND x.user_id = uid::uuid
       AND (m.content IS NOT NULL OR m.attachment_ids <> '{}' OR m.idempotency_key IS NOT NULL);
    UPDATE session.sessions x SET title = NULL, idempotency_key = NULL, erased_at = coalesce(x.erased_at, now())
     WHERE x.user_id = uid::uuid;
END
$$;
COMMENT ON FUNCTION session.on_user_deleted(isa.event) IS
    'Handler of account_service.user.deleted: the user''s active sessions end (reason user_deleted, session.ended each), then their content is erased: messages'' content and attachments, sessions'' titles, idempotency keys. The sessions with their totals and the messages'' role, number, token counts and time are kept.';

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA session FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    session.start_session(uuid, text, text, text, text, uuid),
    session.end_session(uuid, uuid),
    session.get_session(uuid, uuid),
    session.list_sessions(uuid, text, uuid, integer),
    session.add_message(uuid, uuid, text, text, integer, integer, uuid[], text),
    session.send_message(uuid, uuid, text, uuid[], text),
    session.list_messages(uuid, uuid, integer, integer)
TO isa_app_session;
GRANT EXECUTE ON FUNCTION session.end_idle_sessions() TO isa_admin;
-- What session's own code calls of other services and of isa, as isa_svc_session.
GRANT EXECUTE ON FUNCTION
    account.require_user(uuid),
    wallet.check_balance(uuid, bigint),
    storage.can_read(uuid, uuid),
    auth.session_is_live(jsonb),
    isa.http_claims()
TO isa_svc_session;

-- ---------------------------------------------------------------- subscriptions
SELECT isa.subscribe_to_events('session', 'auth_service.user.logged_out',
                               'session.on_user_logged_out(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('session', 'account_service.user.deleted',
                               'session.on_user_deleted(isa.event)'::regprocedure);

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- A user's own sessions only: user_id is filled from the token, and a
-- session of another user is not found (P0002, 404).  The AI backends add
-- their messages (assistant, with token counts) through SQL: add_message.
SELECT isa.http_route('POST', '/v1/sessions', 'session.start_session(uuid, text, text, text, text, uuid)', 'user',
    'Starts an AI chat session with a model or an agent (body: model or agent, title, idempotency_key); refused below isa.session_min_balance.',
    subject_param => 'user_id', status => 201);
SELECT isa.http_route('GET', '/v1/sessions', 'session.list_sessions(uuid, text, uuid, integer)', 'user',
    'The caller''s sessions, newest first (status, before, row_limit).', subject_param => 'user_id');
SELECT isa.http_route('GET', '/v1/sessions/{session_id}', 'session.get_session(uuid, uuid)', 'user',
    'One of the caller''s sessions with its totals.', subject_param => 'user_id');
SELECT isa.http_route('POST', '/v1/sessions/{session_id}/end', 'session.end_session(uuid, uuid)', 'user',
    'The caller ends their session: session.ended with its totals.', subject_param => 'user_id');
SELECT isa.http_route('GET', '/v1/sessions/{session_id}/messages', 'session.list_messages(uuid, uuid, integer, integer)', 'user',
    'A session''s messages in order, a page at a time (after_seq, row_limit).', subject_param => 'user_id');
SELECT isa.http_route('POST', '/v1/sessions/{session_id}/messages', 'session.send_message(uuid, uuid, text, uuid[], text)', 'user',
    'The caller''s message to their session (body: content, attachment_ids, idempotency_key).',
    subject_param => 'user_id', status => 201);
