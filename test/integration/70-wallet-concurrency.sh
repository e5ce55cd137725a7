# The wallet under contention: 50 pgbench clients make 20k deductions of
# random amounts on 100 wallets through wallet.deduct (some are refused for
# lack of tokens, as expected).  No balance goes negative, nothing is lost or
# counted twice (balances = initial total - the ledger's deductions, every
# ledger row = the previous balance + its amount), reconcile_balances() finds
# nothing during the load and after it, and finds and repairs exactly one
# injected mismatch, during the load and after it.  20 clients
# retrying one idempotency key at once apply it once and all get the first
# result, both when the balance still covers a second deduction and when it
# does not.  The users and wallets are this run's own (wallets and their
# ledger are never deleted); the helper schema is dropped at the end.
source "$(dirname "$0")/lib.sh"
S=it_wallet70
TAG="it70-$$-$(date +%s)"
WALLETS=100
CLIENTS=50
PER_CLIENT=400            # 50 x 400 = 20,000 deductions
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

sql "SET client_min_messages = warning;
     DROP SCHEMA IF EXISTS $S CASCADE;
     CREATE SCHEMA $S;
     CREATE TABLE $S.users (n int PRIMARY KEY, user_id uuid NOT NULL, initial bigint NOT NULL);
     CREATE TABLE $S.refused (n int, amount bigint);
     CREATE TABLE $S.same_key (label text, transaction_id uuid, balance_after bigint);
     -- 23514 (insufficient balance) is an expected answer under contention: count it, do not fail the client
     CREATE FUNCTION $S.deduct(wallet int, amount bigint) RETURNS void LANGUAGE plpgsql AS \$\$
     BEGIN
       PERFORM wallet.deduct((SELECT u.user_id FROM $S.users u WHERE u.n = wallet), amount,
                             '$TAG-' || gen_random_uuid(), 'manual', NULL, '$TAG');
     EXCEPTION WHEN check_violation THEN
       INSERT INTO $S.refused VALUES (wallet, amount);
     END \$\$;
     -- one call of a same-key retry storm: the first holds the wallet's lock a while so the others pile up behind it
     CREATE FUNCTION $S.same_key(label text, wallet int, amount bigint, op text) RETURNS void LANGUAGE plpgsql AS \$\$
     DECLARE r wallet.transaction_result;
     BEGIN
       IF op = 'add' THEN
         r := wallet.add((SELECT u.user_id FROM $S.users u WHERE u.n = wallet), amount, '$TAG-' || label);
       ELSE
         r := wallet.deduct((SELECT u.user_id FROM $S.users u WHERE u.n = wallet), amount, '$TAG-' || label);
       END IF;
       INSERT INTO $S.same_key VALUES (label, r.transaction_id, r.balance_after);
       PERFORM pg_sleep(0.2);
     END \$\$;
     INSERT INTO $S.users
     SELECT g, (account.create_user('$TAG-' || g || '@example.test', 'Wallet load ' || g)).user_id,
            CASE g WHEN 17 THEN 1000000 ELSE 5000 + 10 * g END   -- 17 gets the live mismatch: it must not run dry
       FROM generate_series(1, $WALLETS) g;
     SELECT count(wallet.open_wallet(user_id)) FROM $S.users;
     SELECT count(wallet.add(user_id, initial, '$TAG-seed')) FROM $S.users;" >/dev/null

initial=$(sql "SELECT sum(initial) FROM $S.users")
is "$(sql "SELECT sum(w.balance) FROM wallet.wallets w JOIN $S.users u USING (user_id)")" "$initial" \
   "$WALLETS wallets hold their known initial balances ($initial tokens)"

# --- 50 clients, 20k random deductions (1 to 100 tokens) on 100 wallets
cat > "$dir/deduct.sql" <<EOF
\set w random(1, $WALLETS)
\set a random(1, 100)
SELECT $S.deduct(:w, :a);
EOF
pgbench -n -c $CLIENTS -j 2 -t $PER_CLIENT -f "$dir/deduct.sql" > "$dir/pgbench.out" 2>&1 &
load=$!
# while the load runs: reconcile without repair sees one snapshot, where a
# balance and its ledger always agree, so it must report nothing ...
sleep 0.3
during=$(for _ in 1 2 3; do sql "SELECT count(*) FROM wallet.reconcile_balances(false)"; sleep 0.2; done | paste -sd+ | bc)
# ... and a mismatch injected under the load (on wallet 17, which holds far
# more than the load can take, so the 7 phantom tokens are never needed) is
# repaired under the wallet's row lock while deductions on it go on
live=$(sql "SELECT w.wallet_id FROM wallet.wallets w JOIN $S.users u USING (user_id) WHERE u.n = 17")
sql "UPDATE wallet.wallets SET balance = balance + 7 WHERE wallet_id = '$live'" >/dev/null
repaired_live=$(sql "SELECT string_agg(format('%s %s %s', wallet_id, recorded_balance - ledger_balance, repaired), ', ')
                       FROM wallet.reconcile_balances()")
running=$(kill -0 $load 2>/dev/null && echo yes || echo no)
wait $load
rc=$?
out=$(cat "$dir/pgbench.out")
like "$(printf '%s\n' "$out" | grep 'actually processed')" "processed: 20000/20000" \
     "pgbench ran $CLIENTS clients x $PER_CLIENT deductions, every one answered"
is "$rc" 0 "pgbench exited 0 (no client aborted on an error)"
tps=$(printf '%s\n' "$out" | sed -n 's/^tps = \([0-9]*\).*/\1/p')
echo "# $tps deductions/s under contention"
is "$running" yes "the load was still running after the reconciliations below"
is "$during" 0 "reconcile_balances(false) during the load reports no mismatch (3 runs)"
is "$repaired_live" "$live 7 t" "a mismatch (+7) injected during the load is found and repaired while deductions go on"

applied=$(sql "SELECT count(*) FROM wallet.transactions t JOIN wallet.wallets w USING (wallet_id) JOIN $S.users u USING (user_id)
                WHERE t.description = '$TAG'")
refused=$(sql "SELECT count(*) FROM $S.refused")
echo "# $applied applied, $refused refused for lack of tokens"
is "$((applied + refused))" 20000 "every deduction was either applied (one ledger row) or refused with 23514"
ok "some were refused, so the test reached empty wallets" test "$refused" -gt 0
is "$(sql "SELECT count(*) FROM wallet.wallets w JOIN $S.users u USING (user_id) WHERE w.balance < 0")" 0 \
   "no balance is negative"
is "$(sql "SELECT sum(w.balance) FROM wallet.wallets w JOIN $S.users u USING (user_id)")" \
   "$(sql "SELECT $initial + sum(t.amount) FROM wallet.transactions t JOIN wallet.wallets w USING (wallet_id)
            JOIN $S.users u USING (user_id) WHERE t.description = '$TAG'")" \
   "the balances are the initial total minus the deductions in the ledger"
is "$(sql "SELECT count(*) FROM wallet.wallets w JOIN $S.users u USING (user_id)
            WHERE w.balance <> (SELECT sum(t.amount) FROM wallet.transactions t WHERE t.wallet_id = w.wallet_id)")" 0 \
   "every wallet's balance is the sum of its ledger"
# breaks in the chain "balance_after = previous balance_after + amount", per wallet
sql "CREATE VIEW $S.breaks AS
     SELECT x.n, x.balance_after - (x.before + x.amount) AS jump, x.created_at FROM (
       SELECT u.n, t.balance_after, t.amount, t.created_at,
              lag(t.balance_after) OVER (PARTITION BY t.wallet_id ORDER BY t.created_at, t.transaction_id) AS before
         FROM wallet.transactions t JOIN wallet.wallets w USING (wallet_id) JOIN $S.users u USING (user_id)) x
      WHERE x.before IS NOT NULL AND x.before + x.amount <> x.balance_after" >/dev/null
is "$(sql "SELECT count(*) FROM $S.breaks WHERE n <> 17")" 0 \
   "each wallet's ledger is one chain: every row's balance_after = the previous row's + its amount (no lost update)"
jumps=$(sql "SELECT coalesce(string_agg(jump::text, ' ' ORDER BY created_at), '') FROM $S.breaks WHERE n = 17")
echo "# chain jumps on the wallet of the live mismatch: '${jumps}'"
like "$jumps" '^(|7 -7)$' \
   "on the wallet of the live mismatch the chain breaks only by the +7 and its repair (-7), if a deduction fell in between"
is "$(sql "SELECT count(*) FROM wallet.reconcile_balances()")" 0 "reconcile_balances() finds no mismatch"

# --- an injected mismatch (as superuser) is found and repaired
victim=$(sql "SELECT w.wallet_id FROM wallet.wallets w JOIN $S.users u USING (user_id) WHERE u.n = 42")
before=$(sql "SELECT balance FROM wallet.wallets WHERE wallet_id = '$victim'")
sql "UPDATE wallet.wallets SET balance = balance + 7 WHERE wallet_id = '$victim'" >/dev/null
is "$(sql "SELECT string_agg(format('%s %s %s %s', wallet_id, recorded_balance, ledger_balance, repaired), ', ')
             FROM wallet.reconcile_balances()")" \
   "$victim $((before + 7)) $before t" "reconcile_balances() finds exactly the injected mismatch (+7) and repairs it"
is "$(sql "SELECT balance FROM wallet.wallets WHERE wallet_id = '$victim'")" "$before" "the balance is the ledger sum again"
is "$(sql "SELECT count(*) FROM wallet.outbox WHERE event_type = 'wallet.reconciliation.mismatch'
            AND data ->> 'wallet_id' = '$victim' AND (data ->> 'repaired')::boolean")" 1 \
   "wallet.reconciliation.mismatch was published for it"
is "$(sql "SELECT count(*) FROM wallet.reconcile_balances()")" 0 "a second run finds nothing"

# --- 20 clients retry one idempotency key at once
storm() { # label wallet amount op
  printf 'SELECT %s.same_key(%s, %s, %s, %s);\n' "$S" "'$1'" "$2" "$3" "'$4'" > "$dir/same.sql"
  pgbench -n -c 20 -j 2 -t 1 -f "$dir/same.sql" 2>&1 | grep 'actually processed'
}
sql "SELECT wallet.add(user_id, 1000, '$TAG-topup') FROM $S.users WHERE n = 7" >/dev/null
b7=$(sql "SELECT balance FROM wallet.wallets w JOIN $S.users u USING (user_id) WHERE u.n = 7")
like "$(storm rich 7 5 deduct)" "processed: 20/20" "20 concurrent deducts with one key all succeed"
is "$(sql "SELECT count(*) || ' ' || count(DISTINCT transaction_id) || ' ' || min(balance_after) FROM $S.same_key WHERE label = 'rich'")" \
   "20 1 $((b7 - 5))" "they all return the first result (one transaction_id, one balance_after)"
is "$(sql "SELECT count(*) FROM wallet.transactions WHERE idempotency_key = '$TAG-rich'")" 1 "the key has one ledger row"
is "$(sql "SELECT balance FROM wallet.wallets w JOIN $S.users u USING (user_id) WHERE u.n = 7")" "$((b7 - 5))" \
   "the wallet was charged once"
is "$(sql "SELECT count(*) FROM wallet.outbox WHERE event_type = 'wallet.tokens.deducted'
            AND data ->> 'transaction_id' = (SELECT min(transaction_id::text) FROM $S.same_key WHERE label = 'rich')")" 1 \
   "and one wallet.tokens.deducted was published"

# a wallet that covers the deduction once but not twice: the waiting retries fail the guard, then find the key
w8=$(sql "SELECT w.wallet_id FROM wallet.wallets w JOIN $S.users u USING (user_id) WHERE u.n = 8")
b8=$(sql "SELECT balance FROM wallet.wallets WHERE wallet_id = '$w8'")
if [ "$b8" -gt 8 ]; then sql "SELECT wallet.deduct(user_id, $((b8 - 8)), '$TAG-trim') FROM $S.users WHERE n = 8" >/dev/null
elif [ "$b8" -lt 8 ]; then sql "SELECT wallet.add(user_id, $((8 - b8)), '$TAG-fill') FROM $S.users WHERE n = 8" >/dev/null; fi
like "$(storm tight 8 5 deduct)" "processed: 20/20" "20 concurrent deducts of 5 with one key on a balance of 8 all succeed"
is "$(sql "SELECT count(*) || ' ' || count(DISTINCT transaction_id) || ' ' || min(balance_after) FROM $S.same_key WHERE label = 'tight'")" \
   "20 1 3" "they all return the first result (balance_after 3), none is refused as insufficient"
is "$(sql "SELECT balance FROM wallet.wallets WHERE wallet_id = '$w8'")" 3 "the wallet was charged once"

b9=$(sql "SELECT balance FROM wallet.wallets w JOIN $S.users u USING (user_id) WHERE u.n = 9")
like "$(storm credit 9 1000 add)" "processed: 20/20" "20 concurrent adds with one key all succeed"
is "$(sql "SELECT count(*) || ' ' || count(DISTINCT transaction_id) FROM $S.same_key WHERE label = 'credit'")" "20 1" \
   "they all return the first result"
is "$(sql "SELECT balance FROM wallet.wallets w JOIN $S.users u USING (user_id) WHERE u.n = 9")" "$((b9 + 1000))" \
   "the wallet was credited once"
is "$(sql "SELECT count(*) FROM wallet.reconcile_balances()")" 0 "reconcile_balances() still finds nothing"

sql "SET client_min_messages = warning; DROP SCHEMA $S CASCADE" >/dev/null
done_testing
