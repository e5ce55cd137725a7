-- payment.sql — the payment service (issue 4; being written).
SELECT 1 WHERE false;
