\set wallet random(1, 1000)
SELECT bench.deduct_with_event(:wallet, 1);
