-- 0.1.0 → 0.2.0, wallet: a subscription's credits come every period until
-- it is canceled (wallet.subscriptions, wallet.credit_subscriptions).
-- The subscriptions whose credits come again every period (0.2.0): the first
-- period's are subscription.created's; wallet.credit_subscriptions() (pg_cron,
-- hourly) adds each later one, once (key subscription:<id>:<period number>),
-- until subscription.canceled.
CREATE TABLE wallet.subscriptions (
    subscription_id  uuid PRIMARY KEY,                 -- payment's
    user_id          uuid NOT NULL,
    credits          bigint NOT NULL CHECK (credits >= 0),
    period           interval NOT NULL,                -- isa.wallet_subscription_period when it began
    periods_credited integer NOT NULL CHECK (periods_credited >= 0),
    next_credit_at   timestamptz,                      -- NULL once canceled
    canceled_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_canceled_check CHECK ((canceled_at IS NULL) = (next_credit_at IS NOT NULL))
);
CREATE INDEX subscriptions_due ON wallet.subscriptions (next_credit_at) WHERE canceled_at IS NULL;
COMMENT ON TABLE wallet.subscriptions IS
    'Subscriptions whose credits wallet adds every period until they are canceled (subscription.created, subscription.canceled, wallet.credit_subscriptions).';

INSERT INTO isa.scheduled_jobs (jobname, schedule, command, description) VALUES
    ('isa-wallet-subscriptions', '41 * * * *', 'SELECT wallet.credit_subscriptions()',
     'Hourly: add the credits of each subscription period that began (wallet.subscriptions), until the subscription is canceled.');

-- wallet._credit_from_event says whether the credit is in the ledger (its
-- return type changes: the replay makes it again).
DROP FUNCTION wallet._credit_from_event(isa.event, text, text, text);
