/*
 * openapi.c — /openapi.json, an OpenAPI 3.0 document generated from the route
 * table: one operation per route, its path parameters, its other arguments as
 * query parameters (GET, DELETE) or a JSON body (POST, PUT, PATCH), the
 * authentication it needs and its success status.
 */
#include "httpd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *
schema_of(const RouteArg *a)
{
	const char *t = a->type;

	if (a->kind == ARG_ARRAY)
		return json_pack("{s:s, s:{s:s}}", "type", "array", "items", "type", "string");
	if (a->kind == ARG_JSON)
		return json_object();
	if (a->kind == ARG_BYTEA)
		return json_pack("{s:s, s:s}", "type", "string", "format", "byte");
	if (!strcmp(t, "uuid"))
		return json_pack("{s:s, s:s}", "type", "string", "format", "uuid");
	if (!strcmp(t, "integer") || !strcmp(t, "bigint") || !strcmp(t, "smallint"))
		return json_pack("{s:s, s:s}", "type", "integer", "format", !strcmp(t, "bigint") ? "int64" : "int32");
	if (!strcmp(t, "numeric") || !strcmp(t, "double precision") || !strcmp(t, "real"))
		return json_pack("{s:s}", "type", "number");
	if (!strcmp(t, "boolean"))
		return json_pack("{s:s}", "type", "boolean");
	if (!strncmp(t, "timestamp", 9))
		return json_pack("{s:s, s:s}", "type", "string", "format", "date-time");
	return json_pack("{s:s}", "type", "string");
}

static bool
is_path_param(const Route *r, const char *name)
{
	for (int s = 0; s < r->nsegments; s++)
		if (r->segments[s][0] == '{' && !strncmp(r->segments[s] + 1, name, strlen(name)) &&
			r->segments[s][strlen(name) + 1] == '}')
			return true;
	return false;
}

static bool
from_elsewhere(const Route *r, const char *name)
{
	return (r->subject_param && !strcmp(name, r->subject_param)) ||
		(r->raw_body_param && !strcmp(name, r->raw_body_param)) ||
		json_object_get(r->header_params, name) != NULL;
}

char *
openapi_render(const RouteTable *t)
{
	json_t	   *doc = json_object();
	json_t	   *paths = json_object();
	char	   *out;

	json_object_set_new(doc, "openapi", json_string("3.0.3"));
	json_object_set_new(doc, "info", json_pack("{s:s, s:s, s:s}", "title", "isa", "version", "0.1.0",
											   "description", "The HTTP API of isa (docs/http.md). Routes come from isa.http_routes."));
	if (cfg.public_url)
		json_object_set_new(doc, "servers", json_pack("[{s:s}]", "url", cfg.public_url));
	json_t	   *schemes = json_object();
	json_t	   *error = json_pack("{s:s, s:{s:{s:s}, s:{s:s}, s:{s:s, s:b}, s:{s:s, s:b}}}",
								  "type", "object", "properties",
								  "code", "type", "string", "message", "type", "string",
								  "details", "type", "string", "nullable", 1, "hint", "type", "string", "nullable", 1);

	json_object_set_new(schemes, "user", json_pack("{s:s, s:s, s:s, s:s}", "type", "http", "scheme", "bearer",
												   "bearerFormat", "JWT",
												   "description", "An access token from POST /v1/auth/login (admin routes: its user holds isa:admin)"));
	json_object_set_new(schemes, "device", json_pack("{s:s, s:s, s:s, s:s}", "type", "http", "scheme", "bearer",
													 "bearerFormat", "JWT",
													 "description", "A device token from POST /v1/devices/{device_id}/token"));
	json_object_set_new(doc, "components", json_pack("{s:o, s:{s:o}}", "securitySchemes", schemes,
													 "schemas", "Error", error));

	for (int i = 0; t && i < t->nroutes; i++)
	{
		const Route *r = &t->routes[i];
		json_t	   *item = json_object_get(paths, r->path);
		json_t	   *op = json_object();
		json_t	   *params = json_array();
		json_t	   *props = json_object();
		json_t	   *required = json_array();
		bool		body = !strcmp(r->method, "POST") || !strcmp(r->method, "PUT") || !strcmp(r->method, "PATCH");
		char		lower[8];
		char		status[8];
		char		opid[256];

		if (item == NULL)
		{
			item = json_object();
			json_object_set_new(paths, r->path, item);
		}
		json_object_set_new(op, "summary", json_string(r->summary));
		json_object_set_new(op, "tags", json_pack("[s]", r->service));
		/* unique: the method and the path, as an identifier */
		{
			size_t		k = 0;

			for (const char *m = r->method; *m && k < sizeof opid - 1; m++)
				opid[k++] = (char) (*m | 0x20);
			for (const char *p = r->path; *p && k < sizeof opid - 1; p++)
				if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))
					opid[k++] = *p;
				else if (k > 0 && opid[k - 1] != '_')
					opid[k++] = '_';
			while (k > 0 && opid[k - 1] == '_')
				k--;
			opid[k] = '\0';
		}
		json_object_set_new(op, "operationId", json_string(opid));
		for (int a = 0; a < r->nargs; a++)
		{
			const RouteArg *arg = &r->args[a];

			if (from_elsewhere(r, arg->name))
				continue;
			if (is_path_param(r, arg->name))
				json_array_append_new(params, json_pack("{s:s, s:s, s:b, s:o}", "name", arg->name, "in", "path",
														"required", 1, "schema", schema_of(arg)));
			else if (!body)
				json_array_append_new(params, json_pack("{s:s, s:s, s:b, s:o}", "name", arg->name, "in", "query",
														"required", !arg->optional, "schema", schema_of(arg)));
			else
			{
				json_object_set_new(props, arg->name, schema_of(arg));
				if (!arg->optional)
					json_array_append_new(required, json_string(arg->name));
			}
		}
		{
			const char *hname;
			json_t	   *hv;

			json_object_foreach(r->header_params, hname, hv)
			{
				const RouteArg *arg = NULL;

				for (int a = 0; a < r->nargs; a++)
					if (!strcmp(r->args[a].name, hname))
						arg = &r->args[a];
				if (arg && json_is_string(hv))
					json_array_append_new(params, json_pack("{s:s, s:s, s:b, s:o}", "name", json_string_value(hv),
															"in", "header", "required", !arg->optional,
															"schema", schema_of(arg)));
			}
		}
		json_object_set_new(op, "parameters", params);
		if (body && r->raw_body_param)
			json_object_set_new(op, "requestBody", json_pack("{s:b, s:{s:{s:{s:s}}}}", "required", 1,
															 "content", "application/json", "schema", "type", "object"));
		else if (body && json_object_size(props))
		{
			json_t	   *schema = json_pack("{s:s, s:o}", "type", "object", "properties", props);

			if (json_array_size(required))
				json_object_set(schema, "required", required);
			json_object_set_new(op, "requestBody", json_pack("{s:b, s:{s:{s:o}}}", "required", json_array_size(required) > 0,
															 "content", "application/json", "schema", schema));
			props = NULL;
		}
		json_decref(props);
		json_decref(required);
		if (r->auth == AUTH_USER || r->auth == AUTH_ADMIN)
			json_object_set_new(op, "security", json_pack("[{s:[]}]", "user"));
		else if (r->auth == AUTH_DEVICE)
			json_object_set_new(op, "security", json_pack("[{s:[]}]", "device"));
		else
			json_object_set_new(op, "security", json_array());
		/* a void function answers 204, whatever the route's status */
		snprintf(status, sizeof status, "%d", r->returns == RET_VOID ? 204 : r->status);
		json_object_set_new(op, "responses", json_pack("{s:{s:s}, s:{s:s, s:{s:{s:{s:s}}}}}",
													   status, "description", r->returns == RET_VOID ? "done" : r->return_type,
													   "default", "description", "an error",
													   "content", "application/json", "schema", "$ref", "#/components/schemas/Error"));
		for (size_t k = 0; k < sizeof lower - 1 && r->method[k]; k++)
			lower[k] = (char) (r->method[k] | 0x20), lower[k + 1] = '\0';
		json_object_set_new(item, lower, op);
	}
	json_object_set_new(doc, "paths", paths);
	out = json_dumps(doc, JSON_INDENT(1) | JSON_SORT_KEYS);
	json_decref(doc);
	return out;
}
