-- audit.sql — the audit service: each event appended once (dedupe in and
-- across batches), the hash of each entry (sha256 of the previous hash and
-- the canonical bytes, recomputed here from the documented form), the chain
-- across batches and across a month's boundary, the actor, resource and
-- security rules, append-only refusals (the owner's and the superuser's
-- too), audit.verify on a sound trail and after a superuser altered,
-- removed or reordered entries, checkpoints, search, CSV and JSON lines
-- exports, partitions and retention, and who may do what.  The bridge calls
-- audit.on_events as isa_svc_audit: so does this file.  Through real NATS:
-- test/integration/68-audit-trail.sh.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(103);

-- Events by label, and batches of them in the order given.
CREATE TEMP TABLE ev (label text PRIMARY KEY, e isa.event) ON COMMIT DROP;
GRANT SELECT ON ev TO isa_svc_audit, isa_compliance;
CREATE FUNCTION pg_temp.mk(l text, event_type text, source text, data jsonb) RETURNS uuid LANGUAGE sql AS $$
    INSERT INTO pg_temp.ev
    SELECT l, isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(), 'event_type', event_type, 'source', source,
                                                     'timestamp', '2026-11-30T10:00:00.123456Z', 'data', data,
                                                     'metadata', jsonb_build_object('correlation_id', isa.uuid_v7())))
    RETURNING (e).id $$;
CREATE FUNCTION pg_temp.batch(VARIADIC labels text[]) RETURNS isa.event[] LANGUAGE sql AS $$
    SELECT array_agg(ev.e ORDER BY l.ord) FROM unnest(labels) WITH ORDINALITY AS l (label, ord)
      JOIN pg_temp.ev ev ON ev.label = l.label $$;
CREATE FUNCTION pg_temp.id(l text) RETURNS uuid LANGUAGE sql AS $$SELECT (e).id FROM pg_temp.ev WHERE label = l$$;
CREATE FUNCTION pg_temp.entry(l text) RETURNS audit.entries LANGUAGE sql
    AS $$SELECT x.* FROM audit.entries x WHERE x.event_id = pg_temp.id(l)$$;
-- The documented canonical bytes, written out again (docs/services/audit.md).
CREATE FUNCTION pg_temp.canonical(x audit.entries) RETURNS bytea LANGUAGE sql AS $$
    SELECT convert_to(jsonb_build_array(x.event_id, x.event_type, x.source, x.subject, x.version,
                                        to_char(x.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                                        to_char(x.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                                        x.actor, x.resource, x.security, x.data, x.metadata)::text, 'UTF8') $$;
CREATE FUNCTION pg_temp.v() RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(' ', CASE WHEN v.ok THEN 'true' ELSE 'false' END, v.first_bad_seq, v.first_bad_event_id, v.reason)
      FROM audit.verify() v $$;

SELECT pg_temp.mk('a1', 'user.created', 'account_service', '{"user_id": "11111111-1111-4111-8111-111111111111", "email": "a@example.test"}');
SELECT pg_temp.mk('a2', 'permission.granted', 'authorization_service',
                  jsonb_build_object('user_id', '11111111-1111-4111-8111-111111111111', 'permission', 'wallet:read',
                                     'resource_type', 'wallet', 'via', 'role', 'note', E'a, "quoted"\nline'));
SELECT pg_temp.mk('a3', 'file.deleted', 'storage_service',
                  '{"file_id": "33333333-3333-4333-8333-333333333333", "owner_id": "22222222-2222-4222-8222-222222222222"}');
SELECT pg_temp.mk('b1', 'device.command_sent', 'device_service',
                  '{"device_id": "44444444-4444-4444-8444-444444444444", "sent_by": "22222222-2222-4222-8222-222222222222", "command": "display.refresh"}');
SELECT pg_temp.mk('c1', 'payment.completed', 'payment_service',
                  '{"payment_id": "55555555-5555-4555-8555-555555555555", "user_id": "11111111-1111-4111-8111-111111111111"}');
SELECT pg_temp.mk('c2', 'event.dead_lettered', 'wallet_service', '{"dead_letter_id": 7, "event_id": "66666666-6666-4666-8666-666666666666"}');
SELECT pg_temp.mk('c3', 'usage.recorded.model', 'external', '{"user_id": "11111111-1111-4111-8111-111111111111", "tokens": 12}');
SELECT pg_temp.mk('c4', 'device.heartbeat', 'device', '{"device_id": "44444444-4444-4444-8444-444444444444"}');
SELECT pg_temp.mk('c5', 'user.logged_in', 'auth_service', '{"user_id": "11111111-1111-4111-8111-111111111111", "method": "password"}');

-- ---------------------------------------------------------------- catalogue
SELECT has_table('audit', 'entries', 'table audit.entries exists');
SELECT is((SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'audit.entries'::regclass), 'r',
          'audit.entries is partitioned by range (of the month recorded)');
SELECT is((SELECT service || ' ' || subject_filter FROM isa.subscriptions WHERE handler = 'audit.on_events(isa.event[])'::regprocedure),
          'audit >', 'audit subscribes its batch handler to every subject (>)');
SELECT ok(EXISTS (SELECT FROM isa.event_types WHERE source = 'audit_service' AND event_type = 'audit.checkpoint.created'),
          'audit.checkpoint.created is registered');
SELECT set_eq($$SELECT jobname FROM isa.scheduled_jobs WHERE jobname LIKE 'isa-audit-%'$$,
              ARRAY['isa-audit-partitions', 'isa-audit-retention', 'isa-audit-checkpoint'],
              'pg_cron jobs: partitions ahead, retention, hourly checkpoint');
SELECT ok(current_setting('isa.audit_retention_months')::int >= 1, 'isa.audit_retention_months is a setting');

-- ---------------------------------------------------------------- appending and hashing
-- the head before (none yet in a database whose trail is empty)
CREATE TEMP TABLE h0 ON COMMIT DROP AS
SELECT (SELECT chain FROM audit.head) AS chain, coalesce((SELECT seq FROM audit.head), 0) AS seq,
       coalesce((SELECT entry_hash FROM audit.head), decode(repeat('00', 32), 'hex')) AS entry_hash,
       coalesce((SELECT recorded_at FROM audit.head), '-infinity') AS recorded_at;
GRANT SELECT ON h0 TO isa_compliance;
CREATE TEMP TABLE cp0 ON COMMIT DROP AS SELECT count(*) AS n FROM audit.checkpoints;
SET LOCAL ROLE isa_svc_audit;
SELECT audit.on_events(pg_temp.batch('a1', 'a2', 'a3'));
RESET ROLE;
SELECT is((SELECT array_agg(x.seq - h0.seq ORDER BY x.seq) FROM audit.entries x, h0
            WHERE x.event_id IN (pg_temp.id('a1'), pg_temp.id('a2'), pg_temp.id('a3'))),
          ARRAY[1, 2, 3]::bigint[], 'a batch of three takes the next three positions, in the order of the array');
SELECT is((pg_temp.entry('a1')).prev_hash, (SELECT entry_hash FROM h0), 'its first entry links to the head before it');
SELECT is((pg_temp.entry('a1')).entry_hash, sha256((pg_temp.entry('a1')).prev_hash || pg_temp.canonical(pg_temp.entry('a1'))),
          'entry_hash = sha256(prev_hash || canonical bytes), the canonical form as documented');
SELECT is((pg_temp.entry('a2')).prev_hash, (pg_temp.entry('a1')).entry_hash, 'each entry links to the one before');
SELECT is((pg_temp.entry('a3')).entry_hash, sha256((pg_temp.entry('a2')).entry_hash || pg_temp.canonical(pg_temp.entry('a3'))),
          'the third hash chains from the second');
SELECT is((SELECT entry_hash FROM audit.head), (pg_temp.entry('a3')).entry_hash, 'the head is the last entry');
SELECT is((SELECT seq FROM audit.head), (pg_temp.entry('a3')).seq, 'the head''s seq too');
SELECT is(convert_from(pg_temp.canonical(pg_temp.entry('a1')), 'UTF8'),
          format('["%s", "user.created", "account_service", "account_service.user.created", "1.0.0", "2026-11-30T10:00:00.123456Z", "%s", '
                 '"11111111-1111-4111-8111-111111111111", "user:11111111-1111-4111-8111-111111111111", null, '
                 '{"email": "a@example.test", "user_id": "11111111-1111-4111-8111-111111111111"}, %s]',
                 pg_temp.id('a1'), isa.iso_time((pg_temp.entry('a1')).recorded_at), (pg_temp.entry('a1')).metadata::text),
          'the canonical text: a JSON array of the fields, jsonb''s spacing and key order');
SELECT is(audit._canonical((pg_temp.entry('a2')).event_id, (pg_temp.entry('a2')).event_type, (pg_temp.entry('a2')).source,
                           (pg_temp.entry('a2')).subject, (pg_temp.entry('a2')).version, (pg_temp.entry('a2')).occurred_at,
                           (pg_temp.entry('a2')).recorded_at, (pg_temp.entry('a2')).actor, (pg_temp.entry('a2')).resource,
                           (pg_temp.entry('a2')).security, (pg_temp.entry('a2')).data, (pg_temp.entry('a2')).metadata),
          pg_temp.canonical(pg_temp.entry('a2')), 'audit._canonical is the documented form');

-- a second batch: a redelivery of a2, b1 twice
CREATE TEMP TABLE n1 ON COMMIT DROP AS SELECT count(*) AS n FROM audit.entries;
SET LOCAL ROLE isa_svc_audit;
SELECT audit.on_events(pg_temp.batch('a2', 'b1', 'b1'));
RESET ROLE;
SELECT is((SELECT count(*) FROM audit.entries) - (SELECT n FROM n1), 1::bigint,
          'a batch with an event the trail holds and one twice appends one entry');
SELECT is((SELECT count(*) FROM audit.entries WHERE event_id = pg_temp.id('a2')), 1::bigint, 'a2 is in the trail once');
SELECT is((pg_temp.entry('b1')).prev_hash, (pg_temp.entry('a3')).entry_hash, 'the chain goes on across batches');
SELECT is((pg_temp.entry('b1')).seq, (pg_temp.entry('a3')).seq + 1, 'and so do the positions');
SET LOCAL ROLE isa_svc_audit;
SELECT audit.on_events(pg_temp.batch('a1'));
SELECT audit.on_events('{}');
RESET ROLE;
SELECT is((SELECT count(*) FROM audit.entries) - (SELECT n FROM n1), 1::bigint, 'a batch of a redelivery only, or empty, appends nothing');

-- ---------------------------------------------------------------- actor, resource, security, subject
SELECT is((pg_temp.entry('b1')).actor, '22222222-2222-4222-8222-222222222222', 'actor: a *_by field (sent_by) before user_id');
SELECT is((pg_temp.entry('a3')).actor, '22222222-2222-4222-8222-222222222222', 'actor: owner_id when nothing else');
SELECT is((pg_temp.entry('b1')).resource, 'device:44444444-4444-4444-8444-444444444444',
          'resource: <first word of the type>:<its _id> (device)');
SELECT is((pg_temp.entry('a3')).resource, 'file:33333333-3333-4333-8333-333333333333', 'resource: file:<file_id>');
SELECT is((pg_temp.entry('a2')).resource, 'user:11111111-1111-4111-8111-111111111111',
          'resource: user:<user_id> for a permission of every wallet (no resource_id)');
SELECT is(audit._resource('permission.granted', '{"resource_type": "wallet", "resource_id": "w1", "user_id": "u"}'),
          'wallet:w1', 'resource: resource_type:resource_id of a grant');
SELECT is(audit._resource('organization.member_added', '{"org_id": "o1", "user_id": "u"}'), 'organization:o1',
          'resource: an organization by its org_id');
SELECT is((pg_temp.entry('a2')).security, 'permission', 'security: permission changes (authorization_service)');
SELECT is((pg_temp.entry('a3')).security, 'deletion', 'security: deletions (*.deleted)');
SELECT is((pg_temp.entry('a1')).security, NULL, 'security: none for user.created');
SELECT is((pg_temp.entry('a1')).subject, 'account_service.user.created', 'subject: <source>.<event_type>');

-- ---------------------------------------------------------------- a new month: a new chain
-- The head's time is set into next month (a superuser, in this transaction):
-- the next batch is recorded then, in the next partition.
CREATE TEMP TABLE hb ON COMMIT DROP AS SELECT * FROM audit.head;
UPDATE audit.head SET recorded_at = date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                                    + interval '1 month 2 days';
SET LOCAL ROLE isa_svc_audit;
SELECT audit.on_events(pg_temp.batch('c1', 'c2', 'c3', 'c4', 'c5'));
RESET ROLE;
SELECT is((pg_temp.entry('c1')).chain, ((SELECT chain FROM hb) + interval '1 month')::date, 'the batch goes to the next month''s chain');
SELECT is((pg_temp.entry('c1')).seq, 1::bigint, 'which starts at seq 1');
SELECT is((pg_temp.entry('c1')).prev_hash, (SELECT entry_hash FROM hb), 'its first entry links to the previous chain''s head');
SELECT is((SELECT prev_hash FROM audit.chains WHERE chain = (pg_temp.entry('c1')).chain), (SELECT entry_hash FROM hb),
          'audit.chains records the link');
SELECT ok(to_regclass('audit.' || audit._partition_name((pg_temp.entry('c1')).chain)) IS NOT NULL,
          'the month''s partition exists (created on demand when absent)');
SELECT is((SELECT tableoid::regclass::text FROM audit.entries WHERE event_id = pg_temp.id('c1')),
          'audit.' || audit._partition_name((pg_temp.entry('c1')).chain), 'the entry is in it');
SELECT is((pg_temp.entry('c1')).security, 'payment', 'security: payments');
SELECT is((pg_temp.entry('c2')).security, 'dead_letter', 'security: dead letters (<source>.event.dead_lettered)');
SELECT is((pg_temp.entry('c5')).security, 'login', 'security: logins');
SELECT is((pg_temp.entry('c3')).subject, 'external.usage.recorded.model', 'external events are in the trail, on their subject');
SELECT is((pg_temp.entry('c4')).subject || ' ' || (pg_temp.entry('c4')).actor,
          'isa.devices.44444444-4444-4444-8444-444444444444.heartbeat device:44444444-4444-4444-8444-444444444444',
          'a device''s message: its own subject, the device as actor');
SELECT is(pg_temp.v(), 'true', 'verify: the trail is sound');
SELECT ok((SELECT checked FROM audit.verify()) >= 9, 'verify checked the entries');

-- ---------------------------------------------------------------- append-only
SET LOCAL ROLE isa_svc_audit;
SELECT throws_ok($$UPDATE audit.entries SET actor = 'x' WHERE event_id = pg_temp.id('a1')$$, '42501', NULL,
                 'UPDATE is refused, even for the owner (42501)');
SELECT throws_ok($$DELETE FROM audit.entries WHERE event_id = pg_temp.id('a1')$$, '42501', NULL, 'DELETE is refused (42501)');
SELECT throws_ok('TRUNCATE audit.entries', '42501', NULL, 'TRUNCATE is refused (42501)');
SELECT throws_ok(format('TRUNCATE audit.%I', audit._partition_name((pg_temp.entry('c1')).chain)), '42501', NULL,
                 'TRUNCATE of one partition is refused (42501)');
SELECT throws_ok('TRUNCATE audit.checkpoints', '42501', NULL, 'checkpoints are append-only too');
RESET ROLE;
SELECT throws_ok($$UPDATE audit.entries SET actor = 'x' WHERE event_id = pg_temp.id('a1')$$, '42501', NULL,
                 'a superuser''s UPDATE is refused as well');
SET LOCAL ROLE isa_admin;
SELECT throws_ok($$INSERT INTO audit.entries SELECT * FROM audit.entries LIMIT 1$$, '42501', NULL, 'isa_admin cannot write the trail');
RESET ROLE;

-- ---------------------------------------------------------------- tampering, as a superuser without triggers
SET LOCAL session_replication_role = replica;
SAVEPOINT t;
UPDATE audit.entries SET data = data || '{"email": "eve@example.test"}' WHERE event_id = pg_temp.id('a2');
SELECT is(pg_temp.v(), format('false %s %s altered', (pg_temp.entry('a2')).seq, pg_temp.id('a2')),
          'an edited entry: verify names it, altered');
ROLLBACK TO SAVEPOINT t;
DELETE FROM audit.entries WHERE event_id = pg_temp.id('a3');
SELECT is(pg_temp.v(), format('false %s %s removed', (pg_temp.entry('b1')).seq - 1, pg_temp.id('b1')),
          'a removed entry: verify names the missing seq and the entry after it, removed');
ROLLBACK TO SAVEPOINT t;
-- renumber after the removal: the gap is gone, the broken link is not
DELETE FROM audit.entries WHERE event_id = pg_temp.id('a3');
UPDATE audit.entries SET seq = seq - 1 WHERE event_id = pg_temp.id('b1');
SELECT is(pg_temp.v(), format('false %s %s removed', (pg_temp.entry('b1')).seq, pg_temp.id('b1')),
          'a removal hidden by renumbering: the next entry''s link is broken, removed');
ROLLBACK TO SAVEPOINT t;
-- swap a2 and a3
UPDATE audit.entries SET seq = seq + 1000000000 WHERE event_id = pg_temp.id('a2');
UPDATE audit.entries SET seq = seq - 1 WHERE event_id = pg_temp.id('a3');
UPDATE audit.entries SET seq = seq - 1000000000 + 1 WHERE event_id = pg_temp.id('a2');
SELECT is(pg_temp.v(), format('false %s %s reordered', (pg_temp.entry('a3')).seq, pg_temp.id('a3')),
          'two entries swapped: verify names the first, reordered');
ROLLBACK TO SAVEPOINT t;
DELETE FROM audit.entries WHERE event_id = pg_temp.id('c5');
SELECT is(pg_temp.v(), format('false %s removed', (pg_temp.entry('c4')).seq + 1),
          'the last entry removed: verify names the seq after the end, removed');
ROLLBACK TO SAVEPOINT t;
UPDATE audit.entries SET entry_hash = sha256(prev_hash || convert_to('forged', 'UTF8')) WHERE event_id = pg_temp.id('c2');
SELECT is((SELECT reason || ' ' || "partition" FROM audit.verify()),
          'altered audit.' || audit._partition_name((pg_temp.entry('c2')).chain), 'verify names the partition of the bad entry');
SELECT is((SELECT v.ok FROM audit.verify(now() - interval '1 day', now()) v), true,
          'verify of this month only does not see next month''s chain');
ROLLBACK TO SAVEPOINT t;
RESET session_replication_role;
SELECT is(pg_temp.v(), 'true', 'undone: verify passes again');

-- ---------------------------------------------------------------- checkpoints
SET LOCAL ROLE isa_admin;
CREATE TEMP TABLE cp ON COMMIT DROP AS SELECT * FROM audit.checkpoint();
RESET ROLE;
SELECT is((SELECT chain || ' ' || seq || ' ' || encode(entry_hash, 'hex') FROM cp),
          (SELECT chain || ' ' || seq || ' ' || encode(entry_hash, 'hex') FROM audit.head), 'a checkpoint records the head');
SELECT is((SELECT count(*) FROM audit.checkpoints) - (SELECT n FROM cp0), 1::bigint, 'in audit.checkpoints');
CREATE TEMP TABLE cpd ON COMMIT DROP AS
SELECT x.data FROM audit.outbox x WHERE x.id = (SELECT event_id FROM cp) AND x.event_type = 'audit.checkpoint.created';
SELECT is((SELECT data - 'created_at' FROM cpd),
          (SELECT jsonb_build_object('checkpoint_id', checkpoint_id, 'chain', chain::text, 'seq', seq,
                                     'entry_hash', encode(entry_hash, 'hex')) FROM cp),
          'and publishes audit.checkpoint.created with the head, so it leaves the database');
SELECT is((SELECT ok || ' ' || reason FROM audit.verify_checkpoint((SELECT data FROM cpd))), 'true match',
          'verify_checkpoint: the trail matches a checkpoint kept outside');
-- the handler records the checkpoint event like any other, without taking a checkpoint
SELECT pg_temp.mk('cpe', 'audit.checkpoint.created', 'audit_service', (SELECT data FROM cpd));
SET LOCAL ROLE isa_svc_audit;
SELECT audit.on_events(pg_temp.batch('cpe'));
RESET ROLE;
SELECT is((SELECT count(*) FROM audit.checkpoints) - (SELECT n FROM cp0), 1::bigint,
          'the checkpoint event is recorded and makes no checkpoint (no loop)');
SELECT is((SELECT ok || ' ' || reason FROM audit.verify_checkpoint((SELECT data FROM cpd))), 'true match',
          'an older checkpoint still matches as the trail grows');
SELECT is((SELECT ok || ' ' || reason FROM audit.verify_checkpoint((SELECT data || jsonb_build_object('entry_hash', repeat('ab', 32)) FROM cpd))),
          'false hash_mismatch', 'a checkpoint with another hash: hash_mismatch');
SET LOCAL session_replication_role = replica;
SAVEPOINT t2;
-- a superuser rewrites an entry and every hash after it: the chain verifies, the checkpoint does not
UPDATE audit.entries SET data = '{"rewritten": true}' WHERE event_id = pg_temp.id('c1');
DO $$
DECLARE
    x    audit.entries;
    prev bytea := (SELECT prev_hash FROM audit.entries WHERE event_id = pg_temp.id('c1'));
BEGIN
    FOR x IN SELECT * FROM audit.entries WHERE chain = (pg_temp.entry('c1')).chain ORDER BY seq LOOP
        UPDATE audit.entries e SET prev_hash = prev, entry_hash = sha256(prev || pg_temp.canonical(x))
         WHERE e.chain = x.chain AND e.seq = x.seq;
        prev := sha256(prev || pg_temp.canonical(x));
    END LOOP;
    UPDATE audit.head SET entry_hash = prev;
END
$$;
SELECT is(pg_temp.v(), 'true', 'a chain rewritten from an entry to the head verifies');
SELECT is((SELECT ok || ' ' || reason FROM audit.verify_checkpoint((SELECT data FROM cpd))), 'false hash_mismatch',
          'a rewritten chain no longer matches the checkpoint kept outside');
ROLLBACK TO SAVEPOINT t2;
RESET session_replication_role;
SELECT throws_ok($$SELECT * FROM audit.verify_checkpoint('{"chain": "x"}')$$, '22023', NULL, 'a malformed checkpoint: 22023');

-- ---------------------------------------------------------------- search
SET LOCAL ROLE isa_compliance;
SELECT is((SELECT array_agg(event_type ORDER BY chain, seq)
             FROM audit.search(actor => '11111111-1111-4111-8111-111111111111', "from" => (SELECT recorded_at + interval '1 microsecond' FROM h0))),
          ARRAY['user.created', 'permission.granted', 'payment.completed', 'usage.recorded.model', 'user.logged_in'],
          'search by actor, in recorded order');
SELECT is((SELECT array_agg(event_type ORDER BY chain, seq)
             FROM audit.search(resource => 'device:44444444-4444-4444-8444-444444444444', "from" => (SELECT recorded_at + interval '1 microsecond' FROM h0))),
          ARRAY['device.command_sent', 'device.heartbeat'], 'search by resource');
SELECT is((SELECT array_agg(event_type ORDER BY chain, seq)
             FROM audit.search(type_filter => 'user.*', "from" => (SELECT recorded_at + interval '1 microsecond' FROM h0))),
          ARRAY['user.created', 'user.logged_in'], 'search by type, * one token');
SELECT is((SELECT array_agg(event_type ORDER BY chain, seq)
             FROM audit.search(type_filter => 'usage.>', "from" => (SELECT recorded_at + interval '1 microsecond' FROM h0))),
          ARRAY['usage.recorded.model'], 'search by type, > the rest');
SELECT is((SELECT array_agg(security ORDER BY chain, seq)
             FROM audit.search(security_only => true, "from" => (SELECT recorded_at + interval '1 microsecond' FROM h0))),
          ARRAY['permission', 'deletion', 'payment', 'dead_letter', 'login'], 'search the security-marked entries only');
SELECT is((SELECT array_agg(event_type ORDER BY chain, seq)
             FROM audit.search(actor => '11111111-1111-4111-8111-111111111111', "from" => (SELECT recorded_at + interval '1 microsecond' FROM h0),
                               row_limit => 2, after => pg_temp.id('a2'))),
          ARRAY['payment.completed', 'usage.recorded.model'], 'keyset paging: row_limit entries after an event id');
SELECT throws_ok($$SELECT * FROM audit.search(type_filter => 'a.>.b')$$, '22023', NULL, 'a bad type filter: 22023');
SELECT throws_ok($$SELECT * FROM audit.search(row_limit => 0)$$, '22023', NULL, 'a bad page size: 22023');
SELECT throws_ok(format('SELECT * FROM audit.search(after => %L)', gen_random_uuid()), 'P0002', NULL, 'after an unknown event: P0002');

-- ---------------------------------------------------------------- export
CREATE TEMP TABLE csv ON COMMIT DROP AS
SELECT row_number() OVER () AS n, line FROM audit.export((SELECT recorded_at + interval '1 microsecond' FROM h0), NULL, 'csv') AS line;
CREATE TEMP TABLE jl ON COMMIT DROP AS
SELECT line FROM audit.export((SELECT recorded_at + interval '1 microsecond' FROM h0), NULL, 'jsonl') AS line;
SELECT throws_ok($$SELECT audit.export(NULL, NULL, 'xml')$$, '22023', NULL, 'an unknown format: 22023');
RESET ROLE;
SELECT is((SELECT line FROM csv WHERE n = 1),
          'chain,seq,event_id,event_type,source,subject,version,occurred_at,recorded_at,actor,resource,security,data,metadata,prev_hash,entry_hash',
          'CSV: a header line first');
SELECT is((SELECT count(*) FROM csv) - 1, (SELECT count(*) FROM audit.entries WHERE recorded_at >= (SELECT recorded_at + interval '1 microsecond' FROM h0)),
          'CSV: one line per entry of the period');
SELECT is((SELECT line FROM csv WHERE line LIKE '%' || pg_temp.id('a2') || '%'),
          format('%s,%s,%s,permission.granted,authorization_service,authorization_service.permission.granted,1.0.0,2026-11-30T10:00:00.123456Z,%s,11111111-1111-4111-8111-111111111111,user:11111111-1111-4111-8111-111111111111,permission,"%s","%s",%s,%s',
                 (pg_temp.entry('a2')).chain, (pg_temp.entry('a2')).seq, pg_temp.id('a2'),
                 isa.iso_time((pg_temp.entry('a2')).recorded_at),
                 replace((pg_temp.entry('a2')).data::text, '"', '""'), replace((pg_temp.entry('a2')).metadata::text, '"', '""'),
                 encode((pg_temp.entry('a2')).prev_hash, 'hex'), encode((pg_temp.entry('a2')).entry_hash, 'hex')),
          'CSV: a field with commas, quotes and a line break is quoted, its quotes doubled; empty fields for NULL');
SELECT is((SELECT line FROM jl WHERE (line::jsonb ->> 'event_id')::uuid = pg_temp.id('c3')),
          (SELECT jsonb_build_object('chain', chain, 'seq', seq, 'event_id', event_id, 'event_type', event_type, 'source', source,
                                     'subject', subject, 'version', version, 'occurred_at', isa.iso_time(occurred_at),
                                     'recorded_at', isa.iso_time(recorded_at), 'actor', actor, 'resource', resource,
                                     'security', security, 'data', data, 'metadata', metadata,
                                     'prev_hash', encode(prev_hash, 'hex'), 'entry_hash', encode(entry_hash, 'hex'))::text
             FROM audit.entries WHERE event_id = pg_temp.id('c3')),
          'JSON lines: one object per entry, on one line');
SELECT is((SELECT count(*) FROM jl WHERE line LIKE E'%\n%'), 0::bigint, 'JSON lines: no line holds a line break');
SELECT is((SELECT count(*) FROM jl), (SELECT count(*) FROM csv) - 1, 'JSON lines: as many lines as entries');

-- ---------------------------------------------------------------- partitions and retention
SET LOCAL ROLE isa_admin;
SELECT audit.maintain_partitions();
RESET ROLE;
SELECT ok(to_regclass('audit.' || audit._partition_name(date_trunc('month', now() AT TIME ZONE 'UTC')::date)) IS NOT NULL
          AND to_regclass('audit.' || audit._partition_name((date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months')::date)) IS NOT NULL,
          'maintain_partitions: this month and the next two exist');
SELECT is((SELECT count(*) FROM audit.maintain_partitions()), 0::bigint, 'a second run creates nothing');
-- an old month made ahead and never used, and an old chain of one entry
-- (written here by the owner, as the handler of 2001 would have)
SET LOCAL ROLE isa_svc_audit;
SELECT audit._ensure_partition('2001-01-01'), audit._ensure_partition('2001-02-01');
INSERT INTO audit.chains (chain, prev_hash, started_at) VALUES ('2001-02-01', decode(repeat('00', 32), 'hex'), '2001-02-03');
INSERT INTO audit.entries (chain, seq, event_id, event_type, source, subject, version, occurred_at, recorded_at,
                           data, metadata, prev_hash, entry_hash)
SELECT '2001-02-01', 1, x.id, 'it.old', 'external', 'external.it.old', '1.0.0', '2001-02-03', '2001-02-03', '{}', '{}',
       decode(repeat('00', 32), 'hex'),
       sha256(decode(repeat('00', 32), 'hex') || audit._canonical(x.id, 'it.old', 'external', 'external.it.old', '1.0.0',
                                                                 '2001-02-03', '2001-02-03', NULL, NULL, NULL, '{}', '{}'))
  FROM (SELECT gen_random_uuid() AS id) x;
CREATE TEMP TABLE old ON COMMIT DROP AS SELECT seq, entry_hash FROM audit.entries WHERE chain = '2001-02-01';
RESET ROLE;
SET LOCAL isa.audit_retention_months = 12;
SET LOCAL ROLE isa_admin;
SELECT is(ARRAY(SELECT audit.drop_expired_partitions()), ARRAY['audit.entries_200102', 'audit.entries_200101'],
          'drop_expired_partitions drops whole months past the retention, a chain''s and an unused one');
RESET ROLE;
SELECT ok(to_regclass('audit.entries_200101') IS NULL AND to_regclass('audit.entries_200102') IS NULL, 'they are gone');
SELECT is((SELECT (dropped_at IS NOT NULL) || ' ' || last_seq || ' ' || (last_hash = (SELECT entry_hash FROM old))
             FROM audit.chains WHERE chain = '2001-02-01'), 'true 1 true',
          'the dropped chain''s tail (last seq and hash) stays in audit.chains');
SELECT is((SELECT ok || ' ' || reason FROM audit.verify_checkpoint(
              jsonb_build_object('chain', '2001-02-01', 'seq', 1, 'entry_hash', encode((SELECT entry_hash FROM old), 'hex')))),
          'true dropped', 'a checkpoint of a dropped chain''s tail still checks against it');
SELECT is((SELECT ok || ' ' || reason FROM audit.verify_checkpoint(
              jsonb_build_object('chain', '2001-02-01', 'seq', 1, 'entry_hash', repeat('cd', 32)))),
          'false dropped_mismatch', 'and another hash does not');
SELECT is(pg_temp.v(), 'true', 'the chains still verify');
-- a partition dropped by hand (not by retention) shows as removed
SET LOCAL ROLE isa_svc_audit;
CREATE TEMP TABLE lastc ON COMMIT DROP AS SELECT chain FROM audit.head;
SAVEPOINT t3;
DO $$BEGIN EXECUTE format('DROP TABLE audit.%I', audit._partition_name((SELECT chain FROM lastc))); END$$;
SELECT is(pg_temp.v(), 'false 1 removed', 'a chain whose partition was dropped by hand: removed');
ROLLBACK TO SAVEPOINT t3;
RESET ROLE;

-- ---------------------------------------------------------------- who may do what
SELECT ok(NOT has_function_privilege('isa_app', 'audit.search(text, text, text, timestamptz, timestamptz, boolean, integer, uuid)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'audit.verify(timestamptz, timestamptz)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'audit.export(timestamptz, timestamptz, text, boolean)', 'EXECUTE'),
          'applications may not search, verify or export the trail');
SELECT ok(has_function_privilege('isa_compliance', 'audit.verify(timestamptz, timestamptz)', 'EXECUTE')
          AND has_function_privilege('isa_admin', 'audit.export(timestamptz, timestamptz, text, boolean)', 'EXECUTE')
          AND has_function_privilege('isa_compliance', 'audit.verify_checkpoint(jsonb)', 'EXECUTE'),
          'isa_compliance and isa_admin may');
SELECT ok(NOT has_table_privilege('isa_app', 'audit.entries', 'SELECT') AND NOT has_table_privilege('isa_bridge', 'audit.entries', 'SELECT'),
          'isa_app and the bridge do not read the trail');
SELECT ok(has_table_privilege('isa_compliance', 'audit.entries', 'SELECT') AND NOT has_table_privilege('isa_compliance', 'audit.entries', 'INSERT')
          AND has_table_privilege('isa_admin', 'audit.entries', 'SELECT') AND NOT has_table_privilege('isa_admin', 'audit.entries', 'INSERT')
          AND NOT has_table_privilege('isa_admin', 'audit.head', 'UPDATE'),
          'isa_compliance and isa_admin read it and write nothing');
SELECT ok(NOT has_function_privilege('isa_app', 'audit.on_events(isa.event[])', 'EXECUTE')
          AND NOT has_function_privilege('isa_compliance', 'audit.on_events(isa.event[])', 'EXECUTE')
          AND NOT has_function_privilege('isa_admin', 'audit.on_events(isa.event[])', 'EXECUTE'),
          'only the service''s role runs the handler');
SELECT ok(NOT has_function_privilege('isa_compliance', 'audit.checkpoint()', 'EXECUTE')
          AND has_function_privilege('isa_admin', 'audit.checkpoint()', 'EXECUTE'),
          'isa_admin takes checkpoints (and pg_cron), compliance only reads');
SELECT is((SELECT relowner::regrole::text FROM pg_class WHERE oid = 'audit.entries'::regclass), 'isa_svc_audit',
          'audit.entries belongs to isa_svc_audit');
SET LOCAL ROLE isa_app;
SELECT throws_ok('SELECT 1 FROM audit.entries', '42501', NULL, 'isa_app cannot read audit.entries');
SELECT throws_ok('SELECT * FROM audit.verify()', '42501', NULL, 'nor verify');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
