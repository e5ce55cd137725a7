/*
 * jwt_verify.c — the one verification of auth's tokens (compact JWS), shared
 * by the backend (extension/auth/jwt.c, auth.verify_token) and isa-httpd
 * (httpd/jwt.c), so that both accept and refuse the same tokens: they used to
 * have a verifier each, and those disagreed (on sub, on repeated claims, on a
 * missing HS256 kid).  Plain C over libsodium, compiled into both programs
 * (isa-httpd by its rule in the Makefile): no PostgreSQL, no allocation, a
 * JSON parser of its own that reads only what verification needs and refuses
 * what a lenient parser could read two ways (a repeated member, a lone
 * surrogate, \u0000, invalid UTF-8).  The rules: docs/services/auth.md,
 * "Verification"; test/integration/16-jwt-corpus.sh runs one corpus of
 * tokens through both callers.
 */
#include "jwt_verify.h"

#include <math.h>
#include <sodium.h>
#include <string.h>

#define MAX_DEPTH 64			/* nesting of JSON arrays and objects */
#define MAX_EXPONENT 1000		/* |e| of a JSON number: PostgreSQL's numeric refuses more */
#define MAX_INTEGER_DIGITS 18	/* an integer fits in 64 bits, which jansson (isa-httpd) needs */

static const char *const verdict_texts[] = {
	[ISA_JWT_OK] = "ok",
	[ISA_JWT_TOO_LONG] = "too long",
	[ISA_JWT_MALFORMED] = "malformed",
	[ISA_JWT_MALFORMED_HEADER] = "malformed header",
	[ISA_JWT_NO_ALGORITHM] = "no algorithm in the header",
	[ISA_JWT_WRONG_ALGORITHM] = "algorithm is not accepted",
	[ISA_JWT_BAD_TYP] = "typ is not JWT",
	[ISA_JWT_CRIT] = "unsupported critical header parameters",
	[ISA_JWT_NO_KID] = "no valid kid in the header",
	[ISA_JWT_UNKNOWN_KEY] = "unknown signing key",
	[ISA_JWT_KEY_RETIRED] = "signing key retired",
	[ISA_JWT_MALFORMED_SIGNATURE] = "malformed signature",
	[ISA_JWT_BAD_SIGNATURE] = "bad signature",
	[ISA_JWT_MALFORMED_CLAIMS] = "malformed claims",
	[ISA_JWT_NO_EXP] = "no exp claim",
	[ISA_JWT_TIME_NOT_NUMBER] = "a time claim is not a number",
	[ISA_JWT_EXPIRED] = "expired",
	[ISA_JWT_NOT_YET_VALID] = "not valid yet (nbf)",
	[ISA_JWT_ISSUED_IN_FUTURE] = "issued in the future (iat)",
	[ISA_JWT_WRONG_ISSUER] = "wrong issuer",
	[ISA_JWT_WRONG_AUDIENCE] = "wrong audience",
	[ISA_JWT_NO_SUBJECT] = "no subject",
};

const char *
isa_jwt_verdict_text(IsaJwtVerdict verdict)
{
	if ((size_t) verdict >= sizeof(verdict_texts) / sizeof(verdict_texts[0]) || verdict_texts[verdict] == NULL)
		return "invalid";
	return verdict_texts[verdict];
}

/* ---------------------------------------------------------------- JSON */

/*
 * A strict RFC 8259 parser over a decoded segment.  The members of the top
 * object go to a callback, which reads the value itself (a string, a number)
 * or leaves it to parse_value; every object's member names are unescaped
 * into jwt->names so that a repeated one is seen however it is spelled
 * ("sub" and "s\u0075b").
 */
typedef struct Parser Parser;
typedef bool (*MemberFn) (Parser *ps, const char *name);

struct Parser
{
	const unsigned char *p;
	const unsigned char *end;
	IsaJwt	   *jwt;
	int			depth;
	size_t		names_used;
	int			nnames;
	MemberFn	member;			/* for the members of the top object */
	void	   *state;
};

static void
skip_ws(Parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
		ps->p++;
}

static bool
next_is(Parser *ps, unsigned char c)
{
	skip_ws(ps);
	return ps->p < ps->end && *ps->p == c;
}

/* appends a byte of an unescaped string to out (cap bytes); *n counts them all */
static void
put(char *out, size_t cap, size_t *n, unsigned char c)
{
	if (out != NULL && *n < cap)
		out[*n] = (char) c;
	(*n)++;
}

static void
put_utf8(char *out, size_t cap, size_t *n, uint32_t cp)
{
	if (cp < 0x80)
		put(out, cap, n, (unsigned char) cp);
	else if (cp < 0x800)
	{
		put(out, cap, n, (unsigned char) (0xC0 | (cp >> 6)));
		put(out, cap, n, (unsigned char) (0x80 | (cp & 0x3F)));
	}
	else if (cp < 0x10000)
	{
		put(out, cap, n, (unsigned char) (0xE0 | (cp >> 12)));
		put(out, cap, n, (unsigned char) (0x80 | ((cp >> 6) & 0x3F)));
		put(out, cap, n, (unsigned char) (0x80 | (cp & 0x3F)));
	}
	else
	{
		put(out, cap, n, (unsigned char) (0xF0 | (cp >> 18)));
		put(out, cap, n, (unsigned char) (0x80 | ((cp >> 12) & 0x3F)));
		put(out, cap, n, (unsigned char) (0x80 | ((cp >> 6) & 0x3F)));
		put(out, cap, n, (unsigned char) (0x80 | (cp & 0x3F)));
	}
}

static bool
hex4(Parser *ps, uint32_t *cp)
{
	*cp = 0;
	if (ps->end - ps->p < 4)
		return false;
	for (int i = 0; i < 4; i++)
	{
		unsigned char c = *ps->p++;

		*cp <<= 4;
		if (c >= '0' && c <= '9')
			*cp |= (uint32_t) (c - '0');
		else if (c >= 'a' && c <= 'f')
			*cp |= (uint32_t) (c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			*cp |= (uint32_t) (c - 'A' + 10);
		else
			return false;
	}
	return true;
}

/* The length of the valid UTF-8 sequence at p (RFC 3629: no overlong form, no surrogate), or 0. */
static int
utf8_sequence(const unsigned char *p, const unsigned char *end)
{
	unsigned char c = p[0];
	unsigned char lo = 0x80,
				hi = 0xBF;
	int			n;

	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF)
	{
		n = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	}
	else if (c >= 0xF0 && c <= 0xF4)
	{
		n = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	}
	else
		return 0;
	if (end - p < n || p[1] < lo || p[1] > hi)
		return 0;
	for (int i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	return n;
}

/*
 * A string at ps->p (its opening quote), unescaped into out (cap bytes, not
 * NUL-terminated); *len is its full length, which may exceed cap.
 */
static bool
parse_string(Parser *ps, char *out, size_t cap, size_t *len)
{
	size_t		n = 0;

	if (ps->p >= ps->end || *ps->p != '"')
		return false;
	ps->p++;
	while (ps->p < ps->end)
	{
		unsigned char c = *ps->p;

		if (c == '"')
		{
			ps->p++;
			*len = n;
			return true;
		}
		if (c < 0x20)
			return false;
		if (c == '\\')
		{
			uint32_t	cp;

			if (ps->end - ps->p < 2)
				return false;
			c = ps->p[1];
			ps->p += 2;
			switch (c)
			{
				case '"':
				case '\\':
				case '/':
					put(out, cap, &n, c);
					break;
				case 'b':
					put(out, cap, &n, '\b');
					break;
				case 'f':
					put(out, cap, &n, '\f');
					break;
				case 'n':
					put(out, cap, &n, '\n');
					break;
				case 'r':
					put(out, cap, &n, '\r');
					break;
				case 't':
					put(out, cap, &n, '\t');
					break;
				case 'u':
					/* \u0000 would cut a C string; a surrogate must be a pair */
					if (!hex4(ps, &cp) || cp == 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
						return false;
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						uint32_t	low;

						if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
							return false;
						ps->p += 2;
						if (!hex4(ps, &low) || low < 0xDC00 || low > 0xDFFF)
							return false;
						cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
					}
					put_utf8(out, cap, &n, cp);
					break;
				default:
					return false;
			}
			continue;
		}
		if (c >= 0x80)
		{
			int			k = utf8_sequence(ps->p, ps->end);

			if (k == 0)
				return false;
			for (int i = 0; i < k; i++)
				put(out, cap, &n, ps->p[i]);
			ps->p += k;
			continue;
		}
		put(out, cap, &n, c);
		ps->p++;
	}
	return false;
}

/*
 * A number (RFC 8259 grammar) as a double: exact for integers up to 2^53,
 * which Unix times are.  A number that is not a finite double, or an integer
 * of more than 18 digits, is refused: jansson (isa-httpd's claims) cannot
 * hold it, and no token of isa's has one.
 */
static bool
parse_number(Parser *ps, double *value)
{
	const unsigned char *p = ps->p;
	bool		negative = false;
	double		mantissa = 0;
	int			significant = 0;
	long		exponent = 0;
	long		e = 0;
	bool		e_negative = false;
	int			integer_digits = 0;
	bool		integer = true;

	if (p < ps->end && *p == '-')
	{
		negative = true;
		p++;
	}
	if (p >= ps->end || *p < '0' || *p > '9')
		return false;
	if (*p == '0')
		p++;
	else
		for (; p < ps->end && *p >= '0' && *p <= '9'; p++)
		{
			integer_digits++;
			if (significant < 19)
			{
				mantissa = mantissa * 10 + (*p - '0');
				significant++;
			}
			else
				exponent++;
		}
	if (p < ps->end && *p == '.')
	{
		integer = false;
		p++;
		if (p >= ps->end || *p < '0' || *p > '9')
			return false;
		for (; p < ps->end && *p >= '0' && *p <= '9'; p++)
			if (significant < 19)
			{
				mantissa = mantissa * 10 + (*p - '0');
				if (mantissa > 0)
					significant++;
				exponent--;
			}
	}
	if (p < ps->end && (*p == 'e' || *p == 'E'))
	{
		integer = false;
		p++;
		if (p < ps->end && (*p == '+' || *p == '-'))
			e_negative = *p++ == '-';
		if (p >= ps->end || *p < '0' || *p > '9')
			return false;
		for (; p < ps->end && *p >= '0' && *p <= '9'; p++)
		{
			e = e * 10 + (*p - '0');
			if (e > MAX_EXPONENT)
				return false;
		}
	}
	exponent += e_negative ? -e : e;
	for (; exponent > 0; exponent--)
		mantissa *= 10;
	for (; exponent < 0; exponent++)
		mantissa /= 10;
	if ((integer && integer_digits > MAX_INTEGER_DIGITS) || !isfinite(mantissa))
		return false;
	*value = negative ? -mantissa : mantissa;
	ps->p = p;
	return true;
}

static bool parse_value(Parser *ps);

static bool
parse_literal(Parser *ps, const char *word)
{
	size_t		n = strlen(word);

	if ((size_t) (ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
		return false;
	ps->p += n;
	return true;
}

static bool
parse_array(Parser *ps)
{
	if (++ps->depth > MAX_DEPTH)
		return false;
	ps->p++;					/* [ */
	if (next_is(ps, ']'))
	{
		ps->p++;
		ps->depth--;
		return true;
	}
	for (;;)
	{
		if (!parse_value(ps))
			return false;
		if (next_is(ps, ','))
			ps->p++;
		else if (next_is(ps, ']'))
		{
			ps->p++;
			ps->depth--;
			return true;
		}
		else
			return false;
	}
}

/* An object: its member names must differ (after unescaping). */
static bool
parse_object(Parser *ps)
{
	IsaJwt	   *jwt = ps->jwt;
	int			first_name = ps->nnames;
	size_t		names_at = ps->names_used;

	if (++ps->depth > MAX_DEPTH)
		return false;
	ps->p++;					/* { */
	if (next_is(ps, '}'))
	{
		ps->p++;
		ps->depth--;
		return true;
	}
	for (;;)
	{
		char	   *name = jwt->names + ps->names_used;
		size_t		cap = sizeof(jwt->names) - ps->names_used;
		size_t		len;

		skip_ws(ps);
		if (!parse_string(ps, name, cap, &len) || len >= cap ||
			ps->nnames >= (int) (sizeof(jwt->name_at) / sizeof(jwt->name_at[0])))
			return false;
		name[len] = '\0';
		for (int i = first_name; i < ps->nnames; i++)
			if (strcmp(jwt->names + jwt->name_at[i], name) == 0)
				return false;
		jwt->name_at[ps->nnames++] = (uint16_t) ps->names_used;
		ps->names_used += len + 1;

		if (!next_is(ps, ':'))
			return false;
		ps->p++;
		skip_ws(ps);
		if (ps->depth == 1 && ps->member != NULL ? !ps->member(ps, name) : !parse_value(ps))
			return false;
		if (next_is(ps, ','))
			ps->p++;
		else if (next_is(ps, '}'))
		{
			ps->p++;
			break;
		}
		else
			return false;
	}
	/* the names of a closed object are not compared with its parent's */
	ps->nnames = first_name;
	ps->names_used = names_at;
	ps->depth--;
	return true;
}

static bool
parse_value(Parser *ps)
{
	double		ignored;
	size_t		len;

	skip_ws(ps);
	if (ps->p >= ps->end)
		return false;
	switch (*ps->p)
	{
		case '{':
			return parse_object(ps);
		case '[':
			return parse_array(ps);
		case '"':
			return parse_string(ps, NULL, 0, &len);
		case 't':
			return parse_literal(ps, "true");
		case 'f':
			return parse_literal(ps, "false");
		case 'n':
			return parse_literal(ps, "null");
		default:
			return parse_number(ps, &ignored);
	}
}

/* A whole segment: one object, nothing after it but white space. */
static bool
parse_segment(IsaJwt *jwt, const unsigned char *text, size_t len, MemberFn member, void *state)
{
	Parser		ps;

	memset(&ps, 0, sizeof(ps));
	ps.p = text;
	ps.end = text + len;
	ps.jwt = jwt;
	ps.member = member;
	ps.state = state;
	if (!next_is(&ps, '{') || !parse_object(&ps))
		return false;
	skip_ws(&ps);
	return ps.p == ps.end;
}

/* A string value into out (cap bytes, NUL-terminated); false when not a string; *fits when it fitted. */
static bool
string_value(Parser *ps, char *out, size_t cap, bool *fits)
{
	size_t		len;

	if (ps->p >= ps->end || *ps->p != '"')
		return false;
	if (!parse_string(ps, out, cap - 1, &len))
		return false;
	*fits = len < cap;
	out[*fits ? len : cap - 1] = '\0';
	return true;
}

/* ---------------------------------------------------------------- the header */

typedef struct Header
{
	bool		has_alg;
	bool		alg_fits;
	char		alg[24];
	bool		has_kid;
	bool		kid_fits;
	bool		has_typ;
	bool		typ_jwt;
	bool		crit;
} Header;

static bool
header_member(Parser *ps, const char *name)
{
	Header	   *h = ps->state;

	if (strcmp(name, "alg") == 0)
	{
		h->has_alg = true;
		return string_value(ps, h->alg, sizeof(h->alg), &h->alg_fits);
	}
	if (strcmp(name, "kid") == 0)
	{
		h->has_kid = true;
		return string_value(ps, ps->jwt->kid, sizeof(ps->jwt->kid), &h->kid_fits);
	}
	if (strcmp(name, "typ") == 0)
	{
		char		typ[8];
		bool		fits;

		h->has_typ = true;
		if (!string_value(ps, typ, sizeof(typ), &fits))
			return false;
		h->typ_jwt = fits && strcmp(typ, "JWT") == 0;
		return true;
	}
	if (strcmp(name, "crit") == 0)
		h->crit = true;
	return parse_value(ps);
}

bool
isa_jwt_valid_kid(const char *kid)
{
	size_t		len = strlen(kid);

	if (len == 0 || len > ISA_JWT_MAX_KID)
		return false;
	for (const char *p = kid; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
			  *p == '-' || *p == '_'))
			return false;
	return true;
}

/* Strict base64url (no padding, no white space) of a non-empty segment into out. */
static bool
b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *outlen)
{
	const char *end = NULL;

	return len > 0 &&
		sodium_base642bin(out, cap, in, len, NULL, outlen, &end, sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0 &&
		end == in + len;
}

IsaJwtVerdict
isa_jwt_parse(IsaJwt *jwt, const char *token, size_t len, int algorithm)
{
	const char *configured = algorithm == ISA_JWT_HS256 ? "HS256" : "EdDSA";
	const char *dot1 = NULL,
			   *dot2 = NULL;
	size_t		header_len;
	Header		h;

	jwt->signing_input = token;
	jwt->signing_len = jwt->payload_b64_len = jwt->signature_b64_len = 0;
	jwt->alg[0] = jwt->kid[0] = jwt->sub[0] = '\0';
	jwt->claims = NULL;
	jwt->bad_claim = NULL;
	if (len > ISA_JWT_MAX_TOKEN)
		return ISA_JWT_TOO_LONG;
	for (size_t i = 0; i < len; i++)
	{
		if (token[i] != '.')
			continue;
		if (dot1 == NULL)
			dot1 = token + i;
		else if (dot2 == NULL)
			dot2 = token + i;
		else
			return ISA_JWT_MALFORMED;
	}
	/* an empty signature (alg none) is refused by the algorithm check first */
	if (dot2 == NULL || dot1 == token || dot2 == dot1 + 1)
		return ISA_JWT_MALFORMED;
	jwt->signing_len = (size_t) (dot2 - token);
	jwt->payload_b64 = dot1 + 1;
	jwt->payload_b64_len = (size_t) (dot2 - dot1 - 1);
	jwt->signature_b64 = dot2 + 1;
	jwt->signature_b64_len = (size_t) (token + len - dot2 - 1);

	memset(&h, 0, sizeof(h));
	if (!b64url_decode(token, (size_t) (dot1 - token), jwt->buf, sizeof(jwt->buf), &header_len) ||
		!parse_segment(jwt, jwt->buf, header_len, header_member, &h))
		return ISA_JWT_MALFORMED_HEADER;
	if (!h.has_alg)
		return ISA_JWT_NO_ALGORITHM;
	if (!h.alg_fits || strcmp(h.alg, configured) != 0)
	{
		bool		printable = h.alg_fits;

		for (const char *p = h.alg; *p && printable; p++)
			printable = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
				(*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '+';
		if (printable)
			strcpy(jwt->alg, h.alg);
		return ISA_JWT_WRONG_ALGORITHM;
	}
	strcpy(jwt->alg, configured);
	if (h.has_typ && !h.typ_jwt)
		return ISA_JWT_BAD_TYP;
	if (h.crit)
		return ISA_JWT_CRIT;
	if (!h.has_kid || !h.kid_fits || !isa_jwt_valid_kid(jwt->kid))
	{
		jwt->kid[0] = '\0';
		return ISA_JWT_NO_KID;
	}
	return ISA_JWT_OK;
}

/* ---------------------------------------------------------------- the claims */

typedef enum TimeClaim
{
	ABSENT = 0,
	NUMBER,
	NOT_NUMBER
} TimeClaim;

typedef struct Claims
{
	const IsaJwtPolicy *policy;
	TimeClaim	exp,
				nbf,
				iat;
	bool		iss_ok;
	bool		aud_ok;
	bool		sub_ok;
} Claims;

/* Whether the string at ps->p (consumed) equals want; false also when it is not a string. */
static bool
string_equals(Parser *ps, const char *want, bool *equal)
{
	char		s[256];
	bool		fits;

	if (!string_value(ps, s, sizeof(s), &fits))
		return false;
	*equal = fits && strcmp(s, want) == 0;
	return true;
}

static bool
time_claim(Parser *ps, TimeClaim *kind, double *value)
{
	if (ps->p < ps->end && (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')))
	{
		*kind = NUMBER;
		return parse_number(ps, value);
	}
	*kind = NOT_NUMBER;
	return parse_value(ps);
}

static bool
claims_member(Parser *ps, const char *name)
{
	Claims	   *c = ps->state;
	IsaJwt	   *jwt = ps->jwt;
	bool		equal;

	if (strcmp(name, "exp") == 0)
		return time_claim(ps, &c->exp, &jwt->exp);
	if (strcmp(name, "nbf") == 0)
		return time_claim(ps, &c->nbf, &jwt->nbf);
	if (strcmp(name, "iat") == 0)
		return time_claim(ps, &c->iat, &jwt->iat);
	if (strcmp(name, "iss") == 0 && ps->p < ps->end && *ps->p == '"')
	{
		if (!string_equals(ps, c->policy->issuer, &equal))
			return false;
		c->iss_ok = equal;
		return true;
	}
	if (strcmp(name, "aud") == 0 && ps->p < ps->end && *ps->p == '"')
	{
		if (!string_equals(ps, c->policy->audience, &equal))
			return false;
		c->aud_ok = equal;
		return true;
	}
	if (strcmp(name, "aud") == 0 && ps->p < ps->end && *ps->p == '[')
	{
		/* an array of audiences: one must be ours; other elements are ignored */
		if (++ps->depth > MAX_DEPTH)
			return false;
		ps->p++;
		if (next_is(ps, ']'))
		{
			ps->p++;
			ps->depth--;
			return true;
		}
		for (;;)
		{
			if (next_is(ps, '"'))
			{
				if (!string_equals(ps, c->policy->audience, &equal))
					return false;
				c->aud_ok |= equal;
			}
			else if (!parse_value(ps))
				return false;
			if (next_is(ps, ','))
				ps->p++;
			else if (next_is(ps, ']'))
			{
				ps->p++;
				ps->depth--;
				return true;
			}
			else
				return false;
		}
	}
	if (strcmp(name, "sub") == 0 && ps->p < ps->end && *ps->p == '"')
	{
		bool		fits;

		if (!string_value(ps, jwt->sub, sizeof(jwt->sub), &fits))
			return false;
		c->sub_ok = fits && jwt->sub[0] != '\0';
		if (!c->sub_ok)
			jwt->sub[0] = '\0';
		return true;
	}
	return parse_value(ps);
}

static IsaJwtVerdict
check_claims(IsaJwt *jwt, const unsigned char *text, size_t len, const IsaJwtPolicy *policy)
{
	Claims		c;

	memset(&c, 0, sizeof(c));
	c.policy = policy;
	jwt->exp = 0;
	jwt->nbf = jwt->iat = -1e18;
	if (!parse_segment(jwt, text, len, claims_member, &c))
		return ISA_JWT_MALFORMED_CLAIMS;
	if (c.exp == ABSENT)
		return ISA_JWT_NO_EXP;
	jwt->bad_claim = c.exp == NOT_NUMBER ? "exp" : c.nbf == NOT_NUMBER ? "nbf" : c.iat == NOT_NUMBER ? "iat" : NULL;
	if (jwt->bad_claim != NULL)
		return ISA_JWT_TIME_NOT_NUMBER;
	if (jwt->exp <= (double) (policy->now - policy->clock_skew))
		return ISA_JWT_EXPIRED;
	if (c.nbf == NUMBER && jwt->nbf > (double) (policy->now + policy->clock_skew))
		return ISA_JWT_NOT_YET_VALID;
	if (c.iat == NUMBER && jwt->iat > (double) (policy->now + policy->clock_skew))
		return ISA_JWT_ISSUED_IN_FUTURE;
	if (!c.iss_ok)
		return ISA_JWT_WRONG_ISSUER;
	if (!c.aud_ok)
		return ISA_JWT_WRONG_AUDIENCE;
	if (!c.sub_ok)
		return ISA_JWT_NO_SUBJECT;
	return ISA_JWT_OK;
}

/* ---------------------------------------------------------------- signature and claims */

static void
hmac_sha256(unsigned char *mac, const unsigned char *key, size_t keylen, const char *msg, size_t len)
{
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, key, keylen);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *) msg, len);
	crypto_auth_hmacsha256_final(&st, mac);
	sodium_memzero(&st, sizeof(st));
}

IsaJwtVerdict
isa_jwt_verify(IsaJwt *jwt, int algorithm, const unsigned char *key, size_t keylen,
			   const IsaJwtPolicy *policy)
{
	size_t		sig_len;
	size_t		payload_len;
	bool		valid;

	if (!b64url_decode(jwt->signature_b64, jwt->signature_b64_len, jwt->buf, sizeof(jwt->buf), &sig_len))
		return ISA_JWT_MALFORMED_SIGNATURE;
	if (algorithm == ISA_JWT_EDDSA)
		valid = key != NULL && keylen == crypto_sign_PUBLICKEYBYTES && sig_len == crypto_sign_BYTES &&
			crypto_sign_verify_detached(jwt->buf, (const unsigned char *) jwt->signing_input,
										jwt->signing_len, key) == 0;
	else
	{
		unsigned char mac[crypto_auth_hmacsha256_BYTES];

		valid = key != NULL && keylen >= ISA_JWT_MIN_SECRET && sig_len == sizeof(mac);
		if (valid)
		{
			hmac_sha256(mac, key, keylen, jwt->signing_input, jwt->signing_len);
			valid = sodium_memcmp(mac, jwt->buf, sizeof(mac)) == 0;
		}
	}
	if (!valid)
		return ISA_JWT_BAD_SIGNATURE;

	/* signed by us: now the payload is read */
	if (!b64url_decode(jwt->payload_b64, jwt->payload_b64_len, jwt->buf, sizeof(jwt->buf) - 1, &payload_len))
		return ISA_JWT_MALFORMED_CLAIMS;
	jwt->buf[payload_len] = '\0';
	jwt->claims = (const char *) jwt->buf;
	jwt->claims_len = payload_len;
	return check_claims(jwt, jwt->buf, payload_len, policy);
}

/* ---------------------------------------------------------------- HS256 kids */

void
isa_jwt_hs256_kid(const char *secret, char out[17])
{
	static const char label[] = "isa-jwt-kid";
	unsigned char mac[crypto_auth_hmacsha256_BYTES];

	hmac_sha256(mac, (const unsigned char *) secret, strlen(secret), label, strlen(label));
	sodium_bin2hex(out, 17, mac, 8);
}

const char *
isa_jwt_hs256_secret(const char *kid, const char *current, const char *previous)
{
	char		derived[17];

	if (current != NULL && current[0] != '\0')
	{
		isa_jwt_hs256_kid(current, derived);
		if (strcmp(kid, derived) == 0)
			return current;
	}
	if (previous != NULL && previous[0] != '\0')
	{
		isa_jwt_hs256_kid(previous, derived);
		if (strcmp(kid, derived) == 0)
			return previous;
	}
	return NULL;
}
