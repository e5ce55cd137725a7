-- publish.sql — isa.publish_event() writes one event to the outbox of its
-- source service, in the caller's transaction, at the newest registered
-- version of its type; everything it refuses raises 22023 and writes nothing.
-- The outbox keeps one index: the publisher's "unpublished, in id order" scan.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(50);

SELECT isa.register_event_type('wallet.tokens.deducted', 'wallet_service', v, 'Tokens left a wallet.')
  FROM unnest(ARRAY['1.0.0', '1.2.0', '1.10.0']) v;
SELECT isa.register_event_type('account.user.created', 'account_service', '1.0.0', 'A user was created.');
SELECT isa.register_event_type('billing.usage.priced', 'billing_service', '1.0.0', 'Usage was priced.');
SELECT isa.register_event_type('usage.recorded.model', 'external', '1.0.0', 'A model call was recorded.');

-- The traceparent publish_event gives an event without parent (docs/tracing.md).
CREATE FUNCTION pg_temp.fresh_traceparent(id uuid) RETURNS text LANGUAGE sql
    AS $$ SELECT '00-' || replace(id::text, '-', '') || '-' || right(replace(id::text, '-', ''), 16) || '-01' $$;

-- Every id this file publishes, in publication order.
CREATE TEMP TABLE published (n serial, label text UNIQUE, id uuid) ON COMMIT DROP;

INSERT INTO published (label, id)
SELECT 'plain', isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{"user_id": "u1", "amount": 5}');

-- ---------------------------------------------------------------- the row
SELECT is((SELECT substr(id::text, 15, 1) || substr(id::text, 20, 1) ~ '^7[89ab]$' FROM published WHERE label = 'plain'),
          true,
          'publish_event returns a version 7 UUID');
SELECT is((SELECT o.tableoid::regclass FROM isa.outbox o JOIN published p USING (id) WHERE p.label = 'plain'),
          'wallet.outbox'::regclass,
          'the event lands in the partition of its source service (wallet.outbox)');
SELECT is((SELECT count(*) FROM wallet.outbox o JOIN published p USING (id) WHERE p.label = 'plain'), 1::bigint,
          'exactly one outbox row is written per publish');
SELECT is((SELECT o.published_at FROM isa.outbox o JOIN published p USING (id) WHERE p.label = 'plain'), NULL,
          'a new outbox row is unpublished (published_at NULL)');
SELECT is((SELECT date_trunc('milliseconds', o.occurred_at) FROM isa.outbox o JOIN published p USING (id) WHERE p.label = 'plain'),
          (SELECT isa.uuid_v7_time(id) FROM published WHERE label = 'plain'),
          'occurred_at is the time carried by the event id, to the millisecond');
SELECT cmp_ok((SELECT o.occurred_at FROM isa.outbox o JOIN published p USING (id) WHERE p.label = 'plain'),
              '>=', transaction_timestamp(),
              'occurred_at is the wall-clock time of the publish, not earlier than the transaction start');
SELECT is((SELECT o.source || ' ' || o.event_type || ' ' || o.data::text
             FROM isa.outbox o JOIN published p USING (id) WHERE p.label = 'plain'),
          'wallet_service wallet.tokens.deducted {"amount": 5, "user_id": "u1"}',
          'source, event type and data are stored as given');
SELECT is((SELECT o.version FROM isa.outbox o JOIN published p USING (id) WHERE p.label = 'plain'), '1.10.0',
          'the event is published at the newest registered version, compared numerically (1.10.0 > 1.2.0)');

-- ---------------------------------------------------------------- metadata
SELECT is((SELECT o.metadata FROM isa.outbox o JOIN published p USING (id) WHERE p.label = 'plain'),
          (SELECT jsonb_build_object('correlation_id', id::text, 'traceparent', pg_temp.fresh_traceparent(id))
             FROM published WHERE label = 'plain'),
          'without metadata, metadata.correlation_id defaults to the event id as text, and traceparent to a fresh one');

INSERT INTO published (label, id)
SELECT 'correlated', isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{}',
                                       '{"correlation_id": "req-42", "causation_id": "ev-41", "trace_id": "t-1"}');
SELECT is((SELECT o.metadata FROM isa.outbox o JOIN published p USING (id) WHERE p.label = 'correlated'),
          (SELECT '{"correlation_id": "req-42", "causation_id": "ev-41", "trace_id": "t-1"}'::jsonb
                  || jsonb_build_object('traceparent', pg_temp.fresh_traceparent(id)) FROM published WHERE label = 'correlated'),
          'a given correlation_id is kept, and so are the other metadata keys');

INSERT INTO published (label, id)
SELECT 'traced', isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{}', '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}');
SELECT is((SELECT o.metadata FROM isa.outbox o JOIN published p USING (id) WHERE p.label = 'traced'),
          (SELECT jsonb_build_object('traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', 'correlation_id', id::text) FROM published WHERE label = 'traced'),
          'other metadata keys are kept when correlation_id is defaulted');

INSERT INTO published (label, id)
SELECT 'null metadata', isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{}', NULL);
SELECT is((SELECT o.metadata FROM isa.outbox o JOIN published p USING (id) WHERE p.label = 'null metadata'),
          (SELECT jsonb_build_object('correlation_id', id::text, 'traceparent', pg_temp.fresh_traceparent(id))
             FROM published WHERE label = 'null metadata'),
          'a NULL metadata is treated as {}');

-- ---------------------------------------------------------------- refusals write nothing
CREATE TEMP TABLE outbox_before ON COMMIT DROP AS SELECT count(*) AS n FROM isa.outbox;

SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.unheard_of', 'wallet_service', '{}')$$,
                 '22023', 'unknown event type "wallet.tokens.unheard_of" for source "wallet_service"',
                 'an unregistered event type raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('account.user.created', 'wallet_service', '{}')$$,
                 '22023', 'unknown event type "account.user.created" for source "wallet_service"',
                 'a type registered for another source raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'nope_service', '{}')$$,
                 '22023', 'unknown event source "nope_service"',
                 'an unknown source raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('usage.recorded.model', 'external', '{}')$$,
                 '22023', 'source "external" has no outbox',
                 'publishing as source external (no outbox) raises 22023, even for a registered type');
SELECT throws_ok($$SELECT isa.publish_event(NULL, 'wallet_service', '{}')$$,
                 '22023', 'event_type must not be null or empty',
                 'a NULL event_type raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('', 'wallet_service', '{}')$$,
                 '22023', 'event_type must not be null or empty',
                 'an empty event_type raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.deducted', NULL, '{}')$$,
                 '22023', 'source must not be null or empty',
                 'a NULL source raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.deducted', '', '{}')$$,
                 '22023', 'source must not be null or empty',
                 'an empty source raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', NULL)$$,
                 '22023', 'event data must not be null',
                 'NULL data raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '[{"amount": 5}]')$$,
                 '22023', 'event data must be a JSON object',
                 'data that is an array raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '5')$$,
                 '22023', 'event data must be a JSON object',
                 'data that is a scalar raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', 'null')$$,
                 '22023', 'event data must be a JSON object',
                 'data that is JSON null raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{}', '["req-42"]')$$,
                 '22023', 'event metadata must be a JSON object',
                 'metadata that is an array raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{}', '"req-42"')$$,
                 '22023', 'event metadata must be a JSON object',
                 'metadata that is a string raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{}', '{"correlation_id": 42}')$$,
                 '22023', 'event metadata.correlation_id must be a non-empty string',
                 'a numeric metadata.correlation_id raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{}', '{"correlation_id": ""}')$$,
                 '22023', 'event metadata.correlation_id must be a non-empty string',
                 'an empty metadata.correlation_id raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{}', '{"correlation_id": null}')$$,
                 '22023', 'event metadata.correlation_id must be a non-empty string',
                 'a JSON null metadata.correlation_id raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{}', '{"causation_id": 41}')$$,
                 '22023', 'event metadata.causation_id must be a non-empty string',
                 'a numeric metadata.causation_id raises 22023');
SELECT is((SELECT count(*) FROM isa.outbox), (SELECT n FROM outbox_before),
          'none of the refused publishes wrote an outbox row');

-- ---------------------------------------------------------------- the caller's transaction
SAVEPOINT before_publish;
SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{"marker": "rolled back"}') IS NOT NULL AS published;
ROLLBACK TO SAVEPOINT before_publish;
SELECT is((SELECT count(*) FROM isa.outbox WHERE data ->> 'marker' = 'rolled back'), 0::bigint,
          'an event published in a rolled-back savepoint leaves no outbox row');
SELECT is((SELECT count(*) FROM isa.outbox), (SELECT n FROM outbox_before),
          'the outbox is as it was before the rolled-back savepoint');

SAVEPOINT kept_publish;
SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{"marker": "released"}') IS NOT NULL AS published;
RELEASE SAVEPOINT kept_publish;
SELECT is((SELECT count(*) FROM isa.outbox WHERE data ->> 'marker' = 'released'), 1::bigint,
          'an event published in a released savepoint stays in the transaction');

-- ---------------------------------------------------------------- the catalogue may change
-- A change to isa.event_types applies to the very next publish of the same
-- session, also after the type was published once (and possibly cached).
SELECT isa.register_event_type('wallet.tokens.minted', 'wallet_service', '1.0.0', 'Tokens were minted.');
INSERT INTO published (label, id)
SELECT 'minted 1.0.0', isa.publish_event('wallet.tokens.minted', 'wallet_service', '{}');
SELECT isa.register_event_type('wallet.tokens.minted', 'wallet_service', '1.1.0', 'Tokens were minted.');
INSERT INTO published (label, id)
SELECT 'minted 1.1.0', isa.publish_event('wallet.tokens.minted', 'wallet_service', '{}');
SELECT is((SELECT string_agg(o.version, ' then ' ORDER BY o.id) FROM isa.outbox o JOIN published p USING (id)
            WHERE p.label LIKE 'minted %'),
          '1.0.0 then 1.1.0',
          'a version registered after a publish is used by the next publish of the same session');

SAVEPOINT newer_version;
SELECT isa.register_event_type('wallet.tokens.minted', 'wallet_service', '2.0.0', 'Tokens were minted.');
SELECT isa.publish_event('wallet.tokens.minted', 'wallet_service', '{}') IS NOT NULL AS published;
ROLLBACK TO SAVEPOINT newer_version;
INSERT INTO published (label, id)
SELECT 'after rollback', isa.publish_event('wallet.tokens.minted', 'wallet_service', '{}');
SELECT is((SELECT o.version FROM isa.outbox o JOIN published p USING (id) WHERE p.label = 'after rollback'), '1.1.0',
          'a version registered in a rolled-back savepoint is not used afterwards');

DELETE FROM isa.event_types WHERE event_type = 'wallet.tokens.minted';
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.minted', 'wallet_service', '{}')$$,
                 '22023', 'unknown event type "wallet.tokens.minted" for source "wallet_service"',
                 'a type removed from the catalogue can no longer be published, even after it was published');

-- ---------------------------------------------------------------- the only index
SELECT is((SELECT array_agg(indexname::text) FROM pg_indexes WHERE schemaname = 'isa' AND tablename = 'outbox'),
          ARRAY['outbox_unpublished'],
          'isa.outbox has exactly one index');
SELECT is((SELECT pg_get_expr(i.indpred, i.indrelid) FROM pg_index i WHERE i.indrelid = 'isa.outbox'::regclass),
          '(published_at IS NULL)',
          'the outbox index is partial: only unpublished rows (WHERE published_at IS NULL)');
SELECT is((SELECT array_agg(a.attname::text ORDER BY k.ord)
             FROM pg_index i
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k (attnum, ord)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = 'isa.outbox'::regclass),
          ARRAY['id'],
          'the outbox index is on (id) alone');
SELECT is((SELECT i.indisunique FROM pg_index i WHERE i.indrelid = 'isa.outbox'::regclass), false,
          'the outbox index is not unique (no uniqueness check on the hot path)');
SELECT is((SELECT array_agg(c.relname::text ORDER BY c.relname)
             FROM pg_partition_tree('isa.outbox') t JOIN pg_class c ON c.oid = t.relid
            WHERE t.isleaf
              AND (SELECT count(*) FROM pg_index i WHERE i.indrelid = t.relid AND i.indpred IS NOT NULL) <> 1
               OR t.isleaf AND (SELECT count(*) FROM pg_index i WHERE i.indrelid = t.relid) <> 1),
          NULL,
          'every outbox partition carries exactly one index, the partial one');

-- ---------------------------------------------------------------- the publisher's scan
-- Interleave services so that id order is neither source order nor partition order.
INSERT INTO published (label, id) SELECT 'scan 1', isa.publish_event('billing.usage.priced', 'billing_service', '{}');
INSERT INTO published (label, id) SELECT 'scan 2', isa.publish_event('account.user.created', 'account_service', '{}');
INSERT INTO published (label, id) SELECT 'scan 3', isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{}');
INSERT INTO published (label, id) SELECT 'scan 4', isa.publish_event('account.user.created', 'account_service', '{}');
INSERT INTO published (label, id) SELECT 'scan 5', isa.publish_event('billing.usage.priced', 'billing_service', '{}');

SELECT results_eq(
    -- the publisher's query, each row numbered in the order it returns them,
    -- then narrowed to the events of this file
    $$SELECT id FROM (SELECT id, row_number() OVER () AS pos
                        FROM (SELECT id FROM isa.outbox WHERE published_at IS NULL ORDER BY id) scan) s
       WHERE id IN (SELECT id FROM published) ORDER BY pos$$,
    $$SELECT id FROM published ORDER BY n$$,
    'the publisher''s scan returns the events of every service in publication (id) order');
SELECT is((SELECT count(DISTINCT o.tableoid) FROM isa.outbox o JOIN published p USING (id) WHERE p.label LIKE 'scan %'),
          3::bigint,
          'the scan reads three service partitions through the parent');
SELECT is((SELECT array_agg(source ORDER BY id) FROM isa.outbox WHERE id IN (SELECT id FROM published WHERE label LIKE 'scan %')),
          ARRAY['billing_service', 'account_service', 'wallet_service', 'account_service', 'billing_service'],
          'rows of different services interleave in id order');

UPDATE isa.outbox SET published_at = now() WHERE id = (SELECT id FROM published WHERE label = 'scan 3');
SELECT is((SELECT count(*) FROM isa.outbox WHERE published_at IS NULL AND id = (SELECT id FROM published WHERE label = 'scan 3')),
          0::bigint,
          'a row marked published leaves the publisher''s scan');

-- The outbox's constraints, compiled once per backend and table
-- (isa_insert_row), follow an ALTER TABLE in the same session: a constraint
-- added after the first publish applies to the next (NOT VALID, as the row
-- published before it breaks it: new rows are bound all the same), and one
-- dropped stops applying.
SELECT lives_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{"n": 13}')$$,
                'before the constraint: n = 13 is published');
ALTER TABLE wallet.outbox ADD CONSTRAINT t_not_13 CHECK (data->>'n' IS DISTINCT FROM '13') NOT VALID;
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{"n": 13}')$$,
                 '23514', NULL, 'a CHECK constraint added to the outbox applies to the next publish (23514)');
SELECT lives_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{"n": 12}')$$,
                'and lets the others through');
ALTER TABLE wallet.outbox DROP CONSTRAINT t_not_13;
SELECT lives_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{"n": 13}')$$,
                'dropped, it no longer applies');

SELECT * FROM finish();
ROLLBACK;
