-- catalogue.sql — what an isa installation knows: its services (each with a
-- schema holding its outbox and inbox partitions, plus the outbox-less
-- external source) and the catalogue of event types each source publishes,
-- registered per schema version and rendered as the Markdown of docs/.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(31);

-- ---------------------------------------------------------------- services
SELECT set_eq($$SELECT name FROM isa.services$$,
              ARRAY['account', 'auth', 'authz', 'device', 'payment', 'wallet', 'billing', 'orders',
                    'organization', 'storage', 'notification', 'session', 'event', 'audit', 'ota', 'product',
                    'table_events', 'external'],
              'isa.services holds the sixteen platform services, table_events (tracked tables) and external');
SELECT set_eq($$SELECT name FROM isa.services WHERE schema_name IS NULL$$,
              ARRAY['external'],
              'external is the only service without a schema (its events come from NATS clients)');
SELECT is((SELECT source FROM isa.services WHERE name = 'external'), 'external',
          'the external service publishes under source external');
SELECT is((SELECT count(*) FROM isa.services WHERE schema_name IS NOT NULL AND name <> schema_name),
          0::bigint,
          'every platform service is named after its schema');
SELECT is((SELECT source FROM isa.services WHERE name = 'orders'), 'order_service',
          'service orders publishes as order_service (a NATS source is a published contract)');
SELECT is((SELECT source FROM isa.services WHERE name = 'authz'), 'authorization_service',
          'service authz publishes as authorization_service');

SELECT is((SELECT array_agg(s.schema_name ORDER BY s.name) FROM isa.services s
            WHERE s.schema_name IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = s.schema_name)),
          NULL,
          'the schema of every service exists');

-- Each service schema holds <schema>.outbox and <schema>.inbox, and those are
-- exactly the partitions of isa.outbox and isa.inbox.
SELECT set_eq($$SELECT n.nspname::text, c.relname::text
                  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                  JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE i.inhparent = 'isa.outbox'::regclass$$,
              $$SELECT schema_name::text, 'outbox' FROM isa.services WHERE schema_name IS NOT NULL$$,
              'the partitions of isa.outbox are exactly <schema>.outbox of every service schema');
SELECT set_eq($$SELECT n.nspname::text, c.relname::text
                  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                  JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE i.inhparent = 'isa.inbox'::regclass$$,
              $$SELECT schema_name::text, 'inbox' FROM isa.services WHERE schema_name IS NOT NULL$$,
              'the partitions of isa.inbox are exactly <schema>.inbox of every service schema');
SELECT is((SELECT array_agg(s.name ORDER BY s.name) FROM isa.services s
            WHERE s.schema_name IS NOT NULL
              AND pg_get_expr((SELECT c.relpartbound FROM pg_class c
                                WHERE c.oid = to_regclass(format('%I.outbox', s.schema_name))),
                              to_regclass(format('%I.outbox', s.schema_name)))
                  IS DISTINCT FROM format('FOR VALUES IN (%L)', s.source)),
          NULL,
          'each <schema>.outbox partition holds exactly the events of its service''s source');
SELECT is((SELECT array_agg(s.name ORDER BY s.name) FROM isa.services s
            WHERE s.schema_name IS NOT NULL
              AND pg_get_expr((SELECT c.relpartbound FROM pg_class c
                                WHERE c.oid = to_regclass(format('%I.inbox', s.schema_name))),
                              to_regclass(format('%I.inbox', s.schema_name)))
                  IS DISTINCT FROM format('FOR VALUES IN (%L)', s.name)),
          NULL,
          'each <schema>.inbox partition holds exactly the inbox rows of its service');
SELECT is((SELECT count(*) FROM pg_partition_tree('isa.outbox') WHERE isleaf), 17::bigint,
          'isa.outbox has seventeen leaf partitions (table_events'' included), none for external');

-- ---------------------------------------------------------------- event types
SELECT lives_ok($$SELECT isa.register_event_type('wallet.tokens.deducted', 'wallet_service', '1.0.0',
                      'Tokens were deducted from a wallet.',
                      '{"amount": {"type": "integer", "description": "Tokens deducted."},
                        "reason": {"type": "string", "required": false, "description": "Why."}}')$$,
                'register_event_type registers a new event type of a source');
SELECT is((SELECT description FROM isa.event_types
            WHERE source = 'wallet_service' AND event_type = 'wallet.tokens.deducted' AND version = '1.0.0'),
          'Tokens were deducted from a wallet.',
          'the registered type is in isa.event_types with its description');

SELECT lives_ok($$SELECT isa.register_event_type('wallet.tokens.deducted', 'wallet_service', '1.0.0',
                      'Tokens left a wallet.',
                      '{"amount": {"type": "integer", "description": "Tokens deducted."}}')$$,
                're-registering the same type and version succeeds');
SELECT is((SELECT count(*) FROM isa.event_types
            WHERE source = 'wallet_service' AND event_type = 'wallet.tokens.deducted' AND version = '1.0.0'),
          1::bigint,
          're-registering leaves one row for the type and version, not a duplicate');
SELECT is((SELECT description || ' / ' || data_fields::text FROM isa.event_types
            WHERE source = 'wallet_service' AND event_type = 'wallet.tokens.deducted' AND version = '1.0.0'),
          'Tokens left a wallet. / {"amount": {"type": "integer", "description": "Tokens deducted."}}',
          're-registering updates the description and data fields');

SELECT isa.register_event_type('wallet.tokens.deducted', 'wallet_service', '2.0.0',
                               'Tokens were deducted (with currency).',
                               '{"amount": {"type": "decimal"}, "currency": {"type": "string"}}');
SELECT set_eq($$SELECT version FROM isa.event_types
                 WHERE source = 'wallet_service' AND event_type = 'wallet.tokens.deducted'$$,
              ARRAY['1.0.0', '2.0.0'],
              'version 2.0.0 of a type coexists with version 1.0.0');

SELECT throws_ok($$SELECT isa.register_event_type('nope.thing.done', 'nope_service', '1.0.0', 'x')$$,
                 '22023', 'unknown event source "nope_service"',
                 'registering a type for an unknown source raises 22023');
SELECT throws_ok($$SELECT isa.register_event_type('Wallet.Tokens', 'wallet_service', '1.0.0', 'x')$$,
                 '22023', 'malformed event type "Wallet.Tokens"',
                 'registering a malformed event type raises 22023');
SELECT throws_ok($$SELECT isa.register_event_type('wallet', 'wallet_service', '1.0.0', 'x')$$,
                 '22023', 'malformed event type "wallet"',
                 'registering a one-token event type raises 22023');
SELECT throws_ok($$SELECT isa.register_event_type('wallet.tokens.deducted', 'wallet_service', '1.0', 'x')$$,
                 '22023', 'malformed version "1.0"',
                 'registering with a malformed version raises 22023');
SELECT throws_ok($$SELECT isa.register_event_type('wallet.tokens.deducted', 'wallet_service', '1.0.0', '')$$,
                 '22023', 'event type "wallet.tokens.deducted" needs a description',
                 'registering with an empty description raises 22023');
SELECT throws_ok($$SELECT isa.register_event_type('wallet.tokens.deducted', 'wallet_service', '1.0.0', 'x', '[]')$$,
                 '22023', 'data_fields must be a JSON object of field name -> {type, description, required}',
                 'registering with data_fields that are not an object raises 22023');
SELECT throws_ok($$SELECT isa.register_event_type('wallet.tokens.deducted', 'wallet_service', '1.0.0', 'x',
                                                  '{"amount": {"type": "float"}}')$$,
                 '22023', 'data field "amount" of event type "wallet.tokens.deducted" is malformed: {"type": "float"}',
                 'a data field of an unknown type raises 22023 naming the field');
SELECT throws_ok($$SELECT isa.register_event_type('wallet.tokens.deducted', 'wallet_service', '1.0.0', 'x',
                                                  '{"amount": {"type": "integer", "required": "yes"}}')$$,
                 '22023', 'data field "amount" of event type "wallet.tokens.deducted" is malformed: {"type": "integer", "required": "yes"}',
                 'a data field whose required flag is not a boolean raises 22023 naming the field');
SELECT is((SELECT description FROM isa.event_types
            WHERE source = 'wallet_service' AND event_type = 'wallet.tokens.deducted' AND version = '1.0.0'),
          'Tokens left a wallet.',
          'a refused registration leaves the registered type unchanged');

SELECT throws_ok($$SELECT isa.register_event_type('wallet.tokens.probed', 'wallet_service', '1.0.0', 'x',
                                                  '{"amount": {"description": "no type"}}')$$,
                 '22023', NULL,
                 'a data field spec without a type raises 22023');

-- ---------------------------------------------------------------- Markdown
SELECT isa.register_event_type('account.user.created', 'account_service', '1.0.0',
                               'A user account was created.',
                               '{"user_id": {"type": "uuid", "description": "The new user."},
                                 "referrer": {"type": "string", "required": false, "description": "Who referred them."}}');
SELECT ok(strpos(isa.event_catalogue_markdown(), E'### `account_service.account.user.created` (1.0.0)\n\nA user account was created.\n') > 0,
          'the catalogue Markdown has a heading for a registered type, followed by its description');
SELECT ok(strpos(isa.event_catalogue_markdown(), E'| `user_id` | uuid | yes | The new user. |\n') > 0
          AND strpos(isa.event_catalogue_markdown(), E'| `referrer` | string | no | Who referred them. |\n') > 0,
          'the catalogue Markdown has a row per data field with its type, required flag and description');
SELECT ok(strpos(isa.event_catalogue_markdown(), E'### `account_service.account.user.created`') <
          strpos(isa.event_catalogue_markdown(), E'### `wallet_service.wallet.tokens.deducted` (1.0.0)')
          AND strpos(isa.event_catalogue_markdown(), E'### `wallet_service.wallet.tokens.deducted` (1.0.0)') <
          strpos(isa.event_catalogue_markdown(), E'### `wallet_service.wallet.tokens.deducted` (2.0.0)'),
          'the catalogue Markdown is ordered by source, event type and version');

SELECT * FROM finish();
ROLLBACK;
