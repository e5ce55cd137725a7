/*
 * httpd.h — what the files of isa-httpd share.
 *
 * isa-httpd is a thin front: it parses a request, authenticates its JWT,
 * finds the route (rows of isa.http_routes, loaded from the database), maps
 * path, query and JSON body to the route function's named arguments, runs
 * isa.http_begin() and the function in one transaction over a libpq pool, and
 * maps the answer (or the SQLSTATE) to HTTP.  No domain logic lives here.
 */
#ifndef ISA_HTTPD_H
#define ISA_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

/* ---------------------------------------------------------------- config.c */
typedef struct HttpdConfig
{
	char	   *listen;				/* address to bind, default 127.0.0.1 */
	int			port;
	char	   *database_url;		/* libpq conninfo or URI */
	int			pool_size;
	int			pool_timeout_ms;	/* waiting for a connection, then 503 */
	int			statement_timeout_ms;
	int			max_body_bytes;
	int			max_header_bytes;
	int			max_connections;
	int			max_connections_per_client;	/* per peer address; 0: no cap; trusted proxies are exempt */
	int			connection_timeout_s;
	int			request_head_timeout_s;	/* from a connection's start (or its previous answer) to a whole head */
	char	   *trusted_proxies;	/* addresses/CIDRs whose X-Forwarded-For is believed */
	char	   *metrics_token;		/* GET /metrics needs Authorization: Bearer <it>; NULL: public */
	double		rate_limit;			/* requests per second per client, rate-limited routes */
	int			rate_burst;
	int			retries;			/* serialization failures and deadlocks */
	char	   *jwt_algorithm;		/* EdDSA or HS256 */
	char	   *jwt_secret;			/* HS256: at least 32 bytes */
	char	   *jwt_previous_secret;
	char	   *jwks_file;			/* EdDSA keys from a file instead of auth.jwks() */
	char	   *jwt_issuer;
	char	   *jwt_audience;
	int			jwt_clock_skew;
	char	   *public_url;			/* for openapi.json servers[] */
	bool		log_requests;
} HttpdConfig;

extern HttpdConfig cfg;

/* Parses the environment, then the file named by --config or
 * ISA_HTTPD_CONFIG, then the command line; exits with a message on an error
 * or after --help. */
extern void config_load(int argc, char **argv);
/* Reads a whole file into a malloc'ed NUL-terminated string (NULL, errno set). */
extern char *read_file(const char *path, size_t *len);
/* The memory of a connection (libmicrohttpd's pool) for cfg.max_header_bytes. */
extern size_t connection_memory(void);

/* ---------------------------------------------------------------- util */
typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buf;

extern void buf_append(Buf *b, const char *s, size_t n);
extern void buf_puts(Buf *b, const char *s);
extern void buf_printf(Buf *b, const char *fmt,...) __attribute__((format(printf, 2, 3)));
extern void buf_free(Buf *b);
extern void *xmalloc(size_t n);
extern void *xcalloc(size_t n, size_t m);
extern char *xstrdup(const char *s);
extern double now_seconds(void);	/* CLOCK_MONOTONIC */
extern uint64_t hash_string(const char *s);
extern void log_line(const char *fmt,...) __attribute__((format(printf, 1, 2)));

/* ---------------------------------------------------------------- routes.c */
typedef enum
{
	ARG_TEXT,					/* $n::type */
	ARG_JSON,					/* json/jsonb: the JSON text of the value */
	ARG_ARRAY,					/* from a JSON array */
	ARG_BYTEA					/* base64 or base64url text */
} ArgKind;

typedef struct RouteArg
{
	char	   *name;
	char	   *type;			/* format_type() */
	ArgKind		kind;
	bool		optional;
} RouteArg;

typedef enum
{
	AUTH_PUBLIC, AUTH_USER, AUTH_DEVICE, AUTH_ADMIN
} RouteAuth;

typedef enum
{
	RET_ONE, RET_SET, RET_VOID
} RouteReturns;

#define MAX_SEGMENTS 16

typedef struct Route
{
	char	   *method;
	char	   *path;			/* template, e.g. /v1/accounts/{user_id} */
	char	   *function;		/* quoted schema.name */
	char	   *service;
	char	   *summary;
	char	   *permission;
	char	   *self_param;
	char	   *resource_param;
	char	   *subject_param;
	char	   *raw_body_param;
	json_t	   *header_params;	/* {"arg": "Header-Name"} */
	RouteAuth	auth;
	RouteReturns returns;
	char	   *return_type;
	char	   *stream;			/* NULL, "upload" or "download" */
	char	   *schema;			/* the function's schema: upload/download helpers live there */
	int			status;
	bool		rate_limited;
	int			nargs;
	RouteArg   *args;
	int			nsegments;
	char	   *segments[MAX_SEGMENTS];	/* literal, or "{name}" */
	int			nliterals;
} Route;

typedef struct RouteTable
{
	int			nroutes;
	Route	   *routes;
	int			refcount;
} RouteTable;

/* Builds a table from isa.http_route_catalogue()'s JSON; NULL and *err set. */
extern RouteTable *routes_from_json(const char *json, char **err);
extern void routes_free(RouteTable *t);

/* One request's arguments, before SQL. */
typedef struct CallArg
{
	const RouteArg *arg;
	char	   *value;			/* NULL: SQL NULL */
} CallArg;

typedef struct Call
{
	char	   *sql;			/* SELECT … with $1 … $n */
	int			nparams;
	char	  **params;
	int		   *lengths;		/* binary parameters (NULL: all text) */
	int		   *formats;
	bool		binary_result;	/* the value comes back in binary (bytea) */
	char	   *self_value;
	char	   *resource_value;
} Call;

/* Path segments of a URL path: "/a/b" → {"a","b"}.  false on an empty,
 * "." or ".." segment, or too many of them. */
extern bool split_path(const char *path, char **segs, int *nsegs, char *storage, size_t storage_len);

/* The value of a hex digit, or -1. */
extern int	hexdigit(char c);

/* The same for a raw path ("/v1/a%2Fb"): split first, then each segment
 * percent-decoded, so an encoded "/" stays inside its segment; false also on
 * a bad escape, a control character or %00. */
extern bool decode_path(const char *raw, char **segs, int *nsegs, char *storage, size_t len);

/* The route for a method and path: NULL and *path_matched when only the
 * method differs (405). Path parameters are returned in params (name=value). */
typedef struct PathParam
{
	const char *name;			/* without braces, into the template */
	const char *value;
} PathParam;
extern const Route *route_match(const RouteTable *t, const char *method, char **segs, int nsegs,
								PathParam *params, int *nparams, bool *path_matched, Buf *allow);

typedef struct Source
{
	const char *name;
	const char *value;
} Source;

/*
 * The SQL and parameters for a route's call.  path/query are name=value
 * pairs; body is the parsed JSON object (or NULL); raw_body the body as
 * received; headers come from get_header.  On a client error returns false
 * with *status (400) and *message set (malloc'ed).
 */
typedef const char *(*HeaderLookup) (void *ctx, const char *name);
/*
 * The statement of a request: isa.http_begin($1 … $8) first, then the call,
 * in one statement (one Bind/Execute instead of two):
 *   SELECT (SELECT <value> [FROM <from>] WHERE b.ok) FROM (SELECT isa.http_begin(…) AS ok) b
 * The subquery refers to b, so it runs after http_begin, for its one row.
 * The call's own parameters start at $9 (BEGIN_PARAMS + 1).
 */
#define BEGIN_PARAMS 8
extern char *sql_with_begin(const char *value, const char *from);

extern bool build_call(const Route *r, const PathParam *path, int npath, const Source *query, int nquery,
					   json_t *body, const char *raw_body, size_t raw_len,
					   HeaderLookup get_header, void *header_ctx,
					   const char *subject, Call *call, char **message);
extern void call_free(Call *c);

/* ---------------------------------------------------------------- main.c */
/* The route table of the moment, held until routes_put (a reload may swap it). */
extern RouteTable *routes_get(void);
extern void routes_put(RouteTable *t);
extern bool routes_loaded(void);

/* ---------------------------------------------------------------- request.c */
/* libmicrohttpd's callbacks (the daemon is set up in main.c) */
#include <microhttpd.h>
extern void *request_uri(void *cls, const char *uri, struct MHD_Connection *conn);
extern enum MHD_Result request_handle(void *cls, struct MHD_Connection *conn, const char *url,
									  const char *method, const char *version, const char *upload_data,
									  size_t *upload_data_size, void **con_cls);
extern void request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
							  enum MHD_RequestTerminationCode toe);
extern size_t request_unescape(void *cls, struct MHD_Connection *conn, char *s);

/* ---------------------------------------------------------------- input.c */
/* Query arguments, collected by collect() (libmicrohttpd's iterator). */
typedef struct KV
{
	Source	   *items;
	int			n;
	int			cap;
	bool		duplicate;
	const char *dup_name;
	bool		control;		/* a name or value holds a control character (or %00) */
} KV;
extern enum MHD_Result collect(void *cls, enum MHD_ValueKind kind, const char *key, const char *value);
/* control characters, and %00 (request_unescape decodes it as DEL) */
extern bool has_control(const char *s);
extern const char *lookup_header(void *ctx, const char *name);
/* A client's X-Request-Id is kept when 1-128 characters of [A-Za-z0-9-_.:]. */
extern bool valid_request_id(const char *s);
extern void new_request_id(char *out);	/* a UUID v4, 37 bytes */
extern int	client_fd(struct MHD_Connection *conn);
/* The request headers as a JSON object, without the credentials (request.headers). */
extern enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value);
extern bool is_json_content_type(const char *ct);

/* ---------------------------------------------------------------- client.c */
/* Parses cfg.trusted_proxies (addresses and CIDRs, IPv4 or IPv6, separated by
 * commas or spaces); false with *err (malloc'ed) on a bad entry. */
extern bool proxies_init(char **err);
extern bool proxy_trusted(const struct sockaddr *addr);
/* An address as text (64 bytes are enough). */
extern void address_text(const struct sockaddr *addr, char *out, size_t len);
/* Who the client is: the peer's address, or, when the peer is a trusted
 * proxy, the rightmost X-Forwarded-For address that is not one. */
extern void client_address(struct MHD_Connection *conn, char *out, size_t len);

/* ---------------------------------------------------------------- connections.c */
/* libmicrohttpd's connection callbacks (MHD_OPTION_NOTIFY_CONNECTION,
 * MHD_OPTION_APPLY_POLICY_CALLBACK) and the sweep that closes a connection
 * whose request head is not complete within request_head_timeout_s. */
extern void connection_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
							  enum MHD_ConnectionNotificationCode code);
extern enum MHD_Result connection_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen);
extern void connection_head_received(struct MHD_Connection *conn);
extern void connection_answered(struct MHD_Connection *conn);
extern void connections_start(void);
extern void connections_stop(void);

/* ---------------------------------------------------------------- jwt.c */
/* Verifies a compact JWS with the configured algorithm and keys, and its
 * exp/nbf/iat/iss/aud; returns the claims (caller decrefs) or NULL with a
 * reason (static string) for the 401 answer. */
extern int jwt_init(char **err);
extern json_t *jwt_verify(const char *token, const char **reason);
/* EdDSA keys from the database: given the JSON of auth.jwks(). */
extern int jwt_set_jwks(const char *json, char **err);
extern bool jwt_wants_keys(void);	/* an unknown kid was seen, or the keys are old */
extern bool jwt_keys_from_db(void);

/* ---------------------------------------------------------------- pool.c */
typedef struct PoolConn PoolConn;

typedef struct SqlError
{
	char		sqlstate[6];
	char	   *message;
	char	   *detail;
	char	   *hint;
} SqlError;

typedef struct SqlResult
{
	bool		ok;
	char	   *value;			/* the call's one value, NULL for SQL NULL */
	size_t		value_len;
	bool		has_row;
	SqlError	err;
	bool		canceled;		/* the client went away */
	bool		broken;			/* the connection failed */
} SqlResult;

extern void pool_init(void);
extern void pool_shutdown(void);
/* NULL after cfg.pool_timeout_ms (*timed_out) or when no connection can be made. */
extern PoolConn *pool_acquire(bool *timed_out);
extern void pool_release(PoolConn *c);
/* Runs the call, one statement in its own transaction (one round trip).
 * With begin_params (BEGIN_PARAMS of them), the call's SQL was made by
 * sql_with_begin.  client_fd >= 0: a hang-up cancels the query. */
extern void pool_run(PoolConn *c, const char *const *begin_params, const Call *call, int client_fd,
					 SqlResult *res);
/* One simple query returning one text value (for catalogue, jwks, ready). */
extern bool pool_query_value(PoolConn *c, const char *sql, char **value, SqlError *err);
extern void sql_result_clear(SqlResult *r);
typedef struct PoolStats
{
	int			size;
	int			open;
	int			busy;
	int			waiting;
	uint64_t	timeouts;
	uint64_t	reconnects;
} PoolStats;
extern void pool_stats(PoolStats *s);

/* ---------------------------------------------------------------- metrics.c */
extern void metrics_observe(const char *route, const char *method, int status, double seconds);
extern void metrics_inflight(int delta);
/* A connection closed or refused by isa-httpd: "head_timeout" or "per_client_limit". */
extern void metrics_connection_closed(const char *reason);
/* Appends the Prometheus text of httpd's own metrics, then of isa.metrics()
 * rows given as JSON (may be NULL). */
extern void metrics_render(Buf *out, const char *isa_metrics_json);

/* ---------------------------------------------------------------- files.c */
/*
 * Streams: an upload route's function begins an upload and returns its id;
 * the body goes to <schema>.put_chunk(upload_id, seq, data) as it arrives,
 * 256 KiB at a time, then <schema>.finish_upload(upload_id, sha256); an upload
 * that ends otherwise goes to <schema>.abort_upload(upload_id).  A
 * download route's function returns the file's info (size, sha256,
 * content_type, name, file_id); the bytes come from <schema>.read_file(file_id,
 * offset, length), with Range and If-None-Match.
 */
typedef struct Upload Upload;
extern Upload *upload_start(const char *schema, const char *upload_id, const char *const *begin_params);
/* false once an error is recorded in err (then the rest is dropped). */
extern bool upload_write(Upload *u, const char *data, size_t n, SqlResult *err);
extern void upload_finish(Upload *u, SqlResult *res);
/* <schema>.abort_upload(upload_id) unless finish_upload succeeded. */
extern void upload_abort(Upload *u);
extern void upload_free(Upload *u);

struct MHD_Connection;
struct MHD_Response;
/* The response for a download (200, 206, 304 or 416); NULL with *status and
 * *message for an unusable file info. */
extern struct MHD_Response *download_response(const char *schema, const char *file_json, const char *range,
											  const char *if_none_match, bool head, int *status,
											  const char **message);

/* ---------------------------------------------------------------- ratelimit.c */
/* false when the client has no token left; *retry_after in seconds. */
extern bool ratelimit_take(const char *client, int *retry_after);

/* ---------------------------------------------------------------- openapi.c */
extern char *openapi_render(const RouteTable *t);

/* ---------------------------------------------------------------- errors.c */
/* An answer being made: a status with a JSON body (or a file, files.c). */
typedef struct Answer
{
	int			status;
	char	   *body;			/* malloc'ed; NULL: empty */
	const char *content_type;
	char		allow[128];
	bool		allow_empty;	/* send "Allow:" with no method */
	int			retry_after;
	const char *www_authenticate;
} Answer;

extern void answer_error(Answer *a, int status, const char *code, const char *message, const char *details,
						 const char *hint);
extern enum MHD_Result send_answer(struct MHD_Connection *conn, Answer *a, const char *request_id);
/* An SQL error as an answer: the status of its SQLSTATE; internal ones are
 * logged under the request id and answered without their message. */
extern void map_sql_error(Answer *a, const SqlResult *res, bool anonymous, const char *request_id);

/* ---------------------------------------------------------------- endpoints.c */
/* /live, /ready, /metrics, /openapi.json: false for any other URL. */
extern bool builtin(struct MHD_Connection *conn, const char *method, const char *url, Answer *a);
/* PostgREST's SQLSTATE → HTTP status table; anonymous: 42501 → 401. */
extern int sqlstate_http_status(const char *sqlstate, bool anonymous);
/* {code, message, details, hint} */
extern char *error_body(const char *code, const char *message, const char *details, const char *hint);

#endif							/* ISA_HTTPD_H */
