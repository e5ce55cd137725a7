-- session.sql — the session service (AI chat sessions): starting one (a model
-- or an agent, the wallet's minimum balance, the login it belongs to,
-- idempotency), messages (roles, token counts, attachments the user may
-- read, numbering, idempotency, paging), ending (by the user, idle, the
-- login's logout, the user's deletion and what it erases), the events written
-- to session.outbox, that nothing bills session.ended, and who may call what.
-- Through real NATS, the bridge and HTTP: test/integration/79-session-chain.sh.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(128);

\ir ../fixtures.psql
-- Users by label (fixtures.psql's u): ann and ben sign up with a password
-- (they log in), cat, dan and eve are accounts only.
INSERT INTO u
SELECT l, (auth.sign_up(e, initcap(l), 'session-pgtap-password')).user_id, e
  FROM unnest(ARRAY['ann', 'ben']) l, LATERAL (SELECT 'ses-' || l || '-' || gen_random_uuid() || '@example.test' AS e) m;
SELECT pg_temp.new_user(l) FROM unnest(ARRAY['cat', 'dan', 'eve']) l;
-- Wallets (user.created reaches wallet through NATS, not inside this
-- transaction): ann 100 tokens, ben an empty wallet, cat none, dan and eve 50.
SELECT wallet.open_wallet(pg_temp.uid(l)) FROM unnest(ARRAY['ann', 'ben', 'dan', 'eve']) l;
SELECT wallet.add(pg_temp.uid(l), n, 'ses-seed-' || l || '-' || txid_current(), 'manual')
  FROM (VALUES ('ann', 100), ('dan', 50), ('eve', 50)) AS w (l, n);
-- Logins, by label.
CREATE TEMP TABLE lg (label text PRIMARY KEY, sid uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.sid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT sid FROM pg_temp.lg WHERE label = l$$;
INSERT INTO lg SELECT l, (auth.login((SELECT email FROM u WHERE label = w), 'session-pgtap-password')).session_id
  FROM (VALUES ('ann1', 'ann'), ('ann2', 'ann'), ('ann3', 'ann'), ('ben1', 'ben')) AS x (l, w);
-- Sessions this file starts, by label (files: fixtures.psql's pg_temp.file).
CREATE TEMP TABLE s (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.ses(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.s WHERE label = l$$;
-- The events of this file's users, in order, and a mark to read those written since.
CREATE TEMP VIEW ev AS
SELECT row_number() OVER (ORDER BY x.id) AS n, x.event_type, x.data
  FROM session.outbox x WHERE x.data ->> 'user_id' IN (SELECT id::text FROM u);
CREATE TEMP TABLE mark (at bigint) ON COMMIT DROP;
INSERT INTO mark VALUES (0);
CREATE FUNCTION pg_temp.reset_mark() RETURNS void LANGUAGE sql
    AS $$UPDATE mark SET at = (SELECT coalesce(max(n), 0) FROM ev)$$;
CREATE FUNCTION pg_temp.since_types() RETURNS text LANGUAGE sql
    AS $$SELECT coalesce(string_agg(event_type, ' ' ORDER BY n), '-') FROM ev WHERE n > (SELECT at FROM mark)$$;
CREATE FUNCTION pg_temp.event(event_type text, source text, data jsonb) RETURNS isa.event LANGUAGE sql AS $$
    SELECT isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(), 'event_type', event_type, 'source', source,
                                                  'timestamp', now(), 'data', data)) $$;
CREATE FUNCTION pg_temp.row(l text) RETURNS session.sessions LANGUAGE sql
    AS $$SELECT * FROM session.sessions WHERE session_id = pg_temp.ses(l)$$;

-- ---------------------------------------------------------------- catalogue
SELECT has_table('session', 'sessions', 'table session.sessions exists');
SELECT has_table('session', 'messages', 'table session.messages exists');
SELECT set_eq($$SELECT event_type || ' ' || (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(data_fields) k)
                 FROM isa.event_types WHERE source = 'session_service' AND event_type <> 'event.dead_lettered'$$,
              ARRAY['session.started agent,login_session_id,model,session_id,started_at,user_id',
                    'session.ended agent,ended_at,input_tokens,message_count,model,output_tokens,reason,session_id,started_at,user_id',
                    'message.sent attachment_ids,input_tokens,message_id,output_tokens,role,seq,session_id,user_id'],
              'session_service''s three events are registered with their data fields');
SELECT set_eq($$SELECT subject_filter || ' ' || handler::text FROM isa.subscriptions WHERE service = 'session'$$,
              ARRAY['auth_service.user.logged_out session.on_user_logged_out(isa.event)',
                    'account_service.user.deleted session.on_user_deleted(isa.event)'],
              'session subscribes to user.logged_out and user.deleted');
SELECT set_eq($$SELECT jobname || ' ' || command FROM isa.scheduled_jobs WHERE jobname LIKE 'isa-session-%'$$,
              ARRAY['isa-session-idle SELECT session.end_idle_sessions()'], 'its job ends idle sessions');
SELECT set_eq($$SELECT method || ' ' || path || ' ' || auth || ' ' || subject_param FROM isa.http_routes
                 WHERE function::text LIKE 'session.%'$$,
              ARRAY['POST /v1/sessions user user_id', 'GET /v1/sessions user user_id',
                    'GET /v1/sessions/{session_id} user user_id', 'POST /v1/sessions/{session_id}/end user user_id',
                    'GET /v1/sessions/{session_id}/messages user user_id',
                    'POST /v1/sessions/{session_id}/messages user user_id'],
              'six user routes, the user always from the token');
-- session.ended is a summary: no subscription of any service takes it (the
-- usage events are the charge: billing subscribes to external.usage.recorded.>)
-- but the recorders of every event, the audit trail and the event store.
SELECT is((SELECT string_agg(service || ' ' || subject_filter, ', ') FROM isa.subscriptions
            WHERE 'session_service.session.ended'
                  ~ ('^' || replace(replace(replace(subject_filter, '.', '\.'), '*', '[^.]+'), '>', '.+') || '$')
              AND service NOT IN ('audit', 'event')),
          NULL, 'no subscription but the recorders'' matches session_service.session.ended: nothing bills it');
SELECT ok(EXISTS (SELECT FROM isa.subscriptions WHERE service = 'billing' AND subject_filter = 'external.usage.recorded.>'),
          'billing charges the usage events (external.usage.recorded.>)');

-- ---------------------------------------------------------------- start
SELECT pg_temp.reset_mark();
INSERT INTO s SELECT 'a1', session_id FROM session.start_session(pg_temp.uid('ann'), ' model-x ', title => '  Trip plans ',
                                                                  idempotency_key => 'start-a1');
SELECT is((SELECT (user_id = pg_temp.uid('ann'), model, agent, title, status, end_reason, message_count, login_session_id)::text
             FROM session.get_session(pg_temp.uid('ann'), pg_temp.ses('a1'))),
          '(t,model-x,,"Trip plans",active,,0,)', 'ann starts a session with a model: trimmed, active, no login outside HTTP');
SELECT is(pg_temp.since_types(), 'session.started', 'session.started is published');
SELECT is((SELECT data - 'started_at' FROM ev WHERE event_type = 'session.started'),
          jsonb_build_object('session_id', pg_temp.ses('a1'), 'user_id', pg_temp.uid('ann'), 'model', 'model-x'),
          'session.started: session, user, model (no agent, no login)');
SELECT is((SELECT session_id FROM session.start_session(pg_temp.uid('ann'), 'model-x', title => 'Trip plans',
                                                        idempotency_key => 'start-a1')),
          pg_temp.ses('a1'), 'the same idempotency key and arguments return the first session');
SELECT is(pg_temp.since_types(), 'session.started', '… and publish nothing more');
SELECT throws_ok(format('SELECT session.start_session(%L, %L, idempotency_key => %L)', pg_temp.uid('ann'), 'model-y', 'start-a1'),
                 '23505', NULL, 'the same key with another model is 23505');
INSERT INTO s SELECT 'agent', session_id FROM session.start_session(pg_temp.uid('ann'), agent => 'travel-agent');
SELECT is((SELECT (model, agent)::text FROM session.get_session(pg_temp.uid('ann'), pg_temp.ses('agent'))),
          '(,travel-agent)', 'a session with an agent');
SELECT throws_ok(format('SELECT session.start_session(%L, %L, %L)', pg_temp.uid('ann'), 'm', 'a'), '22023',
                 'a session is with a model or an agent: give one of model and agent', 'both a model and an agent: 22023');
SELECT throws_ok(format('SELECT session.start_session(%L)', pg_temp.uid('ann')), '22023', NULL, 'neither: 22023');
SELECT throws_ok(format('SELECT session.start_session(%L, %L)', pg_temp.uid('ann'), repeat('m', 101)), '22023', NULL,
                 'a model of 101 characters: 22023');
SELECT throws_ok(format('SELECT session.start_session(%L, %L)', pg_temp.uid('ann'), E'mo\ndel'), '22023', NULL,
                 'a model with a control character: 22023');
SELECT throws_ok(format('SELECT session.start_session(%L, agent => %L)', pg_temp.uid('ann'), '  '), '22023', NULL,
                 'a blank agent: 22023');
SELECT throws_ok(format('SELECT session.start_session(%L, %L, title => %L)', pg_temp.uid('ann'), 'm', repeat('t', 201)),
                 '22023', NULL, 'a title of 201 characters: 22023');
SELECT throws_ok(format('SELECT session.start_session(%L, %L, idempotency_key => %L)', pg_temp.uid('ann'), 'm', ''),
                 '22023', NULL, 'an empty idempotency key: 22023');
SELECT throws_ok($$SELECT session.start_session(NULL, 'm')$$, '22004', 'user_id must not be null', 'a NULL user: 22004');
SELECT throws_ok(format('SELECT session.start_session(%L, %L)', gen_random_uuid(), 'm'), 'P0002', NULL, 'an unknown user: P0002');

-- the wallet's minimum (isa.session_min_balance, default 1)
SELECT is(current_setting('isa.session_min_balance'), '1', 'isa.session_min_balance is 1 token by default');
SELECT pg_temp.reset_mark();
SELECT throws_ok(format('SELECT session.start_session(%L, %L, idempotency_key => %L)', pg_temp.uid('ben'), 'model-x', 'ben-1'),
                 '23514', 'the wallet of user ' || pg_temp.uid('ben') || ' holds less than isa.session_min_balance (1 tokens): no session started',
                 'an empty wallet: 23514, saying why');
SELECT throws_ok(format('SELECT session.start_session(%L, %L)', pg_temp.uid('cat'), 'model-x'), '23514', NULL,
                 'no wallet at all: 23514');
SELECT is((SELECT count(*) FROM session.sessions WHERE user_id IN (pg_temp.uid('ben'), pg_temp.uid('cat'))), 0::bigint,
          'a refused start writes no session');
SELECT is(pg_temp.since_types(), '-', 'and no event');
SET LOCAL isa.session_min_balance = 101;
SELECT throws_ok(format('SELECT session.start_session(%L, %L)', pg_temp.uid('ann'), 'model-x'), '23514', NULL,
                 'ann''s 100 tokens are below a minimum of 101: 23514');
SET LOCAL isa.session_min_balance = 100;
SELECT lives_ok(format('SELECT session.start_session(%L, %L)', pg_temp.uid('ann'), 'model-x'),
                'and reach a minimum of 100');
SET LOCAL isa.session_min_balance = 0;
INSERT INTO s SELECT 'ben0', session_id FROM session.start_session(pg_temp.uid('ben'), 'model-x');
SELECT ok(pg_temp.ses('ben0') IS NOT NULL, 'a minimum of 0 checks no wallet: ben starts with none');
RESET isa.session_min_balance;
SELECT is(current_setting('isa.session_min_balance'), '1', 'the setting is back to its default');
SELECT is((SELECT session_id FROM session.start_session(pg_temp.uid('ann'), 'model-x', title => 'Trip plans',
                                                        idempotency_key => 'start-a1')),
          pg_temp.ses('a1'), 'a retry with its key returns the first session whatever the wallet');

-- the login it belongs to
INSERT INTO s SELECT 'l1', session_id FROM session.start_session(pg_temp.uid('ann'), 'model-x', login_session_id => pg_temp.sid('ann1'));
SELECT is((SELECT login_session_id FROM session.get_session(pg_temp.uid('ann'), pg_temp.ses('l1'))), pg_temp.sid('ann1'),
          'a session started in a login named by the caller');
SELECT is((SELECT data ->> 'login_session_id' FROM ev WHERE event_type = 'session.started' AND data ->> 'session_id' = pg_temp.ses('l1')::text),
          pg_temp.sid('ann1')::text, 'session.started names the login');
SELECT set_config('request.jwt.claims', jsonb_build_object('sub', pg_temp.uid('ann'), 'typ', 'access', 'sid', pg_temp.sid('ann2'))::text, true);
INSERT INTO s SELECT 'l2', session_id FROM session.start_session(pg_temp.uid('ann'), 'model-x');
SELECT is((SELECT login_session_id FROM session.get_session(pg_temp.uid('ann'), pg_temp.ses('l2'))), pg_temp.sid('ann2'),
          'over HTTP, the login is the sid of the caller''s access token');
INSERT INTO s SELECT 'l1b', session_id FROM session.start_session(pg_temp.uid('ann'), 'model-x', login_session_id => pg_temp.sid('ann1'));
SELECT is((SELECT login_session_id FROM session.get_session(pg_temp.uid('ann'), pg_temp.ses('l1b'))), pg_temp.sid('ann1'),
          'a login named wins over the token''s (both the caller''s own)');
SELECT set_config('request.jwt.claims', jsonb_build_object('sub', pg_temp.uid('ann'), 'typ', 'access', 'sid', pg_temp.sid('ben1'))::text, true);
SELECT throws_ok(format('SELECT session.start_session(%L, %L)', pg_temp.uid('ann'), 'model-x'), '42501', NULL,
                 'claims whose sid is another user''s login: 42501');
SELECT set_config('request.jwt.claims', '', true);
SELECT throws_ok(format('SELECT session.start_session(%L, %L, login_session_id => %L)', pg_temp.uid('ann'), 'model-x', pg_temp.sid('ben1')),
                 '42501', NULL, 'another user''s login: 42501');
SELECT throws_ok(format('SELECT session.start_session(%L, %L, login_session_id => %L)', pg_temp.uid('ann'), 'model-x', gen_random_uuid()),
                 '42501', NULL, 'an unknown login: 42501');

-- ---------------------------------------------------------------- messages
SELECT pg_temp.file('ann', 'ann'), pg_temp.file('ben', 'ben'), pg_temp.file('shared', 'ben');
SELECT storage.share_file(pg_temp.uid('ben'), pg_temp.fid('shared'), pg_temp.uid('ann'));
SELECT pg_temp.reset_mark();
SELECT is((SELECT (seq, role, content, input_tokens, output_tokens, attachment_ids = ARRAY[pg_temp.fid('ann')])::text
             FROM session.send_message(pg_temp.uid('ann'), pg_temp.ses('a1'), 'Plan a trip', ARRAY[pg_temp.fid('ann')], 'm1')),
          '(1,user,"Plan a trip",0,0,t)', 'the user''s message: number 1, role user, no tokens, their own file attached');
SELECT is((SELECT (seq, role, input_tokens, output_tokens)::text
             FROM session.add_message(pg_temp.uid('ann'), pg_temp.ses('a1'), 'assistant', 'Where to?', 1200, 300)),
          '(2,assistant,1200,300)', 'the model''s answer with its token counts: number 2');
SELECT is((SELECT (seq, attachment_ids = ARRAY[pg_temp.fid('shared')])::text
             FROM session.add_message(pg_temp.uid('ann'), pg_temp.ses('a1'), 'user', NULL, attachment_ids => ARRAY[pg_temp.fid('shared')])),
          '(3,t)', 'a message of an attachment only: a file shared with the user');
SELECT is((SELECT (message_count, input_tokens, output_tokens, last_activity_at >= started_at)::text FROM pg_temp.row('a1')),
          '(3,1200,300,t)', 'the session counts its messages and tokens');
SELECT is(pg_temp.since_types(), 'message.sent message.sent message.sent', 'one message.sent per message');
SELECT is((SELECT data - 'message_id' FROM ev WHERE event_type = 'message.sent' AND (data ->> 'seq')::int = 1
              AND data ->> 'session_id' = pg_temp.ses('a1')::text),
          jsonb_build_object('session_id', pg_temp.ses('a1'), 'user_id', pg_temp.uid('ann'), 'seq', 1, 'role', 'user',
                             'input_tokens', 0, 'output_tokens', 0, 'attachment_ids', jsonb_build_array(pg_temp.fid('ann'))),
          'message.sent: session, user, number, role, tokens, attachments; not the content');
SELECT is((SELECT seq FROM session.send_message(pg_temp.uid('ann'), pg_temp.ses('a1'), 'Plan a trip', ARRAY[pg_temp.fid('ann')], 'm1')),
          1, 'the same idempotency key and message return the first');
SELECT is(pg_temp.since_types(), 'message.sent message.sent message.sent', '… and publish nothing more');
SELECT throws_ok(format('SELECT session.send_message(%L, %L, %L, idempotency_key => %L)', pg_temp.uid('ann'), pg_temp.ses('a1'), 'Other', 'm1'),
                 '23505', NULL, 'the same key with another message: 23505');
SELECT throws_ok(format('SELECT session.add_message(%L, %L, %L, %L)', pg_temp.uid('ann'), pg_temp.ses('a1'), 'robot', 'x'),
                 '22023', NULL, 'an unknown role: 22023');
SELECT throws_ok(format('SELECT session.add_message(%L, %L, NULL, %L)', pg_temp.uid('ann'), pg_temp.ses('a1'), 'x'),
                 '22004', NULL, 'a NULL role: 22004');
SELECT throws_ok(format('SELECT session.send_message(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.ses('a1'), ''),
                 '22023', 'a message needs content or attachments', 'no content and no attachment: 22023');
SELECT throws_ok(format('SELECT session.send_message(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.ses('a1'), repeat('x', 1048577)),
                 '22023', NULL, 'content over 1048576 characters: 22023');
SELECT throws_ok(format('SELECT session.add_message(%L, %L, %L, %L, -1)', pg_temp.uid('ann'), pg_temp.ses('a1'), 'assistant', 'x'),
                 '22023', NULL, 'negative tokens: 22023');
SELECT throws_ok(format('SELECT session.add_message(%L, %L, %L, %L, 0, 100000001)', pg_temp.uid('ann'), pg_temp.ses('a1'), 'assistant', 'x'),
                 '22023', NULL, 'more than 100000000 tokens: 22023');
SELECT throws_ok(format('SELECT session.send_message(%L, %L, %L, %L)', pg_temp.uid('ann'), pg_temp.ses('a1'), 'x',
                        ARRAY(SELECT gen_random_uuid() FROM generate_series(1, 21))),
                 '22023', NULL, '21 attachments: 22023');
SELECT throws_ok(format('SELECT session.send_message(%L, %L, %L, %L)', pg_temp.uid('ann'), pg_temp.ses('a1'), 'x',
                        ARRAY[pg_temp.fid('ann'), pg_temp.fid('ann')]),
                 '22023', NULL, 'the same file twice: 22023');
SELECT throws_ok(format('SELECT session.send_message(%L, %L, %L, %L)', pg_temp.uid('ann'), pg_temp.ses('a1'), 'x',
                        ARRAY[pg_temp.fid('ann'), NULL]),
                 '22023', NULL, 'a NULL file id: 22023');
SELECT throws_ok(format('SELECT session.send_message(%L, %L, %L, %L)', pg_temp.uid('ann'), pg_temp.ses('a1'), 'x',
                        ARRAY[pg_temp.fid('ben')]),
                 '42501', 'not allowed: user ' || pg_temp.uid('ann') || ' may not read file ' || pg_temp.fid('ben'),
                 'a file of someone else''s, not shared: 42501');
SELECT throws_ok(format('SELECT session.send_message(%L, %L, %L, %L)', pg_temp.uid('ann'), pg_temp.ses('a1'), 'x',
                        ARRAY[gen_random_uuid()]),
                 '42501', NULL, 'an unknown file: 42501 as well (no telling)');
SELECT throws_ok(format('SELECT session.send_message(%L, %L, %L)', pg_temp.uid('ben'), pg_temp.ses('a1'), 'hi'),
                 'P0002', 'session ' || pg_temp.ses('a1') || ' not found', 'another user''s session: P0002, as an unknown one');
SELECT throws_ok(format('SELECT session.send_message(%L, %L, %L)', pg_temp.uid('ann'), gen_random_uuid(), 'hi'),
                 'P0002', NULL, 'an unknown session: P0002');
SELECT throws_ok(format('SELECT session.send_message(NULL, %L, %L)', pg_temp.ses('a1'), 'hi'), '22004', NULL, 'a NULL user: 22004');
SELECT is((SELECT message_count FROM pg_temp.row('a1')), 3, 'the refused messages left nothing');
SELECT is(pg_temp.since_types(), 'message.sent message.sent message.sent', '… and published nothing');

-- paging
SELECT session.send_message(pg_temp.uid('ann'), pg_temp.ses('a1'), 'message ' || i) FROM generate_series(4, 7) i;
SELECT is((SELECT array_agg(seq ORDER BY seq) FROM session.list_messages(pg_temp.uid('ann'), pg_temp.ses('a1'), row_limit => 3)),
          ARRAY[1, 2, 3], 'the first page: numbers 1 to 3, in order');
SELECT is((SELECT array_agg(seq ORDER BY seq) FROM session.list_messages(pg_temp.uid('ann'), pg_temp.ses('a1'), 3, 3)),
          ARRAY[4, 5, 6], 'the next: after the last number of the page');
SELECT is((SELECT array_agg(content ORDER BY seq) FROM session.list_messages(pg_temp.uid('ann'), pg_temp.ses('a1'), 6, 3)),
          ARRAY['message 7'], 'the last, with the content');
SELECT is((SELECT count(*) FROM session.list_messages(pg_temp.uid('ann'), pg_temp.ses('a1'), 7)), 0::bigint, 'then nothing');
SELECT throws_ok(format('SELECT session.list_messages(%L, %L, -1)', pg_temp.uid('ann'), pg_temp.ses('a1')), '22023', NULL,
                 'a negative after_seq: 22023');
SELECT throws_ok(format('SELECT session.list_messages(%L, %L, 0, 0)', pg_temp.uid('ann'), pg_temp.ses('a1')), '22023', NULL,
                 'a page of 0: 22023');
SELECT throws_ok(format('SELECT session.list_messages(%L, %L, NULL)', pg_temp.uid('ann'), pg_temp.ses('a1')), '22004', NULL,
                 'a NULL after_seq: 22004');
SELECT throws_ok(format('SELECT session.list_messages(%L, %L)', pg_temp.uid('ben'), pg_temp.ses('a1')), 'P0002', NULL,
                 'another user reads nothing of it: P0002');

-- ---------------------------------------------------------------- lists
SELECT is((SELECT array_agg(session_id ORDER BY session_id DESC) FROM session.list_sessions(pg_temp.uid('ann'))),
          (SELECT array_agg(session_id ORDER BY session_id DESC) FROM session.sessions WHERE user_id = pg_temp.uid('ann')),
          'a user''s sessions, newest first');
SELECT is((SELECT count(*) FROM session.list_sessions(pg_temp.uid('ann')) WHERE user_id <> pg_temp.uid('ann')), 0::bigint,
          'and only theirs');
SELECT is((SELECT array_agg(session_id) FROM session.list_sessions(pg_temp.uid('ann'), row_limit => 2)),
          (SELECT array_agg(session_id) FROM (SELECT session_id FROM session.sessions WHERE user_id = pg_temp.uid('ann')
                                               ORDER BY session_id DESC LIMIT 2) x),
          'a page of two');
SELECT is((SELECT array_agg(session_id) FROM session.list_sessions(pg_temp.uid('ann'), before => pg_temp.ses('agent'))),
          ARRAY[pg_temp.ses('a1')], 'before the second session: the first');
SELECT throws_ok(format('SELECT session.list_sessions(%L, %L)', pg_temp.uid('ann'), 'open'), '22023', NULL, 'an unknown status: 22023');
SELECT throws_ok(format('SELECT session.list_sessions(%L, row_limit => 1001)', pg_temp.uid('ann')), '22023', NULL, 'a page of 1001: 22023');
SELECT throws_ok(format('SELECT session.get_session(%L, %L)', pg_temp.uid('ben'), pg_temp.ses('a1')), 'P0002', NULL,
                 'get_session of another user''s session: P0002');

-- ---------------------------------------------------------------- end by the user
SELECT pg_temp.reset_mark();
SELECT is((SELECT (status, end_reason, ended_at IS NOT NULL)::text FROM session.end_session(pg_temp.uid('ann'), pg_temp.ses('a1'))),
          '(ended,user,t)', 'the user ends the session');
SELECT is(pg_temp.since_types(), 'session.ended', 'session.ended is published');
SELECT is((SELECT data - 'started_at' - 'ended_at' FROM ev WHERE event_type = 'session.ended'),
          jsonb_build_object('session_id', pg_temp.ses('a1'), 'user_id', pg_temp.uid('ann'), 'model', 'model-x', 'reason', 'user',
                             'message_count', 7, 'input_tokens', 1200, 'output_tokens', 300),
          'session.ended carries the totals: 7 messages, 1200 input and 300 output tokens');
SELECT is((SELECT status FROM session.end_session(pg_temp.uid('ann'), pg_temp.ses('a1'))), 'ended', 'ending it again returns it');
SELECT is(pg_temp.since_types(), 'session.ended', '… with no second event');
SELECT throws_ok(format('SELECT session.send_message(%L, %L, %L)', pg_temp.uid('ann'), pg_temp.ses('a1'), 'more'), '23514', NULL,
                 'an ended session takes no message: 23514');
SELECT is((SELECT seq FROM session.send_message(pg_temp.uid('ann'), pg_temp.ses('a1'), 'Plan a trip', ARRAY[pg_temp.fid('ann')], 'm1')),
          1, 'a retry of a message sent before the end still returns it');
SELECT throws_ok(format('SELECT session.end_session(%L, %L)', pg_temp.uid('ben'), pg_temp.ses('agent')), 'P0002', NULL,
                 'another user cannot end it: P0002');
SELECT is((SELECT status FROM pg_temp.row('agent')), 'active', 'and it stays active');

-- ---------------------------------------------------------------- idle
SELECT pg_temp.reset_mark();
UPDATE session.sessions SET last_activity_at = now() - interval '31 minutes' WHERE session_id = pg_temp.ses('agent');
UPDATE session.sessions SET last_activity_at = now() - interval '20 minutes' WHERE session_id = pg_temp.ses('l2');
SELECT is(session.end_idle_sessions() >= 1, true, 'end_idle_sessions ends what is idle');
SELECT is((SELECT (status, end_reason)::text FROM pg_temp.row('agent')), '(ended,idle)', 'a session silent for 31 minutes: ended, idle');
SELECT is((SELECT status FROM pg_temp.row('l2')), 'active', 'one silent for 20 minutes stays (isa.session_idle_timeout 30 min)');
SELECT is(pg_temp.since_types(), 'session.ended', 'one session.ended');
SET LOCAL isa.session_idle_timeout = '15min';
SELECT is(session.end_idle_sessions() >= 1, true, 'with isa.session_idle_timeout at 15 minutes');
SELECT is((SELECT end_reason FROM pg_temp.row('l2')), 'idle', 'the 20-minute one ends too');
RESET isa.session_idle_timeout;

-- ---------------------------------------------------------------- logout
-- auth publishes user.logged_out with the login's session_id: what the handler reads.
SELECT ok(auth.logout(pg_temp.sid('ann1')), 'ann logs out of her first login');
SELECT is((SELECT data ->> 'session_id' FROM auth.outbox WHERE event_type = 'user.logged_out'
             AND data ->> 'user_id' = pg_temp.uid('ann')::text), pg_temp.sid('ann1')::text,
          'auth''s user.logged_out names the login (session_id)');
INSERT INTO s SELECT 'l3', session_id FROM session.start_session(pg_temp.uid('ann'), 'model-x', login_session_id => pg_temp.sid('ann3'));
SELECT pg_temp.reset_mark();
SELECT session.on_user_logged_out(pg_temp.event('user.logged_out', 'auth_service',
    jsonb_build_object('user_id', pg_temp.uid('ann'), 'session_id', pg_temp.sid('ann1'), 'reason', 'logout')));
SELECT is((SELECT string_agg(label || ' ' || (r).status || ' ' || coalesce((r).end_reason, '-'), ', ' ORDER BY label)
             FROM (SELECT label, pg_temp.row(label) AS r FROM s WHERE label IN ('l1', 'l1b', 'l3', 'ben0')) x),
          'ben0 active -, l1 ended logout, l1b ended logout, l3 active -',
          'user.logged_out ends the sessions of that login only');
SELECT is(pg_temp.since_types(), 'session.ended session.ended', 'a session.ended for each');
SELECT is((SELECT string_agg(data ->> 'reason', ' ') FROM ev WHERE n > (SELECT at FROM mark)), 'logout logout', 'reason logout');
SELECT session.on_user_logged_out(pg_temp.event('user.logged_out', 'auth_service',
    jsonb_build_object('user_id', pg_temp.uid('ann'), 'session_id', pg_temp.sid('ann1'), 'reason', 'logout')));
SELECT is(pg_temp.since_types(), 'session.ended session.ended', 'the same logout again ends nothing more');
SELECT session.on_user_logged_out(pg_temp.event('user.logged_out', 'auth_service',
    jsonb_build_object('user_id', pg_temp.uid('ben'), 'session_id', pg_temp.sid('ann3'), 'reason', 'logout')));
SELECT is((SELECT status FROM pg_temp.row('l3')), 'active', 'a logout naming another user ends none of ann''s sessions');
SELECT lives_ok($$SELECT session.on_user_logged_out(pg_temp.event('user.logged_out', 'auth_service', '{"session_id": 42}'))$$,
                'a user.logged_out without ids is ignored (warning), not retried');
SELECT throws_ok(format('SELECT session.start_session(%L, %L, login_session_id => %L)', pg_temp.uid('ann'), 'model-x', pg_temp.sid('ann1')),
                 '42501', NULL, 'no session starts in a login that has ended: 42501');

-- ---------------------------------------------------------------- user deleted
INSERT INTO s SELECT 'd1', session_id FROM session.start_session(pg_temp.uid('dan'), 'model-x', title => 'Private things', idempotency_key => 'dan-1');
INSERT INTO s SELECT 'd2', session_id FROM session.start_session(pg_temp.uid('dan'), agent => 'helper');
SELECT pg_temp.file('dan', 'dan');
SELECT session.send_message(pg_temp.uid('dan'), pg_temp.ses('d1'), 'my secret', ARRAY[pg_temp.fid('dan')], 'dm1');
SELECT session.add_message(pg_temp.uid('dan'), pg_temp.ses('d1'), 'assistant', 'your answer', 40, 60);
SELECT session.end_session(pg_temp.uid('dan'), pg_temp.ses('d2'));
INSERT INTO s SELECT 'e1', session_id FROM session.start_session(pg_temp.uid('eve'), 'model-x', title => 'Eve''s');
SELECT session.send_message(pg_temp.uid('eve'), pg_temp.ses('e1'), 'eve''s words');
SELECT pg_temp.reset_mark();
SELECT account.delete_user(pg_temp.uid('dan'));
SELECT session.on_user_deleted(pg_temp.event('user.deleted', 'account_service', jsonb_build_object('user_id', pg_temp.uid('dan'))));
SELECT is((SELECT string_agg(label || ' ' || (r).end_reason, ', ' ORDER BY label) FROM (SELECT label, pg_temp.row(label) AS r FROM s WHERE label LIKE 'd_') x),
          'd1 user_deleted, d2 user', 'user.deleted ends the user''s active session (reason user_deleted); an ended one keeps its reason');
SELECT is(pg_temp.since_types(), 'session.ended', 'one session.ended');
SELECT is((SELECT (data ->> 'message_count', data ->> 'input_tokens', data ->> 'output_tokens')::text FROM ev WHERE n > (SELECT at FROM mark)),
          '(2,40,60)', 'with the totals');
SELECT is((SELECT count(*) FROM session.messages m JOIN session.sessions x USING (session_id)
            WHERE x.user_id = pg_temp.uid('dan') AND (m.content IS NOT NULL OR m.attachment_ids <> '{}' OR m.idempotency_key IS NOT NULL)),
          0::bigint, 'the content, attachments and keys of the user''s messages are erased');
SELECT is((SELECT string_agg((role, seq, input_tokens, output_tokens)::text, ' ' ORDER BY seq) FROM session.messages WHERE session_id = pg_temp.ses('d1')),
          '(user,1,0,0) (assistant,2,40,60)', 'each message''s role, number and token counts are kept');
SELECT is((SELECT count(*) FROM session.sessions WHERE user_id = pg_temp.uid('dan') AND (title IS NOT NULL OR idempotency_key IS NOT NULL OR erased_at IS NULL)),
          0::bigint, 'the sessions'' titles and keys are erased, and when is recorded');
SELECT is((SELECT (model, message_count, input_tokens, output_tokens, status)::text FROM pg_temp.row('d1')), '(model-x,2,40,60,ended)',
          'the session with its model and totals is kept');
SELECT is((SELECT (title, message_count)::text FROM pg_temp.row('e1')) || ' ' ||
          (SELECT content FROM session.messages WHERE session_id = pg_temp.ses('e1')),
          '(Eve''s,1) eve''s words', 'another user''s sessions are untouched');
SELECT session.on_user_deleted(pg_temp.event('user.deleted', 'account_service', jsonb_build_object('user_id', pg_temp.uid('dan'))));
SELECT is(pg_temp.since_types(), 'session.ended', 'user.deleted again changes nothing more');
SELECT lives_ok($$SELECT session.on_user_deleted(pg_temp.event('user.deleted', 'account_service', '{"user_id": "nope"}'))$$,
                'a user.deleted without a user id is ignored (warning)');
SELECT throws_ok(format('SELECT session.start_session(%L, %L)', pg_temp.uid('dan'), 'model-x'), 'P0002', NULL,
                 'a deleted user starts nothing: P0002');

-- ---------------------------------------------------------------- privileges
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
            WHERE p.pronamespace = 'session'::regnamespace AND has_function_privilege('isa_app', p.oid, 'EXECUTE')
              AND (p.proname LIKE '\_%' OR p.proname LIKE 'on\_%' OR NOT p.prosecdef)),
          NULL, 'isa_app may execute only SECURITY DEFINER API functions (no handler, no internal function)');
SELECT is((SELECT array_agg(p.proname::text ORDER BY p.proname::text) FROM pg_proc p WHERE p.pronamespace = 'session'::regnamespace
             AND has_function_privilege('isa_app_session', p.oid, 'EXECUTE')),
          ARRAY['add_message', 'end_session', 'get_session', 'list_messages', 'list_sessions', 'send_message', 'start_session'],
          'isa_app_session executes the seven API functions');
SELECT is((SELECT array_agg(p.proname::text ORDER BY p.proname::text) FROM pg_proc p WHERE p.pronamespace = 'session'::regnamespace
             AND p.prosecdef AND (p.proconfig IS NULL OR NOT 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig))),
          NULL, 'every SECURITY DEFINER function pins search_path = pg_catalog, pg_temp');
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
            WHERE p.pronamespace = 'session'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL
              AND p.proname NOT LIKE '\_%'),
          NULL, 'every function but the internal ones has a comment');
SELECT ok(NOT has_function_privilege('isa_app_session', 'session.end_idle_sessions()', 'EXECUTE')
          AND has_function_privilege('isa_admin', 'session.end_idle_sessions()', 'EXECUTE'),
          'the idle job is the operators'', not the applications''');
SELECT ok(has_function_privilege('isa_svc_session', 'wallet.check_balance(uuid, bigint)', 'EXECUTE')
          AND has_function_privilege('isa_svc_session', 'storage.can_read(uuid, uuid)', 'EXECUTE')
          AND has_function_privilege('isa_svc_session', 'auth.session_is_live(jsonb)', 'EXECUTE'),
          'the service''s role asks wallet, storage and auth');
SELECT ok(NOT EXISTS (SELECT 1 FROM pg_class k WHERE k.relnamespace = 'session'::regnamespace AND k.relkind IN ('r', 'p')
                         AND has_table_privilege('isa_app', k.oid, 'SELECT')),
          'isa_app reads no table of session');
SELECT is((SELECT relowner::regrole::text FROM pg_class WHERE oid = 'session.sessions'::regclass), 'isa_svc_session',
          'session''s tables belong to isa_svc_session');
GRANT SELECT ON u, s TO isa_app;
SET LOCAL ROLE isa_app;
SELECT is((SELECT status FROM session.get_session(pg_temp.uid('eve'), pg_temp.ses('e1'))), 'active', 'isa_app calls the API');
SELECT throws_ok('SELECT 1 FROM session.messages', '42501', NULL, 'isa_app cannot read session.messages');
SELECT throws_ok('SELECT session.end_idle_sessions()', '42501', NULL, 'nor run the idle job');
SELECT throws_ok($$SELECT session.on_user_deleted(NULL::isa.event)$$, '42501', NULL, 'nor call a handler');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
