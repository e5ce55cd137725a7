-- http.sql — the routes isa-httpd serves (httpd/), as data: a service adds an
-- endpoint in its own sql/ file with isa.http_route(), never in C.  isa-httpd
-- reads isa.http_route_catalogue() at start (and on SIGHUP) and, for every
-- request, runs isa.http_begin() and then the route's function in one
-- transaction (docs/http.md).

CREATE TABLE isa.http_routes (
    method         text NOT NULL CHECK (method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')),
    path           text NOT NULL CHECK (path ~ '^(/([A-Za-z0-9._-]+|\{[a-z_][a-z0-9_]*\}))+$'),
    function       regprocedure NOT NULL,
    auth           text NOT NULL CHECK (auth IN ('public', 'user', 'device', 'admin')),
    summary        text NOT NULL,
    permission     text CHECK (permission ~ '^[a-z][a-z0-9_]*:[a-z*][a-z0-9_*]*$'),
    resource_param text,            -- the argument whose value is the resource of the permission check
    self_param     text,            -- the argument that, equal to the caller's subject, needs no permission
    subject_param  text,            -- the argument the caller's subject (claim sub) fills; not from the request
    status         integer NOT NULL DEFAULT 200 CHECK (status IN (200, 201, 202, 204)),
    rate_limited   boolean NOT NULL DEFAULT false,  -- per client address (isa-httpd's rate_limit settings)
    raw_body_param text,            -- the argument that receives the request body unparsed
    header_params  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(header_params) = 'object'),
    stream         text CHECK (stream IN ('upload', 'download')),  -- files: see isa.http_route()
    PRIMARY KEY (method, path)
);
COMMENT ON TABLE isa.http_routes IS
    'The HTTP routes of isa-httpd: method and path template ({name} segments) to a service function, with the authentication it needs (public, user, device, admin), an optional authz permission and where arguments come from. Added by isa.http_route().';

-- The arguments of a function: name, type, and whether it has a default.
CREATE FUNCTION isa._http_function_args(f regprocedure)
RETURNS TABLE (name text, type oid, has_default boolean, pos integer)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT a.name, a.type, a.pos > p.pronargs - p.pronargdefaults, a.pos::integer
      FROM pg_proc p,
           unnest(p.proargnames[1:p.pronargs], p.proargtypes::oid[]) WITH ORDINALITY AS a (name, type, pos)
     WHERE p.oid = f
     ORDER BY a.pos;
END;

CREATE FUNCTION isa.http_route(
    method text, path text, function regprocedure, auth text, summary text,
    permission text DEFAULT NULL, resource_param text DEFAULT NULL, self_param text DEFAULT NULL,
    subject_param text DEFAULT NULL, status integer DEFAULT 200, rate_limited boolean DEFAULT false,
    raw_body_param text DEFAULT NULL, header_params jsonb DEFAULT '{}', stream text DEFAULT NULL)
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_schema name;
    v_args   text[];
    v_param  text;
    v_nargs  integer;
BEGIN
    SELECT n.nspname, p.pronargs INTO v_schema, v_nargs
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = function;
    IF NOT EXISTS (SELECT FROM isa.services s WHERE s.schema_name = v_schema) THEN
        RAISE EXCEPTION 'route % %: % is not in a service''s schema', method, path, function
            USING ERRCODE = '22023';
    END IF;
    SELECT coalesce(array_agg(a.name ORDER BY a.pos), '{}') INTO v_args FROM isa._http_function_args(function) a;
    -- (a function with no named argument has no proargnames: its names are NULL)
    IF array_length(v_args, 1) IS DISTINCT FROM nullif(v_nargs, 0) OR '' = ANY (v_args)
       OR array_position(v_args, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'route % %: every argument of % needs a name', method, path, function
            USING ERRCODE = '22023';
    END IF;
    FOR v_param IN
        SELECT m[1] FROM regexp_matches(path, '\{([a-z_][a-z0-9_]*)\}', 'g') AS m
        UNION ALL SELECT resource_param UNION ALL SELECT self_param
        UNION ALL SELECT subject_param UNION ALL SELECT raw_body_param
        UNION ALL SELECT k FROM jsonb_object_keys(header_params) AS k
    LOOP
        IF v_param IS NOT NULL AND NOT v_param = ANY (v_args) THEN
            RAISE EXCEPTION 'route % %: % has no argument %', method, path, function, v_param
                USING ERRCODE = '22023';
        END IF;
    END LOOP;
    IF (auth IN ('user', 'device', 'admin')) IS DISTINCT FROM true AND (subject_param IS NOT NULL OR self_param IS NOT NULL) THEN
        RAISE EXCEPTION 'route % %: a public route has no caller to fill % from', method, path,
            coalesce(subject_param, self_param) USING ERRCODE = '22023';
    END IF;
    IF (resource_param IS NOT NULL) AND permission IS NULL THEN
        RAISE EXCEPTION 'route % %: resource_param needs a permission', method, path USING ERRCODE = '22023';
    END IF;
    IF stream = 'upload' AND (method NOT IN ('POST', 'PUT')
            OR to_regprocedure(format('%I.put_chunk(uuid, integer, bytea)', v_schema)) IS NULL
            OR to_regprocedure(format('%I.finish_upload(uuid, text)', v_schema)) IS NULL
            OR to_regprocedure(format('%I.abort_upload(uuid)', v_schema)) IS NULL) THEN
        RAISE EXCEPTION 'route % %: an upload is a POST or PUT to a schema with put_chunk(uuid, integer, bytea), finish_upload(uuid, text) and abort_upload(uuid)',
            method, path USING ERRCODE = '22023';
    END IF;
    IF stream = 'download' AND (method <> 'GET'
            OR to_regprocedure(format('%I.read_file(uuid, bigint, integer)', v_schema)) IS NULL) THEN
        RAISE EXCEPTION 'route % %: a download is a GET to a schema with read_file(uuid, bigint, integer)',
            method, path USING ERRCODE = '22023';
    END IF;
    IF method IN ('GET', 'DELETE') AND raw_body_param IS NOT NULL THEN
        RAISE EXCEPTION 'route % %: a % request has no body', method, path, method USING ERRCODE = '22023';
    END IF;
    INSERT INTO isa.http_routes AS r (method, path, function, auth, summary, permission, resource_param, self_param,
                                      subject_param, status, rate_limited, raw_body_param, header_params, stream)
    VALUES (method, path, function, auth, summary, permission, resource_param, self_param,
            subject_param, status, rate_limited, raw_body_param, header_params, stream)
    ON CONFLICT ON CONSTRAINT http_routes_pkey DO UPDATE
       SET function = EXCLUDED.function, auth = EXCLUDED.auth, summary = EXCLUDED.summary,
           permission = EXCLUDED.permission, resource_param = EXCLUDED.resource_param,
           self_param = EXCLUDED.self_param, subject_param = EXCLUDED.subject_param,
           status = EXCLUDED.status, rate_limited = EXCLUDED.rate_limited,
           raw_body_param = EXCLUDED.raw_body_param, header_params = EXCLUDED.header_params,
           stream = EXCLUDED.stream;
END
$$;
COMMENT ON FUNCTION isa.http_route(text, text, regprocedure, text, text, text, text, text, text, integer, boolean, text, jsonb, text) IS
    'Adds (or replaces) an isa-httpd route: METHOD /path/{arg} to a service function. Path, query and JSON body fields become the named arguments; subject_param is filled from the caller''s token; permission is checked with authz.check (resource: resource_param) unless self_param equals the caller. stream upload: the function begins an upload (returns its id) and the body goes to the schema''s put_chunk and finish_upload; stream download: the function returns a file''s info and the bytes come from the schema''s read_file, with Range. 22023 when an argument named does not exist.';

-- What isa-httpd loads: every route with its function's arguments and result
-- shape, as one JSON array (the order of the routes does not matter: a path
-- matches literal segments before parameters).
CREATE FUNCTION isa.http_route_catalogue() RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'method', r.method, 'path', r.path, 'auth', r.auth, 'summary', r.summary,
               'service', s.name,
               'function', format('%I.%I', n.nspname, p.proname),
               'permission', r.permission, 'resource_param', r.resource_param,
               'self_param', r.self_param, 'subject_param', r.subject_param,
               'status', r.status, 'rate_limited', r.rate_limited,
               'raw_body_param', r.raw_body_param, 'header_params', r.header_params,
               'stream', r.stream,
               'returns', CASE WHEN p.proretset THEN 'set'
                               WHEN p.prorettype = 'void'::regtype THEN 'void'
                               ELSE 'one' END,
               'return_type', format_type(p.prorettype, NULL),
               'args', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                   'name', a.name, 'type', format_type(a.type, NULL), 'optional', a.has_default,
                                   'array', t.typcategory = 'A')
                                   ORDER BY a.pos), '[]')
                          FROM isa._http_function_args(r.function) a
                          JOIN pg_type t ON t.oid = a.type))
               ORDER BY r.path, r.method), '[]')
      FROM isa.http_routes r
      JOIN pg_proc p ON p.oid = r.function
      JOIN pg_namespace n ON n.oid = p.pronamespace
      LEFT JOIN isa.services s ON s.schema_name = n.nspname;
END;
COMMENT ON FUNCTION isa.http_route_catalogue() IS
    'The routes of isa-httpd as a JSON array: method, path, auth, function, its named arguments (type, optional) and result shape (one, set, void).';

-- The first statement of every isa-httpd request, in the request's
-- transaction: the request and the verified claims as settings (PostgREST's
-- names: request.jwt.claims, request.method, request.path, request.headers;
-- plus request.id), read-only for GET and HEAD, the statement timeout, and
-- the route's access rule.  isa-httpd has verified the token's signature and
-- times; this checks what only the database knows: that the session is live
-- and that authz grants the permission.  28000 (HTTP 401) for a dead session,
-- 42501 (HTTP 403) for a missing permission.
CREATE FUNCTION isa.http_begin(
    claims jsonb, route_method text, route_path text, self_value text, resource_value text,
    request jsonb, read_only boolean, timeout_ms integer)
RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_http_begin'
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION isa.http_begin(jsonb, text, text, text, text, jsonb, boolean, integer) IS
    'Called by isa-httpd first in every request''s statement: sets request.jwt.claims, request.method, request.path, request.headers, request.id, statement_timeout (for the statements after it) and read-only mode, then applies the route''s access rule (live session, isa:admin, owner or authz permission). Returns true; 28000 / 42501 otherwise.';

CREATE FUNCTION isa.http_claims() RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT nullif(nullif(current_setting('request.jwt.claims', true), '')::jsonb, '{}');
END;
COMMENT ON FUNCTION isa.http_claims() IS
    'The verified JWT claims of the HTTP request being served (request.jwt.claims), NULL outside a request or for an anonymous one.';

-- The routes as the Markdown of docs/http.md (between its routes markers),
-- one table per service: docs/http.md is checked against this by the tests.
-- The access column says who passes isa.http_begin; the function column names
-- the arguments a request fills ([optional]; ← where they come from when not
-- from the path, the query or the JSON body).
CREATE FUNCTION isa.http_routes_markdown() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT coalesce(string_agg(x.section, E'\n' ORDER BY x.service COLLATE "C"), '')
      FROM (SELECT s.name AS service,
                   format(E'### %s\n\n| method | path | auth | access | function | summary |\n|---|---|---|---|---|---|\n', s.name)
                   || string_agg(format('| `%s`%s | `%s` | %s | %s | `%s.%s(%s)` | %s |',
                          r.method,
                          CASE WHEN p.prorettype = 'void'::regtype THEN ' (204)'
                               WHEN r.status <> 200 THEN format(' (%s)', r.status) ELSE '' END,
                          r.path,
                          r.auth || CASE WHEN r.rate_limited THEN ', rate-limited' ELSE '' END,
                          coalesce(nullif(concat_ws(' and ',
                              CASE WHEN r.auth = 'admin' THEN '`isa:admin`' END,
                              CASE WHEN r.subject_param IS NOT NULL THEN 'the caller' END,
                              CASE WHEN r.self_param IS NOT NULL AND r.permission IS NOT NULL
                                   THEN format('owner (`%s`) or `%s`%s', r.self_param, r.permission,
                                               CASE WHEN r.resource_param IS NOT NULL
                                                    THEN format(' on `%s`', r.resource_param) ELSE '' END)
                                   WHEN r.self_param IS NOT NULL THEN format('owner (`%s`)', r.self_param)
                                   WHEN r.permission IS NOT NULL
                                   THEN format('`%s`%s', r.permission,
                                               CASE WHEN r.resource_param IS NOT NULL
                                                    THEN format(' on `%s`', r.resource_param) ELSE '' END)
                              END), ''),
                              CASE r.auth WHEN 'public' THEN 'anyone' WHEN 'user' THEN 'any user' ELSE 'any device' END),
                          n.nspname, p.proname,
                          (SELECT coalesce(string_agg(
                                      CASE WHEN a.name = r.subject_param THEN a.name || ' ← token'
                                           WHEN a.name = r.raw_body_param THEN a.name || ' ← body'
                                           WHEN r.header_params ? a.name
                                           THEN format('%s ← %s', a.name, r.header_params ->> a.name)
                                           WHEN a.has_default THEN '[' || a.name || ']'
                                           ELSE a.name END, ', ' ORDER BY a.pos), '')
                             FROM isa._http_function_args(r.function) a),
                          replace(r.summary, '|', '\|')),
                      E'\n' ORDER BY r.path COLLATE "C", array_position(ARRAY['GET', 'POST', 'PUT', 'PATCH', 'DELETE'], r.method))
                   || E'\n' AS section
              FROM isa.http_routes r
              JOIN pg_proc p ON p.oid = r.function
              JOIN pg_namespace n ON n.oid = p.pronamespace
              JOIN isa.services s ON s.schema_name = n.nspname
             GROUP BY s.name) x;
END;
COMMENT ON FUNCTION isa.http_routes_markdown() IS
    'The routes of isa-httpd (isa.http_routes) as the Markdown of docs/http.md: a table per service of method, path, auth, access rule, function with its arguments, and summary.';

-- /ready and /metrics of isa-httpd: what isa_app may see of the bridge (its
-- role reads no outbox itself).
CREATE FUNCTION isa.http_ready() RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT coalesce((SELECT b.connected FROM isa.bridge_status() b), false);
END;
COMMENT ON FUNCTION isa.http_ready() IS
    'Whether the bridge is running and connected to NATS: isa-httpd''s /ready.';

CREATE FUNCTION isa.http_metrics() RETURNS jsonb
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT coalesce(jsonb_agg(jsonb_build_object('metric', x.name, 'labels', x.labels, 'value', x.value,
                                                 'family', x.family, 'type', x.type, 'help', x.help)
                              ORDER BY x.family, x.name, x.n), '[]')
      FROM (SELECT coalesce(f.exposed_as || substr(m.metric, length(f.family) + 1), 'isa_' || m.metric) AS name,
                   m.labels, m.value,
                   coalesce(f.exposed_as, 'isa_' || m.metric) AS family,
                   coalesce(f.type, 'untyped') AS type,
                   coalesce(f.help, 'isa.metrics(): ' || m.metric) AS help, m.n
              FROM isa.metrics() WITH ORDINALITY AS m (metric, labels, value, n)
              LEFT JOIN isa.metric_families() f
                ON m.metric IN (f.family, f.family || '_bucket', f.family || '_sum', f.family || '_count')) x;
END;
COMMENT ON FUNCTION isa.http_metrics() IS
    'isa.metrics() as a JSON array for isa-httpd''s /metrics: each sample under its exposed name (isa.metric_families()), with its family, type and help.';
