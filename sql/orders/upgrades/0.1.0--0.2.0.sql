-- 0.1.0 → 0.2.0, orders: a card order records what Stripe refunded of its
-- payment (payment.refunded), and one refunded in full is refunded.
-- orders._info is an SQL-standard function over the table's row type: it
-- goes first, and the replay makes it again with the new columns.
DROP FUNCTION orders._info(orders.orders);
ALTER TABLE orders.orders
    ADD COLUMN amount_refunded bigint NOT NULL DEFAULT 0,
    ADD COLUMN refunded_at timestamptz,
    DROP CONSTRAINT orders_status_check,
    ADD CONSTRAINT orders_status_check CHECK (status IN ('pending', 'fulfilled', 'canceled', 'refunded')),
    DROP CONSTRAINT orders_check1,
    ADD CONSTRAINT orders_check1 CHECK ((status IN ('fulfilled', 'refunded')) = (fulfilled_at IS NOT NULL)),
    ADD CONSTRAINT orders_refund_check CHECK (amount_refunded BETWEEN 0 AND amount
                                              AND (status = 'refunded') = (refunded_at IS NOT NULL)
                                              AND (status <> 'refunded' OR amount_refunded = amount));
ALTER TYPE orders.order_info
    ADD ATTRIBUTE amount_refunded bigint,
    ADD ATTRIBUTE refunded_at timestamptz;
