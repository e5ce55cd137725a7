/*
 * payment_settings.c — the payment service's settings: the Stripe webhook's
 * signing secret and timestamp tolerance (docs/configuration.md), registered
 * by _PG_init through isa_payment_define_gucs().  The signature itself is
 * checked in SQL (payment.handle_stripe_webhook, sql/payment/payment.sql)
 * with the core's primitives.  The secret is read through
 * payment._webhook_secret() (below): the service's role is no superuser.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "isa.h"

static char *isa_stripe_webhook_secret = NULL;
static int	isa_stripe_webhook_tolerance = 300;	/* seconds */

void
isa_payment_define_gucs(void)
{
	/*
	 * GUC_SUPERUSER_ONLY hides the value from SHOW and pg_settings for other
	 * roles; GUC_NO_SHOW_ALL keeps it out of SHOW ALL.  The payment
	 * service's role reads it through payment._webhook_secret().
	 */
	DefineCustomStringVariable("isa.stripe_webhook_secret",
							   "Stripe webhook endpoint signing secret (whsec_...).",
							   "Superuser-only; never shown to other roles nor logged by isa.",
							   &isa_stripe_webhook_secret, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("isa.stripe_webhook_tolerance",
							"How far a Stripe-Signature timestamp may be from now, in the past or the future.",
							NULL,
							&isa_stripe_webhook_tolerance, 300, 1, 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
}

PG_FUNCTION_INFO_V1(isa_payment_webhook_secret);

/*
 * payment._webhook_secret() RETURNS text: isa.stripe_webhook_secret ('' when
 * unset).  The one reader of the secret besides superusers: EXECUTE on it
 * is its owner's, the payment service's role (isa_svc_payment), which
 * current_setting() would refuse (GUC_SUPERUSER_ONLY) and which should not
 * hold pg_read_all_settings (every secret of every service).
 */
Datum
isa_payment_webhook_secret(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(isa_stripe_webhook_secret ? isa_stripe_webhook_secret : ""));
}
