-- wakeup.sql — commit-time wake-up state as seen from SQL.  This cluster
-- preloads isa (shared_preload_libraries), so the shared state exists; no
-- bridge worker is running here.  That a commit signals the bridge exactly
-- once cannot be seen from inside a transaction that rolls back: the
-- integration tests (test/integration/10-wakeup.sh) cover it.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(7);

SELECT is((SELECT preloaded FROM isa.wakeup_state()), true,
          'isa is preloaded in this cluster: wakeup_state reports its shared state');
SELECT is((SELECT bridge_pid FROM isa.wakeup_state()),
          (SELECT pid FROM pg_stat_activity WHERE backend_type = 'isa bridge'),
          'bridge_pid is the pid of the running isa bridge worker');
SELECT isnt((SELECT outbox_pending FROM isa.wakeup_state()), NULL,
            'with shared state, outbox_pending is known (true or false)');
SELECT isnt((SELECT subscriptions_changed FROM isa.wakeup_state()), NULL,
            'with shared state, subscriptions_changed is known (true or false)');
SELECT cmp_ok((SELECT wakeups_signalled FROM isa.wakeup_state()), '>=', 0::bigint,
              'with shared state, wakeups_signalled is a count');

-- Publishing does not signal anything before commit.
CREATE TEMP TABLE before_publish ON COMMIT DROP AS SELECT wakeups_signalled FROM isa.wakeup_state();
SELECT isa.register_event_type('wallet.tokens.deducted', 'wallet_service', '1.0.0', 'Tokens left a wallet.');
SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{}') IS NOT NULL AS published;
SELECT is((SELECT wakeups_signalled FROM isa.wakeup_state()), (SELECT wakeups_signalled FROM before_publish),
          'an uncommitted publish has not signalled the bridge');

SELECT is(ARRAY(SELECT a.rolname::text FROM pg_proc p, aclexplode(p.proacl) x JOIN pg_roles a ON a.oid = x.grantee
                 WHERE p.oid = 'isa.wakeup_state()'::regprocedure AND x.privilege_type = 'EXECUTE'
                   AND a.rolname LIKE 'isa\_%'
                 ORDER BY 1),
          ARRAY['isa_admin', 'isa_bridge'],
          'isa.wakeup_state is executable by isa_bridge and isa_admin only among the isa roles');

SELECT * FROM finish();
ROLLBACK;
