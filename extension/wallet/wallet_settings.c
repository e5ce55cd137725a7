/*
 * wallet_settings.c — the wallet service's settings (docs/services/wallet.md,
 * docs/configuration.md), registered by _PG_init through
 * isa_wallet_define_gucs(): how often a subscription's credits come again.
 * The service reads it in SQL (sql/wallet/wallet.sql) through the reader
 * below, in seconds (current_setting would format it with a unit).
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "isa.h"

static int	isa_wallet_subscription_period = 30 * 24 * 3600;	/* seconds */

void
isa_wallet_define_gucs(void)
{
	DefineCustomIntVariable("isa.wallet_subscription_period",
							"How often a subscription's credits are added again.",
							"Taken by a subscription when wallet learns of it (payment.subscription.created); "
							"wallet.credit_subscriptions() (pg_cron, hourly) adds what is due.",
							&isa_wallet_subscription_period, 30 * 24 * 3600, 3600, 366 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
}

PG_FUNCTION_INFO_V1(isa_wallet_subscription_period_setting);

/* wallet._subscription_period() RETURNS integer: the setting in seconds */
Datum
isa_wallet_subscription_period_setting(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(isa_wallet_subscription_period);
}
