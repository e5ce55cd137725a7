-- billing.sql — the billing service (schema billing, source billing_service):
-- prices the usage that producers outside isa publish on
-- external.usage.recorded.{model,agent,mcp} with product.price_quote's rules,
-- records each usage once (dedupe on the producer's usage id), and publishes
-- billing.calculated (which wallet deducts) or billing.error (bad usage is
-- answered, never retried).  Costs are exact numeric tokens; the tokens charged
-- are ceil(cost).  Schema, outbox and inbox come from sql/core/services.sql.
-- docs/services/billing.md documents the API.

-- ---------------------------------------------------------------- tables
CREATE TABLE billing.billing_records (
    billing_id  uuid PRIMARY KEY,                 -- UUIDv7
    usage_id    text COLLATE "C" NOT NULL,        -- the producer's id: 1 to 200 characters
    usage_kind  text COLLATE "C" NOT NULL,        -- model, agent or mcp
    user_id     uuid NOT NULL,
    model       text NOT NULL,                    -- the model, agent or tool used
    quantities  jsonb NOT NULL,                   -- {input_tokens, output_tokens} | {runs} | {calls}
    cost        numeric NOT NULL,                 -- exact, >= 0
    tokens      bigint NOT NULL,                  -- ceil(cost)
    lines       jsonb NOT NULL,                   -- product.price_quote's lines
    event_id    uuid NOT NULL,                    -- the usage event's envelope id
    occurred_at timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- A usage is billed once, whatever envelope carried it.
    CONSTRAINT billing_records_usage_key UNIQUE (usage_kind, usage_id),
    -- The wallet refused the tokens (wallet.tokens.insufficient): unpaid
    -- since then, until a credit lets billing._settle deduct them (0.2.0).
    unpaid_at   timestamptz,
    settled_at  timestamptz
);
-- No CHECK constraints: the handler is the only writer and validates every
-- value, and each CHECK costs ~2.5 us per INSERT (its expression is parsed
-- again for every statement) on the benchmark's hot path.
COMMENT ON TABLE billing.billing_records IS
    'One row per billed usage: what was used, its exact cost and the tokens charged (ceil(cost)); unique per (usage_kind, usage_id).';
CREATE INDEX billing_records_user_occurred ON billing.billing_records (user_id, occurred_at);
CREATE INDEX billing_records_unpaid ON billing.billing_records (user_id, occurred_at)
    WHERE unpaid_at IS NOT NULL AND settled_at IS NULL;

-- What each user used of each product in each calendar month (UTC), kept in
-- the transaction that bills the usage: graduated tiers and packages continue
-- from there (product.price_quote's already_used).
CREATE TABLE billing.usage_counters (
    user_id    uuid NOT NULL,
    product_id uuid NOT NULL,
    month      date NOT NULL CHECK (extract(day FROM month) = 1),
    quantity   numeric NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (user_id, product_id, month)
);
COMMENT ON TABLE billing.usage_counters IS
    'Units of each product billed to each user per calendar month (UTC, by occurred_at): the already_used of graduated and package prices.';

CREATE TABLE billing.usage_errors (
    error_id    uuid PRIMARY KEY,                 -- UUIDv7
    event_id    uuid NOT NULL,                    -- the usage event's envelope id
    event_type  text NOT NULL,
    usage_kind  text,
    usage_id    text,
    user_id     uuid,
    reason_code text NOT NULL CHECK (reason_code IN ('unknown_user', 'unknown_product', 'unknown_model',
                                                     'invalid_quantity', 'invalid_usage')),
    reason      text NOT NULL,
    data        jsonb NOT NULL,                   -- the event's data as received
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.usage_errors IS
    'Usage events that could not be billed, with the reason published in billing.error and the data as received.';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('usage.recorded.model', 'external', '1.0.0',
    'A producer (isA_Model) recorded a model call: tokens in and out, for a user. Billed by billing.',
    '{"usage_id":      {"type": "string",    "required": true,  "description": "the producer''s id of this usage: it is billed once"},
      "user_id":       {"type": "uuid",      "required": true,  "description": "the user who used the model"},
      "model":         {"type": "string",    "required": true,  "description": "the model, as named by its products"},
      "input_tokens":  {"type": "integer",   "required": true,  "description": "input tokens, 0 to 100000000"},
      "output_tokens": {"type": "integer",   "required": true,  "description": "output tokens, 0 to 100000000"},
      "occurred_at":   {"type": "timestamp", "required": false, "description": "when it happened (default: the envelope timestamp)"}}');
SELECT isa.register_event_type('usage.recorded.agent', 'external', '1.0.0',
    'A producer (isA_Agent) recorded agent runs for a user. Billed by billing.',
    '{"usage_id":    {"type": "string",    "required": true,  "description": "the producer''s id of this usage: it is billed once"},
      "user_id":     {"type": "uuid",      "required": true,  "description": "the user who ran the agent"},
      "agent":       {"type": "string",    "required": true,  "description": "the agent"},
      "runs":        {"type": "integer",   "required": true,  "description": "runs, 0 to 100000000"},
      "occurred_at": {"type": "timestamp", "required": false, "description": "when it happened (default: the envelope timestamp)"}}');
SELECT isa.register_event_type('usage.recorded.mcp', 'external', '1.0.0',
    'A producer (isA_MCP) recorded MCP tool calls for a user. Billed by billing.',
    '{"usage_id":    {"type": "string",    "required": true,  "description": "the producer''s id of this usage: it is billed once"},
      "user_id":     {"type": "uuid",      "required": true,  "description": "the user who called the tool"},
      "tool":        {"type": "string",    "required": true,  "description": "the MCP tool"},
      "calls":       {"type": "integer",   "required": true,  "description": "calls, 0 to 100000000"},
      "occurred_at": {"type": "timestamp", "required": false, "description": "when it happened (default: the envelope timestamp)"}}');

SELECT isa.register_event_type('billing.calculated', 'billing_service', '1.0.0',
    'A usage was priced and recorded; wallet deducts `tokens` from the user''s wallet.',
    '{"billing_id": {"type": "uuid",    "required": true, "description": "the billing record"},
      "usage_id":   {"type": "string",  "required": true, "description": "the producer''s usage id"},
      "usage_kind": {"type": "string",  "required": true, "description": "model, agent or mcp"},
      "user_id":    {"type": "uuid",    "required": true, "description": "the user to charge"},
      "tokens":     {"type": "integer", "required": true, "description": "tokens to deduct: ceil(cost), >= 0"},
      "cost":       {"type": "decimal", "required": true, "description": "the exact cost in tokens, a decimal string"},
      "currency":   {"type": "string",  "required": true, "description": "always tokens"},
      "lines":      {"type": "array",   "required": true, "description": "how the cost was computed: product.price_quote''s lines"}}');
SELECT isa.register_event_type('billing.error', 'billing_service', '1.0.0',
    'A usage event could not be billed; it is recorded in billing.usage_errors and not retried.',
    '{"usage_id":    {"type": "string", "required": false, "description": "the producer''s usage id (null if missing or malformed)"},
      "usage_kind":  {"type": "string", "required": true,  "description": "model, agent or mcp (for another usage.recorded.<x> type: x)"},
      "user_id":     {"type": "uuid",   "required": false, "description": "the user (null if missing or malformed)"},
      "reason_code": {"type": "string", "required": true,  "description": "unknown_user, unknown_product, unknown_model, invalid_quantity or invalid_usage"},
      "reason":      {"type": "string", "required": true,  "description": "what is wrong, for a person"}}');

-- ---------------------------------------------------------------- internal helpers
-- A usage quantity: a JSON integer from 0 to product._max_quantity() (100
-- million, the bound price_quote applies too); NULL otherwise.
CREATE FUNCTION billing._quantity(v jsonb) RETURNS bigint
    LANGUAGE sql IMMUTABLE
    RETURN CASE WHEN jsonb_typeof(v) = 'number' AND product._is_quantity(v::numeric, product._max_quantity())
                THEN v::numeric::bigint END;

-- An RFC 3339 date-time with an offset (Z or ±hh:mm), from 1970 on; NULL if
-- it is not one.  Checked field by field first so that the cast cannot fail.
CREATE FUNCTION billing._timestamp(v jsonb) RETURNS timestamptz
    LANGUAGE plpgsql STABLE
AS $$
DECLARE
    s text;
BEGIN
    IF jsonb_typeof(v) IS DISTINCT FROM 'string' THEN
        RETURN NULL;
    END IF;
    s := v #>> '{}';
    -- (A match without capture groups: PostgreSQL's regex engine is ~100
    -- times slower when it must report groups.)
    IF s !~ '^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-](0[0-9]|1[0-5]):?[0-5][0-9])$' THEN
        RETURN NULL;
    END IF;
    IF substr(s, 9, 2)::int > extract(day FROM make_date(substr(s, 1, 4)::int, substr(s, 6, 2)::int, 1)
                                                + interval '1 month - 1 day') THEN
        RETURN NULL;                                  -- 30 February and the like
    END IF;
    RETURN s::timestamptz;
END
$$;

-- The units of a product that a user used in a month before this usage of
-- `quantity` units.  With `apply`, counts the usage first: the upsert locks
-- the counter row, so already_used is exact even if usage of the same user
-- and product is billed concurrently.  (Internal, like _price.)
CREATE FUNCTION billing._used(apply boolean, user_id uuid, product_id uuid, month date, quantity numeric)
RETURNS numeric
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    used numeric;
BEGIN
    IF apply THEN
        INSERT INTO billing.usage_counters AS c (user_id, product_id, month, quantity)
        VALUES (_used.user_id, _used.product_id, _used.month, _used.quantity)
        ON CONFLICT ON CONSTRAINT usage_counters_pkey DO UPDATE SET quantity = c.quantity + excluded.quantity
        RETURNING c.quantity - _used.quantity INTO used;
        RETURN used;
    END IF;
    SELECT c.quantity INTO used FROM billing.usage_counters c
     WHERE c.user_id = _used.user_id AND c.product_id = _used.product_id AND c.month = _used.month;
    RETURN coalesce(used, 0);
END
$$;

-- Prices a usage: kind model (q1 input tokens, q2 output tokens), agent (q1
-- runs) or mcp (q1 calls) of `name` by `user_id` at `at`.  Returns the exact
-- cost and the lines, or a reason_code and reason if no product or price
-- applies.  Graduated and package prices are quoted again with the units
-- already used this month (billing.usage_counters); with `apply` the usage is
-- counted (in the caller's transaction), and `counted` says what was added:
-- [{product_id, month, quantity}], NULL if nothing.
-- (Internal: called by functions whose search_path is pinned.)
CREATE FUNCTION billing._price(kind text, user_id uuid, name text, q1 bigint, q2 bigint, at timestamptz,
                               apply boolean,
                               OUT reason_code text, OUT reason text, OUT cost numeric, OUT lines jsonb,
                               OUT counted jsonb)
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    ut     text := CASE kind WHEN 'model' THEN 'model_input_tokens' WHEN 'agent' THEN 'agent_run' ELSE 'mcp_call' END;
    a      product.quote;
    b      product.quote;
    m      date;
    used_a numeric;
    used_b numeric;
BEGIN
    -- already_used NULL: a per-unit price is quoted at once, the others
    -- only say which product and price apply.
    a := product.try_price_quote(ut, name, q1, at, NULL);
    IF kind = 'model' THEN
        b := product.try_price_quote('model_output_tokens', name, q2, at, NULL);
    END IF;
    IF a.price_id IS NULL OR (kind = 'model' AND b.price_id IS NULL) THEN
        reason_code := 'unknown_product';
        IF kind = 'model' AND a.product_id IS NULL AND b.product_id IS NULL THEN
            reason_code := 'unknown_model';
            reason := format('no product for model "%s"', name);
        ELSIF a.product_id IS NULL AND kind = 'model' THEN
            reason := format('no product for usage type model_input_tokens and model "%s"', name);
        ELSIF a.product_id IS NULL THEN
            reason := format('no product for usage type %s and %s "%s" (nor one for any %s)', ut,
                             CASE kind WHEN 'agent' THEN 'agent' ELSE 'tool' END, name,
                             CASE kind WHEN 'agent' THEN 'agent' ELSE 'tool' END);
        ELSIF a.price_id IS NULL THEN
            reason := format('product %s (%s) has no price in force at %s', a.product_id, ut, at);
        ELSIF b.product_id IS NULL THEN
            reason := format('no product for usage type model_output_tokens and model "%s"', name);
        ELSE
            reason := format('product %s (model_output_tokens) has no price in force at %s', b.product_id, at);
        END IF;
        RETURN;
    END IF;

    -- Only graduated and package prices depend on the usage so far, so only
    -- their usage is counted: a counter row that every usage of a busy user
    -- updated would be rewritten hundreds of times per bridge transaction.
    IF a.pricing_model <> 'per_unit' OR b.pricing_model <> 'per_unit' THEN
        m := date_trunc('month', at AT TIME ZONE 'UTC')::date;
        IF a.pricing_model <> 'per_unit' THEN
            used_a := billing._used(apply, _price.user_id, a.product_id, m, q1);
            a := product.try_price_quote(ut, name, q1, at, used_a);
        END IF;
        IF b.pricing_model <> 'per_unit' THEN
            used_b := billing._used(apply, _price.user_id, b.product_id, m, q2);
            b := product.try_price_quote('model_output_tokens', name, q2, at, used_b);
        END IF;
        IF apply THEN
            counted := '[]';
            IF a.pricing_model <> 'per_unit' THEN
                counted := counted || jsonb_build_object('product_id', a.product_id, 'month', m, 'quantity', q1);
            END IF;
            IF b.pricing_model <> 'per_unit' THEN
                counted := counted || jsonb_build_object('product_id', b.product_id, 'month', m, 'quantity', q2);
            END IF;
        END IF;
    END IF;
    cost := trim_scale(a.cost + coalesce(b.cost, 0));
    lines := a.lines || coalesce(b.lines, '[]');
END
$$;

-- Records a usage event that cannot be billed and publishes billing.error,
-- unless the usage was billed already (a redelivery: nothing to say).
CREATE FUNCTION billing._reject(e isa.event, usage_kind text, usage_id text, user_id uuid,
                                reason_code text, reason text) RETURNS void
    LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM billing.billing_records r
                WHERE r.usage_kind = _reject.usage_kind AND r.usage_id = _reject.usage_id) THEN
        RETURN;
    END IF;
    INSERT INTO billing.usage_errors (error_id, event_id, event_type, usage_kind, usage_id, user_id,
                                      reason_code, reason, data)
    VALUES (isa.uuid_v7(), e.id, e.event_type, _reject.usage_kind, _reject.usage_id, _reject.user_id,
            _reject.reason_code, _reject.reason, coalesce(e.data, 'null'));
    PERFORM isa.publish_event('billing.error', 'billing_service',
        jsonb_build_object('usage_id', _reject.usage_id, 'usage_kind', _reject.usage_kind,
                           'user_id', _reject.user_id, 'reason_code', _reject.reason_code,
                           'reason', _reject.reason));
END
$$;

-- ---------------------------------------------------------------- the handler
-- external.usage.recorded.{model,agent,mcp}: validate, price, record once per
-- (usage_kind, usage_id), publish billing.calculated; bad usage becomes
-- billing.error (never an exception: it is not transient).
--
-- Hot path (one usage → one chain of the benchmark): no exception block, no
-- query whose plan depends on table statistics.  Plans that plpgsql caches
-- while billing_records is empty would scan it sequentially for the rest of
-- the bridge's transaction, so the dedupe is the INSERT's ON CONFLICT (an
-- index probe whatever the statistics), not a lookup before pricing.
CREATE FUNCTION billing.on_usage_recorded(e isa.event) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d    jsonb := e.data;
    kind text := CASE e.event_type WHEN 'usage.recorded.model' THEN 'model'
                                   WHEN 'usage.recorded.agent' THEN 'agent'
                                   WHEN 'usage.recorded.mcp'   THEN 'mcp' END;
    f    text;          -- the field naming the model, agent or tool, then the quantity
    uid  text := d ->> 'usage_id';
    usr  uuid;
    name text;
    q1   bigint;
    q2   bigint;
    at   timestamptz;
    p    record;
    tok  bigint;
    bid  uuid;
BEGIN
    IF kind IS NULL THEN
        PERFORM billing._reject(e, regexp_replace(e.event_type, '^usage\.recorded\.', ''), uid, NULL,
                                'invalid_usage', format('unknown usage event type "%s"', e.event_type));
        RETURN;
    END IF;
    IF jsonb_typeof(d -> 'usage_id') IS DISTINCT FROM 'string' OR uid = '' OR length(uid) > 200 THEN
        PERFORM billing._reject(e, kind, NULL, NULL, 'invalid_usage',
                                format('usage_id must be a string of 1 to 200 characters, not %s',
                                       coalesce(left((d -> 'usage_id')::text, 250), 'missing')));
        RETURN;
    END IF;
    IF jsonb_typeof(d -> 'user_id') IS DISTINCT FROM 'string'
       OR d ->> 'user_id' !~ '^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$' THEN
        PERFORM billing._reject(e, kind, uid, NULL, 'invalid_usage',
                                format('user_id must be a UUID, not %s',
                                       coalesce(left((d -> 'user_id')::text, 250), 'missing')));
        RETURN;
    END IF;
    usr := (d ->> 'user_id')::uuid;

    f := CASE kind WHEN 'model' THEN 'model' WHEN 'agent' THEN 'agent' ELSE 'tool' END;
    name := d ->> f;
    IF jsonb_typeof(d -> f) IS DISTINCT FROM 'string' OR name = '' OR length(name) > 200 THEN
        PERFORM billing._reject(e, kind, uid, usr, 'invalid_usage',
                                format('%s must be a string of 1 to 200 characters, not %s', f,
                                       coalesce(left((d -> f)::text, 250), 'missing')));
        RETURN;
    END IF;

    f := CASE kind WHEN 'model' THEN 'input_tokens' WHEN 'agent' THEN 'runs' ELSE 'calls' END;
    q1 := billing._quantity(d -> f);
    IF kind = 'model' THEN
        q2 := billing._quantity(d -> 'output_tokens');
    END IF;
    IF q1 IS NULL OR (kind = 'model' AND q2 IS NULL) THEN
        IF q1 IS NOT NULL THEN
            f := 'output_tokens';
        END IF;
        PERFORM billing._reject(e, kind, uid, usr, 'invalid_quantity',
                                format('%s must be an integer from 0 to 100000000, not %s', f,
                                       coalesce(left((d -> f)::text, 250), 'missing')));
        RETURN;
    END IF;

    IF coalesce(jsonb_typeof(d -> 'occurred_at'), 'null') = 'null' THEN
        at := e."timestamp";
    ELSE
        at := billing._timestamp(d -> 'occurred_at');
        IF at IS NULL OR at > now() + interval '1 hour' THEN
            PERFORM billing._reject(e, kind, uid, usr, 'invalid_usage',
                                    format('occurred_at must be an RFC 3339 date-time with an offset, from 1970 to an hour from now, not %s',
                                           left((d -> 'occurred_at')::text, 250)));
            RETURN;
        END IF;
    END IF;

    IF NOT account.user_exists(usr) THEN
        PERFORM billing._reject(e, kind, uid, usr, 'unknown_user', format('user %s does not exist or was deleted', usr));
        RETURN;
    END IF;

    p := billing._price(kind, usr, name, q1, q2, at, true);
    IF p.reason_code IS NOT NULL THEN
        PERFORM billing._reject(e, kind, uid, usr, p.reason_code, p.reason);
        RETURN;
    END IF;

    tok := ceil(p.cost);
    INSERT INTO billing.billing_records AS r (billing_id, usage_id, usage_kind, user_id, model, quantities, cost,
                                              tokens, lines, event_id, occurred_at)
    VALUES (isa.uuid_v7(), uid, kind, usr, name,
            CASE kind WHEN 'model' THEN jsonb_build_object('input_tokens', q1, 'output_tokens', q2)
                      WHEN 'agent' THEN jsonb_build_object('runs', q1)
                      ELSE jsonb_build_object('calls', q1) END,
            p.cost, tok, p.lines, e.id, at)
    ON CONFLICT ON CONSTRAINT billing_records_usage_key DO NOTHING
    RETURNING r.billing_id INTO bid;
    IF bid IS NULL THEN
        -- Billed already (the same usage under another envelope id): take
        -- back what _price counted, publish nothing.
        IF p.counted IS NOT NULL THEN
            UPDATE billing.usage_counters c SET quantity = c.quantity - x.quantity
              FROM jsonb_to_recordset(p.counted) AS x (product_id uuid, month date, quantity numeric)
             WHERE c.user_id = usr AND c.product_id = x.product_id AND c.month = x.month;
        END IF;
        RETURN;
    END IF;
    PERFORM isa.publish_event('billing.calculated', 'billing_service',
        jsonb_build_object('billing_id', bid, 'usage_id', uid, 'usage_kind', kind, 'user_id', usr,
                           'tokens', tok, 'cost', p.cost::text, 'currency', 'tokens', 'lines', p.lines));
END
$$;
COMMENT ON FUNCTION billing.on_usage_recorded(isa.event) IS
    'Handler of external.usage.recorded.>: bills a usage once per (usage_kind, usage_id) and publishes billing.calculated, or records and publishes billing.error.';

-- ---------------------------------------------------------------- unpaid records
-- Deducts a user's unpaid records, oldest first, while the wallet holds their
-- tokens, with the key and arguments wallet.on_billing_calculated used
-- (billing:<billing_id>): a record is never charged twice, whichever of the
-- two charges it.  The number settled.
CREATE FUNCTION billing._settle(p_user uuid) RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r billing.billing_records;
    n integer := 0;
BEGIN
    FOR r IN SELECT * FROM billing.billing_records x
              WHERE x.user_id = p_user AND x.unpaid_at IS NOT NULL AND x.settled_at IS NULL
              ORDER BY x.occurred_at, x.billing_id FOR UPDATE LOOP
        EXIT WHEN NOT wallet.check_balance(p_user, r.tokens);
        BEGIN
            PERFORM wallet.deduct(p_user, r.tokens, 'billing:' || r.billing_id, 'billing', r.billing_id::text,
                                  left(r.usage_kind, 100) || ' usage');
        EXCEPTION
            WHEN check_violation OR no_data_found THEN
                EXIT;                     -- taken meanwhile, or no wallet: the next credit tries again
        END;
        UPDATE billing.billing_records x SET settled_at = now() WHERE x.billing_id = r.billing_id;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION billing._settle(uuid) IS
    'Deducts the user''s unpaid billing records, oldest first, while the wallet holds their tokens (wallet.deduct, key billing:<billing_id>, as the first attempt); marks them settled; the number settled.';

-- wallet_service.wallet.tokens.insufficient: the wallet refused a record's
-- tokens; it is unpaid from now on.  Tokens credited since (a top-up whose
-- wallet.tokens.added billing handled first) settle it at once.
CREATE FUNCTION billing.on_tokens_insufficient(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid text := e.data ->> 'user_id';
    bid text := e.data ->> 'reference_id';
BEGIN
    IF e.data ->> 'reference_type' IS DISTINCT FROM 'billing' THEN
        RETURN;                           -- a refund's: not billing's
    END IF;
    IF uid IS NULL OR bid IS NULL OR NOT isa.is_uuid(uid) OR NOT isa.is_uuid(bid) THEN
        RAISE WARNING 'billing: wallet.tokens.insufficient % ignored: needs data.user_id and data.reference_id (uuid), got %',
            e.id, e.data;
        RETURN;
    END IF;
    UPDATE billing.billing_records x SET unpaid_at = now()
     WHERE x.billing_id = bid::uuid AND x.user_id = uid::uuid AND x.unpaid_at IS NULL AND x.settled_at IS NULL;
    IF FOUND THEN
        PERFORM billing._settle(uid::uuid);
    END IF;
END
$$;
COMMENT ON FUNCTION billing.on_tokens_insufficient(isa.event) IS
    'Handler of wallet_service.wallet.tokens.insufficient (reference_type billing): marks the billing record unpaid, then settles what the wallet can pay now.';

-- wallet_service.wallet.tokens.added (a top-up, a payment's tokens, a
-- subscription's credits): settle the user's unpaid records it pays for.
CREATE FUNCTION billing.on_tokens_added(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid text := e.data ->> 'user_id';
BEGIN
    IF uid IS NULL OR NOT isa.is_uuid(uid) THEN
        RAISE WARNING 'billing: wallet.tokens.added % ignored: needs data.user_id (uuid), got %', e.id, e.data;
        RETURN;
    END IF;
    IF EXISTS (SELECT FROM billing.billing_records x
                WHERE x.user_id = uid::uuid AND x.unpaid_at IS NOT NULL AND x.settled_at IS NULL) THEN
        PERFORM billing._settle(uid::uuid);
    END IF;
END
$$;
COMMENT ON FUNCTION billing.on_tokens_added(isa.event) IS
    'Handler of wallet_service.wallet.tokens.added: settles the user''s unpaid billing records the wallet can pay now (billing._settle).';

-- ---------------------------------------------------------------- API
CREATE FUNCTION billing.calculate_cost(usage_kind text, user_id uuid, model text, quantities jsonb,
                                       at timestamptz DEFAULT now())
RETURNS TABLE (cost numeric, tokens bigint, lines jsonb)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys text[];
    k    text;
    q    bigint[] := '{}';
    p    record;
BEGIN
    PERFORM isa.not_null('usage_kind', calculate_cost.usage_kind);
    keys := CASE calculate_cost.usage_kind WHEN 'model' THEN ARRAY['input_tokens', 'output_tokens']
                                           WHEN 'agent' THEN ARRAY['runs'] WHEN 'mcp' THEN ARRAY['calls'] END;
    IF keys IS NULL THEN
        RAISE EXCEPTION 'unknown usage kind "%"', calculate_cost.usage_kind USING ERRCODE = '22023',
            HINT = 'Usage kinds: model, agent, mcp.';
    END IF;
    PERFORM isa.not_null('user_id', calculate_cost.user_id);
    IF calculate_cost.model IS NULL THEN
        RAISE EXCEPTION 'model must not be null' USING ERRCODE = '22004',
            HINT = 'The model for usage kind model, the agent for agent, the tool for mcp.';
    END IF;
    IF calculate_cost.model = '' OR length(calculate_cost.model) > 200 THEN
        RAISE EXCEPTION 'model must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    PERFORM isa.not_null('quantities', quantities);
    IF jsonb_typeof(quantities) <> 'object' THEN
        RAISE EXCEPTION 'quantities must be a JSON object, not %', jsonb_typeof(quantities) USING ERRCODE = '22023';
    END IF;
    IF quantities - keys <> '{}' THEN
        RAISE EXCEPTION 'unknown quantities for usage kind %: %', calculate_cost.usage_kind,
            (SELECT string_agg(x, ', ' ORDER BY x) FROM jsonb_object_keys(quantities - keys) x)
            USING ERRCODE = '22023', HINT = format('Quantities of usage kind %s: %s.', calculate_cost.usage_kind,
                                                   array_to_string(keys, ', '));
    END IF;
    FOREACH k IN ARRAY keys LOOP
        IF billing._quantity(quantities -> k) IS NULL THEN
            RAISE EXCEPTION 'quantities.% must be an integer from 0 to 100000000, not %', k,
                coalesce((quantities -> k)::text, 'missing') USING ERRCODE = '22023';
        END IF;
        q := q || billing._quantity(quantities -> k);
    END LOOP;
    PERFORM isa.not_null('at', calculate_cost.at);
    PERFORM account.require_user(calculate_cost.user_id);

    p := billing._price(calculate_cost.usage_kind, calculate_cost.user_id, calculate_cost.model,
                        q[1], q[2], calculate_cost.at, false);
    IF p.reason_code IS NOT NULL THEN
        RAISE EXCEPTION '%', p.reason USING ERRCODE = 'P0002',
            DETAIL = format('reason_code %s', p.reason_code);
    END IF;
    cost := p.cost;
    tokens := ceil(p.cost);
    lines := p.lines;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION billing.calculate_cost(text, uuid, text, jsonb, timestamptz) IS
    'What a usage would cost if it were recorded now (after the user''s usage this month), without writing anything: exact cost, tokens = ceil(cost), lines. 22004/22023 bad arguments, P0002 unknown user, product or price.';

CREATE FUNCTION billing.usage_summary(user_id uuid, "from" timestamptz, "to" timestamptz)
RETURNS TABLE (usage_kind text, model text, count bigint, quantities jsonb, cost numeric, tokens bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id, from, to',
                         usage_summary.user_id, usage_summary."from", usage_summary."to");
    IF usage_summary."from" > usage_summary."to" THEN
        RAISE EXCEPTION 'from (%) is after to (%)', usage_summary."from", usage_summary."to" USING ERRCODE = '22023';
    END IF;
    IF NOT account.user_exists(usage_summary.user_id)
       AND NOT EXISTS (SELECT 1 FROM billing.billing_records r WHERE r.user_id = usage_summary.user_id) THEN
        RAISE EXCEPTION 'user % not found', usage_summary.user_id USING ERRCODE = 'P0002';
    END IF;
    RETURN QUERY
        SELECT r.usage_kind, r.model, count(*),
               CASE r.usage_kind
               WHEN 'model' THEN jsonb_build_object('input_tokens', sum((r.quantities ->> 'input_tokens')::bigint),
                                                    'output_tokens', sum((r.quantities ->> 'output_tokens')::bigint))
               WHEN 'agent' THEN jsonb_build_object('runs', sum((r.quantities ->> 'runs')::bigint))
               ELSE jsonb_build_object('calls', sum((r.quantities ->> 'calls')::bigint))
               END,
               trim_scale(sum(r.cost)), sum(r.tokens)::bigint
          FROM billing.billing_records r
         WHERE r.user_id = usage_summary.user_id
           AND r.occurred_at >= usage_summary."from" AND r.occurred_at < usage_summary."to"
         GROUP BY r.usage_kind, r.model
         ORDER BY r.usage_kind, r.model;
END
$$;
COMMENT ON FUNCTION billing.usage_summary(uuid, timestamptz, timestamptz) IS
    'A user''s billed usage with occurred_at in [from, to), per usage kind and model/agent/tool: count, summed quantities, exact cost, tokens charged. P0002 unknown user (one with billing records is known even if deleted).';

CREATE FUNCTION billing.get_billing_records(user_id uuid, "limit" integer DEFAULT 100)
RETURNS SETOF billing.billing_records
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id', get_billing_records.user_id);
    PERFORM isa.check_page_size('limit', get_billing_records."limit");
    IF NOT account.user_exists(get_billing_records.user_id)
       AND NOT EXISTS (SELECT 1 FROM billing.billing_records r WHERE r.user_id = get_billing_records.user_id) THEN
        RAISE EXCEPTION 'user % not found', get_billing_records.user_id USING ERRCODE = 'P0002';
    END IF;
    RETURN QUERY
        SELECT * FROM billing.billing_records r
         WHERE r.user_id = get_billing_records.user_id
         ORDER BY r.occurred_at DESC, r.billing_id DESC
         LIMIT get_billing_records."limit";
END
$$;
COMMENT ON FUNCTION billing.get_billing_records(uuid, integer) IS
    'A user''s newest billing records (by occurred_at), at most `limit` (1 to 1000, default 100). P0002 unknown user (one with billing records is known even if deleted).';

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA billing FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    billing.calculate_cost(text, uuid, text, jsonb, timestamptz),
    billing.usage_summary(uuid, timestamptz, timestamptz),
    billing.get_billing_records(uuid, integer)
TO isa_app_billing;
-- What billing's own code calls of other services, as isa_svc_billing.
GRANT EXECUTE ON FUNCTION
    account.require_user(uuid), account.user_exists(uuid),
    product.try_price_quote(text, text, numeric, timestamptz, numeric),
    product._max_quantity(), product._is_quantity(numeric, bigint),
    wallet.check_balance(uuid, bigint), wallet.deduct(uuid, bigint, text, text, text, text)
TO isa_svc_billing;

-- ---------------------------------------------------------------- subscriptions
SELECT isa.subscribe_to_events('billing', 'external.usage.recorded.>',
                               'billing.on_usage_recorded(isa.event)'::regprocedure, '{"versions": [1]}');
SELECT isa.subscribe_to_events('billing', 'wallet_service.wallet.tokens.insufficient',
                               'billing.on_tokens_insufficient(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('billing', 'wallet_service.wallet.tokens.added',
                               'billing.on_tokens_added(isa.event)'::regprocedure);

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- A user reads their own billing (self_param); anyone else needs billing:read
-- on the user.  The estimate is a POST for its quantities object; it writes
-- nothing.
SELECT isa.http_route('GET', '/v1/billing/{user_id}/records', 'billing.get_billing_records(uuid, integer)', 'user',
    'A user''s newest billing records (limit 1 to 1000, default 100).',
    permission => 'billing:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/billing/{user_id}/usage',
    'billing.usage_summary(uuid, timestamptz, timestamptz)', 'user',
    'A user''s billed usage in [from, to) per usage kind and model: count, quantities, cost, tokens.',
    permission => 'billing:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('POST', '/v1/billing/{user_id}/estimate',
    'billing.calculate_cost(text, uuid, text, jsonb, timestamptz)', 'user',
    'What a usage would cost the user now (one row), without recording anything.',
    permission => 'billing:read', resource_param => 'user_id', self_param => 'user_id');
