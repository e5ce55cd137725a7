/*
 * isa-nats-revoker — cuts decommissioned devices off NATS: it puts the
 * credentials the device service revoked (device.nats_revocations()) into
 * the revocations of the account JWT, signs it with the operator's signing
 * key and pushes it to the servers over the system account; nats-server then
 * refuses those JWTs and closes the connections that use them, and its
 * resolver keeps the JWT across restarts.  docs/services/device.md,
 * "Revocation", says why this is a program of its own and not the bridge: the
 * database never holds the operator's authority.
 *
 *   isa-nats-revoker --database CONNINFO --nats URL[,URL...] --creds FILE
 *                    --operator-jwt FILE --signing-key FILE --account PUB
 *                    [--interval SECONDS] [--once]
 *
 *   --database     libpq connection string of the database that runs the device
 *                  service; its role executes device.nats_revocations() and
 *                  device.nats_revocations_pushed() (isa_admin's)
 *   --nats         the NATS servers (a cluster: any of them; the system account
 *                  carries the update to all)
 *   --creds        a user of the system account that may publish
 *                  $SYS.REQ.CLAIMS.UPDATE and $SYS.REQ.ACCOUNT.<PUB>.CLAIMS.LOOKUP
 *                  (tools/nats-config.sh: revoker.creds, inbox _INBOX.revoker)
 *   --operator-jwt the operator's JWT the servers trust (operator.jwt): the account
 *                  JWT looked up must be signed by the operator or one of its signing
 *                  keys (a forged answer is never signed again), and so must the
 *                  signing key be
 *   --signing-key  a file holding a seed (SO...) of the operator or one of its
 *                  signing keys (tools/nats-config.sh: operator-signing.nk)
 *   --account      the account whose users are revoked (A...)
 *   --interval     seconds between two checks when nothing wakes it (default 30)
 *   --once         one check, then exit: 0 if the servers revoke what the database
 *                  says, 1 if not
 *
 * One check: read the revoked keys from the database; look up the account
 * JWT the server has ($SYS.REQ.ACCOUNT.<PUB>.CLAIMS.LOOKUP: the one source of
 * the account's claims, what tools/nats-config.sh minted or a later push);
 * its revocations, plus the unexpired revoked keys, minus the expired ones
 * the database lists, are the new revocations; if they differ, issue the JWT
 * again with them (a later iat, every other claim kept) and push it
 * ($SYS.REQ.CLAIMS.UPDATE); once a server answered 200, mark the keys pushed.
 * A check runs at start, when the database notifies isa_device_nats_revocations
 * (decommission_device, at commit), after NATS reconnected (a server that
 * restarted from an older preload), every --interval seconds, and while one
 * fails again after 2 s, 4 s, 8 s … up to --interval.
 *
 * Logs to stderr, one line per push or error; never a key's seed.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <nats/nats.h>

#include "nats_jwt.h"

#define NOTIFY_CHANNEL "isa_device_nats_revocations"
#define REQUEST_TIMEOUT_MS 3000
#define RETRY_MS 2000
#define NOTIFY_DELAY_MS 100

static const char usage[] =
	"usage: isa-nats-revoker --database CONNINFO --nats URL[,URL...] --creds FILE\n"
	"                        --operator-jwt FILE --signing-key FILE --account PUB\n"
	"                        [--interval SECONDS] [--once]\n";

static struct
{
	const char *database;
	const char *nats;
	const char *creds;
	const char *signing_key_file;
	const char *operator_jwt_file;
	const char *account;
	int			interval;
	bool		once;
} opt = {.interval = 30};

static char signing_seed[128];
static char operator_claims[16384];	/* the operator JWT's, verified */
static char operator_key[ISA_NKEY_PUBLIC_SIZE];
static volatile sig_atomic_t stop_requested = 0;
static int	wake_pipe[2] = {-1, -1};
static PGconn *pg = NULL;
static natsConnection *nc = NULL;
static bool announce = true;	/* the next check that succeeds says so */

static void logmsg(const char *fmt,...) __attribute__((format(printf, 1, 2)));

static void
logmsg(const char *fmt,...)
{
	char		stamp[32];
	time_t		now = time(NULL);
	va_list		ap;

	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", gmtime(&now));
	fprintf(stderr, "%s UTC isa-nats-revoker: ", stamp);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void
die(const char *fmt, const char *what)
{
	logmsg(fmt, what);
	exit(2);
}

static void
on_signal(int sig)
{
	(void) sig;
	stop_requested = 1;
}

/* Written from nats.c's threads: the main loop polls the pipe (no other state is shared). */
static void
wake(void)
{
	char		c = 1;

	if (write(wake_pipe[1], &c, 1) < 0 && errno != EAGAIN)
		return;
}

static void
on_reconnected(natsConnection *conn, void *closure)
{
	(void) conn;
	(void) closure;
	wake();
}

static void
parse(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
	{
		const char *o = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(o, "--once") == 0)
		{
			opt.once = true;
			continue;
		}
		if (strcmp(o, "--help") == 0)
		{
			fputs(usage, stdout);
			exit(0);
		}
		if (v == NULL)
		{
			fputs(usage, stderr);
			exit(2);
		}
		i++;
		if (strcmp(o, "--database") == 0)
			opt.database = v;
		else if (strcmp(o, "--nats") == 0)
			opt.nats = v;
		else if (strcmp(o, "--creds") == 0)
			opt.creds = v;
		else if (strcmp(o, "--signing-key") == 0)
			opt.signing_key_file = v;
		else if (strcmp(o, "--operator-jwt") == 0)
			opt.operator_jwt_file = v;
		else if (strcmp(o, "--account") == 0)
			opt.account = v;
		else if (strcmp(o, "--interval") == 0)
			opt.interval = atoi(v);
		else
		{
			fprintf(stderr, "isa-nats-revoker: unknown option '%s'\n%s", o, usage);
			exit(2);
		}
	}
	if (!opt.database || !opt.nats || !opt.creds || !opt.operator_jwt_file || !opt.signing_key_file || !opt.account)
	{
		fprintf(stderr, "isa-nats-revoker: --database, --nats, --creds, --operator-jwt, --signing-key and --account "
				"are needed\n%s", usage);
		exit(2);
	}
	if (opt.interval < 1 || opt.interval > 3600)
		die("%s", "--interval is 1 to 3600 seconds");
	if (isa_nkey_check_public(opt.account, ISA_NKEY_ACCOUNT) != NULL)
		die("--account %s is not an account's public key (A...)", opt.account);
}

/* Whether an operator key is the trusted operator's or one of its signing keys. */
static bool
trusted_issuer(const char *key)
{
	return strcmp(key, operator_key) == 0 || isa_nats_claims_lists(operator_claims, "signing_keys", key);
}

/* The first line of a file (a JWT, a seed), without the blanks at its end. */
static void
read_first_line(const char *path, const char *what, char *out, size_t cap)
{
	FILE	   *f = fopen(path, "r");
	size_t		n;

	if (f == NULL)
	{
		logmsg("cannot read the %s %s", what, path);
		exit(2);
	}
	if (fgets(out, (int) cap, f) == NULL)
		out[0] = '\0';
	fclose(f);
	n = strlen(out);
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' '))
		out[--n] = '\0';
}

/* The operator JWT the servers trust: its claims, once it verifies. */
static void
read_operator_jwt(void)
{
	static char jwt[sizeof(operator_claims)];
	const char *err;

	read_first_line(opt.operator_jwt_file, "operator JWT", jwt, sizeof(jwt));
	err = isa_nats_jwt_decode(operator_claims, sizeof(operator_claims), jwt);
	if (err == NULL && (!isa_nats_claims_string(operator_claims, "sub", operator_key, sizeof(operator_key)) ||
						isa_nkey_check_public(operator_key, ISA_NKEY_OPERATOR) != NULL))
		err = "not an operator's JWT";
	if (err)
	{
		logmsg("%s: %s", opt.operator_jwt_file, err);
		exit(2);
	}
}

/* The operator's seed, checked: an operator's (SO...) the operator JWT trusts, never printed. */
static void
read_signing_key(void)
{
	char		pub[ISA_NKEY_PUBLIC_SIZE],
				kind = 0;

	read_first_line(opt.signing_key_file, "signing key", signing_seed, sizeof(signing_seed));
	if (isa_nkey_public(signing_seed, pub, &kind) != NULL || kind != ISA_NKEY_OPERATOR)
		die("%s does not hold an operator's seed (SO...)", opt.signing_key_file);
	if (!trusted_issuer(pub))
		die("%s is neither the operator of --operator-jwt nor one of its signing keys: "
			"the servers would refuse what it signs", opt.signing_key_file);
	logmsg("signing with operator key %s for account %s", pub, opt.account);
}

/* ---------------------------------------------------------------- connections */

/* libpq's last error on one line */
static const char *
pq_error(void)
{
	static char buf[512];
	size_t		n;

	snprintf(buf, sizeof(buf), "%s", pg ? PQerrorMessage(pg) : "no connection");
	for (char *p = buf; *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	n = strlen(buf);
	while (n > 0 && buf[n - 1] == ' ')
		buf[--n] = '\0';
	return buf;
}

/* the server's notices (a shutdown's warning) as log lines */
static void
on_notice(void *arg, const char *message)
{
	(void) arg;
	logmsg("database: %.*s", (int) strcspn(message, "\n"), message);
}

static void
connect_nats(void)
{
	natsOptions *o = NULL;
	natsStatus	s = natsOptions_Create(&o);

	if (s == NATS_OK)
		s = natsOptions_SetURL(o, opt.nats);
	if (s == NATS_OK)
		s = natsOptions_SetName(o, "isa-nats-revoker");
	if (s == NATS_OK)
		s = natsOptions_SetUserCredentialsFromFiles(o, opt.creds, NULL);
	if (s == NATS_OK)
		s = natsOptions_SetCustomInboxPrefix(o, "_INBOX.revoker");
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(o, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(o, 500);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(o, 2000);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectedCB(o, on_reconnected, NULL);
	/* a server that is not up yet: connect in the background, check when connected */
	if (s == NATS_OK)
		s = natsOptions_SetRetryOnFailedConnect(o, true, on_reconnected, NULL);
	if (s == NATS_OK)
		s = natsConnection_Connect(&nc, o);
	natsOptions_Destroy(o);
	if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED)
		die("cannot use NATS: %s", natsStatus_GetText(s));
}

/* PostgreSQL, listening; false (and logged once) while it cannot be reached. */
static bool
ensure_pg(void)
{
	static bool down_logged = false;
	PGresult   *r;

	if (pg != NULL && PQstatus(pg) == CONNECTION_OK)
		return true;
	if (pg != NULL)
		PQfinish(pg);
	pg = PQconnectdb(opt.database);
	if (PQstatus(pg) != CONNECTION_OK)
	{
		if (!down_logged)
			logmsg("cannot connect to the database: %s", pq_error());
		down_logged = true;
		PQfinish(pg);
		pg = NULL;
		return false;
	}
	PQsetNoticeProcessor(pg, on_notice, NULL);
	r = PQexec(pg, "SET application_name = 'isa-nats-revoker'; LISTEN " NOTIFY_CHANNEL);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
	{
		logmsg("LISTEN failed: %s", pq_error());
		PQclear(r);
		PQfinish(pg);
		pg = NULL;
		return false;
	}
	PQclear(r);
	if (down_logged)
		logmsg("connected to the database again");
	down_logged = false;
	return true;
}

/* ---------------------------------------------------------------- one check */

/* Revocations as two arrays. */
typedef struct Revocations
{
	char	  **keys;
	long long  *at;
	int			n;
} Revocations;

static int
find(const Revocations *r, const char *key)
{
	for (int i = 0; i < r->n; i++)
		if (strcmp(r->keys[i], key) == 0)
			return i;
	return -1;
}

static void
add(Revocations *r, const char *key, long long at)
{
	r->keys = realloc(r->keys, sizeof(char *) * (r->n + 1));
	r->at = realloc(r->at, sizeof(long long) * (r->n + 1));
	if (r->keys == NULL || r->at == NULL || (r->keys[r->n] = strdup(key)) == NULL)
		die("%s", "out of memory");
	r->at[r->n++] = at;
}

static void
collect(const char *key, long long at, void *arg)
{
	add(arg, key, at);
}

static void
clear(Revocations *r)
{
	for (int i = 0; i < r->n; i++)
		free(r->keys[i]);
	free(r->keys);
	free(r->at);
	memset(r, 0, sizeof(*r));
}

/* A request on the system account; the reply's data (malloc'd), or NULL and why. */
static char *
request(const char *subject, const char *data, const char **why)
{
	natsMsg    *reply = NULL;
	natsStatus	s = natsConnection_RequestString(&reply, nc, subject, data, REQUEST_TIMEOUT_MS);
	char	   *out;

	if (s != NATS_OK)
	{
		*why = natsStatus_GetText(s);
		return NULL;
	}
	out = strndup(natsMsg_GetData(reply), (size_t) natsMsg_GetDataLength(reply));
	natsMsg_Destroy(reply);
	if (out == NULL)
		die("%s", "out of memory");
	return out;
}

/* The claims of the account JWT the server has (malloc'd), verified, or NULL. */
static char *
server_claims(void)
{
	char		subject[128],
				sub[ISA_NKEY_PUBLIC_SIZE],
				iss[ISA_NKEY_PUBLIC_SIZE];
	const char *why = NULL,
			   *err;
	char	   *jwt,
			   *claims;
	size_t		len;

	snprintf(subject, sizeof(subject), "$SYS.REQ.ACCOUNT.%s.CLAIMS.LOOKUP", opt.account);
	jwt = request(subject, "", &why);
	if (jwt == NULL)
	{
		logmsg("looking up the account JWT failed: %s", why);
		return NULL;
	}
	len = strlen(jwt) + 1;
	claims = malloc(len);
	if (claims == NULL)
		die("%s", "out of memory");
	err = jwt[0] == '\0' ? "the server does not know the account" : isa_nats_jwt_decode(claims, len, jwt);
	if (err == NULL && (!isa_nats_claims_string(claims, "sub", sub, sizeof(sub)) || strcmp(sub, opt.account) != 0))
		err = "the server answered with another account's JWT";
	/* only what the operator signed is signed again */
	if (err == NULL && (!isa_nats_claims_string(claims, "iss", iss, sizeof(iss)) || !trusted_issuer(iss)))
		err = "the JWT is not signed by the operator nor one of its signing keys; not signing it again";
	free(jwt);
	if (err)
	{
		logmsg("the account JWT of %s: %s", opt.account, err);
		free(claims);
		return NULL;
	}
	return claims;
}

/* Pushes the account JWT with these revocations; true once a server took it. */
static bool
push(const char *claims, const Revocations *r)
{
	size_t		rev_len = (size_t) r->n * (ISA_NKEY_PUBLIC_SIZE + 24) + 8;
	size_t		work_len = strlen(claims) + rev_len + 64;
	size_t		jwt_len = work_len * 2 + 1024;
	char	   *rev = malloc(rev_len),
			   *work = malloc(work_len),
			   *jwt = malloc(jwt_len),
			   *answer = NULL;
	long long	iat = (long long) time(NULL),
				old_iat = isa_nats_claims_integer(claims, "iat");
	const char *err,
			   *why = NULL;
	bool		ok = false;

	if (rev == NULL || work == NULL || jwt == NULL)
		die("%s", "out of memory");
	/* the server keeps the newer of two JWTs of an account: later than the one it has */
	if (iat <= old_iat)
		iat = old_iat + 1;
	err = isa_nats_revocations_json(rev, rev_len, (const char *const *) r->keys, r->at, r->n);
	if (err == NULL)
		err = isa_nats_account_reissue(jwt, jwt_len, work, work_len, signing_seed, claims, rev, iat);
	if (err)
		logmsg("cannot issue the account JWT again: %s", err);
	else if ((answer = request("$SYS.REQ.CLAIMS.UPDATE", jwt, &why)) == NULL)
		logmsg("pushing the account JWT failed: %s", why);
	else if (strstr(answer, "\"error\"") != NULL || strstr(answer, "\"code\":200") == NULL)
		logmsg("the server refused the account JWT: %s", answer);
	else
		ok = true;
	free(answer);
	free(rev);
	free(work);
	explicit_bzero(jwt, jwt_len);
	free(jwt);
	return ok;
}

/* Tells the database which keys a server revokes now. */
static bool
mark_pushed(const Revocations *done)
{
	size_t		len = (size_t) done->n * (ISA_NKEY_PUBLIC_SIZE + 1) + 3;
	char	   *array = malloc(len),
			   *p = array;
	const char *params[1];
	PGresult   *res;
	bool		ok;

	if (array == NULL)
		die("%s", "out of memory");
	*p++ = '{';
	for (int i = 0; i < done->n; i++)
		p += sprintf(p, "%s%s", i > 0 ? "," : "", done->keys[i]);
	strcpy(p, "}");
	params[0] = array;
	res = PQexecParams(pg, "SELECT device.nats_revocations_pushed($1::text[])", 1, NULL, params, NULL, NULL, 0);
	ok = PQresultStatus(res) == PGRES_TUPLES_OK;
	if (!ok)
		logmsg("marking the revocations pushed failed: %s", pq_error());
	PQclear(res);
	free(array);
	return ok;
}

/*
 * One check: true when the server revokes every unexpired key the database
 * revoked (pushing an account JWT if it did not) and the database knows it.
 */
static bool
check(void)
{
	PGresult   *res;
	char	   *claims;
	Revocations have = {0},
				done = {0};
	int			added = 0,
				dropped = 0;
	bool		ok = true;

	if (!ensure_pg())
		return false;
	if (natsConnection_Status(nc) != NATS_CONN_STATUS_CONNECTED)
		return false;
	res = PQexec(pg, "SELECT public_key, ceil(extract(epoch FROM revoked_at))::bigint, "
				 "expires_at <= now(), pushed_at IS NOT NULL FROM device.nats_revocations()");
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		logmsg("reading device.nats_revocations() failed: %s", pq_error());
		PQclear(res);
		return false;
	}
	claims = server_claims();
	if (claims == NULL)
	{
		PQclear(res);
		return false;
	}
	if (isa_nats_claims_revocations(claims, collect, &have) != NULL)
	{
		logmsg("the account JWT's revocations are malformed; not touching them");
		ok = false;
	}
	for (int i = 0; ok && i < PQntuples(res); i++)
	{
		const char *key = PQgetvalue(res, i, 0);
		long long	at = atoll(PQgetvalue(res, i, 1));
		bool		expired = PQgetvalue(res, i, 2)[0] == 't';
		bool		pushed = PQgetvalue(res, i, 3)[0] == 't';
		int			k = find(&have, key);

		if (expired)
		{
			/* its JWT is refused anyway: the list stays short */
			if (k >= 0)
			{
				free(have.keys[k]);
				have.keys[k] = have.keys[have.n - 1];
				have.at[k] = have.at[have.n - 1];
				have.n--;
				dropped++;
			}
			continue;
		}
		if (k < 0)
		{
			add(&have, key, at);
			added++;
		}
		else if (have.at[k] < at)
		{
			have.at[k] = at;
			added++;
		}
		if (!pushed)
			add(&done, key, at);
	}
	PQclear(res);
	if (ok && (added > 0 || dropped > 0))
	{
		ok = push(claims, &have);
		if (ok)
			logmsg("pushed the account JWT of %s: %d revocations (%d added, %d expired dropped)",
				   opt.account, have.n, added, dropped);
	}
	if (ok && done.n > 0)
		ok = mark_pushed(&done);
	if (ok && announce)
	{
		/* once after (re)connecting: what it found (nothing pushed: the server kept it) */
		logmsg("in step: the account JWT of %s revokes %d keys", opt.account, have.n);
		announce = false;
	}
	free(claims);
	clear(&have);
	clear(&done);
	return ok;
}

/* ---------------------------------------------------------------- the loop */

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Until a notification, a NATS (re)connection, a signal or the deadline: whether NATS woke it. */
static bool
wait_until(long long deadline)
{
	struct pollfd fds[2];
	int			n = 0;
	long long	left = deadline - now_ms();
	char		buf[64];
	bool		woken = false;

	fds[n].fd = wake_pipe[0];
	fds[n++].events = POLLIN;
	if (pg != NULL)
	{
		fds[n].fd = PQsocket(pg);
		fds[n++].events = POLLIN;
	}
	/* at most a second: a signal may have gone to one of nats.c's threads */
	if (left > 1000)
		left = 1000;
	if (left > 0)
		(void) poll(fds, (nfds_t) n, (int) left);
	while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
		woken = true;
	return woken;
}

/* Whether the database notified (and the connection is still fine). */
static bool
notified(void)
{
	PGnotify   *note;
	bool		any = false;

	if (pg == NULL)
		return false;
	if (!PQconsumeInput(pg))
		return true;			/* lost: ensure_pg connects again at the check */
	while ((note = PQnotifies(pg)) != NULL)
	{
		any = true;
		PQfreemem(note);
	}
	return any;
}

int
main(int argc, char **argv)
{
	sigset_t	block,
				old;
	long long	next;
	bool		ok;
	int			failures = 0;
	long long	pg_retry_at = 0;

	parse(argc, argv);
	read_operator_jwt();
	read_signing_key();
	if (pipe(wake_pipe) != 0 || fcntl(wake_pipe[0], F_SETFL, O_NONBLOCK) != 0 ||
		fcntl(wake_pipe[1], F_SETFL, O_NONBLOCK) != 0)
		die("%s", "cannot make a pipe");

	/* nats.c's threads inherit a mask that keeps the signals for this one */
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	if (nats_Open(-1) != NATS_OK)
		die("%s", "cannot initialise nats.c");
	connect_nats();
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGHUP, on_signal);
	signal(SIGPIPE, SIG_IGN);

	if (opt.once)
	{
		/* the connection may still be on its way */
		for (int i = 0; i < 50 && natsConnection_Status(nc) != NATS_CONN_STATUS_CONNECTED; i++)
			usleep(100 * 1000);
		ok = check();
	}
	else
	{
		logmsg("started: NATS %s, checking every %d s and when notified on %s", opt.nats, opt.interval,
			   NOTIFY_CHANNEL);
		next = 0;
		while (!stop_requested)
		{
			/* without the database no notification arrives: connect again every 2 s */
			if (pg == NULL && now_ms() >= pg_retry_at)
			{
				pg_retry_at = now_ms() + RETRY_MS;
				if (ensure_pg())
					next = 0;
			}
			if (now_ms() >= next)
			{
				long long	wait_ms = opt.interval * 1000LL;

				ok = check();
				/* 2 s, 4 s, 8 s … up to --interval while it fails (a database not updated yet) */
				failures = ok ? 0 : failures + 1;
				if (!ok && ((long long) RETRY_MS << (failures < 5 ? failures - 1 : 4)) < wait_ms)
					wait_ms = (long long) RETRY_MS << (failures < 5 ? failures - 1 : 4);
				next = now_ms() + wait_ms;
			}
			/* a server that restarted may have an older account JWT: check at once */
			if (wait_until(next))
			{
				next = 0;
				announce = true;
			}
			/* a burst of decommissions: one push a moment later */
			if (notified() && next > now_ms() + NOTIFY_DELAY_MS)
				next = now_ms() + NOTIFY_DELAY_MS;
		}
		ok = true;
		logmsg("stopping");
	}
	explicit_bzero(signing_seed, sizeof(signing_seed));
	natsConnection_Destroy(nc);
	if (pg != NULL)
		PQfinish(pg);
	nats_Close();
	return ok ? 0 : 1;
}
