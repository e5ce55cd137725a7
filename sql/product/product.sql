-- product.sql — the product service (schema product, source product_service):
-- products for the usage types that billing prices (model input/output tokens
-- per model, agent runs, MCP tool calls) and their prices over time (per unit,
-- graduated tiers, packages), with price_quote, the exact cost of a quantity.
-- Prices are numeric tokens per unit, never float.  Schema, outbox and inbox
-- come from sql/core/services.sql.  product subscribes to nothing.
-- docs/services/product.md documents the API.

-- ---------------------------------------------------------------- tables
CREATE TABLE product.products (
    product_id  uuid PRIMARY KEY,                  -- UUIDv7
    usage_type  text COLLATE "C" NOT NULL
                CHECK (usage_type IN ('model_input_tokens', 'model_output_tokens', 'agent_run', 'mcp_call')),
    model       text COLLATE "C" CHECK (model <> '' AND length(model) <= 200 AND model = btrim(model)),
    name        text NOT NULL CHECK (name <> '' AND length(name) <= 200),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- model types name their model; agent/mcp name an agent/tool or NULL (any)
    CHECK (model IS NOT NULL OR usage_type IN ('agent_run', 'mcp_call')),
    -- One product per usage type and model (one "any" product per agent/mcp
    -- type); also price_quote's index: usage type, then model.
    CONSTRAINT products_usage_type_model_key UNIQUE NULLS NOT DISTINCT (usage_type, model)
);
COMMENT ON TABLE product.products IS
    'What can be priced: a usage type and the model (model tokens), agent or MCP tool it applies to (NULL: any agent/tool).';

CREATE TABLE product.prices (
    price_id       uuid PRIMARY KEY,               -- UUIDv7
    product_id     uuid NOT NULL REFERENCES product.products,
    usage_type     text COLLATE "C" NOT NULL,      -- the product's (products never change): price_quote
    model          text COLLATE "C",               -- finds the price in force with one index probe
    pricing_model  text NOT NULL CHECK (pricing_model IN ('per_unit', 'graduated', 'package')),
    unit_price     numeric CHECK (unit_price >= 0 AND unit_price <= 1000000000),
    tiers          jsonb CHECK (jsonb_typeof(tiers) = 'array'),
    package_size   bigint CHECK (package_size > 0),
    package_price  numeric CHECK (package_price >= 0 AND package_price <= 1000000000),
    effective_from timestamptz NOT NULL CHECK (isfinite(effective_from)),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (CASE pricing_model
           WHEN 'per_unit'  THEN unit_price IS NOT NULL AND tiers IS NULL AND package_size IS NULL AND package_price IS NULL
           WHEN 'graduated' THEN unit_price IS NULL AND tiers IS NOT NULL AND package_size IS NULL AND package_price IS NULL
           WHEN 'package'   THEN unit_price IS NULL AND tiers IS NULL AND package_size IS NOT NULL AND package_price IS NOT NULL
           END),
    -- The price in force at t is the one with the latest effective_from <= t:
    -- price_quote reads this index backwards from t.
    CONSTRAINT prices_product_effective_key UNIQUE (product_id, effective_from)
);
COMMENT ON TABLE product.prices IS
    'The prices of a product over time (append-only): each is in force from effective_from until the next one''s effective_from. Amounts are tokens.';
-- price_quote's common case: the latest price of (usage type, model) from
-- before `at`, one backward probe.
CREATE INDEX prices_quote ON product.prices (usage_type, model, effective_from);

-- ---------------------------------------------------------------- types
-- The result of product.try_price_quote.
CREATE TYPE product.quote AS (
    product_id    uuid,
    price_id      uuid,
    pricing_model text,
    cost          numeric,
    lines         jsonb
);
COMMENT ON TYPE product.quote IS
    'A price quote: the product and price applied, the pricing model, the exact cost in tokens and the lines explaining it.';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('product.price_changed', 'product_service', '1.0.0',
    'A new price was set for a product (product.set_price); it is in force from effective_from.',
    '{"product_id":     {"type": "uuid",      "required": true,  "description": "the product"},
      "price_id":       {"type": "uuid",      "required": true,  "description": "the new price"},
      "usage_type":     {"type": "string",    "required": true,  "description": "model_input_tokens, model_output_tokens, agent_run or mcp_call"},
      "model":          {"type": "string",    "required": false, "description": "the model, agent or tool the product is for; null: any agent/tool"},
      "pricing_model":  {"type": "string",    "required": true,  "description": "per_unit, graduated or package"},
      "effective_from": {"type": "timestamp", "required": true,  "description": "when the price comes into force"}}');

-- ---------------------------------------------------------------- internal helpers
-- 22004/22023 unless usage_type is one of the four.
CREATE FUNCTION product._check_usage_type(usage_type text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('usage_type', usage_type);
    IF usage_type NOT IN ('model_input_tokens', 'model_output_tokens', 'agent_run', 'mcp_call') THEN
        RAISE EXCEPTION 'unknown usage type "%"', usage_type USING ERRCODE = '22023',
            HINT = 'Usage types: model_input_tokens, model_output_tokens, agent_run, mcp_call.';
    END IF;
    RETURN usage_type;
END
$$;

-- A price or tier unit price: 0 to 1e9 tokens, at most 12 decimal places;
-- returned without trailing zeros.  22023 naming `what` otherwise.
CREATE FUNCTION product._check_amount(v numeric, what text) RETURNS numeric
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- NaN compares greater than every number, so it fails the range test too.
    IF NOT (v >= 0 AND v <= 1000000000) THEN
        RAISE EXCEPTION '% must be from 0 to 1000000000 tokens, not %', what, v USING ERRCODE = '22023';
    END IF;
    IF scale(trim_scale(v)) > 12 THEN
        RAISE EXCEPTION '% must have at most 12 decimal places, not %', what, v USING ERRCODE = '22023';
    END IF;
    RETURN trim_scale(v);
END
$$;

-- A JSON number, or a string holding a plain decimal, as numeric; NULL if it
-- is neither.
CREATE FUNCTION product._json_numeric(v jsonb) RETURNS numeric
    LANGUAGE sql IMMUTABLE
    RETURN CASE jsonb_typeof(v)
           WHEN 'number' THEN v::numeric
           WHEN 'string' THEN CASE WHEN v #>> '{}' ~ '^-?[0-9]{1,30}(\.[0-9]{1,30})?$' THEN (v #>> '{}')::numeric END
           END;

-- Validates graduated tiers and returns them normalised:
-- [{"up_to": number, "unit_price": number}, ..., {"up_to": null, "unit_price": number}].
CREATE FUNCTION product._check_tiers(tiers jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n      int;
    i      int := 0;
    t      jsonb;
    up_to  numeric;
    prev   numeric := 0;
    price  numeric;
    result jsonb := '[]';
BEGIN
    IF jsonb_typeof(tiers) IS DISTINCT FROM 'array' OR jsonb_array_length(tiers) = 0 THEN
        RAISE EXCEPTION 'tiers must be a non-empty JSON array of {"up_to": n, "unit_price": p}, not %', tiers
            USING ERRCODE = '22023',
            HINT = 'For example [{"up_to": 1000, "unit_price": 0.01}, {"up_to": null, "unit_price": 0.005}].';
    END IF;
    n := jsonb_array_length(tiers);
    IF n > 100 THEN
        RAISE EXCEPTION 'at most 100 tiers, not %', n USING ERRCODE = '22023';
    END IF;
    FOR t IN SELECT e FROM jsonb_array_elements(tiers) e LOOP
        i := i + 1;
        IF jsonb_typeof(t) <> 'object' THEN
            RAISE EXCEPTION 'tier % must be an object {"up_to": n, "unit_price": p}, not %', i, t
                USING ERRCODE = '22023';
        END IF;
        IF NOT t ? 'unit_price' OR t - 'up_to' - 'unit_price' <> '{}' THEN
            RAISE EXCEPTION 'tier % must have unit_price and may have up_to, nothing else: %', i, t
                USING ERRCODE = '22023';
        END IF;
        price := product._json_numeric(t -> 'unit_price');
        IF price IS NULL THEN
            RAISE EXCEPTION 'unit_price of tier % must be a number, not %', i, t -> 'unit_price'
                USING ERRCODE = '22023';
        END IF;
        price := product._check_amount(price, format('unit_price of tier %s', i));
        IF coalesce(jsonb_typeof(t -> 'up_to'), 'null') = 'null' THEN
            IF i < n THEN
                RAISE EXCEPTION 'only the last tier may be open (up_to null); tier % of % is open', i, n
                    USING ERRCODE = '22023';
            END IF;
            up_to := NULL;
        ELSE
            IF i = n THEN
                RAISE EXCEPTION 'the last tier must be open (up_to null), not up to %', t -> 'up_to'
                    USING ERRCODE = '22023',
                    HINT = 'The last tier prices everything above the previous tier''s up_to.';
            END IF;
            up_to := product._json_numeric(t -> 'up_to');
            IF up_to IS NULL OR NOT (up_to > 0 AND up_to <= 1000000000000000) OR scale(trim_scale(up_to)) > 12 THEN
                RAISE EXCEPTION 'up_to of tier % must be a number from 0 (excluded) to 1e15, not %', i, t -> 'up_to'
                    USING ERRCODE = '22023';
            END IF;
            up_to := trim_scale(up_to);
            IF up_to <= prev THEN
                RAISE EXCEPTION 'tiers must ascend: up_to of tier % (%) is not above the previous tier''s (%)', i, up_to, prev
                    USING ERRCODE = '22023';
            END IF;
            prev := up_to;
        END IF;
        result := result || jsonb_build_array(jsonb_build_object('up_to', up_to, 'unit_price', price));
    END LOOP;
    RETURN result;
END
$$;

-- Packages needed to cover x units: ceil(x / size), exactly (no division).
CREATE FUNCTION product._packages(x numeric, size bigint) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT
    RETURN div(x, size::numeric) + CASE WHEN x > div(x, size::numeric) * size THEN 1 ELSE 0 END;

-- ---------------------------------------------------------------- API: products
CREATE FUNCTION product.create_product(usage_type text, model text, name text, description text DEFAULT NULL)
RETURNS product.products
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ut text := product._check_usage_type(usage_type);
    n  text := btrim(name);
    p  product.products;
BEGIN
    IF model IS NULL AND ut IN ('model_input_tokens', 'model_output_tokens') THEN
        RAISE EXCEPTION 'model must not be null for usage type %', ut USING ERRCODE = '22004',
            HINT = 'Products for model tokens are per model; only agent_run and mcp_call products may apply to any agent/tool (model NULL).';
    END IF;
    IF model = '' OR length(model) > 200 OR model <> btrim(model) THEN
        RAISE EXCEPTION 'model must be 1 to 200 characters without surrounding spaces, not "%"', model
            USING ERRCODE = '22023';
    END IF;
    PERFORM isa.not_null('name', name);
    IF n = '' OR length(n) > 200 THEN
        RAISE EXCEPTION 'name must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    IF length(description) > 2000 THEN
        RAISE EXCEPTION 'description must be at most 2000 characters' USING ERRCODE = '22023';
    END IF;

    INSERT INTO product.products AS x (product_id, usage_type, model, name, description)
    VALUES (isa.uuid_v7(), ut, create_product.model, n, coalesce(btrim(create_product.description), ''))
    ON CONFLICT ON CONSTRAINT products_usage_type_model_key DO NOTHING
    RETURNING * INTO p;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'a product for usage type % and % already exists', ut,
            CASE WHEN model IS NULL THEN 'any agent/tool' ELSE format('model "%s"', model) END
            USING ERRCODE = '23505',
            DETAIL = format('product_id %s', (SELECT x.product_id FROM product.products x
                                               WHERE x.usage_type = ut AND x.model IS NOT DISTINCT FROM create_product.model));
    END IF;
    RETURN p;
END
$$;
COMMENT ON FUNCTION product.create_product(text, text, text, text) IS
    'Creates a product for a usage type and model (agent/tool for agent_run/mcp_call; NULL there: any). 23505 if one exists for the same usage type and model.';

CREATE FUNCTION product.get_product(product_id uuid) RETURNS product.products
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p product.products;
BEGIN
    PERFORM isa.not_null('product_id', product_id);
    SELECT * INTO p FROM product.products x WHERE x.product_id = get_product.product_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'product % not found', product_id USING ERRCODE = 'P0002';
    END IF;
    RETURN p;
END
$$;
COMMENT ON FUNCTION product.get_product(uuid) IS
    'A product; P0002 if unknown.';

CREATE FUNCTION product.list_products(usage_type text DEFAULT NULL) RETURNS SETOF product.products
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF usage_type IS NOT NULL THEN
        PERFORM product._check_usage_type(usage_type);
    END IF;
    RETURN QUERY
        SELECT * FROM product.products x
         WHERE list_products.usage_type IS NULL OR x.usage_type = list_products.usage_type
         ORDER BY x.usage_type, x.model NULLS FIRST;
END
$$;
COMMENT ON FUNCTION product.list_products(text) IS
    'Every product, or those of one usage type, ordered by usage type and model (the "any" product first). 22023 unknown usage type.';

-- ---------------------------------------------------------------- API: prices
CREATE FUNCTION product.set_price(
    product_id     uuid,
    pricing_model  text,
    unit_price     numeric DEFAULT NULL,
    tiers          jsonb DEFAULT NULL,
    package_size   numeric DEFAULT NULL,
    package_price  numeric DEFAULT NULL,
    effective_from timestamptz DEFAULT now())
RETURNS product.prices
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p     product.products;
    r     product.prices;
    up    numeric;
    tj    jsonb;
    psize bigint;
    pp    numeric;
BEGIN
    PERFORM isa.not_null('product_id, pricing_model, effective_from',
                         product_id, pricing_model, effective_from);
    IF NOT isfinite(effective_from) THEN
        RAISE EXCEPTION 'effective_from must be a finite time, not %', effective_from USING ERRCODE = '22023';
    END IF;

    CASE pricing_model
    WHEN 'per_unit' THEN
        IF unit_price IS NULL THEN
            RAISE EXCEPTION 'per_unit pricing needs unit_price' USING ERRCODE = '22004';
        END IF;
        IF tiers IS NOT NULL OR package_size IS NOT NULL OR package_price IS NOT NULL THEN
            RAISE EXCEPTION 'per_unit pricing takes only unit_price (tiers, package_size and package_price must be null)'
                USING ERRCODE = '22023';
        END IF;
        up := product._check_amount(unit_price, 'unit_price');
    WHEN 'graduated' THEN
        IF tiers IS NULL THEN
            RAISE EXCEPTION 'graduated pricing needs tiers' USING ERRCODE = '22004',
                HINT = 'For example [{"up_to": 1000, "unit_price": 0.01}, {"up_to": null, "unit_price": 0.005}].';
        END IF;
        IF unit_price IS NOT NULL OR package_size IS NOT NULL OR package_price IS NOT NULL THEN
            RAISE EXCEPTION 'graduated pricing takes only tiers (unit_price, package_size and package_price must be null)'
                USING ERRCODE = '22023';
        END IF;
        tj := product._check_tiers(tiers);
    WHEN 'package' THEN
        IF package_size IS NULL OR package_price IS NULL THEN
            RAISE EXCEPTION 'package pricing needs package_size and package_price' USING ERRCODE = '22004';
        END IF;
        IF unit_price IS NOT NULL OR tiers IS NOT NULL THEN
            RAISE EXCEPTION 'package pricing takes only package_size and package_price (unit_price and tiers must be null)'
                USING ERRCODE = '22023';
        END IF;
        IF NOT (package_size >= 1 AND package_size <= 1000000000000) OR package_size <> trunc(package_size) THEN
            RAISE EXCEPTION 'package_size must be a whole number of units from 1 to 1e12, not %', package_size
                USING ERRCODE = '22023';
        END IF;
        psize := package_size;
        pp := product._check_amount(package_price, 'package_price');
    ELSE
        RAISE EXCEPTION 'unknown pricing model "%"', pricing_model USING ERRCODE = '22023',
            HINT = 'Pricing models: per_unit, graduated, package.';
    END CASE;

    SELECT * INTO p FROM product.products x WHERE x.product_id = set_price.product_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'product % not found', product_id USING ERRCODE = 'P0002';
    END IF;

    INSERT INTO product.prices AS x (price_id, product_id, usage_type, model, pricing_model, unit_price, tiers,
                                     package_size, package_price, effective_from)
    VALUES (isa.uuid_v7(), p.product_id, p.usage_type, p.model, set_price.pricing_model, up, tj, psize, pp,
            set_price.effective_from)
    ON CONFLICT ON CONSTRAINT prices_product_effective_key DO NOTHING
    RETURNING * INTO r;
    IF NOT FOUND THEN
        -- A retry of the same call returns the first result; other terms at
        -- the same instant are a conflict.
        SELECT * INTO r FROM product.prices x
         WHERE x.product_id = p.product_id AND x.effective_from = set_price.effective_from;
        IF r.pricing_model = set_price.pricing_model AND r.unit_price IS NOT DISTINCT FROM up
           AND r.tiers IS NOT DISTINCT FROM tj AND r.package_size IS NOT DISTINCT FROM psize
           AND r.package_price IS NOT DISTINCT FROM pp THEN
            RETURN r;
        END IF;
        RAISE EXCEPTION 'product % already has another price effective from %', p.product_id, isa.iso_time(effective_from)
            USING ERRCODE = '23505', DETAIL = format('price_id %s', r.price_id),
            HINT = 'Prices are never changed; set a new one with a later effective_from.';
    END IF;

    PERFORM isa.publish_event('product.price_changed', 'product_service',
        jsonb_build_object('product_id', p.product_id, 'price_id', r.price_id, 'usage_type', p.usage_type,
                           'model', p.model, 'pricing_model', r.pricing_model,
                           'effective_from', isa.iso_time(r.effective_from)));
    RETURN r;
END
$$;
COMMENT ON FUNCTION product.set_price(uuid, text, numeric, jsonb, numeric, numeric, timestamptz) IS
    'Sets a product''s price from effective_from (default now) until the next price: per_unit (unit_price), graduated (tiers) or package (package_size, package_price); publishes product.price_changed. 22004/22023 bad terms, P0002 unknown product, 23505 another price at the same effective_from (the same terms again return the existing price).';

CREATE FUNCTION product.list_prices(product_id uuid)
RETURNS TABLE (price_id uuid, pricing_model text, unit_price numeric, tiers jsonb,
               package_size bigint, package_price numeric, effective_from timestamptz,
               effective_to timestamptz, created_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('product_id', product_id);
    IF NOT EXISTS (SELECT 1 FROM product.products x WHERE x.product_id = list_prices.product_id) THEN
        RAISE EXCEPTION 'product % not found', product_id USING ERRCODE = 'P0002';
    END IF;
    RETURN QUERY
        SELECT x.price_id, x.pricing_model, x.unit_price, x.tiers, x.package_size,
               x.package_price, x.effective_from,
               lead(x.effective_from) OVER (ORDER BY x.effective_from), x.created_at
          FROM product.prices x
         WHERE x.product_id = list_prices.product_id
         ORDER BY x.effective_from;
END
$$;
COMMENT ON FUNCTION product.list_prices(uuid) IS
    'A product''s prices in effective order, each with effective_to (the next price''s effective_from; NULL for the last). P0002 unknown product.';

-- ---------------------------------------------------------------- API: quotes
-- The bounds of a quantity: billing prices whole units, at most
-- max_quantity() in one usage (billing._quantity) and max_already_used() in a
-- month; a quote of more would be a number no bill carries, and an unbounded
-- numeric (1e131000, or a scale of 16383 digits) makes a cost, and an
-- answer, of hundreds of kilobytes.
CREATE FUNCTION product._max_quantity() RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN 100000000;
COMMENT ON FUNCTION product._max_quantity() IS
    'The largest quantity of one usage or quote: 100000000 units (billing refuses more with invalid_quantity, price_quote with 22023).';

CREATE FUNCTION product._max_already_used() RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN 1000000000000000;
COMMENT ON FUNCTION product._max_already_used() IS
    'The largest already_used of a quote: 10^15 units used in a period.';

CREATE FUNCTION product._is_quantity(q numeric, max bigint) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN q >= 0 AND q <= max AND q = trunc(q);

-- A number for an error message, cut short: the message must not grow with it.
CREATE FUNCTION product._shown(v numeric) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN length(v::text) > 32 THEN left(v::text, 32) || '…' ELSE v::text END;

-- Raises the error for price_quote's first bad argument.
CREATE FUNCTION product._check_quote_arguments(usage_type text, model text, quantity numeric, at timestamptz,
                                               already_used numeric) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM product._check_usage_type(usage_type);
    IF model IS NULL AND usage_type NOT IN ('agent_run', 'mcp_call') THEN
        RAISE EXCEPTION 'model must not be null for usage type %', usage_type USING ERRCODE = '22004';
    END IF;
    PERFORM isa.not_null('quantity', quantity);
    IF NOT product._is_quantity(quantity, product._max_quantity()) THEN
        RAISE EXCEPTION 'quantity must be a whole number from 0 to %, not %', product._max_quantity(),
            product._shown(quantity) USING ERRCODE = '22023';
    END IF;
    PERFORM isa.not_null('at', at);
    IF NOT product._is_quantity(coalesce(already_used, 0), product._max_already_used()) THEN
        RAISE EXCEPTION 'already_used must be a whole number from 0 to %, not %', product._max_already_used(),
            product._shown(already_used) USING ERRCODE = '22023';
    END IF;
END
$$;

-- The cost of `quantity` units of a usage type for a model (agent/tool) at
-- time `at`, after `already_used` units of the same product in the period
-- (graduated tiers and packages continue from there).  One indexed lookup
-- finds the product (the model's own, else for agent_run/mcp_call the "any"
-- product) and its price in force at `at`.  Returns all NULL when no product
-- applies, and product_id with a NULL price_id when the product has no price
-- in force at `at`: billing's hot path, which must not catch exceptions.
-- already_used NULL ("not known yet"): a graduated or package price is only
-- named, so that the caller can look up the usage so far and ask again.
CREATE FUNCTION product.try_price_quote(
    usage_type   text,
    model        text,
    quantity     numeric,
    at           timestamptz DEFAULT now(),
    already_used numeric DEFAULT 0)
RETURNS product.quote
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r     record;
    q     product.quote;
    n     numeric;
    used  numeric := try_price_quote.already_used;
    lo    numeric := 0;
    hi    numeric;
    units numeric;
    price numeric;
BEGIN
    -- One test on the common path; the details only when it fails.
    IF try_price_quote.usage_type IS NULL OR try_price_quote.quantity IS NULL OR try_price_quote.at IS NULL
       OR try_price_quote.usage_type NOT IN ('model_input_tokens', 'model_output_tokens', 'agent_run', 'mcp_call')
       OR (try_price_quote.model IS NULL AND try_price_quote.usage_type NOT IN ('agent_run', 'mcp_call'))
       OR NOT product._is_quantity(try_price_quote.quantity, product._max_quantity())
       OR NOT product._is_quantity(coalesce(try_price_quote.already_used, 0), product._max_already_used()) THEN
        PERFORM product._check_quote_arguments(try_price_quote.usage_type, try_price_quote.model,
                                               try_price_quote.quantity, try_price_quote.at,
                                               try_price_quote.already_used);
    END IF;

    -- Common case: the model's own product has a price in force at `at`.
    SELECT pr.product_id, pr.price_id, pr.pricing_model, pr.unit_price, pr.tiers, pr.package_size, pr.package_price
      INTO r
      FROM product.prices pr
     WHERE pr.usage_type = try_price_quote.usage_type AND pr.model = try_price_quote.model
       AND pr.effective_from <= try_price_quote.at
     ORDER BY pr.effective_from DESC
     LIMIT 1;
    IF NOT FOUND THEN
        -- The model's own product (even without a price: it takes
        -- precedence), else for agent_run/mcp_call the "any" product; then
        -- its price in force at `at`, if any.
        SELECT p.product_id, x.price_id, x.pricing_model, x.unit_price, x.tiers, x.package_size, x.package_price
          INTO r
          FROM (SELECT y.product_id
                  FROM (SELECT pp.product_id, pp.model FROM product.products pp
                         WHERE pp.usage_type = try_price_quote.usage_type AND pp.model = try_price_quote.model
                        UNION ALL
                        SELECT pp.product_id, pp.model FROM product.products pp
                         WHERE pp.usage_type = try_price_quote.usage_type AND pp.model IS NULL
                           AND try_price_quote.usage_type IN ('agent_run', 'mcp_call')) y
                 ORDER BY y.model NULLS LAST
                 LIMIT 1) p
          LEFT JOIN LATERAL (
                SELECT pr.price_id, pr.pricing_model, pr.unit_price, pr.tiers, pr.package_size, pr.package_price
                  FROM product.prices pr
                 WHERE pr.product_id = p.product_id AND pr.effective_from <= try_price_quote.at
                 ORDER BY pr.effective_from DESC
                 LIMIT 1) x ON true;
        IF NOT FOUND THEN
            RETURN q;
        END IF;
    END IF;
    q.product_id := r.product_id;
    q.price_id := r.price_id;
    q.pricing_model := r.pricing_model;
    IF used IS NULL AND r.pricing_model <> 'per_unit' THEN
        RETURN q;             -- the caller will ask again with the usage so far
    END IF;

    CASE r.pricing_model
    WHEN 'per_unit' THEN
        q.cost := trim_scale(try_price_quote.quantity * r.unit_price);
        q.lines := jsonb_build_array(jsonb_build_object(
            'usage_type', try_price_quote.usage_type, 'price_id', r.price_id, 'pricing_model', 'per_unit',
            'quantity', try_price_quote.quantity, 'unit_price', r.unit_price::text, 'amount', q.cost::text));
    WHEN 'package' THEN
        -- Packages already paid for in the period cover what they can.
        n := product._packages(used + try_price_quote.quantity, r.package_size)
             - product._packages(used, r.package_size);
        q.cost := trim_scale(n * r.package_price);
        q.lines := jsonb_build_array(jsonb_build_object(
            'usage_type', try_price_quote.usage_type, 'price_id', r.price_id, 'pricing_model', 'package',
            'quantity', try_price_quote.quantity, 'already_used', used,
            'package_size', r.package_size, 'packages', n,
            'package_price', r.package_price::text, 'amount', q.cost::text));
    WHEN 'graduated' THEN
        -- Units (already_used, already_used + quantity] are spread over the
        -- tiers (lo, up_to]; each tier prices the part that falls in it.
        q.cost := 0;
        q.lines := '[]';
        FOR i IN 0 .. jsonb_array_length(r.tiers) - 1 LOOP
            hi := (r.tiers -> i ->> 'up_to')::numeric;            -- NULL: the open tier
            units := coalesce(least(hi, used + try_price_quote.quantity), used + try_price_quote.quantity)
                     - greatest(lo, used);
            IF units > 0 THEN
                price := (r.tiers -> i ->> 'unit_price')::numeric;
                q.cost := q.cost + units * price;
                q.lines := q.lines || jsonb_build_object(
                    'usage_type', try_price_quote.usage_type, 'price_id', r.price_id, 'pricing_model', 'graduated',
                    'tier', i + 1, 'tier_from', lo, 'tier_up_to', hi, 'already_used', used,
                    'quantity', units, 'unit_price', price::text, 'amount', trim_scale(units * price)::text);
            END IF;
            EXIT WHEN hi IS NULL OR hi >= used + try_price_quote.quantity;
            lo := hi;
        END LOOP;
        q.cost := trim_scale(q.cost);
    ELSE
        NULL;   -- no price in force: price_id is NULL
    END CASE;
    RETURN q;
END
$$;
COMMENT ON FUNCTION product.try_price_quote(text, text, numeric, timestamptz, numeric) IS
    'price_quote without P0002: all NULL if no product applies, price_id NULL if the product has no price in force at `at`; also returns the pricing model. already_used NULL: a graduated or package price is only named (cost NULL), for the caller to ask again with the usage so far.';

CREATE FUNCTION product.price_quote(
    usage_type   text,
    model        text,
    quantity     numeric,
    at           timestamptz DEFAULT now(),
    already_used numeric DEFAULT 0)
RETURNS TABLE (product_id uuid, price_id uuid, cost numeric, lines jsonb)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q product.quote;
BEGIN
    PERFORM isa.not_null('already_used', price_quote.already_used);
    q := product.try_price_quote(price_quote.usage_type, price_quote.model, price_quote.quantity,
                                 price_quote.at, price_quote.already_used);
    IF q.product_id IS NULL THEN
        IF price_quote.usage_type IN ('agent_run', 'mcp_call') THEN
            RAISE EXCEPTION 'no product for usage type % and %', price_quote.usage_type,
                CASE WHEN price_quote.model IS NULL THEN 'any agent/tool'
                     ELSE format('agent/tool "%s" (nor one for any agent/tool)', price_quote.model) END
                USING ERRCODE = 'P0002';
        END IF;
        RAISE EXCEPTION 'no product for usage type % and model "%"', price_quote.usage_type, price_quote.model
            USING ERRCODE = 'P0002';
    END IF;
    IF q.price_id IS NULL THEN
        RAISE EXCEPTION 'product % (%) has no price in force at %', q.product_id, price_quote.usage_type,
            isa.iso_time(price_quote.at) USING ERRCODE = 'P0002',
            HINT = 'Set one with product.set_price, effective from that time or earlier.';
    END IF;
    product_id := q.product_id;
    price_id := q.price_id;
    cost := q.cost;
    lines := q.lines;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION product.price_quote(text, text, numeric, timestamptz, numeric) IS
    'The exact cost in tokens of `quantity` units of a usage type for a model/agent/tool at time `at`, after `already_used` units in the period (graduated tiers, packages), with lines explaining it. P0002 if no product or no price in force applies; 22004/22023 bad arguments.';

-- ---------------------------------------------------------------- privileges
-- The HTTP front gates the write functions (admin routes); isa_app may call
-- them all, and no table.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA product FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    product.get_product(uuid),
    product.list_products(text),
    product.list_prices(uuid),
    product.price_quote(text, text, numeric, timestamptz, numeric),
    product.try_price_quote(text, text, numeric, timestamptz, numeric)
TO isa_app_product;
-- The catalogue and its prices are set by administrators: isa_app_admin.
GRANT EXECUTE ON FUNCTION
    product.create_product(text, text, text, text),
    product.set_price(uuid, text, numeric, jsonb, numeric, numeric, timestamptz)
TO isa_app_admin;

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- The catalogue and its prices are public (a price list); products and prices
-- are set by administrators (isa:admin).
SELECT isa.http_route('GET', '/v1/products', 'product.list_products(text)', 'public',
    'Every product, or those of one usage type.');
SELECT isa.http_route('GET', '/v1/products/{product_id}', 'product.get_product(uuid)', 'public',
    'A product.');
SELECT isa.http_route('GET', '/v1/products/{product_id}/prices', 'product.list_prices(uuid)', 'public',
    'A product''s prices in effective order, each with effective_to.');
SELECT isa.http_route('GET', '/v1/prices/quote', 'product.price_quote(text, text, numeric, timestamptz, numeric)', 'public',
    'The exact cost of quantity units of a usage type for a model at a time, after already_used units (one row).');
SELECT isa.http_route('POST', '/v1/products', 'product.create_product(text, text, text, text)', 'admin',
    'Creates a product for a usage type and model.', status => 201);
SELECT isa.http_route('POST', '/v1/products/{product_id}/prices',
    'product.set_price(uuid, text, numeric, jsonb, numeric, numeric, timestamptz)', 'admin',
    'Sets a product''s price from effective_from: per_unit, graduated or package.', status => 201);
