/*
 * isa-nats-keys — mints the nkeys and JWTs of nats-server's operator/JWT mode
 * (nsc is not in Debian), with the code isa.so's isa.nats_* functions run
 * (extension/nats_jwt.c).  tools/stack.sh and tools/nats-config.sh call it;
 * docs/bridge.md, "Securing NATS", shows the commands.  Seeds are read from
 * files, never from the command line (ps shows arguments to everyone).
 *
 *   isa-nats-keys nkey operator|account|user        a new seed
 *   isa-nats-keys public SEED_FILE                  its public key
 *   isa-nats-keys operator SEED_FILE --name N [--system-account PUB] [--signing-key PUB]…
 *   isa-nats-keys account OPERATOR_SEED_FILE ACCOUNT_PUB --name N [--jetstream] [--signing-key PUB]…
 *                 [--scoped-key PUB --scope-role R [--scope-pub S]… [--scope-sub S]… [--scope-bearer]]
 *                                                   (one scoped signing key: its users' permissions)
 *                 [--revocations-from JWT_FILE]     (the revocations of that JWT of the account,
 *                                                   if the file exists: the one the server keeps)
 *   isa-nats-keys user SIGNING_SEED_FILE --name N [--account PUB] [--expires EPOCH]
 *                 [--pub S]… [--sub S]… [--deny-pub S]… [--deny-sub S]…
 *                 [--scoped]                        (signed by a scoped key: no permissions)
 *                                                   a new user: its creds file
 *   isa-nats-keys decode JWT_FILE|-                 the claims of a JWT that verifies
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nats_jwt.h"

#define MAX_LIST 256
#define BUF_SIZE (1024 * 1024)	/* nats-server's default max_payload: an account JWT fits */

static char buf_nats[BUF_SIZE];
static char buf_jwt[BUF_SIZE];
static char buf_out[BUF_SIZE];

static const char usage[] =
	"usage: isa-nats-keys nkey operator|account|user\n"
	"       isa-nats-keys public SEED_FILE\n"
	"       isa-nats-keys operator SEED_FILE --name N [--system-account PUB] [--signing-key PUB]...\n"
	"       isa-nats-keys account OPERATOR_SEED_FILE ACCOUNT_PUB --name N [--jetstream] [--signing-key PUB]...\n"
	"                     [--scoped-key PUB --scope-role ROLE [--scope-pub SUBJECT]... [--scope-sub SUBJECT]... [--scope-bearer]]\n"
	"                     [--revocations-from JWT_FILE]\n"
	"       isa-nats-keys user SIGNING_SEED_FILE --name N [--account PUB] [--expires EPOCH]\n"
	"                     [--pub SUBJECT]... [--sub SUBJECT]... [--deny-pub SUBJECT]... [--deny-sub SUBJECT]... [--scoped]\n"
	"       isa-nats-keys decode JWT_FILE|-\n";

static void
fail(const char *what, const char *why)
{
	fprintf(stderr, "isa-nats-keys: %s%s%s\n", what, why ? ": " : "", why ? why : "");
	exit(1);
}

static void
usage_error(const char *why)
{
	fprintf(stderr, "isa-nats-keys: %s\n%s", why, usage);
	exit(2);
}

/* the first line of a file (a seed or a JWT), without blanks around it */
static void
read_first_line(const char *path, char *out, size_t cap)
{
	FILE	   *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	size_t		n;

	if (f == NULL)
		fail(path, strerror(errno));
	if (fgets(out, (int) cap, f) == NULL)
		fail(path, "empty");
	if (f != stdin)
		fclose(f);
	n = strlen(out);
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' '))
		out[--n] = '\0';
}

typedef struct Args
{
	const char *name;
	const char *system_account;
	const char *account;
	long long	expires;
	int			jetstream;
	int			scoped;
	int			scope_bearer;
	const char *scoped_key;
	const char *scope_role;
	const char *revocations_from;
	const char *scope_pub[MAX_LIST + 1];
	const char *scope_sub[MAX_LIST + 1];
	const char *signing_keys[MAX_LIST + 1];
	const char *pub[MAX_LIST + 1];
	const char *sub[MAX_LIST + 1];
	const char *deny_pub[MAX_LIST + 1];
	const char *deny_sub[MAX_LIST + 1];
	const char *positional[4];
	int			npositional;
} Args;

static void
push(const char **list, const char *value)
{
	int			n = 0;

	while (list[n])
		n++;
	if (n == MAX_LIST)
		usage_error("too many subjects or keys");
	list[n] = value;
}

static void
parse(Args *a, int argc, char **argv)
{
	memset(a, 0, sizeof(*a));
	for (int i = 2; i < argc; i++)
	{
		const char *o = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(o, "--jetstream") == 0 || strcmp(o, "--scoped") == 0 || strcmp(o, "--scope-bearer") == 0)
		{
			*(strcmp(o, "--jetstream") == 0 ? &a->jetstream :
			  strcmp(o, "--scoped") == 0 ? &a->scoped : &a->scope_bearer) = 1;
			continue;
		}
		if (strncmp(o, "--", 2) != 0)
		{
			if (a->npositional == 4)
				usage_error("too many arguments");
			a->positional[a->npositional++] = o;
			continue;
		}
		if (v == NULL)
			usage_error("an option without its value");
		i++;
		if (strcmp(o, "--name") == 0)
			a->name = v;
		else if (strcmp(o, "--system-account") == 0)
			a->system_account = v;
		else if (strcmp(o, "--account") == 0)
			a->account = v;
		else if (strcmp(o, "--expires") == 0)
			a->expires = atoll(v);
		else if (strcmp(o, "--signing-key") == 0)
			push(a->signing_keys, v);
		else if (strcmp(o, "--scoped-key") == 0)
			a->scoped_key = v;
		else if (strcmp(o, "--scope-role") == 0)
			a->scope_role = v;
		else if (strcmp(o, "--revocations-from") == 0)
			a->revocations_from = v;
		else if (strcmp(o, "--scope-pub") == 0)
			push(a->scope_pub, v);
		else if (strcmp(o, "--scope-sub") == 0)
			push(a->scope_sub, v);
		else if (strcmp(o, "--pub") == 0)
			push(a->pub, v);
		else if (strcmp(o, "--sub") == 0)
			push(a->sub, v);
		else if (strcmp(o, "--deny-pub") == 0)
			push(a->deny_pub, v);
		else if (strcmp(o, "--deny-sub") == 0)
			push(a->deny_sub, v);
		else
			usage_error("unknown option");
	}
}

static void
check(const char *err, const char *what)
{
	if (err)
		fail(what, err);
}

/*
 * Into buf_out, the revocations of the JWT in path, an account JWT of
 * account whose signature verifies; "{}" when the file does not exist (a
 * server that never ran).  Re-minting the account must not undo what
 * tools/isa-nats-revoker pushed to the server since.
 */
static void
carried_revocations(const char *path, const char *account)
{
	FILE	   *f;
	char		sub[ISA_NKEY_PUBLIC_SIZE];

	strcpy(buf_out, "{}");
	if (path == NULL || (f = fopen(path, "r")) == NULL)
		return;
	fclose(f);
	read_first_line(path, buf_jwt, sizeof(buf_jwt));
	check(isa_nats_jwt_decode(buf_nats, sizeof(buf_nats), buf_jwt), path);
	if (!isa_nats_claims_string(buf_nats, "sub", sub, sizeof(sub)) || strcmp(sub, account) != 0)
		fail(path, "not a JWT of this account");
	check(isa_nats_claims_revocations_json(buf_nats, buf_out, sizeof(buf_out)), path);
}

int
main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";
	Args		a;
	char		seed[256],
				pub[ISA_NKEY_PUBLIC_SIZE],
				kind = 0;

	parse(&a, argc, argv);
	if (strcmp(cmd, "nkey") == 0)
	{
		const char *k = a.npositional == 1 ? a.positional[0] : "";
		char		c = strcmp(k, "operator") == 0 ? ISA_NKEY_OPERATOR :
			strcmp(k, "account") == 0 ? ISA_NKEY_ACCOUNT :
			strcmp(k, "user") == 0 ? ISA_NKEY_USER : 0;

		if (c == 0)
			usage_error("nkey: the kind is operator, account or user");
		check(isa_nkey_generate(c, seed), "nkey");
		printf("%s\n", seed);
	}
	else if (strcmp(cmd, "public") == 0)
	{
		if (a.npositional != 1)
			usage_error("public: SEED_FILE");
		read_first_line(a.positional[0], seed, sizeof(seed));
		check(isa_nkey_public(seed, pub, NULL), a.positional[0]);
		printf("%s\n", pub);
	}
	else if (strcmp(cmd, "operator") == 0)
	{
		if (a.npositional != 1 || a.name == NULL)
			usage_error("operator: SEED_FILE --name N");
		read_first_line(a.positional[0], seed, sizeof(seed));
		check(isa_nkey_public(seed, pub, &kind), a.positional[0]);
		if (kind != ISA_NKEY_OPERATOR)
			fail(a.positional[0], "not an operator's seed (SO…)");
		check(isa_nats_operator_claims(buf_nats, sizeof(buf_nats), a.system_account, a.signing_keys), "operator");
		check(isa_nats_jwt_encode(buf_jwt, sizeof(buf_jwt), seed, pub, a.name, (long long) time(NULL), 0,
								  buf_nats), "operator");
		printf("%s\n", buf_jwt);
	}
	else if (strcmp(cmd, "account") == 0)
	{
		IsaNatsScopedKey scoped[2] = {
			{a.scoped_key, a.scope_role, {a.scope_pub, NULL, a.scope_sub, NULL}, a.scope_bearer}, {0}};

		if (a.npositional != 2 || a.name == NULL)
			usage_error("account: OPERATOR_SEED_FILE ACCOUNT_PUB --name N");
		if (a.scoped_key && a.scope_role == NULL)
			usage_error("account: --scoped-key PUB needs --scope-role ROLE");
		read_first_line(a.positional[0], seed, sizeof(seed));
		check(isa_nkey_check_public(a.positional[1], ISA_NKEY_ACCOUNT), a.positional[1]);
		carried_revocations(a.revocations_from, a.positional[1]);
		check(isa_nats_account_claims(buf_nats, sizeof(buf_nats), a.jetstream, a.signing_keys, scoped,
									  buf_out), "account");
		check(isa_nats_jwt_encode(buf_jwt, sizeof(buf_jwt), seed, a.positional[1], a.name,
								  (long long) time(NULL), 0, buf_nats), "account");
		printf("%s\n", buf_jwt);
	}
	else if (strcmp(cmd, "user") == 0)
	{
		IsaNatsPermissions perms = {a.pub, a.deny_pub, a.sub, a.deny_sub};
		char		user_seed[ISA_NKEY_SEED_SIZE],
					user_pub[ISA_NKEY_PUBLIC_SIZE];

		if (a.npositional != 1 || a.name == NULL)
			usage_error("user: SIGNING_SEED_FILE --name N");
		read_first_line(a.positional[0], seed, sizeof(seed));
		check(isa_nkey_public(seed, pub, &kind), a.positional[0]);
		if (kind != ISA_NKEY_ACCOUNT)
			fail(a.positional[0], "not an account's seed or signing key (SA…)");
		if (a.account && strcmp(a.account, pub) == 0)
			a.account = NULL;
		if (a.scoped && (a.pub[0] || a.sub[0] || a.deny_pub[0] || a.deny_sub[0] || a.account == NULL))
			usage_error("user: --scoped takes --account and no subject (the scope gives them)");
		check(a.scoped ? isa_nats_scoped_user_claims(buf_nats, sizeof(buf_nats), a.account) :
			  isa_nats_user_claims(buf_nats, sizeof(buf_nats), &perms, a.account), "user");
		check(isa_nkey_generate(ISA_NKEY_USER, user_seed), "user");
		check(isa_nkey_public(user_seed, user_pub, NULL), "user");
		check(isa_nats_jwt_encode(buf_jwt, sizeof(buf_jwt), seed, user_pub, a.name, (long long) time(NULL),
								  a.expires, buf_nats), "user");
		check(isa_nats_creds(buf_out, sizeof(buf_out), buf_jwt, user_seed), "user");
		fputs(buf_out, stdout);
	}
	else if (strcmp(cmd, "decode") == 0)
	{
		if (a.npositional != 1)
			usage_error("decode: JWT_FILE|-");
		read_first_line(a.positional[0], buf_jwt, sizeof(buf_jwt));
		check(isa_nats_jwt_decode(buf_out, sizeof(buf_out), buf_jwt), a.positional[0]);
		printf("%s\n", buf_out);
	}
	else if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0)
		fputs(usage, stdout);
	else
		usage_error("unknown command");
	return 0;
}
