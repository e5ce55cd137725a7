/*
 * fuzz_ota.c — libFuzzer target for the OTA service's parsers (ota/):
 * the release manifest (manifest.c) and SemVer 2.0.0 (semver.c).
 *
 * An input is either "M" and a manifest, or "V" and two versions separated
 * by a newline.  Besides "no crash, no leak, no undefined behaviour"
 * (ASan/UBSan), the properties that must hold: an accepted manifest has a
 * valid version and a canonical file id; precedence is antisymmetric,
 * reflexive, ignores build metadata, and is transitive over the last three
 * versions seen; an invalid version is never equal to a valid one.
 *
 * Built and run by test/integration/17-fuzz-ota.sh:
 *   clang -fsanitize=fuzzer,address,undefined … ota/manifest.c ota/semver.c
 */
#include "ota.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char last[3][OTA_VERSION_MAX + 1];
static int	nlast;

static void
check(bool cond, const char *what)
{
	if (!cond)
	{
		fprintf(stderr, "property violated: %s\n", what);
		abort();
	}
}

static void
versions(const char *a, size_t an, const char *b, size_t bn)
{
	bool		va = ota_version_valid(a, an);
	bool		vb = ota_version_valid(b, bn);
	int			ab = ota_version_cmp(a, an, b, bn);
	int			ba = ota_version_cmp(b, bn, a, an);

	check(ab == -ba, "cmp(a, b) == -cmp(b, a)");
	check(ab >= -1 && ab <= 1, "cmp is -1, 0 or 1");
	check(ota_version_cmp(a, an, a, an) == 0, "cmp(a, a) == 0");
	if (va != vb)
		check(ab != 0, "an invalid version never equals a valid one");
	if (va)
	{
		const char *plus = memchr(a, '+', an);

		if (plus)
			check(ota_version_cmp(a, an, a, (size_t) (plus - a)) == 0, "build metadata is ignored");
		/* transitivity over the versions kept from earlier inputs */
		memcpy(last[nlast % 3], a, an);
		last[nlast % 3][an] = '\0';
		nlast++;
		if (nlast >= 3)
		{
			const char *x = last[0], *y = last[1], *z = last[2];
			int			xy = ota_version_cmp(x, strlen(x), y, strlen(y));
			int			yz = ota_version_cmp(y, strlen(y), z, strlen(z));
			int			xz = ota_version_cmp(x, strlen(x), z, strlen(z));

			if (xy <= 0 && yz <= 0)
				check(xz <= 0, "x <= y <= z implies x <= z");
			if (xy >= 0 && yz >= 0)
				check(xz >= 0, "x >= y >= z implies x >= z");
		}
	}
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] == 'M')
	{
		OtaManifest m;
		char		err[256];

		if (ota_manifest_parse((const char *) data + 1, size - 1, &m, err, sizeof err))
		{
			check(ota_version_valid(m.version, strlen(m.version)), "an accepted manifest's version is valid");
			check(strlen(m.file_id) == 36 && m.size > 0, "an accepted manifest has a UUID file id and a size");
			check(strlen(m.model) >= 1, "an accepted manifest has a model");
			ota_manifest_free(&m);
		}
		else
			check(err[0] != '\0' && m.buf == NULL, "a refused manifest says why and keeps nothing");
	}
	else
	{
		const char *s = (const char *) data + 1;
		size_t		n = size - 1;
		const char *nl = memchr(s, '\n', n);

		if (nl)
			versions(s, (size_t) (nl - s), nl + 1, n - (size_t) (nl - s) - 1);
		else
			versions(s, n, s, n);
	}
	return 0;
}
