/*
 * payment_settings.c — the payment service's settings: the Stripe webhook's
 * signing secret and timestamp tolerance (docs/configuration.md), registered
 * by _PG_init through isa_payment_define_gucs().  The signature itself is
 * checked in SQL (payment.handle_stripe_webhook, sql/payment/payment.sql)
 * with the core's primitives, which read these settings by name.
 */
#include "postgres.h"

#include "utils/guc.h"

#include "isa.h"

static char *isa_stripe_webhook_secret = NULL;
static int	isa_stripe_webhook_tolerance = 300;	/* seconds */

void
isa_payment_define_gucs(void)
{
	/*
	 * GUC_SUPERUSER_ONLY hides the value from SHOW and pg_settings for other
	 * roles; GUC_NO_SHOW_ALL keeps it out of SHOW ALL.  SECURITY DEFINER
	 * functions owned by a superuser still read it.
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
