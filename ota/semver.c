/*
 * semver.c — Semantic Versioning 2.0.0 (https://semver.org): validity and
 * precedence, without converting numbers (any length compares correctly,
 * nothing overflows).  ota.h says the rules.
 */
#include "ota.h"

#include <string.h>

static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_ident_char(char c)
{
	return is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '-';
}

/* A numeric identifier: "0" or [1-9][0-9]* */
static bool
numeric_ok(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_digit(s[i]))
			return false;
	return n == 1 || s[0] != '0';
}

static bool
all_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!is_digit(s[i]))
			return false;
	return true;
}

/*
 * Dot-separated identifiers in s[0..n): each non-empty of [0-9A-Za-z-]; with
 * strict_numbers, the all-digit ones without a leading zero (pre-release).
 */
static bool
identifiers_ok(const char *s, size_t n, bool strict_numbers)
{
	size_t		start = 0;

	for (size_t i = 0; i <= n; i++)
	{
		if (i == n || s[i] == '.')
		{
			size_t		len = i - start;

			if (len == 0)
				return false;
			if (strict_numbers && all_digits(s + start, len) && !numeric_ok(s + start, len))
				return false;
			start = i + 1;
		}
		else if (!is_ident_char(s[i]))
			return false;
	}
	return true;
}

/* The parts of a version: core "a.b.c", pre-release, without the build. */
typedef struct Parts
{
	const char *num[3];
	size_t		numlen[3];
	const char *pre;			/* NULL when none */
	size_t		prelen;
} Parts;

static bool
split(const char *s, size_t len, Parts *p)
{
	size_t		i = 0;
	size_t		end;
	const char *plus;

	if (s == NULL || len == 0 || len > OTA_VERSION_MAX)
		return false;
	plus = memchr(s, '+', len);
	end = plus ? (size_t) (plus - s) : len;
	if (plus && !identifiers_ok(plus + 1, len - end - 1, false))
		return false;
	for (int k = 0; k < 3; k++)
	{
		size_t		start = i;

		while (i < end && is_digit(s[i]))
			i++;
		if (!numeric_ok(s + start, i - start))
			return false;
		p->num[k] = s + start;
		p->numlen[k] = i - start;
		if (k < 2)
		{
			if (i >= end || s[i] != '.')
				return false;
			i++;
		}
	}
	p->pre = NULL;
	p->prelen = 0;
	if (i == end)
		return true;
	if (s[i] != '-')
		return false;
	p->pre = s + i + 1;
	p->prelen = end - i - 1;
	return identifiers_ok(p->pre, p->prelen, true);
}

bool
ota_version_valid(const char *s, size_t len)
{
	Parts		p;

	return split(s, len, &p);
}

/* Two numbers without leading zeros: the longer is larger, else bytewise. */
static int
cmp_numbers(const char *a, size_t an, const char *b, size_t bn)
{
	int			c;

	if (an != bn)
		return an < bn ? -1 : 1;
	c = memcmp(a, b, an);
	return (c > 0) - (c < 0);
}

static int
cmp_ident(const char *a, size_t an, const char *b, size_t bn)
{
	bool		anum = all_digits(a, an);
	bool		bnum = all_digits(b, bn);
	int			c;

	if (anum && bnum)
		return cmp_numbers(a, an, b, bn);
	if (anum != bnum)
		return anum ? -1 : 1;	/* numeric identifiers are lower */
	c = memcmp(a, b, an < bn ? an : bn);
	if (c != 0)
		return (c > 0) - (c < 0);
	return an == bn ? 0 : (an < bn ? -1 : 1);
}

int
ota_version_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	Parts		pa,
				pb;
	size_t		i = 0,
				j = 0;

	/* callers check validity; an invalid one sorts lowest, deterministically */
	bool		va = split(a, alen, &pa);
	bool		vb = split(b, blen, &pb);

	if (!va || !vb)
		return va == vb ? 0 : (va ? 1 : -1);
	for (int k = 0; k < 3; k++)
	{
		int			c = cmp_numbers(pa.num[k], pa.numlen[k], pb.num[k], pb.numlen[k]);

		if (c != 0)
			return c;
	}
	if (pa.pre == NULL || pb.pre == NULL)
		return (pa.pre == NULL) - (pb.pre == NULL);	/* a release is above its pre-releases */
	for (;;)
	{
		size_t		ie = i,
					je = j;
		int			c;

		if (i > pa.prelen || j > pb.prelen)
			return (i <= pa.prelen) - (j <= pb.prelen); /* more identifiers: higher */
		while (ie < pa.prelen && pa.pre[ie] != '.')
			ie++;
		while (je < pb.prelen && pb.pre[je] != '.')
			je++;
		c = cmp_ident(pa.pre + i, ie - i, pb.pre + j, je - j);
		if (c != 0)
			return c;
		i = ie + 1;
		j = je + 1;
	}
}
