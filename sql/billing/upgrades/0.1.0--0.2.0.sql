-- 0.1.0 → 0.2.0, billing: a record the wallet refused is unpaid until a
-- credit settles it (wallet.tokens.insufficient, wallet.tokens.added).
ALTER TABLE billing.billing_records
    ADD COLUMN unpaid_at timestamptz,
    ADD COLUMN settled_at timestamptz;
CREATE INDEX billing_records_unpaid ON billing.billing_records (user_id, occurred_at)
    WHERE unpaid_at IS NOT NULL AND settled_at IS NULL;
