-- orders.sql — the order service (schema orders, service 'order', source
-- order_service): orders paid from the token wallet (deducted and fulfilled
-- at once) or by card (a payment for a Stripe PaymentIntent, fulfilled when
-- payment_service reports it completed).  docs/services/orders.md.

-- ---------------------------------------------------------------- table
CREATE TABLE orders.orders (
    order_id            uuid PRIMARY KEY,                  -- UUIDv7
    user_id             uuid NOT NULL,
    amount              bigint NOT NULL CHECK (amount > 0),   -- tokens (wallet) or minor units (card)
    currency            text NOT NULL CHECK (currency = 'tokens' OR currency ~ '^[a-z]{3}$'),
    payment_method      text NOT NULL CHECK (payment_method IN ('card', 'wallet')),
    tokens              bigint NOT NULL DEFAULT 0 CHECK (tokens >= 0),   -- tokens bought (card orders)
    items               jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(items) = 'array'),
    status              text NOT NULL CHECK (status IN ('pending', 'fulfilled', 'canceled', 'refunded')),
    payment_id          uuid,                              -- card orders: payment.payments
    cancel_reason       text,
    idempotency_key     text NOT NULL,
    request_fingerprint bytea NOT NULL,                    -- sha256 of the arguments the key was first used with
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    fulfilled_at        timestamptz,
    canceled_at         timestamptz,
    UNIQUE (user_id, idempotency_key),
    CHECK (CASE payment_method WHEN 'wallet' THEN currency = 'tokens' AND tokens = 0 AND payment_id IS NULL
                               ELSE currency <> 'tokens' END),
    CHECK ((status IN ('fulfilled', 'refunded')) = (fulfilled_at IS NOT NULL)),
    CHECK ((status = 'canceled') = (canceled_at IS NOT NULL AND cancel_reason IS NOT NULL)),
    -- card orders: what payment.refunded reported refunded so far (0.2.0)
    amount_refunded     bigint NOT NULL DEFAULT 0,
    refunded_at         timestamptz,
    CONSTRAINT orders_refund_check CHECK (amount_refunded BETWEEN 0 AND amount
                                          AND (status = 'refunded') = (refunded_at IS NOT NULL)
                                          AND (status <> 'refunded' OR amount_refunded = amount))
);
CREATE INDEX orders_user ON orders.orders (user_id, order_id DESC);
COMMENT ON TABLE orders.orders IS
    'Orders of users, paid from the token wallet or by card; pending until paid, then fulfilled, or canceled; a card order Stripe refunded in full is refunded.';

CREATE TYPE orders.order_info AS (
    order_id       uuid,
    user_id        uuid,
    amount         bigint,
    currency       text,
    payment_method text,
    tokens         bigint,
    items          jsonb,
    status         text,
    payment_id     uuid,
    cancel_reason  text,
    created_at     timestamptz,
    updated_at     timestamptz,
    fulfilled_at   timestamptz,
    canceled_at    timestamptz,
    amount_refunded bigint,
    refunded_at    timestamptz
);

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('order.created', 'order_service', '1.0.0',
    'An order was placed (a wallet order is fulfilled in the same transaction; a card order waits for its payment).',
    '{"order_id": {"type": "uuid", "description": "the order"},
      "user_id": {"type": "uuid", "description": "who ordered"},
      "amount": {"type": "integer", "description": "tokens (wallet) or minor units of currency (card)"},
      "currency": {"type": "string", "description": "tokens, or a lower-case ISO 4217 code for card orders"},
      "payment_method": {"type": "string", "description": "card or wallet"},
      "tokens": {"type": "integer", "description": "tokens the order buys (card orders; 0 for none)"}}');
SELECT isa.register_event_type('order.fulfilled', 'order_service', '1.0.0',
    'An order was paid and fulfilled.',
    '{"order_id": {"type": "uuid", "description": "the order"},
      "user_id": {"type": "uuid", "description": "who ordered"},
      "payment_id": {"type": "uuid", "required": false, "description": "the card payment; null for a wallet order"}}');
SELECT isa.register_event_type('order.fulfilled', 'order_service', '1.1.0',
    'An order was paid and fulfilled (1.1.0: the files it bought).',
    '{"order_id": {"type": "uuid", "description": "the order"},
      "user_id": {"type": "uuid", "description": "who ordered"},
      "payment_id": {"type": "uuid", "required": false, "description": "the card payment; null for a wallet order"},
      "file_ids": {"type": "array", "required": false, "description": "the files its items bought (storage shares them with the buyer); absent when none"}}');
SELECT isa.register_event_type('order.canceled', 'order_service', '1.0.0',
    'A pending order was canceled: on request, or because its payment failed.',
    '{"order_id": {"type": "uuid", "description": "the order"},
      "user_id": {"type": "uuid", "description": "who ordered"},
      "reason": {"type": "string", "description": "why; payment_failed: <Stripe''s reason> when the payment failed"}}');

-- ---------------------------------------------------------------- internal
-- No SET clause: it is inlined into its (pinned) callers; every name is qualified.
CREATE FUNCTION orders._info(o orders.orders) RETURNS orders.order_info
    LANGUAGE sql IMMUTABLE
RETURN ROW(o.order_id, o.user_id, o.amount, o.currency, o.payment_method, o.tokens, o.items, o.status,
           o.payment_id, o.cancel_reason, o.created_at, o.updated_at, o.fulfilled_at, o.canceled_at,
           o.amount_refunded, o.refunded_at)::orders.order_info;

-- The files an order's items name ({"file_id": …}): each offered for sale
-- in storage (storage.get_offer) by someone other than the buyer, sold for
-- tokens (a wallet order) whose amount covers their prices.  22023 else.
CREATE FUNCTION orders._files(p_items jsonb, p_buyer uuid, p_method text, p_amount bigint) RETURNS uuid[]
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ids   uuid[] := '{}';
    t     text;
    f     record;
    total bigint := 0;
BEGIN
    FOR t IN SELECT i ->> 'file_id' FROM jsonb_array_elements(p_items) i WHERE i ? 'file_id' LOOP
        IF t IS NULL OR NOT isa.is_uuid(t) THEN
            RAISE EXCEPTION 'an item''s file_id must be a uuid, not %', coalesce(left(t, 60), 'null') USING ERRCODE = '22023';
        END IF;
        CONTINUE WHEN t::uuid = ANY (ids);
        ids := ids || t::uuid;
    END LOOP;
    IF cardinality(ids) = 0 THEN
        RETURN ids;
    END IF;
    IF p_method <> 'wallet' THEN
        RAISE EXCEPTION 'files are sold for tokens: an order naming files is paid from the wallet' USING ERRCODE = '22023';
    END IF;
    FOR f IN SELECT x.id, o.* FROM unnest(ids) x (id) LEFT JOIN LATERAL storage.get_offer(x.id) o ON true LOOP
        IF f.price IS NULL THEN
            RAISE EXCEPTION 'file % is not for sale', f.id USING ERRCODE = '22023';
        ELSIF f.seller_id = p_buyer THEN
            RAISE EXCEPTION 'file % is yours: it is not sold to its owner', f.id USING ERRCODE = '22023';
        END IF;
        total := total + f.price;
    END LOOP;
    IF p_amount < total THEN
        RAISE EXCEPTION 'amount % is less than the price of the files it names (% tokens)', p_amount, total
            USING ERRCODE = '22023';
    END IF;
    RETURN ids;
END
$$;
COMMENT ON FUNCTION orders._files(jsonb, uuid, text, bigint) IS
    'The distinct file ids an order''s items name, checked against storage''s offers (for sale, not the buyer''s, paid in tokens, amount at least their prices); 22023 otherwise.';

-- ---------------------------------------------------------------- API
CREATE FUNCTION orders.create_order(
    user_id                  uuid,
    amount                   bigint,
    currency                 text,
    payment_method           text,
    idempotency_key          text,
    tokens                   bigint DEFAULT 0,
    stripe_payment_intent_id text DEFAULT NULL,
    items                    jsonb DEFAULT '[]')
RETURNS orders.order_info
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o           orders.orders;
    fingerprint bytea;
    files       uuid[];
BEGIN
    PERFORM isa.not_null('user_id, amount, currency, payment_method, idempotency_key, tokens, items',
                         user_id, amount, currency, payment_method, idempotency_key, tokens, items);
    IF amount <= 0 THEN
        RAISE EXCEPTION 'amount must be positive, not %', amount USING ERRCODE = '22023';
    END IF;
    IF tokens < 0 THEN
        RAISE EXCEPTION 'tokens must be 0 or more, not %', tokens USING ERRCODE = '22023';
    END IF;
    IF idempotency_key = '' OR length(idempotency_key) > 255 THEN
        RAISE EXCEPTION 'idempotency_key must be 1 to 255 characters' USING ERRCODE = '22023',
            HINT = 'Use one new random key per order the client means to place, and the same key when it retries.';
    END IF;
    IF jsonb_typeof(items) <> 'array' OR jsonb_array_length(items) > 100
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(items) i WHERE jsonb_typeof(i) <> 'object') THEN
        RAISE EXCEPTION 'items must be a JSON array of at most 100 objects' USING ERRCODE = '22023';
    END IF;
    CASE payment_method
    WHEN 'wallet' THEN
        IF currency <> 'tokens' THEN
            RAISE EXCEPTION 'a wallet order is paid in tokens: currency must be tokens, not "%"', left(currency, 40)
                USING ERRCODE = '22023';
        END IF;
        IF tokens <> 0 THEN
            RAISE EXCEPTION 'a wallet order cannot buy tokens: tokens must be 0, not %', tokens
                USING ERRCODE = '22023', HINT = 'Tokens are bought with a card order.';
        END IF;
        IF stripe_payment_intent_id IS NOT NULL THEN
            RAISE EXCEPTION 'a wallet order takes no stripe_payment_intent_id' USING ERRCODE = '22023';
        END IF;
    WHEN 'card' THEN
        IF currency !~ '^[a-z]{3}$' THEN
            RAISE EXCEPTION 'a card order''s currency must be a lower-case ISO 4217 code, not "%"', left(currency, 40)
                USING ERRCODE = '22023', HINT = 'For example usd; the amount is in its minor units (cents).';
        END IF;
        IF stripe_payment_intent_id IS NULL THEN
            RAISE EXCEPTION 'a card order needs stripe_payment_intent_id' USING ERRCODE = '22023',
                HINT = 'Create the PaymentIntent at Stripe first and pass its id (pi_...).';
        END IF;
    ELSE
        RAISE EXCEPTION 'payment_method must be card or wallet, not "%"', left(payment_method, 40)
            USING ERRCODE = '22023';
    END CASE;
    PERFORM account.require_user(user_id);

    fingerprint := sha256(convert_to(jsonb_build_object(
        'amount', amount, 'currency', currency, 'payment_method', payment_method, 'tokens', tokens,
        'stripe_payment_intent_id', stripe_payment_intent_id, 'items', items)::text, 'UTF8'));
    -- The key's row is the lock: a concurrent retry waits here, then finds it.
    INSERT INTO orders.orders AS x (order_id, user_id, amount, currency, payment_method, tokens, items, status,
                                    idempotency_key, request_fingerprint, fulfilled_at)
    VALUES (isa.uuid_v7(), user_id, amount, currency, payment_method, tokens, items,
            CASE payment_method WHEN 'wallet' THEN 'fulfilled' ELSE 'pending' END,
            idempotency_key, fingerprint,
            CASE payment_method WHEN 'wallet' THEN now() END)
    ON CONFLICT ON CONSTRAINT orders_user_id_idempotency_key_key DO NOTHING
    RETURNING * INTO o;
    IF NOT FOUND THEN
        SELECT * INTO o FROM orders.orders x
         WHERE x.user_id = create_order.user_id AND x.idempotency_key = create_order.idempotency_key;
        IF o.request_fingerprint <> fingerprint THEN
            RAISE EXCEPTION 'idempotency key "%" was already used for another order (%)', idempotency_key, o.order_id
                USING ERRCODE = '23505', HINT = 'Use a new key for a new order.';
        END IF;
        RETURN orders._info(o);
    END IF;
    files := orders._files(items, user_id, payment_method, amount);   -- a new order: its files are for sale

    PERFORM isa.publish_event('order.created', 'order_service', jsonb_build_object(
        'order_id', o.order_id, 'user_id', o.user_id, 'amount', o.amount, 'currency', o.currency,
        'payment_method', o.payment_method, 'tokens', o.tokens));
    IF payment_method = 'wallet' THEN
        -- Paid here, in this transaction: the order exists only if the tokens left the wallet.
        IF NOT wallet.check_balance(user_id, amount) THEN
            RAISE EXCEPTION 'insufficient balance: the order costs % tokens', amount
                USING ERRCODE = '23514', HINT = 'Add tokens to the wallet, or pay by card.';
        END IF;
        PERFORM wallet.deduct(user_id, amount, 'order:' || o.order_id, 'order', o.order_id::text,
                              'order ' || o.order_id);
        PERFORM isa.publish_event('order.fulfilled', 'order_service', jsonb_build_object(
            'order_id', o.order_id, 'user_id', o.user_id, 'payment_id', NULL)
            || CASE WHEN cardinality(files) > 0 THEN jsonb_build_object('file_ids', files) ELSE '{}' END);
    ELSE
        UPDATE orders.orders x
           SET payment_id = (payment.create_payment(o.order_id, o.user_id, o.amount, o.currency,
                                                    create_order.stripe_payment_intent_id, o.tokens)).payment_id
         WHERE x.order_id = o.order_id
        RETURNING * INTO o;
    END IF;
    RETURN orders._info(o);
END
$$;
COMMENT ON FUNCTION orders.create_order(uuid, bigint, text, text, text, bigint, text, jsonb) IS
    'Places an order: wallet orders are deducted and fulfilled at once; card orders get a pending payment for the PaymentIntent. Items naming a file ({"file_id": …}) buy it from its seller for tokens (storage shares it with the buyer once the order is fulfilled). The same idempotency key with the same arguments returns the first order. 22023 bad argument or a file not for sale, 23514 insufficient balance, 23505 key reused, P0002 unknown user.';

CREATE FUNCTION orders.get_order(order_id uuid) RETURNS orders.order_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o orders.orders;
BEGIN
    PERFORM isa.not_null('order_id', order_id);
    SELECT * INTO o FROM orders.orders x WHERE x.order_id = get_order.order_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'order % not found', order_id USING ERRCODE = 'P0002';
    END IF;
    RETURN orders._info(o);
END
$$;
COMMENT ON FUNCTION orders.get_order(uuid) IS 'An order by its id; P0002 if there is none.';

CREATE FUNCTION orders.list_orders(user_id uuid, row_limit integer DEFAULT 50) RETURNS SETOF orders.order_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    PERFORM isa.check_page_size('row_limit', row_limit);
    PERFORM account.require_user(user_id);
    RETURN QUERY SELECT i.* FROM orders.orders o, LATERAL orders._info(o) i
                  WHERE o.user_id = list_orders.user_id ORDER BY o.order_id DESC LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION orders.list_orders(uuid, integer) IS 'A user''s orders, newest first (at most row_limit, 1 to 1000).';

CREATE FUNCTION orders.cancel_order(order_id uuid, reason text DEFAULT 'canceled on request') RETURNS orders.order_info
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o orders.orders;
BEGIN
    PERFORM isa.not_null('order_id, reason', order_id, reason);
    IF btrim(reason) = '' OR length(reason) > 500 THEN
        RAISE EXCEPTION 'reason must be 1 to 500 characters' USING ERRCODE = '22023';
    END IF;
    UPDATE orders.orders x
       SET status = 'canceled', cancel_reason = reason, canceled_at = now(), updated_at = now()
     WHERE x.order_id = cancel_order.order_id AND x.status = 'pending'
    RETURNING * INTO o;
    IF NOT FOUND THEN
        SELECT * INTO o FROM orders.orders x WHERE x.order_id = cancel_order.order_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'order % not found', order_id USING ERRCODE = 'P0002';
        END IF;
        RAISE EXCEPTION 'order % is % and cannot be canceled', order_id, o.status
            USING ERRCODE = '23514', HINT = 'Only a pending order can be canceled.';
    END IF;
    PERFORM isa.publish_event('order.canceled', 'order_service', jsonb_build_object(
        'order_id', o.order_id, 'user_id', o.user_id, 'reason', o.cancel_reason));
    RETURN orders._info(o);
END
$$;
COMMENT ON FUNCTION orders.cancel_order(uuid, text) IS
    'Cancels a pending order and publishes order.canceled; 23514 for a fulfilled or canceled order.';

-- An order as its owner sees it, and its cancellation by its owner: the
-- routes /v1/me/orders/{order_id} fill user_id from the caller's token.
-- Another user's order is P0002 like an unknown one, so the answer does not
-- tell which orders exist.
CREATE FUNCTION orders.get_my_order(user_id uuid, order_id uuid) RETURNS orders.order_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o orders.orders;
BEGIN
    PERFORM isa.not_null('user_id, order_id', user_id, order_id);
    SELECT * INTO o FROM orders.orders x WHERE x.order_id = get_my_order.order_id AND x.user_id = get_my_order.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'order % not found', order_id USING ERRCODE = 'P0002';
    END IF;
    RETURN orders._info(o);
END
$$;
COMMENT ON FUNCTION orders.get_my_order(uuid, uuid) IS
    'An order of the given user; P0002 if there is none or it is another user''s.';

CREATE FUNCTION orders.cancel_my_order(user_id uuid, order_id uuid, reason text DEFAULT 'canceled on request')
RETURNS orders.order_info
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM orders.get_my_order(user_id, order_id);     -- 22004, or P0002 unless it is the user's
    RETURN orders.cancel_order(order_id, reason);
END
$$;
COMMENT ON FUNCTION orders.cancel_my_order(uuid, uuid, text) IS
    'orders.cancel_order for the order''s owner: P0002 if the order is not the given user''s, 23514 unless pending.';

-- ---------------------------------------------------------------- handlers
-- payment_service.payment.completed: fulfil the order the payment is for.  An
-- order that its own payment's failure canceled is fulfilled too (Stripe lets
-- the customer retry the same PaymentIntent); an order canceled for any other
-- reason stays canceled, with a warning: refunding is for a person to decide.
CREATE FUNCTION orders.on_payment_completed(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    oid_text text := e.data ->> 'order_id';
    pid_text text := e.data ->> 'payment_id';
    o        orders.orders;
BEGIN
    IF oid_text !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
       OR pid_text !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
       OR oid_text IS NULL OR pid_text IS NULL THEN
        RAISE WARNING 'payment.completed event % has no valid order_id and payment_id; ignored', e.id;
        RETURN;
    END IF;
    UPDATE orders.orders x
       SET status = 'fulfilled', fulfilled_at = now(), updated_at = now(), cancel_reason = NULL, canceled_at = NULL
     WHERE x.order_id = oid_text::uuid AND x.payment_id = pid_text::uuid
       AND (x.status = 'pending' OR (x.status = 'canceled' AND x.cancel_reason LIKE 'payment_failed:%'))
    RETURNING * INTO o;
    IF FOUND THEN
        PERFORM isa.publish_event('order.fulfilled', 'order_service', jsonb_build_object(
            'order_id', o.order_id, 'user_id', o.user_id, 'payment_id', o.payment_id));
        RETURN;
    END IF;
    SELECT * INTO o FROM orders.orders x WHERE x.order_id = oid_text::uuid;
    IF NOT FOUND THEN
        RAISE WARNING 'payment % completed for order %, which does not exist', pid_text, oid_text;
    ELSIF o.payment_id IS DISTINCT FROM pid_text::uuid THEN
        RAISE WARNING 'payment % completed for order %, which is paid by payment %', pid_text, oid_text, o.payment_id;
    ELSIF o.status = 'canceled' THEN
        RAISE WARNING 'payment % completed for order %, which was canceled (%); the order stays canceled and a person decides about a refund',
            pid_text, oid_text, o.cancel_reason;
    END IF;                           -- fulfilled already: nothing to do
END
$$;

-- payment_service.payment.failed: cancel the pending order the payment was for.
CREATE FUNCTION orders.on_payment_failed(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    oid_text text := e.data ->> 'order_id';
    pid_text text := e.data ->> 'payment_id';
    o        orders.orders;
BEGIN
    IF oid_text !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
       OR pid_text !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
       OR oid_text IS NULL OR pid_text IS NULL THEN
        RAISE WARNING 'payment.failed event % has no valid order_id and payment_id; ignored', e.id;
        RETURN;
    END IF;
    UPDATE orders.orders x
       SET status = 'canceled', canceled_at = now(), updated_at = now(),
           cancel_reason = left('payment_failed: ' || coalesce(nullif(e.data ->> 'reason', ''), 'unknown'), 500)
     WHERE x.order_id = oid_text::uuid AND x.payment_id = pid_text::uuid AND x.status = 'pending'
    RETURNING * INTO o;
    IF FOUND THEN
        PERFORM isa.publish_event('order.canceled', 'order_service', jsonb_build_object(
            'order_id', o.order_id, 'user_id', o.user_id, 'reason', o.cancel_reason));
    END IF;                           -- fulfilled or canceled already: a late failure changes nothing
END
$$;

-- payment_service.payment.refunded: record what Stripe refunded of the
-- order's payment (data.amount_refunded is cumulative, so an older refund
-- arriving late changes nothing); refunded in full, a fulfilled order becomes
-- refunded.  The wallet takes the tokens back (wallet.on_payment_refunded);
-- the order only records it.
CREATE FUNCTION orders.on_payment_refunded(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    oid_text text := e.data ->> 'order_id';
    pid_text text := e.data ->> 'payment_id';
    amt_text text := e.data ->> 'amount_refunded';
    o        orders.orders;
    refunded bigint;
BEGIN
    IF oid_text IS NULL OR pid_text IS NULL OR NOT isa.is_uuid(oid_text) OR NOT isa.is_uuid(pid_text)
       OR jsonb_typeof(e.data -> 'amount_refunded') IS DISTINCT FROM 'number' OR amt_text !~ '^[0-9]{1,15}$' THEN
        RAISE WARNING 'payment.refunded event % needs data.order_id and data.payment_id (uuid) and data.amount_refunded (integer); ignored', e.id;
        RETURN;
    END IF;
    SELECT * INTO o FROM orders.orders x WHERE x.order_id = oid_text::uuid FOR UPDATE;
    IF NOT FOUND OR o.payment_id IS DISTINCT FROM pid_text::uuid THEN
        RAISE WARNING 'payment % refunded for order %, which does not exist or is paid by another payment; ignored', pid_text, oid_text;
        RETURN;
    END IF;
    refunded := least(amt_text::bigint, o.amount);
    IF refunded <= o.amount_refunded THEN
        RETURN;                           -- an older (or the same) refund: nothing new
    END IF;
    IF amt_text::bigint > o.amount THEN
        RAISE WARNING 'payment % of order % refunded % of %; recorded as %', pid_text, oid_text, amt_text, o.amount, o.amount;
    END IF;
    UPDATE orders.orders x
       SET amount_refunded = refunded, updated_at = now(),
           status = CASE WHEN refunded = x.amount AND x.status = 'fulfilled' THEN 'refunded' ELSE x.status END,
           refunded_at = CASE WHEN refunded = x.amount AND x.status = 'fulfilled' THEN now() ELSE x.refunded_at END
     WHERE x.order_id = o.order_id;
END
$$;
COMMENT ON FUNCTION orders.on_payment_refunded(isa.event) IS
    'Handler of payment_service.payment.refunded: records the amount refunded so far on the order its payment paid; refunded in full, a fulfilled order becomes refunded.';

COMMENT ON FUNCTION orders.on_payment_completed(isa.event) IS
    'Handler of payment_service.payment.completed: fulfils the pending order the payment is for (or one its failure canceled) and publishes order.fulfilled.';
COMMENT ON FUNCTION orders.on_payment_failed(isa.event) IS
    'Handler of payment_service.payment.failed: cancels the pending order with reason payment_failed: <reason> and publishes order.canceled.';

SELECT isa.subscribe_to_events('orders', 'payment_service.payment.completed', 'orders.on_payment_completed(isa.event)');
SELECT isa.subscribe_to_events('orders', 'payment_service.payment.failed', 'orders.on_payment_failed(isa.event)');
SELECT isa.subscribe_to_events('orders', 'payment_service.payment.refunded', 'orders.on_payment_refunded(isa.event)');

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA orders FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    orders.create_order(uuid, bigint, text, text, text, bigint, text, jsonb),
    orders.get_order(uuid),
    orders.get_my_order(uuid, uuid),
    orders.list_orders(uuid, integer),
    orders.cancel_order(uuid, text),
    orders.cancel_my_order(uuid, uuid, text)
TO isa_app_orders;
-- What orders' own code calls of other services, as isa_svc_orders.
GRANT EXECUTE ON FUNCTION
    account.require_user(uuid),
    payment.create_payment(uuid, uuid, bigint, text, text, bigint),
    wallet.check_balance(uuid, bigint), wallet.deduct(uuid, bigint, text, text, text, text)
TO isa_svc_orders;

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- A user orders for themselves (subject_param) and reads their own orders
-- (self_param on the list, /v1/me for one order: an order's path does not
-- name its owner).  Anyone else needs orders:read / orders:write.
-- Not the caller's own route: create_order trusts its amount and tokens, so
-- an end user placing one could pay 1 for a billion tokens.  A checkout
-- backend holding orders:write prices the order and places it for the user
-- (docs/http.md, "Orders").
SELECT isa.http_route('POST', '/v1/orders', 'orders.create_order(uuid, bigint, text, text, text, bigint, text, jsonb)', 'user',
    'Places an order for a user (a checkout backend with orders:write, which priced it): a wallet order is paid and fulfilled at once, a card order waits for its payment.',
    permission => 'orders:write', status => 201);
SELECT isa.http_route('GET', '/v1/orders', 'orders.list_orders(uuid, integer)', 'user',
    'A user''s orders, newest first (at most row_limit, 1 to 1000).',
    permission => 'orders:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/orders/{order_id}', 'orders.get_order(uuid)', 'user',
    'An order by its id.', permission => 'orders:read', resource_param => 'order_id');
SELECT isa.http_route('POST', '/v1/orders/{order_id}/cancel', 'orders.cancel_order(uuid, text)', 'user',
    'Cancels a pending order.', permission => 'orders:write', resource_param => 'order_id');
SELECT isa.http_route('GET', '/v1/me/orders/{order_id}', 'orders.get_my_order(uuid, uuid)', 'user',
    'One of the caller''s orders.', subject_param => 'user_id');
SELECT isa.http_route('POST', '/v1/me/orders/{order_id}/cancel', 'orders.cancel_my_order(uuid, uuid, text)', 'user',
    'Cancels one of the caller''s pending orders.', subject_param => 'user_id');
