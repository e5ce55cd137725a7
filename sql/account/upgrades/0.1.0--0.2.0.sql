-- 0.1.0 → 0.2.0, account: timestamps are formatted by the core's
-- isa.iso_time (one helper for every service, sql/core/core.sql).
DROP FUNCTION account._iso(timestamptz);
