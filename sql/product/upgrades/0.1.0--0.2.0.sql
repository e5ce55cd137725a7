-- 0.1.0 → 0.2.0, product: timestamps are formatted by the core's
-- isa.iso_time (one helper for every service, sql/core/core.sql).
DROP FUNCTION product._iso(timestamptz);
