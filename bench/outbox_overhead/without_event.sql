\set wallet random(1, 1000)
SELECT bench.deduct(:wallet, 1);
