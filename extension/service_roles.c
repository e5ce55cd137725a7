/*
 * service_roles.c — the names of a service's two roles (docs/install.md,
 * "Roles"): isa_svc_<service> owns the service's schema and objects, so its
 * SECURITY DEFINER functions and its handlers run as it, and only it may
 * publish the service's events; isa_app_<service> executes the service's
 * API.  The one place the naming rule is written: isa.publish_event checks
 * the owner role through isa_service_role(), and the SQL creates and grants
 * the roles through isa.service_role() and isa.service_app_role().
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include "isa.h"

PG_FUNCTION_INFO_V1(isa_service_role_sql);
PG_FUNCTION_INFO_V1(isa_service_app_role_sql);

#define SERVICE_ROLE_PREFIX "isa_svc_"
#define SERVICE_APP_ROLE_PREFIX "isa_app_"

/* prefix || service, as a role name; 22023 if it would be truncated. */
static void
role_name(const char *prefix, const char *service, char *buf)
{
	if (strlen(prefix) + strlen(service) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("service name \"%s\" is too long for the name of its role", service),
				 errhint("A service name has at most %d characters.",
						 (int) (NAMEDATALEN - 1 - strlen(prefix)))));
	snprintf(buf, NAMEDATALEN, "%s%s", prefix, service);
}

/* The role that owns a service's schema and objects, into buf[NAMEDATALEN]. */
void
isa_service_role(const char *service, char *buf)
{
	role_name(SERVICE_ROLE_PREFIX, service, buf);
}

static Datum
role_datum(const char *prefix, text *service)
{
	Name		result = palloc0(NAMEDATALEN);

	role_name(prefix, text_to_cstring(service), NameStr(*result));
	return NameGetDatum(result);
}

/* isa.service_role(service text) RETURNS name */
Datum
isa_service_role_sql(PG_FUNCTION_ARGS)
{
	return role_datum(SERVICE_ROLE_PREFIX, PG_GETARG_TEXT_PP(0));
}

/* isa.service_app_role(service text) RETURNS name */
Datum
isa_service_app_role_sql(PG_FUNCTION_ARGS)
{
	return role_datum(SERVICE_APP_ROLE_PREFIX, PG_GETARG_TEXT_PP(0));
}
