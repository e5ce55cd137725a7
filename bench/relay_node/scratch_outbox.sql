-- bench/relay_node/scratch_outbox.sql — a plain isa.outbox (same columns and
-- unpublished-rows index as the extension's) filled with :n unpublished rows,
-- for running relay.mjs in a scratch database where no bridge publishes.
--   createdb relaytest && psql -d relaytest -v n=200000 -f bench/relay_node/scratch_outbox.sql
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS isa CASCADE;
CREATE SCHEMA isa;
CREATE TABLE isa.outbox (
    id           uuid PRIMARY KEY,
    source       text NOT NULL,
    event_type   text NOT NULL,
    version      text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    data         jsonb NOT NULL,
    metadata     jsonb NOT NULL,
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON isa.outbox (id) WHERE published_at IS NULL;
INSERT INTO isa.outbox (id, source, event_type, version, occurred_at, data, metadata)
SELECT u, 'billing_service', 'billing.calculated', '1.0.0', clock_timestamp(),
       jsonb_build_object('user_id', '2b7e1516-28ae-4d2a-a6d2-abf7158809cf', 'model', 'gpt-large',
                          'input_tokens', i, 'output_tokens', 512, 'cost_micros', 1234),
       jsonb_build_object('correlation_id', u)
FROM (SELECT i, gen_random_uuid() AS u FROM generate_series(1, :n) AS i) s;
VACUUM ANALYZE isa.outbox;
