-- wallet.sql — the wallet service (schema wallet, source wallet_service): one
-- token wallet per user and its ledger.  wallet.transactions is append-only
-- and is the truth: every committed transaction leaves
-- wallets.balance = sum(transactions.amount) >= 0.  A deduction is one guarded
-- UPDATE (the wallet's row lock serialises deductions on a wallet; no
-- SERIALIZABLE needed) plus one ledger INSERT in the same transaction.
-- Schema, outbox and inbox come from sql/core/services.sql.  docs/services/wallet.md
-- documents the API, the events and the handlers.

-- ---------------------------------------------------------------- tables
CREATE TABLE wallet.wallets (
    wallet_id             uuid PRIMARY KEY,                 -- UUIDv7
    user_id               uuid NOT NULL UNIQUE,             -- account's user (no cross-schema foreign key)
    balance               bigint NOT NULL DEFAULT 0 CHECK (balance >= 0),
    low_balance_threshold bigint NOT NULL DEFAULT 1000,     -- >= 0 (set_low_balance_threshold checks it)
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE wallet.wallets IS
    'One token wallet per user: the balance (always the sum of its ledger, never negative) and the low-balance threshold (default 1000 tokens; 0 = never warn).';

-- The rules of a ledger row (reference_type one of billing, order, payment,
-- subscription, refund, manual; amount <> 0 except for a refund; balance_after
-- >= 0; key 1-255, reference_id 1-255, description <= 1000 characters) are
-- enforced by its only writer, wallet._post, and the functions that call it,
-- not by CHECK constraints: PostgreSQL rebuilds every CHECK expression from its
-- stored text once per INSERT statement, and these six cost about 18 µs per
-- ledger row on the billing.calculated handler (about 52 µs per event
-- without them).  For the same reason wallet_id has no foreign key (its check
-- cost about 10 µs per row): _post writes the wallet_id that its guarded
-- UPDATE just returned, and wallets cannot be deleted (trigger below).
-- Only the owner writes this table.
CREATE TABLE wallet.transactions (
    transaction_id      uuid PRIMARY KEY,                   -- UUIDv7
    wallet_id           uuid NOT NULL,                      -- wallet.wallets (see above)
    amount              bigint NOT NULL,                    -- + credit, - debit
    balance_after       bigint NOT NULL,
    idempotency_key     text NOT NULL,
    request_fingerprint bytea NOT NULL,                     -- md5 of the request's arguments (wallet._fingerprint)
    reference_type      text NOT NULL,
    reference_id        text,
    description         text,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT transactions_idempotency_key UNIQUE (wallet_id, idempotency_key)
);
COMMENT ON TABLE wallet.transactions IS
    'The ledger, append-only: every credit (+) and debit (-) of a wallet with the balance after it, its idempotency key and request fingerprint, and what it refers to.';
CREATE INDEX transactions_wallet_created ON wallet.transactions (wallet_id, created_at);

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

-- The ledger is append-only: corrections are new transactions.
CREATE FUNCTION wallet._refuse_ledger_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'wallet.transactions is append-only: % is not allowed', TG_OP
        USING ERRCODE = '42501',
        HINT = 'Correct a balance with a new transaction (wallet.add or wallet.deduct); wallet.reconcile_balances() repairs a balance from the ledger.';
END
$$;
CREATE TRIGGER transactions_append_only
    BEFORE UPDATE OR DELETE ON wallet.transactions
    FOR EACH ROW EXECUTE FUNCTION wallet._refuse_ledger_change();
CREATE TRIGGER transactions_no_truncate
    BEFORE TRUNCATE ON wallet.transactions
    FOR EACH STATEMENT EXECUTE FUNCTION wallet._refuse_ledger_change();

-- A wallet outlives its user (its ledger is the record of what was paid and
-- spent): wallets are never deleted.
CREATE FUNCTION wallet._refuse_wallet_delete() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'wallets cannot be deleted (% on wallet.wallets): the ledger refers to them', TG_OP
        USING ERRCODE = '42501';
END
$$;
CREATE TRIGGER wallets_no_delete
    BEFORE DELETE ON wallet.wallets
    FOR EACH ROW EXECUTE FUNCTION wallet._refuse_wallet_delete();
CREATE TRIGGER wallets_no_truncate
    BEFORE TRUNCATE ON wallet.wallets
    FOR EACH STATEMENT EXECUTE FUNCTION wallet._refuse_wallet_delete();

-- ---------------------------------------------------------------- types
CREATE TYPE wallet.transaction_result AS (
    transaction_id uuid,
    wallet_id      uuid,
    amount         bigint,        -- signed, as in the ledger: negative for a deduction
    balance_after  bigint,
    created_at     timestamptz
);
COMMENT ON TYPE wallet.transaction_result IS
    'The ledger row a wallet.deduct or wallet.add wrote (or, for a retried idempotency key, wrote the first time).';

CREATE TYPE wallet.wallet_info AS (
    wallet_id             uuid,
    user_id               uuid,
    balance               bigint,
    low_balance_threshold bigint,
    created_at            timestamptz,
    updated_at            timestamptz
);
COMMENT ON TYPE wallet.wallet_info IS
    'A wallet as the wallet API returns it.';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('wallet.tokens.deducted', 'wallet_service', '1.0.0',
    'Tokens left a wallet: a deduction (wallet.deduct, billing.calculated) or a refund taken back.',
    '{"wallet_id":      {"type": "uuid",    "required": true,  "description": "the wallet"},
      "user_id":        {"type": "uuid",    "required": true,  "description": "its user"},
      "transaction_id": {"type": "uuid",    "required": true,  "description": "the ledger row"},
      "amount":         {"type": "integer", "required": true,  "description": "tokens deducted (positive)"},
      "balance_after":  {"type": "integer", "required": true,  "description": "the balance after the deduction"},
      "reference_type": {"type": "string",  "required": true,  "description": "billing, order, payment, subscription, refund or manual"},
      "reference_id":   {"type": "string",  "required": false, "description": "the id of what it refers to (billing_id for billing), or null"}}');
SELECT isa.register_event_type('wallet.tokens.added', 'wallet_service', '1.0.0',
    'Tokens were added to a wallet (wallet.add, payment.completed, subscription.created).',
    '{"wallet_id":      {"type": "uuid",    "required": true,  "description": "the wallet"},
      "user_id":        {"type": "uuid",    "required": true,  "description": "its user"},
      "transaction_id": {"type": "uuid",    "required": true,  "description": "the ledger row"},
      "amount":         {"type": "integer", "required": true,  "description": "tokens added (positive)"},
      "balance_after":  {"type": "integer", "required": true,  "description": "the balance after the credit"},
      "reference_type": {"type": "string",  "required": true,  "description": "billing, order, payment, subscription, refund or manual"},
      "reference_id":   {"type": "string",  "required": false, "description": "the id of what it refers to (payment_id, subscription_id), or null"}}');
SELECT isa.register_event_type('wallet.tokens.insufficient', 'wallet_service', '1.0.0',
    'A deduction asked by an event was refused for lack of tokens and nothing was deducted (billing.calculated), or a refund could not take back all its tokens (payment.refunded: the balance was taken, see wallet.tokens.deducted).',
    '{"wallet_id":      {"type": "uuid",    "required": true,  "description": "the wallet"},
      "user_id":        {"type": "uuid",    "required": true,  "description": "its user"},
      "requested":      {"type": "integer", "required": true,  "description": "tokens asked for"},
      "balance":        {"type": "integer", "required": true,  "description": "the balance when it was refused"},
      "reference_type": {"type": "string",  "required": true,  "description": "billing or refund"},
      "reference_id":   {"type": "string",  "required": false, "description": "billing_id or payment_id"}}');
SELECT isa.register_event_type('wallet.balance.low', 'wallet_service', '1.0.0',
    'A deduction moved a wallet''s balance from at least its low-balance threshold to below it (once per crossing).',
    '{"wallet_id": {"type": "uuid",    "required": true, "description": "the wallet"},
      "user_id":   {"type": "uuid",    "required": true, "description": "its user"},
      "balance":   {"type": "integer", "required": true, "description": "the balance after the deduction"},
      "threshold": {"type": "integer", "required": true, "description": "the wallet''s low-balance threshold"}}');
SELECT isa.register_event_type('wallet.reconciliation.mismatch', 'wallet_service', '1.0.0',
    'wallet.reconcile_balances() found a wallet whose balance differs from the sum of its ledger.',
    '{"wallet_id":        {"type": "uuid",    "required": true, "description": "the wallet"},
      "user_id":          {"type": "uuid",    "required": true, "description": "its user"},
      "recorded_balance": {"type": "integer", "required": true, "description": "the balance found in wallet.wallets"},
      "ledger_balance":   {"type": "integer", "required": true, "description": "the sum of the wallet''s ledger (the truth)"},
      "repaired":         {"type": "boolean", "required": true, "description": "whether the balance was set to the ledger sum"}}');

-- ---------------------------------------------------------------- internal helpers
-- What makes two requests with one idempotency key "the same": operation,
-- amount, reference and description.  Inlined by the planner (plain SQL).
CREATE FUNCTION wallet._fingerprint(operation text, amount bigint, reference_type text,
                                    reference_id text, description text) RETURNS bytea
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT pg_catalog.decode(pg_catalog.md5(operation || ':' || amount::text || ':' || pg_catalog.quote_nullable(reference_type)
                             || ':' || pg_catalog.quote_nullable(reference_id) || ':' || pg_catalog.quote_nullable(description)), 'hex')
$$;

-- The one write path of the ledger.  Adds p_amount (signed; 0 only for a
-- refund) to the wallet of p_user_id and appends the ledger row, unless that
-- would make the balance negative; publishes wallet.tokens.deducted or
-- wallet.tokens.added, and wallet.balance.low on a downward threshold crossing.
--
-- Order of operations: the guarded UPDATE first takes the wallet's row lock;
-- every writer of a wallet's ledger holds that lock, so when the ledger INSERT
-- runs, any other transaction with the same idempotency key on this wallet
-- has committed (its row is found: ON CONFLICT) or rolled back.  A conflict
-- undoes the UPDATE (still under the lock: nobody saw it) and reports the
-- first transaction.  When the guarded UPDATE matches nothing (no wallet, not
-- enough tokens), one lookup tells which, and also finds a committed retry.
--
-- outcome: applied | replayed (same key, same fingerprint: tx_* is the first
-- transaction) | conflict (same key, other fingerprint) | insufficient
-- (balance = the balance) | no_wallet.  Raises nothing but real errors.
CREATE FUNCTION wallet._post(
    p_user_id uuid, p_amount bigint, p_key text, p_fingerprint bytea,
    p_reference_type text, p_reference_id text, p_description text,
    OUT outcome text, OUT tx_id uuid, OUT tx_wallet uuid, OUT tx_amount bigint,
    OUT tx_balance_after bigint, OUT tx_created_at timestamptz, OUT balance bigint)
    LANGUAGE plpgsql
    -- No SET search_path: its callers (API functions, handlers) pin it, and a
    -- SET clause costs each call a GUC save and restore.
AS $$
DECLARE
    threshold bigint;
    fp        bytea;
    event_id  uuid;     -- publish_event is assigned, not PERFORMed: a simple expression skips the executor
BEGIN
    UPDATE wallet.wallets w
       SET balance = w.balance + p_amount, updated_at = now()
     WHERE w.user_id = p_user_id AND w.balance >= -p_amount
    RETURNING w.wallet_id, w.balance, w.low_balance_threshold INTO tx_wallet, balance, threshold;
    IF FOUND THEN
        INSERT INTO wallet.transactions AS t (transaction_id, wallet_id, amount, balance_after, idempotency_key,
                                              request_fingerprint, reference_type, reference_id, description)
        VALUES (isa.uuid_v7(), tx_wallet, p_amount, balance, p_key,
                p_fingerprint, p_reference_type, p_reference_id, p_description)
        ON CONFLICT ON CONSTRAINT transactions_idempotency_key DO NOTHING
        RETURNING t.transaction_id, t.created_at INTO tx_id, tx_created_at;
        IF FOUND THEN
            outcome := 'applied';
            tx_amount := p_amount;
            tx_balance_after := balance;
            IF p_amount < 0 THEN
                event_id := isa.publish_event('wallet.tokens.deducted', 'wallet_service',
                    jsonb_build_object('wallet_id', tx_wallet, 'user_id', p_user_id, 'transaction_id', tx_id,
                                       'amount', -p_amount, 'balance_after', balance,
                                       'reference_type', p_reference_type, 'reference_id', p_reference_id));
                IF balance < threshold AND balance - p_amount >= threshold THEN
                    event_id := isa.publish_event('wallet.balance.low', 'wallet_service',
                        jsonb_build_object('wallet_id', tx_wallet, 'user_id', p_user_id,
                                           'balance', balance, 'threshold', threshold));
                END IF;
            ELSIF p_amount > 0 THEN
                event_id := isa.publish_event('wallet.tokens.added', 'wallet_service',
                    jsonb_build_object('wallet_id', tx_wallet, 'user_id', p_user_id, 'transaction_id', tx_id,
                                       'amount', p_amount, 'balance_after', balance,
                                       'reference_type', p_reference_type, 'reference_id', p_reference_id));
            END IF;
            RETURN;
        END IF;
        -- The key is taken by a committed transaction: undo ours.
        UPDATE wallet.wallets w SET balance = w.balance - p_amount WHERE w.wallet_id = tx_wallet;
    END IF;

    SELECT w.wallet_id, w.balance, t.transaction_id, t.amount, t.balance_after, t.created_at, t.request_fingerprint
      INTO tx_wallet, balance, tx_id, tx_amount, tx_balance_after, tx_created_at, fp
      FROM wallet.wallets w
      LEFT JOIN wallet.transactions t ON t.wallet_id = w.wallet_id AND t.idempotency_key = p_key
     WHERE w.user_id = p_user_id;
    IF NOT FOUND THEN
        outcome := 'no_wallet';
    ELSIF tx_id IS NULL AND p_amount >= 0 THEN
        -- A credit's guard cannot fail: the wallet was opened between the
        -- UPDATE and this lookup.  Once more (the UPDATE matches this time).
        SELECT * INTO outcome, tx_id, tx_wallet, tx_amount, tx_balance_after, tx_created_at, balance
          FROM wallet._post(p_user_id, p_amount, p_key, p_fingerprint, p_reference_type, p_reference_id, p_description);
    ELSIF tx_id IS NULL THEN
        outcome := 'insufficient';
    ELSIF fp = p_fingerprint THEN
        outcome := 'replayed';
    ELSE
        outcome := 'conflict';
        tx_id := NULL; tx_amount := NULL; tx_balance_after := NULL; tx_created_at := NULL;
    END IF;
END
$$;

-- Opens the wallet of a user without asking account (callers do); returns it.
CREATE FUNCTION wallet._open(p_user_id uuid) RETURNS wallet.wallets
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w wallet.wallets;
BEGIN
    INSERT INTO wallet.wallets AS x (wallet_id, user_id) VALUES (isa.uuid_v7(), p_user_id)
    ON CONFLICT (user_id) DO NOTHING
    RETURNING * INTO w;
    IF NOT FOUND THEN
        SELECT * INTO w FROM wallet.wallets x WHERE x.user_id = p_user_id;
    END IF;
    RETURN w;
END
$$;

-- Argument checks shared by deduct and add.  _request_ok is the fast path:
-- one expression, inlined into the caller's IF; only when it is false does
-- _check_request run to raise the precise error (22004 / 22023).  The two
-- must agree (the pgTAP file exercises every refusal).
CREATE FUNCTION wallet._request_ok(user_id uuid, amount bigint, idempotency_key text,
                                   reference_type text, reference_id text, description text)
RETURNS boolean
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce(user_id IS NOT NULL AND amount BETWEEN 1 AND 1000000000000000
                    AND length(idempotency_key) BETWEEN 1 AND 255
                    AND reference_type IN ('billing', 'order', 'payment', 'subscription', 'refund', 'manual')
                    AND (reference_id IS NULL OR length(reference_id) BETWEEN 1 AND 255)
                    AND (description IS NULL OR length(description) <= 1000), false)
$$;

CREATE FUNCTION wallet._check_request(user_id uuid, amount bigint, idempotency_key text,
                                      reference_type text, reference_id text, description text)
RETURNS void
    LANGUAGE plpgsql IMMUTABLE    -- no SET search_path: called only by API functions, which pin it
AS $$
BEGIN
    PERFORM isa.not_null('user_id, amount', user_id, amount);
    IF amount <= 0 OR amount > 1000000000000000 THEN
        RAISE EXCEPTION 'amount must be from 1 to 1000000000000000 tokens, not %', amount USING ERRCODE = '22023';
    END IF;
    IF idempotency_key IS NULL THEN
        RAISE EXCEPTION 'idempotency_key must not be null' USING ERRCODE = '22004',
            HINT = 'Pass a key that is unique per intended operation, e.g. the id of what is paid for; a retry passes the same key.';
    END IF;
    IF idempotency_key = '' OR length(idempotency_key) > 255 THEN
        RAISE EXCEPTION 'idempotency_key must be 1 to 255 characters' USING ERRCODE = '22023';
    END IF;
    PERFORM isa.not_null('reference_type', reference_type);
    IF reference_type NOT IN ('billing', 'order', 'payment', 'subscription', 'refund', 'manual') THEN
        RAISE EXCEPTION 'unknown reference_type "%"', reference_type USING ERRCODE = '22023',
            HINT = 'One of billing, order, payment, subscription, refund, manual.';
    END IF;
    IF length(reference_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'reference_id must be 1 to 255 characters or null' USING ERRCODE = '22023';
    END IF;
    IF length(description) > 1000 THEN
        RAISE EXCEPTION 'description must be at most 1000 characters' USING ERRCODE = '22023';
    END IF;
END
$$;

-- ---------------------------------------------------------------- API: reads
CREATE FUNCTION wallet.check_balance(user_id uuid, amount bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id, amount', user_id, amount);
    IF amount <= 0 THEN
        RAISE EXCEPTION 'amount must be positive, not %', amount USING ERRCODE = '22023';
    END IF;
    RETURN EXISTS (SELECT 1 FROM wallet.wallets w
                    WHERE w.user_id = check_balance.user_id AND w.balance >= check_balance.amount);
END
$$;
COMMENT ON FUNCTION wallet.check_balance(uuid, bigint) IS
    'Whether the user''s wallet holds at least amount tokens now (false if the user has no wallet). 22004 NULL argument, 22023 amount <= 0.';

CREATE FUNCTION wallet.get_balance(user_id uuid) RETURNS bigint
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b bigint;
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    SELECT w.balance INTO b FROM wallet.wallets w WHERE w.user_id = get_balance.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % has no wallet', user_id USING ERRCODE = 'P0002';
    END IF;
    RETURN b;
END
$$;
COMMENT ON FUNCTION wallet.get_balance(uuid) IS
    'The balance (tokens) of the user''s wallet; P0002 if the user has no wallet.';

CREATE FUNCTION wallet.get_wallet(user_id uuid) RETURNS wallet.wallet_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r wallet.wallet_info;
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    SELECT w.wallet_id, w.user_id, w.balance, w.low_balance_threshold, w.created_at, w.updated_at
      INTO r FROM wallet.wallets w WHERE w.user_id = get_wallet.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % has no wallet', user_id USING ERRCODE = 'P0002';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.get_wallet(uuid) IS
    'The user''s wallet: id, balance, low-balance threshold, created_at, updated_at; P0002 if the user has no wallet.';

CREATE FUNCTION wallet.list_transactions(user_id uuid, "limit" integer DEFAULT 50, before timestamptz DEFAULT NULL)
RETURNS TABLE (transaction_id uuid, amount bigint, balance_after bigint, idempotency_key text,
               reference_type text, reference_id text, description text, created_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wid uuid;
BEGIN
    PERFORM isa.not_null('user_id', list_transactions.user_id);
    PERFORM isa.check_page_size('limit', list_transactions."limit");
    SELECT w.wallet_id INTO wid FROM wallet.wallets w WHERE w.user_id = list_transactions.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % has no wallet', list_transactions.user_id USING ERRCODE = 'P0002';
    END IF;
    RETURN QUERY
        SELECT t.transaction_id, t.amount, t.balance_after, t.idempotency_key,
               t.reference_type, t.reference_id, t.description, t.created_at
          FROM wallet.transactions t
         WHERE t.wallet_id = wid
           AND (list_transactions.before IS NULL OR t.created_at < list_transactions.before)
         ORDER BY t.created_at DESC, t.transaction_id DESC
         LIMIT list_transactions."limit";
END
$$;
COMMENT ON FUNCTION wallet.list_transactions(uuid, integer, timestamptz) IS
    'The user''s ledger, newest first: at most limit (1 to 1000, default 50) transactions created before before (exclusive; NULL: from the newest). P0002 if the user has no wallet.';

-- ---------------------------------------------------------------- API: writes
CREATE FUNCTION wallet.open_wallet(user_id uuid) RETURNS wallet.wallet_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w wallet.wallets;
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    SELECT * INTO w FROM wallet.wallets x WHERE x.user_id = open_wallet.user_id;
    IF NOT FOUND THEN
        IF NOT account.user_exists(user_id) THEN
            RAISE EXCEPTION 'user % not found', user_id USING ERRCODE = 'P0002',
                HINT = 'A wallet is opened for an existing, not deleted user (account.create_user).';
        END IF;
        w := wallet._open(user_id);
    END IF;
    RETURN ROW(w.wallet_id, w.user_id, w.balance, w.low_balance_threshold, w.created_at, w.updated_at)::wallet.wallet_info;
END
$$;
COMMENT ON FUNCTION wallet.open_wallet(uuid) IS
    'Opens the user''s wallet (balance 0) or returns the one it has: idempotent. P0002 if the user is unknown or deleted.';

CREATE FUNCTION wallet.deduct(user_id uuid, amount bigint, idempotency_key text,
                              reference_type text DEFAULT 'manual', reference_id text DEFAULT NULL,
                              description text DEFAULT NULL)
RETURNS wallet.transaction_result
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    IF NOT wallet._request_ok(user_id, amount, idempotency_key, reference_type, reference_id, description) THEN
        PERFORM wallet._check_request(user_id, amount, idempotency_key, reference_type, reference_id, description);
    END IF;
    r := wallet._post(user_id, -amount, idempotency_key,
                      wallet._fingerprint('deduct', amount, reference_type, reference_id, description),
                      reference_type, reference_id, description);
    CASE r.outcome
    WHEN 'applied', 'replayed' THEN
        RETURN ROW(r.tx_id, r.tx_wallet, r.tx_amount, r.tx_balance_after, r.tx_created_at)::wallet.transaction_result;
    WHEN 'insufficient' THEN
        RAISE EXCEPTION 'insufficient balance: % tokens requested, the wallet of user % holds %', amount, user_id, r.balance
            USING ERRCODE = '23514';
    WHEN 'no_wallet' THEN
        RAISE EXCEPTION 'user % has no wallet', user_id USING ERRCODE = 'P0002';
    ELSE
        RAISE EXCEPTION 'idempotency key "%" was already used for another transaction of this wallet', idempotency_key
            USING ERRCODE = '23505',
            HINT = 'A retry must repeat the amount, reference and description of the first call; a new operation needs a new key.';
    END CASE;
END
$$;
COMMENT ON FUNCTION wallet.deduct(uuid, bigint, text, text, text, text) IS
    'Deducts amount tokens from the user''s wallet and publishes wallet.tokens.deducted (and wallet.balance.low on crossing the threshold). The same idempotency key with the same arguments returns the first result and publishes nothing. 23514 insufficient balance, P0002 no wallet, 22023/22004 bad argument, 23505 key used with other arguments.';

CREATE FUNCTION wallet.add(user_id uuid, amount bigint, idempotency_key text,
                           reference_type text DEFAULT 'manual', reference_id text DEFAULT NULL,
                           description text DEFAULT NULL)
RETURNS wallet.transaction_result
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    IF NOT wallet._request_ok(user_id, amount, idempotency_key, reference_type, reference_id, description) THEN
        PERFORM wallet._check_request(user_id, amount, idempotency_key, reference_type, reference_id, description);
    END IF;
    r := wallet._post(user_id, amount, idempotency_key,
                      wallet._fingerprint('add', amount, reference_type, reference_id, description),
                      reference_type, reference_id, description);
    CASE r.outcome
    WHEN 'applied', 'replayed' THEN
        RETURN ROW(r.tx_id, r.tx_wallet, r.tx_amount, r.tx_balance_after, r.tx_created_at)::wallet.transaction_result;
    WHEN 'no_wallet' THEN
        RAISE EXCEPTION 'user % has no wallet', user_id USING ERRCODE = 'P0002',
            HINT = 'wallet.open_wallet(user_id) opens it.';
    ELSE   -- 'conflict' ('insufficient' cannot happen for a credit)
        RAISE EXCEPTION 'idempotency key "%" was already used for another transaction of this wallet', idempotency_key
            USING ERRCODE = '23505',
            HINT = 'A retry must repeat the amount, reference and description of the first call; a new operation needs a new key.';
    END CASE;
END
$$;
COMMENT ON FUNCTION wallet.add(uuid, bigint, text, text, text, text) IS
    'Adds amount tokens to the user''s wallet and publishes wallet.tokens.added. The same idempotency key with the same arguments returns the first result and publishes nothing. P0002 no wallet, 22023/22004 bad argument, 23505 key used with other arguments.';

CREATE FUNCTION wallet.set_low_balance_threshold(user_id uuid, threshold bigint) RETURNS wallet.wallet_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r wallet.wallet_info;
BEGIN
    PERFORM isa.not_null('user_id, threshold', user_id, threshold);
    IF threshold < 0 THEN
        RAISE EXCEPTION 'threshold must not be negative, not %', threshold USING ERRCODE = '22023',
            HINT = '0 turns the low-balance event off.';
    END IF;
    UPDATE wallet.wallets w SET low_balance_threshold = set_low_balance_threshold.threshold, updated_at = now()
     WHERE w.user_id = set_low_balance_threshold.user_id
    RETURNING w.wallet_id, w.user_id, w.balance, w.low_balance_threshold, w.created_at, w.updated_at INTO r;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % has no wallet', user_id USING ERRCODE = 'P0002';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.set_low_balance_threshold(uuid, bigint) IS
    'Sets the balance below which a deduction publishes wallet.balance.low (0: never) and returns the wallet. P0002 no wallet, 22023 negative, 22004 NULL.';

-- ---------------------------------------------------------------- reconciliation
CREATE FUNCTION wallet.reconcile_balances(repair boolean DEFAULT true)
RETURNS TABLE (wallet_id uuid, user_id uuid, recorded_balance bigint, ledger_balance bigint, repaired boolean)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    c record;
BEGIN
    PERFORM isa.not_null('repair', repair);
    -- One snapshot: a balance and its ledger rows are written by the same
    -- transactions, so a consistent wallet never shows up here.
    FOR c IN
        SELECT w.wallet_id, w.user_id, w.balance, coalesce(l.total, 0) AS total
          FROM wallet.wallets w
          LEFT JOIN (SELECT t.wallet_id, sum(t.amount) AS total
                       FROM wallet.transactions t GROUP BY t.wallet_id) l ON l.wallet_id = w.wallet_id
         WHERE w.balance <> coalesce(l.total, 0)
         ORDER BY w.wallet_id
    LOOP
        wallet_id := c.wallet_id;
        user_id := c.user_id;
        recorded_balance := c.balance;
        ledger_balance := c.total;
        repaired := false;
        IF repair THEN
            -- Lock the wallet, then sum its ledger again: no deduction can
            -- commit in between, and every one committed before is counted.
            SELECT w.balance INTO recorded_balance FROM wallet.wallets w WHERE w.wallet_id = c.wallet_id FOR UPDATE;
            SELECT coalesce(sum(t.amount), 0) INTO ledger_balance FROM wallet.transactions t WHERE t.wallet_id = c.wallet_id;
            CONTINUE WHEN recorded_balance = ledger_balance;   -- repaired meanwhile (another reconcile)
            IF ledger_balance >= 0 THEN
                UPDATE wallet.wallets w SET balance = ledger_balance, updated_at = now() WHERE w.wallet_id = c.wallet_id;
                repaired := true;
            ELSE
                RAISE WARNING 'wallet %: its ledger sums to % tokens, which cannot be a balance; left at %',
                    c.wallet_id, ledger_balance, recorded_balance;
            END IF;
        END IF;
        PERFORM isa.publish_event('wallet.reconciliation.mismatch', 'wallet_service',
            jsonb_build_object('wallet_id', wallet_id, 'user_id', user_id, 'recorded_balance', recorded_balance,
                               'ledger_balance', ledger_balance, 'repaired', repaired));
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet.reconcile_balances(boolean) IS
    'Compares every wallet''s balance with the sum of its ledger; returns and publishes (wallet.reconciliation.mismatch) each mismatch and, with repair (default), sets the balance to the ledger sum under the wallet''s row lock. For isa_admin; pg_cron runs it hourly (isa-wallet-reconcile).';

INSERT INTO isa.scheduled_jobs (jobname, schedule, command, description) VALUES
    ('isa-wallet-reconcile', '23 * * * *', 'SELECT count(*) FROM wallet.reconcile_balances()',
     'Hourly: compare every wallet''s balance with the sum of its ledger, repair and report mismatches (wallet.reconciliation.mismatch).');

-- ---------------------------------------------------------------- subscriptions' periods
CREATE FUNCTION wallet._subscription_period() RETURNS integer
    AS 'MODULE_PATHNAME', 'isa_wallet_subscription_period_setting' LANGUAGE C STABLE;
COMMENT ON FUNCTION wallet._subscription_period() IS
    'isa.wallet_subscription_period in seconds: how often a subscription''s credits come again.';

CREATE FUNCTION wallet.credit_subscriptions(as_of timestamptz DEFAULT now()) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s   wallet.subscriptions;
    ref text;
    r   record;
    n   integer := 0;
BEGIN
    PERFORM isa.not_null('as_of', as_of);
    FOR s IN SELECT * FROM wallet.subscriptions x
              WHERE x.canceled_at IS NULL AND x.next_credit_at <= as_of
              ORDER BY x.next_credit_at FOR UPDATE SKIP LOCKED LOOP
        WHILE s.next_credit_at <= as_of AND s.canceled_at IS NULL LOOP
            ref := s.subscription_id || ':' || (s.periods_credited + 1);
            IF s.credits > 0 THEN
                r := wallet._post(s.user_id, s.credits, 'subscription:' || ref,
                                  wallet._fingerprint('add', s.credits, 'subscription', ref, NULL),
                                  'subscription', ref, NULL);
                IF r.outcome NOT IN ('applied', 'replayed') THEN
                    -- no wallet any more (the user was deleted): nothing more to credit
                    RAISE WARNING 'wallet: subscription % of user % ends: its period % could not be credited (%)',
                        s.subscription_id, s.user_id, s.periods_credited + 1, r.outcome;
                    s.canceled_at := now();
                    s.next_credit_at := NULL;
                    EXIT;
                END IF;
                n := n + 1;
            END IF;
            s.periods_credited := s.periods_credited + 1;
            s.next_credit_at := s.next_credit_at + s.period;
        END LOOP;
        UPDATE wallet.subscriptions x
           SET periods_credited = s.periods_credited, next_credit_at = s.next_credit_at, canceled_at = s.canceled_at
         WHERE x.subscription_id = s.subscription_id;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.credit_subscriptions(timestamptz) IS
    'Adds the credits of every period of a live subscription that began by as_of (default now), once per period (key subscription:<id>:<n>, publishing wallet.tokens.added); the number of credits added. For isa_admin; pg_cron runs it hourly (isa-wallet-subscriptions).';

INSERT INTO isa.scheduled_jobs (jobname, schedule, command, description) VALUES
    ('isa-wallet-subscriptions', '41 * * * *', 'SELECT wallet.credit_subscriptions()',
     'Hourly: add the credits of each subscription period that began (wallet.subscriptions), until the subscription is canceled.');

-- ---------------------------------------------------------------- handlers
-- Handlers raise only on transient failure: bad data is logged (WARNING) and
-- the event is consumed.  A text is a uuid for them when it has the canonical
-- 8-4-4-4-12 form (checked before casting, so a bad id cannot raise).

-- account_service.user.created: open the user's wallet.
CREATE FUNCTION wallet.on_user_created(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid text := e.data ->> 'user_id';
BEGIN
    IF uid IS NULL OR uid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
        RAISE WARNING 'wallet: user.created % ignored: data.user_id is not a uuid', e.id;
        RETURN;
    END IF;
    IF NOT account.user_exists(uid::uuid) THEN
        RAISE WARNING 'wallet: user.created % ignored: user % does not exist (deleted since?)', e.id, uid;
        RETURN;
    END IF;
    PERFORM wallet._open(uid::uuid);
END
$$;

-- The wallet of a user named by an event, opened if the user exists and has
-- none yet (its user.created may not be handled yet); NULL if the user is
-- unknown or deleted.
CREATE FUNCTION wallet._wallet_for_event(p_user_id uuid) RETURNS wallet.wallets
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w wallet.wallets;
BEGIN
    SELECT * INTO w FROM wallet.wallets x WHERE x.user_id = p_user_id;
    IF FOUND THEN
        RETURN w;
    END IF;
    IF account.user_exists(p_user_id) THEN
        RETURN wallet._open(p_user_id);
    END IF;
    RETURN NULL;
END
$$;

-- billing_service.billing.calculated: deduct data.tokens, all or nothing;
-- refused → wallet.tokens.insufficient.  On the usage→billing→wallet chain.
CREATE FUNCTION wallet.on_billing_calculated(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid     text := e.data ->> 'user_id';
    bid     text := e.data ->> 'billing_id';
    tok     text := e.data ->> 'tokens';
    amount  bigint;
    descr   text;
    r       record;
    w       wallet.wallets;
    event_id uuid;
BEGIN
    IF uid IS NULL OR uid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
       OR bid IS NULL OR bid = '' OR length(bid) > 200
       OR jsonb_typeof(e.data -> 'tokens') IS DISTINCT FROM 'number' OR tok !~ '^[0-9]{1,15}$' THEN
        RAISE WARNING 'wallet: billing.calculated % ignored: needs data.user_id (uuid), data.billing_id and data.tokens (integer 0 to 999999999999999), got %',
            e.id, e.data;
        RETURN;
    END IF;
    amount := tok::bigint;
    IF amount = 0 THEN
        RETURN;
    END IF;
    descr := left(e.data ->> 'usage_kind', 100) || ' usage';
    r := wallet._post(uid::uuid, -amount, 'billing:' || bid,
                      wallet._fingerprint('deduct', amount, 'billing', bid, descr), 'billing', bid, descr);
    IF r.outcome IN ('applied', 'replayed') THEN
        RETURN;
    ELSIF r.outcome = 'insufficient' THEN
        event_id := isa.publish_event('wallet.tokens.insufficient', 'wallet_service',
            jsonb_build_object('wallet_id', r.tx_wallet, 'user_id', uid, 'requested', amount, 'balance', r.balance,
                               'reference_type', 'billing', 'reference_id', bid));
    ELSIF r.outcome = 'no_wallet' THEN
        w := wallet._wallet_for_event(uid::uuid);
        IF w.wallet_id IS NULL THEN
            RAISE WARNING 'wallet: billing.calculated % ignored: user % is unknown or deleted', e.id, uid;
            RETURN;
        END IF;
        -- A wallet opened just now holds 0 tokens.
        event_id := isa.publish_event('wallet.tokens.insufficient', 'wallet_service',
            jsonb_build_object('wallet_id', w.wallet_id, 'user_id', uid, 'requested', amount, 'balance', w.balance,
                               'reference_type', 'billing', 'reference_id', bid));
    ELSE
        RAISE WARNING 'wallet: billing.calculated % ignored: billing % was already deducted with other arguments', e.id, bid;
    END IF;
END
$$;

-- Credits for payment.completed and subscription.created.
CREATE FUNCTION wallet._credit_from_event(e isa.event, p_amount_field text, p_id_field text, p_reference_type text)
RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid    text := e.data ->> 'user_id';
    ref    text := e.data ->> p_id_field;
    tok    text := e.data ->> p_amount_field;
    amount bigint;
    key    text;
    r      record;
    w      wallet.wallets;
BEGIN
    IF uid IS NULL OR uid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
       OR ref IS NULL OR ref = '' OR length(ref) > 200
       OR jsonb_typeof(e.data -> p_amount_field) IS DISTINCT FROM 'number' OR tok !~ '^[0-9]{1,15}$' THEN
        RAISE WARNING 'wallet: %.% % ignored: needs data.user_id (uuid), data.% and data.% (integer 0 to 999999999999999), got %',
            e.source, e.event_type, e.id, p_id_field, p_amount_field, e.data;
        RETURN false;
    END IF;
    amount := tok::bigint;
    IF amount = 0 THEN
        RETURN false;
    END IF;
    key := p_reference_type || ':' || ref;
    r := wallet._post(uid::uuid, amount, key, wallet._fingerprint('add', amount, p_reference_type, ref, NULL),
                      p_reference_type, ref, NULL);
    IF r.outcome = 'no_wallet' THEN
        w := wallet._wallet_for_event(uid::uuid);
        IF w.wallet_id IS NULL THEN
            RAISE WARNING 'wallet: %.% % ignored: user % is unknown or deleted; % tokens not credited',
                e.source, e.event_type, e.id, uid, amount;
            RETURN false;
        END IF;
        r := wallet._post(uid::uuid, amount, key, wallet._fingerprint('add', amount, p_reference_type, ref, NULL),
                          p_reference_type, ref, NULL);
    END IF;
    IF r.outcome = 'conflict' THEN
        RAISE WARNING 'wallet: %.% % ignored: % % was already credited with other arguments',
            e.source, e.event_type, e.id, p_reference_type, ref;
    END IF;
    RETURN r.outcome IN ('applied', 'replayed');
END
$$;

-- payment_service.payment.completed: add the tokens bought (data.tokens > 0).
CREATE FUNCTION wallet.on_payment_completed(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM wallet._credit_from_event(e, 'tokens', 'payment_id', 'payment');
END
$$;

-- payment_service.subscription.created: add the plan's credits (data.credits
-- > 0), the first period's, and credit them again every period from now on.
CREATE FUNCTION wallet.on_subscription_created(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- credited (now or by an earlier delivery): the periods begin
    IF wallet._credit_from_event(e, 'credits', 'subscription_id', 'subscription')
       AND isa.is_uuid(e.data ->> 'subscription_id') THEN
        INSERT INTO wallet.subscriptions (subscription_id, user_id, credits, period, periods_credited, next_credit_at)
        VALUES ((e.data ->> 'subscription_id')::uuid, (e.data ->> 'user_id')::uuid, (e.data ->> 'credits')::bigint,
                make_interval(secs => wallet._subscription_period()), 1,
                now() + make_interval(secs => wallet._subscription_period()))
        ON CONFLICT (subscription_id) DO NOTHING;   -- canceled first (out of order), or handled already
    END IF;
END
$$;

-- payment_service.subscription.canceled: its credits stop; the periods
-- already credited stay.  A cancellation handled before its creation leaves
-- a canceled row, so the creation arriving later starts no period.
CREATE FUNCTION wallet.on_subscription_canceled(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sid text := e.data ->> 'subscription_id';
    uid text := e.data ->> 'user_id';
BEGIN
    IF sid IS NULL OR uid IS NULL OR NOT isa.is_uuid(sid) OR NOT isa.is_uuid(uid) THEN
        RAISE WARNING 'wallet: subscription.canceled % ignored: needs data.subscription_id and data.user_id (uuid), got %',
            e.id, e.data;
        RETURN;
    END IF;
    INSERT INTO wallet.subscriptions AS x (subscription_id, user_id, credits, period, periods_credited, next_credit_at,
                                           canceled_at)
    VALUES (sid::uuid, uid::uuid, 0, make_interval(secs => wallet._subscription_period()), 0, NULL, now())
    ON CONFLICT (subscription_id) DO UPDATE SET canceled_at = now(), next_credit_at = NULL
        WHERE x.canceled_at IS NULL;
END
$$;
COMMENT ON FUNCTION wallet.on_subscription_created(isa.event) IS
    'Handler of payment_service.subscription.created: adds the first period''s credits and starts the periods wallet.credit_subscriptions credits.';
COMMENT ON FUNCTION wallet.on_subscription_canceled(isa.event) IS
    'Handler of payment_service.subscription.canceled: the subscription''s periodic credits stop.';

-- payment_service.payment.refunded: take back data.tokens, at most the
-- balance.  The ledger row records what was taken (possibly 0); a shortfall is
-- written off and reported as wallet.tokens.insufficient (reference refund).
CREATE FUNCTION wallet.on_payment_refunded(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid     text := e.data ->> 'user_id';
    pid     text := e.data ->> 'payment_id';
    tok     text := e.data ->> 'tokens';
    charge  text := coalesce(e.data ->> 'stripe_charge_id', '');
    refunded text := coalesce(e.data ->> 'amount_refunded', '');
    amount  bigint;
    taken   bigint;
    descr   text;
    r       record;
    w       wallet.wallets;
    event_id uuid;
BEGIN
    IF uid IS NULL OR uid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
       OR pid IS NULL OR pid = '' OR length(pid) > 100 OR length(charge) > 100 OR length(refunded) > 30
       OR jsonb_typeof(e.data -> 'tokens') IS DISTINCT FROM 'number' OR tok !~ '^[0-9]{1,15}$' THEN
        RAISE WARNING 'wallet: payment.refunded % ignored: needs data.user_id (uuid), data.payment_id and data.tokens (integer 0 to 999999999999999), got %',
            e.id, e.data;
        RETURN;
    END IF;
    amount := tok::bigint;
    IF amount = 0 THEN
        RETURN;
    END IF;
    w := wallet._wallet_for_event(uid::uuid);
    IF w.wallet_id IS NULL THEN
        RAISE WARNING 'wallet: payment.refunded % ignored: user % is unknown or deleted', e.id, uid;
        RETURN;
    END IF;
    -- Lock the wallet: the amount taken depends on the balance.
    SELECT least(x.balance, amount) INTO taken FROM wallet.wallets x WHERE x.wallet_id = w.wallet_id FOR UPDATE;
    descr := CASE WHEN taken = amount THEN format('refund of payment %s: %s tokens taken back', pid, amount)
                  ELSE format('refund of payment %s: %s of %s tokens taken back, %s written off (balance too low)',
                              pid, taken, amount, amount - taken) END;
    r := wallet._post(uid::uuid, -taken, 'refund:' || pid || ':' || charge || ':' || refunded,
                      wallet._fingerprint('refund', amount, 'refund', pid, NULL), 'refund', pid, descr);
    IF r.outcome = 'applied' AND taken < amount THEN
        event_id := isa.publish_event('wallet.tokens.insufficient', 'wallet_service',
            jsonb_build_object('wallet_id', w.wallet_id, 'user_id', uid, 'requested', amount,
                               'balance', r.tx_balance_after + taken, 'reference_type', 'refund', 'reference_id', pid));
    ELSIF r.outcome = 'conflict' THEN
        RAISE WARNING 'wallet: payment.refunded % ignored: refund % was already taken back with other arguments', e.id, pid;
    END IF;
END
$$;

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA wallet FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    wallet.check_balance(uuid, bigint),
    wallet.get_balance(uuid),
    wallet.get_wallet(uuid),
    wallet.list_transactions(uuid, integer, timestamptz),
    wallet.open_wallet(uuid),
    wallet.deduct(uuid, bigint, text, text, text, text),
    wallet.set_low_balance_threshold(uuid, bigint)
TO isa_app_wallet;
-- Adding tokens is administration (users buy them with orders; payments
-- credit them through the handlers): isa_app_admin.
GRANT EXECUTE ON FUNCTION wallet.add(uuid, bigint, text, text, text, text) TO isa_app_admin;
-- What wallet's own code calls of other services, as isa_svc_wallet.
GRANT EXECUTE ON FUNCTION account.user_exists(uuid) TO isa_svc_wallet;
GRANT EXECUTE ON FUNCTION wallet.reconcile_balances(boolean), wallet.credit_subscriptions(timestamptz) TO isa_admin;
GRANT SELECT ON wallet.wallets, wallet.transactions, wallet.subscriptions TO isa_admin;

-- ---------------------------------------------------------------- subscriptions
SELECT isa.subscribe_to_events('wallet', 'account_service.user.created', 'wallet.on_user_created(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('wallet', 'billing_service.billing.calculated', 'wallet.on_billing_calculated(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('wallet', 'payment_service.payment.completed', 'wallet.on_payment_completed(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('wallet', 'payment_service.subscription.created', 'wallet.on_subscription_created(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('wallet', 'payment_service.subscription.canceled', 'wallet.on_subscription_canceled(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('wallet', 'payment_service.payment.refunded', 'wallet.on_payment_refunded(isa.event)'::regprocedure);

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- A user reads their own wallet (self_param); anyone else needs wallet:read on
-- the user.  Tokens are added and deducted only with wallet:write, never by
-- the owner alone: users buy tokens with orders.  reconcile_balances is for
-- isa_admin (pg_cron), not isa_app, so it has no route.
SELECT isa.http_route('GET', '/v1/wallets/{user_id}', 'wallet.get_wallet(uuid)', 'user',
    'A user''s wallet: balance, low-balance threshold.',
    permission => 'wallet:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('PUT', '/v1/wallets/{user_id}', 'wallet.open_wallet(uuid)', 'user',
    'Opens the user''s wallet (balance 0) or returns the one it has.',
    permission => 'wallet:write', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/wallets/{user_id}/balance', 'wallet.get_balance(uuid)', 'user',
    'The balance (tokens) of a user''s wallet.',
    permission => 'wallet:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/wallets/{user_id}/check', 'wallet.check_balance(uuid, bigint)', 'user',
    'Whether the wallet holds at least amount tokens now.',
    permission => 'wallet:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/wallets/{user_id}/transactions', 'wallet.list_transactions(uuid, integer, timestamptz)', 'user',
    'A user''s ledger, newest first, a page at a time (limit 1 to 1000, default 50; before: the created_at to continue from).',
    permission => 'wallet:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('PUT', '/v1/wallets/{user_id}/low-balance-threshold',
    'wallet.set_low_balance_threshold(uuid, bigint)', 'user',
    'Sets the balance below which a deduction publishes wallet.balance.low (0: never).',
    permission => 'wallet:write', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('POST', '/v1/wallets/{user_id}/add', 'wallet.add(uuid, bigint, text, text, text, text)', 'user',
    'Adds tokens to a user''s wallet (idempotency_key: a retry returns the first transaction).',
    permission => 'wallet:write', resource_param => 'user_id', status => 201);
SELECT isa.http_route('POST', '/v1/wallets/{user_id}/deduct', 'wallet.deduct(uuid, bigint, text, text, text, text)', 'user',
    'Deducts tokens from a user''s wallet (idempotency_key: a retry returns the first transaction).',
    permission => 'wallet:write', resource_param => 'user_id', status => 201);
