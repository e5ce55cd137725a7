/*
 * auth.h — what the auth service's C files (extension/auth/) share and
 * nothing else needs.  What the core calls (its settings, its shared memory)
 * is declared in isa.h.
 */
#ifndef ISA_AUTH_H
#define ISA_AUTH_H

#include "jwt_verify.h"			/* ISA_JWT_EDDSA, ISA_JWT_HS256: the values of isa_jwt_algorithm */

/* auth_settings.c: the auth service's settings  */
extern int	isa_jwt_algorithm;
extern char *isa_jwt_secret;
extern char *isa_jwt_previous_secret;
extern char *isa_jwt_issuer;
extern char *isa_jwt_audience;
extern int	isa_jwt_access_ttl;	/* seconds */
extern int	isa_refresh_ttl;	/* seconds */
extern int	isa_jwt_clock_skew; /* seconds */
extern int	isa_password_opslimit;
extern int	isa_password_memlimit;	/* kB */
extern int	isa_login_max_failures;
extern int	isa_login_failure_window;	/* seconds */
extern int	isa_login_lockout;	/* seconds */

#endif							/* ISA_AUTH_H */
