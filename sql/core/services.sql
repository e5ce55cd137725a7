-- services.sql — the platform's services (SEED.md's service map): each gets
-- its schema, its event source and its outbox/inbox partitions here.  A
-- service's own SQL file (sql/<service>/<service>.sql) adds its tables, API, event
-- types and subscriptions.
SELECT isa.register_service(name, schema_name, source, description)
  FROM (VALUES
    ('account',       'account',       'account_service',       'User accounts: profiles, lookup by email, notification preferences.'),
    ('auth',          'auth',          'auth_service',          'Authentication: passwords, JWT access and refresh tokens, device authentication.'),
    ('authz',         'authz',         'authorization_service', 'Authorization: roles, permissions and grants (RBAC), deny by default.'),
    ('device',        'device',        'device_service',        'Devices (smart frames): registration, status, commands.'),
    ('payment',       'payment',       'payment_service',       'Payments through Stripe: payment intents, webhooks, subscriptions, refunds.'),
    ('wallet',        'wallet',        'wallet_service',        'Token wallets: a ledger of credits and deductions with balance checks.'),
    ('billing',       'billing',       'billing_service',       'Usage billing: prices usage events and records what is owed.'),
    ('orders',        'orders',        'order_service',         'Orders: creation, fulfilment and cancellation.'),
    ('organization',  'organization',  'organization_service',  'Organizations and family sharing: members and shared resources.'),
    ('storage',       'storage',       'storage_service',       'File and media storage: uploads, sharing, deletion.'),
    ('notification',  'notification',  'notification_service',  'Notifications by email, push and MQTT.'),
    ('session',       'session',       'session_service',       'AI chat sessions and their messages.'),
    ('event',         'event',         'event_service',         'Event storage and query for audit and replay.'),
    ('audit',         'audit',         'audit_service',         'The audit trail of every event.'),
    ('ota',           'ota',           'ota_service',           'Firmware over-the-air updates: releases, rollouts, device progress.'),
    ('product',       'product',       'product_service',       'Products and prices for usage types.'),
    ('table_events',  'table_events',  'table',                 'Events from any table: the changes of the tables a DBA tracks (isa.track_table), as table.<name>.<operation>.'),
    ('external',      NULL,            'external',              'Producers outside isa (isA_Model, isA_Agent, isA_MCP) publishing on external.>.')
  ) AS s (name, schema_name, source, description);
