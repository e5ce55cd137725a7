-- payment.sql — the payment service (schema payment, source payment_service):
-- card payments of orders through Stripe PaymentIntents, Stripe webhooks
-- (signature verification, dedupe on Stripe's event id, the mapping of Stripe
-- events to isa events), refunds and subscriptions.  docs/services/payment.md.

-- ---------------------------------------------------------------- tables
CREATE TABLE payment.payments (
    payment_id               uuid PRIMARY KEY DEFAULT isa.uuid_v7(),
    order_id                 uuid NOT NULL UNIQUE,          -- one payment per order
    user_id                  uuid NOT NULL,
    amount                   bigint NOT NULL CHECK (amount > 0),        -- minor units (cents)
    currency                 text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    tokens                   bigint NOT NULL DEFAULT 0 CHECK (tokens >= 0),   -- tokens this payment buys
    status                   text NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'succeeded', 'failed', 'refunded', 'partially_refunded')),
    stripe_payment_intent_id text NOT NULL UNIQUE CHECK (stripe_payment_intent_id ~ '^pi_[A-Za-z0-9]{1,250}$'),
    stripe_charge_id         text,                          -- the charge of the last refund
    amount_refunded          bigint NOT NULL DEFAULT 0,     -- cumulative, minor units
    tokens_refunded          bigint NOT NULL DEFAULT 0,     -- cumulative tokens taken back
    failure_reason           text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    succeeded_at             timestamptz,
    CHECK (amount_refunded BETWEEN 0 AND amount),
    CHECK (tokens_refunded BETWEEN 0 AND tokens),
    CHECK ((status IN ('refunded', 'partially_refunded')) = (amount_refunded > 0)),
    CHECK ((status = 'refunded') = (amount_refunded = amount))
);
CREATE INDEX payments_user ON payment.payments (user_id, payment_id DESC);
COMMENT ON TABLE payment.payments IS
    'Card payments of orders: one Stripe PaymentIntent each, its status, and what was refunded.';

CREATE TABLE payment.stripe_events (
    event_id          text PRIMARY KEY CHECK (event_id ~ '^evt_[A-Za-z0-9_]{1,250}$'),   -- the dedupe
    type              text NOT NULL,
    object_id         text,                                -- data.object.id (pi_, ch_, sub_ …)
    livemode          boolean,
    stripe_created_at timestamptz,                         -- the event's "created"
    received_at       timestamptz NOT NULL DEFAULT now(),
    outcome           text CHECK (outcome IN ('processed', 'ignored')),   -- set in the receiving transaction
    reason            text,                                -- why it was ignored
    payment_id        uuid,
    subscription_id   uuid
);
COMMENT ON TABLE payment.stripe_events IS
    'Every verified Stripe webhook event, once (its id is the dedupe key), with what isa did with it.';

CREATE TABLE payment.subscriptions (
    subscription_id        uuid PRIMARY KEY DEFAULT isa.uuid_v7(),
    user_id                uuid NOT NULL,
    stripe_subscription_id text NOT NULL UNIQUE CHECK (stripe_subscription_id ~ '^sub_[A-Za-z0-9]{1,250}$'),
    stripe_customer_id     text,
    plan                   text NOT NULL CHECK (plan <> ''),
    credits                bigint NOT NULL CHECK (credits > 0),
    status                 text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'canceled')),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    canceled_at            timestamptz,
    CHECK ((status = 'canceled') = (canceled_at IS NOT NULL))
);
CREATE INDEX subscriptions_user ON payment.subscriptions (user_id, subscription_id DESC);
COMMENT ON TABLE payment.subscriptions IS
    'Stripe subscriptions of users, created and canceled by Stripe webhooks.';

-- ---------------------------------------------------------------- result types
-- The contract's fields first (contract.md), then what a refund or failure adds.
CREATE TYPE payment.payment_info AS (
    payment_id               uuid,
    order_id                 uuid,
    user_id                  uuid,
    amount                   bigint,
    currency                 text,
    tokens                   bigint,
    status                   text,
    stripe_payment_intent_id text,
    created_at               timestamptz,
    updated_at               timestamptz,
    amount_refunded          bigint,
    tokens_refunded          bigint,
    failure_reason           text
);

CREATE TYPE payment.subscription_info AS (
    subscription_id        uuid,
    user_id                uuid,
    stripe_subscription_id text,
    plan                   text,
    credits                bigint,
    status                 text,
    created_at             timestamptz,
    updated_at             timestamptz,
    canceled_at            timestamptz
);

-- What a webhook handler did: outcome 'processed' or 'ignored' (with reason).
CREATE TYPE payment._webhook_result AS (
    outcome         text,
    reason          text,
    payment_id      uuid,
    subscription_id uuid
);

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('payment.initiated', 'payment_service', '1.0.0',
    'A card payment of an order was recorded for a Stripe PaymentIntent; it waits for Stripe.',
    '{"payment_id": {"type": "uuid", "description": "the payment"},
      "order_id": {"type": "uuid", "description": "the order it pays"},
      "user_id": {"type": "uuid", "description": "who pays"},
      "amount": {"type": "integer", "description": "minor units of currency (cents)"},
      "currency": {"type": "string", "description": "lower-case ISO 4217 code, e.g. usd"},
      "tokens": {"type": "integer", "description": "tokens the payment buys (0 for none)"},
      "stripe_payment_intent_id": {"type": "string", "description": "pi_..."}}');
SELECT isa.register_event_type('payment.completed', 'payment_service', '1.0.0',
    'Stripe reported the PaymentIntent succeeded (published once per payment).',
    '{"payment_id": {"type": "uuid", "description": "the payment"},
      "order_id": {"type": "uuid", "description": "the order it pays"},
      "user_id": {"type": "uuid", "description": "who paid"},
      "amount": {"type": "integer", "description": "minor units of currency (cents)"},
      "currency": {"type": "string", "description": "lower-case ISO 4217 code"},
      "tokens": {"type": "integer", "description": "tokens bought, to add to the wallet (0 for none)"},
      "stripe_payment_intent_id": {"type": "string", "description": "pi_..."},
      "stripe_event_id": {"type": "string", "description": "the Stripe event (evt_...) that completed it"}}');
SELECT isa.register_event_type('payment.failed', 'payment_service', '1.0.0',
    'Stripe reported that a payment attempt failed (a pending payment becomes failed).',
    '{"payment_id": {"type": "uuid", "description": "the payment"},
      "order_id": {"type": "uuid", "description": "the order it was to pay"},
      "user_id": {"type": "uuid", "description": "who tried to pay"},
      "amount": {"type": "integer", "description": "minor units of currency (cents)"},
      "currency": {"type": "string", "description": "lower-case ISO 4217 code"},
      "reason": {"type": "string", "description": "Stripe''s last_payment_error.message"},
      "stripe_payment_intent_id": {"type": "string", "description": "pi_..."},
      "stripe_event_id": {"type": "string", "description": "the Stripe event (evt_...)"}}');
SELECT isa.register_event_type('payment.refunded', 'payment_service', '1.0.0',
    'Stripe refunded (part of) a payment; one event per new refunded amount.',
    '{"payment_id": {"type": "uuid", "description": "the payment"},
      "order_id": {"type": "uuid", "description": "the order it paid"},
      "user_id": {"type": "uuid", "description": "who paid"},
      "amount_refunded": {"type": "integer", "description": "minor units refunded so far, this refund included (cumulative, as Stripe''s charge.amount_refunded)"},
      "refund_amount": {"type": "integer", "description": "minor units this refund adds"},
      "currency": {"type": "string", "description": "lower-case ISO 4217 code"},
      "tokens": {"type": "integer", "description": "tokens to take back for this refund: floor(tokens x total refunded / amount) minus what earlier refunds took"},
      "total_tokens_refunded": {"type": "integer", "description": "tokens taken back so far, this refund included"},
      "stripe_charge_id": {"type": "string", "description": "ch_..."},
      "stripe_event_id": {"type": "string", "description": "the Stripe event (evt_...)"}}');
SELECT isa.register_event_type('subscription.created', 'payment_service', '1.0.0',
    'A Stripe subscription was created for a user; its credits are to be added to the wallet.',
    '{"subscription_id": {"type": "uuid", "description": "the subscription"},
      "user_id": {"type": "uuid", "description": "the subscriber (metadata.user_id)"},
      "stripe_subscription_id": {"type": "string", "description": "sub_..."},
      "plan": {"type": "string", "description": "metadata.plan, else the first item''s price id"},
      "credits": {"type": "integer", "description": "tokens to add (metadata.credits, > 0)"},
      "stripe_event_id": {"type": "string", "description": "the Stripe event (evt_...)"}}');
SELECT isa.register_event_type('subscription.canceled', 'payment_service', '1.0.0',
    'A Stripe subscription ended (customer.subscription.deleted).',
    '{"subscription_id": {"type": "uuid", "description": "the subscription"},
      "user_id": {"type": "uuid", "description": "the subscriber"},
      "stripe_subscription_id": {"type": "string", "description": "sub_..."},
      "plan": {"type": "string", "description": "its plan"},
      "stripe_event_id": {"type": "string", "description": "the Stripe event (evt_...)"}}');

-- ---------------------------------------------------------------- internal
-- No SET clause: it is inlined into its (pinned) callers; every name is qualified.
CREATE FUNCTION payment._info(p payment.payments) RETURNS payment.payment_info
    LANGUAGE sql IMMUTABLE
RETURN ROW(p.payment_id, p.order_id, p.user_id, p.amount, p.currency, p.tokens, p.status,
           p.stripe_payment_intent_id, p.created_at, p.updated_at,
           p.amount_refunded, p.tokens_refunded, p.failure_reason)::payment.payment_info;

-- pending or failed → succeeded, and payment.completed.  The caller holds the
-- row lock and has checked the status.
CREATE FUNCTION payment._complete(p payment.payments, stripe_event_id text) RETURNS payment.payments
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE payment.payments x
       SET status = 'succeeded', failure_reason = NULL, succeeded_at = now(), updated_at = now()
     WHERE x.payment_id = p.payment_id
    RETURNING * INTO p;
    PERFORM isa.publish_event('payment.completed', 'payment_service', jsonb_build_object(
        'payment_id', p.payment_id, 'order_id', p.order_id, 'user_id', p.user_id,
        'amount', p.amount, 'currency', p.currency, 'tokens', p.tokens,
        'stripe_payment_intent_id', p.stripe_payment_intent_id, 'stripe_event_id', stripe_event_id));
    RETURN p;
END
$$;

-- The payment of a PaymentIntent, locked for the webhook's transaction (NULL
-- fields if isa does not know the PaymentIntent).
CREATE FUNCTION payment._locked_payment(intent_id text) RETURNS payment.payments
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT * FROM payment.payments p WHERE p.stripe_payment_intent_id = intent_id FOR UPDATE;
END;

CREATE FUNCTION payment._on_intent_succeeded(event_id text, obj jsonb) RETURNS payment._webhook_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p payment.payments := payment._locked_payment(obj ->> 'id');
BEGIN
    IF p.payment_id IS NULL THEN
        RETURN ROW('ignored', 'unknown_payment_intent', NULL, NULL)::payment._webhook_result;
    END IF;
    IF p.status IN ('succeeded', 'refunded', 'partially_refunded') THEN
        RETURN ROW('ignored', 'already_succeeded', p.payment_id, NULL)::payment._webhook_result;
    END IF;
    IF obj ->> 'amount' IS DISTINCT FROM p.amount::text OR obj ->> 'currency' IS DISTINCT FROM p.currency THEN
        -- Money arrived that does not match what the order asked for: a person decides.
        RAISE WARNING 'Stripe event %: PaymentIntent % succeeded for % %, but payment % expects % %; not completed',
            event_id, p.stripe_payment_intent_id, obj ->> 'amount', obj ->> 'currency', p.payment_id, p.amount, p.currency;
        RETURN ROW('ignored', format('amount_mismatch: Stripe reports %s %s, the payment is %s %s',
                                     obj ->> 'amount', obj ->> 'currency', p.amount, p.currency),
                   p.payment_id, NULL)::payment._webhook_result;
    END IF;
    PERFORM payment._complete(p, event_id);
    RETURN ROW('processed', NULL, p.payment_id, NULL)::payment._webhook_result;
END
$$;

CREATE FUNCTION payment._on_intent_failed(event_id text, obj jsonb) RETURNS payment._webhook_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p payment.payments := payment._locked_payment(obj ->> 'id');
    why text := left(coalesce(nullif(obj #>> '{last_payment_error,message}', ''),
                              nullif(obj #>> '{last_payment_error,code}', ''),
                              'payment failed'), 500);
BEGIN
    IF p.payment_id IS NULL THEN
        RETURN ROW('ignored', 'unknown_payment_intent', NULL, NULL)::payment._webhook_result;
    END IF;
    IF p.status <> 'pending' THEN
        -- A late failure of an earlier attempt never undoes a success.
        RETURN ROW('ignored', CASE p.status WHEN 'failed' THEN 'already_failed' ELSE 'already_succeeded' END,
                   p.payment_id, NULL)::payment._webhook_result;
    END IF;
    UPDATE payment.payments x SET status = 'failed', failure_reason = why, updated_at = now()
     WHERE x.payment_id = p.payment_id;
    PERFORM isa.publish_event('payment.failed', 'payment_service', jsonb_build_object(
        'payment_id', p.payment_id, 'order_id', p.order_id, 'user_id', p.user_id,
        'amount', p.amount, 'currency', p.currency, 'reason', why,
        'stripe_payment_intent_id', p.stripe_payment_intent_id, 'stripe_event_id', event_id));
    RETURN ROW('processed', NULL, p.payment_id, NULL)::payment._webhook_result;
END
$$;

-- charge.amount_refunded is cumulative: the refund is what it adds to what is
-- recorded, and the tokens to take back follow the refunded share of the amount.
CREATE FUNCTION payment._on_charge_refunded(event_id text, obj jsonb) RETURNS payment._webhook_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p        payment.payments := payment._locked_payment(
                 CASE jsonb_typeof(obj -> 'payment_intent') WHEN 'object' THEN obj #>> '{payment_intent,id}'
                                                            ELSE obj ->> 'payment_intent' END);
    refunded bigint;
    tokens_total bigint;
BEGIN
    IF p.payment_id IS NULL THEN
        RETURN ROW('ignored', 'unknown_payment_intent', NULL, NULL)::payment._webhook_result;
    END IF;
    IF jsonb_typeof(obj -> 'amount_refunded') IS DISTINCT FROM 'number' OR obj ->> 'amount_refunded' !~ '^[0-9]{1,18}$' THEN
        RETURN ROW('ignored', 'malformed_object: amount_refunded is not a whole number', p.payment_id, NULL)::payment._webhook_result;
    END IF;
    refunded := (obj ->> 'amount_refunded')::bigint;
    IF obj ->> 'currency' IS DISTINCT FROM p.currency THEN
        RETURN ROW('ignored', format('currency_mismatch: the charge is in %s, the payment in %s', obj ->> 'currency', p.currency),
                   p.payment_id, NULL)::payment._webhook_result;
    END IF;
    IF refunded > p.amount THEN
        RETURN ROW('ignored', format('refund_exceeds_amount: %s refunded of a payment of %s', refunded, p.amount),
                   p.payment_id, NULL)::payment._webhook_result;
    END IF;
    IF refunded <= p.amount_refunded THEN
        RETURN ROW('ignored', 'refund_already_recorded', p.payment_id, NULL)::payment._webhook_result;
    END IF;
    IF p.status IN ('pending', 'failed') THEN
        -- A refunded charge was paid: the success event is late or lost.
        p := payment._complete(p, event_id);
    END IF;

    tokens_total := floor(p.tokens::numeric * refunded / p.amount);
    UPDATE payment.payments x
       SET amount_refunded = refunded, tokens_refunded = tokens_total, stripe_charge_id = obj ->> 'id',
           status = CASE WHEN refunded = p.amount THEN 'refunded' ELSE 'partially_refunded' END,
           updated_at = now()
     WHERE x.payment_id = p.payment_id;
    PERFORM isa.publish_event('payment.refunded', 'payment_service', jsonb_build_object(
        'payment_id', p.payment_id, 'order_id', p.order_id, 'user_id', p.user_id,
        'amount_refunded', refunded, 'refund_amount', refunded - p.amount_refunded,
        'currency', p.currency,
        'tokens', tokens_total - p.tokens_refunded, 'total_tokens_refunded', tokens_total,
        'stripe_charge_id', obj ->> 'id', 'stripe_event_id', event_id));
    RETURN ROW('processed', NULL, p.payment_id, NULL)::payment._webhook_result;
END
$$;

-- The user, credits and plan come from the subscription's metadata (set by
-- whoever created it at Stripe); without them the event cannot credit anyone
-- and is ignored with the reason.
CREATE FUNCTION payment._on_subscription_created(event_id text, obj jsonb) RETURNS payment._webhook_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid     text := obj #>> '{metadata,user_id}';
    credits text := obj #>> '{metadata,credits}';
    plan    text := left(coalesce(nullif(obj #>> '{metadata,plan}', ''), nullif(obj #>> '{items,data,0,price,id}', '')), 200);
    s       payment.subscriptions;
BEGIN
    IF coalesce(obj ->> 'id', '') !~ '^sub_[A-Za-z0-9]{1,250}$' THEN
        RETURN ROW('ignored', 'malformed_object: id is not a subscription id (sub_...)', NULL, NULL)::payment._webhook_result;
    END IF;
    IF uid IS NULL OR uid !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RETURN ROW('ignored', 'invalid_metadata: metadata.user_id is missing or not a UUID', NULL, NULL)::payment._webhook_result;
    END IF;
    IF credits IS NULL OR credits !~ '^[0-9]{1,15}$' OR credits::bigint = 0 THEN
        RETURN ROW('ignored', 'invalid_metadata: metadata.credits is missing or not a positive whole number', NULL, NULL)::payment._webhook_result;
    END IF;
    IF plan IS NULL THEN
        RETURN ROW('ignored', 'invalid_metadata: neither metadata.plan nor items.data[0].price.id names a plan', NULL, NULL)::payment._webhook_result;
    END IF;
    IF NOT account.user_exists(uid::uuid) THEN
        RETURN ROW('ignored', 'unknown_user', NULL, NULL)::payment._webhook_result;
    END IF;

    INSERT INTO payment.subscriptions (user_id, stripe_subscription_id, stripe_customer_id, plan, credits)
    VALUES (uid::uuid, obj ->> 'id',
            CASE jsonb_typeof(obj -> 'customer') WHEN 'object' THEN obj #>> '{customer,id}' ELSE obj ->> 'customer' END,
            plan, credits::bigint)
    ON CONFLICT (stripe_subscription_id) DO NOTHING
    RETURNING * INTO s;
    IF NOT FOUND THEN
        RETURN ROW('ignored', 'subscription_already_recorded', NULL,
                   (SELECT x.subscription_id FROM payment.subscriptions x WHERE x.stripe_subscription_id = obj ->> 'id'))::payment._webhook_result;
    END IF;
    PERFORM isa.publish_event('subscription.created', 'payment_service', jsonb_build_object(
        'subscription_id', s.subscription_id, 'user_id', s.user_id, 'stripe_subscription_id', s.stripe_subscription_id,
        'plan', s.plan, 'credits', s.credits, 'stripe_event_id', event_id));
    RETURN ROW('processed', NULL, NULL, s.subscription_id)::payment._webhook_result;
END
$$;

CREATE FUNCTION payment._on_subscription_deleted(event_id text, obj jsonb) RETURNS payment._webhook_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s payment.subscriptions;
BEGIN
    SELECT * INTO s FROM payment.subscriptions x WHERE x.stripe_subscription_id = obj ->> 'id' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN ROW('ignored', 'unknown_subscription', NULL, NULL)::payment._webhook_result;
    END IF;
    IF s.status = 'canceled' THEN
        RETURN ROW('ignored', 'already_canceled', NULL, s.subscription_id)::payment._webhook_result;
    END IF;
    UPDATE payment.subscriptions x SET status = 'canceled', canceled_at = now(), updated_at = now()
     WHERE x.subscription_id = s.subscription_id;
    PERFORM isa.publish_event('subscription.canceled', 'payment_service', jsonb_build_object(
        'subscription_id', s.subscription_id, 'user_id', s.user_id, 'stripe_subscription_id', s.stripe_subscription_id,
        'plan', s.plan, 'stripe_event_id', event_id));
    RETURN ROW('processed', NULL, NULL, s.subscription_id)::payment._webhook_result;
END
$$;

-- ---------------------------------------------------------------- API
CREATE FUNCTION payment.create_payment(
    order_id                 uuid,
    user_id                  uuid,
    amount                   bigint,
    currency                 text,
    stripe_payment_intent_id text,
    tokens                   bigint DEFAULT 0)
RETURNS payment.payment_info
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p payment.payments;
BEGIN
    PERFORM isa.not_null('order_id, user_id, amount, currency, stripe_payment_intent_id, tokens',
                         order_id, user_id, amount, currency, stripe_payment_intent_id, tokens);
    IF amount <= 0 THEN
        RAISE EXCEPTION 'amount must be a positive number of minor currency units (cents), not %', amount
            USING ERRCODE = '22023';
    END IF;
    IF currency !~ '^[a-z]{3}$' THEN
        RAISE EXCEPTION 'currency must be a lower-case ISO 4217 code, not "%"', left(currency, 40)
            USING ERRCODE = '22023', HINT = 'For example usd or eur, as Stripe writes it.';
    END IF;
    IF stripe_payment_intent_id !~ '^pi_[A-Za-z0-9]{1,250}$' THEN
        RAISE EXCEPTION 'stripe_payment_intent_id must be a Stripe PaymentIntent id (pi_ and letters or digits), not "%"',
            left(stripe_payment_intent_id, 40)
            USING ERRCODE = '22023', HINT = 'Pass the PaymentIntent''s id, not its client_secret.';
    END IF;
    IF tokens < 0 THEN
        RAISE EXCEPTION 'tokens must be 0 or more, not %', tokens USING ERRCODE = '22023';
    END IF;
    PERFORM account.require_user(user_id);

    INSERT INTO payment.payments (order_id, user_id, amount, currency, tokens, stripe_payment_intent_id)
    VALUES (order_id, user_id, amount, currency, tokens, stripe_payment_intent_id)
    ON CONFLICT DO NOTHING
    RETURNING * INTO p;
    IF NOT FOUND THEN
        -- The PaymentIntent id is the idempotency key: the same call again
        -- returns the first payment; anything else is a duplicate.
        SELECT * INTO p FROM payment.payments x WHERE x.stripe_payment_intent_id = create_payment.stripe_payment_intent_id;
        IF FOUND AND (p.order_id, p.user_id, p.amount, p.currency, p.tokens)
                     = (create_payment.order_id, create_payment.user_id, create_payment.amount,
                        create_payment.currency, create_payment.tokens) THEN
            RETURN payment._info(p);
        ELSIF FOUND THEN
            RAISE EXCEPTION 'PaymentIntent % is already recorded for another payment', stripe_payment_intent_id
                USING ERRCODE = '23505', HINT = 'Each order needs its own PaymentIntent.';
        END IF;
        RAISE EXCEPTION 'order % already has a payment', order_id
            USING ERRCODE = '23505', HINT = 'An order is paid by one payment.';
    END IF;

    PERFORM isa.publish_event('payment.initiated', 'payment_service', jsonb_build_object(
        'payment_id', p.payment_id, 'order_id', p.order_id, 'user_id', p.user_id,
        'amount', p.amount, 'currency', p.currency, 'tokens', p.tokens,
        'stripe_payment_intent_id', p.stripe_payment_intent_id));
    RETURN payment._info(p);
END
$$;
COMMENT ON FUNCTION payment.create_payment(uuid, uuid, bigint, text, text, bigint) IS
    'Records the card payment of an order for a Stripe PaymentIntent (pending until Stripe''s webhook) and publishes payment.initiated; the same call again returns the first payment.';

CREATE FUNCTION payment.get_payment(payment_id uuid) RETURNS payment.payment_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p payment.payments;
BEGIN
    PERFORM isa.not_null('payment_id', payment_id);
    SELECT * INTO p FROM payment.payments x WHERE x.payment_id = get_payment.payment_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', payment_id USING ERRCODE = 'P0002';
    END IF;
    RETURN payment._info(p);
END
$$;
COMMENT ON FUNCTION payment.get_payment(uuid) IS 'A payment by its id; P0002 if there is none.';

-- A payment as its owner sees it (GET /v1/me/payments/{payment_id}: the
-- owner is not in the path).  Another user's payment is P0002 like an
-- unknown one, so the answer does not tell which payments exist.
CREATE FUNCTION payment.get_my_payment(user_id uuid, payment_id uuid) RETURNS payment.payment_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p payment.payments;
BEGIN
    PERFORM isa.not_null('user_id, payment_id', user_id, payment_id);
    SELECT * INTO p FROM payment.payments x
     WHERE x.payment_id = get_my_payment.payment_id AND x.user_id = get_my_payment.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', payment_id USING ERRCODE = 'P0002';
    END IF;
    RETURN payment._info(p);
END
$$;
COMMENT ON FUNCTION payment.get_my_payment(uuid, uuid) IS
    'A payment of the given user; P0002 if there is none or it is another user''s.';

CREATE FUNCTION payment.get_payment_by_intent(stripe_payment_intent_id text) RETURNS payment.payment_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p payment.payments;
BEGIN
    PERFORM isa.not_null('stripe_payment_intent_id', stripe_payment_intent_id);
    IF stripe_payment_intent_id !~ '^pi_[A-Za-z0-9]{1,250}$' THEN
        RAISE EXCEPTION 'stripe_payment_intent_id must be a Stripe PaymentIntent id (pi_ and letters or digits), not "%"',
            left(stripe_payment_intent_id, 40) USING ERRCODE = '22023';
    END IF;
    SELECT * INTO p FROM payment.payments x WHERE x.stripe_payment_intent_id = get_payment_by_intent.stripe_payment_intent_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no payment for PaymentIntent %', stripe_payment_intent_id USING ERRCODE = 'P0002';
    END IF;
    RETURN payment._info(p);
END
$$;
COMMENT ON FUNCTION payment.get_payment_by_intent(text) IS 'The payment of a Stripe PaymentIntent; P0002 if there is none.';

CREATE FUNCTION payment.list_payments(user_id uuid, row_limit integer DEFAULT 100) RETURNS SETOF payment.payment_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    PERFORM isa.check_page_size('row_limit', row_limit);
    PERFORM account.require_user(user_id);
    RETURN QUERY SELECT i.* FROM payment.payments p, LATERAL payment._info(p) i
                  WHERE p.user_id = list_payments.user_id ORDER BY p.payment_id DESC LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION payment.list_payments(uuid, integer) IS 'A user''s payments, newest first (at most row_limit, 1 to 1000).';

CREATE FUNCTION payment.list_subscriptions(user_id uuid) RETURNS SETOF payment.subscription_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM account.require_user(user_id);
    RETURN QUERY SELECT s.subscription_id, s.user_id, s.stripe_subscription_id, s.plan, s.credits, s.status,
                        s.created_at, s.updated_at, s.canceled_at
                   FROM payment.subscriptions s
                  WHERE s.user_id = list_subscriptions.user_id ORDER BY s.subscription_id DESC;
END
$$;
COMMENT ON FUNCTION payment.list_subscriptions(uuid) IS 'A user''s Stripe subscriptions, newest first.';

-- isa.stripe_webhook_secret ('' when unset).  The setting is superuser-only
-- (GUC_SUPERUSER_ONLY), which current_setting() enforces against the service's
-- role too; this C reader (extension/payment/payment_settings.c) is executable
-- by its owner, that role, alone.
CREATE FUNCTION payment._webhook_secret() RETURNS text
    AS 'MODULE_PATHNAME', 'isa_payment_webhook_secret' LANGUAGE C STABLE;
COMMENT ON FUNCTION payment._webhook_secret() IS
    'The Stripe webhook signing secret (isa.stripe_webhook_secret), for payment.handle_stripe_webhook; executable by the payment service''s role only.';

-- Stripe's scheme (https://docs.stripe.com/webhooks#verify-manually):
-- Stripe-Signature is "t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=…]"; the
-- signed payload is "<t>.<raw body>"; each v1 is hex(HMAC-SHA256(endpoint
-- secret, signed payload)).  Runs as its owner, the payment service's role,
-- which reads isa.stripe_webhook_secret through payment._webhook_secret().
-- No message, event or log line carries the secret or the expected signature.
CREATE FUNCTION payment.handle_stripe_webhook(raw_body text, signature_header text) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    secret    text := payment._webhook_secret();
    tolerance bigint;
    t         text;
    v1        text[] := '{}';
    item      text;
    eq        int;
    expected  bytea;
    valid     boolean := false;
    age       numeric;
    ev        jsonb;
    obj       jsonb;
    ev_id     text;
    ev_type   text;
    r         payment._webhook_result;
BEGIN
    IF coalesce(secret, '') = '' THEN
        RAISE EXCEPTION 'Stripe webhook secret not configured' USING ERRCODE = '55000',
            HINT = 'A superuser sets isa.stripe_webhook_secret to the endpoint''s signing secret (docs/configuration.md).';
    END IF;
    IF raw_body IS NULL THEN
        RAISE EXCEPTION 'Stripe webhook body is missing' USING ERRCODE = '22023';
    END IF;
    IF coalesce(signature_header, '') = '' THEN
        RAISE EXCEPTION 'Stripe-Signature header is missing' USING ERRCODE = '22023';
    END IF;

    FOREACH item IN ARRAY string_to_array(signature_header, ',') LOOP
        item := btrim(item);
        eq := strpos(item, '=');
        IF eq < 2 THEN
            RAISE EXCEPTION 'Stripe-Signature header is malformed: "%" is not scheme=value', left(item, 20)
                USING ERRCODE = '22023', HINT = 'Stripe sends t=<unix time>,v1=<hex signature>.';
        END IF;
        CASE left(item, eq - 1)
        WHEN 't' THEN
            IF t IS NOT NULL OR substr(item, eq + 1) !~ '^[0-9]{1,12}$' THEN
                RAISE EXCEPTION 'Stripe-Signature header is malformed: t must appear once, as a Unix time in seconds'
                    USING ERRCODE = '22023';
            END IF;
            t := substr(item, eq + 1);
        WHEN 'v1' THEN
            v1 := v1 || substr(item, eq + 1);
        ELSE
            NULL;           -- v0 (test-mode legacy) and unknown schemes are ignored, as Stripe's libraries do
        END CASE;
    END LOOP;
    IF t IS NULL THEN
        RAISE EXCEPTION 'Stripe-Signature header has no timestamp (t=)' USING ERRCODE = '22023';
    END IF;
    IF cardinality(v1) = 0 THEN
        RAISE EXCEPTION 'Stripe-Signature header has no v1 signature' USING ERRCODE = '22023';
    END IF;

    expected := isa.hmac_sha256(convert_to(secret, 'UTF8'), convert_to(t || '.' || raw_body, 'UTF8'));
    FOREACH item IN ARRAY v1 LOOP
        -- every entry is compared (no early exit), each in constant time
        IF item ~ '^[0-9a-f]{64}$' AND isa.secure_equals(decode(item, 'hex'), expected) THEN
            valid := true;
        END IF;
    END LOOP;
    IF NOT valid THEN
        RAISE EXCEPTION 'Stripe-Signature does not match: no v1 signature is valid for this body and timestamp'
            USING ERRCODE = '22023',
                  HINT = 'The body must be passed exactly as received, and isa.stripe_webhook_secret must be this endpoint''s secret.';
    END IF;

    tolerance := extract(epoch FROM current_setting('isa.stripe_webhook_tolerance')::interval)::bigint;
    age := extract(epoch FROM now()) - t::numeric;
    IF age > tolerance THEN
        RAISE EXCEPTION 'Stripe-Signature timestamp is too old: % s ago, the tolerance is % s', floor(age), tolerance
            USING ERRCODE = '22023', HINT = 'A replayed or long-delayed webhook is refused; check the server clock.';
    ELSIF age < -tolerance THEN
        RAISE EXCEPTION 'Stripe-Signature timestamp is in the future: % s ahead, the tolerance is % s', ceil(-age), tolerance
            USING ERRCODE = '22023', HINT = 'Check the server clock.';
    END IF;

    BEGIN
        ev := raw_body::jsonb;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'Stripe webhook body is not JSON' USING ERRCODE = '22023';
    END;
    ev_id := CASE jsonb_typeof(ev -> 'id') WHEN 'string' THEN ev ->> 'id' END;
    ev_type := CASE jsonb_typeof(ev -> 'type') WHEN 'string' THEN ev ->> 'type' END;
    IF jsonb_typeof(ev) <> 'object' OR ev_id IS NULL OR ev_id !~ '^evt_[A-Za-z0-9_]{1,250}$' THEN
        RAISE EXCEPTION 'Stripe webhook body has no event id (evt_...)' USING ERRCODE = '22023';
    END IF;
    IF ev_type IS NULL OR ev_type !~ '^[a-z0-9_]+(\.[a-z0-9_]+)+$' OR length(ev_type) > 200 THEN
        RAISE EXCEPTION 'Stripe webhook body has no event type' USING ERRCODE = '22023';
    END IF;
    obj := ev #> '{data,object}';

    INSERT INTO payment.stripe_events (event_id, type, object_id, livemode, stripe_created_at)
    VALUES (ev_id, ev_type, left(obj ->> 'id', 255),
            CASE jsonb_typeof(ev -> 'livemode') WHEN 'boolean' THEN (ev ->> 'livemode')::boolean END,
            CASE WHEN ev ->> 'created' ~ '^[0-9]{1,12}$' THEN to_timestamp((ev ->> 'created')::bigint) END)
    ON CONFLICT (event_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('status', 'duplicate', 'event_id', ev_id, 'type', ev_type);
    END IF;

    IF ev_type IN ('payment_intent.succeeded', 'payment_intent.payment_failed', 'charge.refunded',
                   'customer.subscription.created', 'customer.subscription.deleted')
       AND jsonb_typeof(obj) IS DISTINCT FROM 'object' THEN
        r := ROW('ignored', 'malformed_object: data.object is missing', NULL, NULL)::payment._webhook_result;
    ELSE
        r := CASE ev_type
             WHEN 'payment_intent.succeeded'      THEN payment._on_intent_succeeded(ev_id, obj)
             WHEN 'payment_intent.payment_failed' THEN payment._on_intent_failed(ev_id, obj)
             WHEN 'charge.refunded'               THEN payment._on_charge_refunded(ev_id, obj)
             WHEN 'customer.subscription.created' THEN payment._on_subscription_created(ev_id, obj)
             WHEN 'customer.subscription.deleted' THEN payment._on_subscription_deleted(ev_id, obj)
             ELSE ROW('ignored', 'unhandled_type', NULL, NULL)::payment._webhook_result
             END;
    END IF;

    UPDATE payment.stripe_events e
       SET outcome = r.outcome, reason = r.reason, payment_id = r.payment_id, subscription_id = r.subscription_id
     WHERE e.event_id = ev_id;
    RETURN jsonb_strip_nulls(jsonb_build_object('status', r.outcome, 'event_id', ev_id, 'type', ev_type, 'reason', r.reason));
END
$$;
COMMENT ON FUNCTION payment.handle_stripe_webhook(text, text) IS
    'Verifies a Stripe webhook (Stripe-Signature against isa.stripe_webhook_secret, timestamp within isa.stripe_webhook_tolerance), records its event id once and applies it; returns {status: processed|duplicate|ignored, event_id, type[, reason]}.';

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA payment FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    payment.create_payment(uuid, uuid, bigint, text, text, bigint),
    payment.get_payment(uuid),
    payment.get_my_payment(uuid, uuid),
    payment.get_payment_by_intent(text),
    payment.list_payments(uuid, integer),
    payment.list_subscriptions(uuid),
    payment.handle_stripe_webhook(text, text)
TO isa_app_payment;
-- What payment's own code calls of other services, as isa_svc_payment.
GRANT EXECUTE ON FUNCTION account.require_user(uuid), account.user_exists(uuid) TO isa_svc_payment;

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- Stripe's webhook is public: its signature (Stripe-Signature) is the proof.
-- A user reads their own payments (self_param, or /v1/me for one payment by
-- id); anyone else needs payment:read.  Payments are created by
-- orders.create_order (POST /v1/orders), not by a route of their own.
SELECT isa.http_route('POST', '/webhooks/stripe', 'payment.handle_stripe_webhook(text, text)', 'public',
    'Stripe''s webhook: verifies the signature, records the event once and applies it.',
    raw_body_param => 'raw_body', header_params => '{"signature_header": "Stripe-Signature"}');
SELECT isa.http_route('GET', '/v1/payments', 'payment.list_payments(uuid, integer)', 'user',
    'A user''s payments, newest first (at most row_limit, 1 to 1000).',
    permission => 'payment:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/payments/{payment_id}', 'payment.get_payment(uuid)', 'user',
    'A payment by its id.', permission => 'payment:read', resource_param => 'payment_id');
SELECT isa.http_route('GET', '/v1/payments/by-intent/{stripe_payment_intent_id}',
    'payment.get_payment_by_intent(text)', 'user',
    'The payment of a Stripe PaymentIntent.',
    permission => 'payment:read', resource_param => 'stripe_payment_intent_id');
SELECT isa.http_route('GET', '/v1/me/payments/{payment_id}', 'payment.get_my_payment(uuid, uuid)', 'user',
    'One of the caller''s payments.', subject_param => 'user_id');
SELECT isa.http_route('GET', '/v1/subscriptions', 'payment.list_subscriptions(uuid)', 'user',
    'A user''s Stripe subscriptions, newest first.',
    permission => 'payment:read', resource_param => 'user_id', self_param => 'user_id');
